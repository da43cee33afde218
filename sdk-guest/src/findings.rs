//! Findings: what a workflow reports about its target.

use crate::bindings::toolhost::workflow::findings as wit_findings;
use crate::bindings::toolhost::workflow::types as wit;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl From<Severity> for wit::Severity {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Info => wit::Severity::Info,
            Severity::Low => wit::Severity::Low,
            Severity::Medium => wit::Severity::Medium,
            Severity::High => wit::Severity::High,
            Severity::Critical => wit::Severity::Critical,
        }
    }
}

/// A finding under construction: `Finding::new("rule", Severity::High, "title").at("src/x.rs", 3)`.
#[derive(Debug, Clone)]
pub struct Finding {
    inner: wit::Finding,
}

impl Finding {
    /// A finding of `rule_id` with `severity` and a one-line `title`.
    pub fn new(rule_id: impl Into<String>, severity: Severity, title: impl Into<String>) -> Self {
        Finding {
            inner: wit::Finding {
                rule_id: rule_id.into(),
                title: title.into(),
                message: String::new(),
                severity: severity.into(),
                location: None,
                fingerprint: None,
            },
        }
    }

    /// The full explanation (defaults to the title).
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.inner.message = message.into();
        self
    }

    /// Location: workspace-relative `path` and 1-based `line` (0 = unknown).
    pub fn at(mut self, path: impl Into<String>, line: u32) -> Self {
        self.inner.location = Some(wit::Location {
            path: path.into(),
            start_line: (line > 0).then_some(line),
            end_line: None,
            start_column: None,
        });
        self
    }

    /// Location with only a path.
    pub fn in_file(mut self, path: impl Into<String>) -> Self {
        self.inner.location = Some(wit::Location {
            path: path.into(),
            start_line: None,
            end_line: None,
            start_column: None,
        });
        self
    }

    /// 1-based column (needs a location).
    pub fn column(mut self, column: u32) -> Self {
        if let Some(loc) = self.inner.location.as_mut() {
            loc.start_column = (column > 0).then_some(column);
        }
        self
    }

    /// Last line, inclusive (needs a location).
    pub fn end_line(mut self, line: u32) -> Self {
        if let Some(loc) = self.inner.location.as_mut() {
            loc.end_line = (line > 0).then_some(line);
        }
        self
    }

    /// A stable identity for deduplication.
    pub fn fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.inner.fingerprint = Some(fingerprint.into());
        self
    }
}

/// Reports `finding` to the host (duplicates are kept once).
pub fn report(finding: Finding) {
    let mut f = finding.inner;
    if f.message.is_empty() {
        f.message = f.title.clone();
    }
    wit_findings::report(&f);
}
