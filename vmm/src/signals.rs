//! SIGINT/SIGTERM handling: the handler records the signal and writes a byte to a
//! pipe; the main loops poll the record, and a watcher thread turns the byte into a
//! wake-up of whichever loop asked for one ([`wake_on_stop`]), so a stop is seen at
//! once rather than at the loop's next look.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, Once};

static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);
/// The write end of the wake-up pipe (-1: none).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// What the watcher thread calls.
type Waker = Box<dyn Fn() + Send>;
static WAKER: Mutex<Option<Waker>> = Mutex::new(None);
static WATCHER: Once = Once::new();

extern "C" fn on_stop(sig: libc::c_int) {
    STOP_SIGNAL.store(sig, Ordering::SeqCst);
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = [1u8];
        // SAFETY: write(2) is async-signal-safe; `fd` is the non-blocking write end of
        // the watcher's pipe, which stays open for the process's life (a full pipe
        // drops the byte: the watcher has one to read already).
        unsafe { libc::write(fd, byte.as_ptr().cast(), 1) };
    }
}

/// Installs the handler for SIGINT and SIGTERM.
pub fn install_stop_handlers() -> std::io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: sigaction is plain data; zeroed is "no flags, empty mask".
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = on_stop as extern "C" fn(libc::c_int) as usize;
        // SAFETY: `act` is a valid sigaction whose handler only does an atomic store
        // and a write(2) (both async-signal-safe); a null old-action pointer is allowed.
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

fn waker() -> std::sync::MutexGuard<'static, Option<Waker>> {
    WAKER.lock().unwrap_or_else(|e| e.into_inner())
}

/// From now on, calls `wake` on a thread of its own each time a stop signal
/// arrives, after [`stop_requested`] reports it. The latest call's `wake` replaces
/// any earlier one (a process that runs several supervisors in turn, as
/// `oslet bench` does). The watcher thread and its pipe are made once per process.
pub fn wake_on_stop(wake: impl Fn() + Send + 'static) -> std::io::Result<()> {
    *waker() = Some(Box::new(wake));
    let mut result = Ok(());
    WATCHER.call_once(|| result = start_watcher());
    result
}

fn start_watcher() -> std::io::Result<()> {
    let mut fds = [0i32; 2];
    // SAFETY: a valid two-int buffer for pipe2.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let [read_fd, write_fd] = fds;
    // SAFETY: fcntl on the write end just created; O_NONBLOCK so that the signal
    // handler never blocks on a full pipe.
    if unsafe { libc::fcntl(write_fd, libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    std::thread::Builder::new()
        .name("stop-signal".into())
        .spawn(move || loop {
            let mut byte = [0u8];
            // SAFETY: reads one byte into a local buffer from the pipe's read end,
            // which only this thread uses and nothing closes.
            let n = unsafe { libc::read(read_fd, byte.as_mut_ptr().cast(), 1) };
            if n == 1 {
                if let Some(wake) = waker().as_ref() {
                    wake();
                }
            } else if n == 0
                || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
            {
                return;
            }
        })?;
    WAKE_FD.store(write_fd, Ordering::SeqCst);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_stop_signal_wakes_the_latest_waker_at_once() {
        install_stop_handlers().unwrap();
        let (first_tx, first) = mpsc::channel();
        wake_on_stop(move || {
            let _ = first_tx.send(());
        })
        .unwrap();
        let (tx, rx) = mpsc::channel();
        wake_on_stop(move || {
            let _ = tx.send(stop_requested());
        })
        .unwrap();
        // SAFETY: raise(3) on this process; the handler installed above records it.
        assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)),
            Ok(Some(libc::SIGTERM))
        );
        assert!(first.try_recv().is_err(), "the replaced waker was called");
        STOP_SIGNAL.store(0, Ordering::SeqCst);
    }
}
