//! `link-bench=<initiator|responder>`: the interconnect's benchmark over the
//! first link, both sides busy-polling, in ring 3.
//!
//! The crate's `bench` module needs `std` (Vec, String, f64, threads), so
//! its loops are mirrored here, message for message, with no heap and no
//! floating point (the kernel is built without SSE): per case, `Plan::new`'s
//! warm-up rule, `ping`/`pong` (the first 8 bytes of a message carry its
//! sequence number; the responder echoes), then `stream_send`/`stream_recv`
//! (stream_msgs messages one way, then an 8-byte acknowledgement carrying
//! the count), nearest-rank percentiles and the JSON of `Record::to_json`.
//! So either half here also pairs with the crate's own other half.
//!
//! `link-bench-wait=doorbell` (both sides): instead of spinning on an empty
//! ring, a receiver arms notification and sleeps until the peer's doorbell
//! (user/doorbell.rs); a sender rings when `needs_notify()` says so. Case
//! name "oslet-doorbell", far fewer round trips (DOORBELL_CASES). A sender
//! that finds the ring full still spins.
//!
//! Cases: 64 B, 4 KiB, 64 KiB messages (a case larger than the link's max
//! payload, ring/4, is skipped by both sides). Both sides must get the same
//! `link-bench-rtts=<n>` (round trips per case; default 100000, 50000,
//! 10000) and `link-bench-stream=<bytes>` (bytes streamed per case; default
//! 64 MiB, 512 MiB, 512 MiB) since each computes the plan itself.

use super::clock::{Clock, Deadline};
use super::link::ShowPeer;
use super::stream::{CONNECT_MS, LINGER_MS};
use super::{args, doorbell, fail, Env};
use crate::serial::{Disp, Hex, Str};
use core::sync::atomic::Ordering;
use oslet_interconnect::{Endpoint, RecvError, SendError};

/// (message bytes, default round trips, bytes streamed), polling.
const CASES: [(usize, usize, u64); 3] = [
    (64, 100_000, 64 << 20),
    (4096, 50_000, 512 << 20),
    (65536, 10_000, 512 << 20),
];
/// The same for `link-bench-wait=doorbell`: a wake-up costs ring-0 work,
/// emulated on the project's machines (~0.5 ms), so far fewer.
const DOORBELL_CASES: [(usize, usize, u64); 3] = [
    (64, 2_000, 16 << 20),
    (4096, 2_000, 64 << 20),
    (65536, 1_000, 64 << 20),
];
/// Give up on a peer that does not answer for this long.
const TIMEOUT_MS: u64 = 30_000;

#[derive(Clone, Copy)]
struct Plan {
    msg_bytes: usize,
    warmup_round_trips: usize,
    round_trips: usize,
    stream_msgs: u64,
}

impl Plan {
    /// The crate's `Plan::new`.
    fn new(msg_bytes: usize, round_trips: usize, stream_bytes: u64) -> Plan {
        let msg_bytes = msg_bytes.max(8);
        Plan {
            msg_bytes,
            warmup_round_trips: (round_trips / 10).clamp(10, 10_000),
            round_trips,
            stream_msgs: (stream_bytes / msg_bytes as u64).max(1),
        }
    }
}

enum Failure {
    Send(SendError),
    Recv(RecvError),
    Unexpected,
    Timeout,
}

struct Io<'e, 'c> {
    ep: &'e mut Endpoint<'static>,
    clock: &'c Clock,
    /// Some(doorbell address): wait by doorbell, ring the peer's.
    doorbell: Option<u64>,
    rang: u64,
}

/// Waiting for the peer: the deadline is taken on the first spin, so a
/// message that goes through at once reads no clock (as the crate's
/// `send_spin`/`recv_spin` do not: both sides of the comparison do the same
/// work per message), and checked every 1024 spins.
struct Wait<'c> {
    clock: &'c Clock,
    deadline: Option<Deadline>,
    spins: u32,
}

impl<'c> Wait<'c> {
    fn new(clock: &'c Clock) -> Self {
        Wait {
            clock,
            deadline: None,
            spins: 0,
        }
    }

    /// One more spin; true once TIMEOUT_MS have passed since the first.
    fn timed_out(&mut self) -> bool {
        let clock = self.clock;
        let d = *self
            .deadline
            .get_or_insert_with(|| clock.deadline(TIMEOUT_MS));
        self.spins = self.spins.wrapping_add(1);
        self.spins.is_multiple_of(1024) && d.passed()
    }

    /// The same, checked at every call (a doorbell wait sleeps between them).
    fn passed(&mut self) -> bool {
        let clock = self.clock;
        self.deadline
            .get_or_insert_with(|| clock.deadline(TIMEOUT_MS))
            .passed()
    }
}

impl Io<'_, '_> {
    fn send(&mut self, msg: &[u8]) -> Result<(), Failure> {
        let mut wait = Wait::new(self.clock);
        loop {
            match self.ep.send(msg) {
                Ok(()) => {
                    if let Some(db) = self.doorbell {
                        if self.ep.needs_notify() {
                            doorbell::ring(db);
                            self.rang += 1;
                        }
                    }
                    return Ok(());
                }
                Err(SendError::Full) => {
                    if wait.timed_out() {
                        return Err(Failure::Timeout);
                    }
                    core::hint::spin_loop()
                }
                Err(e) => return Err(Failure::Send(e)),
            }
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Failure> {
        let mut wait = Wait::new(self.clock);
        let mut slept = false;
        loop {
            match self.ep.recv(buf) {
                Ok(Some(n)) => {
                    if slept {
                        self.ep.disable_notify();
                    }
                    return Ok(n);
                }
                Ok(None) if self.doorbell.is_some() => {
                    if wait.passed() {
                        return Err(Failure::Timeout);
                    }
                    match self.ep.enable_notify() {
                        Ok(true) => {
                            crate::ring3::sleep();
                            slept = true;
                        }
                        Ok(false) => {}
                        Err(v) => return Err(Failure::Recv(RecvError::Broken(v))),
                    }
                }
                Ok(None) => {
                    if wait.timed_out() {
                        return Err(Failure::Timeout);
                    }
                    core::hint::spin_loop()
                }
                Err(e) => return Err(Failure::Recv(e)),
            }
        }
    }
}

fn seq_of(buf: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(..8)?.try_into().ok()?))
}

fn ping(
    io: &mut Io,
    plan: &Plan,
    msg: &mut [u8],
    buf: &mut [u8],
    samples: &mut [u64],
) -> Result<(), Failure> {
    msg.fill(0xA5);
    for i in 0..(plan.warmup_round_trips + plan.round_trips) as u64 {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        let t0 = io.clock.now_ns();
        io.send(msg)?;
        let n = io.recv(buf)?;
        let t1 = io.clock.now_ns();
        if n != plan.msg_bytes || buf.get(..n).and_then(seq_of) != Some(i) {
            return Err(Failure::Unexpected);
        }
        if i >= plan.warmup_round_trips as u64 {
            samples[(i - plan.warmup_round_trips as u64) as usize] = t1.saturating_sub(t0);
        }
    }
    Ok(())
}

fn pong(io: &mut Io, plan: &Plan, buf: &mut [u8]) -> Result<(), Failure> {
    for _ in 0..plan.warmup_round_trips + plan.round_trips {
        let n = io.recv(buf)?;
        io.send(&buf[..n])?;
    }
    Ok(())
}

fn stream_send(io: &mut Io, plan: &Plan, msg: &mut [u8]) -> Result<u64, Failure> {
    msg.fill(0x5A);
    let t0 = io.clock.now_ns();
    for i in 0..plan.stream_msgs {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        io.send(msg)?;
    }
    let mut ack = [0u8; 8];
    let n = io.recv(&mut ack)?;
    let t1 = io.clock.now_ns();
    if n != 8 || seq_of(&ack) != Some(plan.stream_msgs) {
        return Err(Failure::Unexpected);
    }
    Ok(t1.saturating_sub(t0))
}

fn stream_recv(io: &mut Io, plan: &Plan, buf: &mut [u8]) -> Result<(), Failure> {
    for i in 0..plan.stream_msgs {
        let n = io.recv(buf)?;
        if n != plan.msg_bytes || buf.get(..n).and_then(seq_of) != Some(i) {
            return Err(Failure::Unexpected);
        }
    }
    io.send(&plan.stream_msgs.to_le_bytes())
}

/// Nearest rank, as the crate's `percentile` (p in whole percent).
fn percentile(sorted: &[u64], p: u64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as u64).div_ceil(100) as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Payload MiB/s in tenths, rounded: bytes * 1e9 / (elapsed_ns * 2^20).
fn mib_s_tenths(bytes: u64, elapsed_ns: u64) -> u64 {
    let elapsed_ns = elapsed_ns.max(1);
    match (
        bytes.checked_mul(10_000_000_000),
        elapsed_ns.checked_mul(1 << 20),
    ) {
        (Some(num), Some(den)) => (num + den / 2) / den,
        _ => bytes / (1 << 20) * 10_000_000_000 / elapsed_ns,
    }
}

struct Tenths(u64);

impl crate::serial::Out for Tenths {
    fn out(&self) {
        crate::serial::Out::out(&(self.0 / 10));
        crate::serial::putb(b'.');
        crate::serial::putb(b'0' + (self.0 % 10) as u8);
    }
}

fn failed(peer: &[u8], ep: &Endpoint, plan: &Plan, what: &str, f: Failure) -> ! {
    match f {
        Failure::Send(e) => say!(
            "bench: ",
            plan.msg_bytes,
            "-byte ",
            what,
            " failed: send: ",
            Disp(&e)
        ),
        Failure::Recv(e) => say!(
            "bench: ",
            plan.msg_bytes,
            "-byte ",
            what,
            " failed: receive: ",
            Disp(&e)
        ),
        Failure::Unexpected => {
            say!(
                "bench: ",
                plan.msg_bytes,
                "-byte ",
                what,
                " failed: peer sent an unexpected message"
            )
        }
        Failure::Timeout => say!(
            "bench: ",
            plan.msg_bytes,
            "-byte ",
            what,
            " failed: peer did not answer within ",
            TIMEOUT_MS / 1000,
            " s"
        ),
    }
    if let Some(v) = ep.violation() {
        say!("bench: link ", Str(peer), ": broken: ", Disp(&v));
    }
    say!(
        "bench: link ",
        Str(peer),
        ": peer ",
        ShowPeer(ep.peer_state())
    );
    crate::io::poweroff(1)
}

pub fn run(env: &mut Env, role: &[u8]) -> ! {
    let initiator = match role {
        b"initiator" => true,
        b"responder" => false,
        _ => fail("link-bench: role is not initiator or responder", role),
    };
    if env.links.len() == 0 {
        fail("link-bench: no oslet.link on the command line", b"");
    }
    let by_doorbell = match env.args.value(b"link-bench-wait") {
        None | Some(b"poll") => false,
        Some(b"doorbell") => true,
        Some(w) => fail("link-bench-wait: not poll or doorbell", w),
    };
    let (cases, case_name) = if by_doorbell {
        (&DOORBELL_CASES, "oslet-doorbell")
    } else {
        (&CASES, "oslet-polled")
    };
    let rtts = match env.args.value(b"link-bench-rtts") {
        Some(v) => match args::number(v).filter(|&n| n > 0) {
            Some(n) => Some(n as usize),
            None => fail("link-bench-rtts: not a positive number", v),
        },
        None => None,
    };
    let stream_bytes = match env.args.value(b"link-bench-stream") {
        Some(v) => match args::number(v).filter(|&n| n > 0) {
            Some(n) => Some(n),
            None => fail("link-bench-stream: not a positive number", v),
        },
        None => None,
    };
    if initiator && env.clock.source != super::clock::Source::Cmdline {
        say!(
            "bench: no oslet.tsc_khz on the command line, using ",
            env.clock.khz,
            " kHz (",
            env.clock.source.name(),
            ")"
        );
    }
    let max_payload = env.links.get(0).ep.max_payload();
    let mut plans = [None; CASES.len()];
    let mut max_msg = 8;
    let mut max_rtts = 0;
    for (slot, &(bytes, default_rtts, stream)) in plans.iter_mut().zip(cases.iter()) {
        if bytes > max_payload {
            say!(
                "bench: skipping ",
                bytes,
                "-byte messages: the link's max payload is ",
                max_payload,
                " (ring/4)"
            );
            continue;
        }
        let p = Plan::new(
            bytes,
            rtts.unwrap_or(default_rtts),
            stream_bytes.unwrap_or(stream),
        );
        max_msg = max_msg.max(p.msg_bytes);
        max_rtts = max_rtts.max(p.round_trips);
        *slot = Some(p);
    }
    let (Some(msg), Some(buf)) = (env.arena.bytes(max_msg), env.arena.bytes(max_msg)) else {
        fail("bench: no arena memory for buffers", b"")
    };
    let samples: &mut [u64] = if initiator {
        match env.arena.words(max_rtts) {
            Some(s) => s,
            None => fail("bench: link-bench-rtts too large for the arena", b""),
        }
    } else {
        &mut []
    };
    let l = env.links.get(0);
    let peer = l.peer;
    say!(
        "bench: ",
        if initiator { "initiator" } else { "responder" },
        " on link ",
        Str(peer),
        ", ring ",
        l.config.ring_bytes(),
        ", tsc ",
        env.clock.khz,
        " kHz"
    );
    let doorbell = if by_doorbell {
        if let Err(why) = doorbell::setup(&mut env.links) {
            fail("bench: cannot wait by doorbell", why.as_bytes());
        }
        let l = env.links.get(0);
        say!(
            "bench: waiting by doorbell (ring ",
            Hex(l.doorbell),
            ", gsi ",
            l.gsi,
            ")"
        );
        Some(l.doorbell)
    } else {
        None
    };
    env.links.wait_connected(&[0], &env.clock, CONNECT_MS);
    let clock = env.clock;
    let ep = &mut env.links.get(0).ep;
    let mut rang = 0;
    for plan in plans.iter().flatten() {
        let mut io = Io {
            ep: &mut *ep,
            clock: &clock,
            doorbell,
            rang: 0,
        };
        if initiator {
            let s = &mut samples[..plan.round_trips];
            if let Err(f) = ping(&mut io, plan, &mut msg[..plan.msg_bytes], buf, s) {
                failed(peer, io.ep, plan, "round trip", f)
            }
            s.sort_unstable();
            let elapsed = match stream_send(&mut io, plan, &mut msg[..plan.msg_bytes]) {
                Ok(t) => t.max(1),
                Err(f) => failed(peer, io.ep, plan, "stream", f),
            };
            let bytes = plan.stream_msgs * plan.msg_bytes as u64;
            say!(
                "bench {\"case\":\"",
                case_name,
                "\",\"msg_bytes\":",
                plan.msg_bytes,
                ",\"rtt_p50_ns\":",
                percentile(s, 50),
                ",\"rtt_p99_ns\":",
                percentile(s, 99),
                ",\"throughput_mib_s\":",
                Tenths(mib_s_tenths(bytes, elapsed)),
                "}"
            );
        } else {
            if let Err(f) = pong(&mut io, plan, buf) {
                failed(peer, io.ep, plan, "round trip", f)
            }
            if let Err(f) = stream_recv(&mut io, plan, buf) {
                failed(peer, io.ep, plan, "stream", f)
            }
        }
        rang += io.rang;
    }
    if by_doorbell {
        say!(
            "bench: doorbells rung ",
            rang,
            ", sleeps ",
            crate::ring3::SLEEPS.load(Ordering::Relaxed),
            ", interrupts ",
            crate::ring3::OSLET_IRQS.load(Ordering::Relaxed)
        );
    }
    if initiator {
        say!("bench: done");
    } else {
        env.links.linger(0, &env.clock, LINGER_MS);
        say!("bench: responder done");
    }
    env.links.close_all();
    crate::io::poweroff(0)
}
