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
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let mut c = Command::new(env!("CARGO_BIN_EXE_oslet"));
    c.current_dir(root());
    let sock = std::env::temp_dir().join(format!(
        "oslet-test-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    c.env("OSLET_SOCKET", sock);
    c
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
