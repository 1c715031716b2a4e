//! A hostile peer: the input bytes drive an endpoint while the other side's section
//! is overwritten with arbitrary bytes, indices, record headers and state words.
//! `oslet_interconnect::hostile::run` panics when the victim panics, touches memory
//! outside the window or the peer's section, or reports an out-of-bounds access.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    oslet_interconnect::hostile::run(data);
});
