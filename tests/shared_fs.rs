//! End-to-end: `[shared_fs]`, one host directory that OSlets share through
//! virtio-fs and a real virtiofsd. The test kernel's FUSE client runs in guest
//! ring 3 (src/user/fs.rs). Skips without /dev/kvm or virtiofsd, unless
//! OSLET_REQUIRE_KVM=1 / OSLET_REQUIRE_VIRTIOFSD=1 (as in CI).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{kvm_or_skip, lines_of, oslet, run, vmm_pid, write_config};

/// The virtiofsd the VMM would find: $OSLET_VIRTIOFSD, PATH, ~/.cargo/bin.
fn virtiofsd_or_skip(test: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("virtiofsd").is_file()));
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if found && root {
        return true;
    }
    assert!(
        std::env::var("OSLET_REQUIRE_VIRTIOFSD").as_deref() != Ok("1"),
        "{test}: virtiofsd is not on PATH (or not root) and OSLET_REQUIRE_VIRTIOFSD=1"
    );
    eprintln!("skipped {test}: needs virtiofsd on PATH and root (cargo install virtiofsd)");
    false
}

fn ready(test: &str) -> bool {
    kvm_or_skip(test) && virtiofsd_or_skip(test)
}

fn oslet_table(name: &str, cmdline: &str) -> String {
    format!(
        "[[oslet]]\nname = \"{name}\"\ncpus = 1\nmemory = \"32MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"{cmdline}\"\n"
    )
}

/// A config with OSlets (name, cmdline) sharing `share`.
fn config(dir: &Path, file: &str, share: &Path, oslets: &[(&str, &str)]) -> PathBuf {
    let mut t = format!(
        "[host]\noversubscribe = true\n[shared_fs]\npath = \"{}\"\n",
        share.display()
    );
    for (n, c) in oslets {
        t += &oslet_table(n, c);
    }
    write_config(dir, file, &t)
}

/// The test kernel's data and checksum: xorshift64 (8 bytes LE a step), FNV-1a 64.
fn expected(bytes: usize, seed: u64) -> (Vec<u8>, u64) {
    let mut x = if seed == 0 {
        0x9e37_79b9_7f4a_7c15
    } else {
        seed
    };
    let mut d = Vec::with_capacity(bytes + 8);
    while d.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        d.extend_from_slice(&x.to_le_bytes());
    }
    d.truncate(bytes);
    (d.clone(), fnv(&d))
}

fn fnv(d: &[u8]) -> u64 {
    d.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &c| {
        (h ^ u64::from(c)).wrapping_mul(0x100_0000_01b3)
    })
}

fn up_ok(cfg: &Path) -> String {
    let (code, out, err) = run(&["up", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");
    out
}

#[test]
fn two_oslets_share_a_file_write_read_unlink_stat() {
    if !ready("two_oslets_share_a_file_write_read_unlink_stat") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let (data, sum) = expected(1 << 20, 7);
    let line = |verb: &str| {
        format!(
            "oslet-testkernel: fs: {verb} 1048576 bytes {} data.bin, checksum {sum:#x}",
            if verb == "wrote" { "to" } else { "from" }
        )
    };

    let a = config(
        dir.path(),
        "a.toml",
        &share,
        &[("a", "fs-write=data.bin,1048576,7")],
    );
    let out = up_ok(&a);
    assert!(
        lines_of(&out, "a").contains(&line("wrote").as_str()),
        "{out}"
    );
    let host = std::fs::read(share.join("data.bin")).unwrap();
    assert_eq!(host.len(), data.len());
    assert_eq!(fnv(&host), sum, "the host sees the bytes the guest wrote");

    let b = config(
        dir.path(),
        "b.toml",
        &share,
        &[("b", "fs-read=data.bin fs-unlink=data.bin")],
    );
    let out = up_ok(&b);
    let lines = lines_of(&out, "b");
    assert!(lines.contains(&line("read").as_str()), "{out}");
    assert!(
        lines.contains(&"oslet-testkernel: fs: unlinked data.bin"),
        "{out}"
    );
    assert!(!share.join("data.bin").exists());

    let a2 = config(dir.path(), "a2.toml", &share, &[("a", "fs-stat=data.bin")]);
    let out = up_ok(&a2);
    assert!(
        lines_of(&out, "a").contains(&"oslet-testkernel: fs: stat data.bin: no such file"),
        "{out}"
    );
}

#[test]
fn a_missing_virtiofsd_is_one_clear_error() {
    if !kvm_or_skip("a_missing_virtiofsd_is_one_clear_error") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "m.toml", dir.path(), &[("a", "fs-stat=x")]);
    let out = oslet()
        .args(["up", cfg.to_str().unwrap()])
        .env("OSLET_VIRTIOFSD", dir.path().join("no-such-virtiofsd"))
        .output()
        .unwrap();
    let all =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("virtiofsd not found") && all.contains("cargo install virtiofsd"),
        "{all}"
    );
    assert!(!all.contains("panicked"), "{all}");
}

#[test]
fn a_missing_shared_dir_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "d.toml",
        &dir.path().join("nope"),
        &[("a", "fs-stat=x")],
    );
    for cmd in ["check", "up"] {
        let (code, out, err) = run(&[cmd, cfg.to_str().unwrap()]);
        assert_eq!(code, 2, "{cmd}: {out}\n{err}");
        assert!(err.contains("shared_fs.path: "), "{cmd}: {err}");
        assert!(
            err.contains("cannot be used (entity not found)"),
            "{cmd}: {err}"
        );
    }
}

/// The virtiofsd children of `pid`.
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let c = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(c.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    out.retain(|c| {
        std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|n| n.trim() == "virtiofsd")
    });
    out
}

#[test]
fn killing_virtiofsd_mid_write_fails_that_oslet_only() {
    if !ready("killing_virtiofsd_mid_write_fails_that_oslet_only") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    // 8 GiB: far more than gets written before the kill.
    let cfg = config(
        dir.path(),
        "k.toml",
        &share,
        &[("a", "fs-write=big.bin,8589934592,1"), ("b", "halt")],
    );
    let err_path = dir.path().join("stderr.txt");
    let mut child = oslet()
        .args(["up", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let sup = child.id() as i32;
    // A watchdog: whatever happens, `oslet up` gets Ctrl-C after 90 s, so that
    // the reads below end.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(90));
        // SAFETY: kill(2) on the pid of the `oslet up` this test spawned (a stale
        // pid at worst, when it already ended and was reaped).
        unsafe { libc::kill(sup, libc::SIGINT) };
    });
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let mut seen = Vec::new();
    let mut wait_for = |pat: &str, seen: &mut Vec<String>| loop {
        match lines.next() {
            Some(Ok(l)) => {
                let hit = l.contains(pat);
                seen.push(l);
                if hit {
                    return true;
                }
            }
            _ => return false,
        }
    };
    assert!(
        wait_for("b | oslet-testkernel: halting", &mut seen),
        "{seen:#?}"
    );
    let a = vmm_pid(&cfg, "a");
    let mut grown = false;
    for _ in 0..500 {
        if std::fs::metadata(share.join("big.bin")).is_ok_and(|m| m.len() > 1 << 20) {
            grown = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let daemons = children(a);
    if grown && daemons.len() == 1 {
        // SAFETY: kill(2) on the pid of the virtiofsd that OSlet a's VMM started.
        unsafe { libc::kill(daemons[0], libc::SIGKILL) };
    }
    let got = wait_for("a | oslet-testkernel: fs: ", &mut seen);
    // a powers off with 1; b still runs until Ctrl-C ends it.
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on the pid of the `oslet up` spawned above, not yet reaped.
    unsafe { libc::kill(sup, libc::SIGINT) };
    while wait_for("\u{0}", &mut seen) {}
    let _ = child.wait();
    let err = std::fs::read_to_string(&err_path).unwrap();
    assert!(grown, "the write did not start: {seen:#?}\n{err}");
    assert_eq!(daemons.len(), 1, "{daemons:?}");
    assert!(got, "{seen:#?}\n{err}");
    assert!(
        seen.iter().any(|l| l.contains(
            "a | oslet-testkernel: fs: I/O error: write big.bin: the device needs a reset"
        )),
        "{seen:#?}\n{err}"
    );
    assert!(err.contains("a: powered off (status 1)"), "{err}");
    assert!(err.contains("b: stopped"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("virtiofsd (pid"), "{err}");
}

/// What OSlet `a` and its virtiofsd make of one forged chain (`fs-forge=<kind>`).
struct Forgery {
    kind: &'static str,
    /// a's console line about the forged request.
    guest: &'static str,
    /// virtiofsd's own error line, relayed into a's stderr (None: it answered).
    daemon: Option<&'static str>,
}

/// The forgeries of the test kernel and what the real virtiofsd (1.14) does with
/// each: a descriptor it cannot map (outside RAM, or running past its end) or a
/// head index past the queue ends the daemon (it logs why and exits 1), and the
/// VMM then marks a's device as needing a reset; a looping or over-long chain is
/// cut at the queue size (virtio-queue's TTL) and answered normally.
const FORGERIES: &[Forgery] = &[
    Forgery {
        kind: "oob",
        guest: "fs: I/O error: forge oob: the device needs a reset (its backend failed)",
        daemon: Some("virtiofsd error: Failed to create a queue reader: no memory region for this address range"),
    },
    Forgery {
        kind: "huge",
        guest: "fs: I/O error: forge huge: the device needs a reset (its backend failed)",
        daemon: Some("virtiofsd error: Failed to create a queue writer: volatile memory error"),
    },
    Forgery {
        kind: "badidx",
        guest: "fs: I/O error: forge badidx: the device needs a reset (its backend failed)",
        daemon: Some("virtiofsd error: Failed to handle an incoming request: failed to decode fuse message"),
    },
    Forgery {
        kind: "loop",
        guest: "fs: forge loop: answered, used id 0, 120 bytes, FUSE error 0",
        daemon: None,
    },
    Forgery {
        kind: "long",
        guest: "fs: forge long: answered, used id 0, 120 bytes, FUSE error 0",
        daemon: None,
    },
];

#[test]
fn forged_descriptors_fail_only_the_forging_oslet() {
    if !ready("forged_descriptors_fail_only_the_forging_oslet") {
        return;
    }
    for f in FORGERIES {
        let dir = tempfile::tempdir().unwrap();
        let share = dir.path().join("share");
        std::fs::create_dir(&share).unwrap();
        // a forges, then looks at the share again; b, on the same directory with
        // its own virtiofsd, starts its round trip only once a is done.
        let b_cmd = "fs-wait=go fs-write=b.bin,262144,3 fs-read=b.bin";
        let cfg = config(
            dir.path(),
            "f.toml",
            &share,
            &[
                ("a", &format!("fs-forge={} fs-stat=b.bin", f.kind)),
                ("b", b_cmd),
            ],
        );
        let mut up = common::spawn_up(&cfg);
        let a_said = up.wait_for("a | oslet-testkernel: fs: ");
        let a_line = up.seen.last().cloned().unwrap_or_default();
        // Where a's device survived, its next word looks before b writes.
        let a_stat =
            f.daemon.is_some() || up.wait_for("a | oslet-testkernel: fs: stat b.bin: no such file");
        std::fs::write(share.join("go"), b"").unwrap();
        let (_, sum) = expected(262_144, 3);
        let read_line =
            format!("b | oslet-testkernel: fs: read 262144 bytes from b.bin, checksum {sum:#x}");
        let b_read = up.wait_for(&read_line);
        let console = up.console();
        let (code, err) = up.finish();
        let ctx = format!("kind {}:\n{console}\n{err}", f.kind);
        assert!(a_said && a_stat, "{ctx}");
        assert_eq!(
            a_line,
            format!("a | oslet-testkernel: {}", f.guest),
            "{ctx}"
        );
        assert!(b_read, "b's round trip after a's forgery: {ctx}");
        let host = std::fs::read(share.join("b.bin")).unwrap();
        assert_eq!(fnv(&host), sum, "{ctx}");
        assert!(!err.contains("panicked"), "{ctx}");
        assert!(err.contains("b: powered off (status 0)"), "{ctx}");
        match f.daemon {
            Some(cause) => {
                assert!(
                    err.contains(&format!("oslet[a]: warning: {cause}")),
                    "{ctx}"
                );
                assert!(
                    err.contains("oslet[a]: warning: a: virtiofsd (pid")
                        && err.contains(
                            "exited (exit status: 1); the shared filesystem is gone for this OSlet"
                        ),
                    "{ctx}"
                );
                assert!(err.contains("a: powered off (status 1)"), "{ctx}");
                assert_eq!(code, Some(1), "{ctx}");
            }
            None => {
                // The device still works after the forgery: a's next word ran
                // (a_stat above), and its virtiofsd lived on.
                assert!(!err.contains("virtiofsd ("), "{ctx}");
                assert!(err.contains("a: powered off (status 0)"), "{ctx}");
                assert_eq!(code, Some(0), "{ctx}");
            }
        }
    }
}

/// The virtiofsd binary, for the tests that start one themselves
/// (`[shared_fs] socket`): $OSLET_VIRTIOFSD, else the first on PATH.
fn virtiofsd_bin() -> PathBuf {
    std::env::var_os("OSLET_VIRTIOFSD")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|d| d.join("virtiofsd"))
                .find(|p| p.is_file())
        })
        .expect("virtiofsd_or_skip found one")
}

/// A virtiofsd the test started on `socket` (what a user does for
/// `[shared_fs] socket`), its log in a file; killed on drop.
struct External {
    child: std::process::Child,
    log: PathBuf,
}

impl External {
    fn start(socket: &Path, dir: &Path, log: PathBuf) -> Self {
        let child = std::process::Command::new(virtiofsd_bin())
            .arg(format!("--socket-path={}", socket.display()))
            .arg(format!("--shared-dir={}", dir.display()))
            .args(["--cache=never", "--sandbox=namespace", "--log-level=info"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start virtiofsd");
        let mut d = External { child, log };
        for _ in 0..1000 {
            if socket.exists() {
                return d;
            }
            assert!(d.child.try_wait().unwrap().is_none(), "{}", d.log());
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("virtiofsd made no socket: {}", d.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status, if it exits within 10 s.
    fn wait_exit(&mut self) -> Option<std::process::ExitStatus> {
        for _ in 0..1000 {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for External {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `[shared_fs]` with `socket` and OSlets (name, cmdline).
fn socket_config(
    dir: &Path,
    file: &str,
    share: &Path,
    socket: &str,
    oslets: &[(&str, &str)],
) -> PathBuf {
    let mut t = format!(
        "[host]\noversubscribe = true\n[shared_fs]\npath = \"{}\"\nsocket = \"{socket}\"\n",
        share.display()
    );
    for (n, c) in oslets {
        t += &oslet_table(n, c);
    }
    write_config(dir, file, &t)
}

#[test]
fn external_virtiofsds_on_shared_fs_socket_serve_a_round_trip() {
    if !ready("external_virtiofsds_on_shared_fs_socket_serve_a_round_trip") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    // One backend per OSlet, as a user would start them: {name} in the path.
    let mut daemons: Vec<External> = ["a", "b"]
        .iter()
        .map(|n| {
            External::start(
                &dir.path().join(format!("vfs-{n}.sock")),
                &share,
                dir.path().join(format!("vfs-{n}.log")),
            )
        })
        .collect();
    let cfg = socket_config(
        dir.path(),
        "ext.toml",
        &share,
        "vfs-{name}.sock",
        &[
            ("a", "fs-write=ext.bin,1048576,11 fs-write=done,0,1"),
            ("b", "fs-wait=done fs-read=ext.bin"),
        ],
    );
    let (code, out, err) = run(&["up", cfg.to_str().unwrap()]);
    let (data, sum) = expected(1 << 20, 11);
    let ctx = format!("{out}\n{err}\n{}\n{}", daemons[0].log(), daemons[1].log());
    assert_eq!(code, 0, "{ctx}");
    assert!(
        lines_of(&out, "a").contains(
            &format!("oslet-testkernel: fs: wrote 1048576 bytes to ext.bin, checksum {sum:#x}")
                .as_str()
        ),
        "{ctx}"
    );
    assert!(
        lines_of(&out, "b").contains(
            &format!("oslet-testkernel: fs: read 1048576 bytes from ext.bin, checksum {sum:#x}")
                .as_str()
        ),
        "{ctx}"
    );
    assert_eq!(std::fs::read(share.join("ext.bin")).unwrap(), data, "{ctx}");
    // The OSlets used these daemons (and started none of their own): each served
    // one VMM and shut down cleanly when it disconnected.
    assert!(!err.contains("virtiofsd ("), "{ctx}");
    for d in &mut daemons {
        assert!(d.wait_exit().is_some_and(|s| s.success()), "{ctx}");
        let log = d.log();
        assert!(
            log.contains("Client connected, servicing requests"),
            "{log}"
        );
        assert!(log.contains("Client disconnected, shutting down"), "{log}");
    }
}

#[test]
fn shared_fs_socket_mistakes_are_one_line_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let gone = dir.path().join("gone.sock");
    let cfg = socket_config(
        dir.path(),
        "g.toml",
        &share,
        "gone.sock",
        &[("a", "fs-stat=x")],
    );
    for cmd in ["check", "up"] {
        let (code, out, err) = run(&[cmd, cfg.to_str().unwrap()]);
        assert_eq!(code, 2, "{cmd}: {out}\n{err}");
        assert_eq!(
            err.trim_end(),
            format!(
                "oslet: {}: shared_fs.socket: {} cannot be used (entity not found); start the backend first (virtiofsd --socket-path={} --shared-dir={}), or leave socket out and let oslet start one",
                cfg.display(),
                gone.display(),
                gone.display(),
                share.display()
            ),
            "{cmd}"
        );
    }
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let two = socket_config(
        dir.path(),
        "two.toml",
        &share,
        "stale.sock",
        &[("a", "fs-stat=x"), ("b", "fs-stat=x")],
    );
    let (code, _, err) = run(&["check", two.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("shared_fs.socket: 2 OSlets cannot share the one backend socket")
            && err.contains("put {name} in the path"),
        "{err}"
    );

    // A socket file nobody listens on passes the check (it is a socket) and fails
    // the OSlet when its VMM connects.
    if !kvm_or_skip("shared_fs_socket_mistakes_are_one_line_naming_the_field") {
        return;
    }
    let cfg = socket_config(
        dir.path(),
        "s.toml",
        &share,
        "stale.sock",
        &[("a", "fs-stat=x")],
    );
    let (code, out, err) = run(&["up", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains(&format!(
            "oslet: a: VMM failed: shared filesystem (shared_fs.socket): vhost-user-fs backend: cannot connect to the vhost-user socket {} (nobody listens there: is the backend running?): Connection refused",
            stale.display()
        )),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn an_external_backend_that_exits_fails_its_oslet_through_the_socket() {
    if !ready("an_external_backend_that_exits_fails_its_oslet_through_the_socket") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let sock = dir.path().join("vfs.sock");
    let mut d = External::start(&sock, &share, dir.path().join("vfs.log"));
    // The forged descriptor makes virtiofsd exit 1; the VMM did not start it, so it
    // sees the exit as the socket closing.
    let cfg = socket_config(
        dir.path(),
        "x.toml",
        &share,
        "vfs.sock",
        &[("a", "fs-forge=oob")],
    );
    let (code, out, err) = run(&["up", cfg.to_str().unwrap()]);
    let status = d.wait_exit();
    let ctx = format!("{out}\n{err}\n{}", d.log());
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{ctx}");
    assert!(
        d.log().contains("no memory region for this address range"),
        "{ctx}"
    );
    assert_eq!(code, 1, "{ctx}");
    assert!(
        lines_of(&out, "a").contains(
            &"oslet-testkernel: fs: I/O error: forge oob: the device needs a reset (its backend failed)"
        ),
        "{ctx}"
    );
    assert!(
        err.contains(&format!(
            "oslet[a]: warning: a: the vhost-user backend at {} (shared_fs.socket) closed the connection; the shared filesystem is gone for this OSlet",
            sock.display()
        )),
        "{ctx}"
    );
    assert!(err.contains("a: powered off (status 1)"), "{ctx}");
    assert!(!err.contains("panicked"), "{ctx}");
}

#[test]
fn a_backend_already_serving_another_vmm_is_a_timeout_not_a_hang() {
    if !ready("a_backend_already_serving_another_vmm_is_a_timeout_not_a_hang") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let _d = External::start(
        &dir.path().join("vfs.sock"),
        &share,
        dir.path().join("vfs.log"),
    );
    // Two partition files naming one socket (each file alone is fine): virtiofsd
    // accepts the first VMM only; the second's connection waits in the backlog.
    let first = socket_config(
        dir.path(),
        "1.toml",
        &share,
        "vfs.sock",
        &[("first", "halt")],
    );
    let second = socket_config(
        dir.path(),
        "2.toml",
        &share,
        "vfs.sock",
        &[("second", "fs-stat=x")],
    );
    let mut up = common::spawn_up(&first);
    assert!(
        up.wait_for("first | oslet-testkernel: halting"),
        "{}",
        up.console()
    );
    let t0 = std::time::Instant::now();
    let (code, out, err) = run(&["up", second.to_str().unwrap()]);
    let took = t0.elapsed();
    let (_, first_err) = up.interrupt();
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("oslet: second: VMM failed: shared filesystem (shared_fs.socket): vhost-user-fs backend: the vhost-user backend did not answer GET_FEATURES within 10s (does it serve another VMM?)"),
        "{err}"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(first_err.contains("first: stopped"), "{first_err}");
    assert!(
        !err.contains("panicked") && !first_err.contains("panicked"),
        "{err}\n{first_err}"
    );
}

/// Every descendant of `pid` (children, their children, ...).
fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for t in std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let c = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in c.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// The guest-RAM memfd mappings of process `pid`, from its smaps:
/// (size KiB, KernelPageSize KiB, hugetlb pages mapped KiB) per mapping.
fn guest_ram_mappings(pid: i32) -> Vec<(u64, u64, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut out = Vec::new();
    let mut cur: Option<(u64, u64, u64)> = None;
    let kib = |l: &str| -> u64 {
        l.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    for l in smaps.lines() {
        // A mapping's header: "start-end perms offset dev inode [name]".
        if l.split_whitespace()
            .next()
            .is_some_and(|a| a.contains('-') && !a.ends_with(':'))
        {
            out.extend(cur.take());
            if l.contains("memfd:oslet-guest-ram") {
                cur = Some((0, 0, 0));
            }
            continue;
        }
        if let Some(c) = cur.as_mut() {
            if l.starts_with("Size:") {
                c.0 = kib(l);
            } else if l.starts_with("KernelPageSize:") {
                c.1 = kib(l);
            } else if l.starts_with("Shared_Hugetlb:") || l.starts_with("Private_Hugetlb:") {
                c.2 += kib(l);
            }
        }
    }
    out.extend(cur);
    out
}

#[test]
fn guest_ram_on_huge_pages_is_shared_with_virtiofsd() {
    if !ready("guest_ram_on_huge_pages_is_shared_with_virtiofsd") {
        return;
    }
    // 32 MiB of guest RAM: 16 pages of 2 MiB.
    let Some(_pages) = common::HugePages::reserve(16) else {
        eprintln!("skipped guest_ram_on_huge_pages_is_shared_with_virtiofsd: cannot reserve 16 huge pages (needs root and free memory)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let t = format!(
        "[host]\noversubscribe = true\n[shared_fs]\npath = \"{}\"\n[[oslet]]\nname = \"h\"\ncpus = 1\nmemory = \"32MiB\"\nhugepages = \"2M\"\nkernel = \"builtin:testkernel\"\ncmdline = \"fs-write=h.bin,4194304,9 fs-read=h.bin fs-wait=go\"\n",
        share.display()
    );
    let cfg = write_config(dir.path(), "h.toml", &t);
    let (data, sum) = expected(4 << 20, 9);
    let mut up = common::spawn_up(&cfg);
    let read = up.wait_for(&format!(
        "h | oslet-testkernel: fs: read 4194304 bytes from h.bin, checksum {sum:#x}"
    ));
    // The OSlet now waits for `go`: look at the mappings while it runs.
    let (vmm, daemons) = if read {
        let vmm = vmm_pid(&cfg, "h");
        (guest_ram_mappings(vmm), descendants(vmm))
    } else {
        (Vec::new(), Vec::new())
    };
    let daemon_maps: Vec<(u64, u64, u64)> = daemons
        .iter()
        .flat_map(|&p| guest_ram_mappings(p))
        .collect();
    std::fs::write(share.join("go"), b"").unwrap();
    let ok = up.wait_for("h | oslet-testkernel: fs: go appeared after");
    let console = up.console();
    let (code, err) = up.finish();
    let ctx = format!("{console}\n{err}\nvmm {vmm:?}\nvirtiofsd {daemon_maps:?}");
    assert!(read && ok, "{ctx}");
    assert_eq!(code, Some(0), "{ctx}");
    assert_eq!(std::fs::read(share.join("h.bin")).unwrap(), data, "{ctx}");
    // The VMM maps all of guest RAM from the memfd, on 2 MiB pages, and the guest
    // has touched some of them.
    assert!(!vmm.is_empty(), "{ctx}");
    assert_eq!(vmm.iter().map(|m| m.0).sum::<u64>(), 32 << 10, "{ctx}");
    assert!(vmm.iter().all(|m| m.1 == 2048), "{ctx}");
    assert!(vmm.iter().map(|m| m.2).sum::<u64>() > 0, "{ctx}");
    // virtiofsd maps the same memfd from the fd it was sent, also on 2 MiB pages,
    // and has touched the pages it read the 4 MiB from and wrote them to.
    assert!(!daemon_maps.is_empty(), "{ctx}");
    assert!(daemon_maps.iter().all(|m| m.1 == 2048), "{ctx}");
    assert!(
        daemon_maps.iter().map(|m| m.2).sum::<u64>() >= 2048,
        "{ctx}"
    );
}
