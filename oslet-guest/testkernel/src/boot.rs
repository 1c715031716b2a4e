//! Everything that runs before Rust: the PVH note, the GDT, the identity page
//! tables, the 32-bit BSP entry, the 16-bit AP trampoline and the switches to
//! long mode. Only instructions that KVM's emulator runs (see
//! /work/shared/KVM-NOTES.md): no int3, no SSE, no popcnt, no xsave.
//!
//! Memory map of the boot state (all in the image, so all below
//! `__kernel_end`): GDT in .rodata; PML4, PDPT, 4 PDs (2 MiB pages, 0-4 GiB,
//! user-accessible) and the 16 KiB BSP stack in .bss (zeroed here, not
//! trusted to the loader). The ring-3 GDT, TSS and IDT are in ring3.rs.

use core::arch::global_asm;

global_asm!(
    r#"
    /* Xen PVH note: name "Xen", type 18 (XEN_ELFNOTE_PHYS32_ENTRY), desc =
       physical address of the 32-bit entry. desc is 8 bytes (upper half 0)
       like Linux's (_ASM_PTR): QEMU reads 8 bytes for an ELF64 kernel;
       readers that take a u32 (linux-loader) get the same value. */
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .balign 4
    .quad _start32
    .balign 4
    .popsection

    /* GDT: accessed bits preset so the CPU never writes it. */
    .pushsection .rodata.oslet_gdt, "a"
    .balign 16
    .globl oslet_gdt
oslet_gdt:
    .quad 0                       /* 0x00 null */
    .quad 0x00af9b000000ffff      /* 0x08 64-bit code */
    .quad 0x00cf93000000ffff      /* 0x10 flat data */
    .quad 0x00cf9b000000ffff      /* 0x18 flat 32-bit code */
oslet_gdt_end:
    .balign 8
oslet_gdt_ptr:
    .word oslet_gdt_end - oslet_gdt - 1
    .quad oslet_gdt
    .popsection

    .pushsection .bss.oslet_boot, "aw", @nobits
    .balign 4096
    .globl oslet_pml4
oslet_pml4:
    .skip 4096
oslet_pdpt:
    .skip 4096
oslet_pd:
    .skip 4 * 4096
    .balign 16
oslet_boot_stack:
    .skip 16384
    .globl oslet_boot_stack_top   /* also ring 0's stack for exceptions from ring 3 */
oslet_boot_stack_top:
    .popsection

    /* ---------------- 32-bit entry (PVH) ---------------- */
    .pushsection .boot32, "ax"
    .code32
    .globl _start32
_start32:
    /* First instructions: marker byte '!' on the debug-console port. */
    movb $0x21, %al
    outb %al, $0xe9
    cli
    cld
    movl %ebx, %esi               /* struct hvm_start_info paddr */
    lgdtl oslet_gdt_ptr
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    ljmpl $0x18, $1f
1:
    /* Zero .bss (page tables and stack included). */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    shrl $2, %ecx
    xorl %eax, %eax
    rep stosl
    movl $oslet_boot_stack_top, %esp

    /* PML4[0] -> PDPT; PDPT[0..4] -> PD0..PD3. Every level has U/S set
       (0x7 = present, writable, user): ring-3 code (user.rs) uses the same
       identity map. No SMEP/SMAP (CR4 = PAE only), so ring 0 is unaffected. */
    movl $oslet_pdpt + 7, oslet_pml4
    movl $oslet_pd + 0x0007, oslet_pdpt
    movl $oslet_pd + 0x1007, oslet_pdpt + 8
    movl $oslet_pd + 0x2007, oslet_pdpt + 16
    movl $oslet_pd + 0x3007, oslet_pdpt + 24
    /* 2048 PD entries: 2 MiB pages, present, writable, user (0x87),
       write-back: RAM, and the link windows in the 32-bit hole below
       0xFEC00000, which are RAM (a shared memfd) too. */
    movl $oslet_pd, %edi
    movl $0x87, %eax
    xorl %ecx, %ecx
2:
    movl %eax, (%edi,%ecx,8)
    addl $0x200000, %eax
    incl %ecx
    cmpl $2048, %ecx
    jb 2b
    /* 0xFEC00000-0xFFFFFFFF (IOAPIC, HPET, LAPIC, firmware): PCD|PWT.
       (2038 = 0xFEC00000 >> 21; link windows may reach up to 0xFEC00000.) */
    movl $2038, %ecx
3:
    orl $0x18, (%edi,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jb 3b

    call oslet_enable_long_mode
    ljmpl $0x08, $oslet_long64

    /* CR4 = PAE only (no LA57: these are 4-level tables), CR3, EFER.LME,
       CR0.PG|PE with CD/NW cleared (caches on). Clobbers eax, ecx, edx. */
oslet_enable_long_mode:
    movl $0x20, %eax
    movl %eax, %cr4
    movl $oslet_pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    andl $0x9fffffff, %eax
    orl $0x80000001, %eax
    movl %eax, %cr0
    ret

    /* AP, arriving from the trampoline in 32-bit protected mode with our
       GDT loaded and CS = 0x18. No stack yet. */
    .globl oslet_ap_start32
oslet_ap_start32:
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    /* Same as oslet_enable_long_mode (inline: no stack yet). */
    movl $0x20, %eax
    movl %eax, %cr4
    movl $oslet_pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    andl $0x9fffffff, %eax
    orl $0x80000001, %eax
    movl %eax, %cr0
    ljmpl $0x08, $oslet_ap_long64
    .code64
    .popsection

    /* ---------------- 64-bit ---------------- */
    .pushsection .text.boot64, "ax"
    .code64
oslet_long64:
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movq $oslet_boot_stack_top, %rsp
    movl %esi, %edi               /* zero-extends: kmain(start_info_paddr) */
    xorl %ebp, %ebp
    call kmain
4:
    cli
    hlt
    jmp 4b

oslet_ap_long64:
    /* Claim the stack the BSP published (0 = none: a late or stray AP). */
    xorl %eax, %eax
    xchgq %rax, OSLET_AP_STACK(%rip)
    testq %rax, %rax
    jz 5f
    leaq -16(%rax), %rsp          /* [top-16] holds the cpu index */
    movq (%rsp), %rdi
    xorl %ebp, %ebp
    call ap_main
5:
    cli
    hlt
    jmp 5b
    .popsection

    /* ---------------- 16-bit AP trampoline ----------------
       Copied to a 4 KiB page P below 1 MiB; the AP starts at P:0 in real
       mode (CS = P >> 4). Position-independent: only offsets from its own
       start, plus absolute link-time addresses in the kernel image. */
    .pushsection .trampoline, "a"
    .code16
    .globl oslet_trampoline_start
oslet_trampoline_start:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    lgdtl oslet_tramp_gdt_ptr - oslet_trampoline_start
    /* CR0 = PE only: clears the CD/NW that INIT leaves set (like Linux). */
    movl $1, %eax
    movl %eax, %cr0
    ljmpl $0x18, $oslet_ap_start32
    .balign 8
oslet_tramp_gdt_ptr:
    .word oslet_gdt_end - oslet_gdt - 1
    .long oslet_gdt
    .globl oslet_trampoline_end
oslet_trampoline_end:
    .code64
    .popsection
"#,
    options(att_syntax)
);
