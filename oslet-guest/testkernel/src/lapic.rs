//! Local APIC: ID and INIT/STARTUP IPIs, xAPIC (MMIO) or x2APIC (MSRs),
//! whichever mode this CPU is in (read from IA32_APIC_BASE every time, so
//! APs, which start in xAPIC mode, work too).

use crate::io::{delay, pause, rd32a, rdmsr, wr32a, wrmsr};

const IA32_APIC_BASE: u32 = 0x1b;
const DEFAULT_BASE: u64 = 0xfee0_0000;

const ID: u64 = 0x20;
const SVR: u64 = 0xf0;
const ICR_LO: u64 = 0x300;
const ICR_HI: u64 = 0x310;

fn mode() -> (bool, u64) {
    let b = rdmsr(IA32_APIC_BASE);
    let base = b & 0xffff_f000;
    let base = if base == 0 || base >= crate::io::MAPPED_LIMIT {
        DEFAULT_BASE
    } else {
        base
    };
    (b & (1 << 10) != 0, base)
}

/// The xAPIC EOI register's address, or None in x2APIC mode (EOI by MSR).
pub fn eoi_address() -> Option<u64> {
    let (x2, base) = mode();
    if x2 {
        None
    } else {
        Some(base + 0xb0)
    }
}

/// Enable the APIC (globally and in the SVR, spurious vector 0xFF).
pub fn init() {
    let b = rdmsr(IA32_APIC_BASE);
    if b & (1 << 11) == 0 {
        wrmsr(IA32_APIC_BASE, b | (1 << 11));
    }
    let (x2, base) = mode();
    if x2 {
        wrmsr(0x80f, rdmsr(0x80f) | 0x1ff);
    } else {
        wr32a(base + SVR, rd32a(base + SVR) | 0x1ff);
    }
}

pub fn id() -> u32 {
    let (x2, base) = mode();
    if x2 {
        rdmsr(0x802) as u32
    } else {
        rd32a(base + ID) >> 24
    }
}

fn icr(dest: u32, lo: u32) {
    let (x2, base) = mode();
    if x2 {
        wrmsr(0x830, (dest as u64) << 32 | lo as u64);
        return;
    }
    wr32a(base + ICR_HI, dest << 24);
    wr32a(base + ICR_LO, lo);
    // Wait (bounded) for delivery status (bit 12) to clear.
    let mut n = 0;
    while rd32a(base + ICR_LO) & (1 << 12) != 0 && n < 1_000_000 {
        pause();
        n += 1;
    }
}

/// Delay between INIT and the first STARTUP, in TSC cycles. The MP spec
/// asks for 10 ms on old hardware; KVM and modern CPUs need none (Linux uses
/// 0 there); 1e6 cycles is well under 1 ms on any machine.
const INIT_DELAY: u64 = 1_000_000;
/// Delay after each STARTUP (Linux: 10-300 us).
const SIPI_DELAY: u64 = 200_000;

/// The universal INIT-SIPI-SIPI sequence (Linux's wakeup_secondary_cpu_via_init).
pub fn start_ap(dest: u32, vector: u8) {
    let x2 = mode().0;
    icr(dest, 0x0000_c500); // INIT, level-triggered, assert
    if !x2 {
        icr(dest, 0x0000_8500); // INIT, level-triggered, deassert
    }
    delay(INIT_DELAY);
    for _ in 0..2 {
        icr(dest, 0x0000_0600 | vector as u32); // STARTUP
        delay(SIPI_DELAY);
    }
}
