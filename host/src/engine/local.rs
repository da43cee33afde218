//! The embedded engine: runs a workflow now, in this process, against a
//! private copy of a target directory, and writes the run record. Durable
//! steps execute directly (tools run at once, sleeps sleep).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span};

use super::record::{RunRecord, RunStatus, SeverityCounts};
use super::{StartError, new_run_id, params, target};
use crate::capabilities::{Observer, RunContext, RunJournal, StopReason, StopSignal, Workspace};
use crate::config::HostConfig;
use crate::runtime::Runtime;
use crate::runtime::clocks::WorkflowClock;
use crate::runtime::state::{CodeKind, new_store};
use crate::sandbox::detect::Sandbox;
use crate::sandbox::policy::ToolGrant;
use crate::storage::{BlobStore, LocalStore};
use crate::toolbox::{Registry, Toolbox};

/// How long a stopped guest gets to unwind before it is abandoned.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A request to run one workflow.
pub struct RunRequest {
    /// Workflow name.
    pub workflow: String,
    /// Target directory (copied into the workspace).
    pub target: PathBuf,
    /// Parameters (validated against the workflow's schema).
    pub params: Value,
    /// Use this run id instead of a fresh one.
    pub run_id: Option<String>,
    /// Workflow start time to use (replaying a run); default: now.
    pub workflow_start_ms: Option<u64>,
    /// Fires to cancel the run.
    pub cancel: CancellationToken,
    /// Receives live events.
    pub observer: Option<Observer>,
    /// Keep the workspace after the run (for debugging).
    pub keep_workspace: bool,
    /// Lower the workflow's own timeout for this run, in seconds.
    pub timeout_secs: Option<u64>,
    /// How the record names the target (default: its path); the API names
    /// an uploaded target by digest, never by its path on the server.
    pub target_label: Option<String>,
}

impl RunRequest {
    /// A request to run `workflow` on `target` with `params`, everything
    /// else at its default (fresh run id, start now, no observer, not
    /// cancelled, workspace removed afterwards, the workflow's own timeout).
    pub fn new(workflow: impl Into<String>, target: impl Into<PathBuf>, params: Value) -> Self {
        RunRequest {
            workflow: workflow.into(),
            target: target.into(),
            params,
            run_id: None,
            workflow_start_ms: None,
            cancel: CancellationToken::new(),
            observer: None,
            keep_workspace: false,
            timeout_secs: None,
            target_label: None,
        }
    }
}

/// Runs workflows from a toolbox, in this process.
pub struct LocalEngine {
    runtime: Arc<Runtime>,
    toolbox: Arc<Toolbox>,
    config: HostConfig,
    store: LocalStore,
    sandbox: Arc<Sandbox>,
}

impl LocalEngine {
    /// An engine over `toolbox`, writing records under its config's
    /// `data_dir`. Fails when the tool sandbox cannot be set up as configured.
    pub fn new(toolbox: Arc<Toolbox>) -> anyhow::Result<Self> {
        let config = toolbox.config().clone();
        super::workdir::prepare(&config.work_dir())?;
        for warning in crate::sandbox::exposure::warnings(&crate::sandbox::exposure::scan_config(
            &config,
            config.config_file.as_deref(),
        )) {
            tracing::warn!("{warning}");
        }
        let store = LocalStore::new(&config.data_dir);
        let sandbox = Arc::new(Sandbox::new(&config.sandbox)?);
        Ok(LocalEngine {
            runtime: toolbox.runtime().clone(),
            toolbox,
            config,
            store,
            sandbox,
        })
    }

    /// The tool sandbox.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// The blob store holding run records.
    pub fn store(&self) -> &LocalStore {
        &self.store
    }

    /// The current registry snapshot.
    pub fn registry(&self) -> Arc<Registry> {
        self.toolbox.registry()
    }

    /// The toolbox.
    pub fn toolbox(&self) -> &Arc<Toolbox> {
        &self.toolbox
    }

    /// Validates `req.params` for `req.workflow` without running anything.
    pub fn check_params(&self, workflow: &str, params: &Value) -> Result<(), StartError> {
        let wf = self.lookup(workflow)?;
        params::check(&wf.params, workflow, params)
    }

    fn lookup(&self, name: &str) -> Result<Arc<crate::toolbox::LoadedWorkflow>, StartError> {
        let registry = self.toolbox.registry();
        registry
            .get(name)
            .ok_or_else(|| StartError::UnknownWorkflow {
                name: name.to_string(),
                available: registry.names(),
            })
    }

    /// Builds the shared context of run `run_id` of `wf`: grants, workspace
    /// (`<scratch>/workspace`, which must exist), tool home, journal
    /// (`<run_dir>/log.jsonl`) and clocks.
    pub fn context(
        &self,
        wf: &crate::toolbox::LoadedWorkflow,
        run_id: &str,
        scratch: &std::path::Path,
        run_dir: &std::path::Path,
        workflow_start_ms: u64,
        observer: Option<Observer>,
    ) -> Result<Arc<RunContext>, StartError> {
        let journal = Arc::new(
            RunJournal::create(
                &run_dir.join("log.jsonl"),
                self.config.limits.output_quota_mib,
                self.config.limits.max_findings,
                observer,
            )
            .map_err(|e| StartError::Setup(e.into()))?,
        );
        journal.set_redactor(crate::capabilities::redact::Redactor::for_run(
            &scratch.join("workspace"),
            &scratch.join("home"),
            &self.config,
        ));
        Ok(Arc::new(RunContext {
            run_id: run_id.to_string(),
            info: wf.info.clone(),
            digest: wf.digest.clone(),
            runtime: self.runtime.clone(),
            pre: wf.pre.clone(),
            tools: ToolGrant::for_workflow(&self.config, &wf.info),
            sandbox: self.sandbox.clone(),
            workspace: Workspace::open(&scratch.join("workspace"), &self.config.limits)
                .map_err(|e| StartError::Setup(e.into()))?,
            tool_home: scratch.join("home"),
            artifacts_dir: run_dir.join("artifacts"),
            journal,
            stop: StopSignal::new(),
            limits: self.config.limits.clone(),
            clock: WorkflowClock::new(run_id, workflow_start_ms),
            steps: None,
            artifact_blobs: None,
        }))
    }

    /// Runs a workflow to the end and returns its record (also saved under
    /// `runs/<run-id>/`). Errors only when the run cannot start.
    pub async fn run(&self, req: RunRequest) -> Result<RunRecord, StartError> {
        let wf = self.lookup(&req.workflow)?;
        self.check_params(&req.workflow, &req.params)?;
        let run_id = match req.run_id {
            Some(id) => {
                super::check_run_id(&id).map_err(|e| StartError::Setup(anyhow::anyhow!(e)))?;
                id
            }
            None => new_run_id(&wf.info.name),
        };
        let span = info_span!("run", run_id = %run_id, workflow = %wf.info.name, digest = %&wf.digest[..12]);
        async move {
            let started_at = crate::util::now_rfc3339();
            let started = Instant::now();
            let workflow_start_ms = req.workflow_start_ms.unwrap_or_else(crate::util::now_ms);

            // Per-run scratch: the workspace (a copy of the target) and a
            // private home for tools, side by side, outside any project tree.
            let scratch = super::workdir::create_scratch(&self.config.work_dir(), &run_id)
                .map_err(|e| StartError::Setup(e.into()))?;
            let workspace_dir = scratch.join("workspace");
            let _cleanup = WorkspaceCleanup {
                dir: scratch.clone(),
                keep: req.keep_workspace,
            };
            let copy = target::copy_target(&req.target, &workspace_dir).map_err(StartError::Target)?;

            // Only now that the run can start does it get a record directory
            // (a reused run id starts from an empty one).
            let run_dir = self.store.root().join("runs").join(&run_id);
            if run_dir.exists() {
                std::fs::remove_dir_all(&run_dir)
                    .with_context(|| format!("cannot clear `{}`", run_dir.display()))
                    .map_err(StartError::Setup)?;
            }
            std::fs::create_dir_all(run_dir.join("artifacts"))
                .with_context(|| format!("cannot create `{}`", run_dir.display()))
                .map_err(StartError::Setup)?;

            let ctx = self.context(
                &wf,
                &run_id,
                &scratch,
                &run_dir,
                workflow_start_ms,
                req.observer.clone(),
            )?;
            let journal = ctx.journal.clone();
            let target_label = req
                .target_label
                .clone()
                .unwrap_or_else(|| req.target.display().to_string());
            journal.host_log(
                "info",
                &format!(
                    "run {run_id}: workflow {} {} (sha256 {}), target {} ({} files, {} bytes copied)",
                    wf.info.name,
                    wf.info.version,
                    wf.digest,
                    target_label,
                    copy.files,
                    copy.bytes
                ),
            );
            for skipped in &copy.skipped {
                journal.host_log("warn", &format!("not copied into the workspace: {skipped}"));
            }

            let timeout_secs = u64::from(wf.info.timeout_secs)
                .min(self.config.limits.max_timeout_secs)
                .min(req.timeout_secs.unwrap_or(u64::MAX))
                .max(1);
            let watchdog = {
                let ctx = ctx.clone();
                let cancel = req.cancel.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(timeout_secs)) => {
                            ctx.stop.stop(StopReason::DeadlineExceeded { timeout_secs });
                        }
                        _ = cancel.cancelled() => ctx.stop.stop(StopReason::Cancelled),
                    }
                })
            };

            let params_json = req.params.to_string();
            let (status, error, summary) = execute(&ctx, &params_json).await;
            watchdog.abort();

            let findings = sorted_findings(journal.findings());
            let artifacts = list_artifacts(&ctx.artifacts_dir);
            journal.host_log(
                "info",
                &format!(
                    "run {run_id} {}{} with {} findings",
                    status.as_str(),
                    error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default(),
                    findings.len()
                ),
            );
            journal.flush();
            let analyses = crate::manifest::Analysis::from_summary(&summary);
            let record = RunRecord {
                run_id: run_id.clone(),
                workflow: wf.info.name.clone(),
                workflow_version: wf.info.version.clone(),
                component_digest: wf.digest.clone(),
                vertical: wf.info.vertical.clone(),
                status,
                error,
                summary,
                params: req.params.clone(),
                target: target_label,
                started_at,
                ended_at: crate::util::now_rfc3339(),
                duration_ms: started.elapsed().as_millis() as u64,
                workflow_start_ms,
                counts: SeverityCounts::of(&findings),
                findings,
                progress: journal.progress().unwrap_or(Value::Null),
                artifacts,
                analyses,
            };
            record
                .save(&self.store as &dyn BlobStore)
                .await
                .map_err(|e| StartError::Setup(e.into()))?;
            Ok(record)
        }
        .instrument(span)
        .await
    }
}

/// Instantiates the workflow and calls `run`, classifying how it ended.
pub async fn execute(
    ctx: &Arc<RunContext>,
    params_json: &str,
) -> (RunStatus, Option<String>, Value) {
    let (status, error, mut summary) = classify(ctx, params_json).await;
    // The summary and the error carry guest and tool text: no host path.
    let redactor = ctx.journal.redactor();
    redactor.value(&mut summary);
    (status, error.map(|e| redactor.text(&e)), summary)
}

async fn classify(ctx: &Arc<RunContext>, params_json: &str) -> (RunStatus, Option<String>, Value) {
    let mut store = match new_store(ctx.clone(), CodeKind::Workflow) {
        Ok(s) => s,
        Err(e) => return (RunStatus::Failed, Some(format!("{e:#}")), Value::Null),
    };
    let call = async {
        let instance = ctx.pre.instantiate_async(&mut store).await?;
        instance.call_run(&mut store, params_json).await
    };
    let stopped_for_good = async {
        ctx.stop.stopped().await;
        tokio::time::sleep(STOP_GRACE).await;
    };
    let result = tokio::select! {
        r = call => Some(r),
        _ = stopped_for_good => None,
    };
    if let Some(reason) = ctx.stop.reason() {
        let status = match reason {
            StopReason::Cancelled => RunStatus::Cancelled,
            StopReason::DeadlineExceeded { .. } => RunStatus::TimedOut,
        };
        return (status, Some(reason.message()), Value::Null);
    }
    match result {
        Some(Ok(Ok(summary))) => {
            let summary = serde_json::from_str(&summary).unwrap_or(Value::String(summary));
            // A workflow that completed but says an analysis could not run
            // has not analysed the target: the run failed, with the reason,
            // and keeps its summary and the other analyses' findings.
            let failed: Vec<String> = crate::manifest::Analysis::from_summary(&summary)
                .iter()
                .filter(|a| a.status == crate::manifest::AnalysisStatus::Failed)
                .map(crate::manifest::Analysis::failure_text)
                .collect();
            if failed.is_empty() {
                (RunStatus::Succeeded, None, summary)
            } else {
                (RunStatus::Failed, Some(failed.join("\n")), summary)
            }
        }
        Some(Ok(Err(message))) => (RunStatus::Failed, Some(message), Value::Null),
        Some(Err(trap)) => {
            let why = store
                .data()
                .limiter
                .exceeded
                .clone()
                .unwrap_or_else(|| explain_trap(&anyhow::Error::from(trap)));
            let tail = ctx.journal.stderr_tail();
            let msg = if tail.is_empty() {
                format!("guest trapped: {why}")
            } else {
                format!("guest trapped: {why}\nguest stderr:\n{}", tail.join("\n"))
            };
            (RunStatus::Failed, Some(msg), Value::Null)
        }
        None => (RunStatus::Failed, Some("run abandoned".into()), Value::Null),
    }
}

/// Findings in report order: most severe first, then by location.
pub fn sorted_findings(
    mut findings: Vec<crate::manifest::Finding>,
) -> Vec<crate::manifest::Finding> {
    findings.sort_by(|a, b| {
        b.severity.cmp(&a.severity).then_with(|| {
            let key = |f: &crate::manifest::Finding| {
                f.location
                    .as_ref()
                    .map(|l| (l.path.clone(), l.start_line.unwrap_or(0)))
            };
            key(a).cmp(&key(b))
        })
    });
    findings
}

/// A trap as one readable sentence (the root cause, without the backtrace).
pub fn explain_trap(e: &anyhow::Error) -> String {
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        return match trap {
            wasmtime::Trap::StackOverflow => {
                "guest overflowed its call stack (unbounded recursion?)".to_string()
            }
            wasmtime::Trap::UnreachableCodeReached => {
                "guest hit `unreachable` (a Rust panic or abort; see the guest stderr in the log)"
                    .to_string()
            }
            wasmtime::Trap::OutOfFuel => "guest ran out of fuel (`limits.fuel`)".to_string(),
            wasmtime::Trap::MemoryOutOfBounds => "guest accessed memory out of bounds (in Rust guests usually an overflow of the stack kept in linear memory: unbounded recursion?)".to_string(),
            other => format!("{other}"),
        };
    }
    e.root_cause().to_string()
}

fn list_artifacts(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

struct WorkspaceCleanup {
    dir: PathBuf,
    keep: bool,
}

impl Drop for WorkspaceCleanup {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
