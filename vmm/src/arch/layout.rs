//! Guest physical address layout shared by the boot code and the devices.
//!
//! ```text
//! 0x0000_0500  boot GDT                      (all boot modes)
//! 0x0000_6000  PVH hvm_start_info, then its memory map and module list
//! 0x0000_7000  Linux zero page (boot_params) (64-bit boot protocol)
//! 0x0000_8ff0  boot stack top                (64-bit boot protocol)
//! 0x0000_9000  PML4, PDPT, PD                (64-bit boot protocol, identity map 0-1 GiB)
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  EBDA: MP floating pointer + configuration table (reserved in e820)
//! 0x0010_0000  kernel image (1 MiB)
//! ...          RAM up to 3 GiB, the rest above 4 GiB
//! 0xfec0_0000  IOAPIC, 0xfee0_0000 LAPIC (in-kernel irqchip)
//! ```

/// Boot GDT.
pub const BOOT_GDT_START: u64 = 0x500;
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// Linux zero page.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for the 64-bit Linux boot protocol.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// First page-table page (PML4); PDPT and PD follow.
pub const PML4_START: u64 = 0x9000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line we accept (Linux's COMMAND_LINE_SIZE on x86 is 2048).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Extended BIOS data area: the MP table lives here.
pub const EBDA_START: u64 = 0x9fc00;
/// End of the low-memory RAM range in e820.
pub const LOW_RAM_END: u64 = EBDA_START;
/// Start of high memory, where kernels are loaded.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole (IOAPIC, LAPIC, later virtio-mmio).
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO hole.
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// IOAPIC MMIO base.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// LAPIC MMIO base.
pub const LAPIC_START: u64 = 0xfee0_0000;
/// KVM's TSS (three pages) sits just below the BIOS area at the top of 4 GiB.
pub const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
/// KVM's identity-map page, right before the TSS.
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

/// The guest RAM ranges (start, length) for `mem_size` bytes of RAM: one range below
/// the MMIO hole and, for large guests, one above 4 GiB.
pub fn ram_ranges(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_HOLE_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, MMIO_HOLE_START),
            (MMIO_HOLE_END, mem_size - MMIO_HOLE_START),
        ]
    }
}

/// An e820 entry type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E820Kind {
    /// Usable RAM.
    Ram = 1,
    /// Reserved.
    Reserved = 2,
}

/// The guest's e820 map: usable RAM minus the EBDA and the legacy hole.
pub fn e820_map(mem_size: u64) -> Vec<(u64, u64, E820Kind)> {
    let mut map = vec![
        (0, LOW_RAM_END, E820Kind::Ram),
        (EBDA_START, HIMEM_START - EBDA_START, E820Kind::Reserved),
    ];
    for (start, len) in ram_ranges(mem_size) {
        let (start, len) = if start == 0 {
            (HIMEM_START, len.saturating_sub(HIMEM_START))
        } else {
            (start, len)
        };
        if len > 0 {
            map.push((start, len, E820Kind::Ram));
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_has_one_ram_range() {
        assert_eq!(ram_ranges(4 << 20), vec![(0, 4 << 20)]);
    }

    #[test]
    fn large_guest_skips_the_mmio_hole() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r, vec![(0, MMIO_HOLE_START), (MMIO_HOLE_END, 1 << 30)]);
    }

    #[test]
    fn e820_reserves_ebda_and_starts_high_ram_at_1mib() {
        let m = e820_map(4 << 20);
        assert_eq!(m[0], (0, EBDA_START, E820Kind::Ram));
        assert_eq!(m[1].2, E820Kind::Reserved);
        assert_eq!(m[2], (HIMEM_START, (4 << 20) - HIMEM_START, E820Kind::Ram));
    }
}
