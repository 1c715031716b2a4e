//! The oslet interconnect: a message channel between two OSlets over one shared
//! window of memory.
//!
//! A *link* is a window `[section A][section B]` mapped into both guests. **Each side
//! writes only its own section** (the VMM maps it writable into its owner and
//! read-only into the peer, as Jailhouse's ivshmem v2 does). A section holds its
//! owner's header and state word, its owner's transmit ring (producer index and
//! data), and its owner's consumer index for the *peer's* ring:
//!
//! | section offset | size | written by the owner on | what |
//! | --- | --- | --- | --- |
//! | `0x000` | 8 | attach | magic `"OSLETLNK"` (u32 `0x454C534F`, u32 `0x4B4E4C54`) |
//! | `0x008` | 4 | attach | version (1) |
//! | `0x00C` | 4 | attach | side (0 = A, 1 = B) |
//! | `0x010` | 4 | attach | control area size (4096): ring data offset |
//! | `0x014` | 4 | attach | ring data size (power of two, 4 KiB ..= 1 GiB) |
//! | `0x018` | 4 | attach | section size (4096 + ring size) |
//! | `0x01C` | 4 | attach | max payload (ring size / 4) |
//! | `0x040` | 4 | state changes | state word: state (bits 0..8: 0 DOWN, 1 UP, 2 BROKEN), epoch (bits 8..32) |
//! | `0x044` | 4 | connect | peer ack: the peer epoch our ring state belongs to |
//! | `0x080` | 4 | every publish | tx producer index (bytes, free-running) |
//! | `0x0C0` | 4 | every consume | rx consumer index: how far we consumed the *peer's* ring |
//! | `0x100` | 4 | sleep / wake | notify armed (non-zero: "ring my doorbell") |
//! | `0x104` | 4 | sleep | notify at: our rx consumer index when we armed |
//! | `0x1000` | ring size | messages | tx ring data |
//!
//! All words are little-endian. Section B starts at `section size`; the window is
//! `2 × section size`. The full protocol — records, padding, the connection
//! handshake across restarts, notification suppression, what is validated — is in
//! `PROTOCOL.md` next to this crate's `Cargo.toml`.
//!
//! # Safety model
//! Window memory is never a Rust reference: a [`Region`] is a pointer and a length,
//! and every access is an aligned atomic (u32 for control words, u64 for ring data;
//! relaxed loads plus fences, because only relaxed loads are promised to work on
//! read-only mappings). Every value read from the peer's section is checked against
//! our own [`LinkConfig`]; a peer that writes garbage can at worst make an endpoint
//! return [`Violation`]s (sticky [`SendError::Broken`] / [`RecvError::Broken`]), never
//! make it access memory outside the window, panic or loop unboundedly.
//!
//! # Use
//! ```
//! # #[cfg(feature = "std")] {
//! use oslet_interconnect::{Endpoint, HostWindow, LinkConfig, Side};
//!
//! let config = LinkConfig::new(64 * 1024).unwrap();
//! let window = HostWindow::new(config); // the VMM maps a memfd instead
//! let mut a = Endpoint::attach(window.region(), Side::A, config).unwrap();
//! let mut b = Endpoint::attach(window.region(), Side::B, config).unwrap();
//!
//! a.send(b"hello").unwrap();
//! let mut buf = [0u8; 64];
//! assert_eq!(b.recv(&mut buf).unwrap(), Some(5));
//! assert_eq!(&buf[..5], b"hello");
//! # }
//! ```
#![cfg_attr(not(any(feature = "std", test)), no_std)]
#![warn(missing_docs)]
#![deny(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)
)]

#[cfg(not(target_has_atomic = "64"))]
compile_error!(
    "oslet-interconnect needs 64-bit atomics: ring data is accessed as aligned u64 words"
);

pub mod agent;
mod endpoint;
mod error;
pub mod layout;
mod region;
mod rx;
mod tx;

#[cfg(target_arch = "x86_64")]
pub mod probe;

#[cfg(feature = "std")]
pub mod bench;
#[cfg(feature = "std")]
mod host;
#[cfg(feature = "std")]
pub mod hostile;

pub use endpoint::{Endpoint, PeerState, Poll};
pub use error::{AttachError, RecvError, SendError, Violation};
#[cfg(feature = "std")]
pub use host::{HostWindow, GUARD_BYTE};
pub use layout::{ConfigError, LinkConfig, Side};
pub use region::{OutOfBounds, Region, RegionError};
pub use rx::Incoming;
pub use tx::Reservation;

#[cfg(test)]
mod tests;
