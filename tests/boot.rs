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
    assert!(a.contains("cmdline \"from-a\""), "{a}");
    assert!(b.contains("ready, 2/2 cpus online"), "{b}");
    assert!(
        lines_of(&out, "b").is_empty(),
        "console = \"log\" keeps b off the terminal:\n{out}"
    );
    assert!(!lines_of(&out, "a").is_empty());
}
