//! struct hvm_start_info (Xen PVH, as Linux's arch/x86/platform/pvh reads it).

use crate::io::{rd32, rd64, rd8, MAPPED_LIMIT};

pub const MAGIC: u32 = 0x336e_c578;
pub const SIZE: u64 = 56;
/// memmap entry: addr u64, size u64, type u32, reserved u32.
pub const MEMMAP_ENTRY: u64 = 24;
pub const E820_RAM: u32 = 1;

#[derive(Clone, Copy, Default)]
pub struct StartInfo {
    pub paddr: u64,
    pub version: u32,
    pub nr_modules: u32,
    pub modlist: u64,
    pub cmdline: u64,
    pub rsdp: u64,
    pub memmap: u64,
    pub memmap_entries: u32,
}

fn below_limit(pa: u64, len: u64) -> bool {
    pa < MAPPED_LIMIT && len <= MAPPED_LIMIT - pa
}

impl StartInfo {
    /// None when `paddr` is 0, unmapped or lacks the magic.
    pub fn read(paddr: u64) -> Option<StartInfo> {
        if paddr == 0 || !below_limit(paddr, SIZE) || rd32(paddr) != MAGIC {
            return None;
        }
        let mut si = StartInfo {
            paddr,
            version: rd32(paddr + 4),
            nr_modules: rd32(paddr + 12),
            modlist: rd64(paddr + 16),
            cmdline: rd64(paddr + 24),
            rsdp: rd64(paddr + 32),
            memmap: 0,
            memmap_entries: 0,
        };
        // memmap fields exist from version 1 on.
        if si.version >= 1 {
            si.memmap = rd64(paddr + 40);
            si.memmap_entries = rd32(paddr + 48);
            if si.memmap == 0 || !below_limit(si.memmap, si.memmap_entries as u64 * MEMMAP_ENTRY) {
                si.memmap = 0;
                si.memmap_entries = 0;
            }
        }
        if !below_limit(si.cmdline, 1) {
            si.cmdline = 0;
        }
        if !below_limit(si.modlist, si.nr_modules as u64 * 32) {
            si.modlist = 0;
            si.nr_modules = 0;
        }
        Some(si)
    }

    /// (addr, size, type) of memmap entry `i`.
    pub fn memmap_entry(&self, i: u32) -> (u64, u64, u32) {
        let e = self.memmap + i as u64 * MEMMAP_ENTRY;
        (rd64(e), rd64(e + 8), rd32(e + 16))
    }

    /// Length of the command line including its NUL (0 when absent).
    pub fn cmdline_len(&self) -> u64 {
        if self.cmdline == 0 {
            return 0;
        }
        let mut n = 0;
        while self.cmdline + n < MAPPED_LIMIT && n < 65536 {
            if rd8(self.cmdline + n) == 0 {
                return n + 1;
            }
            n += 1;
        }
        n
    }

    /// Whether some whitespace-separated word of the command line starts
    /// with `prefix`.
    pub fn has_word_prefix(&self, prefix: &str) -> bool {
        let w = prefix.as_bytes();
        let len = self.cmdline_len();
        let mut at_start = true;
        let mut i = 0;
        while i < len {
            let b = rd8(self.cmdline + i);
            if at_start && b > b' ' {
                let mut j = 0;
                while j < w.len()
                    && i + (j as u64) < len
                    && rd8(self.cmdline + i + j as u64) == w[j]
                {
                    j += 1;
                }
                if j == w.len() {
                    return true;
                }
            }
            at_start = b <= b' ';
            i += 1;
        }
        false
    }

    /// Whether the command line contains `word` as a whole
    /// whitespace-separated word.
    pub fn has_word(&self, word: &str) -> bool {
        let w = word.as_bytes();
        let len = self.cmdline_len();
        let mut i = 0;
        while i < len {
            // at the start of a word?
            if i == 0 || rd8(self.cmdline + i - 1) <= b' ' {
                let mut j = 0;
                while j < w.len()
                    && i + (j as u64) < len
                    && rd8(self.cmdline + i + j as u64) == w[j]
                {
                    j += 1;
                }
                if j == w.len() && rd8(self.cmdline + i + j as u64) <= b' ' {
                    return true;
                }
            }
            i += 1;
        }
        false
    }
}
