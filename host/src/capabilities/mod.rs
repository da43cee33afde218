//! Host capabilities: one module per WIT import interface, each a small,
//! checked implementation over the run's [`RunContext`]. This is where policy
//! is enforced (which tools, which paths, how many bytes); none of it may be
//! bypassed by a guest, and no capability may panic on guest input.

pub mod activities;
pub mod artifacts;
pub mod cargo_sources;
pub mod durable;
pub mod fetch;
pub mod findings;
pub mod journal;
pub mod log;
pub mod progress;
pub mod redact;
pub mod stop;
pub mod tools;
pub mod workspace;

use std::path::PathBuf;
use std::sync::Arc;

use crate::manifest::WorkflowInfo;
use crate::runtime::clocks::WorkflowClock;
use crate::runtime::limits::GuestLimits;
use crate::runtime::{GuestState, Runtime, WorkflowPre};
use crate::sandbox::policy::ToolGrant;

pub use journal::{Observer, RunEvent, RunJournal};
pub use stop::{StopReason, StopSignal};
pub use workspace::Workspace;

/// Everything a run's guest instances share: identity, grants, workspace,
/// journal and stop signal.
pub struct RunContext {
    /// `<workflow>-<short id>`.
    pub run_id: String,
    /// The workflow's validated metadata.
    pub info: WorkflowInfo,
    /// sha256 of the component the run is pinned to.
    pub digest: String,
    /// The engine (for new activity stores).
    pub runtime: Arc<Runtime>,
    /// The linked component (for new activity instances).
    pub pre: WorkflowPre<GuestState>,
    /// Tools granted to this run.
    pub tools: ToolGrant,
    /// How tool processes are confined.
    pub sandbox: Arc<crate::sandbox::detect::Sandbox>,
    /// The run's private copy of the target.
    pub workspace: Workspace,
    /// HOME (and TMPDIR below it) for the run's tools, outside the workspace.
    pub tool_home: PathBuf,
    /// Where artifacts are stored.
    pub artifacts_dir: PathBuf,
    /// Outputs collected so far.
    pub journal: Arc<RunJournal>,
    /// Cancellation and deadline.
    pub stop: StopSignal,
    /// Guest limits.
    pub limits: GuestLimits,
    /// Workflow time.
    pub clock: WorkflowClock,
    /// Where workflow code's durable steps go. `None`: they run here and
    /// now (embedded engine, activity code). `Some`: each one is handed to
    /// the distributed engine's driver and becomes a Temporal activity or
    /// timer.
    pub steps: Option<Arc<crate::distributed::steps::Steps>>,
    /// Distributed steps: the blob store that keeps the run's artifacts
    /// (`runs/<run-id>/artifacts/<name>`), written as they are stored so a
    /// retried step on a restarted host can read them back.
    pub artifact_blobs: Option<Arc<dyn crate::storage::BlobStore>>,
}

impl RunContext {
    /// The step channel, when `kind` is workflow code of a distributed run.
    pub fn steps_for(
        &self,
        kind: crate::runtime::state::CodeKind,
    ) -> Option<&Arc<crate::distributed::steps::Steps>> {
        match kind {
            crate::runtime::state::CodeKind::Workflow => self.steps.as_ref(),
            _ => None,
        }
    }
}

impl crate::runtime::bindings::toolhost::workflow::types::Host for GuestState {}
