//! Human-readable output shared by the commands.

use std::io::IsTerminal;
use std::path::Path;

use crate::engine::{RunRecord, RunStatus};
use crate::report::summary::{counts_line, write_findings_table};

/// Prints the end-of-run summary: status, findings table, where the record is.
pub fn print_run_summary(record: &RunRecord, run_dir: &Path) {
    let color = std::io::stdout().is_terminal();
    let status = match (record.status, color) {
        (RunStatus::Succeeded, true) => "\x1b[32msucceeded\x1b[0m".to_string(),
        (RunStatus::Succeeded, false) => "succeeded".to_string(),
        (s, true) => format!("\x1b[31m{}\x1b[0m", s.as_str()),
        (s, false) => s.as_str().to_string(),
    };
    println!(
        "{} {} {} in {:.1}s (run {})",
        record.workflow,
        record.workflow_version,
        status,
        record.duration_ms as f64 / 1000.0,
        record.run_id
    );
    // Guest and tool text: no escape sequence reaches the terminal.
    let safe = crate::text::terminal_safe;
    if let Some(err) = &record.error {
        println!("  reason: {}", safe(err).replace('\n', "\n          "));
    }
    if !record.analyses.is_empty() {
        let width = record
            .analyses
            .iter()
            .map(|a| a.name.chars().count())
            .max()
            .unwrap_or(0);
        println!("  analyses:");
        for a in &record.analyses {
            let status = serde_json::to_value(a.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let status = match (a.status, color) {
                (crate::manifest::AnalysisStatus::Failed, true) => {
                    format!("\x1b[31m{status:<8}\x1b[0m")
                }
                _ => format!("{status:<8}"),
            };
            let reason = a
                .reason
                .as_deref()
                .map(|r| crate::text::display_line(r, 100))
                .unwrap_or_default();
            let line = format!(
                "    {:<width$}  {status}  {reason}",
                crate::text::one_line(&a.name)
            );
            println!("{}", line.trim_end());
        }
    }
    if !record.findings.is_empty() {
        println!();
        let mut out = std::io::stdout().lock();
        let _ = write_findings_table(&record.findings, &mut out, color);
    }
    println!();
    println!("{}", counts_line(&record.findings));
    if !record.artifacts.is_empty() {
        println!("artifacts: {}", record.artifacts.join(", "));
    }
    println!("record: {}", run_dir.display());
}

/// One-line rendering of progress statistics: `key=value key=value`.
pub fn format_stats(stats: &serde_json::Value) -> String {
    match stats.as_object() {
        Some(map) => map
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        None => stats.to_string(),
    }
}
