//! End-to-end: the shipped example partitions really boot on KVM, one VMM process per
//! OSlet, and every vCPU of every OSlet comes up through INIT/SIPI.

mod common;

use common::{kvm_or_skip, lines_of, run};

fn cpus_online(lines: &[&str]) -> usize {
    lines.iter().filter(|l| l.contains("online (apic")).count()
}

#[test]
fn micro_example_boots_prints_its_cpu_line_and_powers_off() {
    if !kvm_or_skip("micro_example_boots_prints_its_cpu_line_and_powers_off") {
        return;
    }
    let (code, out, err) = run(&["up", "config/examples/micro.toml"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let lines = lines_of(&out, "micro");
    assert!(
        lines.contains(&"oslet-testkernel: cpu 0 online (apic 0)"),
        "{out}"
    );
    assert!(
        lines.contains(&"oslet-testkernel: ready, 1/1 cpus online"),
        "{out}"
    );
    assert!(err.contains("micro: powered off (status 0)"), "{err}");
}

#[test]
fn two_oslets_bring_up_all_eight_cpus() {
    if !kvm_or_skip("two_oslets_bring_up_all_eight_cpus") {
        return;
    }
    let (code, out, err) = run(&["up", "config/examples/two-oslets.toml"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    for name in ["alpha", "beta"] {
        let lines = lines_of(&out, name);
        assert_eq!(cpus_online(&lines), 4, "{name}:\n{out}");
        for cpu in 0..4 {
            let want = format!("oslet-testkernel: cpu {cpu} online (apic {cpu})");
            assert!(
                lines.iter().any(|l| *l == want),
                "{name} lacks {want:?}:\n{out}"
            );
        }
        assert!(
            lines.contains(&"oslet-testkernel: ready, 4/4 cpus online"),
            "{out}"
        );
    }
}

#[test]
fn sixty_four_way_brings_up_all_64_vcpus_of_its_8_oslets() {
    if !kvm_or_skip("sixty_four_way_brings_up_all_64_vcpus_of_its_8_oslets") {
        return;
    }
    let (code, out, err) = run(&["up", "config/examples/sixty-four-way.toml"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let mut total = 0;
    for i in 0..8 {
        let name = format!("p{i}");
        let lines = lines_of(&out, &name);
        assert_eq!(cpus_online(&lines), 8, "{name}:\n{out}");
        assert!(
            lines.contains(&"oslet-testkernel: ready, 8/8 cpus online"),
            "{name}:\n{out}"
        );
        total += cpus_online(&lines);
    }
    assert_eq!(total, 64);
}

#[test]
fn each_oslet_writes_its_console_to_its_own_log_file() {
    if !kvm_or_skip("each_oslet_writes_its_console_to_its_own_log_file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(
        dir.path(),
        "logs.toml",
        "[host]\noversubscribe = true\nlog_dir = \"logs\"\n\
         [[oslet]]\nname = \"a\"\ncpus = 1\nmemory = \"4MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"from-a\"\n\
         [[oslet]]\nname = \"b\"\ncpus = 2\nmemory = \"8MiB\"\nkernel = \"builtin:testkernel\"\nconsole = \"log\"\n",
    );
    let (code, out, err) = run(&["up", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let a = std::fs::read_to_string(dir.path().join("logs/a.log")).unwrap();
    let b = std::fs::read_to_string(dir.path().join("logs/b.log")).unwrap();
    assert!(a.contains("cmdline \"from-a oslet.name=a "), "{a}");
    assert!(b.contains("ready, 2/2 cpus online"), "{b}");
    assert!(
        lines_of(&out, "b").is_empty(),
        "console = \"log\" keeps b off the terminal:\n{out}"
    );
    assert!(!lines_of(&out, "a").is_empty());
}

#[test]
fn a_triple_faulting_oslet_is_reported_and_its_neighbour_never_notices() {
    if !kvm_or_skip("a_triple_faulting_oslet_is_reported_and_its_neighbour_never_notices") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(
        dir.path(),
        "crash.toml",
        "[host]\noversubscribe = true\n\
         [[oslet]]\nname = \"bad\"\ncpus = 1\nmemory = \"4MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"triple-fault\"\n\
         [[oslet]]\nname = \"good\"\ncpus = 2\nmemory = \"8MiB\"\nkernel = \"builtin:testkernel\"\n",
    );
    let (code, out, err) = run(&["up", cfg.to_str().unwrap()]);
    assert_eq!(
        code, 1,
        "a crashed OSlet makes `oslet up` fail:\n{out}{err}"
    );
    assert!(
        err.contains("bad: crashed: triple fault on vCPU 0"),
        "{err}"
    );
    assert!(err.contains("good: powered off (status 0)"), "{err}");
    assert!(
        lines_of(&out, "good").contains(&"oslet-testkernel: ready, 2/2 cpus online"),
        "{out}"
    );
}

#[test]
fn guest_failure_status_is_reported_and_fails_oslet_up() {
    if !kvm_or_skip("guest_failure_status_is_reported_and_fails_oslet_up") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(
        dir.path(),
        "panic.toml",
        "[[oslet]]\nname = \"p\"\ncpus = 1\nmemory = \"4MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"panic\"\n",
    );
    let (code, out, err) = run(&["up", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        lines_of(&out, "p")
            .iter()
            .any(|l| l.starts_with("oslet-testkernel: panic: ")),
        "{out}"
    );
    assert!(err.contains("p: powered off (status 3)"), "{err}");
}

#[test]
fn sigint_stops_every_oslet_cleanly() {
    if !kvm_or_skip("sigint_stops_every_oslet_cleanly") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(
        dir.path(),
        "hold.toml",
        "[host]\noversubscribe = true\n\
         [[oslet]]\nname = \"a\"\ncpus = 2\nmemory = \"8MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"halt\"\n\
         [[oslet]]\nname = \"b\"\ncpus = 2\nmemory = \"8MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"halt\"\n",
    );
    let mut up = common::spawn_up(&cfg);
    assert!(
        up.wait_for_n("halting without power-off", 2),
        "{}",
        up.console()
    );
    let (code, err) = up.interrupt();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("a: stopped (signal 15)") && err.contains("b: stopped (signal 15)"),
        "{err}"
    );
}

#[test]
fn a_killed_vmm_process_is_reported_as_died_and_the_other_oslet_runs_on() {
    if !kvm_or_skip("a_killed_vmm_process_is_reported_as_died_and_the_other_oslet_runs_on") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(
        dir.path(),
        "kill.toml",
        "[host]\noversubscribe = true\n\
         [[oslet]]\nname = \"victim\"\ncpus = 1\nmemory = \"4MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"halt\"\n\
         [[oslet]]\nname = \"other\"\ncpus = 1\nmemory = \"4MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"halt\"\n",
    );
    let mut up = common::spawn_up(&cfg);
    assert!(
        up.wait_for_n("halting without power-off", 2),
        "{}",
        up.console()
    );
    // SAFETY: kill(2) on the victim's VMM process.
    unsafe { libc::kill(common::vmm_pid(&cfg, "victim"), libc::SIGKILL) };
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The other OSlet is still running: `oslet up` has not returned.
    assert!(
        up.child.try_wait().unwrap().is_none(),
        "oslet up ended when one VMM died"
    );
    let (code, err) = up.interrupt();
    assert!(
        err.contains("victim: VMM process died: killed by signal 9"),
        "{err}"
    );
    assert!(err.contains("other: stopped (signal 15)"), "{err}");
    assert_eq!(code, Some(1), "{err}");
}

#[test]
fn each_vcpu_thread_is_pinned_to_the_host_cpu_the_plan_gives_it() {
    if !kvm_or_skip("each_vcpu_thread_is_pinned_to_the_host_cpu_the_plan_gives_it") {
        return;
    }
    if std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        < 2
    {
        eprintln!("skipped each_vcpu_thread_is_pinned_to_the_host_cpu_the_plan_gives_it: needs 2 host CPUs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(
        dir.path(),
        "pin.toml",
        "[[oslet]]\nname = \"pin\"\ncpus = [1, 0]\nmemory = \"8MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"halt\"\n",
    );
    let mut up = common::spawn_up(&cfg);
    assert!(up.wait_for("halting without power-off"), "{}", up.console());
    let pid = common::vmm_pid(&cfg, "pin");
    let mut affinity = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_string())
            .unwrap_or_default();
        affinity.insert(comm.trim().to_string(), cpus);
    }
    let _ = up.interrupt();
    assert_eq!(
        affinity.get("pin-vcpu0").map(String::as_str),
        Some("1"),
        "{affinity:?}"
    );
    assert_eq!(
        affinity.get("pin-vcpu1").map(String::as_str),
        Some("0"),
        "{affinity:?}"
    );
}

#[test]
fn an_oslet_bound_to_numa_node_0_boots() {
    if !kvm_or_skip("an_oslet_bound_to_numa_node_0_boots") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(
        dir.path(),
        "numa.toml",
        "[[oslet]]\nname = \"n0\"\ncpus = 1\nmemory = \"8MiB\"\nnuma_node = 0\nkernel = \"builtin:testkernel\"\n",
    );
    let (code, out, err) = run(&["up", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        lines_of(&out, "n0").contains(&"oslet-testkernel: ready, 1/1 cpus online"),
        "{out}"
    );
}

#[test]
fn an_oslet_on_2mib_huge_pages_boots() {
    if !kvm_or_skip("an_oslet_on_2mib_huge_pages_boots") {
        return;
    }
    let Some(_pages) = common::HugePages::reserve(8) else {
        eprintln!("skipped an_oslet_on_2mib_huge_pages_boots: cannot reserve 8 huge pages (needs root and free memory)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(
        dir.path(),
        "huge.toml",
        "[[oslet]]\nname = \"huge\"\ncpus = 1\nmemory = \"16MiB\"\nhugepages = \"2M\"\nkernel = \"builtin:testkernel\"\n",
    );
    let (code, out, err) = run(&["up", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        lines_of(&out, "huge").contains(&"oslet-testkernel: ready, 1/1 cpus online"),
        "{out}"
    );
}
