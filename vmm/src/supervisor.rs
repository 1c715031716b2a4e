//! The supervisor behind `oslet up`: it owns one VMM process per OSlet (so a crash
//! stays inside its partition, see `vmm_process`), the links' memfds, and the OSlets'
//! lifecycle: restart policy, and the control API's stop/start/restart/down
//! (`control`, `api`). SIGINT/SIGTERM stop every OSlet cleanly.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use oslet_config::{Partition, Restart};
use serde_json::json;

use crate::api::{self, Call};
use crate::control::{self, Pending};
use crate::events::Outcome;
use crate::link::{self, SharedLink};
use crate::vmm_process::{describe_status, lock, spawn_one, Running};
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
    /// The control socket could not be served.
    #[error(transparent)]
    Control(#[from] control::ControlError),
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
    /// Serve the control API here.
    pub socket: Option<PathBuf>,
    /// Keep serving after every OSlet has ended, until `down` or a signal.
    pub stay: bool,
    /// When the socket cannot be served, warn and run without a control API.
    pub socket_optional: bool,
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
    /// Times the supervisor restarted it.
    pub restarts: u32,
}

/// Where an OSlet is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Its VMM process runs.
    Running,
    /// Asked to stop (API or shutdown); its VMM process is ending.
    Stopping,
    /// Stopped through the API, or never restarted after its end.
    Ended,
}

/// One OSlet's slot in the supervisor.
struct Slot {
    idx: usize,
    name: String,
    phase: Phase,
    run: Option<Running>,
    pid: u32,
    started: Instant,
    restarts: u32,
    last: Option<Outcome>,
    report: Option<OsletReport>,
    /// Replies owed when the current VMM process has ended (stop, restart, down).
    waiting: Vec<(Call, mpsc::Sender<Vec<u8>>)>,
    /// Start again once ended (restart).
    start_after_stop: bool,
    /// Its last end was asked for (stop, down): "stopped" rather than "ended".
    stopped: bool,
}

struct Supervisor<'a> {
    partition: &'a Partition,
    opts: &'a UpOptions,
    links: Vec<SharedLink>,
    slots: Vec<Slot>,
    width: usize,
    t0: u64,
    down: Option<Vec<mpsc::Sender<Vec<u8>>>>,
    /// Given to each VMM process's event thread, which sends `VmmEnded`.
    wake: mpsc::Sender<Wake>,
}

/// What wakes the supervisor's loop.
pub(crate) enum Wake {
    /// A control API call.
    Call(Pending),
    /// A VMM process closed its event pipe: it has ended, or is about to.
    VmmEnded,
    /// A stop signal arrived (the loop acts on it at its top).
    Stop,
}

impl From<Pending> for Wake {
    fn from(p: Pending) -> Self {
        Wake::Call(p)
    }
}

/// How long the loop sleeps at most between its looks at the VMM processes: a
/// backstop (a VMM that ends and a stop signal wake it at once).
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// How long after a VMM closed its event pipe the loop looks every millisecond for
/// its end.
const END_GRACE: Duration = Duration::from_secs(1);

fn json_response(status: u16, v: &serde_json::Value) -> Vec<u8> {
    api::response(status, "application/json", v.to_string().as_bytes())
}

fn terminate(r: &Running) {
    // SAFETY: kill(2) on a child pid we spawned and have not reaped.
    unsafe { libc::kill(r.child.id() as i32, libc::SIGTERM) };
}

impl Supervisor<'_> {
    fn start(&mut self, i: usize) -> Result<(), SupervisorError> {
        let idx = self.slots[i].idx;
        let run = spawn_one(
            self.partition,
            &self.links,
            idx,
            self.width,
            self.opts,
            self.t0,
            &self.wake,
        )?;
        let s = &mut self.slots[i];
        s.pid = run.child.id();
        s.run = Some(run);
        s.phase = Phase::Running;
        s.started = Instant::now();
        s.stopped = false;
        Ok(())
    }

    fn status_json(&self, s: &Slot) -> serde_json::Value {
        let plan = &self.partition.oslets[s.idx];
        let (stats, state) = match (&s.run, s.phase) {
            (Some(r), Phase::Running) => {
                let sh = lock(&r.shared);
                (
                    Some((
                        sh.exits_per_s,
                        sh.kvm_exits_per_s,
                        sh.vcpu_busy_pct.clone(),
                        sh.guest,
                    )),
                    "running",
                )
            }
            (Some(_), _) => (None, "stopping"),
            (None, _) => (
                None,
                match &s.last {
                    None => "stopped",
                    Some(_) if s.stopped => "stopped",
                    Some(o) if o.success() => "ended",
                    Some(_) => "failed",
                },
            ),
        };
        json!({
            "name": s.name,
            "state": state,
            "pid": s.run.as_ref().map(|_| s.pid),
            "host_cpus": plan.host_cpus,
            "vcpus": plan.vcpus(),
            "memory_bytes": plan.memory_bytes,
            "uptime_s": s.run.as_ref().map(|_| s.started.elapsed().as_secs_f64()),
            "restarts": s.restarts,
            "vmm_exits_per_s": stats.as_ref().and_then(|s| s.0),
            "kvm_exits_per_s": stats.as_ref().and_then(|s| s.1),
            "vcpu_busy_pct": stats.as_ref().map(|s| &s.2).filter(|b| !b.is_empty()),
            "guest": stats.as_ref().and_then(|s| s.3),
            "last_exit": s.last.as_ref().map(|o| o.to_string()),
        })
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.name == name)
    }

    fn unknown(&self, name: &str) -> Vec<u8> {
        let names: Vec<&str> = self.slots.iter().map(|s| s.name.as_str()).collect();
        api::error_response(
            404,
            &format!(
                "no OSlet named {name:?}; the OSlets are {}",
                names.join(", ")
            ),
        )
    }

    fn woken(&mut self, w: Wake) {
        match w {
            Wake::Call(p) => self.handle(p),
            // The loop reaps, and looks at the stop signal, next.
            Wake::VmmEnded | Wake::Stop => {}
        }
    }

    fn handle(&mut self, p: Pending) {
        let reply = |r: Vec<u8>| {
            let _ = p.reply.send(r);
        };
        match &p.call {
            Call::Ping => reply(json_response(200, &json!({ "ok": true }))),
            Call::Links => {
                let v: Vec<_> = self
                    .links
                    .iter()
                    .map(|l| {
                        let (a, b) = l.tx_bytes();
                        json!({ "a": l.a, "b": l.b, "ring_bytes": l.ring_bytes, "a_tx_bytes": a, "b_tx_bytes": b })
                    })
                    .collect();
                reply(json_response(200, &serde_json::Value::Array(v)));
            }
            Call::List => {
                let v: Vec<_> = self.slots.iter().map(|s| self.status_json(s)).collect();
                reply(json_response(200, &serde_json::Value::Array(v)));
            }
            Call::Show(n) => match self.find(n) {
                Some(i) => reply(json_response(200, &self.status_json(&self.slots[i]))),
                None => reply(self.unknown(n)),
            },
            Call::Logs(n) => match self.find(n) {
                None => reply(self.unknown(n)),
                Some(i) => {
                    let path = &self.partition.oslets[self.slots[i].idx].log_file;
                    let text = std::fs::read(path).unwrap_or_default();
                    let tail = &text[text.len().saturating_sub(64 * 1024)..];
                    reply(api::response(200, "text/plain; charset=utf-8", tail));
                }
            },
            Call::Stop(n) | Call::Restart(n) => match self.find(n) {
                None => reply(self.unknown(n)),
                Some(i) => {
                    let restart = matches!(p.call, Call::Restart(_));
                    let s = &mut self.slots[i];
                    match (&s.run, s.phase) {
                        (Some(r), Phase::Running) => {
                            terminate(r);
                            s.phase = Phase::Stopping;
                            s.start_after_stop = restart;
                            s.waiting.push((p.call.clone(), p.reply));
                        }
                        (Some(_), _) => {
                            s.start_after_stop |= restart;
                            s.waiting.push((p.call.clone(), p.reply));
                        }
                        (None, _) if restart => {
                            let r = match self.start(i) {
                                Ok(()) => json_response(200, &self.status_json(&self.slots[i])),
                                Err(e) => api::error_response(500, &crate::cli::error_chain(&e)),
                            };
                            reply(r);
                        }
                        (None, _) => {
                            reply(api::error_response(409, &format!("{n} is not running")))
                        }
                    }
                }
            },
            Call::Start(n) => match self.find(n) {
                None => reply(self.unknown(n)),
                Some(i) if self.slots[i].run.is_some() => reply(api::error_response(
                    409,
                    &format!("{n} is already running; use restart"),
                )),
                Some(i) => {
                    let r = match self.start(i) {
                        Ok(()) => json_response(200, &self.status_json(&self.slots[i])),
                        Err(e) => api::error_response(500, &crate::cli::error_chain(&e)),
                    };
                    reply(r);
                }
            },
            Call::Console(n) => match self.find(n) {
                None => reply(self.unknown(n)),
                Some(i) => match (&self.slots[i].run, self.slots[i].phase, p.stream) {
                    (Some(r), Phase::Running, Some(stream)) => match r.consoles.attach(n, stream) {
                        Ok(()) => reply(Vec::new()),
                        Err(e) => reply(api::error_response(409, &e)),
                    },
                    (_, _, None) => {
                        reply(api::error_response(500, "the console connection was lost"))
                    }
                    _ => reply(api::error_response(
                        409,
                        &format!("{n} is not running; start it first"),
                    )),
                },
            },
            Call::Down => {
                self.stop_all();
                self.down.get_or_insert_with(Vec::new).push(p.reply);
            }
        }
    }

    fn stop_all(&mut self) {
        for s in &mut self.slots {
            s.start_after_stop = false;
            if let Some(r) = &s.run {
                if s.phase == Phase::Running {
                    terminate(r);
                }
                s.phase = Phase::Stopping;
            }
        }
    }

    /// Reaps ended VMM processes, marks their links down, applies restart policies.
    fn reap(&mut self) {
        for i in 0..self.slots.len() {
            let ended = match self.slots[i].run.as_mut() {
                Some(r) => {
                    matches!(r.child.try_wait(), Ok(Some(st)) if { r.status = Some(st); true })
                }
                None => false,
            };
            if !ended {
                continue;
            }
            let Some(run) = self.slots[i].run.take() else {
                continue;
            };
            for l in &self.links {
                l.mark_down(&run.name);
            }
            let report = finish(run, self.slots[i].restarts);
            let outcome = report.outcome.clone();
            let name = self.slots[i].name.clone();
            let policy = self.partition.oslets[self.slots[i].idx].restart;
            let s = &mut self.slots[i];
            let asked = s.phase == Phase::Stopping;
            s.phase = Phase::Ended;
            s.stopped = asked;
            s.last = Some(outcome.clone());
            s.report = Some(report);
            if !self.opts.quiet || !outcome.success() {
                crate::log::info(format_args!("{name}: {outcome}"));
            }
            let mut again = false;
            if s.start_after_stop {
                s.start_after_stop = false;
                again = true;
            } else if !asked
                && !outcome.success()
                && self.down.is_none()
                && signals::stop_requested().is_none()
            {
                if let Restart::OnFailure { limit } = policy {
                    if s.restarts < limit {
                        s.restarts += 1;
                        crate::log::info(format_args!(
                            "{name}: restarting ({} of {limit})",
                            s.restarts
                        ));
                        again = true;
                    } else {
                        crate::log::info(format_args!(
                            "{name}: not restarted: {limit} restarts used"
                        ));
                    }
                }
            }
            if again {
                if let Err(e) = self.start(i) {
                    crate::log::warn(format_args!(
                        "{name}: cannot restart: {}",
                        crate::cli::error_chain(&e)
                    ));
                }
            }
            let waiting = std::mem::take(&mut self.slots[i].waiting);
            for (_, tx) in waiting {
                let _ = tx.send(json_response(200, &self.status_json(&self.slots[i])));
            }
        }
    }

    /// How long the loop may sleep: LOOK_EVERY, or a millisecond while a VMM that
    /// closed its event pipe is not reapable yet (a VMM closes it a moment before
    /// the kernel lets it be reaped), for at most END_GRACE after it closed.
    fn next_look(&self) -> Duration {
        let ending = self.slots.iter().filter_map(|s| s.run.as_ref()).any(|r| {
            lock(&r.shared)
                .events_closed
                .is_some_and(|t| t.elapsed() < END_GRACE)
        });
        if ending {
            Duration::from_millis(1)
        } else {
            LOOK_EVERY
        }
    }

    fn any_running(&self) -> bool {
        self.slots.iter().any(|s| s.run.is_some())
    }
}

/// Collects a finished VMM process's report (its relay threads end with it).
fn finish(r: Running, restarts: u32) -> OsletReport {
    for t in r.threads {
        let _ = t.join();
    }
    let mut s = lock(&r.shared);
    let status = r.status.map(describe_status).unwrap_or_default();
    OsletReport {
        name: r.name,
        pid: r.child.id(),
        outcome: s.outcome.take().unwrap_or(Outcome::Died { status }),
        first_instruction_ms: s.first_instruction_ms,
        ready_ms: s.ready_ms,
        vmm_rss_kib: s.vmm_rss_kib,
        console: std::mem::take(&mut s.console),
        restarts,
    }
}

/// Starts every OSlet of `partition` and supervises them: until all have ended (or,
/// with `opts.stay`, until `down` or a signal). Returns each OSlet's last report.
pub fn up(partition: &Partition, opts: &UpOptions) -> Result<Vec<OsletReport>, SupervisorError> {
    signals::install_stop_handlers().map_err(SupervisorError::Signals)?;
    // The loop below sleeps on this channel: control API calls and VMM processes
    // that end wake it. The supervisor keeps a sender for the VMMs' event threads,
    // so the channel never disconnects, also without a control API (a wait on a
    // channel with no sender left returns at once: the loop would spin a host CPU
    // that the OSlets need).
    let (tx, rx): (mpsc::Sender<Wake>, Receiver<Wake>) = mpsc::channel();
    let wake = tx.clone();
    let on_stop = tx.clone();
    if let Err(e) = signals::wake_on_stop(move || {
        let _ = on_stop.send(Wake::Stop);
    }) {
        crate::log::warn(format_args!(
            "cannot watch for stop signals ({e}); the supervisor sees them within {} ms",
            LOOK_EVERY.as_millis()
        ));
    }
    let server = match &opts.socket {
        Some(path) => match control::serve(path, tx) {
            Ok(s) => Some(s),
            Err(e) if opts.socket_optional => {
                crate::log::warn(format_args!(
                    "{}; running without a control API",
                    crate::cli::error_chain(&e)
                ));
                None
            }
            Err(e) => return Err(e.into()),
        },
        None => {
            drop(tx);
            None
        }
    };
    let links = partition
        .links
        .iter()
        .map(|l| SharedLink::create(l).map_err(|e| SupervisorError::Link(l.a.clone(), e)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sup = Supervisor {
        partition,
        opts,
        links,
        slots: partition
            .oslets
            .iter()
            .enumerate()
            .map(|(idx, o)| Slot {
                idx,
                name: o.name.clone(),
                phase: Phase::Ended,
                run: None,
                pid: 0,
                started: Instant::now(),
                restarts: 0,
                last: None,
                report: None,
                waiting: Vec::new(),
                start_after_stop: false,
                stopped: false,
            })
            .collect(),
        width: partition
            .oslets
            .iter()
            .map(|o| o.name.len())
            .max()
            .unwrap_or(0),
        t0: monotonic_ns(),
        down: None,
        wake,
    };
    for i in 0..sup.slots.len() {
        if let Err(e) = sup.start(i) {
            sup.stop_all();
            while sup.any_running() {
                sup.reap();
                std::thread::sleep(Duration::from_millis(5));
            }
            return Err(e);
        }
    }

    let mut stopping = false;
    loop {
        if !stopping && signals::stop_requested().is_some() {
            stopping = true;
            sup.stop_all();
        }
        while let Ok(w) = rx.try_recv() {
            sup.woken(w);
        }
        sup.reap();
        if !sup.any_running() {
            if let Some(replies) = sup.down.take() {
                // Gone before anyone hears "down": a client that got the answer never
                // finds the socket still there.
                if let Some(s) = &server {
                    s.unlink();
                }
                for r in replies {
                    let _ = r.send(json_response(200, &json!({ "down": true })));
                }
                break;
            }
            if !opts.stay || stopping {
                break;
            }
        }
        let _ = rx.recv_timeout(sup.next_look()).map(|w| sup.woken(w));
    }
    drop(server);
    Ok(sup.slots.into_iter().filter_map(|s| s.report).collect())
}
