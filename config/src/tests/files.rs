//! Kernels, initrds and the other per-OSlet fields; names; file-level errors.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

#[test]
fn relative_paths_resolve_against_the_config_files_directory() {
    let dir = kernel_dir();
    let text = format!(
        "[host]\nlog_dir = \"logs\"\n{}",
        with_kernel("bzImage", "initrd = \"initrd.img\"\n")
    );
    let p = parse_str(&text, &dir.path().join("box.toml"), &host(4)).unwrap();
    let o = &p.oslets[0];
    assert_eq!(
        o.kernel,
        Kernel::Image {
            path: dir.path().join("bzImage"),
            format: KernelFormat::BzImage
        }
    );
    assert_eq!(
        o.initrd.as_deref(),
        Some(dir.path().join("initrd.img").as_path())
    );
    assert_eq!(p.log_dir, dir.path().join("logs"));
    assert_eq!(o.log_file, dir.path().join("logs/db.log"));
}

#[test]
fn absolute_paths_are_kept() {
    let dir = kernel_dir();
    let vmlinux = dir.path().join("vmlinux");
    let text = with_kernel(&vmlinux.display().to_string(), "");
    let p = parse_str(&text, Path::new("/elsewhere/box.toml"), &host(4)).unwrap();
    assert_eq!(
        p.oslets[0].kernel,
        Kernel::Image {
            path: vmlinux,
            format: KernelFormat::Elf
        }
    );
    assert_eq!(p.log_dir, PathBuf::from("/elsewhere/oslet-logs"));
}

#[test]
fn a_bare_file_name_source_resolves_against_the_current_directory() {
    let p = plan_on(&oslet("db", "1", "4MiB"), &host(4));
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(p.log_dir, cwd.join("oslet-logs"));
    assert_eq!(p.oslets[0].log_file, cwd.join("oslet-logs/db.log"));
    assert_eq!(p.source, PathBuf::from("box.toml"));
    assert_eq!(p.oslets[0].kernel, Kernel::TestKernel);
}

#[test]
fn a_missing_kernel_is_refused_with_the_resolved_path() {
    let dir = kernel_dir();
    assert_eq!(
        err_in(dir.path(), &with_kernel("bzImage-6.9", "")),
        format!(
            "{}: oslet \"db\".kernel: DIR/bzImage-6.9 does not exist; check the path \
             (relative paths start at the config file's directory), or use kernel = \
             \"builtin:testkernel\"",
            dir.path().join("box.toml").display()
        )
        .replace(&format!("{}/", dir.path().display()), "DIR/")
    );
}

#[test]
fn a_file_that_is_not_a_kernel_is_refused() {
    let dir = kernel_dir();
    let fix = "point kernel at a bzImage (arch/x86/boot/bzImage) or an x86-64 vmlinux, or \
               use \"builtin:testkernel\"";
    for (name, detail) in [
        ("notes.txt", ""),
        ("vmlinux32", " (it is a 32-bit ELF)"),
        ("vmlinux-arm", " (it is an ELF for machine 183, not x86-64)"),
    ] {
        assert_eq!(
            err_in(dir.path(), &with_kernel(name, "")),
            format!(
                "DIR/box.toml: oslet \"db\".kernel: DIR/{name} is not a bzImage or an ELF \
                 vmlinux{detail}; {fix}"
            )
        );
    }
    fs::write(dir.path().join("empty"), b"").unwrap();
    assert_eq!(
        err_in(dir.path(), &with_kernel("empty", "")),
        format!("DIR/box.toml: oslet \"db\".kernel: DIR/empty is not a bzImage or an ELF vmlinux (it is empty); {fix}")
    );
    assert_eq!(
        err_in(dir.path(), &with_kernel("boot", "")),
        "DIR/box.toml: oslet \"db\".kernel: DIR/boot is a directory; check the path (relative \
         paths start at the config file's directory), or use kernel = \"builtin:testkernel\""
    );
}

#[test]
fn unknown_builtin_and_empty_kernels_are_refused() {
    assert_eq!(
        err_on(&with_kernel("builtin:linux", ""), &host(4)),
        "box.toml: oslet \"db\".kernel: \"builtin:linux\" is not a builtin kernel; the only \
         builtin is \"builtin:testkernel\"; give a path for any other kernel"
    );
    assert_eq!(
        err_on(&with_kernel("", ""), &host(4)),
        "box.toml: oslet \"db\".kernel: the kernel path is empty; give a path to a bzImage or \
         vmlinux, or \"builtin:testkernel\""
    );
}

#[test]
fn a_missing_initrd_is_refused() {
    let dir = kernel_dir();
    assert_eq!(
        err_in(
            dir.path(),
            &with_kernel("builtin:testkernel", "initrd = \"nope.img\"\n")
        ),
        "DIR/box.toml: oslet \"db\".initrd: DIR/nope.img does not exist; check the path \
         (relative paths start at the config file's directory), or leave initrd out"
    );
}

#[test]
fn unreadable_kernel_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = kernel_dir();
    let path = dir.path().join("bzImage");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::File::open(&path).is_ok() {
        return; // running as root: permissions do not stop us
    }
    assert_eq!(
        err_in(dir.path(), &with_kernel("bzImage", "")),
        "DIR/box.toml: oslet \"db\".kernel: DIR/bzImage cannot be read (permission denied); \
         check the path (relative paths start at the config file's directory), or use \
         kernel = \"builtin:testkernel\""
    );
}

#[test]
fn cmdline_is_kept_as_written_up_to_2047_bytes() {
    let long = "a".repeat(2047);
    let p = plan_on(
        &with_kernel("builtin:testkernel", &format!("cmdline = \"{long}\"\n")),
        &host(4),
    );
    assert_eq!(p.oslets[0].cmdline.as_deref(), Some(long.as_str()));
    let too_long = "a".repeat(2048);
    assert_eq!(
        err_on(
            &with_kernel("builtin:testkernel", &format!("cmdline = \"{too_long}\"\n")),
            &host(4)
        ),
        "box.toml: oslet \"db\".cmdline: the command line is 2048 bytes, more than the 2047 \
         the boot protocol allows; shorten it"
    );
    assert_eq!(
        err_on(
            &with_kernel("builtin:testkernel", "cmdline = \"a\\u0000b\"\n"),
            &host(4)
        ),
        "box.toml: oslet \"db\".cmdline: the command line contains a NUL byte; remove the \\u0000"
    );
}

#[test]
fn console_modes_parse_and_unknown_ones_are_refused() {
    for (text, mode) in [
        ("", Console::Terminal),
        ("console = \"terminal\"\n", Console::Terminal),
        ("console = \"log\"\n", Console::Log),
        ("console = \"off\"\n", Console::Off),
    ] {
        let p = plan_on(&with_kernel("builtin:testkernel", text), &host(4));
        assert_eq!(p.oslets[0].console, mode);
    }
    assert_eq!(
        err_on(
            &with_kernel("builtin:testkernel", "console = \"logs\"\n"),
            &host(4)
        ),
        "box.toml: oslet \"db\".console: \"logs\" is not a console mode; did you mean \"log\"? \
         the modes are \"terminal\", \"log\" and \"off\""
    );
    assert_eq!(
        err_on(
            &with_kernel("builtin:testkernel", "console = \"serial\"\n"),
            &host(4)
        ),
        "box.toml: oslet \"db\".console: \"serial\" is not a console mode; use \"terminal\" \
         (the default), \"log\" or \"off\""
    );
}

// ---- names, file-level errors ----

#[test]
fn invalid_names_are_refused_with_the_rule() {
    assert_eq!(
        err_on(&oslet("DB", "1", "4MiB"), &host(4)),
        "box.toml: oslet[0].name: \"DB\" is not a valid OSlet name; try \"db\"; names are 1 to \
         32 lowercase letters, digits and '-', starting with a letter or digit"
    );
    assert_eq!(
        err_on(
            &(oslet("ok", "1", "4MiB") + &oslet("-x", "1", "4MiB")),
            &host(4)
        ),
        "box.toml: oslet[1].name: \"-x\" is not a valid OSlet name; use 1 to 32 lowercase \
         letters, digits and '-', starting with a letter or digit"
    );
    let long = "a".repeat(33);
    assert!(err_on(&oslet(&long, "1", "4MiB"), &host(4)).contains("is not a valid OSlet name"));
    assert!(err_on(&oslet("", "1", "4MiB"), &host(4)).contains("\"\" is not a valid OSlet name"));
    plan_on(&oslet(&"a".repeat(32), "1", "4MiB"), &host(4));
    plan_on(&oslet("0-a-9", "1", "4MiB"), &host(4));
}

#[test]
fn duplicate_names_are_refused_naming_the_first() {
    let text = oslet("db", "1", "4MiB") + &oslet("app", "1", "4MiB") + &oslet("db", "1", "4MiB");
    assert_eq!(
        err_on(&text, &host(4)),
        "box.toml: oslet[2].name: \"db\" is already the name of oslet[0]; give each OSlet its \
         own name"
    );
}

#[test]
fn an_empty_file_is_refused() {
    assert_eq!(
        err_on("  \n\n", &host(4)),
        "box.toml: the file is empty; describe at least one OSlet with an [[oslet]] table \
         (config/examples/micro.toml is the smallest)"
    );
}

#[test]
fn a_file_without_oslets_is_refused() {
    assert_eq!(
        err_on("# nothing yet\n[host]\noversubscribe = true\n", &host(4)),
        "box.toml: no [[oslet]] table; describe at least one OSlet: [[oslet]] name = \
         \"micro\", cpus = 1, memory = \"4MiB\", kernel = \"builtin:testkernel\""
    );
}

#[test]
fn an_empty_log_dir_is_refused() {
    assert_eq!(
        err_on(
            &format!("[host]\nlog_dir = \"\"\n{}", oslet("db", "1", "4MiB")),
            &host(4)
        ),
        "box.toml: host.log_dir: the log directory is empty; give a directory, e.g. log_dir = \
         \"oslet-logs\", or leave it out"
    );
}

#[test]
fn toml_errors_come_through_parse_str_with_line_numbers() {
    let text = oslet("a", "1", "4MiB") + &oslet("b", "1", "4MiB") + "memroy = \"4MiB\"\n";
    assert_eq!(
        err_on(&text, &host(4)),
        "box.toml:11: oslet[1].memroy: unknown field; did you mean \"memory\"?"
    );
}

#[test]
fn user_text_echoed_in_errors_stays_on_one_line() {
    let text = oslet("db", "\"\"\"0-1\n,x\"\"\"", "4MiB");
    let e = err_on(&text, &host(4));
    assert!(e.contains("\\n"), "{e}");
}

#[test]
fn load_reads_a_file_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("box.toml");
    fs::write(&path, oslet("db", "2", "4MiB")).unwrap();
    let p = load(&path, &host(4)).unwrap();
    assert_eq!(p.source, path);
    assert_eq!(cpus_of(&p), vec![vec![0, 1]]);
}

#[test]
fn load_reports_missing_directory_and_non_utf8_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    assert_eq!(
        load(&missing, &host(4)).unwrap_err().to_string(),
        format!(
            "{}: the file does not exist; check the path (config/examples/ has sample configs)",
            missing.display()
        )
    );
    assert_eq!(
        load(dir.path(), &host(4)).unwrap_err().to_string(),
        format!(
            "{}: this is a directory; give the path of a .toml file",
            dir.path().display()
        )
    );
    let latin1 = dir.path().join("latin1.toml");
    fs::write(&latin1, b"# caf\xe9\n").unwrap();
    assert_eq!(
        load(&latin1, &host(4)).unwrap_err().to_string(),
        format!(
            "{}: the file is not UTF-8 text (bad byte at offset 5); save it as UTF-8",
            latin1.display()
        )
    );
}

#[test]
fn no_input_makes_the_parser_panic() {
    // Every prefix, and every single-byte change to a set of tricky bytes, of a file
    // using every field: each must give a plan or a one-line error, never a panic.
    let dir = kernel_dir();
    let base = String::from(
        "[host]\noversubscribe = false\nlog_dir = \"l\"\n[[oslet]]\nname = \"db\"\n\
         cpus = \"0-1\"\nmemory = \"4MiB\"\nnuma_node = 0\nhugepages = \"2M\"\n\
         kernel = \"bzImage\"\ninitrd = \"initrd.img\"\ncmdline = \"c\"\nconsole = \"log\"\n\
         [[oslet]]\nname = \"b\"\ncpus = [2]\nmemory = 4194304\nkernel = \"builtin:testkernel\"\n",
    );
    let source = dir.path().join("box.toml");
    let h = host(4);
    assert!(parse_str(&base, &source, &h).is_ok());
    let check = |text: &str| {
        if let Err(e) = parse_str(text, &source, &h) {
            let line = e.to_string();
            assert!(!line.contains('\n'), "{line:?} for {text:?}");
        }
    };
    let bytes = base.as_bytes();
    for end in 0..=bytes.len() {
        if let Ok(prefix) = std::str::from_utf8(&bytes[..end]) {
            check(prefix);
        }
    }
    for i in 0..bytes.len() {
        for b in [
            b'"', b'[', b']', b'=', b'\n', b'-', b'9', b',', b'x', b' ', b'.',
        ] {
            let mut mutated = bytes.to_vec();
            mutated[i] = b;
            if let Ok(text) = String::from_utf8(mutated) {
                check(&text);
            }
        }
    }
}

#[test]
fn restart_policy_parses_with_a_default_limit_and_refuses_nonsense() {
    let host = super::host(4);
    let base =
        "[[oslet]]\nname = \"x\"\ncpus = 1\nmemory = \"4MiB\"\nkernel = \"builtin:testkernel\"\n";
    let p = crate::parse_str(
        &format!("{base}restart = \"on-failure\"\n"),
        std::path::Path::new("/t/box.toml"),
        &host,
    )
    .unwrap();
    assert_eq!(p.oslets[0].restart, crate::Restart::OnFailure { limit: 3 });
    let p = crate::parse_str(base, std::path::Path::new("/t/box.toml"), &host).unwrap();
    assert_eq!(p.oslets[0].restart, crate::Restart::Never);
    let e = crate::parse_str(
        &format!("{base}restart = \"always\"\n"),
        std::path::Path::new("/t/box.toml"),
        &host,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "/t/box.toml: oslet \"x\".restart: \"always\" is not a restart policy; use \"never\" (the default) or \"on-failure\""
    );
    let e = crate::parse_str(
        &format!("{base}restart_limit = 2\n"),
        std::path::Path::new("/t/box.toml"),
        &host,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("restart_limit needs restart = \"on-failure\""),
        "{e}"
    );
}
