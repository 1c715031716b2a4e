//! The virtiofsd an OSlet's VMM process starts for `[shared_fs]`: one daemon per
//! OSlet, on a socket of its own, killed when the OSlet ends (and, through
//! `PR_SET_PDEATHSIG`, when the VMM process dies).
//!
//! Its stderr is relayed line by line as this OSlet's warnings (`virtiofsd error:
//! ...`, rate-limited: a guest can make virtiofsd complain), so that the cause of
//! a daemon's death lands in the OSlet's log next to the VMM's own line about it.
//!
//! The binary is `$OSLET_VIRTIOFSD` when set, else the first `virtiofsd` on `PATH`,
//! else `/usr/libexec/virtiofsd` (QEMU's packages put it there).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::io::{BufRead, BufReader};

use oslet_config::SharedFsPlan;

use crate::log::RateLimiter;

/// The environment variable naming the virtiofsd binary.
pub const VIRTIOFSD_ENV: &str = "OSLET_VIRTIOFSD";

/// Errors starting virtiofsd.
#[derive(Debug, thiserror::Error)]
pub enum VirtiofsdError {
    /// No binary.
    #[error("virtiofsd not found{0}; install it with `cargo install virtiofsd` (needs libseccomp-dev and libcap-ng-dev)")]
    NotFound(String),
    /// The shared directory went away since the config was checked.
    #[error("the shared directory {0} does not exist")]
    NoDir(PathBuf),
    /// It could not be started.
    #[error("cannot start {0}")]
    Spawn(PathBuf, #[source] std::io::Error),
    /// It exited before its socket appeared.
    #[error("virtiofsd exited ({0}) before it was ready")]
    Died(String),
    /// Its socket did not appear in time.
    #[error("virtiofsd did not create {0} within 10 s")]
    Timeout(PathBuf),
}

/// Finds the virtiofsd binary.
pub fn find() -> Result<PathBuf, VirtiofsdError> {
    if let Some(p) = std::env::var_os(VIRTIOFSD_ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(VirtiofsdError::NotFound(format!(
                " at {} (from {VIRTIOFSD_ENV})",
                p.display()
            )))
        };
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("virtiofsd"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    on_path
        .or_else(|| Some(PathBuf::from("/usr/libexec/virtiofsd")).filter(|p| p.is_file()))
        .ok_or_else(|| VirtiofsdError::NotFound(String::new()))
}

/// A running virtiofsd, killed on drop.
pub struct Virtiofsd {
    child: Child,
    socket: PathBuf,
}

impl Virtiofsd {
    /// Starts virtiofsd for `fs` with its socket at `socket`, and waits for the socket.
    pub fn start(fs: &SharedFsPlan, socket: &Path) -> Result<Self, VirtiofsdError> {
        let bin = find()?;
        if !fs.path.is_dir() {
            return Err(VirtiofsdError::NoDir(fs.path.clone()));
        }
        let _ = std::fs::remove_file(socket);
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let mut cmd = Command::new(&bin);
        cmd.arg(format!("--socket-path={}", socket.display()))
            .arg(format!("--shared-dir={}", fs.path.display()))
            .arg(format!("--cache={}", fs.cache.as_str()))
            .arg(format!(
                "--sandbox={}",
                if root { "namespace" } else { "none" }
            ))
            .arg("--log-level=error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the child before exec and only calls prctl,
        // which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| VirtiofsdError::Spawn(bin, e))?;
        if let Some(err) = child.stderr.take() {
            relay_stderr(err);
        }
        let mut d = Self {
            child,
            socket: socket.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut appeared: Option<Instant> = None;
        loop {
            if let Some(st) = d.exited() {
                return Err(VirtiofsdError::Died(st));
            }
            // The file appears at bind(2), a moment before listen(2): a connect in
            // between is refused (seen under load). Wait until the kernel lists it
            // as listening; a socket never listed (another network namespace, no
            // /proc) is taken as ready a second after it appeared.
            if socket.exists() {
                let since = *appeared.get_or_insert_with(Instant::now);
                if listening(socket) != Some(false) || since.elapsed() >= LISTED_WITHIN {
                    return Ok(d);
                }
            }
            if Instant::now() >= deadline {
                return Err(VirtiofsdError::Timeout(socket.to_path_buf()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Where its socket is.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `Some(exit status)` once the daemon has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(st)) => Some(st.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("cannot wait for it: {e}")),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Relays the daemon's stderr on a thread of its own until it closes.
fn relay_stderr(err: std::process::ChildStderr) {
    let spawned = std::thread::Builder::new()
        .name("virtiofsd-log".into())
        .spawn(move || {
            let limit = RateLimiter::new(5);
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(l) = log_line(&line) {
                    limit.warn(format_args!("{l}"));
                }
            }
        });
    if let Err(e) = spawned {
        crate::log::warn(format_args!("cannot relay virtiofsd's messages: {e}"));
    }
}

/// One of virtiofsd's log lines (`[<time> <LEVEL> <module>] <message>`) as
/// `virtiofsd <level>: <message>`; other non-empty lines as `virtiofsd: <line>`.
fn log_line(line: &str) -> Option<String> {
    let line = line.trim_end();
    if line.is_empty() {
        return None;
    }
    let parsed = line
        .strip_prefix('[')
        .and_then(|r| r.split_once("] "))
        .and_then(|(head, msg)| {
            let level = head.split_whitespace().nth(1)?;
            Some(format!("virtiofsd {}: {msg}", level.to_ascii_lowercase()))
        });
    Some(parsed.unwrap_or_else(|| format!("virtiofsd: {line}")))
}

/// How long after its socket file appears the daemon has to show up as listening
/// in `/proc/net/unix` before it is taken as ready anyway.
const LISTED_WITHIN: Duration = Duration::from_secs(1);

/// Whether `/proc/net/unix` lists a listening socket bound at `path`; None where
/// that file cannot be read.
fn listening(path: &Path) -> Option<bool> {
    let table = std::fs::read_to_string("/proc/net/unix").ok()?;
    Some(listed_listening(&table, path))
}

/// `__SO_ACCEPTCON` in `/proc/net/unix`'s Flags column: the socket listens.
const SO_ACCEPTCON: u32 = 1 << 16;

/// Whether `table` (the text of `/proc/net/unix`) has a listening socket at `path`.
fn listed_listening(table: &str, path: &Path) -> bool {
    let want = path.as_os_str().as_encoded_bytes();
    table.lines().skip(1).any(|line| {
        // Num RefCount Protocol Flags Type St Inode [Path]
        let f: Vec<&str> = line.split_whitespace().collect();
        f.get(7).is_some_and(|p| p.as_bytes() == want)
            && f.get(3)
                .and_then(|flags| u32::from_str_radix(flags, 16).ok())
                .is_some_and(|flags| flags & SO_ACCEPTCON != 0)
    })
}

/// The socket path for OSlet `name`'s virtiofsd (short enough for sun_path).
pub fn socket_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    dir.join(format!(
        "oslet-{}-{name}.virtiofsd.sock",
        std::process::id()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_lose_the_timestamp_and_keep_level_and_message() {
        assert_eq!(
            log_line("[2026-12-01T20:11:30Z ERROR virtiofsd::vhost_user] Failed to create a queue reader: no memory region for this address range\n").as_deref(),
            Some("virtiofsd error: Failed to create a queue reader: no memory region for this address range")
        );
        assert_eq!(
            log_line("plain text").as_deref(),
            Some("virtiofsd: plain text")
        );
        assert_eq!(log_line("[odd"), Some("virtiofsd: [odd".to_string()));
        assert_eq!(log_line("  "), None);
    }

    #[test]
    fn a_socket_is_ready_only_once_it_listens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bound.sock");
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a new AF_UNIX socket, bound to a path that fits sun_path; the
        // sockaddr is fully initialised before bind reads it.
        let fd = unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            for (d, s) in addr.sun_path.iter_mut().zip(c.as_bytes()) {
                *d = *s as libc::c_char;
            }
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            assert_eq!(libc::bind(fd, (&raw const addr).cast(), len), 0);
            fd
        };
        // Bound: the file is there, a connect is refused, and it is not ready.
        assert!(path.exists());
        assert_eq!(
            std::os::unix::net::UnixStream::connect(&path)
                .map_err(|e| e.kind())
                .err(),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
        assert_eq!(listening(&path), Some(false));
        // SAFETY: listen on the socket created above.
        assert_eq!(unsafe { libc::listen(fd, 1) }, 0);
        assert_eq!(listening(&path), Some(true));
        // SAFETY: fd is ours and closed once.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn the_proc_table_is_read_by_path_and_flags() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            000000000d179519: 00000002 00000000 00010000 0001 01 671519 /tmp/a.sock\n\
            000000000d17951a: 00000002 00000000 00000000 0001 01 671520 /tmp/b.sock\n\
            000000000d17951b: 00000003 00000000 00000000 0001 03 671521\n";
        assert!(listed_listening(table, Path::new("/tmp/a.sock")));
        assert!(!listed_listening(table, Path::new("/tmp/b.sock")));
        assert!(!listed_listening(table, Path::new("/tmp/c.sock")));
    }

    #[test]
    fn socket_paths_fit_in_sun_path() {
        let p = socket_path(&"x".repeat(32));
        assert!(p.as_os_str().len() < 108, "{}", p.display());
    }
}
