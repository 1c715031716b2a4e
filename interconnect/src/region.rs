//! A raw, bounds-checked view of shared memory.
//!
//! A window is memory the peer writes while we read it, so no Rust reference to
//! its bytes ever exists (`&[u8]` over it would be undefined behaviour). Every
//! access goes through an aligned atomic load or store made here, after a bounds
//! check against the region's own length:
//!
//! * control words are 32-bit atomics, ring data is 64-bit atomics, and no
//!   location is ever accessed with both sizes;
//! * loads are `Relaxed` (the callers add `fence(Acquire)` where they need
//!   ordering), because the Rust memory model only promises that *relaxed* atomic
//!   loads of up to the native word size work on read-only mappings — and the peer's
//!   section is mapped read-only into us;
//! * stores are only offered crate-internally and are only used on our own section.
//!
//! Values are little-endian in memory whatever the host's byte order; message bytes
//! are copied in memory order.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A region whose bounds were violated: a bug in this crate (every offset is
/// validated before it gets here), reported as a protocol failure rather than a
/// panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfBounds;

/// Why a pointer/length pair cannot be a [`Region`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionError {
    /// The pointer is null.
    Null,
    /// The pointer is not 8-byte aligned.
    Misaligned,
    /// The length is not a multiple of 8, or the region would wrap the address space.
    BadLength,
}

impl core::fmt::Display for RegionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RegionError::Null => "region pointer is null",
            RegionError::Misaligned => "region pointer is not 8-byte aligned",
            RegionError::BadLength => "region length is not a multiple of 8 or wraps",
        })
    }
}

/// A span of shared memory: a raw pointer and a length, never a reference.
#[derive(Clone, Copy, Debug)]
pub struct Region<'a> {
    ptr: NonNull<u8>,
    len: usize,
    _memory: PhantomData<&'a AtomicU64>,
}

// SAFETY: a Region is a pointer to memory that is shared by contract (`Region::new`)
// and every access through it is atomic, so using it from several threads at once
// is no different from sharing a `&[AtomicU64]`.
unsafe impl Send for Region<'_> {}
// SAFETY: as for Send: all accesses are atomic.
unsafe impl Sync for Region<'_> {}

impl<'a> Region<'a> {
    /// Describes `len` bytes at `ptr`.
    ///
    /// # Safety
    /// For the whole lifetime `'a`:
    /// * `ptr..ptr+len` is mapped and readable;
    /// * the parts this crate writes (an [`crate::Endpoint`] writes only its own
    ///   section) are writable;
    /// * the memory may be modified concurrently by another party (a peer guest, the
    ///   VMM, another thread), but inside this process only through aligned atomic
    ///   accesses of the sizes listed in the module docs, never through Rust
    ///   references or non-atomic accesses.
    pub unsafe fn new(ptr: *mut u8, len: usize) -> Result<Self, RegionError> {
        let ptr = NonNull::new(ptr).ok_or(RegionError::Null)?;
        if ptr.as_ptr() as usize % 8 != 0 {
            return Err(RegionError::Misaligned);
        }
        if len % 8 != 0 || (ptr.as_ptr() as usize).checked_add(len).is_none() {
            return Err(RegionError::BadLength);
        }
        Ok(Region {
            ptr,
            len,
            _memory: PhantomData,
        })
    }

    /// Length in bytes.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the region has no bytes.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start address (for the VMM's bookkeeping; do not build references from it).
    pub const fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The sub-span `offset..offset+len`, both multiples of 8.
    pub fn sub(&self, offset: usize, len: usize) -> Option<Region<'a>> {
        if offset % 8 != 0 || len % 8 != 0 || offset.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: offset + len <= self.len, so the result stays inside this region.
        let ptr = unsafe { self.ptr.add(offset) };
        Some(Region {
            ptr,
            len,
            _memory: PhantomData,
        })
    }

    /// Checks that `len` bytes at `offset` are inside the region.
    #[inline(always)]
    fn check_range(&self, offset: usize, len: usize) -> Result<(), OutOfBounds> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(OutOfBounds),
        }
    }

    /// Checks that a `size`-byte word at `offset` is inside the region and aligned
    /// to its size, and returns its address.
    #[inline(always)]
    fn word(&self, offset: usize, size: usize) -> Result<*mut u8, OutOfBounds> {
        self.check_range(offset, size)?;
        if offset % size != 0 {
            return Err(OutOfBounds);
        }
        // SAFETY: offset + size <= len, so the address is inside the region (see `new`).
        Ok(unsafe { self.ptr.as_ptr().add(offset) })
    }

    #[inline(always)]
    fn u32_at(&self, offset: usize) -> Result<&AtomicU32, OutOfBounds> {
        let p = self.word(offset, 4)?;
        // SAFETY: `check` put p inside the region and 4-aligned; the region's contract
        // makes it valid for 'a and accessed only atomically at this size. We only
        // ever *load* through it unless it is our own (writable) section, and relaxed
        // loads of this size are allowed on read-only memory (std::sync::atomic docs,
        // "Atomic accesses to read-only memory").
        Ok(unsafe { AtomicU32::from_ptr(p.cast()) })
    }

    #[inline(always)]
    fn u64_at(&self, offset: usize) -> Result<&AtomicU64, OutOfBounds> {
        let p = self.word(offset, 8)?;
        // SAFETY: as in `u32_at`, for an 8-aligned 64-bit word.
        Ok(unsafe { AtomicU64::from_ptr(p.cast()) })
    }

    /// The `n` 64-bit words starting at `offset` (8-aligned), as atomics.
    #[inline(always)]
    fn words(&self, offset: usize, n: usize) -> Result<&[AtomicU64], OutOfBounds> {
        let bytes = n.checked_mul(8).ok_or(OutOfBounds)?;
        self.check_range(offset, bytes)?;
        if offset % 8 != 0 {
            return Err(OutOfBounds);
        }
        // SAFETY: the n words lie inside the region (checked just above) and are
        // 8-aligned (`new` checked the base, we checked the offset). A slice of
        // atomics is a shared reference to interior-mutable cells, exactly what
        // `u64_at` hands out one word at a time; the same access-size and read-only
        // rules apply (relaxed loads only, except on our own section).
        Ok(unsafe {
            core::slice::from_raw_parts(self.ptr.as_ptr().add(offset).cast::<AtomicU64>(), n)
        })
    }

    /// A relaxed load of the little-endian u32 at `offset`.
    #[inline]
    pub fn load_u32(&self, offset: usize) -> Result<u32, OutOfBounds> {
        Ok(u32::from_le(self.u32_at(offset)?.load(Ordering::Relaxed)))
    }

    /// A relaxed load of the little-endian u64 at `offset`.
    #[inline]
    pub fn load_u64(&self, offset: usize) -> Result<u64, OutOfBounds> {
        Ok(u64::from_le(self.u64_at(offset)?.load(Ordering::Relaxed)))
    }

    /// Stores a little-endian u32 at `offset` (own section only).
    #[inline]
    pub(crate) fn store_u32(
        &self,
        offset: usize,
        v: u32,
        order: Ordering,
    ) -> Result<(), OutOfBounds> {
        self.u32_at(offset)?.store(v.to_le(), order);
        Ok(())
    }

    /// Stores a little-endian u64 at `offset` (own section only).
    #[inline]
    pub(crate) fn store_u64(
        &self,
        offset: usize,
        v: u64,
        order: Ordering,
    ) -> Result<(), OutOfBounds> {
        self.u64_at(offset)?.store(v.to_le(), order);
        Ok(())
    }

    /// Copies `dst.len()` bytes starting at byte `offset` (any alignment) out of the
    /// region's 64-bit data words (ring data only: control words are 32-bit).
    /// The bytes may be changing under us: the caller gets *a* value for each byte,
    /// and nothing outside the range is touched.
    pub fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<(), OutOfBounds> {
        if dst.is_empty() {
            return Ok(());
        }
        let first = offset & !7;
        let end = offset.checked_add(dst.len()).ok_or(OutOfBounds)?;
        self.check_range(first, end.next_multiple_of(8) - first)?;
        let mut word_off = first;
        let mut dst = dst;
        let skip = offset - first;
        if skip != 0 {
            let take = (8 - skip).min(dst.len());
            let (head, rest) = dst.split_at_mut_checked(take).ok_or(OutOfBounds)?;
            let w = self.u64_at(word_off)?.load(Ordering::Relaxed).to_ne_bytes();
            head.copy_from_slice(w.get(skip..skip + take).ok_or(OutOfBounds)?);
            dst = rest;
            word_off += 8;
        }
        let mut chunks = dst.chunks_exact_mut(8);
        let n = chunks.len();
        for (c, w) in (&mut chunks).zip(self.words(word_off, n)?) {
            c.copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
        }
        word_off += 8 * n;
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let w = self.u64_at(word_off)?.load(Ordering::Relaxed).to_ne_bytes();
            tail.copy_from_slice(w.get(..tail.len()).ok_or(OutOfBounds)?);
        }
        Ok(())
    }

    /// Copies `src` into the region at byte `offset`, which must be 8-aligned,
    /// writing whole words: the bytes after `src` up to the next 8-byte boundary
    /// become zero (own section only).
    pub(crate) fn write_words(&self, offset: usize, src: &[u8]) -> Result<(), OutOfBounds> {
        if offset % 8 != 0 {
            return Err(OutOfBounds);
        }
        self.check_range(offset, src.len().next_multiple_of(8))?;
        let mut chunks = src.chunks_exact(8);
        let n = chunks.len();
        for (c, w) in (&mut chunks).zip(self.words(offset, n)?) {
            let mut v = [0u8; 8];
            v.copy_from_slice(c);
            w.store(u64::from_ne_bytes(v), Ordering::Relaxed);
        }
        let word_off = offset + 8 * n;
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w.get_mut(..rest.len())
                .ok_or(OutOfBounds)?
                .copy_from_slice(rest);
            self.u64_at(word_off)?
                .store(u64::from_ne_bytes(w), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Copies `src` into the region at byte `offset` (any alignment), merging
    /// partial words with their current contents (own section only, and only where
    /// no one else writes concurrently).
    pub(crate) fn write_bytes(&self, offset: usize, src: &[u8]) -> Result<(), OutOfBounds> {
        if src.is_empty() {
            return Ok(());
        }
        let first = offset & !7;
        let end = offset.checked_add(src.len()).ok_or(OutOfBounds)?;
        self.check_range(first, end.next_multiple_of(8) - first)?;
        let mut src = src;
        let mut word_off = first;
        let skip = offset - first;
        if skip != 0 {
            let take = (8 - skip).min(src.len());
            let (head, rest) = src.split_at_checked(take).ok_or(OutOfBounds)?;
            self.merge_word(word_off, skip, head)?;
            src = rest;
            word_off += 8;
        }
        let mut chunks = src.chunks_exact(8);
        let n = chunks.len();
        for (c, w) in (&mut chunks).zip(self.words(word_off, n)?) {
            let mut v = [0u8; 8];
            v.copy_from_slice(c);
            w.store(u64::from_ne_bytes(v), Ordering::Relaxed);
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            self.merge_word(word_off + 8 * n, 0, tail)?;
        }
        Ok(())
    }

    /// Replaces `part.len()` bytes at byte `skip` of the word at `word_off`.
    fn merge_word(&self, word_off: usize, skip: usize, part: &[u8]) -> Result<(), OutOfBounds> {
        let cell = self.u64_at(word_off)?;
        let mut w = cell.load(Ordering::Relaxed).to_ne_bytes();
        w.get_mut(skip..skip + part.len())
            .ok_or(OutOfBounds)?
            .copy_from_slice(part);
        cell.store(u64::from_ne_bytes(w), Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicU64;

    fn with_region<R>(words: usize, f: impl FnOnce(Region<'_>) -> R) -> R {
        let mem: std::vec::Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
        // SAFETY: `mem` outlives the region; it is only accessed through it, atomically.
        let r = unsafe { Region::new(mem.as_ptr() as *mut u8, words * 8) }.unwrap();
        f(r)
    }

    #[test]
    fn region_refuses_null_misaligned_and_odd_lengths() {
        // SAFETY: every call below fails its checks before anything is accessed.
        unsafe {
            assert_eq!(
                Region::new(core::ptr::null_mut(), 8).unwrap_err(),
                RegionError::Null
            );
            assert_eq!(
                Region::new(4 as *mut u8, 8).unwrap_err(),
                RegionError::Misaligned
            );
            assert_eq!(
                Region::new(8 as *mut u8, 7).unwrap_err(),
                RegionError::BadLength
            );
            assert_eq!(
                Region::new((usize::MAX & !7) as *mut u8, 16).unwrap_err(),
                RegionError::BadLength
            );
        }
    }

    #[test]
    fn accesses_outside_or_misaligned_are_refused() {
        with_region(4, |r| {
            assert_eq!(r.load_u32(32), Err(OutOfBounds));
            assert_eq!(r.load_u32(30), Err(OutOfBounds));
            assert_eq!(r.load_u64(28), Err(OutOfBounds));
            assert_eq!(r.load_u64(usize::MAX - 3), Err(OutOfBounds));
            assert_eq!(r.read_bytes(30, &mut [0; 3]), Err(OutOfBounds));
            assert_eq!(r.read_bytes(usize::MAX, &mut [0; 3]), Err(OutOfBounds));
            assert_eq!(r.write_words(24, &[1; 9]), Err(OutOfBounds));
            assert_eq!(r.write_bytes(31, &[1; 2]), Err(OutOfBounds));
            assert!(r.sub(8, 32).is_none());
            assert!(r.sub(4, 8).is_none());
            assert_eq!(r.sub(8, 24).unwrap().len(), 24);
        });
    }

    #[test]
    fn byte_copies_round_trip_at_any_alignment() {
        with_region(8, |r| {
            let src: std::vec::Vec<u8> = (1..=37).collect();
            r.write_bytes(3, &src).unwrap();
            let mut back = [0u8; 37];
            r.read_bytes(3, &mut back).unwrap();
            assert_eq!(&back[..], &src[..]);
            let mut edge = [0u8; 3];
            r.read_bytes(0, &mut edge).unwrap();
            assert_eq!(edge, [0, 0, 0]);
            r.write_bytes(16, &[7; 16]).unwrap();
            r.write_words(16, &[9; 5]).unwrap();
            let mut w = [0u8; 16];
            r.read_bytes(16, &mut w).unwrap();
            assert_eq!(w, [9, 9, 9, 9, 9, 0, 0, 0, 7, 7, 7, 7, 7, 7, 7, 7]);
        });
    }

    #[test]
    fn control_words_are_little_endian_in_memory() {
        with_region(2, |r| {
            r.store_u32(4, 0x0102_0304, Ordering::Relaxed).unwrap();
            let mut b = [0u8; 4];
            r.read_bytes(4, &mut b).unwrap();
            assert_eq!(b, [4, 3, 2, 1]);
        });
    }
}
