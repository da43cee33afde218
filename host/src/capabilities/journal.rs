//! The run journal: everything a run produces while it executes (findings,
//! progress, log lines, tool audits), with the byte quotas that keep a
//! flooding guest from exhausting the host. It writes `log.jsonl` as it goes
//! so a crash loses nothing already logged; it never decides run status.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};

use crate::manifest::Finding;

/// Something that happened in a run, for live display.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// A log line (level, source, message).
    Log {
        level: String,
        source: String,
        message: String,
    },
    /// A new (deduplicated) finding.
    Finding(Finding),
    /// New progress statistics.
    Progress(Value),
    /// A tool started.
    ToolStarted { tool: String, args: Vec<String> },
    /// A tool ended (exit code, or a description of how it ended).
    ToolFinished { tool: String, outcome: String },
}

/// Receives [`RunEvent`]s as they happen.
pub type Observer = Arc<dyn Fn(&RunEvent) + Send + Sync>;

/// Why a journal write was refused.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error(
        "guest exceeded its output quota of {limit_mib} MiB (findings, progress, log and stdio together); raise `limits.output_quota_mib` if this workflow really produces that much"
    )]
    Output { limit_mib: u64 },
    #[error(
        "guest exceeded its limit of {limit} findings; raise `limits.max_findings` or report fewer, more aggregated findings"
    )]
    Findings { limit: usize },
}

struct Inner {
    findings: Vec<Finding>,
    fingerprints: HashSet<String>,
    progress: Option<Value>,
    log: Option<BufWriter<File>>,
    /// Log lines kept in memory instead (distributed runs).
    captured: Option<Vec<Value>>,
    output_bytes: u64,
    /// Last lines written to guest stderr, to explain traps (panics).
    stderr_tail: Vec<String>,
}

/// Collects a run's outputs; shared by all its guest instances.
pub struct RunJournal {
    inner: Mutex<Inner>,
    output_limit: u64,
    max_findings: usize,
    observer: Option<Observer>,
    /// Set when the observer panicked: it is not called again.
    observer_failed: std::sync::atomic::AtomicBool,
    /// Replaces host paths in everything recorded.
    redactor: std::sync::RwLock<super::redact::Redactor>,
}

const STDERR_TAIL_LINES: usize = 20;

impl RunJournal {
    /// A journal appending its log to `log_path` (created).
    pub fn create(
        log_path: &Path,
        output_quota_mib: u64,
        max_findings: usize,
        observer: Option<Observer>,
    ) -> std::io::Result<Self> {
        let file = File::create(log_path)?;
        Ok(RunJournal {
            inner: Mutex::new(Inner {
                findings: Vec::new(),
                fingerprints: HashSet::new(),
                progress: None,
                log: Some(BufWriter::new(file)),
                captured: None,
                output_bytes: 0,
                stderr_tail: Vec::new(),
            }),
            output_limit: output_quota_mib.saturating_mul(1 << 20),
            max_findings,
            observer,
            observer_failed: Default::default(),
            redactor: Default::default(),
        })
    }

    /// A journal keeping its log lines in memory ([`RunJournal::take_lines`]).
    /// Distributed runs use it: workflow code's journal is rebuilt by replay
    /// and written to the blob store once, when the run ends.
    pub fn capture(output_quota_mib: u64, max_findings: usize, observer: Option<Observer>) -> Self {
        RunJournal {
            inner: Mutex::new(Inner {
                findings: Vec::new(),
                fingerprints: HashSet::new(),
                progress: None,
                log: None,
                captured: Some(Vec::new()),
                output_bytes: 0,
                stderr_tail: Vec::new(),
            }),
            output_limit: output_quota_mib.saturating_mul(1 << 20),
            max_findings,
            observer,
            observer_failed: Default::default(),
            redactor: Default::default(),
        }
    }

    /// From now on, host paths `redactor` knows are replaced in everything
    /// this journal records.
    pub fn set_redactor(&self, redactor: super::redact::Redactor) {
        *self.redactor.write().unwrap_or_else(|p| p.into_inner()) = redactor;
    }

    /// The journal's redactor (for text recorded elsewhere: the summary,
    /// the error, findings).
    pub fn redactor(&self) -> super::redact::Redactor {
        self.redactor
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn redact(&self, text: &str) -> String {
        self.redactor
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .text(text)
    }

    fn redact_value(&self, value: &mut Value) {
        self.redactor
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .value(value);
    }

    /// The captured log lines so far, removed from the journal.
    pub fn take_lines(&self) -> Vec<Value> {
        self.lock()
            .captured
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// A copy of the captured log lines.
    pub fn lines(&self) -> Vec<Value> {
        self.lock().captured.clone().unwrap_or_default()
    }

    /// Appends log lines recorded elsewhere (by a step's activity), as they are.
    pub fn append_lines(&self, lines: Vec<Value>) {
        let mut inner = self.lock();
        for line in lines {
            if let Some(captured) = inner.captured.as_mut() {
                captured.push(line);
            } else if let Some(log) = inner.log.as_mut() {
                let _ = serde_json::to_writer(&mut *log, &line);
                let _ = log.write_all(b"\n");
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the observer (a live display). Whatever it does, the run and
    /// its record go on: a panicking observer is switched off and the
    /// panic is logged, never propagated into the guest call that caused it.
    fn notify(&self, event: RunEvent) {
        use std::sync::atomic::Ordering;
        let Some(observer) = &self.observer else {
            return;
        };
        if self.observer_failed.load(Ordering::Relaxed) {
            return;
        }
        let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| observer(&event)));
        if let Err(panic) = called {
            self.observer_failed.store(true, Ordering::Relaxed);
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            self.host_log(
                "warn",
                &format!("the live display failed ({why}); the run goes on without it"),
            );
        }
    }

    fn charge(inner: &mut Inner, limit: u64, bytes: usize) -> Result<(), QuotaError> {
        inner.output_bytes = inner.output_bytes.saturating_add(bytes as u64);
        if inner.output_bytes > limit {
            return Err(QuotaError::Output {
                limit_mib: limit >> 20,
            });
        }
        Ok(())
    }

    fn write_line(inner: &mut Inner, mut record: Value) {
        if let Some(obj) = record.as_object_mut() {
            obj.insert("ts".into(), Value::String(crate::util::now_rfc3339()));
        }
        if let Some(captured) = inner.captured.as_mut() {
            captured.push(record);
            return;
        }
        if let Some(log) = inner.log.as_mut() {
            // The log is best effort: a full disk must not fail the run.
            let _ = serde_json::to_writer(&mut *log, &record);
            let _ = log.write_all(b"\n");
        }
    }

    /// Appends a guest log line, charged to the output quota.
    pub fn guest_log(&self, level: &str, source: &str, message: &str) -> Result<(), QuotaError> {
        let message = &self.redact(message);
        {
            let mut inner = self.lock();
            Self::charge(&mut inner, self.output_limit, message.len())?;
            if source == "stderr" {
                inner.stderr_tail.push(message.to_string());
                if inner.stderr_tail.len() > STDERR_TAIL_LINES {
                    inner.stderr_tail.remove(0);
                }
            }
            Self::write_line(
                &mut inner,
                json!({"level": level, "source": source, "message": message}),
            );
        }
        self.notify(RunEvent::Log {
            level: level.into(),
            source: source.into(),
            message: message.into(),
        });
        Ok(())
    }

    /// Appends a host-side log line (not charged to the guest).
    pub fn host_log(&self, level: &str, message: &str) {
        let message = &self.redact(message);
        Self::write_line(
            &mut self.lock(),
            json!({"level": level, "source": "host", "message": message}),
        );
        self.notify(RunEvent::Log {
            level: level.into(),
            source: "host".into(),
            message: message.into(),
        });
    }

    /// Appends a structured record (e.g. a tool audit) to the log.
    pub fn audit(&self, mut record: Value) {
        self.redact_value(&mut record);
        Self::write_line(&mut self.lock(), record);
    }

    /// Records a finding unless its fingerprint was seen; returns whether it was new.
    pub fn add_finding(&self, finding: Finding, encoded_len: usize) -> Result<bool, QuotaError> {
        let finding = self.redactor().finding(finding);
        {
            let mut inner = self.lock();
            Self::charge(&mut inner, self.output_limit, encoded_len)?;
            if inner.fingerprints.contains(&finding.fingerprint) {
                return Ok(false);
            }
            if inner.findings.len() >= self.max_findings {
                return Err(QuotaError::Findings {
                    limit: self.max_findings,
                });
            }
            inner.fingerprints.insert(finding.fingerprint.clone());
            inner.findings.push(finding.clone());
        }
        self.notify(RunEvent::Finding(finding));
        Ok(true)
    }

    /// Replaces the current progress statistics.
    pub fn set_progress(&self, mut stats: Value, encoded_len: usize) -> Result<(), QuotaError> {
        self.redact_value(&mut stats);
        {
            let mut inner = self.lock();
            Self::charge(&mut inner, self.output_limit, encoded_len)?;
            inner.progress = Some(stats.clone());
        }
        self.notify(RunEvent::Progress(stats));
        Ok(())
    }

    /// Announces a tool start to the observer.
    pub fn tool_started(&self, tool: &str, args: &[String]) {
        self.notify(RunEvent::ToolStarted {
            tool: tool.into(),
            args: args.to_vec(),
        });
    }

    /// Announces a tool end to the observer.
    pub fn tool_finished(&self, tool: &str, outcome: String) {
        self.notify(RunEvent::ToolFinished {
            tool: tool.into(),
            outcome,
        });
    }

    /// The findings so far, in report order.
    pub fn findings(&self) -> Vec<Finding> {
        self.lock().findings.clone()
    }

    /// The latest progress statistics.
    pub fn progress(&self) -> Option<Value> {
        self.lock().progress.clone()
    }

    /// The last lines the guest wrote to stderr (e.g. a panic message).
    pub fn stderr_tail(&self) -> Vec<String> {
        self.lock().stderr_tail.clone()
    }

    /// Flushes the log file.
    pub fn flush(&self) {
        if let Some(log) = self.lock().log.as_mut() {
            let _ = log.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_observer_is_switched_off_and_the_journal_goes_on() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = calls.clone();
        let observer: Observer = Arc::new(move |_event: &RunEvent| {
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let s = format!("{}€", "a".repeat(99));
            let mut cut = s.clone();
            cut.truncate(100); // the bug this guards against: panics
        });
        let journal = RunJournal::capture(1, 10, Some(observer));
        journal.guest_log("info", "guest", "first").unwrap();
        journal.guest_log("info", "guest", "second").unwrap();
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 1);
        let lines = journal.lines();
        let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
        assert_eq!(messages[0], "first");
        assert!(
            messages[1].contains("the live display failed")
                && messages[1].contains("is_char_boundary"),
            "{messages:?}"
        );
        assert_eq!(messages[2], "second");
    }
}
