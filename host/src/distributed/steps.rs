//! The seam between a distributed run's workflow code and its driver. A
//! durable capability call in workflow code (`tools.run`, `workspace.*`,
//! `activities.call`, `artifacts.*`, `durable.sleep-ms`) becomes a
//! [`StepCall`] sent to the driver, and the guest's host call waits for the
//! driver to resolve it from an activation (a completed activity or a fired
//! timer). Guest calls are sequential, so a guest has at most one step
//! pending: when the driver receives a call, the guest is blocked.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::wire::{self, HostStep};
use crate::runtime::bindings::toolhost::workflow::tools::{RunOptions, ToolError, ToolOutput};
use crate::runtime::bindings::toolhost::workflow::workspace::{DirEntry, FsError};
use crate::storage::BlobStore;

/// What a step is.
#[derive(Debug, Clone)]
pub enum StepKind {
    /// Work on the host holding the run's workspace (a Temporal activity).
    Host(HostStep),
    /// A durable timer.
    Sleep(Duration),
}

/// How a step ended.
#[derive(Debug, Clone)]
pub enum StepOutcome {
    /// The activity's result (its JSON), or `Null` for a timer.
    Done(Value),
    /// The activity failed for good (after its retries).
    Failed(String),
    /// The run was cancelled (or timed out) before the step completed.
    Cancelled,
}

/// A step requested by workflow code, with the channel its outcome goes to.
pub struct StepCall {
    /// The step.
    pub kind: StepKind,
    /// Receives the outcome. Dropped without an answer when the run is
    /// evicted: the guest call then traps and the instance is discarded.
    pub reply: oneshot::Sender<StepOutcome>,
}

/// The guest side of the seam, held in the run's context.
pub struct Steps {
    tx: mpsc::UnboundedSender<StepCall>,
    blobs: Arc<dyn BlobStore>,
}

/// Trap message when the instance is discarded mid-call.
const EVICTED: &str = "workflow instance evicted from the host's cache; it will be replayed";

impl Steps {
    /// A new seam; the driver keeps the receiver. `blobs` resolves step
    /// results too large to travel in Temporal payloads.
    pub fn new(blobs: Arc<dyn BlobStore>) -> (Arc<Self>, mpsc::UnboundedReceiver<StepCall>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Arc::new(Steps { tx, blobs }), rx)
    }

    async fn call(&self, kind: StepKind) -> anyhow::Result<StepOutcome> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(StepCall { kind, reply })
            .map_err(|_| anyhow::anyhow!(EVICTED))?;
        rx.await.map_err(|_| anyhow::anyhow!(EVICTED))
    }

    /// Runs a step on the workspace host and returns its result JSON, or
    /// the message of why it could not complete.
    async fn host(&self, step: HostStep) -> anyhow::Result<Result<Value, Ended>> {
        Ok(match self.call(StepKind::Host(step)).await? {
            StepOutcome::Done(v) => Ok(v),
            StepOutcome::Failed(m) => Err(Ended::Failed(m)),
            StepOutcome::Cancelled => Err(Ended::Cancelled),
        })
    }

    /// `tools.run`.
    pub async fn tool(
        &self,
        tool: String,
        args: Vec<String>,
        options: RunOptions,
    ) -> anyhow::Result<Result<ToolOutput, ToolError>> {
        let step = HostStep::Tool {
            tool,
            args,
            cwd: options.cwd,
            stdin: options.stdin.map(wire::Bytes::inline),
            timeout_ms: options.timeout_ms,
            env: options.env,
        };
        Ok(match self.host(step).await? {
            Ok(v) => wire::decode_tool(v, self.blobs.as_ref()).await,
            Err(Ended::Cancelled) => Err(ToolError::Cancelled),
            Err(Ended::Failed(m)) => Err(ToolError::Failed(m)),
        })
    }

    /// `workspace.read`.
    pub async fn read(&self, path: String) -> anyhow::Result<Result<Vec<u8>, FsError>> {
        Ok(match self.host(HostStep::Read { path }).await? {
            Ok(v) => wire::decode_read(v, self.blobs.as_ref()).await,
            Err(e) => Err(FsError::Io(e.to_string())),
        })
    }

    /// `workspace.write`.
    pub async fn write(
        &self,
        path: String,
        contents: Vec<u8>,
    ) -> anyhow::Result<Result<(), FsError>> {
        let contents = wire::Bytes::offload(contents, self.blobs.as_ref()).await?;
        Ok(match self.host(HostStep::Write { path, contents }).await? {
            Ok(v) => wire::decode_fs::<()>(v),
            Err(e) => Err(FsError::Io(e.to_string())),
        })
    }

    /// `workspace.list-dir`.
    pub async fn list_dir(
        &self,
        path: String,
        recursive: bool,
    ) -> anyhow::Result<Result<Vec<DirEntry>, FsError>> {
        Ok(
            match self.host(HostStep::ListDir { path, recursive }).await? {
                Ok(v) => wire::decode_list(v),
                Err(e) => Err(FsError::Io(e.to_string())),
            },
        )
    }

    /// `workspace.exists`.
    pub async fn exists(&self, path: String) -> anyhow::Result<Result<bool, FsError>> {
        Ok(match self.host(HostStep::Exists { path }).await? {
            Ok(v) => wire::decode_fs::<bool>(v),
            Err(e) => Err(FsError::Io(e.to_string())),
        })
    }

    /// `activities.call`.
    pub async fn activity(
        &self,
        name: String,
        input: String,
    ) -> anyhow::Result<Result<String, String>> {
        Ok(match self.host(HostStep::Activity { name, input }).await? {
            Ok(v) => wire::decode_string_result(v),
            Err(e) => Err(e.to_string()),
        })
    }

    /// `artifacts.put` (contents) and `artifacts.put-file` (workspace path).
    pub async fn artifact(
        &self,
        name: String,
        contents: Option<Vec<u8>>,
        path: Option<String>,
    ) -> anyhow::Result<Result<(), String>> {
        let contents = match contents {
            Some(c) => Some(wire::Bytes::offload(c, self.blobs.as_ref()).await?),
            None => None,
        };
        Ok(
            match self
                .host(HostStep::Artifact {
                    name,
                    contents,
                    path,
                })
                .await?
            {
                Ok(v) => wire::decode_unit_result(v),
                Err(e) => Err(e.to_string()),
            },
        )
    }

    /// `durable.sleep-ms`: a Temporal timer. Cancellation ends it early.
    pub async fn sleep(&self, duration: Duration) -> anyhow::Result<()> {
        self.call(StepKind::Sleep(duration)).await.map(|_| ())
    }
}

/// Why a host step has no result.
#[derive(Debug)]
enum Ended {
    Failed(String),
    Cancelled,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Failed(m) => write!(f, "{m}"),
            Ended::Cancelled => write!(f, "cancelled"),
        }
    }
}
