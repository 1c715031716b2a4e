//! `oslet up`: one VMM process per OSlet (so a crash stays inside its partition),
//! their consoles relayed line by line with the OSlet's name in front, their events
//! collected, and their ends reported. SIGINT/SIGTERM stop every OSlet cleanly.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use oslet_config::{Console, Partition};

use crate::events::{Event, Outcome, EVENT_FD_ENV};
use crate::link::{self, LinkAttach, SharedLink};
use crate::oslet::VmmPlan;
use crate::{monotonic_ns, signals};

/// Errors starting OSlets.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The VMM process could not be started.
    #[error("cannot start the VMM process of OSlet {0}")]
    Spawn(String, #[source] std::io::Error),
    /// A pipe could not be created.
    #[error("cannot create a pipe")]
    Pipe(#[source] std::io::Error),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    /// A link could not be set up.
    #[error("cannot set up the links of OSlet {0}")]
    Link(String, #[source] link::LinkError),
}

/// How `up` runs.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The `oslet` executable to start VMM processes from.
    pub exe: PathBuf,
    /// Do not relay consoles to stdout (logs are still written).
    pub quiet: bool,
    /// A console substring that marks an OSlet "ready" (timestamped in the report).
    pub ready_marker: Option<String>,
}

/// What happened to one OSlet.
#[derive(Debug, Clone)]
pub struct OsletReport {
    /// Its name.
    pub name: String,
    /// Its VMM's pid.
    pub pid: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// ms from the start of `up` to the guest's first-instruction marker.
    pub first_instruction_ms: Option<f64>,
    /// ms from the start of `up` to the ready marker on its console.
    pub ready_ms: Option<f64>,
    /// The VMM process's resident memory when it became ready, KiB.
    pub vmm_rss_kib: Option<u64>,
    /// Every console line, when `quiet` (for tests and benchmarks).
    pub console: Vec<String>,
}

#[derive(Default)]
struct Shared {
    outcome: Option<Outcome>,
    first_instruction_ms: Option<f64>,
    ready_ms: Option<f64>,
    vmm_rss_kib: Option<u64>,
    console: Vec<String>,
}

struct Running {
    name: String,
    child: Child,
    shared: Arc<Mutex<Shared>>,
    threads: Vec<JoinHandle<()>>,
    status: Option<std::process::ExitStatus>,
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

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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

fn spawn_one(
    partition: &Partition,
    links: &[SharedLink],
    idx: usize,
    width: usize,
    opts: &UpOptions,
    t0: u64,
) -> Result<Running, SupervisorError> {
    let plan = &partition.oslets[idx];
    let name = plan.name.clone();
    let (ev_read, ev_write) = pipe()?;
    let ev_write_raw = ev_write.as_raw_fd();
    let (attach, dups) = links_for(&name, links, ev_write_raw.max(ev_read.as_raw_fd()))?;
    let vmm_plan = VmmPlan {
        oslet: plan.clone(),
        links: attach,
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
    // SAFETY: the closure runs in the forked child before exec and only calls dup2,
    // which is async-signal-safe; every source fd stays open in the parent until after
    // spawn returns (the event pipe's write end and the links' fds, held by `links`).
    unsafe {
        // Link fds first: their targets lie above every source, so nothing is
        // clobbered; then the event pipe onto fd 3 (which may have been a link source).
        cmd.pre_exec(move || {
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
    if let Some(mut stdin) = child.stdin.take() {
        let sent = serde_json::to_vec(&vmm_plan)
            .map_err(std::io::Error::other)
            .and_then(|json| stdin.write_all(&json));
        if let Err(e) = sent {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SupervisorError::Spawn(name, e));
        }
    }
    let pid = child.id();
    let shared = Arc::new(Mutex::new(Shared::default()));
    let mut threads = Vec::new();

    if let Some(stdout) = child.stdout.take() {
        let shared = Arc::clone(&shared);
        let relay = plan.console == Console::Terminal && !opts.quiet;
        let keep = opts.quiet;
        let marker = opts.ready_marker.clone();
        let label = format!("{name:<width$}");
        threads.push(std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
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
        }));
    }
    {
        let shared = Arc::clone(&shared);
        // SAFETY: ev_read is an OwnedFd we own; converting it into a File transfers ownership.
        let file = std::fs::File::from(ev_read);
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
                    Err(_) => crate::log::warn(format_args!(
                        "unreadable event from a VMM process: {line}"
                    )),
                }
            }
        }));
    }
    Ok(Running {
        name,
        child,
        shared,
        threads,
        status: None,
    })
}

fn describe_status(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown status".to_string(),
    }
}

/// Starts every OSlet of `partition` and waits until all have ended.
pub fn up(partition: &Partition, opts: &UpOptions) -> Result<Vec<OsletReport>, SupervisorError> {
    signals::install_stop_handlers().map_err(SupervisorError::Signals)?;
    let t0 = monotonic_ns();
    let width = partition
        .oslets
        .iter()
        .map(|o| o.name.len())
        .max()
        .unwrap_or(0);
    let links = partition
        .links
        .iter()
        .map(|l| SharedLink::create(l).map_err(|e| SupervisorError::Link(l.a.clone(), e)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut running: Vec<Running> = Vec::new();
    for idx in 0..partition.oslets.len() {
        match spawn_one(partition, &links, idx, width, opts, t0) {
            Ok(r) => running.push(r),
            Err(e) => {
                for r in &running {
                    // SAFETY: kill(2) on a child pid we spawned and have not reaped.
                    unsafe { libc::kill(r.child.id() as i32, libc::SIGTERM) };
                }
                for r in &mut running {
                    let _ = r.child.wait();
                }
                return Err(e);
            }
        }
    }

    let mut forwarded = false;
    while running.iter().any(|r| r.status.is_none()) {
        if !forwarded && signals::stop_requested().is_some() {
            forwarded = true;
            for r in running.iter().filter(|r| r.status.is_none()) {
                // SAFETY: kill(2) on a child pid we spawned and have not reaped.
                unsafe { libc::kill(r.child.id() as i32, libc::SIGTERM) };
            }
        }
        for r in running.iter_mut().filter(|r| r.status.is_none()) {
            if let Ok(Some(st)) = r.child.try_wait() {
                r.status = Some(st);
                // Its peers see the link go down (state word + doorbell).
                for l in &links {
                    l.mark_down(&r.name);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }

    let mut reports = Vec::new();
    for r in running {
        for t in r.threads {
            let _ = t.join();
        }
        let mut s = lock(&r.shared);
        let status = r.status.map(describe_status).unwrap_or_default();
        let outcome = s.outcome.take().unwrap_or(Outcome::Died { status });
        reports.push(OsletReport {
            name: r.name,
            pid: r.child.id(),
            outcome,
            first_instruction_ms: s.first_instruction_ms,
            ready_ms: s.ready_ms,
            vmm_rss_kib: s.vmm_rss_kib,
            console: std::mem::take(&mut s.console),
        });
    }
    Ok(reports)
}
