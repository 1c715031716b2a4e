//! Physical memory bookkeeping: RAM ranges from the PVH memmap, ranges that
//! must not be touched (start info, memmap, cmdline, modules, the kernel
//! image, the BIOS/MP-table area, page 0), and a first-fit finder.

use crate::io::MAPPED_LIMIT;

const MAX_RAM: usize = 64;
const MAX_RESV: usize = 32;

pub struct Regions {
    ram: [(u64, u64); MAX_RAM],
    nram: usize,
    resv: [(u64, u64); MAX_RESV],
    nresv: usize,
}

fn align_up(v: u64, a: u64) -> u64 {
    (v + a - 1) & !(a - 1)
}

impl Regions {
    pub const fn new() -> Regions {
        Regions {
            ram: [(0, 0); MAX_RAM],
            nram: 0,
            resv: [(0, 0); MAX_RESV],
            nresv: 0,
        }
    }

    /// Add RAM [start, start+len), clipped to the mapped 0-4 GiB.
    pub fn add_ram(&mut self, start: u64, len: u64) {
        if start >= MAPPED_LIMIT || len == 0 || self.nram == MAX_RAM {
            return;
        }
        let end = start.saturating_add(len).min(MAPPED_LIMIT);
        self.ram[self.nram] = (start, end);
        self.nram += 1;
    }

    pub fn reserve(&mut self, start: u64, len: u64) {
        if len == 0 {
            return;
        }
        if self.nresv == MAX_RESV {
            // Out of slots: fold into the last one (over-reserving is safe).
            let last = &mut self.resv[MAX_RESV - 1];
            last.0 = last.0.min(start);
            last.1 = last.1.max(start.saturating_add(len));
            return;
        }
        self.resv[self.nresv] = (start, start.saturating_add(len));
        self.nresv += 1;
    }

    /// Lowest `align`-aligned address a with min <= a, a + size <= max, the
    /// whole of [a, a+size) inside one RAM range and clear of reservations.
    pub fn find(&self, min: u64, max: u64, size: u64, align: u64) -> Option<u64> {
        let mut c = align_up(min, align);
        for _ in 0..4096 {
            if c.checked_add(size)? > max {
                return None;
            }
            let mut in_ram = None;
            let mut next_ram = u64::MAX;
            for &(s, e) in &self.ram[..self.nram] {
                if s <= c && c < e {
                    in_ram = Some(e);
                } else if s > c && s < next_ram {
                    next_ram = s;
                }
            }
            match in_ram {
                None if next_ram == u64::MAX => return None,
                None => {
                    c = align_up(next_ram, align);
                    continue;
                }
                Some(e) if c + size > e => {
                    c = align_up(e, align);
                    continue;
                }
                Some(_) => {}
            }
            let mut clash = None;
            for &(s, e) in &self.resv[..self.nresv] {
                if s < c + size && c < e {
                    clash = Some(e);
                    break;
                }
            }
            match clash {
                Some(e) => c = align_up(e, align),
                None => return Some(c),
            }
        }
        None
    }
}
