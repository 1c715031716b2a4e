//! `ring3-agent`: the guest agent of the test kernel. It attaches side A of the
//! agent link the VMM describes with `oslet.agentlink=<window_gpa>,<ring_bytes>`
//! and sends its VMM an `AgentReport` a second, forever: what this kernel knows
//! of itself — the CPUs it brought online, the RAM in its memory map, the RAM its
//! image and ring-3 arena hold, one runnable context (this loop), its uptime.
//! With `agent-garbage` it first sends two malformed reports, which the VMM
//! must refuse while it keeps taking the good ones; with `agent-scribble` it
//! writes noise over its own section after three reports, which the VMM must
//! report as a broken agent link while the OSlet runs on.

use core::sync::atomic::Ordering;

use super::args::number;
use super::{fail, Env};
use super::link::{attach_window, window_config};
use crate::serial::Hex;
use oslet_interconnect::agent::{AgentReport, REPORT_BYTES};
use oslet_interconnect::{LinkConfig, Side};

fn parse(spec: &[u8]) -> Option<(u64, LinkConfig)> {
    let mut f = spec.split(|&b| b == b',');
    let gpa = f.next().and_then(number)?;
    let ring = f.next().and_then(number)?;
    if f.next().is_some() {
        return None;
    }
    Some((gpa, window_config(gpa, ring).ok()?))
}

/// Writes pseudo-random words over our own section's control area and ring (what a
/// buggy or hostile guest might do); the VMM must call the link broken and go on.
fn scribble(gpa: u64, section_bytes: u64) {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut at = gpa + 0x40; // from the state word on: the magic stays, the rest is noise
    while at + 8 <= gpa + section_bytes.min(0x2000) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // SAFETY: [gpa, gpa + section_bytes) is our own section of the agent window,
        // mapped writable for this guest (see `run`); nothing else here uses it now.
        unsafe { (at as usize as *mut u64).write_volatile(x) };
        at += 8;
    }
    say!("agent: scribbled over the agent link's section");
}

pub fn run(env: &mut Env) -> ! {
    let Some(spec) = env.args.value(b"oslet.agentlink") else {
        fail("ring3-agent: no oslet.agentlink on the command line", b"")
    };
    let Some((gpa, config)) = parse(spec) else {
        fail("ring3-agent: bad oslet.agentlink", spec)
    };
    let mut ep = attach_window("agent", b"", gpa, Side::A, config);
    let total_kib = crate::MEM_KIB.load(Ordering::Relaxed);
    let used_kib = (crate::smp::kernel_end().saturating_sub(0x10_0000)
        + super::ARENA_BYTES.load(Ordering::Relaxed))
        / 1024;
    let cpus = crate::smp::ONLINE.load(Ordering::SeqCst) as u32;
    say!(
        "agent: reporting on the agent link at ",
        Hex(gpa),
        " (",
        cpus,
        " cpus, ",
        total_kib,
        " KiB)"
    );
    if env.args.has("agent-garbage") {
        let mut bad = AgentReport::default().encode();
        bad[0] ^= 0xff;
        // The VMM takes the link (acknowledges our epoch) at its next poll.
        let wait = env.clock.deadline(5000);
        let mut sent = 0u32;
        for m in [&bad[..], &bad[..10]] {
            while ep.send(m).is_err() && !wait.passed() {
                core::hint::spin_loop();
            }
            sent += 1;
        }
        say!("agent: sent ", sent, " malformed reports");
    }
    let mut seq = 0u64;
    let mut tick = env.clock.deadline(1000);
    loop {
        seq += 1;
        let r = AgentReport {
            seq,
            uptime_ms: env.clock.now_ns() / 1_000_000,
            load_milli: [1000; 3],
            cpus_online: cpus.max(1),
            procs_running: 1,
            mem_total_kib: total_kib,
            mem_available_kib: total_kib.saturating_sub(used_kib),
        };
        let msg: [u8; REPORT_BYTES] = r.encode();
        // A full ring (the VMM not reading) only drops this report.
        let _ = ep.send(&msg);
        if seq == 3 && env.args.has("agent-scribble") {
            scribble(gpa, config.section_bytes() as u64);
        }
        while !tick.passed() {
            core::hint::spin_loop();
        }
        tick.restart();
    }
}
