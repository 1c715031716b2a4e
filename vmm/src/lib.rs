//! The oslet VMM: each OSlet is a KVM VM in its own process, with its vCPUs pinned
//! to host CPUs, booted from a partition file.
//!
//! The flow of `oslet up` (see docs/ARCHITECTURE.md): [`cli`] parses the command,
//! `oslet_config` validates the file into a plan, [`supervisor`] starts one VMM
//! process per OSlet, and each runs [`oslet::run`]: [`memory`] → [`vm`] →
//! [`devices`] → [`boot`] → [`vcpu`] threads.

pub mod affinity;
pub mod agent;
pub mod api;
pub mod arch;
pub mod bench;
pub mod bench_fs;
pub mod bench_link;
pub mod boot;
pub mod cli;
pub mod console;
pub mod console_attach;
pub mod control;
pub mod devices;
pub mod events;
pub mod kvm;
pub mod kvm_stats;
pub mod link;
pub mod log;
pub mod memory;
pub mod oslet;
pub mod signals;
pub mod supervisor;
pub mod testkernel;
pub mod top;
pub mod vcpu;
pub mod virtiofsd;
pub mod vm;
pub mod vmm_process;

/// CLOCK_MONOTONIC in nanoseconds: comparable across the processes of one host.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to fill; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}
