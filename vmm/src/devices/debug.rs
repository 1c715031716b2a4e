//! Two one-byte debug ports:
//! - 0xe9, the debug console (as QEMU's isa-debugcon): the first write is the
//!   "first guest instruction" timestamp (the test kernel's first instruction
//!   writes it); later bytes are ignored.
//! - 0xf4, the debug exit (as QEMU's isa-debug-exit): the byte written is the
//!   guest's power-off status.

/// The debug console port.
pub const DEBUGCON_PORT: u16 = 0xe9;
/// The debug exit port.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
