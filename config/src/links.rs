//! `[links]` and `[[link]]`: which OSlets share a memory window, and how big its rings are.

use std::collections::BTreeSet;

use crate::error::ConfigError;
use crate::partition::LinkPlan;
use crate::raw::{RawLink, RawLinks, RawSize};
use crate::units::{flat, format_size, parse_size, Problem, KIB};

/// Ring size when neither the link nor `[links]` gives one.
pub(crate) const DEFAULT_RING: u64 = 256 * KIB;
/// Smallest ring (one page).
pub(crate) const MIN_RING: u64 = 4 * KIB;
/// Largest ring.
pub(crate) const MAX_RING: u64 = 1 << 30;

fn invalid(file: &str, field: &str, p: Problem) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_string(),
        field: flat(field.into()),
        problem: flat(p.problem),
        fix: flat(p.fix),
    }
}

fn ring_size(
    file: &str,
    field: &str,
    raw: Option<&RawSize>,
    default: u64,
) -> Result<u64, ConfigError> {
    let bytes = match raw {
        None => return Ok(default),
        Some(RawSize::Bytes(b)) => u64::try_from(*b).map_err(|_| {
            invalid(
                file,
                field,
                Problem::new(
                    format!("{b} is negative"),
                    "give a size such as ring = \"256KiB\"",
                ),
            )
        })?,
        Some(RawSize::Text(t)) => parse_size(t).map_err(|p| invalid(file, field, p))?,
    };
    if !bytes.is_power_of_two() || !(MIN_RING..=MAX_RING).contains(&bytes) {
        return Err(invalid(
            file,
            field,
            Problem::new(
                format!(
                    "a ring of {} is not a power of two from 4 KiB to 1 GiB",
                    format_size(bytes)
                ),
                "use e.g. ring = \"64KiB\", \"256KiB\" or \"1MiB\"",
            ),
        ));
    }
    Ok(bytes)
}

/// Checks the link tables against the OSlet names and expands the mesh.
pub(crate) fn plan_links(
    file: &str,
    links: Option<RawLinks>,
    link: Vec<RawLink>,
    names: &[String],
) -> Result<Vec<LinkPlan>, ConfigError> {
    let defaults = links.unwrap_or_default();
    let default_ring = ring_size(file, "links.ring", defaults.ring.as_ref(), DEFAULT_RING)?;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, l) in link.iter().enumerate() {
        let field = format!("link[{i}].between");
        let [a, b] = l.between.as_slice() else {
            return Err(invalid(
                file,
                &field,
                Problem::new(
                    format!(
                        "a link joins exactly two OSlets, this names {}",
                        l.between.len()
                    ),
                    "write between = [\"db\", \"app\"]",
                ),
            ));
        };
        for n in [a, b] {
            if !names.contains(n) {
                return Err(invalid(
                    file,
                    &field,
                    Problem::new(
                        format!("there is no OSlet named \"{n}\""),
                        format!("name OSlets of this file: {}", names.join(", ")),
                    ),
                ));
            }
        }
        if a == b {
            return Err(invalid(
                file,
                &field,
                Problem::new(
                    format!("links \"{a}\" to itself"),
                    "name two different OSlets",
                ),
            ));
        }
        let key = if a < b {
            (a.clone(), b.clone())
        } else {
            (b.clone(), a.clone())
        };
        if !seen.insert(key) {
            return Err(invalid(
                file,
                &field,
                Problem::new(
                    format!("\"{a}\" and \"{b}\" are already linked"),
                    "keep one [[link]] per pair of OSlets",
                ),
            ));
        }
        let ring_bytes = ring_size(
            file,
            &format!("link[{i}].ring"),
            l.ring.as_ref(),
            default_ring,
        )?;
        out.push(LinkPlan {
            a: a.clone(),
            b: b.clone(),
            ring_bytes,
        });
    }
    if defaults.mesh {
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                let key = if a < b {
                    (a.clone(), b.clone())
                } else {
                    (b.clone(), a.clone())
                };
                if seen.insert(key) {
                    out.push(LinkPlan {
                        a: a.clone(),
                        b: b.clone(),
                        ring_bytes: default_ring,
                    });
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect()
    }

    fn link(a: &str, b: &str, ring: Option<&str>) -> RawLink {
        RawLink {
            between: vec![a.to_string(), b.to_string()],
            ring: ring.map(|r| RawSize::Text(r.to_string())),
        }
    }

    #[test]
    fn mesh_links_every_pair_once_after_the_explicit_links() {
        let links = plan_links(
            "box.toml",
            Some(RawLinks {
                mesh: true,
                ring: Some(RawSize::Text("64KiB".into())),
            }),
            vec![link("c", "a", Some("1MiB"))],
            &names(),
        )
        .unwrap();
        assert_eq!(links.len(), 6);
        assert_eq!(
            (
                links[0].a.as_str(),
                links[0].b.as_str(),
                links[0].ring_bytes
            ),
            ("c", "a", 1 << 20)
        );
        assert!(links[1..].iter().all(|l| l.ring_bytes == 64 * KIB));
        assert!(!links[1..].iter().any(|l| l.a == "a" && l.b == "c"));
    }

    #[test]
    fn link_to_an_unknown_oslet_names_it_and_the_known_ones() {
        let e = plan_links("box.toml", None, vec![link("a", "zz", None)], &names()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "box.toml: link[0].between: there is no OSlet named \"zz\"; name OSlets of this file: a, b, c, d"
        );
    }

    #[test]
    fn self_links_duplicates_and_bad_rings_are_refused() {
        let e = plan_links("f", None, vec![link("a", "a", None)], &names()).unwrap_err();
        assert!(e.to_string().contains("links \"a\" to itself"), "{e}");
        let e = plan_links(
            "f",
            None,
            vec![link("a", "b", None), link("b", "a", None)],
            &names(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("already linked"), "{e}");
        let e = plan_links("f", None, vec![link("a", "b", Some("3KiB"))], &names()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "f: link[0].ring: a ring of 3 KiB is not a power of two from 4 KiB to 1 GiB; use e.g. ring = \"64KiB\", \"256KiB\" or \"1MiB\""
        );
        let three = RawLink {
            between: vec!["a".into(), "b".into(), "c".into()],
            ring: None,
        };
        let e = plan_links("f", None, vec![three], &names()).unwrap_err();
        assert!(
            e.to_string().contains("exactly two OSlets, this names 3"),
            "{e}"
        );
    }

    #[test]
    fn default_ring_is_256_kib() {
        let links = plan_links("f", None, vec![link("a", "b", None)], &names()).unwrap();
        assert_eq!(links[0].ring_bytes, DEFAULT_RING);
    }
}
