//! The oslet test kernel (oslet-guest/testkernel), built by build.rs and embedded in
//! the binary: `kernel = "builtin:testkernel"` boots it through the ELF/PVH path.

/// The test kernel's ELF image.
pub static IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/oslet-testkernel"));

/// Writes the embedded test kernel to `path` (for QEMU comparisons and inspection).
pub fn write_to(path: &std::path::Path) -> std::io::Result<()> {
    std::fs::write(path, IMAGE)
}
