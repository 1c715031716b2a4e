//! A window in ordinary host memory, for tests, benchmarks and fuzzing (the VMM
//! maps real windows itself).
#![allow(clippy::indexing_slicing)] // test helper: offsets are reduced modulo the word size

use std::alloc::{alloc_zeroed, dealloc, handle_alloc_error, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::layout::{LinkConfig, CONTROL_BYTES};
use crate::region::Region;

/// The byte the guard zones around a [`HostWindow`] are filled with.
pub const GUARD_BYTE: u8 = 0xA5;

/// A page-aligned, zeroed window of `config.window_bytes()` in the heap, optionally
/// with guard zones before and after it that nothing may touch.
///
/// Every access, including the hostile-peer helpers, is atomic and respects the
/// protocol's access sizes (u32 control words, u64 ring words), so threads may use
/// it concurrently without data races.
#[derive(Debug)]
pub struct HostWindow {
    base: NonNull<u8>,
    layout: Layout,
    guard: usize,
    config: LinkConfig,
}

// SAFETY: the allocation is owned by the HostWindow and only ever accessed through
// atomics, so sharing it between threads cannot race.
unsafe impl Send for HostWindow {}
// SAFETY: as for Send.
unsafe impl Sync for HostWindow {}

impl HostWindow {
    /// A zeroed window for `config`.
    pub fn new(config: LinkConfig) -> Self {
        Self::with_guard(config, 0)
    }

    /// A zeroed window for `config` with `guard` bytes (rounded up to a page) of
    /// [`GUARD_BYTE`] on each side.
    pub fn with_guard(config: LinkConfig, guard: usize) -> Self {
        let guard = guard.next_multiple_of(4096);
        let size = config.window_bytes() + 2 * guard;
        let layout = Layout::from_size_align(size, 4096).expect("a window is far below isize::MAX");
        // SAFETY: `size` is non-zero (a window is at least two sections).
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(base) = NonNull::new(raw) else {
            handle_alloc_error(layout)
        };
        let w = HostWindow {
            base,
            layout,
            guard,
            config,
        };
        for i in (0..guard)
            .chain(guard + config.window_bytes()..size)
            .step_by(8)
        {
            w.word64(i)
                .store(u64::from_ne_bytes([GUARD_BYTE; 8]), Ordering::Relaxed);
        }
        w
    }

    /// The link configuration this window was made for.
    pub fn config(&self) -> LinkConfig {
        self.config
    }

    /// The window (without the guard zones).
    pub fn region(&self) -> Region<'_> {
        // SAFETY: the window lies inside our live allocation, 4096-aligned, a multiple
        // of 8 long; it is only accessed atomically (Region docs), and the borrow of
        // `self` keeps it alive as long as the Region.
        let r = unsafe {
            Region::new(
                self.base.as_ptr().add(self.guard),
                self.config.window_bytes(),
            )
        };
        match r {
            Ok(r) => r,
            Err(_) => unreachable!("a page-aligned allocation is a valid region"),
        }
    }

    /// Whether both guard zones still hold only [`GUARD_BYTE`].
    pub fn guards_intact(&self) -> bool {
        let size = self.layout.size();
        let pattern = u64::from_ne_bytes([GUARD_BYTE; 8]);
        (0..self.guard)
            .chain(self.guard + self.config.window_bytes()..size)
            .step_by(8)
            .all(|i| self.word64(i).load(Ordering::Relaxed) == pattern)
    }

    fn word64(&self, alloc_offset: usize) -> &AtomicU64 {
        assert!(alloc_offset % 8 == 0 && alloc_offset + 8 <= self.layout.size());
        // SAFETY: checked inside the allocation and aligned; it lives as long as self.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(alloc_offset).cast()) }
    }

    fn word32(&self, alloc_offset: usize) -> &AtomicU32 {
        assert!(alloc_offset % 4 == 0 && alloc_offset + 4 <= self.layout.size());
        // SAFETY: checked inside the allocation and aligned; it lives as long as self.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(alloc_offset).cast()) }
    }

    /// Whether window offset `o` is in a ring (u64 words) rather than a control
    /// area (u32 words).
    fn is_ring(&self, o: usize) -> bool {
        o % self.config.section_bytes() as usize >= CONTROL_BYTES as usize
    }

    /// Overwrites window bytes at `offset` (clipped to the window) the way a peer
    /// would: word by word, atomically. For hostile-peer tests; endpoints never call
    /// it.
    pub fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        let len = self.config.window_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            let Some(o) = offset.checked_add(i).filter(|&o| o < len) else {
                break;
            };
            self.update_byte(o, b);
        }
    }

    fn update_byte(&self, o: usize, b: u8) {
        let a = self.guard + o;
        if !self.is_ring(o) {
            let w = self.word32(a & !3);
            let mut v = w.load(Ordering::Relaxed).to_ne_bytes();
            v[a % 4] = b;
            w.store(u32::from_ne_bytes(v), Ordering::Release);
        } else {
            let w = self.word64(a & !7);
            let mut v = w.load(Ordering::Relaxed).to_ne_bytes();
            v[a % 8] = b;
            w.store(u64::from_ne_bytes(v), Ordering::Release);
        }
    }

    /// Stores a little-endian u32 at window offset `offset` (4-aligned, in a control
    /// area), for hostile-peer tests.
    pub fn store_u32(&self, offset: usize, v: u32) {
        if offset % 4 == 0 && offset + 4 <= self.config.window_bytes() && !self.is_ring(offset) {
            self.word32(self.guard + offset)
                .store(v.to_le(), Ordering::Release);
        } else {
            self.write_bytes(offset, &v.to_le_bytes());
        }
    }

    /// Stores a little-endian u64 at window offset `offset` (8-aligned, in a ring),
    /// for hostile-peer tests.
    pub fn store_u64(&self, offset: usize, v: u64) {
        if offset % 8 == 0 && offset + 8 <= self.config.window_bytes() && self.is_ring(offset) {
            self.word64(self.guard + offset)
                .store(v.to_le(), Ordering::Release);
        } else {
            self.write_bytes(offset, &v.to_le_bytes());
        }
    }

    /// Copies window bytes at `offset` (clipped to the window) into `out`.
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        let len = self.config.window_bytes();
        let mut i = 0;
        while i < out.len() {
            let Some(o) = offset.checked_add(i).filter(|&o| o < len) else {
                break;
            };
            let a = self.guard + o;
            let (size, word) = if self.is_ring(o) {
                (8, self.word64(a & !7).load(Ordering::Acquire).to_ne_bytes())
            } else {
                let w = self.word32(a & !3).load(Ordering::Acquire).to_ne_bytes();
                (4, [w[0], w[1], w[2], w[3], 0, 0, 0, 0])
            };
            let skip = a % size;
            let take = (size - skip).min(out.len() - i);
            out[i..i + take].copy_from_slice(&word[skip..skip + take]);
            i += take;
        }
    }
}

impl Drop for HostWindow {
    fn drop(&mut self) {
        // SAFETY: allocated in `with_guard` with this layout, and no Region can
        // outlive the borrow it was made from.
        unsafe { dealloc(self.base.as_ptr(), self.layout) }
    }
}
