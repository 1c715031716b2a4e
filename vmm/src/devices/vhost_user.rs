//! The frontend side of vhost-user, through the rust-vmm `vhost` crate
//! (`vhost::vhost_user::Frontend`, feature `vhost-user-frontend`). vhost 0.18
//! builds on vm-memory 0.18 and vmm-sys-util 0.15, the versions the VMM uses, so
//! one copy of each is built and the kick/call `EventFd`s pass straight through.
//! (vhost 0.16 pinned vm-memory =0.17.1; oslet had its own client until 0.18.)
//!
//! | request | when |
//! | --- | --- |
//! | SET_OWNER, GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES | at connect |
//! | SET_FEATURES, SET_MEM_TABLE (memfd of guest RAM), SET_VRING_NUM/ADDR/BASE/CALL/KICK/ENABLE | when the driver sets DRIVER_OK |
//! | GET_VRING_BASE | at a device reset (stops the ring) |
//!
//! What this module adds around the crate's frontend:
//! - REPLY_ACK: with it negotiated every request asks for a reply (the crate's
//!   NEED_REPLY header flag), so the backend's refusal is an error here rather
//!   than a silent hang in the guest.
//! - A watchdog: a request that waits longer than 10 s for the backend gets its
//!   socket shut down, which ends the crate's blocked read or write, and fails.
//!   A socket timeout would not do: the crate retries a read or write that fails
//!   with EAGAIN, so SO_RCVTIMEO only makes it wait again. So a backend that
//!   stops answering (or never accepted the connection) cannot hang the VMM.
//! - [`Frontend::hung_up`]: whether the backend closed the connection, for
//!   backends the VMM did not start (`[shared_fs] socket`).

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserHeaderFlag, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend as VuFrontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::EventFd;

/// How long a request may wait for the backend.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Errors talking to a vhost-user backend.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    /// The socket could not be reached.
    #[error("cannot connect to the vhost-user socket {0}{hint}", hint = connect_hint(.1))]
    Connect(String, #[source] std::io::Error),
    /// The watchdog thread could not be started.
    #[error("cannot start the vhost-user watchdog thread")]
    Thread(#[source] std::io::Error),
    /// The backend did not answer in time.
    #[error("the vhost-user backend did not answer {0} within {1:?} (does it serve another VMM?)")]
    NoAnswer(&'static str, Duration),
    /// The request failed (the backend refused it, closed the socket, or answered
    /// something malformed).
    #[error("vhost-user request {0} failed")]
    Request(&'static str, #[source] vhost::Error),
    /// The backend lacks something we need.
    #[error("vhost-user backend does not offer {0}")]
    Missing(&'static str),
}

/// What a failed connect means for the person who named the socket.
fn connect_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => " (nobody listens there: is the backend running?)",
        std::io::ErrorKind::NotFound => " (it does not exist)",
        _ => "",
    }
}

/// `VHOST_USER_F_PROTOCOL_FEATURES` (a virtio feature bit only vhost-user uses).
pub const F_PROTOCOL_FEATURES: u64 = 1 << 30;
/// At most this many memory regions in SET_MEM_TABLE.
pub const MAX_REGIONS: usize = 8;
/// Queues of a virtio-fs device (hiprio and one request queue).
const MAX_QUEUES: u64 = 2;

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

#[derive(Default)]
struct Alarm {
    /// When the request in flight times out.
    deadline: Option<Instant>,
    /// The watchdog has shut the socket down.
    fired: bool,
    /// The frontend is going away.
    stop: bool,
}

/// A thread that shuts the socket down when a request outlives its deadline. It
/// sleeps on a condition variable while no request is in flight.
struct Watchdog {
    alarm: Arc<(Mutex<Alarm>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

fn lock(m: &Mutex<Alarm>) -> MutexGuard<'_, Alarm> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Watchdog {
    /// Watches `sock` (a clone of the frontend's socket).
    fn new(sock: UnixStream) -> std::io::Result<Self> {
        let alarm = Arc::new((Mutex::new(Alarm::default()), Condvar::new()));
        let a = Arc::clone(&alarm);
        let thread = std::thread::Builder::new()
            .name("vhost-user-watchdog".into())
            .spawn(move || {
                let (m, cv) = &*a;
                let mut g = lock(m);
                while !g.stop {
                    let Some(deadline) = g.deadline else {
                        g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
                        continue;
                    };
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        let _ = sock.shutdown(std::net::Shutdown::Both);
                        g.fired = true;
                        g.deadline = None;
                    } else {
                        g = cv
                            .wait_timeout(g, left)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                }
            })?;
        Ok(Self {
            alarm,
            thread: Some(thread),
        })
    }

    fn arm(&self, timeout: Duration) {
        lock(&self.alarm.0).deadline = Some(Instant::now() + timeout);
        self.alarm.1.notify_one();
    }

    /// Ends the deadline; whether the watchdog has fired (now or before).
    fn disarm(&self) -> bool {
        let mut g = lock(&self.alarm.0);
        g.deadline = None;
        g.fired
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        lock(&self.alarm.0).stop = true;
        self.alarm.1.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connected vhost-user backend.
pub struct Frontend {
    vu: VuFrontend,
    features: u64,
    timeout: Duration,
    watchdog: Watchdog,
}

impl Frontend {
    /// Connects to `path` and does the connect-time requests; each request may
    /// wait [`TIMEOUT`] for its answer.
    pub fn connect(path: &Path) -> Result<Self, VhostUserError> {
        Self::connect_with_timeout(path, TIMEOUT)
    }

    /// [`Self::connect`] with another time limit per request.
    pub fn connect_with_timeout(path: &Path, timeout: Duration) -> Result<Self, VhostUserError> {
        let connect_err = |e| VhostUserError::Connect(path.display().to_string(), e);
        let sock = UnixStream::connect(path).map_err(connect_err)?;
        let watchdog = Watchdog::new(sock.try_clone().map_err(connect_err)?)
            .map_err(VhostUserError::Thread)?;
        let mut f = Self {
            vu: VuFrontend::from_stream(sock, MAX_QUEUES),
            features: 0,
            timeout,
            watchdog,
        };
        f.call("SET_OWNER", |vu| vu.set_owner())?;
        f.features = f.call("GET_FEATURES", |vu| vu.get_features())?;
        if f.features & F_PROTOCOL_FEATURES != 0 {
            let offered = f.call("GET_PROTOCOL_FEATURES", |vu| vu.get_protocol_features())?;
            let want =
                offered & (VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK);
            f.call("SET_PROTOCOL_FEATURES", |vu| vu.set_protocol_features(want))?;
            if want.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                f.vu.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            }
        }
        Ok(f)
    }

    /// Runs one request under the watchdog.
    fn call<T>(
        &mut self,
        name: &'static str,
        request: impl FnOnce(&mut VuFrontend) -> vhost::Result<T>,
    ) -> Result<T, VhostUserError> {
        self.watchdog.arm(self.timeout);
        let result = request(&mut self.vu);
        let fired = self.watchdog.disarm();
        result.map_err(|e| {
            if fired {
                VhostUserError::NoAnswer(name, self.timeout)
            } else {
                VhostUserError::Request(name, e)
            }
        })
    }

    /// The virtio features the backend offers (with F_PROTOCOL_FEATURES as given).
    pub fn features(&self) -> u64 {
        self.features
    }

    /// SET_FEATURES: the driver's features (F_PROTOCOL_FEATURES is added when offered).
    pub fn set_features(&mut self, driver: u64) -> Result<(), VhostUserError> {
        let f = driver | (self.features & F_PROTOCOL_FEATURES);
        self.call("SET_FEATURES", |vu| vu.set_features(f))
    }

    /// SET_MEM_TABLE.
    pub fn set_mem_table(&mut self, regions: &[MemRegion]) -> Result<(), VhostUserError> {
        if regions.is_empty() || regions.len() > MAX_REGIONS {
            return Err(VhostUserError::Missing("this many memory regions"));
        }
        let info: Vec<VhostUserMemoryRegionInfo> = regions
            .iter()
            .map(|r| VhostUserMemoryRegionInfo {
                guest_phys_addr: r.gpa,
                memory_size: r.size,
                userspace_addr: r.host_addr,
                mmap_offset: r.offset,
                mmap_handle: r.fd,
            })
            .collect();
        self.call("SET_MEM_TABLE", |vu| vu.set_mem_table(&info))
            .map(|_| ())
    }

    /// Sets up and starts vring `index`: size, addresses, base 0, call and kick fds.
    pub fn start_vring(
        &mut self,
        index: u32,
        size: u16,
        addrs: VringAddrs,
        kick: &EventFd,
        call: &EventFd,
    ) -> Result<(), VhostUserError> {
        let i = index as usize;
        self.call("SET_VRING_NUM", |vu| vu.set_vring_num(i, size))?;
        let config = VringConfigData {
            queue_max_size: size,
            queue_size: size,
            flags: 0,
            desc_table_addr: addrs.desc,
            used_ring_addr: addrs.used,
            avail_ring_addr: addrs.avail,
            log_addr: None,
        };
        self.call("SET_VRING_ADDR", |vu| vu.set_vring_addr(i, &config))?;
        self.call("SET_VRING_BASE", |vu| vu.set_vring_base(i, 0))?;
        self.call("SET_VRING_CALL", |vu| vu.set_vring_call(i, call))?;
        self.call("SET_VRING_KICK", |vu| vu.set_vring_kick(i, kick))?;
        if self.features & F_PROTOCOL_FEATURES != 0 {
            self.call("SET_VRING_ENABLE", |vu| vu.set_vring_enable(i, true))?;
        }
        Ok(())
    }

    /// GET_VRING_BASE: stops vring `index`; returns its next available index.
    pub fn stop_vring(&mut self, index: u32) -> Result<u32, VhostUserError> {
        self.call("GET_VRING_BASE", |vu| vu.get_vring_base(index as usize))
    }

    /// Whether the backend has closed its end of the connection (it exited or
    /// dropped us). Never blocks.
    pub fn hung_up(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.vu.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd and a zero timeout; poll only reads the fd's state.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
    }
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
        assert!(!f.hung_up());
        drop(d);
        let gone = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            f.hung_up()
        });
        assert!(gone, "the killed daemon's socket reads as hung up");
        // SAFETY: unmaps the mapping made above; nothing uses it any more.
        unsafe { libc::munmap(host, SIZE as usize) };
    }

    #[test]
    fn a_backend_that_never_answers_fails_the_request_in_time() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("silent.sock");
        // Listening, so connect succeeds (into the backlog), but never accepting.
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let t0 = std::time::Instant::now();
        let limit = Duration::from_millis(300);
        let e = Frontend::connect_with_timeout(&path, limit)
            .err()
            .expect("no answer is an error");
        assert!(
            matches!(e, VhostUserError::NoAnswer("GET_FEATURES", l) if l == limit),
            "{e}"
        );
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(
            e.to_string()
                .contains("did not answer GET_FEATURES within 300ms"),
            "{e}"
        );
    }

    #[test]
    fn nobody_listening_is_a_connect_error() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let e = Frontend::connect(&path).err().expect("refused");
        let VhostUserError::Connect(p, io) = &e else {
            panic!("{e}")
        };
        assert_eq!(p, &path.display().to_string());
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(
            e.to_string()
                .ends_with("stale.sock (nobody listens there: is the backend running?)"),
            "{e}"
        );
    }
}
