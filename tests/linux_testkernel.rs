//! End-to-end: oslet's Linux test kernel (images/build-testkernel.sh: Debian's
//! linux-source-6.1, `make tinyconfig` + images/linux-test/oslet.config, the two
//! patches in images/linux-test/patches, a tiny static /init) boots under `oslet up`
//! in a 4-vCPU OSlet with a virtio-fs share, on this machine's KVM. From the serial
//! console (and, for the device's probe, the VMM's own log) it checks:
//!
//! - the kernel banner, "Linux version 6.1...";
//! - the CPUs came from oslet's MP table and all four were brought up
//!   ("smp: Brought up 1 node, 4 CPUs": INIT/SIPI through the in-kernel LAPIC);
//! - each virtio-mmio device on the command line was registered
//!   ("virtio-mmio: Registering device virtio-mmio.N at ...") and probed: Linux's
//!   virtio_fs prints nothing when its probe succeeds, so the evidence is the VMM's
//!   "virtio-fs: the guest driver set DRIVER_OK" line, which only a driver that has
//!   set the device up produces;
//! - "Run /init as init process".
//!
//! Then Ctrl-C (SIGINT to `oslet up`) stops the OSlet. On hosts whose KVM emulates
//! guest ring 0 (../shared/KVM-NOTES.md) /init's first syscall never reaches the
//! kernel, so that is as far as Linux gets; the test records what follows. On a host
//! with hardware virtualization (vmx/svm) it also waits for /init's own line.
//!
//! The kernel build takes minutes the first time and is cached outside the checkout
//! (see the script); later runs reuse it. The time to each milestone is printed. No
//! milestone has a time limit beyond one generous guard: this machine is slow and
//! shared.
//!
//! Skips with one line where /dev/kvm, virtiofsd, linux-source-6.1 or a build tool is
//! missing; fails instead where OSLET_REQUIRE_KVM=1, OSLET_REQUIRE_VIRTIOFSD=1 or
//! OSLET_REQUIRE_LINUX=1 (as in CI). The build never installs packages here
//! (OSLET_IMAGE_NO_INSTALL=1); .ci/run does.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{kvm_or_skip, root, write_config};

const TEST: &str = "linux_test_kernel_boots_4_cpus_probes_virtio_fs_and_runs_init";
/// The OSlet's name; console lines start with "linux-test | ".
const NAME: &str = "linux-test";
/// One guard for the whole boot (about a minute here); a hang fails, nothing else.
const GUARD: Duration = Duration::from_secs(15 * 60);
/// How long to watch after "Run /init" for what /init does (or what kills it).
const AFTER_INIT: Duration = Duration::from_secs(60);
/// The commands the build runs and the Debian packages that provide them
/// (images/build-testkernel.sh installs missing ones when it may; here it may not).
const TOOLS: [(&str, &str); 8] = [
    ("gcc", "gcc"),
    ("make", "make"),
    ("flex", "flex"),
    ("bison", "bison"),
    ("bc", "bc"),
    ("perl", "perl"),
    ("patch", "patch"),
    ("xz", "xz-utils"),
];
/// CPUID features Linux must not use where KVM emulates guest ring 0
/// (../shared/KVM-NOTES.md), as bit numbers (word * 32 + bit, cpufeatures.h): the
/// 6.1 kernel reads at most 127 characters of clearcpuid=, too few for the names.
/// cx16 xsave avx avx2 avx512f popcnt rdrand rdseed smap smep umip pcid invpcid bmi1
/// bmi2 movbe fsgsbase rdpid clflushopt clwb erms fsrm abm sha_ni aes pclmulqdq f16c
/// fma sse4_1 sse4_2 ssse3.
const CLEARCPUID: &str = "141,154,156,293,304,151,158,306,308,295,514,145,298,291,296,150,\
                          288,534,311,312,297,580,197,317,153,129,157,140,147,148,137";

fn skip(env: &str, reason: &str) {
    assert!(
        std::env::var(env).as_deref() != Ok("1"),
        "{TEST}: {reason} and {env}=1"
    );
    eprintln!("skipped {TEST}: {reason}");
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// Why the test kernel cannot be built on this host, if it cannot: the same checks
/// as the script's.
fn missing_build_prerequisite() -> Option<String> {
    if !on_path("dpkg-query") {
        return Some("not a Debian host (no dpkg-query)".into());
    }
    let mut missing: Vec<&str> = Vec::new();
    if !Path::new("/usr/src/linux-source-6.1.tar.xz").is_file() {
        missing.push("linux-source-6.1");
    }
    missing.extend(TOOLS.iter().filter(|(c, _)| !on_path(c)).map(|(_, p)| *p));
    if !Path::new("/usr/include/libelf.h").is_file() {
        missing.push("libelf-dev");
    }
    (!missing.is_empty()).then(|| {
        format!(
            "the kernel build needs {} (apt-get install -y {})",
            missing.join(" "),
            missing.join(" ")
        )
    })
}

/// virtiofsd, which the OSlet's [shared_fs] needs: on PATH, and root to run it.
fn virtiofsd_usable() -> bool {
    // SAFETY: geteuid has no preconditions.
    on_path("virtiofsd") && unsafe { libc::geteuid() } == 0
}

/// Builds the test kernel (or takes it from the script's cache) into the test
/// target's directory, once per test process; returns that directory.
fn build() -> &'static Path {
    static OUT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    OUT.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("images/testkernel");
        let t = Instant::now();
        let o = Command::new(root().join("images/build-testkernel.sh"))
            .arg(&out)
            .env("OSLET_IMAGE_NO_INSTALL", "1")
            .current_dir(root())
            .output()
            .expect("run images/build-testkernel.sh");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success(),
            "images/build-testkernel.sh {} failed:\n{err}",
            out.display()
        );
        eprintln!(
            "images/build-testkernel.sh: {:.1} s ({})",
            t.elapsed().as_secs_f64(),
            err.lines().last().unwrap_or("")
        );
        out
    })
}

/// `CONFIG_<name>` from the built kernel's .config.
fn kernel_config(out: &Path, name: &str) -> String {
    let config = std::fs::read_to_string(out.join("config")).expect("read the kernel's config");
    let key = format!("CONFIG_{name}=");
    config
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("{key} is not in {}", out.join("config").display()))
        .to_string()
}

/// The TSC rate oslet gives its guests, in kHz: the `oslet.tsc_khz=` word it puts on
/// the embedded test kernel's command line (KVM_GET_TSC_KHZ).
fn guest_tsc_khz(dir: &Path) -> u64 {
    let cfg = write_config(
        dir,
        "tsc.toml",
        &format!(
            "[host]\nlog_dir = \"{}\"\n[[oslet]]\nname = \"tsc\"\ncpus = 1\nmemory = \"4MiB\"\n\
             kernel = \"builtin:testkernel\"\n",
            dir.join("logs").display()
        ),
    );
    let (code, out, err) = common::run(&["up", cfg.to_str().expect("UTF-8 path")]);
    assert_eq!(code, 0, "the embedded test kernel:\n{out}\n{err}");
    out.split_whitespace()
        .find_map(|w| w.trim_matches('"').strip_prefix("oslet.tsc_khz="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no oslet.tsc_khz= in the test kernel's output:\n{out}"))
}

/// Every line of `oslet up`'s stdout and (prefixed "stderr: ") stderr, with the time
/// it arrived, through one channel.
fn output_channel(child: &mut std::process::Child) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("piped stdout");
    let err = child.stderr.take().expect("piped stderr");
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
            if tx.send((Instant::now(), l)).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for l in std::io::BufRead::lines(std::io::BufReader::new(err)).map_while(Result::ok) {
            if tx2.send((Instant::now(), format!("stderr: {l}"))).is_err() {
                break;
            }
        }
    });
    rx
}

/// Whether the CPU offers hardware virtualization (then Linux userspace runs in KVM).
fn hardware_virtualization() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    })
}

/// A console line of the OSlet, without the "name | " prefix.
fn console_line(l: &str) -> Option<&str> {
    l.strip_prefix(NAME)?.strip_prefix(" | ")
}

/// The milestones, in boot order: (name, whether a line is it).
type Milestone = (&'static str, fn(&str) -> bool);
const MILESTONES: [Milestone; 6] = [
    ("banner", |l| {
        console_line(l).is_some_and(|c| c.contains("Linux version 6.1"))
    }),
    ("MP table", |l| {
        console_line(l).is_some_and(|c| c.contains("found SMP MP-table at"))
    }),
    ("4 CPUs up", |l| {
        console_line(l).is_some_and(|c| c.contains("smp: Brought up 1 node, 4 CPUs"))
    }),
    ("virtio-mmio registered", |l| {
        console_line(l).is_some_and(|c| c.contains("virtio-mmio: Registering device virtio-mmio."))
    }),
    ("virtio-fs DRIVER_OK", |l| {
        l.starts_with("stderr: ") && l.contains("virtio-fs: the guest driver set DRIVER_OK")
    }),
    ("Run /init", |l| {
        console_line(l).is_some_and(|c| c.contains("Run /init as init process"))
    }),
];

#[test]
fn linux_test_kernel_boots_4_cpus_probes_virtio_fs_and_runs_init() {
    if !kvm_or_skip(TEST) {
        return;
    }
    if !virtiofsd_usable() {
        skip(
            "OSLET_REQUIRE_VIRTIOFSD",
            "needs virtiofsd on PATH and root (cargo install virtiofsd)",
        );
        return;
    }
    if let Some(why) = missing_build_prerequisite() {
        skip("OSLET_REQUIRE_LINUX", &why);
        return;
    }
    let out = build();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let share = dir.path().join("share");
    std::fs::create_dir(&share).expect("create the shared directory");

    // Where guest ring 0 is emulated, Linux can calibrate neither the TSC (its PIT
    // readings are too slow and noisy: "tsc: Unable to calibrate against PIT"; the
    // first runs then made no progress for minutes) nor, on each AP, its delay loop
    // (seconds per CPU): give it
    // both, from the TSC rate oslet gives the guest. lpj is loops per jiffy, in TSC
    // cycles for the TSC delay loop: kHz * 1000 / HZ. rodata=off skips write-protecting
    // the kernel image, a minute of page-attribute changes here (measured). On
    // hardware these only save time.
    let khz = guest_tsc_khz(dir.path());
    let hz: u64 = kernel_config(out, "HZ")
        .parse()
        .expect("CONFIG_HZ is a number");
    let cmdline = format!(
        "console=ttyS0 earlyprintk=serial,ttyS0,115200 tsc_early_khz={khz} lpj={} rodata=off clearcpuid={CLEARCPUID}",
        khz * 1000 / hz
    );
    let cfg = write_config(
        dir.path(),
        "linux-test.toml",
        &format!(
            "[host]\noversubscribe = true\nlog_dir = \"{}\"\n\
             [[oslet]]\nname = \"{NAME}\"\ncpus = 4\nmemory = \"64MiB\"\n\
             kernel = \"{}\"\ninitrd = \"{}\"\ncmdline = \"{cmdline}\"\n\
             [shared_fs]\npath = \"{}\"\ntag = \"oslet\"\n",
            dir.path().join("logs").display(),
            out.join("vmlinux").display(),
            out.join("initramfs.cpio").display(),
            share.display()
        ),
    );

    let mut child = common::oslet()
        .args(["up", cfg.to_str().expect("UTF-8 path")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start oslet up");
    let rx = output_channel(&mut child);
    let start = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    let mut at: BTreeMap<&str, Duration> = BTreeMap::new();
    let deep = hardware_virtualization();
    let init_line = "oslet-test-init: PID 1 running";
    // Read until "Run /init" and then what /init prints or the kernel's panic when it
    // dies (AFTER_INIT at most), the guard, or the end of the output.
    let mut until = start + GUARD;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let (when, l) = match rx.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(x) => x,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        for (name, is) in MILESTONES {
            if !at.contains_key(name) && is(&l) {
                at.insert(name, when - start);
                if name == "Run /init" {
                    until = when + AFTER_INIT;
                }
            }
        }
        let c = console_line(&l).unwrap_or("");
        let end =
            at.contains_key("Run /init") && (c.contains(init_line) || c.contains("Kernel panic"));
        seen.push(l);
        if end {
            break;
        }
    }
    let waited = start.elapsed();
    // Ctrl-C: SIGINT to `oslet up`, which stops its VMM process.
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().expect("wait for oslet up");
    // The rest of the output (the readers end with the pipes).
    seen.extend(rx.iter().map(|(_, l)| l));
    let all = seen.join("\n");

    for (name, _) in MILESTONES {
        match at.get(name) {
            Some(t) => eprintln!("{TEST}: {name:<24} {:7.1} s", t.as_secs_f64()),
            None => eprintln!("{TEST}: {name:<24} not reached"),
        }
    }
    // What came after "Run /init" (here: init's fault and the kernel's panic).
    if let Some(i) = seen.iter().position(|l| MILESTONES[5].1(l)) {
        for l in seen[i + 1..]
            .iter()
            .filter_map(|l| console_line(l))
            .take(12)
        {
            eprintln!("{TEST}: after /init: {l}");
        }
    }
    for (name, _) in MILESTONES {
        assert!(
            at.contains_key(name),
            "{name}: not seen within {:.0} s of `oslet up`; output:\n{all}",
            waited.as_secs_f64()
        );
    }
    // Each virtio-mmio device on the kernel's command line registered and probed.
    let words = seen
        .iter()
        .filter_map(|l| console_line(l))
        .find(|c| c.contains("Kernel command line: "))
        .map(|c| {
            c.split_whitespace()
                .filter(|w| w.starts_with("virtio_mmio.device="))
                .count()
        })
        .unwrap_or_else(|| panic!("no \"Kernel command line:\" line:\n{all}"));
    let registered = seen
        .iter()
        .filter_map(|l| console_line(l))
        .filter(|c| c.contains("virtio-mmio: Registering device virtio-mmio."))
        .count();
    let ready = seen
        .iter()
        .filter(|l| {
            l.starts_with("stderr: ") && l.contains("virtio-fs: the guest driver set DRIVER_OK")
        })
        .count();
    assert_eq!(words, 1, "oslet announces its one virtio-fs device:\n{all}");
    assert_eq!(registered, words, "a device registered per word:\n{all}");
    assert_eq!(ready, words, "a DRIVER_OK per device:\n{all}");
    assert!(
        seen.iter()
            .filter_map(|l| console_line(l))
            .any(|c| c.contains(
                "virtio-mmio: Registering device virtio-mmio.0 at 0xfe000000-0xfe000fff, IRQ 21."
            )),
        "the device at oslet's address and GSI:\n{all}"
    );
    assert!(!all.contains("emulation failure"), "{all}");
    if deep {
        assert!(
            all.contains(init_line),
            "hardware virtualization, but /init did not print {init_line:?}:\n{all}"
        );
    }
    assert_eq!(status.code(), Some(0), "oslet up after SIGINT:\n{all}");
    assert!(
        all.contains(&format!("{NAME}: stopped (signal 15)")),
        "the OSlet stopped by Ctrl-C:\n{all}"
    );
}

/// The same kernel and initramfs under QEMU with software emulation (TCG), where guest
/// ring 3 and syscalls work: /init runs and prints its line. So what stops the boot on
/// this machine's KVM, just after "Run /init", is the syscall (KVM-NOTES), not the
/// kernel or /init. (QEMU's own firmware and tables here: one vCPU.)
#[test]
fn linux_test_kernel_runs_its_init_under_qemu_tcg() {
    const TCG: &str = "linux_test_kernel_runs_its_init_under_qemu_tcg";
    if !on_path("qemu-system-x86_64") {
        assert!(
            std::env::var("OSLET_REQUIRE_LINUX").as_deref() != Ok("1"),
            "{TCG}: no qemu-system-x86_64 and OSLET_REQUIRE_LINUX=1"
        );
        eprintln!("skipped {TCG}: no qemu-system-x86_64 (apt-get install -y qemu-system-x86)");
        return;
    }
    if let Some(why) = missing_build_prerequisite() {
        assert!(
            std::env::var("OSLET_REQUIRE_LINUX").as_deref() != Ok("1"),
            "{TCG}: {why} and OSLET_REQUIRE_LINUX=1"
        );
        eprintln!("skipped {TCG}: {why}");
        return;
    }
    let out = build();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-M", "pc", "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "64",
        ])
        .args([
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(out.join("vmlinux"))
        .arg("-initrd")
        .arg(out.join("initramfs.cpio"))
        .args(["-append", "console=ttyS0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-system-x86_64");
    let rx = common::line_channel(&mut child);
    let start = Instant::now();
    let mut seen = Vec::new();
    let ran = common::wait_for_line(&rx, &mut seen, start, Duration::from_secs(300), |l| {
        l.contains("oslet-test-init: PID 1 running")
    });
    let took = start.elapsed();
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let all = seen.join("\n");
    assert!(
        ran,
        "no line from /init within 300 s under QEMU TCG:\n{all}"
    );
    assert!(all.contains("Linux version 6.1"), "{all}");
    assert!(all.contains("Run /init as init process"), "{all}");
    eprintln!("{TCG}: /init ran after {:.1} s", took.as_secs_f64());
}
