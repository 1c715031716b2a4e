//! memcpy & co. for the compiler's calls: `rep movsb` / `rep stosb` / byte
//! loops, so no SSE from compiler_builtins or libc ever runs in ring 0.
//!
//! Copies and fills under SMALL bytes use an 8-bytes-at-a-time `mov` loop
//! instead: `rep movsb` costs tens of cycles to start, and ring-3 link code
//! makes many tiny calls (the interconnect copies message bytes one 8-byte
//! word at a time, each a `copy_from_slice` that becomes `memcpy(_, _, 8)`).
//! The loops are inline asm, so LLVM cannot turn them back into calls.

use core::arch::asm;

const SMALL: usize = 256;

/// Forward copy of n bytes, 8 at a time then bytewise (any alignment).
#[inline(always)]
unsafe fn copy_small(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the caller's contract (valid ranges; forward copy is safe).
    unsafe {
        asm!(
            "2:",
            "cmp {n}, 8",
            "jb 3f",
            "mov {t}, qword ptr [{s}]",
            "mov qword ptr [{d}], {t}",
            "add {s}, 8",
            "add {d}, 8",
            "sub {n}, 8",
            "jmp 2b",
            "3:",
            "test {n}, {n}",
            "jz 4f",
            "mov {t:l}, byte ptr [{s}]",
            "mov byte ptr [{d}], {t:l}",
            "inc {s}",
            "inc {d}",
            "dec {n}",
            "jmp 3b",
            "4:",
            n = inout(reg) n => _,
            s = inout(reg) src => _,
            d = inout(reg) dst => _,
            t = out(reg) _,
            options(nostack)
        );
    }
}

#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if n < SMALL {
        // SAFETY: the caller's contract (valid, non-overlapping ranges).
        unsafe { copy_small(dst, src, n) };
        return dst;
    }
    // SAFETY: the caller's contract (valid, non-overlapping ranges).
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dst
}

#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: forward copy is safe when dst is below src or past its end.
        unsafe {
            asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
                 options(nostack, preserves_flags));
        }
    } else {
        // SAFETY: overlapping with dst above src: copy backwards.
        unsafe {
            asm!("std", "rep movsb", "cld",
                 inout("rcx") n => _, inout("rdi") dst.add(n - 1) => _,
                 inout("rsi") src.add(n - 1) => _, options(nostack));
        }
    }
    dst
}

#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    if n < SMALL {
        let v = (c as u8 as u64).wrapping_mul(0x0101_0101_0101_0101);
        // SAFETY: the caller's contract (dst valid for n bytes).
        unsafe {
            asm!(
                "2:",
                "cmp {n}, 8",
                "jb 3f",
                "mov qword ptr [{d}], {v}",
                "add {d}, 8",
                "sub {n}, 8",
                "jmp 2b",
                "3:",
                "test {n}, {n}",
                "jz 4f",
                "mov byte ptr [{d}], {v:l}",
                "inc {d}",
                "dec {n}",
                "jmp 3b",
                "4:",
                n = inout(reg) n => _,
                d = inout(reg) dst => _,
                v = in(reg) v,
                options(nostack)
            );
        }
        return dst;
    }
    // SAFETY: the caller's contract.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dst
}

#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller's contract; volatile keeps LLVM from turning
        // this loop back into a memcmp call.
        let (x, y) = unsafe {
            (
                core::ptr::read_volatile(a.add(i)),
                core::ptr::read_volatile(b.add(i)),
            )
        };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}
