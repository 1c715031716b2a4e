//! Validation and planning: raw structs plus the host's topology become a [`Partition`],
//! with every host CPU, byte and file decided and checked.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::partition::{Console, Kernel, KernelFormat, OsletPlan, Partition, Restart};
use crate::raw::{did_you_mean, RawCpus, RawFile, RawHugepages, RawOslet, RawSize};
use crate::topology::HostTopology;
use crate::units::{
    cpus_phrase, flat, format_cpu_list, format_size, format_size_approx, parse_cpu_list,
    parse_size, plural, Problem, GIB, KIB, MIB,
};

/// The most vCPUs one OSlet may have (the xAPIC id space, less the broadcast id).
pub(crate) const MAX_VCPUS: usize = 254;
/// The smallest guest memory the VMM will build.
pub(crate) const MIN_MEMORY: u64 = 2 * MIB;
/// The longest kernel command line the x86 boot protocol takes (2048 with the NUL).
pub(crate) const MAX_CMDLINE: usize = 2047;
/// `kernel = "builtin:testkernel"`.
pub(crate) const BUILTIN_TESTKERNEL: &str = "builtin:testkernel";
/// Restarts allowed by `restart = "on-failure"` without a `restart_limit`.
pub(crate) const DEFAULT_RESTART_LIMIT: i64 = 3;
/// The most CPUs `[host] housekeeping_cpus` may list.
pub(crate) const MAX_HOUSEKEEPING_CPUS: usize = 4096;
/// `log_dir` when `[host]` does not set one.
pub(crate) const DEFAULT_LOG_DIR: &str = "oslet-logs";

/// Who is talking: the file's name for messages and its directory for relative paths.
struct Ctx<'a> {
    file: String,
    base_dir: &'a Path,
}

impl Ctx<'_> {
    fn invalid(&self, field: &str, p: Problem) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.clone(),
            field: flat(field.into()),
            problem: flat(p.problem),
            fix: flat(p.fix),
        }
    }
    fn host(&self, field: &str, p: Problem) -> ConfigError {
        ConfigError::Host {
            file: self.file.clone(),
            field: flat(field.into()),
            problem: flat(p.problem),
            fix: flat(p.fix),
        }
    }
    fn conflict(&self, field: &str, p: Problem) -> ConfigError {
        ConfigError::Conflict {
            file: self.file.clone(),
            field: flat(field.into()),
            problem: flat(p.problem),
            fix: flat(p.fix),
        }
    }
    fn file_error(&self, field: &str, p: Problem) -> ConfigError {
        ConfigError::File {
            file: self.file.clone(),
            field: flat(field.into()),
            problem: flat(p.problem),
            fix: flat(p.fix),
        }
    }
    fn resolve(&self, path: &str) -> PathBuf {
        let joined = self.base_dir.join(path);
        std::path::absolute(&joined).unwrap_or(joined)
    }
}

/// How an OSlet asks for CPUs.
#[derive(Debug)]
enum CpuSpec {
    Count(usize),
    List(Vec<usize>),
}

/// One OSlet with every field checked on its own; CPUs not yet placed.
struct Checked {
    path: String,
    name: String,
    cpus: CpuSpec,
    memory_bytes: u64,
    numa_node: Option<u32>,
    hugepages: Option<u64>,
    kernel: Kernel,
    initrd: Option<PathBuf>,
    cmdline: Option<String>,
    console: Console,
    restart: Restart,
}

/// Validates `raw` against `host` and places every OSlet.
/// `base_dir` is absolute: the config file's directory.
pub(crate) fn plan(
    raw: RawFile,
    source: &Path,
    base_dir: &Path,
    host: &HostTopology,
) -> Result<Partition, ConfigError> {
    let ctx = Ctx {
        file: flat(source.display().to_string()),
        base_dir,
    };
    if raw.oslet.is_empty() {
        return Err(ConfigError::NoOslets {
            file: ctx.file.clone(),
            problem: "no [[oslet]] table".into(),
            fix: format!(
                "describe at least one OSlet: [[oslet]] name = \"micro\", cpus = 1, \
                 memory = \"4MiB\", kernel = \"{BUILTIN_TESTKERNEL}\""
            ),
        });
    }
    let raw_host = raw.host.unwrap_or_default();
    let oversubscribe = raw_host.oversubscribe;
    let log_dir_text = raw_host.log_dir.as_deref().unwrap_or(DEFAULT_LOG_DIR);
    if log_dir_text.is_empty() {
        return Err(ctx.invalid(
            "host.log_dir",
            Problem::new(
                "the log directory is empty",
                format!("give a directory, e.g. log_dir = \"{DEFAULT_LOG_DIR}\", or leave it out"),
            ),
        ));
    }
    let log_dir = ctx.resolve(log_dir_text);

    check_names(&ctx, &raw.oslet)?;
    let names: Vec<String> = raw.oslet.iter().map(|o| o.name.clone()).collect();
    let links = crate::links::plan_links(&ctx.file, raw.links, raw.link, &names)?;
    let shared_fs =
        crate::shared_fs::plan_shared_fs(&ctx.file, raw.shared_fs, &names, |p| ctx.resolve(p))?;
    let checked = raw
        .oslet
        .into_iter()
        .map(|o| check_oslet(&ctx, o, host, oversubscribe))
        .collect::<Result<Vec<_>, _>>()?;
    let placed = place_cpus(&ctx, &checked, host, oversubscribe)?;
    let housekeeping_cpus = plan_housekeeping(
        &ctx,
        raw_host.housekeeping_cpus.as_ref(),
        &checked,
        &placed,
        host,
        oversubscribe,
    )?;
    check_memory(&ctx, &checked, host)?;
    check_hugepages(&ctx, &checked, host)?;

    let oslets = checked
        .into_iter()
        .zip(placed)
        .map(|(c, host_cpus)| OsletPlan {
            log_file: log_dir.join(format!("{}.log", c.name)),
            name: c.name,
            host_cpus,
            memory_bytes: c.memory_bytes,
            numa_node: c.numa_node,
            hugepages: c.hugepages,
            kernel: c.kernel,
            initrd: c.initrd,
            cmdline: c.cmdline,
            console: c.console,
            restart: c.restart,
        })
        .collect();
    Ok(Partition {
        source: source.to_path_buf(),
        oversubscribe,
        log_dir,
        housekeeping_cpus,
        oslets,
        links,
        shared_fs,
    })
}

/// `[host] housekeeping_cpus`, checked against the host and the placed vCPUs; or,
/// when not set, the host CPUs no vCPU is placed on (none left: empty, not pinned).
fn plan_housekeeping(
    ctx: &Ctx,
    raw: Option<&RawCpus>,
    checked: &[Checked],
    placed: &[Vec<usize>],
    host: &HostTopology,
    oversubscribe: bool,
) -> Result<Vec<usize>, ConfigError> {
    const FIELD: &str = "host.housekeeping_cpus";
    let used: BTreeSet<usize> = placed.iter().flatten().copied().collect();
    let free: Vec<usize> = host
        .cpus
        .iter()
        .copied()
        .filter(|c| !used.contains(c))
        .collect();
    let mut list = match raw {
        None => return Ok(free),
        Some(RawCpus::Count(n)) => {
            return Err(ctx.invalid(
                FIELD,
                Problem::new(
                    format!("{n} is a count; housekeeping needs a set of CPUs"),
                    "list them, e.g. housekeeping_cpus = \"0-1\", or leave it out for the \
                     CPUs no OSlet uses",
                ),
            ))
        }
        Some(RawCpus::List(text)) => {
            parse_cpu_list(text, MAX_HOUSEKEEPING_CPUS).map_err(|p| ctx.invalid(FIELD, p))?
        }
        Some(RawCpus::Array(ids)) if ids.is_empty() => {
            return Err(ctx.invalid(
                FIELD,
                Problem::new(
                    "the CPU array is empty",
                    "list at least one CPU, or leave it out for the CPUs no OSlet uses",
                ),
            ))
        }
        Some(RawCpus::Array(ids)) => cpu_ids(ids).map_err(|p| ctx.invalid(FIELD, p))?,
    };
    list.sort_unstable();
    list.dedup();
    let missing: Vec<usize> = list
        .iter()
        .copied()
        .filter(|c| !host.cpus.contains(c))
        .collect();
    if !missing.is_empty() {
        return Err(ctx.host(
            FIELD,
            Problem::new(
                format!(
                    "{} {} not among this host's usable CPUs ({})",
                    cpus_phrase(&missing),
                    if missing.len() == 1 { "is" } else { "are" },
                    format_cpu_list(&host.cpus)
                ),
                "list CPUs this host has",
            ),
        ));
    }
    if !oversubscribe {
        for c in &list {
            let owner = placed
                .iter()
                .zip(checked)
                .find_map(|(cpus, o)| cpus.iter().position(|x| x == c).map(|i| (o, i)));
            if let Some((o, i)) = owner {
                let free = if free.is_empty() {
                    "none is free".to_string()
                } else {
                    format!("free: {}", format_cpu_list(&free))
                };
                return Err(ctx.conflict(
                    FIELD,
                    Problem::new(
                        format!("CPU {c} runs vCPU {i} of OSlet {}", o.name),
                        format!(
                            "give CPUs no vCPU runs on ({free}), or set [host] \
                             oversubscribe = true"
                        ),
                    ),
                ));
            }
        }
    }
    Ok(list)
}

/// The CPU ids of a TOML array (`cpus = [0, 1]`).
fn cpu_ids(ids: &[i64]) -> Result<Vec<usize>, Problem> {
    ids.iter()
        .map(|&id| {
            usize::try_from(id)
                .map_err(|_| Problem::new(format!("{id} is not a CPU id"), "CPU ids are 0 or more"))
        })
        .collect()
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && b.len() <= 32 && ok(&b[0]) && b.iter().all(|c| ok(c) || *c == b'-')
}

fn check_names(ctx: &Ctx, oslets: &[RawOslet]) -> Result<(), ConfigError> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, o) in oslets.iter().enumerate() {
        let field = format!("oslet[{i}].name");
        if !valid_name(&o.name) {
            let lower = o.name.to_ascii_lowercase();
            let hint = if lower != o.name && valid_name(&lower) {
                format!("try {lower:?}; names are")
            } else {
                "use".to_string()
            };
            return Err(ctx.invalid(
                &field,
                Problem::new(
                    format!("{:?} is not a valid OSlet name", o.name),
                    format!(
                        "{hint} 1 to 32 lowercase letters, digits and '-', starting with a \
                         letter or digit"
                    ),
                ),
            ));
        }
        if let Some(first) = seen.insert(&o.name, i) {
            return Err(ctx.conflict(
                &field,
                Problem::new(
                    format!("{:?} is already the name of oslet[{first}]", o.name),
                    "give each OSlet its own name",
                ),
            ));
        }
    }
    Ok(())
}

fn check_oslet(
    ctx: &Ctx,
    o: RawOslet,
    host: &HostTopology,
    oversubscribe: bool,
) -> Result<Checked, ConfigError> {
    let path = format!("oslet {:?}", o.name);
    let field = |f: &str| format!("{path}.{f}");

    let cpus = check_cpus(&o.cpus, oversubscribe).map_err(|p| ctx.invalid(&field("cpus"), p))?;
    let numa_node = match o.numa_node {
        None => None,
        Some(id) => Some(check_numa_node(ctx, &field("numa_node"), id, host)?),
    };
    let hugepages = match &o.hugepages {
        None | Some(RawHugepages::Enabled(false)) => None,
        Some(RawHugepages::Enabled(true)) => Some(2 * MIB),
        Some(RawHugepages::Size(s)) => match parse_size(s) {
            Ok(size) if size == 2 * MIB || size == GIB => Some(size),
            _ => {
                return Err(ctx.invalid(
                    &field("hugepages"),
                    Problem::new(
                        format!("{s:?} is not a huge page size"),
                        "use \"2M\" or \"1G\" (true means \"2M\", false means none)",
                    ),
                ))
            }
        },
    };
    let memory_bytes =
        check_memory_size(&o.memory, hugepages).map_err(|p| ctx.invalid(&field("memory"), p))?;
    let kernel = check_kernel(ctx, &field("kernel"), &o.kernel)?;
    let initrd = match &o.initrd {
        None => None,
        Some(p) => Some(check_initrd(ctx, &field("initrd"), p)?),
    };
    if let Some(cmdline) = &o.cmdline {
        if cmdline.len() > MAX_CMDLINE {
            return Err(ctx.invalid(
                &field("cmdline"),
                Problem::new(
                    format!(
                        "the command line is {} bytes, more than the {MAX_CMDLINE} the boot \
                         protocol allows",
                        cmdline.len()
                    ),
                    "shorten it",
                ),
            ));
        }
        if cmdline.contains('\0') {
            return Err(ctx.invalid(
                &field("cmdline"),
                Problem::new("the command line contains a NUL byte", "remove the \\u0000"),
            ));
        }
    }
    let console = match o.console.as_deref() {
        None | Some("terminal") => Console::Terminal,
        Some("log") => Console::Log,
        Some("off") => Console::Off,
        Some(other) => {
            const MODES: &[&str] = &["terminal", "log", "off"];
            let fix = match did_you_mean(other, MODES) {
                Some(m) => {
                    format!("did you mean \"{m}\"? the modes are \"terminal\", \"log\" and \"off\"")
                }
                None => "use \"terminal\" (the default), \"log\" or \"off\"".to_string(),
            };
            return Err(ctx.invalid(
                &field("console"),
                Problem::new(format!("{other:?} is not a console mode"), fix),
            ));
        }
    };
    let restart = match (o.restart.as_deref(), o.restart_limit) {
        (None | Some("never"), None) => Restart::Never,
        (None | Some("never"), Some(_)) => {
            return Err(ctx.invalid(
                &field("restart_limit"),
                Problem::new(
                    "restart_limit needs restart = \"on-failure\"",
                    "add restart = \"on-failure\", or drop restart_limit",
                ),
            ))
        }
        (Some("on-failure"), limit) => {
            let limit = limit.unwrap_or(DEFAULT_RESTART_LIMIT);
            match u32::try_from(limit) {
                Ok(l) if l >= 1 => Restart::OnFailure { limit: l },
                _ => {
                    return Err(ctx.invalid(
                        &field("restart_limit"),
                        Problem::new(
                            format!("{limit} restarts is not a positive count"),
                            "use e.g. restart_limit = 3",
                        ),
                    ))
                }
            }
        }
        (Some(other), _) => {
            return Err(ctx.invalid(
                &field("restart"),
                Problem::new(
                    format!("{other:?} is not a restart policy"),
                    "use \"never\" (the default) or \"on-failure\"",
                ),
            ))
        }
    };
    Ok(Checked {
        path,
        name: o.name,
        cpus,
        memory_bytes,
        numa_node,
        hugepages,
        kernel,
        initrd,
        cmdline: o.cmdline,
        console,
        restart,
    })
}

fn check_cpus(raw: &RawCpus, oversubscribe: bool) -> Result<CpuSpec, Problem> {
    let too_many = |n: String| {
        Problem::new(
            format!("{n} vCPUs is more than the {MAX_VCPUS} an OSlet can have"),
            format!("give at most {MAX_VCPUS}, or split it into several OSlets"),
        )
    };
    let list = match raw {
        RawCpus::Count(n) if *n < 1 => {
            return Err(Problem::new(
                format!("{n} vCPUs: an OSlet needs at least one"),
                "give a count from 1 to 254, or a CPU list like \"0-3\"",
            ))
        }
        RawCpus::Count(n) => {
            return match usize::try_from(*n) {
                Ok(n) if n <= MAX_VCPUS => Ok(CpuSpec::Count(n)),
                _ => Err(too_many(n.to_string())),
            }
        }
        RawCpus::List(text) => parse_cpu_list(text, MAX_VCPUS)?,
        RawCpus::Array(ids) => {
            if ids.is_empty() {
                return Err(Problem::new(
                    "the CPU array is empty",
                    "list at least one CPU, e.g. cpus = [0], or give a count",
                ));
            }
            if ids.len() > MAX_VCPUS {
                return Err(too_many(ids.len().to_string()));
            }
            cpu_ids(ids)?
        }
    };
    if !oversubscribe {
        let mut seen = BTreeSet::new();
        let twice: BTreeSet<usize> = list.iter().copied().filter(|c| !seen.insert(*c)).collect();
        if !twice.is_empty() {
            let twice: Vec<usize> = twice.into_iter().collect();
            let verb = if twice.len() == 1 { "is" } else { "are" };
            return Err(Problem::new(
                format!("{} {verb} listed more than once", cpus_phrase(&twice)),
                "list each CPU once (vCPU i runs on the i-th CPU listed), or set [host] \
                 oversubscribe = true",
            ));
        }
    }
    Ok(CpuSpec::List(list))
}

fn nodes_phrase(host: &HostTopology) -> String {
    let ids: Vec<usize> = host.numa_nodes.iter().map(|n| n.id as usize).collect();
    if ids.len() == 1 {
        format!("node {}", ids[0])
    } else {
        format!("nodes {}", format_cpu_list(&ids))
    }
}

fn check_numa_node(
    ctx: &Ctx,
    field: &str,
    id: i64,
    host: &HostTopology,
) -> Result<u32, ConfigError> {
    let ids: Vec<usize> = host.numa_nodes.iter().map(|n| n.id as usize).collect();
    let fix = format!(
        "use {} {}, or drop numa_node",
        if ids.len() == 1 { "node" } else { "one of" },
        format_cpu_list(&ids)
    );
    let Ok(node) = u32::try_from(id) else {
        return Err(ctx.invalid(
            field,
            Problem::new(format!("{id} is not a NUMA node id"), fix),
        ));
    };
    if host.node(node).is_none() {
        return Err(ctx.host(
            field,
            Problem::new(
                format!(
                    "NUMA node {node} does not exist on this host (it has {})",
                    nodes_phrase(host)
                ),
                fix,
            ),
        ));
    }
    Ok(node)
}

fn check_memory_size(raw: &RawSize, hugepages: Option<u64>) -> Result<u64, Problem> {
    let bytes = match raw {
        RawSize::Bytes(n) => u64::try_from(*n).map_err(|_| {
            Problem::new(
                format!("{n} is not a size"),
                "give a number of bytes, or a size string like \"256MiB\"",
            )
        })?,
        RawSize::Text(text) => parse_size(text)?,
    };
    if bytes < MIN_MEMORY {
        return Err(Problem::new(
            format!("{} is below the minimum of 2 MiB", format_size(bytes)),
            "give at least \"2MiB\"",
        ));
    }
    let (unit, what) = match hugepages {
        Some(size) => (size, format!("the {} huge page size", format_size(size))),
        None => (4 * KIB, "4 KiB (the page size)".to_string()),
    };
    if bytes % unit != 0 {
        let lower = bytes - bytes % unit;
        let upper = lower.checked_add(unit);
        let fix = match upper {
            Some(upper) if lower >= MIN_MEMORY => {
                format!("use {} or {}", format_size(lower), format_size(upper))
            }
            Some(upper) => format!("use {}", format_size(upper)),
            None => format!("use {}", format_size(lower)),
        };
        return Err(Problem::new(
            format!("{} is not a multiple of {what}", format_size(bytes)),
            fix,
        ));
    }
    Ok(bytes)
}

/// Why a named file cannot be used, in words.
fn io_problem(path: &Path, e: &io::Error) -> String {
    let p = path.display();
    match e.kind() {
        io::ErrorKind::NotFound => format!("{p} does not exist"),
        io::ErrorKind::PermissionDenied => format!("{p} cannot be read (permission denied)"),
        _ => format!("{p} cannot be read ({})", e.kind()),
    }
}

/// Opens a named file and reads up to `n` bytes of it, checking it is a readable
/// regular file.
fn read_head(
    ctx: &Ctx,
    field: &str,
    path: &Path,
    n: u64,
    fix: &str,
) -> Result<Vec<u8>, ConfigError> {
    let fail = |problem: String| ctx.file_error(field, Problem::new(problem, fix));
    let meta = fs::metadata(path).map_err(|e| fail(io_problem(path, &e)))?;
    if meta.is_dir() {
        return Err(fail(format!("{} is a directory", path.display())));
    }
    if !meta.is_file() {
        return Err(fail(format!("{} is not a regular file", path.display())));
    }
    let file = fs::File::open(path).map_err(|e| fail(io_problem(path, &e)))?;
    let mut head = Vec::new();
    file.take(n)
        .read_to_end(&mut head)
        .map_err(|e| fail(io_problem(path, &e)))?;
    Ok(head)
}

fn check_kernel(ctx: &Ctx, field: &str, text: &str) -> Result<Kernel, ConfigError> {
    if text == BUILTIN_TESTKERNEL {
        return Ok(Kernel::TestKernel);
    }
    if text.starts_with("builtin:") {
        return Err(ctx.invalid(
            field,
            Problem::new(
                format!("{text:?} is not a builtin kernel"),
                format!(
                    "the only builtin is \"{BUILTIN_TESTKERNEL}\"; give a path for any other \
                     kernel"
                ),
            ),
        ));
    }
    if text.is_empty() {
        return Err(ctx.invalid(
            field,
            Problem::new(
                "the kernel path is empty",
                format!("give a path to a bzImage or vmlinux, or \"{BUILTIN_TESTKERNEL}\""),
            ),
        ));
    }
    let path = ctx.resolve(text);
    let relative = if Path::new(text).is_relative() {
        " (relative paths start at the config file's directory)"
    } else {
        ""
    };
    let fix = format!("check the path{relative}, or use kernel = \"{BUILTIN_TESTKERNEL}\"");
    let head = read_head(ctx, field, &path, 0x206, &fix)?;
    match kernel_format(&head) {
        Ok(format) => Ok(Kernel::Image { path, format }),
        Err(detail) => Err(ctx.file_error(
            field,
            Problem::new(
                format!(
                    "{} is not a bzImage or an ELF vmlinux{detail}",
                    path.display()
                ),
                format!(
                    "point kernel at a bzImage (arch/x86/boot/bzImage) or an x86-64 \
                     vmlinux, or use \"{BUILTIN_TESTKERNEL}\""
                ),
            ),
        )),
    }
}

/// Recognises a bootable kernel by its header; the error is a detail for the message.
fn kernel_format(head: &[u8]) -> Result<KernelFormat, String> {
    if head.starts_with(b"\x7fELF") {
        let class = head.get(4).copied();
        let machine = head.get(18..20).map(|b| u16::from_le_bytes([b[0], b[1]]));
        return match (class, machine) {
            (Some(2), Some(62)) => Ok(KernelFormat::Elf),
            (Some(1), _) => Err(" (it is a 32-bit ELF)".into()),
            (Some(2), Some(m)) => Err(format!(" (it is an ELF for machine {m}, not x86-64)")),
            _ => Err(" (its ELF header is cut short)".into()),
        };
    }
    let boot_flag = head
        .get(0x1FE..0x200)
        .map(|b| u16::from_le_bytes([b[0], b[1]]));
    if boot_flag == Some(0xAA55) && head.get(0x202..0x206) == Some(b"HdrS".as_slice()) {
        return Ok(KernelFormat::BzImage);
    }
    if head.is_empty() {
        return Err(" (it is empty)".into());
    }
    Err(String::new())
}

fn check_initrd(ctx: &Ctx, field: &str, text: &str) -> Result<PathBuf, ConfigError> {
    if text.is_empty() {
        return Err(ctx.invalid(
            field,
            Problem::new(
                "the initrd path is empty",
                "give a path, or leave initrd out",
            ),
        ));
    }
    let path = ctx.resolve(text);
    let relative = if Path::new(text).is_relative() {
        " (relative paths start at the config file's directory)"
    } else {
        ""
    };
    read_head(
        ctx,
        field,
        &path,
        1,
        &format!("check the path{relative}, or leave initrd out"),
    )?;
    Ok(path)
}

/// Gives every OSlet its host CPUs: explicit lists as written, counts from what is left.
fn place_cpus(
    ctx: &Ctx,
    oslets: &[Checked],
    host: &HostTopology,
    oversubscribe: bool,
) -> Result<Vec<Vec<usize>>, ConfigError> {
    let host_set: BTreeSet<usize> = host.cpus.iter().copied().collect();
    let host_phrase = cpus_phrase(&host.cpus);
    let host_list = format_cpu_list(&host.cpus);

    // Explicit lists: on the host, on their node, not shared.
    for (i, o) in oslets.iter().enumerate() {
        let CpuSpec::List(list) = &o.cpus else {
            continue;
        };
        let field = format!("{}.cpus", o.path);
        let missing: BTreeSet<usize> = list
            .iter()
            .copied()
            .filter(|c| !host_set.contains(c))
            .collect();
        if !missing.is_empty() {
            let missing: Vec<usize> = missing.into_iter().collect();
            let verb = if missing.len() == 1 { "does" } else { "do" };
            return Err(ctx.host(
                &field,
                Problem::new(
                    format!(
                        "{} {verb} not exist on this host (it has {host_phrase})",
                        cpus_phrase(&missing)
                    ),
                    format!("use CPUs from {host_list} or give a count"),
                ),
            ));
        }
        if oversubscribe {
            continue;
        }
        if let Some(node) = o.numa_node.and_then(|id| host.node(id)) {
            let off: Vec<usize> = list
                .iter()
                .copied()
                .filter(|c| node.cpus.binary_search(c).is_err())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if !off.is_empty() {
                let verb = if off.len() == 1 { "is" } else { "are" };
                let its = if node.cpus.is_empty() {
                    "it has no CPUs".to_string()
                } else {
                    format!("its CPUs are {}", format_cpu_list(&node.cpus))
                };
                return Err(ctx.host(
                    &field,
                    Problem::new(
                        format!(
                            "{} {verb} not on NUMA node {} ({its})",
                            cpus_phrase(&off),
                            node.id
                        ),
                        format!("use CPUs of node {}, or drop numa_node", node.id),
                    ),
                ));
            }
        }
        let mine: BTreeSet<usize> = list.iter().copied().collect();
        for other in &oslets[..i] {
            let CpuSpec::List(theirs) = &other.cpus else {
                continue;
            };
            let shared: Vec<usize> = theirs
                .iter()
                .copied()
                .filter(|c| mine.contains(c))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if !shared.is_empty() {
                let verb = if shared.len() == 1 { "is" } else { "are" };
                return Err(ctx.conflict(
                    &field,
                    Problem::new(
                        format!(
                            "{} {verb} also used by {}",
                            cpus_phrase(&shared),
                            other.path
                        ),
                        "give each OSlet its own CPUs, or set [host] oversubscribe = true",
                    ),
                ));
            }
        }
    }

    let total_asked: usize = oslets
        .iter()
        .map(|o| match &o.cpus {
            CpuSpec::Count(n) => *n,
            CpuSpec::List(l) => l.len(),
        })
        .sum();
    let mut used: BTreeSet<usize> = oslets
        .iter()
        .filter_map(|o| match &o.cpus {
            CpuSpec::List(l) => Some(l.iter().copied()),
            CpuSpec::Count(_) => None,
        })
        .flatten()
        .collect();
    let mut next = 0usize; // the k-th counted vCPU overall, for oversubscribe
    let mut placed = Vec::with_capacity(oslets.len());
    for o in oslets {
        let n = match &o.cpus {
            CpuSpec::List(list) => {
                placed.push(list.clone());
                continue;
            }
            CpuSpec::Count(n) => *n,
        };
        let field = format!("{}.cpus", o.path);
        let node = o.numa_node.and_then(|id| host.node(id));
        let pool: &[usize] = node.map_or(&host.cpus, |n| &n.cpus);
        if pool.is_empty() {
            let id = node.map_or(0, |n| n.id);
            return Err(ctx.host(
                &field,
                Problem::new(
                    format!("NUMA node {id} has no CPUs to take {n} from"),
                    "drop numa_node, or bind to a node that has CPUs",
                ),
            ));
        }
        if oversubscribe {
            let cpus = (0..n).map(|i| pool[(next + i) % pool.len()]).collect();
            next += n;
            placed.push(cpus);
            continue;
        }
        let free: Vec<usize> = pool.iter().copied().filter(|c| !used.contains(c)).collect();
        if free.len() < n {
            let free_phrase = match free.len() {
                0 => "none are free".to_string(),
                k => format!(
                    "only {k} {} free ({})",
                    if k == 1 { "is" } else { "are" },
                    format_cpu_list(&free)
                ),
            };
            let problem = match node {
                Some(node) => format!(
                    "asks for {} on NUMA node {} but {free_phrase} of its {}",
                    plural(n, "CPU"),
                    node.id,
                    plural(node.cpus.len(), "CPU")
                ),
                None => format!(
                    "asks for {} but {free_phrase}: the OSlets ask for {} in all and the host \
                     has {}",
                    plural(n, "CPU"),
                    plural(total_asked, "CPU"),
                    host.cpus.len()
                ),
            };
            let fix = if node.is_some() {
                "give fewer CPUs, use another node, or set [host] oversubscribe = true"
            } else {
                "give fewer CPUs, or set [host] oversubscribe = true"
            };
            return Err(ctx.host(&field, Problem::new(problem, fix)));
        }
        let cpus: Vec<usize> = free[..n].to_vec();
        used.extend(&cpus);
        placed.push(cpus);
    }
    Ok(placed)
}

/// The OSlets' memory must fit in the host's, and in each node's for bound OSlets.
fn check_memory(ctx: &Ctx, oslets: &[Checked], host: &HostTopology) -> Result<(), ConfigError> {
    let total: u128 = oslets.iter().map(|o| u128::from(o.memory_bytes)).sum();
    let mut running: u128 = 0;
    for o in oslets {
        running += u128::from(o.memory_bytes);
        if running > u128::from(host.memory_bytes) {
            let asked = if oslets.len() == 1 || o.memory_bytes > host.memory_bytes {
                format!("asks for {}", format_size(o.memory_bytes))
            } else {
                format!("the OSlets ask for {} in all", format_size_u128(total))
            };
            return Err(ctx.host(
                &format!("{}.memory", o.path),
                Problem::new(
                    format!(
                        "{asked} but the host has {} (MemTotal)",
                        format_size_approx(host.memory_bytes)
                    ),
                    "give the OSlets less memory",
                ),
            ));
        }
    }
    for node in &host.numa_nodes {
        let bound: Vec<&Checked> = oslets
            .iter()
            .filter(|o| o.numa_node == Some(node.id))
            .collect();
        let total: u128 = bound.iter().map(|o| u128::from(o.memory_bytes)).sum();
        let mut running: u128 = 0;
        for o in &bound {
            running += u128::from(o.memory_bytes);
            if running > u128::from(node.memory_bytes) {
                let asked = if bound.len() == 1 || o.memory_bytes > node.memory_bytes {
                    format!("asks for {}", format_size(o.memory_bytes))
                } else {
                    format!(
                        "the OSlets on NUMA node {} ask for {} in all",
                        node.id,
                        format_size_u128(total)
                    )
                };
                return Err(ctx.host(
                    &format!("{}.memory", o.path),
                    Problem::new(
                        format!(
                            "{asked} but node {} has {}",
                            node.id,
                            format_size_approx(node.memory_bytes)
                        ),
                        "give them less memory, or bind some to another node",
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn format_size_u128(bytes: u128) -> String {
    u64::try_from(bytes).map_or_else(|_| "more than 16 EiB".to_string(), format_size)
}

/// Each huge page size used needs a host pool with enough free pages for all OSlets.
fn check_hugepages(ctx: &Ctx, oslets: &[Checked], host: &HostTopology) -> Result<(), ConfigError> {
    let mut needed: BTreeMap<u64, u64> = BTreeMap::new();
    for o in oslets {
        if let Some(size) = o.hugepages {
            let n = needed.entry(size).or_default();
            *n = n.saturating_add(o.memory_bytes / size);
        }
    }
    let mut running: BTreeMap<u64, u64> = BTreeMap::new();
    for o in oslets {
        let Some(size) = o.hugepages else { continue };
        let field = format!("{}.hugepages", o.path);
        let sysfs = format!("/sys/kernel/mm/hugepages/hugepages-{}kB", size / KIB);
        let Some(pool) = host.pool(size) else {
            let boot = if size == GIB {
                "hugepagesz=1G hugepages=N"
            } else {
                "hugepagesz=2M hugepages=N"
            };
            let other = if size == GIB {
                ", or use hugepages = \"2M\""
            } else {
                ""
            };
            return Err(ctx.host(
                &field,
                Problem::new(
                    format!(
                        "the host has no {} huge page pool ({sysfs})",
                        format_size(size)
                    ),
                    format!("boot the host with {boot}{other}, or drop hugepages"),
                ),
            ));
        };
        let sum = running.entry(size).or_default();
        *sum = sum.saturating_add(o.memory_bytes / size);
        if *sum > pool.free {
            let total = needed.get(&size).copied().unwrap_or(*sum);
            return Err(ctx.host(
                &field,
                Problem::new(
                    format!(
                        "the OSlets need {total} free {} huge pages but the host has {} free",
                        format_size(size),
                        pool.free
                    ),
                    format!(
                        "reserve them with `echo {total} > {sysfs}/nr_hugepages` (more if \
                         other programs hold some), or drop hugepages"
                    ),
                ),
            ));
        }
    }
    Ok(())
}
