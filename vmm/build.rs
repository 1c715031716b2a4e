//! Builds the oslet test kernel (oslet-guest/testkernel) with a nested cargo call and
//! leaves its ELF image in OUT_DIR for `include_bytes!`.
//!
//! The kernel is freestanding and needs its own flags (no SSE, static, its own linker
//! script), which live in oslet-guest/testkernel/rustflags, one per line.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let kdir = manifest_dir.join("../oslet-guest/testkernel");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for p in [
        "src",
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "link.ld",
        "rustflags",
    ] {
        println!("cargo:rerun-if-changed={}", kdir.join(p).display());
    }
    println!("cargo:rerun-if-changed=../interconnect/src");
    println!("cargo:rerun-if-changed=../interconnect/Cargo.toml");

    let flags = std::fs::read_to_string(kdir.join("rustflags")).unwrap_or_else(|e| {
        panic!("cannot read {}: {e}", kdir.join("rustflags").display());
    });
    let encoded: Vec<&str> = flags
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let target_dir = out.join("testkernel-target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(kdir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", encoded.join("\x1f"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        let inherited_build_state = k.starts_with("CARGO_CFG_")
            || k.starts_with("CARGO_FEATURE_")
            || k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || k.starts_with("CARGO_PROFILE_")
            || k.starts_with("CARGO_BUILD_")
            || matches!(
                k.as_str(),
                "RUSTFLAGS"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "CARGO_TARGET_DIR"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_ENCODED_RUSTDOCFLAGS"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
                    | "RUSTDOC"
            );
        if inherited_build_state {
            cmd.env_remove(&k);
        }
    }
    let status = cmd
        .status()
        .expect("cannot run cargo to build the test kernel");
    assert!(
        status.success(),
        "building the oslet test kernel failed (see above)"
    );
    let built = target_dir.join("release/oslet-testkernel");
    copy(&built, &out.join("oslet-testkernel"));
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", from.display(), to.display()));
}
