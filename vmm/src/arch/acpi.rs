//! ACPI tables that tell a guest about its CPUs, its interrupt controllers and COM1.
//!
//! Kernels built without `CONFIG_X86_MPPARSE` (Debian's cloud kernels among them) do
//! not read the MP table; they find their CPUs only through the MADT. The tables
//! describe a *hardware-reduced* ACPI platform, as Firecracker and Cloud Hypervisor
//! do: no PM1 blocks, no SCI, no GPEs, no FACS, nothing for the VMM to emulate.
//!
//! Everything is built as bytes (all fields little-endian) to be written at
//! [`ACPI_START`], inside the legacy BIOS area the e820 map keeps reserved. The RSDP
//! comes first, so both `boot_params.acpi_rsdp_addr` / PVH's `rsdp_paddr` and Linux's
//! scan of 0xE0000..0xFFFFF find it. Offsets from the base:
//!
//! ```text
//! 0x000  RSDP  36 bytes, revision 2, points at the XSDT (no RSDT)
//! 0x030  XSDT  52 bytes: FADT, MADT
//! 0x070  FADT  276 bytes, revision 6.3, HW_REDUCED_ACPI, X_DSDT -> DSDT
//! 0x190  DSDT  104 bytes: \_SB.COM1 (PNP0501, I/O 0x3f8-0x3ff, GSI 4)
//! 0x200  MADT  62 + 8 * vCPUs bytes (2094, ending at 0xa2e, for 254 vCPUs)
//! ```
//!
//! Choices, and why:
//!
//! * MADT: one enabled Processor Local APIC per vCPU (APIC ID = ACPI UID = index),
//!   one IOAPIC with ID `num_cpus` (as in the MP table) and GSI base 0, and one
//!   Local APIC NMI entry wiring LINT1 on all processors to NMI.
//! * No Interrupt Source Overrides. KVM's default GSI routing, which oslet uses,
//!   sends GSI n (n < 16) to PIC pin n and IOAPIC pin n, so ISA IRQ n *is* GSI n,
//!   the in-kernel PIT included (IRQ 0 arrives at IOAPIC pin 0). QEMU's IRQ0->GSI2
//!   override matches routing QEMU installs itself; here it would be wrong. All ISA
//!   sources are edge/active-high, the bus default, so no flag overrides either.
//!   (Linux would also take an override of IRQ 0 for the SCI, since a hardware-reduced
//!   FADT has SCI_INT 0.)
//! * MADT PCAT_COMPAT = 1: KVM's in-kernel irqchip does contain a dual 8259, and the
//!   flag tells an OS to mask it before using the APICs. Linux ignores the flag; OSes
//!   that trust a clear flag leave the PIC (vector base 0 after reset) live.
//! * The DSDT describes COM1. In hardware-reduced mode Linux runs without the legacy
//!   PIC (`nr_legacy_irqs() == 0`), so ISA IRQs are not identity-mapped and the
//!   8250 driver's built-in "IRQ 4" is not GSI 4; the PNP0501 device with an
//!   extended Interrupt descriptor (edge, active-high, as the irqfd pulses) gives
//!   the port its real interrupt. The i8042 is not described: it exists only for
//!   the reset command.
//! * FADT: HW_REDUCED_ACPI; PWR_BUTTON and SLP_BUTTON (no fixed-feature buttons);
//!   WBINVD (required of new systems); RESET_REG_SUP with the reset register at the
//!   i8042 command port, value 0xFE, which the VMM already treats as a reset.
//!   IAPC_BOOT_ARCH: VGA not present, MSI not supported and PCIe ASPM controls, as
//!   Firecracker sets them, plus CMOS RTC not present (oslet emulates no port
//!   0x70); the 8042 flag is clear so Linux does not probe a PS/2 controller.
//!   No sleep registers, so ACPI power-off (S5) is not offered.

use super::layout::{EBDA_START, HIMEM_START, IOAPIC_START, LAPIC_START};
use crate::devices::serial::{COM1_BASE, COM1_IRQ};
use crate::devices::I8042_BASE;

/// Where the tables go: the RSDP first, on a 16-byte boundary Linux scans.
pub const ACPI_START: u64 = 0xe_0000;

// The tables must stay in the hole the e820 map reserves below the kernel.
const _: () = assert!(ACPI_START >= EBDA_START && ACPI_START < HIMEM_START);

/// Most vCPUs the MADT describes: xAPIC IDs 0..=253, the IOAPIC takes the next ID
/// (0xFF is the broadcast ID).
pub const MAX_CPUS: usize = 254;

const OEM_ID: [u8; 6] = *b"OSLET ";
const OEM_TABLE_ID: [u8; 8] = *b"OSLETVMM";
const OEM_REVISION: u32 = 1;
const CREATOR_ID: [u8; 4] = *b"OSLT";
const CREATOR_REVISION: u32 = 1;
const HYPERVISOR_VENDOR_ID: [u8; 8] = *b"OSLETVMM";

/// Every table starts on a 16-byte boundary (the RSDP must; the rest look tidy).
const TABLE_ALIGN: usize = 16;
const HEADER_LEN: usize = 36;
const RSDP_LEN: usize = 36;
const FADT_LEN: usize = 276;
const XSDT_ENTRIES: usize = 2;

const XSDT_REVISION: u8 = 1;
const FADT_MAJOR: u8 = 6;
const FADT_MINOR: u8 = 3;
/// DSDT revision 2 and up: AML integers are 64 bits wide.
const DSDT_REVISION: u8 = 2;
/// MADT revision of ACPI 6.3.
const MADT_REVISION: u8 = 5;

const FADT_F_WBINVD: u32 = 1 << 0;
const FADT_F_PWR_BUTTON: u32 = 1 << 4;
const FADT_F_SLP_BUTTON: u32 = 1 << 5;
const FADT_F_RESET_REG_SUP: u32 = 1 << 10;
const FADT_F_HW_REDUCED_ACPI: u32 = 1 << 20;

const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
const IAPC_MSI_NOT_SUPPORTED: u16 = 1 << 3;
const IAPC_PCIE_ASPM_CONTROLS: u16 = 1 << 4;
const IAPC_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

/// P_LVL2_LAT / P_LVL3_LAT above 100 / 1000 us: C2 and C3 are not supported.
const P_LVL_LAT_UNSUPPORTED: u16 = 0x0fff;
/// Generic Address Structure: system I/O space.
const GAS_SYSTEM_IO: u8 = 1;
/// Generic Address Structure: byte access.
const GAS_ACCESS_BYTE: u8 = 1;
/// The i8042 command that pulses the CPU reset line.
const I8042_RESET_COMMAND: u8 = 0xfe;

const MADT_PCAT_COMPAT: u32 = 1;
const MADT_TYPE_LOCAL_APIC: u8 = 0;
const MADT_TYPE_IOAPIC: u8 = 1;
const MADT_TYPE_LOCAL_APIC_NMI: u8 = 4;
const MADT_LOCAL_APIC_ENABLED: u32 = 1;
/// ACPI processor UID meaning "all processors".
const MADT_ALL_PROCESSORS: u8 = 0xff;
/// MPS INTI flags 0: polarity and trigger as the bus defines them (QEMU does the same).
const MADT_INTI_CONFORMING: u16 = 0;

/// Errors building the ACPI tables.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AcpiError {
    /// Too many vCPUs for xAPIC MADT entries.
    #[error("{0} vCPUs do not fit in the MADT (at most {MAX_CPUS})")]
    TooManyCpus(usize),
    /// No vCPUs at all.
    #[error("the ACPI tables need at least one vCPU")]
    NoCpus,
    /// The RSDP must sit on a 16-byte boundary.
    #[error("ACPI tables at {0:#x}: the RSDP needs a 16-byte aligned address")]
    MisalignedBase(u64),
    /// The tables would run past the end of the physical address space.
    #[error("ACPI tables at {0:#x} run past the end of the address space")]
    AddressOverflow(u64),
}

/// The ACPI tables of one OSlet, ready to be written at `rsdp_addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiTables {
    /// Guest physical address of the RSDP (the base the tables were built for).
    pub rsdp_addr: u64,
    /// RSDP, XSDT, FADT, DSDT and MADT, laid out from `rsdp_addr` on.
    pub bytes: Vec<u8>,
}

/// A virtio-mmio device to declare in the DSDT (Linux's `LNRO0005`): in
/// hardware-reduced mode, and with kernels built without
/// `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES` (Debian's), this is how Linux finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDevice {
    /// Guest physical base of its register page.
    pub addr: u32,
    /// Bytes of registers.
    pub len: u32,
    /// Its interrupt (an IOAPIC GSI, edge, active high).
    pub gsi: u32,
}

/// Builds the tables for `num_cpus` vCPUs with APIC IDs 0..num_cpus, to be written at
/// `base` (normally [`ACPI_START`]). All pointers in them are absolute, from `base`.
pub fn build(num_cpus: usize, base: u64) -> Result<AcpiTables, AcpiError> {
    build_with_devices(num_cpus, base, &[])
}

/// [`build`], with `devices` declared in the DSDT after COM1.
pub fn build_with_devices(
    num_cpus: usize,
    base: u64,
    devices: &[MmioDevice],
) -> Result<AcpiTables, AcpiError> {
    if num_cpus == 0 {
        return Err(AcpiError::NoCpus);
    }
    if num_cpus > MAX_CPUS {
        return Err(AcpiError::TooManyCpus(num_cpus));
    }
    if base % TABLE_ALIGN as u64 != 0 {
        return Err(AcpiError::MisalignedBase(base));
    }

    let dsdt = dsdt(devices);
    let madt = madt(num_cpus);

    let xsdt_off = align(RSDP_LEN);
    let fadt_off = align(xsdt_off + HEADER_LEN + 8 * XSDT_ENTRIES);
    let dsdt_off = align(fadt_off + FADT_LEN);
    let madt_off = align(dsdt_off + dsdt.len());
    let end = madt_off + madt.len();

    let addr = |off: usize| {
        base.checked_add(off as u64)
            .ok_or(AcpiError::AddressOverflow(base))
    };
    // The last byte must be addressable too.
    addr(end - 1)?;

    let fadt = fadt(addr(dsdt_off)?);
    let xsdt = sdt(
        b"XSDT",
        XSDT_REVISION,
        &[addr(fadt_off)?.to_le_bytes(), addr(madt_off)?.to_le_bytes()].concat(),
    );
    let rsdp = rsdp(addr(xsdt_off)?);

    let mut bytes = vec![0u8; end];
    for (off, table) in [
        (0, &rsdp[..]),
        (xsdt_off, &xsdt[..]),
        (fadt_off, &fadt[..]),
        (dsdt_off, &dsdt[..]),
        (madt_off, &madt[..]),
    ] {
        bytes[off..off + table.len()].copy_from_slice(table);
    }
    Ok(AcpiTables {
        rsdp_addr: base,
        bytes,
    })
}

fn align(off: usize) -> usize {
    off.next_multiple_of(TABLE_ALIGN)
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// The ACPI 2.0+ Root System Description Pointer, leading to the XSDT only.
fn rsdp(xsdt_addr: u64) -> [u8; RSDP_LEN] {
    let mut r = [0u8; RSDP_LEN];
    r[0..8].copy_from_slice(b"RSD PTR ");
    r[9..15].copy_from_slice(&OEM_ID);
    // Revision 2: ACPI 2.0 and later. RsdtAddress (16..20) stays 0; an OS that
    // reads revision 2 takes the XSDT.
    r[15] = 2;
    r[20..24].copy_from_slice(&(RSDP_LEN as u32).to_le_bytes());
    r[24..32].copy_from_slice(&xsdt_addr.to_le_bytes());
    r[8] = checksum(&r[..20]); // covers the ACPI 1.0 part
    r[32] = checksum(&r); // covers all 36 bytes, the first checksum included
    r
}

/// A system description table: the 36-byte header, then `body`.
fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let len = HEADER_LEN + body.len();
    let mut t = Vec::with_capacity(len);
    t.extend_from_slice(signature);
    t.extend_from_slice(&(len as u32).to_le_bytes());
    t.push(revision);
    t.push(0); // checksum, filled in below
    t.extend_from_slice(&OEM_ID);
    t.extend_from_slice(&OEM_TABLE_ID);
    t.extend_from_slice(&OEM_REVISION.to_le_bytes());
    t.extend_from_slice(&CREATOR_ID);
    t.extend_from_slice(&CREATOR_REVISION.to_le_bytes());
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

/// The Fixed ACPI Description Table of a hardware-reduced platform.
fn fadt(dsdt_addr: u64) -> Vec<u8> {
    // Offsets below are from the start of the table, as in the ACPI spec.
    let mut t = [0u8; FADT_LEN];
    // 36 FIRMWARE_CTRL, 40 DSDT: 0; no FACS, and the DSDT is given by X_DSDT only.
    // 45 Preferred_PM_Profile 0 (unspecified); 46 SCI_INT 0: no SCI.
    t[96..98].copy_from_slice(&P_LVL_LAT_UNSUPPORTED.to_le_bytes());
    t[98..100].copy_from_slice(&P_LVL_LAT_UNSUPPORTED.to_le_bytes());
    let iapc = IAPC_VGA_NOT_PRESENT
        | IAPC_MSI_NOT_SUPPORTED
        | IAPC_PCIE_ASPM_CONTROLS
        | IAPC_CMOS_RTC_NOT_PRESENT;
    t[109..111].copy_from_slice(&iapc.to_le_bytes());
    let flags = FADT_F_WBINVD
        | FADT_F_PWR_BUTTON
        | FADT_F_SLP_BUTTON
        | FADT_F_RESET_REG_SUP
        | FADT_F_HW_REDUCED_ACPI;
    t[112..116].copy_from_slice(&flags.to_le_bytes());
    // 116 RESET_REG: the i8042 command port, one byte.
    t[116] = GAS_SYSTEM_IO;
    t[117] = 8; // register bit width
    t[118] = 0; // bit offset
    t[119] = GAS_ACCESS_BYTE;
    t[120..128].copy_from_slice(&(u64::from(I8042_BASE) + 4).to_le_bytes());
    t[128] = I8042_RESET_COMMAND; // RESET_VALUE
    t[131] = FADT_MINOR;
    // 140 X_DSDT; the X_ PM/GPE blocks and the sleep registers after it stay empty.
    t[140..148].copy_from_slice(&dsdt_addr.to_le_bytes());
    t[268..276].copy_from_slice(&HYPERVISOR_VENDOR_ID);
    sdt(b"FACP", FADT_MAJOR, &t[HEADER_LEN..])
}

/// The Multiple APIC Description Table: every vCPU's local APIC, the IOAPIC, LINT1.
fn madt(num_cpus: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(8 + 8 * num_cpus + 12 + 6);
    body.extend_from_slice(&(LAPIC_START as u32).to_le_bytes());
    body.extend_from_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    for id in 0..num_cpus {
        // ACPI processor UID, then APIC ID; num_cpus <= MAX_CPUS keeps both in a u8.
        body.extend_from_slice(&[MADT_TYPE_LOCAL_APIC, 8, id as u8, id as u8]);
        body.extend_from_slice(&MADT_LOCAL_APIC_ENABLED.to_le_bytes());
    }
    body.extend_from_slice(&[MADT_TYPE_IOAPIC, 12, num_cpus as u8, 0]);
    body.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes()); // GSI base
    body.extend_from_slice(&[MADT_TYPE_LOCAL_APIC_NMI, 6, MADT_ALL_PROCESSORS]);
    body.extend_from_slice(&MADT_INTI_CONFORMING.to_le_bytes());
    body.push(1); // LINT1
    sdt(b"APIC", MADT_REVISION, &body)
}

// AML, the byte code of the DSDT: just enough of it to declare COM1.
const AML_ZERO_OP: u8 = 0x00;
const AML_NAME_OP: u8 = 0x08;
const AML_DWORD_PREFIX: u8 = 0x0c;
const AML_STRING_PREFIX: u8 = 0x0d;
const AML_BUFFER_OP: u8 = 0x11;
const AML_BYTE_PREFIX: u8 = 0x0a;
const AML_WORD_PREFIX: u8 = 0x0b;
const AML_EXT_OP_PREFIX: u8 = 0x5b;
const AML_DEVICE_OP: u8 = 0x82;
const AML_DUAL_NAME_PREFIX: u8 = 0x2e;

/// The Differentiated System Description Table:
///
/// ```text
/// Device (\_SB.COM1) {
///     Name (_HID, EisaId ("PNP0501"))
///     Name (_UID, Zero)
///     Name (_DDN, "COM1")
///     Name (_CRS, ResourceTemplate () {
///         IO (Decode16, 0x03F8, 0x03F8, 0x00, 0x08)
///         Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { 4 }
///     })
/// }
/// ```
fn dsdt(devices: &[MmioDevice]) -> Vec<u8> {
    // "_SB.COM1", relative to the root scope the DSDT loads into (iasl's encoding).
    let mut path = vec![AML_DUAL_NAME_PREFIX];
    path.extend_from_slice(b"_SB_COM1");
    let mut hid = vec![AML_DWORD_PREFIX];
    hid.extend_from_slice(&eisa_id(b"PNP0501").to_le_bytes());
    let device = aml_device(
        &path,
        &[
            aml_name(b"_HID", &hid),
            aml_name(b"_UID", &[AML_ZERO_OP]),
            aml_name(b"_DDN", &aml_string(b"COM1")),
            aml_name(b"_CRS", &aml_buffer(&com1_resources())),
        ]
        .concat(),
    );
    let mut body = device;
    for (i, d) in devices.iter().enumerate() {
        body.extend(virtio_mmio_device(i, d));
    }
    sdt(b"DSDT", DSDT_REVISION, &body)
}

/// ```text
/// Device (\_SB.V00n) {
///     Name (_HID, "LNRO0005")
///     Name (_UID, n)
///     Name (_CRS, ResourceTemplate () {
///         Memory32Fixed (ReadWrite, addr, len)
///         Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { gsi }
///     })
/// }
/// ```
fn virtio_mmio_device(index: usize, d: &MmioDevice) -> Vec<u8> {
    let n = (index % 1000) as u32;
    let mut path = vec![AML_DUAL_NAME_PREFIX];
    path.extend_from_slice(b"_SB_V");
    path.extend_from_slice(format!("{n:03}").as_bytes());
    let mut crs = Vec::new();
    // Memory32Fixed (large item 0x86, 9 bytes): read-write, base, length.
    crs.extend_from_slice(&[0x86, 9, 0, 1]);
    crs.extend_from_slice(&d.addr.to_le_bytes());
    crs.extend_from_slice(&d.len.to_le_bytes());
    // Extended interrupt: consumer, edge, active-high, exclusive; one GSI.
    crs.extend_from_slice(&[0x89, 6, 0, 0b0000_0011, 1]);
    crs.extend_from_slice(&d.gsi.to_le_bytes());
    crs.extend_from_slice(&[0x79, 0]);
    // The shortest integer encoding, as iasl writes it.
    let uid = match n {
        0 => vec![AML_ZERO_OP],
        1 => vec![0x01],
        2..=255 => vec![AML_BYTE_PREFIX, n as u8],
        _ => {
            let [lo, hi] = (n as u16).to_le_bytes();
            vec![AML_WORD_PREFIX, lo, hi]
        }
    };
    aml_device(
        &path,
        &[
            aml_name(b"_HID", &aml_string(b"LNRO0005")),
            aml_name(b"_UID", &uid),
            aml_name(b"_CRS", &aml_buffer(&crs)),
        ]
        .concat(),
    )
}

/// COM1's resource template: its eight ports and its interrupt.
fn com1_resources() -> Vec<u8> {
    let mut r = Vec::new();
    // I/O port descriptor (small item 0x08, 7 bytes): 16-bit decode, min = max.
    r.extend_from_slice(&[0x47, 0x01]);
    r.extend_from_slice(&COM1_BASE.to_le_bytes());
    r.extend_from_slice(&COM1_BASE.to_le_bytes());
    // Alignment, length.
    r.extend_from_slice(&[0x00, 8]);
    // Extended interrupt descriptor (large item 0x89, 6 bytes): consumer, edge,
    // active-high, exclusive; one interrupt. It names a GSI, not an ISA IRQ.
    r.extend_from_slice(&[0x89, 6, 0, 0b0000_0011, 1]);
    r.extend_from_slice(&COM1_IRQ.to_le_bytes());
    // End tag; a zero checksum means "treat as valid".
    r.extend_from_slice(&[0x79, 0]);
    r
}

/// A 7-character EISA ID ("PNP0501") compressed into the 32-bit form `EisaId()` makes:
/// three 5-bit letters and four hex digits, stored big-endian.
fn eisa_id(id: &[u8; 7]) -> u32 {
    let letter = |c: u8| u16::from(c.wrapping_sub(b'@') & 0x1f);
    let hex = |c: u8| char::from(c).to_digit(16).unwrap_or(0) as u16;
    let vendor = (letter(id[0]) << 10) | (letter(id[1]) << 5) | letter(id[2]);
    let product = (hex(id[3]) << 12) | (hex(id[4]) << 8) | (hex(id[5]) << 4) | hex(id[6]);
    let [v0, v1] = vendor.to_be_bytes();
    let [p0, p1] = product.to_be_bytes();
    u32::from_le_bytes([v0, v1, p0, p1])
}

/// AML PkgLength for `contents` bytes that follow it; it counts its own bytes too.
/// One byte up to 63, else a lead byte with the count of extra bytes (up to 2^28).
fn pkg_length(contents: usize) -> Vec<u8> {
    if contents + 1 < 1 << 6 {
        return vec![(contents + 1) as u8];
    }
    let extra = if contents + 2 < 1 << 12 {
        1
    } else if contents + 3 < 1 << 20 {
        2
    } else {
        3
    };
    let total = contents + 1 + extra;
    let mut v = vec![((extra as u8) << 6) | (total & 0x0f) as u8];
    v.extend((0..extra).map(|i| (total >> (4 + 8 * i)) as u8));
    v
}

fn aml_name(name: &[u8; 4], value: &[u8]) -> Vec<u8> {
    [&[AML_NAME_OP][..], name, value].concat()
}

fn aml_string(s: &[u8]) -> Vec<u8> {
    [&[AML_STRING_PREFIX][..], s, &[0]].concat()
}

fn aml_buffer(data: &[u8]) -> Vec<u8> {
    let size = match u8::try_from(data.len()) {
        Ok(n) => vec![AML_BYTE_PREFIX, n],
        Err(_) => {
            let [lo, hi] = (data.len() as u16).to_le_bytes();
            vec![AML_WORD_PREFIX, lo, hi]
        }
    };
    let mut b = vec![AML_BUFFER_OP];
    b.extend(pkg_length(size.len() + data.len()));
    b.extend(size);
    b.extend_from_slice(data);
    b
}

fn aml_device(path: &[u8], body: &[u8]) -> Vec<u8> {
    let mut d = vec![AML_EXT_OP_PREFIX, AML_DEVICE_OP];
    d.extend(pkg_length(path.len() + body.len()));
    d.extend_from_slice(path);
    d.extend_from_slice(body);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    fn u16_at(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    /// The guest's view: tables found by following pointers from the RSDP.
    struct Walk<'a> {
        t: &'a AcpiTables,
    }

    impl<'a> Walk<'a> {
        fn rsdp(&self) -> &'a [u8] {
            &self.t.bytes[..RSDP_LEN]
        }

        /// The table at guest physical address `addr`, cut to its header's length.
        fn table(&self, addr: u64) -> &'a [u8] {
            let off = (addr - self.t.rsdp_addr) as usize;
            let len = u32_at(&self.t.bytes, off + 4) as usize;
            &self.t.bytes[off..off + len]
        }

        fn xsdt(&self) -> &'a [u8] {
            self.table(u64_at(self.rsdp(), 24))
        }

        fn xsdt_entries(&self) -> Vec<u64> {
            let x = self.xsdt();
            (HEADER_LEN..x.len())
                .step_by(8)
                .map(|o| u64_at(x, o))
                .collect()
        }

        fn by_signature(&self, sig: &[u8; 4]) -> &'a [u8] {
            self.xsdt_entries()
                .into_iter()
                .map(|a| self.table(a))
                .find(|t| &t[0..4] == sig)
                .unwrap()
        }

        fn dsdt(&self) -> &'a [u8] {
            self.table(u64_at(self.by_signature(b"FACP"), 140))
        }

        /// Every table: XSDT, the ones it lists, and the DSDT.
        fn all_tables(&self) -> Vec<&'a [u8]> {
            let mut v = vec![self.xsdt()];
            v.extend(self.xsdt_entries().into_iter().map(|a| self.table(a)));
            v.push(self.dsdt());
            v
        }
    }

    /// MADT entries as (type, bytes).
    fn madt_entries(madt: &[u8]) -> Vec<(u8, &[u8])> {
        let mut v = Vec::new();
        let mut off = 44;
        while off < madt.len() {
            let len = madt[off + 1] as usize;
            assert!(len >= 2, "zero-length MADT entry at {off}");
            v.push((madt[off], &madt[off..off + len]));
            off += len;
        }
        assert_eq!(off, madt.len(), "entries overrun the MADT");
        v
    }

    #[test]
    fn every_table_checksum_sums_to_zero() {
        for cpus in [1, 7, MAX_CPUS] {
            let t = build(cpus, ACPI_START).unwrap();
            let w = Walk { t: &t };
            assert_eq!(sum(&w.rsdp()[..20]), 0, "RSDP 1.0 checksum");
            assert_eq!(sum(w.rsdp()), 0, "RSDP extended checksum");
            let tables = w.all_tables();
            assert_eq!(tables.len(), 4);
            for table in tables {
                assert_eq!(sum(table), 0, "{}", String::from_utf8_lossy(&table[0..4]));
            }
        }
    }

    #[test]
    fn rsdp_leads_through_the_xsdt_to_the_fadt_and_madt() {
        let t = build(4, ACPI_START).unwrap();
        assert_eq!(t.rsdp_addr, ACPI_START);
        let w = Walk { t: &t };
        let r = w.rsdp();
        assert_eq!(&r[0..8], b"RSD PTR ");
        assert_eq!(r[15], 2, "revision");
        assert_eq!(u32_at(r, 16), 0, "no RSDT");
        assert_eq!(u32_at(r, 20), 36, "length");
        assert_eq!(&w.xsdt()[0..4], b"XSDT");
        let sigs: Vec<&[u8]> = w
            .xsdt_entries()
            .into_iter()
            .map(|a| &w.table(a)[0..4])
            .collect();
        assert_eq!(sigs, vec![&b"FACP"[..], &b"APIC"[..]]);
    }

    #[test]
    fn table_lengths_match_their_contents_and_do_not_overlap() {
        let t = build(MAX_CPUS, ACPI_START).unwrap();
        let w = Walk { t: &t };
        let mut spans: Vec<(u64, u64)> = vec![(t.rsdp_addr, t.rsdp_addr + RSDP_LEN as u64)];
        for table in w.all_tables() {
            let start = table.as_ptr() as usize - t.bytes.as_ptr() as usize;
            let start = t.rsdp_addr + start as u64;
            spans.push((start, start + table.len() as u64));
            assert_eq!(start % TABLE_ALIGN as u64, 0);
        }
        spans.sort();
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{pair:x?} overlap");
        }
        assert_eq!(
            spans.last().unwrap().1,
            t.rsdp_addr + t.bytes.len() as u64,
            "the MADT ends the blob"
        );
    }

    #[test]
    fn layout_matches_the_documented_offsets() {
        let t = build(MAX_CPUS, ACPI_START).unwrap();
        let w = Walk { t: &t };
        let off = |table: &[u8]| table.as_ptr() as usize - t.bytes.as_ptr() as usize;
        assert_eq!(off(w.xsdt()), 0x30);
        assert_eq!(off(w.by_signature(b"FACP")), 0x70);
        assert_eq!(off(w.dsdt()), 0x190);
        assert_eq!(w.dsdt().len(), 104);
        assert_eq!(off(w.by_signature(b"APIC")), 0x200);
        assert_eq!(t.bytes.len(), 0xa2e);
    }

    #[test]
    fn madt_has_every_vcpu_enabled_in_order_and_one_ioapic_after_them() {
        for cpus in [1, 2, 8, MAX_CPUS] {
            let t = build(cpus, ACPI_START).unwrap();
            let madt = Walk { t: &t }.by_signature(b"APIC");
            assert_eq!(u32_at(madt, 36), 0xfee0_0000, "local APIC address");
            assert_eq!(u32_at(madt, 40), 1, "PCAT_COMPAT");
            let entries = madt_entries(madt);
            let lapics: Vec<(u8, u8, u32)> = entries
                .iter()
                .filter(|(ty, _)| *ty == 0)
                .map(|(_, e)| (e[2], e[3], u32_at(e, 4)))
                .collect();
            let want: Vec<(u8, u8, u32)> = (0..cpus).map(|i| (i as u8, i as u8, 1)).collect();
            assert_eq!(lapics, want, "(UID, APIC ID, flags) for {cpus} vCPUs");
            let ioapics: Vec<&[u8]> = entries
                .iter()
                .filter(|(ty, _)| *ty == 1)
                .map(|(_, e)| *e)
                .collect();
            assert_eq!(ioapics.len(), 1);
            assert_eq!(ioapics[0][2] as usize, cpus, "IOAPIC id follows the vCPUs");
            assert_eq!(u32_at(ioapics[0], 4), 0xfec0_0000);
            assert_eq!(u32_at(ioapics[0], 8), 0, "GSI base");
        }
    }

    #[test]
    fn madt_wires_lint1_to_nmi_everywhere_and_overrides_no_isa_irq() {
        let t = build(3, ACPI_START).unwrap();
        let madt = Walk { t: &t }.by_signature(b"APIC");
        let entries = madt_entries(madt);
        let nmis: Vec<&[u8]> = entries
            .iter()
            .filter(|(ty, _)| *ty == 4)
            .map(|(_, e)| *e)
            .collect();
        assert_eq!(nmis, vec![&[4u8, 6, 0xff, 0, 0, 1][..]]);
        // KVM's default routing is the identity (PIT IRQ 0 -> IOAPIC pin 0).
        assert!(
            entries.iter().all(|(ty, _)| *ty != 2),
            "no source overrides"
        );
        let types: Vec<u8> = entries.iter().map(|(ty, _)| *ty).collect();
        assert_eq!(types, [vec![0; 3], vec![1, 4]].concat());
    }

    #[test]
    fn fadt_is_hardware_reduced_revision_6_and_points_at_a_dsdt() {
        let t = build(2, ACPI_START).unwrap();
        let w = Walk { t: &t };
        let f = w.by_signature(b"FACP");
        assert_eq!(f.len(), 276);
        assert_eq!(f[8], 6, "major revision");
        assert_eq!(f[131], 3, "minor revision");
        let flags = u32_at(f, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        assert_eq!(u32_at(f, 36), 0, "no FACS");
        assert_eq!(u64_at(f, 132), 0, "no X_FACS");
        assert_eq!(u32_at(f, 40), 0, "32-bit DSDT unused when X_DSDT is set");
        assert_eq!(u16_at(f, 46), 0, "no SCI");
        assert_eq!(&w.dsdt()[0..4], b"DSDT");
        assert_eq!(&f[268..276], b"OSLETVMM");
    }

    #[test]
    fn fadt_reset_register_is_the_i8042_reset_command() {
        let t = build(1, ACPI_START).unwrap();
        let f = Walk { t: &t }.by_signature(b"FACP");
        assert_eq!(
            &f[116..120],
            &[1, 8, 0, 1],
            "system I/O, 8 bits, byte access"
        );
        assert_eq!(u64_at(f, 120), 0x64);
        assert_eq!(f[128], 0xfe);
    }

    #[test]
    fn fadt_boot_flags_deny_vga_msi_aspm_cmos_and_the_8042() {
        let t = build(1, ACPI_START).unwrap();
        let f = Walk { t: &t }.by_signature(b"FACP");
        assert_eq!(u16_at(f, 109), 0b11_1100);
    }

    #[test]
    fn dsdt_declares_com1_with_its_ports_and_gsi() {
        let t = build(1, ACPI_START).unwrap();
        let d = Walk { t: &t }.dsdt();
        let aml = &d[HEADER_LEN..];
        assert_eq!(&aml[0..2], &[0x5b, 0x82], "DeviceOp");
        let find = |needle: &[u8]| aml.windows(needle.len()).any(|w| w == needle);
        assert!(find(b"._SB_COM1"), "DualNamePath _SB.COM1");
        assert!(find(&[
            0x08, b'_', b'H', b'I', b'D', 0x0c, 0x41, 0xd0, 0x05, 0x01
        ]));
        assert!(
            find(&[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x00, 0x08]),
            "IO 0x3f8, 8 ports"
        );
        assert!(
            find(&[0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0, 0, 0]),
            "edge high GSI 4"
        );
        assert!(
            aml.ends_with(&[0x79, 0x00]),
            "resource template end tag last"
        );
    }

    #[test]
    fn dsdt_declares_virtio_mmio_devices_for_linux() {
        let dev = MmioDevice {
            addr: 0xfe00_0000,
            len: 0x1000,
            gsi: 21,
        };
        let t = build_with_devices(2, ACPI_START, &[dev]).unwrap();
        let dsdt = Walk { t: &t }.dsdt();
        assert_eq!(sum(dsdt), 0);
        let find = |needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);
        assert!(find(b"._SB_V000"), "DualNamePath _SB.V000");
        assert!(find(b"LNRO0005\0"), "_HID string");
        assert!(
            find(&[0x86, 9, 0, 1, 0, 0, 0, 0xfe, 0, 0x10, 0, 0]),
            "Memory32Fixed 0xfe000000+4K"
        );
        assert!(
            find(&[0x89, 6, 0, 3, 1, 21, 0, 0, 0]),
            "GSI 21, edge, active high"
        );
        assert!(build(2, ACPI_START).unwrap().bytes.len() < t.bytes.len());
    }

    #[test]
    fn eisa_ids_compress_as_iasl_does() {
        assert_eq!(eisa_id(b"PNP0501"), 0x0105_d041);
        assert_eq!(eisa_id(b"PNP0A03"), 0x030a_d041);
    }

    #[test]
    fn pkg_length_grows_a_byte_past_63_and_counts_itself() {
        assert_eq!(pkg_length(0), vec![0x01]);
        assert_eq!(pkg_length(62), vec![0x3f]);
        // 63 bytes + 2 length bytes = 65 = 0x41: low nibble 1, then 0x04.
        assert_eq!(pkg_length(63), vec![0x41, 0x04]);
        assert_eq!(pkg_length(4093), vec![0x4f, 0xff]);
        // 4094 + 3 = 4097 = 0x1001: low nibble 1, then 0x00, 0x01.
        assert_eq!(pkg_length(4094), vec![0x81, 0x00, 0x01]);
    }

    #[test]
    fn tables_for_254_cpus_end_below_1mib_in_the_scanned_bios_area() {
        let t = build(MAX_CPUS, ACPI_START).unwrap();
        assert_eq!(t.rsdp_addr % 16, 0);
        assert!(t.rsdp_addr >= 0xe_0000);
        assert!(ACPI_START + t.bytes.len() as u64 <= 0x10_0000);
        assert!(ACPI_START + t.bytes.len() as u64 <= HIMEM_START);
    }

    #[test]
    fn pointers_follow_the_base() {
        let a = build(2, ACPI_START).unwrap();
        let b = build(2, 0x10_0000_0000).unwrap();
        assert_eq!(a.bytes.len(), b.bytes.len());
        let (wa, wb) = (Walk { t: &a }, Walk { t: &b });
        let delta = 0x10_0000_0000 - ACPI_START;
        assert_eq!(u64_at(wb.rsdp(), 24), u64_at(wa.rsdp(), 24) + delta);
        let ea = wa.xsdt_entries();
        let eb = wb.xsdt_entries();
        assert_eq!(eb, ea.iter().map(|x| x + delta).collect::<Vec<_>>());
        assert_eq!(wa.dsdt(), wb.dsdt());
    }

    #[test]
    fn too_many_or_zero_cpus_are_refused() {
        assert_eq!(build(255, ACPI_START), Err(AcpiError::TooManyCpus(255)));
        assert_eq!(build(0, ACPI_START), Err(AcpiError::NoCpus));
    }

    #[test]
    fn misaligned_or_overflowing_bases_are_refused() {
        assert_eq!(
            build(1, ACPI_START + 8),
            Err(AcpiError::MisalignedBase(ACPI_START + 8))
        );
        let top = u64::MAX - 15;
        assert_eq!(build(1, top), Err(AcpiError::AddressOverflow(top)));
    }

    /// Runs an ACPICA tool in `dir`; `None` (and a printed reason) where it is missing.
    fn acpica(tool: &str, args: &[&str], dir: &std::path::Path) -> Option<(bool, String)> {
        let out = match std::process::Command::new(tool)
            .args(args)
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .output()
        {
            Ok(out) => out,
            Err(e) => {
                eprintln!("skipping: cannot run {tool} ({e}); install acpica-tools");
                return None;
            }
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some((out.status.success(), text))
    }

    fn assert_no_complaints(what: &str, text: &str) {
        let lower = text.to_lowercase();
        for bad in [
            "error",
            "warning",
            "invalid",
            "incorrect",
            "too long",
            "fail",
        ] {
            assert!(!lower.contains(bad), "{what} reported {bad:?}:\n{text}");
        }
    }

    /// Writes the tables a guest reaches from the RSDP (not the RSDP itself: iasl reads
    /// only tables with a standard header) into `dir`, as `<signature>.dat`.
    fn dump_tables(t: &AcpiTables, dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
        let w = Walk { t };
        w.all_tables()
            .into_iter()
            .map(|table| {
                let name = String::from_utf8_lossy(&table[0..4]).to_lowercase();
                std::fs::write(dir.join(format!("{name}.dat")), table).unwrap();
                (name, table.to_vec())
            })
            .collect()
    }

    /// `iasl -d` disassembles every table without a complaint (it checks checksums and
    /// lengths and decodes every field), and compiling the disassembly back gives the
    /// very same bytes after the header. Skipped where iasl is missing
    /// (`apt-get install acpica-tools`).
    /// The virtio-fs device as the VMM declares it.
    const FS_DEV: MmioDevice = MmioDevice {
        addr: 0xfe00_0000,
        len: 0x1000,
        gsi: 21,
    };

    #[test]
    fn iasl_disassembles_every_table_cleanly_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        if acpica("iasl", &["-v"], dir.path()).is_none() {
            return;
        }
        let t = build_with_devices(MAX_CPUS, ACPI_START, &[FS_DEV]).unwrap();
        let tables = dump_tables(&t, dir.path());
        assert_eq!(tables.len(), 4);
        for (name, bytes) in tables {
            let dat = format!("{name}.dat");
            let (ok, text) = acpica("iasl", &["-d", &dat], dir.path()).unwrap();
            assert!(ok, "iasl -d {dat} failed:\n{text}");
            assert_no_complaints(&format!("iasl -d {dat}"), &text);
            let dsl = format!("{name}.dsl");
            let source = std::fs::read_to_string(dir.path().join(&dsl)).unwrap();
            assert!(!source.contains("Incorrect"), "{dsl}:\n{source}");

            let (ok, text) = acpica("iasl", &[&dsl], dir.path()).unwrap();
            assert!(ok, "iasl {dsl} failed:\n{text}");
            assert!(text.contains("0 Errors, 0 Warnings"), "iasl {dsl}:\n{text}");
            let aml = std::fs::read(dir.path().join(format!("{name}.aml"))).unwrap();
            // iasl writes its own compiler ID and checksum into the header.
            assert_eq!(aml.len(), bytes.len(), "{name} length");
            assert_eq!(aml[0..9], bytes[0..9], "{name} header");
            assert_eq!(aml[10..28], bytes[10..28], "{name} OEM fields");
            assert_eq!(aml[HEADER_LEN..], bytes[HEADER_LEN..], "{name} contents");
        }
    }

    /// ACPICA's own table manager (what Linux runs) installs the FADT, MADT and DSDT,
    /// loads the DSDT into its namespace and evaluates COM1's _CRS, without a
    /// warning. Skipped where acpiexec is missing (`apt-get install acpica-tools`).
    #[test]
    fn acpica_loads_the_tables_and_finds_com1() {
        let dir = tempfile::tempdir().unwrap();
        let t = build_with_devices(MAX_CPUS, ACPI_START, &[FS_DEV]).unwrap();
        dump_tables(&t, dir.path());
        let Some((ok, text)) = acpica(
            "acpiexec",
            &[
                "-b",
                "namespace; evaluate \\_SB.COM1._CRS; evaluate \\_SB.V000._CRS",
                "facp.dat",
                "dsdt.dat",
                "apic.dat",
            ],
            dir.path(),
        ) else {
            return;
        };
        assert!(ok, "acpiexec failed:\n{text}");
        assert_no_complaints("acpiexec", &text);
        assert!(
            text.contains("_HID Integer"),
            "COM1 not in the namespace:\n{text}"
        );
        assert!(
            text.contains("47 01 F8 03 F8 03 00 08 89 06 00 03 01 04 00 00"),
            "COM1._CRS not evaluated:\n{text}"
        );
        assert!(
            text.contains("86 09 00 01 00 00 00 FE 00 10 00 00 89 06 00 03"),
            "the virtio-mmio device's _CRS not evaluated:\n{text}"
        );
    }
}
