//! `cargo xtask bench --api`: API v1 through a real `toolhost serve`
//! process (release build, token auth on, limits off) against the same
//! operations called on the API's run layer in this process, in one run.
//!
//! * `POST /v1/runs` of `hello` and `GET /v1/runs/{id}`, 100 concurrent
//!   clients, p50 and p99 latency; the baseline is `Runs::start` and
//!   `Runs::get` plus the record read, from 100 concurrent tasks.
//! * `GET /v1/runs` with a filter over 100,000 recorded runs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::json;
use toolhost::serve::runs::{ApiStatus, RunMeta, Start};

/// Concurrent clients.
const CLIENTS: usize = 100;
/// Runs started per side.
const STARTS: usize = 1000;
/// Run reads per side.
const READS: usize = 5000;
/// Recorded runs for the listing.
const LISTED: usize = 100_000;

/// The default config (its verticals) with this bench's directories and
/// `[serve]` settings.
fn config_text(toolbox: &Path) -> String {
    let default: String = toolhost::config::DEFAULT_CONFIG
        .lines()
        .filter(|l| !l.starts_with("toolbox") && !l.starts_with("data_dir"))
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        "toolbox = \"{}\"\ndata_dir = \"data\"\nwork_dir = \"work\"\n{default}\n[serve]\nmax_concurrent_runs = 2\n[serve.limits]\nrequests_per_second = 0\nconcurrent_runs = 0\nupload_mib_per_day = 0\n",
        toolbox.display()
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn fmt(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Runs `n` operations from `CLIENTS` concurrent tasks; returns sorted latencies.
async fn concurrently<F, Fut>(n: usize, op: F) -> Result<Vec<Duration>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut i = c;
            while i < n {
                let t = Instant::now();
                op(i).await?;
                out.push(t.elapsed());
                i += CLIENTS;
            }
            anyhow::Ok(out)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort();
    Ok(all)
}

struct ServeProcess {
    child: std::process::Child,
    url: String,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(bin: &Path, config: &Path) -> Result<ServeProcess> {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("TOOLHOST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start toolhost serve")?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut lines = std::io::BufReader::new(stderr).lines();
    let url = loop {
        let line = lines
            .next()
            .context("toolhost serve exited before it listened")??;
        if let Some(rest) = line.split("API v1 on ").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
    };
    // Keep draining stderr so the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Ok(ServeProcess { child, url })
}

fn create_token(bin: &Path, config: &Path) -> Result<String> {
    let out = std::process::Command::new(bin)
        .arg("--config")
        .arg(config)
        .args([
            "token",
            "create",
            "--tenant",
            "bench",
            "--role",
            "submitter",
        ])
        .output()?;
    anyhow::ensure!(out.status.success(), "token create failed");
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Writes `n` synthetic run records of the API (a tenth labelled
/// `branch=main`) into `dir`.
fn plant_runs(dir: &Path, n: usize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for i in 0..n {
        let id = format!("hello-{i:012x}");
        let meta = RunMeta {
            run_id: id.clone(),
            tenant: "bench".into(),
            workflow: if i % 2 == 0 { "hello" } else { "lint" }.into(),
            digest: None,
            params: json!({"name": format!("run {i}")}),
            target: None,
            labels: [(
                "branch".to_string(),
                if i % 10 == 0 { "main" } else { "dev" }.to_string(),
            )]
            .into(),
            created_at: format!(
                "2026-11-{:02}T{:02}:{:02}:{:02}Z",
                1 + i % 28,
                i % 24,
                i % 60,
                (i / 60) % 60
            ),
            created_by: "planted".into(),
            retry_of: None,
            idempotency_key: None,
            status: ApiStatus::Succeeded,
            ended_at: None,
            error: None,
            timeout_secs: None,
        };
        std::fs::write(dir.join(format!("{id}.json")), serde_json::to_vec(&meta)?)?;
    }
    Ok(())
}

pub async fn main() -> Result<()> {
    let repo = super::repo();
    let bin = repo.join("target/release/toolhost");
    let root = tempfile::tempdir()?;
    let toolbox = root.path().join("toolbox");
    std::fs::create_dir_all(&toolbox)?;
    std::fs::copy(repo.join("toolbox/hello.wasm"), toolbox.join("hello.wasm"))
        .context("toolbox/hello.wasm is missing: run `cargo xtask build-plugins`")?;
    let mut report = String::new();
    let mut out = |line: String| {
        println!("{line}");
        report.push_str(&line);
        report.push('\n');
    };
    out(format!(
        "# API v1: `toolhost serve` against the run layer called directly\n\n{CLIENTS} concurrent clients; {} CPUs; `hello` runs; token auth on, limits off, 2 runs executing at once\n",
        super::num_cpus()
    ));

    // ---- HTTP, through a real server process
    let http_dir = root.path().join("http");
    std::fs::create_dir_all(&http_dir)?;
    let http_config = http_dir.join("host.toml");
    std::fs::write(&http_config, config_text(&toolbox))?;
    let token = create_token(&bin, &http_config)?;
    let server = start_server(&bin, &http_config)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()?;
    let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c, u, t, i2) = (
        client.clone(),
        server.url.clone(),
        token.clone(),
        ids.clone(),
    );
    let http_start = concurrently(STARTS, move |n| {
        let (c, u, t, ids) = (c.clone(), u.clone(), t.clone(), i2.clone());
        async move {
            let resp = c
                .post(format!("{u}/v1/runs"))
                .bearer_auth(&t)
                .json(&json!({"workflow": "hello", "params": {"name": format!("c{n}")}}))
                .send()
                .await?;
            anyhow::ensure!(
                resp.status().as_u16() == 202,
                "POST /v1/runs: {}",
                resp.status()
            );
            let v: serde_json::Value = resp.json().await?;
            ids.lock()
                .unwrap()
                .push(v["run_id"].as_str().unwrap_or_default().to_string());
            Ok(())
        }
    })
    .await?;
    let ids: Arc<Vec<String>> = Arc::new(ids.lock().unwrap().clone());
    wait_for_http_runs(&client, &server.url, &token, &ids).await?;
    let (c, u, t, i2) = (
        client.clone(),
        server.url.clone(),
        token.clone(),
        ids.clone(),
    );
    let http_get = concurrently(READS, move |n| {
        let (c, u, t, ids) = (c.clone(), u.clone(), t.clone(), i2.clone());
        async move {
            let resp = c
                .get(format!("{u}/v1/runs/{}", ids[n % ids.len()]))
                .bearer_auth(&t)
                .send()
                .await?;
            anyhow::ensure!(
                resp.status().is_success(),
                "GET /v1/runs/id: {}",
                resp.status()
            );
            resp.bytes().await?;
            Ok(())
        }
    })
    .await?;
    drop(server);

    // ---- the same operations on the run layer, in this process
    let direct_dir = root.path().join("direct");
    std::fs::create_dir_all(&direct_dir)?;
    let text = config_text(&toolbox);
    let config = toolhost::config::HostConfig::parse(&text, Some(&direct_dir))?;
    let runtime =
        toolhost::runtime::Runtime::new(&toolhost::runtime::EngineOptions::for_host(&config))?;
    let toolbox_loaded = toolhost::toolbox::load(&runtime, &config).await?;
    let engine = Arc::new(toolhost::engine::LocalEngine::new(toolbox_loaded)?);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let api = toolhost::serve::Api::new(engine, config.serve.clone(), shutdown.clone())?;
    let direct_ids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (a, i2) = (api.clone(), direct_ids.clone());
    let direct_start = concurrently(STARTS, move |n| {
        let (a, ids) = (a.clone(), i2.clone());
        async move {
            let run = a
                .runs()
                .context("an embedded API")?
                .start(Start {
                    tenant: "bench".into(),
                    token_id: "direct".into(),
                    workflow: "hello".into(),
                    digest: None,
                    params: json!({"name": format!("c{n}")}),
                    target: None,
                    target_tree: None,
                    labels: Default::default(),
                    idempotency_key: None,
                    retry_of: None,
                    timeout_secs: None,
                })
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            ids.lock().unwrap().push(run.meta().run_id);
            Ok(())
        }
    })
    .await?;
    let direct_ids: Arc<Vec<String>> = Arc::new(direct_ids.lock().unwrap().clone());
    loop {
        let live = direct_ids
            .iter()
            .filter(|id| {
                api.runs()
                    .and_then(|r| r.get(id, |_| true))
                    .is_some_and(|r| !r.meta().status.is_final())
            })
            .count();
        if live == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (a, i2) = (api.clone(), direct_ids.clone());
    let direct_get = concurrently(READS, move |n| {
        let (a, ids) = (a.clone(), i2.clone());
        async move {
            let id = &ids[n % ids.len()];
            let runs = a.runs().context("an embedded API")?;
            let run = runs.get(id, |_| true).context("run")?;
            let meta = run.meta();
            let record = runs.record(&meta.run_id).await.context("record")?;
            serde_json::to_vec(&(meta, record))?;
            Ok(())
        }
    })
    .await?;
    shutdown.cancel();
    api.drain().await;

    out("| operation | through `toolhost serve` (HTTP, auth) p50 / p99 | run layer directly p50 / p99 |\n| --- | --- | --- |".into());
    out(format!(
        "| `POST /v1/runs` ({STARTS}) | {} / {} | {} / {} |",
        fmt(percentile(&http_start, 0.5)),
        fmt(percentile(&http_start, 0.99)),
        fmt(percentile(&direct_start, 0.5)),
        fmt(percentile(&direct_start, 0.99))
    ));
    out(format!(
        "| `GET /v1/runs/{{id}}` ({READS}) | {} / {} | {} / {} |",
        fmt(percentile(&http_get, 0.5)),
        fmt(percentile(&http_get, 0.99)),
        fmt(percentile(&direct_get, 0.5)),
        fmt(percentile(&direct_get, 0.99))
    ));

    // ---- listing over 100,000 runs
    let list_dir = root.path().join("list");
    std::fs::create_dir_all(&list_dir)?;
    let list_config = list_dir.join("host.toml");
    std::fs::write(&list_config, config_text(&toolbox))?;
    let planted = Instant::now();
    plant_runs(&list_dir.join("data/api/runs"), LISTED)?;
    eprintln!(
        "bench: planted {LISTED} run records in {:.1} s",
        planted.elapsed().as_secs_f64()
    );
    let token = create_token(&bin, &list_config)?;
    let started = Instant::now();
    let server = start_server(&bin, &list_config)?;
    let startup = started.elapsed();
    let mut times = Vec::new();
    for query in [
        "workflow=hello&label=branch=main&limit=50",
        "status=succeeded&limit=50",
        "label=branch=main&since=2026-11-10T00:00:00Z&until=2026-11-20T00:00:00Z&limit=100",
    ] {
        for _ in 0..20 {
            let t = Instant::now();
            let resp = client
                .get(format!("{}/v1/runs?{query}", server.url))
                .bearer_auth(&token)
                .send()
                .await?;
            anyhow::ensure!(
                resp.status().is_success(),
                "GET /v1/runs?{query}: {}",
                resp.status()
            );
            let v: serde_json::Value = resp.json().await?;
            anyhow::ensure!(
                !v["runs"].as_array().is_none_or(|r| r.is_empty()),
                "no runs listed"
            );
            times.push(t.elapsed());
        }
    }
    times.sort();
    out(format!(
        "\nListing with filters over {LISTED} recorded runs (3 filters x 20 queries): p50 {}, p99 {}, max {} (goal < 100 ms); the server loaded the records and listened in {:.2} s\n",
        fmt(percentile(&times, 0.5)),
        fmt(percentile(&times, 0.99)),
        fmt(*times.last().unwrap_or(&Duration::ZERO)),
        startup.as_secs_f64()
    ));
    drop(server);
    let path: PathBuf = repo.join("target/bench/report-api.md");
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(&path, report)?;
    eprintln!("bench: report written to {}", path.display());
    Ok(())
}

async fn wait_for_http_runs(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    ids: &[String],
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    for id in ids {
        loop {
            let v: serde_json::Value = client
                .get(format!("{url}/v1/runs/{id}"))
                .bearer_auth(token)
                .send()
                .await?
                .json()
                .await?;
            if !matches!(v["status"].as_str(), Some("queued" | "running")) {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "run {id} never ended");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}
