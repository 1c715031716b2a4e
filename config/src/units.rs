//! Parsing and printing of the two value syntaxes the config shares with the host:
//! sizes (`"256MiB"`) and CPU lists (`"0-3,8,10-11"`, the kernel's cpulist format).

use std::fmt::Write as _;

pub(crate) const KIB: u64 = 1 << 10;
pub(crate) const MIB: u64 = 1 << 20;
pub(crate) const GIB: u64 = 1 << 30;
pub(crate) const TIB: u64 = 1 << 40;

/// What is wrong with a value and how to fix it; the caller adds the file and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub problem: String,
    pub fix: String,
}

impl Problem {
    pub(crate) fn new(problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Problem {
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

const SIZE_UNITS_HELP: &str = "sizes are a whole number of bytes or a whole number with a unit: \
     B, K or KiB, M or MiB, G or GiB, T or TiB (all binary, 1K = 1024)";

/// Parses a size string: a whole number, optional spaces, then an optional binary unit.
///
/// Accepted units (case-insensitive): `B`, `K`/`KiB`, `M`/`MiB`, `G`/`GiB`, `T`/`TiB`,
/// all powers of 1024. `KB`, `MB`, `GB`, `TB` are refused: half the world reads them as
/// powers of 1000, and a VMM should not guess.
pub(crate) fn parse_size(text: &str) -> Result<u64, Problem> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, rest) = t.split_at(digits_end);
    let unit = rest.trim_start();
    if digits.is_empty() {
        return Err(Problem::new(
            format!("\"{text}\" is not a size"),
            format!("write a size like \"256MiB\"; {SIZE_UNITS_HELP}"),
        ));
    }
    if unit.starts_with('.') || unit.starts_with(',') {
        return Err(Problem::new(
            format!("\"{text}\" is not a whole number"),
            format!("write it in a smaller unit, e.g. \"1536MiB\" for 1.5 GiB; {SIZE_UNITS_HELP}"),
        ));
    }
    let multiplier = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => KIB,
        "m" | "mib" => MIB,
        "g" | "gib" => GIB,
        "t" | "tib" => TIB,
        "kb" | "mb" | "gb" | "tb" => {
            let binary = format!("{}iB", &unit[..1].to_ascii_uppercase());
            return Err(Problem::new(
                format!("\"{text}\" is ambiguous (decimal or binary {unit}?)"),
                format!("write \"{digits}{binary}\"; {SIZE_UNITS_HELP}"),
            ));
        }
        _ => {
            return Err(Problem::new(
                format!("\"{text}\" has an unknown unit \"{unit}\""),
                SIZE_UNITS_HELP.to_string(),
            ))
        }
    };
    let too_big = || {
        Problem::new(
            format!("\"{text}\" is too large"),
            "give a size below 16 EiB".to_string(),
        )
    };
    let number: u64 = digits.parse().map_err(|_| too_big())?;
    number.checked_mul(multiplier).ok_or_else(too_big)
}

/// Prints a size exactly, in the largest binary unit that divides it: `4 MiB`,
/// `1536 MiB`, `2 GiB`, `12 KiB`, `1000 B`.
pub(crate) fn format_size(bytes: u64) -> String {
    for (unit, name) in [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
        if bytes >= unit && bytes % unit == 0 {
            return format!("{} {name}", bytes / unit);
        }
    }
    format!("{bytes} B")
}

/// Prints a host quantity (MemTotal is rarely round): exact when whole in MiB or above,
/// otherwise to one decimal in the largest unit it reaches (`62.7 GiB`).
pub(crate) fn format_size_approx(bytes: u64) -> String {
    let exact = format_size(bytes);
    if exact.ends_with("MiB") || exact.ends_with("GiB") || exact.ends_with("TiB") {
        return exact;
    }
    for (unit, name) in [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
        if bytes >= unit {
            #[allow(clippy::cast_precision_loss)] // one decimal is all we print
            let value = bytes as f64 / unit as f64;
            return format!("{value:.1} {name}");
        }
    }
    exact
}

/// Parses a CPU list as the kernel writes it (`"0-3,8,10-11"`), keeping the written
/// order. Spaces around items are allowed. At most `max_cpus` CPUs may result (so that
/// `"0-4000000000"` fails fast instead of allocating).
pub(crate) fn parse_cpu_list(text: &str, max_cpus: usize) -> Result<Vec<usize>, Problem> {
    const FIX: &str = "write CPU ids and ranges separated by commas, e.g. \"0-3,8,10-11\"";
    if text.trim().is_empty() {
        return Err(Problem::new("the CPU list is empty", FIX));
    }
    let mut cpus = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        let parse_id = |s: &str| -> Result<usize, Problem> {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Problem::new(
                    format!("\"{item}\" in \"{text}\" is not a CPU id or range"),
                    FIX,
                ));
            }
            s.parse().map_err(|_| {
                Problem::new(format!("CPU id \"{s}\" in \"{text}\" is too large"), FIX)
            })
        };
        let (low, high) = match item.split_once('-') {
            Some((a, b)) => (parse_id(a)?, parse_id(b)?),
            None => {
                let id = parse_id(item)?;
                (id, id)
            }
        };
        if low > high {
            return Err(Problem::new(
                format!("the range \"{item}\" in \"{text}\" runs backwards"),
                format!("write it low-high: \"{high}-{low}\""),
            ));
        }
        if high - low >= max_cpus.saturating_sub(cpus.len()) {
            return Err(Problem::new(
                format!("\"{text}\" names more than {max_cpus} CPUs"),
                format!("give at most {max_cpus}"),
            ));
        }
        cpus.extend(low..=high);
    }
    Ok(cpus)
}

/// Prints CPUs compactly in the given order, joining ascending runs: `[0,1,2,3,8]` is
/// `"0-3,8"`, `[0,1,0,1]` is `"0-1,0-1"`.
pub(crate) fn format_cpu_list(cpus: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            end += 1;
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if end == start {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{end}");
        }
        i += 1;
    }
    out
}

/// `CPU 5` or `CPUs 4-7,9`: the noun agrees with the count.
pub(crate) fn cpus_phrase(cpus: &[usize]) -> String {
    if cpus.len() == 1 {
        format!("CPU {}", cpus[0])
    } else {
        format!("CPUs {}", format_cpu_list(cpus))
    }
}

/// `1 vCPU`, `4 vCPUs`, `1 OSlet`, ...
pub(crate) fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Makes a message one line whatever the user wrote (names and paths are echoed back).
pub(crate) fn flat(text: String) -> String {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4MiB"), Ok(4 * MIB));
        assert_eq!(parse_size("4 MiB"), Ok(4 * MIB));
        assert_eq!(parse_size("4M"), Ok(4 * MIB));
        assert_eq!(parse_size("4m"), Ok(4 * MIB));
        assert_eq!(parse_size("2GiB"), Ok(2 * GIB));
        assert_eq!(parse_size("2G"), Ok(2 * GIB));
        assert_eq!(parse_size("1T"), Ok(TIB));
        assert_eq!(parse_size("1TiB"), Ok(TIB));
        assert_eq!(parse_size("64K"), Ok(64 * KIB));
        assert_eq!(parse_size("64KiB"), Ok(64 * KIB));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size(" 8 GiB "), Ok(8 * GIB));
    }

    #[test]
    fn unknown_size_unit_says_which_units_are_accepted() {
        let err = parse_size("4XB").unwrap_err();
        assert_eq!(err.problem, "\"4XB\" has an unknown unit \"XB\"");
        assert_eq!(err.fix, SIZE_UNITS_HELP);
        assert!(err.fix.contains("K or KiB, M or MiB, G or GiB, T or TiB"));
    }

    #[test]
    fn decimal_looking_size_units_are_refused_as_ambiguous() {
        let err = parse_size("512MB").unwrap_err();
        assert_eq!(
            err.problem,
            "\"512MB\" is ambiguous (decimal or binary MB?)"
        );
        assert!(
            err.fix.starts_with("write \"512MiB\"; sizes are"),
            "{}",
            err.fix
        );
        let err = parse_size("1gb").unwrap_err();
        assert!(err.fix.starts_with("write \"1GiB\""), "{}", err.fix);
    }

    #[test]
    fn fractional_sizes_are_refused_with_a_smaller_unit_suggested() {
        let err = parse_size("1.5GiB").unwrap_err();
        assert_eq!(err.problem, "\"1.5GiB\" is not a whole number");
        assert!(err
            .fix
            .starts_with("write it in a smaller unit, e.g. \"1536MiB\""));
    }

    #[test]
    fn sizes_without_digits_or_too_large_are_refused() {
        assert_eq!(
            parse_size("MiB").unwrap_err().problem,
            "\"MiB\" is not a size"
        );
        assert_eq!(parse_size("").unwrap_err().problem, "\"\" is not a size");
        assert_eq!(
            parse_size("-4M").unwrap_err().problem,
            "\"-4M\" is not a size"
        );
        assert_eq!(
            parse_size("99999999T").unwrap_err().problem,
            "\"99999999T\" is too large"
        );
        assert_eq!(
            parse_size("999999999999999999999").unwrap_err().problem,
            "\"999999999999999999999\" is too large"
        );
    }

    #[test]
    fn sizes_print_exactly_in_the_largest_whole_unit() {
        assert_eq!(format_size(4 * MIB), "4 MiB");
        assert_eq!(format_size(1536 * MIB), "1536 MiB");
        assert_eq!(format_size(2 * GIB), "2 GiB");
        assert_eq!(format_size(12 * KIB), "12 KiB");
        assert_eq!(format_size(1000), "1000 B");
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(2 * TIB), "2 TiB");
    }

    #[test]
    fn host_sizes_print_approximately_when_not_round() {
        assert_eq!(format_size_approx(64 * GIB), "64 GiB");
        assert_eq!(format_size_approx(65_842_340 * KIB), "62.8 GiB");
        assert_eq!(format_size_approx(1536 * KIB), "1.5 MiB");
        assert_eq!(format_size_approx(100), "100 B");
    }

    #[test]
    fn cpu_lists_parse_ranges_and_singles_in_written_order() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11", 254),
            Ok(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5", 254), Ok(vec![5]));
        assert_eq!(parse_cpu_list("8-9, 0-1", 254), Ok(vec![8, 9, 0, 1]));
        assert_eq!(parse_cpu_list("0-63\n", 4096), Ok((0..64).collect()));
    }

    #[test]
    fn bad_cpu_list_syntax_is_refused_with_the_expected_form() {
        let err = parse_cpu_list("0-3,x", 254).unwrap_err();
        assert_eq!(err.problem, "\"x\" in \"0-3,x\" is not a CPU id or range");
        assert_eq!(
            err.fix,
            "write CPU ids and ranges separated by commas, e.g. \"0-3,8,10-11\""
        );
        let err = parse_cpu_list("0-3,,4", 254).unwrap_err();
        assert_eq!(err.problem, "\"\" in \"0-3,,4\" is not a CPU id or range");
        let err = parse_cpu_list("1-", 254).unwrap_err();
        assert_eq!(err.problem, "\"1-\" in \"1-\" is not a CPU id or range");
        let err = parse_cpu_list("", 254).unwrap_err();
        assert_eq!(err.problem, "the CPU list is empty");
        let err = parse_cpu_list("-1", 254).unwrap_err();
        assert_eq!(err.problem, "\"-1\" in \"-1\" is not a CPU id or range");
    }

    #[test]
    fn backwards_cpu_ranges_are_refused_with_the_range_turned_round() {
        let err = parse_cpu_list("7-4", 254).unwrap_err();
        assert_eq!(err.problem, "the range \"7-4\" in \"7-4\" runs backwards");
        assert_eq!(err.fix, "write it low-high: \"4-7\"");
    }

    #[test]
    fn huge_cpu_ranges_fail_fast() {
        let err = parse_cpu_list("0-4000000000", 254).unwrap_err();
        assert_eq!(err.problem, "\"0-4000000000\" names more than 254 CPUs");
        let err = parse_cpu_list("0-200,300-400", 254).unwrap_err();
        assert_eq!(err.problem, "\"0-200,300-400\" names more than 254 CPUs");
        assert_eq!(parse_cpu_list("0-253", 254).map(|v| v.len()), Ok(254));
        let err = parse_cpu_list("99999999999999999999999", 254).unwrap_err();
        assert_eq!(
            err.problem,
            "CPU id \"99999999999999999999999\" in \"99999999999999999999999\" is too large"
        );
    }

    #[test]
    fn cpu_lists_print_compactly_in_order() {
        assert_eq!(format_cpu_list(&[0, 1, 2, 3, 8]), "0-3,8");
        assert_eq!(format_cpu_list(&[0, 1, 0, 1]), "0-1,0-1");
        assert_eq!(format_cpu_list(&[5]), "5");
        assert_eq!(format_cpu_list(&[3, 2]), "3,2");
        assert_eq!(format_cpu_list(&[]), "");
        assert_eq!(cpus_phrase(&[4]), "CPU 4");
        assert_eq!(cpus_phrase(&[4, 5, 6, 7]), "CPUs 4-7");
    }
}
