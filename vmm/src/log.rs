//! Diagnostics on stderr, prefixed with the OSlet's name, and a rate limiter for
//! messages a guest can trigger (a guest must not be able to flood the host's logs).

use std::fmt::Arguments;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

static PREFIX: OnceLock<String> = OnceLock::new();

/// Sets the prefix of every diagnostic of this process (once; later calls are ignored).
pub fn set_prefix(prefix: &str) {
    let _ = PREFIX.set(prefix.to_string());
}

fn prefix() -> &'static str {
    PREFIX.get().map(String::as_str).unwrap_or("oslet")
}

/// A warning on stderr.
pub fn warn(args: Arguments<'_>) {
    eprintln!("{}: warning: {}", prefix(), args);
}

/// An informational line on stderr.
pub fn info(args: Arguments<'_>) {
    eprintln!("{}: {}", prefix(), args);
}

/// Lets through at most `burst` messages per second and counts the rest.
pub struct RateLimiter {
    burst: u64,
    start: Instant,
    window: AtomicU64,
    used: AtomicU64,
    dropped: AtomicU64,
}

impl RateLimiter {
    /// A limiter allowing `burst` messages per one-second window.
    pub fn new(burst: u64) -> Self {
        Self {
            burst,
            start: Instant::now(),
            window: AtomicU64::new(0),
            used: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Whether a message may be printed now.
    pub fn allow(&self) -> bool {
        let now = self.start.elapsed().as_secs();
        if self.window.swap(now, Ordering::Relaxed) != now {
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            self.used.store(0, Ordering::Relaxed);
            if dropped > 0 {
                warn(format_args!(
                    "{dropped} guest-triggered messages suppressed"
                ));
            }
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < self.burst {
            true
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Prints a warning if the limiter allows it.
    pub fn warn(&self, args: Arguments<'_>) {
        if self.allow() {
            warn(args);
        }
    }

    /// Prints an informational line if the limiter allows it.
    pub fn info(&self, args: Arguments<'_>) {
        if self.allow() {
            info(args);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_burst_then_drops() {
        let l = RateLimiter::new(3);
        let allowed = (0..10).filter(|_| l.allow()).count();
        // All ten calls fall in one window unless the second ticks over mid-test.
        assert!((3..=6).contains(&allowed), "allowed {allowed}");
    }
}
