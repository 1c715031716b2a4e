//! The `oslet` command. All logic lives in the `oslet-vmm` library.

fn main() {
    std::process::exit(oslet_vmm::cli::main());
}
