//! The CPUID a vCPU sees: KVM's supported set, filtered so that the topology leaves
//! describe this OSlet (its vCPU count, one core per vCPU, one thread per core), the
//! hypervisor bit is set, and the APIC IDs match the MP table.
//!
//! Note (../KVM-NOTES): on the project's development hosts the nested hypervisor
//! shows the guest the host's CPUID whatever is set here; on real hardware KVM
//! honours it.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_V2_EXT_TOPOLOGY: u32 = 0x1f;
const LEAF_AMD_EXT_APIC: u32 = 0x8000_001e;
const LEAF_AMD_SIZES: u32 = 0x8000_0008;

const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const ECX_TSC_DEADLINE: u32 = 1 << 24;

/// Bits needed to number `n` things.
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Applies oslet's topology to `cpuid` for vCPU `index` of `count`.
pub fn filter(cpuid: &mut CpuId, index: u32, count: u32, tsc_deadline: bool) {
    let core_bits = bits_for(count);
    for e in cpuid.as_mut_slice().iter_mut() {
        filter_entry(e, index, count, core_bits, tsc_deadline);
    }
}

fn filter_entry(
    e: &mut kvm_cpuid_entry2,
    index: u32,
    count: u32,
    core_bits: u32,
    tsc_deadline: bool,
) {
    match e.function {
        LEAF_FEATURES => {
            // EBX[31:24] initial APIC id, [23:16] logical processors per package,
            // [15:8] CLFLUSH line size in 8-byte units.
            e.ebx = (index << 24) | ((count.min(255)) << 16) | (8 << 8);
            e.ecx |= ECX_HYPERVISOR;
            if tsc_deadline {
                e.ecx |= ECX_TSC_DEADLINE;
            }
            if count > 1 {
                e.edx |= EDX_HTT;
            } else {
                e.edx &= !EDX_HTT;
            }
        }
        LEAF_CACHE_PARAMS => {
            // EAX[31:26] cores per package - 1; EAX[25:14] threads sharing this cache - 1.
            let level = (e.eax >> 5) & 0x7;
            let sharing = if level >= 3 {
                count.saturating_sub(1)
            } else {
                0
            };
            e.eax = (e.eax & 0x3fff)
                | ((count.saturating_sub(1).min(63)) << 26)
                | ((sharing & 0xfff) << 14);
        }
        LEAF_EXT_TOPOLOGY | LEAF_V2_EXT_TOPOLOGY => {
            // Level 0: SMT (1 thread per core), level 1: core (count cores).
            match e.index {
                0 => {
                    e.eax = 0;
                    e.ebx = 1;
                    e.ecx = 1 << 8; // level type SMT
                }
                1 => {
                    e.eax = core_bits;
                    e.ebx = count;
                    e.ecx = (2 << 8) | 1; // level type core
                }
                _ => {
                    e.eax = 0;
                    e.ebx = 0;
                    e.ecx = e.index;
                }
            }
            e.edx = index;
        }
        LEAF_AMD_EXT_APIC => {
            e.eax = index;
            e.ebx = index & 0xff; // compute unit id, one thread per unit
            e.ecx = 0;
        }
        LEAF_AMD_SIZES => {
            // ECX[15:12] APIC id size, [7:0] number of threads - 1.
            e.ecx = (core_bits << 12) | (count.saturating_sub(1) & 0xff);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    #[test]
    fn leaf1_carries_apic_id_count_and_hypervisor_bit() {
        let mut e = entry(1, 0);
        filter_entry(&mut e, 5, 8, bits_for(8), false);
        assert_eq!(e.ebx >> 24, 5);
        assert_eq!((e.ebx >> 16) & 0xff, 8);
        assert_ne!(e.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e.edx & EDX_HTT, 0);
    }

    #[test]
    fn leaf_b_describes_cores_of_this_oslet() {
        let mut core = entry(0xb, 1);
        filter_entry(&mut core, 3, 4, bits_for(4), false);
        assert_eq!((core.eax, core.ebx, core.edx), (2, 4, 3));
        let mut smt = entry(0xb, 0);
        filter_entry(&mut smt, 3, 4, bits_for(4), false);
        assert_eq!(smt.ebx, 1);
    }

    #[test]
    fn bits_for_counts() {
        assert_eq!(
            [
                bits_for(1),
                bits_for(2),
                bits_for(3),
                bits_for(8),
                bits_for(9)
            ],
            [0, 1, 2, 3, 4]
        );
    }
}
