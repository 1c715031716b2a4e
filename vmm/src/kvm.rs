//! Opening `/dev/kvm` and checking that it can run an OSlet, with one-line errors
//! that say what to do.

use std::ffi::CString;
use std::path::PathBuf;

use kvm_ioctls::{Cap, Kvm};

/// Environment variable naming another KVM device node (for tests of the error path).
pub const KVM_DEVICE_ENV: &str = "OSLET_KVM_DEVICE";

/// Why KVM cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// The device node does not exist.
    #[error("{}: no such device; this host has no KVM (load the kvm_intel or kvm_amd module, or enable virtualization in the firmware)", .0.display())]
    Missing(PathBuf),
    /// Permission denied.
    #[error("{}: permission denied; add your user to the kvm group (usermod -aG kvm $USER) or run as root", .0.display())]
    Denied(PathBuf),
    /// Some other open error.
    #[error("{}: cannot open: {source}", .0.display(), source = .1)]
    Open(PathBuf, std::io::Error),
    /// The node answers no KVM ioctl.
    #[error("{}: not a KVM device (KVM_GET_API_VERSION fails); point OSLET_KVM_DEVICE at /dev/kvm or unset it", .0.display())]
    NotKvm(PathBuf),
    /// The API version is not 12.
    #[error("{}: KVM API version {v}, oslet needs 12", .0.display(), v = .1)]
    Version(PathBuf, i32),
    /// A capability oslet relies on is missing.
    #[error("{}: KVM lacks {cap}, which oslet needs", .0.display(), cap = .1)]
    MissingCap(PathBuf, &'static str),
}

/// The KVM device path: `/dev/kvm` unless `OSLET_KVM_DEVICE` says otherwise.
pub fn device_path() -> PathBuf {
    std::env::var_os(KVM_DEVICE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/kvm"))
}

/// Opens KVM and checks the capabilities an OSlet needs.
pub fn open() -> Result<Kvm, KvmError> {
    let path = device_path();
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
        KvmError::Open(
            path.clone(),
            std::io::Error::from_raw_os_error(libc::EINVAL),
        )
    })?;
    let kvm = Kvm::new_with_path(&c).map_err(|e| match e.errno() {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => KvmError::Missing(path.clone()),
        libc::EACCES | libc::EPERM => KvmError::Denied(path.clone()),
        n => KvmError::Open(path.clone(), std::io::Error::from_raw_os_error(n)),
    })?;
    let v = kvm.get_api_version();
    if v < 0 {
        return Err(KvmError::NotKvm(path));
    }
    if v != 12 {
        return Err(KvmError::Version(path, v));
    }
    for (cap, name) in [
        (Cap::Irqchip, "the in-kernel irqchip (KVM_CAP_IRQCHIP)"),
        (Cap::Irqfd, "irqfd (KVM_CAP_IRQFD)"),
        (Cap::Ioeventfd, "ioeventfd (KVM_CAP_IOEVENTFD)"),
        (Cap::Pit2, "the in-kernel PIT (KVM_CAP_PIT2)"),
        (
            Cap::ImmediateExit,
            "immediate exit (KVM_CAP_IMMEDIATE_EXIT)",
        ),
        (Cap::UserMemory, "user memory slots (KVM_CAP_USER_MEMORY)"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(KvmError::MissingCap(path, name));
        }
    }
    Ok(kvm)
}

/// /dev/kvm for a unit test: None (the test skips, saying why) where it cannot be
/// opened, unless OSLET_REQUIRE_KVM is set (as in CI), where that fails the test.
#[cfg(test)]
pub(crate) fn for_test() -> Option<Kvm> {
    match Kvm::new() {
        Ok(k) => Some(k),
        Err(e) if std::env::var_os("OSLET_REQUIRE_KVM").is_none() => {
            eprintln!("skipped: /dev/kvm cannot be opened here ({e})");
            None
        }
        Err(e) => panic!("OSLET_REQUIRE_KVM is set but /dev/kvm cannot be opened: {e}"),
    }
}
