//! Errors of the endpoint API. Display texts are short and never repeat a cause.

use core::fmt;

/// What the peer (or, for [`Violation::OutOfBounds`], this crate) did wrong. Once
/// an endpoint has seen one it is broken for good: every call returns it and its
/// state word says BROKEN until the owner attaches again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Violation {
    /// The peer's producer index moved backwards, past what its ring can hold, or
    /// to a non-multiple of 8.
    ProducerIndex,
    /// The peer's consumer index for our ring moved backwards, past our producer
    /// index, or to a non-multiple of 8.
    ConsumerIndex,
    /// A record header has an unknown kind.
    RecordKind,
    /// A message record is longer than the link's maximum payload.
    RecordTooLong,
    /// A record extends past the peer's producer index.
    RecordBeyondProducer,
    /// A message record runs past the end of the ring (records never wrap).
    RecordWraps,
    /// A padding record at the start of the ring, or not reaching its end exactly.
    Padding,
    /// An access outside the window was attempted: a bug in this crate, never the
    /// peer's doing (all peer values are validated before use). Tests assert it
    /// never happens.
    OutOfBounds,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Violation::ProducerIndex => "peer's producer index is impossible",
            Violation::ConsumerIndex => "peer's consumer index is impossible",
            Violation::RecordKind => "record header has an unknown kind",
            Violation::RecordTooLong => "record is longer than the maximum message",
            Violation::RecordBeyondProducer => "record extends past the producer index",
            Violation::RecordWraps => "record runs past the end of the ring",
            Violation::Padding => "padding record is misplaced",
            Violation::OutOfBounds => "internal error: access outside the window",
        })
    }
}

/// Why a message could not be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The ring has no room for this message now; retry after the peer consumes.
    Full,
    /// The message is longer than the link's maximum payload.
    TooBig {
        /// Length asked for.
        len: usize,
        /// The link's maximum payload.
        max: usize,
    },
    /// The peer is not attached (or not yet connected to this epoch, or closed).
    PeerDown,
    /// The peer restarted: this call connected to its new incarnation (emptying
    /// both rings, so what was in flight with the old one is gone) and sent
    /// nothing. Reported once per restart; the next call sends to the new
    /// incarnation.
    PeerRestarted,
    /// This endpoint is broken.
    Broken(Violation),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full => f.write_str("ring is full"),
            SendError::TooBig { len, max } => {
                write!(f, "message of {len} bytes exceeds the maximum of {max}")
            }
            SendError::PeerDown => f.write_str("peer is down"),
            SendError::PeerRestarted => f.write_str("peer restarted"),
            SendError::Broken(_) => f.write_str("link is broken"),
        }
    }
}

/// Why a message could not be received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvError {
    /// The next message is longer than the buffer; it stays queued.
    BufferTooSmall {
        /// The message's length.
        needed: usize,
    },
    /// The peer is not connected and has nothing more queued for us.
    PeerDown,
    /// The peer restarted: this call connected to its new incarnation (emptying
    /// both rings: what the old one had queued for us is gone) and received
    /// nothing. Reported once per restart; the next call receives from the new
    /// incarnation.
    PeerRestarted,
    /// This endpoint is broken.
    Broken(Violation),
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::BufferTooSmall { needed } => {
                write!(f, "buffer too small for a {needed}-byte message")
            }
            RecvError::PeerDown => f.write_str("peer is down"),
            RecvError::PeerRestarted => f.write_str("peer restarted"),
            RecvError::Broken(_) => f.write_str("link is broken"),
        }
    }
}

/// Why an endpoint could not attach to a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachError {
    /// The window is smaller than the configuration's two sections.
    WindowTooSmall {
        /// Bytes the configuration needs.
        needed: usize,
        /// Bytes the window has.
        got: usize,
    },
    /// The window could not be accessed at all (an internal error).
    OutOfBounds,
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachError::WindowTooSmall { needed, got } => {
                write!(
                    f,
                    "window of {got} bytes is smaller than the {needed} the link needs"
                )
            }
            AttachError::OutOfBounds => f.write_str("internal error: access outside the window"),
        }
    }
}

#[cfg(feature = "std")]
mod std_impls {
    use super::*;
    use crate::layout::ConfigError;
    use crate::region::RegionError;

    impl std::error::Error for Violation {}
    impl std::error::Error for AttachError {}
    impl std::error::Error for ConfigError {}
    impl std::error::Error for RegionError {}

    impl std::error::Error for SendError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            match self {
                SendError::Broken(v) => Some(v),
                _ => None,
            }
        }
    }

    impl std::error::Error for RecvError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            match self {
                RecvError::Broken(v) => Some(v),
                _ => None,
            }
        }
    }
}
