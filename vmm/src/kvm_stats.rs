//! KVM's binary statistics for one vCPU (`KVM_GET_STATS_FD`, Linux 5.14+): how
//! many exits it took (all of them, including those KVM handles in the kernel)
//! and how long it sat halted, which is what `oslet top` calls idle.
//!
//! The stats fd holds a header, a block of descriptors (flags, exponent, size,
//! offset, name) and a data block of u64s; the descriptors are read once and the
//! counters we want are then read with `pread` at their offsets. See the kernel's
//! Documentation/virt/kvm/api.rst, "KVM_GET_STATS_FD".

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};

/// `_IO(KVMIO, 0xce)`.
const KVM_GET_STATS_FD: libc::c_ulong = 0xaece;
/// Header: flags, name_size, num_desc, id_offset, desc_offset, data_offset (u32 each).
const HEADER_LEN: usize = 24;
/// A descriptor before its name: flags u32, exponent i16, size u16, offset u32,
/// bucket_size u32.
const DESC_FIXED_LEN: usize = 16;
/// Refuse descriptor blocks larger than this (a real vCPU has ~50 stats).
const MAX_DESC_BLOCK: usize = 1 << 20;

const TYPE_MASK: u32 = 0xf;
const TYPE_CUMULATIVE: u32 = 0;
const TYPE_INSTANT: u32 = 1;
const UNIT_MASK: u32 = 0xf0;
const UNIT_NONE: u32 = 0x00;
const UNIT_SECONDS: u32 = 0x20;
const UNIT_BOOLEAN: u32 = 0x40;
const BASE_MASK: u32 = 0xf00;
const BASE_POW10: u32 = 0x000;

/// Errors reading a vCPU's statistics.
#[derive(Debug, thiserror::Error)]
pub enum KvmStatsError {
    /// The ioctl failed (kernels before 5.14 do not have it).
    #[error("KVM_GET_STATS_FD failed: {0}")]
    Open(std::io::Error),
    /// Reading the stats fd failed.
    #[error("cannot read the vCPU stats fd: {0}")]
    Read(std::io::Error),
    /// The layout KVM gave is not one this code understands.
    #[error("unexpected KVM stats layout: {0}")]
    Layout(String),
}

/// The counters `oslet top` uses, cumulative since the vCPU was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuCounters {
    /// Every exit from guest mode (`exits`).
    pub exits: u64,
    /// Exits for `hlt` (`halt_exits`).
    pub halt_exits: u64,
    /// Wake-ups from halt (`halt_wakeup`).
    pub halt_wakeups: u64,
    /// Nanoseconds of completed halts: waiting (`halt_wait_ns`) plus halt polling
    /// (`halt_poll_success_ns`, `halt_poll_fail_ns`). KVM adds a halt's time when
    /// it ends, so a halt still going on is not in here: see `blocking`.
    pub idle_ns: u64,
    /// Whether the vCPU is halted right now (`blocking`).
    #[serde(default)]
    pub blocking: bool,
}

/// Where one counter lives in the data block, and its scale to the unit we keep.
#[derive(Debug, Clone, Copy)]
struct Counter {
    offset: u64,
    /// Multiply by 10^scale_pow10 (for seconds: to nanoseconds).
    scale_pow10: i32,
}

/// Which counter feeds which field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Exits,
    HaltExits,
    HaltWakeups,
    Idle,
    Blocking,
}

/// The field a stat feeds, with the type and unit it must have.
fn field_of(name: &str) -> Option<(Field, u32, u32)> {
    match name {
        "exits" => Some((Field::Exits, TYPE_CUMULATIVE, UNIT_NONE)),
        "halt_exits" => Some((Field::HaltExits, TYPE_CUMULATIVE, UNIT_NONE)),
        "halt_wakeup" => Some((Field::HaltWakeups, TYPE_CUMULATIVE, UNIT_NONE)),
        "halt_wait_ns" | "halt_poll_success_ns" | "halt_poll_fail_ns" => {
            Some((Field::Idle, TYPE_CUMULATIVE, UNIT_SECONDS))
        }
        "blocking" => Some((Field::Blocking, TYPE_INSTANT, UNIT_BOOLEAN)),
        _ => None,
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The counters found in a descriptor block, with the data block's offset.
#[derive(Debug, Default)]
struct Layout {
    counters: Vec<(Field, Counter)>,
}

/// Parses a descriptor block. Unknown stats are skipped; the wanted ones must be
/// single u64s of their expected type and unit, in base 10.
fn parse(descs: &[u8], data_offset: u64, name_size: usize) -> Layout {
    let mut out = Layout::default();
    let step = DESC_FIXED_LEN + name_size;
    for d in descs.chunks_exact(step) {
        let (Some(flags), Some(offset)) = (u32_at(d, 0), u32_at(d, 8)) else {
            continue;
        };
        let exponent = i16::from_le_bytes([d[4], d[5]]) as i32;
        let size = u16::from_le_bytes([d[6], d[7]]);
        let name_bytes = &d[DESC_FIXED_LEN..];
        let end = name_bytes
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(name_bytes.len());
        let Ok(name) = std::str::from_utf8(&name_bytes[..end]) else {
            continue;
        };
        let Some((field, typ, unit)) = field_of(name) else {
            continue;
        };
        if flags & TYPE_MASK != typ
            || flags & UNIT_MASK != unit
            || flags & BASE_MASK != BASE_POW10
            || size != 1
        {
            continue;
        }
        // Seconds are kept in ns (exponent -9 gives a scale of 0); counts as they are.
        let scale_pow10 = if unit == UNIT_SECONDS {
            exponent + 9
        } else {
            exponent
        };
        out.counters.push((
            field,
            Counter {
                offset: data_offset + offset as u64,
                scale_pow10,
            },
        ));
    }
    out
}

fn scaled(v: u64, pow10: i32) -> u64 {
    match pow10 {
        0 => v,
        p if p > 0 => v.saturating_mul(10u64.saturating_pow(p as u32)),
        p => v / 10u64.saturating_pow((-p) as u32).max(1),
    }
}

/// A vCPU's open stats fd and where its counters are.
#[derive(Debug)]
pub struct VcpuStats {
    file: File,
    layout: Layout,
}

impl VcpuStats {
    /// Opens the stats of the vCPU whose fd is `vcpu_fd`.
    pub fn open(vcpu_fd: &impl AsRawFd) -> Result<Self, KvmStatsError> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd (or -1); the
        // vCPU fd is open for as long as the borrow lasts.
        let fd = unsafe { libc::ioctl(vcpu_fd.as_raw_fd(), KVM_GET_STATS_FD as _, 0) };
        if fd < 0 {
            return Err(KvmStatsError::Open(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        let mut header = [0u8; HEADER_LEN];
        file.read_exact_at(&mut header, 0)
            .map_err(KvmStatsError::Read)?;
        let field = |i: usize| u32_at(&header, 4 * i).unwrap_or(0) as usize;
        let (name_size, num_desc, desc_offset, data_offset) =
            (field(1), field(2), field(4), field(5));
        let len = num_desc
            .checked_mul(DESC_FIXED_LEN + name_size)
            .filter(|&l| l <= MAX_DESC_BLOCK)
            .ok_or_else(|| {
                KvmStatsError::Layout(format!(
                    "{num_desc} descriptors with {name_size}-byte names"
                ))
            })?;
        let mut descs = vec![0u8; len];
        file.read_exact_at(&mut descs, desc_offset as u64)
            .map_err(KvmStatsError::Read)?;
        let layout = parse(&descs, data_offset as u64, name_size);
        if !layout.counters.iter().any(|(f, _)| *f == Field::Idle) {
            return Err(KvmStatsError::Layout(
                "no halt_wait_ns counter among the vCPU stats".into(),
            ));
        }
        Ok(VcpuStats { file, layout })
    }

    /// The counters now.
    pub fn read(&self) -> Result<VcpuCounters, KvmStatsError> {
        let mut c = VcpuCounters::default();
        for (field, counter) in &self.layout.counters {
            let mut b = [0u8; 8];
            self.file
                .read_exact_at(&mut b, counter.offset)
                .map_err(KvmStatsError::Read)?;
            let v = scaled(u64::from_le_bytes(b), counter.scale_pow10);
            match field {
                Field::Exits => c.exits = v,
                Field::HaltExits => c.halt_exits = v,
                Field::HaltWakeups => c.halt_wakeups = v,
                Field::Idle => c.idle_ns = c.idle_ns.saturating_add(v),
                Field::Blocking => c.blocking = v != 0,
            }
        }
        Ok(c)
    }
}

/// Busy share (0-100) of a vCPU between two readings `dt_ns` apart: the time it was
/// not halted. Time the vCPU thread waited for a host CPU counts as busy (the guest
/// wanted to run). A vCPU halted at both readings with no wake-up in between was
/// idle throughout (KVM has not added that halt's time yet); otherwise the idle
/// time is what the halts that ended in between added, capped at `dt_ns`.
pub fn busy_pct(before: &VcpuCounters, after: &VcpuCounters, dt_ns: u64) -> Option<f64> {
    if dt_ns == 0 {
        return None;
    }
    if before.blocking && after.blocking && after.halt_wakeups == before.halt_wakeups {
        return Some(0.0);
    }
    let idle = after.idle_ns.saturating_sub(before.idle_ns) as f64;
    Some((100.0 * (1.0 - idle / dt_ns as f64)).clamp(0.0, 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(flags: u32, exponent: i16, offset: u32, name: &str, name_size: usize) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&flags.to_le_bytes());
        d.extend_from_slice(&exponent.to_le_bytes());
        d.extend_from_slice(&1u16.to_le_bytes());
        d.extend_from_slice(&offset.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        let mut n = name.as_bytes().to_vec();
        n.resize(name_size, 0);
        d.extend_from_slice(&n);
        d
    }

    #[test]
    fn parse_keeps_only_wanted_well_typed_counters() {
        let ns = 48;
        let mut descs = Vec::new();
        descs.extend(desc(0, 0, 0, "exits", ns));
        descs.extend(desc(UNIT_SECONDS, -9, 8, "halt_wait_ns", ns));
        descs.extend(desc(0, 0, 16, "io_exits", ns)); // not wanted
        descs.extend(desc(1, 0, 24, "halt_exits", ns)); // instant: refused
        descs.extend(desc(UNIT_SECONDS, -6, 32, "halt_poll_fail_ns", ns)); // µs
        descs.extend(desc(TYPE_INSTANT | UNIT_BOOLEAN, 0, 40, "blocking", ns));
        let l = parse(&descs, 1000, ns);
        let got: Vec<(Field, u64, i32)> = l
            .counters
            .iter()
            .map(|(f, c)| (*f, c.offset, c.scale_pow10))
            .collect();
        assert_eq!(
            got,
            vec![
                (Field::Exits, 1000, 0),
                (Field::Idle, 1008, 0),
                (Field::Idle, 1032, 3),
                (Field::Blocking, 1040, 0)
            ]
        );
        assert_eq!(scaled(7, 3), 7000);
        assert_eq!(scaled(7000, -3), 7);
    }

    #[test]
    fn garbage_descriptors_are_skipped() {
        let l = parse(&[0xff; 200], 0, 24);
        assert!(l.counters.is_empty());
    }

    #[test]
    fn busy_is_the_share_not_halted() {
        let a = VcpuCounters {
            idle_ns: 1_000,
            ..Default::default()
        };
        let b = VcpuCounters {
            idle_ns: 251_000,
            ..Default::default()
        };
        assert_eq!(busy_pct(&a, &b, 1_000_000), Some(75.0));
        assert_eq!(busy_pct(&b, &a, 1_000_000), Some(100.0));
        assert_eq!(busy_pct(&a, &b, 0), None);
        // Halted at both readings, no wake-up between: idle throughout.
        let h = VcpuCounters {
            blocking: true,
            halt_wakeups: 4,
            ..Default::default()
        };
        assert_eq!(busy_pct(&h, &h, 1_000_000), Some(0.0));
        // Woke up in between: only the completed halts count.
        let h2 = VcpuCounters {
            halt_wakeups: 5,
            idle_ns: 400_000,
            ..h
        };
        assert_eq!(busy_pct(&h, &h2, 1_000_000), Some(60.0));
    }

    #[test]
    fn real_vcpu_stats_have_exits_and_halt_time() {
        let Some(kvm) = crate::kvm::for_test() else {
            return;
        };
        let vm = kvm.create_vm().expect("create a VM");
        let vcpu = vm.create_vcpu(0).expect("create a vCPU");
        let stats = VcpuStats::open(&vcpu).expect("open the vCPU stats");
        let c = stats.read().expect("read the vCPU stats");
        assert_eq!(c.exits, 0, "a vCPU that never ran has no exits");
        assert!(stats
            .layout
            .counters
            .iter()
            .any(|(f, _)| *f == Field::Exits));
    }
}
