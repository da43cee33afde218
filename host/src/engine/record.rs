//! The run record (`result.json`) and the files written beside it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::manifest::{Finding, Severity};
use crate::report::sarif::{SarifRun, write_sarif};
use crate::storage::{BlobStore, StoreError};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// `run` returned Ok.
    Succeeded,
    /// `run` returned an error, trapped, or hit a limit.
    Failed,
    /// Stopped by the user.
    Cancelled,
    /// Stopped at its deadline.
    TimedOut,
}

impl RunStatus {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::TimedOut => "timed-out",
        }
    }
}

/// Everything known about a finished run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub workflow: String,
    pub workflow_version: String,
    /// sha256 of the component the run executed.
    pub component_digest: String,
    pub vertical: String,
    pub status: RunStatus,
    /// Why it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The JSON summary `run` returned.
    #[serde(default)]
    pub summary: Value,
    pub params: Value,
    pub target: String,
    pub started_at: String,
    pub ended_at: String,
    pub duration_ms: u64,
    /// Workflow time at start (what deterministic clocks started from).
    pub workflow_start_ms: u64,
    /// Counts by severity, lowest first.
    pub counts: SeverityCounts,
    pub findings: Vec<Finding>,
    /// Last progress statistics.
    #[serde(default)]
    pub progress: Value,
    /// Names of stored artifacts.
    pub artifacts: Vec<String>,
    /// The analysis steps the workflow reported in its summary (what ran,
    /// what failed and why, what was skipped).
    #[serde(default)]
    pub analyses: Vec<crate::manifest::Analysis>,
}

/// Findings per severity.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeverityCounts {
    pub info: usize,
    pub low: usize,
    pub medium: usize,
    pub high: usize,
    pub critical: usize,
}

impl SeverityCounts {
    /// Counts `findings`.
    pub fn of(findings: &[Finding]) -> Self {
        let mut c = SeverityCounts::default();
        for f in findings {
            *match f.severity {
                Severity::Info => &mut c.info,
                Severity::Low => &mut c.low,
                Severity::Medium => &mut c.medium,
                Severity::High => &mut c.high,
                Severity::Critical => &mut c.critical,
            } += 1;
        }
        c
    }
}

impl RunRecord {
    /// Blob key of a run file.
    pub fn key(run_id: &str, file: &str) -> String {
        format!("runs/{run_id}/{file}")
    }

    /// The SARIF document for this run.
    pub fn sarif_bytes(&self) -> Vec<u8> {
        let run = SarifRun {
            workflow: &self.workflow,
            workflow_version: &self.workflow_version,
            component_digest: &self.component_digest,
            run_id: &self.run_id,
            started_at: Some(&self.started_at),
            ended_at: Some(&self.ended_at),
            succeeded: self.status == RunStatus::Succeeded,
            failure: self.error.as_deref(),
            analyses: &self.analyses,
        };
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = write_sarif(&run, &self.findings, &mut out);
        out
    }

    /// Writes `result.json` and `findings.sarif`.
    pub async fn save(&self, store: &dyn BlobStore) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(self).unwrap_or_default();
        store
            .put(
                &Self::key(&self.run_id, "findings.sarif"),
                self.sarif_bytes(),
            )
            .await?;
        store
            .put(&Self::key(&self.run_id, "result.json"), json)
            .await
    }

    /// Loads a run's record.
    pub async fn load(store: &dyn BlobStore, run_id: &str) -> Result<Self, anyhow::Error> {
        crate::engine::check_run_id(run_id).map_err(anyhow::Error::msg)?;
        let bytes = store.get(&Self::key(run_id, "result.json")).await.map_err(|e| match e {
            StoreError::NotFound(_) => anyhow::anyhow!(
                "no run `{run_id}` in this data directory; `ls .toolhost/runs` lists the recorded runs"
            ),
            other => other.into(),
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("the record of run `{run_id}` is corrupt: {e}"))
    }
}
