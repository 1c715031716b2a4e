//! `link-stream=<N>`: on every link, send N checked messages and receive the
//! peer's N, both directions at once in one polling loop.
//!
//! A message is a 16-byte header and a payload of L bytes, 1 <= L <= MAXP
//! where MAXP = min(2048, max payload - 16):
//!
//! | offset | size | what |
//! | --- | --- | --- |
//! | 0 | 8 | sequence number, from 0 (u64 LE) |
//! | 8 | 4 | L (u32 LE) |
//! | 12 | 4 | FNV-1a 32 of the payload (u32 LE) |
//! | 16 | L | payload |
//!
//! L and the payload come from a xorshift64 generator seeded by the sender's
//! side. The receiver checks, in this order: the message is at least 16
//! bytes, L equals its length minus 16, 1 <= L <= MAXP, the sequence number
//! is the next one, the checksum is right.

use super::clock::Deadline;
use super::link::{Links, ShowPeer, MAX_LINKS};
use super::{fail, Env};
use crate::serial::{Disp, Hex, Str};
use oslet_interconnect::{PeerState, RecvError, SendError, Side};

pub const HDR: usize = 16;
const MAX_STREAM_PAYLOAD: usize = 2048;
/// Largest message received into a buffer (longer ones count as corrupt).
const RX_BUF: usize = 64 * 1024;
/// Sends and receives per link per turn of the loop.
const BURST: usize = 32;
/// No message either way for this long (while neither side is finished):
/// report the link as stalled.
const STALL_MS: u64 = 30_000;
/// Long streams (N/10 above this) also report once after this many
/// messages, so that a run is seen to be under way early.
const EARLY_REPORT: u64 = 1000;
/// Waiting for the peer to connect.
pub const CONNECT_MS: u64 = 60_000;
/// After finishing, waiting for the peer to take what we sent.
pub const LINGER_MS: u64 = 5_000;

pub struct Rng(u64);

impl Rng {
    pub fn for_side(side: Side) -> Rng {
        Rng(match side {
            Side::A => 0x9e37_79b9_7f4a_7c15,
            Side::B => 0xc2b2_ae3d_27d4_eb4f,
        })
    }

    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    #[inline]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[inline]
pub fn fnv1a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in data {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

pub fn max_stream_payload(max_payload: usize) -> usize {
    MAX_STREAM_PAYLOAD
        .min(max_payload.saturating_sub(HDR))
        .max(1)
}

/// Writes message `seq` into `buf`; returns its length.
pub fn build(buf: &mut [u8], seq: u64, rng: &mut Rng, maxp: usize) -> usize {
    let len = 1 + (rng.next() % maxp as u64) as usize;
    let payload = &mut buf[HDR..HDR + len];
    for chunk in payload.chunks_mut(8) {
        let w = rng.next().to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
    let sum = fnv1a(payload);
    buf[0..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    buf[12..16].copy_from_slice(&sum.to_le_bytes());
    HDR + len
}

/// Why a received message is wrong.
pub enum Corrupt {
    Short(usize),
    LenField { field: u32, actual: usize },
    Size { len: usize, max: usize },
    Sequence { got: u64, want: u64 },
    Checksum { got: u32, want: u32 },
    TooBig(usize),
}

pub fn check(msg: &[u8], want: u64, maxp: usize) -> Result<(), Corrupt> {
    if msg.len() < HDR {
        return Err(Corrupt::Short(msg.len()));
    }
    let seq = u64::from_le_bytes(msg[0..8].try_into().unwrap_or([0; 8]));
    let field = u32::from_le_bytes(msg[8..12].try_into().unwrap_or([0; 4]));
    let sum = u32::from_le_bytes(msg[12..16].try_into().unwrap_or([0; 4]));
    let payload = &msg[HDR..];
    if field as usize != payload.len() {
        return Err(Corrupt::LenField {
            field,
            actual: payload.len(),
        });
    }
    if payload.is_empty() || payload.len() > maxp {
        return Err(Corrupt::Size {
            len: payload.len(),
            max: maxp,
        });
    }
    if seq != want {
        return Err(Corrupt::Sequence { got: seq, want });
    }
    let real = fnv1a(payload);
    if real != sum {
        return Err(Corrupt::Checksum {
            got: real,
            want: sum,
        });
    }
    Ok(())
}

fn say_corrupt(peer: &[u8], i: u64, c: &Corrupt) {
    let head = ": corrupt message ";
    match *c {
        Corrupt::Short(n) => say!(
            "link ",
            Str(peer),
            head,
            i,
            ": ",
            n,
            " bytes, shorter than the 16-byte header"
        ),
        Corrupt::LenField { field, actual } => say!(
            "link ",
            Str(peer),
            head,
            i,
            ": length field ",
            field,
            " but ",
            actual,
            " payload bytes"
        ),
        Corrupt::Size { len, max } => say!(
            "link ",
            Str(peer),
            head,
            i,
            ": payload size ",
            len,
            " outside 1..=",
            max
        ),
        Corrupt::Sequence { got, want } => say!(
            "link ",
            Str(peer),
            head,
            i,
            ": sequence number ",
            got,
            ", expected ",
            want
        ),
        Corrupt::Checksum { got, want } => say!(
            "link ",
            Str(peer),
            head,
            i,
            ": checksum ",
            Hex(got as u64),
            ", header says ",
            Hex(want as u64)
        ),
        Corrupt::TooBig(n) => say!(
            "link ",
            Str(peer),
            head,
            i,
            ": ",
            n,
            " bytes, larger than any message this test sends"
        ),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Sent N and received N valid messages.
    Ok,
    /// A message failed its checks (printed).
    Corrupt,
    /// The peer went down or restarted (printed).
    PeerDown,
    /// The link broke: a violation, or garbage in the peer's section (printed).
    Broken,
    /// Nothing moved for STALL_MS (printed).
    Stalled,
}

struct State {
    n: u64,
    sent: u64,
    received: u64,
    tx: &'static mut [u8],
    tx_len: usize,
    rx: &'static mut [u8],
    rng: Rng,
    maxp: usize,
    connects: u64,
    every: u64,
    quiet: bool,
    stall: Deadline,
    outcome: Option<Outcome>,
}

/// The peer went away: a clean DOWN (or restart), or a section that no longer
/// makes sense (scribbled over: reported as broken).
fn peer_gone(peer: &[u8], ps: PeerState, received: u64) -> Outcome {
    match ps {
        PeerState::Absent | PeerState::Incompatible => {
            say!(
                "link ",
                Str(peer),
                ": broken: peer's section no longer holds a valid header (",
                ShowPeer(ps),
                ") after ",
                received,
                " valid messages"
            );
            Outcome::Broken
        }
        _ => {
            say!(
                "link ",
                Str(peer),
                ": peer down after ",
                received,
                " messages, all ",
                received,
                " valid"
            );
            Outcome::PeerDown
        }
    }
}

fn broken(peer: &[u8], v: &oslet_interconnect::Violation, received: u64) -> Outcome {
    say!("link ", Str(peer), ": broken: ", Disp(v));
    say!(
        "link ",
        Str(peer),
        ": ",
        received,
        " valid messages before that"
    );
    Outcome::Broken
}

/// One turn on one link: up to BURST sends, then up to BURST receives.
fn step(links: &mut Links, i: usize, st: &mut State) -> Option<Outcome> {
    let l = links.get(i);
    let peer = l.peer;
    let mut moved = false;
    let mut burst = 0;
    while st.sent < st.n && burst < BURST {
        if st.tx_len == 0 {
            st.tx_len = build(st.tx, st.sent, &mut st.rng, st.maxp);
        }
        match l.ep.send(&st.tx[..st.tx_len]) {
            Ok(()) => {
                st.sent += 1;
                st.tx_len = 0;
                moved = true;
            }
            Err(SendError::Full) | Err(SendError::PeerDown) => break,
            Err(SendError::Broken(v)) => return Some(broken(peer, &v, st.received)),
            Err(SendError::TooBig { len, max }) => {
                say!(
                    "link ",
                    Str(peer),
                    ": internal: message of ",
                    len,
                    " > max ",
                    max
                );
                return Some(Outcome::Corrupt);
            }
        }
        if l.ep.peer_connects() != st.connects {
            return Some(peer_gone(peer, l.ep.peer_state(), st.received));
        }
        burst += 1;
    }
    burst = 0;
    while st.received < st.n && burst < BURST {
        let r = l.ep.recv(st.rx);
        if l.ep.peer_connects() != st.connects {
            return Some(peer_gone(peer, l.ep.peer_state(), st.received));
        }
        match r {
            Ok(Some(len)) => {
                if let Err(c) = check(&st.rx[..len], st.received, st.maxp) {
                    say_corrupt(peer, st.received, &c);
                    return Some(Outcome::Corrupt);
                }
                st.received += 1;
                moved = true;
                let report = (st.every != 0 && st.received.is_multiple_of(st.every))
                    || (st.received == EARLY_REPORT && st.every > EARLY_REPORT);
                if !st.quiet && report && st.received != st.n {
                    say!("link ", Str(peer), ": ", st.received, " received");
                }
            }
            Ok(None) => break,
            Err(RecvError::PeerDown) => {
                return Some(peer_gone(peer, l.ep.peer_state(), st.received))
            }
            Err(RecvError::Broken(v)) => return Some(broken(peer, &v, st.received)),
            Err(RecvError::BufferTooSmall { needed }) => {
                say_corrupt(peer, st.received, &Corrupt::TooBig(needed));
                return Some(Outcome::Corrupt);
            }
        }
        burst += 1;
    }
    if st.sent == st.n && st.received == st.n {
        if !st.quiet {
            say!(
                "link ",
                Str(peer),
                ": sent ",
                st.n,
                " received ",
                st.n,
                " ok"
            );
        }
        return Some(Outcome::Ok);
    }
    if moved {
        st.stall.restart();
    } else if st.stall.passed() {
        say!(
            "link ",
            Str(peer),
            ": stalled: sent ",
            st.sent,
            ", received ",
            st.received,
            " of ",
            st.n,
            ", nothing moved for ",
            STALL_MS / 1000,
            " s (peer ",
            ShowPeer(l.ep.peer_state()),
            ")"
        );
        return Some(Outcome::Stalled);
    }
    None
}

/// Streams `n` messages each way on every link at once (after waiting for
/// all of them to connect). Returns each link's outcome. `quiet`: no
/// progress or "ok" lines (link-hostile's warm-up).
pub fn exchange(env: &mut Env, n: u64, quiet: bool) -> [Option<Outcome>; MAX_LINKS] {
    let count = env.links.len();
    let all: [usize; MAX_LINKS] = core::array::from_fn(|i| i);
    env.links
        .wait_connected(&all[..count], &env.clock, CONNECT_MS);
    let mut states: [Option<State>; MAX_LINKS] = core::array::from_fn(|_| None);
    for (i, slot) in states.iter_mut().enumerate().take(count) {
        let l = env.links.get(i);
        let maxp = max_stream_payload(l.ep.max_payload());
        let rx_len = RX_BUF.min(l.ep.max_payload());
        let (Some(tx), Some(rx)) = (env.arena.bytes(HDR + maxp), env.arena.bytes(rx_len)) else {
            fail("no arena memory for link buffers", b"")
        };
        *slot = Some(State {
            n,
            sent: 0,
            received: 0,
            tx,
            tx_len: 0,
            rx,
            rng: Rng::for_side(l.side),
            maxp,
            connects: l.ep.peer_connects(),
            every: n / 10,
            quiet,
            stall: env.clock.deadline(STALL_MS),
            outcome: None,
        });
    }
    loop {
        let mut open = 0;
        for (i, slot) in states.iter_mut().enumerate().take(count) {
            let Some(st) = slot.as_mut() else { continue };
            if st.outcome.is_some() {
                continue;
            }
            open += 1;
            st.outcome = step(&mut env.links, i, st);
        }
        if open == 0 {
            break;
        }
    }
    core::array::from_fn(|i| states[i].as_ref().and_then(|s| s.outcome))
}

pub fn run(env: &mut Env, n: u64) -> ! {
    if env.links.len() == 0 {
        fail("link-stream: no oslet.link on the command line", b"");
    }
    say!(
        "link-stream: ",
        n,
        " messages each way on ",
        env.links.len(),
        " link(s), as ",
        Str(env.name)
    );
    let outcomes = exchange(env, n, false);
    let mut status = 0;
    for (i, o) in outcomes.iter().enumerate().take(env.links.len()) {
        match o {
            Some(Outcome::Ok) => env.links.linger(i, &env.clock, LINGER_MS),
            Some(Outcome::Corrupt) | Some(Outcome::Stalled) | None => status = 1,
            Some(Outcome::PeerDown) | Some(Outcome::Broken) => {}
        }
    }
    env.links.close_all();
    crate::io::poweroff(status)
}
