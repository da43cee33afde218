//! Drives a run's workflow code from Temporal activations, the way a
//! language SDK drives its workflows: jobs in (start, resolved activity,
//! fired timer, cancel, query, eviction), commands out (schedule activity,
//! start timer, complete). The guest runs in a task of its own; each
//! durable call it makes arrives as a [`StepCall`] and becomes one command,
//! and the guest stays suspended in that call until the activation that
//! resolves it. On replay (after an eviction, or on another host) the guest
//! runs again from the start, makes the same calls, and core answers them
//! from history without executing anything again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use temporalio_common::protos::coresdk::activity_result::activity_resolution::Status as Resolution;
use temporalio_common::protos::coresdk::workflow_activation::workflow_activation_job::Variant as Job;
use temporalio_common::protos::coresdk::workflow_activation::{
    InitializeWorkflow, QueryWorkflow, WorkflowActivation,
};
use temporalio_common::protos::coresdk::workflow_commands::workflow_command::Variant as Cmd;
use temporalio_common::protos::coresdk::workflow_commands::{
    ActivityCancellationType, CancelTimer, CancelWorkflowExecution, CompleteWorkflowExecution,
    FailWorkflowExecution, QueryResult, QuerySuccess, RequestCancelActivity,
    RequestCancelLocalActivity, ScheduleActivity, ScheduleLocalActivity, StartTimer, query_result,
};
use temporalio_common::protos::coresdk::workflow_completion::WorkflowActivationCompletion;
use temporalio_common::protos::coresdk::{AsJsonPayloadExt, FromJsonPayloadExt};
use temporalio_common::protos::temporal::api::common::v1::{Payload, RetryPolicy};
use temporalio_common::protos::temporal::api::failure::v1::Failure;
use tokio::sync::{mpsc, oneshot};

use super::steps::{StepCall, StepKind, StepOutcome, Steps};
use super::wire::Bytes;
use super::{
    PREPARE, PUBLISH, PrepareInput, PrepareOutput, PublishInput, StepInput, StepOutput,
    WorkflowInput, WorkflowOutput,
};
use crate::capabilities::{RunContext, RunJournal, StopReason, StopSignal, Workspace};
use crate::engine::RunStatus;
use crate::engine::record::{RunRecord, SeverityCounts};
use crate::runtime::clocks::WorkflowClock;
use crate::sandbox::policy::ToolGrant;

use super::worker::HostShared;

/// How a guest ended.
struct GuestEnd {
    status: RunStatus,
    error: Option<String>,
    summary: Value,
}

/// What the run waits for.
enum Pending {
    None,
    Prepare(u32),
    Host {
        seq: u32,
        reply: oneshot::Sender<StepOutcome>,
    },
    Timer {
        seq: u32,
        reply: oneshot::Sender<StepOutcome>,
    },
    Publish(u32),
}

/// One run's workflow state on this host.
struct Run {
    workflow_id: String,
    workflow_type: String,
    input: WorkflowInput,
    start_ms: u64,
    next_seq: u32,
    pending: Pending,
    deadline_timer: Option<u32>,
    stop: Option<StopReason>,
    prepared: Option<PrepareOutput>,
    ctx: Option<Arc<RunContext>>,
    calls: Option<mpsc::UnboundedReceiver<StepCall>>,
    end_rx: Option<oneshot::Receiver<GuestEnd>>,
    guest: Option<tokio::task::JoinHandle<()>>,
    /// True when the guest is computing (not suspended in a step).
    guest_running: bool,
    end: Option<GuestEnd>,
    steps_done: u64,
    /// Time of the latest workflow task from history (ms since the epoch).
    task_ms: u64,
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(g) = self.guest.take() {
            g.abort();
        }
    }
}

/// Runs of this host, by Temporal run id.
pub struct Driver {
    shared: Arc<HostShared>,
    runs: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Run>>>>>,
}

fn secs(d: Duration) -> Option<prost_wkt_types::Duration> {
    prost_wkt_types::Duration::try_from(d).ok()
}

fn failure(message: impl Into<String>) -> Failure {
    Failure::application_failure(message.into(), true)
}

/// Steps, `prepare` and `publish` retry with backoff until their timeout:
/// the host that holds a workspace may be restarting, and the blob store
/// may be briefly down.
fn retry_policy() -> RetryPolicy {
    RetryPolicy {
        initial_interval: secs(Duration::from_millis(500)),
        backoff_coefficient: 2.0,
        maximum_interval: secs(Duration::from_secs(10)),
        maximum_attempts: 0,
        non_retryable_error_types: vec![],
    }
}

fn json_payload(v: &impl serde::Serialize) -> Payload {
    v.as_json_payload().unwrap_or_default()
}

/// The message of an activity failure, without Temporal's wrapping.
fn failure_message(f: &Option<Failure>) -> String {
    let mut msg = String::new();
    let mut cur = f.as_ref();
    while let Some(f) = cur {
        if !f.message.is_empty() {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&f.message);
        }
        cur = f.cause.as_deref();
    }
    if msg.is_empty() {
        "activity failed".into()
    } else {
        msg
    }
}

impl Driver {
    /// A driver for the host's runs.
    pub fn new(shared: Arc<HostShared>) -> Arc<Self> {
        Arc::new(Driver {
            shared,
            runs: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Number of runs held in memory.
    pub fn cached(&self) -> usize {
        self.runs.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Processes one activation and returns its completion. Activations of
    /// different runs may be processed concurrently; those of one run are
    /// serialised.
    pub async fn activate(&self, act: WorkflowActivation) -> WorkflowActivationCompletion {
        let run_id = act.run_id.clone();
        let slot = {
            let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
            runs.entry(run_id.clone()).or_default().clone()
        };
        let mut guard = slot.lock().await;
        let evict = act
            .jobs
            .iter()
            .any(|j| matches!(j.variant, Some(Job::RemoveFromCache(_))));
        if evict {
            *guard = None;
            drop(guard);
            self.runs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&run_id);
            return WorkflowActivationCompletion::empty(run_id);
        }
        match self.process(&mut guard, act).await {
            Ok(cmds) => WorkflowActivationCompletion::from_cmds(run_id, cmds),
            Err(e) => {
                tracing::warn!(run = %run_id, "workflow task failed: {e:#}");
                WorkflowActivationCompletion::fail(run_id, failure(format!("{e:#}")), None)
            }
        }
    }

    async fn process(
        &self,
        slot: &mut Option<Run>,
        act: WorkflowActivation,
    ) -> anyhow::Result<Vec<Cmd>> {
        let mut cmds = Vec::new();
        let mut queries = Vec::new();
        let replaying = act.is_replaying;
        // Workflow time is the time of this workflow task, from history
        // (the same on replay), set before any step result wakes the guest.
        // A query alone is not in history and moves nothing.
        let from_history = act
            .jobs
            .iter()
            .any(|j| !matches!(j.variant, Some(Job::QueryWorkflow(_)) | None));
        let task_ms = act
            .timestamp
            .and_then(|t| std::time::SystemTime::try_from(t).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64);
        if let (true, Some(ms), Some(run)) = (from_history, task_ms, slot.as_mut()) {
            run.task_ms = run.task_ms.max(ms);
            if let Some(ctx) = &run.ctx {
                ctx.clock.observe(ms);
            }
        }
        for job in act.jobs {
            let Some(variant) = job.variant else { continue };
            match variant {
                Job::InitializeWorkflow(init) => {
                    let run = self.initialize(init, &mut cmds);
                    *slot = Some(run);
                }
                Job::ResolveActivity(res) => {
                    let run = slot
                        .as_mut()
                        .ok_or_else(|| anyhow::anyhow!("activity resolved for an unknown run"))?;
                    let outcome = match res.result.and_then(|r| r.status) {
                        Some(Resolution::Completed(s)) => match s.result {
                            Some(p) => match Value::from_json_payload(&p) {
                                Ok(v) => StepOutcome::Done(v),
                                Err(e) => {
                                    StepOutcome::Failed(format!("malformed activity result: {e}"))
                                }
                            },
                            None => StepOutcome::Done(Value::Null),
                        },
                        Some(Resolution::Failed(f)) => {
                            StepOutcome::Failed(failure_message(&f.failure))
                        }
                        Some(Resolution::Cancelled(_)) => StepOutcome::Cancelled,
                        Some(Resolution::Backoff(_)) | None => {
                            StepOutcome::Failed("activity ended without a result".into())
                        }
                    };
                    self.resolve_activity(run, res.seq, outcome, &mut cmds, replaying)
                        .await;
                }
                Job::FireTimer(t) => {
                    let run = slot
                        .as_mut()
                        .ok_or_else(|| anyhow::anyhow!("timer fired for an unknown run"))?;
                    if run.deadline_timer == Some(t.seq) {
                        run.deadline_timer = None;
                        let timeout_secs = run
                            .ctx
                            .as_ref()
                            .map_or(0, |c| u64::from(c.info.timeout_secs))
                            .min(run.input.timeout_secs.unwrap_or(u64::MAX));
                        self.stop(
                            run,
                            StopReason::DeadlineExceeded { timeout_secs },
                            &mut cmds,
                        );
                    } else if matches!(&run.pending, Pending::Timer { seq, .. } if *seq == t.seq)
                        && let Pending::Timer { reply, .. } =
                            std::mem::replace(&mut run.pending, Pending::None)
                    {
                        let _ = reply.send(StepOutcome::Done(Value::Null));
                        run.guest_running = true;
                    }
                }
                Job::CancelWorkflow(_) => {
                    if let Some(run) = slot.as_mut() {
                        self.stop(run, StopReason::Cancelled, &mut cmds);
                    }
                }
                Job::QueryWorkflow(q) => queries.push(q),
                _ => {}
            }
        }
        if let Some(run) = slot.as_mut() {
            if let Err(e) = self.advance(run, &mut cmds, replaying).await {
                // Nothing of this task is kept: the next attempt replays
                // the run from its history.
                *slot = None;
                return Err(e);
            }
            for q in queries {
                cmds.push(answer_query(run, q));
            }
        } else {
            for q in queries {
                cmds.push(Cmd::RespondToQuery(QueryResult {
                    query_id: q.query_id,
                    variant: Some(query_result::Variant::Failed(failure(
                        "the run is not loaded on this host",
                    ))),
                }));
            }
        }
        Ok(cmds)
    }

    fn initialize(&self, init: InitializeWorkflow, cmds: &mut Vec<Cmd>) -> Run {
        let parsed = match init.arguments.first() {
            None => Ok(WorkflowInput::default()),
            Some(p) => WorkflowInput::from_json_payload(p).map_err(|e| {
                format!(
                    "the workflow input is not a Toolhost run input ({e}); pass JSON like {{\"params\": {{...}}, \"target\": \"<sha256 of a packed target>\"}} (see docs/DISTRIBUTED.md)"
                )
            }),
        };
        let start_ms = init
            .start_time
            .and_then(|t| std::time::SystemTime::try_from(t).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        let mut run = Run {
            workflow_id: init.workflow_id.clone(),
            workflow_type: init.workflow_type.clone(),
            input: WorkflowInput::default(),
            start_ms,
            next_seq: 1,
            pending: Pending::None,
            deadline_timer: None,
            stop: None,
            prepared: None,
            ctx: None,
            calls: None,
            end_rx: None,
            guest: None,
            guest_running: false,
            end: None,
            steps_done: 0,
            task_ms: start_ms,
        };
        match parsed {
            Err(message) => {
                run.end = Some(GuestEnd {
                    status: RunStatus::Failed,
                    error: Some(message),
                    summary: Value::Null,
                });
            }
            Ok(input) => {
                let seq = run.seq();
                let prepare = PrepareInput {
                    run_id: run.workflow_id.clone(),
                    workflow: run.workflow_type.clone(),
                    digest: input.digest.clone(),
                    target: input.target.clone(),
                    tenant: input.tenant.clone(),
                };
                run.input = input;
                // A local activity: the host running this workflow task
                // prepares the workspace, and the marker in history records
                // which host that was, so replay anywhere sends the steps
                // there.
                cmds.push(self.schedule_local(
                    seq,
                    PREPARE,
                    format!("{seq}-prepare"),
                    &prepare,
                    Duration::from_secs(30 * 60),
                ));
                run.pending = Pending::Prepare(seq);
                self.shared.metrics.run_started(&run.workflow_type);
            }
        }
        run
    }

    #[allow(clippy::too_many_arguments)]
    fn schedule(
        &self,
        seq: u32,
        activity_type: &str,
        activity_id: String,
        task_queue: String,
        input: &impl serde::Serialize,
        start_to_close: Duration,
        heartbeat: Option<Duration>,
    ) -> Cmd {
        Cmd::ScheduleActivity(ScheduleActivity {
            seq,
            activity_id,
            activity_type: activity_type.to_string(),
            task_queue,
            arguments: vec![json_payload(input)],
            start_to_close_timeout: secs(start_to_close),
            heartbeat_timeout: heartbeat.and_then(secs),
            retry_policy: Some(retry_policy()),
            // The run waits for a cancelled step to stop: activity code
            // then completes with what it found so far (kept with the
            // run), a tool step is killed.
            cancellation_type: ActivityCancellationType::WaitCancellationCompleted as i32,
            do_not_eagerly_execute: true,
            ..Default::default()
        })
    }

    /// A local activity: executed by this host within the workflow task,
    /// its result recorded as a marker. It retries with the same backoff as
    /// a step until `schedule_to_close` runs out; core keeps the workflow
    /// task alive meanwhile.
    fn schedule_local(
        &self,
        seq: u32,
        activity_type: &str,
        activity_id: String,
        input: &impl serde::Serialize,
        schedule_to_close: Duration,
    ) -> Cmd {
        Cmd::ScheduleLocalActivity(ScheduleLocalActivity {
            seq,
            activity_id,
            activity_type: activity_type.to_string(),
            attempt: 1,
            arguments: vec![json_payload(input)],
            schedule_to_close_timeout: secs(schedule_to_close),
            start_to_close_timeout: secs(schedule_to_close),
            retry_policy: Some(retry_policy()),
            // Backoffs stay below this, so core retries internally and
            // never asks for a timer.
            local_retry_threshold: secs(Duration::from_secs(60)),
            cancellation_type: ActivityCancellationType::TryCancel as i32,
            ..Default::default()
        })
    }

    /// Cancels or times out the run: the guest sees `cancelled` in its
    /// pending step and every later one.
    fn stop(&self, run: &mut Run, reason: StopReason, cmds: &mut Vec<Cmd>) {
        if run.stop.is_some() {
            return;
        }
        run.stop = Some(reason.clone());
        if let Some(ctx) = &run.ctx {
            ctx.stop.stop(reason.clone());
        }
        match std::mem::replace(&mut run.pending, Pending::None) {
            Pending::Host { seq, reply } => {
                // Core resolves the activity as cancelled; the activity's
                // host learns it from its next heartbeat and kills the tool.
                cmds.push(Cmd::RequestCancelActivity(RequestCancelActivity { seq }));
                run.pending = Pending::Host { seq, reply };
            }
            Pending::Timer { seq, reply } => {
                cmds.push(Cmd::CancelTimer(CancelTimer { seq }));
                let _ = reply.send(StepOutcome::Cancelled);
                run.guest_running = true;
            }
            Pending::Prepare(seq) => {
                cmds.push(Cmd::RequestCancelLocalActivity(
                    RequestCancelLocalActivity { seq },
                ));
                run.pending = Pending::Prepare(seq);
            }
            other => run.pending = other,
        }
    }

    async fn resolve_activity(
        &self,
        run: &mut Run,
        seq: u32,
        outcome: StepOutcome,
        cmds: &mut Vec<Cmd>,
        replaying: bool,
    ) {
        match std::mem::replace(&mut run.pending, Pending::None) {
            Pending::Prepare(s) if s == seq => match outcome {
                StepOutcome::Done(v) => match serde_json::from_value::<PrepareOutput>(v) {
                    Ok(prepared) => {
                        if let Err(e) = self.start_guest(run, prepared, cmds).await {
                            run.end = Some(GuestEnd {
                                status: RunStatus::Failed,
                                error: Some(format!("{e:#}")),
                                summary: Value::Null,
                            });
                        }
                    }
                    Err(e) => {
                        run.end = Some(GuestEnd {
                            status: RunStatus::Failed,
                            error: Some(format!("malformed prepare result: {e}")),
                            summary: Value::Null,
                        })
                    }
                },
                StepOutcome::Failed(m) => {
                    run.end = Some(GuestEnd {
                        status: RunStatus::Failed,
                        error: Some(format!("cannot prepare the run: {m}")),
                        summary: Value::Null,
                    })
                }
                StepOutcome::Cancelled => {
                    let reason = run.stop.clone().unwrap_or(StopReason::Cancelled);
                    run.end = Some(GuestEnd {
                        status: status_of(&reason),
                        error: Some(reason.message()),
                        summary: Value::Null,
                    })
                }
            },
            Pending::Host { seq: s, reply } if s == seq => {
                run.steps_done += 1;
                let outcome = match outcome {
                    StepOutcome::Done(v) => match serde_json::from_value::<StepOutput>(v) {
                        Ok(out) => {
                            if let Some(ctx) = &run.ctx {
                                if !replaying {
                                    tracing::debug!(run = %run.workflow_id, seq, "step completed");
                                }
                                ctx.journal.append_lines(out.log);
                                for f in out.findings {
                                    let len = crate::capabilities::findings::quota_len(&f);
                                    if let Err(e) = ctx.journal.add_finding(f, len) {
                                        ctx.journal.host_log(
                                            "warn",
                                            &format!("finding of a step dropped: {e}"),
                                        );
                                    }
                                }
                                if let Some(p) = out.progress {
                                    let len = p.to_string().len();
                                    let _ = ctx.journal.set_progress(p, len);
                                }
                            }
                            StepOutcome::Done(out.result)
                        }
                        Err(e) => StepOutcome::Failed(format!("malformed step result: {e}")),
                    },
                    other => other,
                };
                let _ = reply.send(outcome);
                run.guest_running = true;
            }
            Pending::Publish(s) if s == seq => {
                let output = self.output(run);
                match outcome {
                    StepOutcome::Done(_) => {}
                    StepOutcome::Failed(m) => {
                        tracing::warn!(run = %run.workflow_id, "results not published: {m}");
                    }
                    StepOutcome::Cancelled => {}
                }
                cmds.push(self.finish(run, output));
            }
            other => {
                // A late resolution (a cancelled step): keep waiting.
                run.pending = other;
            }
        }
    }

    async fn start_guest(
        &self,
        run: &mut Run,
        prepared: PrepareOutput,
        cmds: &mut Vec<Cmd>,
    ) -> anyhow::Result<()> {
        let wf = self.shared.components.get(&prepared.digest).await?;
        if wf.info.name != run.workflow_type {
            anyhow::bail!(
                "component {} is `{}`, not `{}`",
                prepared.digest,
                wf.info.name,
                run.workflow_type
            );
        }

        crate::engine::params::check(&wf.params, &wf.info.name, &run.input.params)?;
        let config = self.shared.config();
        let (steps, calls) = Steps::new(self.shared.blobs.clone());
        let empty = self.shared.empty_dir.clone();
        let ctx = Arc::new(RunContext {
            run_id: run.workflow_id.clone(),
            info: wf.info.clone(),
            digest: wf.digest.clone(),
            runtime: self.shared.components.toolbox().runtime().clone(),
            pre: wf.pre.clone(),
            tools: ToolGrant::default(),
            sandbox: Arc::new(crate::sandbox::detect::Sandbox::unavailable()),
            workspace: Workspace::open(
                &empty,
                &crate::runtime::limits::GuestLimits {
                    write_quota_mib: 0,
                    max_read_mib: 0,
                    ..Default::default()
                },
            )?,
            tool_home: empty.join("home"),
            artifacts_dir: empty.join("artifacts"),
            journal: Arc::new(RunJournal::capture(
                config.limits.output_quota_mib,
                config.limits.max_findings,
                None,
            )),
            stop: StopSignal::new(),
            limits: config.limits.clone(),
            clock: WorkflowClock::new(&run.workflow_id, run.start_ms),
            steps: Some(steps),
            artifact_blobs: None,
        });
        ctx.clock.observe(run.task_ms);
        ctx.journal
            .set_redactor(crate::capabilities::redact::Redactor::for_run(
                &empty,
                &empty.join("home"),
                config,
            ));
        ctx.journal.host_log(
            "info",
            &format!(
                "run {}: workflow {} {} (sha256 {}), workspace on host {}{}",
                run.workflow_id,
                wf.info.name,
                wf.info.version,
                wf.digest,
                prepared.host,
                run.input
                    .target
                    .as_ref()
                    .map(|t| format!(
                        ", target {t} ({} files, {} bytes)",
                        prepared.files, prepared.bytes
                    ))
                    .unwrap_or_default()
            ),
        );
        // The workflow's own timeout, as a durable timer (a start by
        // `toolhost submit` also sets it as the execution timeout).
        let timeout = u64::from(wf.info.timeout_secs)
            .min(config.limits.max_timeout_secs)
            .min(run.input.timeout_secs.unwrap_or(u64::MAX))
            .max(1);
        let seq = run.seq();
        cmds.push(Cmd::StartTimer(StartTimer {
            seq,
            start_to_fire_timeout: secs(Duration::from_secs(timeout)),
        }));
        run.deadline_timer = Some(seq);

        let (end_tx, end_rx) = oneshot::channel();
        let params = run.input.params.to_string();
        let guest_ctx = ctx.clone();
        run.guest = Some(tokio::spawn(async move {
            let (status, error, summary) = crate::engine::local::execute(&guest_ctx, &params).await;
            let _ = end_tx.send(GuestEnd {
                status,
                error,
                summary,
            });
        }));
        run.ctx = Some(ctx);
        run.calls = Some(calls);
        run.end_rx = Some(end_rx);
        run.prepared = Some(prepared);
        run.guest_running = true;
        Ok(())
    }

    /// Lets the guest compute until it suspends in a step or ends, and
    /// turns that into commands.
    ///
    /// Workflow code that computes longer than the workflow-task budget
    /// without a durable step fails the workflow *task*, not the run: how
    /// long code takes depends on the host, so it may not decide an outcome
    /// that replay must reproduce. Temporal retries the task (replaying the
    /// run, here or elsewhere); a guest that never yields ends at its
    /// execution timeout, recorded in history.
    async fn advance(
        &self,
        run: &mut Run,
        cmds: &mut Vec<Cmd>,
        replaying: bool,
    ) -> anyhow::Result<()> {
        let budget = Duration::from_secs(self.shared.temporal.workflow_task_budget_secs.max(1));
        while run.guest_running && run.end.is_none() {
            let (Some(calls), Some(end_rx)) = (run.calls.as_mut(), run.end_rx.as_mut()) else {
                break;
            };
            let event = tokio::time::timeout(budget, async {
                tokio::select! {
                    biased;
                    call = calls.recv() => call.map(Ok),
                    end = end_rx => end.ok().map(Err),
                }
            })
            .await;
            match event {
                Err(_elapsed) => {
                    if let Some(g) = run.guest.take() {
                        g.abort();
                    }
                    run.guest_running = false;
                    self.shared.metrics.workflow_task_over_budget();
                    anyhow::bail!(
                        "workflow code of run {} computed for over {} s without a durable step (`workflow_task_budget_secs`); the workflow task failed and Temporal retries it. Move heavy work into an activity (`ctx.activity`)",
                        run.workflow_id,
                        budget.as_secs()
                    );
                }
                Ok(None) => {
                    run.guest_running = false;
                    run.end = Some(GuestEnd {
                        status: RunStatus::Failed,
                        error: Some("the guest task ended without a result".into()),
                        summary: Value::Null,
                    });
                }
                Ok(Some(Err(end))) => {
                    run.guest_running = false;
                    run.end = Some(end);
                }
                Ok(Some(Ok(call))) => {
                    if run.stop.is_some() {
                        let _ = call.reply.send(StepOutcome::Cancelled);
                        continue;
                    }
                    let seq = run.seq();
                    match call.kind {
                        StepKind::Sleep(d) => {
                            cmds.push(Cmd::StartTimer(StartTimer {
                                seq,
                                start_to_fire_timeout: secs(d.max(Duration::from_millis(1))),
                            }));
                            run.pending = Pending::Timer {
                                seq,
                                reply: call.reply,
                            };
                        }
                        StepKind::Host(step) => {
                            let Some(prepared) = run.prepared.as_ref() else {
                                let _ = call
                                    .reply
                                    .send(StepOutcome::Failed("no workspace host".into()));
                                continue;
                            };
                            let ctx = run.ctx.as_ref();
                            let is_tool = matches!(step, super::wire::HostStep::Tool { .. });
                            let label = step.label();
                            let activity_type = step.activity_type();
                            let input = StepInput {
                                run_id: run.workflow_id.clone(),
                                workflow: run.workflow_type.clone(),
                                digest: prepared.digest.clone(),
                                step,
                                progress: ctx
                                    .and_then(|c| c.journal.progress())
                                    .unwrap_or(Value::Null),
                                tenant: run.input.tenant.clone(),
                            };
                            let timeout =
                                ctx.map_or(3600, |c| u64::from(c.info.timeout_secs)).max(60);
                            let heartbeat = Duration::from_secs(
                                self.shared.temporal.heartbeat_timeout_secs.max(1),
                            );
                            if !replaying {
                                tracing::debug!(run = %run.workflow_id, seq, %label, "step scheduled");
                            }
                            cmds.push(self.schedule(
                                seq,
                                activity_type,
                                format!("{seq}-{label}"),
                                prepared.host_queue.clone(),
                                &input,
                                Duration::from_secs(timeout),
                                // Every host step heartbeats while it runs.
                                Some(if is_tool {
                                    heartbeat
                                } else {
                                    heartbeat.max(Duration::from_secs(30))
                                }),
                            ));
                            run.pending = Pending::Host {
                                seq,
                                reply: call.reply,
                            };
                        }
                    }
                    run.guest_running = false;
                }
            }
        }
        if run.end.is_some() && matches!(run.pending, Pending::None) {
            self.conclude(run, cmds).await;
        }
        Ok(())
    }

    /// The guest has ended: publish the results, or finish at once when
    /// the run never got a workspace.
    async fn conclude(&self, run: &mut Run, cmds: &mut Vec<Cmd>) {
        if let Some(t) = run.deadline_timer.take() {
            cmds.push(Cmd::CancelTimer(CancelTimer { seq: t }));
        }
        if run.prepared.is_none() {
            let output = self.output(run);
            cmds.push(self.finish(run, output));
            return;
        }
        let record = self.record(run);
        let log: Vec<u8> = run
            .ctx
            .as_ref()
            .map(|c| c.journal.lines())
            .unwrap_or_default()
            .iter()
            .flat_map(|l| {
                let mut b = serde_json::to_vec(l).unwrap_or_default();
                b.push(b'\n');
                b
            })
            .collect();
        let record_bytes = serde_json::to_vec_pretty(&record).unwrap_or_default();
        // A local activity's input stays on this host (it is not written
        // to history), so the results travel inline whatever their size.
        let seq = run.seq();
        cmds.push(self.schedule_local(
            seq,
            PUBLISH,
            format!("{seq}-publish"),
            &PublishInput {
                run_id: run.workflow_id.clone(),
                record: Bytes::inline(record_bytes),
                log: Bytes::inline(log),
                tenant: run.input.tenant.clone(),
            },
            Duration::from_secs(10 * 60),
        ));
        run.pending = Pending::Publish(seq);
    }

    fn record(&self, run: &Run) -> RunRecord {
        let end = run.end.as_ref();
        let (findings, progress) = match &run.ctx {
            Some(c) => (
                crate::engine::local::sorted_findings(c.journal.findings()),
                c.journal.progress().unwrap_or(Value::Null),
            ),
            None => (vec![], Value::Null),
        };
        let info = run.ctx.as_ref().map(|c| &c.info);
        RunRecord {
            run_id: run.workflow_id.clone(),
            workflow: run.workflow_type.clone(),
            workflow_version: info.map(|i| i.version.clone()).unwrap_or_default(),
            component_digest: run
                .prepared
                .as_ref()
                .map(|p| p.digest.clone())
                .unwrap_or_default(),
            vertical: info.map(|i| i.vertical.clone()).unwrap_or_default(),
            status: end.map_or(RunStatus::Failed, |e| e.status),
            error: end.and_then(|e| e.error.clone()),
            summary: end.map_or(Value::Null, |e| e.summary.clone()),
            params: run.input.params.clone(),
            target: run
                .input
                .target_label
                .clone()
                .or_else(|| {
                    run.input
                        .target
                        .as_ref()
                        .map(|t| format!("targets/{t}.tar.zst"))
                })
                .unwrap_or_default(),
            started_at: crate::util::rfc3339(
                time::OffsetDateTime::UNIX_EPOCH + Duration::from_millis(run.start_ms),
            ),
            ended_at: crate::util::now_rfc3339(),
            duration_ms: crate::util::now_ms().saturating_sub(run.start_ms),
            workflow_start_ms: run.start_ms,
            counts: SeverityCounts::of(&findings),
            findings,
            progress,
            artifacts: run
                .ctx
                .as_ref()
                .map(|c| artifact_names(&c.journal.lines()))
                .unwrap_or_default(),
            analyses: end
                .map(|e| crate::manifest::Analysis::from_summary(&e.summary))
                .unwrap_or_default(),
        }
    }

    fn output(&self, run: &Run) -> WorkflowOutput {
        let record = self.record(run);
        // Keys as seen from the top of the store.
        let prefix = run
            .input
            .tenant
            .as_ref()
            .map(|t| format!("tenants/{t}/"))
            .unwrap_or_default();
        let key = |f: &str| format!("{prefix}{}", RunRecord::key(&run.workflow_id, f));
        WorkflowOutput {
            run_id: run.workflow_id.clone(),
            workflow: run.workflow_type.clone(),
            digest: record.component_digest.clone(),
            status: record.status,
            error: record.error.clone(),
            summary: record.summary.clone(),
            counts: record.counts.clone(),
            findings: record.findings.len(),
            keys: json!({
                "result": key("result.json"),
                "sarif": key("findings.sarif"),
                "log": key("log.jsonl"),
                "artifacts": record.artifacts.iter().map(|a| key(&format!("artifacts/{a}"))).collect::<Vec<_>>(),
            }),
        }
    }

    fn finish(&self, run: &mut Run, output: WorkflowOutput) -> Cmd {
        run.pending = Pending::None;
        self.shared
            .metrics
            .run_ended(&run.workflow_type, output.status);
        match output.status {
            RunStatus::Succeeded => Cmd::CompleteWorkflowExecution(CompleteWorkflowExecution {
                result: Some(json_payload(&output)),
            }),
            RunStatus::Cancelled => Cmd::CancelWorkflowExecution(CancelWorkflowExecution {
                details: Some(
                    temporalio_common::protos::temporal::api::common::v1::Payloads {
                        payloads: vec![json_payload(&output)],
                    },
                ),
            }),
            _ => {
                let mut f = failure(
                    output
                        .error
                        .clone()
                        .unwrap_or_else(|| format!("run {}", output.status.as_str())),
                );
                f.failure_info = Some(
                    temporalio_common::protos::temporal::api::failure::v1::failure::FailureInfo::ApplicationFailureInfo(
                        temporalio_common::protos::temporal::api::failure::v1::ApplicationFailureInfo {
                            r#type: format!("toolhost.{}", output.status.as_str()),
                            non_retryable: true,
                            details: Some(temporalio_common::protos::temporal::api::common::v1::Payloads {
                                payloads: vec![json_payload(&output)],
                            }),
                            ..Default::default()
                        },
                    ),
                );
                Cmd::FailWorkflowExecution(FailWorkflowExecution { failure: Some(f) })
            }
        }
    }
}

impl Run {
    fn seq(&mut self) -> u32 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }
}

fn status_of(reason: &StopReason) -> RunStatus {
    match reason {
        StopReason::Cancelled => RunStatus::Cancelled,
        StopReason::DeadlineExceeded { .. } => RunStatus::TimedOut,
    }
}

/// Artifact names from the run log's "stored artifact" lines.
fn artifact_names(lines: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = lines
        .iter()
        .filter_map(|l| {
            l.get("artifact")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn answer_query(run: &Run, q: QueryWorkflow) -> Cmd {
    let journal = run.ctx.as_ref().map(|c| &c.journal);
    let phase = if let Some(end) = &run.end {
        if matches!(run.pending, Pending::Publish(_)) {
            format!("publishing ({})", end.status.as_str())
        } else {
            end.status.as_str().to_string()
        }
    } else {
        match run.pending {
            Pending::Prepare(_) => "preparing".into(),
            _ if run.stop.is_some() => "stopping".into(),
            _ => "running".into(),
        }
    };
    let answer = match q.query_type.as_str() {
        super::QUERY_STATUS => Some(json!({
            "run_id": run.workflow_id,
            "workflow": run.workflow_type,
            "phase": phase,
            "digest": run.prepared.as_ref().map(|p| p.digest.clone()),
            "host": run.prepared.as_ref().map(|p| p.host.clone()),
            "steps_completed": run.steps_done,
            "findings": journal.map_or(0, |j| j.findings().len()),
            "progress": journal.and_then(|j| j.progress()),
        })),
        super::QUERY_PROGRESS => Some(journal.and_then(|j| j.progress()).unwrap_or(Value::Null)),
        super::QUERY_FINDINGS => Some(
            serde_json::to_value(journal.map(|j| j.findings()).unwrap_or_default())
                .unwrap_or(Value::Null),
        ),
        super::QUERY_LOG => {
            // Lines from the offset given as the first argument, at most
            // 1000 per answer.
            let from = q
                .arguments
                .first()
                .and_then(|p| u64::from_json_payload(p).ok())
                .unwrap_or(0) as usize;
            let lines = journal.map(|j| j.lines()).unwrap_or_default();
            let page: Vec<Value> = lines.iter().skip(from).take(1000).cloned().collect();
            Some(json!({"from": from, "next": from + page.len(), "lines": page}))
        }
        _ => None,
    };
    Cmd::RespondToQuery(QueryResult {
        query_id: q.query_id,
        variant: Some(match answer {
            Some(v) => query_result::Variant::Succeeded(QuerySuccess {
                response: Some(json_payload(&v)),
            }),
            None => query_result::Variant::Failed(failure(format!(
                "unknown query `{}`; runs answer `status`, `progress`, `findings` and `log`",
                q.query_type
            ))),
        }),
    })
}
