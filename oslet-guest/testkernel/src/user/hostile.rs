//! `link-hostile`: behave, then scribble. On every link: exchange WARMUP
//! valid `link-stream` messages each way (so the peer is mid-stream), print
//! `link <peer>: scribbling`, then overwrite our own section with xorshift
//! garbage, forever (the test ends it with SIGINT):
//!
//! 1. for SCRIBBLE_RINGS_MS, everything from offset 0x80 on (producer and
//!    consumer indices, notify words, ring data), leaving the header and the
//!    state line (magic, geometry, state word, peer ack) as they were: the
//!    peer still takes us for the incarnation it is connected to, so the
//!    garbage must show up as a protocol violation (a broken link) rather
//!    than as a restart;
//! 2. then every byte of the section, header and state word included, in a
//!    loop that never ends.

use super::stream::{self, Rng};
use super::Env;
use crate::serial::Str;
use core::sync::atomic::{AtomicU64, Ordering};
use oslet_interconnect::layout::off;

const WARMUP: u64 = 100;
const SCRIBBLE_RINGS_MS: u64 = 200;

/// Overwrites [from, to) of the section at `base` with garbage, as aligned
/// 64-bit atomic stores (the window's access rule).
fn scribble(base: u64, from: usize, to: usize, rng: &mut Rng) {
    let mut o = from;
    while o < to {
        // SAFETY: `base + o` is inside our own section (writable, mapped,
        // 8-aligned); the window is only ever accessed atomically.
        unsafe { AtomicU64::from_ptr((base + o as u64) as usize as *mut u64) }
            .store(rng.next(), Ordering::Relaxed);
        o += 8;
    }
}

pub fn run(env: &mut Env) -> ! {
    if env.links.len() == 0 {
        super::fail("link-hostile: no oslet.link on the command line", b"");
    }
    say!(
        "link-hostile: ",
        WARMUP,
        " valid messages each way, then garbage, as ",
        Str(env.name)
    );
    // The outcome does not matter: scribble whatever happened.
    let _ = stream::exchange(env, WARMUP, true, 0);
    let n = env.links.len();
    let mut sections = [(0u64, 0usize); super::link::MAX_LINKS];
    for (i, s) in sections.iter_mut().enumerate().take(n) {
        let l = env.links.get(i);
        *s = (l.own_section(), l.config.section_bytes() as usize);
        say!("link ", Str(l.peer), ": scribbling");
    }
    // The endpoints are never used (nor dropped) again: only garbage is
    // written from here on.
    let mut rng = Rng::new(env.clock.now_ns() ^ 0x005e_ed0f_6a5b_a6e5);
    let phase1 = env.clock.deadline(SCRIBBLE_RINGS_MS);
    while !phase1.passed() {
        for &(base, len) in &sections[..n] {
            scribble(base, off::TX_PROD, len, &mut rng);
        }
    }
    loop {
        for &(base, len) in &sections[..n] {
            scribble(base, 0, len, &mut rng);
        }
    }
}
