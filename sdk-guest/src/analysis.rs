//! What became of each analysis step of a run: a tool that ran, or failed
//! before it could analyse anything, or was skipped.
//!
//! A workflow puts the list in its summary under `analyses` (a field of
//! type `Vec<Analysis>` named `analyses`). The host reads it: a `failed`
//! analysis makes the run `failed` with its reason (findings of the other
//! analyses are kept), the CLI prints each failure, and the SARIF run
//! records it (`executionSuccessful: false` and a tool execution
//! notification). A scan that could not run therefore never reads as "found
//! nothing".
//!
//! ```ignore
//! let clippy = match out {
//!     o if o.success() => Analysis::ran("clippy"),
//!     o => Analysis::failed("clippy", format!("cargo exited {:?}: {}", o.exit_code, o.stderr_str())),
//! };
//! ```

use serde::{Deserialize, Serialize};

/// How an analysis step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnalysisStatus {
    /// It ran to completion; its findings (possibly none) are complete.
    Ran,
    /// It could not analyse: its findings are missing or incomplete.
    Failed,
    /// Not applicable to this target (for example no `Cargo.toml`).
    Skipped,
    /// Turned off by a parameter.
    Disabled,
}

/// One analysis step of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Analysis {
    /// Short name, e.g. `clippy`, `secrets`, `bandit`.
    pub name: String,
    /// How it ended.
    pub status: AnalysisStatus,
    /// Why it failed or was skipped, in a sentence or a few lines of the
    /// tool's output; what to do about it where that is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Analysis {
    fn new(name: &str, status: AnalysisStatus, reason: Option<String>) -> Self {
        Analysis {
            name: name.to_string(),
            status,
            reason,
        }
    }

    /// `name` ran to completion.
    pub fn ran(name: &str) -> Self {
        Self::new(name, AnalysisStatus::Ran, None)
    }

    /// `name` could not analyse, because of `reason`.
    pub fn failed(name: &str, reason: impl Into<String>) -> Self {
        Self::new(name, AnalysisStatus::Failed, Some(reason.into()))
    }

    /// `name` does not apply to this target, because of `reason`.
    pub fn skipped(name: &str, reason: impl Into<String>) -> Self {
        Self::new(name, AnalysisStatus::Skipped, Some(reason.into()))
    }

    /// `name` was turned off by a parameter.
    pub fn disabled(name: &str) -> Self {
        Self::new(name, AnalysisStatus::Disabled, None)
    }

    /// True for [`AnalysisStatus::Failed`].
    pub fn is_failed(&self) -> bool {
        self.status == AnalysisStatus::Failed
    }
}
