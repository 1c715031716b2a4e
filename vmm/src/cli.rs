//! The `oslet` command line.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::events::{Event, EventSink, Outcome};
use crate::supervisor::{self, UpOptions};
use crate::{bench, bench_link, kvm, log, oslet, signals, testkernel};

/// Exit code for bad input: a config mistake, an unusable /dev/kvm, a bad argument.
pub const EXIT_BAD_INPUT: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "oslet",
    version,
    about = "Partition a many-core host into OSlets: small KVM VMs on dedicated cores"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Boot every OSlet of a partition file and wait until all have ended.
    Up {
        /// The partition file (TOML).
        file: PathBuf,
        /// Do not relay the consoles (they still go to the log files).
        #[arg(long)]
        quiet: bool,
    },
    /// Validate a partition file and print the plan: host CPUs, memory, kernel.
    Check {
        /// The partition file (TOML).
        file: PathBuf,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
    /// Write the embedded test kernel's ELF image to a file (to boot it elsewhere).
    Testkernel {
        /// Where to write it.
        output: PathBuf,
    },
    /// The echo peer of `oslet bench link` (not for direct use).
    #[command(name = "__bench-echo", hide = true)]
    BenchEcho { read_fd: i32, write_fd: i32 },
    /// Run one OSlet's VMM (started by `oslet up`, which writes the OSlet's validated
    /// plan as JSON on stdin; `--config` and `--name` say which, for `ps`).
    #[command(name = "__vmm", hide = true)]
    Vmm {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// Boot time and VMM memory per layout, side by side with QEMU microvm.
    Boot(bench::BootArgs),
    /// Message cost between OSlets against host threads, a pipe and a UNIX socket.
    Link(bench_link::LinkArgs),
}

/// The error and its causes on one line: "a: b: c".
pub fn error_chain(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Loads and validates a partition file against this host.
pub fn load_partition(path: &Path) -> Result<oslet_config::Partition, String> {
    let host = oslet_config::HostTopology::detect()
        .map_err(|e| format!("cannot read the host topology: {}", error_chain(&e)))?;
    oslet_config::load(path, &host).map_err(|e| error_chain(&e))
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_BAD_INPUT } else { 0 };
        }
    };
    match cli.command {
        Cmd::Check { file } => match load_partition(&file) {
            Ok(p) => {
                println!("{p}");
                0
            }
            Err(e) => {
                eprintln!("oslet: {e}");
                EXIT_BAD_INPUT
            }
        },
        Cmd::Up { file, quiet } => cmd_up(&file, quiet),
        Cmd::Bench {
            what: BenchCmd::Boot(args),
        } => bench::boot(&args),
        Cmd::Bench {
            what: BenchCmd::Link(args),
        } => bench_link::run(&args),
        Cmd::BenchEcho { read_fd, write_fd } => bench_link::echo_main(read_fd, write_fd),
        Cmd::Testkernel { output } => match testkernel::write_to(&output) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("oslet: cannot write {}: {e}", output.display());
                1
            }
        },
        Cmd::Vmm { config, name } => cmd_vmm(&config, &name),
    }
}

fn cmd_up(file: &Path, quiet: bool) -> i32 {
    let partition = match load_partition(file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("oslet: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    if let Err(e) = kvm::open() {
        eprintln!("oslet: {e}");
        return EXIT_BAD_INPUT;
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("oslet: cannot find the oslet executable: {e}");
            return 1;
        }
    };
    let opts = UpOptions {
        exe,
        quiet,
        ready_marker: None,
    };
    match supervisor::up(&partition, &opts) {
        Ok(reports) => {
            let mut failed = false;
            for r in &reports {
                eprintln!("oslet: {}: {}", r.name, r.outcome);
                failed |= !r.outcome.success();
            }
            i32::from(failed)
        }
        Err(e) => {
            eprintln!("oslet: {}", error_chain(&e));
            1
        }
    }
}

fn cmd_vmm(config: &Path, name: &str) -> i32 {
    log::set_prefix(&format!("oslet[{name}]"));
    let mut sink = EventSink::from_env();
    let outcome = match read_plan(config, name) {
        Err(error) => Outcome::Failed { error },
        Ok(plan) => match signals::install_stop_handlers() {
            Err(e) => Outcome::Failed {
                error: format!("cannot install signal handlers: {e}"),
            },
            Ok(()) => match oslet::run(plan, &mut sink) {
                Ok(o) => o,
                Err(e) => Outcome::Failed {
                    error: error_chain(&e),
                },
            },
        },
    };
    if let Outcome::Failed { error } = &outcome {
        log::info(format_args!("error: {error}"));
    }
    sink.send(&Event::Ended {
        outcome: outcome.clone(),
    });
    outcome.exit_code()
}

/// Reads the plan `oslet up` wrote on stdin.
fn read_plan(config: &Path, name: &str) -> Result<oslet::VmmPlan, String> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .map_err(|e| format!("cannot read the plan on stdin: {e}"))?;
    let plan: oslet::VmmPlan = serde_json::from_str(&text).map_err(|e| {
        format!(
            "no valid plan for OSlet {name:?} of {} on stdin ({e}); this command is started by `oslet up`",
            config.display()
        )
    })?;
    if plan.oslet.name != name {
        return Err(format!(
            "the plan on stdin is for {:?}, not {name:?}",
            plan.oslet.name
        ));
    }
    Ok(plan)
}
