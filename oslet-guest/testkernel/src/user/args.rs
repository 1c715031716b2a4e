//! The kernel command line, copied into ring 3's arena: whitespace-separated
//! words, `key=value` words, numbers.

use super::Arena;

/// Longest command line looked at (longer ones are cut there).
const MAX_CMDLINE: usize = 16 * 1024;

pub struct Args {
    bytes: &'static [u8],
}

impl Args {
    /// Copies the NUL-terminated command line at physical `pa` (0: none).
    pub fn copy_from(pa: u64, arena: &mut Arena) -> Args {
        if pa == 0 || pa >= crate::io::MAPPED_LIMIT {
            return Args { bytes: &[] };
        }
        let mut len = 0usize;
        while len < MAX_CMDLINE
            && pa + (len as u64) < crate::io::MAPPED_LIMIT
            && crate::io::rd8(pa + len as u64) != 0
        {
            len += 1;
        }
        let Some(buf) = arena.bytes(len) else {
            return Args { bytes: &[] };
        };
        for (i, b) in buf.iter_mut().enumerate() {
            *b = crate::io::rd8(pa + i as u64);
        }
        Args { bytes: buf }
    }

    /// The whole command line.
    pub fn raw(&self) -> &'static [u8] {
        self.bytes
    }

    pub fn words(&self) -> impl Iterator<Item = &'static [u8]> {
        let bytes: &'static [u8] = self.bytes;
        bytes.split(|&b| b <= b' ').filter(|w| !w.is_empty())
    }

    /// Whether `word` is on the command line as a whole word.
    pub fn has(&self, word: &str) -> bool {
        self.words().any(|w| w == word.as_bytes())
    }

    /// The value of the first `key=value` word.
    pub fn value(&self, key: &[u8]) -> Option<&'static [u8]> {
        self.values(key).next()
    }

    /// The values of every `key=value` word, in order.
    pub fn values<'k>(&self, key: &'k [u8]) -> impl Iterator<Item = &'static [u8]> + 'k {
        self.words().filter_map(move |w| {
            let rest = w.strip_prefix(key)?;
            rest.strip_prefix(b"=")
        })
    }

    /// The first word starting with `prefix`.
    pub fn first_with_prefix(&self, prefix: &[u8]) -> Option<&'static [u8]> {
        self.words().find(|w| w.starts_with(prefix))
    }
}

/// A number: hexadecimal with a `0x` prefix, else decimal. None on anything
/// else or on overflow.
pub fn number(s: &[u8]) -> Option<u64> {
    let (digits, radix) = match s.strip_prefix(b"0x").or(s.strip_prefix(b"0X")) {
        Some(h) => (h, 16),
        None => (s, 10),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' if radix == 16 => c - b'a' + 10,
            b'A'..=b'F' if radix == 16 => c - b'A' + 10,
            _ => return None,
        } as u64;
        v = v.checked_mul(radix)?.checked_add(d)?;
    }
    Some(v)
}
