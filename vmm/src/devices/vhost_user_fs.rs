//! The virtio-fs device (id 26) of `[shared_fs]`: a [`VirtioMmio`] transport whose
//! queues are run by a vhost-user backend (virtiofsd). The VMM only handles the
//! register accesses; the data path is guest → ioeventfd (QueueNotify, one per
//! queue, datamatch on the index) → virtiofsd → irqfd (GSI [`FS_GSI`]) → guest, with
//! no VMM thread in between.
//!
//! Placement: [`FS_MMIO_BASE`] is just above the link windows (`link::WINDOW_END`)
//! and below the doorbells, outside e820 RAM. The guest finds it as
//! `virtio_mmio.device=4K@0xfe000000:21` on its command line.
//!
//! When the backend fails (a refused request, the daemon exits, or a backend the
//! VMM did not start closes the socket), the device sets DEVICE_NEEDS_RESET and
//! raises a config-change interrupt; the guest sees I/O errors. The VMM goes on.
//!
//! The VMM does not look at the descriptors a guest offers: they go from the
//! guest to virtiofsd through the ioeventfd, with no VMM thread in between, and a
//! check made before the kick could not hold anyway (the guest can rewrite a
//! descriptor after it was checked). virtiofsd checks every descriptor against
//! the memory table it was given, which is this OSlet's RAM only: a forged
//! descriptor makes it fail or exit (tests/shared_fs.rs lists what it does with
//! each kind), and since every OSlet has its own virtiofsd, only the forging
//! OSlet loses its shared filesystem.

use std::sync::Mutex;

use kvm_ioctls::{IoEventAddress, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::vhost_user::{Frontend, MemRegion, VhostUserError, VringAddrs, F_PROTOCOL_FEATURES};
use super::virtio_mmio::{self, MmioAction, VirtioMmio};
use crate::log::RateLimiter;

/// Guest physical address of the device's register window.
pub const FS_MMIO_BASE: u64 = crate::link::WINDOW_END;
/// The IOAPIC pin of its interrupt (links use 5..=20, COM1 4).
pub const FS_GSI: u32 = 21;
/// virtio device id of a filesystem.
pub const DEVICE_ID_FS: u32 = 26;
/// Queues: hiprio (0) and one request queue (1).
pub const NUM_QUEUES: usize = 2;
/// Largest queue size offered.
pub const QUEUE_SIZE_MAX: u16 = 1024;
/// Features passed through from the backend besides VERSION_1: indirect
/// descriptors and event index (the backend runs the rings).
const PASSTHROUGH_FEATURES: u64 = (1 << 28) | (1 << 29) | virtio_mmio::F_VERSION_1;

/// Errors setting up the device.
#[derive(Debug, thiserror::Error)]
pub enum FsDeviceError {
    /// The backend could not be reached or refused the connection.
    #[error("vhost-user-fs backend")]
    Backend(#[from] VhostUserError),
    /// Guest RAM is not memfd-backed.
    #[error("guest RAM is not memfd-backed, which vhost-user needs")]
    NotShared,
    /// An eventfd or KVM registration failed.
    #[error("cannot {0}")]
    Os(&'static str, #[source] std::io::Error),
}

struct Inner {
    mmio: VirtioMmio,
    frontend: Option<Frontend>,
    started: Vec<u32>,
}

/// The virtio-fs device, shared by the vCPU threads.
pub struct VhostUserFs {
    inner: Mutex<Inner>,
    regions: Vec<MemRegion>,
    irq: EventFd,
    _kicks: Vec<EventFd>,
    log: RateLimiter,
}

/// The virtio-fs config space: tag[36] (NUL-padded) then num_request_queues (u32 LE).
pub fn fs_config(tag: &str) -> Vec<u8> {
    let mut c = vec![0u8; 40];
    let t = tag.as_bytes();
    let n = t.len().min(36);
    c[..n].copy_from_slice(&t[..n]);
    c[36..40].copy_from_slice(&((NUM_QUEUES as u32) - 1).to_le_bytes());
    c
}

/// The Linux command-line word that describes the device.
pub fn cmdline_word() -> String {
    format!("virtio_mmio.device=4K@{FS_MMIO_BASE:#x}:{FS_GSI}")
}

impl VhostUserFs {
    /// Connects to the backend at `socket` and wires the device into `vm`.
    pub fn new(
        vm: &VmFd,
        mem: &GuestMemoryMmap,
        socket: &std::path::Path,
        tag: &str,
    ) -> Result<Self, FsDeviceError> {
        let mut regions = Vec::new();
        let mut ram = Vec::new();
        for r in mem.iter() {
            let fo = r.file_offset().ok_or(FsDeviceError::NotShared)?;
            use std::os::fd::AsRawFd;
            regions.push(MemRegion {
                gpa: r.start_addr().0,
                size: r.len(),
                host_addr: r.as_ptr() as u64,
                offset: fo.start(),
                fd: fo.file().as_raw_fd(),
            });
            ram.push((r.start_addr().0, r.len()));
        }
        let frontend = Frontend::connect(socket)?;
        let features = frontend.features() & !F_PROTOCOL_FEATURES & PASSTHROUGH_FEATURES;
        let irq = EventFd::new(libc::EFD_NONBLOCK)
            .map_err(|e| FsDeviceError::Os("create an eventfd", e))?;
        vm.register_irqfd(&irq, FS_GSI)
            .map_err(|e| FsDeviceError::Os("register the virtio-fs irqfd", e.into()))?;
        let mut kicks = Vec::with_capacity(NUM_QUEUES);
        for q in 0..NUM_QUEUES {
            let k = EventFd::new(libc::EFD_NONBLOCK)
                .map_err(|e| FsDeviceError::Os("create an eventfd", e))?;
            vm.register_ioevent(
                &k,
                &IoEventAddress::Mmio(FS_MMIO_BASE + virtio_mmio::QUEUE_NOTIFY),
                q as u32,
            )
            .map_err(|e| FsDeviceError::Os("register the virtio-fs ioeventfd", e.into()))?;
            kicks.push(k);
        }
        Ok(Self {
            inner: Mutex::new(Inner {
                mmio: VirtioMmio::new(
                    DEVICE_ID_FS,
                    features,
                    &[QUEUE_SIZE_MAX; NUM_QUEUES],
                    fs_config(tag),
                    ram,
                ),
                frontend: Some(frontend),
                started: Vec::new(),
            }),
            regions,
            irq,
            _kicks: kicks,
            log: RateLimiter::new(5),
        })
    }

    /// Whether `addr` is in the device's register window.
    pub fn contains(addr: u64) -> bool {
        (FS_MMIO_BASE..FS_MMIO_BASE + virtio_mmio::MMIO_LEN).contains(&addr)
    }

    /// A guest read at `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        lock(&self.inner).mmio.read(addr - FS_MMIO_BASE, data);
    }

    /// A guest write at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) {
        let mut inner = lock(&self.inner);
        match inner.mmio.write(addr - FS_MMIO_BASE, data) {
            MmioAction::None => {}
            MmioAction::Ignored(why) => self.log.warn(format_args!("virtio-fs: {why}; ignored")),
            MmioAction::Activate => match self.activate(&mut inner) {
                // One line per activation (rate-limited: the guest can reset and
                // re-activate at will). A guest sets DRIVER_OK once its driver has
                // set the device up (Linux: virtio_fs_probe), so this is the host's
                // record of that probe; Linux prints nothing when it succeeds.
                Ok(()) => self.log.info(format_args!(
                    "virtio-fs: the guest driver set DRIVER_OK (features {:#x}); queues {:?} handed to virtiofsd",
                    inner.mmio.driver_features(),
                    inner.started
                )),
                Err(e) => {
                    self.log.warn(format_args!(
                        "virtio-fs: cannot start the device: {}",
                        crate::cli::error_chain(&e)
                    ));
                    inner.frontend = None;
                    inner.mmio.set_needs_reset();
                    let _ = self.irq.write(1);
                }
            },
            MmioAction::Reset => {
                let started = std::mem::take(&mut inner.started);
                if let Some(f) = inner.frontend.as_mut() {
                    for q in started {
                        if let Err(e) = f.stop_vring(q) {
                            self.log.warn(format_args!(
                                "virtio-fs: cannot stop queue {q}: {}",
                                crate::cli::error_chain(&e)
                            ));
                            inner.frontend = None;
                            break;
                        }
                    }
                }
            }
        }
    }

    fn activate(&self, inner: &mut Inner) -> Result<(), VhostUserError> {
        let Inner {
            mmio,
            frontend,
            started,
        } = inner;
        let f = frontend
            .as_mut()
            .ok_or(VhostUserError::Missing("a connection (it failed before)"))?;
        f.set_features(mmio.driver_features())?;
        f.set_mem_table(&self.regions)?;
        for (i, q) in mmio.queues().iter().enumerate() {
            if !q.ready {
                continue;
            }
            let addrs = VringAddrs {
                desc: self.host_addr(q.desc)?,
                used: self.host_addr(q.device)?,
                avail: self.host_addr(q.driver)?,
            };
            f.start_vring(i as u32, q.size, addrs, &self._kicks[i], &self.irq)?;
            started.push(i as u32);
        }
        Ok(())
    }

    fn host_addr(&self, gpa: u64) -> Result<u64, VhostUserError> {
        self.regions
            .iter()
            .find(|r| gpa >= r.gpa && gpa - r.gpa < r.size)
            .map(|r| r.host_addr + (gpa - r.gpa))
            .ok_or(VhostUserError::Missing("a ring inside guest RAM"))
    }

    /// The backend died: the device needs a reset, the guest gets a config interrupt.
    pub fn backend_failed(&self) {
        Self::fail(&mut lock(&self.inner), &self.irq);
    }

    /// Whether the backend has closed the connection (it exited): then the device
    /// fails as with [`Self::backend_failed`]. False once it has failed. For
    /// backends the VMM did not start, whose exit it cannot wait for.
    pub fn check_hangup(&self) -> bool {
        let mut inner = lock(&self.inner);
        if inner.frontend.as_ref().is_some_and(Frontend::hung_up) {
            Self::fail(&mut inner, &self.irq);
            return true;
        }
        false
    }

    fn fail(inner: &mut Inner, irq: &EventFd) {
        inner.frontend = None;
        inner.started.clear();
        inner.mmio.set_needs_reset();
        let _ = irq.write(1);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_space_holds_the_tag_and_one_request_queue() {
        let c = fs_config("oslet");
        assert_eq!(&c[..6], b"oslet\0");
        assert_eq!(u32::from_le_bytes([c[36], c[37], c[38], c[39]]), 1);
        assert_eq!(cmdline_word(), "virtio_mmio.device=4K@0xfe000000:21");
    }

    #[test]
    fn the_window_is_clear_of_the_links_and_the_ioapic() {
        const { assert!(FS_MMIO_BASE >= crate::link::WINDOW_END) };
        const { assert!(FS_MMIO_BASE + virtio_mmio::MMIO_LEN <= crate::link::DOORBELL_BASE) };
        assert!(VhostUserFs::contains(FS_MMIO_BASE + 0x50));
        assert!(!VhostUserFs::contains(FS_MMIO_BASE + 0x1000));
    }
}
