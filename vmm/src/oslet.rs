//! One OSlet's VMM, run inside its own process: build the VM from the plan
//! (memory → VM → devices → kernel → vCPUs), run it, and report how it ended.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::Cap;
use oslet_config::{Console, Kernel, OsletPlan};
use vmm_sys_util::eventfd::EventFd;

use crate::agent::AgentLink;
use crate::arch::{cpuid, regs};
use crate::boot::{self, BootRequest, KernelSource};
use crate::console::ConsoleSink;
use crate::devices::serial::{SerialPort, COM1_IRQ};
use crate::devices::PioDevices;
use crate::events::{Event, EventSink, Outcome};
use crate::kvm_stats::VcpuStats;
use crate::vcpu::{self, GuestExit, VcpuEvent};
use crate::{kvm, link, memory, monotonic_ns, signals, testkernel, vm};

/// How often the main loop sends its Stats event.
const STATS_EVERY_NS: u64 = 1_000_000_000;
/// How soon a partial console line (a prompt) reaches the log and attached consoles.
const PARTIAL_LINE_NS: u64 = 20_000_000;
/// The longest the main loop sleeps: how soon it sees its virtiofsd's exit or a
/// vhost-user backend's hang-up (vCPU events, console output and stop signals wake
/// it at once).
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// Errors building an OSlet.
#[derive(Debug, thiserror::Error)]
pub enum OsletError {
    /// KVM is unusable.
    #[error(transparent)]
    Kvm(#[from] kvm::KvmError),
    /// Guest RAM could not be allocated.
    #[error("guest memory")]
    Memory(#[from] memory::MemoryError),
    /// The VM could not be created.
    #[error("VM setup")]
    Vm(#[from] vm::VmError),
    /// The kernel could not be loaded.
    #[error("kernel boot")]
    Boot(#[from] boot::BootError),
    /// vCPU registers could not be set.
    #[error("vCPU setup")]
    Regs(#[from] regs::RegsError),
    /// Another KVM call failed.
    #[error("KVM refused to {0}")]
    KvmCall(&'static str, #[source] kvm_ioctls::Error),
    /// The console log could not be opened.
    #[error("cannot open console log {}", .0.display())]
    ConsoleLog(std::path::PathBuf, #[source] std::io::Error),
    /// A link could not be mapped.
    #[error("link")]
    Link(#[from] link::LinkError),
    /// virtiofsd could not be started.
    #[error("shared filesystem")]
    Virtiofsd(#[from] crate::virtiofsd::VirtiofsdError),
    /// The virtio-fs device could not be set up.
    #[error("shared filesystem")]
    FsDevice(#[from] crate::devices::vhost_user_fs::FsDeviceError),
    /// The agent link could not be set up.
    #[error("agent link")]
    Agent(#[from] crate::agent::AgentError),
    /// The virtio-fs device could not be set up with the backend the file names.
    #[error("shared filesystem (shared_fs.socket)")]
    FsBackend(#[source] crate::devices::vhost_user_fs::FsDeviceError),
    /// A thread or signal could not be set up.
    #[error("cannot {0}")]
    Os(&'static str, #[source] std::io::Error),
}

/// What a VMM process is given on stdin: its OSlet's plan and its links.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VmmPlan {
    /// The OSlet, as validated by `oslet up`.
    pub oslet: OsletPlan,
    /// Its links, with fds numbered as in the VMM process.
    pub links: Vec<link::LinkAttach>,
    /// `[shared_fs]`, when the partition has one.
    #[serde(default)]
    pub shared_fs: Option<oslet_config::SharedFsPlan>,
}

/// The kernel command line an OSlet boots with: the file's (or a default for Linux),
/// then what oslet tells the guest: its name, the TSC rate, its agent link and one
/// word per link.
pub fn kernel_cmdline(
    plan: &OsletPlan,
    links: &[link::LinkAttach],
    shared_fs: Option<&oslet_config::SharedFsPlan>,
    tsc_khz: Option<u32>,
    agent_word: &str,
) -> String {
    let mut c = match (&plan.kernel, &plan.cmdline) {
        (_, Some(c)) => c.clone(),
        (Kernel::TestKernel, None) => String::new(),
        (Kernel::Image { .. }, None) => "console=ttyS0 reboot=k panic=1 pci=off".to_string(),
    };
    {
        let mut words = vec![format!("oslet.name={}", plan.name)];
        if let Some(khz) = tsc_khz {
            words.push(format!("oslet.tsc_khz={khz}"));
        }
        words.push(agent_word.to_string());
        words.extend(links.iter().map(link::cmdline_word));
        if let Some(fs) = shared_fs {
            words.push(crate::devices::vhost_user_fs::cmdline_word());
            words.push(format!("oslet.shared={}", fs.tag));
        }
        for w in words {
            if !c.is_empty() {
                c.push(' ');
            }
            c.push_str(&w);
        }
    }
    c
}

/// Feeds this process's stdin (what `oslet console` clients type; the plan was its
/// first line) into COM1's receive FIFO, waiting while the FIFO is full.
fn spawn_console_input(name: &str, devices: Arc<PioDevices>) {
    let spawned = std::thread::Builder::new()
        .name(format!("{name}-console-in"))
        .spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 256];
            loop {
                let n = match std::io::Read::read(&mut stdin, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let mut rest = &buf[..n];
                while !rest.is_empty() {
                    let took = devices.console_input(rest);
                    rest = &rest[took..];
                    if took == 0 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
        });
    if let Err(e) = spawned {
        crate::log::warn(format_args!("{name}: no console input: {e}"));
    }
}

/// Builds and runs the OSlet of `plan` until it ends; reports events to `sink`.
pub fn run(vmm_plan: VmmPlan, sink: &mut EventSink) -> Result<Outcome, OsletError> {
    let plan = &vmm_plan.oslet;
    let kvm = kvm::open()?;
    let mem = memory::create_guest_memory(
        plan.memory_bytes,
        memory::MemoryOptions {
            hugepage_size: plan.hugepages,
            numa_node: plan.numa_node,
            shared: vmm_plan.shared_fs.is_some(),
        },
    )?;
    let vm = vm::create(&kvm, &mem)?;

    // What wakes the main loop: vCPU threads' events, and a partial console line.
    let (tx, rx) = mpsc::channel();
    let console = match plan.console {
        Console::Terminal => ConsoleSink::new(Some(&plan.log_file), true),
        Console::Log => ConsoleSink::new(Some(&plan.log_file), false),
        Console::Off => Ok(ConsoleSink::off()),
    }
    .map_err(|e| OsletError::ConsoleLog(plan.log_file.clone(), e))?;
    let partial = tx.clone();
    let console = console.on_partial_line(move || {
        let _ = partial.send(VcpuEvent::ConsolePending);
    });
    let on_stop = tx.clone();
    if let Err(e) = signals::wake_on_stop(move || {
        let _ = on_stop.send(VcpuEvent::Stop);
    }) {
        crate::log::warn(format_args!(
            "{}: cannot watch for stop signals ({e}); they are seen within {} ms",
            plan.name,
            LOOK_EVERY.as_millis()
        ));
    }
    let serial_irq =
        EventFd::new(libc::EFD_NONBLOCK).map_err(|e| OsletError::Os("create an eventfd", e))?;
    vm.register_irqfd(&serial_irq, COM1_IRQ)
        .map_err(|e| OsletError::KvmCall("register the serial irqfd", e))?;
    let devices = Arc::new(PioDevices::new(SerialPort::new(serial_irq, console)));

    let base_cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| OsletError::KvmCall("report its supported CPUID", e))?;
    let tsc_deadline = vm.check_extension(Cap::TscDeadlineTimer);
    let count = plan.vcpus();
    let mut fds = Vec::with_capacity(count);
    for i in 0..count {
        let fd = vm
            .create_vcpu(i as u64)
            .map_err(|e| OsletError::KvmCall("create a vCPU", e))?;
        let mut c = base_cpuid.clone();
        cpuid::filter(&mut c, i as u32, count as u32, tsc_deadline);
        fd.set_cpuid2(&c)
            .map_err(|e| OsletError::KvmCall("set CPUID", e))?;
        regs::setup_msrs(&fd)?;
        regs::setup_fpu(&fd)?;
        regs::setup_lint(&fd)?;
        fds.push(fd);
    }
    let tsc_khz = fds.first().and_then(|fd| fd.get_tsc_khz().ok());
    // KVM's own per-vCPU counters (all exits, time halted) for `oslet top`; an older
    // kernel without KVM_GET_STATS_FD just leaves them out.
    let vcpu_stats: Vec<VcpuStats> = match fds.iter().map(VcpuStats::open).collect() {
        Ok(v) => v,
        Err(e) => {
            crate::log::warn(format_args!(
                "{}: no KVM vCPU statistics ({e}); oslet top falls back to host thread times",
                plan.name
            ));
            Vec::new()
        }
    };

    if !vmm_plan.links.is_empty() && !vm.check_extension(Cap::ReadonlyMem) {
        return Err(OsletError::KvmCall(
            "map read-only memory (KVM_CAP_READONLY_MEM), which links need",
            kvm_ioctls::Error::new(libc::ENOTSUP),
        ));
    }
    let mut links = Vec::with_capacity(vmm_plan.links.len());
    for (j, l) in vmm_plan.links.iter().enumerate() {
        links.push(link::attach(
            &vm,
            l.clone(),
            link::FIRST_SLOT + 2 * j as u32,
        )?);
    }

    // The guest agent's link to this VMM (reports for `oslet top`).
    let mut agent = AgentLink::attach(&vm)?;

    let kernel = match &plan.kernel {
        Kernel::TestKernel => KernelSource::Embedded(testkernel::IMAGE),
        Kernel::Image { path, format } => KernelSource::File(path, *format),
    };
    // The shared filesystem: our own virtiofsd (or the configured socket), then the
    // device. Declared before the vCPUs so that it outlives them.
    let mut daemon = None;
    let mut fs_device = None;
    let mut fs_socket = std::path::PathBuf::new();
    if let Some(fs) = &vmm_plan.shared_fs {
        let socket = match fs.socket_for(&plan.name) {
            Some(s) => s,
            None => {
                let d = crate::virtiofsd::Virtiofsd::start(
                    fs,
                    &crate::virtiofsd::socket_path(&plan.name),
                )?;
                let s = d.socket().to_path_buf();
                daemon = Some(d);
                s
            }
        };
        let dev = crate::devices::vhost_user_fs::VhostUserFs::new(&vm, &mem, &socket, &fs.tag)
            .map_err(|e| match daemon {
                Some(_) => OsletError::FsDevice(e),
                None => OsletError::FsBackend(e),
            })?;
        let dev = Arc::new(dev);
        fs_socket = socket;
        devices.set_fs(Arc::clone(&dev));
        fs_device = Some(dev);
    }
    // Linux in hardware-reduced ACPI mode (and Debian's kernel, built without
    // CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES) finds virtio-mmio devices in the DSDT.
    let mmio_devices: Vec<crate::arch::acpi::MmioDevice> = fs_device
        .iter()
        .map(|_| crate::arch::acpi::MmioDevice {
            addr: crate::devices::vhost_user_fs::FS_MMIO_BASE as u32,
            len: crate::devices::virtio_mmio::MMIO_LEN as u32,
            gsi: crate::devices::vhost_user_fs::FS_GSI,
        })
        .collect();
    let cmdline = kernel_cmdline(
        plan,
        &vmm_plan.links,
        vmm_plan.shared_fs.as_ref(),
        tsc_khz,
        &agent.cmdline_word(),
    );
    let info = boot::load(
        &mem,
        &BootRequest {
            kernel,
            initrd: plan.initrd.as_deref(),
            cmdline: &cmdline,
            mem_size: plan.memory_bytes,
            vcpus: plan.vcpus(),
            mmio_devices: &mmio_devices,
        },
    )?;
    if let Some(bsp) = fds.first() {
        regs::setup_boot_vcpu(bsp, &mem, info.entry)?;
    }
    devices.set_links(links.iter().map(|l| l.info.clone()).collect());

    spawn_console_input(&plan.name, Arc::clone(&devices));
    vcpu::install_kick_handler().map_err(|e| OsletError::Os("install the vCPU kick handler", e))?;
    let stop = Arc::new(AtomicBool::new(false));
    sink.send(&Event::Started {
        mono_ns: monotonic_ns(),
    });
    let mut handles = Vec::with_capacity(count);
    for (i, fd) in fds.into_iter().enumerate() {
        let h = vcpu::spawn(
            &plan.name,
            i,
            fd,
            plan.host_cpus.get(i).copied(),
            Arc::clone(&devices),
            Arc::clone(&stop),
            tx.clone(),
        )
        .map_err(|e| OsletError::Os("start a vCPU thread", e))?;
        handles.push(h);
    }
    drop(tx);

    // The VMM process started on the housekeeping CPUs (vmm_process pins it before
    // exec); KVM's worker thread, made from the first vCPU thread when it first runs,
    // goes there too at the first statistics tick.
    let mut housekeeping = crate::affinity::current().ok();
    let mut last_stats = monotonic_ns();
    // When a partial console line is due to be flushed (CLOCK_MONOTONIC ns).
    let mut flush_at: Option<u64> = None;
    let mut vcpus_gone = false;
    let outcome = loop {
        let now = monotonic_ns();
        if now.saturating_sub(last_stats) >= STATS_EVERY_NS {
            last_stats = now;
            if let Some(set) = housekeeping.take() {
                crate::affinity::move_kvm_workers(&set);
            }
            sink.send(&Event::Stats {
                exits: devices.exits(),
                mono_ns: now,
                vcpus: vcpu_stats.iter().filter_map(|s| s.read().ok()).collect(),
                guest: agent.poll(&plan.name),
            });
        }
        if let Some(signal) = signals::stop_requested() {
            break Outcome::Stopped { signal };
        }
        // A partial line (a shell prompt) reaches the log and attached consoles too.
        if flush_at.is_some_and(|t| now >= t) {
            flush_at = None;
            devices.flush();
        }
        if let Some(d) = daemon.as_mut() {
            if let Some(status) = d.exited() {
                crate::log::warn(format_args!(
                    "{}: virtiofsd (pid {}) exited ({status}); the shared filesystem is gone for this OSlet",
                    plan.name,
                    d.pid()
                ));
                daemon = None;
                if let Some(dev) = &fs_device {
                    dev.backend_failed();
                }
            }
        } else if let Some(dev) = &fs_device {
            // A backend at `[shared_fs] socket`: its exit is its socket closing.
            if dev.check_hangup() {
                crate::log::warn(format_args!(
                    "{}: the vhost-user backend at {} (shared_fs.socket) closed the connection; the shared filesystem is gone for this OSlet",
                    plan.name,
                    fs_socket.display()
                ));
            }
        }
        // Asleep until a vCPU event, a stop signal, a flush that is due, the next
        // statistics, or LOOK_EVERY (how soon virtiofsd's exit or a backend's
        // hang-up is seen): few wake-ups to take a pinned vCPU's CPU.
        let next_stats = (last_stats + STATS_EVERY_NS).saturating_sub(now);
        let wait = [Some(next_stats), flush_at.map(|t| t.saturating_sub(now))]
            .into_iter()
            .flatten()
            .map(Duration::from_nanos)
            .fold(LOOK_EVERY, Duration::min);
        match rx.recv_timeout(wait) {
            Ok(VcpuEvent::ConsolePending) => {
                flush_at.get_or_insert(now + PARTIAL_LINE_NS);
            }
            // Seen at the top of the loop.
            Ok(VcpuEvent::Stop) => {}
            Ok(VcpuEvent::FirstMarker(ns)) => sink.send(&Event::FirstInstruction { mono_ns: ns }),
            Ok(VcpuEvent::Exit(_, exit)) => {
                break match exit {
                    GuestExit::PowerOff(status) => Outcome::PoweredOff { status },
                    GuestExit::Reset => Outcome::Reset,
                    GuestExit::Shutdown => Outcome::Shutdown,
                    GuestExit::Crash(reason) => Outcome::Crashed { reason },
                }
            }
            Ok(VcpuEvent::Error(_, error)) => break Outcome::Failed { error },
            // The console keeps a sender, so the channel does not disconnect when the
            // vCPU threads end: a timeout looks whether they all did. A vCPU thread
            // that ends sends why first (one that panicked does not), so once they
            // are all gone, the next wait still gets what they sent.
            Err(mpsc::RecvTimeoutError::Timeout) if !vcpus_gone => {
                vcpus_gone = handles.iter().all(|h| h.finished());
            }
            Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => {
                break Outcome::Failed {
                    error: "every vCPU thread ended without a reason".to_string(),
                }
            }
        }
    };

    stop.store(true, Ordering::SeqCst);
    for h in &handles {
        h.kick();
    }
    for h in handles {
        h.join();
    }
    devices.flush();
    drop(fs_device);
    drop(daemon);
    // The VM (and its memory slots) goes before the guest memory and windows it maps.
    drop(vm);
    drop(agent);
    drop(links);
    drop(mem);
    Ok(outcome)
}
