//! The host half of the test kernel's `link-probe` mode: what the link's data path
//! costs on this machine, in TSC cycles, measured the same way on both sides so the
//! two can be compared line by line.
//!
//! `cargo run --release -p oslet-interconnect --example path_probe`
//!
//! * `rdtsc`: the cost of one TSC read; then, for 1 s, the gaps (over 10 us)
//!   between back-to-back TSC reads: time the thread did not run.
//! * memory loops: 64-bit loads, stores and word-by-word copies (the instructions
//!   the interconnect's copies compile to: its accesses are aligned u64 atomics, so
//!   they are never vectorised, on the host or in a guest) and a `rep movsb` copy,
//!   over a heap buffer and a window, in cycles per KiB, best of 200 passes.
//! * crossing cores: one thread stores into its ring, then the other loads it, or
//!   copies it into its own buffer (alternate rounds).
//! * send and receive alone: one thread fills a 1 MiB ring with S-byte messages
//!   while the other spins, then the other drains it while the first spins (so the
//!   data crosses cores, but the two never copy at once): cycles per message, best
//!   of 30 rounds. This is each side's own cost per message, without the two
//!   sides' interaction. Each size runs twice: the spinning thread only waits at
//!   the barrier, then polls the link as well (as a peer spinning on an empty or
//!   full ring does).
//!
//! Best-of figures leave out preemption, so they are comparable on a busy machine.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use oslet_interconnect::probe::{
    copy, fill, gaps, memory_loops, rdtsc, rdtsc_cost, sink, sum, words,
};
use oslet_interconnect::{Endpoint, HostWindow, LinkConfig, Side};

const ROUNDS: usize = 30;

fn memory(window: &HostWindow, config: LinkConfig) {
    let heap: Vec<AtomicU64> = (0..(1 << 17)).map(|_| AtomicU64::new(1)).collect();
    let heap2: Vec<AtomicU64> = (0..(1 << 17)).map(|_| AtomicU64::new(2)).collect();
    let base = window.region().as_ptr();
    let ring = config.ring_bytes() as usize;
    // SAFETY: the rings of both sections lie inside the window (4096-byte control
    // page, then `ring` bytes), which outlives this function; nothing else accesses
    // the window while the probe runs.
    let (own, peer) = unsafe {
        (
            words(base.add(4096), ring / 8),
            words(base.add(config.section_offset(Side::B) + 4096), ring / 8),
        )
    };
    for n in [4096usize, 65536, 1 << 20] {
        let w = n / 8;
        let (ram, ram2, own, peer) = (&heap[..w], &heap2[..w], &own[..w], &peer[..w]);
        let r = memory_loops(n, ram, ram2, own, peer);
        for (what, c) in r {
            println!("probe: {what} {n} B: {c} cycles/KiB");
        }
    }
}

/// Pins the calling thread to `cpu` (as the VMM pins each vCPU thread), so that
/// the two threads of a test stay on two CPUs.
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
    // sched_setaffinity only read and write that local set.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    assert!(ok, "cannot pin a thread to CPU {cpu}");
}

/// A barrier that spins: both threads stay on their CPUs between phases, as the
/// guest's vCPUs do (a sleeping barrier lets the scheduler put both threads on one
/// CPU, and then nothing crosses cores).
struct SpinBarrier(AtomicU64);

impl SpinBarrier {
    /// The `k`-th rendezvous of two threads (k = 1, 2, ... on each side).
    fn wait(&self, k: u64) {
        self.wait_polling(k, None);
    }

    /// The same, polling `ep` meanwhile if given.
    fn wait_polling(&self, k: u64, mut ep: Option<&mut Endpoint<'_>>) {
        self.0.fetch_add(1, Ordering::AcqRel);
        while self.0.load(Ordering::Acquire) < 2 * k {
            if let Some(ep) = ep.as_deref_mut() {
                black_box(ep.poll().is_ok());
            }
            std::hint::spin_loop();
        }
    }
}

/// The memory loops again, crossing cores: A stores into its ring while B spins,
/// then B loads what A stored while A spins (the guest's `crossing`).
fn crossing(config: LinkConfig) {
    let w = HostWindow::new(config);
    let ring = config.ring_bytes() as usize;
    // SAFETY: A's ring lies inside the window (after its 4096-byte control page),
    // which outlives this function; only the two threads below access it, atomically.
    let own = unsafe { words(w.region().as_ptr().add(4096), ring / 8) };
    for n in [65536usize, 1 << 20] {
        let words = n / 8;
        let bar = SpinBarrier(AtomicU64::new(0));
        let (store, (load, copied)) = std::thread::scope(|sc| {
            let b = sc.spawn(|| {
                pin(1);
                let ram: Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
                let (mut best, mut best_copy) = (u64::MAX, u64::MAX);
                for round in 1..=2 * ROUNDS as u64 {
                    bar.wait(2 * round - 1);
                    let t0 = rdtsc();
                    // Loads in odd rounds, copies into RAM in even ones.
                    if round % 2 == 1 {
                        sink(sum(&own[..words]));
                        best = best.min(rdtsc().wrapping_sub(t0));
                    } else {
                        copy(&ram, &own[..words]);
                        best_copy = best_copy.min(rdtsc().wrapping_sub(t0));
                    }
                    bar.wait(2 * round);
                }
                (best, best_copy)
            });
            pin(0);
            let mut best = u64::MAX;
            for round in 1..=2 * ROUNDS as u64 {
                let t0 = rdtsc();
                fill(&own[..words], round);
                best = best.min(rdtsc().wrapping_sub(t0));
                bar.wait(2 * round - 1);
                bar.wait(2 * round);
            }
            (best, b.join().unwrap())
        });
        println!(
            "probe: store after the peer loaded it {n} B: {} cycles/KiB",
            store * 1024 / n as u64
        );
        println!(
            "probe: load after the peer stored it {n} B: {} cycles/KiB",
            load * 1024 / n as u64
        );
        println!(
            "probe: copy to RAM after the peer stored it {n} B: {} cycles/KiB",
            copied * 1024 / n as u64
        );
    }
}

fn phases(config: LinkConfig) {
    let ring = config.ring_bytes() as usize;
    // The waiting thread does nothing else (`busy` false), or polls the link
    // meanwhile (`busy`: what a peer that spins on an empty or full ring does).
    for (s, busy) in [64usize, 4096, 65536]
        .into_iter()
        .flat_map(|s| [(s, false), (s, true)])
    {
        let w = HostWindow::new(config);
        let mut a = Endpoint::attach(w.region(), Side::A, config).unwrap();
        let mut b = Endpoint::attach(w.region(), Side::B, config).unwrap();
        a.poll().unwrap();
        b.poll().unwrap();
        let bar = SpinBarrier(AtomicU64::new(0));
        let rec = 8 + s.next_multiple_of(8);
        let (send, recv) = std::thread::scope(|sc| {
            let receiver = sc.spawn(|| {
                pin(1);
                let mut buf = vec![0u8; 65536];
                let mut best = u64::MAX;
                let mut k = 0;
                for _ in 0..ROUNDS {
                    k += 1;
                    bar.wait_polling(k, busy.then_some(&mut b)); // the ring is full
                    let (mut n, t0) = (0u64, rdtsc());
                    while let Ok(Some(_)) = b.recv(&mut buf) {
                        n += 1;
                    }
                    let t = rdtsc().wrapping_sub(t0);
                    if n as usize >= ring / rec - 1 {
                        best = best.min(t / n);
                    }
                    k += 1;
                    bar.wait_polling(k, busy.then_some(&mut b)); // drained
                }
                best
            });
            pin(0);
            let buf = vec![0u8; 65536];
            let mut best = u64::MAX;
            let mut k = 0;
            for _ in 0..ROUNDS {
                let (mut n, t0) = (0u64, rdtsc());
                while a.send(&buf[..s]).is_ok() {
                    n += 1;
                }
                best = best.min(rdtsc().wrapping_sub(t0) / n.max(1));
                k += 1;
                bar.wait_polling(k, busy.then_some(&mut a));
                k += 1;
                bar.wait_polling(k, busy.then_some(&mut a));
            }
            (best, receiver.join().unwrap())
        });
        let how = if busy {
            " while the peer polls the link"
        } else {
            ""
        };
        println!("probe: send {s} B{how}: {send} cycles/message");
        println!("probe: recv {s} B{how}: {recv} cycles/message");
    }
}

fn main() {
    let config = LinkConfig::new(1 << 20).unwrap();
    println!("probe: rdtsc: {} cycles each", rdtsc_cost());
    // The TSC rate: `rdtsc` cycles in 100 ms of the monotonic clock.
    let (t0, c0) = (std::time::Instant::now(), rdtsc());
    std::thread::sleep(std::time::Duration::from_millis(100));
    let khz = rdtsc().wrapping_sub(c0) / t0.elapsed().as_millis().max(1) as u64;
    let g = gaps(khz * 1000, khz / 100);
    println!(
        "probe: 1 s of reading the TSC: {} gaps over 10 us, {} us in all, longest {} us",
        g.count,
        g.total * 1000 / khz,
        g.longest * 1000 / khz
    );
    memory(&HostWindow::new(config), config);
    crossing(config);
    phases(config);
}
