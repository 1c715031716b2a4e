//! Time from the TSC, scaled by `oslet.tsc_khz` (the VMM's KVM_GET_TSC_KHZ);
//! without it, CPUID leaf 0x15 / 0x16, else an assumed 2 GHz (timeouts only:
//! the bench refuses to run on a guessed frequency).

use super::args::{number, Args};
use crate::io::rdtsc;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cmdline,
    Cpuid,
    Assumed,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Cmdline => "oslet.tsc_khz",
            Source::Cpuid => "cpuid",
            Source::Assumed => "assumed",
        }
    }
}

#[derive(Clone, Copy)]
pub struct Clock {
    pub khz: u64,
    pub source: Source,
    base: u64,
    /// Nanoseconds per TSC cycle, times 2^32.
    mult: u64,
}

fn cpuid(leaf: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid(leaf);
    (r.eax, r.ebx, r.ecx, r.edx)
}

fn cpuid_khz() -> Option<u64> {
    let max = cpuid(0).0;
    if max >= 0x15 {
        let (den, num, hz, _) = cpuid(0x15);
        if den != 0 && num != 0 && hz != 0 {
            return Some(hz as u64 * num as u64 / den as u64 / 1000);
        }
    }
    if max >= 0x16 {
        let mhz = cpuid(0x16).0 & 0xffff;
        if mhz != 0 {
            return Some(mhz as u64 * 1000);
        }
    }
    None
}

impl Clock {
    pub fn new(args: &Args) -> Clock {
        let (khz, source) = match args
            .value(b"oslet.tsc_khz")
            .and_then(number)
            .filter(|&k| (1000..100_000_000).contains(&k))
        {
            Some(k) => (k, Source::Cmdline),
            None => match cpuid_khz().filter(|&k| (1000..100_000_000).contains(&k)) {
                Some(k) => (k, Source::Cpuid),
                None => (2_000_000, Source::Assumed),
            },
        };
        Clock {
            khz,
            source,
            base: rdtsc(),
            mult: (1_000_000u64 << 32) / khz,
        }
    }

    /// Nanoseconds since the clock was made.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        let d = rdtsc().wrapping_sub(self.base);
        ((d as u128 * self.mult as u128) >> 32) as u64
    }

    /// TSC cycles in `ms` milliseconds.
    pub fn cycles(&self, ms: u64) -> u64 {
        self.khz.saturating_mul(ms)
    }

    /// A deadline `ms` milliseconds from now.
    pub fn deadline(&self, ms: u64) -> Deadline {
        Deadline {
            start: rdtsc(),
            cycles: self.cycles(ms),
        }
    }
}

/// A point in time to give up at (TSC-based, no clock needed to check it).
#[derive(Clone, Copy)]
pub struct Deadline {
    start: u64,
    cycles: u64,
}

impl Deadline {
    #[inline]
    pub fn passed(&self) -> bool {
        rdtsc().wrapping_sub(self.start) > self.cycles
    }

    /// Starts the same span again from now.
    #[inline]
    pub fn restart(&mut self) {
        self.start = rdtsc();
    }
}
