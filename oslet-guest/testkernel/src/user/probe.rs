//! `link-probe`: what the link's data path costs in ring 3 here, in TSC
//! cycles, measured exactly as the host half does
//! (`interconnect/examples/path_probe.rs`), so that the two compare line by
//! line. Best-of figures, so that preemption by the host does not count.
//!
//! On side A of the first link:
//! * `rdtsc`: the cost of one TSC read; then, for 1 s, the gaps (over
//!   10 us) between back-to-back TSC reads: time the vCPU did not run;
//! * memory loops over arena RAM and the link window (our section's ring,
//!   and the peer's, read-only): aligned 64-bit loads, stores and word-by-word
//!   copies (what the interconnect's copies compile to) and a `rep movsb`
//!   copy, in cycles per KiB, best of REPS passes. A window mapped uncached or
//!   write-through would show here.
//!
//! Then, if the peer runs `link-probe` too (it connects within CONNECT_MS):
//! * the raw loops crossing vCPUs (`crossing`): A stores into its ring while
//!   B waits, then B loads it (odd rounds) or copies it into its RAM (even
//!   rounds) while A waits;
//! * A fills its ring with S-byte messages (timed) while B waits, then B
//!   drains it (timed) while A waits: each side's own cost per message, with
//!   the data crossing vCPUs but the two never running at once; best of
//!   ROUNDS rounds. The two hand each other the turn through a word of their
//!   control pages, as the host half's threads do through a barrier; each
//!   size runs twice, the waiting side idle, then polling the link meanwhile.
//!   (Until stop 9 the guest's waiting side polled the link and B slept 50 ms
//!   before draining, while the host's did neither: that made the guest's
//!   figures 2-3x the host's, with no such difference in the data path.)
//!
//! Lines: `probe: <what> <bytes> B: <n> cycles/KiB`,
//! `probe: store after the peer loaded it|load after the peer stored it|copy
//! to RAM after the peer stored it <bytes> B: <n> cycles/KiB`, `probe:
//! <send|recv> <size> B[ while the peer polls the link]: <n> cycles/message`.
//! Status 0.

use super::clock::Clock;
use super::link::Link;
use super::{fail, Env};
use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};
use oslet_interconnect::probe::{
    self, copy, fill, gaps, memory_loops, rdtsc, rdtsc_cost, sink, sum,
};
use oslet_interconnect::{Endpoint, Side};

/// Memory-loop sizes: within L1/L2, and the whole 1 MiB ring (past L2).
const SIZES: [usize; 3] = [4096, 65536, 1 << 20];
const ROUNDS: usize = 30;
const MSG_SIZES: [usize; 3] = [64, 4096, 65536];
const CONNECT_MS: u64 = 10_000;
/// A peer that does not hand back the turn within this long has stopped.
const TURN_MS: u64 = 10_000;

/// `n` words at guest address `p` (see [`probe::words`]).
///
/// # Safety
/// As [`probe::words`].
unsafe fn words<'a>(p: u64, n: usize) -> &'a [AtomicU64] {
    // SAFETY: the caller's contract.
    unsafe { probe::words(p as usize as *const u8, n) }
}

fn memory(env: &mut Env) {
    say!("probe: rdtsc: ", rdtsc_cost(), " cycles each");
    let g = gaps(env.clock.cycles(1000), env.clock.cycles(1) / 100);
    say!(
        "probe: 1 s of reading the TSC: ",
        g.count,
        " gaps over 10 us, ",
        g.total * 1000 / env.clock.khz,
        " us in all, longest ",
        g.longest * 1000 / env.clock.khz,
        " us"
    );
    let max = SIZES[SIZES.len() - 1];
    let (Some(a), Some(b)) = (env.arena.words(max / 8), env.arena.words(max / 8)) else {
        fail("link-probe: no arena memory", b"")
    };
    let l = env.links.get(0);
    let ring = l.config.ring_bytes() as usize;
    let own = l.own_section() + 0x1000;
    let peer = l.window + l.config.section_offset(l.side.peer()) as u64 + 0x1000;
    // SAFETY: `a` and `b` are arena words of ours; `own` and `peer` are the
    // rings of the two sections of the first link's window, mapped for the
    // guest's lifetime (ours writable, the peer's read-only: only loaded
    // here), `ring` bytes each; nothing else accesses any of them meanwhile
    // (A probes before it sends anything, B only reads A's control words).
    let (ram, ram2, own, peer) = unsafe {
        (
            words(a.as_mut_ptr() as u64, max / 8),
            words(b.as_mut_ptr() as u64, max / 8),
            words(own, ring / 8),
            words(peer, ring / 8),
        )
    };
    for &n in SIZES.iter().filter(|&&n| n <= ring) {
        let w = n / 8;
        let (ram, ram2, own, peer) = (&ram[..w], &ram2[..w], &own[..w], &peer[..w]);
        let r = memory_loops(n, ram, ram2, own, peer);
        for (what, c) in r {
            say!("probe: ", what, " ", n, " B: ", c, " cycles/KiB");
        }
    }
}

/// Polls (at most CONNECT_MS) until the first link is connected.
fn connected(env: &mut Env) -> bool {
    let d = env.clock.deadline(CONNECT_MS);
    let l = env.links.get(0);
    while !d.passed() {
        if matches!(l.ep.poll(), Ok(p) if p.peer_up) {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

fn phases(env: &mut Env) {
    let clock = env.clock;
    let Some(buf) = env.arena.bytes(65536) else {
        fail("link-probe: no arena memory", b"")
    };
    let l = env.links.get(0);
    let ring = l.config.ring_bytes() as usize;
    let a = l.side == Side::A;
    let (own_turn, peer_turn) = turn_words(l);
    let mut k = 0u64;
    let sizes = MSG_SIZES.iter().filter(|&&s| s <= ring / 4);
    for (&s, busy) in sizes.flat_map(|s| [(s, false), (s, true)]) {
        let rec = 8 + s.next_multiple_of(8);
        let mut best = u64::MAX;
        for _ in 0..ROUNDS {
            let (mut n, t);
            // The two hand each other the turn through the TURN words (as the
            // host probe's threads do through a barrier). The side that waits
            // does nothing else (`busy` false), or polls the link meanwhile
            // (`busy`: what a peer that spins on an empty or full ring does).
            k += 1;
            if a {
                n = 0u64;
                let t0 = rdtsc();
                while l.ep.send(&buf[..s]).is_ok() {
                    n += 1;
                }
                t = rdtsc().wrapping_sub(t0);
                own_turn.store(k, Ordering::Release);
                // B drains it all before the next round.
                if !wait_turn(peer_turn, k, &clock, busy.then_some(&mut l.ep)) {
                    break;
                }
            } else {
                if !wait_turn(peer_turn, k, &clock, busy.then_some(&mut l.ep)) {
                    break;
                }
                n = 0;
                let t0 = rdtsc();
                while let Ok(Some(_)) = l.ep.recv(buf) {
                    n += 1;
                }
                t = rdtsc().wrapping_sub(t0);
                own_turn.store(k, Ordering::Release);
            }
            // A round where B started before the ring was full does not count.
            if n as usize >= ring / rec - 1 {
                best = best.min(t / n);
            }
        }
        say!(
            "probe: ",
            if a { "send " } else { "recv " },
            s,
            " B",
            if busy { " while the peer polls the link" } else { "" },
            ": ",
            best,
            " cycles/message"
        );
    }
}

/// Where the two sides hand each other the turn in `crossing`: a word in the
/// reserved part of each side's control page (0x108..0x1000), which endpoints
/// never read or write.
const TURN: u64 = 0x800;

/// Our TURN word (writable) and the peer's (read-only).
fn turn_words(l: &Link) -> (&'static AtomicU64, &'static AtomicU64) {
    let own_sec = l.own_section();
    let peer_sec = l.window + l.config.section_offset(l.side.peer()) as u64;
    // SAFETY: both sections of the link's window are mapped for the guest's
    // lifetime (ours writable, the peer's read-only: only loaded); TURN is an
    // 8-aligned word of the reserved control area, which endpoints never touch.
    unsafe { (&words(own_sec + TURN, 1)[0], &words(peer_sec + TURN, 1)[0]) }
}

/// Spins until the peer's TURN word reads `k`, polling `ep` meanwhile if
/// given; false if it does not within TURN_MS (the peer stopped).
fn wait_turn(peer_turn: &AtomicU64, k: u64, clock: &Clock, mut ep: Option<&mut Endpoint>) -> bool {
    let d = clock.deadline(TURN_MS);
    let mut spins = 0u32;
    loop {
        let v = peer_turn.load(Ordering::Relaxed);
        core::sync::atomic::fence(Ordering::Acquire);
        if v == k {
            return true;
        }
        if let Some(ep) = ep.as_deref_mut() {
            black_box(ep.poll().is_ok());
        }
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(1024) && d.passed() {
            return false;
        }
        core::hint::spin_loop();
    }
}

/// The raw memory loops again, but crossing vCPUs: A stores into its ring
/// while B waits, then B loads what A stored while A waits (A's stores must
/// take the lines back from B's cache, B's loads fetch them from A's). Best of
/// ROUNDS, cycles per KiB. Before `phases`: the rings hold garbage afterwards,
/// which the protocol never looks at (only records below a producer index).
fn crossing(env: &mut Env) {
    let l = env.links.get(0);
    let a = l.side == Side::A;
    let ring = l.config.ring_bytes() as usize;
    let own_sec = l.own_section();
    let peer_sec = l.window + l.config.section_offset(l.side.peer()) as u64;
    // SAFETY: both sections of the first link's window are mapped for the
    // guest's lifetime (ours writable, the peer's read-only: only loaded);
    // the rings start at 0x1000, `ring` bytes; the endpoint does not touch
    // them while the probe runs (it is not used until `phases`).
    let (own, peer) = unsafe {
        (
            words(own_sec + 0x1000, ring / 8),
            words(peer_sec + 0x1000, ring / 8),
        )
    };
    let (own_turn, peer_turn) = turn_words(l);
    let peer_turn_is = |k: u64| {
        let v = peer_turn.load(Ordering::Relaxed);
        core::sync::atomic::fence(Ordering::Acquire);
        v == k
    };
    let Some(ram) = env.arena.words(ring / 8) else {
        fail("link-probe: no arena memory", b"")
    };
    // SAFETY: arena words of ours, used only here (atomically, as the window).
    let ram = unsafe { words(ram.as_mut_ptr() as u64, ring / 8) };
    for &n in [65536usize, 1 << 20].iter().filter(|&&n| n <= ring) {
        let w = n / 8;
        let (mut best, mut best_copy) = (u64::MAX, u64::MAX);
        for round in 1..=2 * ROUNDS as u64 {
            let k = ((n as u64) << 32) | round;
            let t;
            if a {
                let t0 = rdtsc();
                fill(&own[..w], k);
                t = rdtsc().wrapping_sub(t0);
                own_turn.store(k, Ordering::Release);
                while !peer_turn_is(k) {
                    core::hint::spin_loop();
                }
            } else {
                while !peer_turn_is(k) {
                    core::hint::spin_loop();
                }
                let t0 = rdtsc();
                if round % 2 == 1 {
                    sink(sum(&peer[..w]));
                } else {
                    copy(&ram[..w], &peer[..w]);
                }
                t = rdtsc().wrapping_sub(t0);
                own_turn.store(k, Ordering::Release);
            }
            // B loads in odd rounds and copies into its RAM in even ones.
            if a || round % 2 == 1 {
                best = best.min(t);
            } else {
                best_copy = best_copy.min(t);
            }
        }
        say!(
            "probe: ",
            if a {
                "store after the peer loaded it "
            } else {
                "load after the peer stored it "
            },
            n,
            " B: ",
            best * 1024 / n as u64,
            " cycles/KiB"
        );
        if !a {
            say!(
                "probe: copy to RAM after the peer stored it ",
                n,
                " B: ",
                best_copy * 1024 / n as u64,
                " cycles/KiB"
            );
        }
    }
}

pub fn run(env: &mut Env) -> ! {
    if env.links.len() == 0 {
        fail("link-probe: no oslet.link on the command line", b"");
    }
    if env.links.get(0).side == Side::A {
        memory(env);
    }
    if connected(env) {
        crossing(env);
        phases(env);
    } else {
        say!("probe: no peer connected: send and receive not measured");
    }
    env.links.close_all();
    crate::io::poweroff(0)
}
