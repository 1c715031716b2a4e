//! Sending: copying sends, batches, and zero-copy reservations in our own ring.

use core::sync::atomic::Ordering;

use crate::endpoint::{Endpoint, Fault, Link};
use crate::error::{SendError, Violation};
use crate::layout::{off, record};
use crate::region::OutOfBounds;

/// Where the next record goes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    /// Padding bytes to write first (0, or everything up to the end of the ring).
    pad: u32,
    /// Ring offset of the record header.
    at: u32,
    /// Payload length.
    len: u32,
}

impl From<Fault> for SendError {
    fn from(f: Fault) -> Self {
        match f {
            Fault::Reset => SendError::PeerDown,
            Fault::Broken(v) => SendError::Broken(v),
        }
    }
}

impl<'a> Endpoint<'a> {
    fn send_ready(&mut self) -> Result<(), SendError> {
        let link = self.sync().map_err(SendError::Broken)?;
        if self.take_restart() {
            return Err(SendError::PeerRestarted);
        }
        match link {
            Link::Connected { peer_up: true } => Ok(()),
            _ => Err(SendError::PeerDown),
        }
    }

    /// Reloads and validates the peer's consumer index for our ring.
    pub(crate) fn tx_refresh(&mut self) -> Result<(), Violation> {
        let c = self.peer.load_acquire(off::RX_CONS)?;
        let in_flight = self.tx_prod.wrapping_sub(self.tx_cons_seen);
        // The consumer may only move forward, and not past what we produced.
        if c.wrapping_sub(self.tx_cons_seen) > in_flight || c % 8 != 0 {
            return Err(Violation::ConsumerIndex);
        }
        self.tx_cons_seen = c;
        Ok(())
    }

    /// Free bytes in our ring as last seen.
    pub(crate) fn tx_free(&self) -> u32 {
        self.config.ring_bytes() - self.tx_prod.wrapping_sub(self.tx_cons_seen)
    }

    /// Finds room for a `len`-byte message, padding to the ring's end if the record
    /// would not fit before it.
    fn tx_slot(&mut self, len: usize) -> Result<Slot, SendError> {
        let max = self.config.max_payload();
        if len > max as usize {
            return Err(SendError::TooBig {
                len,
                max: max as usize,
            });
        }
        let len = len as u32;
        let ring = self.config.ring_bytes();
        let rec = record::size(len);
        let pos = self.tx_prod & (ring - 1);
        let tail = ring - pos;
        let (pad, at) = if rec <= tail { (0, pos) } else { (tail, 0) };
        let need = pad + rec;
        if self.tx_free() < need {
            if let Err(v) = self.tx_refresh() {
                return Err(self.judge(v).into());
            }
            if self.tx_free() < need {
                return Err(SendError::Full);
            }
        }
        Ok(Slot { pad, at, len })
    }

    /// Writes the padding and record headers of `slot` and advances our (not yet
    /// published) producer index.
    fn tx_seal(&mut self, slot: Slot) -> Result<(), Violation> {
        let ring = self.config.ring_bytes();
        if slot.pad != 0 {
            let pos = ring - slot.pad;
            self.own.store_u64(
                off::RING + pos as usize,
                record::header(record::KIND_PAD, slot.pad - 8),
            )?;
        }
        self.own.store_u64(
            off::RING + slot.at as usize,
            record::header(record::KIND_MSG, slot.len),
        )?;
        self.tx_prod = self.tx_prod.wrapping_add(slot.pad + record::size(slot.len));
        Ok(())
    }

    /// Publishes everything sealed so far (release: the peer that sees the new index
    /// sees the records).
    fn tx_publish(&mut self) -> Result<(), Violation> {
        self.own
            .store(off::TX_PROD, self.tx_prod, Ordering::Release)
    }

    fn tx_put(&mut self, msg: &[u8]) -> Result<(), SendError> {
        let slot = self.tx_slot(msg.len())?;
        let r = self
            .own
            .0
            .write_words(off::RING + slot.at as usize + 8, msg)
            .map_err(Violation::from)
            .and_then(|()| self.tx_seal(slot));
        r.map_err(|v| {
            self.break_with(v);
            SendError::Broken(v)
        })
    }

    fn internal(&mut self, r: Result<(), Violation>) -> Result<(), SendError> {
        r.map_err(|v| {
            self.break_with(v);
            SendError::Broken(v)
        })
    }

    /// Sends one message (copied into our ring and published at once).
    pub fn send(&mut self, msg: &[u8]) -> Result<(), SendError> {
        self.send_ready()?;
        self.tx_put(msg)?;
        let r = self.tx_publish();
        self.internal(r)
    }

    /// Sends as many of `msgs` as fit, in order, publishing them with one index
    /// update. Returns how many were sent; stops at the first that does not fit
    /// (`Full` or `TooBig` is returned only if that is the first one).
    pub fn send_batch(&mut self, msgs: &[&[u8]]) -> Result<usize, SendError> {
        self.send_ready()?;
        let mut sent = 0;
        for m in msgs {
            match self.tx_put(m) {
                Ok(()) => sent += 1,
                Err(e @ (SendError::Broken(_) | SendError::PeerDown)) => return Err(e),
                Err(e) if sent == 0 => return Err(e),
                Err(_) => break,
            }
        }
        if sent > 0 {
            let r = self.tx_publish();
            self.internal(r)?;
        }
        Ok(sent)
    }

    /// Reserves room for a `len`-byte message in our ring, to be filled in place and
    /// published with [`Reservation::commit`]. Dropping the reservation abandons it.
    pub fn reserve(&mut self, len: usize) -> Result<Reservation<'_, 'a>, SendError> {
        self.send_ready()?;
        let slot = self.tx_slot(len)?;
        Ok(Reservation { ep: self, slot })
    }
}

/// Room for one message in our own ring, filled with volatile (atomic) writes: no
/// Rust reference to the shared bytes is handed out.
///
/// Bytes of the reservation that are not written carry whatever our ring held there
/// before (earlier messages of ours).
#[derive(Debug)]
pub struct Reservation<'e, 'a> {
    ep: &'e mut Endpoint<'a>,
    slot: Slot,
}

impl Reservation<'_, '_> {
    /// Reserved payload length.
    pub fn len(&self) -> usize {
        self.slot.len as usize
    }

    /// Whether the reservation is for an empty message.
    pub fn is_empty(&self) -> bool {
        self.slot.len == 0
    }

    /// Writes `src` at `offset` in the payload.
    pub fn write_at(&mut self, offset: usize, src: &[u8]) -> Result<(), OutOfBounds> {
        match offset.checked_add(src.len()) {
            Some(end) if end <= self.slot.len as usize => {}
            _ => return Err(OutOfBounds),
        }
        let base = off::RING + self.slot.at as usize + 8;
        self.ep.own.0.write_bytes(base + offset, src)
    }

    /// Publishes the message with its full reserved length.
    pub fn commit(self) -> Result<(), SendError> {
        let len = self.slot.len as usize;
        self.commit_len(len)
    }

    /// Publishes the message shortened to `len` bytes (at most the reserved length;
    /// more is clamped).
    pub fn commit_len(self, len: usize) -> Result<(), SendError> {
        let mut slot = self.slot;
        slot.len = slot.len.min(len.min(u32::MAX as usize) as u32);
        let ep = self.ep;
        let r = ep.tx_seal(slot).and_then(|()| ep.tx_publish());
        ep.internal(r)
    }
}
