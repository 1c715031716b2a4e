//! The way down to ring 3, run once in ring 0 by the boot CPU: a GDT with
//! user code and data segments and a TSS, an IDT, and an `iretq` to
//! `user::main` at CPL 3, interrupts off, on a user stack at the top of the
//! arena. Ring 3 may use the UART and the debug exit: RFLAGS.IOPL = 3, and
//! -- because the emulated `iretq` on the project's machines (kvm_pvm) drops
//! IOPL -- an I/O permission bitmap in the TSS allowing ports 0-0x3FF.
//! Nothing here is on a per-message path: ring-0 code is emulated on the
//! project's machines (KVM-NOTES.md).
//!
//! Ring 3 never returns. An exception raised there (or in ring 0 afterwards)
//! arrives at `oslet_exception` in ring 0, on the boot stack (TSS.RSP0),
//! which prints one line and powers off with status 3 -- except the `ud2`
//! in `oslet_sleep`, which is ring 3's way to wait for an interrupt (the
//! doorbell wait): ring 0 runs `sti; hlt`, then returns past it. Interrupt
//! gates for the doorbell vectors and the LAPIC timer count, EOI, return.

use crate::serial::Hex;
use core::arch::{asm, global_asm};
use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicU64, Ordering};

/// Selectors of the ring-3 GDT (RPL 3 for the user ones).
pub const KERNEL_CS: u16 = 0x08;
pub const USER_DS: u16 = 0x20 | 3;
pub const USER_CS: u16 = 0x28 | 3;
const TSS_SEL: u16 = 0x30;

/// RFLAGS for ring 3: IOPL = 3 (bits 12-13), bit 1 (always set), IF = 0.
/// (Ring 3 reads IOPL 0 on the project's machines: see the TSS bitmap.)
const USER_RFLAGS: u64 = 0x3002;

/// 0x00 null, 0x08 64-bit kernel code, 0x10 kernel data, 0x18 32-bit code
/// (as boot.rs), 0x20 user data (DPL 3), 0x28 64-bit user code (DPL 3),
/// 0x30 the 64-bit TSS (two slots). Accessed bits preset.
static mut GDT: [u64; 8] = [
    0,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x00cf_9b00_0000_ffff,
    0x00cf_f300_0000_ffff,
    0x00af_fb00_0000_ffff,
    0, // TSS low (filled in at run time: it holds the TSS address)
    0, // TSS high
];

/// The 64-bit TSS (104 bytes, as u32 words because RSP0 is at offset 4),
/// then an I/O permission bitmap for ports 0-0x3FF, all allowed (zero bits),
/// and the terminating 0xFF byte (bytes 232-235).
const TSS_WORDS: usize = 26 + 128 / 4 + 1;
const TSS_LIMIT: u64 = 104 + 128; // last byte: the 0xFF terminator
static mut TSS: [u32; TSS_WORDS] = [0; TSS_WORDS];

/// 256 gates of 16 bytes: the 32 exceptions, the doorbell vectors, the
/// timer and the spurious vector are filled in.
#[repr(C, align(16))]
struct Idt([[u64; 2]; 256]);
static mut IDT: Idt = Idt([[0; 2]; 256]);

#[repr(C, packed)]
struct Dtr {
    limit: u16,
    base: u64,
}

extern "C" {
    static oslet_boot_stack_top: u8;
    static oslet_isr_table: u8;
}

// Exception stubs: 16 bytes each, vector v at oslet_isr_table + 16 v. Each
// pushes a zero error code where the CPU pushes none, then the vector.
global_asm!(
    r#"
    .pushsection .text.oslet_isr, "ax"
    .macro oslet_isr_noerr v
    .balign 16
    pushq $0
    pushq $\v
    jmp oslet_isr_common
    .endm
    .macro oslet_isr_err v
    .balign 16
    pushq $\v
    jmp oslet_isr_common
    .endm
    .balign 16
    .globl oslet_isr_table
oslet_isr_table:
    oslet_isr_noerr 0
    oslet_isr_noerr 1
    oslet_isr_noerr 2
    oslet_isr_noerr 3
    oslet_isr_noerr 4
    oslet_isr_noerr 5
    oslet_isr_noerr 6
    oslet_isr_noerr 7
    oslet_isr_err 8
    oslet_isr_noerr 9
    oslet_isr_err 10
    oslet_isr_err 11
    oslet_isr_err 12
    oslet_isr_err 13
    oslet_isr_err 14
    oslet_isr_noerr 15
    oslet_isr_noerr 16
    oslet_isr_err 17
    oslet_isr_noerr 18
    oslet_isr_noerr 19
    oslet_isr_noerr 20
    oslet_isr_err 21
    oslet_isr_noerr 22
    oslet_isr_noerr 23
    oslet_isr_noerr 24
    oslet_isr_noerr 25
    oslet_isr_noerr 26
    oslet_isr_noerr 27
    oslet_isr_noerr 28
    oslet_isr_err 29
    oslet_isr_err 30
    oslet_isr_noerr 31
    .balign 16
oslet_isr_common:
    /* Save the caller-saved registers (the Rust handler keeps the others):
       the sleep trap returns to ring 3 with every register intact. The
       stack is 16-aligned here: the CPU aligns RSP before pushing its 5
       words (40 bytes), the stub pushed 16, these 9 pushes 72: 128 in all. */
    pushq %rax
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    cld
    movq %rsp, %rdi               /* -> Frame */
    call oslet_exception          /* returns only for a handled trap */
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rax
    addq $16, %rsp                /* vector, error code */
    iretq

    /* Sleep until an interrupt, for ring 3 (user/doorbell.rs): the #UD of
       this ud2 is recognised by its address, the handler waits with
       sti; hlt in ring 0 and returns past it. */
    .globl oslet_sleep
oslet_sleep:
    .globl oslet_sleep_ud2
oslet_sleep_ud2:
    ud2
    ret

    /* Device interrupts (doorbells: vector IRQ_BASE + gsi; the LAPIC timer):
       count, EOI, return. xAPIC: a store to OSLET_EOI_ADDR; x2APIC
       (OSLET_EOI_ADDR == 0): wrmsr 0x80B. */
    .balign 16
    .globl oslet_irq
oslet_irq:
    pushq %rax
    pushq %rcx
    pushq %rdx
    lock incq OSLET_IRQS(%rip)
    movq OSLET_EOI_ADDR(%rip), %rax
    testq %rax, %rax
    jz 1f
    movl $0, (%rax)
    jmp 2f
1:
    movl $0x80b, %ecx
    xorl %eax, %eax
    xorl %edx, %edx
    wrmsr
2:
    popq %rdx
    popq %rcx
    popq %rax
    iretq

    /* Spurious-interrupt vector (0xFF): no EOI. */
    .balign 16
    .globl oslet_spurious
oslet_spurious:
    iretq
    .popsection
"#,
    options(att_syntax)
);

/// Interrupts taken by `oslet_irq` (doorbells and timer ticks).
#[no_mangle]
pub static OSLET_IRQS: AtomicU64 = AtomicU64::new(0);
/// The xAPIC EOI register's address; 0 in x2APIC mode.
#[no_mangle]
static OSLET_EOI_ADDR: AtomicU64 = AtomicU64::new(0);
/// Sleeps (oslet_sleep traps) served.
pub static SLEEPS: AtomicU64 = AtomicU64::new(0);

/// Doorbell vectors: IRQ_BASE + gsi, for gsi 0..IRQ_PINS.
pub const IRQ_BASE: u8 = 0x30;
pub const IRQ_PINS: u8 = 24;
/// The LAPIC timer's vector (a periodic tick, the doorbell wait's backstop).
pub const TIMER_VECTOR: u8 = 0x2f;

/// What the common stub leaves on the ring-0 stack.
#[repr(C)]
pub struct Frame {
    regs: [u64; 9],
    vector: u64,
    error: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

extern "C" {
    fn oslet_sleep();
    static oslet_sleep_ud2: u8;
    static oslet_irq: u8;
    static oslet_spurious: u8;
}

/// Whether EOI is by MSR (x2APIC mode; the doorbell setup refuses it).
pub fn eoi_by_msr() -> bool {
    OSLET_EOI_ADDR.load(Ordering::Relaxed) == 0
}

/// Waits for an interrupt (a doorbell, the timer tick), from ring 3: a trap
/// into ring 0, which runs `sti; hlt; cli` and returns. Emulated ring-0 code
/// on the project's machines (~100 instructions here, about 0.2-0.5 ms).
pub fn sleep() {
    // SAFETY: oslet_sleep is `ud2; ret`; the #UD handler recognises the
    // address and returns past the ud2 with all registers preserved.
    unsafe { oslet_sleep() }
}

const NAMES: [&str; 22] = [
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP", "#SS",
    "#GP", "#PF", "?", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
];

#[no_mangle]
extern "C" fn oslet_exception(f: &mut Frame) {
    let sleep_ud2 = core::ptr::addr_of!(oslet_sleep_ud2) as u64;
    if f.vector == 6 && f.rip == sleep_ud2 && f.cs & 3 == 3 {
        SLEEPS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: waits for an interrupt in ring 0; the interrupt gates
        // (oslet_irq) return here; interrupts are off again before the
        // frame is used.
        unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) };
        f.rip += 2;
        return;
    }
    fatal(f)
}

fn fatal(f: &Frame) -> ! {
    let cr2: u64;
    // SAFETY: reads CR2 (ring 0 only; this handler always runs in ring 0).
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
    let name = NAMES.get(f.vector as usize).copied().unwrap_or("?");
    {
        let _g = crate::serial::lock_or_steal();
        crate::serial::puts("oslet-testkernel: exception ");
        crate::serial::Out::out(&f.vector);
        crate::serial::puts(" (");
        crate::serial::puts(name);
        crate::serial::puts(") in ring ");
        crate::serial::Out::out(&(f.cs & 3));
        crate::serial::puts(" at rip ");
        crate::serial::Out::out(&Hex(f.rip));
        crate::serial::puts(", error ");
        crate::serial::Out::out(&Hex(f.error));
        crate::serial::puts(", rsp ");
        crate::serial::Out::out(&Hex(f.rsp));
        crate::serial::puts(", rflags ");
        crate::serial::Out::out(&Hex(f.rflags));
        if f.vector == 14 {
            crate::serial::puts(", cr2 ");
            crate::serial::Out::out(&Hex(cr2));
        }
        crate::serial::puts("\n");
    }
    let _ = (f.ss, f.regs);
    crate::io::poweroff(3)
}

fn gate(handler: u64) -> [u64; 2] {
    let lo = (handler & 0xffff)
        | (KERNEL_CS as u64) << 16
        | 0x8e << 40 // present, DPL 0, 64-bit interrupt gate
        | ((handler >> 16) & 0xffff) << 48;
    [lo, handler >> 32]
}

/// Loads the ring-3 GDT, the TSS and the IDT, then enters `user::main` in
/// ring 3 with (cmdline, arena, arena_len) as its arguments and its stack at
/// the top of the arena.
pub fn enter(cmdline: u64, arena: u64, arena_len: u64) -> ! {
    let rsp0 = core::ptr::addr_of!(oslet_boot_stack_top) as u64;
    OSLET_EOI_ADDR.store(crate::lapic::eoi_address().unwrap_or(0), Ordering::Relaxed);
    let isr = core::ptr::addr_of!(oslet_isr_table) as u64;
    // SAFETY: single-threaded ring-0 setup on the boot CPU (the APs, if any,
    // are halted and never load these tables); the statics are only written
    // here, through raw pointers, before the CPU is told about them.
    unsafe {
        let tss = addr_of_mut!(TSS);
        (*tss)[1] = rsp0 as u32;
        (*tss)[2] = (rsp0 >> 32) as u32;
        (*tss)[25] = 104 << 16; // I/O map base: right after the TSS
        (*tss)[TSS_WORDS - 1] = 0xff;
        let base = tss as u64;
        let limit = TSS_LIMIT;
        let gdt = addr_of_mut!(GDT);
        (*gdt)[6] = (limit & 0xffff)
            | (base & 0xff_ffff) << 16
            | 0x89 << 40 // present, DPL 0, available 64-bit TSS
            | ((limit >> 16) & 0xf) << 48
            | ((base >> 24) & 0xff) << 56;
        (*gdt)[7] = base >> 32;
        let idt = addr_of_mut!(IDT);
        for v in 0..32u64 {
            (*idt).0[v as usize] = gate(isr + 16 * v);
        }
        let irq = core::ptr::addr_of!(oslet_irq) as u64;
        for v in IRQ_BASE..IRQ_BASE + IRQ_PINS {
            (*idt).0[v as usize] = gate(irq);
        }
        (*idt).0[TIMER_VECTOR as usize] = gate(irq);
        (*idt).0[0xff] = gate(core::ptr::addr_of!(oslet_spurious) as u64);
        let gdtr = Dtr {
            limit: (core::mem::size_of::<[u64; 8]>() - 1) as u16,
            base: gdt as u64,
        };
        let idtr = Dtr {
            limit: (core::mem::size_of::<Idt>() - 1) as u16,
            base: idt as u64,
        };
        // The kernel selectors keep their slots and contents, so CS and SS
        // stay valid across the lgdt.
        asm!("lgdt [{}]", in(reg) &gdtr, options(readonly, nostack, preserves_flags));
        asm!("ltr {0:x}", in(reg) TSS_SEL, options(nomem, nostack, preserves_flags));
        asm!("lidt [{}]", in(reg) &idtr, options(readonly, nostack, preserves_flags));
    }
    // User stack: the top of the arena, 16-aligned, minus 8 as if `call`ed.
    let top = (arena + arena_len) & !15;
    let entry = crate::user::main as extern "C" fn(u64, u64, u64) -> ! as usize as u64;
    // SAFETY: the iretq frame describes a valid ring-3 context: a DPL-3 code
    // and data segment from the GDT just loaded, a stack in free RAM that is
    // mapped user-accessible (boot.rs sets U/S everywhere), and an entry that
    // never returns. rdi/rsi/rdx carry the arguments through iretq.
    unsafe {
        asm!(
            "push {ss}",
            "push {rsp}",
            "push {rflags}",
            "push {cs}",
            "push {rip}",
            "iretq",
            ss = in(reg) USER_DS as u64,
            rsp = in(reg) top - 8,
            rflags = in(reg) USER_RFLAGS,
            cs = in(reg) USER_CS as u64,
            rip = in(reg) entry,
            in("rdi") cmdline,
            in("rsi") arena,
            in("rdx") arena_len,
            options(noreturn)
        )
    }
}

/// The current privilege level (CS bits 0-1); readable in any ring.
#[inline(always)]
pub fn cpl() -> u16 {
    let cs: u16;
    // SAFETY: reads the CS selector.
    unsafe { asm!("mov {0:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags)) };
    cs & 3
}
