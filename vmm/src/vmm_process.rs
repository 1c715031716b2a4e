//! One OSlet's VMM process as the supervisor sees it: started with its plan on stdin
//! and its link fds in place, its console relayed line by line with the OSlet's name
//! in front, and its events (first instruction, stats, end) collected.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use oslet_config::{Console, Partition};

use crate::agent::GuestReport;
use crate::console_attach::Attached;
use crate::events::{Event, Outcome, EVENT_FD_ENV};
use crate::kvm_stats::{self, VcpuCounters};
use crate::link::{self, LinkAttach, SharedLink};
use crate::monotonic_ns;
use crate::oslet::VmmPlan;
use crate::supervisor::{SupervisorError, UpOptions, Wake};

#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) outcome: Option<Outcome>,
    pub(crate) first_instruction_ms: Option<f64>,
    pub(crate) ready_ms: Option<f64>,
    pub(crate) vmm_rss_kib: Option<u64>,
    pub(crate) console: Vec<String>,
    /// Last (exits, CLOCK_MONOTONIC ns) reported, and the rate between the last two.
    pub(crate) exits: Option<(u64, u64)>,
    pub(crate) exits_per_s: Option<f64>,
    /// KVM's per-vCPU counters last reported, and what they give over the last second.
    pub(crate) vcpus: Vec<VcpuCounters>,
    pub(crate) vcpu_busy_pct: Vec<f64>,
    pub(crate) kvm_exits_per_s: Option<f64>,
    /// The guest agent's latest report.
    pub(crate) guest: Option<GuestReport>,
    /// When the VMM closed its event pipe: it has ended, or is a moment from it.
    pub(crate) events_closed: Option<std::time::Instant>,
}

impl Shared {
    /// Takes one Stats event: rates over the time since the previous one.
    fn add_stats(&mut self, exits: u64, mono_ns: u64, vcpus: Vec<VcpuCounters>) {
        if let Some((e0, t0)) = self.exits {
            let dt_ns = mono_ns.saturating_sub(t0);
            if dt_ns > 0 {
                let dt = dt_ns as f64 / 1e9;
                self.exits_per_s = Some(exits.saturating_sub(e0) as f64 / dt);
                if vcpus.len() == self.vcpus.len() && !vcpus.is_empty() {
                    self.vcpu_busy_pct = self
                        .vcpus
                        .iter()
                        .zip(&vcpus)
                        .filter_map(|(a, b)| kvm_stats::busy_pct(a, b, dt_ns))
                        .collect();
                    let d: u64 = self
                        .vcpus
                        .iter()
                        .zip(&vcpus)
                        .map(|(a, b)| b.exits.saturating_sub(a.exits))
                        .sum();
                    self.kvm_exits_per_s = Some(d as f64 / dt);
                }
            }
        }
        self.exits = Some((exits, mono_ns));
        self.vcpus = vcpus;
    }
}

pub(crate) struct Running {
    pub(crate) name: String,
    pub(crate) child: Child,
    pub(crate) shared: Arc<Mutex<Shared>>,
    pub(crate) threads: Vec<JoinHandle<()>>,
    pub(crate) status: Option<std::process::ExitStatus>,
    /// Consoles attached with `oslet console`, and the VMM's console input.
    pub(crate) consoles: Arc<Attached>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SupervisorError> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid two-int buffer; pipe2 fills it on success.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if r != 0 {
        return Err(SupervisorError::Pipe(std::io::Error::last_os_error()));
    }
    // SAFETY: both fds were just created by pipe2 and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Resident memory of process `pid` in KiB (VmRSS), if it is alive.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub(crate) fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A console line longer than this is relayed in pieces.
const MAX_RELAY_LINE: usize = 64 * 1024;

/// The fd number the VMM process finds its event pipe at.
const CHILD_EVENT_FD: i32 = 3;

/// An fd to dup2 in a VMM process: (number in the supervisor, number in the VMM process).
type FdMove = (i32, i32);

/// The links of `name`, placed in its guest, with the fd numbers they will have in its
/// VMM process; and the (supervisor fd, VMM-process fd) pairs to dup2 there.
/// `above` is the highest fd the caller holds besides the links'.
fn links_for(
    name: &str,
    links: &[SharedLink],
    above: i32,
) -> Result<(Vec<LinkAttach>, Vec<FdMove>), SupervisorError> {
    let top = links
        .iter()
        .map(|l| {
            let (w, r, i) = l.fds_for(name);
            w.max(r).max(i)
        })
        .max()
        .unwrap_or(0);
    // Numbers above every fd the supervisor holds, so no dup2 clobbers a source.
    let mut next = top.max(above).max(CHILD_EVENT_FD) + 1;
    let mut attach = Vec::new();
    let mut dups = Vec::new();
    for l in links {
        let Some((side, peer)) = l.side_of(name) else {
            continue;
        };
        let (w, r, i) = l.fds_for(name);
        let (wd, rd, id) = (next, next + 1, next + 2);
        next += 3;
        dups.extend([(w, wd), (r, rd), (i, id)]);
        attach.push(LinkAttach {
            peer: peer.to_string(),
            side: side.to_string(),
            ring_bytes: l.ring_bytes,
            window_fd: wd,
            ring_fd: rd,
            irq_fd: id,
            window_gpa: 0,
            doorbell_gpa: 0,
            gsi: 0,
        });
    }
    link::place(name, &mut attach).map_err(|e| SupervisorError::Link(name.to_string(), e))?;
    Ok((attach, dups))
}

pub(crate) fn spawn_one(
    partition: &Partition,
    links: &[SharedLink],
    idx: usize,
    width: usize,
    opts: &UpOptions,
    t0: u64,
    wake: &mpsc::Sender<Wake>,
) -> Result<Running, SupervisorError> {
    let plan = &partition.oslets[idx];
    let name = plan.name.clone();
    let (ev_read, ev_write) = pipe()?;
    let ev_write_raw = ev_write.as_raw_fd();
    let (attach, dups) = links_for(&name, links, ev_write_raw.max(ev_read.as_raw_fd()))?;
    let vmm_plan = VmmPlan {
        oslet: plan.clone(),
        links: attach,
        shared_fs: partition.shared_fs.clone(),
    };
    let mut cmd = Command::new(&opts.exe);
    cmd.arg("__vmm")
        .arg("--config")
        .arg(&partition.source)
        .arg("--name")
        .arg(&name)
        .env(EVENT_FD_ENV, CHILD_EVENT_FD.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // The VMM process starts on the housekeeping CPUs: its main and helper threads and
    // its virtiofsd stay there, and each vCPU thread pins itself to its own CPU.
    let housekeeping = (!partition.housekeeping_cpus.is_empty())
        .then(|| crate::affinity::cpu_set(&partition.housekeeping_cpus));
    // SAFETY: the closure runs in the forked child before exec and only makes system
    // calls (dup2, sched_setaffinity) on data prepared before the fork; every source
    // fd stays open in the parent until after spawn returns (the event pipe's write
    // end and the links' fds, held by `links`).
    unsafe {
        // Link fds first: their targets lie above every source, so nothing is
        // clobbered; then the event pipe onto fd 3 (which may have been a link source).
        cmd.pre_exec(move || {
            if let Some(set) = &housekeeping {
                crate::affinity::pin_current(set)?;
            }
            for &(from, to) in &dups {
                if libc::dup2(from, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::dup2(ev_write_raw, CHILD_EVENT_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| SupervisorError::Spawn(name.clone(), e))?;
    drop(ev_write);
    // The VMM process gets its plan, as validated here, as JSON on stdin: it must not
    // validate the file again against a host whose free resources (huge pages) the
    // other OSlets are taking meanwhile.
    // Its first line: the rest of stdin is console input (`oslet console`).
    let mut stdin = child.stdin.take();
    if let Some(stdin) = stdin.as_mut() {
        let sent = serde_json::to_vec(&vmm_plan)
            .map_err(std::io::Error::other)
            .and_then(|mut json| {
                json.push(b'\n');
                stdin.write_all(&json)
            });
        if let Err(e) = sent {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SupervisorError::Spawn(name, e));
        }
    }
    let consoles = Arc::new(Attached::new(stdin));
    let pid = child.id();
    let shared = Arc::new(Mutex::new(Shared::default()));
    let mut threads = Vec::new();

    if let Some(stdout) = child.stdout.take() {
        let shared = Arc::clone(&shared);
        let consoles = Arc::clone(&consoles);
        let relay = plan.console == Console::Terminal && !opts.quiet;
        let keep = opts.quiet;
        let marker = opts.ready_marker.clone();
        let label = format!("{name:<width$}");
        threads.push(std::thread::spawn(move || {
            let mut stdout = stdout;
            let mut chunk = [0u8; 4096];
            let mut pending: Vec<u8> = Vec::new();
            let mut eof = false;
            while !eof {
                // Attached consoles get the bytes as they come (a prompt has no newline);
                // the relay, the ready marker and `quiet` capture take whole lines.
                match stdout.read(&mut chunk) {
                    Ok(0) | Err(_) => eof = true,
                    Ok(n) => {
                        consoles.broadcast(&chunk[..n]);
                        pending.extend_from_slice(&chunk[..n]);
                    }
                }
                let mut lines = Vec::new();
                while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                    lines.push(pending.drain(..=pos).collect::<Vec<u8>>());
                }
                if (eof && !pending.is_empty()) || pending.len() >= MAX_RELAY_LINE {
                    lines.push(std::mem::take(&mut pending));
                }
                for buf in lines {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']);
                    if let Some(m) = &marker {
                        if line.contains(m.as_str()) {
                            let mut s = lock(&shared);
                            if s.ready_ms.is_none() {
                                s.ready_ms = Some((monotonic_ns().saturating_sub(t0)) as f64 / 1e6);
                                s.vmm_rss_kib = rss_kib(pid);
                            }
                        }
                    }
                    if relay {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "{label} | {line}");
                    }
                    if keep {
                        lock(&shared).console.push(line.to_string());
                    }
                }
            }
            consoles.close_all();
        }));
    }
    {
        let shared = Arc::clone(&shared);
        // SAFETY: ev_read is an OwnedFd we own; converting it into a File transfers ownership.
        let file = std::fs::File::from(ev_read);
        let wake = wake.clone();
        threads.push(std::thread::spawn(move || {
            for line in BufReader::new(file).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Event>(&line) {
                    Ok(Event::FirstInstruction { mono_ns }) => {
                        lock(&shared).first_instruction_ms =
                            Some(mono_ns.saturating_sub(t0) as f64 / 1e6);
                    }
                    Ok(Event::Ended { outcome }) => lock(&shared).outcome = Some(outcome),
                    Ok(Event::Started { .. }) => {}
                    Ok(Event::Stats {
                        exits,
                        mono_ns,
                        vcpus,
                        guest,
                    }) => {
                        let mut s = lock(&shared);
                        s.add_stats(exits, mono_ns, vcpus);
                        s.guest = guest;
                    }
                    Err(_) => crate::log::warn(format_args!(
                        "unreadable event from a VMM process: {line}"
                    )),
                }
            }
            // The pipe closed: the VMM process is gone, reap it now.
            lock(&shared).events_closed = Some(std::time::Instant::now());
            let _ = wake.send(Wake::VmmEnded);
        }));
    }
    Ok(Running {
        name,
        child,
        shared,
        threads,
        status: None,
        consoles,
    })
}

pub(crate) fn describe_status(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown status".to_string(),
    }
}
