//! Initial vCPU state for the two boot protocols oslet speaks:
//! PVH (32-bit protected mode, paging off, `ebx` = `hvm_start_info`) and the Linux
//! 64-bit boot protocol (long mode, identity-mapped page tables, `rsi` = zero page).

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{BOOT_GDT_START, BOOT_STACK_POINTER, PML4_START, ZERO_PAGE_START};

/// Errors setting up a vCPU's registers.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// Writing a boot structure into guest memory failed.
    #[error("cannot write the boot {0} into guest memory")]
    GuestWrite(&'static str),
    /// A KVM register ioctl failed.
    #[error("KVM refused the vCPU's {0}")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
}

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// PVH: 32-bit protected mode at `entry`, `ebx` = start-info address.
    Pvh { entry: u64, start_info: u64 },
    /// Linux 64-bit boot protocol: long mode at `entry`, `rsi` = zero page.
    Linux64 { entry: u64 },
}

const X86_CR0_PE: u64 = 1;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// A GDT entry from flags (access byte in bits 0-7, flags nibble in 12-15), base, limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
        | (((limit as u64) & 0x000f_0000) << 32)
        | (((flags as u64) & 0x0000_f0ff) << 40)
}

fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let limit_raw = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    let limit = if g == 1 {
        (limit_raw << 12) | 0xfff
    } else {
        limit_raw
    };
    kvm_segment {
        base,
        limit,
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: if (entry >> 47) & 1 == 0 { 1 } else { 0 },
        padding: 0,
    }
}

/// The boot GDT: null, code, data, TSS. Code is 64-bit for Linux64, 32-bit for PVH.
fn boot_gdt(long_mode: bool) -> [u64; 4] {
    let code = if long_mode {
        gdt_entry(0xa09b, 0, 0xfffff) // L=1, present, exec/read, accessed
    } else {
        gdt_entry(0xc09b, 0, 0xfffff) // D=1, G=1, present, exec/read
    };
    [
        0,
        code,
        gdt_entry(0xc093, 0, 0xfffff), // data: G=1, D=1, present, read/write
        gdt_entry(0x008b, 0, 0x67),    // TSS: present, 32-bit busy TSS
    ]
}

fn write_gdt(mem: &GuestMemoryMmap, gdt: &[u64]) -> Result<(), RegsError> {
    for (i, e) in gdt.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(BOOT_GDT_START + (i as u64) * 8))
            .map_err(|_| RegsError::GuestWrite("GDT"))?;
    }
    Ok(())
}

/// Identity-maps the first 1 GiB with 2 MiB pages for the 64-bit boot protocol.
fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    let pdpt = PML4_START + 0x1000;
    let pd = PML4_START + 0x2000;
    let w = |v: u64, a: u64| {
        mem.write_obj(v, GuestAddress(a))
            .map_err(|_| RegsError::GuestWrite("page tables"))
    };
    w(pdpt | 0x03, PML4_START)?;
    w(pd | 0x03, pdpt)?;
    for i in 0..512u64 {
        w((i << 21) | 0x83, pd + i * 8)?;
    }
    Ok(())
}

/// Sets registers, segment registers, FPU and boot MSRs of the boot vCPU.
pub fn setup_boot_vcpu(
    vcpu: &VcpuFd,
    mem: &GuestMemoryMmap,
    mode: EntryMode,
) -> Result<(), RegsError> {
    let long_mode = matches!(mode, EntryMode::Linux64 { .. });
    let gdt = boot_gdt(long_mode);
    write_gdt(mem, &gdt)?;

    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| RegsError::Kvm("segment registers", e))?;
    let code = segment_from_gdt(gdt[1], 1);
    let data = segment_from_gdt(gdt[2], 2);
    let tss = segment_from_gdt(gdt[3], 3);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    let mut regs = kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    match mode {
        EntryMode::Pvh { entry, start_info } => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rip = entry;
            regs.rbx = start_info;
        }
        EntryMode::Linux64 { entry } => {
            write_page_tables(mem)?;
            sregs.cr3 = PML4_START;
            sregs.cr4 = X86_CR4_PAE;
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            sregs.efer = EFER_LME | EFER_LMA;
            regs.rip = entry;
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = ZERO_PAGE_START;
        }
    }
    vcpu.set_sregs(&sregs)
        .map_err(|e| RegsError::Kvm("segment registers", e))?;
    vcpu.set_regs(&regs)
        .map_err(|e| RegsError::Kvm("general registers", e))?;
    Ok(())
}

/// FPU state every vCPU starts with (x87 control word and MXCSR at their reset values).
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu)
        .map_err(|e| RegsError::Kvm("FPU state", e))
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MISC_ENABLE_FAST_STRING: u64 = 1;
const MTRR_ENABLE: u64 = 1 << 11;
const MTRR_MEM_TYPE_WB: u64 = 6;

/// Boot MSRs for every vCPU: syscall MSRs cleared, fast strings on, MTRRs write-back.
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let entries: Vec<kvm_msr_entry> = [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_MEM_TYPE_WB),
    ]
    .iter()
    .map(|&(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect();
    let msrs = Msrs::from_entries(&entries).map_err(|_| RegsError::GuestWrite("MSR list"))?;
    let set = vcpu
        .set_msrs(&msrs)
        .map_err(|e| RegsError::Kvm("MSRs", e))?;
    if set != entries.len() {
        // KVM stops at the first MSR it refuses; the rest are left at reset values.
        // That is survivable for a guest, so it is not an error, but say which.
        tracing_msr_refused(entries[set].index);
    }
    Ok(())
}

fn tracing_msr_refused(index: u32) {
    crate::log::warn(format_args!(
        "KVM refused boot MSR {index:#x}; left at its reset value"
    ));
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn set_apic_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

const APIC_LVT_MASKED: u32 = 1 << 16;

/// Wires LINT0 to ExtINT (the PIC), masked, and LINT1 to NMI.
///
/// LINT0 stays masked: every guest here has an IOAPIC, and Linux keeps LINT0 as it
/// finds it when it does not use the PIC (with hardware-reduced ACPI it never
/// programs KVM's 8259, whose uninitialised vector base would turn an ISA interrupt
/// routed through it into a CPU exception).
pub fn setup_lint(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let mut lapic = vcpu
        .get_lapic()
        .map_err(|e| RegsError::Kvm("local APIC", e))?;
    let read = |regs: &[std::os::raw::c_char], off: usize| -> u32 {
        let b: [u8; 4] = [
            regs[off] as u8,
            regs[off + 1] as u8,
            regs[off + 2] as u8,
            regs[off + 3] as u8,
        ];
        u32::from_le_bytes(b)
    };
    let write = |regs: &mut [std::os::raw::c_char], off: usize, v: u32| {
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            regs[off + i] = *b as std::os::raw::c_char;
        }
    };
    let lvt0 = read(&lapic.regs, APIC_LVT0);
    write(
        &mut lapic.regs,
        APIC_LVT0,
        set_apic_delivery_mode(lvt0, APIC_MODE_EXTINT) | APIC_LVT_MASKED,
    );
    let lvt1 = read(&lapic.regs, APIC_LVT1);
    write(
        &mut lapic.regs,
        APIC_LVT1,
        set_apic_delivery_mode(lvt1, APIC_MODE_NMI),
    );
    vcpu.set_lapic(&lapic)
        .map_err(|e| RegsError::Kvm("local APIC", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_decode_to_flat_segments() {
        let code = segment_from_gdt(gdt_entry(0xa09b, 0, 0xfffff), 1);
        assert_eq!(
            (code.base, code.limit, code.l, code.db, code.type_),
            (0, 0xffff_ffff, 1, 0, 0xb)
        );
        let code32 = segment_from_gdt(gdt_entry(0xc09b, 0, 0xfffff), 1);
        assert_eq!(
            (code32.l, code32.db, code32.present, code32.selector),
            (0, 1, 1, 8)
        );
        let tss = segment_from_gdt(gdt_entry(0x008b, 0, 0x67), 3);
        assert_eq!((tss.limit, tss.g, tss.s, tss.selector), (0x67, 0, 0, 0x18));
    }

    #[test]
    fn delivery_mode_replaces_only_bits_8_to_10() {
        assert_eq!(
            set_apic_delivery_mode(0x0001_0700, APIC_MODE_NMI),
            0x0001_0400
        );
    }
}
