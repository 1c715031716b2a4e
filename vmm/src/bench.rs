//! `oslet bench boot`: for each layout, the time from `oslet up` to each OSlet's first
//! guest instruction and to its "ready" line, and the VMM's resident memory per OSlet;
//! side by side with QEMU microvm booting the same test kernel in the same run
//! (QEMU describes the CPUs with ACPI, oslet with its MP table and ACPI; the
//! benchmark refuses a QEMU run that did not bring up every vCPU).

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::cli::{error_chain, load_partition};
use crate::supervisor::{self, UpOptions};
use crate::{monotonic_ns, testkernel};

/// The test kernel's ready line.
pub const READY_MARKER: &str = "oslet-testkernel: ready";

/// Arguments of `oslet bench boot`.
#[derive(clap::Args, Debug)]
pub struct BootArgs {
    /// Partition files to boot (default: the shipped micro, two-oslets, sixty-four-way examples).
    pub files: Vec<PathBuf>,
    /// Write the records as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Boots per layout (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Skip the QEMU comparison.
    #[arg(long)]
    pub no_qemu: bool,
}

/// One line of the benchmark's output.
#[derive(Debug, Clone, Serialize)]
pub struct BootRecord {
    /// Layout name, or `qemu-microvm-<n>vcpu`.
    pub case: String,
    /// OSlets (VMs) in the layout.
    pub oslets: usize,
    /// vCPUs in all.
    pub vcpus: usize,
    /// Median over runs of the time until the last OSlet ran its first instruction.
    pub first_instruction_ms: Option<f64>,
    /// Median over runs of the time until the last OSlet printed its ready line.
    pub ready_ms: Option<f64>,
    /// Median over runs of the mean VMM resident memory per OSlet, KiB.
    pub vmm_rss_kib: Option<u64>,
}

fn median_f(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

fn median_u(mut v: Vec<u64>) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

fn default_files() -> Vec<PathBuf> {
    ["micro", "two-oslets", "sixty-four-way"]
        .iter()
        .map(|n| PathBuf::from(format!("config/examples/{n}.toml")))
        .collect()
}

fn bench_layout(file: &Path, runs: usize) -> Result<BootRecord, String> {
    let partition = load_partition(file)?;
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the oslet executable: {e}"))?;
    let opts = UpOptions {
        exe,
        quiet: true,
        ready_marker: Some(READY_MARKER.to_string()),
        socket: None,
        stay: false,
        socket_optional: false,
    };
    let (mut first, mut ready, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let reports = supervisor::up(&partition, &opts).map_err(|e| error_chain(&e))?;
        if let Some(bad) = reports.iter().find(|r| !r.outcome.success()) {
            return Err(format!(
                "{}: OSlet {} {}",
                file.display(),
                bad.name,
                bad.outcome
            ));
        }
        let all = |f: &dyn Fn(&supervisor::OsletReport) -> Option<f64>| -> Option<f64> {
            reports
                .iter()
                .map(f)
                .collect::<Option<Vec<f64>>>()
                .map(|v| v.into_iter().fold(0.0, f64::max))
        };
        if let Some(v) = all(&|r| r.first_instruction_ms) {
            first.push(v);
        }
        if let Some(v) = all(&|r| r.ready_ms) {
            ready.push(v);
        }
        let kib: Vec<u64> = reports.iter().filter_map(|r| r.vmm_rss_kib).collect();
        if !kib.is_empty() {
            rss.push(kib.iter().sum::<u64>() / kib.len() as u64);
        }
    }
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(BootRecord {
        case: stem,
        oslets: partition.oslets.len(),
        vcpus: partition.oslets.iter().map(|o| o.vcpus()).sum(),
        first_instruction_ms: median_f(first),
        ready_ms: median_f(ready),
        vmm_rss_kib: median_u(rss),
    })
}

/// What one boot measured: first instruction ms, ready ms, resident KiB.
type BootSample = (Option<f64>, Option<f64>, Option<u64>);

/// One QEMU microvm boot of the test kernel.
fn qemu_boot(kernel: &Path, vcpus: usize, dir: &Path) -> Result<BootSample, String> {
    let sock = dir.join(format!("debugcon-{vcpus}.sock"));
    let _ = std::fs::remove_file(&sock);
    let listener =
        UnixListener::bind(&sock).map_err(|e| format!("cannot bind {}: {e}", sock.display()))?;
    let first: Arc<Mutex<Option<u64>>> = Arc::new(Mutex::new(None));
    let first_w = Arc::clone(&first);
    let acceptor = std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut b = [0u8; 1];
            if s.read_exact(&mut b).is_ok() {
                *first_w.lock().unwrap_or_else(|e| e.into_inner()) = Some(monotonic_ns());
            }
            // Drain until QEMU closes the socket.
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
    });
    let t0 = monotonic_ns();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-enable-kvm",
            "-M",
            "microvm",
            "-cpu",
            "host,-arch-capabilities",
        ])
        .args(["-m", "64M", "-smp", &vcpus.to_string()])
        .args([
            "-nographic",
            "-nodefaults",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args([
            "-chardev",
            &format!("socket,id=dbg,path={}", sock.display()),
        ])
        .args(["-device", "isa-debugcon,iobase=0xe9,chardev=dbg"])
        .arg("-kernel")
        .arg(kernel)
        // The guest halts after its ready line instead of powering off, so QEMU is
        // still alive when its memory is read; the bench then ends it.
        .args(["-append", "halt"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;
    let pid = child.id();
    let mut ready = None;
    let mut rss = None;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if ready.is_none() && line.contains(READY_MARKER) {
                let all = format!("{READY_MARKER}, {vcpus}/{vcpus} cpus online");
                if !line.contains(&all) {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("QEMU brought up fewer CPUs than asked: {line}"));
                }
                ready = Some((monotonic_ns() - t0) as f64 / 1e6);
                rss = crate::vmm_process::rss_kib(pid);
                break;
            }
        }
    }
    // The guest halted (or QEMU failed): end QEMU either way.
    let _ = child.kill();
    let status = child.wait().map_err(|e| format!("waiting for qemu: {e}"))?;
    let _ = acceptor.join();
    let first_ms = first
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .map(|ns| (ns.saturating_sub(t0)) as f64 / 1e6);
    if ready.is_none() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        return Err(format!(
            "qemu ({status}) never printed the ready line: {}",
            err.trim()
        ));
    }
    Ok((first_ms, ready, rss))
}

fn bench_qemu(vcpus: usize, runs: usize, dir: &Path) -> Result<BootRecord, String> {
    let kernel = dir.join("oslet-testkernel");
    testkernel::write_to(&kernel).map_err(|e| format!("cannot write the test kernel: {e}"))?;
    let (mut first, mut ready, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let (f, r, m) = qemu_boot(&kernel, vcpus, dir)?;
        first.extend(f);
        ready.extend(r);
        rss.extend(m);
    }
    Ok(BootRecord {
        case: format!("qemu-microvm-{vcpus}vcpu"),
        oslets: 1,
        vcpus,
        first_instruction_ms: median_f(first),
        ready_ms: median_f(ready),
        vmm_rss_kib: median_u(rss),
    })
}

fn fmt_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "-".to_string())
}

/// Host facts recorded with every benchmark.
#[derive(Debug, Serialize)]
pub struct HostFacts {
    /// CPU model name.
    pub cpu_model: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Host kernel release.
    pub kernel: String,
    /// Whether the CPU flags show hardware virtualization (vmx/svm).
    pub hardware_virtualization: bool,
    /// KVM modules loaded.
    pub kvm_modules: Vec<String>,
}

/// Reads the host facts.
pub fn host_facts() -> HostFacts {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let kvm_modules = std::fs::read_to_string("/proc/modules")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|m| m.starts_with("kvm"))
        .map(str::to_string)
        .collect();
    HostFacts {
        cpu_model,
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        kernel,
        hardware_virtualization: hw,
        kvm_modules,
    }
}

/// What KVM says about itself (recorded with the link benchmark).
pub fn kvm_facts() -> serde_json::Value {
    match crate::kvm::open() {
        Ok(kvm) => serde_json::json!({
            "api_version": kvm.get_api_version(),
            "recommended_vcpus": kvm.get_nr_vcpus(),
            "max_vcpus": kvm.get_max_vcpus(),
            "ring0_emulated_note": "on hosts without vmx/svm in /proc/cpuinfo KVM may emulate guest ring 0 (see KVM-NOTES); the test kernel runs link loops in ring 3",
        }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}

/// Runs `oslet bench boot`; returns the exit code.
pub fn boot(args: &BootArgs) -> i32 {
    let files = if args.files.is_empty() {
        default_files()
    } else {
        args.files.clone()
    };
    let runs = args.runs.max(1);
    let mut records = Vec::new();
    for f in &files {
        match bench_layout(f, runs) {
            Ok(r) => records.push(r),
            Err(e) => {
                eprintln!("oslet bench boot: {e}");
                return 1;
            }
        }
    }
    if !args.no_qemu {
        let dir = match tempfile_dir() {
            Ok(d) => d,
            Err(e) => {
                eprintln!("oslet bench boot: {e}");
                return 1;
            }
        };
        let mut sizes: Vec<usize> = Vec::new();
        for f in &files {
            if let Ok(p) = load_partition(f) {
                for o in &p.oslets {
                    if !sizes.contains(&o.vcpus()) {
                        sizes.push(o.vcpus());
                    }
                }
            }
        }
        sizes.sort_unstable();
        for n in sizes {
            match bench_qemu(n, runs, &dir) {
                Ok(r) => records.push(r),
                Err(e) => eprintln!("oslet bench boot: QEMU comparison skipped for {n} vCPUs: {e}"),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!(
        "{:<24} {:>6} {:>6} {:>14} {:>10} {:>12}",
        "case", "oslets", "vcpus", "first_insn_ms", "ready_ms", "rss_kib/vm"
    );
    for r in &records {
        println!(
            "{:<24} {:>6} {:>6} {:>14} {:>10} {:>12}",
            r.case,
            r.oslets,
            r.vcpus,
            fmt_opt(r.first_instruction_ms.map(|v| format!("{v:.1}"))),
            fmt_opt(r.ready_ms.map(|v| format!("{v:.1}"))),
            fmt_opt(r.vmm_rss_kib)
        );
    }
    let micro = records
        .iter()
        .find(|r| r.case == "micro")
        .and_then(|r| r.ready_ms);
    let qemu1 = records
        .iter()
        .find(|r| r.case == "qemu-microvm-1vcpu")
        .and_then(|r| r.ready_ms);
    if let (Some(a), Some(b)) = (micro, qemu1) {
        println!(
            "ready time, micro OSlet vs QEMU microvm (1 vCPU): {:.2}x",
            a / b
        );
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({ "benchmark": "boot", "host": host_facts(), "runs": runs, "records": records });
        let text = match serde_json::to_string_pretty(&doc) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("oslet bench boot: cannot encode JSON: {e}");
                return 1;
            }
        };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("oslet bench boot: cannot write {}: {e}", path.display());
            return 1;
        }
    }
    0
}

fn tempfile_dir() -> Result<PathBuf, String> {
    let d = std::env::temp_dir().join(format!("oslet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    Ok(d)
}
