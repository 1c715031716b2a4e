//! A hostile-peer harness shared by the proptest and the cargo-fuzz target.
//!
//! [`run`] turns arbitrary bytes into a session: endpoint A (the victim) is driven
//! through every API while side B's section is written by an honest endpoint *and*
//! overwritten with arbitrary bytes, indices, record headers and state words. After
//! every step it checks what must hold whatever the peer does, and panics if not:
//!
//! * A never reports [`Violation::OutOfBounds`] (every peer value was validated
//!   before it was used as an offset);
//! * A never writes B's section, and nothing writes outside the window (guard
//!   zones around it are intact);
//! * every message A receives is at most the link's maximum payload;
//! * once broken, A stays broken with the same violation.
//!
//! Each step is bounded (the harness itself has no unbounded loop), so a hang in the
//! endpoint shows up as a fuzzer timeout.
#![allow(clippy::panic, clippy::indexing_slicing)] // a test harness: panics are its findings

use std::vec::Vec;

use crate::layout::{off, record, state};
use crate::{Endpoint, HostWindow, LinkConfig, RecvError, SendError, Side, Violation};

/// Reads fuzz input as a stream of small integers (zeros once exhausted).
struct Input<'d> {
    data: &'d [u8],
    pos: usize,
}

impl Input<'_> {
    fn exhausted(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
}

/// What a session did (for the caller's statistics; all checks are internal).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Steps executed.
    pub steps: usize,
    /// Messages A received.
    pub received: usize,
    /// Messages A sent.
    pub sent: usize,
    /// How often a broken A was re-attached.
    pub reattached: usize,
    /// Whether, and why, A ended up broken.
    pub violation: Option<Violation>,
}

/// Most steps one input may run.
pub const MAX_STEPS: usize = 256;

/// Runs one hostile session from `data`. Panics if an invariant fails.
pub fn run(data: &[u8]) -> Outcome {
    let mut input = Input { data, pos: 0 };
    let ring = 4096u32 << (input.u8() % 3);
    let config = match LinkConfig::new(ring) {
        Ok(c) => c,
        Err(e) => panic!("harness ring size: {e}"),
    };
    let window = HostWindow::with_guard(config, 4096);
    let attach = |side| match Endpoint::attach(window.region(), side, config) {
        Ok(ep) => ep,
        Err(e) => panic!("attach over a host window failed: {e}"),
    };
    let mut a = attach(Side::A);
    let mut b = Some(attach(Side::B));
    let _ = a.poll();

    let b_base = config.section_offset(Side::B);
    let section = config.section_bytes() as usize;
    let max = config.max_payload() as usize;
    let snapshot = |w: &HostWindow| {
        let mut v = vec![0u8; section];
        w.read_bytes(b_base, &mut v);
        v
    };
    let mut out = Outcome::default();
    let mut buf = vec![0u8; max];

    while !input.exhausted() && out.steps < MAX_STEPS {
        out.steps += 1;
        let op = input.u8() % 16;
        // Peer moves: anything at all may be written into B's section.
        match op {
            0 => {
                if let Some(b) = b.as_mut() {
                    let len = input.u16() as usize % (max + 1);
                    let _ = b.send(&vec![input.u8(); len]);
                }
                continue;
            }
            1 => {
                if let Some(b) = b.as_mut() {
                    let _ = b.recv(&mut buf);
                }
                continue;
            }
            2 => {
                let at = input.u32() as usize % section;
                let n = input.u8() as usize;
                window.write_bytes(b_base + at, &input.bytes(n));
                continue;
            }
            3 => {
                let words = [
                    off::STATE,
                    off::PEER_ACK,
                    off::TX_PROD,
                    off::RX_CONS,
                    off::NOTIFY_ARMED,
                    off::NOTIFY_AT,
                    off::MAGIC0,
                    off::RING_BYTES,
                    off::MAX_PAYLOAD,
                ];
                let w = words[input.u8() as usize % words.len()];
                let v = input.u32();
                window.store_u32(b_base + w, v);
                continue;
            }
            4 => {
                // A plausible-looking producer index: near what A has consumed.
                let delta = (input.u16() as u32 % (ring + 64)) & !7;
                let v = if input.u8() & 1 == 0 {
                    a.rx_cons.wrapping_add(delta)
                } else {
                    a.rx_cons.wrapping_sub(delta)
                };
                window.store_u32(b_base + off::TX_PROD, v);
                continue;
            }
            5 => {
                // A record header somewhere in B's ring.
                let at = (input.u32() & (ring - 1) & !7) as usize;
                let kind = match input.u8() % 4 {
                    0 => record::KIND_MSG,
                    1 => record::KIND_PAD,
                    _ => input.u32(),
                };
                let len = match input.u8() % 3 {
                    0 => input.u16() as u32 % (max as u32 + 1),
                    1 => ring - at as u32 - 8,
                    _ => input.u32(),
                };
                window.store_u64(b_base + off::RING + at, record::header(kind, len));
                continue;
            }
            6 => {
                // B restarts honestly, or its state word flips.
                if input.u8() & 1 == 0 {
                    drop(b.take());
                    b = Some(attach(Side::B));
                } else {
                    let st = [state::DOWN, state::UP, state::BROKEN, 9][input.u8() as usize % 4];
                    let epoch = input.u8() as u32 % 4;
                    window.store_u32(b_base + off::STATE, crate::layout::encode_state(st, epoch));
                }
                continue;
            }
            _ => {}
        }

        // Victim moves. A broken victim is sometimes re-attached, as its owner would.
        if a.violation().is_some() && input.u8() & 1 == 0 {
            drop(a);
            a = attach(Side::A);
            out.reattached += 1;
        }
        let before = snapshot(&window);
        let was = a.violation();
        match op {
            7 | 8 => {
                let len = input.u16() as usize % (max + 8);
                let msg = vec![op; len];
                match a.send(&msg) {
                    Ok(()) => out.sent += 1,
                    Err(SendError::TooBig { .. }) => assert!(len > max),
                    Err(_) => {}
                }
            }
            9 | 10 => {
                let cap = input.u16() as usize % (max + 1);
                match a.recv(&mut buf[..cap]) {
                    Ok(Some(n)) => {
                        assert!(n <= cap && n <= max, "received {n} bytes into {cap}");
                        out.received += 1;
                    }
                    Err(RecvError::BufferTooSmall { needed }) => {
                        assert!(needed > cap && needed <= max, "needed {needed}");
                    }
                    _ => {}
                }
            }
            11 => {
                if let Ok(Some(m)) = a.peek() {
                    assert!(m.len() <= max);
                    let from = input.u16() as usize % (m.len() + 1);
                    let n = input.u16() as usize % (m.len() - from + 1);
                    assert!(m.read_at(from, &mut buf[..n]).is_ok());
                    assert!(m.read_at(m.len(), &mut [0]).is_err());
                    if input.u8() & 1 == 0 {
                        let _ = m.consume();
                        out.received += 1;
                    }
                }
            }
            12 => {
                let len = input.u16() as usize % (max + 1);
                if let Ok(mut r) = a.reserve(len) {
                    assert!(r.write_at(0, &vec![0x5A; len]).is_ok());
                    assert!(r.write_at(len, &[1]).is_err());
                    if input.u8() & 1 == 0 {
                        let _ = r.commit_len(input.u16() as usize);
                        out.sent += 1;
                    }
                }
            }
            13 => {
                let m1 = vec![1u8; input.u8() as usize];
                let m2 = vec![2u8; input.u16() as usize % (max + 1)];
                if let Ok(n) = a.send_batch(&[&m1, &m2, &m1]) {
                    assert!(n <= 3);
                    out.sent += n;
                }
            }
            14 => {
                let mut lens = [0usize; 4];
                let cap = input.u16() as usize % (max + 1);
                if let Ok(n) = a.recv_batch(&mut buf[..cap], &mut lens) {
                    assert!(n <= 4);
                    assert!(lens[..n].iter().sum::<usize>() <= cap);
                    out.received += n;
                }
            }
            _ => {
                let _ = a.poll();
                let _ = a.needs_notify();
                if input.u8() & 1 == 0 {
                    let _ = a.enable_notify();
                } else {
                    a.disable_notify();
                }
                let _ = a.peer_state();
            }
        }
        let now = a.violation();
        assert_ne!(
            now,
            Some(Violation::OutOfBounds),
            "an access left the window"
        );
        if was.is_some() {
            assert_eq!(now, was, "a broken endpoint changed its violation");
        }
        assert!(snapshot(&window) == before, "A wrote into B's section");
        assert!(window.guards_intact(), "something wrote outside the window");
    }
    out.violation = a.violation();
    drop(a);
    drop(b);
    assert!(window.guards_intact(), "something wrote outside the window");
    out
}
