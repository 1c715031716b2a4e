//! The `oslet-msg` command: `list`, `send`, `recv`, `ping`, `serve`, `bench`, `agent`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use oslet_interconnect::{bench, Endpoint, PeerState, RecvError, SendError, Side};
use oslet_msg::links::{self, LinkInfo};
use oslet_msg::window::Window;

#[derive(Parser)]
#[command(
    name = "oslet-msg",
    about = "Message other OSlets over oslet's shared-memory links"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List this OSlet's links.
    List,
    /// Send one message to PEER.
    Send { peer: String, message: String },
    /// Receive one message from PEER and print it.
    Recv {
        peer: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Round trips to PEER (which runs `oslet-msg serve`); prints p50/p99 in µs.
    Ping {
        peer: String,
        #[arg(long, short = 'n', default_value_t = 1000)]
        count: usize,
    },
    /// Answer PEER's pings (and benchmarks) until it detaches.
    Serve { peer: String },
    /// The guest agent: report this guest's load, CPUs, memory and uptime to its VMM
    /// over the agent link, every INTERVAL ms (`oslet top` shows them).
    Agent {
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Stop after this many reports (0: run until killed).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Round-trip benchmark against PEER running `oslet-msg serve`; prints a JSON record.
    Bench {
        peer: String,
        #[arg(long, default_value_t = 64)]
        msg_bytes: usize,
        #[arg(long, default_value_t = 10_000)]
        round_trips: usize,
    },
}

fn find(peer: &str) -> Result<LinkInfo, String> {
    let cmdline =
        oslet_msg::cmdline().map_err(|e| format!("cannot read the kernel command line: {e}"))?;
    let all = links::parse(&cmdline).map_err(|e| e.to_string())?;
    all.iter().find(|l| l.peer == peer).cloned().ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|l| l.peer.as_str()).collect();
        format!(
            "no link to {peer:?}; this OSlet's links go to: {}",
            names.join(", ")
        )
    })
}

fn wait_up(ep: &mut Endpoint<'_>, deadline: Instant) -> Result<(), String> {
    loop {
        match ep.poll() {
            Ok(p) if p.connected && p.peer_up => return Ok(()),
            Ok(_) => {}
            Err(v) => return Err(format!("link broken: {v:?}")),
        }
        if Instant::now() > deadline {
            return Err(format!("peer not attached ({:?})", ep.peer_state()));
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

fn with_endpoint<T>(
    peer: &str,
    f: impl FnOnce(&mut Endpoint<'_>, &Window) -> Result<T, String>,
) -> Result<T, String> {
    let link = find(peer)?;
    let w = Window::open(&link).map_err(|e| e.to_string())?;
    let side = if link.side_a { Side::A } else { Side::B };
    let mut ep = Endpoint::attach(w.region(), side, w.config)
        .map_err(|e| format!("cannot attach: {e:?}"))?;
    f(&mut ep, &w)
}

fn send_blocking(
    ep: &mut Endpoint<'_>,
    w: &Window,
    msg: &[u8],
    deadline: Instant,
) -> Result<(), String> {
    loop {
        match ep.send(msg) {
            Ok(()) => {
                if ep.needs_notify() {
                    w.ring();
                }
                return Ok(());
            }
            Err(SendError::Full) if Instant::now() < deadline => std::hint::spin_loop(),
            Err(e) => return Err(format!("send: {e}")),
        }
    }
}

fn recv_blocking(
    ep: &mut Endpoint<'_>,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<usize, String> {
    loop {
        match ep.recv(buf) {
            Ok(Some(n)) => return Ok(n),
            Ok(None) if Instant::now() < deadline => std::hint::spin_loop(),
            Ok(None) => return Err("timed out waiting for a message".into()),
            Err(RecvError::PeerDown) => return Err("peer went down".into()),
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
}

fn agent(interval_ms: u64, count: u64) -> Result<(), String> {
    let cmdline =
        oslet_msg::cmdline().map_err(|e| format!("cannot read the kernel command line: {e}"))?;
    let (gpa, ring) = oslet_msg::agent::parse_link(&cmdline).map_err(|e| e.to_string())?;
    let w = Window::open_at(gpa, ring, None).map_err(|e| e.to_string())?;
    let mut ep = Endpoint::attach(w.region(), Side::A, w.config)
        .map_err(|e| format!("cannot attach the agent link: {e:?}"))?;
    wait_up(&mut ep, Instant::now() + Duration::from_secs(10))?;
    let mut seq = 0u64;
    loop {
        seq += 1;
        let r = oslet_msg::agent::report(seq).map_err(|e| e.to_string())?;
        match ep.send(&r.encode()) {
            // A full ring means the VMM is not reading: this report is dropped. (The
            // VMM side never restarts while the guest lives; if it did, the next
            // report would go to the new one.)
            Ok(()) | Err(SendError::Full) | Err(SendError::PeerRestarted) => {}
            Err(e) => return Err(format!("agent link: {e}")),
        }
        if count != 0 && seq >= count {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(interval_ms));
    }
}

fn run(cmd: Cmd) -> Result<(), String> {
    match cmd {
        Cmd::Agent { interval_ms, count } => agent(interval_ms, count),
        Cmd::List => {
            let cmdline = oslet_msg::cmdline().map_err(|e| e.to_string())?;
            for l in links::parse(&cmdline).map_err(|e| e.to_string())? {
                println!(
                    "{}\tside {}\twindow {:#x}\tring {} KiB\tdoorbell {:#x}\tgsi {}",
                    l.peer,
                    if l.side_a { "a" } else { "b" },
                    l.window_gpa,
                    l.ring_bytes / 1024,
                    l.doorbell_gpa,
                    l.gsi
                );
            }
            Ok(())
        }
        Cmd::Send { peer, message } => with_endpoint(&peer, |ep, w| {
            let deadline = Instant::now() + Duration::from_secs(10);
            wait_up(ep, deadline)?;
            send_blocking(ep, w, message.as_bytes(), deadline)?;
            // Stay attached until the peer has consumed it: detaching resets our ring.
            while ep
                .poll()
                .map(|p| p.tx_free_bytes < ep.config().ring_bytes())
                .unwrap_or(false)
            {
                if Instant::now() > deadline {
                    return Err("peer did not take the message".into());
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            Ok(())
        }),
        Cmd::Recv { peer, timeout } => with_endpoint(&peer, |ep, _| {
            let deadline = Instant::now() + Duration::from_secs(timeout);
            wait_up(ep, deadline)?;
            let mut buf = vec![0u8; ep.max_payload()];
            let n = recv_blocking(ep, &mut buf, deadline)?;
            println!("{}", String::from_utf8_lossy(&buf[..n]));
            Ok(())
        }),
        Cmd::Ping { peer, count } => with_endpoint(&peer, |ep, w| {
            let deadline = Instant::now() + Duration::from_secs(30);
            wait_up(ep, deadline)?;
            let mut rtts = Vec::with_capacity(count);
            let mut buf = [0u8; 64];
            for i in 0..count as u64 {
                let t = Instant::now();
                send_blocking(ep, w, &i.to_le_bytes(), deadline)?;
                let n = recv_blocking(ep, &mut buf, deadline)?;
                if buf[..n] != i.to_le_bytes() {
                    return Err(format!("ping {i}: wrong answer"));
                }
                rtts.push(t.elapsed().as_nanos() as u64);
            }
            rtts.sort_unstable();
            println!(
                "{count} pings to {peer}: p50 {:.2} us, p99 {:.2} us",
                bench::percentile(&rtts, 50.0) as f64 / 1e3,
                bench::percentile(&rtts, 99.0) as f64 / 1e3
            );
            Ok(())
        }),
        Cmd::Serve { peer } => with_endpoint(&peer, |ep, w| {
            let mut buf = vec![0u8; ep.max_payload()];
            let mut seen_up = false;
            loop {
                match ep.recv(&mut buf) {
                    Ok(Some(n)) => {
                        seen_up = true;
                        send_blocking(ep, w, &buf[..n], Instant::now() + Duration::from_secs(10))?;
                    }
                    Ok(None) => {
                        if seen_up && !matches!(ep.peer_state(), PeerState::Up { .. }) {
                            return Ok(());
                        }
                        std::hint::spin_loop();
                    }
                    // A new incarnation of the peer: serve it as well.
                    Err(RecvError::PeerRestarted) => {}
                    Err(RecvError::PeerDown) if seen_up => return Ok(()),
                    Err(RecvError::PeerDown) => std::thread::sleep(Duration::from_micros(100)),
                    Err(e) => return Err(format!("recv: {e}")),
                }
            }
        }),
        Cmd::Bench {
            peer,
            msg_bytes,
            round_trips,
        } => with_endpoint(&peer, |ep, w| {
            wait_up(ep, Instant::now() + Duration::from_secs(30))?;
            let mut rtts = Vec::with_capacity(round_trips);
            let msg = vec![0xa5u8; msg_bytes.clamp(8, ep.max_payload())];
            let mut buf = vec![0u8; ep.max_payload()];
            let deadline = Instant::now() + Duration::from_secs(60);
            for _ in 0..round_trips {
                let t = Instant::now();
                send_blocking(ep, w, &msg, deadline)?;
                recv_blocking(ep, &mut buf, deadline)?;
                rtts.push(t.elapsed().as_nanos() as u64);
            }
            rtts.sort_unstable();
            println!(
                "{{\"case\":\"oslet-msg\",\"msg_bytes\":{},\"rtt_p50_ns\":{},\"rtt_p99_ns\":{}}}",
                msg.len(),
                bench::percentile(&rtts, 50.0),
                bench::percentile(&rtts, 99.0)
            );
            Ok(())
        }),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse().cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oslet-msg: {e}");
            ExitCode::FAILURE
        }
    }
}
