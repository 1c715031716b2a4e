//! The `oslet` command line.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::events::{Event, EventSink, Outcome};
use crate::supervisor::{self, UpOptions};
use crate::{bench, bench_fs, bench_link, control, kvm, log, oslet, signals, testkernel, top};

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
    /// Boot every OSlet of a partition file and supervise them (in the foreground
    /// until all have ended, or with --detach in the background until `oslet down`).
    Up {
        /// The partition file (TOML).
        file: PathBuf,
        /// Do not relay the consoles (they still go to the log files).
        #[arg(long)]
        quiet: bool,
        /// Run the supervisor in the background; its output goes to <log_dir>/supervisor.log.
        #[arg(long)]
        detach: bool,
        /// The control socket (default: $OSLET_SOCKET, $XDG_RUNTIME_DIR/oslet.sock or /tmp/oslet-<uid>.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Keep supervising after every OSlet ended (what --detach runs).
        #[arg(long, hide = true)]
        stay: bool,
    },
    /// List the OSlets of the running supervisor: state, host CPUs, memory, uptime.
    Ps {
        /// The control socket.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One live screen for the whole box: totals first, then every OSlet and link.
    Top {
        /// The control socket.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Screens to show, one a second (0: until Ctrl-C).
        #[arg(long, default_value_t = 0)]
        iterations: u64,
    },
    /// Stop one OSlet (the others keep running).
    Stop {
        /// The OSlet.
        name: String,
        /// The control socket.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Start a stopped OSlet again.
    Start {
        /// The OSlet.
        name: String,
        /// The control socket.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Stop and start one OSlet.
    Restart {
        /// The OSlet.
        name: String,
        /// The control socket.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Attach this terminal to a running OSlet's serial console; Ctrl-] detaches.
    Console {
        /// The OSlet.
        name: String,
        /// The control socket.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Print an OSlet's console log (its last 64 KiB).
    Logs {
        /// The OSlet.
        name: String,
        /// The control socket.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Stop every OSlet and the supervisor; removes the socket.
    Down {
        /// The control socket.
        #[arg(long)]
        socket: Option<PathBuf>,
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
    /// The shared filesystem (virtio-fs) from an OSlet against the host.
    Fs(bench_fs::FsArgs),
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
        Cmd::Up {
            file,
            quiet,
            detach,
            socket,
            stay,
        } => {
            if detach {
                cmd_detach(&file, socket.as_deref())
            } else {
                cmd_up(&file, quiet, socket.as_deref(), stay)
            }
        }
        Cmd::Ps { socket, json } => cmd_ps(socket.as_deref(), json),
        Cmd::Top { socket, iterations } => {
            top::run(&control::socket_path(socket.as_deref()), iterations)
        }
        Cmd::Stop { name, socket } => cmd_call(
            socket.as_deref(),
            "POST",
            &format!("/v1/oslets/{name}/stop"),
        ),
        Cmd::Start { name, socket } => cmd_call(
            socket.as_deref(),
            "POST",
            &format!("/v1/oslets/{name}/start"),
        ),
        Cmd::Restart { name, socket } => cmd_call(
            socket.as_deref(),
            "POST",
            &format!("/v1/oslets/{name}/restart"),
        ),
        Cmd::Logs { name, socket } => cmd_logs(socket.as_deref(), &name),
        Cmd::Console { name, socket } => {
            crate::console_attach::run_client(&control::socket_path(socket.as_deref()), &name)
        }
        Cmd::Down { socket } => cmd_call(socket.as_deref(), "POST", "/v1/down"),
        Cmd::Bench {
            what: BenchCmd::Boot(args),
        } => bench::boot(&args),
        Cmd::Bench {
            what: BenchCmd::Link(args),
        } => bench_link::run(&args),
        Cmd::Bench {
            what: BenchCmd::Fs(args),
        } => bench_fs::run(&args),
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

/// What `up` checks before starting anything: the file, then /dev/kvm. Errors are
/// printed here; the `Err` is the exit code.
fn load_for_up(file: &Path) -> Result<oslet_config::Partition, i32> {
    let partition = load_partition(file).map_err(|e| {
        eprintln!("oslet: {e}");
        EXIT_BAD_INPUT
    })?;
    kvm::open().map_err(|e| {
        eprintln!("oslet: {e}");
        EXIT_BAD_INPUT
    })?;
    Ok(partition)
}

fn cmd_up(file: &Path, quiet: bool, socket: Option<&Path>, stay: bool) -> i32 {
    let partition = match load_for_up(file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("oslet: cannot find the oslet executable: {e}");
            return 1;
        }
    };
    // The supervisor and every thread it starts stay off the vCPUs' CPUs.
    if let Err(e) = crate::affinity::pin_housekeeping(&partition.housekeeping_cpus) {
        crate::log::warn(format_args!(
            "cannot keep the supervisor on the housekeeping CPUs: {e}"
        ));
    }
    // The control API: on the socket asked for (busy = error), or on the default one
    // when it can be had (busy = run without an API, so several `oslet up` coexist).
    let explicit = socket.is_some() || stay;
    let opts = UpOptions {
        exe,
        quiet,
        ready_marker: None,
        socket: Some(control::socket_path(socket)),
        stay,
        socket_optional: !explicit,
    };
    match supervisor::up(&partition, &opts) {
        Ok(reports) => {
            let mut failed = false;
            for r in &reports {
                failed |= !r.outcome.success();
            }
            i32::from(failed)
        }
        Err(e @ supervisor::SupervisorError::Control(_)) => {
            eprintln!("oslet: {}", error_chain(&e));
            EXIT_BAD_INPUT
        }
        Err(e) => {
            eprintln!("oslet: {}", error_chain(&e));
            1
        }
    }
}

/// `oslet up --detach`: validate here, then run the supervisor in its own session in
/// the background and return once its control socket answers.
fn cmd_detach(file: &Path, socket: Option<&Path>) -> i32 {
    let partition = match load_for_up(file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let path = control::socket_path(socket);
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        eprintln!("oslet: {}", error_chain(&control::ControlError::Busy(path)));
        return EXIT_BAD_INPUT;
    }
    let log_path = partition.log_dir.join("supervisor.log");
    let _ = std::fs::create_dir_all(&partition.log_dir);
    let log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("oslet: cannot open {}: {e}", log_path.display());
            return 1;
        }
    };
    let (Ok(exe), Ok(log2)) = (std::env::current_exe(), log.try_clone()) else {
        eprintln!("oslet: cannot start the supervisor");
        return 1;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("up")
        .arg(&partition.source)
        .arg("--stay")
        .arg("--socket")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: setsid is async-signal-safe; the supervisor gets its own session so the
    // terminal's Ctrl-C and hang-up no longer reach it.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("oslet: cannot start the supervisor: {e}");
            return 1;
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            eprintln!(
                "oslet: the supervisor ended at once ({st}); see {}",
                log_path.display()
            );
            return 1;
        }
        if matches!(control::request(&path, "GET", "/v1/ping"), Ok((200, _))) {
            println!(
                "oslet: supervisor {} serving {} (log {})",
                child.id(),
                path.display(),
                log_path.display()
            );
            return 0;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    eprintln!(
        "oslet: the supervisor did not answer on {} within 20 s; see {}",
        path.display(),
        log_path.display()
    );
    1
}

fn api_error(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string())
}

fn cmd_call(socket: Option<&Path>, method: &str, target: &str) -> i32 {
    let path = control::socket_path(socket);
    match control::request(&path, method, target) {
        Ok((200, body)) => {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                if let (Some(n), Some(s)) = (v["name"].as_str(), v["state"].as_str()) {
                    println!("{n}: {s}");
                }
            }
            0
        }
        Ok((status, body)) => {
            eprintln!("oslet: {} (HTTP {status})", api_error(&body));
            if status == 404 || status == 409 {
                EXIT_BAD_INPUT
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("oslet: {}", error_chain(&e));
            1
        }
    }
}

fn cmd_logs(socket: Option<&Path>, name: &str) -> i32 {
    let path = control::socket_path(socket);
    match control::request(&path, "GET", &format!("/v1/oslets/{name}/logs")) {
        Ok((200, body)) => {
            print!("{body}");
            0
        }
        Ok((status, body)) => {
            eprintln!("oslet: {} (HTTP {status})", api_error(&body));
            EXIT_BAD_INPUT
        }
        Err(e) => {
            eprintln!("oslet: {}", error_chain(&e));
            1
        }
    }
}

fn fmt_uptime(s: f64) -> String {
    let s = s as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s / 60) % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn cmd_ps(socket: Option<&Path>, json: bool) -> i32 {
    let path = control::socket_path(socket);
    let body = match control::request(&path, "GET", "/v1/oslets") {
        Ok((200, body)) => body,
        Ok((status, body)) => {
            eprintln!("oslet: {} (HTTP {status})", api_error(&body));
            return 1;
        }
        Err(e) => {
            eprintln!("oslet: {}", error_chain(&e));
            return 1;
        }
    };
    if json {
        println!("{body}");
        return 0;
    }
    let Ok(serde_json::Value::Array(list)) = serde_json::from_str(&body) else {
        eprintln!("oslet: unreadable answer from the supervisor");
        return 1;
    };
    println!(
        "{:<16} {:<9} {:>7} {:<12} {:>9} {:>8} {:>8} {:>10}  LAST EXIT",
        "NAME", "STATE", "PID", "HOST CPUS", "MEMORY", "UPTIME", "RESTARTS", "EXITS/S"
    );
    for o in list {
        let cpus: Vec<u64> = o["host_cpus"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c.as_u64()).collect())
            .unwrap_or_default();
        let cpus = cpus
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",");
        println!(
            "{:<16} {:<9} {:>7} {:<12} {:>6} MiB {:>8} {:>8} {:>10}  {}",
            o["name"].as_str().unwrap_or("?"),
            o["state"].as_str().unwrap_or("?"),
            o["pid"]
                .as_u64()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            cpus,
            o["memory_bytes"].as_u64().unwrap_or(0) >> 20,
            o["uptime_s"]
                .as_f64()
                .map(fmt_uptime)
                .unwrap_or_else(|| "-".into()),
            o["restarts"].as_u64().unwrap_or(0),
            // Every exit KVM counted, where the kernel has vCPU statistics.
            o["kvm_exits_per_s"]
                .as_f64()
                .or(o["vmm_exits_per_s"].as_f64())
                .map(|r| format!("{r:.0}"))
                .unwrap_or_else(|| "-".into()),
            o["last_exit"].as_str().unwrap_or("-"),
        );
    }
    0
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

/// Reads the plan `oslet up` wrote as the first line of stdin (the rest of stdin is
/// the OSlet's console input, see `oslet::run`).
fn read_plan(config: &Path, name: &str) -> Result<oslet::VmmPlan, String> {
    let mut text = String::new();
    std::io::stdin()
        .read_line(&mut text)
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
