//! Planning and validation through the public API (`parse_str`, `load`), against
//! synthetic hosts. Each bad-input test pins the whole message line.

use std::fs;
use std::path::{Path, PathBuf};

use crate::units::{GIB, MIB};
use crate::*;

/// One NUMA node holding every CPU, 16 GiB, a 2 MiB pool with 1024 free pages.
fn host(ncpus: usize) -> HostTopology {
    let cpus: Vec<usize> = (0..ncpus).collect();
    HostTopology {
        numa_nodes: vec![NumaNode {
            id: 0,
            cpus: cpus.clone(),
            memory_bytes: 16 * GIB,
        }],
        cpus,
        memory_bytes: 16 * GIB,
        hugepages: vec![HugePagePool {
            size_bytes: 2 * MIB,
            free: 1024,
        }],
        llc_groups: Vec::new(),
    }
}

/// Two nodes: 0 has CPUs 0-3, 1 has CPUs 4-7, 4 GiB each; pools of 2 MiB and 1 GiB.
fn numa_host() -> HostTopology {
    HostTopology {
        cpus: (0..8).collect(),
        numa_nodes: vec![
            NumaNode {
                id: 0,
                cpus: vec![0, 1, 2, 3],
                memory_bytes: 4 * GIB,
            },
            NumaNode {
                id: 1,
                cpus: vec![4, 5, 6, 7],
                memory_bytes: 4 * GIB,
            },
        ],
        memory_bytes: 8 * GIB,
        hugepages: vec![
            HugePagePool {
                size_bytes: 2 * MIB,
                free: 100,
            },
            HugePagePool {
                size_bytes: GIB,
                free: 2,
            },
        ],
        llc_groups: vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]],
    }
}

/// An `[[oslet]]` table with the builtin kernel; `cpus` is written as given.
fn oslet(name: &str, cpus: &str, memory: &str) -> String {
    format!(
        "[[oslet]]\nname = \"{name}\"\ncpus = {cpus}\nmemory = \"{memory}\"\nkernel = \"builtin:testkernel\"\n"
    )
}

fn plan_on(text: &str, host: &HostTopology) -> Partition {
    match parse_str(text, Path::new("box.toml"), host) {
        Ok(p) => p,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn err_on(text: &str, host: &HostTopology) -> String {
    match parse_str(text, Path::new("box.toml"), host) {
        Ok(p) => panic!("expected an error, got a plan:\n{p}"),
        Err(e) => {
            let line = e.to_string();
            assert!(!line.contains('\n'), "error is not one line: {line:?}");
            line
        }
    }
}

fn cpus_of(p: &Partition) -> Vec<Vec<usize>> {
    p.oslets.iter().map(|o| o.host_cpus.clone()).collect()
}

const OVERSUB: &str = "[host]\noversubscribe = true\n";

// ---- CPU planning ----

#[test]
fn counts_take_the_lowest_free_cpus_in_file_order() {
    let p = plan_on(
        &(oslet("a", "2", "4MiB") + &oslet("b", "3", "4MiB")),
        &host(8),
    );
    assert_eq!(cpus_of(&p), vec![vec![0, 1], vec![2, 3, 4]]);
    assert_eq!(p.oslets[1].vcpus(), 3);
}

#[test]
fn counts_skip_cpus_named_by_any_list_even_later_ones() {
    let text =
        oslet("a", "2", "4MiB") + &oslet("b", "\"0-1,3\"", "4MiB") + &oslet("c", "2", "4MiB");
    let p = plan_on(&text, &host(8));
    assert_eq!(cpus_of(&p), vec![vec![2, 4], vec![0, 1, 3], vec![5, 6]]);
}

#[test]
fn explicit_lists_keep_their_written_order() {
    let text = oslet("a", "\"8-9, 2\"", "4MiB") + &oslet("b", "[5, 4]", "4MiB");
    let p = plan_on(&text, &host(16));
    assert_eq!(cpus_of(&p), vec![vec![8, 9, 2], vec![5, 4]]);
}

#[test]
fn oversubscribe_wraps_counts_round_robin_over_host_cpus() {
    let text = format!(
        "{OVERSUB}{}{}",
        oslet("a", "4", "4MiB"),
        oslet("b", "4", "4MiB")
    );
    let p = plan_on(&text, &host(2));
    assert_eq!(cpus_of(&p), vec![vec![0, 1, 0, 1], vec![0, 1, 0, 1]]);
    let p = plan_on(&text, &host(3));
    assert_eq!(cpus_of(&p), vec![vec![0, 1, 2, 0], vec![1, 2, 0, 1]]);
    assert!(p.oversubscribe);
}

#[test]
fn oversubscribe_allows_overlapping_and_repeated_lists() {
    let text = format!(
        "{OVERSUB}{}{}",
        oslet("a", "\"0-1\"", "4MiB"),
        oslet("b", "[1, 1, 0]", "4MiB")
    );
    let p = plan_on(&text, &host(2));
    assert_eq!(cpus_of(&p), vec![vec![0, 1], vec![1, 1, 0]]);
}

#[test]
fn counts_fill_a_whole_host_exactly() {
    let text: String = (0..8)
        .map(|i| oslet(&format!("p{i}"), "8", "64MiB"))
        .collect();
    let p = plan_on(&text, &host(64));
    for (i, o) in p.oslets.iter().enumerate() {
        assert_eq!(o.host_cpus, (8 * i..8 * i + 8).collect::<Vec<_>>());
    }
}

#[test]
fn numa_node_counts_come_from_that_node() {
    let text = oslet("a", "2", "4MiB").replace("cpus", "numa_node = 1\ncpus")
        + &oslet("b", "3", "4MiB")
        + &oslet("c", "2", "4MiB").replace("cpus", "numa_node = 1\ncpus");
    let p = plan_on(&text, &numa_host());
    assert_eq!(cpus_of(&p), vec![vec![4, 5], vec![0, 1, 2], vec![6, 7]]);
    assert_eq!(p.oslets[0].numa_node, Some(1));
    assert_eq!(p.oslets[1].numa_node, None);
}

#[test]
fn numa_node_counts_wrap_within_the_node_with_oversubscribe() {
    let text = format!(
        "{OVERSUB}{}",
        oslet("a", "6", "4MiB").replace("cpus", "numa_node = 1\ncpus")
    );
    let p = plan_on(&text, &numa_host());
    assert_eq!(cpus_of(&p), vec![vec![4, 5, 6, 7, 4, 5]]);
}

#[test]
fn numa_node_with_listed_cpus_on_it_is_accepted() {
    let text = oslet("a", "\"4-5\"", "4MiB").replace("cpus", "numa_node = 1\ncpus");
    let p = plan_on(&text, &numa_host());
    assert_eq!(cpus_of(&p), vec![vec![4, 5]]);
}

#[test]
fn overlapping_cpus_are_refused_with_both_names() {
    let text = oslet("db", "\"0-7\"", "4MiB") + &oslet("app", "\"4-11\"", "4MiB");
    assert_eq!(
        err_on(&text, &host(16)),
        "box.toml: oslet \"app\".cpus: CPUs 4-7 are also used by oslet \"db\"; give each \
         OSlet its own CPUs, or set [host] oversubscribe = true"
    );
    let text = oslet("db", "[3]", "4MiB") + &oslet("app", "\"2-3\"", "4MiB");
    assert_eq!(
        err_on(&text, &host(16)),
        "box.toml: oslet \"app\".cpus: CPU 3 is also used by oslet \"db\"; give each \
         OSlet its own CPUs, or set [host] oversubscribe = true"
    );
}

#[test]
fn cpus_the_host_lacks_are_refused_with_the_host_range() {
    let text = oslet("db", "\"60-63,70\"", "4MiB");
    assert_eq!(
        err_on(&text, &host(64)),
        "box.toml: oslet \"db\".cpus: CPU 70 does not exist on this host (it has CPUs \
         0-63); use CPUs from 0-63 or give a count"
    );
    let text = oslet("db", "\"0-3\"", "4MiB");
    assert_eq!(
        err_on(&text, &host(1)),
        "box.toml: oslet \"db\".cpus: CPUs 1-3 do not exist on this host (it has CPU 0); \
         use CPUs from 0 or give a count"
    );
}

#[test]
fn cpus_the_host_lacks_are_refused_even_with_oversubscribe() {
    let text = format!("{OVERSUB}{}", oslet("p1", "\"8-15\"", "4MiB"));
    assert_eq!(
        err_on(&text, &host(2)),
        "box.toml: oslet \"p1\".cpus: CPUs 8-15 do not exist on this host (it has CPUs \
         0-1); use CPUs from 0-1 or give a count"
    );
}

#[test]
fn a_list_repeating_a_cpu_is_refused() {
    assert_eq!(
        err_on(&oslet("db", "\"0-3,2\"", "4MiB"), &host(8)),
        "box.toml: oslet \"db\".cpus: CPU 2 is listed more than once; list each CPU once \
         (vCPU i runs on the i-th CPU listed), or set [host] oversubscribe = true"
    );
    assert_eq!(
        err_on(&oslet("db", "[1, 0, 1, 0]", "4MiB"), &host(8)),
        "box.toml: oslet \"db\".cpus: CPUs 0-1 are listed more than once; list each CPU \
         once (vCPU i runs on the i-th CPU listed), or set [host] oversubscribe = true"
    );
}

#[test]
fn asking_for_more_cpus_than_the_host_has_says_how_many() {
    let text: String = (0..9)
        .map(|i| oslet(&format!("p{i}"), "8", "64MiB"))
        .collect();
    assert_eq!(
        err_on(&text, &host(64)),
        "box.toml: oslet \"p8\".cpus: asks for 8 CPUs but none are free: the OSlets ask \
         for 72 CPUs in all and the host has 64; give fewer CPUs, or set [host] \
         oversubscribe = true"
    );
    let text = oslet("a", "\"0-5\"", "4MiB") + &oslet("b", "4", "4MiB");
    assert_eq!(
        err_on(&text, &host(8)),
        "box.toml: oslet \"b\".cpus: asks for 4 CPUs but only 2 are free (6-7): the OSlets \
         ask for 10 CPUs in all and the host has 8; give fewer CPUs, or set [host] \
         oversubscribe = true"
    );
}

#[test]
fn a_count_too_big_for_its_node_says_what_the_node_has() {
    let text = oslet("a", "3", "4MiB").replace("cpus", "numa_node = 0\ncpus")
        + &oslet("b", "2", "4MiB").replace("cpus", "numa_node = 0\ncpus");
    assert_eq!(
        err_on(&text, &numa_host()),
        "box.toml: oslet \"b\".cpus: asks for 2 CPUs on NUMA node 0 but only 1 is free (3) \
         of its 4 CPUs; give fewer CPUs, use another node, or set [host] oversubscribe = true"
    );
}

#[test]
fn listed_cpus_off_the_numa_node_are_refused_with_the_nodes_cpus() {
    let text = oslet("db", "\"2-5\"", "4MiB").replace("cpus", "numa_node = 0\ncpus");
    assert_eq!(
        err_on(&text, &numa_host()),
        "box.toml: oslet \"db\".cpus: CPUs 4-5 are not on NUMA node 0 (its CPUs are 0-3); \
         use CPUs of node 0, or drop numa_node"
    );
    // With oversubscribe the node only binds memory.
    let p = plan_on(&format!("{OVERSUB}{text}"), &numa_host());
    assert_eq!(cpus_of(&p), vec![vec![2, 3, 4, 5]]);
}

#[test]
fn a_numa_node_the_host_lacks_is_refused_with_the_nodes_it_has() {
    let text = oslet("db", "2", "4MiB").replace("cpus", "numa_node = 3\ncpus");
    assert_eq!(
        err_on(&text, &numa_host()),
        "box.toml: oslet \"db\".numa_node: NUMA node 3 does not exist on this host (it has \
         nodes 0-1); use one of 0-1, or drop numa_node"
    );
    assert_eq!(
        err_on(&text, &host(4)),
        "box.toml: oslet \"db\".numa_node: NUMA node 3 does not exist on this host (it has \
         node 0); use node 0, or drop numa_node"
    );
    let text = oslet("db", "2", "4MiB").replace("cpus", "numa_node = -1\ncpus");
    assert_eq!(
        err_on(&text, &numa_host()),
        "box.toml: oslet \"db\".numa_node: -1 is not a NUMA node id; use one of 0-1, or drop \
         numa_node"
    );
}

#[test]
fn a_count_on_a_memory_only_node_is_refused() {
    let mut h = numa_host();
    h.numa_nodes.push(NumaNode {
        id: 2,
        cpus: vec![],
        memory_bytes: GIB,
    });
    let text = oslet("db", "2", "4MiB").replace("cpus", "numa_node = 2\ncpus");
    assert_eq!(
        err_on(&text, &h),
        "box.toml: oslet \"db\".cpus: NUMA node 2 has no CPUs to take 2 from; drop \
         numa_node, or bind to a node that has CPUs"
    );
}

#[test]
fn vcpu_counts_outside_1_to_254_are_refused() {
    assert_eq!(
        err_on(&oslet("db", "0", "4MiB"), &host(4)),
        "box.toml: oslet \"db\".cpus: 0 vCPUs: an OSlet needs at least one; give a count \
         from 1 to 254, or a CPU list like \"0-3\""
    );
    assert_eq!(
        err_on(&oslet("db", "255", "4MiB"), &host(4)),
        "box.toml: oslet \"db\".cpus: 255 vCPUs is more than the 254 an OSlet can have; give \
         at most 254, or split it into several OSlets"
    );
    assert_eq!(
        err_on(&oslet("db", "\"0-299\"", "4MiB"), &host(512)),
        "box.toml: oslet \"db\".cpus: \"0-299\" names more than 254 CPUs; give at most 254"
    );
    let array = format!(
        "[{}]",
        (0..255)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    assert_eq!(
        err_on(&oslet("db", &array, "4MiB"), &host(512)),
        "box.toml: oslet \"db\".cpus: 255 vCPUs is more than the 254 an OSlet can have; give \
         at most 254, or split it into several OSlets"
    );
    let p = plan_on(&oslet("db", "254", "4MiB"), &host(256));
    assert_eq!(p.oslets[0].vcpus(), 254);
}

#[test]
fn bad_cpu_list_syntax_is_refused_with_the_form_expected() {
    assert_eq!(
        err_on(&oslet("db", "\"0-3;5\"", "4MiB"), &host(8)),
        "box.toml: oslet \"db\".cpus: \"0-3;5\" in \"0-3;5\" is not a CPU id or range; write \
         CPU ids and ranges separated by commas, e.g. \"0-3,8,10-11\""
    );
    assert_eq!(
        err_on(&oslet("db", "\"3-1\"", "4MiB"), &host(8)),
        "box.toml: oslet \"db\".cpus: the range \"3-1\" in \"3-1\" runs backwards; write it \
         low-high: \"1-3\""
    );
    assert_eq!(
        err_on(&oslet("db", "[]", "4MiB"), &host(8)),
        "box.toml: oslet \"db\".cpus: the CPU array is empty; list at least one CPU, e.g. \
         cpus = [0], or give a count"
    );
    assert_eq!(
        err_on(&oslet("db", "[0, -1]", "4MiB"), &host(8)),
        "box.toml: oslet \"db\".cpus: -1 is not a CPU id; CPU ids are 0 or more"
    );
    assert_eq!(
        err_on(&oslet("db", "\"\"", "4MiB"), &host(8)),
        "box.toml: oslet \"db\".cpus: the CPU list is empty; write CPU ids and ranges \
         separated by commas, e.g. \"0-3,8,10-11\""
    );
}

// ---- memory ----

#[test]
fn memory_accepts_bytes_and_size_strings() {
    let text = oslet("a", "1", "4MiB")
        + &oslet("b", "1", "1536M")
        + &oslet("c", "1", "x").replace("\"x\"", "8388608");
    let p = plan_on(&text, &host(4));
    let sizes: Vec<u64> = p.oslets.iter().map(|o| o.memory_bytes).collect();
    assert_eq!(sizes, vec![4 * MIB, 1536 * MIB, 8 * MIB]);
}

#[test]
fn memory_with_an_unknown_unit_says_which_units_are_accepted() {
    assert_eq!(
        err_on(&oslet("db", "1", "4XB"), &host(4)),
        "box.toml: oslet \"db\".memory: \"4XB\" has an unknown unit \"XB\"; sizes are a whole \
         number of bytes or a whole number with a unit: B, K or KiB, M or MiB, G or GiB, T or \
         TiB (all binary, 1K = 1024)"
    );
    assert_eq!(
        err_on(&oslet("db", "1", "512MB"), &host(4)),
        "box.toml: oslet \"db\".memory: \"512MB\" is ambiguous (decimal or binary MB?); write \
         \"512MiB\"; sizes are a whole number of bytes or a whole number with a unit: B, K or \
         KiB, M or MiB, G or GiB, T or TiB (all binary, 1K = 1024)"
    );
}

#[test]
fn memory_below_the_minimum_is_refused() {
    assert_eq!(
        err_on(&oslet("db", "1", "1MiB"), &host(4)),
        "box.toml: oslet \"db\".memory: 1 MiB is below the minimum of 2 MiB; give at least \
         \"2MiB\""
    );
    assert_eq!(
        err_on(&oslet("db", "1", "x").replace("\"x\"", "-4096"), &host(4)),
        "box.toml: oslet \"db\".memory: -4096 is not a size; give a number of bytes, or a size \
         string like \"256MiB\""
    );
}

#[test]
fn memory_not_a_multiple_of_4k_is_refused_with_the_nearest_sizes() {
    assert_eq!(
        err_on(&oslet("db", "1", "x").replace("\"x\"", "4194305"), &host(4)),
        "box.toml: oslet \"db\".memory: 4194305 B is not a multiple of 4 KiB (the page \
         size); use 4 MiB or 4100 KiB"
    );
}

#[test]
fn memory_not_a_multiple_of_the_huge_page_size_is_refused() {
    let text = oslet("db", "1", "3MiB").replace("cpus", "hugepages = \"2M\"\ncpus");
    assert_eq!(
        err_on(&text, &host(4)),
        "box.toml: oslet \"db\".memory: 3 MiB is not a multiple of the 2 MiB huge page size; \
         use 2 MiB or 4 MiB"
    );
    let text = oslet("db", "1", "1536MiB").replace("cpus", "hugepages = \"1G\"\ncpus");
    assert_eq!(
        err_on(&text, &numa_host()),
        "box.toml: oslet \"db\".memory: 1536 MiB is not a multiple of the 1 GiB huge page \
         size; use 1 GiB or 2 GiB"
    );
}

#[test]
fn memory_beyond_the_host_says_what_was_asked_and_what_the_host_has() {
    let mut h = host(8);
    h.memory_bytes = 65_842_340 * 1024;
    assert_eq!(
        err_on(&(oslet("a", "1", "40GiB") + &oslet("b", "1", "32GiB")), &h),
        "box.toml: oslet \"b\".memory: the OSlets ask for 72 GiB in all but the host has \
         62.8 GiB (MemTotal); give the OSlets less memory"
    );
    assert_eq!(
        err_on(&(oslet("a", "1", "4MiB") + &oslet("b", "1", "64GiB")), &h),
        "box.toml: oslet \"b\".memory: asks for 64 GiB but the host has 62.8 GiB (MemTotal); \
         give the OSlets less memory"
    );
}

#[test]
fn memory_beyond_the_numa_node_is_refused() {
    let text = oslet("a", "1", "3GiB").replace("cpus", "numa_node = 1\ncpus")
        + &oslet("b", "1", "2GiB").replace("cpus", "numa_node = 1\ncpus");
    assert_eq!(
        err_on(&text, &numa_host()),
        "box.toml: oslet \"b\".memory: the OSlets on NUMA node 1 ask for 5 GiB in all but \
         node 1 has 4 GiB; give them less memory, or bind some to another node"
    );
    // The same memory unbound fits the host's 8 GiB.
    let text = oslet("a", "1", "3GiB") + &oslet("b", "1", "2GiB");
    plan_on(&text, &numa_host());
}

// ---- huge pages ----

#[test]
fn hugepages_take_2m_1g_true_and_false() {
    let text = oslet("a", "1", "4MiB").replace("cpus", "hugepages = \"2M\"\ncpus")
        + &oslet("b", "1", "1GiB").replace("cpus", "hugepages = \"1G\"\ncpus")
        + &oslet("c", "1", "4MiB").replace("cpus", "hugepages = true\ncpus")
        + &oslet("d", "1", "4MiB").replace("cpus", "hugepages = false\ncpus")
        + &oslet("e", "1", "4MiB").replace("cpus", "hugepages = \"2MiB\"\ncpus");
    let p = plan_on(&text, &numa_host());
    let pages: Vec<Option<u64>> = p.oslets.iter().map(|o| o.hugepages).collect();
    assert_eq!(
        pages,
        vec![Some(2 * MIB), Some(GIB), Some(2 * MIB), None, Some(2 * MIB)]
    );
}

#[test]
fn a_huge_page_size_that_does_not_exist_is_refused() {
    let text = oslet("db", "1", "4MiB").replace("cpus", "hugepages = \"4M\"\ncpus");
    assert_eq!(
        err_on(&text, &host(4)),
        "box.toml: oslet \"db\".hugepages: \"4M\" is not a huge page size; use \"2M\" or \"1G\" \
         (true means \"2M\", false means none)"
    );
}

#[test]
fn a_missing_huge_page_pool_is_refused_with_how_to_get_one() {
    let text = oslet("db", "1", "1GiB").replace("cpus", "hugepages = \"1G\"\ncpus");
    assert_eq!(
        err_on(&text, &host(4)),
        "box.toml: oslet \"db\".hugepages: the host has no 1 GiB huge page pool \
         (/sys/kernel/mm/hugepages/hugepages-1048576kB); boot the host with hugepagesz=1G \
         hugepages=N, or use hugepages = \"2M\", or drop hugepages"
    );
}

#[test]
fn too_few_free_huge_pages_give_the_exact_echo_fix() {
    let text = oslet("a", "1", "128MiB").replace("cpus", "hugepages = \"2M\"\ncpus")
        + &oslet("b", "1", "128MiB").replace("cpus", "hugepages = true\ncpus");
    assert_eq!(
        err_on(&text, &numa_host()),
        "box.toml: oslet \"b\".hugepages: the OSlets need 128 free 2 MiB huge pages but the \
         host has 100 free; reserve them with `echo 128 > \
         /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages` (more if other programs \
         hold some), or drop hugepages"
    );
}

// ---- kernel, initrd, cmdline, console ----

/// A directory holding a fake bzImage, a fake ELF vmlinux and an initrd.
fn kernel_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut bz = vec![0u8; 0x400];
    bz[0x1FE] = 0x55;
    bz[0x1FF] = 0xAA;
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    fs::write(dir.path().join("bzImage"), bz).unwrap();
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2;
    elf[5] = 1;
    elf[18] = 62;
    fs::write(dir.path().join("vmlinux"), &elf).unwrap();
    elf[4] = 1;
    fs::write(dir.path().join("vmlinux32"), &elf).unwrap();
    elf[4] = 2;
    elf[18] = 183;
    fs::write(dir.path().join("vmlinux-arm"), &elf).unwrap();
    fs::write(dir.path().join("initrd.img"), b"070701").unwrap();
    fs::write(dir.path().join("notes.txt"), b"not a kernel at all").unwrap();
    fs::create_dir(dir.path().join("boot")).unwrap();
    dir
}

fn with_kernel(kernel: &str, extra: &str) -> String {
    format!("[[oslet]]\nname = \"db\"\ncpus = 1\nmemory = \"4MiB\"\nkernel = \"{kernel}\"\n{extra}")
}

fn err_in(dir: &Path, text: &str) -> String {
    let source = dir.join("box.toml");
    match parse_str(text, &source, &host(4)) {
        Ok(p) => panic!("expected an error, got:\n{p}"),
        Err(e) => e
            .to_string()
            .replace(&format!("{}/", dir.display()), "DIR/"),
    }
}

#[test]
fn relative_paths_resolve_against_the_config_files_directory() {
    let dir = kernel_dir();
    let text = format!(
        "[host]\nlog_dir = \"logs\"\n{}",
        with_kernel("bzImage", "initrd = \"initrd.img\"\n")
    );
    let p = parse_str(&text, &dir.path().join("box.toml"), &host(4)).unwrap();
    let o = &p.oslets[0];
    assert_eq!(
        o.kernel,
        Kernel::Image {
            path: dir.path().join("bzImage"),
            format: KernelFormat::BzImage
        }
    );
    assert_eq!(
        o.initrd.as_deref(),
        Some(dir.path().join("initrd.img").as_path())
    );
    assert_eq!(p.log_dir, dir.path().join("logs"));
    assert_eq!(o.log_file, dir.path().join("logs/db.log"));
}

#[test]
fn absolute_paths_are_kept() {
    let dir = kernel_dir();
    let vmlinux = dir.path().join("vmlinux");
    let text = with_kernel(&vmlinux.display().to_string(), "");
    let p = parse_str(&text, Path::new("/elsewhere/box.toml"), &host(4)).unwrap();
    assert_eq!(
        p.oslets[0].kernel,
        Kernel::Image {
            path: vmlinux,
            format: KernelFormat::Elf
        }
    );
    assert_eq!(p.log_dir, PathBuf::from("/elsewhere/oslet-logs"));
}

#[test]
fn a_bare_file_name_source_resolves_against_the_current_directory() {
    let p = plan_on(&oslet("db", "1", "4MiB"), &host(4));
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(p.log_dir, cwd.join("oslet-logs"));
    assert_eq!(p.oslets[0].log_file, cwd.join("oslet-logs/db.log"));
    assert_eq!(p.source, PathBuf::from("box.toml"));
    assert_eq!(p.oslets[0].kernel, Kernel::TestKernel);
}

#[test]
fn a_missing_kernel_is_refused_with_the_resolved_path() {
    let dir = kernel_dir();
    assert_eq!(
        err_in(dir.path(), &with_kernel("bzImage-6.9", "")),
        format!(
            "{}: oslet \"db\".kernel: DIR/bzImage-6.9 does not exist; check the path \
             (relative paths start at the config file's directory), or use kernel = \
             \"builtin:testkernel\"",
            dir.path().join("box.toml").display()
        )
        .replace(&format!("{}/", dir.path().display()), "DIR/")
    );
}

#[test]
fn a_file_that_is_not_a_kernel_is_refused() {
    let dir = kernel_dir();
    let fix = "point kernel at a bzImage (arch/x86/boot/bzImage) or an x86-64 vmlinux, or \
               use \"builtin:testkernel\"";
    for (name, detail) in [
        ("notes.txt", ""),
        ("vmlinux32", " (it is a 32-bit ELF)"),
        ("vmlinux-arm", " (it is an ELF for machine 183, not x86-64)"),
    ] {
        assert_eq!(
            err_in(dir.path(), &with_kernel(name, "")),
            format!(
                "DIR/box.toml: oslet \"db\".kernel: DIR/{name} is not a bzImage or an ELF \
                 vmlinux{detail}; {fix}"
            )
        );
    }
    fs::write(dir.path().join("empty"), b"").unwrap();
    assert_eq!(
        err_in(dir.path(), &with_kernel("empty", "")),
        format!("DIR/box.toml: oslet \"db\".kernel: DIR/empty is not a bzImage or an ELF vmlinux (it is empty); {fix}")
    );
    assert_eq!(
        err_in(dir.path(), &with_kernel("boot", "")),
        "DIR/box.toml: oslet \"db\".kernel: DIR/boot is a directory; check the path (relative \
         paths start at the config file's directory), or use kernel = \"builtin:testkernel\""
    );
}

#[test]
fn unknown_builtin_and_empty_kernels_are_refused() {
    assert_eq!(
        err_on(&with_kernel("builtin:linux", ""), &host(4)),
        "box.toml: oslet \"db\".kernel: \"builtin:linux\" is not a builtin kernel; the only \
         builtin is \"builtin:testkernel\"; give a path for any other kernel"
    );
    assert_eq!(
        err_on(&with_kernel("", ""), &host(4)),
        "box.toml: oslet \"db\".kernel: the kernel path is empty; give a path to a bzImage or \
         vmlinux, or \"builtin:testkernel\""
    );
}

#[test]
fn a_missing_initrd_is_refused() {
    let dir = kernel_dir();
    assert_eq!(
        err_in(
            dir.path(),
            &with_kernel("builtin:testkernel", "initrd = \"nope.img\"\n")
        ),
        "DIR/box.toml: oslet \"db\".initrd: DIR/nope.img does not exist; check the path \
         (relative paths start at the config file's directory), or leave initrd out"
    );
}

#[test]
fn unreadable_kernel_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = kernel_dir();
    let path = dir.path().join("bzImage");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::File::open(&path).is_ok() {
        return; // running as root: permissions do not stop us
    }
    assert_eq!(
        err_in(dir.path(), &with_kernel("bzImage", "")),
        "DIR/box.toml: oslet \"db\".kernel: DIR/bzImage cannot be read (permission denied); \
         check the path (relative paths start at the config file's directory), or use \
         kernel = \"builtin:testkernel\""
    );
}

#[test]
fn cmdline_is_kept_as_written_up_to_2047_bytes() {
    let long = "a".repeat(2047);
    let p = plan_on(
        &with_kernel("builtin:testkernel", &format!("cmdline = \"{long}\"\n")),
        &host(4),
    );
    assert_eq!(p.oslets[0].cmdline.as_deref(), Some(long.as_str()));
    let too_long = "a".repeat(2048);
    assert_eq!(
        err_on(
            &with_kernel("builtin:testkernel", &format!("cmdline = \"{too_long}\"\n")),
            &host(4)
        ),
        "box.toml: oslet \"db\".cmdline: the command line is 2048 bytes, more than the 2047 \
         the boot protocol allows; shorten it"
    );
    assert_eq!(
        err_on(
            &with_kernel("builtin:testkernel", "cmdline = \"a\\u0000b\"\n"),
            &host(4)
        ),
        "box.toml: oslet \"db\".cmdline: the command line contains a NUL byte; remove the \\u0000"
    );
}

#[test]
fn console_modes_parse_and_unknown_ones_are_refused() {
    for (text, mode) in [
        ("", Console::Terminal),
        ("console = \"terminal\"\n", Console::Terminal),
        ("console = \"log\"\n", Console::Log),
        ("console = \"off\"\n", Console::Off),
    ] {
        let p = plan_on(&with_kernel("builtin:testkernel", text), &host(4));
        assert_eq!(p.oslets[0].console, mode);
    }
    assert_eq!(
        err_on(
            &with_kernel("builtin:testkernel", "console = \"logs\"\n"),
            &host(4)
        ),
        "box.toml: oslet \"db\".console: \"logs\" is not a console mode; did you mean \"log\"? \
         the modes are \"terminal\", \"log\" and \"off\""
    );
    assert_eq!(
        err_on(
            &with_kernel("builtin:testkernel", "console = \"serial\"\n"),
            &host(4)
        ),
        "box.toml: oslet \"db\".console: \"serial\" is not a console mode; use \"terminal\" \
         (the default), \"log\" or \"off\""
    );
}

// ---- names, file-level errors ----

#[test]
fn invalid_names_are_refused_with_the_rule() {
    assert_eq!(
        err_on(&oslet("DB", "1", "4MiB"), &host(4)),
        "box.toml: oslet[0].name: \"DB\" is not a valid OSlet name; try \"db\"; names are 1 to \
         32 lowercase letters, digits and '-', starting with a letter or digit"
    );
    assert_eq!(
        err_on(
            &(oslet("ok", "1", "4MiB") + &oslet("-x", "1", "4MiB")),
            &host(4)
        ),
        "box.toml: oslet[1].name: \"-x\" is not a valid OSlet name; use 1 to 32 lowercase \
         letters, digits and '-', starting with a letter or digit"
    );
    let long = "a".repeat(33);
    assert!(err_on(&oslet(&long, "1", "4MiB"), &host(4)).contains("is not a valid OSlet name"));
    assert!(err_on(&oslet("", "1", "4MiB"), &host(4)).contains("\"\" is not a valid OSlet name"));
    plan_on(&oslet(&"a".repeat(32), "1", "4MiB"), &host(4));
    plan_on(&oslet("0-a-9", "1", "4MiB"), &host(4));
}

#[test]
fn duplicate_names_are_refused_naming_the_first() {
    let text = oslet("db", "1", "4MiB") + &oslet("app", "1", "4MiB") + &oslet("db", "1", "4MiB");
    assert_eq!(
        err_on(&text, &host(4)),
        "box.toml: oslet[2].name: \"db\" is already the name of oslet[0]; give each OSlet its \
         own name"
    );
}

#[test]
fn an_empty_file_is_refused() {
    assert_eq!(
        err_on("  \n\n", &host(4)),
        "box.toml: the file is empty; describe at least one OSlet with an [[oslet]] table \
         (config/examples/micro.toml is the smallest)"
    );
}

#[test]
fn a_file_without_oslets_is_refused() {
    assert_eq!(
        err_on("# nothing yet\n[host]\noversubscribe = true\n", &host(4)),
        "box.toml: no [[oslet]] table; describe at least one OSlet: [[oslet]] name = \
         \"micro\", cpus = 1, memory = \"4MiB\", kernel = \"builtin:testkernel\""
    );
}

#[test]
fn an_empty_log_dir_is_refused() {
    assert_eq!(
        err_on(
            &format!("[host]\nlog_dir = \"\"\n{}", oslet("db", "1", "4MiB")),
            &host(4)
        ),
        "box.toml: host.log_dir: the log directory is empty; give a directory, e.g. log_dir = \
         \"oslet-logs\", or leave it out"
    );
}

#[test]
fn toml_errors_come_through_parse_str_with_line_numbers() {
    let text = oslet("a", "1", "4MiB") + &oslet("b", "1", "4MiB") + "memroy = \"4MiB\"\n";
    assert_eq!(
        err_on(&text, &host(4)),
        "box.toml:11: oslet[1].memroy: unknown field; did you mean \"memory\"?"
    );
}

#[test]
fn user_text_echoed_in_errors_stays_on_one_line() {
    let text = oslet("db", "\"\"\"0-1\n,x\"\"\"", "4MiB");
    let e = err_on(&text, &host(4));
    assert!(e.contains("\\n"), "{e}");
}

#[test]
fn load_reads_a_file_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("box.toml");
    fs::write(&path, oslet("db", "2", "4MiB")).unwrap();
    let p = load(&path, &host(4)).unwrap();
    assert_eq!(p.source, path);
    assert_eq!(cpus_of(&p), vec![vec![0, 1]]);
}

#[test]
fn load_reports_missing_directory_and_non_utf8_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    assert_eq!(
        load(&missing, &host(4)).unwrap_err().to_string(),
        format!(
            "{}: the file does not exist; check the path (config/examples/ has sample configs)",
            missing.display()
        )
    );
    assert_eq!(
        load(dir.path(), &host(4)).unwrap_err().to_string(),
        format!(
            "{}: this is a directory; give the path of a .toml file",
            dir.path().display()
        )
    );
    let latin1 = dir.path().join("latin1.toml");
    fs::write(&latin1, b"# caf\xe9\n").unwrap();
    assert_eq!(
        load(&latin1, &host(4)).unwrap_err().to_string(),
        format!(
            "{}: the file is not UTF-8 text (bad byte at offset 5); save it as UTF-8",
            latin1.display()
        )
    );
}

#[test]
fn no_input_makes_the_parser_panic() {
    // Every prefix, and every single-byte change to a set of tricky bytes, of a file
    // using every field: each must give a plan or a one-line error, never a panic.
    let dir = kernel_dir();
    let base = String::from(
        "[host]\noversubscribe = false\nlog_dir = \"l\"\n[[oslet]]\nname = \"db\"\n\
         cpus = \"0-1\"\nmemory = \"4MiB\"\nnuma_node = 0\nhugepages = \"2M\"\n\
         kernel = \"bzImage\"\ninitrd = \"initrd.img\"\ncmdline = \"c\"\nconsole = \"log\"\n\
         [[oslet]]\nname = \"b\"\ncpus = [2]\nmemory = 4194304\nkernel = \"builtin:testkernel\"\n",
    );
    let source = dir.path().join("box.toml");
    let h = host(4);
    assert!(parse_str(&base, &source, &h).is_ok());
    let check = |text: &str| {
        if let Err(e) = parse_str(text, &source, &h) {
            let line = e.to_string();
            assert!(!line.contains('\n'), "{line:?} for {text:?}");
        }
    };
    let bytes = base.as_bytes();
    for end in 0..=bytes.len() {
        if let Ok(prefix) = std::str::from_utf8(&bytes[..end]) {
            check(prefix);
        }
    }
    for i in 0..bytes.len() {
        for b in [
            b'"', b'[', b']', b'=', b'\n', b'-', b'9', b',', b'x', b' ', b'.',
        ] {
            let mut mutated = bytes.to_vec();
            mutated[i] = b;
            if let Ok(text) = String::from_utf8(mutated) {
                check(&text);
            }
        }
    }
}

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
