//! `[shared_fs]`: one host directory that every OSlet mounts through virtio-fs.

use std::path::PathBuf;

use crate::error::ConfigError;
use crate::partition::{FsCache, SharedFsPlan, SOCKET_NAME_PLACEHOLDER};
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

/// Checks `[shared_fs]` for the OSlets `names`; relative paths start at
/// `resolve`'s base (the file's directory).
pub(crate) fn plan_shared_fs(
    file: &str,
    raw: Option<RawSharedFs>,
    names: &[String],
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
    let plan = SharedFsPlan {
        path,
        tag,
        socket,
        cache,
    };
    check_sockets(file, &plan, names)?;
    Ok(Some(plan))
}

/// `socket`: one per OSlet (virtiofsd serves one VMM per socket, then exits), and
/// each one a socket that exists now.
fn check_sockets(file: &str, plan: &SharedFsPlan, names: &[String]) -> Result<(), ConfigError> {
    let Some(template) = &plan.socket else {
        return Ok(());
    };
    let pat = SOCKET_NAME_PLACEHOLDER.as_bytes();
    let per_oslet = std::os::unix::ffi::OsStrExt::as_bytes(template.as_os_str())
        .windows(pat.len())
        .any(|w| w == pat);
    if names.len() > 1 && !per_oslet {
        return Err(invalid(
            file,
            "shared_fs.socket",
            Problem::new(
                format!(
                    "{} OSlets cannot share the one backend socket {}: a vhost-user backend such as virtiofsd serves one VMM per socket",
                    names.len(),
                    template.display()
                ),
                format!(
                    "put {SOCKET_NAME_PLACEHOLDER} in the path (e.g. socket = \"vfs-{SOCKET_NAME_PLACEHOLDER}.sock\") and start one backend per OSlet, or leave socket out and let oslet start them"
                ),
            ),
        ));
    }
    for name in names {
        let Some(sock) = plan.socket_for(name) else {
            continue;
        };
        let start = format!(
            "start the backend first (virtiofsd --socket-path={} --shared-dir={}), or leave socket out and let oslet start one",
            sock.display(),
            plan.path.display()
        );
        let problem = match std::fs::metadata(&sock) {
            Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => continue,
            Ok(_) => format!("{} is not a socket", sock.display()),
            Err(e) => format!("{} cannot be used ({})", sock.display(), e.kind()),
        };
        let for_whom = if names.len() > 1 {
            format!(" (OSlet {name})")
        } else {
            String::new()
        };
        return Err(invalid(
            file,
            "shared_fs.socket",
            Problem::new(format!("{problem}{for_whom}"), start),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one() -> Vec<String> {
        vec!["a".to_string()]
    }

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
        let p = plan_shared_fs("box.toml", Some(raw("share")), &one(), |s| base.join(s))
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
        let e =
            plan_shared_fs("box.toml", Some(raw("nope")), &one(), |s| base.join(s)).unwrap_err();
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
        let e = plan_shared_fs("b", Some(raw("f")), &one(), |s| base.join(s)).unwrap_err();
        assert!(e.to_string().contains("is not a directory"), "{e}");
        let mut r = raw(".");
        r.tag = Some("a b".into());
        let e = plan_shared_fs("b", Some(r), &one(), |s| base.join(s)).unwrap_err();
        assert!(e.to_string().starts_with("b: shared_fs.tag: "), "{e}");
        let mut r = raw(".");
        r.tag = Some("x".repeat(37));
        assert!(plan_shared_fs("b", Some(r), &one(), |s| base.join(s)).is_err());
        let mut r = raw(".");
        r.cache = Some("sometimes".into());
        let e = plan_shared_fs("b", Some(r), &one(), |s| base.join(s)).unwrap_err();
        assert!(
            e.to_string().contains("unknown cache mode \"sometimes\""),
            "{e}"
        );
        let _listening = std::os::unix::net::UnixListener::bind(base.join("v.sock")).unwrap();
        let mut r = raw(".");
        r.cache = Some("auto".into());
        r.socket = Some("v.sock".into());
        let p = plan_shared_fs("b", Some(r), &one(), |s| base.join(s))
            .unwrap()
            .unwrap();
        assert_eq!(p.cache, FsCache::Auto);
        assert_eq!(p.socket, Some(base.join("v.sock")));
        assert_eq!(p.socket_for("a"), Some(base.join("v.sock")));
    }

    #[test]
    fn a_socket_that_is_missing_or_not_a_socket_is_one_line_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        std::fs::write(base.join("file"), b"x").unwrap();
        for (sock, problem) in [
            ("gone.sock", "gone.sock cannot be used (entity not found)"),
            ("file", "file is not a socket"),
        ] {
            let mut r = raw(".");
            r.socket = Some(sock.into());
            let e = plan_shared_fs("box.toml", Some(r), &one(), |s| base.join(s)).unwrap_err();
            let text = e.to_string();
            assert!(text.starts_with("box.toml: shared_fs.socket: "), "{text}");
            assert!(text.contains(problem), "{text}");
            assert!(
                text.contains(&format!(
                    "start the backend first (virtiofsd --socket-path={}",
                    base.join(sock).display()
                )),
                "{text}"
            );
            assert!(!text.contains('\n'));
        }
    }

    #[test]
    fn several_oslets_need_name_in_the_socket_path_and_each_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        let two = vec!["db".to_string(), "app".to_string()];
        let mut r = raw(".");
        r.socket = Some("v.sock".into());
        let e = plan_shared_fs("b", Some(r), &two, |s| base.join(s)).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("b: shared_fs.socket: 2 OSlets cannot share the one backend socket"),
            "{text}"
        );
        assert!(text.contains("put {name} in the path"), "{text}");

        let _db = std::os::unix::net::UnixListener::bind(base.join("v-db.sock")).unwrap();
        let mut r = raw(".");
        r.socket = Some("v-{name}.sock".into());
        let e = plan_shared_fs("b", Some(r), &two, |s| base.join(s)).unwrap_err();
        assert!(
            e.to_string()
                .contains("v-app.sock cannot be used (entity not found) (OSlet app)"),
            "{e}"
        );

        let _app = std::os::unix::net::UnixListener::bind(base.join("v-app.sock")).unwrap();
        let mut r = raw(".");
        r.socket = Some("v-{name}.sock".into());
        let p = plan_shared_fs("b", Some(r), &two, |s| base.join(s))
            .unwrap()
            .unwrap();
        assert_eq!(p.socket_for("db"), Some(base.join("v-db.sock")));
        assert_eq!(p.socket_for("app"), Some(base.join("v-app.sock")));
    }
}
