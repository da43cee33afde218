//! The activities a host executes for distributed runs: `toolhost.prepare`
//! (pin the version, fetch and unpack the target into the run's workspace),
//! the host steps of workflow code (tools, workspace, activity exports,
//! artifacts) and `toolhost.publish` (results to the blob store). Each
//! builds the same [`RunContext`] the embedded engine uses, over the run's
//! workspace on this host, and calls the same capability code, so policy
//! (tool grants, sandbox, path checks, quotas) is enforced identically.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use super::wire::{self, Bytes, HostStep, Outcome, WireDirEntry};
use super::worker::HostShared;
use super::{PrepareInput, PrepareOutput, PublishInput, StepInput, StepOutput};
use crate::capabilities::{RunContext, RunJournal, StopSignal, Workspace};
use crate::engine::record::RunRecord;
use crate::runtime::bindings::toolhost::workflow::tools::RunOptions;
use crate::runtime::clocks::WorkflowClock;
use crate::sandbox::policy::ToolGrant;

/// Why an activity failed, and whether Temporal should retry it.
#[derive(Debug)]
pub struct ActivityError {
    pub message: String,
    pub retryable: bool,
}

impl ActivityError {
    fn fatal(message: impl Into<String>) -> Self {
        ActivityError {
            message: message.into(),
            retryable: false,
        }
    }
    fn retry(e: impl std::fmt::Display) -> Self {
        ActivityError {
            message: e.to_string(),
            retryable: true,
        }
    }
    /// A component that cannot load: fatal when it never will here,
    /// retried when the blob store may come back.
    fn component(e: anyhow::Error) -> Self {
        ActivityError {
            retryable: !e.is::<super::components::Unloadable>(),
            message: format!("{e:#}"),
        }
    }
}

/// Marker written once a run's workspace is complete.
const PREPARED: &str = ".prepared.json";

fn scratch(shared: &HostShared, run_id: &str) -> Result<PathBuf, ActivityError> {
    crate::engine::check_run_id(run_id).map_err(ActivityError::fatal)?;
    Ok(shared.config().work_dir().join(run_id))
}

/// `toolhost.prepare`.
pub async fn prepare(
    shared: &HostShared,
    input: PrepareInput,
) -> Result<PrepareOutput, ActivityError> {
    let digest = match input.digest {
        Some(d) => d,
        None => shared
            .components
            .toolbox()
            .registry()
            .get(&input.workflow)
            .map(|wf| wf.digest.clone())
            .ok_or_else(|| {
                ActivityError::fatal(format!(
                    "host {} (vertical `{}`) has no workflow named `{}` in its toolbox; available: {} (`toolhost workflows` lists every vertical's workflows and queues)",
                    shared.host_id,
                    shared.vertical,
                    input.workflow,
                    shared.components.toolbox().registry().names()
                ))
            })?,
    };
    // The pinned version must be loadable here (and, through the blob
    // store, on any host that replays the run).
    // (A component of another vertical does not load here.)
    shared
        .components
        .get(&digest)
        .await
        .map_err(ActivityError::component)?;

    let run_blobs = super::run_store(&shared.blobs, input.tenant.as_deref())
        .map_err(|e| ActivityError::fatal(format!("{e:#}")))?;
    let dir = scratch(shared, &input.run_id)?;
    let marker = dir.join(PREPARED);
    let (files, bytes) = match std::fs::read(&marker)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    {
        Some(done) => (
            done["files"].as_u64().unwrap_or(0),
            done["bytes"].as_u64().unwrap_or(0),
        ),
        None => {
            // Fresh, private, and checked again (nothing planted above it).
            let dir =
                crate::engine::workdir::create_scratch(&shared.config().work_dir(), &input.run_id)
                    .map_err(|e| ActivityError::fatal(e.to_string()))?;
            let workspace = dir.join("workspace");
            let (files, bytes) = match &input.target {
                Some(sha) => {
                    let lease = shared
                        .targets
                        .checkout(sha, run_blobs.as_ref())
                        .await
                        .map_err(|e| ActivityError::retry(format!("{e:#}")))?;
                    let src = lease.path().to_path_buf();
                    let dst = workspace.clone();
                    let report = tokio::task::spawn_blocking(move || {
                        crate::engine::target::copy_target(&src, &dst)
                    })
                    .await
                    .map_err(ActivityError::retry)?
                    .map_err(|e| ActivityError::retry(format!("{e:#}")))?;
                    (report.files, report.bytes)
                }
                None => {
                    std::fs::create_dir_all(&workspace).map_err(ActivityError::retry)?;
                    (0, 0)
                }
            };
            std::fs::write(
                &marker,
                serde_json::to_vec(&json!({"files": files, "bytes": bytes, "digest": digest}))
                    .unwrap_or_default(),
            )
            .map_err(ActivityError::retry)?;
            (files, bytes)
        }
    };
    Ok(PrepareOutput {
        host_queue: shared
            .temporal
            .host_queue(&shared.vertical, &shared.host_id),
        host: shared.host_id.clone(),
        digest,
        files,
        bytes,
    })
}

/// Builds the context of a step of `run_id` on this host.
async fn context(
    shared: &HostShared,
    run_id: &str,
    digest: &str,
    stop: StopSignal,
) -> Result<Arc<RunContext>, ActivityError> {
    let dir = scratch(shared, run_id)?;
    if !dir.join(PREPARED).exists() {
        return Err(ActivityError::fatal(format!(
            "host lost: host {} does not hold the workspace of run {run_id} (its work directory was removed or changed)",
            shared.host_id
        )));
    }
    let wf = shared
        .components
        .get(digest)
        .await
        .map_err(ActivityError::component)?;
    let config = shared.config();
    let journal = Arc::new(RunJournal::capture(
        config.limits.output_quota_mib,
        config.limits.max_findings,
        None,
    ));
    journal.set_redactor(crate::capabilities::redact::Redactor::for_run(
        &dir.join("workspace"),
        &dir.join("home"),
        config,
    ));
    Ok(Arc::new(RunContext {
        run_id: run_id.to_string(),
        info: wf.info.clone(),
        digest: wf.digest.clone(),
        runtime: shared.components.toolbox().runtime().clone(),
        pre: wf.pre.clone(),
        tools: ToolGrant::for_workflow(config, &wf.info),
        sandbox: shared.sandbox.clone(),
        workspace: Workspace::open(&dir.join("workspace"), &config.limits)
            .map_err(ActivityError::retry)?,
        tool_home: dir.join("home"),
        artifacts_dir: dir.join("artifacts"),
        journal,
        stop,
        limits: config.limits.clone(),
        clock: WorkflowClock::new(run_id, 0),
        steps: None,
        artifact_blobs: Some(shared.blobs.clone()),
    }))
}

/// Where a running step's journal is published for its heartbeats.
pub type LiveJournal = Arc<std::sync::OnceLock<Arc<RunJournal>>>;

/// A host step.
pub async fn step(
    shared: &HostShared,
    input: StepInput,
    cancel: tokio_util::sync::CancellationToken,
    live: &LiveJournal,
) -> Result<StepOutput, ActivityError> {
    let ctx = context(shared, &input.run_id, &input.digest, StopSignal::new()).await?;
    let _ = live.set(ctx.journal.clone());
    // Cancellation (from the run, through the heartbeat) stops the step:
    // a running tool's process group is killed.
    let watcher = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            ctx.stop.stop(crate::capabilities::StopReason::Cancelled);
        })
    };
    let result = run_step(shared, &ctx, input).await;
    watcher.abort();
    result
}

async fn run_step(
    shared: &HostShared,
    ctx: &Arc<RunContext>,
    input: StepInput,
) -> Result<StepOutput, ActivityError> {
    let blobs = shared.blobs.as_ref();
    let enc = |e: anyhow::Error| ActivityError::retry(format!("{e:#}"));
    let result = match input.step {
        HostStep::Tool {
            tool,
            args,
            cwd,
            stdin,
            timeout_ms,
            env,
        } => {
            let stdin = match stdin {
                Some(b) => Some(b.resolve(blobs).await.map_err(enc)?),
                None => None,
            };
            shared.metrics.tool_invoked(&tool);
            let out = crate::capabilities::tools::run_tool(
                ctx,
                &tool,
                args,
                RunOptions {
                    cwd,
                    stdin,
                    timeout_ms,
                    env,
                },
            )
            .await;
            if ctx.stop.reason().is_some() {
                return Err(ActivityError::fatal("cancelled"));
            }
            wire::encode_tool(out, blobs).await.map_err(enc)?
        }
        HostStep::Read { path } => match ctx.workspace.read(&path) {
            Ok(bytes) => {
                let b = Bytes::offload(bytes, blobs).await.map_err(enc)?;
                wire::encode_fs(Ok(b)).await.map_err(enc)?
            }
            Err(e) => wire::encode_fs::<()>(Err(e)).await.map_err(enc)?,
        },
        HostStep::Write { path, contents } => {
            let bytes = contents.resolve(blobs).await.map_err(enc)?;
            wire::encode_fs(ctx.workspace.write(&path, &bytes))
                .await
                .map_err(enc)?
        }
        HostStep::ListDir { path, recursive } => {
            let listed = ctx
                .workspace
                .list(&path, recursive)
                .map(|entries| entries.iter().map(WireDirEntry::from).collect::<Vec<_>>());
            wire::encode_fs(listed).await.map_err(enc)?
        }
        HostStep::Exists { path } => wire::encode_fs(ctx.workspace.exists(&path))
            .await
            .map_err(enc)?,
        HostStep::Activity { name, input: arg } => {
            let outcome: Outcome<String, String> =
                match crate::capabilities::activities::call_activity(ctx.clone(), &name, &arg).await
                {
                    Ok(r) => r.into(),
                    Err(trap) => Outcome::Err(format!("{trap:#}")),
                };
            serde_json::to_value(outcome).map_err(|e| enc(e.into()))?
        }
        HostStep::Artifact {
            name,
            contents,
            path,
        } => {
            let bytes = match (contents, path) {
                (Some(b), _) => Ok(b.resolve(blobs).await.map_err(enc)?),
                (None, Some(p)) => ctx.workspace.read(&p).map_err(|e| {
                    format!(
                        "cannot read `{p}`: {}",
                        crate::capabilities::workspace::describe(&e)
                    )
                }),
                (None, None) => Err("no artifact contents".to_string()),
            };
            let stored = match bytes {
                Ok(bytes) => {
                    match crate::capabilities::artifacts::store_artifact(ctx, &name, &bytes) {
                        Ok(()) => {
                            let key = RunRecord::key(&input.run_id, &format!("artifacts/{name}"));
                            super::run_store(&shared.blobs, input.tenant.as_deref())
                                .map_err(enc)?
                                .put(&key, bytes)
                                .await
                                .map_err(|e| enc(e.into()))?;
                            ctx.journal.audit(json!({"level": "info", "source": "host", "artifact": name, "message": format!("artifact `{name}` stored at {key}")}));
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            serde_json::to_value(Outcome::from(stored)).map_err(|e| enc(e.into()))?
        }
    };
    Ok(StepOutput {
        result,
        log: ctx.journal.take_lines(),
        findings: ctx.journal.findings(),
        progress: ctx.journal.progress(),
    })
}

/// `toolhost.publish`: writes the run's results under `runs/<run-id>/` and
/// removes its workspace from this host.
pub async fn publish(shared: &HostShared, input: PublishInput) -> Result<Value, ActivityError> {
    let dir = scratch(shared, &input.run_id)?;
    let blobs = shared.blobs.as_ref();
    let record_bytes = input
        .record
        .resolve(blobs)
        .await
        .map_err(|e| ActivityError::retry(format!("{e:#}")))?;
    let record: RunRecord = serde_json::from_slice(&record_bytes)
        .map_err(|e| ActivityError::fatal(format!("malformed run record: {e}")))?;
    let log = input
        .log
        .resolve(blobs)
        .await
        .map_err(|e| ActivityError::retry(format!("{e:#}")))?;
    let run_blobs = super::run_store(&shared.blobs, input.tenant.as_deref())
        .map_err(|e| ActivityError::fatal(format!("{e:#}")))?;
    run_blobs
        .put(&RunRecord::key(&record.run_id, "log.jsonl"), log)
        .await
        .map_err(ActivityError::retry)?;
    record
        .save(run_blobs.as_ref())
        .await
        .map_err(ActivityError::retry)?;
    remove_scratch(&dir);
    Ok(json!({"result": RunRecord::key(&record.run_id, "result.json")}))
}

fn remove_scratch(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove `{}`: {e}", dir.display());
    }
}

/// Removes the workspaces this host prepared for runs that are over: runs
/// that finished on another host after an eviction or a restart (their
/// `publish` ran there), failed, were cancelled or terminated while this
/// host was down. Returns how many it removed. A run Temporal cannot be
/// asked about keeps its workspace until the next sweep.
pub async fn sweep_workspaces(shared: &HostShared, client: &super::client::RunClient) -> usize {
    let work = shared.config().work_dir();
    let Ok(entries) = std::fs::read_dir(&work) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        // Only distributed workspaces carry the marker; embedded runs
        // clean up after themselves.
        if !dir.join(PREPARED).is_file() {
            continue;
        }
        let Some(run_id) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        match client.is_over(&run_id).await {
            Ok(true) => {
                tracing::info!(run = %run_id, "removing the workspace of a run that is over");
                remove_scratch(&dir);
                removed += 1;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(run = %run_id, "workspace kept: {e:#}");
            }
        }
    }
    removed
}
