//! The submitter side: start runs by workflow name, follow them, query,
//! cancel and list them, over Temporal's gRPC API, and read their results
//! from the blob store.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::Value;
use temporalio_client::grpc::WorkflowService;
use temporalio_client::{Connection, ConnectionOptions};
use temporalio_common::protos::coresdk::{AsJsonPayloadExt, FromJsonPayloadExt};
use temporalio_common::protos::temporal::api::common::v1::{
    Memo, Payloads, SearchAttributes, WorkflowExecution, WorkflowType,
};
use temporalio_common::protos::temporal::api::enums::v1::{
    HistoryEventFilterType, TaskQueueKind, TaskQueueType, WorkflowExecutionStatus,
};
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
use temporalio_common::protos::temporal::api::query::v1::WorkflowQuery;
use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_common::protos::temporal::api::workflow::v1::WorkflowExecutionInfo;
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    CountWorkflowExecutionsRequest, DescribeTaskQueueRequest, DescribeWorkflowExecutionRequest,
    DescribeWorkflowExecutionResponse, GetWorkflowExecutionHistoryRequest,
    GetWorkflowExecutionHistoryReverseRequest, ListWorkflowExecutionsRequest, QueryWorkflowRequest,
    RequestCancelWorkflowExecutionRequest, StartWorkflowExecutionRequest,
};

use super::components::PublishedWorkflow;
use super::{TemporalConfig, WorkflowInput, WorkflowOutput};
use crate::storage::BlobStore;

/// A connection for submitters.
pub struct RunClient {
    conn: Connection,
    namespace: String,
    address: String,
    prefix: String,
    /// Where targets and results are.
    pub blobs: Arc<dyn BlobStore>,
}

/// How [`RunClient::start_with`] starts a run.
#[derive(Debug, Default)]
pub struct StartOptions {
    /// The execution timeout.
    pub timeout: Duration,
    pub memo: Option<Memo>,
    pub search_attributes: Option<SearchAttributes>,
    /// Refuse a second start with the same workflow id, running or closed
    /// (the start then returns `false`).
    pub reject_duplicate: bool,
}

/// What Temporal knows of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunState {
    pub run_id: String,
    pub workflow: String,
    /// `running`, `completed`, `failed`, `canceled`, `terminated`,
    /// `timed-out`, ...
    pub status: String,
    pub task_queue: String,
    pub started: Option<String>,
    pub closed: Option<String>,
    pub history_length: i64,
    /// Steps scheduled and not completed: (activity type, state, attempt,
    /// last failure).
    pub pending_steps: Vec<Value>,
    /// A workflow task being retried: its attempt and why the last one
    /// failed (workflow code over its budget, nondeterminism, a host
    /// error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_task_failure: Option<Value>,
}

impl RunState {
    /// The live progress of the step running now, from its heartbeats.
    pub fn step_progress(&self) -> Option<&Value> {
        self.pending_steps
            .iter()
            .filter_map(|s| s.get("progress"))
            .find(|p| p.is_object())
    }
}

fn ts(t: Option<prost_wkt_types::Timestamp>) -> Option<String> {
    let t = t?;
    let st = std::time::SystemTime::try_from(t).ok()?;
    let odt: time::OffsetDateTime = st.into();
    odt.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

fn status_name(s: i32) -> String {
    match WorkflowExecutionStatus::try_from(s).unwrap_or(WorkflowExecutionStatus::Unspecified) {
        WorkflowExecutionStatus::Running => "running",
        WorkflowExecutionStatus::Completed => "completed",
        WorkflowExecutionStatus::Failed => "failed",
        WorkflowExecutionStatus::Canceled => "cancelled",
        WorkflowExecutionStatus::Terminated => "terminated",
        WorkflowExecutionStatus::ContinuedAsNew => "continued-as-new",
        WorkflowExecutionStatus::TimedOut => "timed-out",
        _ => "unknown",
    }
    .into()
}

fn rpc_error(what: &str, run_id: &str, e: tonic::Status) -> anyhow::Error {
    match e.code() {
        tonic::Code::NotFound => {
            anyhow::anyhow!("no run `{run_id}` in Temporal ({what}: {})", e.message())
        }
        tonic::Code::Unavailable => anyhow::anyhow!(
            "Temporal is unavailable ({what}: {}); is the server running?",
            e.message()
        ),
        _ => anyhow::anyhow!("{what} `{run_id}` failed: {}", e.message()),
    }
}

impl RunClient {
    /// Connects (one attempt, 10 s) to the Temporal frontend.
    pub async fn connect(
        temporal: &TemporalConfig,
        blobs: Arc<dyn BlobStore>,
    ) -> anyhow::Result<Self> {
        let url = temporalio_client::Url::parse(&temporal.address)
            .with_context(|| format!("temporal.address `{}` is not a URL", temporal.address))?;
        let options = ConnectionOptions::new(url)
            .identity(format!("toolhost-cli@{}", std::process::id()))
            .build();
        let conn = tokio::time::timeout(Duration::from_secs(10), Connection::connect(options))
            .await
            .map_err(|_| anyhow::anyhow!("timed out"))
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| {
                format!(
                    "cannot reach Temporal at {}; start it (`cargo xtask services up` for a local one) or set [temporal] address",
                    temporal.address
                )
            })?;
        Ok(Self::over(conn, temporal, blobs))
    }

    /// A client over an open connection (a host's own).
    pub fn over(conn: Connection, temporal: &TemporalConfig, blobs: Arc<dyn BlobStore>) -> Self {
        RunClient {
            conn,
            namespace: temporal.namespace.clone(),
            address: temporal.address.clone(),
            prefix: temporal.task_queue_prefix.clone(),
            blobs,
        }
    }

    fn svc(&self) -> Box<dyn WorkflowService> {
        self.conn.workflow_service()
    }

    fn execution(run_id: &str) -> Option<WorkflowExecution> {
        Some(WorkflowExecution {
            workflow_id: run_id.to_string(),
            run_id: String::new(),
        })
    }

    /// Starts run `run_id` of `wf` with `input`; its execution timeout is
    /// the workflow's own plus two minutes for the start and the results.
    pub async fn start(
        &self,
        wf: &PublishedWorkflow,
        run_id: &str,
        input: &WorkflowInput,
    ) -> anyhow::Result<()> {
        self.start_workflow(
            &wf.name,
            &wf.task_queue,
            run_id,
            input,
            Duration::from_secs(u64::from(wf.timeout_secs.max(1)) + 120),
        )
        .await
    }

    /// Starts workflow `workflow_type` on `task_queue` as `run_id`, with
    /// `input` as its one JSON argument.
    pub async fn start_workflow(
        &self,
        workflow_type: &str,
        task_queue: &str,
        run_id: &str,
        input: &impl Serialize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        self.start_with(
            workflow_type,
            task_queue,
            run_id,
            input,
            StartOptions {
                timeout,
                ..Default::default()
            },
        )
        .await?;
        Ok(())
    }

    /// Starts `workflow_type` on `task_queue` as `run_id` with a memo and
    /// search attributes; `false` when `options.reject_duplicate` is set and
    /// a run of that id exists (running or closed).
    pub async fn start_with(
        &self,
        workflow_type: &str,
        task_queue: &str,
        run_id: &str,
        input: &impl Serialize,
        options: StartOptions,
    ) -> anyhow::Result<bool> {
        use temporalio_common::protos::temporal::api::enums::v1::{
            WorkflowIdConflictPolicy, WorkflowIdReusePolicy,
        };
        let req = StartWorkflowExecutionRequest {
            namespace: self.namespace.clone(),
            workflow_id: run_id.to_string(),
            workflow_type: Some(WorkflowType {
                name: workflow_type.to_string(),
            }),
            task_queue: Some(TaskQueue {
                name: task_queue.to_string(),
                kind: TaskQueueKind::Normal as i32,
                normal_name: String::new(),
            }),
            input: Some(Payloads {
                payloads: vec![input.as_json_payload()?],
            }),
            workflow_execution_timeout: prost_wkt_types::Duration::try_from(options.timeout).ok(),
            identity: "toolhost-serve".into(),
            request_id: uuid::Uuid::new_v4().to_string(),
            memo: options.memo,
            search_attributes: options.search_attributes,
            workflow_id_reuse_policy: if options.reject_duplicate {
                WorkflowIdReusePolicy::RejectDuplicate as i32
            } else {
                WorkflowIdReusePolicy::Unspecified as i32
            },
            workflow_id_conflict_policy: if options.reject_duplicate {
                WorkflowIdConflictPolicy::UseExisting as i32
            } else {
                WorkflowIdConflictPolicy::Unspecified as i32
            },
            ..Default::default()
        };
        match self
            .svc()
            .start_workflow_execution(tonic::Request::new(req))
            .await
        {
            Ok(r) => Ok(r.into_inner().started || !options.reject_duplicate),
            Err(e) if options.reject_duplicate && e.code() == tonic::Code::AlreadyExists => {
                Ok(false)
            }
            Err(e) => Err(rpc_error("start", run_id, e)),
        }
    }

    /// Registers the custom search attributes `names` (`true`: a keyword
    /// list, else a keyword) unless they exist, and waits until Temporal
    /// lists them.
    pub async fn ensure_search_attributes(&self, names: &[(&str, bool)]) -> anyhow::Result<()> {
        use temporalio_common::protos::temporal::api::enums::v1::IndexedValueType;
        use temporalio_common::protos::temporal::api::operatorservice::v1::{
            AddSearchAttributesRequest, ListSearchAttributesRequest,
        };
        let list = || async {
            self.conn
                .operator_service()
                .list_search_attributes(tonic::Request::new(ListSearchAttributesRequest {
                    namespace: self.namespace.clone(),
                }))
                .await
                .map(|r| r.into_inner().custom_attributes)
                .map_err(|e| rpc_error("list search attributes of", &self.namespace, e))
        };
        let existing = list().await?;
        let missing: std::collections::HashMap<String, i32> = names
            .iter()
            .filter(|(n, _)| !existing.contains_key(*n))
            .map(|(n, is_list)| {
                let t = if *is_list {
                    IndexedValueType::KeywordList
                } else {
                    IndexedValueType::Keyword
                };
                (n.to_string(), t as i32)
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let added = self
            .conn
            .operator_service()
            .add_search_attributes(tonic::Request::new(AddSearchAttributesRequest {
                search_attributes: missing.clone(),
                namespace: self.namespace.clone(),
            }))
            .await;
        match added {
            Ok(_) => {}
            // Another replica added them first.
            Err(e) if e.code() == tonic::Code::AlreadyExists => {}
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "Temporal refused to add the search attributes {:?}: {}; add them with `temporal operator search-attribute create --name NAME --type Keyword` (ToolhostLabels: KeywordList)",
                    missing.keys().collect::<Vec<_>>(),
                    e.message()
                ));
            }
        }
        for _ in 0..60 {
            let now = list().await?;
            if missing.keys().all(|n| now.contains_key(n)) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bail!(
            "Temporal accepted the search attributes {:?} but does not list them after 30 s",
            missing.keys().collect::<Vec<_>>()
        )
    }

    /// Runs matching the visibility query `query`, one page of at most
    /// `limit` from `token`, and the next page's token (empty: the last).
    pub async fn list_page(
        &self,
        query: &str,
        limit: usize,
        token: Vec<u8>,
    ) -> anyhow::Result<(Vec<(WorkflowExecutionInfo, RunState)>, Vec<u8>)> {
        let resp = self
            .svc()
            .list_workflow_executions(tonic::Request::new(ListWorkflowExecutionsRequest {
                namespace: self.namespace.clone(),
                page_size: limit.clamp(1, 1000) as i32,
                next_page_token: token,
                query: query.to_string(),
            }))
            .await
            .map_err(|e| match e.code() {
                tonic::Code::InvalidArgument => anyhow::anyhow!(
                    "Temporal refused the listing ({}); a cursor only works with the filters it was given with",
                    e.message()
                ),
                _ => rpc_error("list", "*", e),
            })?
            .into_inner();
        let runs = resp
            .executions
            .into_iter()
            .map(|info| {
                let state = Self::state_of(&info);
                (info, state)
            })
            .collect();
        Ok((runs, resp.next_page_token))
    }

    /// How many runs match the visibility query `query`.
    pub async fn count(&self, query: &str) -> anyhow::Result<i64> {
        Ok(self
            .svc()
            .count_workflow_executions(tonic::Request::new(CountWorkflowExecutionsRequest {
                namespace: self.namespace.clone(),
                query: query.to_string(),
            }))
            .await
            .map_err(|e| rpc_error("count", "*", e))?
            .into_inner()
            .count)
    }

    fn state_of(info: &WorkflowExecutionInfo) -> RunState {
        RunState {
            run_id: info
                .execution
                .as_ref()
                .map(|e| e.workflow_id.clone())
                .unwrap_or_default(),
            workflow: info
                .r#type
                .as_ref()
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            status: status_name(info.status),
            task_queue: info.task_queue.clone(),
            started: ts(info.start_time),
            closed: ts(info.close_time),
            history_length: info.history_length,
            pending_steps: vec![],
            workflow_task_failure: None,
        }
    }

    /// What Temporal knows of `run_id`, with its execution info (memo and
    /// search attributes).
    pub async fn describe_full(
        &self,
        run_id: &str,
    ) -> anyhow::Result<(WorkflowExecutionInfo, RunState)> {
        let resp = self
            .describe_raw(run_id)
            .await
            .map_err(|e| rpc_error("describe", run_id, e))?;
        let info = resp.workflow_execution_info.unwrap_or_default();
        let state = Self::state_of(&info);
        Ok((info, state))
    }

    async fn describe_raw(
        &self,
        run_id: &str,
    ) -> Result<DescribeWorkflowExecutionResponse, tonic::Status> {
        self.svc()
            .describe_workflow_execution(tonic::Request::new(DescribeWorkflowExecutionRequest {
                namespace: self.namespace.clone(),
                execution: Self::execution(run_id),
            }))
            .await
            .map(tonic::Response::into_inner)
    }

    /// What Temporal knows of `run_id`.
    pub async fn describe(&self, run_id: &str) -> anyhow::Result<RunState> {
        let resp = self
            .describe_raw(run_id)
            .await
            .map_err(|e| rpc_error("describe", run_id, e))?;
        let info = resp.workflow_execution_info.unwrap_or_default();
        let workflow_task_failure = match resp.pending_workflow_task {
            Some(t) if t.attempt > 1 => Some(serde_json::json!({
                "attempt": t.attempt,
                "last_failure": self.last_workflow_task_failure(run_id).await,
            })),
            _ => None,
        };
        Ok(RunState {
            workflow_task_failure,
            run_id: run_id.to_string(),
            workflow: info.r#type.map(|t| t.name).unwrap_or_default(),
            status: status_name(info.status),
            task_queue: info.task_queue,
            started: ts(info.start_time),
            closed: ts(info.close_time),
            history_length: info.history_length,
            pending_steps: resp
                .pending_activities
                .into_iter()
                .map(|a| {
                    // The host's heartbeats carry the step's live progress.
                    let beat = a
                        .heartbeat_details
                        .and_then(|d| d.payloads.into_iter().next())
                        .and_then(|p| Value::from_json_payload(&p).ok());
                    serde_json::json!({
                        "type": a.activity_type.map(|t| t.name).unwrap_or_default(),
                        "attempt": a.attempt,
                        "last_failure": a.last_failure.map(|f| f.message),
                        "last_worker": a.last_worker_identity,
                        "last_heartbeat": ts(a.last_heartbeat_time),
                        "progress": beat.as_ref().and_then(|b| b.get("progress")).filter(|p| !p.is_null()),
                    })
                })
                .collect(),
        })
    }

    /// The failure message of the latest failed workflow task of
    /// `run_id`, from the end of its history; `None` when there is none
    /// among the last 50 events or history cannot be read.
    async fn last_workflow_task_failure(&self, run_id: &str) -> Option<String> {
        let resp = self
            .svc()
            .get_workflow_execution_history_reverse(tonic::Request::new(
                GetWorkflowExecutionHistoryReverseRequest {
                    namespace: self.namespace.clone(),
                    execution: Self::execution(run_id),
                    maximum_page_size: 50,
                    next_page_token: vec![],
                },
            ))
            .await
            .ok()?
            .into_inner();
        resp.history?
            .events
            .into_iter()
            .find_map(|e| match e.attributes {
                Some(Attributes::WorkflowTaskFailedEventAttributes(a)) => {
                    Some(a.failure.map(|f| f.message).unwrap_or_default())
                }
                _ => None,
            })
    }

    /// Whether `run_id` has ended, or is unknown to Temporal (never
    /// started, or past its retention).
    pub async fn is_over(&self, run_id: &str) -> anyhow::Result<bool> {
        match self.describe_raw(run_id).await {
            Ok(r) => Ok(r
                .workflow_execution_info
                .is_some_and(|i| i.status != WorkflowExecutionStatus::Running as i32)),
            Err(e) if e.code() == tonic::Code::NotFound => Ok(true),
            Err(e) => Err(rpc_error("describe", run_id, e)),
        }
    }

    /// Answers query `name` (`status`, `progress`, `findings`) of a running
    /// run. A query needs a host to answer it: this gives up after 5 s.
    pub async fn query(&self, run_id: &str, name: &str) -> anyhow::Result<Value> {
        self.query_with(run_id, name, None).await
    }

    /// [`RunClient::query`] with one JSON argument.
    pub async fn query_with(
        &self,
        run_id: &str,
        name: &str,
        arg: Option<Value>,
    ) -> anyhow::Result<Value> {
        tokio::time::timeout(Duration::from_secs(5), self.query_once(run_id, name, arg))
            .await
            .map_err(|_| {
                anyhow::anyhow!("no host answered query `{name}` of {run_id} within 5 s")
            })?
    }

    async fn query_once(
        &self,
        run_id: &str,
        name: &str,
        arg: Option<Value>,
    ) -> anyhow::Result<Value> {
        let resp = self
            .svc()
            .query_workflow(tonic::Request::new(QueryWorkflowRequest {
                namespace: self.namespace.clone(),
                execution: Self::execution(run_id),
                query: Some(WorkflowQuery {
                    query_type: name.to_string(),
                    query_args: match arg {
                        Some(a) => Some(Payloads {
                            payloads: vec![a.as_json_payload()?],
                        }),
                        None => None,
                    },
                    header: None,
                }),
                ..Default::default()
            }))
            .await
            .map_err(|e| rpc_error("query", run_id, e))?
            .into_inner();
        let payload = resp
            .query_result
            .and_then(|p| p.payloads.into_iter().next())
            .ok_or_else(|| anyhow::anyhow!("empty answer to query `{name}`"))?;
        Ok(Value::from_json_payload(&payload)?)
    }

    /// Asks Temporal to cancel `run_id`.
    pub async fn cancel(&self, run_id: &str) -> anyhow::Result<()> {
        self.svc()
            .request_cancel_workflow_execution(tonic::Request::new(
                RequestCancelWorkflowExecutionRequest {
                    namespace: self.namespace.clone(),
                    workflow_execution: Self::execution(run_id),
                    identity: "toolhost-cli".into(),
                    request_id: uuid::Uuid::new_v4().to_string(),
                    reason: "cancelled with `toolhost cancel`".into(),
                    ..Default::default()
                },
            ))
            .await
            .map_err(|e| rpc_error("cancel", run_id, e))?;
        Ok(())
    }

    /// Runs, newest first, optionally of one workflow and/or status.
    pub async fn list(
        &self,
        workflow: Option<&str>,
        status: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<RunState>> {
        let mut clauses = vec![];
        if let Some(w) = workflow {
            crate::engine::check_run_id(w).map_err(anyhow::Error::msg)?;
            clauses.push(format!("WorkflowType = '{w}'"));
        } else {
            crate::engine::check_run_id(&self.prefix).map_err(anyhow::Error::msg)?;
            clauses.push(format!("TaskQueue STARTS_WITH '{}-'", self.prefix));
        }
        if let Some(s) = status {
            let t = match s {
                "running" => "Running",
                "completed" | "succeeded" => "Completed",
                "failed" => "Failed",
                "cancelled" | "canceled" => "Canceled",
                "terminated" => "Terminated",
                "timed-out" => "TimedOut",
                other => bail!(
                    "unknown status `{other}`; use running, completed, failed, cancelled, terminated or timed-out"
                ),
            };
            clauses.push(format!("ExecutionStatus = '{t}'"));
        }
        let mut out = Vec::new();
        let mut token = Vec::new();
        loop {
            let resp = self
                .svc()
                .list_workflow_executions(tonic::Request::new(ListWorkflowExecutionsRequest {
                    namespace: self.namespace.clone(),
                    page_size: 100,
                    next_page_token: token,
                    query: clauses.join(" AND "),
                }))
                .await
                .map_err(|e| rpc_error("list", "*", e))?
                .into_inner();
            for info in resp.executions {
                out.push(RunState {
                    run_id: info.execution.map(|e| e.workflow_id).unwrap_or_default(),
                    workflow: info.r#type.map(|t| t.name).unwrap_or_default(),
                    status: status_name(info.status),
                    task_queue: info.task_queue,
                    started: ts(info.start_time),
                    closed: ts(info.close_time),
                    history_length: info.history_length,
                    pending_steps: vec![],
                    workflow_task_failure: None,
                });
            }
            token = resp.next_page_token;
            if token.is_empty() || out.len() >= limit {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Hosts polling `task_queue` for workflow tasks.
    pub async fn pollers(&self, task_queue: &str) -> anyhow::Result<Vec<String>> {
        let resp = self
            .svc()
            .describe_task_queue(tonic::Request::new(DescribeTaskQueueRequest {
                namespace: self.namespace.clone(),
                task_queue: Some(TaskQueue {
                    name: task_queue.to_string(),
                    kind: TaskQueueKind::Normal as i32,
                    normal_name: String::new(),
                }),
                task_queue_type: TaskQueueType::Workflow as i32,
                ..Default::default()
            }))
            .await
            .map_err(|e| rpc_error("describe task queue", task_queue, e))?
            .into_inner();
        Ok(resp.pollers.into_iter().map(|p| p.identity).collect())
    }

    /// Waits for `run_id` to close and returns its output (also for failed
    /// and cancelled runs, whose output travels in the failure details).
    pub async fn wait(&self, run_id: &str) -> anyhow::Result<WorkflowOutput> {
        let from = |p: Option<Payloads>| -> Option<WorkflowOutput> {
            p.and_then(|p| p.payloads.into_iter().next())
                .and_then(|p| WorkflowOutput::from_json_payload(&p).ok())
        };
        let output = match self.wait_close(run_id).await? {
            Attributes::WorkflowExecutionCompletedEventAttributes(a) => from(a.result),
            Attributes::WorkflowExecutionFailedEventAttributes(a) => {
                let f = a.failure.unwrap_or_default();
                let details = match f.failure_info {
                    Some(temporalio_common::protos::temporal::api::failure::v1::failure::FailureInfo::ApplicationFailureInfo(i)) => i.details,
                    _ => None,
                };
                match from(details) {
                    Some(o) => Some(o),
                    None => bail!("run {run_id} failed: {}", f.message),
                }
            }
            Attributes::WorkflowExecutionCanceledEventAttributes(a) => from(a.details),
            Attributes::WorkflowExecutionTimedOutEventAttributes(_) => {
                bail!("run {run_id} timed out (its execution timeout passed)")
            }
            Attributes::WorkflowExecutionTerminatedEventAttributes(a) => {
                bail!("run {run_id} was terminated: {}", a.reason)
            }
            other => bail!("run {run_id} closed with an unexpected event: {other:?}"),
        };
        output.ok_or_else(|| {
            anyhow::anyhow!(
                "run {run_id} ended without a Toolhost result (was it started with another input?)"
            )
        })
    }

    /// Waits for `run_id` to close (a long poll on its close event) and
    /// returns that event.
    pub async fn wait_close(&self, run_id: &str) -> anyhow::Result<Attributes> {
        loop {
            let resp = self
                .svc()
                .get_workflow_execution_history(tonic::Request::new(
                    GetWorkflowExecutionHistoryRequest {
                        namespace: self.namespace.clone(),
                        execution: Self::execution(run_id),
                        wait_new_event: true,
                        history_event_filter_type: HistoryEventFilterType::CloseEvent as i32,
                        ..Default::default()
                    },
                ))
                .await;
            let resp = match resp {
                Ok(r) => r.into_inner(),
                Err(e) if e.code() == tonic::Code::DeadlineExceeded => continue,
                Err(e) => return Err(rpc_error("wait for", run_id, e)),
            };
            let Some(event) = resp.history.and_then(|h| h.events.into_iter().next_back()) else {
                continue;
            };
            match event.attributes {
                Some(
                    a @ (Attributes::WorkflowExecutionCompletedEventAttributes(_)
                    | Attributes::WorkflowExecutionFailedEventAttributes(_)
                    | Attributes::WorkflowExecutionCanceledEventAttributes(_)
                    | Attributes::WorkflowExecutionTimedOutEventAttributes(_)
                    | Attributes::WorkflowExecutionTerminatedEventAttributes(_)
                    | Attributes::WorkflowExecutionContinuedAsNewEventAttributes(_)),
                ) => return Ok(a),
                _ => continue,
            }
        }
    }

    /// The connection (for other Temporal calls).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The Temporal address (for messages).
    pub fn address(&self) -> &str {
        &self.address
    }
}
