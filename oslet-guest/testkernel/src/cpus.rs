//! CPU discovery: the MP table (Intel MP spec 1.4) and the ACPI MADT.

use crate::io::{checksum, rd16, rd32, rd32a, rd64, rd8, MAPPED_LIMIT};
use crate::startinfo::StartInfo;

pub const MAX_CPUS: usize = 254;

pub struct Cpus {
    pub apic_ids: [u8; MAX_CPUS],
    pub n: usize,
    pub source: &'static str,
}

impl Cpus {
    fn push(&mut self, id: u8) {
        if self.n < MAX_CPUS {
            self.apic_ids[self.n] = id;
            self.n += 1;
        }
    }
}

const fn sig(s: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*s)
}

/// EBDA base from the BIOS data area (segment at 0x40E), if plausible.
pub fn ebda_base() -> Option<u64> {
    let base = (rd16(0x40e) as u64) << 4;
    if (0x1000..0xa0000).contains(&base) {
        Some(base)
    } else {
        None
    }
}

fn scan_mpf(start: u64, end: u64) -> Option<u64> {
    let mut p = start & !15;
    while p + 16 <= end {
        if rd32a(p) == sig(b"_MP_") {
            let len = rd8(p + 8) as u64 * 16;
            if len >= 16 && checksum(p, len) == 0 {
                return Some(p);
            }
        }
        p += 16;
    }
    None
}

fn find_mpf() -> Option<u64> {
    if let Some(e) = ebda_base() {
        if let Some(p) = scan_mpf(e, e + 1024) {
            return Some(p);
        }
    }
    scan_mpf(0x9fc00, 0xa0000).or_else(|| scan_mpf(0xf0000, 0x100000))
}

fn from_mptable(cpus: &mut Cpus) -> bool {
    let Some(mpf) = find_mpf() else { return false };
    let t = rd32(mpf + 4) as u64;
    // t == 0 means a "default configuration" (feature byte 1): not handled.
    if t == 0 || t + 44 > MAPPED_LIMIT || rd32(t) != sig(b"PCMP") {
        return false;
    }
    let len = rd16(t + 4) as u64;
    if len < 44 || checksum(t, len) != 0 {
        return false;
    }
    let count = rd16(t + 34);
    let end = t + len;
    let mut p = t + 44;
    for _ in 0..count {
        if p >= end {
            break;
        }
        match rd8(p) {
            0 => {
                if p + 20 > end {
                    break;
                }
                if rd8(p + 3) & 1 != 0 {
                    cpus.push(rd8(p + 1));
                }
                p += 20;
            }
            1..=4 => p += 8,
            _ => break,
        }
    }
    cpus.n > 0
}

fn rsdp_ok(p: u64) -> bool {
    p != 0
        && p + 36 <= MAPPED_LIMIT
        && rd32(p) == sig(b"RSD ")
        && rd32(p + 4) == sig(b"PTR ")
        && checksum(p, 20) == 0
}

fn scan_rsdp(start: u64, end: u64) -> Option<u64> {
    let mut p = start & !15;
    while p + 20 <= end {
        if rd32a(p) == sig(b"RSD ") && rsdp_ok(p) {
            return Some(p);
        }
        p += 16;
    }
    None
}

fn find_rsdp(si: Option<&StartInfo>) -> Option<u64> {
    if let Some(si) = si {
        if rsdp_ok(si.rsdp) {
            return Some(si.rsdp);
        }
    }
    if let Some(e) = ebda_base() {
        if let Some(p) = scan_rsdp(e, e + 1024) {
            return Some(p);
        }
    }
    scan_rsdp(0xe0000, 0x100000)
}

/// Length of a valid ACPI table with signature `s` at `t`, else None.
fn table(t: u64, s: &[u8; 4]) -> Option<u64> {
    if t == 0 || t + 36 > MAPPED_LIMIT || rd32(t) != sig(s) {
        return None;
    }
    let len = rd32(t + 4) as u64;
    if !(36..=(1 << 20)).contains(&len) || t + len > MAPPED_LIMIT || checksum(t, len) != 0 {
        return None;
    }
    Some(len)
}

fn parse_madt(t: u64, len: u64, cpus: &mut Cpus) {
    let end = t + len;
    let mut p = t + 44;
    while p + 2 <= end {
        let (typ, l) = (rd8(p), rd8(p + 1) as u64);
        if l < 2 || p + l > end {
            break;
        }
        // Type 0: processor local APIC; flags bit 0 = enabled.
        if typ == 0 && l >= 8 && rd32(p + 4) & 1 != 0 {
            cpus.push(rd8(p + 3));
        }
        p += l;
    }
}

fn from_acpi(si: Option<&StartInfo>, cpus: &mut Cpus) -> bool {
    let Some(rsdp) = find_rsdp(si) else {
        return false;
    };
    let mut sdt = 0;
    let mut width = 4;
    if rd8(rsdp + 15) >= 2 {
        let x = rd64(rsdp + 24);
        if x < MAPPED_LIMIT && table(x, b"XSDT").is_some() {
            sdt = x;
            width = 8;
        }
    }
    if sdt == 0 {
        sdt = rd32(rsdp + 16) as u64;
        if table(sdt, b"RSDT").is_none() {
            return false;
        }
    }
    let len = rd32(sdt + 4) as u64;
    let mut e = sdt + 36;
    while e + width <= sdt + len {
        let t = if width == 8 { rd64(e) } else { rd32(e) as u64 };
        if t < MAPPED_LIMIT {
            if let Some(l) = table(t, b"APIC") {
                parse_madt(t, l, cpus);
                return cpus.n > 0;
            }
        }
        e += width;
    }
    false
}

/// The MP table first (the oslet VMM's and QEMU microvm's convention), then
/// the ACPI MADT; if both exist and the MADT lists more enabled CPUs, the
/// MADT wins (SeaBIOS's MP table lists one CPU per package, so with
/// `-M pc -smp 4` it describes 1 CPU; Linux prefers ACPI for the same
/// reason). Neither: 1 CPU, "nothing".
pub fn discover(si: Option<&StartInfo>) -> Cpus {
    let mut mp = Cpus {
        apic_ids: [0; MAX_CPUS],
        n: 0,
        source: "mptable",
    };
    let mut acpi = Cpus {
        apic_ids: [0; MAX_CPUS],
        n: 0,
        source: "acpi",
    };
    if !from_mptable(&mut mp) {
        mp.n = 0;
    }
    if !from_acpi(si, &mut acpi) {
        acpi.n = 0;
    }
    if acpi.n > mp.n {
        acpi
    } else if mp.n > 0 {
        mp
    } else {
        Cpus {
            apic_ids: [0; MAX_CPUS],
            n: 0,
            source: "nothing",
        }
    }
}
