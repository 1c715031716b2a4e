//! Receiving: copying receives, batches, and zero-copy peeks into the peer's ring.
//! Every index and record header read here comes from the peer and is validated
//! against our own configuration before it is used.

use core::sync::atomic::Ordering;

use crate::endpoint::{Endpoint, Fault, Link};
use crate::error::{RecvError, Violation};
use crate::layout::{off, record};
use crate::region::OutOfBounds;

/// A validated message in the peer's ring.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Next {
    /// Section offset of the payload.
    data: usize,
    /// Payload length (at most the link's maximum payload).
    len: u32,
    /// Bytes to consume: the record plus any padding before it.
    advance: u32,
}

impl From<Fault> for RecvError {
    fn from(f: Fault) -> Self {
        match f {
            Fault::Reset => RecvError::PeerDown,
            Fault::Broken(v) => RecvError::Broken(v),
        }
    }
}

impl<'a> Endpoint<'a> {
    /// `Ok(peer_up)` when the peer's ring may be read.
    fn recv_ready(&mut self) -> Result<bool, RecvError> {
        let link = self.sync().map_err(RecvError::Broken)?;
        if self.take_restart() {
            return Err(RecvError::PeerRestarted);
        }
        match link {
            Link::Connected { peer_up } => Ok(peer_up),
            Link::NotConnected => Err(RecvError::PeerDown),
        }
    }

    /// Reloads and validates the peer's producer index.
    fn rx_refresh(&mut self) -> Result<(), Violation> {
        let p = self.peer.load_acquire(off::TX_PROD)?;
        let seen = self.rx_prod_seen.wrapping_sub(self.rx_cons);
        let now = p.wrapping_sub(self.rx_cons);
        // It may only move forward, never by more than the ring holds.
        if now < seen || now > self.config.ring_bytes() || p % 8 != 0 {
            return Err(Violation::ProducerIndex);
        }
        self.rx_prod_seen = p;
        Ok(())
    }

    /// Finds and validates the next message, skipping (at most one) padding record.
    /// Consumes a trailing padding record that nothing follows yet.
    fn rx_next(&mut self) -> Result<Option<Next>, Violation> {
        let ring = self.config.ring_bytes();
        let max = self.config.max_payload();
        let mut skipped: u32 = 0;
        // Two rounds: a padding record always ends at the ring's end, and a padding
        // record at offset 0 is invalid, so a second one is never legitimate.
        for _ in 0..2 {
            let pos = self.rx_cons.wrapping_add(skipped);
            let mut avail = self.rx_prod_seen.wrapping_sub(pos);
            if avail == 0 {
                self.rx_refresh()?;
                avail = self.rx_prod_seen.wrapping_sub(pos);
                if avail == 0 {
                    if skipped != 0 {
                        self.rx_cons = pos;
                        self.rx_publish()?;
                    }
                    return Ok(None);
                }
            }
            // rx_cons, skipped and avail are multiples of 8 and avail >= 8 here.
            let at = pos & (ring - 1);
            let header = self.peer.load_u64(off::RING + at as usize)?;
            let len = header as u32;
            let kind = (header >> 32) as u32;
            match kind {
                record::KIND_PAD => {
                    let total = ring - at;
                    if at == 0 || len != total - 8 {
                        return Err(Violation::Padding);
                    }
                    if total > avail {
                        return Err(Violation::RecordBeyondProducer);
                    }
                    skipped += total;
                }
                record::KIND_MSG => {
                    if len > max {
                        return Err(Violation::RecordTooLong);
                    }
                    let rec = record::size(len);
                    if rec > avail {
                        return Err(Violation::RecordBeyondProducer);
                    }
                    if at + rec > ring {
                        return Err(Violation::RecordWraps);
                    }
                    return Ok(Some(Next {
                        data: off::RING + at as usize + 8,
                        len,
                        advance: skipped + rec,
                    }));
                }
                _ => return Err(Violation::RecordKind),
            }
        }
        Err(Violation::Padding)
    }

    /// [`Endpoint::rx_next`] with violations judged.
    pub(crate) fn rx_peek_next(&mut self) -> Result<Option<Next>, Fault> {
        match self.rx_next() {
            Ok(n) => Ok(n),
            Err(v) => Err(self.judge(v)),
        }
    }

    /// Publishes our consumer index (release: our reads of the consumed records
    /// happen before the producer may overwrite them).
    fn rx_publish(&mut self) -> Result<(), Violation> {
        self.own
            .store(off::RX_CONS, self.rx_cons, Ordering::Release)
    }

    fn rx_internal<T>(&mut self, r: Result<T, Violation>) -> Result<T, RecvError> {
        r.map_err(|v| {
            self.break_with(v);
            RecvError::Broken(v)
        })
    }

    /// Receives the next message into `buf`: `Ok(Some(len))`, or `Ok(None)` when
    /// nothing is waiting. When the peer has closed, what it queued can still be
    /// received; after that `PeerDown`.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, RecvError> {
        let peer_up = self.recv_ready()?;
        let Some(n) = self.rx_peek_next()? else {
            return if peer_up {
                Ok(None)
            } else {
                Err(RecvError::PeerDown)
            };
        };
        let len = n.len as usize;
        let Some(dst) = buf.get_mut(..len) else {
            return Err(RecvError::BufferTooSmall { needed: len });
        };
        let r = self.peer.read_bytes(n.data, dst);
        self.rx_internal(r)?;
        self.rx_cons = self.rx_cons.wrapping_add(n.advance);
        let r = self.rx_publish();
        self.rx_internal(r)?;
        Ok(Some(len))
    }

    /// Receives up to `lens.len()` messages, packed one after another into `buf`,
    /// their lengths in `lens`, consuming them with one index update. Returns how
    /// many were received; stops early at a message that does not fit what is left
    /// of `buf` (`BufferTooSmall` only if it is the first).
    pub fn recv_batch(&mut self, buf: &mut [u8], lens: &mut [usize]) -> Result<usize, RecvError> {
        let peer_up = self.recv_ready()?;
        let mut count = 0;
        let mut used = 0;
        for slot in lens.iter_mut() {
            let n = match self.rx_peek_next() {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(Fault::Reset) if count > 0 => break,
                Err(f) => return Err(f.into()),
            };
            let len = n.len as usize;
            let Some(dst) = buf.get_mut(used..used + len) else {
                if count == 0 {
                    return Err(RecvError::BufferTooSmall { needed: len });
                }
                break;
            };
            let r = self.peer.read_bytes(n.data, dst);
            self.rx_internal(r)?;
            self.rx_cons = self.rx_cons.wrapping_add(n.advance);
            *slot = len;
            used += len;
            count += 1;
        }
        if count > 0 {
            let r = self.rx_publish();
            self.rx_internal(r)?;
        } else if !peer_up {
            return Err(RecvError::PeerDown);
        }
        Ok(count)
    }

    /// Looks at the next message in place without consuming it.
    pub fn peek(&mut self) -> Result<Option<Incoming<'_, 'a>>, RecvError> {
        let peer_up = self.recv_ready()?;
        match self.rx_peek_next()? {
            Some(next) => Ok(Some(Incoming { ep: self, next })),
            None if peer_up => Ok(None),
            None => Err(RecvError::PeerDown),
        }
    }
}

/// A message still in the peer's ring, read in place with atomic loads.
///
/// Its length was validated once and is fixed; its *bytes* are the peer's and it may
/// rewrite them at any time, so each read may see different values: copy what you
/// need, then validate the copy. Dropping it leaves the message queued;
/// [`Incoming::consume`] removes it.
#[derive(Debug)]
pub struct Incoming<'e, 'a> {
    ep: &'e mut Endpoint<'a>,
    next: Next,
}

impl Incoming<'_, '_> {
    /// Payload length.
    pub fn len(&self) -> usize {
        self.next.len as usize
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.next.len == 0
    }

    /// Copies `dst.len()` payload bytes starting at `offset`.
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<(), OutOfBounds> {
        match offset.checked_add(dst.len()) {
            Some(end) if end <= self.next.len as usize => {}
            _ => return Err(OutOfBounds),
        }
        self.ep.peer.0.read_bytes(self.next.data + offset, dst)
    }

    /// Removes the message from the ring.
    pub fn consume(self) -> Result<(), RecvError> {
        let ep = self.ep;
        ep.rx_cons = ep.rx_cons.wrapping_add(self.next.advance);
        let r = ep.rx_publish();
        ep.rx_internal(r)
    }
}
