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
//!
//! With `link-reconnect=K`, a link whose peer goes down (its VMM died, or it
//! stopped) is not finished: after the usual "peer down" lines, the link
//! waits (up to RECONNECT_MS) for a new incarnation of the peer to connect,
//! says `link <peer>: up again (peer epoch E, was E0)`, and streams N checked
//! messages again from sequence number 0, up to K times per link.

use super::clock::{Clock, Deadline};
use super::link::{Link, Links, ShowPeer, MAX_LINKS};
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
/// With `link-reconnect`: waiting for a peer that went down to come back.
const RECONNECT_MS: u64 = 60_000;
/// Smallest record a stream message takes in a ring (8-byte record header,
/// 16-byte message header and at least one payload byte, rounded up to 8):
/// at most ring / MIN_RECORD messages are in flight.
const MIN_RECORD: usize = 32;

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
    /// With `link-reconnect`: the peer did not come back (printed).
    NotBack,
}

struct State {
    n: u64,
    sent: u64,
    received: u64,
    tx: &'static mut [u8],
    tx_len: usize,
    rx: &'static mut [u8],
    rng: Rng,
    side: Side,
    maxp: usize,
    connects: u64,
    /// The peer's epoch on this connection (0: not known).
    peer_epoch: u32,
    /// Our ring's producer index after each of the last `ends.len()` messages
    /// we sent (message k at k % len): how many of them the peer consumed.
    /// Empty when the arena had no room (then that is not reported).
    ends: &'static mut [u64],
    every: u64,
    quiet: bool,
    stall: Deadline,
    /// Peer restarts still to wait for (`link-reconnect`).
    reconnects_left: u64,
    /// Waiting for the peer to come back, until this deadline.
    back: Option<Deadline>,
    outcome: Option<Outcome>,
}

impl State {
    /// A fresh stream on a (new) connection: sequence numbers and the
    /// generator start again.
    fn restart(&mut self, connects: u64, peer_epoch: u32) {
        self.sent = 0;
        self.received = 0;
        self.tx_len = 0;
        self.rng = Rng::for_side(self.side);
        self.connects = connects;
        self.peer_epoch = peer_epoch;
        self.stall.restart();
    }

    /// How many of the messages we sent end at or before ring index `cons`
    /// (the peer's consumer index): all but the trailing ones past it.
    fn consumed_by(&self, cons: u32) -> Option<u64> {
        let cap = self.ends.len() as u64;
        if cap == 0 {
            return None;
        }
        let mut in_flight = 0;
        while in_flight < self.sent.min(cap) {
            let end = self.ends[((self.sent - 1 - in_flight) % cap) as usize] as u32;
            // Free-running indices: "end is past cons" is a small positive gap.
            if (end.wrapping_sub(cons) as i32) <= 0 {
                break;
            }
            in_flight += 1;
        }
        Some(self.sent - in_flight)
    }
}

fn epoch_of(ps: PeerState) -> u32 {
    match ps {
        PeerState::Up { epoch } | PeerState::Down { epoch } | PeerState::Broken { epoch } => epoch,
        PeerState::Absent | PeerState::Incompatible => 0,
    }
}

/// The peer went away: a clean DOWN (or restart), or a section that no longer
/// makes sense (scribbled over: reported as broken). `restarted`: the crate
/// already connected to a new incarnation (so what was in flight is gone and
/// how far the old one consumed our ring is no longer known).
fn peer_gone(l: &mut Link, st: &State, restarted: bool) -> Outcome {
    let peer = l.peer;
    let received = st.received;
    let ps = l.ep.peer_state();
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
            return Outcome::Broken;
        }
        _ => say!(
            "link ",
            Str(peer),
            ": peer down after ",
            received,
            " messages, all ",
            received,
            " valid"
        ),
    }
    // What the old incarnation took of ours: its consumer index is final once
    // it is down; a poll refreshes our copy (unless it reconnects meanwhile).
    let before = l.ep.peer_connects();
    let known =
        !restarted && matches!(l.ep.poll(), Ok(p) if p.connected) && l.ep.peer_connects() == before;
    match st.consumed_by(l.ep.tx_consumed()) {
        Some(c) if known => say!(
            "link ",
            Str(peer),
            ": peer consumed ",
            c,
            " of the ",
            st.sent,
            " messages we sent"
        ),
        Some(_) => say!(
            "link ",
            Str(peer),
            ": peer restarted before it was seen down; of the ",
            st.sent,
            " messages we sent, those in flight were dropped"
        ),
        None => {}
    }
    Outcome::PeerDown
}

/// With `link-reconnect`: one look at a link whose peer went down. `None`
/// while still waiting; `Some(true)` when a new incarnation is connected and
/// up (the stream starts again); `Some(false)` on timeout or a broken link.
fn wait_back(l: &mut Link, st: &mut State) -> Option<bool> {
    let peer = l.peer;
    let p = match l.ep.poll() {
        Ok(p) => p,
        Err(v) => {
            broken(peer, &v, st.received);
            return Some(false);
        }
    };
    if p.peer_up && l.ep.peer_connects() != st.connects {
        let epoch = epoch_of(l.ep.peer_state());
        say!(
            "link ",
            Str(peer),
            ": up again (peer epoch ",
            epoch,
            ", was ",
            st.peer_epoch,
            ")"
        );
        st.restart(l.ep.peer_connects(), epoch);
        return Some(true);
    }
    if st.back.is_some_and(|d| d.passed()) {
        say!(
            "link ",
            Str(peer),
            ": peer did not come back within ",
            RECONNECT_MS / 1000,
            " s (peer ",
            ShowPeer(l.ep.peer_state()),
            ")"
        );
        return Some(false);
    }
    None
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
    let cap = st.ends.len() as u64;
    let mut moved = false;
    let mut burst = 0;
    while st.sent < st.n && burst < BURST {
        if st.tx_len == 0 {
            st.tx_len = build(st.tx, st.sent, &mut st.rng, st.maxp);
        }
        match l.ep.send(&st.tx[..st.tx_len]) {
            Ok(()) => {
                if cap != 0 {
                    st.ends[(st.sent % cap) as usize] = u64::from(l.ep.tx_produced());
                }
                st.sent += 1;
                st.tx_len = 0;
                moved = true;
            }
            Err(SendError::Full) | Err(SendError::PeerDown) => break,
            Err(SendError::PeerRestarted) => return Some(peer_gone(l, st, true)),
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
            return Some(peer_gone(l, st, true));
        }
        burst += 1;
    }
    burst = 0;
    while st.received < st.n && burst < BURST {
        let r = l.ep.recv(st.rx);
        if l.ep.peer_connects() != st.connects {
            return Some(peer_gone(l, st, true));
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
            Err(RecvError::PeerDown) => return Some(peer_gone(l, st, false)),
            Err(RecvError::PeerRestarted) => return Some(peer_gone(l, st, true)),
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

/// One turn on one link: streaming, or waiting for its peer to come back.
fn turn(links: &mut Links, i: usize, st: &mut State, clock: &Clock) {
    if st.back.is_some() {
        match wait_back(links.get(i), st) {
            None => {}
            Some(true) => st.back = None,
            Some(false) => st.outcome = Some(Outcome::NotBack),
        }
        return;
    }
    match step(links, i, st) {
        Some(Outcome::PeerDown) if st.reconnects_left > 0 => {
            st.reconnects_left -= 1;
            st.back = Some(clock.deadline(RECONNECT_MS));
        }
        o => st.outcome = o,
    }
}

/// Streams `n` messages each way on every link at once (after waiting for
/// all of them to connect). Returns each link's outcome. `quiet`: no
/// progress or "ok" lines (link-hostile's warm-up). `reconnects`: how many
/// times per link to wait for a peer that went down and stream again.
pub fn exchange(
    env: &mut Env,
    n: u64,
    quiet: bool,
    reconnects: u64,
) -> [Option<Outcome>; MAX_LINKS] {
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
        let in_flight = l.config.ring_bytes() as usize / MIN_RECORD + 1;
        let ends = env.arena.words(in_flight).unwrap_or(&mut []);
        *slot = Some(State {
            n,
            sent: 0,
            received: 0,
            tx,
            tx_len: 0,
            rx,
            rng: Rng::for_side(l.side),
            side: l.side,
            maxp,
            connects: l.ep.peer_connects(),
            peer_epoch: epoch_of(l.ep.peer_state()),
            ends,
            every: n / 10,
            quiet,
            stall: env.clock.deadline(STALL_MS),
            reconnects_left: reconnects,
            back: None,
            outcome: None,
        });
    }
    let clock = env.clock;
    loop {
        let mut open = 0;
        for (i, slot) in states.iter_mut().enumerate().take(count) {
            let Some(st) = slot.as_mut() else { continue };
            if st.outcome.is_some() {
                continue;
            }
            open += 1;
            turn(&mut env.links, i, st, &clock);
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
    let reconnects = match env.args.value(b"link-reconnect") {
        None => 0,
        Some(v) => match super::args::number(v) {
            Some(k) => k,
            None => fail("link-reconnect: not a number", v),
        },
    };
    say!(
        "link-stream: ",
        n,
        " messages each way on ",
        env.links.len(),
        " link(s), as ",
        Str(env.name),
        if reconnects > 0 {
            ", waiting for peers that go down to come back"
        } else {
            ""
        }
    );
    let outcomes = exchange(env, n, false, reconnects);
    let mut status = 0;
    for (i, o) in outcomes.iter().enumerate().take(env.links.len()) {
        match o {
            Some(Outcome::Ok) => env.links.linger(i, &env.clock, LINGER_MS),
            Some(Outcome::Corrupt) | Some(Outcome::Stalled) | Some(Outcome::NotBack) | None => {
                status = 1
            }
            Some(Outcome::PeerDown) | Some(Outcome::Broken) => {}
        }
    }
    env.links.close_all();
    crate::io::poweroff(status)
}
