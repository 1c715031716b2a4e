//! The virtiofsd an OSlet's VMM process starts for `[shared_fs]`: one daemon per
//! OSlet, on a socket of its own, killed when the OSlet ends (and, through
//! `PR_SET_PDEATHSIG`, when the VMM process dies).
//!
//! The binary is `$OSLET_VIRTIOFSD` when set, else the first `virtiofsd` on `PATH`,
//! else `/usr/libexec/virtiofsd` (QEMU's packages put it there).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oslet_config::SharedFsPlan;

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
            .stdout(Stdio::null());
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
        let child = cmd.spawn().map_err(|e| VirtiofsdError::Spawn(bin, e))?;
        let mut d = Self {
            child,
            socket: socket.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = d.exited() {
                return Err(VirtiofsdError::Died(st));
            }
            if socket.exists() {
                return Ok(d);
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
    fn socket_paths_fit_in_sun_path() {
        let p = socket_path(&"x".repeat(32));
        assert!(p.as_os_str().len() < 108, "{}", p.display());
    }
}
