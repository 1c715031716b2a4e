//! The links the VMM describes on the command line, one word each:
//! `oslet.link=<peer>,<side>,<window_gpa>,<ring_bytes>,<doorbell_gpa>,<gsi>`
//! (side `a` or `b`; numbers hex with 0x, or decimal). Each becomes an
//! interconnect `Endpoint` over the window at `window_gpa` (identity-mapped,
//! write-back, user-accessible: boot.rs maps all of 0-4 GiB).

use super::args::{number, Args};
use super::clock::Clock;
use super::fail;
use crate::serial::{Disp, Hex, Str};
use oslet_interconnect::{Endpoint, LinkConfig, PeerState, Region, Side};

pub const MAX_LINKS: usize = 16;

/// The 32-bit hole the windows live in.
const HOLE: core::ops::Range<u64> = 0xC000_0000..0xFEC0_0000;

pub struct Link {
    pub peer: &'static [u8],
    pub side: Side,
    pub window: u64,
    pub config: LinkConfig,
    pub doorbell: u64,
    pub gsi: u32,
    pub ep: Endpoint<'static>,
}

impl Link {
    /// Physical address of our own section.
    pub fn own_section(&self) -> u64 {
        self.window + self.config.section_offset(self.side) as u64
    }
}

pub struct Links {
    items: [Option<Link>; MAX_LINKS],
    n: usize,
}

fn side_name(s: Side) -> &'static str {
    match s {
        Side::A => "a",
        Side::B => "b",
    }
}

pub fn peer_state_out(p: PeerState) {
    match p {
        PeerState::Absent => crate::serial::puts("absent"),
        PeerState::Incompatible => crate::serial::puts("incompatible"),
        PeerState::Down { epoch } => {
            crate::serial::puts("down, epoch ");
            crate::serial::Out::out(&epoch);
        }
        PeerState::Up { epoch } => {
            crate::serial::puts("up, epoch ");
            crate::serial::Out::out(&epoch);
        }
        PeerState::Broken { epoch } => {
            crate::serial::puts("broken, epoch ");
            crate::serial::Out::out(&epoch);
        }
    }
}

/// `PeerState` for `say!`.
pub struct ShowPeer(pub PeerState);

impl crate::serial::Out for ShowPeer {
    fn out(&self) {
        peer_state_out(self.0)
    }
}

/// One `oslet.link=` word, checked.
struct Spec {
    peer: &'static [u8],
    side: Side,
    window: u64,
    config: LinkConfig,
    doorbell: u64,
    gsi: u32,
}

/// The geometry of a window at `window` with rings of `ring` bytes, checked: a valid
/// ring size, 4 KiB aligned, inside the 32-bit hole. (Links and the agent link.)
pub fn window_config(window: u64, ring: u64) -> Result<LinkConfig, &'static str> {
    let ring = u32::try_from(ring).map_err(|_| "ring size too large")?;
    let config =
        LinkConfig::new(ring).map_err(|_| "ring size not a power of two in 4 KiB..=1 GiB")?;
    if window % 4096 != 0 {
        return Err("window not 4 KiB aligned");
    }
    let end = window
        .checked_add(config.window_bytes() as u64)
        .ok_or("window wraps")?;
    if window < HOLE.start || end > HOLE.end {
        return Err("window outside 0xc0000000..0xfec00000");
    }
    Ok(config)
}

/// Attaches `side` of the window at `window` (checked by `window_config`); on
/// failure prints "<what><name>: ..." and powers off with status 1.
pub fn attach_window(
    what: &str,
    name: &[u8],
    window: u64,
    side: Side,
    config: LinkConfig,
) -> Endpoint<'static> {
    // SAFETY: the VMM maps the window at `window` for the guest's lifetime (our
    // section writable, the peer's read-only); it is identity-mapped here and
    // nothing else in this kernel touches it (it is not RAM in the memmap). The
    // interconnect accesses it only through aligned atomics.
    let region = match unsafe { Region::new(window as usize as *mut u8, config.window_bytes()) } {
        Ok(r) => r,
        Err(e) => {
            say!(what, Str(name), ": bad window: ", Disp(&e));
            crate::io::poweroff(1)
        }
    };
    match Endpoint::attach(region, side, config) {
        Ok(ep) => ep,
        Err(e) => {
            say!(what, Str(name), ": attach failed: ", Disp(&e));
            crate::io::poweroff(1)
        }
    }
}

fn parse(spec: &'static [u8]) -> Result<Spec, &'static str> {
    let mut f = spec.split(|&b| b == b',');
    let peer = f.next().filter(|p| !p.is_empty()).ok_or("no peer name")?;
    let side = match f.next() {
        Some(b"a") | Some(b"A") => Side::A,
        Some(b"b") | Some(b"B") => Side::B,
        _ => return Err("side is not a or b"),
    };
    let window = f.next().and_then(number).ok_or("bad window address")?;
    let ring = f.next().and_then(number).ok_or("bad ring size")?;
    let doorbell = f.next().and_then(number).ok_or("bad doorbell address")?;
    let gsi = f.next().and_then(number).ok_or("bad gsi")?;
    if f.next().is_some() {
        return Err("more than 6 fields");
    }
    let config = window_config(window, ring)?;
    if doorbell % 4 != 0 || doorbell >= crate::io::MAPPED_LIMIT {
        return Err("bad doorbell address");
    }
    let gsi = u32::try_from(gsi).map_err(|_| "bad gsi")?;
    Ok(Spec {
        peer,
        side,
        window,
        config,
        doorbell,
        gsi,
    })
}

impl Links {
    /// Parses every `oslet.link=` word and attaches an endpoint to each
    /// window. A malformed word is fatal (status 1).
    pub fn parse(args: &Args) -> Links {
        let mut links = Links {
            items: core::array::from_fn(|_| None),
            n: 0,
        };
        for spec in args.values(b"oslet.link") {
            let Spec {
                peer,
                side,
                window,
                config,
                doorbell,
                gsi,
            } = match parse(spec) {
                Ok(v) => v,
                Err(why) => {
                    say!("bad oslet.link \"", Str(spec), "\": ", why);
                    crate::io::poweroff(1)
                }
            };
            if links.n == MAX_LINKS {
                fail("more than 16 oslet.link words", spec);
            }
            if links.find(peer).is_some() {
                fail("two oslet.link words for one peer", spec);
            }
            let ep = attach_window("link ", peer, window, side, config);
            say!(
                "link to ",
                Str(peer),
                ": side ",
                side_name(side),
                ", window ",
                Hex(window),
                ", ring ",
                config.ring_bytes(),
                ", doorbell ",
                Hex(doorbell),
                ", gsi ",
                gsi,
                ", attached (epoch ",
                ep.epoch(),
                ")"
            );
            links.items[links.n] = Some(Link {
                peer,
                side,
                window,
                config,
                doorbell,
                gsi,
                ep,
            });
            links.n += 1;
        }
        links
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn get(&mut self, i: usize) -> &mut Link {
        match self.items.get_mut(i).and_then(Option::as_mut) {
            Some(l) => l,
            None => fail("internal: no such link", b""),
        }
    }

    pub fn find(&self, peer: &[u8]) -> Option<usize> {
        self.items[..self.n]
            .iter()
            .position(|l| l.as_ref().is_some_and(|l| l.peer == peer))
    }

    /// Closes every endpoint (state word DOWN, unless broken).
    pub fn close_all(&mut self) {
        for l in self.items.iter_mut() {
            *l = None;
        }
        self.n = 0;
    }

    /// Waits until each of the links `which` is connected to its peer (UP,
    /// or already gone again), for at most `ms` milliseconds. Prints `link <peer>: connected`
    /// per link; on timeout or a broken link prints why and powers off 1.
    pub fn wait_connected(&mut self, which: &[usize], clock: &Clock, ms: u64) {
        let deadline = clock.deadline(ms);
        let mut done = [false; MAX_LINKS];
        loop {
            let mut all = true;
            for &i in which {
                if done[i] {
                    continue;
                }
                let l = self.get(i);
                match l.ep.poll() {
                    // Connected, even to a peer that has already gone again (it can
                    // come, do its work and power off before we first look): the
                    // mode then sees it down.
                    Ok(p) if p.connected => {
                        done[i] = true;
                        say!(
                            "link to ",
                            Str(l.peer),
                            ": connected (peer ",
                            ShowPeer(l.ep.peer_state()),
                            ")"
                        );
                    }
                    Ok(_) => all = false,
                    Err(v) => {
                        say!("link ", Str(l.peer), ": broken: ", Disp(&v));
                        crate::io::poweroff(1)
                    }
                }
            }
            if all {
                return;
            }
            if deadline.passed() {
                for &i in which {
                    if !done[i] {
                        let l = self.get(i);
                        say!(
                            "link to ",
                            Str(l.peer),
                            ": peer did not connect within ",
                            ms / 1000,
                            " s (",
                            ShowPeer(l.ep.peer_state()),
                            ")"
                        );
                    }
                }
                crate::io::poweroff(1)
            }
            core::hint::spin_loop();
        }
    }

    /// After a clean finish: waits (at most `ms`) until the peer of link `i`
    /// consumed everything we sent, or is gone, so that nothing we sent is
    /// lost by our powering off.
    pub fn linger(&mut self, i: usize, clock: &Clock, ms: u64) {
        let deadline = clock.deadline(ms);
        let l = self.get(i);
        let ring = l.config.ring_bytes();
        while !deadline.passed() {
            match l.ep.poll() {
                Ok(p) if p.peer_up && p.tx_free_bytes < ring => core::hint::spin_loop(),
                _ => return,
            }
        }
    }
}
