//! `[shared_fs]`: one host directory that every OSlet mounts through virtio-fs.

use std::path::PathBuf;

use crate::error::ConfigError;
use crate::partition::{FsCache, SharedFsPlan};
use crate::raw::RawSharedFs;
use crate::units::{flat, Problem};

/// The tag guests mount when the file gives none.
pub(crate) const DEFAULT_TAG: &str = "oslet";
/// Longest tag: the virtio-fs config space holds 36 bytes.
pub(crate) const MAX_TAG: usize = 36;

fn invalid(file: &str, field: &str, p: Problem) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_string(),
        field: flat(field.into()),
        problem: flat(p.problem),
        fix: flat(p.fix),
    }
}

/// Checks `[shared_fs]`; relative paths start at `resolve`'s base (the file's directory).
pub(crate) fn plan_shared_fs(
    file: &str,
    raw: Option<RawSharedFs>,
    resolve: impl Fn(&str) -> PathBuf,
) -> Result<Option<SharedFsPlan>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    if raw.path.is_empty() {
        return Err(invalid(
            file,
            "shared_fs.path",
            Problem::new(
                "the shared directory is empty",
                "give a directory, e.g. path = \"shared\"",
            ),
        ));
    }
    let path = resolve(&raw.path);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(invalid(
                file,
                "shared_fs.path",
                Problem::new(
                    format!("{} is not a directory", path.display()),
                    "give the directory the OSlets share",
                ),
            ))
        }
        Err(e) => {
            return Err(invalid(
                file,
                "shared_fs.path",
                Problem::new(
                    format!("{} cannot be used ({})", path.display(), e.kind()),
                    "create the directory (mkdir -p) or fix the path; relative paths start at the config file's directory",
                ),
            ))
        }
    }
    let tag = raw.tag.unwrap_or_else(|| DEFAULT_TAG.to_string());
    let tag_ok = !tag.is_empty()
        && tag.len() <= MAX_TAG
        && tag
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
    if !tag_ok {
        return Err(invalid(
            file,
            "shared_fs.tag",
            Problem::new(
                format!("the tag {tag:?} is not 1 to {MAX_TAG} characters from a-z, A-Z, 0-9, '-', '_' and '.'"),
                format!("use e.g. tag = \"{DEFAULT_TAG}\""),
            ),
        ));
    }
    let cache =
        match raw.cache.as_deref() {
            None | Some("never") => FsCache::Never,
            Some("auto") => FsCache::Auto,
            Some("always") => FsCache::Always,
            Some(other) => return Err(invalid(
                file,
                "shared_fs.cache",
                Problem::new(
                    format!("unknown cache mode {other:?}"),
                    "use \"never\" (coherent across OSlets, the default), \"auto\" or \"always\"",
                ),
            )),
        };
    let socket = match raw.socket {
        None => None,
        Some(s) if s.is_empty() => {
            return Err(invalid(
                file,
                "shared_fs.socket",
                Problem::new(
                    "the socket path is empty",
                    "give the path of a running virtiofsd's socket, or leave it out",
                ),
            ))
        }
        Some(s) => Some(resolve(&s)),
    };
    Ok(Some(SharedFsPlan {
        path,
        tag,
        socket,
        cache,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(path: &str) -> RawSharedFs {
        RawSharedFs {
            path: path.to_string(),
            tag: None,
            socket: None,
            cache: None,
        }
    }

    #[test]
    fn defaults_are_tag_oslet_and_cache_never() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        std::fs::create_dir(base.join("share")).unwrap();
        let p = plan_shared_fs("box.toml", Some(raw("share")), |s| base.join(s))
            .unwrap()
            .unwrap();
        assert_eq!(p.path, base.join("share"));
        assert_eq!(p.tag, "oslet");
        assert_eq!(p.cache, FsCache::Never);
        assert_eq!(p.socket, None);
    }

    #[test]
    fn a_missing_directory_is_one_line_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        let e = plan_shared_fs("box.toml", Some(raw("nope")), |s| base.join(s)).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("box.toml: shared_fs.path: "), "{text}");
        assert!(text.contains("cannot be used (entity not found)"), "{text}");
        assert!(!text.contains('\n'));
    }

    #[test]
    fn a_file_bad_tags_and_bad_cache_modes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        std::fs::write(base.join("f"), b"x").unwrap();
        let e = plan_shared_fs("b", Some(raw("f")), |s| base.join(s)).unwrap_err();
        assert!(e.to_string().contains("is not a directory"), "{e}");
        let mut r = raw(".");
        r.tag = Some("a b".into());
        let e = plan_shared_fs("b", Some(r), |s| base.join(s)).unwrap_err();
        assert!(e.to_string().starts_with("b: shared_fs.tag: "), "{e}");
        let mut r = raw(".");
        r.tag = Some("x".repeat(37));
        assert!(plan_shared_fs("b", Some(r), |s| base.join(s)).is_err());
        let mut r = raw(".");
        r.cache = Some("sometimes".into());
        let e = plan_shared_fs("b", Some(r), |s| base.join(s)).unwrap_err();
        assert!(
            e.to_string().contains("unknown cache mode \"sometimes\""),
            "{e}"
        );
        let mut r = raw(".");
        r.cache = Some("auto".into());
        r.socket = Some("v.sock".into());
        let p = plan_shared_fs("b", Some(r), |s| base.join(s))
            .unwrap()
            .unwrap();
        assert_eq!(p.cache, FsCache::Auto);
        assert_eq!(p.socket, Some(base.join("v.sock")));
    }
}
