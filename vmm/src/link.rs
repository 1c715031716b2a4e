//! Links between OSlets: memfd-backed windows shared by two VMM processes, each side's
//! section writable in its owner and read-only (KVM_MEM_READONLY) in the peer, and
//! doorbells that never pass through a VMM thread: a guest write to its doorbell
//! address is an ioeventfd in its VM that is registered as an irqfd in the peer's VM.
//!
//! The supervisor ([`SharedLink`]) creates a link's memfd and its two eventfds, keeps
//! them for the life of `oslet up` (so a restarted OSlet finds its link again), hands
//! them to both VMM processes, and marks a side down when its VMM process ends. Each
//! VMM process ([`attach`]) maps the window into its guest.
//!
//! Guests find their links on the kernel command line (see [`cmdline_word`]):
//! `oslet.link=<peer>,<side>,<window_gpa>,<ring_bytes>,<doorbell_gpa>,<gsi>`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use oslet_interconnect::layout::{self, off, state, Side};
use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::EventFd;

/// Guest physical base of the first link window (inside the 32-bit MMIO hole).
pub const WINDOW_BASE: u64 = 0xd000_0000;
/// End of the window area (the doorbells and IOAPIC follow).
pub const WINDOW_END: u64 = 0xfe00_0000;
/// Guest physical address of the first doorbell; link j rings at `+ 8 * j`.
pub const DOORBELL_BASE: u64 = 0xfeb0_0000;
/// The IOAPIC pin of link j's doorbell interrupt is `FIRST_GSI + j`.
pub const FIRST_GSI: u32 = 5;
/// Most links one OSlet can have (IOAPIC pins 5..=20).
pub const MAX_LINKS_PER_OSLET: usize = 16;
/// First KVM memory slot used for windows (RAM uses the ones below).
pub const FIRST_SLOT: u32 = 8;

/// Errors setting up links.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// memfd, eventfd, mmap or ftruncate failed.
    #[error("cannot {0}")]
    Os(&'static str, #[source] std::io::Error),
    /// A KVM call failed.
    #[error("KVM refused to {0}")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
    /// The ring size does not make a valid link.
    #[error("link {0}: {1}")]
    Geometry(String, String),
    /// Too many links, or windows that do not fit.
    #[error("OSlet {0} has {1} links; at most {MAX_LINKS_PER_OSLET} fit (one IOAPIC pin and window each)")]
    TooMany(String, usize),
    /// The windows do not fit in the guest's window area.
    #[error("the link windows of OSlet {0} need {1} MiB; at most {avail} MiB fit", avail = (WINDOW_END - WINDOW_BASE) >> 20)]
    NoRoom(String, u64),
}

/// A new memfd of `len` bytes called `name`, mapped shared and read-write into this
/// process: (the fd, the mapping). On error, what failed and why.
pub(crate) fn memfd_mapping(
    name: &std::ffi::CStr,
    len: usize,
) -> Result<(OwnedFd, *mut u8), (&'static str, std::io::Error)> {
    let os = |what| (what, std::io::Error::last_os_error());
    // SAFETY: memfd_create with a valid C string; the returned fd is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(os("create a memfd"));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ftruncate on our own memfd.
    if unsafe { libc::ftruncate(memfd.as_raw_fd(), len as libc::off_t) } != 0 {
        return Err(os("size a memfd"));
    }
    // SAFETY: a fresh shared mapping of the whole memfd; checked for MAP_FAILED.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            memfd.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(os("map a memfd"));
    }
    Ok((memfd, map.cast()))
}

/// Bytes of one section for `ring_bytes` (control page + ring).
pub fn section_bytes(ring_bytes: u64) -> u64 {
    u64::from(layout::CONTROL_BYTES) + ring_bytes
}

fn side_of(s: &str) -> Side {
    if s == "a" {
        Side::A
    } else {
        Side::B
    }
}

/// What one VMM process needs to map one link (sent to it with its plan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkAttach {
    /// The OSlet at the other end.
    pub peer: String,
    /// This OSlet's side: "a" owns the first section, "b" the second.
    pub side: String,
    /// Bytes of each direction's ring.
    pub ring_bytes: u64,
    /// The window memfd, as numbered in the VMM process.
    pub window_fd: RawFd,
    /// The eventfd this guest's doorbell writes signal (the peer's irqfd).
    pub ring_fd: RawFd,
    /// The eventfd the peer's doorbell signals (this guest's irqfd).
    pub irq_fd: RawFd,
    /// Where the window appears in this guest.
    pub window_gpa: u64,
    /// This guest's doorbell address.
    pub doorbell_gpa: u64,
    /// This guest's interrupt line for the peer's doorbell.
    pub gsi: u32,
}

/// The kernel command-line word that tells a guest about a link.
pub fn cmdline_word(l: &LinkAttach) -> String {
    format!(
        "oslet.link={},{},{:#x},{:#x},{:#x},{}",
        l.peer, l.side, l.window_gpa, l.ring_bytes, l.doorbell_gpa, l.gsi
    )
}

/// A link as the supervisor holds it.
pub struct SharedLink {
    /// The OSlet on side A.
    pub a: String,
    /// The OSlet on side B.
    pub b: String,
    /// Ring bytes per direction.
    pub ring_bytes: u64,
    memfd: OwnedFd,
    /// Signalled by A's doorbell, raises B's interrupt.
    a_to_b: EventFd,
    /// Signalled by B's doorbell, raises A's interrupt.
    b_to_a: EventFd,
    map: *mut u8,
    len: usize,
}

// SAFETY: the raw pointer is a MAP_SHARED mapping owned by this struct; it is only
// accessed with atomic 32-bit stores (mark_down), which are sound from any thread.
unsafe impl Send for SharedLink {}

impl SharedLink {
    /// Creates the memfd window and the two doorbell eventfds of `plan`.
    pub fn create(plan: &oslet_config::LinkPlan) -> Result<Self, LinkError> {
        let name = format!("{}-{}", plan.a, plan.b);
        let ring = u32::try_from(plan.ring_bytes)
            .ok()
            .and_then(|r| layout::LinkConfig::new(r).ok())
            .ok_or_else(|| {
                LinkError::Geometry(
                    name.clone(),
                    format!("ring of {} bytes is invalid", plan.ring_bytes),
                )
            })?;
        let _ = ring;
        let len = 2 * section_bytes(plan.ring_bytes);
        let cname = std::ffi::CString::new(format!("oslet-link-{name}"))
            .map_err(|_| LinkError::Geometry(name.clone(), "name holds a NUL".into()))?;
        let efd = || {
            EventFd::new(libc::EFD_CLOEXEC)
                .map_err(|e| LinkError::Os("create a doorbell eventfd", e))
        };
        // The eventfds first: nothing can fail after the mapping (owned by Self).
        let (a_to_b, b_to_a) = (efd()?, efd()?);
        let (memfd, map) =
            memfd_mapping(&cname, len as usize).map_err(|(what, e)| LinkError::Os(what, e))?;
        Ok(Self {
            a: plan.a.clone(),
            b: plan.b.clone(),
            ring_bytes: plan.ring_bytes,
            memfd,
            a_to_b,
            b_to_a,
            map,
            len: len as usize,
        })
    }

    /// The fds `name`'s VMM process needs: (window, its doorbell's eventfd, its irq eventfd).
    pub fn fds_for(&self, name: &str) -> (RawFd, RawFd, RawFd) {
        if name == self.a {
            (
                self.memfd.as_raw_fd(),
                self.a_to_b.as_raw_fd(),
                self.b_to_a.as_raw_fd(),
            )
        } else {
            (
                self.memfd.as_raw_fd(),
                self.b_to_a.as_raw_fd(),
                self.a_to_b.as_raw_fd(),
            )
        }
    }

    /// `name`'s side and peer on this link, if it is on it.
    pub fn side_of(&self, name: &str) -> Option<(&'static str, &str)> {
        if name == self.a {
            Some(("a", &self.b))
        } else if name == self.b {
            Some(("b", &self.a))
        } else {
            None
        }
    }

    /// Bytes each side has published into its ring so far, modulo 2^32: (A, B).
    pub fn tx_bytes(&self) -> (u32, u32) {
        let read = |section: usize| -> u32 {
            let word = section + off::TX_PROD;
            if word + 4 > self.len {
                return 0;
            }
            // SAFETY: aligned u32 inside our live mapping; guests access it atomically.
            let a = unsafe { &*(self.map.add(word) as *const std::sync::atomic::AtomicU32) };
            a.load(std::sync::atomic::Ordering::Relaxed)
        };
        (read(0), read(section_bytes(self.ring_bytes) as usize))
    }

    /// Marks `name`'s side of the window down (its VMM process ended) and rings the
    /// peer, so the peer sees the link go down without waiting for a timeout.
    pub fn mark_down(&self, name: &str) {
        let (offset, peer_irq) = if name == self.a {
            (0usize, &self.a_to_b)
        } else if name == self.b {
            (section_bytes(self.ring_bytes) as usize, &self.b_to_a)
        } else {
            return;
        };
        let word = offset + off::STATE;
        if word + 4 > self.len {
            return;
        }
        // SAFETY: `word` is 4-byte aligned (sections are page aligned, STATE is 0x40)
        // and inside our live mapping; guests access this word only as an atomic u32.
        let a = unsafe { &*(self.map.add(word) as *const std::sync::atomic::AtomicU32) };
        let old = a.load(std::sync::atomic::Ordering::Acquire);
        let (_, epoch) = layout::decode_state(old);
        a.store(
            layout::encode_state(state::DOWN, epoch),
            std::sync::atomic::Ordering::Release,
        );
        let _ = peer_irq.write(1);
    }
}

impl Drop for SharedLink {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping created in `create`, exactly once.
        unsafe { libc::munmap(self.map.cast(), self.len) };
    }
}

/// Assigns this OSlet's link windows, doorbells and GSIs (in link order).
pub fn place(name: &str, links: &mut [LinkAttach]) -> Result<(), LinkError> {
    if links.len() > MAX_LINKS_PER_OSLET {
        return Err(LinkError::TooMany(name.to_string(), links.len()));
    }
    let mut gpa = WINDOW_BASE;
    for (j, l) in links.iter_mut().enumerate() {
        let len = 2 * section_bytes(l.ring_bytes);
        l.window_gpa = gpa;
        l.doorbell_gpa = DOORBELL_BASE + 8 * j as u64;
        l.gsi = FIRST_GSI + j as u32;
        gpa = (gpa + len).next_multiple_of(2 << 20);
    }
    if gpa > WINDOW_END {
        return Err(LinkError::NoRoom(
            name.to_string(),
            (gpa - WINDOW_BASE) >> 20,
        ));
    }
    Ok(())
}

/// A window mapped into this VMM process (and its guest).
pub struct AttachedLink {
    /// The attach description.
    pub info: LinkAttach,
    maps: [(*mut u8, usize); 2],
    _fds: (OwnedFd, EventFd, EventFd),
}

// SAFETY: the mappings are owned by this struct and only unmapped in Drop.
unsafe impl Send for AttachedLink {}

impl Drop for AttachedLink {
    fn drop(&mut self) {
        for (p, len) in self.maps {
            // SAFETY: each mapping was created in `attach` and is unmapped once here,
            // after the VM (which maps them) is gone: the OSlet drops links after the VM.
            unsafe { libc::munmap(p.cast(), len) };
        }
    }
}

fn map_section(fd: RawFd, offset: u64, len: u64, writable: bool) -> Result<*mut u8, LinkError> {
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: mapping `len` bytes at `offset` of a memfd we own; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            prot,
            libc::MAP_SHARED,
            fd,
            offset as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(LinkError::Os(
            "map a link section",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(p.cast())
}

/// Maps link `info` into `vm`: own section writable, the peer's read-only, the
/// doorbell as an ioeventfd and the peer's doorbell as an irqfd. `slot` is the first
/// of the two memory slots it takes.
pub fn attach(vm: &VmFd, info: LinkAttach, slot: u32) -> Result<AttachedLink, LinkError> {
    // SAFETY: the supervisor passed these fds to this process for this link only; each
    // is taken over exactly once here.
    let (window, ring, irq) = unsafe {
        (
            OwnedFd::from_raw_fd(info.window_fd),
            EventFd::from_raw_fd(info.ring_fd),
            EventFd::from_raw_fd(info.irq_fd),
        )
    };
    let section = section_bytes(info.ring_bytes);
    let side = side_of(&info.side);
    let (own_off, peer_off) = match side {
        Side::A => (0, section),
        Side::B => (section, 0),
    };
    let own = map_section(window.as_raw_fd(), own_off, section, true)?;
    let peer = map_section(window.as_raw_fd(), peer_off, section, false)?;
    let mut maps = [(own, section as usize), (peer, section as usize)];
    // Guest view: the window at window_gpa is [A][B] whatever the side.
    let regions = [(own_off, own, 0u32), (peer_off, peer, KVM_MEM_READONLY)];
    for (i, (offset, host, flags)) in regions.iter().enumerate() {
        let region = kvm_userspace_memory_region {
            slot: slot + i as u32,
            guest_phys_addr: info.window_gpa + offset,
            memory_size: section,
            userspace_addr: *host as u64,
            flags: *flags,
        };
        // SAFETY: the host range is a live mapping owned by the returned AttachedLink,
        // which the OSlet drops only after the VM; the guest range lies in the MMIO hole
        // and overlaps no RAM slot or other window (see `place`).
        if let Err(e) = unsafe { vm.set_user_memory_region(region) } {
            for (p, len) in maps.iter_mut() {
                // SAFETY: unmapping what this function mapped, on its error path.
                unsafe { libc::munmap(p.cast(), *len) };
                *len = 0;
            }
            return Err(LinkError::Kvm("map a link window", e));
        }
    }
    vm.register_ioevent(&ring, &IoEventAddress::Mmio(info.doorbell_gpa), NoDatamatch)
        .map_err(|e| LinkError::Kvm("register a doorbell ioeventfd", e))?;
    vm.register_irqfd(&irq, info.gsi)
        .map_err(|e| LinkError::Kvm("register a doorbell irqfd", e))?;
    Ok(AttachedLink {
        info,
        maps,
        _fds: (window, ring, irq),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attach_info(ring: u64) -> LinkAttach {
        LinkAttach {
            peer: "p".into(),
            side: "a".into(),
            ring_bytes: ring,
            window_fd: -1,
            ring_fd: -1,
            irq_fd: -1,
            window_gpa: 0,
            doorbell_gpa: 0,
            gsi: 0,
        }
    }

    #[test]
    fn windows_are_2mib_aligned_and_doorbells_and_gsis_distinct() {
        let mut v = vec![
            attach_info(64 << 10),
            attach_info(1 << 20),
            attach_info(4096),
        ];
        place("x", &mut v).unwrap();
        assert_eq!(v[0].window_gpa, WINDOW_BASE);
        assert_eq!(v[1].window_gpa, WINDOW_BASE + (2 << 20));
        assert_eq!(v[2].window_gpa, WINDOW_BASE + (6 << 20));
        assert_eq!([v[0].gsi, v[1].gsi, v[2].gsi], [5, 6, 7]);
        assert_eq!(v[2].doorbell_gpa, DOORBELL_BASE + 16);
    }

    #[test]
    fn too_many_links_are_refused() {
        let mut v = vec![attach_info(4096); MAX_LINKS_PER_OSLET + 1];
        assert!(matches!(place("x", &mut v), Err(LinkError::TooMany(_, 17))));
    }

    #[test]
    fn cmdline_word_carries_everything_in_hex() {
        let mut l = attach_info(65536);
        l.window_gpa = 0xd000_0000;
        l.doorbell_gpa = 0xfeb0_0008;
        l.gsi = 6;
        assert_eq!(
            cmdline_word(&l),
            "oslet.link=p,a,0xd0000000,0x10000,0xfeb00008,6"
        );
    }

    #[test]
    fn mark_down_clears_the_state_keeping_the_epoch_and_rings_the_peer() {
        let plan = oslet_config::LinkPlan {
            a: "x".into(),
            b: "y".into(),
            ring_bytes: 4096,
        };
        let l = SharedLink::create(&plan).unwrap();
        let b_state = section_bytes(4096) as usize + off::STATE;
        // SAFETY: test-only access to the link's own mapping, at an aligned offset.
        unsafe {
            (l.map.add(b_state) as *mut u32).write_volatile(layout::encode_state(state::UP, 7))
        };
        l.mark_down("y");
        // SAFETY: as above.
        let w = unsafe { (l.map.add(b_state) as *const u32).read_volatile() };
        assert_eq!(layout::decode_state(w), (state::DOWN, 7));
        assert_eq!(l.b_to_a.read().unwrap(), 1, "x is rung");
    }
}
