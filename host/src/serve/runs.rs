//! Runs started through the API on the embedded engine: who owns each run,
//! its labels and inputs (`api/runs/<run-id>.json`, written before the run
//! starts and when it ends), its live events, and the queue that bounds how
//! many run at once. The run record itself is the engine's
//! (`runs/<run-id>/result.json`); this module never changes it.
//!
//! Events are numbered from 1 in the order they happened; a follower that
//! reconnects with the last number it saw gets every later event once. The
//! events of a finished run are kept in `api/runs/<run-id>.events.jsonl`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::capabilities::RunEvent;
use crate::engine::{LocalEngine, RunRecord, RunRequest, RunStatus, StartError};

/// Log events kept per run for followers; the whole log stays in `/log`.
const MAX_LOG_EVENTS: usize = 20_000;

/// The state of an API run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ApiStatus {
    /// Accepted, waiting for a free slot.
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl ApiStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, ApiStatus::Queued | ApiStatus::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ApiStatus::Queued => "queued",
            ApiStatus::Running => "running",
            ApiStatus::Succeeded => "succeeded",
            ApiStatus::Failed => "failed",
            ApiStatus::Cancelled => "cancelled",
            ApiStatus::TimedOut => "timed-out",
        }
    }
}

impl std::str::FromStr for ApiStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(Value::String(s.into())).map_err(|_| {
            format!(
                "unknown status `{}`: use queued, running, succeeded, failed, cancelled or timed-out",
                s.escape_debug()
            )
        })
    }
}

impl From<RunStatus> for ApiStatus {
    fn from(s: RunStatus) -> Self {
        match s {
            RunStatus::Succeeded => ApiStatus::Succeeded,
            RunStatus::Failed => ApiStatus::Failed,
            RunStatus::Cancelled => ApiStatus::Cancelled,
            RunStatus::TimedOut => ApiStatus::TimedOut,
        }
    }
}

/// What the API knows of a run beside its record.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RunMeta {
    pub run_id: String,
    pub tenant: String,
    pub workflow: String,
    /// The component digest the run was pinned to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub params: Value,
    /// sha256 of the uploaded target, or none (an empty workspace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created_at: String,
    /// Token id of the submitter.
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub status: ApiStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Why it did not succeed (also when it never started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

/// One event of a run, as followers see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    /// `status`, `progress`, `finding`, `log`, `tool`.
    pub kind: String,
    pub data: Value,
}

/// A run the server knows, live or finished.
pub struct Run {
    pub meta: Mutex<RunMeta>,
    cancel: CancellationToken,
    /// Events so far; `None` once they are on disk only.
    events: Mutex<Vec<Event>>,
    log_events: Mutex<usize>,
    changed: Notify,
}

impl Run {
    fn new(meta: RunMeta, events: Vec<Event>) -> Self {
        Run {
            meta: Mutex::new(meta),
            cancel: CancellationToken::new(),
            events: Mutex::new(events),
            log_events: Mutex::new(0),
            changed: Notify::new(),
        }
    }

    pub fn meta(&self) -> RunMeta {
        self.meta.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn push(&self, kind: &str, data: Value) {
        if kind == "log" {
            let mut n = self.log_events.lock().unwrap_or_else(|p| p.into_inner());
            *n += 1;
            if *n > MAX_LOG_EVENTS {
                return;
            }
        }
        {
            let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
            let id = events.len() as u64 + 1;
            events.push(Event {
                id,
                kind: kind.into(),
                data,
            });
        }
        self.changed.notify_waiters();
    }

    /// Events with an id above `after`, and whether the run has ended
    /// (then no more will come).
    pub fn events_after(&self, after: u64) -> (Vec<Event>, bool) {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        // Ended once the final status event is among the events (not when
        // the meta says so: that changes just before the event is pushed).
        let done = events.last().is_some_and(|e| {
            e.kind == "status"
                && e.data["status"]
                    .as_str()
                    .and_then(|s| s.parse::<ApiStatus>().ok())
                    .is_some_and(ApiStatus::is_final)
        });
        (
            events
                .iter()
                .skip(after.min(events.len() as u64) as usize)
                .cloned()
                .collect(),
            done,
        )
    }

    /// A future that completes on the next event; enable it before
    /// reading events so none slips in between.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// The last progress statistics, if any.
    pub fn progress(&self) -> Option<Value> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events
            .iter()
            .rev()
            .find(|e| e.kind == "progress")
            .map(|e| e.data.clone())
    }

    /// Tools started and not yet ended.
    pub fn pending_tools(&self) -> Vec<Value> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let mut open: Vec<Value> = Vec::new();
        for e in events.iter().filter(|e| e.kind == "tool") {
            if e.data["state"] == "started" {
                open.push(e.data.clone());
            } else if let Some(i) = open.iter().position(|o| o["tool"] == e.data["tool"]) {
                open.remove(i);
            }
        }
        open
    }

    /// The findings reported so far.
    pub fn live_findings(&self) -> Vec<Value> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events
            .iter()
            .filter(|e| e.kind == "finding")
            .map(|e| e.data.clone())
            .collect()
    }
}

/// A request to start a run, checked.
pub struct Start {
    pub tenant: String,
    pub token_id: String,
    pub workflow: String,
    pub digest: Option<String>,
    pub params: Value,
    /// sha256 of the uploaded target.
    pub target: Option<String>,
    /// Its unpacked tree (embedded engine).
    pub target_tree: Option<PathBuf>,
    pub labels: BTreeMap<String, String>,
    pub idempotency_key: Option<String>,
    pub retry_of: Option<String>,
    pub timeout_secs: Option<u64>,
}

/// All runs of the server.
pub struct Runs {
    engine: Arc<LocalEngine>,
    dir: PathBuf,
    empty_target: PathBuf,
    by_id: RwLock<HashMap<String, Arc<Run>>>,
    /// (tenant, idempotency key) -> run id.
    idempotency: Mutex<HashMap<(String, String), String>>,
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
}

impl Runs {
    /// Loads what `dir` (`<data_dir>/api/runs`) holds. Runs that were live
    /// when a previous server stopped are marked failed: their process is
    /// gone.
    pub fn open(
        engine: Arc<LocalEngine>,
        dir: PathBuf,
        empty_target: PathBuf,
        max_concurrent: usize,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
        std::fs::create_dir_all(&empty_target)
            .with_context(|| format!("cannot create `{}`", empty_target.display()))?;
        let mut by_id = HashMap::new();
        let mut idempotency = HashMap::new();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read `{}`", dir.display()))?
        {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let meta: RunMeta = match std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(serde_json::from_slice(&b)?))
            {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("ignoring `{}`: {e:#}", path.display());
                    continue;
                }
            };
            let mut meta = meta;
            if !meta.status.is_final() {
                meta.status = ApiStatus::Failed;
                meta.error = Some("the server stopped while the run was live; retry it".into());
                meta.ended_at = Some(crate::util::now_rfc3339());
                let _ = super::targets::write_json(&path, &meta);
            }
            if let Some(key) = &meta.idempotency_key {
                idempotency.insert((meta.tenant.clone(), key.clone()), meta.run_id.clone());
            }
            let events = read_events(&events_path(&dir, &meta.run_id));
            by_id.insert(meta.run_id.clone(), Arc::new(Run::new(meta, events)));
        }
        Ok(Runs {
            engine,
            dir,
            empty_target,
            by_id: RwLock::new(by_id),
            idempotency: Mutex::new(idempotency),
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            shutdown,
            tasks: tokio_util::task::TaskTracker::new(),
        })
    }

    pub fn engine(&self) -> &Arc<LocalEngine> {
        &self.engine
    }

    /// The run `id` if `sees` allows its tenant.
    pub fn get(&self, id: &str, sees: impl Fn(&str) -> bool) -> Option<Arc<Run>> {
        let run = self
            .by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()?;
        let tenant = run.meta().tenant;
        sees(&tenant).then_some(run)
    }

    /// Every run's meta that `keep` accepts, newest first.
    pub fn list(&self, keep: impl Fn(&RunMeta) -> bool) -> Vec<RunMeta> {
        self.page(keep, usize::MAX).0
    }

    /// The first `limit` runs that `keep` accepts, newest first, and
    /// whether more matched. Only the page's metas are copied: a filter
    /// over 100,000 runs reads each once, in place.
    pub fn page(&self, keep: impl Fn(&RunMeta) -> bool, limit: usize) -> (Vec<RunMeta>, bool) {
        let runs = self.by_id.read().unwrap_or_else(|p| p.into_inner());
        let mut matches: Vec<(String, &str, &Arc<Run>)> = runs
            .iter()
            .filter_map(|(id, r)| {
                let m = r.meta.lock().unwrap_or_else(|p| p.into_inner());
                keep(&m).then(|| (m.created_at.clone(), id.as_str(), r))
            })
            .collect();
        let more = matches.len() > limit;
        let by_newest = |a: &(String, &str, &Arc<Run>), b: &(String, &str, &Arc<Run>)| {
            (&b.0, b.1).cmp(&(&a.0, a.1))
        };
        if more {
            matches.select_nth_unstable_by(limit, by_newest);
            matches.truncate(limit);
        }
        matches.sort_unstable_by(by_newest);
        (
            matches.into_iter().map(|(_, _, r)| r.meta()).collect(),
            more,
        )
    }

    /// Runs currently queued or running that `token_id` started.
    pub fn live_count_by(&self, token_id: &str) -> usize {
        self.by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|r| {
                let m = r.meta();
                m.created_by == token_id && !m.status.is_final()
            })
            .count()
    }

    /// The run an idempotency key already started, if any.
    pub fn by_idempotency_key(&self, tenant: &str, key: &str) -> Option<Arc<Run>> {
        let id = self
            .idempotency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(tenant.to_string(), key.to_string()))
            .cloned()?;
        self.get(&id, |_| true)
    }

    /// Checks and starts a run; it executes in the background.
    pub fn start(&self, start: Start) -> Result<Arc<Run>, StartError> {
        let registry = self.engine.registry();
        let wf = registry
            .get(&start.workflow)
            .ok_or_else(|| StartError::UnknownWorkflow {
                name: start.workflow.clone(),
                available: registry
                    .workflows()
                    .map(|w| w.info.name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        if let Some(digest) = &start.digest
            && *digest != wf.digest
        {
            return Err(StartError::Setup(anyhow::anyhow!(
                "workflow `{}` is at digest {}, not the pinned {digest}; pin the current digest (GET /v1/workflows/{}) or leave the pin out",
                start.workflow,
                wf.digest,
                start.workflow
            )));
        }
        self.engine.check_params(&start.workflow, &start.params)?;
        // One slot of the idempotency map per key, taken before the run
        // exists, so two concurrent retries start one run.
        let run_id = crate::engine::new_run_id(&wf.info.name);
        if let Some(key) = &start.idempotency_key {
            let mut map = self.idempotency.lock().unwrap_or_else(|p| p.into_inner());
            let slot = (start.tenant.clone(), key.clone());
            if let Some(existing) = map.get(&slot).and_then(|id| self.get(id, |_| true)) {
                return Ok(existing);
            }
            map.insert(slot, run_id.clone());
        }
        let meta = RunMeta {
            run_id: run_id.clone(),
            tenant: start.tenant.clone(),
            workflow: wf.info.name.clone(),
            digest: start.digest.clone(),
            params: start.params.clone(),
            target: start.target.clone(),
            labels: start.labels.clone(),
            created_at: crate::util::now_rfc3339(),
            created_by: start.token_id.clone(),
            retry_of: start.retry_of.clone(),
            idempotency_key: start.idempotency_key.clone(),
            status: ApiStatus::Queued,
            ended_at: None,
            error: None,
            timeout_secs: start.timeout_secs,
        };
        let path = self.dir.join(format!("{run_id}.json"));
        super::targets::write_json(&path, &meta).map_err(StartError::Setup)?;
        let run = Arc::new(Run::new(meta, Vec::new()));
        run.push("status", json!({"status": "queued"}));
        self.by_id
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run_id.clone(), run.clone());

        let target = start
            .target_tree
            .unwrap_or_else(|| self.empty_target.clone());
        let engine = self.engine.clone();
        let slots = self.slots.clone();
        let shutdown = self.shutdown.clone();
        let dir = self.dir.clone();
        let task_run = run.clone();
        self.tasks.spawn(async move {
            let run = task_run;
            let _slot = tokio::select! {
                slot = slots.acquire_owned() => slot.ok(),
                _ = run.cancel.cancelled() => None,
                _ = shutdown.cancelled() => None,
            };
            let result = if run.cancel.is_cancelled() || shutdown.is_cancelled() {
                Err((
                    ApiStatus::Cancelled,
                    "cancelled before it started".to_string(),
                ))
            } else {
                set_status(&run, &dir, ApiStatus::Running, None);
                let observer_run = run.clone();
                let observer: crate::capabilities::Observer =
                    Arc::new(move |e: &RunEvent| observe(&observer_run, e));
                let meta = run.meta();
                let cancel = run.cancel.clone();
                let stop_on_shutdown = shutdown.clone();
                let cancel2 = cancel.clone();
                let forward = tokio::spawn(async move {
                    stop_on_shutdown.cancelled().await;
                    cancel2.cancel();
                });
                let r = engine
                    .run(RunRequest {
                        run_id: Some(meta.run_id.clone()),
                        cancel,
                        observer: Some(observer),
                        timeout_secs: meta.timeout_secs,
                        target_label: Some(
                            meta.target
                                .as_ref()
                                .map(|s| format!("sha256:{s}"))
                                .unwrap_or_else(|| "(none)".into()),
                        ),
                        ..RunRequest::new(meta.workflow.clone(), target, meta.params.clone())
                    })
                    .await;
                forward.abort();
                r.map_err(|e| (ApiStatus::Failed, e.to_string()))
            };
            finish(&run, &dir, result);
        });
        Ok(run)
    }

    /// Asks a live run to stop; false when it has already ended.
    pub fn cancel(&self, run: &Run) -> bool {
        if run.meta().status.is_final() {
            return false;
        }
        run.cancel.cancel();
        true
    }

    /// Waits for every run task to end (after `shutdown` fired).
    pub async fn drain(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// The record of a finished run.
    pub async fn record(&self, run_id: &str) -> Option<RunRecord> {
        RunRecord::load(self.engine.store(), run_id).await.ok()
    }

    /// The record directory of a run (log, artifacts).
    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.engine.store().root().join("runs").join(run_id)
    }
}

fn set_status(run: &Run, dir: &Path, status: ApiStatus, error: Option<String>) {
    let meta = {
        let mut m = run.meta.lock().unwrap_or_else(|p| p.into_inner());
        m.status = status;
        if status.is_final() {
            m.ended_at = Some(crate::util::now_rfc3339());
            m.error = error.clone();
        }
        m.clone()
    };
    if let Err(e) = super::targets::write_json(&dir.join(format!("{}.json", meta.run_id)), &meta) {
        tracing::error!("cannot record run {}: {e:#}", meta.run_id);
    }
    let mut data = json!({"status": status.as_str()});
    if let Some(e) = error {
        data["error"] = json!(e);
    }
    run.push("status", data);
}

fn finish(run: &Run, dir: &Path, result: Result<RunRecord, (ApiStatus, String)>) {
    let run_id = run.meta().run_id;
    // Events first, so a follower that sees the final status can read
    // them all from disk after a restart.
    let (status, error) = match result {
        Ok(record) => {
            run.push(
                "summary",
                json!({"counts": record.counts, "analyses": record.analyses, "summary": record.summary}),
            );
            (ApiStatus::from(record.status), record.error)
        }
        Err((status, e)) => (status, Some(e)),
    };
    {
        let events = run.events.lock().unwrap_or_else(|p| p.into_inner());
        let mut text = String::new();
        for e in events.iter() {
            text.push_str(&serde_json::to_string(e).unwrap_or_default());
            text.push('\n');
        }
        // The final status event is appended below and written with it.
        let final_event = Event {
            id: events.len() as u64 + 1,
            kind: "status".into(),
            data: {
                let mut d = json!({"status": status.as_str()});
                if let Some(e) = &error {
                    d["error"] = json!(e);
                }
                d
            },
        };
        text.push_str(&serde_json::to_string(&final_event).unwrap_or_default());
        text.push('\n');
        if let Err(e) = std::fs::write(events_path(dir, &run_id), text) {
            tracing::error!("cannot write the events of run {run_id}: {e}");
        }
    }
    set_status(run, dir, status, error);
}

fn observe(run: &Run, event: &RunEvent) {
    match event {
        RunEvent::Log {
            level,
            source,
            message,
        } => run.push(
            "log",
            json!({"level": level, "source": source, "message": message}),
        ),
        RunEvent::Finding(f) => run.push("finding", serde_json::to_value(f).unwrap_or_default()),
        RunEvent::Progress(p) => run.push("progress", p.clone()),
        RunEvent::ToolStarted { tool, args } => run.push(
            "tool",
            json!({"tool": tool, "state": "started", "args": args}),
        ),
        RunEvent::ToolFinished { tool, outcome } => run.push(
            "tool",
            json!({"tool": tool, "state": "finished", "outcome": outcome}),
        ),
    }
}

fn events_path(dir: &Path, run_id: &str) -> PathBuf {
    dir.join(format!("{run_id}.events.jsonl"))
}

fn read_events(path: &Path) -> Vec<Event> {
    std::fs::read_to_string(path)
        .map(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}
