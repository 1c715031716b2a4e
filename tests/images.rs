//! The default Linux OSlet image (images/build-default.sh): what it holds, checked by
//! taking the built initramfs apart with cpio; that the build is cached and
//! reproducible; that the shipped linux-two-oslets example checks once it is built;
//! that /init really runs (modules, links, agent, a shell on the console) in QEMU
//! with software emulation (TCG); and that `oslet up` hands the image to Debian's
//! kernel.
//!
//! On hosts whose KVM emulates guest ring 0 (../shared/KVM-NOTES.md) no Linux
//! userspace runs under KVM, so under oslet the boot test stops at the kernel's
//! record of the initramfs; on a host with hardware virtualization (vmx/svm) it waits
//! for /init's "oslet-init: ready".
//!
//! Without the Debian packages the build needs (linux-image-cloud-amd64,
//! busybox-static, cpio, lz4) or QEMU, these tests skip with one line, unless
//! OSLET_REQUIRE_LINUX=1, where they fail. The build never installs packages here
//! (OSLET_IMAGE_NO_INSTALL=1).

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use common::{kvm_or_skip, line_channel, lines_of, root, wait_for_line, write_config};

/// The modules /init must load (and, with them, everything modules.dep says they need).
const REQUIRED_MODULES: [&str; 5] = [
    "virtio_mmio",
    "virtiofs",
    "vsock",
    "vmw_vsock_virtio_transport",
    "virtio_console",
];

/// Busybox applets /init runs.
const INIT_APPLETS: [&str; 13] = [
    "sh", "mount", "mkdir", "insmod", "cat", "cut", "uname", "hostname", "setsid", "cttyhack",
    "sleep", "echo", "poweroff",
];

fn required() -> bool {
    std::env::var("OSLET_REQUIRE_LINUX").as_deref() == Ok("1")
}

/// Skips `test` for `reason`, or fails it when OSLET_REQUIRE_LINUX=1.
fn skip(test: &str, reason: &str) {
    assert!(!required(), "{test}: {reason} and OSLET_REQUIRE_LINUX=1");
    eprintln!("skipped {test}: {reason}");
}

fn has_command(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn package_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Why the image cannot be built on this host, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let kernel = std::fs::read_dir("/boot").ok().is_some_and(|d| {
        d.filter_map(|e| e.ok()).any(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("vmlinuz-") && n.ends_with("-cloud-amd64")
        })
    });
    if !kernel {
        return Some(
            "no /boot/vmlinuz-*-cloud-amd64 (apt-get install -y linux-image-cloud-amd64)".into(),
        );
    }
    if !has_command("dpkg-query") {
        return Some("not a Debian host (no dpkg-query)".into());
    }
    for pkg in ["busybox-static", "cpio", "lz4"] {
        if !package_installed(pkg) {
            return Some(format!(
                "Debian package {pkg} is not installed (apt-get install -y {pkg})"
            ));
        }
    }
    None
}

/// Runs images/build-default.sh into `out` (extra args first); returns its stderr.
fn build(args: &[&str], out: &Path) -> String {
    let o = Command::new(root().join("images/build-default.sh"))
        .args(args)
        .arg(out)
        .env("OSLET_IMAGE_NO_INSTALL", "1")
        .current_dir(root())
        .output()
        .expect("run images/build-default.sh");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "images/build-default.sh {args:?} {} failed:\n{err}",
        out.display()
    );
    err
}

/// The image built once per test process into the test target's cache dir (reused
/// by later runs: the script skips work when its manifest matches), or why not.
fn image() -> &'static Result<PathBuf, String> {
    static IMAGE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        if let Some(why) = missing_prerequisite() {
            return Err(why);
        }
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("images/default");
        let t = Instant::now();
        build(&[], &out);
        eprintln!(
            "images/build-default.sh {}: {:.1} s",
            out.display(),
            t.elapsed().as_secs_f64()
        );
        Ok(out)
    })
}

fn image_or_skip(test: &str) -> Option<&'static Path> {
    match image() {
        Ok(p) => Some(p),
        Err(why) => {
            skip(test, why);
            None
        }
    }
}

/// `key value` from the [inputs] section of manifest.txt.
fn manifest_value(dir: &Path, key: &str) -> String {
    let m = std::fs::read_to_string(dir.join("manifest.txt")).unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .unwrap_or_else(|| panic!("manifest.txt has no {key:?} line:\n{m}"))
        .to_string()
}

/// The initramfs unpacked with cpio into a fresh temporary directory.
fn unpack(dir: &Path) -> (tempfile::TempDir, Vec<String>) {
    let tree = tempfile::tempdir().unwrap();
    let archive = dir.join("initramfs.cpio.gz");
    let sh = |cpio_args: &str, cwd: &Path| {
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "gzip -dc \"$0\" | cpio {cpio_args} --quiet --no-absolute-filenames"
            ))
            .arg(&archive)
            .current_dir(cwd)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "cpio {cpio_args}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let names = sh("-t", tree.path()).lines().map(str::to_string).collect();
    sh("-idm", tree.path());
    (tree, names)
}

/// Whether an ELF file asks for a program interpreter (is dynamically linked).
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3 // PT_INTERP
    })
}

/// modules.dep of the host's copy of the image's kernel: module path -> dependencies.
fn host_modules_dep(kver: &str) -> Vec<(String, Vec<String>)> {
    std::fs::read_to_string(format!("/lib/modules/{kver}/modules.dep"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (m, deps) = l.split_once(':')?;
            Some((
                m.to_string(),
                deps.split_whitespace().map(str::to_string).collect(),
            ))
        })
        .collect()
}

/// A module path without its compression suffix (the image holds plain .ko files).
fn plain(path: &str) -> &str {
    [".xz", ".zst", ".gz"]
        .iter()
        .find_map(|s| path.strip_suffix(s))
        .unwrap_or(path)
}

fn module_name(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap();
    &base[..base.find(".ko").unwrap()]
}

#[test]
fn initramfs_holds_init_busybox_oslet_msg_and_the_modules_with_their_dependencies() {
    let test = "initramfs_holds_init_busybox_oslet_msg_and_the_modules_with_their_dependencies";
    let Some(dir) = image_or_skip(test) else {
        return;
    };
    let kver = manifest_value(dir, "kernel-version");
    let (tree, names) = unpack(dir);
    let t = tree.path();
    let names: BTreeSet<String> = names.into_iter().collect();

    // /init: the repository's images/init, executable, loading modules and saying ready.
    assert!(names.contains("init"), "{names:?}");
    let init = std::fs::read_to_string(t.join("init")).unwrap();
    assert_eq!(
        init,
        std::fs::read_to_string(root().join("images/init")).unwrap()
    );
    assert!(init.starts_with("#!/bin/sh\n"));
    let mode = std::fs::metadata(t.join("init"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "init mode {mode:o}");
    for needle in [
        "echo \"oslet-init: $*\"",
        "insmod",
        "/etc/oslet/modules",
        "say \"loaded $mod\"",
        "say \"cannot load $mod",
        "mount -t virtiofs",
        "oslet-msg list",
        "oslet-msg serve",
        "oslet-msg agent",
        "say ready",
    ] {
        assert!(init.contains(needle), "init lacks {needle:?}");
    }

    // busybox, static (the image has no loader), with the applets /init uses.
    let busybox = std::fs::read(t.join("bin/busybox")).unwrap();
    assert!(!has_interpreter(&busybox), "bin/busybox is not static");
    for applet in INIT_APPLETS {
        let link = std::fs::read_link(t.join("bin").join(applet))
            .unwrap_or_else(|e| panic!("bin/{applet}: {e}"));
        assert_eq!(link, Path::new("busybox"), "bin/{applet}");
    }

    // oslet-msg: static, and it runs from the extracted tree.
    let msg = t.join("bin/oslet-msg");
    assert!(!has_interpreter(&std::fs::read(&msg).unwrap()));
    let help = Command::new(&msg).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for cmd in ["list", "send", "recv", "ping", "serve", "agent"] {
        assert!(help.contains(cmd), "oslet-msg --help lacks {cmd}:\n{help}");
    }

    // The modules: every required one and every dependency modules.dep gives it,
    // as plain ELF .ko files, listed in /etc/oslet/modules dependencies first.
    let dep = host_modules_dep(&kver);
    let deps_of = |m: &str| -> &Vec<String> { &dep.iter().find(|(p, _)| p == m).unwrap().1 };
    let mut want: BTreeSet<String> = BTreeSet::new();
    for name in REQUIRED_MODULES {
        let (path, deps) = dep
            .iter()
            .find(|(p, _)| module_name(p) == name)
            .unwrap_or_else(|| panic!("{name} is not in /lib/modules/{kver}/modules.dep"));
        want.insert(path.clone());
        want.extend(deps.iter().cloned());
    }
    for m in ["virtio.ko", "virtio_ring.ko", "fuse.ko"] {
        assert!(
            want.iter().any(|p| plain(p).ends_with(&format!("/{m}"))),
            "{m} should be a dependency: {want:?}"
        );
    }
    let order: Vec<String> = std::fs::read_to_string(t.join("etc/oslet/modules"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let listed: BTreeSet<&str> = order.iter().map(String::as_str).collect();
    let wanted: BTreeSet<&str> = want.iter().map(|p| plain(p)).collect();
    assert_eq!(listed, wanted, "etc/oslet/modules");
    for m in &want {
        let rel = format!("lib/modules/{kver}/{}", plain(m));
        assert!(names.contains(&rel), "{rel} not in the archive");
        let ko = std::fs::read(t.join(&rel)).unwrap();
        assert_eq!(&ko[..4], b"\x7fELF", "{rel} is not a plain .ko");
        let at = order.iter().position(|p| p == plain(m)).unwrap();
        for d in deps_of(m) {
            let dat = order.iter().position(|p| p == plain(d)).unwrap();
            assert!(dat < at, "{} is loaded before its dependency {d}", plain(m));
        }
    }
    let image_dep =
        std::fs::read_to_string(t.join(format!("lib/modules/{kver}/modules.dep"))).unwrap();
    assert_eq!(image_dep.lines().count(), want.len(), "{image_dep}");

    // Owner root, mtime 0 (reproducible), dirs the init mounts on.
    for d in ["proc", "sys", "dev", "tmp", "shared"] {
        assert!(t.join(d).is_dir(), "{d}/");
    }
    let listing = Command::new("sh")
        .arg("-c")
        .arg("gzip -dc \"$0\" | cpio -tv --quiet")
        .arg(dir.join("initramfs.cpio.gz"))
        .output()
        .unwrap();
    for l in String::from_utf8_lossy(&listing.stdout).lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!((f[2], f[3]), ("root", "root"), "{l}");
    }
    let mtime = std::fs::metadata(t.join("init"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(mtime, SystemTime::UNIX_EPOCH);
}

#[test]
fn kernel_outputs_are_the_packaged_kernel_and_its_elf_and_the_manifest_hashes_them() {
    let test = "kernel_outputs_are_the_packaged_kernel_and_its_elf_and_the_manifest_hashes_them";
    let Some(dir) = image_or_skip(test) else {
        return;
    };
    let kver = manifest_value(dir, "kernel-version");
    assert!(kver.ends_with("-cloud-amd64"), "{kver}");
    assert_eq!(
        manifest_value(dir, "kernel-image"),
        format!("/boot/vmlinuz-{kver}")
    );
    assert!(
        std::fs::read(dir.join("vmlinuz")).unwrap()
            == std::fs::read(format!("/boot/vmlinuz-{kver}")).unwrap(),
        "vmlinuz is not /boot/vmlinuz-{kver}"
    );
    let vmlinux = std::fs::read(dir.join("vmlinux")).unwrap();
    assert_eq!(&vmlinux[..4], b"\x7fELF");
    let m = std::fs::read_to_string(dir.join("manifest.txt")).unwrap();
    for key in [
        format!("package linux-image-{kver} "),
        "package busybox-static ".into(),
        "sha256 init ".into(),
        "sha256 oslet-msg ".into(),
    ] {
        assert!(m.contains(&key), "manifest lacks {key:?}:\n{m}");
    }
    let outputs = m.split("[outputs]\n").nth(1).expect("[outputs] section");
    let st = Command::new("sh")
        .arg("-c")
        .arg("printf '%s' \"$0\" | sha256sum --quiet -c")
        .arg(outputs)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success(), "sha256sum -c of manifest.txt's outputs");
    for f in ["vmlinuz", "vmlinux", "initramfs.cpio.gz"] {
        assert!(outputs.contains(&format!("  {f}\n")), "{outputs}");
    }
}

#[test]
fn a_rerun_is_cached_and_a_fresh_build_is_byte_identical() {
    let test = "a_rerun_is_cached_and_a_fresh_build_is_byte_identical";
    let Some(dir) = image_or_skip(test) else {
        return;
    };
    let outputs = ["vmlinuz", "vmlinux", "initramfs.cpio.gz", "manifest.txt"];
    let mtime = |d: &Path| {
        std::fs::metadata(d.join("initramfs.cpio.gz"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before = mtime(dir);
    let t = Instant::now();
    let err = build(&[], dir);
    eprintln!("cached rerun: {:.1} s", t.elapsed().as_secs_f64());
    assert!(err.contains("up to date"), "{err}");
    assert_eq!(mtime(dir), before, "a cached rerun rewrote the image");

    let again = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let err = build(&["--force"], again.path());
    eprintln!("forced rebuild: {:.1} s", t.elapsed().as_secs_f64());
    assert!(!err.contains("up to date"), "{err}");
    for f in outputs {
        assert!(
            std::fs::read(dir.join(f)).unwrap() == std::fs::read(again.path().join(f)).unwrap(),
            "{f} differs between two builds"
        );
    }
}

#[test]
fn linux_two_oslets_example_checks_once_the_image_is_built() {
    let test = "linux_two_oslets_example_checks_once_the_image_is_built";
    let Some(cache) = image_or_skip(test) else {
        return;
    };
    // The example points at the script's default output, images/out/default.
    let default = root().join("images/out/default");
    build(&[], &default);
    assert!(
        std::fs::read(default.join("initramfs.cpio.gz")).unwrap()
            == std::fs::read(cache.join("initramfs.cpio.gz")).unwrap(),
        "the default build and the test's build differ"
    );
    let (code, out, err) = common::run(&["check", "config/examples/linux-two-oslets.toml"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 OSlets, 4 vCPUs, 512 MiB"), "{out}");
    for name in ["db", "app"] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{out}"));
        assert!(
            line.contains("(2 vCPUs)") && line.contains("memory 256 MiB"),
            "{line}"
        );
        assert!(line.contains("images/out/default/vmlinux (ELF)"), "{line}");
    }
    assert!(out.contains("initramfs.cpio.gz"), "{out}");
    assert!(out.contains("link db <-> app  ring 256 KiB"), "{out}");
    assert!(out.contains("oslet.agent"), "{out}");
}

#[test]
fn init_loads_the_modules_starts_the_agent_and_gives_a_shell_under_qemu_tcg() {
    let test = "init_loads_the_modules_starts_the_agent_and_gives_a_shell_under_qemu_tcg";
    let Some(dir) = image_or_skip(test) else {
        return;
    };
    if !has_command("qemu-system-x86_64") {
        skip(
            test,
            "no qemu-system-x86_64 (apt-get install -y qemu-system-x86)",
        );
        return;
    }
    // Software emulation: slow but complete, unlike KVM on ring-0-emulating hosts.
    // A link word like oslet's (the window is only PCI hole in QEMU, so the agent
    // just waits), and a virtio-fs tag QEMU does not provide (init must carry on).
    let cmdline = "console=ttyS0 reboot=k panic=1 oslet.agent oslet.name=tcgvm \
                   oslet.shared=nosuchtag oslet.link=app,a,0xd0000000,0x40000,0xfeb00000,5 \
                   oslet.agentlink=0xcfe00000,0x1000";
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "pc,accel=tcg",
            "-cpu",
            "max",
            "-m",
            "256",
            "-smp",
            "1",
        ])
        .args([
            "-nodefaults",
            "-nographic",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .args(["-monitor", "none", "-display", "none"])
        .arg("-kernel")
        .arg(dir.join("vmlinux"))
        .arg("-initrd")
        .arg(dir.join("initramfs.cpio.gz"))
        .args(["-append", cmdline])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-system-x86_64");
    let rx = line_channel(&mut child);
    let start = Instant::now();
    let limit = Duration::from_secs(180);
    let mut seen = Vec::new();
    let ready = wait_for_line(&rx, &mut seen, start, limit, |l| {
        l.contains("oslet-init: ready")
    });
    let mut done = false;
    if ready {
        // The shell: an arithmetic answer proves it evaluated what we typed.
        let mut stdin = child.stdin.take().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let _ = stdin.write_all(
            b"echo SHELL-$((6*7)) $(hostname); echo MODS $(cut -d' ' -f1 /proc/modules | sort); \
              test -c /dev/mem && echo DEVMEM-OK; poweroff -f\n",
        );
        let _ = stdin.flush();
        done = wait_for_line(&rx, &mut seen, start, limit, |l| l.contains("Power down"));
    }
    if !done {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let console = seen.join("\n");
    let elapsed = start.elapsed().as_secs_f64();
    assert!(
        ready,
        "no \"oslet-init: ready\" within {limit:?}:\n{console}"
    );
    eprintln!("qemu tcg: /init ready and powered off in {elapsed:.1} s");
    assert!(
        seen.iter()
            .any(|l| l.contains("Trying to unpack rootfs image as initramfs")),
        "{console}"
    );
    assert!(
        seen.iter().any(|l| l.contains("Run /init as init process")),
        "{console}"
    );
    // Every module of the manifest, loaded in the manifest's (dependency) order.
    let manifest = std::fs::read_to_string(dir.join("manifest.txt")).unwrap();
    let modules: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("module "))
        .map(module_name)
        .collect();
    assert!(modules.len() >= REQUIRED_MODULES.len(), "{manifest}");
    let loaded: Vec<&str> = seen
        .iter()
        .filter_map(|l| l.strip_prefix("oslet-init: loaded "))
        .collect();
    assert_eq!(loaded, modules, "{console}");
    assert!(!console.contains("oslet-init: cannot load"), "{console}");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("oslet-init: cannot mount virtiofs tag nosuchtag at /shared")),
        "{console}"
    );
    assert!(
        seen.iter()
            .any(|l| l.starts_with("oslet-init: link app\tside a\twindow 0xd0000000\tring 256 KiB")),
        "{console}"
    );
    assert!(
        seen.iter()
            .any(|l| l.starts_with("oslet-init: agent: serving app")),
        "{console}"
    );
    assert!(
        seen.iter().any(|l| l.starts_with(
            "oslet-init: agent: reporting to the VMM on the agent link at 0xcfe00000,0x1000"
        )),
        "{console}"
    );
    assert!(seen.iter().any(|l| l == "SHELL-42 tcgvm"), "{console}");
    let mods = seen
        .iter()
        .find(|l| l.starts_with("MODS "))
        .unwrap_or_else(|| panic!("no module list:\n{console}"));
    for m in REQUIRED_MODULES {
        assert!(
            mods.split(' ').any(|w| w == m),
            "{m} not in /proc/modules: {mods}"
        );
    }
    assert!(seen.iter().any(|l| l == "DEVMEM-OK"), "{console}");
    assert!(
        done,
        "no power-off after the shell's poweroff -f:\n{console}"
    );
    assert!(status.success(), "qemu: {status}");
}

/// Whether the CPU offers hardware virtualization (then Linux userspace runs in KVM).
fn hardware_virtualization() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    })
}

#[test]
fn oslet_up_hands_the_initramfs_to_the_kernel_and_ctrl_c_stops_it() {
    let test = "oslet_up_hands_the_initramfs_to_the_kernel_and_ctrl_c_stops_it";
    if !kvm_or_skip(test) {
        return;
    }
    let Some(dir) = image_or_skip(test) else {
        return;
    };
    let initrd = dir.join("initramfs.cpio.gz");
    let initrd_len = std::fs::metadata(&initrd).unwrap().len();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(
        tmp.path(),
        "linux.toml",
        &format!(
            "[host]\noversubscribe = true\n[[oslet]]\nname = \"linux\"\ncpus = 1\nmemory = \"256MiB\"\n\
             kernel = \"{}\"\ninitrd = \"{}\"\n\
             cmdline = \"console=ttyS0 earlyprintk=serial,ttyS0,115200 reboot=k panic=-1 pci=off clearcpuid=cx16,xsave oslet.agent\"\n",
            dir.join("vmlinux").display(),
            initrd.display()
        ),
    );
    let mut child = common::oslet()
        .args(["up", cfg.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = line_channel(&mut child);
    let start = Instant::now();
    let mut seen = Vec::new();
    // Early in setup_arch the kernel reserves the initrd oslet loaded:
    // "RAMDISK: [mem 0xSTART-0xEND]", page-rounded. That is as far as Debian's kernel
    // gets in reasonable time where KVM emulates guest ring 0.
    let ramdisk = wait_for_line(&rx, &mut seen, start, Duration::from_secs(120), |l| {
        l.starts_with("linux | ") && l.contains("RAMDISK: [mem ")
    });
    // With hardware virtualization, all the way to /init.
    let deep = ramdisk && hardware_virtualization();
    let ready = deep
        && wait_for_line(&rx, &mut seen, start, Duration::from_secs(120), |l| {
            l.starts_with("linux | ") && l.contains("oslet-init: ready")
        });
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let console = seen.join("\n");
    let lines = lines_of(&console, "linux");
    assert!(
        lines.iter().any(|l| l.contains("Linux version ")),
        "no banner:\n{console}\nstderr:\n{err}"
    );
    assert!(
        ramdisk,
        "no RAMDISK line within 120 s:\n{console}\nstderr:\n{err}"
    );
    let range = lines
        .iter()
        .find_map(|l| l.split("RAMDISK: [mem ").nth(1))
        .unwrap();
    let (lo, hi) = range.trim_end_matches(']').split_once('-').unwrap();
    let parse = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(
        parse(hi) + 1 - parse(lo),
        initrd_len.div_ceil(4096) * 4096,
        "the kernel's RAMDISK is not our {initrd_len}-byte initramfs: {range}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Command line: ") && l.contains("oslet.agent")),
        "{console}"
    );
    if deep {
        assert!(
            ready,
            "hardware virtualization, but no \"oslet-init: ready\":\n{console}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("Trying to unpack rootfs image as initramfs")),
            "{console}"
        );
        eprintln!(
            "{test}: /init ready after {:.1} s",
            start.elapsed().as_secs_f64()
        );
    } else {
        eprintln!(
            "{test}: stopped at the kernel's RAMDISK line after {:.1} s (no vmx/svm: guest ring 0 is emulated, Linux userspace cannot run here)",
            start.elapsed().as_secs_f64()
        );
    }
    assert_eq!(
        out.status.code(),
        Some(0),
        "oslet up after SIGINT; stderr:\n{err}"
    );
    assert!(err.contains("linux: stopped (signal 15)"), "{err}");
}
