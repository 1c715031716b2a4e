//! Port-I/O devices of an OSlet and the dispatch of a vCPU's I/O exits to them.

pub mod debug;
pub mod serial;
pub mod vhost_user;
pub mod vhost_user_fs;
pub mod virtio_mmio;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use vm_superio::I8042Device;

use crate::log::RateLimiter;
use serial::{SerialPort, COM1_BASE};

/// The i8042 keyboard controller's ports (only its CPU-reset command matters).
pub const I8042_BASE: u16 = 0x60;
const I8042_LEN: u16 = 5;

/// What a guest's I/O access asks the VMM to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoAction {
    /// Nothing beyond the access itself.
    None,
    /// The guest wrote its power-off status to the debug exit port.
    PowerOff(u8),
    /// The guest reset the machine through the i8042.
    Reset,
    /// The first write to the debug console: the guest's first instruction ran.
    FirstMarker,
}

/// A trigger that only remembers that it fired.
#[derive(Default)]
pub struct Flag(AtomicBool);

impl vm_superio::Trigger for Flag {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// The port-I/O devices of one OSlet, shared by its vCPU threads.
pub struct PioDevices {
    serial: Mutex<SerialPort>,
    i8042: Mutex<I8042Device<Flag>>,
    marker_seen: AtomicBool,
    unknown: RateLimiter,
    links: std::sync::OnceLock<Vec<crate::link::LinkAttach>>,
    exits: std::sync::atomic::AtomicU64,
    fs: std::sync::OnceLock<std::sync::Arc<vhost_user_fs::VhostUserFs>>,
}

impl PioDevices {
    /// The devices of an OSlet with `serial` as COM1.
    pub fn new(serial: SerialPort) -> Self {
        Self {
            serial: Mutex::new(serial),
            i8042: Mutex::new(I8042Device::new(Flag::default())),
            marker_seen: AtomicBool::new(false),
            unknown: RateLimiter::new(5),
            links: std::sync::OnceLock::new(),
            exits: std::sync::atomic::AtomicU64::new(0),
            fs: std::sync::OnceLock::new(),
        }
    }

    /// A guest `out` to `port`.
    pub fn write(&self, port: u16, data: &[u8]) -> IoAction {
        let Some(&value) = data.first() else {
            return IoAction::None;
        };
        match port {
            p if (COM1_BASE..COM1_BASE + 8).contains(&p) => {
                lock(&self.serial).write((p - COM1_BASE) as u8, value);
                IoAction::None
            }
            p if (I8042_BASE..I8042_BASE + I8042_LEN).contains(&p) => {
                let mut dev = lock(&self.i8042);
                let _ = dev.write((p - I8042_BASE) as u8, value);
                if dev.reset_evt().0.swap(false, Ordering::SeqCst) {
                    IoAction::Reset
                } else {
                    IoAction::None
                }
            }
            debug::DEBUGCON_PORT => {
                if self.marker_seen.swap(true, Ordering::SeqCst) {
                    IoAction::None
                } else {
                    IoAction::FirstMarker
                }
            }
            debug::DEBUG_EXIT_PORT => IoAction::PowerOff(value),
            _ => IoAction::None,
        }
    }

    /// A guest `in` from `port`; unknown ports read as all ones, like an empty bus.
    pub fn read(&self, port: u16, data: &mut [u8]) {
        match port {
            p if (COM1_BASE..COM1_BASE + 8).contains(&p) => {
                let v = lock(&self.serial).read((p - COM1_BASE) as u8);
                data.fill(0);
                if let Some(b) = data.first_mut() {
                    *b = v;
                }
            }
            p if (I8042_BASE..I8042_BASE + I8042_LEN).contains(&p) => {
                let v = lock(&self.i8042).read((p - I8042_BASE) as u8);
                data.fill(0);
                if let Some(b) = data.first_mut() {
                    *b = v;
                }
            }
            _ => data.fill(0xff),
        }
    }

    /// Console input for COM1: how many of `bytes` its receive FIFO took.
    pub fn console_input(&self, bytes: &[u8]) -> usize {
        lock(&self.serial).input(bytes)
    }

    /// Counts one vCPU exit that reached the VMM.
    pub fn count_exit(&self) {
        self.exits.fetch_add(1, Ordering::Relaxed);
    }

    /// vCPU exits that reached the VMM so far.
    pub fn exits(&self) -> u64 {
        self.exits.load(Ordering::Relaxed)
    }

    /// Tells the devices where this OSlet's link windows are (once, before vCPUs run).
    pub fn set_links(&self, links: Vec<crate::link::LinkAttach>) {
        let _ = self.links.set(links);
    }

    /// Attaches the virtio-fs device (once, before vCPUs run).
    pub fn set_fs(&self, fs: std::sync::Arc<vhost_user_fs::VhostUserFs>) {
        let _ = self.fs.set(fs);
    }

    /// A guest MMIO read.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        match self.fs.get() {
            Some(fs) if vhost_user_fs::VhostUserFs::contains(addr) => fs.read(addr, data),
            _ => {
                self.unhandled_mmio(addr, false);
                data.fill(0xff);
            }
        }
    }

    /// A guest MMIO write.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        match self.fs.get() {
            Some(fs) if vhost_user_fs::VhostUserFs::contains(addr) => fs.write(addr, data),
            _ => self.unhandled_mmio(addr, true),
        }
    }

    /// An MMIO access outside any device: reads as all ones, writes are dropped. A
    /// write into a link window can only be a write to the peer's read-only section:
    /// it is dropped (KVM_MEM_READONLY) and reported as this OSlet's error.
    pub fn unhandled_mmio(&self, addr: u64, write: bool) {
        let window = self.links.get().and_then(|links| {
            links.iter().find(|l| {
                (l.window_gpa..l.window_gpa + 2 * crate::link::section_bytes(l.ring_bytes))
                    .contains(&addr)
            })
        });
        match window {
            Some(l) if write => self.unknown.warn(format_args!(
                "guest wrote {addr:#x} in the read-only section of its link with {}; the write is dropped",
                l.peer
            )),
            _ => self.unknown.warn(format_args!(
                "guest {} unbacked MMIO address {addr:#x}",
                if write { "wrote" } else { "read" }
            )),
        }
    }

    /// Flushes console output (at exit).
    pub fn flush(&self) {
        lock(&self.serial).flush();
    }
}

/// Locks a device mutex; a poisoned lock (a panic on another vCPU thread while it
/// held the device) still gives the device: its state is plain data and stays usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::ConsoleSink;
    use vmm_sys_util::eventfd::EventFd;

    fn devices() -> PioDevices {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        PioDevices::new(SerialPort::new(evt, ConsoleSink::off()))
    }

    #[test]
    fn debug_exit_port_reports_power_off_status() {
        assert_eq!(devices().write(0xf4, &[7]), IoAction::PowerOff(7));
    }

    #[test]
    fn only_the_first_debugcon_write_is_the_marker() {
        let d = devices();
        assert_eq!(d.write(0xe9, b"!"), IoAction::FirstMarker);
        assert_eq!(d.write(0xe9, b"!"), IoAction::None);
    }

    #[test]
    fn i8042_cpu_reset_command_resets() {
        let d = devices();
        assert_eq!(d.write(0x64, &[0xfe]), IoAction::Reset);
    }

    #[test]
    fn unknown_ports_read_all_ones_and_serial_lsr_reads_thr_empty() {
        let d = devices();
        let mut b = [0u8; 2];
        d.read(0x1234, &mut b);
        assert_eq!(b, [0xff, 0xff]);
        let mut lsr = [0u8];
        d.read(0x3fd, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
    }
}
