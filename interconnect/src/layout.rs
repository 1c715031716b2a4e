//! The window layout: fixed offsets, the link geometry, and the encodings of the
//! words that live in a section. PROTOCOL.md is the normative description; this
//! module is its machine-readable half.

use core::fmt;

/// The two ends of a link. Section A is the first half of the window, B the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Owns the first section (offset 0).
    A,
    /// Owns the second section (offset `section_bytes`).
    B,
}

impl Side {
    /// The other end.
    pub const fn peer(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    /// The value stored in a section's `side` word.
    pub const fn code(self) -> u32 {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
}

/// "OSLETLNK" read as two little-endian u32 words (offsets 0x00 and 0x04).
pub const MAGIC: [u32; 2] = [0x454C_534F, 0x4B4E_4C54];

/// Protocol version written at offset 0x08. A peer with another version is never
/// connected to.
pub const VERSION: u32 = 1;

/// Size of the control area at the start of each section; the ring data follows it.
pub const CONTROL_BYTES: u32 = 4096;

/// The cache-line size the control words are spread over.
pub const CACHE_LINE: usize = 64;

/// Smallest ring data area (one page).
pub const MIN_RING_BYTES: u32 = 4096;

/// Largest ring data area. Indices are free-running u32 byte counters, so the
/// distance between producer and consumer must stay below 2^31.
pub const MAX_RING_BYTES: u32 = 1 << 30;

/// Byte offsets of the words inside a section (relative to the section's start).
/// Every word is a little-endian u32 and is only ever accessed as an aligned
/// 32-bit atomic. The ring data area is only ever accessed as aligned 64-bit
/// atomics.
pub mod off {
    /// Identity line (written once per attach).
    pub const MAGIC0: usize = 0x00;
    /// Second magic word.
    pub const MAGIC1: usize = 0x04;
    /// [`super::VERSION`].
    pub const VERSION: usize = 0x08;
    /// [`super::Side::code`] of the owner.
    pub const SIDE: usize = 0x0C;
    /// [`super::CONTROL_BYTES`]: where the ring data starts in the section.
    pub const CONTROL_BYTES: usize = 0x10;
    /// Ring data size in bytes.
    pub const RING_BYTES: usize = 0x14;
    /// Section size in bytes (`CONTROL_BYTES + RING_BYTES`).
    pub const SECTION_BYTES: usize = 0x18;
    /// Largest message payload the owner will send.
    pub const MAX_PAYLOAD: usize = 0x1C;

    /// State line: the owner's state word (state in bits 0..8, epoch in 8..32).
    pub const STATE: usize = 0x40;
    /// The peer epoch the owner's ring state belongs to (0: none yet).
    pub const PEER_ACK: usize = 0x44;

    /// Producer line: how many bytes the owner has published into its own ring.
    pub const TX_PROD: usize = 0x80;

    /// Consumer line: how many bytes of the *peer's* ring the owner has consumed.
    pub const RX_CONS: usize = 0xC0;

    /// Notify line: non-zero when the owner, as a consumer, wants a doorbell.
    pub const NOTIFY_ARMED: usize = 0x100;
    /// The owner's consumer index when it armed: ring when the producer passes it.
    pub const NOTIFY_AT: usize = 0x104;

    /// Start of the ring data area (== [`super::CONTROL_BYTES`]).
    pub const RING: usize = 0x1000;
}

/// Link state values (bits 0..8 of the state word).
pub mod state {
    /// Not attached, or closed.
    pub const DOWN: u32 = 0;
    /// Attached and serving.
    pub const UP: u32 = 1;
    /// The owner saw a protocol violation and stopped; it must re-attach.
    pub const BROKEN: u32 = 2;
}

/// Epochs are 24-bit; 0 means "never attached".
pub const EPOCH_MASK: u32 = 0x00FF_FFFF;

/// Packs a state and an epoch into a state word.
pub const fn encode_state(state: u32, epoch: u32) -> u32 {
    ((epoch & EPOCH_MASK) << 8) | (state & 0xFF)
}

/// Splits a state word into (state, epoch).
pub const fn decode_state(word: u32) -> (u32, u32) {
    (word & 0xFF, word >> 8)
}

/// The epoch after `prev`, skipping 0 and `avoid` (the epoch the peer currently
/// acknowledges for us, so that a re-attach is always seen as new).
pub const fn next_epoch(prev: u32, avoid: u32) -> u32 {
    let mut e = (prev.wrapping_add(1)) & EPOCH_MASK;
    let mut i = 0;
    while i < 2 {
        if e == 0 || e == avoid {
            e = (e + 1) & EPOCH_MASK;
        }
        i += 1;
    }
    e
}

/// Record header, one little-endian u64 at an 8-aligned ring offset:
/// bits 0..32 payload length, bits 32..64 kind.
pub mod record {
    /// Size of a record header.
    pub const HEADER_BYTES: u32 = 8;
    /// A message: the payload follows the header.
    pub const KIND_MSG: u32 = 0x4D53_0001;
    /// Padding up to the end of the ring; the next record starts at offset 0.
    pub const KIND_PAD: u32 = 0x4D53_0002;

    /// Bytes a record with `payload` bytes occupies (header + payload rounded up to 8).
    pub const fn size(payload: u32) -> u32 {
        HEADER_BYTES + ((payload + 7) & !7)
    }

    /// Encodes a header word.
    pub const fn header(kind: u32, len: u32) -> u64 {
        ((kind as u64) << 32) | len as u64
    }
}

/// The shape of a link, decided by the VMM's configuration and given to both ends.
/// Nothing read from the window ever changes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    ring_bytes: u32,
}

/// A [`LinkConfig`] that cannot describe a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The ring size is not a power of two.
    NotPowerOfTwo(u32),
    /// The ring size is below [`MIN_RING_BYTES`] or above [`MAX_RING_BYTES`].
    OutOfRange(u32),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NotPowerOfTwo(n) => {
                write!(f, "ring size {n} is not a power of two")
            }
            ConfigError::OutOfRange(n) => write!(
                f,
                "ring size {n} is outside {MIN_RING_BYTES}..={MAX_RING_BYTES} bytes"
            ),
        }
    }
}

impl LinkConfig {
    /// A link whose two rings each hold `ring_bytes` bytes of records.
    pub const fn new(ring_bytes: u32) -> Result<Self, ConfigError> {
        if !ring_bytes.is_power_of_two() {
            return Err(ConfigError::NotPowerOfTwo(ring_bytes));
        }
        if ring_bytes < MIN_RING_BYTES || ring_bytes > MAX_RING_BYTES {
            return Err(ConfigError::OutOfRange(ring_bytes));
        }
        Ok(LinkConfig { ring_bytes })
    }

    /// Size of each ring's data area.
    pub const fn ring_bytes(&self) -> u32 {
        self.ring_bytes
    }

    /// Size of one section (control area + ring).
    pub const fn section_bytes(&self) -> u32 {
        CONTROL_BYTES + self.ring_bytes
    }

    /// Size of the whole window (two sections).
    pub const fn window_bytes(&self) -> usize {
        2 * self.section_bytes() as usize
    }

    /// Byte offset of `side`'s section in the window.
    pub const fn section_offset(&self, side: Side) -> usize {
        match side {
            Side::A => 0,
            Side::B => self.section_bytes() as usize,
        }
    }

    /// Largest payload one message may carry: a quarter of the ring, so that a
    /// record plus the padding before it always fits in an empty ring and several
    /// large messages can be in flight at once.
    pub const fn max_payload(&self) -> u32 {
        self.ring_bytes / 4
    }
}

// The layout's invariants, checked at compile time.
const _: () = {
    assert!(off::RING == CONTROL_BYTES as usize);
    assert!(off::NOTIFY_AT + 4 <= off::RING);
    assert!(off::RING % 4096 == 0);
    // The largest record and the worst padding before it fit in an empty ring.
    assert!(2 * record::size(MIN_RING_BYTES / 4) <= MIN_RING_BYTES);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_words_sit_on_separate_cache_lines() {
        let lines = [
            off::MAGIC0,
            off::STATE,
            off::TX_PROD,
            off::RX_CONS,
            off::NOTIFY_ARMED,
        ];
        for (i, a) in lines.iter().enumerate() {
            for b in &lines[i + 1..] {
                assert_ne!(a / CACHE_LINE, b / CACHE_LINE);
            }
        }
    }

    #[test]
    fn config_refuses_odd_and_out_of_range_rings() {
        assert_eq!(LinkConfig::new(5000), Err(ConfigError::NotPowerOfTwo(5000)));
        assert_eq!(LinkConfig::new(2048), Err(ConfigError::OutOfRange(2048)));
        assert_eq!(
            LinkConfig::new(1 << 31),
            Err(ConfigError::OutOfRange(1 << 31))
        );
        let c = LinkConfig::new(65536).unwrap();
        assert_eq!(c.section_bytes(), 4096 + 65536);
        assert_eq!(c.window_bytes(), 2 * (4096 + 65536));
        assert_eq!(c.section_offset(Side::B), 4096 + 65536);
        assert_eq!(c.max_payload(), 16384);
    }

    #[test]
    fn max_record_plus_worst_padding_fits_an_empty_ring() {
        let c = LinkConfig::new(MIN_RING_BYTES).unwrap();
        // Worst padding is one byte short of a whole record, so rec + rec <= ring.
        assert!(2 * record::size(c.max_payload()) <= c.ring_bytes());
    }

    #[test]
    fn state_word_round_trips_and_epochs_skip_zero_and_avoided() {
        assert_eq!(
            decode_state(encode_state(state::UP, 0x12_3456)),
            (state::UP, 0x12_3456)
        );
        assert_eq!(next_epoch(EPOCH_MASK, 0), 1);
        assert_eq!(next_epoch(4, 5), 6);
        assert_eq!(next_epoch(EPOCH_MASK, 1), 2);
        assert_eq!(next_epoch(0, 0), 1);
    }
}
