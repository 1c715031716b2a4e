//! `oslet-msg`: the Linux userspace side of oslet's interconnect. It reads the links
//! oslet described on the kernel command line, maps a link's window and talks to
//! the peer OSlet through the interconnect crate's rings.

pub mod agent;
pub mod links;
pub mod window;

/// Overrides `/proc/cmdline` (for tests on a host).
pub const CMDLINE_ENV: &str = "OSLET_MSG_CMDLINE";

/// The kernel command line to read links from.
pub fn cmdline() -> std::io::Result<String> {
    match std::env::var_os(CMDLINE_ENV) {
        Some(path) => std::fs::read_to_string(path),
        None => std::fs::read_to_string("/proc/cmdline"),
    }
}
