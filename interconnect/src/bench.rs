//! Measuring loops for a link: round-trip latency and streaming throughput.
//!
//! Each measurement has two halves that each take one [`Endpoint`], so the same
//! loops serve two host threads ([`host_threads`], used by the
//! `host_threads_bench` example) and two OSlets (`oslet bench link` runs
//! [`run_initiator`] in one partition and [`run_responder`] in the other). Only the
//! initiator needs a clock; the responder just echoes and counts.
//!
//! Both halves busy-poll: this measures the data path, not doorbells.

use std::string::String;
use std::time::Instant;
use std::vec::Vec;

use crate::{Endpoint, RecvError, SendError};

/// A monotonic nanosecond clock (an `Instant` on the host, a calibrated TSC in a guest).
pub trait Clock {
    /// Nanoseconds since some fixed point.
    fn now_ns(&self) -> u64;
}

/// [`Clock`] over [`std::time::Instant`].
#[derive(Clone, Copy, Debug)]
pub struct StdClock(Instant);

impl StdClock {
    /// A clock starting now.
    pub fn new() -> Self {
        StdClock(Instant::now())
    }
}

impl Default for StdClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for StdClock {
    fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// What to measure for one message size. Both halves must use the same plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Payload bytes per message (at least 8: the first 8 carry a sequence number).
    pub msg_bytes: usize,
    /// Unmeasured round trips before the measured ones.
    pub warmup_round_trips: usize,
    /// Measured round trips (ping one message, wait for the echo).
    pub round_trips: usize,
    /// Messages streamed one way for the throughput figure.
    pub stream_msgs: u64,
}

impl Plan {
    /// A plan that streams about `stream_bytes` and measures `round_trips`.
    pub fn new(msg_bytes: usize, round_trips: usize, stream_bytes: u64) -> Self {
        let msg_bytes = msg_bytes.max(8);
        Plan {
            msg_bytes,
            warmup_round_trips: (round_trips / 10).clamp(10, 10_000),
            round_trips,
            stream_msgs: (stream_bytes / msg_bytes as u64).max(1),
        }
    }
}

/// One benchmark result, printable as the project's JSON record.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Which pair of endpoints: "host-threads", "cross-vm", ...
    pub case: String,
    /// Payload bytes per message.
    pub msg_bytes: usize,
    /// Median round trip.
    pub rtt_p50_ns: u64,
    /// 99th-percentile round trip.
    pub rtt_p99_ns: u64,
    /// One-way streaming throughput of payload bytes.
    pub throughput_mib_s: f64,
}

impl Record {
    /// `{"case":..,"msg_bytes":..,"rtt_p50_ns":..,"rtt_p99_ns":..,"throughput_mib_s":..}`
    pub fn to_json(&self) -> String {
        let case: String = self
            .case
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
            .collect();
        std::format!(
            "{{\"case\":\"{}\",\"msg_bytes\":{},\"rtt_p50_ns\":{},\"rtt_p99_ns\":{},\"throughput_mib_s\":{:.1}}}",
            case, self.msg_bytes, self.rtt_p50_ns, self.rtt_p99_ns, self.throughput_mib_s
        )
    }
}

/// A measurement could not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchError {
    /// Sending failed (other than a full ring, which is waited out).
    Send(SendError),
    /// Receiving failed.
    Recv(RecvError),
    /// The peer sent something the plan does not allow.
    Unexpected,
    /// The peer did not connect or answer within the spin budget.
    Timeout,
    /// A measuring thread panicked.
    Panicked,
}

impl core::fmt::Display for BenchError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BenchError::Send(_) => f.write_str("benchmark send failed"),
            BenchError::Recv(_) => f.write_str("benchmark receive failed"),
            BenchError::Unexpected => f.write_str("peer sent an unexpected message"),
            BenchError::Timeout => f.write_str("peer did not answer"),
            BenchError::Panicked => f.write_str("a benchmark thread panicked"),
        }
    }
}

impl std::error::Error for BenchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BenchError::Send(e) => Some(e),
            BenchError::Recv(e) => Some(e),
            _ => None,
        }
    }
}

/// Spins allowed while waiting for one event (minutes of polling).
const SPIN_LIMIT: u64 = 20_000_000_000;

/// Yields allowed while waiting for the peer to connect.
const CONNECT_LIMIT: u64 = 50_000_000;

/// Polls until both ends are connected.
pub fn wait_connected(ep: &mut Endpoint<'_>) -> Result<(), BenchError> {
    for _ in 0..CONNECT_LIMIT {
        let p = ep
            .poll()
            .map_err(|v| BenchError::Recv(RecvError::Broken(v)))?;
        if p.peer_up {
            return Ok(());
        }
        std::thread::yield_now();
    }
    Err(BenchError::Timeout)
}

fn send_spin(ep: &mut Endpoint<'_>, msg: &[u8]) -> Result<(), BenchError> {
    for _ in 0..SPIN_LIMIT {
        match ep.send(msg) {
            Ok(()) => return Ok(()),
            Err(SendError::Full) => core::hint::spin_loop(),
            Err(e) => return Err(BenchError::Send(e)),
        }
    }
    Err(BenchError::Timeout)
}

fn recv_spin(ep: &mut Endpoint<'_>, buf: &mut [u8]) -> Result<usize, BenchError> {
    for _ in 0..SPIN_LIMIT {
        match ep.recv(buf) {
            Ok(Some(n)) => return Ok(n),
            Ok(None) => core::hint::spin_loop(),
            Err(e) => return Err(BenchError::Recv(e)),
        }
    }
    Err(BenchError::Timeout)
}

fn seq_of(buf: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(..8)?.try_into().ok()?))
}

/// Initiator half of the round-trip test: returns the measured round trips in ns.
pub fn ping(ep: &mut Endpoint<'_>, plan: &Plan, clock: &dyn Clock) -> Result<Vec<u64>, BenchError> {
    let mut msg = std::vec![0xA5u8; plan.msg_bytes];
    let mut buf = std::vec![0u8; plan.msg_bytes];
    let mut samples = Vec::with_capacity(plan.round_trips);
    for i in 0..(plan.warmup_round_trips + plan.round_trips) as u64 {
        if let Some(head) = msg.get_mut(..8) {
            head.copy_from_slice(&i.to_le_bytes());
        }
        let t0 = clock.now_ns();
        send_spin(ep, &msg)?;
        let n = recv_spin(ep, &mut buf)?;
        let t1 = clock.now_ns();
        if n != plan.msg_bytes || buf.get(..n).and_then(seq_of) != Some(i) {
            return Err(BenchError::Unexpected);
        }
        if i >= plan.warmup_round_trips as u64 {
            samples.push(t1.saturating_sub(t0));
        }
    }
    Ok(samples)
}

/// Responder half of the round-trip test: echoes every message.
pub fn pong(ep: &mut Endpoint<'_>, plan: &Plan) -> Result<(), BenchError> {
    let mut buf = std::vec![0u8; plan.msg_bytes];
    for _ in 0..plan.warmup_round_trips + plan.round_trips {
        let n = recv_spin(ep, &mut buf)?;
        send_spin(ep, buf.get(..n).ok_or(BenchError::Unexpected)?)?;
    }
    Ok(())
}

/// Sending half of the streaming test: sends `plan.stream_msgs` messages and waits
/// for the receiver's 8-byte acknowledgement; returns the elapsed ns.
pub fn stream_send(
    ep: &mut Endpoint<'_>,
    plan: &Plan,
    clock: &dyn Clock,
) -> Result<u64, BenchError> {
    let mut msg = std::vec![0x5Au8; plan.msg_bytes];
    let t0 = clock.now_ns();
    for i in 0..plan.stream_msgs {
        if let Some(head) = msg.get_mut(..8) {
            head.copy_from_slice(&i.to_le_bytes());
        }
        send_spin(ep, &msg)?;
    }
    let mut ack = [0u8; 8];
    let n = recv_spin(ep, &mut ack)?;
    let t1 = clock.now_ns();
    if n != 8 || seq_of(&ack) != Some(plan.stream_msgs) {
        return Err(BenchError::Unexpected);
    }
    Ok(t1.saturating_sub(t0))
}

/// Receiving half of the streaming test: receives and checks every message's
/// sequence number, then acknowledges the count.
pub fn stream_recv(ep: &mut Endpoint<'_>, plan: &Plan) -> Result<(), BenchError> {
    let mut buf = std::vec![0u8; plan.msg_bytes];
    for i in 0..plan.stream_msgs {
        let n = recv_spin(ep, &mut buf)?;
        if n != plan.msg_bytes || buf.get(..n).and_then(seq_of) != Some(i) {
            return Err(BenchError::Unexpected);
        }
    }
    send_spin(ep, &plan.stream_msgs.to_le_bytes())
}

/// The `p`-th percentile (0..=100) of sorted samples (nearest rank).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len()) - 1)
        .copied()
        .unwrap_or(0)
}

/// The initiator's whole run: round trips, then streaming; returns the record.
pub fn run_initiator(
    ep: &mut Endpoint<'_>,
    plan: &Plan,
    case: &str,
    clock: &dyn Clock,
) -> Result<Record, BenchError> {
    wait_connected(ep)?;
    let mut rtt = ping(ep, plan, clock)?;
    rtt.sort_unstable();
    let elapsed = stream_send(ep, plan, clock)?.max(1);
    let bytes = plan.stream_msgs as f64 * plan.msg_bytes as f64;
    Ok(Record {
        case: case.into(),
        msg_bytes: plan.msg_bytes,
        rtt_p50_ns: percentile(&rtt, 50.0),
        rtt_p99_ns: percentile(&rtt, 99.0),
        throughput_mib_s: bytes / (1024.0 * 1024.0) / (elapsed as f64 / 1e9),
    })
}

/// The responder's whole run, mirroring [`run_initiator`].
pub fn run_responder(ep: &mut Endpoint<'_>, plan: &Plan) -> Result<(), BenchError> {
    wait_connected(ep)?;
    pong(ep, plan)?;
    stream_recv(ep, plan)
}

/// Runs `plan` between two host threads, `initiator` on one and `responder` on the
/// other (both must be attached to the same window).
pub fn host_threads(
    initiator: &mut Endpoint<'_>,
    responder: &mut Endpoint<'_>,
    plan: &Plan,
) -> Result<Record, BenchError> {
    std::thread::scope(|s| {
        let r = s.spawn(|| run_responder(responder, plan));
        let clock = StdClock::new();
        let rec = run_initiator(initiator, plan, "host-threads", &clock);
        let resp = r.join().map_err(|_| BenchError::Panicked)?;
        let rec = rec?;
        resp?;
        Ok(rec)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HostWindow, LinkConfig, Side};

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn host_thread_run_produces_a_json_record() {
        let config = LinkConfig::new(64 * 1024).unwrap();
        let w = HostWindow::new(config);
        let mut a = Endpoint::attach(w.region(), Side::A, config).unwrap();
        let mut b = Endpoint::attach(w.region(), Side::B, config).unwrap();
        let plan = Plan::new(256, 200, 1 << 20);
        let rec = host_threads(&mut a, &mut b, &plan).unwrap();
        assert!(rec.rtt_p50_ns > 0 && rec.rtt_p99_ns >= rec.rtt_p50_ns);
        assert!(rec.throughput_mib_s > 0.0);
        let j = rec.to_json();
        assert!(
            j.starts_with("{\"case\":\"host-threads\",\"msg_bytes\":256,\"rtt_p50_ns\":"),
            "{j}"
        );
    }
}
