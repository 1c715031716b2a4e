//! 8250 UART on COM1 (0x3F8), polled, plus a tiny allocation-free,
//! core::fmt-free line printer: `say!(a, b, ...)` prints
//! "oslet-testkernel: " then each argument (&str, integers in decimal,
//! `Hex`, `Bytes`) and "\n", under a spinlock (xchg) shared by all CPUs.

use crate::io::{inb, outb, pause};
use core::sync::atomic::{AtomicBool, Ordering};

const COM1: u16 = 0x3f8;
/// Bound on LSR polls per byte (a stuck UART drops bytes, never hangs).
const POLL_MAX: u32 = 100_000;

static LOCK: AtomicBool = AtomicBool::new(false);

pub fn init() {
    outb(COM1 + 1, 0x00); // IER: no interrupts
    outb(COM1 + 3, 0x80); // LCR: DLAB
    outb(COM1, 0x01); // DLL: 115200 baud
    outb(COM1 + 1, 0x00); // DLM
    outb(COM1 + 3, 0x03); // LCR: 8N1
    outb(COM1 + 2, 0xc7); // FCR: enable + clear FIFOs, 14-byte threshold
    outb(COM1 + 4, 0x03); // MCR: DTR | RTS
}

pub fn putb(b: u8) {
    let mut n = 0;
    while inb(COM1 + 5) & 0x20 == 0 && n < POLL_MAX {
        pause();
        n += 1;
    }
    outb(COM1, b);
}

pub fn puts(s: &str) {
    for &b in s.as_bytes() {
        putb(b);
    }
}

pub struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        LOCK.store(false, Ordering::Release);
    }
}

pub fn lock() -> Guard {
    while LOCK.swap(true, Ordering::Acquire) {
        while LOCK.load(Ordering::Relaxed) {
            pause();
        }
    }
    Guard
}

/// For the panic path: wait a bounded time, then take the console anyway
/// (the panicking CPU may be the one holding it).
pub fn lock_or_steal() -> Guard {
    let mut n = 0u32;
    while LOCK.swap(true, Ordering::Acquire) && n < 1_000_000 {
        pause();
        n += 1;
    }
    Guard
}

pub trait Out {
    fn out(&self);
}

impl Out for &str {
    fn out(&self) {
        puts(self)
    }
}

fn dec(mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    while i < buf.len() {
        putb(buf[i]);
        i += 1;
    }
}

macro_rules! out_dec {
    ($($t:ty),*) => { $(impl Out for $t { fn out(&self) { dec(*self as u64) } })* };
}
out_dec!(u8, u16, u32, u64, usize);

/// Hexadecimal with a 0x prefix, no leading zeros.
pub struct Hex(pub u64);

impl Out for Hex {
    fn out(&self) {
        puts("0x");
        let mut shift = 60i32;
        while shift > 0 && (self.0 >> shift) & 0xf == 0 {
            shift -= 4;
        }
        while shift >= 0 {
            let d = ((self.0 >> shift) & 0xf) as u8;
            putb(if d < 10 { b'0' + d } else { b'a' + d - 10 });
            shift -= 4;
        }
    }
}

/// A NUL-terminated string in guest-physical memory, printed with
/// non-printable bytes and '"' as '?', at most `max` bytes (then "...").
pub struct Bytes {
    pub paddr: u64,
    pub max: u64,
}

impl Out for Bytes {
    fn out(&self) {
        if self.paddr == 0 {
            return;
        }
        let mut i = 0;
        loop {
            if self.paddr + i >= crate::io::MAPPED_LIMIT {
                return;
            }
            let b = crate::io::rd8(self.paddr + i);
            if b == 0 {
                return;
            }
            if i == self.max {
                puts("...");
                return;
            }
            putb(if (0x20..0x7f).contains(&b) && b != b'"' {
                b
            } else {
                b'?'
            });
            i += 1;
        }
    }
}

/// Bytes from a Rust slice (names from the command line), printed like
/// `Bytes`: non-printable bytes and '"' as '?'.
pub struct Str<'a>(pub &'a [u8]);

impl Out for Str<'_> {
    fn out(&self) {
        for &b in self.0 {
            putb(if (0x20..0x7f).contains(&b) && b != b'"' {
                b
            } else {
                b'?'
            });
        }
    }
}

/// Anything with a `Display` impl (the interconnect's errors), through
/// core::fmt. Used from ring 3 only, where core::fmt's code size and speed
/// do not matter.
pub struct Disp<'a>(pub &'a dyn core::fmt::Display);

struct Uart;

impl core::fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        puts(s);
        Ok(())
    }
}

impl Out for Disp<'_> {
    fn out(&self) {
        let _ = core::fmt::write(&mut Uart, format_args!("{}", self.0));
    }
}

macro_rules! say {
    ($($a:expr),* $(,)?) => {{
        let _g = $crate::serial::lock();
        $crate::serial::puts("oslet-testkernel: ");
        $( $crate::serial::Out::out(&$a); )*
        $crate::serial::putb(b'\n');
    }};
}
