//! Runs started through the API on the distributed engine. Nothing here
//! lives only in this process, so any number of `toolhost serve` replicas
//! answer any request:
//!
//! * a run's owner, labels and inputs travel with it in Temporal: in its
//!   memo (`toolhost`), and in the search attributes `ToolhostTenant`,
//!   `ToolhostSubmitter` and `ToolhostLabels` that listing and quotas
//!   query;
//! * an idempotency key names the workflow id, so two replicas given one
//!   key start one run (Temporal refuses the second start);
//! * targets and results are in the blob store under `tenants/<tenant>/`
//!   (the hosts write there: [`crate::distributed::WorkflowInput::tenant`]);
//! * event numbers are positions in the run's own log and findings, not a
//!   counter of this process, so a follower resumes on any replica.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use temporalio_common::protos::coresdk::{AsJsonPayloadExt, FromJsonPayloadExt};
use temporalio_common::protos::temporal::api::common::v1::{Memo, Payload, SearchAttributes};
use temporalio_common::protos::temporal::api::workflow::v1::WorkflowExecutionInfo;

use super::runs::{ApiStatus, RunMeta, Start};
use crate::distributed::client::{RunClient, RunState, StartOptions};
use crate::distributed::components::{PublishedWorkflow, component_key, published};
use crate::distributed::{TemporalConfig, WorkflowInput};
use crate::engine::{RunRecord, StartError, params};
use crate::storage::{BlobStore, Prefixed};

/// The search attribute that holds a run's tenant.
pub const SA_TENANT: &str = "ToolhostTenant";
/// The search attribute that holds the token id that started a run.
pub const SA_SUBMITTER: &str = "ToolhostSubmitter";
/// The search attribute that holds a run's labels, as `key=value`.
pub const SA_LABELS: &str = "ToolhostLabels";
const MEMO: &str = "toolhost";

/// What the API records with a run in its memo.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunMemo {
    tenant: String,
    created_by: String,
    created_at: String,
    params: Value,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    retry_of: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    timeout_secs: Option<u64>,
}

impl RunMemo {
    /// The API's meta of run `run_id` of `workflow` with this memo.
    fn into_meta(
        self,
        run_id: String,
        workflow: String,
        status: ApiStatus,
        ended_at: Option<String>,
    ) -> RunMeta {
        RunMeta {
            run_id,
            tenant: self.tenant,
            workflow,
            digest: self.digest,
            params: self.params,
            target: self.target,
            labels: self.labels,
            created_at: self.created_at,
            created_by: self.created_by,
            retry_of: self.retry_of,
            idempotency_key: self.idempotency_key,
            status,
            ended_at,
            error: None,
            timeout_secs: self.timeout_secs,
        }
    }
}

/// The blob store as seen by one tenant: `tenants/<tenant>/...`.
pub fn tenant_store(blobs: &Arc<dyn BlobStore>, tenant: &str) -> Arc<dyn BlobStore> {
    Arc::new(Prefixed::new(blobs.clone(), format!("tenants/{tenant}/")))
}

/// Filters of a run listing.
#[derive(Debug, Default)]
pub struct ListFilter<'a> {
    /// Only this tenant (none: every tenant, for admins).
    pub tenant: Option<&'a str>,
    pub workflow: Option<&'a str>,
    pub status: Option<ApiStatus>,
    pub label: Option<(&'a str, &'a str)>,
    pub since: Option<&'a str>,
    pub until: Option<&'a str>,
}

/// The distributed engine behind the API.
pub struct Remote {
    client: RunClient,
    blobs: Arc<dyn BlobStore>,
    temporal: TemporalConfig,
}

fn quoted(what: &str, v: &str) -> Result<String, String> {
    if v.contains(['\'', '"', '\\']) || v.chars().any(char::is_control) {
        return Err(format!(
            "the {what} filter `{}` holds a quote or backslash, which a Temporal visibility query cannot carry; filter on another field",
            v.escape_debug()
        ));
    }
    Ok(format!("'{v}'"))
}

/// Temporal's name for an API status in a visibility query.
fn execution_status(s: ApiStatus) -> &'static str {
    match s {
        ApiStatus::Queued | ApiStatus::Running => "Running",
        ApiStatus::Succeeded => "Completed",
        ApiStatus::Failed => "Failed",
        ApiStatus::Cancelled => "Canceled",
        ApiStatus::TimedOut => "TimedOut",
    }
}

/// The API status of a Temporal status (`RunState::status`).
fn api_status(s: &str) -> ApiStatus {
    match s {
        "running" => ApiStatus::Running,
        "completed" => ApiStatus::Succeeded,
        "cancelled" => ApiStatus::Cancelled,
        "timed-out" => ApiStatus::TimedOut,
        _ => ApiStatus::Failed,
    }
}

impl Remote {
    /// Connects to Temporal and makes sure the search attributes exist.
    pub async fn connect(
        temporal: &TemporalConfig,
        blobs: Arc<dyn BlobStore>,
    ) -> anyhow::Result<Self> {
        let client = RunClient::connect(temporal, blobs.clone()).await?;
        client
            .ensure_search_attributes(&[
                (SA_TENANT, false),
                (SA_SUBMITTER, false),
                (SA_LABELS, true),
            ])
            .await
            .context("cannot register the API's search attributes in Temporal")?;
        Ok(Remote {
            client,
            blobs,
            temporal: temporal.clone(),
        })
    }

    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    pub fn client(&self) -> &RunClient {
        &self.client
    }

    /// The workflow `name` as its hosts published it.
    pub async fn workflow(&self, name: &str) -> Result<PublishedWorkflow, StartError> {
        match published(self.blobs.as_ref(), name).await {
            Ok(wf) => Ok(wf),
            Err(e) => {
                let available = crate::distributed::components::list_published(self.blobs.as_ref())
                    .await
                    .map(|l| l.join(", "))
                    .unwrap_or_default();
                if available.split(", ").any(|n| n == name) {
                    Err(StartError::Setup(e))
                } else {
                    Err(StartError::UnknownWorkflow {
                        name: name.into(),
                        available,
                    })
                }
            }
        }
    }

    /// Checks and starts a run; returns its meta and whether an earlier
    /// request with the same idempotency key had started it.
    pub async fn start(&self, start: Start) -> Result<(RunMeta, bool), StartError> {
        let wf = self.workflow(&start.workflow).await?;
        if let Some(digest) = &start.digest
            && *digest != wf.digest
        {
            // An older version runs if its component is still stored.
            let stored = crate::storage::pack::is_sha256_hex(digest)
                && self
                    .blobs
                    .exists(&component_key(digest))
                    .await
                    .map_err(|e| StartError::Setup(e.into()))?;
            if !stored {
                return Err(StartError::Setup(anyhow::anyhow!(
                    "workflow `{}` has no stored version with the pinned digest {digest} (the current one is {}); pin a digest GET /v1/workflows/{} lists, or leave the pin out",
                    start.workflow,
                    wf.digest,
                    start.workflow
                )));
            }
        }
        let validator = crate::toolbox::validate::compile_schema(&wf.parameters_schema)
            .map_err(StartError::Setup)?;
        params::check(&validator, &wf.name, &start.params)?;
        if let Some(sha) = &start.target {
            let key = crate::storage::pack::target_key(sha);
            let stored = tenant_store(&self.blobs, &start.tenant)
                .exists(&key)
                .await
                .map_err(|e| StartError::Setup(e.into()))?;
            if !stored {
                return Err(StartError::Target(anyhow::anyhow!(
                    "target {sha} is not uploaded; POST it to /v1/targets first"
                )));
            }
        }
        // A key names the run: Temporal starts one workflow per id.
        let run_id = match &start.idempotency_key {
            Some(key) => {
                use sha2::Digest as _;
                let h = sha2::Sha256::digest(format!("{}\0{key}", start.tenant));
                format!("{}-{}", wf.name, &hex::encode(h)[..12])
            }
            None => crate::engine::new_run_id(&wf.name),
        };
        let memo = RunMemo {
            tenant: start.tenant.clone(),
            created_by: start.token_id.clone(),
            created_at: crate::util::now_rfc3339(),
            params: start.params.clone(),
            target: start.target.clone(),
            digest: start.digest.clone(),
            labels: start.labels.clone(),
            retry_of: start.retry_of.clone(),
            idempotency_key: start.idempotency_key.clone(),
            timeout_secs: start.timeout_secs,
        };
        let input = WorkflowInput {
            params: start.params.clone(),
            target: start.target.clone(),
            digest: Some(start.digest.clone().unwrap_or_else(|| wf.digest.clone())),
            target_label: Some(
                start
                    .target
                    .as_ref()
                    .map(|s| format!("sha256:{s}"))
                    .unwrap_or_else(|| "(none)".into()),
            ),
            tenant: Some(start.tenant.clone()),
            timeout_secs: start.timeout_secs,
        };
        let json_payload = |v: &Value| -> Result<Payload, StartError> {
            v.as_json_payload()
                .map_err(|e| StartError::Setup(anyhow::anyhow!("{e}")))
        };
        let labels: Vec<String> = start
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut indexed = std::collections::HashMap::new();
        indexed.insert(SA_TENANT.to_string(), json_payload(&json!(start.tenant))?);
        indexed.insert(
            SA_SUBMITTER.to_string(),
            json_payload(&json!(start.token_id))?,
        );
        if !labels.is_empty() {
            indexed.insert(SA_LABELS.to_string(), json_payload(&json!(labels))?);
        }
        let memo_value = serde_json::to_value(&memo).map_err(|e| StartError::Setup(e.into()))?;
        let mut fields = std::collections::HashMap::new();
        fields.insert(MEMO.to_string(), json_payload(&memo_value)?);
        let timeout =
            u64::from(wf.timeout_secs.max(1)).min(start.timeout_secs.unwrap_or(u64::MAX).max(1));
        let started = self
            .client
            .start_with(
                &wf.name,
                &wf.task_queue,
                &run_id,
                &input,
                StartOptions {
                    timeout: Duration::from_secs(timeout + 120),
                    memo: Some(Memo { fields }),
                    search_attributes: Some(SearchAttributes {
                        indexed_fields: indexed,
                    }),
                    reject_duplicate: start.idempotency_key.is_some(),
                },
            )
            .await
            .map_err(StartError::Setup)?;
        if !started {
            let meta = self.meta(&run_id).await.ok_or_else(|| {
                StartError::Setup(anyhow::anyhow!(
                    "the run of this idempotency key ({run_id}) cannot be read back from Temporal"
                ))
            })?;
            return Ok((meta, true));
        }
        let meta = memo.into_meta(run_id, wf.name, ApiStatus::Running, None);
        Ok((meta, false))
    }

    fn meta_of(info: &WorkflowExecutionInfo, state: &RunState) -> RunMeta {
        let memo: Option<RunMemo> = info
            .memo
            .as_ref()
            .and_then(|m| m.fields.get(MEMO))
            .and_then(|p| Value::from_json_payload(p).ok())
            .and_then(|v| serde_json::from_value(v).ok());
        // A run started without the API (by an operator, on Temporal)
        // belongs to no tenant: only admins see it.
        let memo = memo.unwrap_or_else(|| RunMemo {
            tenant: String::new(),
            created_by: String::new(),
            created_at: state.started.clone().unwrap_or_default(),
            params: Value::Null,
            target: None,
            digest: None,
            labels: BTreeMap::new(),
            retry_of: None,
            idempotency_key: None,
            timeout_secs: None,
        });
        memo.into_meta(
            state.run_id.clone(),
            state.workflow.clone(),
            api_status(&state.status),
            state.closed.clone(),
        )
    }

    /// The meta of run `id`, or `None` when Temporal does not know it.
    pub async fn meta(&self, id: &str) -> Option<RunMeta> {
        crate::engine::check_run_id(id).ok()?;
        let (info, state) = self.client.describe_full(id).await.ok()?;
        let mut meta = Self::meta_of(&info, &state);
        if meta.status.is_final() {
            // The record says what the workflow status cannot: a run that
            // failed because it timed out, and why it did not succeed.
            if let Some(record) = self.record(&meta).await {
                meta.status = record.status.into();
                meta.error = record.error;
            } else if meta.error.is_none() {
                meta.error = Some(format!("the run ended ({}) without a record", state.status));
            }
        }
        Some(meta)
    }

    /// The state Temporal holds of a live run (pending steps and their
    /// progress).
    pub async fn state(&self, id: &str) -> Option<RunState> {
        self.client.describe(id).await.ok()
    }

    /// A page of runs, newest first, and the cursor of the next page.
    pub async fn page(
        &self,
        filter: &ListFilter<'_>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<RunMeta>, Option<String>), String> {
        let mut clauses = vec![format!(
            "TaskQueue STARTS_WITH {}",
            quoted(
                "task queue",
                &format!("{}-", self.temporal.task_queue_prefix)
            )?
        )];
        if let Some(t) = filter.tenant {
            clauses.push(format!("{SA_TENANT} = {}", quoted("tenant", t)?));
        }
        if let Some(w) = filter.workflow {
            clauses.push(format!("WorkflowType = {}", quoted("workflow", w)?));
        }
        if let Some(s) = filter.status {
            clauses.push(format!("ExecutionStatus = '{}'", execution_status(s)));
        }
        if let Some((k, v)) = filter.label {
            clauses.push(format!(
                "{SA_LABELS} = {}",
                quoted("label", &format!("{k}={v}"))?
            ));
        }
        if let Some(s) = filter.since {
            clauses.push(format!("StartTime >= {}", quoted("since", s)?));
        }
        if let Some(u) = filter.until {
            clauses.push(format!("StartTime < {}", quoted("until", u)?));
        }
        let token = match cursor {
            None => Vec::new(),
            Some(c) => {
                use base64::Engine as _;
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(c)
                    .map_err(|_| {
                        "`cursor` is not one this server gave; start again without it".to_string()
                    })?
            }
        };
        let (infos, next) = self
            .client
            .list_page(&clauses.join(" AND "), limit, token)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let metas = infos
            .iter()
            .map(|(info, state)| Self::meta_of(info, state))
            .collect();
        let next = (!next.is_empty()).then(|| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(next)
        });
        Ok((metas, next))
    }

    /// Runs `token_id` started that are still live.
    pub async fn live_count_by(&self, token_id: &str) -> anyhow::Result<usize> {
        let q = format!(
            "{SA_SUBMITTER} = {} AND ExecutionStatus = 'Running'",
            quoted("token", token_id).map_err(anyhow::Error::msg)?
        );
        Ok(self.client.count(&q).await? as usize)
    }

    pub async fn cancel(&self, id: &str) -> anyhow::Result<()> {
        self.client.cancel(id).await
    }

    /// The tenant's view of the blob store for a run.
    fn store_of(&self, meta: &RunMeta) -> Arc<dyn BlobStore> {
        if meta.tenant.is_empty() {
            self.blobs.clone()
        } else {
            tenant_store(&self.blobs, &meta.tenant)
        }
    }

    /// The record of a finished run, from the blob store.
    pub async fn record(&self, meta: &RunMeta) -> Option<RunRecord> {
        RunRecord::load(self.store_of(meta).as_ref(), &meta.run_id)
            .await
            .ok()
    }

    /// Answers query `name` of a live run (none if no host answered).
    pub async fn query(&self, id: &str, name: &str, arg: Option<Value>) -> Option<Value> {
        self.client.query_with(id, name, arg).await.ok()
    }

    /// The run log: from the blob store once the run ended, else what the
    /// run's host has journaled so far.
    pub async fn log(&self, meta: &RunMeta) -> anyhow::Result<Vec<u8>> {
        if meta.status.is_final() {
            return match self
                .store_of(meta)
                .get(&RunRecord::key(&meta.run_id, "log.jsonl"))
                .await
            {
                Ok(b) => Ok(b),
                Err(crate::storage::StoreError::NotFound(_)) => Ok(Vec::new()),
                Err(e) => Err(e.into()),
            };
        }
        let mut out = Vec::new();
        let mut from = 0u64;
        loop {
            let Some(page) = self
                .query(
                    &meta.run_id,
                    crate::distributed::QUERY_LOG,
                    Some(json!(from)),
                )
                .await
            else {
                break;
            };
            let lines = page["lines"].as_array().cloned().unwrap_or_default();
            if lines.is_empty() {
                break;
            }
            for l in &lines {
                out.extend_from_slice(l.to_string().as_bytes());
                out.push(b'\n');
            }
            from += lines.len() as u64;
        }
        Ok(out)
    }

    /// Artifact names and sizes.
    pub async fn artifacts(&self, meta: &RunMeta) -> anyhow::Result<Vec<(String, u64)>> {
        let store = self.store_of(meta);
        let prefix = RunRecord::key(&meta.run_id, "artifacts/");
        let mut out = Vec::new();
        for key in store.list(&prefix).await? {
            let name = key[prefix.len()..].to_string();
            if name.is_empty() || name.contains('/') {
                continue;
            }
            let size = store.size(&key).await?.unwrap_or(0);
            out.push((name, size));
        }
        Ok(out)
    }

    /// One artifact's bytes.
    pub async fn artifact(&self, meta: &RunMeta, name: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let key = RunRecord::key(&meta.run_id, &format!("artifacts/{name}"));
        match self.store_of(meta).get(&key).await {
            Ok(b) => Ok(Some(b)),
            Err(
                crate::storage::StoreError::NotFound(_) | crate::storage::StoreError::InvalidKey(_),
            ) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Events of run `id` after `after`, polling Temporal every `every`
    /// until the run ends. See [`EventCursor`] for what the ids are.
    pub fn events(
        self: Arc<Self>,
        meta: RunMeta,
        after: EventCursor,
        every: Duration,
    ) -> impl futures::Stream<Item = RemoteEvent> + Send + 'static {
        futures::stream::unfold(
            (self, meta, after, None::<Value>, false),
            move |(remote, meta, mut cur, mut last_progress, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let mut batch = Vec::new();
                    let current = remote.meta(&meta.run_id).await?;
                    if current.status.is_final() {
                        // Everything from the record and the stored log.
                        let record = remote.record(&current).await;
                        let log = remote.log(&current).await.unwrap_or_default();
                        for line in log.split(|b| *b == b'\n').skip(cur.log as usize) {
                            if line.is_empty() {
                                continue;
                            }
                            cur.log += 1;
                            let data: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
                            batch.push(cur.event("log", log_event(&data)));
                        }
                        if let Some(r) = &record {
                            for f in r.findings.iter().skip(cur.findings as usize) {
                                cur.findings += 1;
                                batch.push(cur.event(
                                    "finding",
                                    serde_json::to_value(f).unwrap_or_default(),
                                ));
                            }
                            if r.progress.is_object() && last_progress.as_ref() != Some(&r.progress) {
                                batch.push(cur.event("progress", r.progress.clone()));
                            }
                            batch.push(cur.event(
                                "summary",
                                json!({"counts": r.counts, "analyses": r.analyses, "summary": r.summary}),
                            ));
                        }
                        cur.state = 2;
                        let mut data = json!({"status": current.status.as_str()});
                        if let Some(e) = &current.error {
                            data["error"] = json!(e);
                        }
                        batch.push(cur.event("status", data));
                        return Some((futures::stream::iter(batch), (remote, meta, cur, last_progress, true)));
                    }
                    if cur.state == 0 {
                        cur.state = 1;
                        batch.push(cur.event("status", json!({"status": "running"})));
                    }
                    if let Some(page) = remote
                        .query(&meta.run_id, crate::distributed::QUERY_LOG, Some(json!(cur.log)))
                        .await
                    {
                        for line in page["lines"].as_array().into_iter().flatten() {
                            cur.log += 1;
                            batch.push(cur.event("log", log_event(line)));
                        }
                    }
                    if let Some(findings) = remote
                        .query(&meta.run_id, crate::distributed::QUERY_FINDINGS, None)
                        .await
                    {
                        for f in findings.as_array().into_iter().flatten().skip(cur.findings as usize) {
                            cur.findings += 1;
                            batch.push(cur.event("finding", f.clone()));
                        }
                    }
                    // Progress: the guest's, or a step's heartbeat.
                    let progress = match remote
                        .query(&meta.run_id, crate::distributed::QUERY_PROGRESS, None)
                        .await
                    {
                        Some(p) if p.is_object() => Some(p),
                        _ => remote
                            .state(&meta.run_id)
                            .await
                            .and_then(|s| s.step_progress().cloned()),
                    };
                    if let Some(p) = progress
                        && last_progress.as_ref() != Some(&p)
                    {
                        batch.push(cur.event("progress", p.clone()));
                        last_progress = Some(p);
                    }
                    if !batch.is_empty() {
                        return Some((futures::stream::iter(batch), (remote, meta, cur, last_progress, false)));
                    }
                    tokio::time::sleep(every).await;
                }
            },
        )
        .flat_map(|s| s)
    }
}

/// The log line as an event (the same fields as the embedded engine's).
fn log_event(line: &Value) -> Value {
    json!({
        "level": line.get("level").cloned().unwrap_or(json!("info")),
        "source": line.get("source").cloned().unwrap_or(json!("host")),
        "message": line.get("message").cloned().unwrap_or_else(|| json!(line.to_string())),
    })
}

/// An event of a distributed run; `id` is an [`EventCursor`].
#[derive(Debug, Clone)]
pub struct RemoteEvent {
    pub id: String,
    pub kind: String,
    pub data: Value,
}

/// Where a follower of a distributed run is: log lines and findings seen,
/// and whether the running and final statuses were sent. Its text form,
/// `L.F.S`, is the SSE event id, so any replica resumes from it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCursor {
    pub log: u64,
    pub findings: u64,
    /// 0: nothing sent, 1: running sent, 2: final sent.
    pub state: u8,
}

impl EventCursor {
    /// An event whose id is this cursor (the position after it).
    fn event(&self, kind: &str, data: Value) -> RemoteEvent {
        RemoteEvent {
            id: self.render(),
            kind: kind.into(),
            data,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.trim().split('.');
        let c = EventCursor {
            log: it.next()?.parse().ok()?,
            findings: it.next()?.parse().ok()?,
            state: it.next()?.parse().ok().filter(|s| *s <= 2)?,
        };
        it.next().is_none().then_some(c)
    }

    pub fn render(&self) -> String {
        format!("{}.{}.{}", self.log, self.findings, self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_cursors_round_trip_and_refuse_garbage() {
        let c = EventCursor {
            log: 12,
            findings: 3,
            state: 1,
        };
        assert_eq!(EventCursor::parse(&c.render()), Some(c));
        for bad in ["", "1.2", "1.2.3", "a.b.c", "1.2.1.4", "-1.0.0"] {
            assert_eq!(EventCursor::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn filters_that_a_visibility_query_cannot_carry_are_refused() {
        assert_eq!(quoted("label", "branch=main").unwrap(), "'branch=main'");
        for bad in ["a'b", "a\"b", "a\\b", "a\nb"] {
            assert!(quoted("label", bad).is_err(), "{bad}");
        }
    }
}
