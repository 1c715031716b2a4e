//! `link-poke-peer`: checks that the peer's section really is read-only here.
//! On the first link: wait until connected (so the peer's section holds its
//! header), then try to overwrite the peer's magic word and producer index
//! with a pattern, read both back, and report:
//! `link <peer>: peer section is read-only (2 writes dropped)` and power off 0
//! when nothing changed, or `link <peer>: peer section is WRITABLE ...` and
//! power off 1. The VMM sees each write as an MMIO exit into a
//! KVM_MEM_READONLY slot and drops it.

use super::Env;
use crate::io::poweroff;
use crate::serial::{Hex, Str};
use core::sync::atomic::{AtomicU32, Ordering};
use oslet_interconnect::layout::off;

const PATTERN: u32 = 0xDEAD_BEEF;

pub fn run(env: &mut Env) -> ! {
    if env.links.len() == 0 {
        super::fail("link-poke-peer: no oslet.link on the command line", b"");
    }
    env.links.wait_connected(&[0], &env.clock, 30_000);
    let l = env.links.get(0);
    let peer_base = l.window + l.config.section_offset(l.side.peer()) as u64;
    let peer = l.peer;
    let mut dropped = 0u32;
    for word in [off::MAGIC0, off::TX_PROD] {
        let p = (peer_base + word as u64) as usize as *mut u32;
        // SAFETY: `p` is an aligned word of the peer's section, mapped in our
        // identity map (read-only in the VM: the store traps to the VMM, which
        // drops it); the window is only ever accessed as aligned atomics.
        let a = unsafe { AtomicU32::from_ptr(p) };
        let before = a.load(Ordering::Acquire);
        a.store(PATTERN, Ordering::Release);
        let after = a.load(Ordering::Acquire);
        if after != before {
            say!(
                "link ", Str(peer), ": peer section is WRITABLE (word ", Hex(word as u64),
                " was ", Hex(before as u64), ", now ", Hex(after as u64), ")"
            );
            poweroff(1)
        }
        dropped += 1;
    }
    say!("link ", Str(peer), ": peer section is read-only (", dropped, " writes dropped)");
    poweroff(0)
}
