//! Parsing of Bandit's JSON report (`bandit -r DIR -f json`).

use serde::Deserialize;

use crate::{Hit, Severity, normalize_path};

/// How sure Bandit is of an issue, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Confidence {
    Undefined,
    Low,
    Medium,
    High,
}

/// What a Bandit report holds: its issues as hits, each with Bandit's
/// confidence, and the files it could not scan.
#[derive(Debug, Default)]
pub struct BanditReport {
    pub hits: Vec<(Hit, Confidence)>,
    /// `path: reason` of each file Bandit could not parse.
    pub errors: Vec<String>,
}

#[derive(Deserialize)]
struct Report {
    #[serde(default)]
    results: Vec<Issue>,
    #[serde(default)]
    errors: Vec<FileError>,
}

#[derive(Deserialize)]
struct FileError {
    filename: String,
    reason: String,
}

#[derive(Deserialize)]
struct Issue {
    filename: String,
    test_id: String,
    test_name: String,
    issue_text: String,
    issue_severity: String,
    issue_confidence: Confidence,
    line_number: u32,
    #[serde(default)]
    line_range: Vec<u32>,
    #[serde(default)]
    col_offset: Option<u32>,
    #[serde(default)]
    issue_cwe: Option<Cwe>,
    #[serde(default)]
    more_info: String,
}

#[derive(Deserialize)]
struct Cwe {
    id: u32,
}

/// Parses Bandit's JSON report. Paths are made relative to the scanned
/// directory (Bandit prints them as `./app/x.py` when run on `.`), with
/// forward slashes. Bandit's severities map to `low`, `medium` and `high`.
pub fn parse_bandit_json(json: &str) -> Result<BanditReport, String> {
    let report: Report = serde_json::from_str(json)
        .map_err(|e| format!("bandit's output is not its JSON report: {e}"))?;
    let hits = report
        .results
        .into_iter()
        .map(|i| {
            let severity = match i.issue_severity.as_str() {
                "HIGH" => Severity::High,
                "MEDIUM" => Severity::Medium,
                "LOW" => Severity::Low,
                _ => Severity::Info,
            };
            let path = normalize_path(&i.filename);
            let cwe = i
                .issue_cwe
                .as_ref()
                .map(|c| format!(" (CWE-{})", c.id))
                .unwrap_or_default();
            let confidence = format!("{:?}", i.issue_confidence).to_lowercase();
            let mut message = format!(
                "{} [{} {}, confidence {confidence}]{cwe}",
                i.issue_text.trim(),
                i.test_id,
                i.test_name
            );
            if !i.more_info.is_empty() {
                message.push_str(&format!(". See {}", i.more_info));
            }
            let hit = Hit::new(
                format!("bandit/{}", i.test_id),
                i.issue_text.trim().lines().next().unwrap_or_default(),
                message,
                severity,
                Some(path),
                Some(i.line_number),
                i.line_range.iter().max().copied().or(Some(i.line_number)),
                i.col_offset.map(|c| c + 1),
                &i.test_id,
            );
            (hit, i.issue_confidence)
        })
        .collect();
    let errors = report
        .errors
        .into_iter()
        .map(|e| format!("{}: {}", normalize_path(&e.filename), e.reason))
        .collect();
    Ok(BanditReport { hits, errors })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../testdata/vulnerable_python_bandit.json");

    #[test]
    fn parses_the_fixture_report() {
        let report = parse_bandit_json(FIXTURE).unwrap();
        assert!(report.errors.is_empty());
        let found: Vec<(String, String, u32, Severity)> = report
            .hits
            .iter()
            .map(|(h, _)| {
                (
                    h.rule_id.clone(),
                    h.path.clone().unwrap(),
                    h.start_line.unwrap(),
                    h.severity,
                )
            })
            .collect();
        for planted in [
            ("bandit/B602", "app/runner.py", 7, Severity::High),
            ("bandit/B301", "app/store.py", 10, Severity::Medium),
            ("bandit/B506", "app/store.py", 15, Severity::Medium),
            ("bandit/B324", "app/store.py", 20, Severity::High),
            ("bandit/B105", "app/settings.py", 5, Severity::Low),
            ("bandit/B307", "app/settings.py", 10, Severity::Medium),
        ] {
            assert!(
                found.contains(&(planted.0.into(), planted.1.into(), planted.2, planted.3)),
                "{planted:?} not in {found:?}"
            );
        }
        assert!(
            !found.iter().any(|f| f.1 == "app/safe.py"),
            "safe.py reported: {found:?}"
        );
    }

    #[test]
    fn keeps_columns_confidence_cwe_and_a_stable_fingerprint() {
        let report = parse_bandit_json(FIXTURE).unwrap();
        let (shell, confidence) = report
            .hits
            .iter()
            .find(|(h, _)| h.rule_id == "bandit/B602")
            .unwrap();
        assert_eq!(*confidence, Confidence::High);
        assert_eq!(shell.start_column, Some(12));
        assert!(shell.message.contains("CWE-78"), "{}", shell.message);
        assert!(shell.message.contains("shell=True"), "{}", shell.message);
        let again = parse_bandit_json(FIXTURE).unwrap();
        assert_eq!(again.hits[0].0.fingerprint, report.hits[0].0.fingerprint);
        let (password, confidence) = report
            .hits
            .iter()
            .find(|(h, _)| h.rule_id == "bandit/B105")
            .unwrap();
        assert_eq!(*confidence, Confidence::Medium);
        assert_eq!(password.start_column, Some(21));
    }

    #[test]
    fn reports_unparseable_files_and_rejects_other_output() {
        let report = parse_bandit_json(
            r#"{"results": [], "errors": [{"filename": "./broken.py", "reason": "syntax error while parsing AST from file"}]}"#,
        )
        .unwrap();
        assert_eq!(
            report.errors,
            vec!["broken.py: syntax error while parsing AST from file".to_string()]
        );
        let err = parse_bandit_json("usage: bandit [-h]").unwrap_err();
        assert!(err.contains("not its JSON report"), "{err}");
    }
}
