//! Commands for submitters in distributed mode: `submit`, `status`,
//! `list`, `cancel`, `logs` and `artifacts`. They talk to Temporal (runs)
//! and the blob store (targets, results); no host runs in this process.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::{CliError, GlobalArgs, exit, load_config, output};
use crate::distributed::client::RunClient;
use crate::distributed::components::{list_published, published};
use crate::distributed::{WorkflowInput, WorkflowOutput};
use crate::engine::{RunRecord, RunStatus, params};
use crate::manifest::Severity;
use crate::storage::BlobStore;

async fn client(g: &GlobalArgs) -> anyhow::Result<RunClient> {
    let config = load_config(g)?;
    let temporal = config.temporal()?.clone();
    let blobs = config.blob_store()?;
    RunClient::connect(&temporal, blobs).await
}

/// Arguments of `toolhost submit`.
#[derive(Args, Debug)]
#[command(after_help = "\
Packs the target (tar + zstd), uploads it to the blob store once (by sha256),
validates the parameters against the workflow's schema as published by its
hosts (registry/<name>.json in the blob store), and starts the run on Temporal
queue toolhost-<vertical>. With --wait it follows the run's progress to the end
and exits like `toolhost run` (0, 1 with --fail-on, 3 failed, 4 timed out,
130 cancelled).

Examples:
  toolhost submit security_assessment --target ./my-crate --wait --fail-on high
  toolhost submit hello --target . --param name=you --json")]
pub struct SubmitArgs {
    /// Name of the workflow.
    workflow: String,
    /// Directory to analyse.
    #[arg(long, short, value_name = "DIR")]
    target: PathBuf,
    #[command(flatten)]
    params: super::ParamArgs,
    /// Follow the run to its end.
    #[arg(long)]
    wait: bool,
    /// With --wait: write the findings as SARIF 2.1.0 to FILE.
    #[arg(long, value_name = "FILE", requires = "wait")]
    sarif: Option<PathBuf>,
    /// With --wait: exit with code 1 when a finding is at least this severe.
    #[arg(long, value_name = "SEVERITY", value_parser = super::parse_severity, requires = "wait")]
    fail_on: Option<Severity>,
    /// Print JSON on stdout (the run id, or with --wait the run record).
    #[arg(long)]
    json: bool,
    /// Use this run id instead of `<workflow>-<random>` (direct Temporal only).
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,
    /// A label for the run, KEY=VALUE (repeatable; through a server).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Start one run however often this is sent (through a server): a CI
    /// job's retry with the same key gets the run the first try started.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
}

fn bar(enabled: bool, template: &str) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Packs `dir` and uploads it (unless already present); returns its sha256.
pub async fn upload_target(
    dir: &std::path::Path,
    blobs: &Arc<dyn BlobStore>,
    show: bool,
) -> anyhow::Result<(String, crate::storage::pack::PackInfo)> {
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("target `{}` cannot be read", dir.display()))?;
    if !meta.is_dir() {
        return Err(CliError::with_code(
            exit::USAGE,
            format!("target `{}` is not a directory", dir.display()),
        ));
    }
    let tmp = tempfile::Builder::new()
        .prefix("toolhost-target-")
        .suffix(".tar.zst")
        .tempfile()
        .context("cannot create a temporary file")?;
    let out = tmp.path().to_path_buf();
    let src = dir.to_path_buf();
    let packing = bar(show, "{spinner} packing {msg} {bytes}");
    let p = packing.clone();
    let info = tokio::task::spawn_blocking(move || {
        crate::storage::pack::pack_target(&src, &out, Some(&move |n| p.set_position(n)))
    })
    .await??;
    packing.finish_and_clear();
    let key = crate::storage::pack::target_key(&info.sha256);
    if blobs.exists(&key).await? {
        if show {
            eprintln!(
                "target already uploaded ({} files, sha256 {})",
                info.files,
                &info.sha256[..12]
            );
        }
        return Ok((info.sha256.clone(), info));
    }
    let upload = bar(
        show,
        "uploading [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    );
    upload.set_length(info.bytes);
    let u = upload.clone();
    let progress = move |n: u64| u.set_position(n);
    blobs
        .put_file(&key, tmp.path(), Some(&progress))
        .await
        .with_context(|| format!("cannot upload the target to {}", blobs.describe()))?;
    upload.finish_and_clear();
    if show {
        eprintln!(
            "uploaded target: {} files, {} bytes packed to {} (sha256 {})",
            info.files,
            info.unpacked_bytes,
            info.bytes,
            &info.sha256[..12]
        );
    }
    Ok((info.sha256.clone(), info))
}

/// `toolhost workflows` in distributed mode: every workflow the hosts have
/// published, by vertical, with the hosts polling each vertical's queue.
pub(super) async fn published_workflows(g: &GlobalArgs, json_out: bool) -> anyhow::Result<u8> {
    let client = client(g).await?;
    let blobs = client.blobs.as_ref();
    let mut workflows = Vec::new();
    for name in list_published(blobs).await? {
        match published(blobs, &name).await {
            Ok(wf) => workflows.push(wf),
            Err(e) => eprintln!("warning: skipping `{name}`: {e:#}"),
        }
    }
    // Hosts are the workflow pollers of each vertical's queue (Temporal
    // remembers a poller for a few minutes after it stops).
    let mut verticals: std::collections::BTreeMap<String, (String, Vec<String>)> =
        std::collections::BTreeMap::new();
    for wf in &workflows {
        if verticals.contains_key(&wf.vertical) {
            continue;
        }
        let mut hosts: Vec<String> = client
            .pollers(&wf.task_queue)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.strip_prefix("toolhost@").unwrap_or(&p).to_string())
            .collect();
        hosts.sort();
        hosts.dedup();
        verticals.insert(wf.vertical.clone(), (wf.task_queue.clone(), hosts));
    }
    let hosts_of = |v: &str| verticals.get(v).map(|(_, h)| h.clone()).unwrap_or_default();
    if json_out {
        let doc = json!({
            "workflows": workflows.iter().map(|w| json!({
                "name": w.name, "version": w.version, "vertical": w.vertical,
                "description": w.description, "tools": w.tools, "digest": w.digest,
                "task_queue": w.task_queue, "timeout_secs": w.timeout_secs,
                "published_by": w.host, "published_at": w.published_at,
                "hosts": hosts_of(&w.vertical),
            })).collect::<Vec<_>>(),
            "verticals": verticals.iter().map(|(v, (q, h))| (v.clone(), json!({"task_queue": q, "hosts": h}))).collect::<serde_json::Map<_, _>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(exit::OK);
    }
    if workflows.is_empty() {
        println!(
            "no host has published a workflow yet; start a host (`toolhost host` with [temporal] and [storage.s3]) with a toolbox"
        );
        return Ok(exit::OK);
    }
    let rows: Vec<[String; 5]> = workflows
        .iter()
        .map(|w| {
            let hosts = hosts_of(&w.vertical);
            [
                w.name.clone(),
                w.version.clone(),
                w.vertical.clone(),
                if hosts.is_empty() {
                    "(none polling)".into()
                } else {
                    hosts.join(",")
                },
                w.description.clone(),
            ]
        })
        .collect();
    super::inspect::print_table(
        &["NAME", "VERSION", "VERTICAL", "HOSTS", "DESCRIPTION"],
        &rows,
    );
    Ok(exit::OK)
}

/// The API client when a login says the commands go through a server.
fn server() -> anyhow::Result<Option<super::server::ApiClient>> {
    super::server::current_login()?
        .map(super::server::ApiClient::new)
        .transpose()
}

pub(super) async fn submit(g: &GlobalArgs, args: SubmitArgs) -> anyhow::Result<u8> {
    if let Some(api) = server()? {
        if args.run_id.is_some() {
            return Err(CliError::with_code(
                exit::USAGE,
                "--run-id is for direct Temporal submission; the server names its runs (use --idempotency-key to make a retried submit start one run)",
            ));
        }
        return super::server::submit(
            &api,
            super::server::SubmitRequest {
                workflow: &args.workflow,
                target: &args.target,
                params: &args.params,
                labels: &args.labels,
                idempotency_key: args.idempotency_key.as_deref(),
                wait: args.wait,
                sarif: args.sarif.as_ref(),
                fail_on: args.fail_on,
                json: args.json,
            },
        )
        .await;
    }
    if !args.labels.is_empty() || args.idempotency_key.is_some() {
        return Err(CliError::with_code(
            exit::USAGE,
            "--label and --idempotency-key need a server: `toolhost login --server URL` first",
        ));
    }
    let client = client(g).await?;
    let wf = published(client.blobs.as_ref(), &args.workflow)
        .await
        .map_err(|e| CliError::with_code(exit::USAGE, format!("{e:#}")))?;
    let params = args.params.build(&wf.parameters_schema)?;
    let validator = crate::toolbox::validate::compile_schema(&wf.parameters_schema)?;
    params::check(&validator, &wf.name, &params)
        .map_err(|e| CliError::with_code(exit::USAGE, e.to_string()))?;
    let run_id = match &args.run_id {
        Some(id) => {
            crate::engine::check_run_id(id).map_err(|e| CliError::with_code(exit::USAGE, e))?;
            id.clone()
        }
        None => crate::engine::new_run_id(&wf.name),
    };
    let show = !args.json;
    let (sha, _) = upload_target(&args.target, &client.blobs, show).await?;
    let input = WorkflowInput {
        params,
        target: Some(sha),
        digest: Some(wf.digest.clone()),
        target_label: Some(args.target.display().to_string()),
        ..Default::default()
    };
    client.start(&wf, &run_id, &input).await?;
    if !args.wait {
        if args.json {
            println!(
                "{}",
                json!({"run_id": run_id, "workflow": wf.name, "digest": wf.digest, "task_queue": wf.task_queue})
            );
        } else {
            println!("{run_id}");
            eprintln!(
                "started {} {} on {}; follow it with `toolhost status {run_id}`",
                wf.name, wf.version, wf.task_queue
            );
        }
        return Ok(exit::OK);
    }
    if show {
        eprintln!(
            "started run {run_id} ({} {} on {})",
            wf.name, wf.version, wf.task_queue
        );
    }
    let output = follow(&client, &run_id, show).await?;
    finish(
        &client,
        &output,
        args.json,
        args.sarif.as_ref(),
        args.fail_on,
    )
    .await
}

/// Follows a run's progress on stderr until it closes.
async fn follow(client: &RunClient, run_id: &str, show: bool) -> anyhow::Result<WorkflowOutput> {
    let spinner = bar(show, "{spinner} [{elapsed}] {wide_msg}");
    spinner.enable_steady_tick(Duration::from_millis(100));
    let waiter = client.wait(run_id);
    tokio::pin!(waiter);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let result = loop {
        tokio::select! {
            r = &mut waiter => break r,
            _ = tick.tick() => {
                if show && let Ok(mut status) = client.query(run_id, crate::distributed::QUERY_STATUS).await {
                    // A step's live progress travels in its heartbeats.
                    if let Ok(state) = client.describe(run_id).await
                        && let Some(p) = state.step_progress()
                    {
                        status["progress"] = p.clone();
                    }
                    spinner.set_message(status_line(&status));
                }
            }
        }
    };
    spinner.finish_and_clear();
    result
}

fn status_line(status: &Value) -> String {
    let mut line = format!(
        "{} · {} steps · {} findings",
        status["phase"].as_str().unwrap_or("?"),
        status["steps_completed"],
        status["findings"]
    );
    if let Some(p) = status.get("progress").filter(|p| !p.is_null()) {
        line.push_str(" · ");
        line.push_str(&output::format_stats(p));
    }
    line
}

async fn finish(
    client: &RunClient,
    output: &WorkflowOutput,
    json: bool,
    sarif: Option<&PathBuf>,
    fail_on: Option<Severity>,
) -> anyhow::Result<u8> {
    // The result names where the record is (an API run's is below its
    // tenant's prefix).
    let record = match output.keys["result"].as_str() {
        Some(key) => client
            .blobs
            .get(key)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<RunRecord>(&b).ok()),
        None => None,
    };
    let record = match record {
        Some(r) => Some(r),
        None => RunRecord::load(client.blobs.as_ref(), &output.run_id)
            .await
            .ok(),
    };
    if let (Some(path), Some(record)) = (sarif, &record) {
        std::fs::write(path, record.sarif_bytes())
            .with_context(|| format!("cannot write SARIF to `{}`", path.display()))?;
    }
    match (&record, json) {
        (Some(r), true) => println!("{}", serde_json::to_string_pretty(r)?),
        (None, true) => println!("{}", serde_json::to_string_pretty(output)?),
        (Some(r), false) => output::print_run_summary(
            r,
            std::path::Path::new(&format!("{} runs/{}/", client.blobs.describe(), r.run_id)),
        ),
        (None, false) => {
            println!(
                "{} {} (run {})",
                output.workflow,
                output.status.as_str(),
                output.run_id
            );
            if let Some(e) = &output.error {
                println!("  reason: {e}");
            }
        }
    }
    Ok(match output.status {
        RunStatus::Succeeded => {
            let failing = fail_on.is_some_and(|min| {
                record
                    .as_ref()
                    .is_some_and(|r| r.findings.iter().any(|f| f.severity >= min))
            });
            if failing { exit::FINDINGS } else { exit::OK }
        }
        RunStatus::Failed => exit::RUN_FAILED,
        RunStatus::TimedOut => exit::TIMED_OUT,
        RunStatus::Cancelled => exit::CANCELLED,
    })
}

/// Arguments of `toolhost status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The run id (printed by `toolhost submit`).
    run_id: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Follow the run until it ends.
    #[arg(long)]
    wait: bool,
}

pub(super) async fn status(g: &GlobalArgs, args: StatusArgs) -> anyhow::Result<u8> {
    if let Some(api) = server()? {
        return super::server::status(&api, &args.run_id, args.json, args.wait).await;
    }
    let client = client(g).await?;
    if args.wait {
        let output = follow(&client, &args.run_id, !args.json).await?;
        return finish(&client, &output, args.json, None, None).await;
    }
    let state = client.describe(&args.run_id).await?;
    let pollers = if state.status == "running" {
        client.pollers(&state.task_queue).await.unwrap_or_default()
    } else {
        vec![]
    };
    let mut live = if state.status == "running" && !pollers.is_empty() {
        client
            .query(&args.run_id, crate::distributed::QUERY_STATUS)
            .await
            .ok()
    } else {
        None
    };
    // A running step's own progress (from its heartbeats) is the freshest.
    if let (Some(l), Some(p)) = (live.as_mut(), state.step_progress()) {
        l["progress"] = p.clone();
    }
    // A run no host has picked up yet: say why.
    let mut waiting = None;
    if state.status == "running" && live.is_none() && state.history_length <= 3 {
        waiting = Some(if pollers.is_empty() {
            format!(
                "queued: no host is polling task queue `{}`; start a host of that vertical",
                state.task_queue
            )
        } else {
            format!(
                "queued: waiting for one of {} host(s) on `{}`",
                pollers.len(),
                state.task_queue
            )
        });
    }
    let record = if state.status != "running" {
        RunRecord::load(client.blobs.as_ref(), &args.run_id)
            .await
            .ok()
    } else {
        None
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "run": state, "live": live, "queued": waiting,
                "result": record.as_ref().map(|r| json!({"status": r.status, "error": r.error, "counts": r.counts, "summary": r.summary})),
            }))?
        );
        return Ok(exit::OK);
    }
    println!("{} {} ({})", state.run_id, state.status, state.workflow);
    if let Some(w) = &waiting {
        println!("  {w}");
    }
    if let Some(l) = &live {
        println!("  {}", status_line(l));
    }
    for step in state
        .pending_steps
        .iter()
        .filter(|_| state.status == "running")
    {
        println!(
            "  pending step {} (attempt {}{}{})",
            step["type"].as_str().unwrap_or("?"),
            step["attempt"],
            step["last_heartbeat"]
                .as_str()
                .map(|t| format!(", last heartbeat {t}"))
                .unwrap_or_default(),
            step["last_failure"]
                .as_str()
                .map(|f| format!(", last failure: {f}"))
                .unwrap_or_default()
        );
    }
    if let Some(t) = state
        .workflow_task_failure
        .as_ref()
        .filter(|_| state.status == "running")
    {
        println!(
            "  workflow task failing (attempt {}): {}",
            t["attempt"],
            crate::text::display_line(
                t["last_failure"]
                    .as_str()
                    .unwrap_or("reason not in recent history"),
                400
            )
        );
    }
    if let Some(s) = &state.started {
        println!("  started {s}");
    }
    if let Some(c) = &state.closed {
        println!("  closed  {c}");
    }
    if let Some(r) = &record {
        println!("  {}", crate::report::summary::counts_line(&r.findings));
        if let Some(e) = &r.error {
            println!("  reason: {e}");
        }
    }
    Ok(exit::OK)
}

/// Arguments of `toolhost list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only runs of this workflow.
    #[arg(long)]
    workflow: Option<String>,
    /// Only runs with this status (running, completed, failed, cancelled, terminated, timed-out).
    #[arg(long)]
    status: Option<String>,
    /// At most this many runs.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(super) async fn list(g: &GlobalArgs, args: ListArgs) -> anyhow::Result<u8> {
    if let Some(api) = server()? {
        return super::server::list(
            &api,
            args.workflow.as_deref(),
            args.status.as_deref(),
            args.limit,
            args.json,
        )
        .await;
    }
    let client = client(g).await?;
    let runs = client
        .list(args.workflow.as_deref(), args.status.as_deref(), args.limit)
        .await
        .map_err(|e| CliError::with_code(exit::USAGE, format!("{e:#}")))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
    } else if runs.is_empty() {
        println!("no runs");
    } else {
        for r in runs {
            println!(
                "{:<40} {:<11} {:<24} {}",
                r.run_id,
                r.status,
                r.workflow,
                r.started.unwrap_or_default()
            );
        }
    }
    Ok(exit::OK)
}

/// Arguments of `toolhost cancel`.
#[derive(Args, Debug)]
pub struct CancelArgs {
    /// The run id.
    run_id: String,
}

pub(super) async fn cancel(g: &GlobalArgs, args: CancelArgs) -> anyhow::Result<u8> {
    if let Some(api) = server()? {
        return super::server::cancel(&api, &args.run_id).await;
    }
    let client = client(g).await?;
    client.cancel(&args.run_id).await?;
    eprintln!(
        "cancellation requested for {}; its tools are stopped within seconds",
        args.run_id
    );
    Ok(exit::OK)
}

/// Arguments of `toolhost logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The run id.
    run_id: String,
    /// Keep printing until the run ends.
    #[arg(long, short)]
    follow: bool,
}

pub(super) fn print_log(bytes: &[u8]) {
    for line in String::from_utf8_lossy(bytes).lines() {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => println!(
                "{} {:<5} {}",
                v["ts"].as_str().unwrap_or(""),
                v["level"].as_str().unwrap_or(""),
                v["message"].as_str().unwrap_or(line)
            ),
            Err(_) => println!("{line}"),
        }
    }
}

pub(super) async fn logs(g: &GlobalArgs, args: LogsArgs) -> anyhow::Result<u8> {
    if let Some(api) = server()? {
        return super::server::logs(&api, &args.run_id, args.follow).await;
    }
    let client = client(g).await?;
    let key = RunRecord::key(&args.run_id, "log.jsonl");
    let mut printed = 0usize;
    if args.follow {
        // Live lines come from the running workflow (a query); the complete
        // log is written to the blob store when the run ends.
        while client.describe(&args.run_id).await?.status == "running" {
            if let Ok(page) = client
                .query_with(
                    &args.run_id,
                    crate::distributed::QUERY_LOG,
                    Some(json!(printed)),
                )
                .await
            {
                for line in page["lines"].as_array().into_iter().flatten() {
                    print_log(line.to_string().as_bytes());
                    printed += 1;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Results are published just before the run closes.
        for _ in 0..20 {
            if client.blobs.exists(&key).await? {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    match client.blobs.get(&key).await {
        Ok(bytes) => {
            let rest: Vec<&[u8]> = bytes.split(|b| *b == b'\n').skip(printed).collect();
            print_log(&rest.join(&b'\n'));
            Ok(exit::OK)
        }
        Err(crate::storage::StoreError::NotFound(_)) => Err(CliError::with_code(
            exit::USAGE,
            format!(
                "no log for run `{}` yet: it is written when the run ends (use --follow to wait)",
                args.run_id
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Arguments of `toolhost artifacts`.
#[derive(Args, Debug)]
pub struct ArtifactsArgs {
    /// The run id.
    run_id: String,
    /// Directory to download them to (created).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub(super) async fn artifacts(g: &GlobalArgs, args: ArtifactsArgs) -> anyhow::Result<u8> {
    if let Some(api) = server()? {
        return super::server::artifacts(&api, &args.run_id, &args.out).await;
    }
    let config = load_config(g)?;
    let blobs = config.blob_store()?;
    crate::engine::check_run_id(&args.run_id).map_err(|e| CliError::with_code(exit::USAGE, e))?;
    let prefix = RunRecord::key(&args.run_id, "artifacts/");
    let keys = blobs.list(&prefix).await?;
    if keys.is_empty() {
        eprintln!(
            "run {} has no artifacts in {}",
            args.run_id,
            blobs.describe()
        );
        return Ok(exit::OK);
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create `{}`", args.out.display()))?;
    for key in keys {
        let name = key.rsplit('/').next().unwrap_or_default();
        crate::capabilities::artifacts::check_name(name).map_err(anyhow::Error::msg)?;
        let dest = args.out.join(name);
        let n = blobs.get_to_file(&key, &dest).await?;
        println!("{} ({n} bytes)", dest.display());
    }
    Ok(exit::OK)
}

/// Arguments of `toolhost retry`.
#[derive(Args, Debug)]
pub struct RetryArgs {
    /// The run to run again (same workflow, parameters, target, labels).
    run_id: String,
    /// Follow the new run to its end and exit like `toolhost run`.
    #[arg(long)]
    wait: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(super) async fn retry(_g: &GlobalArgs, args: RetryArgs) -> anyhow::Result<u8> {
    match server()? {
        Some(api) => super::server::retry(&api, &args.run_id, args.wait, args.json).await,
        None => Err(CliError::with_code(
            exit::USAGE,
            "retry goes through a server: `toolhost login --server URL` first",
        )),
    }
}

/// Whether the commands go through a server, and the client if so.
pub(super) fn api_client() -> anyhow::Result<Option<super::server::ApiClient>> {
    server()
}
