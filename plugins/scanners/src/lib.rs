//! Scanners shared by Toolhost workflow plugins.
//!
//! Everything here is pure computation over strings: no file system, no
//! processes, no WebAssembly-specific code. A workflow reads the files or runs
//! the tools through the host, then hands the text to these functions and
//! reports the returned [`Hit`]s as findings.
//!
//! * [`scan_text`] looks for committed secrets and risky Rust patterns in one
//!   file; [`should_scan`] says which paths are worth reading.
//! * [`parse_clippy_json`] turns `cargo clippy --message-format=json` output
//!   into hits.
//! * [`parse_cargo_test`] turns `cargo test` output into one hit per failing
//!   test, or one hit for a build failure.
//! * [`parse_bandit_json`] turns Bandit's JSON report into hits.
//! * [`libfuzzer`] reads libFuzzer's stderr as it streams: live statistics
//!   and crash reports with a stable signature.
//! * [`dedup`] removes duplicates and orders hits for reporting.
//! * With the `sdk` feature, [`workspace`] is the workspace scan activity
//!   that workflow plugins share, and [`cargo`] the dependency-fetch step of
//!   the rust workflows.

mod bandit;
mod cargo_test;
mod clippy;
pub mod libfuzzer;
mod rustlex;
pub mod secrets;
mod text;

#[cfg(feature = "sdk")]
pub mod cargo;
#[cfg(feature = "sdk")]
pub mod workspace;

pub use bandit::{BanditReport, Confidence, parse_bandit_json};
pub use cargo_test::parse_cargo_test;
pub use clippy::{BuildOutcome, cargo_build_outcome, parse_clippy_json};
pub use secrets::{SecretScanner, default_scanner};
pub use text::{scan_text, scan_text_with, should_scan};

use serde::{Deserialize, Serialize};

/// How bad a hit is, from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

/// One problem found by a scanner or parsed from a tool's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    /// Rule identifier, e.g. `secrets/aws-access-key`, `rust/unsafe-block`,
    /// `clippy/needless_range_loop`, `test/failed`.
    pub rule_id: String,
    /// Short one-line summary.
    pub title: String,
    /// Full explanation, including what to do about it. Never contains a full
    /// secret: at most its first four characters.
    pub message: String,
    pub severity: Severity,
    /// Path relative to the scanned tree, with forward slashes.
    pub path: Option<String>,
    /// 1-based first line.
    pub start_line: Option<u32>,
    /// 1-based last line, inclusive.
    pub end_line: Option<u32>,
    /// 1-based column (in characters) on `start_line`.
    pub start_column: Option<u32>,
    /// Stable identity: see [`fingerprint`].
    pub fingerprint: String,
}

impl Hit {
    /// Builds a hit whose fingerprint is derived from its rule, location and
    /// `key` (a non-secret discriminator, such as a test name; may be empty).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        rule_id: impl Into<String>,
        title: impl Into<String>,
        message: impl Into<String>,
        severity: Severity,
        path: Option<String>,
        start_line: Option<u32>,
        end_line: Option<u32>,
        start_column: Option<u32>,
        key: &str,
    ) -> Hit {
        let rule_id = rule_id.into();
        let fingerprint = fingerprint(&rule_id, path.as_deref(), start_line, start_column, key);
        Hit {
            rule_id,
            title: title.into(),
            message: message.into(),
            severity,
            path,
            start_line,
            end_line,
            start_column,
            fingerprint,
        }
    }
}

/// The fingerprint of a hit: 16 hex digits of a 64-bit FNV-1a hash of the
/// rule, the path, the line, the column and a non-secret `key`.
///
/// The same inputs give the same fingerprint on every platform and in every
/// version of this crate, so it can be used to track a hit across runs. The
/// raw text of a secret is never part of it.
pub fn fingerprint(
    rule_id: &str,
    path: Option<&str>,
    line: Option<u32>,
    column: Option<u32>,
    key: &str,
) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let line = line.map(|l| l.to_string()).unwrap_or_default();
    let column = column.map(|c| c.to_string()).unwrap_or_default();
    let mut hash = OFFSET;
    for (i, part) in [rule_id, path.unwrap_or(""), &line, &column, key]
        .iter()
        .enumerate()
    {
        if i > 0 {
            // A separator that cannot occur in any part keeps ("ab", "c") and
            // ("a", "bc") apart.
            hash ^= 0xff;
            hash = hash.wrapping_mul(PRIME);
        }
        for byte in part.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    format!("{hash:016x}")
}

/// `dir/file` with `dir` relative to the workspace root (`""` or `"."` = the root).
pub fn join_path(dir: &str, file: &str) -> String {
    let dir = dir.trim_matches('/');
    if dir.is_empty() || dir == "." {
        file.to_string()
    } else {
        format!("{dir}/{file}")
    }
}

/// The last `n` lines of `text` (a tool's output, for a failure reason).
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Removes hits whose fingerprint was already seen (the first one is kept),
/// then sorts by path, line and rule (hits without a path come first; ties
/// keep a stable order by column).
pub fn dedup(hits: Vec<Hit>) -> Vec<Hit> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<Hit> = hits
        .into_iter()
        .filter(|h| seen.insert(h.fingerprint.clone()))
        .collect();
    out.sort_by(|a, b| {
        (&a.path, a.start_line, &a.rule_id, a.start_column).cmp(&(
            &b.path,
            b.start_line,
            &b.rule_id,
            b.start_column,
        ))
    });
    out
}

/// Shows at most the first four characters of `secret`, masking the rest.
pub(crate) fn redact(secret: &str) -> String {
    let shown: String = secret.chars().take(4).collect();
    format!("{shown}****")
}

/// Converts a path to forward slashes and drops a leading `./`.
pub(crate) fn normalize_path(path: &str) -> String {
    let p = path.replace('\\', "/");
    let mut p = p.as_str();
    while let Some(rest) = p.strip_prefix("./") {
        p = rest;
    }
    p.to_string()
}

#[cfg(test)]
mod join_tests {
    #[test]
    fn join_path_treats_empty_and_dot_as_the_root() {
        assert_eq!(super::join_path("", "Cargo.toml"), "Cargo.toml");
        assert_eq!(super::join_path(".", "a"), "a");
        assert_eq!(
            super::join_path("/crates/x/", "src/lib.rs"),
            "crates/x/src/lib.rs"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(rule: &str, path: Option<&str>, line: u32, col: u32) -> Hit {
        Hit::new(
            rule,
            "t",
            "m",
            Severity::Low,
            path.map(str::to_string),
            Some(line),
            Some(line),
            Some(col),
            "",
        )
    }

    #[test]
    fn severity_orders_and_serializes_lowercase() {
        assert!(Severity::Info < Severity::Low);
        assert!(Severity::Low < Severity::Medium);
        assert!(Severity::Medium < Severity::High);
        assert!(Severity::High < Severity::Critical);
        assert_eq!(
            serde_json::to_string(&Severity::Critical).unwrap(),
            "\"critical\""
        );
        let s: Severity = serde_json::from_str("\"medium\"").unwrap();
        assert_eq!(s, Severity::Medium);
    }

    #[test]
    fn hit_round_trips_through_json() {
        let h = hit("rust/unsafe-block", Some("src/lib.rs"), 3, 5);
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["severity"], "low");
        assert_eq!(json["path"], "src/lib.rs");
        assert_eq!(json["start_line"], 3);
        let back: Hit = serde_json::from_value(json).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn fingerprint_is_stable_and_discriminating() {
        let a = fingerprint("r", Some("src/a.rs"), Some(1), Some(2), "");
        assert_eq!(a, fingerprint("r", Some("src/a.rs"), Some(1), Some(2), ""));
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        // Pinned so that an accidental change of the scheme is noticed.
        assert_eq!(fingerprint("", None, None, None, ""), "994f76653e2a3951");
        assert_ne!(a, fingerprint("r", Some("src/a.rs"), Some(1), Some(3), ""));
        assert_ne!(a, fingerprint("r", Some("src/a.rs"), Some(12), None, ""));
        assert_ne!(a, fingerprint("r", Some("src/b.rs"), Some(1), Some(2), ""));
        assert_ne!(a, fingerprint("q", Some("src/a.rs"), Some(1), Some(2), ""));
        assert_ne!(a, fingerprint("r", Some("src/a.rs"), Some(1), Some(2), "k"));
        assert_ne!(
            fingerprint("ab", Some("c"), None, None, ""),
            fingerprint("a", Some("bc"), None, None, "")
        );
    }

    #[test]
    fn dedup_keeps_first_and_sorts() {
        let mut first = hit("b/rule", Some("src/b.rs"), 2, 1);
        first.title = "first".into();
        let mut dup = first.clone();
        dup.title = "second".into();
        let hits = vec![
            first,
            hit("a/rule", Some("src/b.rs"), 2, 1),
            hit("z/rule", Some("src/a.rs"), 10, 1),
            dup,
            hit("z/rule", Some("src/a.rs"), 9, 1),
            hit("test/build-failed", None, 0, 0),
        ];
        let out = dedup(hits);
        let keys: Vec<_> = out
            .iter()
            .map(|h| (h.path.as_deref(), h.start_line, h.rule_id.as_str()))
            .collect();
        assert_eq!(
            keys,
            vec![
                (None, Some(0), "test/build-failed"),
                (Some("src/a.rs"), Some(9), "z/rule"),
                (Some("src/a.rs"), Some(10), "z/rule"),
                (Some("src/b.rs"), Some(2), "a/rule"),
                (Some("src/b.rs"), Some(2), "b/rule"),
            ]
        );
        assert_eq!(out[4].title, "first");
    }

    #[test]
    fn redact_shows_four_chars() {
        assert_eq!(redact(concat!("AKIA", "ABCDEFGHIJKLMNOP")), "AKIA****");
        assert_eq!(redact("ab"), "ab****");
        assert_eq!(redact("пароль-секрет"), "паро****");
    }

    #[test]
    fn normalize_path_uses_forward_slashes() {
        assert_eq!(normalize_path("src\\lib.rs"), "src/lib.rs");
        assert_eq!(normalize_path("./src/lib.rs"), "src/lib.rs");
        assert_eq!(normalize_path("src/lib.rs"), "src/lib.rs");
    }
}

#[cfg(feature = "sdk")]
mod sdk {
    use toolhost_sdk::{Finding, Severity as SdkSeverity};

    impl From<super::Severity> for SdkSeverity {
        fn from(s: super::Severity) -> Self {
            match s {
                super::Severity::Info => SdkSeverity::Info,
                super::Severity::Low => SdkSeverity::Low,
                super::Severity::Medium => SdkSeverity::Medium,
                super::Severity::High => SdkSeverity::High,
                super::Severity::Critical => SdkSeverity::Critical,
            }
        }
    }

    impl super::Hit {
        /// The SDK finding for this hit (location, columns and fingerprint kept).
        pub fn to_finding(&self) -> Finding {
            let mut f = Finding::new(
                self.rule_id.clone(),
                self.severity.into(),
                self.title.clone(),
            )
            .message(self.message.clone())
            .fingerprint(self.fingerprint.clone());
            if let Some(path) = &self.path {
                f = f.at(path.clone(), self.start_line.unwrap_or(0));
                if let Some(c) = self.start_column {
                    f = f.column(c);
                }
                if let Some(e) = self.end_line {
                    f = f.end_line(e);
                }
            }
            f
        }
    }
}
