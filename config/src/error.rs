//! The crate's two error types.
//!
//! A [`ConfigError`] is shown to the person who wrote the file, so its Display is one
//! complete line, `<file>: <field path>: <problem>; <fix>` (TOML-level errors add the
//! line number: `box.toml:7: ...`). It carries no `#[source]`: the line already says
//! everything (an I/O error is folded into the problem text), and a binary that prints
//! the source chain would otherwise append a second, less helpful copy after the fix.

use std::path::PathBuf;

/// Why a config file was refused. Every variant's Display is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file itself could not be read (missing, unreadable, not UTF-8).
    #[error("{file}: {problem}; {fix}")]
    Unreadable {
        /// The config file, as given.
        file: String,
        /// What went wrong.
        problem: String,
        /// What to do about it.
        fix: String,
    },
    /// The file is empty or describes no OSlet.
    #[error("{file}: {problem}; {fix}")]
    NoOslets {
        /// The config file, as given.
        file: String,
        /// What went wrong.
        problem: String,
        /// What to do about it.
        fix: String,
    },
    /// The text is not valid TOML.
    #[error("{file}{}: {problem}; {fix}", at_line(*.line))]
    Syntax {
        /// The config file, as given.
        file: String,
        /// 1-based line of the error, when the parser knows it.
        line: Option<usize>,
        /// What went wrong.
        problem: String,
        /// What to do about it.
        fix: String,
    },
    /// Valid TOML that does not fit the schema: an unknown, missing or mistyped field.
    #[error("{file}{}: {field}: {problem}; {fix}", at_line(*.line))]
    Schema {
        /// The config file, as given.
        file: String,
        /// 1-based line of the error, when the parser knows it.
        line: Option<usize>,
        /// The field path, e.g. `oslet[2].memroy` (indices count from 0).
        field: String,
        /// What went wrong.
        problem: String,
        /// What to do about it.
        fix: String,
    },
    /// A field's value is not acceptable on any host (bad size, CPU list, name, range).
    #[error("{file}: {field}: {problem}; {fix}")]
    Invalid {
        /// The config file, as given.
        file: String,
        /// The field path, e.g. `oslet "db".memory`.
        field: String,
        /// What went wrong.
        problem: String,
        /// What to do about it.
        fix: String,
    },
    /// Two OSlets conflict: the same name, or (without oversubscribe) shared CPUs.
    #[error("{file}: {field}: {problem}; {fix}")]
    Conflict {
        /// The config file, as given.
        file: String,
        /// The field path of the later of the two OSlets.
        field: String,
        /// What went wrong, naming the other OSlet.
        problem: String,
        /// What to do about it.
        fix: String,
    },
    /// This host cannot give what the file asks for: a CPU or NUMA node it lacks, more
    /// CPUs, memory or huge pages than it has.
    #[error("{file}: {field}: {problem}; {fix}")]
    Host {
        /// The config file, as given.
        file: String,
        /// The field path.
        field: String,
        /// What went wrong, with what was asked and what the host has.
        problem: String,
        /// What to do about it.
        fix: String,
    },
    /// A file the config names (kernel, initrd) is missing, unreadable or of the wrong kind.
    #[error("{file}: {field}: {problem}; {fix}")]
    File {
        /// The config file, as given.
        file: String,
        /// The field path.
        field: String,
        /// What went wrong with the named file.
        problem: String,
        /// What to do about it.
        fix: String,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

/// Why the host's topology could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// A file the topology needs could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file held something other than what the kernel writes there.
    #[error("cannot parse {}: {problem}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong with its contents.
        problem: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_errors_show_the_line_when_known() {
        let err = ConfigError::Schema {
            file: "box.toml".into(),
            line: Some(7),
            field: "oslet[2].memroy".into(),
            problem: "unknown field".into(),
            fix: "did you mean \"memory\"?".into(),
        };
        assert_eq!(
            err.to_string(),
            "box.toml:7: oslet[2].memroy: unknown field; did you mean \"memory\"?"
        );
        let err = ConfigError::Syntax {
            file: "box.toml".into(),
            line: None,
            problem: "p".into(),
            fix: "f".into(),
        };
        assert_eq!(err.to_string(), "box.toml: p; f");
    }

    #[test]
    fn topology_errors_keep_the_io_error_as_source() {
        let err = TopologyError::Read {
            path: "/sys/devices/system/cpu/online".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(
            err.to_string(),
            "cannot read /sys/devices/system/cpu/online"
        );
        assert!(std::error::Error::source(&err).is_some());
    }
}
