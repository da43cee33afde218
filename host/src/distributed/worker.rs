//! A host as a Temporal worker. It runs two core workers on one
//! connection: one on `toolhost-<vertical>` for workflow tasks (every
//! toolbox workflow of the vertical, by name) and the local activities
//! `toolhost.prepare` and `toolhost.publish`, and one on the host's own
//! queue for the steps of runs whose workspace it holds. Shutdown is graceful: polling stops, in-flight steps get a grace
//! period to finish, and core hands back what remains.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;
use temporalio_client::{Connection, ConnectionOptions};
use temporalio_common::protos::coresdk::activity_result::ActivityExecutionResult;
use temporalio_common::protos::coresdk::activity_task::{self, activity_task::Variant};
use temporalio_common::protos::coresdk::{
    ActivityHeartbeat, ActivityTaskCompletion, AsJsonPayloadExt, FromJsonPayloadExt,
};
use temporalio_common::protos::temporal::api::failure::v1::Failure;
use temporalio_common::worker::WorkerTaskTypes;
use temporalio_sdk_core::{
    CoreRuntime, PollError, RuntimeOptions, Worker, WorkerConfig, WorkerVersioningStrategy,
    WorkflowErrorType, init_worker,
};
use tokio_util::sync::CancellationToken;

use super::TemporalConfig;
use super::components::Components;
use super::metrics::{Gauges, Metrics};
use super::workflow::Driver;
use crate::config::HostConfig;
use crate::sandbox::detect::Sandbox;
use crate::storage::BlobStore;
use crate::storage::target_cache::TargetCache;

/// What a host's workflow driver and activities share.
pub struct HostShared {
    /// The vertical this host serves.
    pub vertical: String,
    /// This host's id (names its task queue).
    pub host_id: String,
    /// Temporal settings.
    pub temporal: TemporalConfig,
    /// Components by digest.
    pub components: Arc<Components>,
    /// Targets, results, components.
    pub blobs: Arc<dyn BlobStore>,
    /// Unpacked targets.
    pub targets: TargetCache,
    /// Tool confinement.
    pub sandbox: Arc<Sandbox>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// An empty directory (workflow code has no workspace).
    pub empty_dir: PathBuf,
    /// Steps executing now.
    pub in_flight: AtomicUsize,
}

impl HostShared {
    /// The host configuration.
    pub fn config(&self) -> &HostConfig {
        self.components.toolbox().config()
    }

    /// Gauges for `/metrics`.
    pub fn gauges(&self, cached_runs: usize) -> Gauges {
        Gauges {
            target_cache_bytes: self.targets.size_bytes(),
            target_cache_entries: self.targets.len(),
            registry_workflows: self.components.toolbox().registry().workflows().count(),
            cached_runs,
            steps_in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }
}

/// This host's id: configured, or the hostname plus a hash of the work
/// directory (stable across restarts, distinct for two hosts on a machine).
pub fn host_id(config: &HostConfig, temporal: &TemporalConfig) -> String {
    if let Some(id) = &temporal.host_id {
        return id.clone();
    }
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let hash = crate::toolbox::digest(config.work_dir().display().to_string().as_bytes());
    let clean: String = hostname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{clean}-{}", &hash[..8])
}

/// Connects to Temporal, retrying until it answers or `give_up` fires.
pub async fn connect(
    temporal: &TemporalConfig,
    identity: &str,
    give_up: &CancellationToken,
) -> anyhow::Result<Connection> {
    let url = temporalio_client::Url::parse(&temporal.address).with_context(|| {
        format!(
            "temporal.address `{}` is not a URL; write it like `http://127.0.0.1:7233`",
            temporal.address
        )
    })?;
    let tls = match &temporal.tls {
        None => None,
        Some(t) => {
            let read = |p: &Option<PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
                p.as_ref()
                    .map(|p| {
                        std::fs::read(p).with_context(|| format!("cannot read `{}`", p.display()))
                    })
                    .transpose()
            };
            let client = match (read(&t.client_cert)?, read(&t.client_key)?) {
                (Some(client_cert), Some(client_private_key)) => Some(
                    temporalio_client::ClientTlsOptions::builder()
                        .client_cert(client_cert)
                        .client_private_key(client_private_key)
                        .build(),
                ),
                (None, None) => None,
                _ => bail!("temporal.tls: set both client_cert and client_key, or neither"),
            };
            let mut tls = temporalio_client::TlsOptions::default();
            tls.server_root_ca_cert = read(&t.server_ca)?;
            tls.domain = t.domain.clone();
            tls.client_tls_options = client;
            Some(tls)
        }
    };
    let mut delay = Duration::from_millis(250);
    loop {
        let options = ConnectionOptions::new(url.clone())
            .identity(identity.to_string())
            .maybe_tls_options(tls.clone())
            .build();
        match Connection::connect(options).await {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(
                    "Temporal at {} is not reachable ({e}); retrying in {} ms",
                    temporal.address,
                    delay.as_millis()
                );
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = give_up.cancelled() => bail!("gave up connecting to Temporal at {}", temporal.address),
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

fn worker_config(
    shared: &HostShared,
    task_queue: String,
    workflows: bool,
) -> anyhow::Result<WorkerConfig> {
    WorkerConfig::builder()
        .namespace(shared.temporal.namespace.clone())
        .task_queue(task_queue)
        .client_identity_override(format!("toolhost@{}", shared.host_id))
        .versioning_strategy(WorkerVersioningStrategy::None {
            build_id: format!("toolhost-{}", env!("CARGO_PKG_VERSION")),
        })
        // The vertical's queue carries workflow tasks, and their local
        // activities run here; steps come through the host's own queue.
        .task_types(WorkerTaskTypes {
            enable_workflows: workflows,
            enable_local_activities: workflows,
            enable_remote_activities: !workflows,
            enable_nexus: false,
        })
        .max_cached_workflows(if workflows {
            shared.temporal.max_cached_workflows
        } else {
            0
        })
        .max_outstanding_activities(shared.temporal.max_concurrent_steps)
        // Cancellation reaches a running step through its heartbeats:
        // send them often so a cancel kills the tool within seconds.
        .max_heartbeat_throttle_interval(Duration::from_secs(1))
        .graceful_shutdown_period(Duration::from_secs(10))
        // A guest that changes its calls on replay fails its run with
        // the nondeterminism error instead of retrying forever.
        .workflow_failure_errors([WorkflowErrorType::Nondeterminism].into_iter().collect())
        .build()
        .map_err(|e| anyhow::anyhow!("invalid worker configuration: {e}"))
}

/// A running distributed host.
pub struct DistributedHost {
    /// Shared state (for `/metrics`).
    pub shared: Arc<HostShared>,
    /// The workflow driver.
    pub driver: Arc<Driver>,
    workers: Vec<Arc<Worker>>,
    loops: Vec<tokio::task::JoinHandle<()>>,
    sweeper: tokio::task::JoinHandle<()>,
    _runtime: CoreRuntime,
}

impl DistributedHost {
    /// Connects and starts polling the vertical's queue and this host's.
    pub async fn start(
        shared: Arc<HostShared>,
        give_up: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let runtime = CoreRuntime::new_assume_tokio(
            RuntimeOptions::builder()
                .build()
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        )?;
        let identity = format!("toolhost@{}", shared.host_id);
        let connection = connect(&shared.temporal, &identity, give_up).await?;
        let vertical_queue = shared.temporal.vertical_queue(&shared.vertical);
        let host_queue = shared
            .temporal
            .host_queue(&shared.vertical, &shared.host_id);
        let wf_worker = Arc::new(init_worker(
            &runtime,
            worker_config(&shared, vertical_queue.clone(), true)?,
            connection.clone(),
        )?);
        wf_worker.validate().await.map_err(|e| {
            anyhow::anyhow!(
                "Temporal namespace `{}` at {} is not usable: {e}",
                shared.temporal.namespace,
                shared.temporal.address
            )
        })?;
        let host_worker = Arc::new(init_worker(
            &runtime,
            worker_config(&shared, host_queue.clone(), false)?,
            connection.clone(),
        )?);
        let sweeper = tokio::spawn(sweep_loop(shared.clone(), connection));
        let driver = Driver::new(shared.clone());
        let loops = vec![
            tokio::spawn(workflow_loop(wf_worker.clone(), driver.clone())),
            tokio::spawn(activity_loop(wf_worker.clone(), shared.clone())),
            tokio::spawn(activity_loop(host_worker.clone(), shared.clone())),
        ];
        tracing::info!(
            host = %shared.host_id,
            "polling Temporal task queues `{vertical_queue}` (workflows) and `{host_queue}` (this host's steps) at {} namespace {}",
            shared.temporal.address,
            shared.temporal.namespace
        );
        Ok(DistributedHost {
            shared,
            driver,
            workers: vec![wf_worker, host_worker],
            loops,
            sweeper,
            _runtime: runtime,
        })
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        self.shared
            .metrics
            .render(&self.shared.gauges(self.driver.cached()))
    }

    /// Stops polling, lets in-flight steps finish (or hands them back after
    /// the grace period) and shuts the workers down.
    pub async fn shutdown(self) {
        self.sweeper.abort();
        for w in &self.workers {
            w.initiate_shutdown();
        }
        for l in self.loops {
            let _ = l.await;
        }
        for w in &self.workers {
            w.shutdown().await;
        }
    }
}

/// How often a host looks for workspaces of runs that are over.
const SWEEP_EVERY: Duration = Duration::from_secs(5 * 60);

/// Sweeps leftover workspaces at start, then every [`SWEEP_EVERY`].
async fn sweep_loop(shared: Arc<HostShared>, connection: Connection) {
    let client = super::client::RunClient::over(connection, &shared.temporal, shared.blobs.clone());
    loop {
        let removed = super::activities::sweep_workspaces(&shared, &client).await;
        if removed > 0 {
            tracing::info!(removed, "removed the workspaces of runs that are over");
        }
        tokio::time::sleep(SWEEP_EVERY).await;
    }
}

async fn workflow_loop(worker: Arc<Worker>, driver: Arc<Driver>) {
    loop {
        match worker.poll_workflow_activation().await {
            Ok(act) => {
                let worker = worker.clone();
                let driver = driver.clone();
                tokio::spawn(async move {
                    let completion = driver.activate(act).await;
                    if let Err(e) = worker.complete_workflow_activation(completion).await {
                        tracing::warn!("cannot complete a workflow activation: {e}");
                    }
                });
            }
            Err(PollError::ShutDown) => break,
            Err(e) => {
                tracing::warn!("workflow poll failed: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn activity_loop(worker: Arc<Worker>, shared: Arc<HostShared>) {
    let running: Arc<Mutex<HashMap<Vec<u8>, CancellationToken>>> = Arc::default();
    loop {
        match worker.poll_activity_task().await {
            Ok(task) => match task.variant {
                Some(Variant::Start(start)) => {
                    let cancel = CancellationToken::new();
                    running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(task.task_token.clone(), cancel.clone());
                    let worker = worker.clone();
                    let shared = shared.clone();
                    let running = running.clone();
                    tokio::spawn(async move {
                        let token = task.task_token;
                        let result = execute(&worker, &shared, token.clone(), start, cancel).await;
                        running
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&token);
                        if let Err(e) = worker
                            .complete_activity_task(ActivityTaskCompletion {
                                task_token: token,
                                result: Some(result),
                            })
                            .await
                        {
                            tracing::warn!("cannot complete a step: {e}");
                        }
                    });
                }
                Some(Variant::Cancel(_)) => {
                    if let Some(c) = running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&task.task_token)
                    {
                        c.cancel();
                    }
                }
                None => {}
            },
            Err(PollError::ShutDown) => break,
            Err(e) => {
                tracing::warn!("activity poll failed: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Runs one activity, heartbeating while it runs.
async fn execute(
    worker: &Arc<Worker>,
    shared: &Arc<HostShared>,
    token: Vec<u8>,
    start: activity_task::Start,
    cancel: CancellationToken,
) -> ActivityExecutionResult {
    let kind = start.activity_type.clone();
    let started = Instant::now();
    shared.in_flight.fetch_add(1, Ordering::Relaxed);
    // Local activities (`prepare`, `publish`) have no heartbeat: core
    // keeps their workflow task alive instead.
    // The step's journal, once it has one: its live progress goes out
    // with every heartbeat.
    let live: super::activities::LiveJournal = Arc::default();
    let heartbeat = (!start.is_local).then(|| {
        let worker = worker.clone();
        let token = token.clone();
        let kind = kind.clone();
        let live = live.clone();
        let stale_after = Duration::from_secs(shared.temporal.heartbeat_timeout_secs.max(1));
        let at_start = start
            .input
            .first()
            .and_then(|p| serde_json::Value::from_json_payload(p).ok())
            .and_then(|v| v.get("progress").cloned())
            .unwrap_or(serde_json::Value::Null);
        tokio::spawn(async move {
            // The first beat after one period: most steps end sooner and
            // need none.
            let period = Duration::from_millis(500);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            let mut freshness = Freshness::default();
            loop {
                tick.tick().await;
                let progress = live.get().and_then(|j| j.progress());
                // A step that reports progress must keep reporting it: one
                // whose progress stands still for a heartbeat timeout is
                // stuck, and the missing beats let Temporal retry it.
                if !freshness.alive(progress.as_ref(), stale_after) {
                    continue;
                }
                let details = json!({
                    "step": kind,
                    "elapsed_ms": started.elapsed().as_millis() as u64,
                    "progress": progress.unwrap_or_else(|| at_start.clone()),
                });
                worker.record_activity_heartbeat(ActivityHeartbeat {
                    task_token: token.clone(),
                    details: details.as_json_payload().into_iter().collect(),
                });
            }
        })
    });
    let input = start.input.first();
    let parse = |what: &str| -> Result<serde_json::Value, super::activities::ActivityError> {
        input
            .and_then(|p| serde_json::Value::from_json_payload(p).ok())
            .ok_or_else(|| super::activities::ActivityError {
                message: format!("{what}: missing or non-JSON input"),
                retryable: false,
            })
    };
    fn typed<T: serde::de::DeserializeOwned>(
        kind: &str,
        v: serde_json::Value,
    ) -> Result<T, super::activities::ActivityError> {
        serde_json::from_value(v).map_err(|e| super::activities::ActivityError {
            message: format!("malformed input of `{kind}`: {e}"),
            retryable: false,
        })
    }
    let result: Result<serde_json::Value, super::activities::ActivityError> = async {
        let v = parse(&kind)?;
        match kind.as_str() {
            super::PREPARE => super::activities::prepare(shared, typed(&kind, v)?)
                .await
                .map(|o| serde_json::to_value(o).unwrap_or_default()),
            super::PUBLISH => super::activities::publish(shared, typed(&kind, v)?).await,
            _ => super::activities::step(shared, typed(&kind, v)?, cancel.clone(), &live)
                .await
                .map(|o| serde_json::to_value(o).unwrap_or_default()),
        }
    }
    .await;
    if let Some(h) = heartbeat {
        h.abort();
    }
    shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    shared
        .metrics
        .step(&kind, started.elapsed(), result.is_ok());
    // A cancelled step that still produced an output (activity code whose
    // findings so far are in its log) completes with it: the run waits
    // for it and keeps those findings.
    if cancel.is_cancelled() && result.is_err() {
        return ActivityExecutionResult::cancel_from_details(None);
    }
    match result {
        Ok(v) => match v.as_json_payload() {
            Ok(p) => ActivityExecutionResult::ok(p),
            Err(e) => ActivityExecutionResult::fail(Failure::application_failure(
                format!("cannot encode the result: {e}"),
                true,
            )),
        },
        Err(e) => {
            if !e.retryable {
                tracing::warn!(step = %kind, "step failed: {}", e.message);
            }
            ActivityExecutionResult::fail(Failure::application_failure(e.message, !e.retryable))
        }
    }
}

/// Whether a step's progress still moves.
#[derive(Default)]
struct Freshness {
    last: Option<serde_json::Value>,
    changed: Option<Instant>,
}

impl Freshness {
    /// Records the latest `progress`; false once a step that reported
    /// progress has not changed it for `stale_after`. Steps that never
    /// report progress are alive as long as they run.
    fn alive(&mut self, progress: Option<&serde_json::Value>, stale_after: Duration) -> bool {
        let Some(p) = progress else {
            return true;
        };
        if self.last.as_ref() != Some(p) {
            self.last = Some(p.clone());
            self.changed = Some(Instant::now());
        }
        self.changed.is_none_or(|t| t.elapsed() < stale_after)
    }
}

#[cfg(test)]
mod freshness_tests {
    use super::*;

    #[test]
    fn progress_that_stands_still_stops_the_beats() {
        let mut f = Freshness::default();
        let stale = Duration::from_millis(50);
        assert!(
            f.alive(None, stale),
            "no progress reported: alive while it runs"
        );
        assert!(f.alive(Some(&json!({"execs": 1})), stale));
        std::thread::sleep(Duration::from_millis(80));
        assert!(
            !f.alive(Some(&json!({"execs": 1})), stale),
            "unchanged for longer than the timeout"
        );
        assert!(f.alive(Some(&json!({"execs": 2})), stale), "moving again");
    }
}
