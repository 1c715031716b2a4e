//! Application-processor bring-up, one CPU at a time (like Linux's
//! do_boot_cpu): trampoline page below 1 MiB, a 16 KiB stack per AP from RAM
//! above the kernel image, INIT-SIPI-SIPI, then a bounded wait for check-in.

use crate::cpus::Cpus;
use crate::io::{pause, rdtsc, MAPPED_LIMIT};
use crate::region::Regions;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// CPUs that have checked in (the BSP counts).
pub static ONLINE: AtomicUsize = AtomicUsize::new(1);

/// Top of the stack for the AP being started; the AP takes it with xchg
/// (boot.rs), leaving 0. [top-16] holds its cpu index.
#[no_mangle]
pub static OSLET_AP_STACK: AtomicU64 = AtomicU64::new(0);

/// Stack per AP: 16 KiB, or 4 KiB when there are more than 64 APs (so 253
/// APs fit in a 4 MiB guest). ap_main needs well under 1 KiB.
const AP_STACK_SIZE: u64 = 16 * 1024;
const AP_STACK_SIZE_MANY: u64 = 4 * 1024;
/// Preferred trampoline page (Linux's traditional spot), if free RAM.
const TRAMPOLINE_DEFAULT: u64 = 0x8000;
/// Wait for an AP to check in, in TSC cycles: 20e9 is ~5-10 s at 2-4 GHz.
/// No calibration: here ring-0 code is emulated (~2 us per instruction, an
/// AP needs a few ms to come up), on hardware an AP takes microseconds; 20e9
/// cycles only matters when a CPU fails to start.
const CHECKIN_TIMEOUT: u64 = 20_000_000_000;

extern "C" {
    static oslet_trampoline_start: u8;
    static oslet_trampoline_end: u8;
    static __kernel_end: u8;
}

pub fn kernel_end() -> u64 {
    // Only the address of the linker-script symbol is taken.
    core::ptr::addr_of!(__kernel_end) as u64
}

/// Copy the trampoline to a free page below 1 MiB; returns the page.
fn place_trampoline(reg: &mut Regions) -> Option<u64> {
    // Linker symbols bracketing the trampoline bytes (addresses only).
    let start = core::ptr::addr_of!(oslet_trampoline_start) as u64;
    let end = core::ptr::addr_of!(oslet_trampoline_end) as u64;
    let size = end - start;
    let page = match reg.find(TRAMPOLINE_DEFAULT, TRAMPOLINE_DEFAULT + 4096, 4096, 4096) {
        Some(p) => p,
        None => reg.find(0x1000, 0x100000, 4096, 4096)?,
    };
    // SAFETY: page is free RAM (memmap, not reserved); identity-mapped.
    unsafe {
        crate::mem::memcpy(
            page as usize as *mut u8,
            start as usize as *const u8,
            size as usize,
        )
    };
    reg.reserve(page, 4096);
    Some(page)
}

/// Start every described CPU other than the BSP. Returns how many are online.
pub fn start_aps(cpus: &Cpus, reg: &mut Regions, bsp_apic: u32) -> usize {
    let aps = cpus.apic_ids[..cpus.n]
        .iter()
        .filter(|&&id| id as u32 != bsp_apic)
        .count();
    if aps == 0 {
        return ONLINE.load(Ordering::Acquire);
    }
    let Some(page) = place_trampoline(reg) else {
        say!("no free page below 1 MiB for the AP trampoline");
        return ONLINE.load(Ordering::Acquire);
    };
    say!("trampoline at ", crate::serial::Hex(page));

    let stack_size = if aps > 64 {
        AP_STACK_SIZE_MANY
    } else {
        AP_STACK_SIZE
    };
    let mut next = kernel_end();
    let mut index: u64 = 1;
    for &id in &cpus.apic_ids[..cpus.n] {
        if id as u32 == bsp_apic {
            continue;
        }
        let Some(stack) = reg.find(next, MAPPED_LIMIT, stack_size, 4096) else {
            say!("cpu ", index, " (apic ", id, "): no memory for a stack");
            index += 1;
            continue;
        };
        next = stack + stack_size;
        // Kept out of later allocations (the ring-3 arena).
        reg.reserve(stack, stack_size);
        let top = stack + stack_size;
        // SAFETY: free RAM just found, identity-mapped.
        unsafe { core::ptr::write_volatile((top - 16) as usize as *mut u64, index) };
        let before = ONLINE.load(Ordering::Acquire);
        OSLET_AP_STACK.store(top, Ordering::SeqCst);

        crate::lapic::start_ap(id as u32, (page >> 12) as u8);

        let t0 = rdtsc();
        let mut up = false;
        loop {
            if ONLINE.load(Ordering::Acquire) != before {
                up = true;
                break;
            }
            if rdtsc().wrapping_sub(t0) > CHECKIN_TIMEOUT {
                break;
            }
            pause();
        }
        if !up {
            // Withdraw the stack so a late AP halts instead of sharing it.
            OSLET_AP_STACK.store(0, Ordering::SeqCst);
            say!("cpu ", index, " (apic ", id, ") did not check in");
        }
        index += 1;
    }
    ONLINE.load(Ordering::Acquire)
}
