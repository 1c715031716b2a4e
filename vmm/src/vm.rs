//! One OSlet's KVM VM: memory slots, the in-kernel irqchip and PIT.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::GuestMemoryMmap;

use crate::arch::layout::{KVM_IDENTITY_MAP_ADDRESS, KVM_TSS_ADDRESS};
use crate::memory;

/// Errors creating a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A VM-level KVM ioctl failed.
    #[error("KVM refused to {0}")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
}

/// Creates the VM with its irqchip, PIT and the guest RAM slots.
pub fn create(kvm: &Kvm, mem: &GuestMemoryMmap) -> Result<VmFd, VmError> {
    let vm = kvm
        .create_vm()
        .map_err(|e| VmError::Kvm("create a VM", e))?;
    vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS)
        .map_err(|e| VmError::Kvm("set the identity-map address", e))?;
    vm.set_tss_address(KVM_TSS_ADDRESS)
        .map_err(|e| VmError::Kvm("set the TSS address", e))?;
    vm.create_irq_chip()
        .map_err(|e| VmError::Kvm("create the in-kernel irqchip", e))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit)
        .map_err(|e| VmError::Kvm("create the in-kernel PIT", e))?;
    for (slot, (guest, len, host)) in memory::regions(mem).into_iter().enumerate() {
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: guest,
            memory_size: len,
            userspace_addr: host,
            flags: 0,
        };
        // SAFETY: `host..host+len` is a live mapping owned by `mem`, which outlives the
        // VM (the OSlet keeps both until the VM fd is closed), and the slots do not
        // overlap because they come from one non-overlapping region collection.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| VmError::Kvm("add a memory slot", e))?;
    }
    Ok(vm)
}
