//! The oslet partition description: a TOML file that says which OSlets to run and
//! with what, checked against the host and planned down to the host CPU of every vCPU.
//!
//! [`load`] (or [`parse_str`]) reads a file, validates it and returns a [`Partition`];
//! anything wrong comes back as one [`ConfigError`] whose Display is a single line
//! `<file>: <field path>: <problem>; <fix>`. [`HostTopology::detect`] says what the
//! host has.
//!
//! # The file format
//!
//! ```toml
//! [host]                        # optional
//! oversubscribe = false         # optional, default false
//! log_dir = "oslet-logs"        # optional, default "oslet-logs"
//! housekeeping_cpus = "0-1"     # optional, default: the CPUs no vCPU is placed on
//!
//! [[oslet]]                     # one or more
//! name = "db"                   # required
//! cpus = 8                      # required: a count, "0-3,8,10-11" or [0, 1, 2, 3]
//! memory = "2GiB"               # required: bytes (integer) or a size string
//! numa_node = 0                 # optional
//! hugepages = "2M"              # optional: "2M", "1G", true (= "2M"), false (none)
//! kernel = "builtin:testkernel" # required: "builtin:testkernel" or a path
//! initrd = "initrd.img"         # optional path
//! cmdline = "console=ttyS0"     # optional
//! console = "terminal"          # optional: "terminal" (default), "log", "off"
//! ```
//!
//! Unknown fields anywhere are an error (a misspelt field is never silently ignored;
//! the error suggests the nearest known name).
//!
//! ## `[host]`
//!
//! - `oversubscribe` (bool, default `false`): allow the OSlets' CPU sets to overlap and
//!   to ask for more CPUs than the host has. Meant for trying a layout on a small
//!   development machine; leave it `false` on a real box, where every vCPU should own
//!   its host CPU.
//! - `log_dir` (string, default `"oslet-logs"`): where each OSlet's console log goes,
//!   as `<log_dir>/<name>.log`. A relative path starts at the config file's directory.
//! - `housekeeping_cpus` (a CPU list, `"0-1"` or `[0, 1]`; optional): the host CPUs
//!   for everything of oslet's except the vCPUs: the supervisor (`oslet up`), each
//!   VMM process's main, console and signal threads, and the virtiofsd it starts.
//!   Every vCPU thread still pins itself to its own CPU. Default: the host CPUs no
//!   vCPU is placed on; when a vCPU runs on every CPU, nothing is pinned. Each CPU
//!   must be one this host has (and this process may use); without `oversubscribe`
//!   none may be a vCPU's. KVM's own worker thread (`kvm-nx-lpage-recovery`, made
//!   by the kernel from the first vCPU thread) is moved there a second after start.
//!
//! ## `[[oslet]]`
//!
//! - `name` (string, required): 1 to 32 characters from `a-z`, `0-9` and `-`, starting
//!   with a letter or digit (`[a-z0-9][a-z0-9-]{0,31}`); unique in the file.
//! - `cpus` (required), in one of three forms; an OSlet has 1 to 254 vCPUs:
//!   - a count, `cpus = 8`: that many vCPUs on host CPUs chosen by the planner (below);
//!   - a host CPU list string in the kernel's cpulist syntax, `cpus = "0-3,8,10-11"`:
//!     comma-separated ids and inclusive `low-high` ranges, spaces allowed around items;
//!   - an array of host CPU ids, `cpus = [0, 1, 2, 3]`.
//!
//!   With a list or an array, vCPU *i* is pinned to the *i*-th CPU written.
//! - `memory` (required): guest RAM, either an integer number of bytes or a string: a
//!   whole number, optional spaces, and a unit `B`, `K`/`KiB`, `M`/`MiB`, `G`/`GiB` or
//!   `T`/`TiB` (case-insensitive). All units are binary (`1K` = 1024 bytes). `KB`,
//!   `MB`, `GB` and `TB` are refused as ambiguous: write `MiB` (or `M`). At least 2 MiB,
//!   and a multiple of 4 KiB (of the huge page size when `hugepages` is set).
//! - `numa_node` (integer, optional): bind the guest RAM to this host NUMA node. A
//!   count of CPUs is then taken from this node's CPUs, and (without oversubscribe)
//!   listed CPUs must belong to it.
//! - `hugepages` (optional): back guest RAM with huge pages, `"2M"` or `"1G"` (also
//!   written `"2MiB"`, `"1GiB"`); `true` means `"2M"`, `false` means none.
//! - `kernel` (string, required): `"builtin:testkernel"`, the minimal test kernel
//!   embedded in the `oslet` binary, or a path to a bzImage or an x86-64 ELF vmlinux
//!   (recognised by its header, not its name).
//! - `initrd` (string, optional): path to an initial ramdisk.
//! - `cmdline` (string, optional): the kernel command line, at most 2047 bytes, no NUL.
//!   When it is absent, a Linux kernel gets `console=ttyS0 reboot=k panic=1 pci=off`
//!   and the test kernel an empty line; when it is given, it is used as written.
//! - `restart` (optional): `"never"` (the default) or `"on-failure"`: when the guest
//!   crashes, powers off with a non-zero status, or its VMM process dies, the
//!   supervisor starts it again, at most `restart_limit` times (default 3).
//! - `console` (optional): `"terminal"` (the default: each line on the terminal
//!   prefixed with the OSlet's name, and in the log file), `"log"` (the log file only)
//!   or `"off"`.
//!
//! ## `[shared_fs]` (optional)
//!
//! ```toml
//! [shared_fs]
//! path = "shared"      # required: an existing directory, relative to this file
//! tag = "oslet"        # optional: the virtio-fs tag guests mount (1-36 of [A-Za-z0-9._-])
//! socket = "v.sock"    # optional: connect to this running vhost-user-fs backend
//!                      # instead of starting virtiofsd; {name} in it stands for
//!                      # the OSlet's name
//! cache = "never"      # optional: virtiofsd's --cache mode
//! ```
//!
//! Every OSlet gets the directory as one virtio-fs device (virtio-mmio), served by a
//! `virtiofsd` its VMM process starts. `cache = "never"` (the default) keeps OSlets
//! that write the same files coherent: every read and write goes to the host file.
//! `"auto"` and `"always"` let each guest cache data and attributes: faster, but one
//! OSlet may not see another's writes for a while.
//!
//! With `socket`, the VMM connects to a backend the user started and starts no
//! virtiofsd. A vhost-user backend serves one VMM per socket (virtiofsd exits when
//! its VMM disconnects), so with more than one OSlet the path must hold `{name}`
//! (e.g. `socket = "vfs-{name}.sock"`), one backend per OSlet. Each socket must
//! exist when the file is checked; the backend's own `--shared-dir` is what the
//! OSlet sees (oslet checks `path` but cannot pass it on).
//!
//! Relative paths (`kernel`, `initrd`, `log_dir`, `shared_fs.path`, `shared_fs.socket`) start at the directory of the config
//! file, not the current directory, so a file means the same wherever it is run from.
//!
//! ## How CPUs are planned
//!
//! 1. Explicit lists are used as written. They must name CPUs that exist (are online
//!    and allowed to this process) on the host, even with `oversubscribe`.
//! 2. Counts are then served in file order, each from the lowest-numbered host CPUs
//!    that no list names and no earlier count took (from the OSlet's NUMA node when
//!    `numa_node` is set). CPU 0 is not held back: lowest free first, predictably.
//! 3. Without `oversubscribe`, no two OSlets share a CPU, a list names each CPU once,
//!    listed CPUs lie on the OSlet's `numa_node`, and all OSlets together fit in the
//!    host's CPUs.
//! 4. With `oversubscribe = true`, lists may overlap and repeat CPUs, and counts go
//!    round-robin over the host's CPUs (the node's, with `numa_node`), ignoring lists:
//!    the *k*-th counted vCPU of the file, counting from 0 across all OSlets, runs on
//!    `cpus[k % cpus.len()]`.
//!
//! ## What else is checked against the host
//!
//! - The OSlets' memory together fits in the host's `MemTotal`, and the OSlets bound
//!   to a node fit in that node's memory.
//! - Each huge page size used has a host pool with enough free pages for every OSlet
//!   using it.
//! - `numa_node` exists; `kernel` and `initrd` exist and are readable regular files,
//!   and the kernel's header is a bzImage's or an x86-64 ELF64's.
//!
//! ## Errors
//!
//! Every error is one line, `<file>: <field path>: <problem>; <fix>`, for example
//!
//! ```text
//! box.toml: oslet "db".cpus: CPU 70 does not exist on this host (it has CPUs 0-63); use CPUs from 0-63 or give a count
//! box.toml: oslet "app".cpus: CPUs 4-7 are also used by oslet "db"; give each OSlet its own CPUs, or set [host] oversubscribe = true
//! box.toml:7: oslet[2].memroy: unknown field; did you mean "memory"?
//! ```
//!
//! Errors found while reading the TOML carry its line number and name OSlets by index
//! (`oslet[2]`, counting from 0); errors found while checking values name them
//! (`oslet "db"`).

mod error;
mod links;
mod partition;
mod plan;
mod raw;
mod shared_fs;
mod topology;
mod units;

#[cfg(test)]
mod tests;

use std::io;
use std::path::Path;

pub use error::{ConfigError, TopologyError};
pub use partition::{
    Console, FsCache, Kernel, KernelFormat, LinkPlan, OsletPlan, Partition, Restart, SharedFsPlan,
};
pub use topology::{HostTopology, HugePagePool, NumaNode};

/// Reads, parses, validates and plans the config file at `path` for `host`.
pub fn load(path: &Path, host: &HostTopology) -> Result<Partition, ConfigError> {
    let file = units::flat(path.display().to_string());
    let unreadable = |problem: String, fix: &str| ConfigError::Unreadable {
        file: file.clone(),
        problem,
        fix: fix.to_string(),
    };
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => unreadable(
            "the file does not exist".into(),
            "check the path (config/examples/ has sample configs)",
        ),
        io::ErrorKind::PermissionDenied => unreadable(
            "the file cannot be read (permission denied)".into(),
            "check its permissions",
        ),
        io::ErrorKind::IsADirectory => unreadable(
            "this is a directory".into(),
            "give the path of a .toml file",
        ),
        kind => unreadable(
            format!("the file cannot be read ({kind})"),
            "check the path and its permissions",
        ),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        unreadable(
            format!(
                "the file is not UTF-8 text (bad byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
            "save it as UTF-8",
        )
    })?;
    parse_str(&text, path, host)
}

/// Parses, validates and plans config `text` for `host`. `source` names the file in
/// errors, and relative paths in the text start at its directory.
pub fn parse_str(text: &str, source: &Path, host: &HostTopology) -> Result<Partition, ConfigError> {
    let file = units::flat(source.display().to_string());
    if text.trim().is_empty() {
        return Err(ConfigError::NoOslets {
            file,
            problem: "the file is empty".into(),
            fix: "describe at least one OSlet with an [[oslet]] table \
                  (config/examples/micro.toml is the smallest)"
                .into(),
        });
    }
    let dir = match source.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let base_dir = std::path::absolute(dir).map_err(|e| ConfigError::Unreadable {
        file: file.clone(),
        problem: format!("cannot resolve the file's directory ({})", e.kind()),
        fix: "run oslet from an existing directory, or give an absolute path".into(),
    })?;
    let raw = raw::parse(text, &file)?;
    plan::plan(raw, source, &base_dir, host)
}
