//! One end of a link: attach, the connection handshake, peer state, notification
//! suppression. Sending lives in `tx.rs`, receiving in `rx.rs`.

use core::sync::atomic::{fence, Ordering};

use crate::error::{AttachError, Violation};
use crate::layout::{self, decode_state, encode_state, next_epoch, off, state, LinkConfig, Side};
use crate::region::{OutOfBounds, Region};

impl From<OutOfBounds> for Violation {
    fn from(_: OutOfBounds) -> Self {
        Violation::OutOfBounds
    }
}

/// Our own section: the only memory an endpoint writes.
#[derive(Clone, Copy)]
pub(crate) struct Own<'a>(pub(crate) Region<'a>);

impl Own<'_> {
    #[inline]
    pub(crate) fn store(&self, offset: usize, v: u32, order: Ordering) -> Result<(), Violation> {
        Ok(self.0.store_u32(offset, v, order)?)
    }

    #[inline]
    pub(crate) fn store_u64(&self, offset: usize, v: u64) -> Result<(), Violation> {
        Ok(self.0.store_u64(offset, v, Ordering::Relaxed)?)
    }

    #[inline]
    pub(crate) fn load(&self, offset: usize) -> Result<u32, Violation> {
        Ok(self.0.load_u32(offset)?)
    }
}

/// The peer's section: loads only (it is mapped read-only into us), and every value
/// loaded is untrusted.
#[derive(Clone, Copy)]
pub(crate) struct Peer<'a>(pub(crate) Region<'a>);

impl Peer<'_> {
    #[inline]
    pub(crate) fn load(&self, offset: usize) -> Result<u32, Violation> {
        Ok(self.0.load_u32(offset)?)
    }

    /// A relaxed load followed by an acquire fence: everything the peer wrote before
    /// its release store of this word is visible afterwards. (Acquire *loads* are not
    /// promised to work on read-only memory; relaxed loads plus a fence are.)
    #[inline]
    pub(crate) fn load_acquire(&self, offset: usize) -> Result<u32, Violation> {
        let v = self.0.load_u32(offset)?;
        fence(Ordering::Acquire);
        Ok(v)
    }

    #[inline]
    pub(crate) fn load_u64(&self, offset: usize) -> Result<u64, Violation> {
        Ok(self.0.load_u64(offset)?)
    }

    #[inline]
    pub(crate) fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<(), Violation> {
        Ok(self.0.read_bytes(offset, dst)?)
    }
}

/// What the peer's section says, as far as it can be understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// No valid magic: the peer never attached (or its section was wiped).
    Absent,
    /// Valid magic but another version, side or geometry, or an unknown state value:
    /// never connected to.
    Incompatible,
    /// Attached once with this epoch, now closed.
    Down {
        /// The peer's epoch.
        epoch: u32,
    },
    /// Attached and serving with this epoch.
    Up {
        /// The peer's epoch.
        epoch: u32,
    },
    /// The peer saw a violation from us and stopped.
    Broken {
        /// The peer's epoch.
        epoch: u32,
    },
}

/// A snapshot from [`Endpoint::poll`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Poll {
    /// Both ends agree on each other's epochs: our ring state belongs to the peer's
    /// current incarnation and its ring state to ours.
    pub connected: bool,
    /// Connected and the peer is UP (so sending is possible).
    pub peer_up: bool,
    /// A message is waiting to be received.
    pub readable: bool,
    /// Free bytes in our ring (padding may make a message that size not fit).
    pub tx_free_bytes: u32,
    /// A new incarnation of the peer was connected to since the last call that
    /// reported one (this poll may have done it): both rings were emptied, and
    /// whatever was in flight with the old incarnation is gone. Reported once, by
    /// this field or by a `PeerRestarted` error, whichever call comes first.
    pub peer_restarted: bool,
}

/// Whether the rings may be used, from [`Endpoint::sync`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Link {
    /// Epochs agree; `peer_up` is false when the peer closed or broke (its ring may
    /// still be drained).
    Connected { peer_up: bool },
    /// Not (yet) connected to this incarnation of the peer.
    NotConnected,
}

/// How an operation on the rings failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The peer is re-attaching: what looked wrong was its reset.
    Reset,
    /// We are broken for good.
    Broken(Violation),
}

/// One end of a link over a shared window.
///
/// It writes only its own section and only reads the peer's; all it believes about
/// the peer's ring is re-validated against its own [`LinkConfig`]. See the crate
/// docs for the protocol.
#[derive(Debug)]
pub struct Endpoint<'a> {
    pub(crate) own: Own<'a>,
    pub(crate) peer: Peer<'a>,
    pub(crate) config: LinkConfig,
    side: Side,
    epoch: u32,
    /// The peer epoch our ring state belongs to (mirrors our PEER_ACK word; 0: none).
    ack: u32,
    /// Bytes we have written into our ring (published or, during a batch, not yet).
    pub(crate) tx_prod: u32,
    /// The last validated value of the peer's consumer index for our ring.
    pub(crate) tx_cons_seen: u32,
    /// `tx_prod` at the last [`Endpoint::needs_notify`].
    tx_notified: u32,
    /// Bytes of the peer's ring we have consumed.
    pub(crate) rx_cons: u32,
    /// The last validated value of the peer's producer index.
    pub(crate) rx_prod_seen: u32,
    violation: Option<Violation>,
    resets: u64,
    /// A reconnection to a new incarnation of the peer that no call has reported yet.
    restart_unreported: bool,
}

impl core::fmt::Debug for Own<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("Own").field(&self.0.as_ptr()).finish()
    }
}

impl core::fmt::Debug for Peer<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("Peer").field(&self.0.as_ptr()).finish()
    }
}

impl<'a> Endpoint<'a> {
    /// Attaches `side` of the link described by `config` to `window` (which must
    /// hold at least `config.window_bytes()`; bytes past that are ignored).
    ///
    /// Initialises our own section with a fresh epoch (one more than the last one
    /// found there, and never the one the peer still acknowledges for us), empty
    /// rings and state UP. Nothing the peer's section contains can make this fail.
    /// At most one endpoint per side may be attached at a time.
    pub fn attach(window: Region<'a>, side: Side, config: LinkConfig) -> Result<Self, AttachError> {
        let needed = config.window_bytes();
        if window.len() < needed {
            return Err(AttachError::WindowTooSmall {
                needed,
                got: window.len(),
            });
        }
        let section = config.section_bytes() as usize;
        let own = window
            .sub(config.section_offset(side), section)
            .ok_or(AttachError::OutOfBounds)?;
        let peer = window
            .sub(config.section_offset(side.peer()), section)
            .ok_or(AttachError::OutOfBounds)?;
        let mut ep = Endpoint {
            own: Own(own),
            peer: Peer(peer),
            config,
            side,
            epoch: 0,
            ack: 0,
            tx_prod: 0,
            tx_cons_seen: 0,
            tx_notified: 0,
            rx_cons: 0,
            rx_prod_seen: 0,
            violation: None,
            resets: 0,
            restart_unreported: false,
        };
        ep.init().map_err(|_| AttachError::OutOfBounds)?;
        Ok(ep)
    }

    fn init(&mut self) -> Result<(), Violation> {
        let prev = decode_state(self.own.load(off::STATE)?).1;
        let avoid = self.peer.load(off::PEER_ACK)?;
        self.epoch = next_epoch(prev, avoid);
        let o = self.own;
        let c = self.config;
        // Announce the new epoch (DOWN) before touching the indices: a peer that reads
        // a reset index (through a release/acquire pair) then sees the new epoch and
        // takes it for a restart, not for a violation.
        o.store(
            off::STATE,
            encode_state(state::DOWN, self.epoch),
            Ordering::Release,
        )?;
        o.store(off::MAGIC0, layout::MAGIC[0], Ordering::Relaxed)?;
        o.store(off::MAGIC1, layout::MAGIC[1], Ordering::Relaxed)?;
        o.store(off::VERSION, layout::VERSION, Ordering::Relaxed)?;
        o.store(off::SIDE, self.side.code(), Ordering::Relaxed)?;
        o.store(off::CONTROL_BYTES, layout::CONTROL_BYTES, Ordering::Relaxed)?;
        o.store(off::RING_BYTES, c.ring_bytes(), Ordering::Relaxed)?;
        o.store(off::SECTION_BYTES, c.section_bytes(), Ordering::Relaxed)?;
        o.store(off::MAX_PAYLOAD, c.max_payload(), Ordering::Relaxed)?;
        o.store(off::TX_PROD, 0, Ordering::Release)?;
        o.store(off::RX_CONS, 0, Ordering::Release)?;
        o.store(off::NOTIFY_ARMED, 0, Ordering::Relaxed)?;
        o.store(off::NOTIFY_AT, 0, Ordering::Relaxed)?;
        // Our rings are empty, so they already belong to whatever incarnation of the
        // peer is up now.
        self.ack = match self.peer_view()? {
            PeerState::Up { epoch } => epoch,
            _ => 0,
        };
        o.store(off::PEER_ACK, self.ack, Ordering::Relaxed)?;
        o.store(
            off::STATE,
            encode_state(state::UP, self.epoch),
            Ordering::Release,
        )?;
        Ok(())
    }

    /// Which side we are.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Our epoch (changes on every attach).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The link's configuration.
    pub fn config(&self) -> LinkConfig {
        self.config
    }

    /// The violation that broke this endpoint, if any.
    pub fn violation(&self) -> Option<Violation> {
        self.violation
    }

    /// How many times a new incarnation of the peer was connected to (each one
    /// discards what was in flight in both rings).
    pub fn peer_connects(&self) -> u64 {
        self.resets
    }

    /// Our ring's producer index: bytes published into our ring since the current
    /// connection began (free-running, wrapping at 2^32; back to 0 when a new
    /// incarnation of the peer is connected). Only our own bookkeeping, never a
    /// value read from the peer.
    pub fn tx_produced(&self) -> u32 {
        self.tx_prod
    }

    /// How far the peer has consumed our ring, in the units of
    /// [`Endpoint::tx_produced`]: its consumer index as last validated. It is
    /// refreshed by [`Endpoint::poll`] and whenever a send finds the ring looking
    /// full; after the peer went down (its VMM died, or it closed), a `poll` that
    /// still reports `connected` leaves its final value here.
    pub fn tx_consumed(&self) -> u32 {
        self.tx_cons_seen
    }

    /// Takes the "reconnected to a new incarnation" flag: `true` once per
    /// reconnection (see [`Poll::peer_restarted`]).
    pub(crate) fn take_restart(&mut self) -> bool {
        core::mem::take(&mut self.restart_unreported)
    }

    /// Largest payload a message may have.
    pub fn max_payload(&self) -> usize {
        self.config.max_payload() as usize
    }

    /// What the peer's section currently says.
    pub fn peer_state(&self) -> PeerState {
        self.peer_view().unwrap_or(PeerState::Incompatible)
    }

    fn peer_view(&self) -> Result<PeerState, Violation> {
        let p = self.peer;
        if p.load(off::MAGIC0)? != layout::MAGIC[0] || p.load(off::MAGIC1)? != layout::MAGIC[1] {
            return Ok(PeerState::Absent);
        }
        let (st, epoch) = decode_state(p.load_acquire(off::STATE)?);
        let c = self.config;
        let same = p.load(off::VERSION)? == layout::VERSION
            && p.load(off::SIDE)? == self.side.peer().code()
            && p.load(off::CONTROL_BYTES)? == layout::CONTROL_BYTES
            && p.load(off::RING_BYTES)? == c.ring_bytes()
            && p.load(off::SECTION_BYTES)? == c.section_bytes()
            && p.load(off::MAX_PAYLOAD)? == c.max_payload()
            && epoch != 0;
        if !same {
            return Ok(PeerState::Incompatible);
        }
        Ok(match st {
            state::DOWN => PeerState::Down { epoch },
            state::UP => PeerState::Up { epoch },
            state::BROKEN => PeerState::Broken { epoch },
            _ => PeerState::Incompatible,
        })
    }

    /// Follows the peer's state word: connects to a new incarnation of the peer
    /// (discarding both rings' contents) and says whether the rings may be used.
    pub(crate) fn sync(&mut self) -> Result<Link, Violation> {
        if let Some(v) = self.violation {
            return Err(v);
        }
        let (st, epoch) = decode_state(self.peer.load_acquire(off::STATE)?);
        if epoch != self.ack {
            if st == state::UP
                && matches!(self.peer_view()?, PeerState::Up { epoch: e } if e == epoch)
            {
                self.reset_for(epoch)?;
            } else {
                return Ok(Link::NotConnected);
            }
        }
        if self.ack == 0 || self.peer.load_acquire(off::PEER_ACK)? != self.epoch {
            return Ok(Link::NotConnected);
        }
        Ok(match st {
            state::UP => Link::Connected { peer_up: true },
            state::DOWN | state::BROKEN => Link::Connected { peer_up: false },
            _ => Link::NotConnected,
        })
    }

    /// Empties both rings (from our side) and acknowledges the peer's `epoch`.
    /// When our ring state belonged to an earlier incarnation of the peer (`ack`
    /// non-zero), the next data call reports the restart instead of transferring
    /// anything, so that nothing meant for the old incarnation reaches the new one
    /// (and nothing from the new one is taken for the old one's).
    fn reset_for(&mut self, epoch: u32) -> Result<(), Violation> {
        if self.ack != 0 {
            self.restart_unreported = true;
        }
        self.tx_prod = 0;
        self.tx_cons_seen = 0;
        self.tx_notified = 0;
        self.rx_cons = 0;
        self.rx_prod_seen = 0;
        let o = self.own;
        o.store(off::TX_PROD, 0, Ordering::Relaxed)?;
        o.store(off::RX_CONS, 0, Ordering::Relaxed)?;
        o.store(off::NOTIFY_AT, 0, Ordering::Relaxed)?;
        // Release: the peer reads our indices only after it sees this acknowledgement.
        o.store(off::PEER_ACK, epoch, Ordering::Release)?;
        self.ack = epoch;
        self.resets += 1;
        Ok(())
    }

    /// Decides what a value that failed validation means: a restarting peer
    /// (it announces its new epoch before resetting its indices) or a violation.
    pub(crate) fn judge(&mut self, v: Violation) -> Fault {
        if v != Violation::OutOfBounds {
            if let Ok(word) = self.peer.load_acquire(off::STATE) {
                let (st, epoch) = decode_state(word);
                if epoch != self.ack || st > state::BROKEN {
                    return Fault::Reset;
                }
            }
        }
        self.break_with(v);
        Fault::Broken(v)
    }

    /// Marks this endpoint broken for good and says so in our state word.
    pub(crate) fn break_with(&mut self, v: Violation) {
        if self.violation.is_none() {
            self.violation = Some(v);
            // Nothing more can be done if even this store fails.
            let _ = self.own.store(
                off::STATE,
                encode_state(state::BROKEN, self.epoch),
                Ordering::Release,
            );
        }
    }

    /// Whether a message is waiting, whether we may send, and how much room there is.
    pub fn poll(&mut self) -> Result<Poll, Violation> {
        let link = self.sync()?;
        let (connected, peer_up) = match link {
            Link::Connected { peer_up } => (true, peer_up),
            Link::NotConnected => (false, false),
        };
        let mut readable = false;
        let mut tx_free_bytes = 0;
        if connected {
            readable = match self.rx_peek_next() {
                Ok(n) => n.is_some(),
                Err(Fault::Reset) => false,
                Err(Fault::Broken(v)) => return Err(v),
            };
            tx_free_bytes = match self.tx_refresh() {
                Ok(()) => self.tx_free(),
                Err(v) => match self.judge(v) {
                    Fault::Reset => 0,
                    Fault::Broken(v) => return Err(v),
                },
            };
        }
        Ok(Poll {
            connected,
            peer_up: connected && peer_up,
            readable,
            tx_free_bytes,
            peer_restarted: self.take_restart(),
        })
    }

    /// Producer side of notification suppression: whether the peer asked for a
    /// doorbell that the messages published since the last call have earned. Call it
    /// after a send or a batch and ring the doorbell when it says so; a peer that
    /// polls never asks, so it costs nothing then.
    pub fn needs_notify(&mut self) -> bool {
        if self.violation.is_some() {
            return false;
        }
        // Pairs with the fence in `enable_notify`: either the consumer sees our new
        // producer index when it re-checks, or we see its request here.
        fence(Ordering::SeqCst);
        let (Ok(armed), Ok(at)) = (
            self.peer.load(off::NOTIFY_ARMED),
            self.peer.load(off::NOTIFY_AT),
        ) else {
            return false;
        };
        let old = self.tx_notified;
        let new = self.tx_prod;
        self.tx_notified = new;
        // virtio's vring_need_event: `at` lies in [old, new).
        armed != 0 && new.wrapping_sub(at).wrapping_sub(1) < new.wrapping_sub(old)
    }

    /// Consumer side: asks the peer to ring our doorbell when it publishes past what
    /// we have consumed, then re-checks the ring. `Ok(true)`: nothing is waiting, it
    /// is safe to sleep until the doorbell; `Ok(false)`: something arrived meanwhile,
    /// receive it instead (the request stays armed until [`Endpoint::disable_notify`]).
    /// While the link is not connected it returns `Ok(true)`: the peer will not ring
    /// before it connects, so a sleeper should also wake on a timeout (or be woken by
    /// whoever attaches the peer).
    pub fn enable_notify(&mut self) -> Result<bool, Violation> {
        if let Some(v) = self.violation {
            return Err(v);
        }
        self.own.store(off::NOTIFY_ARMED, 1, Ordering::Relaxed)?;
        // Two rounds: the re-check may consume a trailing padding record, which moves
        // our consumer index past the point we asked to be woken at.
        for _ in 0..2 {
            let at = self.rx_cons;
            self.own.store(off::NOTIFY_AT, at, Ordering::Relaxed)?;
            fence(Ordering::SeqCst);
            match self.sync()? {
                // A restart the caller has not heard of: do not sleep, let the next
                // receive report it.
                Link::Connected { .. } if self.restart_unreported => return Ok(false),
                Link::Connected { .. } => {}
                Link::NotConnected => return Ok(true),
            }
            match self.rx_peek_next() {
                Ok(Some(_)) => return Ok(false),
                Ok(None) if self.rx_cons == at => return Ok(true),
                Ok(None) => {}
                Err(Fault::Reset) => return Ok(true),
                Err(Fault::Broken(v)) => return Err(v),
            }
        }
        // Still moving: do not sleep, look again.
        Ok(false)
    }

    /// Stops asking for doorbells (polling mode, the default after attach).
    pub fn disable_notify(&mut self) {
        // A failed store leaves the request armed: only extra doorbells result.
        let _ = self.own.store(off::NOTIFY_ARMED, 0, Ordering::Relaxed);
    }

    /// Closes our end: the state word says DOWN (a broken endpoint stays BROKEN).
    /// Dropping the endpoint does the same.
    pub fn close(self) {}
}

impl Drop for Endpoint<'_> {
    fn drop(&mut self) {
        if self.violation.is_none() {
            // Nothing more can be done if the store fails.
            let _ = self.own.store(
                off::STATE,
                encode_state(state::DOWN, self.epoch),
                Ordering::Release,
            );
        }
    }
}
