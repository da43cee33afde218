//! The secret and risky-pattern scan of a whole workspace, as an activity
//! any workflow plugin can export (`security_assessment`, `python_sast`),
//! and the parameters and reporting those plugins share. Needs the `sdk`
//! feature: it reads `/workspace` and reports findings and progress.

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toolhost_sdk::{Context, Error, Result, progress, report};

use crate::{Hit, should_scan};

/// Lowest severity a plugin reports (its `min_severity` parameter).
#[derive(Debug, Deserialize, JsonSchema, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum MinSeverity {
    #[default]
    Info,
    Low,
    Medium,
    High,
    Critical,
}

/// Reports the hits at least `min` severe as findings, after
/// deduplicating them; returns how many were reported.
pub fn report_hits(hits: Vec<Hit>, min: MinSeverity) -> usize {
    let mut reported = 0;
    for hit in crate::dedup(hits)
        .iter()
        .filter(|h| h.severity as u8 >= min as u8)
    {
        report(hit.to_finding());
        reported += 1;
    }
    reported
}

/// Default of a plugin's `max_file_bytes` parameter: 2 MiB.
pub fn default_max_file_bytes() -> u64 {
    2 * 1024 * 1024
}

/// The name under which plugins export [`scan`].
pub const SCAN_ACTIVITY: &str = "scan";

/// Input of the scan activity.
#[derive(Debug, Serialize, Deserialize)]
pub struct ScanInput {
    /// Files larger than this are skipped.
    pub max_file_bytes: u64,
    /// Secret rules (TOML, gitleaks format) that extend the built-in ones:
    /// a plugin's `secret_rules` parameter.
    #[serde(default)]
    pub secret_rules: Option<String>,
    /// Also apply the target's own rules (`.gitleaks.toml`,
    /// `.toolhost-secrets.toml` at its root).
    #[serde(default = "yes")]
    pub target_rules: bool,
}

fn yes() -> bool {
    true
}

/// Output of the scan activity.
#[derive(Debug, Serialize, Deserialize)]
pub struct ScanOutput {
    pub files_scanned: u64,
    pub files_skipped: u64,
    pub hits: Vec<Hit>,
    /// Where the secret rules came from (built-in, the parameter, the
    /// target's files), with their rule counts.
    #[serde(default)]
    pub rule_sources: Vec<String>,
    /// Rules files of the target that could not be used, and why.
    #[serde(default)]
    pub rule_warnings: Vec<String>,
}

/// Longest `secret_rules` parameter accepted, in bytes.
pub const MAX_SECRET_RULES: u64 = 1 << 20;

/// Workflow side: runs the plugin's [`SCAN_ACTIVITY`] (one durable step)
/// and logs what it found.
pub fn scan_files(ctx: &Context, input: &ScanInput) -> Result<ScanOutput> {
    progress(&serde_json::json!({"phase": "scanning files"}));
    let out: ScanOutput = ctx.activity(SCAN_ACTIVITY, input)?;
    toolhost_sdk::log::info!(
        "scanned {} files ({} skipped), {} hits; secret rules: {}",
        out.files_scanned,
        out.files_skipped,
        out.hits.len(),
        out.rule_sources.join(", ")
    );
    for w in &out.rule_warnings {
        toolhost_sdk::log::warn!("{w}");
    }
    Ok(out)
}

/// The secret scanner for `input`: the built-in rules, the parameter's,
/// and the target's own files under `root` (a broken one is skipped with a
/// warning; a broken parameter is an error).
fn secret_scanner(input: &ScanInput, root: &Path) -> Result<(crate::SecretScanner, Vec<String>)> {
    let mut extra: Vec<(String, String)> = Vec::new();
    if let Some(text) = input.secret_rules.as_ref().filter(|t| !t.trim().is_empty()) {
        extra.push(("the `secret_rules` parameter".into(), text.clone()));
        crate::SecretScanner::new(&extra)
            .map_err(|e| Error::msg(format!("invalid secret rules: {e}")))?;
    }
    let mut warnings = Vec::new();
    if input.target_rules {
        for file in crate::secrets::TARGET_RULE_FILES {
            let Ok(text) = std::fs::read_to_string(root.join(file)) else {
                continue;
            };
            let mut with = extra.clone();
            with.push(((*file).to_string(), text));
            match crate::SecretScanner::new(&with) {
                Ok(_) => extra = with,
                Err(e) => warnings.push(format!(
                    "the target's secret rules in `{file}` are not used: {e}"
                )),
            }
        }
    }
    let scanner = crate::SecretScanner::new(&extra)
        .map_err(|e| Error::msg(format!("invalid secret rules: {e}")))?;
    Ok((scanner, warnings))
}

/// Activity side: walks `/workspace` and scans every text file worth
/// scanning (see [`should_scan`]); binary and oversized files are skipped.
pub fn scan(input: ScanInput) -> Result<ScanOutput> {
    let root = Path::new("/workspace");
    let (secrets, rule_warnings) = secret_scanner(&input, root)?;
    let mut out = ScanOutput {
        files_scanned: 0,
        files_skipped: 0,
        hits: Vec::new(),
        rule_sources: vec![format!(
            "{} ({} rules)",
            secrets.sources().join(", "),
            secrets.rule_count()
        )],
        rule_warnings,
    };
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| Error::msg(format!("cannot list {}: {e}", dir.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let rel = path
                .strip_prefix(root)
                .map(|p| p.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            if kind.is_dir() {
                if should_scan(&format!("{rel}/x.rs")) {
                    pending.push(path);
                }
                continue;
            }
            if !kind.is_file()
                || !should_scan(&rel)
                || crate::secrets::TARGET_RULE_FILES.contains(&rel.as_str())
            {
                continue;
            }
            let too_big = entry
                .metadata()
                .map(|m| m.len() > input.max_file_bytes)
                .unwrap_or(true);
            let Ok(bytes) = (if too_big {
                Err(())
            } else {
                std::fs::read(&path).map_err(|_| ())
            }) else {
                out.files_skipped += 1;
                continue;
            };
            // Binary files are not text: only rules on paths alone (a
            // PKCS#12 key store) apply to them.
            if bytes.contains(&0) {
                out.files_skipped += 1;
                out.hits.extend(secrets.scan(&rel, b""));
                continue;
            }
            out.files_scanned += 1;
            out.hits.extend(crate::scan_text_with(
                &secrets,
                &rel,
                &String::from_utf8_lossy(&bytes),
            ));
            if out.files_scanned.is_multiple_of(500) {
                progress(
                    &serde_json::json!({"phase": "scanning files", "files_scanned": out.files_scanned}),
                );
            }
        }
    }
    Ok(out)
}
