//! Port I/O, MSRs, the TSC, halting, power-off and physical-memory reads.
//! Physical addresses below 4 GiB are identity-mapped (boot.rs).

use core::arch::asm;

#[inline(always)]
pub fn outb(port: u16, v: u8) {
    // SAFETY: port I/O has no memory effects visible to Rust.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    }
}

#[inline(always)]
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as above.
    unsafe {
        asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags))
    }
    v
}

#[inline(always)]
pub fn rdtsc() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: rdtsc only reads the time-stamp counter.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    ((hi as u64) << 32) | lo as u64
}

#[inline(always)]
pub fn rdmsr(msr: u32) -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: only architectural MSRs that exist on every x86_64 are read.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    }
    ((hi as u64) << 32) | lo as u64
}

#[inline(always)]
pub fn wrmsr(msr: u32, v: u64) {
    // SAFETY: callers write only the APIC MSRs.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32,
             options(nostack, preserves_flags))
    }
}

#[inline(always)]
pub fn pause() {
    // SAFETY: a hint.
    unsafe { asm!("pause", options(nomem, nostack, preserves_flags)) }
}

/// Spin for at least `cycles` TSC cycles.
pub fn delay(cycles: u64) {
    let t0 = rdtsc();
    while rdtsc().wrapping_sub(t0) < cycles {
        pause();
    }
}

pub fn halt_forever() -> ! {
    if crate::ring3::cpl() != 0 {
        // hlt is privileged (#GP in ring 3): spin instead. Ring 3 runs with
        // IOPL 3 and IF = 0, so nothing interrupts this loop.
        loop {
            pause();
        }
    }
    loop {
        // SAFETY: stops this CPU with interrupts off.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}

/// Power off through the isa-debug-exit-compatible port 0xF4 (QEMU exits
/// with (status << 1) | 1), then halt in case nothing listens there. Works
/// in ring 3 too (IOPL 3; it spins there instead of halting).
pub fn poweroff(status: u8) -> ! {
    outb(0xf4, status);
    halt_forever()
}

/// Highest physical address (exclusive) that the page tables map.
pub const MAPPED_LIMIT: u64 = 1 << 32;

#[inline(always)]
pub fn rd8(pa: u64) -> u8 {
    // SAFETY: identity-mapped physical memory or MMIO below 4 GiB; callers
    // check the range.
    unsafe { core::ptr::read_volatile(pa as usize as *const u8) }
}

pub fn rd16(pa: u64) -> u16 {
    rd8(pa) as u16 | (rd8(pa + 1) as u16) << 8
}

pub fn rd32(pa: u64) -> u32 {
    rd16(pa) as u32 | (rd16(pa + 2) as u32) << 16
}

pub fn rd64(pa: u64) -> u64 {
    rd32(pa) as u64 | (rd32(pa + 4) as u64) << 32
}

/// Aligned 32-bit read (signature scans, MMIO).
#[inline(always)]
pub fn rd32a(pa: u64) -> u32 {
    // SAFETY: as rd8; pa is 4-byte aligned.
    unsafe { core::ptr::read_volatile(pa as usize as *const u32) }
}

#[inline(always)]
pub fn wr32a(pa: u64, v: u32) {
    // SAFETY: MMIO register write (LAPIC).
    unsafe { core::ptr::write_volatile(pa as usize as *mut u32, v) }
}

/// Sum of `len` bytes at `pa` (ACPI / MP-spec checksums: 0 when valid).
pub fn checksum(pa: u64, len: u64) -> u8 {
    let mut s: u8 = 0;
    let mut i = 0;
    while i < len {
        s = s.wrapping_add(rd8(pa + i));
        i += 1;
    }
    s
}
