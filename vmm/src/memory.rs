//! Guest RAM: anonymous (or hugetlb) mappings laid out around the 32-bit MMIO hole,
//! optionally bound to one host NUMA node with `mbind(2)`. With `shared`, RAM is one
//! memfd (`MFD_HUGETLB` for huge pages) mapped `MAP_SHARED`, so that a vhost-user
//! backend (virtiofsd) can map the same pages from the fd.

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
};

use crate::arch::layout::ram_ranges;

/// Errors allocating guest RAM.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The mmap of a RAM range failed.
    #[error("cannot map {size} bytes of guest RAM{hint}")]
    Map {
        /// Size of the failed range.
        size: u64,
        /// Extra advice (hugepages).
        hint: &'static str,
        /// The mmap error.
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    /// The regions could not be assembled.
    #[error("cannot assemble the guest memory map")]
    Collection(#[source] vm_memory::GuestRegionCollectionError),
    /// memfd_create or ftruncate refused.
    #[error("cannot create a {size}-byte memfd for guest RAM{hint}")]
    Memfd {
        /// Its size.
        size: u64,
        /// Extra advice (hugepages).
        hint: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// mbind(2) refused.
    #[error("cannot bind guest RAM to host NUMA node {node}")]
    Mbind {
        /// The node asked for.
        node: u32,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// How guest RAM is backed.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryOptions {
    /// Huge page size in bytes, or `None` for normal pages.
    pub hugepage_size: Option<u64>,
    /// NUMA node to bind the RAM to.
    pub numa_node: Option<u32>,
    /// Back RAM with a memfd that other processes can map (vhost-user).
    pub shared: bool,
}

fn hugetlb_flag(size: u64) -> i32 {
    // MAP_HUGE_SHIFT is 26: the page-size log2 goes in bits 26..31.
    let log2 = 63 - size.leading_zeros() as i32;
    libc::MAP_HUGETLB | (log2 << libc::MAP_HUGE_SHIFT)
}

fn mbind(addr: *mut u8, len: u64, node: u32) -> std::io::Result<()> {
    const MPOL_BIND: libc::c_long = 2;
    const MPOL_MF_STRICT: libc::c_long = 1;
    const MPOL_MF_MOVE: libc::c_long = 2;
    let mut mask = [0u64; 16];
    let word = (node / 64) as usize;
    if word >= mask.len() {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    mask[word] |= 1u64 << (node % 64);
    // SAFETY: `addr..addr+len` is a mapping this process owns (just created), the mask
    // buffer is valid for `mask.len() * 64` bits, and mbind only changes placement policy.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            addr,
            len,
            MPOL_BIND,
            mask.as_ptr(),
            (mask.len() * 64) as libc::c_ulong,
            MPOL_MF_STRICT | MPOL_MF_MOVE,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Allocates `mem_size` bytes of guest RAM.
pub fn create_guest_memory(
    mem_size: u64,
    opts: MemoryOptions,
) -> Result<GuestMemoryMmap, MemoryError> {
    let mut regions = Vec::new();
    let hint = if opts.hugepage_size.is_some() {
        " from huge pages (are enough free? see /sys/kernel/mm/hugepages)"
    } else {
        ""
    };
    let memfd = if opts.shared {
        Some(std::sync::Arc::new(
            memfd(mem_size, opts.hugepage_size).map_err(|source| MemoryError::Memfd {
                size: mem_size,
                hint,
                source,
            })?,
        ))
    } else {
        None
    };
    let mut file_offset = 0u64;
    for (start, len) in ram_ranges(mem_size) {
        let mut flags = if memfd.is_some() {
            libc::MAP_SHARED | libc::MAP_NORESERVE
        } else {
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE
        };
        if let (Some(hp), None) = (opts.hugepage_size, &memfd) {
            flags |= hugetlb_flag(hp);
        }
        let mut builder = MmapRegionBuilder::new(len as usize)
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(flags)
            .with_hugetlbfs(opts.hugepage_size.is_some());
        if let Some(f) = &memfd {
            builder = builder.with_file_offset(vm_memory::FileOffset::from_arc(
                std::sync::Arc::clone(f),
                file_offset,
            ));
        }
        file_offset += len;
        let region = builder.build().map_err(|source| MemoryError::Map {
            size: len,
            hint,
            source,
        })?;
        if let Some(node) = opts.numa_node {
            mbind(region.as_ptr(), len, node)
                .map_err(|source| MemoryError::Mbind { node, source })?;
        }
        let region = GuestRegionMmap::new(region, GuestAddress(start)).ok_or(
            MemoryError::Collection(vm_memory::GuestRegionCollectionError::NoMemoryRegion),
        )?;
        regions.push(region);
    }
    GuestMemoryMmap::from_regions(regions).map_err(MemoryError::Collection)
}

/// A memfd of `size` bytes, from huge pages of `hugepage_size` when given.
fn memfd(size: u64, hugepage_size: Option<u64>) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    let mut flags = libc::MFD_CLOEXEC;
    if let Some(hp) = hugepage_size {
        // MFD_HUGE_SHIFT equals MAP_HUGE_SHIFT (26).
        flags |= libc::MFD_HUGETLB | (hp.trailing_zeros() << libc::MAP_HUGE_SHIFT);
    }
    // SAFETY: the name is a NUL-terminated literal; the call has no other inputs.
    let fd = unsafe { libc::memfd_create(c"oslet-guest-ram".as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create just returned this fd, and nothing else owns it.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.set_len(size)?;
    Ok(file)
}

/// The (guest address, length, host address) of each RAM region, for KVM memory slots.
pub fn regions(mem: &GuestMemoryMmap) -> Vec<(u64, u64, u64)> {
    mem.iter()
        .map(|r| (r.start_addr().0, r.len(), r.get_mmap().as_ptr() as u64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn small_memory_is_one_region_and_writable() {
        let mem = create_guest_memory(4 << 20, MemoryOptions::default()).unwrap();
        assert_eq!(mem.num_regions(), 1);
        mem.write_obj(0xdead_beefu32, GuestAddress(0x3f_fffc))
            .unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x3f_fffc)).unwrap(),
            0xdead_beef
        );
        assert!(mem.write_obj(0u32, GuestAddress(4 << 20)).is_err());
    }

    #[test]
    fn shared_memory_is_one_memfd_at_consecutive_offsets() {
        let mem = create_guest_memory(
            8 << 20,
            MemoryOptions {
                shared: true,
                ..Default::default()
            },
        )
        .unwrap();
        mem.write_obj(7u32, GuestAddress(0x1000)).unwrap();
        let r = mem.iter().next().unwrap();
        let fo = r.file_offset().unwrap();
        assert_eq!(fo.start(), 0);
        let mut b = [0u8; 4];
        use std::os::unix::fs::FileExt;
        fo.file().read_exact_at(&mut b, 0x1000).unwrap();
        assert_eq!(u32::from_le_bytes(b), 7);
    }

    #[test]
    fn hugetlb_flag_encodes_page_size() {
        assert_eq!(hugetlb_flag(2 << 20) >> libc::MAP_HUGE_SHIFT, 21);
        assert_eq!(hugetlb_flag(1 << 30) >> libc::MAP_HUGE_SHIFT, 30);
    }
}
