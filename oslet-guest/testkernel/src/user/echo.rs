//! `ring3-echo`: reads lines typed on COM1 (what `oslet console` sends) and
//! prints each back as "echo: <line>"; the line "poweroff" powers off with 0.
//! It polls the UART's line status from ring 3 (IOPL 3), so it needs no
//! interrupt.

use crate::io::{inb, pause, poweroff};
use crate::serial::Str;

const COM1: u16 = 0x3f8;
/// Line status register; bit 0 = data ready.
const LSR: u16 = COM1 + 5;
const LINE_MAX: usize = 128;

pub fn run() -> ! {
    say!("ring 3: console echo, type a line (\"poweroff\" ends)");
    let mut line = [0u8; LINE_MAX];
    let mut len = 0;
    loop {
        if inb(LSR) & 1 == 0 {
            // Each poll is an exit to the VMM; a little pause keeps them rare.
            for _ in 0..2000 {
                pause();
            }
            continue;
        }
        let b = inb(COM1);
        if b != b'\n' && b != b'\r' {
            if len < LINE_MAX {
                line[len] = b;
                len += 1;
            }
            continue;
        }
        if len == 0 {
            continue;
        }
        say!("echo: ", Str(&line[..len]));
        if &line[..len] == b"poweroff" {
            poweroff(0)
        }
        len = 0;
    }
}
