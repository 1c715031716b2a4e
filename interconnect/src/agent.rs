//! The guest agent's report: what a guest tells its own VMM about itself (load,
//! CPUs, memory, uptime), once a second, as one message on the OSlet's *agent
//! link* — a link like any other whose side A is the guest and whose side B is the
//! VMM process itself. `oslet top` shows the latest report of every OSlet.
//!
//! A report is 64 bytes, little-endian:
//!
//! | offset | size | what |
//! | --- | --- | --- |
//! | 0 | 4 | magic `"OSAG"` (u32 `0x4741_534F`) |
//! | 4 | 4 | version (1) |
//! | 8 | 8 | sequence number (one more per report) |
//! | 16 | 8 | guest uptime, ms |
//! | 24 | 12 | load average over 1, 5, 15 minutes, × 1000 (u32 each) |
//! | 36 | 4 | CPUs online in the guest |
//! | 40 | 4 | runnable tasks |
//! | 44 | 4 | reserved, 0 |
//! | 48 | 8 | memory the guest has, KiB |
//! | 56 | 8 | memory available to the guest's programs, KiB |
//!
//! The VMM reads reports from a guest it does not trust: [`AgentReport::decode`]
//! checks the size, magic, version and that the numbers are consistent.

/// `"OSAG"` as a little-endian u32.
pub const REPORT_MAGIC: u32 = 0x4741_534f;
/// The report layout's version.
pub const REPORT_VERSION: u32 = 1;
/// Bytes of one report.
pub const REPORT_BYTES: usize = 64;
/// Ring bytes of the agent link (the smallest valid ring: a report a second).
pub const AGENT_RING_BYTES: u32 = 4096;

/// One report from a guest agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AgentReport {
    /// One more per report.
    pub seq: u64,
    /// Guest uptime, ms.
    pub uptime_ms: u64,
    /// Load average over 1, 5 and 15 minutes, × 1000.
    pub load_milli: [u32; 3],
    /// CPUs online in the guest.
    pub cpus_online: u32,
    /// Runnable tasks.
    pub procs_running: u32,
    /// Memory the guest has, KiB.
    pub mem_total_kib: u64,
    /// Memory available to the guest's programs, KiB.
    pub mem_available_kib: u64,
}

/// Why a report was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportError {
    /// Not `REPORT_BYTES` long.
    Size(usize),
    /// The magic is wrong.
    Magic(u32),
    /// A version this code does not know.
    Version(u32),
    /// Available memory above total, or no CPU online.
    Inconsistent,
}

impl core::fmt::Display for ReportError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ReportError::Size(n) => write!(f, "{n} bytes, not {REPORT_BYTES}"),
            ReportError::Magic(m) => write!(f, "magic {m:#010x}, not {REPORT_MAGIC:#010x}"),
            ReportError::Version(v) => write!(f, "version {v}, not {REPORT_VERSION}"),
            ReportError::Inconsistent => {
                write!(f, "available memory above total, or no CPU online")
            }
        }
    }
}

fn put32(out: &mut [u8; REPORT_BYTES], at: usize, v: u32) {
    if let Some(s) = out.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn put64(out: &mut [u8; REPORT_BYTES], at: usize, v: u64) {
    if let Some(s) = out.get_mut(at..at + 8) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn get32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

fn get64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

impl AgentReport {
    /// The report's 64 bytes.
    pub fn encode(&self) -> [u8; REPORT_BYTES] {
        let mut out = [0u8; REPORT_BYTES];
        put32(&mut out, 0, REPORT_MAGIC);
        put32(&mut out, 4, REPORT_VERSION);
        put64(&mut out, 8, self.seq);
        put64(&mut out, 16, self.uptime_ms);
        for (i, l) in self.load_milli.iter().enumerate() {
            put32(&mut out, 24 + 4 * i, *l);
        }
        put32(&mut out, 36, self.cpus_online);
        put32(&mut out, 40, self.procs_running);
        put64(&mut out, 48, self.mem_total_kib);
        put64(&mut out, 56, self.mem_available_kib);
        out
    }

    /// Reads and checks a report a guest sent.
    pub fn decode(b: &[u8]) -> Result<Self, ReportError> {
        if b.len() != REPORT_BYTES {
            return Err(ReportError::Size(b.len()));
        }
        match get32(b, 0) {
            REPORT_MAGIC => {}
            m => return Err(ReportError::Magic(m)),
        }
        match get32(b, 4) {
            REPORT_VERSION => {}
            v => return Err(ReportError::Version(v)),
        }
        let r = AgentReport {
            seq: get64(b, 8),
            uptime_ms: get64(b, 16),
            load_milli: [get32(b, 24), get32(b, 28), get32(b, 32)],
            cpus_online: get32(b, 36),
            procs_running: get32(b, 40),
            mem_total_kib: get64(b, 48),
            mem_available_kib: get64(b, 56),
        };
        if r.mem_available_kib > r.mem_total_kib || r.cpus_online == 0 {
            return Err(ReportError::Inconsistent);
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AgentReport {
        AgentReport {
            seq: 7,
            uptime_ms: 123_456,
            load_milli: [1500, 750, 10],
            cpus_online: 4,
            procs_running: 2,
            mem_total_kib: 1 << 20,
            mem_available_kib: 600_000,
        }
    }

    #[test]
    fn reports_round_trip() {
        let b = sample().encode();
        assert_eq!(&b[..4], b"OSAG");
        assert_eq!(AgentReport::decode(&b), Ok(sample()));
    }

    #[test]
    fn bad_reports_are_refused_with_the_reason() {
        let b = sample().encode();
        assert_eq!(AgentReport::decode(&b[..63]), Err(ReportError::Size(63)));
        let mut m = b;
        m[0] = b'X';
        assert!(matches!(
            AgentReport::decode(&m),
            Err(ReportError::Magic(_))
        ));
        let mut v = b;
        v[4] = 9;
        assert_eq!(AgentReport::decode(&v), Err(ReportError::Version(9)));
        let mut r = sample();
        r.mem_available_kib = r.mem_total_kib + 1;
        assert_eq!(
            AgentReport::decode(&r.encode()),
            Err(ReportError::Inconsistent)
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..128)) {
            let _ = AgentReport::decode(&bytes);
        }
    }
}
