//! The shared filesystem from ring 3: a virtio-fs driver (virtio-mmio, one request
//! queue, polled) and a FUSE client just big enough for the `fs-*` modes.
//!
//! The device is found from `virtio_mmio.device=4K@<addr>:<gsi>` on the command
//! line (Linux's syntax, which the VMM adds with `[shared_fs]`). Its registers are
//! MMIO, reachable from ring 3 because the identity map has U/S set everywhere.
//! Rings and buffers live in the arena (identity-mapped guest RAM). One request
//! is in flight at a time: descriptor 0 holds the request, descriptor 1 the reply.
//! Nothing from the device is trusted: the used index must advance by exactly
//! one, the used element must name descriptor 0, its length must fit the reply
//! buffer and match the reply header, and the header's `unique` must be ours.
//! While waiting, the status register is read every millisecond: DEVICE_NEEDS_RESET
//! (the VMM's backend died) is an I/O error.
//!
//! Lookups are never FORGOTten (a few inodes stay referenced in virtiofsd).

use core::sync::atomic::{fence, Ordering};

use super::args::number;
use super::{Arena, Env};
use crate::io::poweroff;
use crate::serial::{Hex, Str};

/// Entries of the request queue.
pub(super) const QSIZE: u16 = 64;
/// Descriptor flags.
pub(super) const D_NEXT: u16 = 1;
pub(super) const D_WRITE: u16 = 2;
const REQ_QUEUE: u32 = 1;
/// Largest data chunk per READ/WRITE (the device's max_write may lower it).
const MAX_CHUNK: u32 = 256 * 1024;
const BUF: usize = MAX_CHUNK as usize + 4096;

const ST_ACK: u32 = 1;
const ST_DRIVER: u32 = 2;
const ST_DRIVER_OK: u32 = 4;
const ST_FEATURES_OK: u32 = 8;
const ST_NEEDS_RESET: u32 = 0x40;

const LOOKUP: u32 = 1;
const GETATTR: u32 = 3;
const UNLINK: u32 = 10;
const OPEN: u32 = 14;
const READ: u32 = 15;
const WRITE: u32 = 16;
const RELEASE: u32 = 18;
const FSYNC: u32 = 20;
const INIT: u32 = 26;
const CREATE: u32 = 35;
pub(super) const ROOT: u64 = 1;
const ENOENT: i32 = -2;

fn rd32(pa: u64) -> u32 {
    // SAFETY: MMIO register or arena RAM, identity-mapped with U/S; aligned.
    unsafe { core::ptr::read_volatile(pa as usize as *const u32) }
}
fn wr32(pa: u64, v: u32) {
    // SAFETY: as rd32.
    unsafe { core::ptr::write_volatile(pa as usize as *mut u32, v) }
}
fn rd16(pa: u64) -> u16 {
    // SAFETY: arena RAM (the used ring), aligned.
    unsafe { core::ptr::read_volatile(pa as usize as *const u16) }
}
fn wr16(pa: u64, v: u16) {
    // SAFETY: arena RAM (the avail ring), aligned.
    unsafe { core::ptr::write_volatile(pa as usize as *mut u16, v) }
}
fn wr64(pa: u64, v: u64) {
    // SAFETY: arena RAM (the descriptor table), aligned.
    unsafe { core::ptr::write_volatile(pa as usize as *mut u64, v) }
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn le64(b: &[u8], at: usize) -> u64 {
    le32(b, at) as u64 | (le32(b, at + 4) as u64) << 32
}

/// Why a request failed.
pub(super) enum Error {
    /// The transport or device misbehaved (the message says how).
    Io(&'static str),
    /// FUSE answered with -errno.
    Fuse(i32),
}

/// The device and its one request queue.
pub struct Fs {
    base: u64,
    desc: u64,
    avail: u64,
    used: u64,
    req: &'static mut [u8],
    reply: &'static mut [u8],
    idx: u16,
    unique: u64,
    chunk: u32,
    ms: u64,
}

/// The register base from `virtio_mmio.device=<size>@<addr>:<irq>`.
fn device_addr(env: &Env) -> Option<u64> {
    let v = env.args.value(b"virtio_mmio.device")?;
    let at = v.iter().position(|&c| c == b'@')?;
    let rest = &v[at + 1..];
    let end = rest.iter().position(|&c| c == b':').unwrap_or(rest.len());
    number(&rest[..end]).filter(|&a| a % 4096 == 0 && a < crate::io::MAPPED_LIMIT)
}

fn die(what: &str, detail: &[u8]) -> ! {
    say!("fs: ", what, " ", Str(detail));
    poweroff(1)
}

impl Fs {
    fn open(env: &mut Env) -> Fs {
        let Some(base) = device_addr(env) else {
            die(
                "no virtio_mmio.device= on the command line (no [shared_fs]?)",
                b"",
            )
        };
        let ring = |arena: &mut Arena| match arena.bytes(4096) {
            Some(b) => b.as_ptr() as u64,
            None => die("no arena memory for the virtqueue", b""),
        };
        let desc = ring(&mut env.arena);
        let avail = ring(&mut env.arena);
        let used = ring(&mut env.arena);
        let (Some(req), Some(reply)) = (env.arena.bytes(BUF), env.arena.bytes(BUF)) else {
            die("no arena memory for the request buffers", b"")
        };
        let mut fs = Fs {
            base,
            desc,
            avail,
            used,
            req,
            reply,
            idx: 0,
            unique: 0,
            chunk: MAX_CHUNK,
            ms: env.clock.cycles(1),
        };
        if let Err(e) = fs.init() {
            fs.fail("init", b"", e)
        }
        fs
    }

    fn reg(&self, off: u64) -> u32 {
        rd32(self.base + off)
    }
    fn set(&self, off: u64, v: u32) {
        wr32(self.base + off, v)
    }

    fn init(&mut self) -> Result<(), Error> {
        if self.reg(0) != 0x7472_6976 || self.reg(4) != 2 || self.reg(8) != 26 {
            return Err(Error::Io("no virtio-fs device (version 2) at that address"));
        }
        self.set(0x70, 0);
        self.set(0x70, ST_ACK | ST_DRIVER);
        self.set(0x14, 1);
        if self.reg(0x10) & 1 == 0 {
            return Err(Error::Io("the device does not offer VIRTIO_F_VERSION_1"));
        }
        self.set(0x24, 0);
        self.set(0x20, 0);
        self.set(0x24, 1);
        self.set(0x20, 1);
        self.set(0x70, ST_ACK | ST_DRIVER | ST_FEATURES_OK);
        if self.reg(0x70) & ST_FEATURES_OK == 0 {
            return Err(Error::Io("the device refused our features"));
        }
        self.set(0x30, REQ_QUEUE);
        if self.reg(0x44) != 0 || self.reg(0x34) < QSIZE as u32 {
            return Err(Error::Io("request queue in use or smaller than 64"));
        }
        self.set(0x38, QSIZE as u32);
        for (off, pa) in [(0x80, self.desc), (0x90, self.avail), (0xa0, self.used)] {
            self.set(off, pa as u32);
            self.set(off + 4, (pa >> 32) as u32);
        }
        self.set(0x44, 1);
        self.set(0x70, ST_ACK | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
        if self.reg(0x70) & ST_NEEDS_RESET != 0 {
            return Err(Error::Io("the device needs a reset after DRIVER_OK"));
        }
        // FUSE_INIT 7.31, no flags.
        let n = self.header(INIT, 0, 16);
        // FUSE_SUBMOUNTS (bit 27): virtiofsd warns on its stderr without it.
        for (i, v) in [7u32, 31, 0, 1 << 27].iter().enumerate() {
            self.req[n + 4 * i..n + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        let out = self.call(n + 16)?;
        if out < 24 || le32(self.reply, 16) != 7 {
            return Err(Error::Io("FUSE_INIT reply is not FUSE 7.x"));
        }
        let max_write = le32(self.reply, 16 + 20);
        if max_write >= 4096 {
            self.chunk = MAX_CHUNK.min(max_write) & !7;
        }
        Ok(())
    }

    /// Writes a FUSE in-header for `opcode` on `node` with `body` bytes after
    /// it; returns the header's size (where the body goes).
    fn header(&mut self, opcode: u32, node: u64, body: usize) -> usize {
        self.unique += 1;
        let len = (40 + body) as u32;
        let h = &mut self.req[..40];
        h.fill(0);
        h[0..4].copy_from_slice(&len.to_le_bytes());
        h[4..8].copy_from_slice(&opcode.to_le_bytes());
        h[8..16].copy_from_slice(&self.unique.to_le_bytes());
        h[16..24].copy_from_slice(&node.to_le_bytes());
        40
    }

    /// Sends the `len`-byte request in `req`; returns the reply's length (the
    /// reply, header included, is in `reply`).
    fn call(&mut self, len: usize) -> Result<usize, Error> {
        self.call_cap(len, 4096)
    }

    /// `call` with a reply buffer of `cap` bytes. virtiofsd fills the whole buffer
    /// on READ, so a READ's buffer must be exactly header + size.
    fn call_cap(&mut self, len: usize, cap: u32) -> Result<usize, Error> {
        let cap = cap.min(self.reply.len() as u32);
        self.put_desc(0, self.req.as_ptr() as u64, len as u32, D_NEXT, 1);
        self.put_desc(1, self.reply.as_ptr() as u64, cap, D_WRITE, 0);
        let (id, n) = self.submit(0)?;
        if id != 0 || n < 16 || n > cap {
            return Err(Error::Io("bad used element (id or length)"));
        }
        let r = &*self.reply;
        if le32(r, 0) != n || le64(r, 8) != self.unique {
            return Err(Error::Io("reply header does not match the request"));
        }
        let err = le32(r, 4) as i32;
        if err != 0 {
            return Err(Error::Fuse(err));
        }
        Ok(n as usize)
    }

    /// Writes descriptor `i` of the table (`i` < QSIZE).
    pub(super) fn put_desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = self.desc + 16 * (i % QSIZE) as u64;
        wr64(d, addr);
        wr32(d + 8, len);
        wr16(d + 12, flags);
        wr16(d + 14, next);
    }

    /// Offers the chain starting at descriptor `head` (whatever its value:
    /// `fs-forge` offers bad ones), notifies the device and waits until the used
    /// index advances by one: the used element's (id, length). Every ms the
    /// status register is read; DEVICE_NEEDS_RESET or 30 s without a reply are
    /// I/O errors.
    pub(super) fn submit(&mut self, head: u16) -> Result<(u32, u32), Error> {
        wr16(self.avail + 4 + 2 * (self.idx % QSIZE) as u64, head);
        fence(Ordering::SeqCst);
        let next = self.idx.wrapping_add(1);
        wr16(self.avail + 2, next);
        fence(Ordering::SeqCst);
        self.set(0x50, REQ_QUEUE);
        let start = crate::io::rdtsc();
        let mut check = start;
        loop {
            let u = rd16(self.used + 2);
            if u == next {
                break;
            }
            if u != self.idx {
                return Err(Error::Io("the used index jumped"));
            }
            let now = crate::io::rdtsc();
            if now.wrapping_sub(check) > self.ms {
                check = now;
                if self.reg(0x70) & ST_NEEDS_RESET != 0 {
                    return Err(Error::Io("the device needs a reset (its backend failed)"));
                }
                if now.wrapping_sub(start) > 30_000 * self.ms {
                    return Err(Error::Io("no reply within 30 s"));
                }
            }
            core::hint::spin_loop();
        }
        fence(Ordering::SeqCst);
        self.idx = next;
        let elem = self.used + 4 + 8 * ((next.wrapping_sub(1)) % QSIZE) as u64;
        Ok((rd32(elem), rd32(elem + 4)))
    }

    /// Guest-physical addresses of the request and reply buffers.
    pub(super) fn buffers(&self) -> (u64, u64) {
        (self.req.as_ptr() as u64, self.reply.as_ptr() as u64)
    }

    /// Puts a GETATTR of `node` in the request buffer: its length.
    pub(super) fn getattr_request(&mut self, node: u64) -> usize {
        let n = self.header(GETATTR, node, 16);
        self.req[n..n + 16].fill(0);
        n + 16
    }

    /// The FUSE error of the reply in the reply buffer (0: none).
    pub(super) fn reply_error(&self) -> i32 {
        le32(self.reply, 4) as i32
    }

    pub(super) fn fail(&self, op: &str, name: &[u8], e: Error) -> ! {
        match e {
            Error::Io(why) => say!("fs: I/O error: ", op, " ", Str(name), ": ", why),
            Error::Fuse(errno) => say!(
                "fs: ",
                op,
                " ",
                Str(name),
                ": error ",
                (-(errno as i64)) as u64
            ),
        }
        poweroff(1)
    }

    /// A request on `node` whose body is `fixed` bytes then `name` NUL-terminated.
    fn named(&mut self, op: u32, node: u64, fixed: &[u8], name: &[u8]) -> Result<usize, Error> {
        if name.is_empty() || name.len() > 255 || name.contains(&b'/') {
            return Err(Error::Io("bad file name"));
        }
        let n = self.header(op, node, fixed.len() + name.len() + 1);
        self.req[n..n + fixed.len()].copy_from_slice(fixed);
        let m = n + fixed.len();
        self.req[m..m + name.len()].copy_from_slice(name);
        self.req[m + name.len()] = 0;
        self.call(m + name.len() + 1)
    }

    /// LOOKUP in the root: the node id.
    fn lookup(&mut self, name: &[u8]) -> Result<u64, Error> {
        let n = self.named(LOOKUP, ROOT, &[], name)?;
        if n < 16 + 128 {
            return Err(Error::Io("short LOOKUP reply"));
        }
        Ok(le64(self.reply, 16))
    }

    /// GETATTR: the size.
    fn getattr(&mut self, node: u64) -> Result<u64, Error> {
        let n = self.getattr_request(node);
        let r = self.call(n)?;
        if r < 16 + 104 {
            return Err(Error::Io("short GETATTR reply"));
        }
        Ok(le64(self.reply, 16 + 16 + 8))
    }

    /// CREATE (write-only, truncating) in the root: (node, fh).
    fn create(&mut self, name: &[u8]) -> Result<(u64, u64), Error> {
        let mut fixed = [0u8; 16];
        fixed[0..4].copy_from_slice(&(1u32 | 0o100 | 0o1000).to_le_bytes());
        fixed[4..8].copy_from_slice(&0o100644u32.to_le_bytes());
        let n = self.named(CREATE, ROOT, &fixed, name)?;
        if n < 16 + 128 + 16 {
            return Err(Error::Io("short CREATE reply"));
        }
        Ok((le64(self.reply, 16), le64(self.reply, 16 + 128)))
    }

    /// OPEN read-only: fh.
    fn open_ro(&mut self, node: u64) -> Result<u64, Error> {
        let n = self.header(OPEN, node, 8);
        self.req[n..n + 8].fill(0);
        if self.call(n + 8)? < 16 + 16 {
            return Err(Error::Io("short OPEN reply"));
        }
        Ok(le64(self.reply, 16))
    }

    fn io_in(&mut self, op: u32, node: u64, fh: u64, off: u64, size: u32, data: usize) -> usize {
        let n = self.header(op, node, 40 + data);
        let b = &mut self.req[n..n + 40];
        b.fill(0);
        b[0..8].copy_from_slice(&fh.to_le_bytes());
        b[8..16].copy_from_slice(&off.to_le_bytes());
        b[16..20].copy_from_slice(&size.to_le_bytes());
        n + 40
    }

    /// WRITE `len` bytes already placed at `req[80..]`.
    fn write(&mut self, node: u64, fh: u64, off: u64, len: usize) -> Result<(), Error> {
        let n = self.io_in(WRITE, node, fh, off, len as u32, len);
        let r = self.call(n + len)?;
        if r < 24 || le32(self.reply, 16) as usize != len {
            return Err(Error::Io("short write"));
        }
        Ok(())
    }

    /// READ up to `size` bytes: how many arrived (at `reply[16..]`).
    fn read(&mut self, node: u64, fh: u64, off: u64, size: u32) -> Result<usize, Error> {
        let n = self.io_in(READ, node, fh, off, size, 0);
        let r = self.call_cap(n, 16 + size)?;
        if r - 16 > size as usize {
            return Err(Error::Io("READ returned more than asked"));
        }
        Ok(r - 16)
    }

    fn fh_op(&mut self, op: u32, node: u64, fh: u64) -> Result<(), Error> {
        let n = self.header(op, node, 24);
        self.req[n..n + 24].fill(0);
        self.req[n..n + 8].copy_from_slice(&fh.to_le_bytes());
        let len = if op == FSYNC { 16 } else { 24 };
        let h = (40 + len) as u32;
        self.req[0..4].copy_from_slice(&h.to_le_bytes());
        self.call(n + len).map(|_| ())
    }

    fn unlink(&mut self, name: &[u8]) -> Result<(), Error> {
        self.named(UNLINK, ROOT, &[], name).map(|_| ())
    }
}

/// xorshift64, the data every `fs-write` writes (8 bytes LE per step).
pub struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Fills `b` (whole steps; a partial last step takes the low bytes).
    fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// FNV-1a 64.
struct Fnv(u64);
impl Fnv {
    fn add(&mut self, b: &[u8]) {
        for &c in b {
            self.0 = (self.0 ^ c as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
}
const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

fn split3(v: &[u8]) -> Option<(&[u8], u64, u64)> {
    let mut it = v.split(|&c| c == b',');
    let name = it.next()?;
    let a = number(it.next()?)?;
    let b = number(it.next()?)?;
    if it.next().is_some() {
        return None;
    }
    Some((name, a, b))
}

/// Writes `bytes` of xorshift(`seed`) to `name`; returns the checksum.
fn write_file(fs: &mut Fs, name: &[u8], bytes: u64, seed: u64) -> Result<u64, Error> {
    let (node, fh) = fs.create(name)?;
    let mut rng = XorShift::new(seed);
    let mut sum = Fnv(FNV_START);
    let mut off = 0u64;
    while off < bytes {
        let len = (bytes - off).min(fs.chunk as u64) as usize;
        let at = 80;
        rng.fill(&mut fs.req[at..at + len]);
        sum.add(&fs.req[at..at + len]);
        fs.write(node, fh, off, len)?;
        off += len as u64;
    }
    fs.fh_op(FSYNC, node, fh)?;
    fs.fh_op(RELEASE, node, fh)?;
    Ok(sum.0)
}

/// Reads all of `name`: (bytes, checksum).
fn read_file(fs: &mut Fs, name: &[u8]) -> Result<(u64, u64), Error> {
    let node = fs.lookup(name)?;
    let fh = fs.open_ro(node)?;
    let mut sum = Fnv(FNV_START);
    let mut off = 0u64;
    loop {
        let n = fs.read(node, fh, off, fs.chunk)?;
        if n == 0 {
            break;
        }
        sum.add(&fs.reply[16..16 + n]);
        off += n as u64;
    }
    fs.fh_op(RELEASE, node, fh)?;
    Ok((off, sum.0))
}

/// `x.y` with one decimal from a ratio in tenths.
struct Tenths(u64);
impl crate::serial::Out for Tenths {
    fn out(&self) {
        crate::serial::Out::out(&(self.0 / 10));
        crate::serial::putb(b'.');
        crate::serial::Out::out(&(self.0 % 10));
    }
}

fn bench(fs: &mut Fs, env: &Env, bytes: u64, files: u64) -> Result<(), Error> {
    let name = b"oslet-fs-bench.bin";
    let t0 = env.clock.now_ns();
    write_file(fs, name, bytes, 1)?;
    let t1 = env.clock.now_ns();
    read_file(fs, name)?;
    let t2 = env.clock.now_ns();
    fs.unlink(name)?;
    let mut fname = *b"oslet-fs-bench-00000000";
    let t3 = env.clock.now_ns();
    for i in 0..files {
        for (k, c) in fname[15..].iter_mut().enumerate() {
            *c = b"0123456789abcdef"[((i >> (28 - 4 * k)) & 0xf) as usize];
        }
        let (node, fh) = fs.create(&fname)?;
        fs.fh_op(RELEASE, node, fh)?;
        let node = fs.lookup(&fname)?;
        fs.getattr(node)?;
        fs.unlink(&fname)?;
    }
    let t4 = env.clock.now_ns();
    let mib_s =
        |b: u64, ns: u64| (b as u128 * 10_000_000_000 / (ns.max(1) as u128) / (1 << 20)) as u64;
    let per_s = (files as u128 * 10_000_000_000 / ((t4 - t3).max(1) as u128)) as u64;
    say!(
        "fs-bench: {\"seq_write_mib_s\":",
        Tenths(mib_s(bytes, t1 - t0)),
        ",\"seq_read_mib_s\":",
        Tenths(mib_s(bytes, t2 - t1)),
        ",\"create_stat_unlink_per_s\":",
        Tenths(per_s),
        "}"
    );
    Ok(())
}

/// Looks `name` up every 10 ms until it exists (60 s at most): how many ms that took.
fn wait_for(fs: &mut Fs, name: &[u8]) -> Result<u64, Error> {
    let start = crate::io::rdtsc();
    loop {
        match fs.lookup(name) {
            Ok(_) => return Ok(crate::io::rdtsc().wrapping_sub(start) / fs.ms.max(1)),
            Err(Error::Fuse(ENOENT)) => {}
            Err(e) => return Err(e),
        }
        let t = crate::io::rdtsc();
        if t.wrapping_sub(start) > 60_000 * fs.ms {
            return Err(Error::Io("it did not appear within 60 s"));
        }
        while crate::io::rdtsc().wrapping_sub(t) < 10 * fs.ms {
            core::hint::spin_loop();
        }
    }
}

/// Runs every `fs-*` word in command-line order; powers off 0 when all worked.
pub fn run(env: &mut Env) -> ! {
    let mut fs = Fs::open(env);
    let words: &'static [u8] = env.args.raw();
    for w in words
        .split(|&b| b <= b' ')
        .filter(|w| w.starts_with(b"fs-"))
    {
        let Some(eq) = w.iter().position(|&c| c == b'=') else {
            die("unknown fs mode:", w)
        };
        let (mode, v) = (&w[..eq], &w[eq + 1..]);
        match mode {
            b"fs-write" => {
                let Some((name, bytes, seed)) = split3(v) else {
                    die("fs-write wants <name>,<bytes>,<seed>:", v)
                };
                match write_file(&mut fs, name, bytes, seed) {
                    Ok(sum) => say!(
                        "fs: wrote ",
                        bytes,
                        " bytes to ",
                        Str(name),
                        ", checksum ",
                        Hex(sum)
                    ),
                    Err(e) => fs.fail("write", name, e),
                }
            }
            b"fs-read" => match read_file(&mut fs, v) {
                Ok((n, sum)) => say!(
                    "fs: read ",
                    n,
                    " bytes from ",
                    Str(v),
                    ", checksum ",
                    Hex(sum)
                ),
                Err(e) => fs.fail("read", v, e),
            },
            b"fs-unlink" => match fs.unlink(v) {
                Ok(()) => say!("fs: unlinked ", Str(v)),
                Err(e) => fs.fail("unlink", v, e),
            },
            b"fs-stat" => match fs.lookup(v).and_then(|n| fs.getattr(n)) {
                Ok(size) => say!("fs: stat ", Str(v), ": ", size, " bytes"),
                Err(Error::Fuse(ENOENT)) => say!("fs: stat ", Str(v), ": no such file"),
                Err(e) => fs.fail("stat", v, e),
            },
            b"fs-wait" => match wait_for(&mut fs, v) {
                Ok(ms) => say!("fs: ", Str(v), " appeared after ", ms, " ms"),
                Err(e) => fs.fail("wait", v, e),
            },
            b"fs-forge" => match super::forge::run(&mut fs, v) {
                Ok(()) => {}
                Err(e) => fs.fail("forge", v, e),
            },
            b"fs-bench" => {
                let mut it = v.split(|&c| c == b',');
                let (Some(b), Some(f)) = (it.next().and_then(number), it.next().and_then(number))
                else {
                    die("fs-bench wants <bytes>,<files>:", v)
                };
                if let Err(e) = bench(&mut fs, env, b, f) {
                    fs.fail("bench", b"", e)
                }
            }
            _ => die("unknown fs mode:", w),
        }
    }
    poweroff(0)
}
