//! `oslet console NAME`: attaching a terminal to a running OSlet's serial console,
//! both ends.
//!
//! The client sends `POST /v1/oslets/NAME/console` on the control socket; the
//! supervisor answers `101 Switching Protocols` and the connection becomes a raw
//! byte stream. Console output reaches every attached client as the VMM process
//! writes it (`Attached::broadcast`, called by the console relay); what a client
//! sends goes to the VMM process's stdin, whose first line was the plan and whose
//! rest the VMM feeds into COM1's receive FIFO. The client detaches with Ctrl-]
//! (0x1d) or at the end of its input; an OSlet that ends closes its consoles.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ChildStdin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Consoles one OSlet may have attached at once.
pub const MAX_ATTACHED: usize = 8;
/// The byte that detaches a client: Ctrl-], as in telnet and virsh.
pub const DETACH_BYTE: u8 = 0x1d;
/// A client that cannot take output for this long is dropped (so a stuck terminal
/// never stalls the OSlet's console).
const WRITE_TIMEOUT: Duration = Duration::from_millis(200);
/// The supervisor's answer that turns the connection into the console stream.
pub const UPGRADE_RESPONSE: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: oslet-console\r\n\r\n";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The consoles attached to one run of an OSlet, and where their input goes.
#[derive(Default)]
pub struct Attached {
    clients: Mutex<Vec<(u64, UnixStream)>>,
    next_id: AtomicU64,
    input: Mutex<Option<ChildStdin>>,
}

impl Attached {
    /// Consoles for a VMM process whose stdin (after the plan) is `input`.
    pub fn new(input: Option<ChildStdin>) -> Self {
        Attached {
            input: Mutex::new(input),
            ..Default::default()
        }
    }

    /// Sends console output to every attached client; drops the ones that fail.
    pub fn broadcast(&self, bytes: &[u8]) {
        let mut c = lock(&self.clients);
        if !c.is_empty() {
            c.retain_mut(|(_, s)| s.write_all(bytes).is_ok());
        }
    }

    /// Ends every attached console (the OSlet's VMM process is gone).
    pub fn close_all(&self) {
        for (_, s) in lock(&self.clients).drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        lock(&self.input).take();
    }

    /// Attaches `stream` (whose request has been read): answers 101 and pumps what the
    /// client sends into the OSlet's console input on a thread of its own.
    pub fn attach(self: &Arc<Self>, name: &str, mut stream: UnixStream) -> Result<(), String> {
        let out = stream
            .try_clone()
            .map_err(|e| format!("cannot attach a console: {e}"))?;
        let _ = out.set_write_timeout(Some(WRITE_TIMEOUT));
        let _ = stream.set_read_timeout(None);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut c = lock(&self.clients);
            if c.len() >= MAX_ATTACHED {
                return Err(format!(
                    "{name} already has {MAX_ATTACHED} consoles attached; detach one first"
                ));
            }
            stream
                .write_all(UPGRADE_RESPONSE)
                .map_err(|e| format!("cannot attach a console: {e}"))?;
            c.push((id, out));
        }
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(format!("console-{name}"))
            .spawn(move || {
                let mut buf = [0u8; 1024];
                loop {
                    let n = match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let mut input = lock(&me.input);
                    let Some(stdin) = input.as_mut() else { break };
                    if stdin.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                lock(&me.clients).retain(|(i, _)| *i != id);
                let _ = stream.shutdown(std::net::Shutdown::Both);
            });
        spawned
            .map(|_| ())
            .map_err(|e| format!("cannot attach a console: {e}"))
    }
}

/// Puts the terminal on fd 0 in raw mode while it lives (when fd 0 is a terminal).
struct RawTerminal(Option<libc::termios>);

impl RawTerminal {
    fn enter() -> Self {
        // SAFETY: isatty only inspects fd 0.
        if unsafe { libc::isatty(0) } != 1 {
            return RawTerminal(None);
        }
        // SAFETY: termios is plain data; tcgetattr fills it for fd 0 or fails.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `t` is a valid termios to fill.
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return RawTerminal(None);
        }
        let saved = t;
        // SAFETY: cfmakeraw edits the struct it is given; tcsetattr applies a valid
        // termios to fd 0.
        unsafe {
            libc::cfmakeraw(&mut t);
            // Keep "\n" -> "\r\n" on output: guests that print bare newlines stay legible.
            t.c_oflag |= libc::OPOST | libc::ONLCR;
            libc::tcsetattr(0, libc::TCSANOW, &t);
        }
        RawTerminal(Some(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(t) = self.0.as_ref() {
            // SAFETY: restores the settings read from fd 0 in `enter`.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
        }
    }
}

enum End {
    Detached,
    Closed,
}

/// Reads the HTTP answer's head; returns (status, the bytes after the head).
fn read_head(s: &mut UnixStream) -> std::io::Result<(u16, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            return Ok((status, buf[end + 4..].to_vec()));
        }
        if buf.len() > 64 * 1024 {
            return Ok((0, Vec::new()));
        }
        match s.read(&mut chunk)? {
            0 => return Ok((0, Vec::new())),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// `oslet console NAME`: attaches this terminal until Ctrl-] (exit 0), the end of
/// input (exit 0) or the OSlet's end (exit 3); an OSlet that is not running or does
/// not exist is exit 1 with the supervisor's message.
pub fn run_client(sock: &Path, name: &str) -> i32 {
    let mut s = match UnixStream::connect(sock) {
        Ok(s) => s,
        Err(e) => {
            let err = crate::control::ControlError::NoSupervisor(sock.to_path_buf(), e);
            eprintln!("oslet console: {}", crate::cli::error_chain(&err));
            return 1;
        }
    };
    let req = format!(
        "POST /v1/oslets/{name}/console HTTP/1.1\r\nHost: oslet\r\nConnection: Upgrade\r\nUpgrade: oslet-console\r\nContent-Length: 0\r\n\r\n"
    );
    let (status, early) = match s.write_all(req.as_bytes()).and_then(|_| read_head(&mut s)) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("oslet console: {}: {e}", sock.display());
            return 1;
        }
    };
    if status != 101 {
        let mut body = early;
        let _ = s.read_to_end(&mut body);
        let msg = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        eprintln!("oslet console: {msg}");
        return 1;
    }
    eprintln!("oslet: attached to {name}'s console; detach with Ctrl-]");
    let (tx, rx) = mpsc::channel();
    let Ok(mut from) = s.try_clone() else {
        eprintln!("oslet console: cannot clone the connection");
        return 1;
    };
    let raw = RawTerminal::enter();
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut out = std::io::stdout();
            let _ = out.write_all(&early);
            let _ = out.flush();
            let mut buf = [0u8; 4096];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let _ = out.write_all(&buf[..n]);
                        let _ = out.flush();
                    }
                }
            }
            let _ = tx.send(End::Closed);
        });
    }
    let mut to = s;
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 1024];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let data = &buf[..n];
            let cut = data.iter().position(|&b| b == DETACH_BYTE);
            let send = &data[..cut.unwrap_or(n)];
            if !send.is_empty() && to.write_all(send).is_err() {
                break;
            }
            if cut.is_some() {
                break;
            }
        }
        // Said before the shutdown, which ends the output side too.
        let _ = tx.send(End::Detached);
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
    let end = rx.recv().unwrap_or(End::Closed);
    drop(raw);
    match end {
        End::Detached => {
            eprintln!("\r\noslet: detached from {name}'s console");
            0
        }
        End::Closed => {
            eprintln!("\r\noslet: {name}'s console closed (its VMM process ended)");
            3
        }
    }
}
