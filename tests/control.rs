//! End-to-end: the supervisor's lifecycle and control API, on real KVM: detached
//! `oslet up`, `ps`, `stop`, `start`, restart on failure after a SIGKILLed VMM,
//! `logs`, `down`; every documented API call through `curl --unix-socket`; a busy
//! socket; and 1,000 requests from 8 concurrent clients.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{kvm_or_skip, run, write_config};

struct Box {
    dir: tempfile::TempDir,
    cfg: PathBuf,
    sock: PathBuf,
}

impl Box {
    fn up(test: &str) -> Option<Self> {
        Self::up_with(
            test,
            "[[oslet]]\nname = \"alpha\"\ncpus = 2\nmemory = \"8MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"halt\"\n\
             [[oslet]]\nname = \"beta\"\ncpus = 2\nmemory = \"8MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"halt\"\n\
             restart = \"on-failure\"\nrestart_limit = 2\n",
        )
    }

    /// A detached box of the `[[oslet]]` tables in `oslets`.
    fn up_with(test: &str, oslets: &str) -> Option<Self> {
        if !kvm_or_skip(test) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let cfg = write_config(
            dir.path(),
            "box.toml",
            &format!("[host]\noversubscribe = true\nlog_dir = \"logs\"\n{oslets}"),
        );
        Some(Self::detach(dir, cfg))
    }

    /// `oslet up --detach cfg` on a socket in `dir`.
    fn detach(dir: tempfile::TempDir, cfg: PathBuf) -> Self {
        let sock = dir.path().join("oslet.sock");
        let (code, out, err) = run(&[
            "up",
            "--detach",
            cfg.to_str().unwrap(),
            "--socket",
            sock.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("serving"), "{out}");
        Box { dir, cfg, sock }
    }

    fn oslet(&self, args: &[&str]) -> (i32, String, String) {
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--socket", self.sock.to_str().unwrap()]);
        run(&a)
    }

    fn ps(&self) -> serde_json::Value {
        let (code, out, err) = self.oslet(&["ps", "--json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    }

    fn state(&self, name: &str) -> (String, u64) {
        let ps = self.ps();
        let o = ps
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .unwrap()
            .clone();
        (
            o["state"].as_str().unwrap().to_string(),
            o["restarts"].as_u64().unwrap(),
        )
    }

    /// Waits until `name` shows `state` with `restarts`, up to 20 s.
    fn wait_state(&self, name: &str, state: &str, restarts: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.state(name);
            if now == (state.to_string(), restarts) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} stayed {now:?}, wanted {state} with {restarts} restarts"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("logs/{name}.log")))
            .unwrap_or_default()
    }

    /// Waits until `name`'s console log holds `pat`, up to 20 s.
    fn wait_log(&self, name: &str, pat: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log(name).contains(pat) {
            assert!(
                Instant::now() < deadline,
                "{name} never printed {pat:?}: {}",
                self.log(name)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_halted(&self, name: &str) {
        self.wait_log(name, "halting without power-off");
    }
}

impl Drop for Box {
    fn drop(&mut self) {
        // Never leave a supervisor behind, whatever the test did.
        let _ = run(&["down", "--socket", self.sock.to_str().unwrap()]);
    }
}

#[test]
fn detached_box_lifecycle_ps_stop_start_restart_on_failure_logs_down() {
    let Some(b) = Box::up("detached_box_lifecycle_ps_stop_start_restart_on_failure_logs_down")
    else {
        return;
    };
    b.wait_halted("alpha");
    b.wait_halted("beta");
    let ps = b.ps();
    assert_eq!(ps.as_array().unwrap().len(), 2);
    for o in ps.as_array().unwrap() {
        assert_eq!(o["state"], "running", "{ps}");
        assert_eq!(o["vcpus"], 2);
        assert_eq!(o["memory_bytes"], 8 << 20);
    }
    let (code, table, _) = b.oslet(&["ps"]);
    assert_eq!(code, 0);
    assert!(
        table.starts_with("NAME") && table.contains("alpha") && table.contains("running"),
        "{table}"
    );

    // stop one: the other keeps running.
    let (code, out, err) = b.oslet(&["stop", "alpha"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "alpha: stopped\n");
    assert_eq!(b.state("alpha").0, "stopped");
    assert_eq!(b.state("beta").0, "running");
    // start it again.
    let (code, _, err) = b.oslet(&["start", "alpha"]);
    assert_eq!(code, 0, "{err}");
    b.wait_state("alpha", "running", 0);
    let (code, _, err) = b.oslet(&["start", "alpha"]);
    assert_eq!(code, 2, "starting a running OSlet is refused");
    assert!(err.contains("already running"), "{err}");

    // SIGKILL beta's VMM: the supervisor records it and restarts it (on-failure).
    b.wait_halted("beta");
    let pid = common::vmm_pid(&b.cfg, "beta");
    // SAFETY: kill(2) on beta's VMM process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    b.wait_state("beta", "running", 1);
    let ps = b.ps();
    let beta = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "beta")
        .unwrap();
    assert_eq!(
        beta["last_exit"], "VMM process died: killed by signal 9",
        "{ps}"
    );
    assert_ne!(beta["pid"].as_i64().unwrap(), i64::from(pid));

    // restart alpha through the API.
    let (code, _, err) = b.oslet(&["restart", "alpha"]);
    assert_eq!(code, 0, "{err}");
    b.wait_state("alpha", "running", 0);

    b.wait_halted("alpha");
    let (code, logs, _) = b.oslet(&["logs", "alpha"]);
    assert_eq!(code, 0);
    assert!(
        logs.contains("oslet-testkernel: ready, 2/2 cpus online"),
        "{logs}"
    );
    let (code, _, err) = b.oslet(&["logs", "nobody"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no OSlet named \"nobody\"; the OSlets are alpha, beta"),
        "{err}"
    );

    let (code, _, err) = b.oslet(&["down"]);
    assert_eq!(code, 0, "{err}");
    assert!(!b.sock.exists(), "down removes the socket");
    let (code, _, err) = b.oslet(&["ps"]);
    assert_eq!(code, 1);
    assert!(err.contains("no oslet supervisor answers here"), "{err}");
}

fn curl(sock: &Path, method: &str, path: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-X", method, "--unix-socket", sock.to_str().unwrap()])
        .args(["-w", "\n%{http_code}", &format!("http://oslet{path}")])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn every_documented_api_call_works_through_curl() {
    let Some(b) = Box::up("every_documented_api_call_works_through_curl") else {
        return;
    };
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(std::env::var("CI").is_err(), "curl is missing in CI");
        eprintln!("skipped every_documented_api_call_works_through_curl: no curl");
        return;
    }
    b.wait_halted("alpha");
    let s = &b.sock;
    assert_eq!(
        curl(s, "GET", "/v1/ping"),
        (200, r#"{"ok":true}"#.to_string())
    );
    let (code, body) = curl(s, "GET", "/v1/oslets");
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (code, body) = curl(s, "GET", "/v1/oslets/alpha");
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["name"],
        "alpha"
    );
    let (code, body) = curl(s, "GET", "/v1/oslets/alpha/logs");
    assert_eq!(code, 200);
    assert!(body.contains("oslet-testkernel: boot"), "{body}");
    let (code, body) = curl(s, "POST", "/v1/oslets/alpha/stop");
    assert_eq!(
        (
            code,
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["state"].clone()
        ),
        (200, "stopped".into())
    );
    assert_eq!(curl(s, "POST", "/v1/oslets/alpha/stop").0, 409);
    assert_eq!(curl(s, "POST", "/v1/oslets/alpha/start").0, 200);
    assert_eq!(curl(s, "POST", "/v1/oslets/alpha/restart").0, 200);
    assert_eq!(curl(s, "GET", "/v1/oslets/nobody").0, 404);
    assert_eq!(curl(s, "POST", "/v1/oslets/nobody/console").0, 404);
    // console: the answer is 101 and the connection then carries the console bytes.
    {
        use std::io::{Read, Write};
        let mut c = std::os::unix::net::UnixStream::connect(s).unwrap();
        c.write_all(
            b"POST /v1/oslets/alpha/console HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        let mut head = [0u8; 32];
        c.read_exact(&mut head).unwrap();
        assert!(
            head.starts_with(b"HTTP/1.1 101 Switching Protocols"),
            "{}",
            String::from_utf8_lossy(&head)
        );
    }
    assert_eq!(curl(s, "DELETE", "/v1/oslets/alpha").0, 405);
    assert_eq!(curl(s, "GET", "/v2/anything").0, 404);
    // A malformed request: the supervisor answers 400 and keeps serving.
    {
        use std::io::{Read, Write};
        let mut c = std::os::unix::net::UnixStream::connect(s).unwrap();
        c.write_all(b"NONSENSE\r\n\r\n").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    }
    assert_eq!(curl(s, "GET", "/v1/ping").0, 200);
    let (code, body) = curl(s, "POST", "/v1/down");
    assert_eq!((code, body.as_str()), (200, r#"{"down":true}"#));
}

#[test]
fn a_second_supervisor_on_a_busy_socket_is_refused_and_the_first_runs_on() {
    let Some(b) = Box::up("a_second_supervisor_on_a_busy_socket_is_refused_and_the_first_runs_on")
    else {
        return;
    };
    let (code, _, err) = run(&[
        "up",
        "--detach",
        b.cfg.to_str().unwrap(),
        "--socket",
        b.sock.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("another oslet supervisor is serving this socket"),
        "{err}"
    );
    assert_eq!(b.ps().as_array().unwrap().len(), 2);
}

/// User plus system CPU time, in clock ticks, of the main thread of `pid`.
fn main_thread_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn a_supervisor_without_a_control_api_sleeps_between_its_looks_at_the_oslets() {
    // Regression: with no control API (the default socket busy, as here, or
    // `oslet bench`, which asks for none) the supervisor's wait between its
    // looks at the VMMs returned at once and the loop spun a host CPU, the
    // CPU the OSlets' vCPUs are pinned to (it halved `oslet bench link`'s
    // oslet-polled throughput on a 2-CPU host).
    let test = "a_supervisor_without_a_control_api_sleeps_between_its_looks_at_the_oslets";
    let Some(b) = Box::up(test) else {
        return;
    };
    let cfg = write_config(
        b.dir.path(),
        "second.toml",
        "[host]\noversubscribe = true\nlog_dir = \"logs2\"\n\
         [[oslet]]\nname = \"idle\"\ncpus = 1\nmemory = \"8MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"halt\"\n",
    );
    // The first box serves the default socket of this one: it runs without an API.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_oslet"))
        .args(["up", cfg.to_str().unwrap()])
        .env("OSLET_SOCKET", &b.sock)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let log = b.dir.path().join("logs2/idle.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("halting without power-off")
    {
        assert!(Instant::now() < deadline, "the second OSlet never halted");
        assert!(child.try_wait().unwrap().is_none(), "the second up ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    let hz = 100.0; // USER_HZ: /proc counts CPU time in 1/100 s on Linux.
    let (t0, c0) = (Instant::now(), main_thread_ticks(child.id()));
    std::thread::sleep(Duration::from_secs(2));
    let (t1, c1) = (Instant::now(), main_thread_ticks(child.id()));
    let share = (c1 - c0) as f64 / hz / (t1 - t0).as_secs_f64();
    // SAFETY: a plain kill(2) of our own child, which is still running.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    // Spinning shows as 0.5-1.0 of a CPU; a loop that sleeps 5 ms per turn as ~0.
    assert!(
        share < 0.2,
        "the supervisor's main thread used {:.0}% of a CPU while its OSlet was halted",
        share * 100.0
    );
    assert_eq!(b.ps().as_array().unwrap().len(), 2);
}

/// Voluntary context switches of the main thread of `pid` so far.
fn main_thread_wakeups(pid: u64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/status")).unwrap();
    status_field(&status, "voluntary_ctxt_switches")
        .parse()
        .unwrap()
}

/// The value of `key` in the text of a `/proc/.../status` file, trimmed.
fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {key} in {status}"))
}

/// The pid of the detached supervisor serving `sock`.
fn supervisor_pid(sock: &Path) -> u64 {
    let out = std::process::Command::new("pgrep")
        .args(["-f", "--", &format!("--stay --socket {}", sock.display())])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .expect("supervisor pid")
        .parse()
        .unwrap()
}

#[test]
fn an_idle_vmm_main_thread_wakes_a_few_times_a_second_not_fifty() {
    // Its vCPUs halted and its console quiet, a VMM's main thread sleeps until a
    // vCPU event, a partial console line, its once-a-second statistics or its
    // 200 ms look at signals and backends. It used to wake every 20 ms (50 times a
    // second, each time taking a CPU from a pinned vCPU) to flush the console.
    let test = "an_idle_vmm_main_thread_wakes_a_few_times_a_second_not_fifty";
    let Some(b) = Box::up(test) else {
        return;
    };
    b.wait_halted("alpha");
    let pid = b
        .ps()
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "alpha")
        .and_then(|o| o["pid"].as_u64())
        .unwrap();
    let (t0, w0) = (Instant::now(), main_thread_wakeups(pid));
    std::thread::sleep(Duration::from_secs(2));
    let (t1, w1) = (Instant::now(), main_thread_wakeups(pid));
    let per_s = (w1 - w0) as f64 / (t1 - t0).as_secs_f64();
    // About 6 a second (5 looks, 1 statistics event); 50 before.
    assert!(
        per_s < 15.0,
        "the idle VMM's main thread woke {per_s:.1} times a second"
    );
}

/// `Cpus_allowed_list` of every thread of `pid`, by thread name.
fn thread_cpus(pid: u64) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
        out.push((
            status_field(&status, "Name"),
            status_field(&status, "Cpus_allowed_list"),
        ));
    }
    out
}

#[test]
fn housekeeping_cpus_hold_the_supervisor_and_vmm_threads_and_vcpus_keep_their_own() {
    let test = "housekeeping_cpus_hold_the_supervisor_and_vmm_threads_and_vcpus_keep_their_own";
    if !kvm_or_skip(test) {
        return;
    }
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    if cpus.trim() == "0" {
        eprintln!("skipping {test}: this host has one CPU, housekeeping needs a second");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "hk.toml",
        "[host]\nhousekeeping_cpus = \"1\"\nlog_dir = \"logs\"\n\
         [[oslet]]\nname = \"pinned\"\ncpus = [0]\nmemory = \"8MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"halt\"\n",
    );
    let (code, out, err) = run(&["check", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("housekeeping cpus 1"), "{out}");
    let b = Box::detach(dir, cfg);
    let sock = b.sock.clone();
    b.wait_halted("pinned");
    // KVM's worker thread moves to the housekeeping CPUs at the first statistics tick.
    std::thread::sleep(Duration::from_millis(1500));
    let vmm = b
        .ps()
        .as_array()
        .unwrap()
        .iter()
        .find_map(|o| o["pid"].as_u64())
        .unwrap();
    let threads = thread_cpus(vmm);
    for (name, cpus) in &threads {
        let want = if name.ends_with("-vcpu0") { "0" } else { "1" };
        assert_eq!(cpus, want, "VMM thread {name}: {threads:?}");
    }
    assert!(
        threads.iter().any(|(n, _)| n.ends_with("-vcpu0")),
        "{threads:?}"
    );
    for (name, cpus) in thread_cpus(supervisor_pid(&sock)) {
        assert_eq!(cpus, "1", "supervisor thread {name}");
    }
}

fn supervisor_rss_kib(sock: &Path) -> u64 {
    let pid = supervisor_pid(sock);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status_field(&status, "VmRSS")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_thousand_requests_from_eight_clients_are_all_answered_with_flat_memory() {
    let Some(b) =
        Box::up("a_thousand_requests_from_eight_clients_are_all_answered_with_flat_memory")
    else {
        return;
    };
    b.wait_halted("alpha");
    let before = supervisor_rss_kib(&b.sock);
    let answered = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..8 {
            let sock = b.sock.clone();
            let answered = &answered;
            s.spawn(move || {
                for i in 0..125 {
                    let target = match (t + i) % 3 {
                        0 => "/v1/oslets".to_string(),
                        1 => "/v1/oslets/beta".to_string(),
                        _ => "/v1/ping".to_string(),
                    };
                    let (code, _) = oslet_vmm::control::request(&sock, "GET", &target).unwrap();
                    assert_eq!(code, 200);
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(answered.into_inner(), 1000);
    let after = supervisor_rss_kib(&b.sock);
    assert!(
        after < before + 2048,
        "supervisor RSS grew from {before} KiB to {after} KiB"
    );
    assert_eq!(b.state("alpha").0, "running", "the OSlets are unaffected");
}

#[test]
fn top_in_a_real_terminal_shows_the_sum_of_all_vcpus_first() {
    let Some(b) = Box::up("top_in_a_real_terminal_shows_the_sum_of_all_vcpus_first") else {
        return;
    };
    if !tmux_or_skip("top_in_a_real_terminal_shows_the_sum_of_all_vcpus_first") {
        return;
    }
    b.wait_halted("alpha");
    b.wait_halted("beta");
    let t = Tmux::start(
        "oslet-top",
        160,
        30,
        &format!(
            "{} top --socket {}",
            env!("CARGO_BIN_EXE_oslet"),
            b.sock.display()
        ),
    );
    // Two screens: the second has rates.
    std::thread::sleep(Duration::from_millis(2500));
    let screen = t.screen();
    // Ctrl-C ends top and with it the session; dropping `t` covers a top that lingers.
    t.keys(&["C-c"]);
    drop(t);
    let first = screen
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    assert!(
        first.starts_with("oslet top: 2 OSlets (2 running)  vCPUs 4  busy 0.0  memory 16 MiB"),
        "{screen}"
    );
    assert!(
        screen.contains("alpha") && screen.contains("beta"),
        "{screen}"
    );
    assert!(screen.contains("VCPU BUSY"), "{screen}");
}

/// The busy/idle of each vCPU comes from KVM's per-vCPU statistics: a vCPU spinning
/// in ring 3 reads as busy, the two parked in `hlt` as idle, in the API and in top.
#[test]
fn kvm_vcpu_statistics_show_the_spinning_vcpu_busy_and_the_halted_ones_idle() {
    let Some(b) = Box::up_with(
        "kvm_vcpu_statistics_show_the_spinning_vcpu_busy_and_the_halted_ones_idle",
        "[[oslet]]\nname = \"spin\"\ncpus = 3\nmemory = \"8MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"ring3-spin\"\n",
    ) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let busy = loop {
        let ps = b.ps();
        let o = &ps[0];
        if let Some(v) = o["vcpu_busy_pct"].as_array() {
            if b.log("spin").contains("ring 3: spinning") {
                break v.iter().map(|x| x.as_f64().unwrap()).collect::<Vec<f64>>();
            }
        }
        assert!(Instant::now() < deadline, "no vcpu_busy_pct: {o}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // One more sample, wholly after the guest settled.
    std::thread::sleep(Duration::from_millis(2100));
    let ps = b.ps();
    let busy2: Vec<f64> = ps[0]["vcpu_busy_pct"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(busy2.len(), 3, "{busy:?} then {busy2:?}");
    assert!(busy2[0] > 80.0, "the spinning BSP: {busy2:?}");
    assert!(
        busy2[1] < 20.0 && busy2[2] < 20.0,
        "the halted APs: {busy2:?}"
    );
    assert!(
        ps[0]["kvm_exits_per_s"].as_f64().unwrap() > 0.0,
        "KVM counts every exit, the in-kernel ones too: {}",
        ps[0]
    );
    // top shows them, one screen.
    let (code, out, err) = b.oslet(&["top", "--iterations", "2"]);
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("spin "))
        .unwrap_or_else(|| panic!("no row for spin: {out}"));
    assert!(row.trim_end().ends_with(" 0 0"), "per-vCPU busy %: {row}");
    assert!(out.contains("from KVM's per-vCPU statistics"), "{out}");
}

/// `oslet console NAME --socket S` with piped stdin and stdout.
fn attach_console(b: &Box, name: &str) -> std::process::Child {
    common::oslet()
        .args(["console", name, "--socket", b.sock.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// `oslet console`: what is typed reaches the guest's UART and its answer comes
/// back; Ctrl-] detaches and leaves the OSlet running; a second attach works; the
/// OSlet ending closes the console; unknown and stopped OSlets are clear errors.
#[test]
fn console_attach_types_into_the_guest_detaches_with_ctrl_bracket_and_closes_at_its_end() {
    use std::io::Write;
    let Some(b) = Box::up_with(
        "console_attach_types_into_the_guest_detaches_with_ctrl_bracket_and_closes_at_its_end",
        "[[oslet]]\nname = \"echo\"\ncpus = 1\nmemory = \"8MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"ring3-echo\"\n\
         [[oslet]]\nname = \"other\"\ncpus = 1\nmemory = \"8MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"halt\"\n",
    ) else {
        return;
    };
    b.wait_log("echo", "console echo");
    let limit = Duration::from_secs(20);

    // First attach: a line goes in, its echo comes out; Ctrl-] detaches.
    let mut c = attach_console(&b, "echo");
    let rx = common::line_channel(&mut c);
    let mut stdin = c.stdin.take().unwrap();
    stdin.write_all(b"hello oslet\n").unwrap();
    let mut seen = Vec::new();
    assert!(
        common::wait_for_line(&rx, &mut seen, Instant::now(), limit, |l| l
            .contains("echo: hello oslet")),
        "no echo: {seen:?}"
    );
    stdin.write_all(&[0x1d]).unwrap();
    let out = c.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("attached to echo's console"), "{err}");
    assert!(err.contains("detached from echo's console"), "{err}");
    assert_eq!(b.state("echo").0, "running", "detaching leaves it running");
    assert!(
        b.log("echo").contains("echo: hello oslet"),
        "the log has it too"
    );

    // Second attach: "poweroff" ends the guest, which closes the console (exit 3).
    let mut c = attach_console(&b, "echo");
    let rx = common::line_channel(&mut c);
    let mut stdin = c.stdin.take().unwrap();
    stdin.write_all(b"poweroff\n").unwrap();
    let mut seen = Vec::new();
    assert!(
        common::wait_for_line(&rx, &mut seen, Instant::now(), limit, |l| l
            .contains("echo: poweroff")),
        "no echo: {seen:?}"
    );
    let out = c.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("echo's console closed"), "{err}");
    b.wait_state("echo", "ended", 0);
    assert_eq!(b.state("other").0, "running");

    // Errors: an OSlet that ended, and a name that does not exist.
    let (code, _, err) = b.oslet(&["console", "echo"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("echo is not running"), "{err}");
    let (code, _, err) = b.oslet(&["console", "nosuch"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no OSlet named \"nosuch\""), "{err}");
}

/// Whether tmux is here; a test without it skips, except in CI (which installs it).
fn tmux_or_skip(test: &str) -> bool {
    if std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok()
    {
        return true;
    }
    assert!(std::env::var("CI").is_err(), "tmux is missing in CI");
    eprintln!("skipped {test}: no tmux (apt-get install -y tmux)");
    false
}

/// A detached tmux session (a real terminal of `cols` x `rows`) running `sh -c cmd`;
/// killed when dropped.
struct Tmux {
    session: String,
}

impl Tmux {
    fn start(prefix: &str, cols: u16, rows: u16, cmd: &str) -> Self {
        let session = format!("{prefix}-{}", std::process::id());
        let (cols, rows) = (cols.to_string(), rows.to_string());
        let st = std::process::Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                &cols,
                "-y",
                &rows,
            ])
            .args(["sh", "-c", cmd])
            .status()
            .unwrap();
        assert!(st.success());
        Tmux { session }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("tmux")
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What the terminal shows now.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", &self.session])
    }

    /// Types `keys` (tmux key names or text).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// The screen once it shows `want`, or after 20 s without it.
    fn wait_screen(&self, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if screen.contains(want) || Instant::now() > deadline {
                return screen;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-session", "-t", &self.session]);
    }
}

/// The same in a real terminal (tmux): raw mode, Enter as typed, Ctrl-] as a key.
#[test]
fn console_in_a_real_terminal_detaches_with_ctrl_bracket() {
    let Some(b) = Box::up_with(
        "console_in_a_real_terminal_detaches_with_ctrl_bracket",
        "[[oslet]]\nname = \"echo\"\ncpus = 1\nmemory = \"8MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"ring3-echo\"\n",
    ) else {
        return;
    };
    if !tmux_or_skip("console_in_a_real_terminal_detaches_with_ctrl_bracket") {
        return;
    }
    b.wait_log("echo", "console echo");
    let t = Tmux::start(
        "oslet-console",
        120,
        20,
        &format!(
            "{} console echo --socket {}; echo EXIT=$?; sleep 60",
            env!("CARGO_BIN_EXE_oslet"),
            b.sock.display()
        ),
    );
    let screen = t.wait_screen("attached to echo's console");
    assert!(screen.contains("attached"), "{screen}");
    t.keys(&["typed in tmux", "Enter"]);
    let screen = t.wait_screen("echo: typed in tmux");
    assert!(screen.contains("echo: typed in tmux"), "{screen}");
    t.keys(&["C-]"]);
    let screen = t.wait_screen("EXIT=");
    drop(t);
    assert!(screen.contains("detached from echo's console"), "{screen}");
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert_eq!(b.state("echo").0, "running");
}

/// The guest agent's reports over the agent link reach the API and top; malformed
/// reports are refused and logged while the good ones keep coming; an OSlet
/// without an agent shows none.
#[test]
fn guest_agent_reports_reach_ps_and_top_and_bad_reports_are_refused() {
    let Some(b) = Box::up_with(
        "guest_agent_reports_reach_ps_and_top_and_bad_reports_are_refused",
        "[[oslet]]\nname = \"ag\"\ncpus = 2\nmemory = \"16MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"ring3-agent agent-garbage\"\n\
         [[oslet]]\nname = \"quiet\"\ncpus = 1\nmemory = \"8MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"halt\"\n",
    ) else {
        return;
    };
    let show = |name: &str| -> serde_json::Value {
        let (code, out, err) = b.oslet(&["ps", "--json"]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .unwrap()
            .clone()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let g = show("ag")["guest"].clone();
        if !g.is_null() {
            break g;
        }
        assert!(
            Instant::now() < deadline,
            "no agent report: {}",
            b.log("ag")
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // What the guest said on its console about itself is what it reports.
    let log = b.log("ag");
    let kib: u64 = log
        .lines()
        .find_map(|l| l.strip_prefix("oslet-testkernel: memory "))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no memory line: {log}"));
    assert_eq!(first["mem_total_kib"].as_u64(), Some(kib), "{first}");
    assert_eq!(first["cpus_online"].as_u64(), Some(2), "{first}");
    assert_eq!(first["load_milli"][0].as_u64(), Some(1000), "{first}");
    let avail = first["mem_available_kib"].as_u64().unwrap();
    assert!(avail > 0 && avail < kib, "{first}");
    // Reports keep coming (one a second).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let g = show("ag")["guest"].clone();
        if g["seq"].as_u64() > first["seq"].as_u64() {
            break;
        }
        assert!(Instant::now() < deadline, "reports stopped at {first}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(show("quiet")["guest"].is_null(), "no agent, no report");
    let sup = std::fs::read_to_string(b.dir.path().join("logs/supervisor.log")).unwrap();
    assert!(
        sup.contains("ag: guest agent sent a bad report: magic")
            && sup.contains("ag: guest agent sent a bad report: 10 bytes, not 64"),
        "{sup}"
    );
    let (code, out, err) = b.oslet(&["top", "--iterations", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("guests (1 reporting): load 1.00  memory in use"),
        "{out}"
    );
    let row = out.lines().find(|l| l.starts_with("ag ")).unwrap();
    assert!(row.contains(&format!("/{} MiB", kib >> 10)), "{row}");
    assert!(row.contains(" 1.00 "), "{row}");
}

/// A guest that writes noise over its agent link: its VMM reports the link broken
/// (once), keeps the last good report, and the OSlet runs on.
#[test]
fn a_guest_scribbling_over_its_agent_link_is_reported_and_runs_on() {
    let Some(b) = Box::up_with(
        "a_guest_scribbling_over_its_agent_link_is_reported_and_runs_on",
        "[[oslet]]\nname = \"scrib\"\ncpus = 1\nmemory = \"8MiB\"\nkernel = \"builtin:testkernel\"\ncmdline = \"ring3-agent agent-scribble\"\n",
    ) else {
        return;
    };
    let sup = || std::fs::read_to_string(b.dir.path().join("logs/supervisor.log")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sup().contains("the guest agent link is broken") {
        assert!(
            Instant::now() < deadline,
            "no broken-link report: {}\n{}",
            sup(),
            b.log("scrib")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(b.log("scrib").contains("agent: scribbled"));
    std::thread::sleep(Duration::from_millis(1500));
    let ps = b.ps();
    assert_eq!(ps[0]["state"], "running", "{ps}");
    let seq = ps[0]["guest"]["seq"].as_u64();
    assert!(
        seq.is_some_and(|s| s <= 3),
        "the last good report stays: {ps}"
    );
    assert_eq!(
        sup().matches("the guest agent link is broken").count(),
        1,
        "reported once"
    );
}
