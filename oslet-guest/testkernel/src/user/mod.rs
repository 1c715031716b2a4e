//! Everything that runs in ring 3 (natively, where ring 0 is emulated): the
//! command line, the links, and the test modes. Entered once from ring3.rs;
//! never returns to ring 0 (except through an exception, which is fatal).
//!
//! Ring 3 runs with IOPL 3: it prints on the UART, powers off through port
//! 0xF4 and reads the TSC itself. It owns an arena of free RAM (stack at its
//! top, buffers from a bump allocator below).

mod agent;
mod args;
mod bench;
mod clock;
mod doorbell;
mod echo;
mod forge;
mod fs;
mod hostile;
mod link;
mod poke;
mod probe;
mod stream;
mod token;

use crate::io::poweroff;
use crate::serial::Str;
use args::Args;
use clock::Clock;
use link::Links;

/// Bytes of ring 3's arena (for the agent's memory report).
pub static ARENA_BYTES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Ring 3's stack, at the top of the arena.
const STACK_BYTES: u64 = 256 * 1024;

/// A bump allocator over the arena below the stack.
pub struct Arena {
    next: u64,
    end: u64,
}

impl Arena {
    /// `n` zeroed u64s, or None when the arena is exhausted.
    pub fn words(&mut self, n: usize) -> Option<&'static mut [u64]> {
        let bytes = (n as u64).checked_mul(8)?;
        let at = (self.next + 63) & !63;
        if at.checked_add(bytes)? > self.end {
            return None;
        }
        self.next = at + bytes;
        let p = at as usize as *mut u64;
        // SAFETY: [at, at+bytes) is free RAM given to ring 3 alone (ring 0
        // found it clear of everything else and never touches it again),
        // identity-mapped with U/S, and handed out once.
        unsafe {
            core::ptr::write_bytes(p, 0, n);
            Some(core::slice::from_raw_parts_mut(p, n))
        }
    }

    /// `n` zeroed bytes (64-byte aligned), or None.
    pub fn bytes(&mut self, n: usize) -> Option<&'static mut [u8]> {
        let w = self.words(n.div_ceil(8))?;
        // SAFETY: the same memory, as bytes: n <= 8 * w.len().
        Some(unsafe { core::slice::from_raw_parts_mut(w.as_mut_ptr().cast::<u8>(), n) })
    }
}

/// What every mode gets.
pub struct Env {
    pub args: Args,
    pub name: &'static [u8],
    pub clock: Clock,
    pub links: Links,
    pub arena: Arena,
}

/// A fatal setup error: print it and power off with status 1.
pub fn fail(what: &str, detail: &[u8]) -> ! {
    if detail.is_empty() {
        say!(what);
    } else {
        say!(what, ": \"", Str(detail), "\"");
    }
    poweroff(1)
}

/// Ring 3's entry point (from `ring3::enter`, by iretq).
pub extern "C" fn main(cmdline: u64, arena: u64, arena_len: u64) -> ! {
    let cpl = crate::ring3::cpl();
    ARENA_BYTES.store(arena_len, core::sync::atomic::Ordering::Relaxed);
    let mut arena = Arena {
        next: arena,
        end: arena + arena_len.saturating_sub(STACK_BYTES),
    };
    let args = Args::copy_from(cmdline, &mut arena);

    if args.has("ring3-selftest") {
        let rflags: u64;
        // SAFETY: reads RFLAGS through the stack.
        unsafe { core::arch::asm!("pushfq", "pop {}", out(reg) rflags, options(preserves_flags)) };
        say!(
            "ring 3: rflags ",
            crate::serial::Hex(rflags),
            " (iopl ",
            (rflags >> 12) & 3,
            ")"
        );
        say!("ring 3 ok (cpl ", cpl, ")");
        poweroff(0)
    }
    if args.has("ring3-spin") {
        // A busy vCPU that never halts or exits, for `oslet top` and its tests.
        say!("ring 3: spinning (cpl ", cpl, ")");
        loop {
            core::hint::spin_loop();
        }
    }
    if args.has("ring3-echo") {
        echo::run()
    }
    if args.has("ring3-fault") {
        say!("raising #UD in ring 3 (cpl ", cpl, ")");
        // SAFETY: deliberately faults: the exception handler (ring 0)
        // prints the exception and powers off with status 3.
        unsafe { core::arch::asm!("ud2", options(noreturn)) }
    }

    let name = args.value(b"oslet.name").unwrap_or(b"?");
    let clock = Clock::new(&args);
    let links = Links::parse(&args);
    let mut env = Env {
        args,
        name,
        clock,
        links,
        arena,
    };

    if let Some(n) = env.args.value(b"link-stream") {
        let Some(n) = args::number(n) else {
            fail("link-stream: not a number", n)
        };
        stream::run(&mut env, n)
    }
    if env.args.has("link-hostile") {
        hostile::run(&mut env)
    }
    if env.args.has("link-poke-peer") {
        poke::run(&mut env)
    }
    if env.args.has("link-probe") {
        probe::run(&mut env)
    }
    if let Some(r) = env.args.value(b"link-token") {
        let Some(r) = args::number(r).filter(|&r| r > 0) else {
            fail("link-token: not a positive number", r)
        };
        token::run(&mut env, r)
    }
    if let Some(role) = env.args.value(b"link-bench") {
        bench::run(&mut env, role)
    }
    if env.args.has("ring3-agent") {
        agent::run(&mut env)
    }
    if env.args.first_with_prefix(b"fs-").is_some() {
        fs::run(&mut env)
    }
    match env
        .args
        .first_with_prefix(b"link-")
        .or(env.args.first_with_prefix(b"ring3-"))
    {
        Some(w) => fail("unknown ring-3 mode", w),
        None => fail("no ring-3 mode on the command line", b""),
    }
}
