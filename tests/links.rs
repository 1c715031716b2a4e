//! End-to-end: OSlets running the test kernel talk through oslet's links: memfd
//! windows shared by two VMM processes, each side's section read-only in the peer.
//! The test kernel's link loops run in guest ring 3 (native speed on this machine's
//! emulating KVM, see ../shared/KVM-NOTES.md).

mod common;

use common::{kvm_or_skip, lines_of, run, write_config};

fn two_oslets(cmd_a: &str, cmd_b: &str, ring: &str) -> String {
    format!(
        "[host]\noversubscribe = true\n\
         [[oslet]]\nname = \"a\"\ncpus = 1\nmemory = \"16MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"{cmd_a}\"\n\
         [[oslet]]\nname = \"b\"\ncpus = 1\nmemory = \"16MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"{cmd_b}\"\n\
         [[link]]\nbetween = [\"a\", \"b\"]\nring = \"{ring}\"\n"
    )
}

#[test]
fn two_oslets_exchange_100000_messages_both_ways_without_loss() {
    if !kvm_or_skip("two_oslets_exchange_100000_messages_both_ways_without_loss") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "stream.toml",
        &two_oslets("link-stream=100000", "link-stream=100000", "256KiB"),
    );
    let (code, out, err) = run(&["up", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        lines_of(&out, "a").contains(&"oslet-testkernel: link b: sent 100000 received 100000 ok"),
        "{out}"
    );
    assert!(
        lines_of(&out, "b").contains(&"oslet-testkernel: link a: sent 100000 received 100000 ok"),
        "{out}"
    );
}

#[test]
fn a_four_oslet_mesh_passes_a_token_around_the_ring() {
    if !kvm_or_skip("a_four_oslet_mesh_passes_a_token_around_the_ring") {
        return;
    }
    let names = ["p0", "p1", "p2", "p3"];
    let mut text =
        String::from("[host]\noversubscribe = true\n[links]\nmesh = true\nring = \"16KiB\"\n");
    for (i, n) in names.iter().enumerate() {
        let next = names[(i + 1) % 4];
        let prev = names[(i + 3) % 4];
        let start = if i == 0 { " token-start" } else { "" };
        text += &format!(
            "[[oslet]]\nname = \"{n}\"\ncpus = 1\nmemory = \"16MiB\"\nkernel = \"builtin:testkernel\"\n\
             cmdline = \"link-token=10 token-next={next} token-prev={prev}{start}\"\n"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "mesh.toml", &text);
    let (code, out, err) = run(&["up", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");
    let starter = lines_of(&out, "p0");
    assert!(
        starter
            .iter()
            .any(|l| l.starts_with("oslet-testkernel: token: 10 rounds, final value ")),
        "{out}"
    );
    for n in &names[1..] {
        assert!(
            lines_of(&out, n)
                .iter()
                .any(|l| l.starts_with("oslet-testkernel: token: passed ")),
            "{n}:\n{out}"
        );
    }
    // Every OSlet of the mesh got one link to each of the other three.
    for n in names {
        let links: Vec<&str> = lines_of(&out, n)
            .into_iter()
            .filter(|l| l.starts_with("oslet-testkernel: link to ") && l.contains(": side "))
            .collect();
        assert_eq!(links.len(), 3, "{n}: {links:?}");
    }
}

#[test]
fn when_a_vmm_is_killed_mid_stream_its_peer_sees_the_link_down_and_lost_nothing() {
    if !kvm_or_skip("when_a_vmm_is_killed_mid_stream_its_peer_sees_the_link_down_and_lost_nothing")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "kill.toml",
        &two_oslets("link-stream=100000000", "link-stream=100000000", "64KiB"),
    );
    let mut up = common::spawn_up(&cfg);
    assert!(
        up.wait_for("b | oslet-testkernel: link a: "),
        "{}",
        up.console()
    );
    // SAFETY: kill(2) on a VMM process of this test's `oslet up`.
    unsafe { libc::kill(common::vmm_pid(&cfg, "a"), libc::SIGKILL) };
    assert!(
        up.wait_for("b | oslet-testkernel: link a: peer down after "),
        "{}",
        up.console()
    );
    let down = up.seen.last().cloned().unwrap_or_default();
    let (_, err) = up.finish();
    // "peer down after N messages, all N valid": N received, every one checked.
    let words: Vec<&str> = down.split_whitespace().collect();
    let n = words
        .iter()
        .position(|w| *w == "after")
        .map(|i| words[i + 1])
        .unwrap();
    assert!(down.ends_with(&format!("all {n} valid")), "{down}");
    assert!(
        err.contains("a: VMM process died: killed by signal 9"),
        "{err}"
    );
    assert!(err.contains("b: powered off (status 0)"), "{err}");
}

/// The number after `word` in `line` ("... after 1234 messages" -> 1234).
fn number_after(line: &str, word: &str) -> u64 {
    let w: Vec<&str> = line
        .split([' ', ',', '(', ')'])
        .filter(|w| !w.is_empty())
        .collect();
    let i = w
        .iter()
        .position(|x| *x == word)
        .unwrap_or_else(|| panic!("no {word:?} in {line:?}"));
    w[i + 1]
        .parse()
        .unwrap_or_else(|_| panic!("no number after {word:?} in {line:?}"))
}

#[test]
fn a_killed_oslet_restarted_on_failure_comes_back_up_at_its_peer_and_streams_again() {
    if !kvm_or_skip(
        "a_killed_oslet_restarted_on_failure_comes_back_up_at_its_peer_and_streams_again",
    ) {
        return;
    }
    // Both stream 100,000 checked messages each way and wait for a peer that goes
    // down to come back; a is restarted by the supervisor when its VMM dies.
    let words = "link-stream=100000 link-reconnect=1";
    let text = two_oslets(words, words, "64KiB").replacen(
        &format!("cmdline = \"{words}\"\n"),
        &format!("cmdline = \"{words}\"\nrestart = \"on-failure\"\n"),
        1,
    );
    assert!(text.contains("restart = \"on-failure\""), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "restart.toml", &text);
    let mut up = common::spawn_up(&cfg);
    // Mid-stream: b has received 1,000 of a's messages (of 100,000).
    assert!(
        up.wait_for("b | oslet-testkernel: link a: 1000 received"),
        "{}",
        up.console()
    );
    let (a_pid, b_pid) = (common::vmm_pid(&cfg, "a"), common::vmm_pid(&cfg, "b"));
    // SAFETY: kill(2) on a VMM process of this test's `oslet up`.
    unsafe { libc::kill(a_pid, libc::SIGKILL) };

    // b sees the link go down, with everything it received from a valid...
    let down = up
        .wait_until(|l| l.starts_with("b | oslet-testkernel: link a: peer down after "))
        .unwrap_or_else(|| panic!("b never saw a go down:\n{}", up.console()));
    let received = number_after(&down, "after");
    assert!(down.ends_with(&format!("all {received} valid")), "{down}");
    assert!(received >= 1000, "{down}");
    // ... and says how many of its own messages a had consumed before it died:
    // at least as many as a said it had received.
    let taken = up
        .wait_until(|l| l.starts_with("b | oslet-testkernel: link a: peer "))
        .unwrap_or_else(|| panic!("no accounting line:\n{}", up.console()));
    let a_said: u64 = up
        .seen
        .iter()
        .filter_map(|l| l.strip_prefix("a | oslet-testkernel: link b: "))
        .filter_map(|l| l.strip_suffix(" received")?.parse().ok())
        .max()
        .unwrap_or(0);
    if taken.contains(": peer consumed ") {
        let consumed = number_after(&taken, "consumed");
        let sent = number_after(&taken, "the");
        assert!(
            a_said <= consumed && consumed <= sent,
            "a said it received {a_said}: {taken}"
        );
    } else {
        // The restart can overtake the down (b descheduled for the whole of a's
        // reboot); then b cannot know how far a got, and says so.
        assert!(
            taken.contains(": peer restarted before it was seen down;"),
            "{taken}"
        );
    }

    // a comes back as a new incarnation (a new epoch), and b connects to it.
    let again = up
        .wait_until(|l| l.starts_with("b | oslet-testkernel: link a: up again (peer epoch "))
        .unwrap_or_else(|| panic!("a never came back at b:\n{}", up.console()));
    let (new_epoch, old_epoch) = (number_after(&again, "epoch"), number_after(&again, "was"));
    assert_ne!(new_epoch, old_epoch, "{again}");
    // The supervisor recorded the kill and the restart; b kept running throughout.
    let ps = up.ps();
    let of = |name: &str| {
        ps.as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {ps}"))
            .clone()
    };
    let (a, b) = (of("a"), of("b"));
    assert_eq!(a["restarts"], 1, "{ps}");
    assert_eq!(b["restarts"], 0, "{ps}");
    assert_eq!(b["state"], "running", "{ps}");
    assert_eq!(b["pid"].as_i64(), Some(i64::from(b_pid)), "{ps}");
    if a["state"] == "running" {
        assert_ne!(a["pid"].as_i64(), Some(i64::from(a_pid)), "{ps}");
        assert_eq!(
            a["last_exit"], "VMM process died: killed by signal 9",
            "{ps}"
        );
    }

    // The stream with the new incarnation is complete and checked, both ways.
    let b_ok = "b | oslet-testkernel: link a: sent 100000 received 100000 ok";
    let a_ok = "a | oslet-testkernel: link b: sent 100000 received 100000 ok";
    let mut need: Vec<&str> = [b_ok, a_ok]
        .into_iter()
        .filter(|l| !up.seen.iter().any(|s| s == l))
        .collect();
    while !need.is_empty() {
        let got = up
            .wait_until(|l| need.contains(&l))
            .unwrap_or_else(|| panic!("the new stream did not finish:\n{}", up.console()));
        need.retain(|n| *n != got);
    }
    let console = up.console();
    let (code, err) = up.finish();
    for l in [b_ok, a_ok] {
        assert!(console.lines().any(|c| c == l), "{l}:\n{console}");
    }
    assert!(!console.contains("corrupt"), "{console}");
    // (Each OSlet's console has its own relay, so a's lines may come after b's.)
    assert!(
        console.lines().any(
            |l| l.starts_with("a | oslet-testkernel: link to b: side a,")
                && l.ends_with(&format!("attached (epoch {new_epoch})"))
        ),
        "a's new incarnation attached with the epoch b saw:\n{console}"
    );
    assert!(
        err.contains("a: VMM process died: killed by signal 9"),
        "{err}"
    );
    assert!(err.contains("a: restarting (1 of 3)"), "{err}");
    assert!(err.contains("a: powered off (status 0)"), "{err}");
    assert_eq!(err.matches("b: powered off (status 0)").count(), 1, "{err}");
    assert!(!err.contains("b: restarting"), "{err}");
    assert_eq!(code, Some(0), "{err}\n{console}");
}

#[test]
fn a_peer_scribbling_over_its_section_breaks_the_link_but_not_the_other_oslet() {
    if !kvm_or_skip("a_peer_scribbling_over_its_section_breaks_the_link_but_not_the_other_oslet") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "hostile.toml",
        &two_oslets("link-hostile", "link-stream=100000000", "64KiB"),
    );
    let mut up = common::spawn_up(&cfg);
    assert!(
        up.wait_for("b | oslet-testkernel: link a: broken: "),
        "{}",
        up.console()
    );
    // b powers off by itself after reporting; the scribbler runs until stopped.
    assert!(
        common::wait_vmm_gone(&cfg, "b"),
        "b kept running after the broken link"
    );
    let (_, err) = up.interrupt();
    assert!(err.contains("b: powered off (status 0)"), "{err}");
    assert!(err.contains("a: stopped (signal 15)"), "{err}");
}

#[test]
fn a_doorbell_wakes_the_sleeping_peer_through_ioeventfd_and_irqfd() {
    if !kvm_or_skip("a_doorbell_wakes_the_sleeping_peer_through_ioeventfd_and_irqfd") {
        return;
    }
    // Both sides sleep on an empty ring and are woken by the other's doorbell: a guest
    // MMIO write that KVM turns into an interrupt in the other VM, no VMM thread.
    let words = "link-bench-rtts=200 link-bench-wait=doorbell";
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "doorbell.toml",
        &two_oslets(
            &format!("link-bench=initiator {words}"),
            &format!("link-bench=responder {words}"),
            "256KiB",
        ),
    );
    let (code, out, err) = run(&["up", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");
    let a = lines_of(&out, "a");
    let stats = a
        .iter()
        .find(|l| l.starts_with("oslet-testkernel: bench: doorbells rung "))
        .unwrap_or_else(|| panic!("no doorbell statistics:\n{out}"));
    // "bench: doorbells rung R, sleeps S, interrupts I"
    let num = |key: &str| -> u64 {
        let w: Vec<&str> = stats.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        let i = w.iter().position(|x| *x == key).unwrap();
        w[i + 1].parse().unwrap()
    };
    assert!(
        num("interrupts") > 0,
        "the sleeping side was woken by interrupts: {stats}"
    );
    assert!(num("rung") > 0, "{stats}");
    assert!(
        a.iter().any(|l| l
            .starts_with("oslet-testkernel: bench {\"case\":\"oslet-doorbell\",\"msg_bytes\":64,")),
        "{out}"
    );
}

#[test]
fn a_guest_cannot_write_its_peers_section() {
    if !kvm_or_skip("a_guest_cannot_write_its_peers_section") {
        return;
    }
    // a tries to overwrite b's magic word and producer index; the slot is
    // KVM_MEM_READONLY in a's VM, so the VMM drops both writes and says so.
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "poke.toml",
        &two_oslets("link-poke-peer", "link-stream=1000", "64KiB"),
    );
    let (code, out, err) = run(&["up", cfg.to_str().unwrap()]);
    assert!(
        lines_of(&out, "a")
            .contains(&"oslet-testkernel: link b: peer section is read-only (2 writes dropped)"),
        "{out}\n{err}"
    );
    assert!(
        err.contains("in the read-only section of its link with b; the write is dropped"),
        "{err}"
    );
    // b never saw a bad word: its peer just went away.
    assert!(
        lines_of(&out, "b")
            .iter()
            .any(|l| l.starts_with("oslet-testkernel: link a: peer down after 0 messages")),
        "{out}"
    );
    assert_eq!(code, 0, "{out}\n{err}");
}

#[test]
fn link_probe_measures_ring3_memory_and_each_sides_message_cost() {
    if !kvm_or_skip("link_probe_measures_ring3_memory_and_each_sides_message_cost") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "probe.toml",
        &two_oslets("link-probe", "link-probe", "1MiB"),
    );
    let (code, out, err) = run(&["up", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");
    // The number right after `prefix` (which ends with its colon).
    let cycles = |name: &str, prefix: &str| -> u64 {
        let head = format!("oslet-testkernel: probe: {prefix}");
        let l = lines_of(&out, name)
            .into_iter()
            .find(|l| l.starts_with(&head))
            .unwrap_or_else(|| panic!("{name}: no {prefix:?} line:\n{out}"));
        l[head.len()..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number in {l:?}"))
    };
    for what in [
        "load ram",
        "load peer-window",
        "store own-window",
        "copy ram->own-window",
        "movsb ram->own-window",
    ] {
        for n in [4096, 65536] {
            assert!(cycles("a", &format!("{what} {n} B:")) > 0, "{out}");
        }
    }
    for n in [64, 4096, 65536] {
        for how in ["", " while the peer polls the link"] {
            assert!(cycles("a", &format!("send {n} B{how}:")) > 0, "{out}");
            assert!(cycles("b", &format!("recv {n} B{how}:")) > 0, "{out}");
        }
    }
    for n in [65536, 1 << 20] {
        assert!(cycles("a", &format!("store after the peer loaded it {n} B:")) > 0);
        assert!(cycles("b", &format!("load after the peer stored it {n} B:")) > 0);
        assert!(cycles("b", &format!("copy to RAM after the peer stored it {n} B:")) > 0);
    }
    assert!(
        lines_of(&out, "a")
            .iter()
            .any(|l| l.starts_with("oslet-testkernel: probe: rdtsc: ")),
        "{out}"
    );
}
