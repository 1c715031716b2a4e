//! The measuring loops of the data-path probes: the test kernel's `link-probe` (in
//! a guest's ring 3) and `examples/path_probe.rs` (host threads). One copy, so that
//! both sides run the same instructions and their figures compare line by line.
//! x86-64 only (the TSC, `rep movsb`). Every loop accesses memory as aligned u64
//! atomics, as the interconnect's own copies do, so none is vectorised.

use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};

/// Passes per best-of figure.
pub const REPS: usize = 200;

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc only reads the time-stamp counter into eax:edx.
    unsafe {
        core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi,
                         options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Cycles one TSC read costs: best of REPS runs of 1,000 reads.
pub fn rdtsc_cost() -> u64 {
    let mut min = u64::MAX;
    for _ in 0..REPS {
        let t0 = rdtsc();
        for _ in 0..1000 {
            black_box(rdtsc());
        }
        min = min.min(rdtsc().wrapping_sub(t0));
    }
    min / 1000
}

/// Best of REPS runs of `f`, in cycles per KiB of `bytes`.
pub fn best(bytes: usize, mut f: impl FnMut()) -> u64 {
    let mut min = u64::MAX;
    for _ in 0..REPS {
        let t0 = rdtsc();
        f();
        min = min.min(rdtsc().wrapping_sub(t0));
    }
    min * 1024 / bytes.max(1) as u64
}

/// `n` words at `p` as atomics (the window's access rule; plain `mov`s on x86).
///
/// # Safety
/// `p` is 8-aligned, mapped and readable for `n` words (writable too if the caller
/// stores through them) for the returned lifetime, and only accessed atomically
/// meanwhile.
pub unsafe fn words<'a>(p: *const u8, n: usize) -> &'a [AtomicU64] {
    // SAFETY: the caller's contract.
    unsafe { core::slice::from_raw_parts(p.cast::<AtomicU64>(), n) }
}

/// The sum of `w`'s words.
pub fn sum(w: &[AtomicU64]) -> u64 {
    w.iter()
        .fold(0u64, |s, x| s.wrapping_add(x.load(Ordering::Relaxed)))
}

/// Keeps a loaded sum alive.
pub fn sink(v: u64) {
    black_box(v);
}

/// Stores `v` into every word of `w`.
pub fn fill(w: &[AtomicU64], v: u64) {
    for x in w {
        x.store(v, Ordering::Relaxed);
    }
}

/// Copies `src` into `dst` word by word.
pub fn copy(dst: &[AtomicU64], src: &[AtomicU64]) {
    for (d, s) in dst.iter().zip(src) {
        d.store(s.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// Copies `src` into `dst` with `rep movsb`.
pub fn movsb(dst: &[AtomicU64], src: &[AtomicU64]) {
    let n = 8 * dst.len().min(src.len());
    // SAFETY: both ranges are valid for n bytes (the shorter slice's length); a
    // forward byte copy is defined for any overlap; the words are atomics, which
    // the probes access only from the copying thread meanwhile.
    unsafe {
        core::arch::asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst.as_ptr() => _,
                         inout("rsi") src.as_ptr() => _, options(nostack, preserves_flags));
    }
}

/// The memory loops over RAM (`ram`, `ram2`) and a link's rings (`own`, the peer's
/// `peer`, only loaded), all of `bytes`: (what, cycles per KiB), best of REPS each.
pub fn memory_loops(
    bytes: usize,
    ram: &[AtomicU64],
    ram2: &[AtomicU64],
    own: &[AtomicU64],
    peer: &[AtomicU64],
) -> [(&'static str, u64); 10] {
    [
        ("load ram", best(bytes, || sink(sum(ram)))),
        ("load own-window", best(bytes, || sink(sum(own)))),
        ("load peer-window", best(bytes, || sink(sum(peer)))),
        ("store ram", best(bytes, || fill(ram, 0x5a5a))),
        ("store own-window", best(bytes, || fill(own, 0x5a5a))),
        ("copy ram->ram", best(bytes, || copy(ram2, ram))),
        ("copy ram->own-window", best(bytes, || copy(own, ram))),
        ("copy peer-window->ram", best(bytes, || copy(ram, peer))),
        ("movsb ram->ram", best(bytes, || movsb(ram2, ram))),
        ("movsb ram->own-window", best(bytes, || movsb(own, ram))),
    ]
}

/// Time taken from the reading thread by whatever ran instead of it (the host, or
/// the hypervisor on the host's interrupts): gaps between two TSC reads.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gaps {
    /// How many gaps.
    pub count: u64,
    /// Their total, in cycles.
    pub total: u64,
    /// The longest, in cycles.
    pub longest: u64,
}

/// Reads the TSC back to back for `span` cycles; the gaps over `min` cycles.
pub fn gaps(span: u64, min: u64) -> Gaps {
    let mut g = Gaps::default();
    let start = rdtsc();
    let mut last = start;
    while last.wrapping_sub(start) < span {
        let now = rdtsc();
        let d = now.wrapping_sub(last);
        if d > min {
            g.count += 1;
            g.total += d;
            g.longest = g.longest.max(d);
        }
        last = now;
    }
    g
}
