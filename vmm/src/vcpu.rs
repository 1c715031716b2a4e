//! A vCPU on its own host thread: pinned to its host CPU, running `KVM_RUN` and
//! handing I/O exits to the devices, until the guest ends the OSlet or the VMM
//! kicks it out (a real-time signal whose handler sets `immediate_exit`, so a kick
//! that lands just before `KVM_RUN` is not lost).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_bindings::kvm_run;
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::os::unix::thread::JoinHandleExt;

use crate::devices::{IoAction, PioDevices};
use crate::log::RateLimiter;
use crate::monotonic_ns;

/// Why an OSlet's guest stopped, as seen by the vCPU that noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestExit {
    /// The guest wrote its status to the debug exit port.
    PowerOff(u8),
    /// The guest reset (i8042 reset or a reset system event).
    Reset,
    /// The guest asked for power-off through a KVM system event.
    Shutdown,
    /// The guest crashed: triple fault, emulation failure, failed entry.
    Crash(String),
}

/// What vCPU threads tell the OSlet's main thread (and a stop signal, which wakes
/// it through the same channel).
#[derive(Debug)]
pub enum VcpuEvent {
    /// The guest's first instruction marker, at this CLOCK_MONOTONIC time.
    FirstMarker(u64),
    /// The guest ended (from vCPU `index`).
    Exit(usize, GuestExit),
    /// `KVM_RUN` failed in a way the VMM cannot recover from.
    Error(usize, String),
    /// The guest's console output ends in a partial line (written from a vCPU
    /// thread's port I/O): flush it soon.
    ConsolePending,
    /// A stop signal arrived (sent by the signal watcher, not a vCPU thread).
    Stop,
}

thread_local! {
    static KVM_RUN_PTR: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let p = KVM_RUN_PTR.with(|c| c.get());
    if !p.is_null() {
        // SAFETY: the pointer was set by this very thread to its vCPU's kvm_run mapping,
        // which stays mapped while the thread runs (the VcpuFd lives on this thread's
        // stack until after the pointer is cleared). A volatile byte store is
        // async-signal-safe.
        unsafe { std::ptr::addr_of_mut!((*p).immediate_exit).write_volatile(1) };
    }
}

/// Offset from SIGRTMIN of the signal that kicks vCPUs.
const KICK_SIGNAL_OFFSET: libc::c_int = 0;

fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN() + KICK_SIGNAL_OFFSET
}

/// Installs the kick signal handler (once per process).
pub fn install_kick_handler() -> std::io::Result<()> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
}

/// A running vCPU thread.
pub struct VcpuHandle {
    thread: JoinHandle<()>,
}

impl VcpuHandle {
    /// Kicks the thread out of `KVM_RUN`.
    pub fn kick(&self) {
        let sig = kick_signal();
        // SAFETY: the pthread_t comes from a JoinHandle that has not been joined yet, so
        // it names a live (or zombie, not yet reaped) thread; pthread_kill on it is sound.
        unsafe {
            libc::pthread_kill(self.thread.as_pthread_t(), sig);
        }
    }

    /// Whether the thread has ended.
    pub fn finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the thread to end.
    pub fn join(self) {
        // A vCPU thread that panicked has already reported nothing; the OSlet's outcome
        // is decided by the main thread, so the panic payload is dropped here.
        let _ = self.thread.join();
    }
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> std::io::Result<()> {
    crate::affinity::pin_current(&crate::affinity::cpu_set(&[cpu]))
}

/// Starts vCPU `index` on its own thread, pinned to `host_cpu`.
pub fn spawn(
    name: &str,
    index: usize,
    mut vcpu: VcpuFd,
    host_cpu: Option<usize>,
    devices: Arc<PioDevices>,
    stop: Arc<AtomicBool>,
    events: Sender<VcpuEvent>,
) -> std::io::Result<VcpuHandle> {
    let thread = std::thread::Builder::new()
        .name(format!("{name}-vcpu{index}"))
        .spawn(move || {
            if let Some(cpu) = host_cpu {
                if let Err(e) = pin_to(cpu) {
                    crate::log::warn(format_args!(
                        "vCPU {index}: cannot pin to host CPU {cpu}: {e}"
                    ));
                }
            }
            let run_ptr: *mut kvm_run = vcpu.get_kvm_run();
            KVM_RUN_PTR.with(|c| c.set(run_ptr));
            run_loop(index, &mut vcpu, &devices, &stop, &events);
            KVM_RUN_PTR.with(|c| c.set(std::ptr::null_mut()));
        })?;
    Ok(VcpuHandle { thread })
}

fn internal_error_detail(vcpu: &mut VcpuFd) -> String {
    let run = vcpu.get_kvm_run();
    // SAFETY: after KVM_EXIT_INTERNAL_ERROR the `internal` member of the exit union is
    // the one KVM filled in; reading plain integers from it is sound.
    let (suberror, ndata, data0) = unsafe {
        let i = run.__bindgen_anon_1.internal;
        (i.suberror, i.ndata, i.data[0])
    };
    let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
    let what = match suberror {
        1 => "emulation failure",
        2 => "simultaneous exceptions",
        3 => "delivery event failure",
        _ => "internal error",
    };
    format!(
        "KVM {what} (suberror {suberror}, {ndata} data words, first {data0:#x}) at rip {rip:#x}"
    )
}

fn run_loop(
    index: usize,
    vcpu: &mut VcpuFd,
    devices: &PioDevices,
    stop: &AtomicBool,
    events: &Sender<VcpuEvent>,
) {
    let unknown_exit = RateLimiter::new(5);
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let result = vcpu.run();
        if result.is_ok() {
            devices.count_exit();
        }
        let exit = match result {
            Ok(VcpuExit::IoOut(port, data)) => match devices.write(port, data) {
                IoAction::None => None,
                IoAction::PowerOff(s) => Some(GuestExit::PowerOff(s)),
                IoAction::Reset => Some(GuestExit::Reset),
                IoAction::FirstMarker => {
                    let _ = events.send(VcpuEvent::FirstMarker(monotonic_ns()));
                    None
                }
            },
            Ok(VcpuExit::IoIn(port, data)) => {
                devices.read(port, data);
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                devices.mmio_read(addr, data);
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                devices.mmio_write(addr, data);
                None
            }
            Ok(VcpuExit::Hlt) => None,
            Ok(VcpuExit::Shutdown) => Some(GuestExit::Crash(format!(
                "triple fault on vCPU {index} (KVM_EXIT_SHUTDOWN)"
            ))),
            Ok(VcpuExit::SystemEvent(kind, _)) => Some(match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => GuestExit::Reset,
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => GuestExit::Shutdown,
                k => GuestExit::Crash(format!("system event {k} on vCPU {index}")),
            }),
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(GuestExit::Crash(format!(
                "KVM failed to enter vCPU {index} (hardware reason {reason:#x}, host cpu {cpu})"
            ))),
            Ok(VcpuExit::InternalError) => Some(GuestExit::Crash(internal_error_detail(vcpu))),
            Ok(other) => {
                unknown_exit.warn(format_args!("vCPU {index}: unhandled exit {other:?}"));
                None
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                vcpu.set_kvm_immediate_exit(0);
                None
            }
            Err(e) => {
                let _ = events.send(VcpuEvent::Error(
                    index,
                    format!("KVM_RUN failed on vCPU {index}: {e}"),
                ));
                return;
            }
        };
        if let Some(exit) = exit {
            let _ = events.send(VcpuEvent::Exit(index, exit));
            return;
        }
    }
}
