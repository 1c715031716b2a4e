//! The control socket: the supervisor's server side (an accept thread that parses
//! requests and hands each call to the supervisor loop) and the CLI's client side.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::Duration;

use crate::api::{self, Call};

/// Environment variable naming the control socket.
pub const SOCKET_ENV: &str = "OSLET_SOCKET";
/// Connections served at once; more get 503.
const MAX_CLIENTS: usize = 64;
/// A client has this long to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Another supervisor answers on the socket.
    #[error("{}: another oslet supervisor is serving this socket; stop it with `oslet down --socket {}` or use another --socket", .0.display(), .0.display())]
    Busy(PathBuf),
    /// bind/listen/chmod failed.
    #[error("cannot serve {}", .0.display())]
    Bind(PathBuf, #[source] std::io::Error),
    /// The client could not reach a supervisor.
    #[error("{}: no oslet supervisor answers here (start one with `oslet up --detach FILE`)", .0.display())]
    NoSupervisor(PathBuf, #[source] std::io::Error),
    /// The supervisor's answer was not HTTP.
    #[error("{}: unreadable answer from the supervisor", .0.display())]
    BadAnswer(PathBuf),
}

/// The socket path: `--socket`, else `$OSLET_SOCKET`, else `$XDG_RUNTIME_DIR/oslet.sock`,
/// else `/tmp/oslet-<uid>.sock`.
pub fn socket_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os(SOCKET_ENV) {
        return PathBuf::from(p);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(dir).join("oslet.sock");
    }
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/oslet-{uid}.sock"))
}

/// One call from a client, with where to send the HTTP response.
pub struct Pending {
    /// The call.
    pub call: Call,
    /// Takes the complete HTTP response; an empty one means the call took over the
    /// connection (a console).
    pub reply: Sender<Vec<u8>>,
    /// The client's connection, for calls that take it over (`Call::Console`).
    pub stream: Option<UnixStream>,
}

/// A bound control socket; removed when dropped, after the replies in flight (such
/// as `down`'s) have been written, for at most a second.
pub struct Server {
    path: PathBuf,
    active: Arc<AtomicUsize>,
    /// The path is already removed (a later supervisor may own it now).
    unlinked: std::sync::atomic::AtomicBool,
}

impl Server {
    /// Removes the socket's path (new clients can no longer connect); connections
    /// already accepted are served on.
    pub fn unlink(&self) {
        if !self.unlinked.swap(true, Ordering::SeqCst) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.unlink();
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while self.active.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Binds `path` (refusing one another supervisor answers on, replacing a stale one),
/// limits it to its owner, and serves it on a thread: every call goes to `calls`
/// (as whatever the receiver's message type makes of a [`Pending`]).
pub fn serve<M: From<Pending> + Send + 'static>(
    path: &Path,
    calls: Sender<M>,
) -> Result<Server, ControlError> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ControlError::Busy(path.to_path_buf()));
        }
        let _ = std::fs::remove_file(path);
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let listener =
        UnixListener::bind(path).map_err(|e| ControlError::Bind(path.to_path_buf(), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ControlError::Bind(path.to_path_buf(), e))?;
    let active = Arc::new(AtomicUsize::new(0));
    let server_active = Arc::clone(&active);
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if active.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                    active.fetch_sub(1, Ordering::SeqCst);
                    let mut s = stream;
                    let _ = s.write_all(&api::error_response(503, "too many clients"));
                    continue;
                }
                let calls = calls.clone();
                let active = Arc::clone(&active);
                let spawned = std::thread::Builder::new()
                    .name("control-client".into())
                    .spawn(move || {
                        handle(stream, &calls);
                        active.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    crate::log::warn(format_args!("cannot start a control client thread"));
                }
            }
        })
        .map_err(|e| ControlError::Bind(path.to_path_buf(), e))?;
    Ok(Server {
        path: path.to_path_buf(),
        active: server_active,
        unlinked: std::sync::atomic::AtomicBool::new(false),
    })
}

fn handle<M: From<Pending>>(mut stream: UnixStream, calls: &Sender<M>) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let request = loop {
        match api::parse(&buf) {
            Err(api::ApiError::Incomplete) => {}
            other => break other,
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break Err(api::ApiError::Incomplete),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let response = match request {
        Err(e) => api::error_response(e.status(), &e.to_string()),
        Ok(req) => match api::route(&req) {
            Err((status, msg)) => api::error_response(status, &msg),
            Ok(call) => {
                let (tx, rx) = mpsc::channel();
                let stream = match call {
                    Call::Console(_) => stream.try_clone().ok(),
                    _ => None,
                };
                if calls
                    .send(M::from(Pending {
                        call,
                        reply: tx,
                        stream,
                    }))
                    .is_err()
                {
                    api::error_response(503, "the supervisor is shutting down")
                } else {
                    rx.recv().unwrap_or_else(|_| {
                        api::error_response(503, "the supervisor is shutting down")
                    })
                }
            }
        },
    };
    if !response.is_empty() {
        let _ = stream.write_all(&response);
    }
}

/// Sends one request to the supervisor at `path`; returns (status, body).
pub fn request(path: &Path, method: &str, target: &str) -> Result<(u16, String), ControlError> {
    let mut s =
        UnixStream::connect(path).map_err(|e| ControlError::NoSupervisor(path.to_path_buf(), e))?;
    let req = format!("{method} {target} HTTP/1.1\r\nHost: oslet\r\nContent-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| ControlError::NoSupervisor(path.to_path_buf(), e))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .map_err(|e| ControlError::NoSupervisor(path.to_path_buf(), e))?;
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| ControlError::BadAnswer(path.to_path_buf()))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ControlError::BadAnswer(path.to_path_buf()))?;
    Ok((status, body.to_string()))
}
