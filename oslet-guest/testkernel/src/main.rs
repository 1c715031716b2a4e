//! oslet test kernel: a minimal freestanding x86_64 kernel entered through
//! the Xen PVH boot protocol. It reports the command line and memory, finds
//! the CPUs (MP table, then ACPI MADT), starts the APs with INIT-SIPI-SIPI,
//! and powers off through port 0xF4 with status 0 if all came up.
//!
//! Every line it prints starts with "oslet-testkernel: ". It must run
//! through KVM's instruction emulator: no SSE, int3, popcnt, fwait, xsave,
//! cmpxchg16b anywhere (check-insns.sh checks the built ELF).
#![no_std]
#![no_main]

#[macro_use]
mod serial;
mod boot;
mod cpus;
mod io;
mod lapic;
mod mem;
mod region;
mod ring3;
mod smp;
mod startinfo;
mod user;

use core::sync::atomic::Ordering;
use region::Regions;
use serial::{Bytes, Hex};
use startinfo::StartInfo;

const CMDLINE_MAX: u64 = 160;

/// KiB of RAM in the memory map (for the agent's report).
pub static MEM_KIB: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn reserve_boot_data(reg: &mut Regions, si: Option<&StartInfo>) {
    reg.reserve(0, 0x1000); // real-mode IVT, BDA
    reg.reserve(0x9fc00, 0x100000 - 0x9fc00); // EBDA, VGA, BIOS, MP table area
    if let Some(e) = cpus::ebda_base() {
        reg.reserve(e, 0xa0000 - e);
    }
    reg.reserve(0x100000, smp::kernel_end() - 0x100000);
    let Some(si) = si else { return };
    reg.reserve(si.paddr, startinfo::SIZE);
    reg.reserve(
        si.memmap,
        si.memmap_entries as u64 * startinfo::MEMMAP_ENTRY,
    );
    reg.reserve(si.cmdline, si.cmdline_len());
    reg.reserve(si.modlist, si.nr_modules as u64 * 32);
    for i in 0..si.nr_modules.min(8) as u64 {
        let m = si.modlist + i * 32;
        reg.reserve(io::rd64(m), io::rd64(m + 8));
        reg.reserve(io::rd64(m + 16), 1); // module cmdline (start only)
    }
}

#[no_mangle]
pub extern "C" fn kmain(start_info: u64) -> ! {
    serial::init();
    let si = StartInfo::read(start_info);
    let cmdline = si.map_or(0, |s| s.cmdline);
    say!(
        "boot, cmdline \"",
        Bytes {
            paddr: cmdline,
            max: CMDLINE_MAX
        },
        "\""
    );
    if si.is_none() {
        say!("no valid hvm_start_info at ", Hex(start_info));
    }
    let word = |w: &str| si.as_ref().is_some_and(|s| s.has_word(w));
    if word("panic") {
        panic!("requested on the command line");
    }
    if word("triple-fault") {
        say!("triple-faulting on purpose (\"triple-fault\" on the command line)");
        // SAFETY: deliberately fatal: with no IDT loaded, #UD escalates to a double and
        // then a triple fault, which resets (ends) the VM. Nothing runs after it.
        unsafe { core::arch::asm!("ud2", options(noreturn)) }
    }

    let mut reg = Regions::new();
    let (mut kib, mut ranges) = (0u64, 0u32);
    if let Some(s) = si.as_ref().filter(|s| s.memmap_entries > 0) {
        for i in 0..s.memmap_entries {
            let (addr, size, typ) = s.memmap_entry(i);
            if typ == startinfo::E820_RAM {
                kib += size / 1024;
                ranges += 1;
                reg.add_ram(addr, size);
            }
        }
    }
    say!("memory ", kib, " KiB in ", ranges, " RAM ranges");
    MEM_KIB.store(kib, Ordering::Relaxed);
    if ranges == 0 {
        say!("no memory map: assuming RAM at 0-0x9fc00 and 1-4 MiB");
        reg.add_ram(0, 0x9fc00);
        reg.add_ram(0x100000, 0x300000);
    }
    reserve_boot_data(&mut reg, si.as_ref());

    let cpus = cpus::discover(si.as_ref());
    let described = cpus.n.max(1);
    say!(described, " cpus described by ", cpus.source);

    lapic::init();
    let bsp = lapic::id();
    say!("cpu 0 online (apic ", bsp, ")");
    if cpus.n > 0 && !cpus.apic_ids[..cpus.n].iter().any(|&id| id as u32 == bsp) {
        say!("the boot cpu's apic id ", bsp, " is not in the table");
    }

    let online = smp::start_aps(&cpus, &mut reg, bsp);
    say!("ready, ", online, "/", described, " cpus online");
    // Ring-3 modes (ring3-selftest, link-stream=..., ...): user.rs decides
    // which, in ring 3, where parsing runs at native speed.
    if let Some(s) = si.as_ref().filter(|s| {
        s.has_word_prefix("ring3-") || s.has_word_prefix("link-") || s.has_word_prefix("fs-")
    }) {
        enter_ring3(&reg, s.cmdline)
    }
    if word("halt") {
        say!("halting without power-off (\"halt\" on the command line)");
        io::halt_forever()
    }
    io::poweroff(if online == described { 0 } else { 1 })
}

/// Ring 3's memory: stack (at the top) and buffers, the largest of 16, 8, 4,
/// 2 MiB that fits in free RAM above the kernel.
fn enter_ring3(reg: &Regions, cmdline: u64) -> ! {
    let mut size = 16u64 << 20;
    while size >= 2 << 20 {
        if let Some(a) = reg.find(smp::kernel_end(), io::MAPPED_LIMIT, size, 4096) {
            say!(
                "entering ring 3 (",
                size >> 10,
                " KiB arena at ",
                Hex(a),
                ")"
            );
            ring3::enter(cmdline, a, size)
        }
        size /= 2;
    }
    say!("no free memory for the ring-3 arena (2 MiB)");
    io::poweroff(1)
}

#[no_mangle]
pub extern "C" fn ap_main(index: u64) -> ! {
    let id = lapic::id();
    {
        let _g = serial::lock();
        serial::puts("oslet-testkernel: cpu ");
        serial::Out::out(&index);
        serial::puts(" online (apic ");
        serial::Out::out(&id);
        serial::puts(")\n");
        // Count in while still holding the console, so the BSP's "ready"
        // line always comes after this one. fetch_add = lock xadd.
        core::hint::black_box(smp::ONLINE.fetch_add(1, Ordering::SeqCst));
    }
    io::halt_forever()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    {
        let _g = serial::lock_or_steal();
        serial::puts("oslet-testkernel: panic: ");
        serial::puts(info.message().as_str().unwrap_or("(formatted message)"));
        if let Some(l) = info.location() {
            serial::puts(" at ");
            serial::puts(l.file());
            serial::putb(b':');
            serial::Out::out(&l.line());
        }
        serial::putb(b'\n');
    }
    io::poweroff(3)
}

/// Referenced by core's precompiled unwind tables in builds without LTO
/// (the dev profile); never called (panic = "abort").
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
