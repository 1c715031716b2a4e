//! `fs-forge=<kind>`: after FUSE INIT, one forged request on the request queue,
//! to see what the backend (virtiofsd) and the VMM make of a guest that lies.
//! The request is a GETATTR of the root; what is forged is how it is offered:
//!
//! | kind | the chain offered |
//! | --- | --- |
//! | `oob` | the request descriptor's address is 512 GiB, outside guest RAM |
//! | `loop` | request → reply → request: the reply descriptor's `next` points back |
//! | `long` | the request, then all 63 other descriptors as 64-byte reply pieces, the last pointing back to the first: a chain longer than the queue |
//! | `huge` | the reply descriptor is in RAM but 4 GiB - 4 KiB long, far past the end of RAM |
//! | `badidx` | a well-formed chain, but the avail ring names head 64 (>= the queue size) |
//!
//! Prints `fs: forge <kind>: answered, used id <id>, <n> bytes, FUSE error <errno>`
//! when the device completes it (and the next words go on), else the transport
//! error (`fs: I/O error: forge <kind>: the device needs a reset (its backend
//! failed)` or `... no reply within 30 s`) and powers off 1.

use super::fs::{Error, Fs, D_NEXT, D_WRITE, QSIZE, ROOT};
use crate::serial::Str;

/// A guest-physical address no OSlet has RAM at.
const OUTSIDE_RAM: u64 = 1 << 39;
/// Reply buffer length of the well-formed descriptors.
const REPLY: u32 = 4096;

pub(super) fn run(fs: &mut Fs, kind: &[u8]) -> Result<(), Error> {
    let (req, reply) = fs.buffers();
    let len = fs.getattr_request(ROOT) as u32;
    let head = match kind {
        b"oob" => {
            fs.put_desc(0, OUTSIDE_RAM, len, D_NEXT, 1);
            fs.put_desc(1, reply, REPLY, D_WRITE, 0);
            0
        }
        b"loop" => {
            fs.put_desc(0, req, len, D_NEXT, 1);
            fs.put_desc(1, reply, REPLY, D_WRITE | D_NEXT, 0);
            0
        }
        b"long" => {
            fs.put_desc(0, req, len, D_NEXT, 1);
            for i in 1..QSIZE {
                let at = reply + 64 * (i as u64 - 1);
                fs.put_desc(i, at, 64, D_WRITE | D_NEXT, (i + 1) % QSIZE);
            }
            0
        }
        b"huge" => {
            fs.put_desc(0, req, len, D_NEXT, 1);
            fs.put_desc(1, reply, 0xffff_f000, D_WRITE, 0);
            0
        }
        b"badidx" => {
            fs.put_desc(0, req, len, D_NEXT, 1);
            fs.put_desc(1, reply, REPLY, D_WRITE, 0);
            QSIZE
        }
        _ => super::fail(
            "fs-forge: unknown kind (oob, loop, long, huge, badidx)",
            kind,
        ),
    };
    let (id, n) = fs.submit(head)?;
    say!(
        "fs: forge ",
        Str(kind),
        ": answered, used id ",
        id,
        ", ",
        n,
        " bytes, FUSE error ",
        (-(fs.reply_error() as i64)) as u64
    );
    Ok(())
}
