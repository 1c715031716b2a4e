//! Bad input: every mistake gets one line naming the file, the field and the fix,
//! exit code 2, and no panic.

mod common;

use common::{run, write_config};

const TK: &str = "kernel = \"builtin:testkernel\"\n";

fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.bin"), b"hello, not a kernel").unwrap();
    let p = write_config(dir.path(), "box.toml", text);
    let (code, out, err) = run(&["check", p.to_str().unwrap()]);
    // The messages name the file; make them stable for the assertions.
    let err = err
        .replace(p.to_str().unwrap(), "box.toml")
        .replace(&format!("{}/", dir.path().display()), "");
    (code, out, err)
}

fn assert_one_line_error(code: i32, err: &str, parts: &[&str]) {
    assert_eq!(code, 2, "exit code for bad input; stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("oslet: box.toml"), "names the file: {err}");
    for p in parts {
        assert!(err.contains(p), "{err:?} should contain {p:?}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn unknown_field_names_the_line_and_suggests_the_right_one() {
    let (code, _, err) = check(&format!(
        "[[oslet]]\nname = \"db\"\ncpus = 1\nmemroy = \"4MiB\"\n{TK}"
    ));
    assert_one_line_error(
        code,
        &err,
        &["box.toml:4", "memroy", "did you mean \"memory\""],
    );
}

#[test]
fn bad_size_says_which_units_are_accepted() {
    let (code, _, err) = check(&format!(
        "[[oslet]]\nname = \"db\"\ncpus = 1\nmemory = \"4XB\"\n{TK}"
    ));
    assert_one_line_error(code, &err, &["oslet \"db\".memory", "\"4XB\"", "MiB"]);
}

#[test]
fn overlapping_cpus_name_both_oslets() {
    let (code, _, err) = check(&format!(
        "[[oslet]]\nname = \"db\"\ncpus = \"0\"\nmemory = \"4MiB\"\n{TK}[[oslet]]\nname = \"app\"\ncpus = [0]\nmemory = \"4MiB\"\n{TK}"
    ));
    assert_one_line_error(
        code,
        &err,
        &["oslet \"app\".cpus", "oslet \"db\"", "oversubscribe"],
    );
}

#[test]
fn cpu_the_host_lacks_is_refused() {
    let (code, _, err) = check(&format!(
        "[[oslet]]\nname = \"db\"\ncpus = [4095]\nmemory = \"4MiB\"\n{TK}"
    ));
    assert_one_line_error(code, &err, &["oslet \"db\".cpus", "4095", "does not exist"]);
}

#[test]
fn numa_node_the_host_lacks_is_refused() {
    let (code, _, err) = check(&format!(
        "[[oslet]]\nname = \"db\"\ncpus = 1\nmemory = \"4MiB\"\nnuma_node = 63\n{TK}"
    ));
    assert_one_line_error(
        code,
        &err,
        &["oslet \"db\".numa_node", "63", "does not exist"],
    );
}

#[test]
fn memory_beyond_the_host_is_refused() {
    let (code, _, err) = check(&format!(
        "[[oslet]]\nname = \"db\"\ncpus = 1\nmemory = \"64TiB\"\n{TK}"
    ));
    assert_one_line_error(code, &err, &["oslet \"db\".memory", "64 TiB"]);
}

#[test]
fn missing_kernel_is_refused() {
    let (code, _, err) =
        check("[[oslet]]\nname = \"db\"\ncpus = 1\nmemory = \"4MiB\"\nkernel = \"nope/vmlinux\"\n");
    assert_one_line_error(code, &err, &["oslet \"db\".kernel", "does not exist"]);
}

#[test]
fn kernel_that_is_neither_bzimage_nor_elf_is_refused() {
    let (code, _, err) =
        check("[[oslet]]\nname = \"db\"\ncpus = 1\nmemory = \"4MiB\"\nkernel = \"junk.bin\"\n");
    assert_one_line_error(
        code,
        &err,
        &["oslet \"db\".kernel", "is not a bzImage or an ELF vmlinux"],
    );
}

#[test]
fn missing_initrd_is_refused() {
    let (code, _, err) = check(&format!(
        "[[oslet]]\nname = \"db\"\ncpus = 1\nmemory = \"4MiB\"\n{TK}initrd = \"initrd.img\"\n"
    ));
    assert_one_line_error(code, &err, &["oslet \"db\".initrd", "does not exist"]);
}

#[test]
fn missing_config_file_says_so() {
    let (code, _, err) = run(&["check", "/nonexistent/box.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent/box.toml") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn missing_kvm_device_is_one_line_with_the_fix() {
    let out = common::oslet()
        .args(["up", "config/examples/micro.toml"])
        .env("OSLET_KVM_DEVICE", "/nonexistent/kvm")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/kvm: no such device"), "{err}");
    assert!(err.contains("kvm_intel or kvm_amd"), "{err}");
}

#[test]
fn unusable_kvm_device_is_one_line() {
    // /dev/null opens but is no KVM: the API version ioctl fails.
    let out = common::oslet()
        .args(["up", "config/examples/micro.toml"])
        .env("OSLET_KVM_DEVICE", "/dev/null")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("/dev/null"), "{err}");
}
