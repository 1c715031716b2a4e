//! How `oslet check` prints a plan, and the config files the project ships.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

// ---- Display ----

#[test]
fn display_prints_totals_then_one_aligned_line_per_oslet() {
    let dir = kernel_dir();
    let text = format!(
        "{}{}[[oslet]]\nname = \"cache\"\ncpus = 1\nmemory = \"1536MiB\"\nkernel = \"bzImage\"\n\
         initrd = \"initrd.img\"\ncmdline = \"console=ttyS0 quiet\"\nconsole = \"log\"\n",
        oslet("db", "\"0-3\"", "256MiB").replace("cpus", "numa_node = 0\nhugepages = \"2M\"\ncpus"),
        oslet("app", "4", "256MiB"),
    );
    let p = parse_str(&text, &dir.path().join("box.toml"), &host(16)).unwrap();
    let d = dir.path().display();
    let expected = format!(
        "{d}/box.toml: 3 OSlets, 9 vCPUs, 2 GiB\n\
         \x20 db     cpus 0-3 (4 vCPUs)  memory 256 MiB   numa 0  hugepages 2M  console terminal  kernel builtin:testkernel\n\
         \x20 app    cpus 4-7 (4 vCPUs)  memory 256 MiB   numa -  hugepages -   console terminal  kernel builtin:testkernel\n\
         \x20 cache  cpus 8 (1 vCPU)     memory 1536 MiB  numa -  hugepages -   console log       kernel {d}/bzImage (bzImage)\n\
         \x20        initrd {d}/initrd.img\n\
         \x20        cmdline \"console=ttyS0 quiet\"\n\
         \x20 housekeeping cpus 9-15 (supervisor, VMM threads other than vCPUs, virtiofsd)\n\
         \x20 logs in {d}/oslet-logs"
    );
    assert_eq!(p.to_string(), expected);
}

#[test]
fn display_notes_oversubscription_and_wrapped_cpus() {
    let text = format!("{OVERSUB}{}", oslet("micro", "3", "4MiB"));
    let p = plan_on(&text, &host(2));
    let first = p.to_string().lines().next().unwrap().to_string();
    assert_eq!(first, "box.toml: 1 OSlet, 3 vCPUs, 4 MiB, oversubscribed");
    assert!(p.to_string().contains("cpus 0-1,0 (3 vCPUs)"), "{p}");
}

// ---- the shipped examples ----

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

#[test]
fn micro_example_plans_one_vcpu_and_4_mib() {
    for h in [host(2), host(64)] {
        let p = load(&example("micro.toml"), &h).unwrap();
        assert!(!p.oversubscribe);
        assert_eq!(p.oslets.len(), 1);
        let o = &p.oslets[0];
        assert_eq!(o.name, "micro");
        assert_eq!(o.host_cpus, vec![0]);
        assert_eq!(o.memory_bytes, 4 * MIB);
        assert_eq!(o.kernel, Kernel::TestKernel);
        assert_eq!(o.console, Console::Terminal);
        assert_eq!(o.log_file, example("oslet-logs").join("micro.log"));
    }
}

#[test]
fn two_oslets_example_wraps_on_2_cpus_and_separates_on_64() {
    let p = load(&example("two-oslets.toml"), &host(2)).unwrap();
    assert!(p.oversubscribe);
    let names: Vec<&str> = p.oslets.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert_eq!(cpus_of(&p), vec![vec![0, 1, 0, 1], vec![0, 1, 0, 1]]);
    assert!(p
        .oslets
        .iter()
        .all(|o| o.memory_bytes == 64 * MIB && o.kernel == Kernel::TestKernel));
    let p = load(&example("two-oslets.toml"), &host(64)).unwrap();
    assert_eq!(cpus_of(&p), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
}

#[test]
fn sixty_four_way_example_gives_each_oslet_its_own_8_cpus_on_64() {
    let p = load(&example("sixty-four-way.toml"), &host(64)).unwrap();
    assert!(p.oversubscribe);
    assert_eq!(p.oslets.len(), 8);
    for (i, o) in p.oslets.iter().enumerate() {
        assert_eq!(o.name, format!("p{i}"));
        assert_eq!(o.host_cpus, (8 * i..8 * i + 8).collect::<Vec<_>>());
        assert_eq!(o.memory_bytes, 64 * MIB);
        assert_eq!(o.kernel, Kernel::TestKernel);
    }
    // The same layout with oversubscribe off is what the real box runs.
    let text = fs::read_to_string(example("sixty-four-way.toml")).unwrap();
    let strict = text.replace("oversubscribe = true", "oversubscribe = false");
    let p = parse_str(&strict, &example("sixty-four-way.toml"), &host(64)).unwrap();
    assert_eq!(p.oslets[7].host_cpus, (56..64).collect::<Vec<_>>());
    // On a 2-CPU dev machine every OSlet wraps over CPUs 0 and 1.
    let p = load(&example("sixty-four-way.toml"), &host(2)).unwrap();
    assert!(cpus_of(&p).iter().all(|c| *c == [0, 1, 0, 1, 0, 1, 0, 1]));
}

#[test]
fn sixty_four_way_explicit_lists_in_its_comment_plan_the_same_on_64() {
    let text = fs::read_to_string(example("sixty-four-way.toml")).unwrap();
    let explicit: String = text
        .lines()
        .map(|l| match l.split_once("cpus = 8") {
            Some((_, comment)) => {
                let list = comment.split('"').nth(1).unwrap_or_default();
                format!("cpus = \"{list}\"\n")
            }
            None => format!("{l}\n"),
        })
        .collect::<String>()
        .replace("oversubscribe = true", "oversubscribe = false");
    let p = parse_str(&explicit, &example("sixty-four-way.toml"), &host(64)).unwrap();
    let counted = load(&example("sixty-four-way.toml"), &host(64)).unwrap();
    assert_eq!(cpus_of(&p), cpus_of(&counted));
}
