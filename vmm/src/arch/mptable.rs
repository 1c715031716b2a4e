//! The Intel MultiProcessor Specification 1.4 table that tells a guest about its
//! CPUs, its IOAPIC and how ISA interrupts are wired. Linux (without ACPI) and the
//! oslet test kernel both find their CPUs through it.
//!
//! The table is built as bytes (every field little-endian, per the spec) and written
//! into the EBDA, which the e820 map keeps reserved.

use super::layout::{EBDA_START, IOAPIC_START, LAPIC_START};

/// Most vCPUs one MP table describes: APIC IDs 0..=253, the IOAPIC takes the next ID.
pub const MAX_CPUS: usize = 254;

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const IOAPIC_PINS: u8 = 24;
const CPU_FEATURE_APIC: u32 = 1 << 9;
const CPU_FEATURE_FPU: u32 = 1;

/// Errors building the MP table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MpTableError {
    /// Too many vCPUs for an MP table.
    #[error("{0} vCPUs do not fit in an MP table (at most {MAX_CPUS})")]
    TooManyCpus(usize),
    /// No vCPUs at all.
    #[error("an MP table needs at least one vCPU")]
    NoCpus,
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the MP floating pointer followed by the configuration table for
/// `num_cpus` vCPUs with APIC IDs 0..num_cpus, to be placed at `base`.
/// Returns the bytes to write at `base`.
pub fn build(num_cpus: usize, base: u64) -> Result<Vec<u8>, MpTableError> {
    if num_cpus == 0 {
        return Err(MpTableError::NoCpus);
    }
    if num_cpus > MAX_CPUS {
        return Err(MpTableError::TooManyCpus(num_cpus));
    }
    let ioapic_id = num_cpus as u8;
    let table_addr = base + 16;

    // Configuration table entries.
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for id in 0..num_cpus {
        let mut e = [0u8; 20];
        e[0] = 0; // processor
        e[1] = id as u8; // local APIC id
        e[2] = APIC_VERSION;
        e[3] = 0x01 | if id == 0 { 0x02 } else { 0 }; // enabled, BSP
        e[4..8].copy_from_slice(&0x600u32.to_le_bytes()); // signature: family 6
        e[8..12].copy_from_slice(&(CPU_FEATURE_APIC | CPU_FEATURE_FPU).to_le_bytes());
        entries.extend_from_slice(&e);
        count += 1;
    }
    // Bus 0: ISA.
    entries.extend_from_slice(&[1, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
    count += 1;
    // The IOAPIC.
    let mut io = [0u8; 8];
    io[0] = 2;
    io[1] = ioapic_id;
    io[2] = IOAPIC_VERSION;
    io[3] = 1; // enabled
    io[4..8].copy_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    entries.extend_from_slice(&io);
    count += 1;
    // ISA IRQ n -> IOAPIC pin n: KVM's default GSI routing sends GSI n (n < 16) to
    // both the PIC and IOAPIC pin n, so the identity mapping is the truth.
    for irq in 0..IOAPIC_PINS {
        entries.extend_from_slice(&[3, 0, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // Local interrupts: LINT0 ExtINT, LINT1 NMI, to all local APICs.
    entries.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_len = 44 + entries.len();
    let mut table = vec![0u8; table_len];
    table[0..4].copy_from_slice(b"PCMP");
    table[4..6].copy_from_slice(&(table_len as u16).to_le_bytes());
    table[6] = 4; // spec revision 1.4
    table[8..16].copy_from_slice(b"OSLET   ");
    table[16..28].copy_from_slice(b"OSLET-VMM   ");
    table[34..36].copy_from_slice(&count.to_le_bytes());
    table[36..40].copy_from_slice(&(LAPIC_START as u32).to_le_bytes());
    table[44..].copy_from_slice(&entries);
    table[7] = checksum(&table);

    let mut fp = [0u8; 16];
    fp[0..4].copy_from_slice(b"_MP_");
    fp[4..8].copy_from_slice(&(table_addr as u32).to_le_bytes());
    fp[8] = 1; // length in 16-byte units
    fp[9] = 4; // revision 1.4
    fp[10] = checksum(&fp);

    let mut out = fp.to_vec();
    out.extend_from_slice(&table);
    Ok(out)
}

/// Where the MP table goes.
pub const MPTABLE_START: u64 = EBDA_START;

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn floating_pointer_and_table_checksums_are_zero() {
        let t = build(8, MPTABLE_START).unwrap();
        assert_eq!(&t[0..4], b"_MP_");
        assert_eq!(sum(&t[0..16]), 0);
        let len = u16::from_le_bytes([t[20], t[21]]) as usize;
        assert_eq!(&t[16..20], b"PCMP");
        assert_eq!(sum(&t[16..16 + len]), 0);
    }

    #[test]
    fn table_describes_every_cpu_with_the_first_as_bsp() {
        let t = build(4, MPTABLE_START).unwrap();
        let entries = &t[16 + 44..];
        let cpus: Vec<(u8, u8)> = (0..4)
            .map(|i| (entries[i * 20 + 1], entries[i * 20 + 3]))
            .collect();
        assert_eq!(cpus, vec![(0, 3), (1, 1), (2, 1), (3, 1)]);
        assert_eq!(entries[4 * 20], 1, "bus entry follows the processors");
    }

    #[test]
    fn pointer_points_right_after_itself() {
        let t = build(1, 0x9fc00).unwrap();
        assert_eq!(u32::from_le_bytes([t[4], t[5], t[6], t[7]]), 0x9fc10);
    }

    #[test]
    fn too_many_or_zero_cpus_are_refused() {
        assert_eq!(build(255, 0), Err(MpTableError::TooManyCpus(255)));
        assert_eq!(build(0, 0), Err(MpTableError::NoCpus));
    }
}
