//! Unit tests of the endpoint over a host window: the protocol's happy paths, the
//! restart handshake, notification suppression, and single hostile values.

use crate::layout::{encode_state, off, record, state};
use crate::*;

fn cfg(ring: u32) -> LinkConfig {
    LinkConfig::new(ring).unwrap()
}

/// Two attached endpoints, connected: the first to attach acknowledges the second
/// on its next call.
fn pair(w: &HostWindow) -> (Endpoint<'_>, Endpoint<'_>) {
    let mut a = Endpoint::attach(w.region(), Side::A, w.config()).unwrap();
    let mut b = Endpoint::attach(w.region(), Side::B, w.config()).unwrap();
    assert!(!b.poll().unwrap().connected);
    assert!(a.poll().unwrap().connected);
    assert!(b.poll().unwrap().connected);
    (a, b)
}

/// Window offset of `word` in `side`'s section.
fn at(w: &HostWindow, side: Side, word: usize) -> usize {
    w.config().section_offset(side) + word
}

fn recv_vec(ep: &mut Endpoint<'_>) -> Result<Option<Vec<u8>>, RecvError> {
    let mut buf = vec![0u8; ep.max_payload()];
    Ok(ep.recv(&mut buf)?.map(|n| buf[..n].to_vec()))
}

fn section(w: &HostWindow, side: Side) -> Vec<u8> {
    let mut v = vec![0u8; w.config().section_bytes() as usize];
    w.read_bytes(w.config().section_offset(side), &mut v);
    v
}

#[test]
fn message_sent_by_a_arrives_intact_at_b_and_vice_versa() {
    let w = HostWindow::new(cfg(4096));
    let (mut a, mut b) = pair(&w);
    a.send(b"ping").unwrap();
    b.send(b"pong!").unwrap();
    assert_eq!(recv_vec(&mut b).unwrap().unwrap(), b"ping");
    assert_eq!(recv_vec(&mut a).unwrap().unwrap(), b"pong!");
    assert_eq!(recv_vec(&mut a).unwrap(), None);
    assert_eq!(recv_vec(&mut b).unwrap(), None);
}

#[test]
fn zero_length_and_max_length_messages_round_trip() {
    let w = HostWindow::new(cfg(4096));
    let (mut a, mut b) = pair(&w);
    let max = a.max_payload();
    let big: Vec<u8> = (0..max).map(|i| i as u8).collect();
    a.send(&[]).unwrap();
    a.send(&big).unwrap();
    assert_eq!(recv_vec(&mut b).unwrap().unwrap(), b"");
    assert_eq!(recv_vec(&mut b).unwrap().unwrap(), big);
    assert_eq!(
        a.send(&vec![0; max + 1]),
        Err(SendError::TooBig { len: max + 1, max })
    );
}

#[test]
fn records_pad_at_the_ring_end_and_stay_in_order_over_many_wraps() {
    let w = HostWindow::new(cfg(4096));
    let (mut a, mut b) = pair(&w);
    let mut next_recv = 0u32;
    for i in 0..2000u32 {
        let len = (i as usize * 37) % 900;
        let msg: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
        loop {
            match a.send(&msg) {
                Ok(()) => break,
                Err(SendError::Full) => {
                    let got = recv_vec(&mut b).unwrap().unwrap();
                    let l = (next_recv as usize * 37) % 900;
                    assert_eq!(got.len(), l);
                    assert!(got
                        .iter()
                        .enumerate()
                        .all(|(j, &x)| x == (next_recv as usize + j) as u8));
                    next_recv += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    while let Some(got) = recv_vec(&mut b).unwrap() {
        assert_eq!(got.len(), (next_recv as usize * 37) % 900);
        next_recv += 1;
    }
    assert_eq!(next_recv, 2000);
    assert_eq!(b.violation(), None);
}

#[test]
fn full_ring_refuses_until_the_peer_consumes() {
    let w = HostWindow::new(cfg(4096));
    let (mut a, mut b) = pair(&w);
    let msg = [7u8; 1000]; // 1008-byte records: four fit in 4096
    for _ in 0..4 {
        a.send(&msg).unwrap();
    }
    assert_eq!(a.send(&msg), Err(SendError::Full));
    assert_eq!(a.send(&[1; 64]), Err(SendError::Full));
    assert_eq!(recv_vec(&mut b).unwrap().unwrap().len(), 1000);
    a.send(&msg).unwrap();
}

#[test]
fn too_small_buffer_leaves_the_message_queued() {
    let w = HostWindow::new(cfg(4096));
    let (mut a, mut b) = pair(&w);
    a.send(&[5; 100]).unwrap();
    let mut small = [0u8; 10];
    assert_eq!(
        b.recv(&mut small),
        Err(RecvError::BufferTooSmall { needed: 100 })
    );
    assert_eq!(recv_vec(&mut b).unwrap().unwrap(), vec![5; 100]);
}

#[test]
fn sending_before_the_peer_attaches_is_peer_down_then_works() {
    let w = HostWindow::new(cfg(4096));
    let mut a = Endpoint::attach(w.region(), Side::A, w.config()).unwrap();
    assert_eq!(a.peer_state(), PeerState::Absent);
    assert_eq!(a.send(b"x"), Err(SendError::PeerDown));
    assert_eq!(a.recv(&mut [0; 8]), Err(RecvError::PeerDown));
    let mut b = Endpoint::attach(w.region(), Side::B, w.config()).unwrap();
    assert!(matches!(a.peer_state(), PeerState::Up { .. }));
    // B's rings belong to A already; A connects on its next call.
    a.send(b"x").unwrap();
    assert_eq!(recv_vec(&mut b).unwrap().unwrap(), b"x");
}

#[test]
fn queued_messages_drain_after_the_peer_closes_then_peer_down() {
    let w = HostWindow::new(cfg(4096));
    let (mut a, mut b) = pair(&w);
    a.send(b"last words").unwrap();
    a.close();
    assert!(matches!(b.peer_state(), PeerState::Down { .. }));
    assert_eq!(b.send(b"too late"), Err(SendError::PeerDown));
    assert_eq!(recv_vec(&mut b).unwrap().unwrap(), b"last words");
    assert_eq!(recv_vec(&mut b), Err(RecvError::PeerDown));
}

#[test]
fn peer_restart_discards_in_flight_messages_and_reconnects() {
    let w = HostWindow::new(cfg(4096));
    let (mut a, b) = pair(&w);
    let old_epoch = b.epoch();
    a.send(b"for the old b").unwrap();
    drop(b);
    let mut b = Endpoint::attach(w.region(), Side::B, w.config()).unwrap();
    assert_ne!(b.epoch(), old_epoch);
    // The new B does not read A's ring until A has reset it for B's new epoch.
    assert_eq!(recv_vec(&mut b), Err(RecvError::PeerDown));
    // A's first call after the restart connects and says so, sending nothing.
    assert_eq!(a.send(b"for the new b"), Err(SendError::PeerRestarted));
    assert_eq!(a.peer_connects(), 2);
    a.send(b"for the new b").unwrap();
    assert_eq!(recv_vec(&mut b).unwrap().unwrap(), b"for the new b");
    b.send(b"hello again").unwrap();
    assert_eq!(recv_vec(&mut a).unwrap().unwrap(), b"hello again");
    assert_eq!((a.violation(), b.violation()), (None, None));
}

#[test]
fn a_send_that_meets_a_restarted_peer_sends_nothing_to_the_new_incarnation() {
    // Regression: `send` used to connect to the new incarnation and deliver, in the
    // same call, a message the caller built for the old one (seq 1 of the old
    // stream arrived as the new incarnation's first message).
    let w = HostWindow::new(cfg(4096));
    let (mut a, b) = pair(&w);
    a.send(b"old seq 0").unwrap();
    drop(b);
    let mut b = Endpoint::attach(w.region(), Side::B, w.config()).unwrap();
    assert_eq!(a.send(b"old seq 1"), Err(SendError::PeerRestarted));
    assert_eq!(recv_vec(&mut b), Ok(None), "nothing reached the new b");
    // Reported once: the next send goes to the new incarnation.
    a.send(b"new seq 0").unwrap();
    assert_eq!(recv_vec(&mut b).unwrap().unwrap(), b"new seq 0");
    assert_eq!(a.send(b"new seq 1"), Ok(()));
}

#[test]
fn a_receive_that_meets_a_restarted_peer_says_so_once_and_then_reads_the_new_one() {
    let w = HostWindow::new(cfg(4096));
    let (mut a, mut b) = pair(&w);
    b.send(b"from the old b, never read").unwrap();
    drop(b);
    let mut b = Endpoint::attach(w.region(), Side::B, w.config()).unwrap();
    assert_eq!(recv_vec(&mut a), Err(RecvError::PeerRestarted));
    b.send(b"from the new b").unwrap();
    assert_eq!(recv_vec(&mut a).unwrap().unwrap(), b"from the new b");
    // The batch and peek paths report it the same way.
    drop(b);
    let mut b = Endpoint::attach(w.region(), Side::B, w.config()).unwrap();
    let mut lens = [0usize; 4];
    assert_eq!(
        a.recv_batch(&mut [0u8; 256], &mut lens),
        Err(RecvError::PeerRestarted)
    );
    b.send(b"x").unwrap();
    assert_eq!(a.recv_batch(&mut [0u8; 256], &mut lens), Ok(1));
    drop(b);
    let _b = Endpoint::attach(w.region(), Side::B, w.config()).unwrap();
    assert!(matches!(a.peek(), Err(RecvError::PeerRestarted)));
    assert!(matches!(a.peek(), Ok(None)));
    assert_eq!(a.peer_connects(), 4);
}

#[test]
fn poll_reports_a_restart_once_and_a_first_connection_never() {
    let w = HostWindow::new(cfg(4096));
    let mut a = Endpoint::attach(w.region(), Side::A, w.config()).unwrap();
    let b = Endpoint::attach(w.region(), Side::B, w.config()).unwrap();
    let p = a.poll().unwrap();
    assert!(p.connected && !p.peer_restarted, "{p:?}");
    drop(b);
    let _b = Endpoint::attach(w.region(), Side::B, w.config()).unwrap();
    assert!(a.poll().unwrap().peer_restarted);
    assert!(!a.poll().unwrap().peer_restarted);
    assert_eq!(a.send(b"x"), Ok(()), "already reported by poll");
}

#[test]
fn enable_notify_does_not_sleep_through_an_unreported_restart() {
    let w = HostWindow::new(cfg(4096));
    let (mut a, b) = pair(&w);
    drop(b);
    let _b = Endpoint::attach(w.region(), Side::B, w.config()).unwrap();
    assert_eq!(a.enable_notify(), Ok(false));
    assert_eq!(recv_vec(&mut a), Err(RecvError::PeerRestarted));
    assert_eq!(a.enable_notify(), Ok(true));
}

#[test]
fn after_the_peer_dies_poll_leaves_how_far_it_consumed_our_ring() {
    let w = HostWindow::new(cfg(4096));
    let (mut a, mut b) = pair(&w);
    for m in [&[1u8; 10][..], &[2; 100], &[3; 30]] {
        a.send(m).unwrap();
    }
    let ends = [8 + 16, 8 + 16 + 8 + 104, 8 + 16 + 8 + 104 + 8 + 32];
    assert_eq!(a.tx_produced(), ends[2]);
    recv_vec(&mut b).unwrap().unwrap();
    recv_vec(&mut b).unwrap().unwrap();
    // b's VMM dies: the supervisor writes its state word DOWN (same epoch).
    std::mem::forget(b);
    let st = at(&w, Side::B, off::STATE);
    let mut word = [0u8; 4];
    w.read_bytes(st, &mut word);
    let epoch = crate::layout::decode_state(u32::from_le_bytes(word)).1;
    w.store_u32(st, encode_state(state::DOWN, epoch));
    let p = a.poll().unwrap();
    assert!(p.connected && !p.peer_up, "{p:?}");
    assert_eq!((a.tx_produced(), a.tx_consumed()), (ends[2], ends[1]));
    assert_eq!(a.send(b"late"), Err(SendError::PeerDown));
}

#[test]
fn a_reset_index_read_with_a_new_peer_epoch_is_a_restart_not_a_violation() {
    for restart in [true, false] {
        let w = HostWindow::new(cfg(4096));
        let (mut a, mut b) = pair(&w);
        b.send(&[1; 200]).unwrap();
        b.send(&[2; 200]).unwrap();
        assert_eq!(recv_vec(&mut a).unwrap().unwrap(), vec![1; 200]);
        assert_eq!(recv_vec(&mut a).unwrap().unwrap(), vec![2; 200]);
        std::mem::forget(b);
        // B re-attaching, half-way: new epoch announced (DOWN), then indices reset.
        // A read its state word before that and now reads the reset index.
        if restart {
            w.store_u32(at(&w, Side::B, off::STATE), encode_state(state::DOWN, 77));
        }
        w.store_u32(at(&w, Side::B, off::TX_PROD), 0);
        let r = a.rx_peek_next();
        if restart {
            assert!(matches!(r, Err(crate::endpoint::Fault::Reset)));
            assert_eq!(a.violation(), None);
            assert_eq!(recv_vec(&mut a), Err(RecvError::PeerDown));
        } else {
            assert!(matches!(
                r,
                Err(crate::endpoint::Fault::Broken(Violation::ProducerIndex))
            ));
        }
    }
}

#[test]
fn batches_publish_once_and_stop_at_what_fits() {
    let w = HostWindow::new(cfg(4096));
    let (mut a, mut b) = pair(&w);
    let m = [9u8; 1000];
    let msgs: Vec<&[u8]> = vec![&m, &m, &m, &m, &m, &m];
    assert_eq!(a.send_batch(&msgs), Ok(4));
    assert_eq!(a.send_batch(&msgs), Err(SendError::Full));
    let mut buf = vec![0u8; 2500];
    let mut lens = [0usize; 8];
    assert_eq!(b.recv_batch(&mut buf, &mut lens), Ok(2));
    assert_eq!(&lens[..2], &[1000, 1000]);
    assert_eq!(a.send_batch(&[b"a", b"bb"]), Ok(2));
    let mut buf = vec![0u8; 4096];
    assert_eq!(b.recv_batch(&mut buf, &mut lens), Ok(4));
    assert_eq!(&lens[..4], &[1000, 1000, 1, 2]);
    assert_eq!(&buf[2000..2003], b"abb");
    assert_eq!(b.recv_batch(&mut buf, &mut lens), Ok(0));
    assert_eq!(b.recv_batch(&mut [0; 4], &mut lens), Ok(0));
}

#[test]
fn reservation_is_filled_in_place_published_on_commit_and_abandoned_on_drop() {
    let w = HostWindow::new(cfg(4096));
    let (mut a, mut b) = pair(&w);
    {
        let mut r = a.reserve(11).unwrap();
        r.write_at(0, b"hello").unwrap();
        r.write_at(5, b" world").unwrap();
        assert_eq!(r.write_at(6, b"world!"), Err(OutOfBounds));
        assert_eq!(recv_vec(&mut b).unwrap(), None); // nothing published yet
        r.commit().unwrap();
    }
    assert_eq!(recv_vec(&mut b).unwrap().unwrap(), b"hello world");
    let abandoned = a.reserve(100).unwrap();
    assert_eq!(abandoned.len(), 100); // dropped here without commit
    assert_eq!(recv_vec(&mut b).unwrap(), None);
    let mut r = a.reserve(100).unwrap();
    r.write_at(0, b"short").unwrap();
    r.commit_len(5).unwrap();
    assert_eq!(recv_vec(&mut b).unwrap().unwrap(), b"short");
}

#[test]
fn reservations_across_the_ring_end_are_padded() {
    let w = HostWindow::new(cfg(4096));
    let (mut a, mut b) = pair(&w);
    for round in 0..20u8 {
        let mut r = a.reserve(700).unwrap();
        r.write_at(0, &[round; 700]).unwrap();
        r.commit().unwrap();
        let mut buf = [0u8; 700];
        let n = b.peek().unwrap().unwrap();
        assert_eq!(n.len(), 700);
        n.read_at(0, &mut buf).unwrap();
        assert_eq!(buf, [round; 700]);
        n.consume().unwrap();
    }
}

#[test]
fn peek_reads_in_place_and_only_consume_removes() {
    let w = HostWindow::new(cfg(4096));
    let (mut a, mut b) = pair(&w);
    a.send(b"0123456789").unwrap();
    {
        let p = b.peek().unwrap().unwrap();
        let mut part = [0u8; 4];
        p.read_at(3, &mut part).unwrap();
        assert_eq!(&part, b"3456");
        assert_eq!(p.read_at(8, &mut part), Err(OutOfBounds));
    }
    let p = b.peek().unwrap().unwrap();
    assert_eq!(p.len(), 10);
    p.consume().unwrap();
    assert!(b.peek().unwrap().is_none());
}

#[test]
fn needs_notify_fires_once_per_arming_and_never_for_a_polling_peer() {
    let w = HostWindow::new(cfg(4096));
    let (mut a, mut b) = pair(&w);
    a.send(b"1").unwrap();
    assert!(!a.needs_notify()); // B polls
    recv_vec(&mut b).unwrap().unwrap();
    assert!(b.enable_notify().unwrap()); // empty: B may sleep
    a.send(b"2").unwrap();
    assert!(a.needs_notify());
    a.send(b"3").unwrap();
    assert!(!a.needs_notify()); // already rung for this sleep
    assert!(!b.enable_notify().unwrap()); // data waiting: do not sleep
    while recv_vec(&mut b).unwrap().is_some() {}
    assert!(b.enable_notify().unwrap());
    a.send_batch(&[b"4", b"5"]).unwrap();
    assert!(a.needs_notify());
    b.disable_notify();
    recv_vec(&mut b).unwrap().unwrap();
    a.send(b"6").unwrap();
    assert!(!a.needs_notify());
}

#[test]
fn poll_reports_connection_readability_and_room() {
    let w = HostWindow::new(cfg(4096));
    let mut a = Endpoint::attach(w.region(), Side::A, w.config()).unwrap();
    let p = a.poll().unwrap();
    assert!(!p.connected && !p.peer_up && !p.readable);
    let mut b = Endpoint::attach(w.region(), Side::B, w.config()).unwrap();
    let p = a.poll().unwrap();
    assert!(p.connected && p.peer_up && !p.readable);
    assert_eq!(p.tx_free_bytes, 4096);
    b.send(b"x").unwrap();
    a.send(b"y").unwrap();
    let p = a.poll().unwrap();
    assert!(p.readable);
    assert_eq!(p.tx_free_bytes, 4096 - 16);
}

#[test]
fn attach_refuses_a_small_window_and_reattach_takes_a_new_epoch() {
    let w = HostWindow::new(cfg(4096));
    let r = w.region().sub(0, w.config().window_bytes() - 8).unwrap();
    assert!(matches!(
        Endpoint::attach(r, Side::A, w.config()),
        Err(AttachError::WindowTooSmall { .. })
    ));
    let e1 = Endpoint::attach(w.region(), Side::A, w.config())
        .unwrap()
        .epoch();
    // The peer still acknowledges e1 + 1 for us: the next epoch skips it.
    w.store_u32(at(&w, Side::B, off::PEER_ACK), e1 + 1);
    let e2 = Endpoint::attach(w.region(), Side::A, w.config())
        .unwrap()
        .epoch();
    assert_eq!(e2, e1 + 2);
}

#[test]
fn an_endpoint_writes_only_its_own_section() {
    let w = HostWindow::with_guard(cfg(4096), 4096);
    let (mut a, mut b) = pair(&w);
    b.send(&[3; 300]).unwrap();
    let before = section(&w, Side::B);
    for i in 0..50u8 {
        a.send(&[i; 333]).unwrap_or(());
        let _ = recv_vec(&mut a);
        let _ = a.poll();
        let _ = a.needs_notify();
        let _ = a.enable_notify();
        a.disable_notify();
    }
    drop(a);
    assert_eq!(section(&w, Side::B), before);
    assert!(w.guards_intact());
}

// ---- single hostile values --------------------------------------------------

/// A connected pair where B has sent `n` small messages, A has seen them, and B's
/// endpoint is gone (forgotten, so that its section is left as it was) so the test
/// can play B by hand.
fn hostile_b(w: &HostWindow, n: usize) -> Endpoint<'_> {
    let (mut a, mut b) = pair(w);
    a.send(b"warm up").unwrap();
    for i in 0..n {
        b.send(&[i as u8; 24]).unwrap();
    }
    assert!(a.poll().unwrap().connected);
    std::mem::forget(b);
    a
}

fn assert_broken_recv(a: &mut Endpoint<'_>, v: Violation) {
    assert_eq!(recv_vec(a), Err(RecvError::Broken(v)));
    assert_eq!(a.violation(), Some(v));
}

#[test]
fn producer_index_beyond_the_ring_breaks_the_receiver() {
    let w = HostWindow::new(cfg(4096));
    let mut a = hostile_b(&w, 0);
    w.store_u32(at(&w, Side::B, off::TX_PROD), 4096 + 8);
    assert_broken_recv(&mut a, Violation::ProducerIndex);
}

#[test]
fn producer_index_moving_backwards_or_unaligned_breaks_the_receiver() {
    for bad in [u32::MAX - 7, 3] {
        let w = HostWindow::new(cfg(4096));
        let mut a = hostile_b(&w, 2);
        recv_vec(&mut a).unwrap().unwrap();
        recv_vec(&mut a).unwrap().unwrap();
        w.store_u32(at(&w, Side::B, off::TX_PROD), bad);
        assert_broken_recv(&mut a, Violation::ProducerIndex);
    }
}

#[test]
fn record_headers_that_lie_break_the_receiver() {
    let cases: [(u64, u32, Violation); 5] = [
        (
            record::header(record::KIND_MSG, 2000),
            4096,
            Violation::RecordTooLong,
        ),
        (
            record::header(record::KIND_MSG, 100),
            64,
            Violation::RecordBeyondProducer,
        ),
        (record::header(0xdead, 8), 64, Violation::RecordKind),
        (0, 64, Violation::RecordKind),
        (
            record::header(record::KIND_PAD, 100),
            4096,
            Violation::Padding,
        ),
    ];
    for (header, prod, v) in cases {
        let w = HostWindow::new(cfg(4096));
        let mut a = hostile_b(&w, 0);
        w.store_u64(at(&w, Side::B, off::RING), header);
        w.store_u32(at(&w, Side::B, off::TX_PROD), prod);
        assert_broken_recv(&mut a, v);
    }
}

#[test]
fn a_record_running_past_the_ring_end_breaks_the_receiver() {
    let w = HostWindow::new(cfg(4096));
    let mut a = hostile_b(&w, 0);
    // 500 empty messages fill the ring up to offset 4000 ...
    for o in (0..4000).step_by(8) {
        w.store_u64(
            at(&w, Side::B, off::RING + o),
            record::header(record::KIND_MSG, 0),
        );
    }
    w.store_u32(at(&w, Side::B, off::TX_PROD), 4000);
    for _ in 0..500 {
        assert_eq!(recv_vec(&mut a).unwrap().unwrap(), b"");
    }
    // ... then a 1000-byte one at 4000 that would need to wrap.
    w.store_u64(
        at(&w, Side::B, off::RING + 4000),
        record::header(record::KIND_MSG, 1000),
    );
    w.store_u32(at(&w, Side::B, off::TX_PROD), 5008);
    assert_broken_recv(&mut a, Violation::RecordWraps);
}

#[test]
fn padding_at_the_ring_start_breaks_the_receiver() {
    let w = HostWindow::new(cfg(4096));
    let mut a = hostile_b(&w, 0);
    w.store_u64(
        at(&w, Side::B, off::RING),
        record::header(record::KIND_PAD, 4088),
    );
    w.store_u32(at(&w, Side::B, off::TX_PROD), 4096);
    assert_broken_recv(&mut a, Violation::Padding);
}

#[test]
fn consumer_index_past_what_we_produced_breaks_the_sender() {
    let w = HostWindow::new(cfg(4096));
    let mut a = hostile_b(&w, 0);
    for _ in 0..4 {
        a.send(&[0; 1000]).unwrap();
    }
    // B claims to have consumed more than A ever produced.
    w.store_u32(at(&w, Side::B, off::RX_CONS), 8000);
    assert_eq!(
        a.send(&[0; 1000]),
        Err(SendError::Broken(Violation::ConsumerIndex))
    );
}

#[test]
fn broken_is_sticky_and_announced_in_our_state_word() {
    let w = HostWindow::new(cfg(4096));
    let mut a = hostile_b(&w, 0);
    w.store_u32(at(&w, Side::B, off::TX_PROD), 1 << 20);
    assert_broken_recv(&mut a, Violation::ProducerIndex);
    // Even a perfectly sane peer cannot unbreak us: only a new attach does.
    w.store_u32(at(&w, Side::B, off::TX_PROD), 0);
    assert_eq!(
        a.send(b"x"),
        Err(SendError::Broken(Violation::ProducerIndex))
    );
    assert_eq!(a.poll(), Err(Violation::ProducerIndex));
    assert_eq!(a.enable_notify(), Err(Violation::ProducerIndex));
    assert!(!a.needs_notify());
    let mut word = [0u8; 4];
    w.read_bytes(at(&w, Side::A, off::STATE), &mut word);
    assert_eq!(u32::from_le_bytes(word) & 0xFF, state::BROKEN);
    drop(a);
    w.read_bytes(at(&w, Side::A, off::STATE), &mut word);
    assert_eq!(u32::from_le_bytes(word) & 0xFF, state::BROKEN);
}

#[test]
fn a_peer_with_another_geometry_or_garbage_state_is_never_connected() {
    for (word, value) in [
        (off::RING_BYTES, 8192),
        (off::VERSION, 2),
        (off::SIDE, 0),
        (off::MAX_PAYLOAD, 4096),
        (off::MAGIC0, 0),
    ] {
        let w = HostWindow::new(cfg(4096));
        let mut a = Endpoint::attach(w.region(), Side::A, w.config()).unwrap();
        let b = Endpoint::attach(w.region(), Side::B, w.config()).unwrap();
        drop(a);
        std::mem::forget(b);
        w.store_u32(at(&w, Side::B, word), value);
        a = Endpoint::attach(w.region(), Side::A, w.config()).unwrap();
        assert!(matches!(
            a.peer_state(),
            PeerState::Incompatible | PeerState::Absent
        ));
        assert_eq!(a.send(b"x"), Err(SendError::PeerDown));
        assert_eq!(a.violation(), None);
    }
    let w = HostWindow::new(cfg(4096));
    let mut a = hostile_b(&w, 1);
    w.store_u32(at(&w, Side::B, off::STATE), 0xFFFF_FF07);
    assert_eq!(a.send(b"x"), Err(SendError::PeerDown));
    assert_eq!(a.peer_state(), PeerState::Incompatible);
}

#[test]
fn enable_notify_after_a_lone_padding_record_asks_to_be_woken_past_it() {
    let w = HostWindow::new(cfg(4096));
    let mut a = hostile_b(&w, 0);
    for o in (0..4000).step_by(8) {
        w.store_u64(
            at(&w, Side::B, off::RING + o),
            record::header(record::KIND_MSG, 0),
        );
    }
    w.store_u32(at(&w, Side::B, off::TX_PROD), 4000);
    while recv_vec(&mut a).unwrap().is_some() {}
    // The peer publishes padding up to the ring's end, and nothing after it yet.
    w.store_u64(
        at(&w, Side::B, off::RING + 4000),
        record::header(record::KIND_PAD, 88),
    );
    w.store_u32(at(&w, Side::B, off::TX_PROD), 4096);
    assert_eq!(a.enable_notify(), Ok(true));
    let mut word = [0u8; 4];
    w.read_bytes(at(&w, Side::A, off::NOTIFY_AT), &mut word);
    assert_eq!(u32::from_le_bytes(word), 4096);
    assert_eq!(a.violation(), None);
}
