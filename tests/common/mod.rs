//! Shared helpers of the end-to-end tests: run the real `oslet` binary on real KVM.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The built `oslet` binary, with a control socket of its own (tests run in
/// parallel; each `oslet up` would otherwise try the same default socket).
pub fn oslet() -> Command {
    oslet_with_socket().0
}

/// [`oslet`], and the control socket it was given.
pub fn oslet_with_socket() -> (Command, PathBuf) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let mut c = Command::new(env!("CARGO_BIN_EXE_oslet"));
    c.current_dir(root());
    let sock = std::env::temp_dir().join(format!(
        "oslet-test-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    c.env("OSLET_SOCKET", &sock);
    (c, sock)
}

/// Whether /dev/kvm is usable. Without it a test skips with a one-line reason, unless
/// OSLET_REQUIRE_KVM=1 (as in CI), where a missing KVM fails the test.
pub fn kvm_or_skip(test: &str) -> bool {
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if usable {
        return true;
    }
    assert!(
        std::env::var("OSLET_REQUIRE_KVM").as_deref() != Ok("1"),
        "{test}: /dev/kvm is not usable and OSLET_REQUIRE_KVM=1"
    );
    eprintln!("skipped {test}: /dev/kvm is not usable on this host");
    false
}

/// Runs oslet with `args`; returns (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out: Output = oslet().args(args).output().expect("run the oslet binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes a partition file into `dir` and returns its path.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write a config file");
    p
}

/// Console lines of OSlet `name` in `oslet up` output.
pub fn lines_of<'a>(stdout: &'a str, name: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .filter_map(|l| {
            let (n, rest) = l.split_once(" | ")?;
            (n.trim_end() == name).then_some(rest)
        })
        .collect()
}

/// A running `oslet up`, with its console read line by line.
pub struct Up {
    /// The `oslet up` process.
    pub child: std::process::Child,
    lines: std::io::BufReader<std::process::ChildStdout>,
    /// Every line read so far.
    pub seen: Vec<String>,
    /// The control socket the supervisor serves.
    pub socket: PathBuf,
}

/// Starts `oslet up cfg` with its stdout and stderr piped.
pub fn spawn_up(cfg: &Path) -> Up {
    let (mut cmd, socket) = oslet_with_socket();
    let mut child = cmd
        .args(["up", cfg.to_str().expect("UTF-8 path")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start oslet up");
    let lines = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
    Up {
        child,
        lines,
        seen: Vec::new(),
        socket,
    }
}

impl Up {
    /// Reads until `n` lines containing `pat` have been seen (counting earlier ones
    /// read by this call only); false if the console ended first.
    pub fn wait_for_n(&mut self, pat: &str, n: usize) -> bool {
        use std::io::BufRead;
        let mut hits = 0;
        let mut line = String::new();
        while hits < n {
            line.clear();
            match self.lines.read_line(&mut line) {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
            hits += usize::from(line.contains(pat));
            self.seen.push(line.trim_end().to_string());
        }
        true
    }

    /// Reads until a line containing `pat`; false if the console ended first.
    pub fn wait_for(&mut self, pat: &str) -> bool {
        self.wait_for_n(pat, 1)
    }

    /// Reads until a line for which `until` holds and returns it; None if the
    /// console ended first.
    pub fn wait_until(&mut self, until: impl Fn(&str) -> bool) -> Option<String> {
        use std::io::BufRead;
        let mut line = String::new();
        loop {
            line.clear();
            match self.lines.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let l = line.trim_end().to_string();
            self.seen.push(l.clone());
            if until(&l) {
                return Some(l);
            }
        }
    }

    /// `oslet ps --json` against this supervisor's control socket.
    pub fn ps(&self) -> serde_json::Value {
        let sock = self.socket.to_str().expect("UTF-8 path");
        let (code, out, err) = run(&["ps", "--json", "--socket", sock]);
        assert_eq!(code, 0, "oslet ps: {err}");
        serde_json::from_str(&out).expect("ps --json is JSON")
    }

    /// The console so far, for assertion messages.
    pub fn console(&self) -> String {
        self.seen.join("\n")
    }

    /// Sends SIGINT (Ctrl-C) and waits: (exit code, stderr).
    pub fn interrupt(self) -> (Option<i32>, String) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.finish()
    }

    /// Waits for `oslet up` to end: (exit code, stderr).
    pub fn finish(self) -> (Option<i32>, String) {
        drop(self.lines);
        let out = self.child.wait_with_output().expect("wait for oslet up");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The pid of OSlet `name`'s VMM process started for `cfg`.
pub fn vmm_pid(cfg: &Path, name: &str) -> i32 {
    let out = Command::new("pgrep")
        .args([
            "-f",
            &format!("__vmm --config {} --name {name}", cfg.display()),
        ])
        .output()
        .expect("run pgrep");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the VMM process's pid")
}

/// Waits (up to 20 s) until OSlet `name`'s VMM process for `cfg` has ended.
pub fn wait_vmm_gone(cfg: &Path, name: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let out = Command::new("pgrep")
            .args([
                "-f",
                &format!("__vmm --config {} --name {name}", cfg.display()),
            ])
            .output()
            .expect("run pgrep");
        if !out.status.success() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// Lines of a child's stdout, through a channel (so a test can wait with a timeout).
pub fn line_channel(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads lines into `seen` until `until` holds for one of them (true) or `limit`
/// passes or the output ends (false).
pub fn wait_for_line(
    rx: &std::sync::mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    start: std::time::Instant,
    limit: std::time::Duration,
    until: impl Fn(&str) -> bool,
) -> bool {
    loop {
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return false;
        }
        match rx.recv_timeout(left.min(std::time::Duration::from_secs(1))) {
            Ok(l) => {
                let hit = until(&l);
                seen.push(l);
                if hit {
                    return true;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return false,
        }
    }
}

/// Reserves `n` more 2 MiB huge pages for the duration of a test (root only).
pub struct HugePages {
    path: &'static str,
    before: u64,
}

impl HugePages {
    /// None when they cannot be had (not root, or not enough free memory).
    pub fn reserve(n: u64) -> Option<Self> {
        let path = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
        let before: u64 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
        std::fs::write(path, (before + n).to_string()).ok()?;
        let free: u64 =
            std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
                .ok()?
                .trim()
                .parse()
                .ok()?;
        let guard = HugePages { path, before };
        (free >= n).then_some(guard)
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, self.before.to_string());
    }
}
