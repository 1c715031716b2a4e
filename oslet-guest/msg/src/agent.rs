//! The guest agent (`oslet-msg agent`): once a second it reads this Linux guest's
//! load, CPUs, memory and uptime from /proc and /sys and sends them as an
//! `AgentReport` on the agent link, the link oslet gives every OSlet to its own
//! VMM process (`oslet.agentlink=<window_gpa>,<ring_bytes>` on the command line).
//! `oslet top` shows the reports.

use oslet_interconnect::agent::AgentReport;

/// Errors finding the agent link or reading the guest's state.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The command line has no agent link.
    #[error("no oslet.agentlink= on the kernel command line (is this an OSlet?)")]
    NoLink,
    /// The agent link word is malformed.
    #[error("bad oslet.agentlink={0:?}: want <window_gpa>,<ring_bytes>")]
    BadLink(String),
    /// A /proc or /sys file could not be read or parsed.
    #[error("cannot read {0}: {1}")]
    Proc(&'static str, String),
}

fn number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The agent link's (window_gpa, ring_bytes) from the kernel command line.
pub fn parse_link(cmdline: &str) -> Result<(u64, u32), AgentError> {
    let v = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("oslet.agentlink="))
        .ok_or(AgentError::NoLink)?;
    let bad = || AgentError::BadLink(v.to_string());
    let (gpa, ring) = v.split_once(',').ok_or_else(bad)?;
    let gpa = number(gpa).ok_or_else(bad)?;
    let ring = number(ring)
        .and_then(|r| u32::try_from(r).ok())
        .ok_or_else(bad)?;
    Ok((gpa, ring))
}

fn read(path: &'static str) -> Result<String, AgentError> {
    std::fs::read_to_string(path).map_err(|e| AgentError::Proc(path, e.to_string()))
}

/// `/proc/loadavg`: (load × 1000 for 1, 5, 15 min, runnable tasks).
pub fn parse_loadavg(s: &str) -> Option<([u32; 3], u32)> {
    let f: Vec<&str> = s.split_whitespace().collect();
    let milli = |x: &str| -> Option<u32> {
        let v: f64 = x.parse().ok()?;
        Some((v * 1000.0).round().clamp(0.0, u32::MAX as f64) as u32)
    };
    let running = f.get(3)?.split_once('/')?.0.parse().ok()?;
    Some((
        [milli(f.first()?)?, milli(f.get(1)?)?, milli(f.get(2)?)?],
        running,
    ))
}

/// `/proc/meminfo`: (MemTotal, MemAvailable) in KiB.
pub fn parse_meminfo(s: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// `/sys/devices/system/cpu/online` ("0-3,5"): how many CPUs.
pub fn parse_cpu_list(s: &str) -> Option<u32> {
    let mut n = 0u32;
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                b.checked_sub(a)? + 1
            }
            None => {
                part.parse::<u32>().ok()?;
                1
            }
        };
    }
    Some(n)
}

/// This guest's state now, as report number `seq`.
pub fn report(seq: u64) -> Result<AgentReport, AgentError> {
    let (load_milli, procs_running) = parse_loadavg(&read("/proc/loadavg")?)
        .ok_or_else(|| AgentError::Proc("/proc/loadavg", "unexpected format".into()))?;
    let (mem_total_kib, mem_available_kib) = parse_meminfo(&read("/proc/meminfo")?)
        .ok_or_else(|| AgentError::Proc("/proc/meminfo", "no MemTotal/MemAvailable".into()))?;
    let cpus_online =
        parse_cpu_list(&read("/sys/devices/system/cpu/online")?).ok_or_else(|| {
            AgentError::Proc("/sys/devices/system/cpu/online", "unexpected format".into())
        })?;
    let uptime = read("/proc/uptime")?;
    let uptime_ms = uptime
        .split_whitespace()
        .next()
        .and_then(|u| u.parse::<f64>().ok())
        .map(|u| (u * 1000.0) as u64)
        .ok_or_else(|| AgentError::Proc("/proc/uptime", "unexpected format".into()))?;
    Ok(AgentReport {
        seq,
        uptime_ms,
        load_milli,
        cpus_online,
        procs_running,
        mem_total_kib,
        mem_available_kib: mem_available_kib.min(mem_total_kib),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_linux_writes() {
        assert_eq!(
            parse_loadavg("0.52 1.05 0.00 3/245 12345\n"),
            Some(([520, 1050, 0], 3))
        );
        assert_eq!(
            parse_meminfo(
                "MemTotal:        2031616 kB\nMemFree:  1000 kB\nMemAvailable:    1500000 kB\n"
            ),
            Some((2031616, 1500000))
        );
        assert_eq!(parse_cpu_list("0-3\n"), Some(4));
        assert_eq!(parse_cpu_list("0,2-3,7"), Some(4));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(
            parse_link("console=ttyS0 oslet.agentlink=0xcfe00000,0x1000 quiet").unwrap(),
            (0xcfe0_0000, 4096)
        );
        assert!(matches!(parse_link("quiet"), Err(AgentError::NoLink)));
        assert!(matches!(
            parse_link("oslet.agentlink=zz"),
            Err(AgentError::BadLink(_))
        ));
    }

    #[test]
    fn this_machine_reports_itself() {
        let r = report(1).unwrap();
        assert!(r.cpus_online >= 1 && r.mem_total_kib > 0, "{r:?}");
        assert!(AgentReport::decode(&r.encode()).is_ok());
    }
}
