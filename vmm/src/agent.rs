//! The agent link: a link between a guest and its own VMM process, on which the
//! guest agent (`oslet-msg agent` in Linux, `ring3-agent` in the test kernel) sends
//! an [`AgentReport`] a second. The guest owns side A (writable in the guest), the
//! VMM side B (read-only in the guest); the VMM maps the whole window and reads it
//! with the same hostile-peer-safe [`Endpoint`] the OSlets use between themselves.
//!
//! The guest finds it on its command line:
//! `oslet.agentlink=<window_gpa>,<ring_bytes>`.

use std::os::fd::OwnedFd;

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;
use oslet_interconnect::agent::{AgentReport, AGENT_RING_BYTES};
use oslet_interconnect::{Endpoint, LinkConfig, PeerState, RecvError, Region, Side};

use crate::link::{FIRST_SLOT, MAX_LINKS_PER_OSLET, WINDOW_BASE};
use crate::log::RateLimiter;

/// Where the agent link's window sits in every guest: the 2 MiB below the link
/// windows, in the 32-bit MMIO hole (outside e820 RAM).
pub const AGENT_WINDOW_GPA: u64 = WINDOW_BASE - (2 << 20);
/// Its two memory slots come after every link's.
pub const AGENT_SLOT: u32 = FIRST_SLOT + 2 * MAX_LINKS_PER_OSLET as u32;
/// Messages read per poll at most (a guest that floods the ring cannot hold the
/// VMM's main loop).
const MAX_PER_POLL: usize = 64;

/// Errors setting up the agent link.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// memfd, ftruncate or mmap failed.
    #[error("cannot {0} for the agent link")]
    Os(&'static str, #[source] std::io::Error),
    /// KVM refused a memory slot.
    #[error("KVM refused to map the agent link")]
    Kvm(#[source] kvm_ioctls::Error),
    /// The interconnect refused the window.
    #[error("cannot attach the agent link: {0}")]
    Attach(String),
}

/// The latest report, as the supervisor and `oslet top` see it.
pub type GuestReport = AgentReport;

/// The VMM's mapping of the window (unmapped after the endpoint is gone).
struct Mapping {
    ptr: *mut u8,
    len: usize,
    _fd: OwnedFd,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping `AgentLink::attach` created, once; the endpoint
        // that used it is dropped before this (field order in AgentLink) and the VM that
        // maps it into the guest before the AgentLink (see oslet::run).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The VMM's end of an OSlet's agent link.
pub struct AgentLink {
    ep: Endpoint<'static>,
    _map: Mapping,
    config: LinkConfig,
    latest: Option<GuestReport>,
    /// Holds the largest message the ring allows, so none stays stuck as too long.
    buf: Vec<u8>,
    bad: RateLimiter,
    broken: bool,
}

// SAFETY: the mapping is owned by this struct and accessed only through `ep`, from
// whichever single thread owns the AgentLink.
unsafe impl Send for AgentLink {}

impl AgentLink {
    /// Creates the window and maps it into `vm` at [`AGENT_WINDOW_GPA`].
    pub fn attach(vm: &VmFd) -> Result<Self, AgentError> {
        let config =
            LinkConfig::new(AGENT_RING_BYTES).map_err(|e| AgentError::Attach(format!("{e:?}")))?;
        let section = config.section_bytes() as usize;
        let len = config.window_bytes();
        let (fd, ptr) = crate::link::memfd_mapping(c"oslet-agent", len)
            .map_err(|(what, e)| AgentError::Os(what, e))?;
        let map = Mapping { ptr, len, _fd: fd };
        // Side A (the guest's) writable in the guest, side B (ours) read-only there.
        for (i, (offset, flags)) in [(0usize, 0u32), (section, KVM_MEM_READONLY)]
            .into_iter()
            .enumerate()
        {
            let region = kvm_userspace_memory_region {
                slot: AGENT_SLOT + i as u32,
                guest_phys_addr: AGENT_WINDOW_GPA + offset as u64,
                memory_size: section as u64,
                // `offset` < len: inside the mapping.
                userspace_addr: map.ptr as u64 + offset as u64,
                flags,
            };
            // SAFETY: the host range is inside `map`, which outlives the VM's use of it
            // (the OSlet drops the VM first; on an error here the OSlet is abandoned
            // before any vCPU runs); the guest range lies in the MMIO hole below every
            // link window and overlaps no RAM or other slot.
            unsafe { vm.set_user_memory_region(region) }.map_err(AgentError::Kvm)?;
        }
        // SAFETY: `map` covers `len` bytes of shared memory that stay mapped for as long
        // as the endpoint lives (the endpoint is dropped before `map`).
        let window = unsafe { Region::new(map.ptr, len) }
            .map_err(|e| AgentError::Attach(format!("{e:?}")))?;
        let ep = Endpoint::attach(window, Side::B, config)
            .map_err(|e| AgentError::Attach(e.to_string()))?;
        Ok(AgentLink {
            ep,
            _map: map,
            config,
            latest: None,
            buf: vec![0; config.max_payload() as usize],
            bad: RateLimiter::new(3),
            broken: false,
        })
    }

    /// The command-line word that tells the guest where it is.
    pub fn cmdline_word(&self) -> String {
        format!(
            "oslet.agentlink={AGENT_WINDOW_GPA:#x},{:#x}",
            self.config.ring_bytes()
        )
    }

    /// Takes what the guest sent since the last poll; returns the latest good report.
    /// A bad report is logged (rate-limited) and skipped; a broken link (garbage in
    /// the guest's section) is logged once and then ignored: the OSlet runs on.
    pub fn poll(&mut self, name: &str) -> Option<GuestReport> {
        if self.broken {
            return self.latest;
        }
        for _ in 0..MAX_PER_POLL {
            match self.ep.recv(&mut self.buf) {
                // Nothing new; or the agent is not (yet, or no longer) attached: a
                // guest without an agent, or one restarting it.
                Ok(None) => break,
                // The agent restarted (a new process in the guest): read on, from it.
                Err(RecvError::PeerRestarted) => continue,
                Err(RecvError::PeerDown) => {
                    // A section that no longer makes sense is the guest's garbage, not
                    // an agent that stopped.
                    if matches!(self.ep.peer_state(), PeerState::Incompatible) {
                        crate::log::warn(format_args!(
                            "{name}: the guest agent link is broken (the guest's section holds garbage); agent reports stop, the OSlet runs on"
                        ));
                        self.broken = true;
                    }
                    break;
                }
                Ok(Some(n)) => match AgentReport::decode(self.buf.get(..n).unwrap_or(&[])) {
                    Ok(r) => self.latest = Some(r),
                    Err(e) => self
                        .bad
                        .warn(format_args!("{name}: guest agent sent a bad report: {e}")),
                },
                Err(e) => {
                    crate::log::warn(format_args!(
                        "{name}: the guest agent link is broken ({e}); agent reports stop, the OSlet runs on"
                    ));
                    self.broken = true;
                    break;
                }
            }
        }
        self.latest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(seq: u64) -> AgentReport {
        AgentReport {
            seq,
            uptime_ms: seq * 1000,
            load_milli: [500, 400, 300],
            cpus_online: 2,
            procs_running: 1,
            mem_total_kib: 1024,
            mem_available_kib: 512,
        }
    }

    /// The VMM side over a real VM's agent window, with the guest's side played by
    /// an endpoint on the same mapping: reports, a bad one, and an agent restart.
    #[test]
    fn poll_keeps_the_latest_good_report_across_bad_ones_and_an_agent_restart() {
        let Some(kvm) = crate::kvm::for_test() else {
            return;
        };
        let vm = kvm.create_vm().unwrap();
        let mut link = AgentLink::attach(&vm).unwrap();
        assert_eq!(
            link.cmdline_word(),
            format!("oslet.agentlink={AGENT_WINDOW_GPA:#x},0x1000")
        );
        let len = link.config.window_bytes();
        let ptr = link._map.ptr;
        // SAFETY: the test's stand-in for the guest: the same live mapping, used only
        // through the interconnect's atomics, while `link` (which owns it) lives.
        let region = || unsafe { Region::new(ptr, len) }.unwrap();
        assert_eq!(link.poll("t"), None, "no agent yet");

        let mut guest = Endpoint::attach(region(), Side::A, link.config).unwrap();
        let _ = link.poll("t"); // the VMM acknowledges the new agent
        guest.send(&report(1).encode()).unwrap();
        guest.send(b"not a report").unwrap();
        guest.send(&report(2).encode()).unwrap();
        assert_eq!(link.poll("t"), Some(report(2)), "the bad one is skipped");
        assert!(!link.broken);

        // The agent process restarts: a new incarnation of side A.
        drop(guest);
        assert_eq!(
            link.poll("t"),
            Some(report(2)),
            "down: the last report stays"
        );
        let mut again = Endpoint::attach(region(), Side::A, link.config).unwrap();
        let _ = link.poll("t");
        let mut sent = false;
        for _ in 0..100 {
            if again.send(&report(1).encode()).is_ok() {
                sent = true;
                break;
            }
            let _ = link.poll("t");
        }
        assert!(sent, "the new agent connects");
        assert_eq!(link.poll("t"), Some(report(1)), "the new agent's report");
        assert!(!link.broken);
    }
}
