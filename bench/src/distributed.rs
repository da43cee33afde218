//! `cargo xtask bench --distributed`: distributed mode measured side by side
//! with native baselines, on the real Temporal dev server and Garage (S3)
//! that `cargo xtask services up` runs.
//!
//! 1. Workflow runs through Temporal: Toolhost's WASM `hello` on a real
//!    `toolhost host` process vs a minimal native workflow (one activity) on
//!    the same pinned `temporalio-sdk-core`, same server, same run count and
//!    concurrency.
//! 2. Uploads: a target packed and uploaded the way `toolhost submit` does
//!    vs a raw `aws-sdk-s3` multipart upload of the same bytes.
//!
//! Everything it writes lives under a random task queue prefix and S3 key
//! prefix; the S3 keys are removed at the end and the host process is
//! stopped when dropped. It never touches other prefixes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, bail};
use aws_sdk_s3::error::DisplayErrorContext;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use temporalio_client::{Connection, ConnectionOptions};
use temporalio_common::protos::coresdk::activity_result::ActivityExecutionResult;
use temporalio_common::protos::coresdk::activity_result::activity_resolution::Status as Resolution;
use temporalio_common::protos::coresdk::activity_task::activity_task::Variant as ActivityVariant;
use temporalio_common::protos::coresdk::workflow_activation::WorkflowActivation;
use temporalio_common::protos::coresdk::workflow_activation::workflow_activation_job::Variant as Job;
use temporalio_common::protos::coresdk::workflow_commands::workflow_command::Variant as Cmd;
use temporalio_common::protos::coresdk::workflow_commands::{
    ActivityCancellationType, CompleteWorkflowExecution, FailWorkflowExecution, ScheduleActivity,
};
use temporalio_common::protos::coresdk::workflow_completion::WorkflowActivationCompletion;
use temporalio_common::protos::coresdk::{
    ActivityTaskCompletion, AsJsonPayloadExt, FromJsonPayloadExt,
};
use temporalio_common::protos::temporal::api::common::v1::{RetryPolicy, WorkflowExecution};
use temporalio_common::protos::temporal::api::failure::v1::Failure;
use temporalio_common::protos::temporal::api::history::v1::HistoryEvent;
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
use temporalio_common::protos::temporal::api::workflowservice::v1::GetWorkflowExecutionHistoryRequest;
use temporalio_common::worker::WorkerTaskTypes;
use temporalio_sdk_core::{
    CoreRuntime, PollError, RuntimeOptions, Worker, WorkerConfig, WorkerVersioningStrategy,
    init_worker,
};
use toolhost::config::HostConfig;
use toolhost::distributed::client::RunClient;
use toolhost::distributed::components::{PublishedWorkflow, published};
use toolhost::distributed::{TemporalConfig, WorkflowInput};
use toolhost::engine::RunStatus;
use toolhost::storage::{BlobStore, S3Config};

use crate::{Stats, ms, repo, stats};

/// What `--distributed` measures; `--runs N`, `--concurrency N`,
/// `--rounds N` and `--upload-mib N` override the defaults.
struct Options {
    /// Measured runs per round and side.
    runs: usize,
    /// Runs in flight at once.
    concurrency: usize,
    /// Alternating rounds (native, Toolhost, native, ...).
    rounds: usize,
    /// Runs per side before measuring (connections, caches, JIT-free paths).
    warmup: usize,
    /// Size of the upload target in MiB (that many 1 MiB files).
    upload_mib: usize,
    /// Upload repetitions per path.
    upload_rounds: usize,
    /// The Temporal server's Prometheus endpoint, to count its requests
    /// per run (`temporal server start-dev` serves one on a port of its
    /// choosing).
    server_metrics: Option<String>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options {
            runs: 200,
            concurrency: 20,
            rounds: 3,
            warmup: 20,
            upload_mib: 250,
            upload_rounds: 4,
            server_metrics: None,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let field = match arg.as_str() {
                "--distributed" => continue,
                "--server-metrics" => {
                    o.server_metrics =
                        Some(it.next().context("--server-metrics needs a URL")?.clone());
                    continue;
                }
                "--runs" => &mut o.runs,
                "--concurrency" => &mut o.concurrency,
                "--rounds" => &mut o.rounds,
                "--upload-mib" => &mut o.upload_mib,
                other => bail!(
                    "unknown argument `{other}`; use --distributed [--runs N] [--concurrency N] [--rounds N] [--upload-mib N] [--server-metrics URL]"
                ),
            };
            *field = it
                .next()
                .and_then(|v| v.parse().ok())
                .filter(|v| *v > 0)
                .with_context(|| format!("{arg} needs a positive number"))?;
        }
        Ok(o)
    }
}

/// Entry point of `toolhost-bench --distributed`.
pub async fn main(args: &[String]) -> Result<()> {
    let mut options = Options::parse(args)?;
    let Some(env) = devservices::Env::from_process_env()? else {
        // The S3 client takes its key from the environment (the usual AWS
        // chain), so the variables must be in this process: run again with
        // them.
        let env = devservices::Env::load(&repo()).context(
            "the dev services are not configured: run `cargo xtask bench --distributed`, which starts them",
        )?;
        eprintln!(
            "bench: running again with the variables of {}",
            devservices::Env::path(&repo()).display()
        );
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(args);
        env.apply_to(&mut cmd);
        let status = cmd.status().context("cannot run the benchmark again")?;
        anyhow::ensure!(status.success(), "the benchmark failed ({status})");
        return Ok(());
    };
    reachable("Temporal", &env.temporal_address).await?;
    reachable("S3 (Garage)", &env.s3_endpoint).await?;
    if options.server_metrics.is_none() {
        options.server_metrics = find_server_metrics().await;
    }

    let mut report = String::new();
    let mut out = |line: String| {
        println!("{line}");
        report.push_str(&line);
        report.push('\n');
    };
    let toolhost_bin = std::env::current_exe()?
        .parent()
        .map(|d| d.join("toolhost"))
        .context("no directory for the toolhost binary")?;
    anyhow::ensure!(
        toolhost_bin.exists(),
        "{} is missing: build it with the benchmark (`cargo xtask bench --distributed` does)",
        toolhost_bin.display()
    );
    out(format!(
        "# Toolhost benchmarks: distributed mode\n\n{} CPUs, load average {} at start; host binary `{}`; Temporal {} (metrics: {}), S3 {}\n",
        crate::num_cpus(),
        load_average(),
        toolhost_bin
            .strip_prefix(repo())
            .unwrap_or(&toolhost_bin)
            .display(),
        env.temporal_address,
        options
            .server_metrics
            .as_deref()
            .unwrap_or("not found; pass --server-metrics URL"),
        env.s3_endpoint,
    ));

    let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let prefix = format!("bench-{suffix}");
    let dir = tempfile::Builder::new()
        .prefix("toolhost-bench-")
        .tempdir()?;
    let config_text = host_config(dir.path(), &prefix, &env)?;
    let config = HostConfig::parse(&config_text, None)?;
    let blobs = config.blob_store()?;
    blobs
        .exists("probe")
        .await
        .context("the S3 bucket is not usable")?;

    let result = async {
        workflows(
            &mut out,
            &options,
            &toolhost_bin,
            dir.path(),
            &config_text,
            &config,
            &env,
        )
        .await?;
        uploads(
            &mut out,
            &options,
            blobs.clone(),
            config.storage.s3.as_ref().context("no [storage.s3]")?,
            dir.path(),
        )
        .await
    }
    .await;
    // Whatever happened, leave nothing under the bench prefix.
    match blobs.list("").await {
        Ok(keys) => {
            for key in keys {
                if let Err(e) = blobs.delete(&key).await {
                    eprintln!("bench: cannot delete {key}: {e}");
                }
            }
        }
        Err(e) => eprintln!("bench: cannot list {prefix}/ to clean it up: {e}"),
    }
    result?;
    out(format!("load average at the end: {}\n", load_average()));

    let path = repo().join("target/bench/report-distributed.md");
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(&path, &report)?;
    println!("\nreport written to {}", path.display());
    Ok(())
}

/// Fails with what to do when nothing listens at `url`.
async fn reachable(what: &str, url: &str) -> Result<()> {
    let addr = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .trim_end_matches('/');
    let connect = tokio::net::TcpStream::connect(addr);
    match tokio::time::timeout(Duration::from_secs(3), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => bail!(
            "{what} at {url} is not reachable ({e}); start the services with `cargo xtask services up`"
        ),
        Err(_) => bail!(
            "{what} at {url} did not answer within 3 s; check it with `cargo xtask services status`"
        ),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The host configuration: the built-in verticals, Temporal and S3 from
/// the services, a task queue and key prefix of this run only.
fn host_config(dir: &Path, prefix: &str, env: &devservices::Env) -> Result<String> {
    let default = toolhost::config::DEFAULT_CONFIG;
    let verticals = default
        .find("[verticals.")
        .map(|i| &default[i..])
        .context("the built-in configuration has no [verticals.*]")?;
    let toolbox = dir.join("toolbox");
    std::fs::create_dir_all(&toolbox)?;
    let hello = repo().join("toolbox/hello.wasm");
    std::fs::copy(&hello, toolbox.join("hello.wasm")).with_context(|| {
        format!(
            "{} is missing: run `cargo xtask build-plugins`",
            hello.display()
        )
    })?;
    let path = |p: &str| toml_str(&dir.join(p).display().to_string());
    Ok(format!(
        r#"toolbox = {toolbox}
data_dir = {data}
work_dir = {work}

[host]
vertical = "rust"
listen = "127.0.0.1:{port}"

[temporal]
address = {address}
namespace = {namespace}
host_id = "bench"
task_queue_prefix = "{prefix}"

[storage.s3]
bucket = {bucket}
endpoint = {endpoint}
region = {region}
prefix = "{prefix}"

{verticals}"#,
        toolbox = path("toolbox"),
        data = path("data"),
        work = path("work"),
        port = devservices::free_port()?,
        address = toml_str(&env.temporal_address),
        namespace = toml_str(&env.temporal_namespace),
        bucket = toml_str(&env.s3_bucket),
        endpoint = toml_str(&env.s3_endpoint),
        region = toml_str(&env.s3_region),
    ))
}

// ------------------------------------------------------------ the host

/// A `toolhost host` child process, stopped (SIGTERM, then SIGKILL) when
/// dropped.
struct HostProcess {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl HostProcess {
    fn spawn(bin: &Path, config: &Path, port: u16, env: &devservices::Env) -> Result<Self> {
        let log = config.with_extension("log");
        let file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(config)
            .arg("host")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        env.apply_to(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        Ok(HostProcess { child, port, log })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until the host polls Temporal and has published `hello`.
    async fn ready(&mut self, blobs: &dyn BlobStore) -> Result<PublishedWorkflow> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "toolhost host exited ({status}) before it was ready; its log ends with:\n{}",
                    self.log_tail()
                );
            }
            let polling = http_get(&self.addr(), "/healthz")
                .await
                .is_some_and(|b| b.contains("task_queues"));
            if polling && let Ok(wf) = published(blobs, "hello").await {
                return Ok(wf);
            }
            if start.elapsed() > Duration::from_secs(120) {
                bail!(
                    "toolhost host was not ready after 120 s (polling Temporal: {polling}); its log ends with:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `toolhost_step_duration_seconds` sums and counts by step, as
    /// `<step> sum` and `<step> count`.
    async fn step_metrics(&self) -> BTreeMap<String, f64> {
        let text = http_get(&self.addr(), "/metrics").await.unwrap_or_default();
        let mut steps = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("toolhost_step_duration_seconds_") else {
                continue;
            };
            let Some((kind, rest)) = rest.split_once("{step=\"") else {
                continue;
            };
            let Some((step, value)) = rest.split_once("\"} ") else {
                continue;
            };
            if matches!(kind, "sum" | "count") {
                steps.insert(format!("{step} {kind}"), value.parse().unwrap_or(0.0));
            }
        }
        steps
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SIGTERM: the host shuts its Temporal workers down gracefully.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of `GET path` from `addr` (`host:port`), HTTP/1.0; none after
/// 5 s.
async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// The Prometheus endpoint of the Temporal dev server that `cargo xtask
/// services up` started: `start-dev` serves one on a port of its choosing,
/// so this tries the server process's listening ports.
async fn find_server_metrics() -> Option<String> {
    let pid = devservices::Services::status(&repo())
        .ok()?
        .into_iter()
        .find(|s| s.name == "temporal")?
        .pid?;
    let sockets: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_str()?;
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Field 3 is the state (0A: listening), 9 the socket inode.
        if f.len() < 10 || f[3] != "0A" || !sockets.contains(f[9]) {
            continue;
        }
        let Some(port) = f[1]
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        let addr = format!("127.0.0.1:{port}");
        if http_get(&addr, "/metrics")
            .await
            .is_some_and(|b| b.contains("service_requests{"))
        {
            return Some(format!("http://{addr}/metrics"));
        }
    }
    None
}

// ---------------------------------------------------- the native worker

/// The native baseline's workflow type.
const NATIVE_WORKFLOW: &str = "native_hello";
/// Its one activity.
const NATIVE_ACTIVITY: &str = "native_hello.greet";

fn duration(d: Duration) -> Option<prost_wkt_types::Duration> {
    prost_wkt_types::Duration::try_from(d).ok()
}

/// A minimal native workflow worker: `native_hello` schedules one activity
/// on its own queue and completes with the activity's result. Worker and
/// activity settings are the host's defaults (see host/src/distributed/
/// worker.rs and workflow.rs), so only the work per run differs.
struct NativeWorker {
    worker: Arc<Worker>,
    loops: Vec<tokio::task::JoinHandle<()>>,
    _runtime: CoreRuntime,
}

impl NativeWorker {
    async fn start(temporal: &TemporalConfig, queue: &str) -> Result<Self> {
        let runtime = CoreRuntime::new_assume_tokio(
            RuntimeOptions::builder()
                .build()
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        )?;
        let url = temporalio_client::Url::parse(&temporal.address)?;
        let connection = Connection::connect(
            ConnectionOptions::new(url)
                .identity("bench-native".to_string())
                .build(),
        )
        .await
        .with_context(|| format!("cannot reach Temporal at {}", temporal.address))?;
        let config = WorkerConfig::builder()
            .namespace(temporal.namespace.clone())
            .task_queue(queue.to_string())
            .client_identity_override("bench-native".to_string())
            .versioning_strategy(WorkerVersioningStrategy::None {
                build_id: "bench-native".into(),
            })
            .task_types(WorkerTaskTypes {
                enable_workflows: true,
                enable_local_activities: false,
                enable_remote_activities: true,
                enable_nexus: false,
            })
            .max_cached_workflows(temporal.max_cached_workflows)
            .max_outstanding_activities(temporal.max_concurrent_steps)
            .max_heartbeat_throttle_interval(Duration::from_secs(1))
            .graceful_shutdown_period(Duration::from_secs(10))
            .build()
            .map_err(|e| anyhow::anyhow!("invalid worker configuration: {e}"))?;
        let worker = Arc::new(init_worker(&runtime, config, connection)?);
        worker
            .validate()
            .await
            .map_err(|e| anyhow::anyhow!("the native worker cannot start: {e}"))?;
        let queue = queue.to_string();
        let loops = vec![
            tokio::spawn(native_workflows(worker.clone(), queue)),
            tokio::spawn(native_activities(worker.clone())),
        ];
        Ok(NativeWorker {
            worker,
            loops,
            _runtime: runtime,
        })
    }

    async fn shutdown(self) {
        self.worker.initiate_shutdown();
        for l in self.loops {
            let _ = l.await;
        }
        self.worker.shutdown().await;
    }
}

async fn native_workflows(worker: Arc<Worker>, queue: String) {
    loop {
        match worker.poll_workflow_activation().await {
            Ok(act) => {
                let completion = native_activation(act, &queue);
                let worker = worker.clone();
                tokio::spawn(async move {
                    if let Err(e) = worker.complete_workflow_activation(completion).await {
                        eprintln!("bench: native workflow activation not completed: {e}");
                    }
                });
            }
            Err(PollError::ShutDown) => break,
            Err(e) => {
                eprintln!("bench: native workflow poll failed: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The whole native workflow: schedule `greet`, complete with its result.
fn native_activation(act: WorkflowActivation, queue: &str) -> WorkflowActivationCompletion {
    let run_id = act.run_id;
    let mut cmds = Vec::new();
    for job in act.jobs {
        match job.variant {
            Some(Job::RemoveFromCache(_)) => return WorkflowActivationCompletion::empty(run_id),
            Some(Job::InitializeWorkflow(init)) => {
                cmds.push(Cmd::ScheduleActivity(ScheduleActivity {
                    seq: 1,
                    activity_id: "1-greet".into(),
                    activity_type: NATIVE_ACTIVITY.into(),
                    task_queue: queue.to_string(),
                    arguments: init.arguments,
                    start_to_close_timeout: duration(Duration::from_secs(60)),
                    // The same policy and eagerness as Toolhost's steps.
                    retry_policy: Some(RetryPolicy {
                        initial_interval: duration(Duration::from_millis(500)),
                        backoff_coefficient: 2.0,
                        maximum_interval: duration(Duration::from_secs(10)),
                        maximum_attempts: 0,
                        non_retryable_error_types: vec![],
                    }),
                    cancellation_type: ActivityCancellationType::TryCancel as i32,
                    do_not_eagerly_execute: true,
                    ..Default::default()
                }))
            }
            Some(Job::ResolveActivity(res)) => match res.result.and_then(|r| r.status) {
                Some(Resolution::Completed(s)) => {
                    cmds.push(Cmd::CompleteWorkflowExecution(CompleteWorkflowExecution {
                        result: s.result,
                    }))
                }
                other => cmds.push(Cmd::FailWorkflowExecution(FailWorkflowExecution {
                    failure: Some(Failure::application_failure(
                        format!("greet did not complete: {other:?}"),
                        true,
                    )),
                })),
            },
            _ => {}
        }
    }
    WorkflowActivationCompletion::from_cmds(run_id, cmds)
}

async fn native_activities(worker: Arc<Worker>) {
    loop {
        match worker.poll_activity_task().await {
            Ok(task) => {
                let Some(ActivityVariant::Start(start)) = task.variant else {
                    continue;
                };
                let name = start
                    .input
                    .first()
                    .and_then(|p| Value::from_json_payload(p).ok())
                    .and_then(|v| v["params"]["name"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "world".into());
                let result =
                    match json!({ "greeting": format!("hello, {name}!") }).as_json_payload() {
                        Ok(p) => ActivityExecutionResult::ok(p),
                        Err(e) => ActivityExecutionResult::fail(Failure::application_failure(
                            e.to_string(),
                            true,
                        )),
                    };
                let worker = worker.clone();
                tokio::spawn(async move {
                    let completion = ActivityTaskCompletion {
                        task_token: task.task_token,
                        result: Some(result),
                    };
                    if let Err(e) = worker.complete_activity_task(completion).await {
                        eprintln!("bench: native activity not completed: {e}");
                    }
                });
            }
            Err(PollError::ShutDown) => break,
            Err(e) => {
                eprintln!("bench: native activity poll failed: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn execution(run_id: &str) -> Option<WorkflowExecution> {
    Some(WorkflowExecution {
        workflow_id: run_id.to_string(),
        run_id: String::new(),
    })
}

/// The history of a closed run.
async fn history(conn: &Connection, namespace: &str, run_id: &str) -> Result<Vec<HistoryEvent>> {
    let mut events = Vec::new();
    let mut token = Vec::new();
    loop {
        let resp = conn
            .workflow_service()
            .get_workflow_execution_history(tonic::Request::new(
                GetWorkflowExecutionHistoryRequest {
                    namespace: namespace.to_string(),
                    execution: execution(run_id),
                    next_page_token: token,
                    ..Default::default()
                },
            ))
            .await
            .with_context(|| format!("cannot read the history of {run_id}"))?
            .into_inner();
        events.extend(resp.history.map(|h| h.events).unwrap_or_default());
        token = resp.next_page_token;
        if token.is_empty() {
            return Ok(events);
        }
    }
}

// ----------------------------------------------------------- measuring

/// One measured batch: per-run latencies and the batch's wall time.
struct Batch {
    wall: Duration,
    latencies: Vec<Duration>,
    run_ids: Vec<String>,
}

impl Batch {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

/// Runs `n` runs, `concurrency` at a time; `run` starts one and waits for
/// its result.
async fn batch<F, Fut>(
    n: usize,
    concurrency: usize,
    name: impl Fn(usize) -> String,
    run: F,
) -> Result<Batch>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let run_ids: Vec<String> = (0..n).map(name).collect();
    let start = Instant::now();
    let latencies: Vec<Duration> = futures::stream::iter(run_ids.iter().cloned())
        .map(|id| {
            let fut = run(id);
            async move {
                let t = Instant::now();
                fut.await?;
                Ok::<_, anyhow::Error>(t.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    Ok(Batch {
        wall: start.elapsed(),
        latencies,
        run_ids,
    })
}

/// What one run's history says: counts and where the time went.
#[derive(Default)]
struct Timeline {
    events: usize,
    workflow_tasks: usize,
    timers: usize,
    /// The first workflow task (on the normal queue): scheduled -> started.
    first_pickup: Duration,
    /// Workflow tasks, summed: scheduled -> started (waiting for a worker).
    workflow_task_wait: Duration,
    /// Workflow tasks, summed: started -> completed (worker + round trip).
    workflow_task_work: Duration,
    /// By activity type: (count, scheduled -> started, started -> completed).
    activities: BTreeMap<String, (usize, Duration, Duration)>,
    /// Started -> closed, by the server's clock.
    total: Duration,
}

fn time(e: &HistoryEvent) -> Option<SystemTime> {
    e.event_time.and_then(|t| SystemTime::try_from(t).ok())
}

fn between(a: Option<SystemTime>, b: Option<SystemTime>) -> Duration {
    match (a, b) {
        (Some(a), Some(b)) => b.duration_since(a).unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

fn timeline(events: &[HistoryEvent]) -> Timeline {
    let by_id: BTreeMap<i64, &HistoryEvent> = events.iter().map(|e| (e.event_id, e)).collect();
    let at = |id: i64| by_id.get(&id).and_then(|e| time(e));
    let mut t = Timeline {
        events: events.len(),
        total: between(events.first().and_then(time), events.last().and_then(time)),
        ..Default::default()
    };
    for e in events {
        match &e.attributes {
            Some(Attributes::WorkflowTaskCompletedEventAttributes(a)) => {
                let wait = between(at(a.scheduled_event_id), at(a.started_event_id));
                if t.workflow_tasks == 0 {
                    t.first_pickup = wait;
                }
                t.workflow_tasks += 1;
                t.workflow_task_wait += wait;
                t.workflow_task_work += between(at(a.started_event_id), time(e));
            }
            Some(Attributes::TimerStartedEventAttributes(_)) => t.timers += 1,
            Some(Attributes::ActivityTaskCompletedEventAttributes(a)) => {
                let kind = by_id
                    .get(&a.scheduled_event_id)
                    .and_then(|s| match &s.attributes {
                        Some(Attributes::ActivityTaskScheduledEventAttributes(s)) => {
                            s.activity_type.as_ref().map(|t| t.name.clone())
                        }
                        _ => None,
                    })
                    .unwrap_or_else(|| "?".into());
                let entry = t.activities.entry(kind).or_default();
                entry.0 += 1;
                entry.1 += between(at(a.scheduled_event_id), at(a.started_event_id));
                entry.2 += between(at(a.started_event_id), time(e));
            }
            _ => {}
        }
    }
    t
}

/// Each timeline figure over runs (median, and p95 for times), as report
/// rows.
fn summarize(timelines: &[Timeline]) -> Vec<(String, String)> {
    let times = |f: &dyn Fn(&Timeline) -> Duration| {
        let s = stats(timelines.iter().map(f).collect());
        format!("{} (p95 {})", ms(s.median), ms(s.p95))
    };
    let count = |f: &dyn Fn(&Timeline) -> usize| {
        let mut v: Vec<usize> = timelines.iter().map(f).collect();
        v.sort();
        v[v.len() / 2].to_string()
    };
    let mut rows = vec![
        ("history events".to_string(), count(&|t| t.events)),
        ("workflow tasks".into(), count(&|t| t.workflow_tasks)),
        ("timers".into(), count(&|t| t.timers)),
        (
            "activities".into(),
            count(&|t| t.activities.values().map(|a| a.0).sum()),
        ),
        (
            "started → closed (server clock)".into(),
            times(&|t| t.total),
        ),
        (
            "first workflow task: scheduled → picked up by a worker".into(),
            times(&|t| t.first_pickup),
        ),
        (
            "all workflow tasks: scheduled → started, summed".into(),
            times(&|t| t.workflow_task_wait),
        ),
        (
            "all workflow tasks: started → completed, summed".into(),
            times(&|t| t.workflow_task_work),
        ),
    ];
    let kinds: std::collections::BTreeSet<String> = timelines
        .iter()
        .flat_map(|t| t.activities.keys().cloned())
        .collect();
    for kind in kinds {
        let get = |t: &Timeline| t.activities.get(&kind).copied().unwrap_or_default();
        rows.push((
            format!("`{kind}`: scheduled → started"),
            times(&|t| get(t).1),
        ));
        rows.push((
            format!("`{kind}`: started → completed"),
            times(&|t| get(t).2),
        ));
    }
    rows
}

// ------------------------------------------------- 7. workflows section

/// The sides measured, in report column order.
const SIDES: [&str; 3] = [
    "Toolhost `hello`, greeting in an activity",
    "native `native_hello` (one activity)",
    "Toolhost `hello`, greeting in workflow code",
];
/// The side with the native workflow's shape (compared with native).
const SAME_SHAPE: usize = 0;
const NATIVE: usize = 1;
const NO_STEP: usize = 2;

#[allow(clippy::too_many_arguments)]
async fn workflows(
    out: &mut impl FnMut(String),
    o: &Options,
    toolhost_bin: &Path,
    dir: &Path,
    config_text: &str,
    config: &HostConfig,
    env: &devservices::Env,
) -> Result<()> {
    let temporal = config.temporal()?.clone();
    let blobs = config.blob_store()?;
    let port = config
        .host
        .listen
        .as_deref()
        .and_then(|l| l.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .context("no [host] listen port")?;
    let config_path = dir.join("host.toml");
    std::fs::write(&config_path, config_text)?;
    let mut host = HostProcess::spawn(toolhost_bin, &config_path, port, env)?;
    let wf = host.ready(blobs.as_ref()).await?;
    let client = RunClient::connect(&temporal, blobs.clone()).await?;

    let native_queue = format!("{}-native", temporal.task_queue_prefix);
    let native = NativeWorker::start(&temporal, &native_queue).await?;
    let result = async {
        // The native side is started and followed exactly as Toolhost runs
        // are: the same client code over its own connection.
        let native_client = RunClient::connect(&temporal, blobs.clone()).await?;
        let input = |in_activity: bool| WorkflowInput {
            params: json!({ "name": "bench", "in_activity": in_activity }),
            target: None,
            digest: Some(wf.digest.clone()),
            target_label: None,
            ..Default::default()
        };
        let inputs = [input(true), input(false)];
        let native_input = json!({ "params": { "name": "bench" } });
        let prefix = &temporal.task_queue_prefix;
        let run = |side: usize, id: String| {
            let (client, native_client, wf) = (&client, &native_client, &wf);
            let (inputs, native_input, native_queue) = (&inputs, &native_input, &native_queue);
            async move {
                if side == NATIVE {
                    // As `RunClient::start`: the workflow's timeout (30 s,
                    // as hello's) + 2 min.
                    native_client
                        .start_workflow(
                            NATIVE_WORKFLOW,
                            native_queue,
                            &id,
                            native_input,
                            Duration::from_secs(150),
                        )
                        .await?;
                    let result = match native_client.wait_close(&id).await? {
                        Attributes::WorkflowExecutionCompletedEventAttributes(a) => a
                            .result
                            .and_then(|p| p.payloads.into_iter().next())
                            .map(|p| Value::from_json_payload(&p))
                            .transpose()?
                            .context("no result")?,
                        other => bail!("native run {id} did not complete: {other:?}"),
                    };
                    anyhow::ensure!(
                        result["greeting"] == "hello, bench!",
                        "native run {id} returned {result}"
                    );
                } else {
                    let input = &inputs[if side == SAME_SHAPE { 0 } else { 1 }];
                    client.start(wf, &id, input).await?;
                    let output = client.wait(&id).await?;
                    anyhow::ensure!(
                        output.status == RunStatus::Succeeded
                            && output.summary["greeting"] == "hello, bench!",
                        "Toolhost run {id} ended {:?}: {:?}",
                        output.status,
                        output.error
                    );
                }
                Ok(())
            }
        };
        let name = |side: usize, round: &str, i: usize| {
            let kind = ["hello-activity", "native", "hello"][side];
            format!("{prefix}-{kind}-{round}-{i}")
        };

        eprintln!("bench: warming up ({} runs per side)", o.warmup);
        for side in [NATIVE, SAME_SHAPE, NO_STEP] {
            batch(
                o.warmup,
                o.concurrency,
                |i| name(side, "warm", i),
                |id| run(side, id),
            )
            .await?;
        }

        let mut m = Measured::default();
        let ns = &temporal.namespace;
        for round in 0..o.rounds {
            eprintln!("bench: round {} of {}", round + 1, o.rounds);
            // Each round: native first, then the two Toolhost shapes.
            for side in [NATIVE, SAME_SHAPE, NO_STEP] {
                let before = server_counters(o, ns).await?;
                let steps_before = host.step_metrics().await;
                m.batches[side].push(
                    batch(
                        o.runs,
                        o.concurrency,
                        |i| name(side, &round.to_string(), i),
                        |id| run(side, id),
                    )
                    .await?,
                );
                let after = server_counters(o, ns).await?;
                add_delta(&mut m.server[side], &before, &after);
                if side != NATIVE {
                    let steps_after = host.step_metrics().await;
                    add_delta(&mut m.steps[side], &steps_before, &steps_after);
                }
            }
        }

        // Histories of the last round's runs (read after measuring).
        for side in 0..SIDES.len() {
            for id in &m.batches[side].last().context("no rounds")?.run_ids {
                m.timelines[side].push(timeline(&history(client.connection(), ns, id).await?));
            }
        }
        report_workflows(out, o, &wf, &m);
        Ok::<(), anyhow::Error>(())
    }
    .await;
    native.shutdown().await;
    drop(host);
    result
}

/// What the workflow section measured, by side (see [`SIDES`]).
#[derive(Default)]
struct Measured {
    batches: [Vec<Batch>; 3],
    /// Histories of the last round.
    timelines: [Vec<Timeline>; 3],
    /// Host step metrics over the measured rounds: `<kind> sum` / `<kind> count`.
    steps: [BTreeMap<String, f64>; 3],
    /// Server counters over the measured rounds.
    server: [BTreeMap<String, f64>; 3],
}

/// Adds `after - before` to `into`, key by key.
fn add_delta(
    into: &mut BTreeMap<String, f64>,
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) {
    for (k, v) in after {
        *into.entry(k.clone()).or_default() += v - before.get(k).copied().unwrap_or(0.0);
    }
}

/// Request counters of the Temporal server for `namespace` (frontend
/// requests and persistence operations), when `--server-metrics` is set.
async fn server_counters(o: &Options, namespace: &str) -> Result<BTreeMap<String, f64>> {
    let mut counters = BTreeMap::new();
    let Some(url) = &o.server_metrics else {
        return Ok(counters);
    };
    // The server publishes its counters about once a second: let those of
    // the batch that just ended arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rest = url
        .strip_prefix("http://")
        .context("--server-metrics takes an http:// URL")?;
    let (addr, path) = rest.split_once('/').map_or((rest, "/"), |(a, p)| (a, p));
    let path = format!("/{}", path.trim_start_matches('/'));
    let text = http_get(addr, &path)
        .await
        .with_context(|| format!("no answer from {url}"))?;
    let ns = format!("namespace=\"{namespace}\"");
    for line in text.lines() {
        let kind = if line.starts_with("service_requests{")
            && line.contains("service_name=\"frontend\"")
        {
            "request"
        } else if line.starts_with("persistence_requests{") {
            "database"
        } else {
            continue;
        };
        if !line.contains(&ns) {
            continue;
        }
        let label = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("?")
                .to_string()
        };
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let key = if kind == "request" {
            format!("request `{}`", label("operation"))
        } else {
            format!(
                "database `{}` ({})",
                label("operation"),
                label("service_name")
            )
        };
        *counters.entry(key).or_default() += value;
    }
    Ok(counters)
}

fn report_workflows(
    out: &mut impl FnMut(String),
    o: &Options,
    wf: &PublishedWorkflow,
    m: &Measured,
) {
    let rate = |side: usize| {
        let r: Vec<f64> = m.batches[side].iter().map(Batch::rate).collect();
        let list = r
            .iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(", ");
        (median_f64(r), list)
    };
    let latency = |side: usize| {
        stats(
            m.batches[side]
                .iter()
                .flat_map(|b| b.latencies.iter().copied())
                .collect(),
        )
    };
    let rates: Vec<(f64, String)> = (0..SIDES.len()).map(rate).collect();
    let lat: Vec<Stats> = (0..SIDES.len()).map(latency).collect();
    let row = |label: &str, cells: Vec<String>| format!("| {label} | {} |", cells.join(" | "));
    let header = |first: &str| {
        format!(
            "| {first} | {} |\n| --- |{}",
            SIDES.join(" | "),
            " --- |".repeat(SIDES.len())
        )
    };
    out(format!(
        "## 7. Workflow runs through Temporal: WASM `hello` (component {}) vs a native Rust workflow\n",
        wf.digest.get(..12).unwrap_or(&wf.digest)
    ));
    out(format!(
        "{} rounds of {} runs per side, {} in flight, after {} warm-up runs per side; each round runs native, then Toolhost with the activity, then Toolhost without; latency = start request sent → result received by the submitter. Toolhost runs go to a separate `toolhost host` process; the native worker runs in the bench process.\n",
        o.rounds, o.runs, o.concurrency, o.warmup
    ));
    out(header(""));
    out(row(
        "throughput, median of the rounds (runs/s)",
        rates.iter().map(|(r, _)| format!("**{r:.1}**")).collect(),
    ));
    out(row(
        "throughput, each round",
        rates.iter().map(|(_, l)| l.clone()).collect(),
    ));
    out(row(
        "latency p50 (all rounds)",
        lat.iter().map(|l| ms(l.median)).collect(),
    ));
    out(row("latency p95", lat.iter().map(|l| ms(l.p95)).collect()));
    let ratio = |side: usize| 100.0 * rates[side].0 / rates[NATIVE].0;
    out(format!(
        "\nratio of throughputs, same shape (Toolhost `hello` with its activity / native): **{:.0} %** (goal ≥ 80 %); p50 latency ratio {:.2}x. Without the activity: {:.0} %.\n",
        ratio(SAME_SHAPE),
        lat[SAME_SHAPE].median.as_secs_f64() / lat[NATIVE].median.as_secs_f64(),
        ratio(NO_STEP)
    ));
    let summaries: Vec<Vec<(String, String)>> = m.timelines.iter().map(|t| summarize(t)).collect();
    out(format!(
        "Per run, from Temporal's histories of the {} runs of the last round (median, p95; event times are the server's):\n",
        m.timelines.iter().map(Vec::len).min().unwrap_or(0)
    ));
    out(header("per run"));
    let mut rows: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for (side, lines) in summaries.into_iter().enumerate() {
        for (k, v) in lines {
            if !order.contains(&k) {
                order.push(k.clone());
            }
            rows.entry(k)
                .or_insert_with(|| vec!["–".into(); SIDES.len()])[side] = v;
        }
    }
    for k in order {
        out(row(&k, rows[&k].clone()));
    }
    let kinds: std::collections::BTreeSet<&str> = m
        .steps
        .iter()
        .flat_map(|s| s.keys().filter_map(|k| k.strip_suffix(" count")))
        .collect();
    for step in kinds {
        let cells = (0..SIDES.len())
            .map(|side| {
                let count = m.steps[side]
                    .get(&format!("{step} count"))
                    .copied()
                    .unwrap_or(0.0);
                let sum = m.steps[side]
                    .get(&format!("{step} sum"))
                    .copied()
                    .unwrap_or(0.0);
                if count > 0.0 {
                    format!(
                        "{} (mean of {count:.0})",
                        ms(Duration::from_secs_f64(sum / count))
                    )
                } else {
                    "–".into()
                }
            })
            .collect();
        out(row(
            &format!("`{step}`: executed inside the host (host `/metrics`)"),
            cells,
        ));
    }
    let runs = (o.runs * o.rounds) as f64;
    let keys: std::collections::BTreeSet<&String> =
        m.server.iter().flat_map(|s| s.keys()).collect();
    let per_run = |side: usize, k: &String| m.server[side].get(k).copied().unwrap_or(0.0) / runs;
    let keys: Vec<_> = keys
        .into_iter()
        .filter(|k| (0..SIDES.len()).any(|side| per_run(side, k) >= 0.05))
        .collect();
    if !keys.is_empty() {
        out(format!(
            "\nTemporal server work per run (its `/metrics`, namespace-wide counters over the measured rounds / {runs:.0} runs per side; other traffic on the server at the time is included):\n"
        ));
        out(header("per run"));
        for k in keys {
            out(row(
                k,
                (0..SIDES.len())
                    .map(|side| format!("{:.2}", per_run(side, k)))
                    .collect(),
            ));
        }
    }
    out(String::new());
}

// --------------------------------------------------- 8. uploads section

/// Fills `buf` with pseudo-random bytes (splitmix64): incompressible for
/// zstd, cheap to make.
fn fill_random(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
}

/// An S3 client configured like the host's (region, endpoint, path style,
/// checksums only where required), built straight from the SDK.
async fn raw_client(s3: &S3Config) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new(
            s3.region.clone().unwrap_or_else(|| "us-east-1".into()),
        ))
        .load()
        .await;
    let mut builder = aws_sdk_s3::config::Builder::from(&shared).force_path_style(s3.path_style);
    if let Some(endpoint) = &s3.endpoint {
        builder = builder
            .endpoint_url(endpoint)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

const RAW_PART: u64 = 16 << 20;
const RAW_IN_FLIGHT: usize = 4;

/// The baseline: a multipart upload of `path` written straight with the
/// SDK (16 MiB parts, 4 in flight).
async fn raw_upload(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    path: &Path,
) -> Result<()> {
    use aws_sdk_s3::primitives::{ByteStream, Length};
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let len = std::fs::metadata(path)?.len();
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("create_multipart_upload: {}", DisplayErrorContext(e)))?;
    let upload_id = created.upload_id().context("no upload id")?.to_string();
    let parts: Result<Vec<CompletedPart>> = futures::stream::iter(1..=len.div_ceil(RAW_PART))
        .map(|number| {
            let upload_id = &upload_id;
            async move {
                let offset = (number - 1) * RAW_PART;
                let size = RAW_PART.min(len - offset);
                let body = ByteStream::read_from()
                    .path(path)
                    .offset(offset)
                    .length(Length::Exact(size))
                    .build()
                    .await?;
                let done = client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number as i32)
                    .content_length(size as i64)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| anyhow::anyhow!("upload_part: {}", DisplayErrorContext(e)))?;
                Ok(CompletedPart::builder()
                    .part_number(number as i32)
                    .set_e_tag(done.e_tag().map(str::to_string))
                    .build())
            }
        })
        .buffer_unordered(RAW_IN_FLIGHT)
        .try_collect()
        .await;
    let mut parts = match parts {
        Ok(p) => p,
        Err(e) => {
            let _ = client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
            return Err(e);
        }
    };
    parts.sort_by_key(|p| p.part_number());
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("complete_multipart_upload: {}", DisplayErrorContext(e)))?;
    Ok(())
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

/// The median (the mean of the middle two for an even count).
fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n.is_multiple_of(2) {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    } else {
        v[n / 2]
    }
}

async fn uploads(
    out: &mut impl FnMut(String),
    o: &Options,
    blobs: Arc<dyn BlobStore>,
    s3: &S3Config,
    dir: &Path,
) -> Result<()> {
    eprintln!("bench: writing a {} MiB target", o.upload_mib);
    let target = dir.join("upload-target");
    std::fs::create_dir_all(&target)?;
    let single = dir.join("upload-single.bin");
    {
        use std::io::Write as _;
        let mut whole = std::io::BufWriter::new(std::fs::File::create(&single)?);
        let mut buf = vec![0u8; 1 << 20];
        let mut state = 0x5EED_u64;
        for i in 0..o.upload_mib {
            fill_random(&mut buf, &mut state);
            std::fs::write(target.join(format!("file-{i:04}.bin")), &buf)?;
            whole.write_all(&buf)?;
        }
        whole.flush()?;
    }
    let raw = raw_client(s3).await;
    let bucket = s3.bucket.trim();
    let raw_prefix = s3.prefix.trim_matches('/');
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let (mut packed_bytes, mut unpacked_bytes) = (0, 0);
    for round in 0..o.upload_rounds {
        eprintln!("bench: upload round {} of {}", round + 1, o.upload_rounds);
        // Each path goes first in every other round, so neither always
        // follows the other's deletes and Garage's background work.
        for raw_turn in [round % 2 == 0, round % 2 == 1] {
            if raw_turn {
                let key = format!("{raw_prefix}/raw/upload-{round}.bin");
                let t = Instant::now();
                raw_upload(&raw, bucket, &key, &single).await?;
                let raw_time = t.elapsed();
                samples
                    .entry("raw")
                    .or_default()
                    .push(mib_per_s(std::fs::metadata(&single)?.len(), raw_time));
                raw.delete_object()
                    .bucket(bucket)
                    .key(&key)
                    .send()
                    .await
                    .map_err(|e| anyhow::anyhow!("delete_object: {}", DisplayErrorContext(e)))?;
                continue;
            }
            // What `toolhost submit` does (cli/remote.rs `upload_target`).
            let archive = dir.join(format!("upload-{round}.tar.zst"));
            let t = Instant::now();
            let (src, dst) = (target.clone(), archive.clone());
            let info = tokio::task::spawn_blocking(move || {
                toolhost::storage::pack::pack_target(&src, &dst, None)
            })
            .await??;
            let pack_time = t.elapsed();
            let key = toolhost::storage::pack::target_key(&info.sha256);
            anyhow::ensure!(
                !blobs.exists(&key).await?,
                "{key} is already there: the bench prefix is not fresh"
            );
            let t_put = Instant::now();
            blobs.put_file(&key, &archive, None).await?;
            let put_time = t_put.elapsed();
            let total = t.elapsed();
            (packed_bytes, unpacked_bytes) = (info.bytes, info.unpacked_bytes);
            samples
                .entry("pack")
                .or_default()
                .push(mib_per_s(info.unpacked_bytes, pack_time));
            samples
                .entry("put")
                .or_default()
                .push(mib_per_s(info.bytes, put_time));
            samples
                .entry("total")
                .or_default()
                .push(mib_per_s(info.unpacked_bytes, total));
            blobs.delete(&key).await?;
            std::fs::remove_file(&archive)?;
        }
    }
    let m = |k: &str| median_f64(samples[k].clone());
    let each = |k: &str| {
        samples[k]
            .iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    out(format!(
        "## 8. Upload of a {} MiB target ({} files of 1 MiB of random bytes) to S3\n",
        o.upload_mib, o.upload_mib
    ));
    out(format!(
        "Packed archive: {:.1} MiB (tar + zstd level 3 of incompressible data). {} rounds, each path first in every other round; median shown, every round in brackets. MiB/s of the bytes each step handles (the archive for the upload, the target for packing).\n",
        packed_bytes as f64 / 1048576.0,
        o.upload_rounds
    ));
    out("| path | MiB/s |\n| --- | --- |".into());
    out(format!(
        "| Toolhost pack only (`pack_target`: walk, tar, zstd level 3, sha256, temp file fsynced and renamed) | {:.0} ({}) |",
        m("pack"),
        each("pack")
    ));
    out(format!(
        "| Toolhost upload only (`S3Store::put_file` of the archive: 16 MiB parts, 4 in flight) | **{:.0}** ({}) |",
        m("put"),
        each("put")
    ));
    out(format!(
        "| Toolhost pack + upload (as `toolhost submit`: pack, `exists`, `put_file`; target bytes / total time) | {:.0} ({}) |",
        m("total"),
        each("total")
    ));
    out(format!(
        "| raw `aws-sdk-s3` multipart upload of one {} MiB file (16 MiB parts, 4 in flight) | **{:.0}** ({}) |",
        unpacked_bytes / (1 << 20),
        m("raw"),
        each("raw")
    ));
    out(format!(
        "\nratio upload-only / raw SDK: **{:.0} %** (goal ≥ 80 %)\n",
        100.0 * m("put") / m("raw")
    ));
    Ok(())
}
