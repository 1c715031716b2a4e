//! Mapping a link's window (and its doorbell) into this process.
//!
//! In a Linux OSlet the window is guest-physical memory outside the guest's RAM, so it
//! is mapped from `/dev/mem` at its guest physical address (the kernel needs
//! `CONFIG_DEVMEM` and, with `CONFIG_STRICT_DEVMEM`, the window is not RAM, so it is
//! allowed). `OSLET_MSG_MEM=<file>` maps a file at offset 0 instead: the host-side
//! tests use it to run two `oslet-msg` processes over one shared file.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use oslet_interconnect::{LinkConfig, Region};

use crate::links::LinkInfo;

/// Overrides `/dev/mem` with a file mapped at offset 0 (for tests on a host).
pub const MEM_ENV: &str = "OSLET_MSG_MEM";

/// Errors mapping a window.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// The memory device or file could not be opened.
    #[error("cannot open {}", .0.display())]
    Open(PathBuf, #[source] std::io::Error),
    /// mmap failed.
    #[error("cannot map {len} bytes of {} at {offset:#x}", .path.display())]
    Map {
        /// What was mapped.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// How much.
        len: usize,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// The ring size is not a valid link geometry.
    #[error("ring of {0} bytes is not a valid link")]
    Geometry(u32),
}

struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping a mapping this struct created, once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn map(path: &PathBuf, offset: u64, len: usize) -> Result<Mapping, WindowError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| WindowError::Open(path.clone(), e))?;
    // SAFETY: a fresh shared mapping of `len` bytes of an open file; checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(WindowError::Map {
            path: path.clone(),
            offset,
            len,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(Mapping { ptr: p.cast(), len })
}

fn geometry(ring_bytes: u32) -> Result<(LinkConfig, usize), WindowError> {
    let config = LinkConfig::new(ring_bytes).map_err(|_| WindowError::Geometry(ring_bytes))?;
    Ok((config, config.window_bytes()))
}

/// A mapped link window, and its doorbell when the window came from `/dev/mem`.
pub struct Window {
    map: Mapping,
    doorbell: Option<(Mapping, usize)>,
    /// The link's geometry.
    pub config: LinkConfig,
}

impl Window {
    /// Maps `link`'s window.
    pub fn open(link: &LinkInfo) -> Result<Self, WindowError> {
        Self::open_at(link.window_gpa, link.ring_bytes, Some(link.doorbell_gpa))
    }

    /// Maps the window of `ring_bytes` rings at guest physical `gpa` (from the file
    /// named by `OSLET_MSG_MEM` at offset 0 instead, when it is set), with the
    /// doorbell at `doorbell_gpa` if the link has one.
    pub fn open_at(
        gpa: u64,
        ring_bytes: u32,
        doorbell_gpa: Option<u64>,
    ) -> Result<Self, WindowError> {
        match std::env::var_os(MEM_ENV) {
            Some(file) => Self::open_file(&PathBuf::from(file), ring_bytes),
            None => {
                let (config, len) = geometry(ring_bytes)?;
                let dev = PathBuf::from("/dev/mem");
                let doorbell = match doorbell_gpa {
                    Some(d) => {
                        let page = d & !0xfff;
                        Some((map(&dev, page, 4096)?, (d - page) as usize))
                    }
                    None => None,
                };
                Ok(Window {
                    map: map(&dev, gpa, len)?,
                    doorbell,
                    config,
                })
            }
        }
    }

    /// Maps a window of `ring_bytes` rings held in the file `path` (offset 0): how
    /// host-side tests stand in for guest memory.
    pub fn open_file(path: &PathBuf, ring_bytes: u32) -> Result<Self, WindowError> {
        let (config, len) = geometry(ring_bytes)?;
        Ok(Window {
            map: map(path, 0, len)?,
            doorbell: None,
            config,
        })
    }

    /// The window as a region for an endpoint.
    pub fn region(&self) -> Region<'_> {
        // SAFETY: the mapping lives as long as `self`, is readable and writable, and
        // this process touches it only through the interconnect crate's atomics.
        match unsafe { Region::new(self.map.ptr, self.map.len) } {
            Ok(r) => r,
            // mmap returns page-aligned, non-null pointers; Region only refuses null or
            // misaligned ones.
            Err(_) => unreachable!("mmap returned a null or misaligned pointer"),
        }
    }

    /// Rings the peer (a no-op when mapped from a file: there is no doorbell then).
    pub fn ring(&self) {
        if let Some((m, off)) = &self.doorbell {
            // SAFETY: `off` is inside the mapped doorbell page and 4-byte aligned (the
            // VMM places doorbells 8 bytes apart); a volatile store is an MMIO write.
            unsafe { (m.ptr.add(*off) as *mut u32).write_volatile(1) };
        }
    }
}
