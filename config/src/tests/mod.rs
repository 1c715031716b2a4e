//! Planning and validation through the public API (`parse_str`, `load`), against
//! synthetic hosts. Each bad-input test pins the whole message line.

mod examples;
mod files;
mod planning;

use std::fs;
use std::path::Path;

use crate::units::{GIB, MIB};
use crate::*;

/// One NUMA node holding every CPU, 16 GiB, a 2 MiB pool with 1024 free pages.
pub(super) fn host(ncpus: usize) -> HostTopology {
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
pub(super) fn numa_host() -> HostTopology {
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
pub(super) fn oslet(name: &str, cpus: &str, memory: &str) -> String {
    format!(
        "[[oslet]]\nname = \"{name}\"\ncpus = {cpus}\nmemory = \"{memory}\"\nkernel = \"builtin:testkernel\"\n"
    )
}

pub(super) fn plan_on(text: &str, host: &HostTopology) -> Partition {
    match parse_str(text, Path::new("box.toml"), host) {
        Ok(p) => p,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

pub(super) fn err_on(text: &str, host: &HostTopology) -> String {
    match parse_str(text, Path::new("box.toml"), host) {
        Ok(p) => panic!("expected an error, got a plan:\n{p}"),
        Err(e) => {
            let line = e.to_string();
            assert!(!line.contains('\n'), "error is not one line: {line:?}");
            line
        }
    }
}

pub(super) fn cpus_of(p: &Partition) -> Vec<Vec<usize>> {
    p.oslets.iter().map(|o| o.host_cpus.clone()).collect()
}

pub(super) const OVERSUB: &str = "[host]\noversubscribe = true\n";

/// A directory holding a fake bzImage, a fake ELF vmlinux and an initrd.
pub(super) fn kernel_dir() -> tempfile::TempDir {
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

pub(super) fn with_kernel(kernel: &str, extra: &str) -> String {
    format!("[[oslet]]\nname = \"db\"\ncpus = 1\nmemory = \"4MiB\"\nkernel = \"{kernel}\"\n{extra}")
}

pub(super) fn err_in(dir: &Path, text: &str) -> String {
    let source = dir.join("box.toml");
    match parse_str(text, &source, &host(4)) {
        Ok(p) => panic!("expected an error, got:\n{p}"),
        Err(e) => e
            .to_string()
            .replace(&format!("{}/", dir.display()), "DIR/"),
    }
}
