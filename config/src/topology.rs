//! What the host has: online CPUs, NUMA nodes, memory, huge page pools, LLC groups.
//!
//! Read from sysfs and `/proc/meminfo`. [`HostTopology::from_sysfs`] takes the roots
//! as arguments so that tests can point it at a fake tree.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::TopologyError;
use crate::units::{parse_cpu_list, KIB};

/// More CPU ids than any real host reports; guards against absurd sysfs contents.
const MAX_HOST_CPUS: usize = 1 << 20;

/// What the host has, as far as partitioning is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTopology {
    /// Online CPU ids, sorted. [`HostTopology::detect`] keeps only the CPUs this
    /// process may run on (its affinity mask), since a vCPU cannot be pinned elsewhere.
    pub cpus: Vec<usize>,
    /// At least one node; node 0 with every CPU and all memory when the host has no
    /// NUMA information. Sorted by id.
    pub numa_nodes: Vec<NumaNode>,
    /// `MemTotal` from `/proc/meminfo`, in bytes.
    pub memory_bytes: u64,
    /// One pool per huge page size the kernel offers, sorted by size.
    pub hugepages: Vec<HugePagePool>,
    /// Groups of CPUs sharing a last-level cache, sorted by their first CPU; empty when
    /// the host does not describe its caches.
    pub llc_groups: Vec<Vec<usize>>,
}

/// One NUMA node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    /// The node id (`nodeN` in sysfs).
    pub id: u32,
    /// Its online CPUs, sorted; empty for a memory-only node.
    pub cpus: Vec<usize>,
    /// Its `MemTotal`, in bytes.
    pub memory_bytes: u64,
}

/// The host's pool of huge pages of one size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HugePagePool {
    /// The page size in bytes (2 MiB, 1 GiB).
    pub size_bytes: u64,
    /// Pages free right now.
    pub free: u64,
}

impl HostTopology {
    /// Reads this host's topology from `/sys` and `/proc`.
    pub fn detect() -> Result<Self, TopologyError> {
        let mut topology = Self::from_sysfs(Path::new("/sys"), Path::new("/proc/meminfo"))?;
        if let Some(allowed) = allowed_cpus(Path::new("/proc/self/status")) {
            topology.restrict_to(&allowed);
        }
        Ok(topology)
    }

    /// Reads a topology from a sysfs tree rooted at `sys` (normally `/sys`) and a
    /// meminfo file (normally `/proc/meminfo`).
    pub fn from_sysfs(sys: &Path, meminfo: &Path) -> Result<Self, TopologyError> {
        let cpu_dir = sys.join("devices/system/cpu");
        let online_path = cpu_dir.join("online");
        let mut cpus = read_cpu_list(&online_path)?;
        cpus.sort_unstable();
        cpus.dedup();
        if cpus.is_empty() {
            return Err(TopologyError::Parse {
                path: online_path,
                problem: "no CPU is online".into(),
            });
        }
        let memory_bytes = read_mem_total(meminfo, "MemTotal:")?;
        let numa_nodes = read_nodes(&sys.join("devices/system/node"), &cpus, memory_bytes)?;
        let hugepages = read_hugepage_pools(&sys.join("kernel/mm/hugepages"))?;
        let llc_groups = read_llc_groups(&cpu_dir, &cpus);
        Ok(HostTopology {
            cpus,
            numa_nodes,
            memory_bytes,
            hugepages,
            llc_groups,
        })
    }

    /// Keeps only the CPUs in `allowed` (when that leaves any).
    fn restrict_to(&mut self, allowed: &BTreeSet<usize>) {
        if !self.cpus.iter().any(|c| allowed.contains(c)) {
            return;
        }
        self.cpus.retain(|c| allowed.contains(c));
        for node in &mut self.numa_nodes {
            node.cpus.retain(|c| allowed.contains(c));
        }
        for group in &mut self.llc_groups {
            group.retain(|c| allowed.contains(c));
        }
        self.llc_groups.retain(|g| !g.is_empty());
    }

    pub(crate) fn node(&self, id: u32) -> Option<&NumaNode> {
        self.numa_nodes.iter().find(|n| n.id == id)
    }

    pub(crate) fn pool(&self, size_bytes: u64) -> Option<&HugePagePool> {
        self.hugepages.iter().find(|p| p.size_bytes == size_bytes)
    }
}

fn read(path: &Path) -> Result<String, TopologyError> {
    fs::read_to_string(path).map_err(|source| TopologyError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_cpu_list(path: &Path) -> Result<Vec<usize>, TopologyError> {
    let text = read(path)?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    parse_cpu_list(text.trim(), MAX_HOST_CPUS).map_err(|p| TopologyError::Parse {
        path: path.to_path_buf(),
        problem: p.problem,
    })
}

/// Finds `<prefix> <N> kB` in a meminfo file (`MemTotal:` in /proc/meminfo,
/// `Node 0 MemTotal:` in a node's) and returns bytes.
fn read_mem_total(path: &Path, prefix: &str) -> Result<u64, TopologyError> {
    let text = read(path)?;
    let parse_error = |problem: String| TopologyError::Parse {
        path: path.to_path_buf(),
        problem,
    };
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(prefix))
        .ok_or_else(|| parse_error(format!("no \"{prefix}\" line")))?;
    let mut words = line.split_whitespace();
    let kib: u64 = words
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| parse_error(format!("\"{prefix}{line}\" has no number")))?;
    match words.next() {
        Some("kB") => kib
            .checked_mul(KIB)
            .ok_or_else(|| parse_error(format!("\"{prefix}{line}\" is too large"))),
        _ => Err(parse_error(format!("\"{prefix}{line}\" is not in kB"))),
    }
}

fn read_nodes(
    node_dir: &Path,
    online: &[usize],
    memory_bytes: u64,
) -> Result<Vec<NumaNode>, TopologyError> {
    let single = || {
        vec![NumaNode {
            id: 0,
            cpus: online.to_vec(),
            memory_bytes,
        }]
    };
    let entries = match fs::read_dir(node_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(single()),
        Err(source) => {
            return Err(TopologyError::Read {
                path: node_dir.to_path_buf(),
                source,
            })
        }
    };
    let mut nodes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| TopologyError::Read {
            path: node_dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix("node"))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let mut cpus = read_cpu_list(&dir.join("cpulist"))?;
        cpus.retain(|c| online.binary_search(c).is_ok());
        cpus.sort_unstable();
        cpus.dedup();
        let memory_bytes = read_mem_total(&dir.join("meminfo"), &format!("Node {id} MemTotal:"))?;
        nodes.push(NumaNode {
            id,
            cpus,
            memory_bytes,
        });
    }
    if nodes.is_empty() {
        return Ok(single());
    }
    nodes.sort_by_key(|n| n.id);
    Ok(nodes)
}

fn read_hugepage_pools(dir: &Path) -> Result<Vec<HugePagePool>, TopologyError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(TopologyError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut pools = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(kib) = name
            .to_str()
            .and_then(|n| n.strip_prefix("hugepages-"))
            .and_then(|n| n.strip_suffix("kB"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let free_path = entry.path().join("free_hugepages");
        let text = read(&free_path)?;
        let free = text.trim().parse().map_err(|_| TopologyError::Parse {
            path: free_path.clone(),
            problem: format!("\"{}\" is not a page count", text.trim()),
        })?;
        if let Some(size_bytes) = kib.checked_mul(KIB) {
            pools.push(HugePagePool { size_bytes, free });
        }
    }
    pools.sort_by_key(|p| p.size_bytes);
    Ok(pools)
}

/// For each CPU, the `shared_cpu_list` of its highest-level data or unified cache.
/// Missing or odd cache files leave that CPU out rather than failing detection.
fn read_llc_groups(cpu_dir: &Path, online: &[usize]) -> Vec<Vec<usize>> {
    let mut groups = BTreeSet::new();
    for cpu in online {
        let Ok(entries) = fs::read_dir(cpu_dir.join(format!("cpu{cpu}/cache"))) else {
            continue;
        };
        let mut best: Option<(u32, PathBuf)> = None;
        for entry in entries.flatten() {
            let is_index = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("index"));
            if !is_index {
                continue;
            }
            let dir = entry.path();
            let kind = fs::read_to_string(dir.join("type")).unwrap_or_default();
            if kind.trim() == "Instruction" {
                continue;
            }
            let Some(level) = fs::read_to_string(dir.join("level"))
                .ok()
                .and_then(|l| l.trim().parse::<u32>().ok())
            else {
                continue;
            };
            if best.as_ref().is_none_or(|(l, _)| level > *l) {
                best = Some((level, dir));
            }
        }
        let Some((_, dir)) = best else { continue };
        let Ok(mut group) = read_cpu_list(&dir.join("shared_cpu_list")) else {
            continue;
        };
        group.retain(|c| online.binary_search(c).is_ok());
        group.sort_unstable();
        group.dedup();
        if !group.is_empty() {
            groups.insert(group);
        }
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by_key(|g| g[0]);
    groups
}

/// The CPUs this process may run on, from `Cpus_allowed_list` in /proc/self/status.
fn allowed_cpus(status: &Path) -> Option<BTreeSet<usize>> {
    let text = fs::read_to_string(status).ok()?;
    let list = text
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    let cpus = parse_cpu_list(list.trim(), MAX_HOST_CPUS).ok()?;
    Some(cpus.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::{GIB, MIB};

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn cache(root: &Path, cpu: usize, index: usize, level: u32, kind: &str, shared: &str) {
        let base = format!("sys/devices/system/cpu/cpu{cpu}/cache/index{index}");
        write(root, &format!("{base}/level"), &format!("{level}\n"));
        write(root, &format!("{base}/type"), &format!("{kind}\n"));
        write(
            root,
            &format!("{base}/shared_cpu_list"),
            &format!("{shared}\n"),
        );
    }

    /// Two nodes of four CPUs, one LLC per node, 2 MiB and 1 GiB pools.
    fn two_node_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "meminfo",
            "MemTotal:       16777216 kB\nMemFree:  1 kB\n",
        );
        write(root, "sys/devices/system/cpu/online", "0-7\n");
        write(root, "sys/devices/system/node/online", "0-1\n");
        write(root, "sys/devices/system/node/node0/cpulist", "0-3\n");
        write(
            root,
            "sys/devices/system/node/node0/meminfo",
            "Node 0 MemTotal:        8388608 kB\nNode 0 MemFree: 1 kB\n",
        );
        write(root, "sys/devices/system/node/node1/cpulist", "4-7\n");
        write(
            root,
            "sys/devices/system/node/node1/meminfo",
            "Node 1 MemTotal:        8388608 kB\n",
        );
        write(
            root,
            "sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages",
            "512\n",
        );
        write(
            root,
            "sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages",
            "0\n",
        );
        for cpu in 0..8 {
            let llc = if cpu < 4 { "0-3" } else { "4-7" };
            cache(root, cpu, 0, 1, "Data", &cpu.to_string());
            cache(root, cpu, 1, 1, "Instruction", &cpu.to_string());
            cache(root, cpu, 2, 2, "Unified", &cpu.to_string());
            cache(root, cpu, 3, 3, "Unified", llc);
        }
        dir
    }

    #[test]
    fn from_sysfs_reads_cpus_nodes_memory_pools_and_llc_groups() {
        let dir = two_node_tree();
        let root = dir.path();
        let host = HostTopology::from_sysfs(&root.join("sys"), &root.join("meminfo")).unwrap();
        assert_eq!(host.cpus, (0..8).collect::<Vec<_>>());
        assert_eq!(host.memory_bytes, 16 * GIB);
        assert_eq!(
            host.numa_nodes,
            vec![
                NumaNode {
                    id: 0,
                    cpus: vec![0, 1, 2, 3],
                    memory_bytes: 8 * GIB
                },
                NumaNode {
                    id: 1,
                    cpus: vec![4, 5, 6, 7],
                    memory_bytes: 8 * GIB
                },
            ]
        );
        assert_eq!(
            host.hugepages,
            vec![
                HugePagePool {
                    size_bytes: 2 * MIB,
                    free: 512
                },
                HugePagePool {
                    size_bytes: GIB,
                    free: 0
                },
            ]
        );
        assert_eq!(host.llc_groups, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
    }

    #[test]
    fn host_without_numa_info_gets_one_node_with_everything() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "meminfo", "MemTotal: 2097152 kB\n");
        write(root, "sys/devices/system/cpu/online", "0-1\n");
        let host = HostTopology::from_sysfs(&root.join("sys"), &root.join("meminfo")).unwrap();
        assert_eq!(
            host.numa_nodes,
            vec![NumaNode {
                id: 0,
                cpus: vec![0, 1],
                memory_bytes: 2 * GIB
            }]
        );
        assert!(host.hugepages.is_empty());
        assert!(host.llc_groups.is_empty());
    }

    #[test]
    fn offline_cpus_are_left_out_of_nodes_and_llc_groups() {
        let dir = two_node_tree();
        let root = dir.path();
        write(root, "sys/devices/system/cpu/online", "0-2,4-7\n");
        let host = HostTopology::from_sysfs(&root.join("sys"), &root.join("meminfo")).unwrap();
        assert_eq!(host.cpus, vec![0, 1, 2, 4, 5, 6, 7]);
        assert_eq!(host.numa_nodes[0].cpus, vec![0, 1, 2]);
        assert_eq!(host.llc_groups, vec![vec![0, 1, 2], vec![4, 5, 6, 7]]);
    }

    #[test]
    fn memory_only_node_has_no_cpus() {
        let dir = two_node_tree();
        let root = dir.path();
        write(root, "sys/devices/system/node/node2/cpulist", "\n");
        write(
            root,
            "sys/devices/system/node/node2/meminfo",
            "Node 2 MemTotal: 1048576 kB\n",
        );
        let host = HostTopology::from_sysfs(&root.join("sys"), &root.join("meminfo")).unwrap();
        assert_eq!(host.numa_nodes.len(), 3);
        assert_eq!(host.numa_nodes[2].cpus, Vec::<usize>::new());
        assert_eq!(host.numa_nodes[2].memory_bytes, GIB);
    }

    #[test]
    fn missing_online_file_is_a_read_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "meminfo", "MemTotal: 2097152 kB\n");
        let err = HostTopology::from_sysfs(&root.join("sys"), &root.join("meminfo")).unwrap_err();
        assert!(matches!(err, TopologyError::Read { .. }));
        assert!(
            err.to_string().ends_with("sys/devices/system/cpu/online"),
            "{err}"
        );
    }

    #[test]
    fn meminfo_without_mem_total_is_a_parse_error() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "meminfo", "MemFree: 1 kB\n");
        write(root, "sys/devices/system/cpu/online", "0\n");
        let err = HostTopology::from_sysfs(&root.join("sys"), &root.join("meminfo")).unwrap_err();
        assert!(
            err.to_string().ends_with("meminfo: no \"MemTotal:\" line"),
            "{err}"
        );
        write(root, "meminfo", "MemTotal: lots\n");
        let err = HostTopology::from_sysfs(&root.join("sys"), &root.join("meminfo")).unwrap_err();
        assert!(err.to_string().ends_with("has no number"), "{err}");
    }

    #[test]
    fn garbage_cpu_list_is_a_parse_error() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "meminfo", "MemTotal: 2097152 kB\n");
        write(root, "sys/devices/system/cpu/online", "zero\n");
        let err = HostTopology::from_sysfs(&root.join("sys"), &root.join("meminfo")).unwrap_err();
        assert!(matches!(err, TopologyError::Parse { .. }), "{err}");
    }

    #[test]
    fn restricting_to_the_affinity_mask_drops_other_cpus() {
        let dir = two_node_tree();
        let root = dir.path();
        let mut host = HostTopology::from_sysfs(&root.join("sys"), &root.join("meminfo")).unwrap();
        write(root, "status", "Name: x\nCpus_allowed_list:\t2-5\n");
        let allowed = allowed_cpus(&root.join("status")).unwrap();
        host.restrict_to(&allowed);
        assert_eq!(host.cpus, vec![2, 3, 4, 5]);
        assert_eq!(host.numa_nodes[0].cpus, vec![2, 3]);
        assert_eq!(host.llc_groups, vec![vec![2, 3], vec![4, 5]]);
        // A mask that shares nothing with the online CPUs is ignored.
        host.restrict_to(&[100].into_iter().collect());
        assert_eq!(host.cpus, vec![2, 3, 4, 5]);
    }

    #[test]
    fn detect_reads_this_host() {
        // Every Linux test machine has /sys and /proc; the checks are only sanity.
        if !Path::new("/sys/devices/system/cpu/online").exists() {
            return;
        }
        let host = HostTopology::detect().unwrap();
        assert!(!host.cpus.is_empty());
        assert!(!host.numa_nodes.is_empty());
        assert!(host.memory_bytes > 0);
    }
}
