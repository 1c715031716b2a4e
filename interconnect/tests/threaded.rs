//! Two host threads, one endpoint each, running at the same time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use oslet_interconnect::layout::off;
use oslet_interconnect::{Endpoint, HostWindow, LinkConfig, RecvError, SendError, Side, Violation};

/// xorshift64*: a small deterministic generator both ends can replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811C_9DC5u32, |h, &b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

const HEADER: usize = 12;

/// Message `seq` of a stream: [seq u64][fnv1a(body) u32][body], its length drawn
/// from `lens` (the receiver replays the same generator).
fn make(seq: u64, len: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let mut r = Rng(seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    out.extend((HEADER..len).map(|_| r.next() as u8));
    let sum = fnv1a(&out[HEADER..]);
    out[8..12].copy_from_slice(&sum.to_le_bytes());
}

fn check(seq: u64, want_len: usize, got: &[u8]) {
    assert_eq!(got.len(), want_len, "message {seq}: length");
    let got_seq = u64::from_le_bytes(got[..8].try_into().unwrap());
    assert_eq!(got_seq, seq, "lost, duplicated or reordered message");
    let sum = u32::from_le_bytes(got[8..12].try_into().unwrap());
    assert_eq!(sum, fnv1a(&got[HEADER..]), "message {seq}: checksum");
    let mut expect = Vec::new();
    make(seq, want_len, &mut expect);
    assert!(got == expect, "message {seq}: bytes");
}

/// Sends `count` messages and receives `count` at the same time, never blocking.
fn run_side(
    mut ep: Endpoint<'_>,
    count: u64,
    tx_seed: u64,
    rx_seed: u64,
    deadline: Instant,
) -> Endpoint<'_> {
    let max = 2048;
    let (mut tx_lens, mut rx_lens) = (Rng(tx_seed), Rng(rx_seed));
    let (mut sent, mut received) = (0u64, 0u64);
    let mut pending: Option<usize> = None;
    let mut msg = Vec::new();
    let mut buf = vec![0u8; ep.max_payload()];
    let mut lens = [0usize; 16];
    let mut idle = 0u32;
    while sent < count || received < count {
        assert!(
            Instant::now() < deadline,
            "stalled at sent {sent} received {received}"
        );
        let mut progress = false;
        if sent < count {
            let len =
                *pending.get_or_insert_with(|| HEADER + tx_lens.next() as usize % (max - HEADER));
            make(sent, len, &mut msg);
            let r = if sent % 7 == 3 {
                // Every seventh message goes through a reservation.
                ep.reserve(len).and_then(|mut r| {
                    r.write_at(0, &msg).unwrap();
                    r.commit()
                })
            } else {
                ep.send(&msg)
            };
            match r {
                Ok(()) => {
                    sent += 1;
                    pending = None;
                    progress = true;
                }
                Err(SendError::Full | SendError::PeerDown) => {}
                Err(e) => panic!("send: {e:?}"),
            }
        }
        if received < count {
            if received % 5 == 0 {
                match ep.recv_batch(&mut buf, &mut lens) {
                    Ok(n) => {
                        let mut at = 0;
                        for &l in &lens[..n] {
                            let want = HEADER + rx_lens.next() as usize % (max - HEADER);
                            check(received, want, &buf[at..at + l]);
                            at += l;
                            received += 1;
                        }
                        progress |= n > 0;
                    }
                    Err(RecvError::PeerDown) => {}
                    Err(e) => panic!("recv_batch: {e:?}"),
                }
            } else {
                match ep.recv(&mut buf) {
                    Ok(Some(n)) => {
                        let l = HEADER + rx_lens.next() as usize % (max - HEADER);
                        check(received, l, &buf[..n]);
                        received += 1;
                        progress = true;
                    }
                    Ok(None) | Err(RecvError::PeerDown) => {}
                    Err(e) => panic!("recv: {e:?}"),
                }
            }
        }
        if progress {
            idle = 0;
        } else {
            idle += 1;
            if idle > 64 {
                thread::yield_now(); // two cores, and the test harness runs tests in parallel
            } else {
                std::hint::spin_loop();
            }
        }
    }
    ep
}

#[test]
fn hundred_thousand_random_messages_each_way_arrive_once_in_order_intact() {
    let config = LinkConfig::new(64 * 1024).unwrap();
    let window = HostWindow::with_guard(config, 4096);
    let a = Endpoint::attach(window.region(), Side::A, config).unwrap();
    let b = Endpoint::attach(window.region(), Side::B, config).unwrap();
    // Miri runs this about 10,000 times slower: fewer messages, no real deadline.
    let (count, limit) = if cfg!(miri) {
        (60, 36_000)
    } else {
        (100_000, 300)
    };
    let deadline = Instant::now() + Duration::from_secs(limit);
    let (a, b) = thread::scope(|s| {
        let ta = s.spawn(|| run_side(a, count, 1, 2, deadline));
        let tb = s.spawn(|| run_side(b, count, 2, 1, deadline));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert_eq!((a.violation(), b.violation()), (None, None));
    assert!(window.guards_intact());
}

#[test]
fn a_consumer_that_sleeps_on_the_doorbell_never_misses_a_wakeup() {
    let config = LinkConfig::new(4096).unwrap();
    let window = HostWindow::new(config);
    let mut a = Endpoint::attach(window.region(), Side::A, config).unwrap();
    let mut b = Endpoint::attach(window.region(), Side::B, config).unwrap();
    a.poll().unwrap();
    b.poll().unwrap();
    let count = if cfg!(miri) { 200 } else { 20_000u64 };
    let consumer = thread::scope(|s| {
        let consumer = s.spawn(move || {
            let mut buf = [0u8; 64];
            let (mut got, mut arms, mut sleeps) = (0u64, 0u64, 0u64);
            while got < count {
                match b.recv(&mut buf).unwrap() {
                    Some(n) => {
                        assert_eq!(u64::from_le_bytes(buf[..n].try_into().unwrap()), got);
                        got += 1;
                    }
                    None => {
                        arms += 1;
                        if b.enable_notify().unwrap() {
                            let t = Instant::now();
                            thread::park_timeout(Duration::from_secs(5));
                            assert!(
                                t.elapsed() < Duration::from_secs(5),
                                "lost wakeup after {got}"
                            );
                            sleeps += 1;
                        }
                        b.disable_notify();
                    }
                }
            }
            (arms, sleeps)
        });
        let waker = consumer.thread().clone();
        let mut doorbells = 0u64;
        for i in 0..count {
            loop {
                match a.send(&i.to_le_bytes()) {
                    Ok(()) => break,
                    Err(SendError::Full) => thread::yield_now(),
                    Err(e) => panic!("{e:?}"),
                }
            }
            if a.needs_notify() {
                doorbells += 1;
                waker.unpark();
            }
            if i % 64 == 0 {
                thread::yield_now(); // give the consumer time to fall asleep
            }
        }
        let (arms, sleeps) = consumer.join().unwrap();
        assert!(
            doorbells <= arms,
            "{doorbells} doorbells for {arms} requests"
        );
        (doorbells, sleeps)
    });
    eprintln!(
        "{} doorbells, consumer slept {} times",
        consumer.0, consumer.1
    );
}

#[test]
fn a_peer_scribbling_concurrently_never_makes_the_victim_escape_the_window() {
    let config = LinkConfig::new(8192).unwrap();
    let window = HostWindow::with_guard(config, 4096);
    let mut a = Endpoint::attach(window.region(), Side::A, config).unwrap();
    let mut b = Endpoint::attach(window.region(), Side::B, config).unwrap();
    a.poll().unwrap();
    for i in 0..10 {
        b.send(&vec![i; 300]).unwrap();
    }
    std::mem::forget(b);
    let stop = AtomicBool::new(false);
    let base = config.section_offset(Side::B);
    let section = config.section_bytes() as usize;
    thread::scope(|s| {
        s.spawn(|| {
            let mut r = Rng(7);
            while !stop.load(Ordering::Relaxed) {
                let x = r.next();
                match x % 4 {
                    0 => window.store_u32(base + off::TX_PROD, (x >> 32) as u32 & 0x3ff8),
                    1 => window.store_u32(base + off::RX_CONS, (x >> 32) as u32),
                    2 => window.store_u64(base + off::RING + (((x >> 16) as usize % 8192) & !7), x),
                    _ => window.write_bytes(base + (x >> 20) as usize % section, &x.to_le_bytes()),
                }
            }
        });
        let mut buf = vec![0u8; a.max_payload()];
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut rounds = 0u64;
        let min_rounds = if cfg!(miri) { 30 } else { 1000 };
        while (Instant::now() < deadline && !cfg!(miri)) || rounds < min_rounds {
            let _ = a.recv(&mut buf);
            let _ = a.send(&buf[..(rounds as usize * 13) % 1500]);
            let _ = a.poll();
            assert_ne!(a.violation(), Some(Violation::OutOfBounds));
            rounds += 1;
            if a.violation().is_some() {
                // Broken is sticky; start over, as an owner would.
                drop(a);
                a = Endpoint::attach(window.region(), Side::A, config).unwrap();
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(window.guards_intact());
}
