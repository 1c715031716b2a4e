//! `oslet-msg` end to end on the host: two processes, one per side, over one shared
//! file standing in for the window (OSLET_MSG_MEM), with command lines as oslet
//! writes them (OSLET_MSG_CMDLINE). Inside a Linux OSlet the same code maps /dev/mem.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const RING: u32 = 0x10000;

struct Link {
    _dir: tempfile::TempDir,
    window: PathBuf,
    cmd_a: PathBuf,
    cmd_b: PathBuf,
}

fn link() -> Link {
    let dir = tempfile::tempdir().unwrap();
    let window = dir.path().join("window");
    let len = 2 * (4096 + RING as u64);
    std::fs::File::create(&window)
        .unwrap()
        .set_len(len)
        .unwrap();
    let cmd_a = dir.path().join("cmdline-a");
    let cmd_b = dir.path().join("cmdline-b");
    std::fs::write(
        &cmd_a,
        format!("oslet.name=db oslet.link=app,a,0xd0000000,{RING:#x},0xfeb00000,5\n"),
    )
    .unwrap();
    std::fs::write(
        &cmd_b,
        format!("oslet.name=app oslet.link=db,b,0xd0000000,{RING:#x},0xfeb00000,5\n"),
    )
    .unwrap();
    Link {
        _dir: dir,
        window,
        cmd_a,
        cmd_b,
    }
}

fn msg(window: &Path, cmdline: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_oslet-msg"));
    c.args(args)
        .env("OSLET_MSG_MEM", window)
        .env("OSLET_MSG_CMDLINE", cmdline);
    c
}

fn spawn(c: &mut Command) -> Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn list_shows_the_links_from_the_command_line() {
    let l = link();
    let out = msg(&l.window, &l.cmd_a, &["list"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "app\tside a\twindow 0xd0000000\tring 64 KiB\tdoorbell 0xfeb00000\tgsi 5\n"
    );
}

#[test]
fn a_message_sent_by_one_side_is_received_by_the_other() {
    let l = link();
    let recv = spawn(&mut msg(
        &l.window,
        &l.cmd_b,
        &["recv", "db", "--timeout", "20"],
    ));
    let send = msg(&l.window, &l.cmd_a, &["send", "app", "hello from db"])
        .output()
        .unwrap();
    assert!(
        send.status.success(),
        "{}",
        String::from_utf8_lossy(&send.stderr)
    );
    let out = recv.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from db\n");
}

#[test]
fn ping_gets_every_answer_from_serve() {
    let l = link();
    let serve = spawn(&mut msg(&l.window, &l.cmd_b, &["serve", "db"]));
    let ping = msg(&l.window, &l.cmd_a, &["ping", "app", "-n", "2000"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stderr)
    );
    assert!(text.starts_with("2000 pings to app: p50 "), "{text}");
    let out = serve.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "serve ends when the pinger detaches: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unknown_peer_names_the_known_ones() {
    let l = link();
    let out = msg(&l.window, &l.cmd_a, &["send", "nobody", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "oslet-msg: no link to \"nobody\"; this OSlet's links go to: app\n"
    );
}
