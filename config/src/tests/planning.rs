//! Where CPUs go, how much memory and which huge pages: the planner's rules.

use super::*;

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

// ---- housekeeping CPUs ----

#[test]
fn housekeeping_defaults_to_the_cpus_no_vcpu_runs_on() {
    let p = plan_on(
        &(oslet("a", "2", "4MiB") + &oslet("b", "\"4-5\"", "4MiB")),
        &host(8),
    );
    assert_eq!(p.housekeeping_cpus, vec![2, 3, 6, 7]);
    assert!(p.to_string().contains("housekeeping cpus 2-3,6-7"), "{p}");
}

#[test]
fn housekeeping_is_not_pinned_when_every_cpu_runs_a_vcpu() {
    let p = plan_on(&oslet("a", "4", "4MiB"), &host(4));
    assert!(p.housekeeping_cpus.is_empty());
    assert!(p.to_string().contains("housekeeping not pinned"), "{p}");
}

#[test]
fn housekeeping_cpus_are_taken_as_written_sorted() {
    let text = "[host]\nhousekeeping_cpus = \"7,0\"\n".to_string() + &oslet("a", "\"1-3\"", "4MiB");
    assert_eq!(plan_on(&text, &host(8)).housekeeping_cpus, vec![0, 7]);
    let text = "[host]\nhousekeeping_cpus = [6, 6, 5]\n".to_string() + &oslet("a", "2", "4MiB");
    assert_eq!(plan_on(&text, &host(8)).housekeeping_cpus, vec![5, 6]);
}

#[test]
fn housekeeping_on_a_vcpu_s_cpu_names_the_oslet_and_the_free_cpus() {
    let text = "[host]\nhousekeeping_cpus = \"1\"\n".to_string() + &oslet("db", "2", "4MiB");
    assert_eq!(
        err_on(&text, &host(4)),
        "box.toml: host.housekeeping_cpus: CPU 1 runs vCPU 1 of OSlet db; give CPUs no vCPU \
         runs on (free: 2-3), or set [host] oversubscribe = true"
    );
    let text = "[host]\noversubscribe = true\nhousekeeping_cpus = \"1\"\n".to_string()
        + &oslet("db", "2", "4MiB");
    assert_eq!(plan_on(&text, &host(4)).housekeeping_cpus, vec![1]);
}

#[test]
fn housekeeping_mistakes_are_one_line_naming_the_field() {
    for (value, want) in [
        ("2", "2 is a count; housekeeping needs a set of CPUs"),
        ("[]", "the CPU array is empty"),
        ("\"9\"", "CPU 9 is not among this host's usable CPUs (0-3)"),
        ("\"x\"", "is not a CPU id or range"),
    ] {
        let text = format!("[host]\nhousekeeping_cpus = {value}\n") + &oslet("a", "1", "4MiB");
        let e = err_on(&text, &host(4));
        assert!(e.contains("host.housekeeping_cpus"), "{e}");
        assert!(e.contains(want), "{value}: {e}");
    }
}
