//! The frontend side of the vhost-user protocol, only the subset a virtio-fs device
//! needs (written here rather than taken from the `vhost` crate to keep the
//! dependency set and its vm-memory version pinning out of the way):
//!
//! | request | when |
//! | --- | --- |
//! | SET_OWNER, GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES | at connect |
//! | SET_FEATURES, SET_MEM_TABLE (memfd of guest RAM), SET_VRING_NUM/ADDR/BASE/CALL/KICK/ENABLE | when the driver sets DRIVER_OK |
//! | GET_VRING_BASE | at a device reset (stops the ring) |
//!
//! With REPLY_ACK negotiated every request that changes state asks for a reply, so
//! the backend's refusal is an error here rather than a silent hang in the guest.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// Errors talking to a vhost-user backend.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    /// The socket could not be reached.
    #[error("cannot connect to the vhost-user socket {0}")]
    Connect(String, #[source] std::io::Error),
    /// Reading or writing the socket failed (the backend died?).
    #[error("vhost-user request {0} failed")]
    Io(&'static str, #[source] std::io::Error),
    /// The backend answered something that is not a reply to our request.
    #[error("vhost-user backend answered {0} with a malformed reply")]
    BadReply(&'static str),
    /// The backend refused a request (REPLY_ACK with a non-zero status).
    #[error("vhost-user backend refused {0} (status {1})")]
    Refused(&'static str, u64),
    /// The backend lacks something we need.
    #[error("vhost-user backend does not offer {0}")]
    Missing(&'static str),
}

/// `VHOST_USER_F_PROTOCOL_FEATURES` (a virtio feature bit only vhost-user uses).
pub const F_PROTOCOL_FEATURES: u64 = 1 << 30;
const PROTOCOL_F_MQ: u64 = 1 << 0;
const PROTOCOL_F_REPLY_ACK: u64 = 1 << 3;

const VERSION: u32 = 1;
const FLAG_REPLY: u32 = 1 << 2;
const FLAG_NEED_REPLY: u32 = 1 << 3;
/// At most this many memory regions in SET_MEM_TABLE.
pub const MAX_REGIONS: usize = 8;

#[derive(Clone, Copy)]
#[repr(u32)]
enum Req {
    GetFeatures = 1,
    SetFeatures = 2,
    SetOwner = 3,
    SetMemTable = 5,
    SetVringNum = 8,
    SetVringAddr = 9,
    SetVringBase = 10,
    GetVringBase = 11,
    SetVringKick = 12,
    SetVringCall = 13,
    GetProtocolFeatures = 15,
    SetProtocolFeatures = 16,
    SetVringEnable = 18,
}

impl Req {
    fn name(self) -> &'static str {
        match self {
            Req::GetFeatures => "GET_FEATURES",
            Req::SetFeatures => "SET_FEATURES",
            Req::SetOwner => "SET_OWNER",
            Req::SetMemTable => "SET_MEM_TABLE",
            Req::SetVringNum => "SET_VRING_NUM",
            Req::SetVringAddr => "SET_VRING_ADDR",
            Req::SetVringBase => "SET_VRING_BASE",
            Req::GetVringBase => "GET_VRING_BASE",
            Req::SetVringKick => "SET_VRING_KICK",
            Req::SetVringCall => "SET_VRING_CALL",
            Req::GetProtocolFeatures => "GET_PROTOCOL_FEATURES",
            Req::SetProtocolFeatures => "SET_PROTOCOL_FEATURES",
            Req::SetVringEnable => "SET_VRING_ENABLE",
        }
    }
}

/// One guest RAM region as SET_MEM_TABLE describes it.
#[derive(Debug, Clone, Copy)]
pub struct MemRegion {
    /// Guest physical address.
    pub gpa: u64,
    /// Length in bytes.
    pub size: u64,
    /// Where the VMM has it mapped.
    pub host_addr: u64,
    /// Its offset in `fd`.
    pub offset: u64,
    /// The memfd backing it.
    pub fd: RawFd,
}

/// The host addresses of one vring.
#[derive(Debug, Clone, Copy)]
pub struct VringAddrs {
    /// Descriptor table.
    pub desc: u64,
    /// Used ring.
    pub used: u64,
    /// Available ring.
    pub avail: u64,
}

/// A connected vhost-user backend.
pub struct Frontend {
    sock: UnixStream,
    features: u64,
    protocol: u64,
}

impl Frontend {
    /// Connects to `path` and does the connect-time requests.
    pub fn connect(path: &Path) -> Result<Self, VhostUserError> {
        let sock = UnixStream::connect(path)
            .map_err(|e| VhostUserError::Connect(path.display().to_string(), e))?;
        // A backend that stops answering must not hang a vCPU thread forever.
        let t = Some(Duration::from_secs(10));
        sock.set_read_timeout(t)
            .and_then(|()| sock.set_write_timeout(t))
            .map_err(|e| VhostUserError::Connect(path.display().to_string(), e))?;
        let mut f = Self {
            sock,
            features: 0,
            protocol: 0,
        };
        f.request(Req::SetOwner, &[], &[], false)?;
        f.features = f.get_u64(Req::GetFeatures)?;
        if f.features & F_PROTOCOL_FEATURES != 0 {
            let offered = f.get_u64(Req::GetProtocolFeatures)?;
            let want = offered & (PROTOCOL_F_MQ | PROTOCOL_F_REPLY_ACK);
            f.request(Req::SetProtocolFeatures, &want.to_le_bytes(), &[], false)?;
            f.protocol = want;
        }
        Ok(f)
    }

    /// The virtio features the backend offers (with F_PROTOCOL_FEATURES as given).
    pub fn features(&self) -> u64 {
        self.features
    }

    /// SET_FEATURES: the driver's features (F_PROTOCOL_FEATURES is added when offered).
    pub fn set_features(&mut self, driver: u64) -> Result<(), VhostUserError> {
        let f = driver | (self.features & F_PROTOCOL_FEATURES);
        self.request(Req::SetFeatures, &f.to_le_bytes(), &[], true)
    }

    /// SET_MEM_TABLE.
    pub fn set_mem_table(&mut self, regions: &[MemRegion]) -> Result<(), VhostUserError> {
        if regions.is_empty() || regions.len() > MAX_REGIONS {
            return Err(VhostUserError::Missing("this many memory regions"));
        }
        let mut p = Vec::with_capacity(8 + 32 * regions.len());
        p.extend_from_slice(&(regions.len() as u32).to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        for r in regions {
            for v in [r.gpa, r.size, r.host_addr, r.offset] {
                p.extend_from_slice(&v.to_le_bytes());
            }
        }
        let fds: Vec<RawFd> = regions.iter().map(|r| r.fd).collect();
        self.request(Req::SetMemTable, &p, &fds, true)
    }

    /// Sets up and starts vring `index`: size, addresses, base 0, call and kick fds.
    pub fn start_vring(
        &mut self,
        index: u32,
        size: u16,
        addrs: VringAddrs,
        kick: &impl AsRawFd,
        call: &impl AsRawFd,
    ) -> Result<(), VhostUserError> {
        self.request(Req::SetVringNum, &state(index, u32::from(size)), &[], true)?;
        let mut a = Vec::with_capacity(40);
        a.extend_from_slice(&index.to_le_bytes());
        a.extend_from_slice(&0u32.to_le_bytes());
        for v in [addrs.desc, addrs.used, addrs.avail, 0] {
            a.extend_from_slice(&v.to_le_bytes());
        }
        self.request(Req::SetVringAddr, &a, &[], true)?;
        self.request(Req::SetVringBase, &state(index, 0), &[], true)?;
        let idx = u64::from(index).to_le_bytes();
        self.request(Req::SetVringCall, &idx, &[call.as_raw_fd()], true)?;
        self.request(Req::SetVringKick, &idx, &[kick.as_raw_fd()], true)?;
        if self.features & F_PROTOCOL_FEATURES != 0 {
            self.request(Req::SetVringEnable, &state(index, 1), &[], true)?;
        }
        Ok(())
    }

    /// GET_VRING_BASE: stops vring `index`; returns its next available index.
    pub fn stop_vring(&mut self, index: u32) -> Result<u32, VhostUserError> {
        let reply = self.call(Req::GetVringBase, &state(index, 0))?;
        let b: [u8; 8] = reply
            .as_slice()
            .try_into()
            .map_err(|_| VhostUserError::BadReply("GET_VRING_BASE"))?;
        Ok(u32::from_le_bytes([b[4], b[5], b[6], b[7]]))
    }

    fn get_u64(&mut self, req: Req) -> Result<u64, VhostUserError> {
        let reply = self.call(req, &[])?;
        let b: [u8; 8] = reply
            .as_slice()
            .try_into()
            .map_err(|_| VhostUserError::BadReply(req.name()))?;
        Ok(u64::from_le_bytes(b))
    }

    fn send(
        &mut self,
        req: Req,
        flags: u32,
        payload: &[u8],
        fds: &[RawFd],
    ) -> Result<(), VhostUserError> {
        let mut hdr = [0u8; 12];
        hdr[0..4].copy_from_slice(&(req as u32).to_le_bytes());
        hdr[4..8].copy_from_slice(&(VERSION | flags).to_le_bytes());
        hdr[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        let mut msg = Vec::with_capacity(12 + payload.len());
        msg.extend_from_slice(&hdr);
        msg.extend_from_slice(payload);
        if fds.is_empty() {
            self.sock
                .write_all(&msg)
                .map_err(|e| VhostUserError::Io(req.name(), e))
        } else {
            let n = self
                .sock
                .send_with_fds(&[msg.as_slice()], fds)
                .map_err(|e| {
                    VhostUserError::Io(req.name(), std::io::Error::from_raw_os_error(e.errno()))
                })?;
            if n == msg.len() {
                Ok(())
            } else {
                self.sock
                    .write_all(&msg[n..])
                    .map_err(|e| VhostUserError::Io(req.name(), e))
            }
        }
    }

    fn recv_reply(&mut self, req: Req) -> Result<Vec<u8>, VhostUserError> {
        let mut hdr = [0u8; 12];
        self.sock
            .read_exact(&mut hdr)
            .map_err(|e| VhostUserError::Io(req.name(), e))?;
        let code = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let flags = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        let size = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
        if code != req as u32 || flags & FLAG_REPLY == 0 || size > 4096 {
            return Err(VhostUserError::BadReply(req.name()));
        }
        let mut body = vec![0u8; size as usize];
        self.sock
            .read_exact(&mut body)
            .map_err(|e| VhostUserError::Io(req.name(), e))?;
        Ok(body)
    }

    /// A request whose reply carries data.
    fn call(&mut self, req: Req, payload: &[u8]) -> Result<Vec<u8>, VhostUserError> {
        self.send(req, 0, payload, &[])?;
        self.recv_reply(req)
    }

    /// A request without data in its reply; with REPLY_ACK (and `ack`), waits for
    /// the backend's status.
    fn request(
        &mut self,
        req: Req,
        payload: &[u8],
        fds: &[RawFd],
        ack: bool,
    ) -> Result<(), VhostUserError> {
        let want_ack = ack && self.protocol & PROTOCOL_F_REPLY_ACK != 0;
        self.send(
            req,
            if want_ack { FLAG_NEED_REPLY } else { 0 },
            payload,
            fds,
        )?;
        if want_ack {
            let body = self.recv_reply(req)?;
            let b: [u8; 8] = body
                .as_slice()
                .try_into()
                .map_err(|_| VhostUserError::BadReply(req.name()))?;
            let status = u64::from_le_bytes(b);
            if status != 0 {
                return Err(VhostUserError::Refused(req.name(), status));
            }
        }
        Ok(())
    }
}

fn state(index: u32, num: u32) -> [u8; 8] {
    let mut s = [0u8; 8];
    s[0..4].copy_from_slice(&index.to_le_bytes());
    s[4..8].copy_from_slice(&num.to_le_bytes());
    s
}

#[cfg(test)]
mod tests {
    //! Talks to a real virtiofsd (skipped without one, or when not root): FUSE_INIT
    //! over a virtqueue this test lays out in a memfd.
    use super::*;
    use std::os::unix::fs::FileExt;
    use vmm_sys_util::eventfd::EventFd;

    fn daemon(dir: &Path) -> Option<crate::virtiofsd::Virtiofsd> {
        // SAFETY: geteuid has no preconditions.
        if crate::virtiofsd::find().is_err() || unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root and virtiofsd");
            return None;
        }
        let fs = oslet_config::SharedFsPlan {
            path: dir.to_path_buf(),
            tag: "t".into(),
            socket: None,
            cache: oslet_config::FsCache::Never,
        };
        let sock = dir.with_extension("sock");
        Some(crate::virtiofsd::Virtiofsd::start(&fs, &sock).unwrap())
    }

    #[test]
    fn fuse_init_round_trips_through_virtiofsd() {
        let tmp = tempfile::tempdir().unwrap();
        let share = tmp.path().join("share");
        std::fs::create_dir(&share).unwrap();
        let Some(d) = daemon(&share) else { return };
        let mut f = Frontend::connect(d.socket()).unwrap();
        assert_ne!(f.features() & (1 << 32), 0, "VERSION_1");
        const SIZE: u64 = 1 << 20;
        let mem = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp.path().join("mem"))
            .unwrap();
        mem.set_len(SIZE).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh shared mapping of a file we own; unmapped at the end.
        let host = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SIZE as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                mem.as_raw_fd(),
                0,
            )
        };
        assert_ne!(host, libc::MAP_FAILED);
        let base = host as u64;
        f.set_features(1 << 32).unwrap();
        f.set_mem_table(&[MemRegion {
            gpa: 0,
            size: SIZE,
            host_addr: base,
            offset: 0,
            fd: mem.as_raw_fd(),
        }])
        .unwrap();
        // Request at 0x10000: in header (40) + init_in (16); reply at 0x20000.
        let mut req = Vec::new();
        for v in [56u32, 26] {
            req.extend_from_slice(&v.to_le_bytes());
        }
        req.extend_from_slice(&1u64.to_le_bytes());
        req.extend_from_slice(&0u64.to_le_bytes());
        req.extend_from_slice(&[0u8; 16]);
        for v in [7u32, 31, 0, 0] {
            req.extend_from_slice(&v.to_le_bytes());
        }
        mem.write_all_at(&req, 0x10000).unwrap();
        let mut desc = Vec::new();
        for (addr, len, flags, next) in [(0x10000u64, 56u32, 1u16, 1u16), (0x20000, 4096, 2, 0)] {
            desc.extend_from_slice(&addr.to_le_bytes());
            desc.extend_from_slice(&len.to_le_bytes());
            desc.extend_from_slice(&flags.to_le_bytes());
            desc.extend_from_slice(&next.to_le_bytes());
        }
        mem.write_all_at(&desc, 0x1000).unwrap();
        // avail: flags 0, idx 1, ring[0] = 0.
        mem.write_all_at(&[0, 0, 1, 0, 0, 0], 0x2000).unwrap();
        let kick = EventFd::new(0).unwrap();
        let call = EventFd::new(0).unwrap();
        let addrs = VringAddrs {
            desc: base + 0x1000,
            avail: base + 0x2000,
            used: base + 0x3000,
        };
        f.start_vring(1, 16, addrs, &kick, &call).unwrap();
        kick.write(1).unwrap();
        let mut used = [0u8; 12];
        for _ in 0..500 {
            mem.read_exact_at(&mut used, 0x3000).unwrap();
            if used[2] == 1 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(u16::from_le_bytes([used[2], used[3]]), 1, "used idx");
        let mut out = [0u8; 24];
        mem.read_exact_at(&mut out, 0x20000).unwrap();
        assert_eq!(
            i32::from_le_bytes([out[4], out[5], out[6], out[7]]),
            0,
            "FUSE error"
        );
        assert_eq!(
            u32::from_le_bytes([out[16], out[17], out[18], out[19]]),
            7,
            "major"
        );
        assert_eq!(f.stop_vring(1).unwrap(), 1);
        // SAFETY: unmaps the mapping made above; nothing uses it any more.
        unsafe { libc::munmap(host, SIZE as usize) };
    }
}
