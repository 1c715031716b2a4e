//! The file as written: serde structs that mirror the TOML, and the mapping of toml's
//! errors into one-line [`ConfigError`]s with a line number, a field path and a fix.

use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use crate::error::ConfigError;
use crate::units::flat;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    pub host: Option<RawHost>,
    #[serde(default)]
    pub oslet: Vec<RawOslet>,
    pub links: Option<RawLinks>,
    #[serde(default)]
    pub link: Vec<RawLink>,
    pub shared_fs: Option<RawSharedFs>,
}

/// `[shared_fs]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSharedFs {
    pub path: String,
    pub tag: Option<String>,
    pub socket: Option<String>,
    pub cache: Option<String>,
}

/// `[links]`: defaults for every link, and the mesh shorthand.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLinks {
    #[serde(default)]
    pub mesh: bool,
    pub ring: Option<RawSize>,
}

/// One `[[link]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLink {
    pub between: Vec<String>,
    pub ring: Option<RawSize>,
}

/// `[host]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHost {
    #[serde(default)]
    pub oversubscribe: bool,
    pub log_dir: Option<String>,
    pub housekeeping_cpus: Option<RawCpus>,
}

/// One `[[oslet]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOslet {
    pub name: String,
    pub cpus: RawCpus,
    pub memory: RawSize,
    pub numa_node: Option<i64>,
    pub hugepages: Option<RawHugepages>,
    pub kernel: String,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
    pub console: Option<String>,
    pub restart: Option<String>,
    pub restart_limit: Option<i64>,
}

/// `cpus = 8`, `cpus = "0-3,8"` or `cpus = [0, 1, 2, 3]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawCpus {
    Count(i64),
    List(String),
    Array(Vec<i64>),
}

/// `memory = 268435456` or `memory = "256MiB"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawSize {
    Bytes(i64),
    Text(String),
}

/// `hugepages = "2M"`, `"1G"`, `true` or `false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawHugepages {
    Enabled(bool),
    Size(String),
}

const CPUS_EXPECTED: &str = "a CPU count, a CPU list string or an array of CPU ids";
const SIZE_EXPECTED: &str = "a size in bytes or a size string";
const HUGEPAGES_EXPECTED: &str = "\"2M\", \"1G\", true or false";

impl<'de> Deserialize<'de> for RawCpus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawCpus;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(CPUS_EXPECTED)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawCpus, E> {
                Ok(RawCpus::Count(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawCpus, E> {
                Ok(RawCpus::Count(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawCpus, E> {
                Ok(RawCpus::List(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawCpus, A::Error> {
                let mut ids = Vec::new();
                while let Some(id) = seq.next_element::<CpuId>()? {
                    ids.push(id.0);
                }
                Ok(RawCpus::Array(ids))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// One element of `cpus = [...]`; its own type for a readable "expected" message.
struct CpuId(i64);

impl<'de> Deserialize<'de> for CpuId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = CpuId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a CPU id (an integer)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<CpuId, E> {
                Ok(CpuId(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<CpuId, E> {
                Ok(CpuId(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(SIZE_EXPECTED)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawHugepages {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawHugepages;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(HUGEPAGES_EXPECTED)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawHugepages, E> {
                Ok(RawHugepages::Enabled(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawHugepages, E> {
                Ok(RawHugepages::Size(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Parses the text into raw structs, turning toml's errors into [`ConfigError`]s.
pub(crate) fn parse(text: &str, file: &str) -> Result<RawFile, ConfigError> {
    toml::from_str::<RawFile>(text).map_err(|e| match map_toml_error(&e, text, file) {
        // Messages echo the user's keys and values; keep them on one line.
        ConfigError::Schema {
            file,
            line,
            field,
            problem,
            fix,
        } => ConfigError::Schema {
            file,
            line,
            field: flat(field),
            problem: flat(problem),
            fix: flat(fix),
        },
        ConfigError::Syntax {
            file,
            line,
            problem,
            fix,
        } => ConfigError::Syntax {
            file,
            line,
            problem: flat(problem),
            fix: flat(fix),
        },
        other => other,
    })
}

/// An example of a field written correctly, for the fix of a schema error.
fn example(field: &str) -> Option<&'static str> {
    Some(match field {
        "host" => "a [host] table",
        "oslet" => "one [[oslet]] table (double brackets) per OSlet",
        "oversubscribe" => "oversubscribe = true",
        "log_dir" => "log_dir = \"oslet-logs\"",
        "name" => "name = \"db\"",
        "cpus" => "cpus = 4 (a count), cpus = \"0-3\" (host CPUs) or cpus = [0, 1, 2, 3]",
        "memory" => "memory = \"256MiB\" or memory = 268435456 (bytes)",
        "numa_node" => "numa_node = 0",
        "hugepages" => "hugepages = \"2M\", \"1G\", true or false",
        "kernel" => "kernel = \"builtin:testkernel\" or kernel = \"path/to/bzImage\"",
        "initrd" => "initrd = \"path/to/initrd.img\"",
        "cmdline" => "cmdline = \"console=ttyS0\"",
        "console" => "console = \"terminal\", \"log\" or \"off\"",
        "restart" => "restart = \"on-failure\"",
        "restart_limit" => "restart_limit = 3",
        "links" => "a [links] table: mesh = true, ring = \"256KiB\"",
        "link" => "one [[link]] table per link: between = [\"db\", \"app\"]",
        "between" => "between = [\"db\", \"app\"]",
        "mesh" => "mesh = true",
        "ring" => "ring = \"256KiB\"",
        "shared_fs" => "a [shared_fs] table: path = \"shared\"",
        "path" => "path = \"shared\"",
        "tag" => "tag = \"oslet\"",
        "socket" => "socket = \"/run/virtiofsd.sock\"",
        "cache" => "cache = \"never\"",
        _ => return None,
    })
}

fn map_toml_error(error: &toml::de::Error, text: &str, file: &str) -> ConfigError {
    let message = error.message();
    let span = error.span();
    let line = span.as_ref().map(|s| line_of(text, s.start));
    let path = span.as_ref().and_then(|s| locate(text, s.start));

    if let Some(rest) = message.strip_prefix("unknown field `") {
        let mut quoted = rest.split('`');
        let unknown = quoted.next().unwrap_or_default();
        // serde lists the known names in backquotes after the unknown one.
        let known: Vec<&str> = quoted.skip(1).step_by(2).collect();
        let mut field_path = path.unwrap_or_default();
        if field_path.last() != Some(&Segment::Key(unknown.to_string())) {
            field_path.push(Segment::Key(unknown.to_string()));
        }
        let fix = match did_you_mean(unknown, &known) {
            Some(best) => format!("did you mean \"{best}\"?"),
            None if known.is_empty() => "remove it".to_string(),
            None => format!("remove it; the fields here are {}", known.join(", ")),
        };
        return ConfigError::Schema {
            file: file.to_string(),
            line,
            field: render(&field_path),
            problem: "unknown field".into(),
            fix,
        };
    }

    if let Some(rest) = message.strip_prefix("missing field `") {
        let missing = rest.split('`').next().unwrap_or_default();
        let mut field_path = path.unwrap_or_default();
        // The span is the table's; drop any key inside it that the locator matched.
        while matches!(field_path.last(), Some(Segment::Key(k)) if k != "oslet" && k != "host") {
            field_path.pop();
        }
        let table = match field_path.first() {
            Some(Segment::Key(k)) if k == "host" => "[host]",
            _ => "[[oslet]]",
        };
        field_path.push(Segment::Key(missing.to_string()));
        let fix = match example(missing) {
            Some(ex) => format!("add {ex}"),
            None => format!("add {missing}"),
        };
        return ConfigError::Schema {
            file: file.to_string(),
            line,
            field: render(&field_path),
            problem: format!("missing; every {table} needs {missing}"),
            fix,
        };
    }

    let type_error = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "));
    if let (Some(rest), Some(field_path)) = (type_error, path.as_ref()) {
        if let Some((found, expected)) = rest.rsplit_once(", expected ") {
            let field = field_path.iter().rev().find_map(|s| match s {
                Segment::Key(k) => Some(k.as_str()),
                Segment::Index(_) => None,
            });
            let fix = match field.and_then(example) {
                Some(ex) => format!("write it as {ex}"),
                None => format!("give {}", plain_expected(expected)),
            };
            return ConfigError::Schema {
                file: file.to_string(),
                line,
                field: render(field_path),
                problem: format!(
                    "expected {}, found {}",
                    plain_expected(expected),
                    plain_found(found)
                ),
                fix,
            };
        }
    }

    // Syntax errors and the rest: toml's message, made one line.
    let problem = one_line(message);
    let fix = if message.starts_with("duplicate key") {
        "keep only one of them".to_string()
    } else if let Some(field_path) = path.filter(|p| !p.is_empty()) {
        format!(
            "check {} against the format in the oslet docs",
            render(&field_path)
        )
    } else {
        match line {
            Some(l) => format!("fix the TOML syntax on line {l}"),
            None => "fix the TOML syntax".to_string(),
        }
    };
    ConfigError::Syntax {
        file: file.to_string(),
        line,
        problem,
        fix,
    }
}

/// serde's names for what it expected, in words.
fn plain_expected(expected: &str) -> String {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" | "isize" => {
            "an integer".into()
        }
        "a sequence" => "an array".into(),
        "a map" => "a table".into(),
        e if e.starts_with("struct ") => "a table".into(),
        e if e.starts_with("a ") || e.starts_with("an ") || e.starts_with('"') => e.into(),
        e => format!("a {e}"),
    }
}

/// serde's names for what it found, in words.
fn plain_found(found: &str) -> String {
    match found {
        "map" => "a table".into(),
        "sequence" => "an array".into(),
        f => f.replace("floating point", "float"),
    }
}

/// toml's messages can span lines ("invalid table header\nexpected `.`, `]]`").
fn one_line(message: &str) -> String {
    let mut parts = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = parts.next().unwrap_or("invalid TOML").to_string();
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty() {
        first
    } else {
        format!("{first}: {}", rest.join(", "))
    }
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Did the author mean one of `known`? A name the unknown one abbreviates or extends
/// (`numa`, `oslets`), else the closest within a small edit distance (a transposition
/// counts as one edit: `memroy`).
pub(crate) fn did_you_mean<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = unknown.to_ascii_lowercase();
    let prefix = known
        .iter()
        .copied()
        .find(|k| lower.len() >= 3 && (k.starts_with(&lower) || lower.starts_with(k)));
    let limit = (unknown.chars().count() / 3).max(2);
    prefix.or_else(|| {
        known
            .iter()
            .map(|k| (edit_distance(unknown, k), *k))
            .filter(|(d, _)| *d <= limit)
            .min_by_key(|(d, _)| *d)
            .map(|(_, k)| k)
    })
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// `oslet[2].memroy`, `host.log_dir`; keys that are not bare TOML keys are quoted.
pub(crate) fn render(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if bare {
                    out.push_str(k);
                } else {
                    out.push_str(&format!("{k:?}"));
                }
            }
        }
    }
    out
}

/// A span-keeping view of any TOML document, used only to say *where* an error is.
#[derive(Debug)]
enum Node {
    Leaf,
    Array(Vec<Spanned<Node>>),
    Table(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any TOML value")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(Node::Table(entries))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// The field path at a byte offset: the key whose name covers it, else the narrowest
/// value that does. `None` when the text does not parse as TOML at all.
fn locate(text: &str, offset: usize) -> Option<Vec<Segment>> {
    let root: Node = toml::from_str(text).ok()?;
    let mut best: Option<(usize, Vec<Segment>)> = None; // (width, path); key hits width 0
    let mut path = Vec::new();
    visit(&root, offset, &mut path, &mut best);
    Some(best.map(|(_, p)| p).unwrap_or_default())
}

fn consider(
    span: Range<usize>,
    key_hit: bool,
    offset: usize,
    path: &[Segment],
    best: &mut Option<(usize, Vec<Segment>)>,
) {
    let at_empty = span.is_empty() && span.start == offset;
    if !(span.contains(&offset) || at_empty) {
        return;
    }
    let width = if key_hit { 0 } else { span.len().max(1) };
    // Ties go to the deeper path: it was visited later.
    if best.as_ref().is_none_or(|(w, _)| width <= *w) {
        *best = Some((width, path.to_vec()));
    }
}

fn visit(
    node: &Node,
    offset: usize,
    path: &mut Vec<Segment>,
    best: &mut Option<(usize, Vec<Segment>)>,
) {
    match node {
        Node::Leaf => {}
        Node::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Segment::Index(i));
                consider(item.span(), false, offset, path, best);
                visit(item.get_ref(), offset, path, best);
                path.pop();
            }
        }
        Node::Table(entries) => {
            for (key, value) in entries {
                path.push(Segment::Key(key.get_ref().clone()));
                consider(key.span(), true, offset, path, best);
                consider(value.span(), false, offset, path, best);
                visit(value.get_ref(), offset, path, best);
                path.pop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, "box.toml").unwrap_err().to_string()
    }

    const GOOD: &str =
        "name = \"a\"\ncpus = 1\nmemory = \"4MiB\"\nkernel = \"builtin:testkernel\"\n";

    #[test]
    fn misspelt_field_gets_line_path_and_suggestion() {
        let text = format!(
            "[[oslet]]\n{GOOD}\n[[oslet]]\n{}\n[[oslet]]\n{GOOD}memroy = \"4MiB\"\n",
            GOOD.replace("\"a\"", "\"b\"")
        );
        assert_eq!(
            err(&text),
            format!(
                "box.toml:{}: oslet[2].memroy: unknown field; did you mean \"memory\"?",
                text.lines().position(|l| l.starts_with("memroy")).unwrap() + 1
            )
        );
    }

    #[test]
    fn misspelt_table_names_get_suggestions() {
        assert_eq!(
            err("[hots]\noversubscribe = true\n"),
            "box.toml:1: hots: unknown field; did you mean \"host\"?"
        );
        assert_eq!(
            err(&format!("[[oslets]]\n{GOOD}")),
            "box.toml:1: oslets: unknown field; did you mean \"oslet\"?"
        );
        assert_eq!(
            err("[host]\noversubscribed = true\n"),
            "box.toml:2: host.oversubscribed: unknown field; did you mean \"oversubscribe\"?"
        );
    }

    #[test]
    fn unknown_field_without_a_near_name_lists_the_fields() {
        assert_eq!(
            err(&format!("[[oslet]]\n{GOOD}shared_dir = \"/srv\"\n")),
            "box.toml:6: oslet[0].shared_dir: unknown field; remove it; the fields here are \
             name, cpus, memory, numa_node, hugepages, kernel, initrd, cmdline, console, restart, \
             restart_limit"
        );
    }

    #[test]
    fn unknown_subtable_inside_an_oslet_is_located() {
        assert_eq!(
            err(&format!("[[oslet]]\n{GOOD}[oslet.extra]\nx = 1\n")),
            "box.toml:6: oslet[0].extra: unknown field; remove it; the fields here are \
             name, cpus, memory, numa_node, hugepages, kernel, initrd, cmdline, console, restart, \
             restart_limit"
        );
    }

    #[test]
    fn missing_field_names_the_oslet_and_shows_an_example() {
        assert_eq!(
            err("[[oslet]]\nname = \"a\"\nmemory = \"4MiB\"\nkernel = \"builtin:testkernel\"\n"),
            "box.toml:1: oslet[0].cpus: missing; every [[oslet]] needs cpus; add cpus = 4 \
             (a count), cpus = \"0-3\" (host CPUs) or cpus = [0, 1, 2, 3]"
        );
        let text =
            format!("[[oslet]]\n{GOOD}\n[[oslet]]\nname = \"b\"\ncpus = 1\nmemory = \"4MiB\"\n");
        assert_eq!(
            err(&text),
            "box.toml:7: oslet[1].kernel: missing; every [[oslet]] needs kernel; add kernel = \
             \"builtin:testkernel\" or kernel = \"path/to/bzImage\""
        );
    }

    #[test]
    fn wrong_types_say_what_was_expected_and_found() {
        assert_eq!(
            err("[[oslet]]\nname = \"a\"\ncpus = 1.5\nmemory = \"4MiB\"\nkernel = \"k\"\n"),
            "box.toml:3: oslet[0].cpus: expected a CPU count, a CPU list string or an array of \
             CPU ids, found float `1.5`; write it as cpus = 4 (a count), cpus = \"0-3\" (host \
             CPUs) or cpus = [0, 1, 2, 3]"
        );
        assert_eq!(
            err("[[oslet]]\nname = 7\n"),
            "box.toml:2: oslet[0].name: expected a string, found integer `7`; write it as \
             name = \"db\""
        );
        assert_eq!(
            err("[host]\noversubscribe = 1\n"),
            "box.toml:2: host.oversubscribe: expected a boolean, found integer `1`; write it as \
             oversubscribe = true"
        );
        assert_eq!(
            err("[[oslet]]\nname = \"a\"\ncpus = [0, \"1\"]\n"),
            "box.toml:3: oslet[0].cpus[1]: expected a CPU id (an integer), found string \"1\"; \
             write it as cpus = 4 (a count), cpus = \"0-3\" (host CPUs) or cpus = [0, 1, 2, 3]"
        );
        assert_eq!(
            err("[[oslet]]\nname = \"a\"\ncpus = 1\nmemory = true\n"),
            "box.toml:4: oslet[0].memory: expected a size in bytes or a size string, found \
             boolean `true`; write it as memory = \"256MiB\" or memory = 268435456 (bytes)"
        );
        assert_eq!(
            err(&format!("[[oslet]]\n{GOOD}hugepages = 2\n")),
            "box.toml:6: oslet[0].hugepages: expected \"2M\", \"1G\", true or false, found \
             integer `2`; write it as hugepages = \"2M\", \"1G\", true or false"
        );
        assert_eq!(
            err(&format!("[[oslet]]\n{GOOD}numa_node = \"0\"\n")),
            "box.toml:6: oslet[0].numa_node: expected an integer, found string \"0\"; write it \
             as numa_node = 0"
        );
    }

    #[test]
    fn single_bracket_oslet_table_is_explained() {
        assert_eq!(
            err(&format!("[oslet]\n{GOOD}")),
            "box.toml:1: oslet: expected an array, found a table; write it as one [[oslet]] \
             table (double brackets) per OSlet"
        );
    }

    #[test]
    fn syntax_errors_are_one_line_with_the_line_number() {
        assert_eq!(
            err("[[oslet]\nname = \"a\"\n"),
            "box.toml:1: invalid table header: expected `.`, `]]`; fix the TOML syntax on line 1"
        );
        assert_eq!(
            err("[[oslet]]\nname = a\n"),
            "box.toml:2: invalid string: expected `\"`, `'`; fix the TOML syntax on line 2"
        );
        assert_eq!(
            err("[[oslet]]\nname = \"a\"\nname = \"b\"\n"),
            "box.toml:3: duplicate key `name` in table `oslet`; keep only one of them"
        );
    }

    #[test]
    fn datetime_values_do_not_break_error_mapping() {
        assert_eq!(
            err("when = 1979-05-27T07:32:00Z\n"),
            "box.toml:1: when: unknown field; remove it; the fields here are host, oslet, links, link, shared_fs"
        );
        let e = err("[[oslet]]\nname = 1979-05-27\n");
        assert!(e.starts_with("box.toml:2: "), "{e}");
        assert!(!e.contains('\n'));
    }

    const OSLET_FIELDS: &[&str] = &[
        "name",
        "cpus",
        "memory",
        "numa_node",
        "hugepages",
        "kernel",
        "initrd",
        "cmdline",
        "console",
    ];

    #[test]
    fn edit_distance_counts_transpositions_as_one() {
        assert_eq!(edit_distance("memroy", "memory"), 1);
        assert_eq!(edit_distance("hots", "host"), 1);
        assert_eq!(edit_distance("cpu", "cpus"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(did_you_mean("numa", OSLET_FIELDS), Some("numa_node"));
        assert_eq!(did_you_mean("hugepage", OSLET_FIELDS), Some("hugepages"));
        assert_eq!(did_you_mean("xyzzy", OSLET_FIELDS), None);
    }

    #[test]
    fn field_paths_quote_keys_that_are_not_bare() {
        let path = vec![
            Segment::Key("oslet".into()),
            Segment::Index(2),
            Segment::Key("a b".into()),
        ];
        assert_eq!(render(&path), "oslet[2].\"a b\"");
    }
}
