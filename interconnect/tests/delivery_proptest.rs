//! Property: any interleaving of sends and receives of any sizes, through every
//! API (copying, batched, reserved, peeked), delivers every accepted message exactly
//! once, in order, intact, in both directions.

use std::collections::VecDeque;

use oslet_interconnect::{Endpoint, HostWindow, LinkConfig, RecvError, SendError, Side};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Send(usize),
    SendBatch(Vec<usize>),
    Reserve { len: usize, commit: Option<usize> },
    Recv { cap: usize },
    RecvBatch { cap: usize, max: usize },
    Peek { consume: bool },
}

/// (A→B?, op). Sizes are fractions of the max payload in 1/1024ths, so that one
/// strategy fits every ring size.
fn op() -> impl Strategy<Value = (bool, Op)> {
    let size = prop_oneof![4 => 0usize..64, 2 => 0usize..1025, 1 => Just(1024usize)];
    let o = prop_oneof![
        4 => size.clone().prop_map(Op::Send),
        1 => proptest::collection::vec(size.clone(), 0..6).prop_map(Op::SendBatch),
        1 => (size.clone(), proptest::option::of(size.clone()))
            .prop_map(|(len, commit)| Op::Reserve { len, commit }),
        4 => (0usize..1100).prop_map(|cap| Op::Recv { cap }),
        1 => (0usize..3000, 0usize..6).prop_map(|(cap, max)| Op::RecvBatch { cap, max }),
        1 => any::<bool>().prop_map(|consume| Op::Peek { consume }),
    ];
    (any::<bool>(), o)
}

/// The bytes of message `id` of `len` bytes.
fn payload(id: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (id.wrapping_mul(31).wrapping_add(i as u64 * 7)) as u8)
        .collect()
}

struct Dir {
    /// (id, len) of messages accepted by the sender, not yet received.
    in_flight: VecDeque<(u64, usize)>,
    next_id: u64,
    delivered: usize,
}

impl Dir {
    fn check(&mut self, got: &[u8]) {
        let (id, len) = self
            .in_flight
            .pop_front()
            .expect("received a message never sent");
        assert_eq!(got.len(), len, "message {id}: wrong length");
        assert!(got == payload(id, len), "message {id}: wrong bytes");
        self.delivered += 1;
    }
}

fn step(tx: &mut Endpoint<'_>, rx: &mut Endpoint<'_>, d: &mut Dir, op: &Op) {
    let max = tx.max_payload();
    let scale = |f: usize| f * max / 1024;
    match op {
        Op::Send(f) => {
            let len = scale(*f);
            match tx.send(&payload(d.next_id, len)) {
                Ok(()) => {
                    d.in_flight.push_back((d.next_id, len));
                    d.next_id += 1;
                }
                Err(SendError::Full) => assert!(!d.in_flight.is_empty(), "full while empty"),
                Err(e) => panic!("send: {e:?}"),
            }
        }
        Op::SendBatch(fs) => {
            let msgs: Vec<Vec<u8>> = fs
                .iter()
                .enumerate()
                .map(|(i, f)| payload(d.next_id + i as u64, scale(*f)))
                .collect();
            let refs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
            match tx.send_batch(&refs) {
                Ok(n) => {
                    for m in &msgs[..n] {
                        d.in_flight.push_back((d.next_id, m.len()));
                        d.next_id += 1;
                    }
                }
                Err(SendError::Full) => assert!(!d.in_flight.is_empty()),
                Err(e) => panic!("send_batch: {e:?}"),
            }
        }
        Op::Reserve { len, commit } => {
            let len = scale(*len);
            match tx.reserve(len) {
                Ok(mut r) => {
                    let p = payload(d.next_id, len);
                    // Fill it in two pieces to exercise unaligned writes.
                    let half = len / 3;
                    r.write_at(half, &p[half..]).unwrap();
                    r.write_at(0, &p[..half]).unwrap();
                    if let Some(c) = commit {
                        let short = scale(*c).min(len);
                        r.commit_len(short).unwrap();
                        // A shortened message is the prefix of the full one; record
                        // its id so the check regenerates the same bytes.
                        d.in_flight.push_back((d.next_id, short));
                        d.next_id += 1;
                    }
                }
                Err(SendError::Full) => assert!(!d.in_flight.is_empty()),
                Err(e) => panic!("reserve: {e:?}"),
            }
        }
        Op::Recv { cap } => {
            let mut buf = vec![0u8; scale(*cap)];
            match rx.recv(&mut buf) {
                Ok(Some(n)) => d.check(&buf[..n]),
                Ok(None) => assert!(d.in_flight.is_empty(), "nothing received while in flight"),
                Err(RecvError::BufferTooSmall { needed }) => {
                    assert_eq!(Some(needed), d.in_flight.front().map(|m| m.1));
                    assert!(needed > buf.len());
                }
                Err(e) => panic!("recv: {e:?}"),
            }
        }
        Op::RecvBatch { cap, max: n } => {
            let mut buf = vec![0u8; *cap * max / 1024];
            let mut lens = vec![0usize; *n];
            match rx.recv_batch(&mut buf, &mut lens) {
                Ok(got) => {
                    let mut at = 0;
                    for &l in &lens[..got] {
                        d.check(&buf[at..at + l]);
                        at += l;
                    }
                }
                Err(RecvError::BufferTooSmall { needed }) => {
                    assert_eq!(Some(needed), d.in_flight.front().map(|m| m.1));
                }
                Err(e) => panic!("recv_batch: {e:?}"),
            }
        }
        Op::Peek { consume } => match rx.peek() {
            Ok(Some(m)) => {
                let mut buf = vec![0u8; m.len()];
                m.read_at(0, &mut buf).unwrap();
                if *consume {
                    m.consume().unwrap();
                    d.check(&buf);
                } else {
                    let (id, len) = *d.in_flight.front().expect("peeked a message never sent");
                    assert!(buf == payload(id, len));
                }
            }
            Ok(None) => assert!(d.in_flight.is_empty()),
            Err(e) => panic!("peek: {e:?}"),
        },
    }
}

fn drain(rx: &mut Endpoint<'_>, d: &mut Dir) {
    let mut buf = vec![0u8; rx.max_payload()];
    while let Some(n) = rx.recv(&mut buf).unwrap() {
        d.check(&buf[..n]);
    }
    assert!(
        d.in_flight.is_empty(),
        "{} messages lost",
        d.in_flight.len()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_interleaving_delivers_everything_once_in_order(
        ring_shift in 0u32..5,
        ops in proptest::collection::vec(op(), 1..400),
    ) {
        let config = LinkConfig::new(4096 << ring_shift).unwrap();
        let window = HostWindow::with_guard(config, 4096);
        let mut a = Endpoint::attach(window.region(), Side::A, config).unwrap();
        let mut b = Endpoint::attach(window.region(), Side::B, config).unwrap();
        a.poll().unwrap();
        let new_dir = || Dir { in_flight: VecDeque::new(), next_id: 0, delivered: 0 };
        let (mut ab, mut ba) = (new_dir(), new_dir());
        for (a_to_b, op) in &ops {
            if *a_to_b {
                step(&mut a, &mut b, &mut ab, op);
            } else {
                step(&mut b, &mut a, &mut ba, op);
            }
        }
        drain(&mut b, &mut ab);
        drain(&mut a, &mut ba);
        prop_assert_eq!(ab.delivered as u64, ab.next_id);
        prop_assert_eq!(ba.delivered as u64, ba.next_id);
        prop_assert_eq!((a.violation(), b.violation()), (None, None));
        prop_assert!(window.guards_intact());
    }
}
