//! Property: whatever the peer writes into its section — arbitrary bytes anywhere,
//! arbitrary index values, forged record headers, flapping state words — the other
//! endpoint never panics, never touches memory outside the window (guard zones stay
//! intact, every access is bounds-checked by the region), never writes the peer's
//! section, and never reports an out-of-bounds access.

use oslet_interconnect::layout::off;
use oslet_interconnect::{hostile, Endpoint, HostWindow, LinkConfig, Side, Violation};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The fuzz target's session, driven by proptest's random bytes.
    #[test]
    fn random_hostile_sessions_never_escape_the_window(
        data in proptest::collection::vec(any::<u8>(), 0..3000),
    ) {
        hostile::run(&data);
    }

    /// Arbitrary bytes over the peer's whole section after real traffic, and
    /// arbitrary values in its index and state words.
    #[test]
    fn garbage_over_the_peer_section_never_escapes_the_window(
        traffic in proptest::collection::vec(0usize..1024, 0..20),
        garbage in proptest::collection::vec((0usize..8192, proptest::collection::vec(any::<u8>(), 1..64)), 0..40),
        words in proptest::collection::vec((0usize..6, any::<u32>()), 0..8),
        rounds in 1usize..40,
    ) {
        let config = LinkConfig::new(4096).unwrap();
        let window = HostWindow::with_guard(config, 8192);
        let mut a = Endpoint::attach(window.region(), Side::A, config).unwrap();
        let mut b = Endpoint::attach(window.region(), Side::B, config).unwrap();
        a.poll().unwrap();
        for &len in &traffic {
            let _ = b.send(&vec![len as u8; len]);
            let _ = a.send(&vec![1; len / 2]);
        }
        let mut buf = vec![0u8; a.max_payload()];
        let _ = a.recv(&mut buf);
        std::mem::forget(b); // its section is now ours to corrupt

        let base = config.section_offset(Side::B);
        let section = config.section_bytes() as usize;
        for (at, bytes) in &garbage {
            window.write_bytes(base + at % section, bytes);
        }
        let targets = [off::STATE, off::PEER_ACK, off::TX_PROD, off::RX_CONS, off::NOTIFY_AT, off::NOTIFY_ARMED];
        for &(w, v) in &words {
            window.store_u32(base + targets[w], v);
        }
        let mut before = vec![0u8; section];
        window.read_bytes(base, &mut before);

        for i in 0..rounds {
            let _ = a.recv(&mut buf);
            let _ = a.send(&buf[..(i * 97) % a.max_payload()]);
            if let Ok(Some(m)) = a.peek() {
                prop_assert!(m.len() <= a_max(&config));
                let _ = m.consume();
            }
            let _ = a.poll();
            let _ = a.needs_notify();
            let _ = a.enable_notify();
            let mut lens = [0usize; 3];
            let _ = a.recv_batch(&mut buf, &mut lens);
            prop_assert_ne!(a.violation(), Some(Violation::OutOfBounds));
        }
        drop(a);
        let mut after = vec![0u8; section];
        window.read_bytes(base, &mut after);
        prop_assert!(after == before, "the victim wrote the peer's section");
        prop_assert!(window.guards_intact());
    }
}

fn a_max(config: &LinkConfig) -> usize {
    config.max_payload() as usize
}
