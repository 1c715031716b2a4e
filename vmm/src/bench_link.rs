//! `oslet bench link`: what a message between OSlets costs, side by side in one run:
//! (a) two OSlets polling a link from ring 3 of the test kernel, (b) the same two
//! OSlets waiting for each other's doorbells (an interrupt through ioeventfd → irqfd,
//! taken in the test kernel's ring 0), (c) the same rings between two host threads,
//! (d) a pipe and (e) a UNIX socket between two host processes.
//!
//! (a) and (c) run in alternating rounds, back to back, with the same plan (round
//! trips and bytes streamed per size), and each round's two runs are compared with
//! each other: on a shared machine the speed of everything drifts over seconds, so
//! runs minutes apart do not compare.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use oslet_interconnect::bench::{self as ibench, Plan, Record};
use oslet_interconnect::{Endpoint, HostWindow, LinkConfig, Side};

use crate::bench::host_facts;
use crate::cli::error_chain;
use crate::supervisor::{self, UpOptions};

/// Arguments of `oslet bench link`.
#[derive(clap::Args, Debug)]
pub struct LinkArgs {
    /// Write the records as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Round trips per message size.
    #[arg(long, default_value_t = 20_000)]
    pub round_trips: usize,
    /// Bytes streamed per message size.
    #[arg(long, default_value_t = 64 << 20)]
    pub stream_bytes: u64,
    /// Rounds of oslet-polled and host-threads, run in alternation (each round
    /// both, back to back), so that both see the same state of a shared machine;
    /// the figures reported are the medians over the rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

/// Message sizes measured.
pub const SIZES: [usize; 3] = [64, 4096, 65536];
const RING_BYTES: u32 = 1 << 20;

fn host_threads(size: usize, args: &LinkArgs) -> Result<Record, String> {
    let config = LinkConfig::new(RING_BYTES).map_err(|e| e.to_string())?;
    let w = HostWindow::new(config);
    let mut a = Endpoint::attach(w.region(), Side::A, config).map_err(|e| format!("{e:?}"))?;
    let mut b = Endpoint::attach(w.region(), Side::B, config).map_err(|e| format!("{e:?}"))?;
    let plan = Plan::new(size, args.round_trips, args.stream_bytes);
    ibench::host_threads(&mut a, &mut b, &plan).map_err(|e| format!("{e:?}"))
}

/// The peer of the pipe and socket cases: `oslet __bench-echo R W`. Each request is
/// a 16-byte header (op, message bytes, count): op 1 echoes `count` messages one by
/// one, op 2 reads `count` messages and answers one byte, op 0 ends.
pub fn echo_main(read_fd: RawFd, write_fd: RawFd) -> i32 {
    // SAFETY: `oslet bench link` passed these fds to this process for this purpose.
    let (mut r, mut w) = unsafe {
        (
            std::fs::File::from_raw_fd(read_fd),
            std::fs::File::from_raw_fd(write_fd),
        )
    };
    let mut hdr = [0u8; 16];
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if r.read_exact(&mut hdr).is_err() {
            return 1;
        }
        let op = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let size = (u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize).min(buf.len());
        let mut count = [0u8; 8];
        count.copy_from_slice(&hdr[8..16]);
        let count = u64::from_le_bytes(count);
        let msg = &mut buf[..size];
        let ok = match op {
            0 => return 0,
            1 => (0..count).all(|_| r.read_exact(msg).is_ok() && w.write_all(msg).is_ok()),
            2 => (0..count).all(|_| r.read_exact(msg).is_ok()) && w.write_all(&[1]).is_ok(),
            _ => false,
        };
        if !ok {
            return 1;
        }
    }
}

fn header(op: u32, size: usize, count: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&op.to_le_bytes());
    h[4..8].copy_from_slice(&(size as u32).to_le_bytes());
    h[8..16].copy_from_slice(&count.to_le_bytes());
    h
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    ibench::percentile(sorted, p)
}

/// One ping-pong + stream measurement over a byte channel to the echo process.
fn measure_channel(
    case: &str,
    w: &mut dyn Write,
    r: &mut dyn Read,
    size: usize,
    args: &LinkArgs,
) -> Result<Record, String> {
    let io = |e: std::io::Error| format!("{case}: {e}");
    let msg = vec![0x5au8; size];
    let mut back = vec![0u8; size];
    let rtts_n = if size >= 65536 {
        args.round_trips / 10
    } else {
        args.round_trips
    }
    .max(10);
    w.write_all(&header(1, size, rtts_n as u64)).map_err(io)?;
    let mut rtts = Vec::with_capacity(rtts_n);
    for _ in 0..rtts_n {
        let t = Instant::now();
        w.write_all(&msg).map_err(io)?;
        r.read_exact(&mut back).map_err(io)?;
        rtts.push(t.elapsed().as_nanos() as u64);
    }
    rtts.sort_unstable();
    let count = (args.stream_bytes / size as u64).max(1);
    w.write_all(&header(2, size, count)).map_err(io)?;
    let t = Instant::now();
    for _ in 0..count {
        w.write_all(&msg).map_err(io)?;
    }
    let mut ack = [0u8];
    r.read_exact(&mut ack).map_err(io)?;
    let secs = t.elapsed().as_secs_f64();
    Ok(Record {
        case: case.to_string(),
        msg_bytes: size,
        rtt_p50_ns: percentile(&rtts, 50.0),
        rtt_p99_ns: percentile(&rtts, 99.0),
        throughput_mib_s: (count * size as u64) as f64 / secs / (1 << 20) as f64,
    })
}

fn spawn_echo(read_fd: RawFd, write_fd: RawFd) -> Result<std::process::Child, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let (r, w) = (read_fd, write_fd);
    let mut cmd = Command::new(exe);
    cmd.arg("__bench-echo")
        .arg("10")
        .arg("11")
        .stdin(Stdio::null());
    // SAFETY: only dup2 (async-signal-safe) between fork and exec; both fds are open in
    // the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(r, 10) < 0 || libc::dup2(w, 11) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| format!("cannot start the echo process: {e}"))
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0i32; 2];
    // SAFETY: a valid two-int buffer for pipe2.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn pipe_case(args: &LinkArgs) -> Result<Vec<Record>, String> {
    let (to_child_r, to_child_w) = pipe_pair()?;
    let (to_parent_r, to_parent_w) = pipe_pair()?;
    let mut child = spawn_echo(to_child_r.as_raw_fd(), to_parent_w.as_raw_fd())?;
    drop((to_child_r, to_parent_w));
    let mut w = std::fs::File::from(to_child_w);
    let mut r = std::fs::File::from(to_parent_r);
    let out = SIZES
        .iter()
        .map(|&s| measure_channel("pipe", &mut w, &mut r, s, args))
        .collect::<Result<Vec<_>, _>>();
    let _ = w.write_all(&header(0, 0, 0));
    let _ = child.wait();
    out
}

fn socket_case(args: &LinkArgs) -> Result<Vec<Record>, String> {
    let (mine, theirs) = UnixStream::pair().map_err(|e| e.to_string())?;
    let fd = theirs.as_raw_fd();
    let mut child = spawn_echo(fd, fd)?;
    drop(theirs);
    let mut r = mine.try_clone().map_err(|e| e.to_string())?;
    let mut w = mine;
    let out = SIZES
        .iter()
        .map(|&s| measure_channel("unix-socket", &mut w, &mut r, s, args))
        .collect::<Result<Vec<_>, _>>();
    let _ = w.write_all(&header(0, 0, 0));
    let _ = child.wait();
    out
}

/// Two OSlets running the test kernel's `link-bench` (polling, or waiting for
/// doorbells), records parsed from the initiator's console.
fn oslet_case(args: &LinkArgs, doorbell: bool) -> Result<Vec<Record>, String> {
    let wait = if doorbell {
        " link-bench-wait=doorbell"
    } else {
        ""
    };
    let dir = std::env::temp_dir().join(format!("oslet-bench-link-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let cfg = dir.join("link.toml");
    // Polling: the same plan as host-threads (round trips and bytes streamed per
    // size). The doorbell case keeps the test kernel's shorter streams: each of its
    // wake-ups costs emulated ring-0 work on hosts without vmx/svm.
    let stream = if doorbell {
        String::new()
    } else {
        format!(" link-bench-stream={}", args.stream_bytes)
    };
    let text = format!(
        "[host]\noversubscribe = true\nlog_dir = \"logs\"\n\
         [[oslet]]\nname = \"ping\"\ncpus = 1\nmemory = \"32MiB\"\nkernel = \"builtin:testkernel\"\n\
         cmdline = \"link-bench=initiator link-bench-rtts={rtts}{stream}{wait}\"\n\
         [[oslet]]\nname = \"pong\"\ncpus = 1\nmemory = \"32MiB\"\nkernel = \"builtin:testkernel\"\n\
         cmdline = \"link-bench=responder link-bench-rtts={rtts}{stream}{wait}\"\n\
         [[link]]\nbetween = [\"ping\", \"pong\"]\nring = \"1MiB\"\n",
        rtts = args.round_trips
    );
    std::fs::write(&cfg, text).map_err(|e| e.to_string())?;
    let partition = crate::cli::load_partition(&cfg)?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let opts = UpOptions {
        exe,
        quiet: true,
        ready_marker: None,
        socket: None,
        stay: false,
        socket_optional: false,
    };
    let reports = supervisor::up(&partition, &opts).map_err(|e| error_chain(&e))?;
    let _ = std::fs::remove_dir_all(&dir);
    let mut records = Vec::new();
    for r in &reports {
        for line in &r.console {
            if let Some(json) = line.strip_prefix("oslet-testkernel: bench ") {
                let v: serde_json::Value = serde_json::from_str(json)
                    .map_err(|e| format!("bad bench line {line:?}: {e}"))?;
                records.push(Record {
                    case: v["case"].as_str().unwrap_or("oslet-polled").to_string(),
                    msg_bytes: v["msg_bytes"].as_u64().unwrap_or(0) as usize,
                    rtt_p50_ns: v["rtt_p50_ns"].as_u64().unwrap_or(0),
                    rtt_p99_ns: v["rtt_p99_ns"].as_u64().unwrap_or(0),
                    throughput_mib_s: v["throughput_mib_s"].as_f64().unwrap_or(0.0),
                });
            }
        }
        if !r.outcome.success() {
            return Err(format!(
                "OSlet {} {}; console:\n{}",
                r.name,
                r.outcome,
                r.console.join("\n")
            ));
        }
    }
    if records.is_empty() {
        return Err("the OSlets printed no bench records".to_string());
    }
    Ok(records)
}

/// The median of `v` (the mean of the middle two for an even count); 0 if empty.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// oslet-polled against host-threads for one message size, over the rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Ratio {
    /// Message size.
    pub msg_bytes: usize,
    /// oslet-polled rtt p50 / host-threads rtt p50, per round (both from that round).
    pub rtt_p50: Vec<f64>,
    /// oslet-polled throughput / host-threads throughput, per round.
    pub throughput: Vec<f64>,
}

/// Per (case, size), the median of each figure over the rounds that have it; and
/// per size, the oslet-polled / host-threads ratios of each round (each ratio pairs
/// two runs made back to back, so they saw the same load).
pub fn summarize(rounds: &[Vec<Record>]) -> (Vec<Record>, Vec<Ratio>) {
    let mut out = Vec::new();
    for case in ["oslet-polled", "host-threads"] {
        for &size in &SIZES {
            let of: Vec<&Record> = rounds
                .iter()
                .flatten()
                .filter(|r| r.case == case && r.msg_bytes == size)
                .collect();
            if of.is_empty() {
                continue;
            }
            let mut p50: Vec<f64> = of.iter().map(|r| r.rtt_p50_ns as f64).collect();
            let mut p99: Vec<f64> = of.iter().map(|r| r.rtt_p99_ns as f64).collect();
            let mut tput: Vec<f64> = of.iter().map(|r| r.throughput_mib_s).collect();
            out.push(Record {
                case: case.to_string(),
                msg_bytes: size,
                rtt_p50_ns: median(&mut p50).round() as u64,
                rtt_p99_ns: median(&mut p99).round() as u64,
                throughput_mib_s: (median(&mut tput) * 10.0).round() / 10.0,
            });
        }
    }
    let ratios = SIZES
        .iter()
        .map(|&size| {
            let mut r = Ratio {
                msg_bytes: size,
                rtt_p50: Vec::new(),
                throughput: Vec::new(),
            };
            for round in rounds {
                let find =
                    |case: &str| round.iter().find(|x| x.case == case && x.msg_bytes == size);
                if let (Some(o), Some(h)) = (find("oslet-polled"), find("host-threads")) {
                    r.rtt_p50
                        .push(o.rtt_p50_ns as f64 / h.rtt_p50_ns.max(1) as f64);
                    r.throughput
                        .push(o.throughput_mib_s / h.throughput_mib_s.max(f64::MIN_POSITIVE));
                }
            }
            r
        })
        .filter(|r| !r.rtt_p50.is_empty())
        .collect();
    (out, ratios)
}

fn spread(v: &[f64]) -> serde_json::Value {
    let mut s = v.to_vec();
    let med = median(&mut s);
    serde_json::json!({
        "median": med,
        "min": s.first().copied().unwrap_or(0.0),
        "max": s.last().copied().unwrap_or(0.0),
        "per_round": v,
    })
}

/// Runs `oslet bench link`; returns the exit code.
pub fn run(args: &LinkArgs) -> i32 {
    let mut notes = Vec::new();
    let mut failed = false;
    // oslet-polled and host-threads in alternation, `rounds` times.
    let mut rounds: Vec<Vec<Record>> = Vec::new();
    for _ in 0..args.rounds.max(1) {
        let mut round = match oslet_case(args, false) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("oslet bench link: oslet-polled: {e}");
                notes.push(format!("oslet-polled: failed: {e}"));
                failed = true;
                Vec::new()
            }
        };
        for &s in &SIZES {
            match host_threads(s, args) {
                Ok(r) => round.push(r),
                Err(e) => {
                    eprintln!("oslet bench link: host-threads: {e}");
                    return 1;
                }
            }
        }
        rounds.push(round);
    }
    let (mut records, ratios) = summarize(&rounds);
    match oslet_case(args, true) {
        Ok(r) => records.extend(r),
        Err(e) => {
            eprintln!("oslet bench link: oslet-doorbell: {e}");
            notes.push(format!("oslet-doorbell: failed: {e}"));
            failed = true;
        }
    }
    let hw = crate::bench::host_facts().hardware_virtualization;
    notes.push(format!(
        "oslet-doorbell wakes the guest through its ring-0 interrupt handler; {}",
        if hw {
            "this host has hardware virtualization, so that path runs natively"
        } else {
            "this host has no vmx/svm: KVM emulates guest ring 0 (~2 us per instruction), so these round trips measure the emulator, not the doorbell path"
        }
    ));
    for case in [pipe_case, socket_case] {
        match case(args) {
            Ok(r) => records.extend(r),
            Err(e) => {
                eprintln!("oslet bench link: {e}");
                return 1;
            }
        }
    }
    println!(
        "{:<14} {:>9} {:>12} {:>12} {:>14}",
        "case", "msg_bytes", "rtt_p50_ns", "rtt_p99_ns", "throughput_MiB/s"
    );
    for r in &records {
        println!(
            "{:<14} {:>9} {:>12} {:>12} {:>14.1}",
            r.case, r.msg_bytes, r.rtt_p50_ns, r.rtt_p99_ns, r.throughput_mib_s
        );
    }
    println!(
        "(oslet-polled and host-threads: medians of {} rounds run in alternation)",
        rounds.len()
    );
    let show = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut ratio_json = Vec::new();
    for r in &ratios {
        let (mut rtt, mut tput) = (r.rtt_p50.clone(), r.throughput.clone());
        println!(
            "{:>6} B: oslet-polled / host-threads: rtt p50 {:.2}x (rounds: {}), throughput {:.2}x (rounds: {})",
            r.msg_bytes,
            median(&mut rtt),
            show(&r.rtt_p50),
            median(&mut tput),
            show(&r.throughput)
        );
        ratio_json.push(serde_json::json!({
            "msg_bytes": r.msg_bytes,
            "rtt_p50_ratio": spread(&r.rtt_p50),
            "throughput_ratio": spread(&r.throughput),
        }));
    }
    notes.push(format!(
        "oslet-polled and host-threads ran in {} alternating rounds (each round both, back to back); \
         records are per-figure medians over the rounds, ratios pair the two runs of each round",
        rounds.len()
    ));
    notes.push(
        "the OSlets' vCPUs are pinned to host CPUs 0 and 1 (one each), the host threads are not \
         pinned"
            .to_string(),
    );
    for n in &notes {
        println!("note: {n}");
    }
    if let Some(path) = &args.json {
        let recs: Vec<serde_json::Value> = records
            .iter()
            .map(|r| serde_json::from_str(&r.to_json()).unwrap_or(serde_json::Value::Null))
            .collect();
        let doc = serde_json::json!({
            "benchmark": "link",
            "host": host_facts(),
            "kvm": crate::bench::kvm_facts(),
            "round_trips": args.round_trips,
            "stream_bytes": args.stream_bytes,
            "rounds": rounds
                .iter()
                .map(|r| r
                    .iter()
                    .map(|x| serde_json::from_str(&x.to_json()).unwrap_or(serde_json::Value::Null))
                    .collect::<Vec<serde_json::Value>>())
                .collect::<Vec<_>>(),
            "records": recs,
            "ratios_vs_host_threads": ratio_json,
            "notes": notes,
        });
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("oslet bench link: cannot write {}: {e}", path.display());
            return 1;
        }
    }
    i32::from(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(case: &str, size: usize, p50: u64, tput: f64) -> Record {
        Record {
            case: case.into(),
            msg_bytes: size,
            rtt_p50_ns: p50,
            rtt_p99_ns: 2 * p50,
            throughput_mib_s: tput,
        }
    }

    #[test]
    fn summaries_take_medians_and_pair_ratios_within_a_round() {
        let rounds = vec![
            vec![
                rec("oslet-polled", 64, 300, 100.0),
                rec("host-threads", 64, 300, 200.0),
            ],
            vec![
                rec("oslet-polled", 64, 900, 50.0),
                rec("host-threads", 64, 1000, 40.0),
            ],
            vec![
                rec("oslet-polled", 64, 400, 80.0),
                rec("host-threads", 64, 200, 160.0),
            ],
        ];
        let (records, ratios) = summarize(&rounds);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].case, "oslet-polled");
        assert_eq!((records[0].rtt_p50_ns, records[0].rtt_p99_ns), (400, 800));
        assert_eq!(records[0].throughput_mib_s, 80.0);
        assert_eq!(records[1].rtt_p50_ns, 300);
        assert_eq!(ratios.len(), 1, "only sizes measured in some round");
        assert_eq!(ratios[0].rtt_p50, vec![1.0, 0.9, 2.0]);
        assert_eq!(ratios[0].throughput, vec![0.5, 1.25, 0.5]);
        assert_eq!(median(&mut [2.0, 1.0, 4.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn a_round_without_oslet_records_adds_no_ratio() {
        let rounds = vec![vec![rec("host-threads", 4096, 1000, 1.0)]];
        let (records, ratios) = summarize(&rounds);
        assert_eq!(records.len(), 1);
        assert!(ratios.is_empty());
    }
}
