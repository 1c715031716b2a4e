//! Where an OSlet's serial output goes: the OSlet's log file and, in `terminal`
//! mode, this process's stdout (which `oslet up` reads and prefixes with the name).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// A line-buffered sink for guest console bytes.
pub struct ConsoleSink {
    log: Option<File>,
    stdout: bool,
    line: Vec<u8>,
    /// Called, on the writing thread, when bytes wait in a partial line and it has
    /// not been called since the last [`Write::flush`]: whoever flushes learns that
    /// a flush is due (a prompt has no newline) without looking all the time.
    on_partial: Option<Box<dyn Fn() + Send>>,
    told: bool,
}

/// Longest line kept before it is flushed anyway (a guest without newlines must not
/// grow our memory).
const MAX_LINE: usize = 4096;

impl ConsoleSink {
    /// A sink writing to `log_file` and, if `stdout`, to stdout. The log is appended
    /// to, so a restarted OSlet's earlier boots stay in it.
    pub fn new(log_file: Option<&Path>, stdout: bool) -> io::Result<Self> {
        let log = match log_file {
            Some(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                Some(OpenOptions::new().create(true).append(true).open(p)?)
            }
            None => None,
        };
        Ok(Self {
            log,
            stdout,
            line: Vec::with_capacity(256),
            on_partial: None,
            told: false,
        })
    }

    /// A sink that drops everything.
    pub fn off() -> Self {
        Self {
            log: None,
            stdout: false,
            line: Vec::new(),
            on_partial: None,
            told: false,
        }
    }

    /// Calls `f` when a partial line starts waiting (once until the next flush).
    pub fn on_partial_line(mut self, f: impl Fn() + Send + 'static) -> Self {
        self.on_partial = Some(Box::new(f));
        self
    }

    fn flush_line(&mut self) {
        if self.line.is_empty() {
            return;
        }
        // Console output is best-effort: a full disk or a closed pipe must not stop
        // the guest, so write errors are dropped here.
        if let Some(f) = self.log.as_mut() {
            let _ = f.write_all(&self.line);
        }
        if self.stdout {
            let mut out = io::stdout().lock();
            let _ = out.write_all(&self.line);
            let _ = out.flush();
        }
        self.line.clear();
    }
}

impl Write for ConsoleSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            self.line.push(b);
            if b == b'\n' || self.line.len() >= MAX_LINE {
                self.flush_line();
            }
        }
        if !self.line.is_empty() && !self.told {
            self.told = true;
            if let Some(f) = &self.on_partial {
                f();
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_line();
        self.told = false;
        Ok(())
    }
}

impl Drop for ConsoleSink {
    fn drop(&mut self) {
        self.flush_line();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_line_is_announced_once_until_the_next_flush() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let told = Arc::new(AtomicUsize::new(0));
        let t = Arc::clone(&told);
        let mut s = ConsoleSink::new(Some(&p), false)
            .unwrap()
            .on_partial_line(move || {
                t.fetch_add(1, Ordering::SeqCst);
            });
        s.write_all(b"whole line\n").unwrap();
        assert_eq!(told.load(Ordering::SeqCst), 0, "nothing waits");
        s.write_all(b"$ ").unwrap();
        s.write_all(b"more\nand ").unwrap();
        assert_eq!(told.load(Ordering::SeqCst), 1, "once until flushed");
        s.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "whole line\n$ more\nand "
        );
        s.write_all(b"x").unwrap();
        assert_eq!(told.load(Ordering::SeqCst), 2, "again after the flush");
    }

    #[test]
    fn log_file_gets_whole_lines_and_the_tail_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("logs/x.log");
        {
            let mut s = ConsoleSink::new(Some(&p), false).unwrap();
            s.write_all(b"one\ntw").unwrap();
            assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\n");
            s.write_all(b"o").unwrap();
        }
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\ntwo");
        // A second boot (a restart) appends: nothing of the first is lost.
        {
            let mut s = ConsoleSink::new(Some(&p), false).unwrap();
            s.write_all(b"\nthree\n").unwrap();
        }
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\ntwo\nthree\n");
    }
}
