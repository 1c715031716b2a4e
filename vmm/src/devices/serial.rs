//! COM1: a 16550A UART (vm-superio) whose interrupt is an irqfd on GSI 4.

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::console::ConsoleSink;

/// COM1's first I/O port.
pub const COM1_BASE: u16 = 0x3f8;
/// COM1's interrupt line.
pub const COM1_IRQ: u32 = 4;

/// An eventfd as a vm-superio interrupt trigger.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.write(1)
    }
}

/// The serial device of one OSlet.
pub struct SerialPort {
    uart: Serial<IrqTrigger, NoEvents, ConsoleSink>,
}

impl SerialPort {
    /// A UART raising `irq` and writing to `sink`.
    pub fn new(irq: EventFd, sink: ConsoleSink) -> Self {
        Self {
            uart: Serial::new(IrqTrigger(irq), sink),
        }
    }

    /// A guest write at `offset` (0..8).
    pub fn write(&mut self, offset: u8, value: u8) {
        // The only error is a failed interrupt trigger (eventfd overflow), which the
        // guest recovers from by polling LSR; nothing to report per byte.
        let _ = self.uart.write(offset, value);
    }

    /// A guest read at `offset`.
    pub fn read(&mut self, offset: u8) -> u8 {
        self.uart.read(offset)
    }

    /// Puts console input into the receive FIFO (raising the interrupt if the guest
    /// enabled it); returns how many bytes fit, 0 when the FIFO is full.
    pub fn input(&mut self, bytes: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(bytes).unwrap_or(0)
    }

    /// Flushes buffered console output.
    pub fn flush(&mut self) {
        use std::io::Write;
        let _ = self.uart.writer_mut().flush();
    }
}
