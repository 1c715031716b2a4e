//! x86_64 specifics: the guest physical layout, MP table, CPUID and boot registers.

pub mod acpi;
pub mod cpuid;
pub mod layout;
pub mod mptable;
pub mod regs;
