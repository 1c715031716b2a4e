//! Waiting by doorbell instead of polling (`link-bench-wait=doorbell`).
//!
//! The VMM turns a 32-bit write to a link's `doorbell_gpa` into an interrupt
//! on the peer's IOAPIC pin `gsi` (ioeventfd -> irqfd, no VMM thread). Here,
//! from ring 3 (MMIO is user-accessible like everything in the identity
//! map): each link's IOAPIC redirection entry gets vector
//! `ring3::IRQ_BASE + gsi` (fixed, physical destination = our APIC ID, edge,
//! active high, unmasked), and the LAPIC timer ticks every ~10 ms as a
//! backstop (vector `ring3::TIMER_VECTOR`). A waiting receiver arms the
//! crate's notification (`enable_notify`) and calls `ring3::sleep()`, which
//! traps into ring 0 for `sti; hlt`. A sender rings after a publish when
//! `needs_notify()` says so.

use super::link::Links;
use crate::ring3::{IRQ_BASE, IRQ_PINS, TIMER_VECTOR};
use core::ptr::{read_volatile, write_volatile};

const IOAPIC: u64 = 0xfec0_0000;
const LAPIC: u64 = 0xfee0_0000;
/// LAPIC timer initial count: 10 ms at KVM's 1 GHz APIC bus, divide by 1.
const TIMER_COUNT: u32 = 10_000_000;

fn mmio_w(pa: u64, v: u32) {
    // SAFETY: an MMIO register of the IOAPIC / LAPIC, identity-mapped
    // (uncached: boot.rs maps 0xFEC00000.. with PCD|PWT).
    unsafe { write_volatile(pa as usize as *mut u32, v) }
}

fn mmio_r(pa: u64) -> u32 {
    // SAFETY: as mmio_w.
    unsafe { read_volatile(pa as usize as *const u32) }
}

fn ioapic_w(reg: u32, v: u32) {
    mmio_w(IOAPIC, reg);
    mmio_w(IOAPIC + 0x10, v);
}

fn ioapic_r(reg: u32) -> u32 {
    mmio_w(IOAPIC, reg);
    mmio_r(IOAPIC + 0x10)
}

/// Routes every link's doorbell to us and starts the backstop tick. Err:
/// why doorbells cannot be used.
pub fn setup(links: &mut Links) -> Result<(), &'static str> {
    if crate::ring3::eoi_by_msr() {
        return Err("the LAPIC is in x2APIC mode (not supported here)");
    }
    let pins = ((ioapic_r(1) >> 16) & 0xff) + 1;
    if pins == 256 {
        return Err("no IOAPIC at 0xfec00000");
    }
    // Not CPUID.1's APIC ID: on the project's machines the guest sees the
    // host's CPUID, whose APIC ID is the host CPU's.
    let apic_id = mmio_r(LAPIC + 0x20) >> 24;
    for i in 0..links.len() {
        let gsi = links.get(i).gsi;
        if gsi >= pins || gsi >= IRQ_PINS as u32 {
            return Err("a link's gsi is beyond the IOAPIC's pins");
        }
        ioapic_w(0x11 + 2 * gsi, apic_id << 24);
        ioapic_w(0x10 + 2 * gsi, IRQ_BASE as u32 + gsi);
    }
    mmio_w(LAPIC + 0x3e0, 0xb); // divide by 1
    mmio_w(LAPIC + 0x320, TIMER_VECTOR as u32 | 1 << 17); // periodic
    mmio_w(LAPIC + 0x380, TIMER_COUNT);
    Ok(())
}

/// Rings the peer of a link (a 32-bit write to its doorbell address).
#[inline]
pub fn ring(doorbell: u64) {
    mmio_w(doorbell, 1);
}
