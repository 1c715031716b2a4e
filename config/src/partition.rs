//! The planned partition, what the VMM consumes, and how `oslet check` prints it.

use std::fmt;
use std::path::PathBuf;

use crate::plan::BUILTIN_TESTKERNEL;
use crate::units::{format_cpu_list, format_size, plural, GIB};

/// A checked, planned partition of the host: what the VMM builds.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The file it came from, as given.
    pub source: PathBuf,
    /// `[host] oversubscribe`: CPU sets may overlap and exceed the host's CPUs.
    pub oversubscribe: bool,
    /// Where per-OSlet console logs go; absolute.
    pub log_dir: PathBuf,
    /// Host CPUs for everything but the vCPUs (the supervisor, each VMM process's
    /// other threads, virtiofsd): `[host] housekeeping_cpus`, else the CPUs no vCPU
    /// is placed on. Empty: not pinned (every CPU runs a vCPU).
    #[serde(default)]
    pub housekeeping_cpus: Vec<usize>,
    /// The OSlets, in file order.
    pub oslets: Vec<OsletPlan>,
    /// The links between OSlets: `[[link]]` entries, then the mesh's, without repeats.
    pub links: Vec<LinkPlan>,
    /// `[shared_fs]`: the directory every OSlet mounts through virtio-fs.
    #[serde(default)]
    pub shared_fs: Option<SharedFsPlan>,
}

/// The shared filesystem: one host directory served by virtiofsd to every OSlet.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SharedFsPlan {
    /// The shared directory; absolute, checked to be a directory.
    pub path: PathBuf,
    /// The virtio-fs tag guests mount (1..=36 bytes of `[A-Za-z0-9._-]`).
    pub tag: String,
    /// A running vhost-user-fs backend's socket to connect to instead of starting
    /// virtiofsd, as written (absolute): `{name}` in it stands for the OSlet's name
    /// (see [`SharedFsPlan::socket_for`]).
    pub socket: Option<PathBuf>,
    /// virtiofsd's `--cache` mode.
    pub cache: FsCache,
}

/// virtiofsd's cache mode (`--cache=`).
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsCache {
    /// No guest caching: OSlets writing the same files stay coherent (the default).
    #[default]
    Never,
    /// Cache with timeouts: faster, not coherent across OSlets.
    Auto,
    /// Cache forever: fastest, not coherent across OSlets.
    Always,
}

/// What `{name}` in `[shared_fs] socket` stands for.
pub const SOCKET_NAME_PLACEHOLDER: &str = "{name}";

impl SharedFsPlan {
    /// The backend socket of OSlet `name` (`{name}` in `socket` replaced), or None
    /// when the VMM starts its own virtiofsd.
    pub fn socket_for(&self, name: &str) -> Option<PathBuf> {
        use std::os::unix::ffi::{OsStrExt, OsStringExt};
        let s = self.socket.as_ref()?.as_os_str().as_bytes();
        let pat = SOCKET_NAME_PLACEHOLDER.as_bytes();
        let mut out = Vec::with_capacity(s.len() + name.len());
        let mut i = 0;
        while i < s.len() {
            if s[i..].starts_with(pat) {
                out.extend_from_slice(name.as_bytes());
                i += pat.len();
            } else {
                out.push(s[i]);
                i += 1;
            }
        }
        Some(PathBuf::from(std::ffi::OsString::from_vec(out)))
    }
}

impl FsCache {
    /// The word virtiofsd takes.
    pub fn as_str(self) -> &'static str {
        match self {
            FsCache::Never => "never",
            FsCache::Auto => "auto",
            FsCache::Always => "always",
        }
    }
}

/// One shared-memory link between two OSlets.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LinkPlan {
    /// The OSlet on side A (the first named).
    pub a: String,
    /// The OSlet on side B.
    pub b: String,
    /// Bytes of each direction's ring (a power of two).
    pub ring_bytes: u64,
}

impl Partition {
    /// The links `name` takes part in, with their index in [`Partition::links`].
    pub fn links_of<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (usize, &'a LinkPlan)> + 'a {
        self.links
            .iter()
            .enumerate()
            .filter(move |(_, l)| l.a == name || l.b == name)
    }
}

/// One OSlet, fully decided.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct OsletPlan {
    /// `[a-z0-9][a-z0-9-]{0,31}`, unique in the partition.
    pub name: String,
    /// One host CPU per vCPU: vCPU i is pinned to `host_cpus[i]`.
    pub host_cpus: Vec<usize>,
    /// Guest RAM in bytes: at least 2 MiB, a multiple of 4 KiB and of the huge page size.
    pub memory_bytes: u64,
    /// The host NUMA node the guest RAM is bound to.
    pub numa_node: Option<u32>,
    /// Huge page size in bytes (2 MiB or 1 GiB) backing guest RAM, when asked for.
    pub hugepages: Option<u64>,
    /// What to boot.
    pub kernel: Kernel,
    /// Initial ramdisk; absolute, checked to be a readable file.
    pub initrd: Option<PathBuf>,
    /// The command line as written; the VMM adds its own defaults.
    pub cmdline: Option<String>,
    /// Where the serial console goes.
    pub console: Console,
    /// `log_dir/<name>.log`.
    pub log_file: PathBuf,
    /// What the supervisor does when this OSlet's guest or VMM fails.
    #[serde(default)]
    pub restart: Restart,
}

/// An OSlet's restart policy.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    /// Never restart (the default).
    #[default]
    Never,
    /// Restart after a failure (crash, non-zero status, VMM death), at most `limit` times.
    OnFailure {
        /// Restarts allowed.
        limit: u32,
    },
}

impl OsletPlan {
    /// The number of vCPUs (one per host CPU in `host_cpus`).
    pub fn vcpus(&self) -> usize {
        self.host_cpus.len()
    }
}

/// The guest kernel.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Kernel {
    /// The in-repo test kernel embedded in the `oslet` binary (`builtin:testkernel`).
    TestKernel,
    /// A kernel image on disk, checked to be readable and of a bootable format.
    Image {
        /// Absolute path.
        path: PathBuf,
        /// What its header says it is.
        format: KernelFormat,
    },
}

/// The format of a kernel image, from its header.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// A bzImage (x86 boot protocol: 0xAA55 at 0x1FE, "HdrS" at 0x202).
    BzImage,
    /// An ELF64 x86-64 vmlinux.
    Elf,
}

/// Where an OSlet's serial console goes.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Console {
    /// To the terminal, each line prefixed with the OSlet's name, and to the log file.
    #[default]
    Terminal,
    /// To the log file only.
    Log,
    /// Nowhere.
    Off,
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kernel::TestKernel => f.write_str(BUILTIN_TESTKERNEL),
            Kernel::Image { path, format } => {
                let kind = match format {
                    KernelFormat::BzImage => "bzImage",
                    KernelFormat::Elf => "ELF",
                };
                write!(f, "{} ({kind})", path.display())
            }
        }
    }
}

impl fmt::Display for Console {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Console::Terminal => "terminal",
            Console::Log => "log",
            Console::Off => "off",
        })
    }
}

impl fmt::Display for Partition {
    /// The plan as `oslet check` prints it: a totals line, then one line per OSlet
    /// (columns aligned), continuation lines for initrd and cmdline, and the log dir.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vcpus: usize = self.oslets.iter().map(OsletPlan::vcpus).sum();
        let memory: u64 = self.oslets.iter().map(|o| o.memory_bytes).sum();
        write!(
            f,
            "{}: {}, {}, {}",
            self.source.display(),
            plural(self.oslets.len(), "OSlet"),
            plural(vcpus, "vCPU"),
            format_size(memory)
        )?;
        if self.oversubscribe {
            f.write_str(", oversubscribed")?;
        }
        writeln!(f)?;
        let rows: Vec<[String; 7]> = self
            .oslets
            .iter()
            .map(|o| {
                [
                    o.name.clone(),
                    format!(
                        "cpus {} ({})",
                        format_cpu_list(&o.host_cpus),
                        plural(o.vcpus(), "vCPU")
                    ),
                    format!("memory {}", format_size(o.memory_bytes)),
                    format!("numa {}", o.numa_node.map_or("-".into(), |n| n.to_string())),
                    format!("hugepages {}", o.hugepages.map_or("-", hugepage_name)),
                    format!("console {}", o.console),
                    format!("kernel {}", o.kernel),
                ]
            })
            .collect();
        let mut widths = [0usize; 7];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for (row, oslet) in rows.iter().zip(&self.oslets) {
            let mut line = String::from(" ");
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                line.push_str(if i == 0 { " " } else { "  " });
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}"));
                }
            }
            writeln!(f, "{line}")?;
            let indent = " ".repeat(widths[0] + 4);
            if let Some(initrd) = &oslet.initrd {
                writeln!(f, "{indent}initrd {}", initrd.display())?;
            }
            if let Some(cmdline) = &oslet.cmdline {
                writeln!(f, "{indent}cmdline {cmdline:?}")?;
            }
        }
        if self.housekeeping_cpus.is_empty() {
            writeln!(f, "  housekeeping not pinned (a vCPU runs on every CPU)")?;
        } else {
            writeln!(
                f,
                "  housekeeping cpus {} (supervisor, VMM threads other than vCPUs, virtiofsd)",
                format_cpu_list(&self.housekeeping_cpus)
            )?;
        }
        for l in &self.links {
            writeln!(
                f,
                "  link {} <-> {}  ring {} each way",
                l.a,
                l.b,
                crate::units::format_size(l.ring_bytes)
            )?;
        }
        if let Some(fs) = &self.shared_fs {
            writeln!(
                f,
                "  shared_fs {}  tag {}  cache {}{}",
                fs.path.display(),
                fs.tag,
                fs.cache.as_str(),
                fs.socket
                    .as_ref()
                    .map_or(String::new(), |s| format!("  socket {}", s.display()))
            )?;
        }
        write!(f, "  logs in {}", self.log_dir.display())
    }
}

fn hugepage_name(size: u64) -> &'static str {
    if size == GIB {
        "1G"
    } else {
        "2M"
    }
}
