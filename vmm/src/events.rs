//! What an OSlet's VMM process tells `oslet up`: JSON lines on a pipe (the fd named
//! by `OSLET_EVENT_FD`), separate from the console bytes on its stdout.

use std::io::Write;
use std::os::fd::{FromRawFd, RawFd};

use serde::{Deserialize, Serialize};

use crate::agent::GuestReport;
use crate::kvm_stats::VcpuCounters;

/// Environment variable carrying the event pipe's fd number to a VMM process.
pub const EVENT_FD_ENV: &str = "OSLET_EVENT_FD";

/// How an OSlet ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Outcome {
    /// The guest powered off through the debug exit port with this status.
    PoweredOff {
        /// The status byte (0 = success).
        status: u8,
    },
    /// The guest reset itself (Linux `reboot`, i8042 reset).
    Reset,
    /// The guest powered off through a KVM system event.
    Shutdown,
    /// The guest crashed (triple fault, emulation failure...).
    Crashed {
        /// What KVM reported.
        reason: String,
    },
    /// The VMM was asked to stop (SIGINT/SIGTERM).
    Stopped {
        /// The signal number.
        signal: i32,
    },
    /// The VMM itself failed (setup error, KVM error).
    Failed {
        /// The error chain.
        error: String,
    },
    /// The VMM process died without saying why (killed, crashed).
    Died {
        /// How the process ended, as the OS says.
        status: String,
    },
}

impl Outcome {
    /// Whether this counts as a clean end.
    pub fn success(&self) -> bool {
        matches!(
            self,
            Outcome::PoweredOff { status: 0 }
                | Outcome::Reset
                | Outcome::Shutdown
                | Outcome::Stopped { .. }
        )
    }

    /// The VMM process's exit code for this outcome.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::PoweredOff { status: 0 }
            | Outcome::Reset
            | Outcome::Shutdown
            | Outcome::Stopped { .. } => 0,
            Outcome::PoweredOff { .. } => 1,
            Outcome::Crashed { .. } => 3,
            Outcome::Failed { .. } | Outcome::Died { .. } => 4,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::PoweredOff { status } => write!(f, "powered off (status {status})"),
            Outcome::Reset => write!(f, "reset by the guest"),
            Outcome::Shutdown => write!(f, "shut down by the guest"),
            Outcome::Crashed { reason } => write!(f, "crashed: {reason}"),
            Outcome::Stopped { signal } => write!(f, "stopped (signal {signal})"),
            Outcome::Failed { error } => write!(f, "VMM failed: {error}"),
            Outcome::Died { status } => write!(f, "VMM process died: {status}"),
        }
    }
}

/// One event from a VMM process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The VM is built and its vCPUs are about to run.
    Started {
        /// CLOCK_MONOTONIC, ns.
        mono_ns: u64,
    },
    /// The guest's first-instruction marker (a write to the debug console port).
    FirstInstruction {
        /// CLOCK_MONOTONIC, ns.
        mono_ns: u64,
    },
    /// Counters, sent about once a second.
    Stats {
        /// Total vCPU exits that reached the VMM (userspace) since it started.
        exits: u64,
        /// CLOCK_MONOTONIC, ns.
        mono_ns: u64,
        /// KVM's own counters per vCPU (empty where the kernel has no stats fd).
        #[serde(default)]
        vcpus: Vec<VcpuCounters>,
        /// The guest agent's latest report, if it has sent one.
        #[serde(default)]
        guest: Option<GuestReport>,
    },
    /// The OSlet ended.
    Ended {
        /// How.
        outcome: Outcome,
    },
}

/// The writing end of the event pipe, if this process was given one.
pub struct EventSink(Option<std::fs::File>);

impl EventSink {
    /// Takes the fd named by `OSLET_EVENT_FD`, if any.
    pub fn from_env() -> Self {
        let fd: Option<RawFd> = std::env::var(EVENT_FD_ENV)
            .ok()
            .and_then(|v| v.parse().ok());
        match fd {
            Some(fd) if fd > 2 => {
                // SAFETY: the parent passed this fd to us for exactly this purpose and
                // nothing else in this process uses it; we take ownership of it once
                // (the env var is removed so no second owner can appear).
                let f = unsafe { std::fs::File::from_raw_fd(fd) };
                std::env::remove_var(EVENT_FD_ENV);
                EventSink(Some(f))
            }
            _ => EventSink(None),
        }
    }

    /// Sends one event (best effort: a parent that went away is not our problem).
    pub fn send(&mut self, event: &Event) {
        if let Some(f) = self.0.as_mut() {
            if let Ok(mut line) = serde_json::to_vec(event) {
                line.push(b'\n');
                let _ = f.write_all(&line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_json() {
        let e = Event::Ended {
            outcome: Outcome::PoweredOff { status: 3 },
        };
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(
            s,
            r#"{"event":"ended","outcome":{"kind":"powered-off","status":3}}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&s).unwrap(), e);
    }

    #[test]
    fn only_clean_ends_are_success() {
        assert!(Outcome::PoweredOff { status: 0 }.success());
        assert!(!Outcome::PoweredOff { status: 1 }.success());
        assert!(!Outcome::Crashed { reason: "x".into() }.success());
        assert_eq!(Outcome::Crashed { reason: "x".into() }.exit_code(), 3);
    }
}
