//! The distributed engine: hosts are Temporal workers, targets and results
//! live in a blob store (S3), and every durable step of a run is recorded in
//! Temporal's history, so a host can die at any moment without losing or
//! repeating completed work.
//!
//! * A toolbox workflow is a Temporal **workflow type of the same name** on
//!   the task queue `toolhost-<vertical>`. Types are plain strings in
//!   `temporalio-sdk-core`, so a workflow added to the toolbox is startable
//!   at once.
//! * The host drives the guest the way a language SDK drives workflow code
//!   ([`workflow`]): activation jobs in, commands out, one suspended guest
//!   call per pending step ([`steps`]).
//! * The first step, `toolhost.prepare`, runs on any host of the vertical:
//!   it pins the component digest (unless the input already does), fetches
//!   and unpacks the target, and answers with a task queue unique to that
//!   host. Every later host step (tools, workspace, activity exports,
//!   artifacts) and the final `toolhost.publish` go to that queue
//!   ([`activities`]).
//! * Results go to `runs/<run-id>/` in the blob store; the workflow result
//!   holds the summary and the keys.

pub mod activities;
pub mod client;
pub mod components;
pub mod metrics;
pub mod steps;
pub mod wire;
pub mod worker;
pub mod workflow;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `[temporal]` in the host configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemporalConfig {
    /// Frontend address, e.g. `http://127.0.0.1:7233`.
    #[serde(default = "default_address")]
    pub address: String,
    /// Namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Task queues are `<prefix>-<vertical>` (and `<prefix>-<vertical>-host-<id>`);
    /// several deployments can share one namespace with distinct prefixes.
    #[serde(default = "default_prefix")]
    pub task_queue_prefix: String,
    /// A name for this host, unique among the hosts of its vertical and
    /// stable across restarts (it names the host's own task queue, where
    /// the steps of runs whose workspace it holds are sent). Default: the
    /// machine's hostname and a hash of the work directory.
    pub host_id: Option<String>,
    /// TLS to the frontend (omit for plain text).
    pub tls: Option<TlsConfig>,
    /// Tool steps that do not heartbeat for this long are retried.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_timeout_secs: u64,
    /// Workflow instances kept in memory between activations.
    #[serde(default = "default_cached")]
    pub max_cached_workflows: usize,
    /// Steps (activities) executed at once by this host.
    #[serde(default = "default_activities")]
    pub max_concurrent_steps: usize,
    /// How long workflow code may compute between two durable steps.
    #[serde(default = "default_budget")]
    pub workflow_task_budget_secs: u64,
}

/// TLS settings for the Temporal connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA that signed the server certificate.
    pub server_ca: Option<PathBuf>,
    /// Server name to verify (default: from the address).
    pub domain: Option<String>,
    /// PEM client certificate (mTLS).
    pub client_cert: Option<PathBuf>,
    /// PEM client key (mTLS).
    pub client_key: Option<PathBuf>,
}

fn default_address() -> String {
    "http://127.0.0.1:7233".into()
}
fn default_prefix() -> String {
    "toolhost".into()
}
fn default_namespace() -> String {
    "default".into()
}
fn default_heartbeat() -> u64 {
    10
}
fn default_cached() -> usize {
    500
}
fn default_activities() -> usize {
    8
}
fn default_budget() -> u64 {
    8
}

impl Default for TemporalConfig {
    fn default() -> Self {
        TemporalConfig {
            address: default_address(),
            namespace: default_namespace(),
            task_queue_prefix: default_prefix(),
            host_id: None,
            tls: None,
            heartbeat_timeout_secs: default_heartbeat(),
            max_cached_workflows: default_cached(),
            max_concurrent_steps: default_activities(),
            workflow_task_budget_secs: default_budget(),
        }
    }
}

impl TemporalConfig {
    /// The task queue of a vertical (`toolhost-<vertical>` by default).
    pub fn vertical_queue(&self, vertical: &str) -> String {
        format!("{}-{vertical}", self.task_queue_prefix)
    }

    /// The task queue of one host.
    pub fn host_queue(&self, vertical: &str, host_id: &str) -> String {
        format!("{}-{vertical}-host-{host_id}", self.task_queue_prefix)
    }
}

/// A run's input (the first workflow argument, JSON). This is what
/// `temporal workflow start --input` must pass; every field may be omitted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowInput {
    /// Workflow parameters, validated against the workflow's schema.
    #[serde(default)]
    pub params: Value,
    /// sha256 of the packed target (`targets/<sha256>.tar.zst` in the blob
    /// store); none: the run gets an empty workspace.
    #[serde(default)]
    pub target: Option<String>,
    /// Pins the component version (sha256); none: the version the first
    /// host to prepare the run has, recorded in history from then on.
    #[serde(default)]
    pub digest: Option<String>,
    /// Where the target came from, for the record.
    #[serde(default)]
    pub target_label: Option<String>,
    /// The API tenant the run belongs to: its target is read from, and its
    /// results written to, `tenants/<tenant>/` in the blob store. None:
    /// the top of the store (runs started directly on Temporal).
    #[serde(default)]
    pub tenant: Option<String>,
    /// A timeout shorter than the workflow's own, in seconds.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// The blob store of a run of `tenant` (see [`WorkflowInput::tenant`]).
pub fn run_store(
    blobs: &std::sync::Arc<dyn crate::storage::BlobStore>,
    tenant: Option<&str>,
) -> anyhow::Result<std::sync::Arc<dyn crate::storage::BlobStore>> {
    match tenant {
        None => Ok(blobs.clone()),
        Some(t) => {
            crate::serve::tokens::check_tenant(t).map_err(anyhow::Error::msg)?;
            Ok(crate::serve::remote::tenant_store(blobs, t))
        }
    }
}

/// A run's result (the workflow result, JSON): the summary and where the
/// outputs are, never the outputs themselves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkflowOutput {
    pub run_id: String,
    pub workflow: String,
    pub digest: String,
    pub status: crate::engine::RunStatus,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub summary: Value,
    pub counts: crate::engine::record::SeverityCounts,
    pub findings: usize,
    /// Blob keys: `result`, `sarif`, `log`, and `artifacts` (a list).
    pub keys: Value,
}

/// Input of `toolhost.prepare`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepareInput {
    pub run_id: String,
    pub workflow: String,
    pub digest: Option<String>,
    pub target: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
}

/// Result of `toolhost.prepare`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepareOutput {
    /// The queue of the host holding the workspace.
    pub host_queue: String,
    /// The host's id.
    pub host: String,
    /// The pinned component.
    pub digest: String,
    pub files: u64,
    pub bytes: u64,
}

/// Input of a host step activity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepInput {
    pub run_id: String,
    pub workflow: String,
    pub digest: String,
    pub step: wire::HostStep,
    /// The guest's latest progress, echoed in heartbeats.
    #[serde(default)]
    pub progress: Value,
    #[serde(default)]
    pub tenant: Option<String>,
}

/// What a host step activity returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepOutput {
    /// The step's result (see [`wire`]).
    pub result: Value,
    /// Log lines the step produced (tool audits), merged into the run log.
    #[serde(default)]
    pub log: Vec<Value>,
    /// Findings activity code reported, added to the run's.
    #[serde(default)]
    pub findings: Vec<crate::manifest::Finding>,
    /// The last progress activity code reported.
    #[serde(default)]
    pub progress: Option<Value>,
}

/// Input of `toolhost.publish`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishInput {
    pub run_id: String,
    /// The run record (`result.json`).
    pub record: wire::Bytes,
    /// The run log (`log.jsonl`).
    pub log: wire::Bytes,
    #[serde(default)]
    pub tenant: Option<String>,
}

/// Names of the engine's own activities.
pub const PREPARE: &str = "toolhost.prepare";
/// See [`PREPARE`].
pub const PUBLISH: &str = "toolhost.publish";

/// Query names a run answers.
pub const QUERY_STATUS: &str = "status";
/// See [`QUERY_STATUS`].
pub const QUERY_PROGRESS: &str = "progress";
/// See [`QUERY_STATUS`].
pub const QUERY_FINDINGS: &str = "findings";
/// See [`QUERY_STATUS`]; its argument is the first line wanted (a number).
pub const QUERY_LOG: &str = "log";
