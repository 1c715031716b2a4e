//! Round-trip latency and streaming throughput of a link between two host threads.
//!
//! `cargo run --release -p oslet-interconnect --example host_threads_bench [-- --quick]`
//!
//! Prints a table, then one JSON record per message size:
//! `{"case":"host-threads","msg_bytes":..,"rtt_p50_ns":..,"rtt_p99_ns":..,"throughput_mib_s":..}`.
//! Both threads busy-poll; on a 2-core machine they take one core each, so anything
//! else running disturbs the figures. Compare runs side by side, not to a budget.

use oslet_interconnect::bench::{host_threads, Plan, Record};
use oslet_interconnect::{Endpoint, HostWindow, LinkConfig, Side};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rtts, stream) = if quick {
        (20_000, 64 << 20)
    } else {
        (200_000, 1 << 30)
    };
    // 1 MiB rings: a 64 KiB message is a sixteenth of the ring, the maximum a quarter.
    let config = LinkConfig::new(1 << 20)?;
    let mut records: Vec<Record> = Vec::new();
    for msg_bytes in [64usize, 4096, 65536] {
        // Fresh window per size, so that one case's leftovers cannot affect the next.
        let window = HostWindow::new(config);
        let mut a = Endpoint::attach(window.region(), Side::A, config)?;
        let mut b = Endpoint::attach(window.region(), Side::B, config)?;
        let round_trips = if msg_bytes > 4096 { rtts / 10 } else { rtts };
        let plan = Plan::new(msg_bytes, round_trips, stream);
        records.push(host_threads(&mut a, &mut b, &plan)?);
    }
    println!(
        "{:<14} {:>9} {:>12} {:>12} {:>16}",
        "case", "msg_bytes", "rtt_p50_ns", "rtt_p99_ns", "throughput_MiB/s"
    );
    for r in &records {
        println!(
            "{:<14} {:>9} {:>12} {:>12} {:>16.1}",
            r.case, r.msg_bytes, r.rtt_p50_ns, r.rtt_p99_ns, r.throughput_mib_s
        );
    }
    for r in &records {
        println!("{}", r.to_json());
    }
    Ok(())
}
