//! `oslet-msg agent` end to end on the host: the agent process reports this
//! machine's own /proc figures over a file standing in for the agent link's window
//! (OSLET_MSG_MEM); this test holds the VMM's side (B) and decodes the reports as
//! the VMM does. Inside a Linux OSlet the same code maps the window from /dev/mem.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oslet_interconnect::agent::{AgentReport, AGENT_RING_BYTES};
use oslet_interconnect::{Endpoint, RecvError, Side};
use oslet_msg::window::Window;

fn host_mem_total_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn agent_reports_this_machines_load_cpus_and_memory_over_the_agent_link() {
    let dir = tempfile::tempdir().unwrap();
    let window = dir.path().join("agent-window");
    let w_len = 2 * (4096 + AGENT_RING_BYTES as u64);
    std::fs::File::create(&window)
        .unwrap()
        .set_len(w_len)
        .unwrap();
    let cmdline = dir.path().join("cmdline");
    std::fs::write(
        &cmdline,
        format!("console=ttyS0 oslet.name=app oslet.agentlink=0xcfe00000,{AGENT_RING_BYTES:#x}\n"),
    )
    .unwrap();
    // The VMM's side, attached first as in a real OSlet.
    let w = Window::open_file(&window, AGENT_RING_BYTES).unwrap();
    let mut vmm = Endpoint::attach(w.region(), Side::B, w.config).unwrap();
    // Runs until killed (a VMM reads it for as long as the guest lives).
    let mut agent = Command::new(env!("CARGO_BIN_EXE_oslet-msg"))
        .args(["agent", "--interval-ms", "100"])
        .env("OSLET_MSG_MEM", &window)
        .env("OSLET_MSG_CMDLINE", &cmdline)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reports = Vec::new();
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(20);
    while reports.len() < 3 && Instant::now() < deadline {
        match vmm.recv(&mut buf) {
            Ok(Some(n)) => reports.push(AgentReport::decode(&buf[..n]).unwrap()),
            // Not attached yet (or between its DOWN and UP while attaching).
            Ok(None) | Err(RecvError::PeerDown) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("agent link: {e}"),
        }
    }
    let alive = agent.try_wait().unwrap().is_none();
    let _ = agent.kill();
    let out = agent.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(alive, "the agent ended: {err}");
    assert_eq!(reports.len(), 3, "{reports:?} {err}");
    assert_eq!(
        reports.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let r = reports[2];
    assert_eq!(r.mem_total_kib, host_mem_total_kib(), "{r:?}");
    let online = std::thread::available_parallelism().unwrap().get() as u32;
    assert!(
        r.cpus_online >= online && r.cpus_online > 0,
        "{r:?}, {online}"
    );
    assert!(r.mem_available_kib > 0 && r.mem_available_kib <= r.mem_total_kib);
    assert!(r.uptime_ms > 0 && reports[0].uptime_ms <= r.uptime_ms);
}

#[test]
fn agent_without_an_agent_link_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let cmdline = dir.path().join("cmdline");
    std::fs::write(&cmdline, "console=ttyS0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_oslet-msg"))
        .args(["agent", "--count", "1"])
        .env("OSLET_MSG_CMDLINE", &cmdline)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no oslet.agentlink="), "{err}");
}
