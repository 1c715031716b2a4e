//! Loading a kernel (ELF vmlinux, with or without a PVH note, or bzImage), its
//! initramfs and command line into guest memory, and writing the boot information
//! the kernel reads: PVH `hvm_start_info` + memory map, or the Linux zero page +
//! e820 table; plus the MP table describing every vCPU.

use std::fs::File;
use std::io::{Cursor, Read, Seek};
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{KernelLoader, KernelLoaderResult};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, ReadVolatile};

use crate::arch::acpi::{self, ACPI_START};
use crate::arch::layout::{
    e820_map, ram_ranges, CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START, PVH_INFO_START,
    ZERO_PAGE_START,
};
use crate::arch::mptable::{self, MPTABLE_START};
use crate::arch::regs::EntryMode;

/// Errors loading a kernel and writing boot information.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file could not be opened.
    #[error("cannot open kernel {}", .0.display())]
    OpenKernel(PathBuf, #[source] std::io::Error),
    /// The initramfs could not be opened.
    #[error("cannot open initrd {}", .0.display())]
    OpenInitrd(PathBuf, #[source] std::io::Error),
    /// The kernel loader refused the image.
    #[error("cannot load kernel {what}")]
    Load {
        /// Which kernel.
        what: String,
        /// The loader's reason.
        #[source]
        source: linux_loader::loader::Error,
    },
    /// The initramfs does not fit below the kernel's limit.
    #[error("initrd of {size} bytes does not fit in guest RAM above the kernel (end {kernel_end:#x}); give the OSlet more memory")]
    InitrdTooBig {
        /// initrd size.
        size: u64,
        /// End of the loaded kernel.
        kernel_end: u64,
    },
    /// Reading the initramfs into guest memory failed.
    #[error("cannot read initrd into guest memory")]
    ReadInitrd(#[source] std::io::Error),
    /// The command line is too long or holds a NUL.
    #[error("kernel command line is {0} bytes; at most {max} fit", max = CMDLINE_MAX_SIZE - 1)]
    CmdlineTooLong(usize),
    /// A boot structure could not be written.
    #[error("cannot write the {0} into guest memory")]
    GuestWrite(&'static str),
    /// The MP table could not be built.
    #[error("cannot build the MP table")]
    MpTable(#[from] mptable::MpTableError),
    /// The ACPI tables could not be built.
    #[error("cannot build the ACPI tables")]
    Acpi(#[from] acpi::AcpiError),
    /// The bzImage asks for a newer boot protocol than it provides headers for.
    #[error("bzImage has no setup header")]
    NoSetupHeader,
}

/// Where a kernel image comes from.
pub enum KernelSource<'a> {
    /// Bytes in the oslet binary (the test kernel).
    Embedded(&'a [u8]),
    /// A file on the host, with its format as the config check detected it.
    File(&'a Path, oslet_config::KernelFormat),
}

/// What the boot vCPU needs to start the kernel.
#[derive(Debug, Clone, Copy)]
pub struct BootInfo {
    /// How the boot vCPU enters the kernel.
    pub entry: EntryMode,
    /// End of the loaded kernel image (guest physical).
    pub kernel_end: u64,
}

fn load_image<F: Read + ReadVolatile + Seek>(
    mem: &GuestMemoryMmap,
    image: &mut F,
    format: oslet_config::KernelFormat,
    what: &str,
) -> Result<KernelLoaderResult, BootError> {
    let res = match format {
        oslet_config::KernelFormat::Elf => {
            Elf::load(mem, None, image, Some(GuestAddress(HIMEM_START)))
        }
        oslet_config::KernelFormat::BzImage => {
            BzImage::load(mem, None, image, Some(GuestAddress(HIMEM_START)))
        }
    };
    res.map_err(|source| BootError::Load {
        what: what.to_string(),
        source,
    })
}

/// Highest RAM address below 4 GiB (the end of the first RAM range).
fn low_ram_end(mem_size: u64) -> u64 {
    ram_ranges(mem_size).first().map(|r| r.0 + r.1).unwrap_or(0)
}

/// Loads `initrd` at the highest page-aligned address that fits below `limit`.
fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
    limit: u64,
) -> Result<(u64, u64), BootError> {
    let mut f = File::open(path).map_err(|e| BootError::OpenInitrd(path.to_path_buf(), e))?;
    let size = f
        .metadata()
        .map_err(|e| BootError::OpenInitrd(path.to_path_buf(), e))?
        .len();
    let top = limit & !0xfff;
    let addr = top.checked_sub(size).map(|a| a & !0xfff);
    let addr = match addr {
        Some(a) if a >= kernel_end => a,
        _ => return Err(BootError::InitrdTooBig { size, kernel_end }),
    };
    mem.read_exact_volatile_from(GuestAddress(addr), &mut f, size as usize)
        .map_err(|e| BootError::ReadInitrd(std::io::Error::other(e.to_string())))?;
    Ok((addr, size))
}

fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<(), BootError> {
    if cmdline.len() >= CMDLINE_MAX_SIZE || cmdline.contains('\0') {
        return Err(BootError::CmdlineTooLong(cmdline.len()));
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_START))
        .map_err(|_| BootError::GuestWrite("command line"))
}

/// Everything `load` needs.
pub struct BootRequest<'a> {
    /// The kernel.
    pub kernel: KernelSource<'a>,
    /// An optional initramfs.
    pub initrd: Option<&'a Path>,
    /// The full command line.
    pub cmdline: &'a str,
    /// Guest RAM size in bytes.
    pub mem_size: u64,
    /// vCPU count (for the MP table).
    pub vcpus: usize,
    /// virtio-mmio devices to declare in the ACPI DSDT.
    pub mmio_devices: &'a [acpi::MmioDevice],
}

/// Loads kernel, initrd and command line and writes the boot information.
pub fn load(mem: &GuestMemoryMmap, req: &BootRequest<'_>) -> Result<BootInfo, BootError> {
    let (result, format) = match req.kernel {
        KernelSource::Embedded(bytes) => {
            let mut c = Cursor::new(bytes);
            (
                load_image(
                    mem,
                    &mut c,
                    oslet_config::KernelFormat::Elf,
                    "builtin:testkernel",
                )?,
                oslet_config::KernelFormat::Elf,
            )
        }
        KernelSource::File(path, format) => {
            let mut f =
                File::open(path).map_err(|e| BootError::OpenKernel(path.to_path_buf(), e))?;
            (
                load_image(mem, &mut f, format, &path.display().to_string())?,
                format,
            )
        }
    };
    write_cmdline(mem, req.cmdline)?;
    let table = mptable::build(req.vcpus, MPTABLE_START)?;
    mem.write_slice(&table, GuestAddress(MPTABLE_START))
        .map_err(|_| BootError::GuestWrite("MP table"))?;
    // Both descriptions of the CPUs: the MP table for kernels without ACPI, ACPI (MADT)
    // for kernels built without CONFIG_X86_MPPARSE, such as Debian's cloud kernel.
    let tables = acpi::build_with_devices(req.vcpus, ACPI_START, req.mmio_devices)?;
    mem.write_slice(&tables.bytes, GuestAddress(ACPI_START))
        .map_err(|_| BootError::GuestWrite("ACPI tables"))?;
    let rsdp = tables.rsdp_addr;

    let kernel_end = result.kernel_end;
    let ram_top = low_ram_end(req.mem_size);
    match (format, result.pvh_boot_cap) {
        (oslet_config::KernelFormat::Elf, PvhBootCapability::PvhEntryPresent(entry)) => {
            let initrd = match req.initrd {
                Some(p) => Some(load_initrd(mem, p, kernel_end, ram_top)?),
                None => None,
            };
            let start_info = write_pvh_info(mem, req.mem_size, initrd, rsdp)?;
            Ok(BootInfo {
                entry: EntryMode::Pvh {
                    entry: entry.0,
                    start_info,
                },
                kernel_end,
            })
        }
        (oslet_config::KernelFormat::Elf, _) => {
            let initrd = match req.initrd {
                Some(p) => Some(load_initrd(mem, p, kernel_end, ram_top)?),
                None => None,
            };
            write_zero_page(mem, req, None, initrd, rsdp)?;
            Ok(BootInfo {
                entry: EntryMode::Linux64 {
                    entry: result.kernel_load.0,
                },
                kernel_end,
            })
        }
        (oslet_config::KernelFormat::BzImage, _) => {
            let hdr = result.setup_header.ok_or(BootError::NoSetupHeader)?;
            let limit = match hdr.initrd_addr_max {
                0 => 0x37ff_ffff,
                m => u64::from(m) + 1,
            }
            .min(ram_top);
            let initrd = match req.initrd {
                Some(p) => Some(load_initrd(mem, p, kernel_end, limit)?),
                None => None,
            };
            write_zero_page(mem, req, Some(hdr), initrd, rsdp)?;
            Ok(BootInfo {
                // The 64-bit entry point sits 0x200 bytes into the protected-mode kernel.
                entry: EntryMode::Linux64 {
                    entry: result.kernel_load.0 + 0x200,
                },
                kernel_end,
            })
        }
    }
}

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// Writes `hvm_start_info`, its memory map and module list at PVH_INFO_START.
fn write_pvh_info(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    initrd: Option<(u64, u64)>,
    rsdp: u64,
) -> Result<u64, BootError> {
    let map = e820_map(mem_size);
    let info_size = std::mem::size_of::<hvm_start_info>() as u64;
    let memmap_addr = PVH_INFO_START + info_size.next_multiple_of(64);
    let entry_size = std::mem::size_of::<hvm_memmap_table_entry>() as u64;
    let modlist_addr = memmap_addr + entry_size * map.len() as u64;

    for (i, (addr, size, kind)) in map.iter().enumerate() {
        let e = hvm_memmap_table_entry {
            addr: *addr,
            size: *size,
            type_: *kind as u32,
            reserved: 0,
        };
        mem.write_obj(e, GuestAddress(memmap_addr + i as u64 * entry_size))
            .map_err(|_| BootError::GuestWrite("PVH memory map"))?;
    }
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: memmap_addr,
        memmap_entries: map.len() as u32,
        rsdp_paddr: rsdp,
        ..Default::default()
    };
    if let Some((paddr, size)) = initrd {
        let m = hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        };
        mem.write_obj(m, GuestAddress(modlist_addr))
            .map_err(|_| BootError::GuestWrite("PVH module list"))?;
        info.nr_modules = 1;
        info.modlist_paddr = modlist_addr;
    }
    mem.write_obj(info, GuestAddress(PVH_INFO_START))
        .map_err(|_| BootError::GuestWrite("PVH start info"))?;
    Ok(PVH_INFO_START)
}

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;

/// Writes the Linux zero page with the e820 map at ZERO_PAGE_START.
fn write_zero_page(
    mem: &GuestMemoryMmap,
    req: &BootRequest<'_>,
    hdr: Option<linux_loader::loader::bootparam::setup_header>,
    initrd: Option<(u64, u64)>,
    rsdp: u64,
) -> Result<(), BootError> {
    let mut params = boot_params {
        acpi_rsdp_addr: rsdp,
        ..Default::default()
    };
    if let Some(h) = hdr {
        params.hdr = h;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = req.cmdline.len() as u32 + 1;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    let map = e820_map(req.mem_size);
    if map.len() > params.e820_table.len() {
        return Err(BootError::GuestWrite("e820 table"));
    }
    for (i, (addr, size, kind)) in map.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: *kind as u32,
        };
    }
    params.e820_entries = map.len() as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(|_| BootError::GuestWrite("zero page"))
}
