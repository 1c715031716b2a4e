//! `oslet top`: one live screen for the whole box. Totals come first (every OSlet's
//! vCPUs, memory, busy vCPUs, exits and link traffic added up), then a line per
//! OSlet and per link. Busy/idle per vCPU and the exit rate come from KVM's own
//! per-vCPU statistics, which each VMM reads (`kvm_stats`); where the kernel has
//! none, busy falls back to the host CPU time of the vCPU threads (from /proc).
//! Link traffic is read from the windows' producer indices by the supervisor. Guest
//! load and memory are the guest agent's own reports over its agent link (`agent`).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::control;

/// CPU time (ticks) and count of the vCPU threads of process `pid`.
fn vcpu_ticks(pid: u64) -> (u64, usize) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    let mut ticks = 0;
    let mut n = 0;
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.contains("vcpu") {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the ")" that ends the command name: utime is 14th, stime 15th overall.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ut: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
            let st: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
            ticks += ut + st;
            n += 1;
        }
    }
    (ticks, n)
}

fn get(sock: &Path, target: &str) -> Result<Value, String> {
    match control::request(sock, "GET", target) {
        Ok((200, body)) => serde_json::from_str(&body).map_err(|e| e.to_string()),
        Ok((status, body)) => Err(format!("HTTP {status}: {body}")),
        Err(e) => Err(crate::cli::error_chain(&e)),
    }
}

/// Runs `oslet top`: `iterations` screens (0 = until interrupted), one a second.
pub fn run(sock: &Path, iterations: u64) -> i32 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut prev_ticks: HashMap<String, (u64, Instant)> = HashMap::new();
    let mut prev_links: HashMap<String, (u64, Instant)> = HashMap::new();
    let mut shown = 0u64;
    loop {
        let (oslets, links) = match (get(sock, "/v1/oslets"), get(sock, "/v1/links")) {
            (Ok(o), Ok(l)) => (o, l),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("oslet top: {e}");
                return 1;
            }
        };
        let now = Instant::now();
        let mut rows = Vec::new();
        let (mut t_vcpus, mut t_mem, mut t_rss, mut t_busy, mut t_exits, mut running) =
            (0u64, 0u64, 0u64, 0f64, 0f64, 0);
        let mut fallback = false;
        let (mut t_guest_total, mut t_guest_used, mut t_guest_load, mut guests) =
            (0u64, 0u64, 0f64, 0usize);
        for o in oslets.as_array().into_iter().flatten() {
            let name = o["name"].as_str().unwrap_or("?").to_string();
            let vcpus = o["vcpus"].as_u64().unwrap_or(0);
            let mem = o["memory_bytes"].as_u64().unwrap_or(0);
            t_vcpus += vcpus;
            t_mem += mem;
            let per_vcpu: Vec<f64> = o["vcpu_busy_pct"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default();
            // Busy, in vCPUs (1.0 = one vCPU fully busy).
            let (busy, rss) = match o["pid"].as_u64() {
                Some(pid) => {
                    running += 1;
                    // /proc's thread times only where KVM gave no per-vCPU figures.
                    let busy = if per_vcpu.is_empty() {
                        let (ticks, _) = vcpu_ticks(pid);
                        let from_threads = prev_ticks.get(&name).map(|(t0, at)| {
                            let dt = now.duration_since(*at).as_secs_f64().max(1e-3);
                            (ticks.saturating_sub(*t0) as f64 / hz) / dt
                        });
                        prev_ticks.insert(name.clone(), (ticks, now));
                        fallback |= from_threads.is_some();
                        from_threads
                    } else {
                        prev_ticks.remove(&name);
                        Some(per_vcpu.iter().sum::<f64>() / 100.0)
                    };
                    (
                        busy,
                        u32::try_from(pid)
                            .ok()
                            .and_then(crate::vmm_process::rss_kib)
                            .unwrap_or(0),
                    )
                }
                None => (None, 0),
            };
            t_rss += rss;
            t_busy += busy.unwrap_or(0.0);
            let exits = o["kvm_exits_per_s"]
                .as_f64()
                .or(o["vmm_exits_per_s"].as_f64());
            t_exits += exits.unwrap_or(0.0);
            let vmm_exits = o["vmm_exits_per_s"].as_f64();
            // The guest agent's own view (load average, memory in use), when it reports.
            let g = &o["guest"];
            let guest_load = g["load_milli"][0].as_u64().map(|l| l as f64 / 1000.0);
            let guest_mem = match (g["mem_total_kib"].as_u64(), g["mem_available_kib"].as_u64()) {
                (Some(t), Some(a)) => {
                    t_guest_total += t;
                    t_guest_used += t.saturating_sub(a);
                    guests += 1;
                    Some(format!("{}/{} MiB", t.saturating_sub(a) >> 10, t >> 10))
                }
                _ => None,
            };
            t_guest_load += guest_load.unwrap_or(0.0);
            rows.push(format!(
                "{:<16} {:<9} {:>5} {:>10} {:>9} MiB {:>9} KiB {:>10} {:>10} {:>10} {:>15}  {}",
                name,
                o["state"].as_str().unwrap_or("?"),
                vcpus,
                busy.map(|b| format!("{b:.1}"))
                    .unwrap_or_else(|| "-".into()),
                mem >> 20,
                rss,
                exits
                    .map(|e| format!("{e:.0}"))
                    .unwrap_or_else(|| "-".into()),
                vmm_exits
                    .map(|e| format!("{e:.0}"))
                    .unwrap_or_else(|| "-".into()),
                guest_load
                    .map(|l| format!("{l:.2}"))
                    .unwrap_or_else(|| "-".into()),
                guest_mem.unwrap_or_else(|| "-".into()),
                per_vcpu
                    .iter()
                    .map(|p| format!("{p:.0}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ));
        }
        let mut link_rows = Vec::new();
        let mut t_link = 0f64;
        for l in links.as_array().into_iter().flatten() {
            let key = format!(
                "{}<->{}",
                l["a"].as_str().unwrap_or("?"),
                l["b"].as_str().unwrap_or("?")
            );
            let bytes =
                l["a_tx_bytes"].as_u64().unwrap_or(0) + l["b_tx_bytes"].as_u64().unwrap_or(0);
            let rate = prev_links.get(&key).map(|(b0, at)| {
                let dt = now.duration_since(*at).as_secs_f64().max(1e-3);
                // Producer indices are free-running u32s: a step back is a wrap or a reset.
                bytes.saturating_sub(*b0) as f64 / dt / (1 << 20) as f64
            });
            prev_links.insert(key.clone(), (bytes, now));
            t_link += rate.unwrap_or(0.0);
            link_rows.push(format!(
                "{:<24} {:>12}",
                key,
                rate.map(|r| format!("{r:.1} MiB/s"))
                    .unwrap_or_else(|| "-".into())
            ));
        }
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\x1b[H\x1b[2J");
        let _ = writeln!(
            out,
            "oslet top: {} OSlets ({running} running)  vCPUs {t_vcpus}  busy {t_busy:.1}  memory {} MiB  VMM RSS {} KiB  exits/s {:.0}  links {:.1} MiB/s",
            rows.len(),
            t_mem >> 20,
            t_rss,
            t_exits,
            t_link
        );
        if guests > 0 {
            let _ = writeln!(
                out,
                "guests ({guests} reporting): load {t_guest_load:.2}  memory in use {} of {} MiB",
                t_guest_used >> 10,
                t_guest_total >> 10
            );
        }
        let _ = writeln!(
            out,
            "{}",
            if fallback {
                "(busy: host CPU time of the vCPU threads; this kernel has no KVM vCPU statistics)"
            } else {
                "(busy: vCPUs not halted, from KVM's per-vCPU statistics; exits/s: every exit KVM saw)"
            }
        );
        let _ = writeln!(
            out,
            "\n{:<16} {:<9} {:>5} {:>10} {:>13} {:>13} {:>10} {:>10} {:>10} {:>15}  PER-VCPU BUSY %",
            "NAME", "STATE", "VCPUS", "VCPU BUSY", "MEMORY", "VMM RSS", "EXITS/S", "VMM EXITS",
            "GUEST LOAD", "GUEST MEM",
        );
        for r in rows {
            let _ = writeln!(out, "{r}");
        }
        if !link_rows.is_empty() {
            let _ = writeln!(out, "\n{:<24} {:>12}", "LINK", "TRAFFIC");
            for r in link_rows {
                let _ = writeln!(out, "{r}");
            }
        }
        let _ = out.flush();
        drop(out);
        shown += 1;
        if iterations != 0 && shown >= iterations {
            return 0;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
