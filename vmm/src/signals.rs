//! SIGINT/SIGTERM handling: the handler only records the signal; the main loops poll it.

use std::sync::atomic::{AtomicI32, Ordering};

static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop(sig: libc::c_int) {
    STOP_SIGNAL.store(sig, Ordering::SeqCst);
}

/// Installs the handler for SIGINT and SIGTERM.
pub fn install_stop_handlers() -> std::io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: sigaction is plain data; zeroed is "no flags, empty mask".
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = on_stop as extern "C" fn(libc::c_int) as usize;
        // SAFETY: `act` is a valid sigaction whose handler only does an atomic store
        // (async-signal-safe); a null old-action pointer is allowed.
        let r = unsafe { libc::sigaction(sig, &act, std::ptr::null_mut()) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The stop signal received so far, if any.
pub fn stop_requested() -> Option<i32> {
    match STOP_SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}
