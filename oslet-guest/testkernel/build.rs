//! Link the test kernel as a static, non-PIE ELF at 1 MiB with ./link.ld.
//! Codegen flags (no SSE, static relocation model) cannot be set from here;
//! they live in ./rustflags and must come in through CARGO_ENCODED_RUSTFLAGS
//! (build.sh and vmm/build.rs do that). Building without them fails here, so
//! a kernel with SSE in it is never produced silently.
use std::env;

fn main() {
    let dir = env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=rustflags");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");

    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if !flags.split('\u{1f}').any(|f| f.contains("-sse")) {
        panic!(
            "oslet-testkernel must be built with the flags in {dir}/rustflags \
             (one per line) passed as CARGO_ENCODED_RUSTFLAGS, joined with 0x1f: \
             use {dir}/build.sh"
        );
    }

    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
        "-Wl,-z,max-page-size=0x1000",
        "-Wl,-z,norelro",
        "-Wl,--no-eh-frame-hdr",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{dir}/link.ld");
}
