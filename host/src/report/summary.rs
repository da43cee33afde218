//! Human summaries of a run's findings: counts per severity and an aligned
//! table for a terminal, worst findings first.
//!
//! Text that comes from a workflow (rule ids, paths, titles) has its control
//! characters replaced before it is written, so a finding cannot move the
//! cursor or change the terminal's colours. Widths are counted in characters.

use std::io::Write;

use crate::manifest::{Finding, Severity};
use crate::text::{one_line as clean, truncate_end, truncate_start};

/// The widest a table line gets, in characters.
pub const MAX_LINE_WIDTH: usize = 120;

/// The widest the RULE column gets; longer rule ids are cut at the end.
const MAX_RULE_WIDTH: usize = 40;

/// The widest the LOCATION column gets; longer locations are cut at the start.
const MAX_LOCATION_WIDTH: usize = 50;

/// Space between two columns.
const GAP: &str = "  ";

/// Column headings, left to right.
const HEADINGS: [&str; 4] = ["SEVERITY", "RULE", "LOCATION", "TITLE"];

const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// How many findings have each severity, indexed like [`Severity::ALL`].
pub fn severity_counts(findings: &[Finding]) -> [usize; 5] {
    let mut counts = [0; 5];
    for f in findings {
        counts[slot(f.severity)] += 1;
    }
    counts
}

/// One line counting findings by severity, worst first, e.g.
/// `7 findings: 1 critical, 2 high, 3 medium, 1 low`, or `no findings`.
pub fn counts_line(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return "no findings".to_owned();
    }
    let counts = severity_counts(findings);
    let parts: Vec<String> = Severity::ALL
        .iter()
        .zip(counts)
        .rev()
        .filter(|&(_, n)| n > 0)
        .map(|(sev, n)| format!("{n} {sev}"))
        .collect();
    let noun = if findings.len() == 1 {
        "finding"
    } else {
        "findings"
    };
    format!("{} {noun}: {}", findings.len(), parts.join(", "))
}

/// Writes the findings as a table (SEVERITY, RULE, LOCATION, TITLE), worst
/// first, then by path and line; nothing at all when there are none.
/// With `color`, severities are coloured with ANSI escapes.
pub fn write_findings_table(
    findings: &[Finding],
    out: &mut impl Write,
    color: bool,
) -> std::io::Result<()> {
    if findings.is_empty() {
        return Ok(());
    }
    let mut sorted: Vec<&Finding> = findings.iter().collect();
    sorted.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| location_key(a).cmp(&location_key(b)))
            .then_with(|| a.rule_id.cmp(&b.rule_id))
            .then_with(|| a.title.cmp(&b.title))
    });

    let rows: Vec<[String; 3]> = sorted
        .iter()
        .map(|f| {
            [
                truncate_end(&clean(&f.rule_id), MAX_RULE_WIDTH),
                truncate_start(&location_text(f), MAX_LOCATION_WIDTH),
                clean(&f.title),
            ]
        })
        .collect();

    let width_of = |heading: &str, cells: &mut dyn Iterator<Item = &str>| {
        cells
            .map(|c| c.chars().count())
            .fold(heading.len(), usize::max)
    };
    let severity_width = width_of(HEADINGS[0], &mut sorted.iter().map(|f| f.severity.as_str()));
    let rule_width = width_of(HEADINGS[1], &mut rows.iter().map(|r| r[0].as_str()));
    let location_width = width_of(HEADINGS[2], &mut rows.iter().map(|r| r[1].as_str()));
    let title_width = MAX_LINE_WIDTH
        .saturating_sub(severity_width + rule_width + location_width + 3 * GAP.len())
        .max(HEADINGS[3].len());

    let header = format!(
        "{:<severity_width$}{GAP}{:<rule_width$}{GAP}{:<location_width$}{GAP}{}",
        HEADINGS[0], HEADINGS[1], HEADINGS[2], HEADINGS[3]
    );
    if color {
        writeln!(out, "{BOLD}{header}{RESET}")?;
    } else {
        writeln!(out, "{header}")?;
    }

    for (f, [rule, location, title]) in sorted.iter().zip(&rows) {
        let sev = f.severity.as_str();
        let pad = " ".repeat(severity_width.saturating_sub(sev.len()));
        let sev = if color {
            format!("{}{sev}{RESET}{pad}", ansi_style(f.severity))
        } else {
            format!("{sev}{pad}")
        };
        let title = truncate_end(title, title_width);
        let line =
            format!("{sev}{GAP}{rule:<rule_width$}{GAP}{location:<location_width$}{GAP}{title}");
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// The ANSI escape that starts a severity's colour.
fn ansi_style(sev: Severity) -> &'static str {
    match sev {
        Severity::Critical => "\x1b[1;91m",
        Severity::High => "\x1b[31m",
        Severity::Medium => "\x1b[33m",
        Severity::Low => "\x1b[34m",
        Severity::Info => "\x1b[2m",
    }
}

/// The position of a severity in [`Severity::ALL`].
fn slot(sev: Severity) -> usize {
    match sev {
        Severity::Info => 0,
        Severity::Low => 1,
        Severity::Medium => 2,
        Severity::High => 3,
        Severity::Critical => 4,
    }
}

/// Sort key putting findings with a location first, by path, line and column.
fn location_key(f: &Finding) -> (bool, Option<&str>, Option<u32>, Option<u32>) {
    let loc = f.location.as_ref();
    (
        loc.is_none(),
        loc.map(|l| l.path.as_str()),
        loc.and_then(|l| l.start_line),
        loc.and_then(|l| l.start_column),
    )
}

/// `path:line`, `path` without a line, `-` without a location.
fn location_text(f: &Finding) -> String {
    match &f.location {
        None => "-".to_owned(),
        Some(loc) => {
            let path = clean(&loc.path);
            let path = if path.is_empty() { "-" } else { path.as_str() };
            match loc.start_line.filter(|&line| line >= 1) {
                Some(line) => format!("{path}:{line}"),
                None => path.to_owned(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Location;
    use crate::text::ELLIPSIS;

    fn finding(rule: &str, sev: Severity, title: &str, at: Option<(&str, Option<u32>)>) -> Finding {
        Finding {
            rule_id: rule.into(),
            title: title.into(),
            message: format!("{title}: details"),
            severity: sev,
            location: at.map(|(path, line)| Location {
                path: path.into(),
                start_line: line,
                end_line: None,
                start_column: None,
            }),
            fingerprint: "f".into(),
        }
    }

    fn table(findings: &[Finding], color: bool) -> String {
        let mut out = Vec::new();
        write_findings_table(findings, &mut out, color).expect("write to a Vec");
        String::from_utf8(out).expect("UTF-8")
    }

    fn sample() -> Vec<Finding> {
        vec![
            finding(
                "deps/old",
                Severity::Low,
                "Outdated dependency",
                Some(("Cargo.toml", None)),
            ),
            finding(
                "secrets/aws",
                Severity::Critical,
                "AWS access key",
                Some(("src/config.rs", Some(12))),
            ),
            finding("license/missing", Severity::Info, "No license file", None),
            finding(
                "xss",
                Severity::High,
                "Reflected XSS",
                Some(("web/b.js", Some(3))),
            ),
            finding(
                "xss",
                Severity::High,
                "Reflected XSS",
                Some(("web/a.js", Some(40))),
            ),
            finding("sqli", Severity::High, "SQL injection", None),
            finding(
                "xss",
                Severity::High,
                "Reflected XSS",
                Some(("web/a.js", Some(7))),
            ),
        ]
    }

    #[test]
    fn table_is_sorted_and_aligned() {
        let expected = "\
SEVERITY  RULE             LOCATION          TITLE
critical  secrets/aws      src/config.rs:12  AWS access key
high      xss              web/a.js:7        Reflected XSS
high      xss              web/a.js:40       Reflected XSS
high      xss              web/b.js:3        Reflected XSS
high      sqli             -                 SQL injection
low       deps/old         Cargo.toml        Outdated dependency
info      license/missing  -                 No license file
";
        assert_eq!(table(&sample(), false), expected);
    }

    #[test]
    fn colour_wraps_only_the_severity() {
        let findings = [
            finding("a", Severity::Critical, "T", None),
            finding("b", Severity::Info, "U", Some(("x.rs", Some(1)))),
        ];
        let expected = "\
\x1b[1mSEVERITY  RULE  LOCATION  TITLE\x1b[0m
\x1b[1;91mcritical\x1b[0m  a     -         T
\x1b[2minfo\x1b[0m      b     x.rs:1    U
";
        assert_eq!(table(&findings, true), expected);
        for sev in Severity::ALL {
            let text = table(&[finding("r", sev, "t", None)], true);
            assert!(
                text.contains(&format!("{}{sev}{RESET}", ansi_style(sev))),
                "{text:?}"
            );
        }
        assert!(!table(&findings, false).contains('\x1b'));
    }

    #[test]
    fn long_cells_are_truncated_to_fit() {
        let long_title = "A very long title ".repeat(12);
        let long_path = format!("{}file.rs", "deep/".repeat(20));
        let findings = [
            finding(
                "short",
                Severity::Medium,
                &long_title,
                Some(("a.rs", Some(1))),
            ),
            finding(
                &"r".repeat(60),
                Severity::Low,
                "t",
                Some((&long_path, Some(99))),
            ),
        ];
        let text = table(&findings, false);
        for line in text.lines() {
            assert!(line.chars().count() <= MAX_LINE_WIDTH, "{line:?}");
        }
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].ends_with(ELLIPSIS), "{}", lines[1]);
        assert!(lines[1].starts_with("medium    short"), "{}", lines[1]);
        assert!(lines[2].contains(&format!("{}{ELLIPSIS}", "r".repeat(39))));
        let full = format!("{long_path}:99");
        let location = format!(
            "{ELLIPSIS}{}",
            &full[full.len() - (MAX_LOCATION_WIDTH - 1)..]
        );
        assert_eq!(location.chars().count(), MAX_LOCATION_WIDTH);
        assert!(
            lines[2].ends_with(&format!("  {location}  t")),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn control_characters_are_neutralised() {
        let findings = [finding(
            "r\x1b[2J",
            Severity::High,
            "two\nlines\tand \x07bell\n",
            Some(("a\rb.rs", Some(2))),
        )];
        let text = table(&findings, false);
        assert!(!text.contains('\x1b') && !text.contains('\x07') && !text.contains('\r'));
        assert_eq!(text.lines().count(), 2, "{text:?}");
        assert!(text.ends_with("r\u{fffd}[2J  a b.rs:2  two lines and \u{fffd}bell\n"));
    }

    #[test]
    fn empty_input_writes_nothing() {
        assert_eq!(table(&[], false), "");
        assert_eq!(table(&[], true), "");
    }

    #[test]
    fn counts_follow_severity_all() {
        let counts = severity_counts(&sample());
        assert_eq!(counts, [1, 1, 0, 4, 1]);
        for (i, sev) in Severity::ALL.into_iter().enumerate() {
            assert_eq!(slot(sev), i);
        }
    }

    #[test]
    fn counts_line_lists_non_zero_severities_worst_first() {
        assert_eq!(
            counts_line(&sample()),
            "7 findings: 1 critical, 4 high, 1 low, 1 info"
        );
        assert_eq!(counts_line(&[]), "no findings");
        assert_eq!(
            counts_line(&[finding("a", Severity::Medium, "t", None)]),
            "1 finding: 1 medium"
        );
    }
}
