//! `link-token=<R> token-next=<peer> token-prev=<peer> [token-start]`: n
//! OSlets in a ring pass a u64 token. Messages are 16 bytes: u32 magic
//! "TOKN" (0x4E4B4F54 LE), u32 kind (1 token, 2 stop), u64 value (LE).
//!
//! * The starter sends token 0 to next. Every other OSlet, on token v from
//!   prev, sends token v+1 to next. So a trip adds n-1, and the starter,
//!   receiving token v from prev, has completed a trip: after trip r it holds
//!   v = r*n - 1 (it checks that: n = v+1 after trip 1).
//! * Unless that was trip R, the starter sends token v+1 to next (one more
//!   increment, so trip r+1 starts at r*n). After trip R it sends stop(v) to
//!   next instead; every other OSlet forwards stop(v) once, prints
//!   `token: passed R times` and powers off 0. When stop(v) comes back, the
//!   starter prints `token: R rounds, final value v` (v = n*R - 1) and
//!   powers off 0.
//!
//! With n = 2, next and prev are the same peer (one link).

use super::link::ShowPeer;
use super::stream::{CONNECT_MS, LINGER_MS};
use super::{fail, Env};
use crate::serial::{Disp, Str};
use oslet_interconnect::{RecvError, SendError};

const MAGIC: u32 = 0x4E4B_4F54;
const TOKEN: u32 = 1;
const STOP: u32 = 2;
/// Nothing received for this long: report and give up.
const STALL_MS: u64 = 30_000;

fn encode(kind: u32, v: u64) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    m[4..8].copy_from_slice(&kind.to_le_bytes());
    m[8..16].copy_from_slice(&v.to_le_bytes());
    m
}

fn send(env: &mut Env, i: usize, kind: u32, v: u64) {
    let msg = encode(kind, v);
    let deadline = env.clock.deadline(STALL_MS);
    let l = env.links.get(i);
    loop {
        match l.ep.send(&msg) {
            Ok(()) => return,
            Err(SendError::Full) | Err(SendError::PeerDown) if !deadline.passed() => {
                core::hint::spin_loop()
            }
            Err(SendError::Broken(v)) => {
                say!("token: link ", Str(l.peer), ": broken: ", Disp(&v));
                crate::io::poweroff(1)
            }
            Err(e) => {
                say!(
                    "token: link ",
                    Str(l.peer),
                    ": cannot send: ",
                    Disp(&e),
                    " (peer ",
                    ShowPeer(l.ep.peer_state()),
                    ")"
                );
                crate::io::poweroff(1)
            }
        }
    }
}

/// The next (kind, value) from link `i`.
fn recv(env: &mut Env, i: usize) -> (u32, u64) {
    let deadline = env.clock.deadline(STALL_MS);
    let l = env.links.get(i);
    let mut buf = [0u8; 64];
    loop {
        match l.ep.recv(&mut buf) {
            Ok(Some(16)) => {
                let magic = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
                let kind = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
                let mut v = [0u8; 8];
                v.copy_from_slice(&buf[8..16]);
                if magic != MAGIC || (kind != TOKEN && kind != STOP) {
                    say!("token: link ", Str(l.peer), ": not a token message");
                    crate::io::poweroff(1)
                }
                return (kind, u64::from_le_bytes(v));
            }
            Ok(Some(n)) => {
                say!(
                    "token: link ",
                    Str(l.peer),
                    ": ",
                    n,
                    "-byte message, not a token"
                );
                crate::io::poweroff(1)
            }
            Ok(None) if !deadline.passed() => core::hint::spin_loop(),
            Ok(None) => {
                say!(
                    "token: link ",
                    Str(l.peer),
                    ": nothing received for ",
                    STALL_MS / 1000,
                    " s (peer ",
                    ShowPeer(l.ep.peer_state()),
                    ")"
                );
                crate::io::poweroff(1)
            }
            Err(RecvError::PeerDown) => {
                say!(
                    "token: link ",
                    Str(l.peer),
                    ": peer down (",
                    ShowPeer(l.ep.peer_state()),
                    ")"
                );
                crate::io::poweroff(1)
            }
            Err(e) => {
                let v = l.ep.violation();
                match v {
                    Some(v) => say!("token: link ", Str(l.peer), ": broken: ", Disp(&v)),
                    None => say!("token: link ", Str(l.peer), ": ", Disp(&e)),
                }
                crate::io::poweroff(1)
            }
        }
    }
}

fn link_for(env: &Env, key: &[u8]) -> usize {
    let Some(peer) = env.args.value(key) else {
        fail(
            "link-token needs token-next=<peer> and token-prev=<peer>",
            b"",
        )
    };
    match env.links.find(peer) {
        Some(i) => i,
        None => fail("link-token: no oslet.link to", peer),
    }
}

pub fn run(env: &mut Env, rounds: u64) -> ! {
    let next = link_for(env, b"token-next");
    let prev = link_for(env, b"token-prev");
    let start = env.args.has("token-start");
    say!(
        "token: next ",
        Str(env.links.get(next).peer),
        ", prev ",
        Str(env.links.get(prev).peer),
        ", ",
        rounds,
        " rounds",
        if start { ", starting" } else { "" }
    );
    let which = [next, prev];
    let which = if next == prev {
        &which[..1]
    } else {
        &which[..]
    };
    env.links.wait_connected(which, &env.clock, CONNECT_MS);

    if start {
        let mut trips = 0u64;
        let mut n = 0u64;
        send(env, next, TOKEN, 0);
        loop {
            match recv(env, prev) {
                (TOKEN, v) => {
                    trips += 1;
                    if trips == 1 {
                        n = v + 1;
                    } else if v != trips * n - 1 {
                        say!(
                            "token: trip ",
                            trips,
                            " ended with ",
                            v,
                            ", expected ",
                            trips * n - 1
                        );
                        crate::io::poweroff(1)
                    }
                    if trips == rounds {
                        send(env, next, STOP, v);
                    } else {
                        send(env, next, TOKEN, v + 1);
                    }
                }
                (_, v) => {
                    if trips != rounds {
                        say!("token: stop after ", trips, " of ", rounds, " rounds");
                        crate::io::poweroff(1)
                    }
                    say!("token: ring of ", n, " oslets");
                    say!("token: ", rounds, " rounds, final value ", v);
                    env.links.close_all();
                    crate::io::poweroff(0)
                }
            }
        }
    }
    let mut passed = 0u64;
    loop {
        match recv(env, prev) {
            (TOKEN, v) => {
                send(env, next, TOKEN, v + 1);
                passed += 1;
            }
            (_, v) => {
                send(env, next, STOP, v);
                say!("token: passed ", passed, " times");
                env.links.linger(next, &env.clock, LINGER_MS);
                env.links.close_all();
                crate::io::poweroff(0)
            }
        }
    }
}
