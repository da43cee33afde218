//! Workflow metadata and result types shared by the host, the engines, the
//! reports and the CLI.
//!
//! These are the host-side, validated forms of what a guest hands over
//! through the WIT interface (`describe`, `findings.report`). Nothing here
//! touches wasmtime: the conversions from generated bindings live in
//! `runtime::bindings`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How bad a finding is, lowest first (so `Ord` compares badness).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// All severities, lowest first.
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// The lowercase name used in the CLI, JSON and SARIF properties.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|sev| sev.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown severity `{s}`; expected one of: info, low, medium, high, critical"
                )
            })
    }
}

/// Where a finding is, relative to the workspace root.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Location {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_column: Option<u32>,
}

/// One problem a workflow found in its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub rule_id: String,
    pub title: String,
    pub message: String,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Stable identity used for deduplication (derived when the guest gives none).
    pub fingerprint: String,
}

impl Finding {
    /// The fingerprint the host derives when a guest does not supply one:
    /// rule, location and message identify a finding.
    pub fn derive_fingerprint(rule_id: &str, location: Option<&Location>, message: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(rule_id.as_bytes());
        h.update([0]);
        if let Some(loc) = location {
            h.update(loc.path.as_bytes());
            h.update([0]);
            h.update(loc.start_line.unwrap_or(0).to_le_bytes());
            h.update(loc.start_column.unwrap_or(0).to_le_bytes());
        }
        h.update([0]);
        h.update(message.as_bytes());
        hex::encode(&h.finalize()[..16])
    }
}

/// Metadata a workflow declares in `describe`, after validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub vertical: String,
    /// The parameters JSON Schema, parsed.
    pub parameters_schema: serde_json::Value,
    pub tools: Vec<String>,
    pub tags: Vec<String>,
    pub timeout_secs: u32,
}

/// Longest accepted workflow name.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a name: 1-64 chars of `[a-z0-9_]` starting with a letter; `-` is
/// also allowed except in workflow names (they double as Temporal workflow
/// types and crate names).
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let dash_ok = kind != "workflow";
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || (dash_ok && c == '-'));
    let starts_with_letter = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    if name.is_empty() || name.len() > MAX_NAME_LEN || !ok_chars || !starts_with_letter {
        return Err(format!(
            "{kind} name `{}` is invalid: use 1-{MAX_NAME_LEN} characters of lowercase letters, digits{}, starting with a letter",
            name.escape_debug(),
            if dash_ok { ", `_` or `-`" } else { " or `_`" }
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_orders_by_badness_and_parses() {
        assert!(Severity::Critical > Severity::High);
        assert!(Severity::Info < Severity::Low);
        assert_eq!("HIGH".parse::<Severity>().unwrap(), Severity::High);
        let err = "severe".parse::<Severity>().unwrap_err();
        assert!(err.contains("expected one of"), "{err}");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("workflow", "security_assessment").is_ok());
        assert!(check_name("workflow", "Hello").is_err());
        assert!(check_name("workflow", "").is_err());
        assert!(check_name("workflow", "1abc").is_err());
        assert!(check_name("workflow", "a/b").is_err());
        assert!(check_name("workflow", "a-b").is_err());
        assert!(check_name("tool", "cargo-clippy").is_ok());
        assert!(check_name("workflow", &"a".repeat(65)).is_err());
    }

    #[test]
    fn fingerprint_depends_on_rule_location_and_message() {
        let loc = Location {
            path: "src/lib.rs".into(),
            start_line: Some(3),
            end_line: None,
            start_column: None,
        };
        let a = Finding::derive_fingerprint("r", Some(&loc), "m");
        assert_eq!(a, Finding::derive_fingerprint("r", Some(&loc), "m"));
        assert_ne!(a, Finding::derive_fingerprint("r2", Some(&loc), "m"));
        assert_ne!(a, Finding::derive_fingerprint("r", None, "m"));
        assert_ne!(a, Finding::derive_fingerprint("r", Some(&loc), "m2"));
    }
}

/// How an analysis step of a run ended (the `analyses` a workflow lists in
/// its summary; see `toolhost_sdk::analysis`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnalysisStatus {
    /// Ran to completion.
    Ran,
    /// Could not analyse: its findings are missing or incomplete.
    Failed,
    /// Not applicable to this target.
    Skipped,
    /// Turned off by a parameter.
    Disabled,
}

/// One analysis step of a run, as its workflow reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Analysis {
    /// Short name (`clippy`, `secrets`, ...).
    pub name: String,
    /// How it ended.
    pub status: AnalysisStatus,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Most analyses read from one summary.
const MAX_ANALYSES: usize = 64;
/// Longest analysis name and reason kept, in bytes.
const MAX_ANALYSIS_NAME: usize = 128;
const MAX_ANALYSIS_REASON: usize = 8 * 1024;

impl Analysis {
    /// The analyses listed in a run summary's `analyses` array; entries
    /// that do not have the documented shape are ignored, and names and
    /// reasons are clipped (a guest wrote them).
    pub fn from_summary(summary: &serde_json::Value) -> Vec<Analysis> {
        let Some(list) = summary
            .get("analyses")
            .and_then(serde_json::Value::as_array)
        else {
            return Vec::new();
        };
        list.iter()
            .take(MAX_ANALYSES)
            .filter_map(|v| serde_json::from_value::<Analysis>(v.clone()).ok())
            .map(|a| Analysis {
                name: crate::text::clip_bytes(a.name, MAX_ANALYSIS_NAME),
                status: a.status,
                reason: a
                    .reason
                    .map(|r| crate::text::clip_bytes(r, MAX_ANALYSIS_REASON)),
            })
            .collect()
    }

    /// "analysis `clippy` failed: reason".
    pub fn failure_text(&self) -> String {
        match &self.reason {
            Some(r) if !r.trim().is_empty() => {
                format!("analysis `{}` failed: {}", self.name, r.trim())
            }
            _ => format!("analysis `{}` failed", self.name),
        }
    }
}
