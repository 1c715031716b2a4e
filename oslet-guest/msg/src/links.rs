//! The links oslet gave this guest, as the kernel command line describes them:
//! `oslet.link=<peer>,<side>,<window_gpa>,<ring_bytes>,<doorbell_gpa>,<gsi>`.

/// One link of this guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// The OSlet at the other end.
    pub peer: String,
    /// `true` for side A (first section of the window).
    pub side_a: bool,
    /// Guest physical address of the window.
    pub window_gpa: u64,
    /// Bytes of each ring.
    pub ring_bytes: u32,
    /// Guest physical address of this guest's doorbell.
    pub doorbell_gpa: u64,
    /// Interrupt line of the peer's doorbell.
    pub gsi: u32,
}

/// A malformed `oslet.link=` word.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad oslet.link word {word:?}: {why}")]
pub struct ParseError {
    /// The word.
    pub word: String,
    /// What is wrong.
    pub why: &'static str,
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

/// Every `oslet.link=` word of `cmdline`.
pub fn parse(cmdline: &str) -> Result<Vec<LinkInfo>, ParseError> {
    cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("oslet.link="))
        .map(|v| {
            let err = |why| ParseError {
                word: format!("oslet.link={v}"),
                why,
            };
            let f: Vec<&str> = v.split(',').collect();
            let [peer, side, gpa, ring, bell, gsi] = f.as_slice() else {
                return Err(err("expected 6 comma-separated fields"));
            };
            let side_a = match *side {
                "a" => true,
                "b" => false,
                _ => return Err(err("side is neither a nor b")),
            };
            Ok(LinkInfo {
                peer: peer.to_string(),
                side_a,
                window_gpa: hex(gpa).ok_or_else(|| err("window address is not 0x-hex"))?,
                ring_bytes: hex(ring)
                    .and_then(|r| u32::try_from(r).ok())
                    .ok_or_else(|| err("ring size is not 0x-hex u32"))?,
                doorbell_gpa: hex(bell).ok_or_else(|| err("doorbell address is not 0x-hex"))?,
                gsi: gsi
                    .parse()
                    .map_err(|_| err("gsi is not a decimal number"))?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_link_word_and_ignores_the_rest() {
        let l = parse("console=ttyS0 oslet.name=db oslet.link=app,a,0xd0000000,0x10000,0xfeb00000,5 oslet.link=log,b,0xd0200000,0x1000,0xfeb00008,6").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            l[0],
            LinkInfo {
                peer: "app".into(),
                side_a: true,
                window_gpa: 0xd000_0000,
                ring_bytes: 0x10000,
                doorbell_gpa: 0xfeb0_0000,
                gsi: 5
            }
        );
        assert!(!l[1].side_a);
    }

    #[test]
    fn malformed_words_say_what_is_wrong() {
        let e = parse("oslet.link=app,c,0x0,0x1000,0x0,5").unwrap_err();
        assert_eq!(e.why, "side is neither a nor b");
        assert_eq!(
            parse("oslet.link=app,a").unwrap_err().why,
            "expected 6 comma-separated fields"
        );
        assert_eq!(
            parse("oslet.link=app,a,12,0x1000,0x0,5").unwrap_err().why,
            "window address is not 0x-hex"
        );
    }
}
