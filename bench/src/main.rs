//! `cargo xtask bench`: measures the host side by side with baselines and
//! prints a Markdown report (also written to `target/bench/report.md`).
//!
//! Each figure is a median (and p95) over many iterations after a warm-up.
//! Run it on an otherwise idle machine, in release mode.
//!
//! With `--distributed` it measures distributed mode instead, against the
//! dev services ([`distributed`]; report: `target/bench/report-distributed.md`).
//! With `--fuzzing` it compares libFuzzer's executions per second through
//! `cargo_fuzzing` with `cargo fuzz run` ([`fuzzing`]). With `--scanners`
//! it measures the secret scan's recall, false positives and speed against
//! detect-secrets on a planted corpus ([`scanners`]).

mod api;
mod distributed;
mod fuzzing;
mod scanners;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::json;
use toolhost::config::HostConfig;
use toolhost::engine::local::execute;
use toolhost::engine::{LocalEngine, RunRequest};
use toolhost::runtime::{EngineOptions, Runtime};
use toolhost::toolbox::Toolbox;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

struct Stats {
    median: Duration,
    p95: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        median: at(0.5),
        p95: at(0.95),
    }
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// `bytes` plus a custom section: a distinct digest, same behaviour.
fn variant(bytes: &[u8], i: usize) -> Vec<u8> {
    let name = b"bench-variant";
    let payload = i.to_le_bytes();
    let mut out = bytes.to_vec();
    out.push(0);
    out.push((1 + name.len() + payload.len()) as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}

fn config_for(dir: &Path) -> Result<HostConfig> {
    let mut config = HostConfig::parse(toolhost::config::DEFAULT_CONFIG, None)?;
    config.toolbox = dir.join("toolbox");
    config.data_dir = dir.join("data");
    config.work_dir = Some(dir.join("work"));
    config
        .verticals
        .entry("rust".into())
        .or_default()
        .tools
        .insert("true".into(), toml_tool("true")?);
    std::fs::create_dir_all(&config.toolbox)?;
    Ok(config)
}

fn toml_tool(cmd: &str) -> Result<toolhost::sandbox::policy::ToolConfig> {
    Ok(toolhost::sandbox::policy::ToolConfig::new(cmd))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--distributed") {
        return distributed::main(&args).await;
    }
    if args.iter().any(|a| a == "--fuzzing") {
        return fuzzing::main().await;
    }
    if args.iter().any(|a| a == "--scanners") {
        return scanners::main().await;
    }
    if args.iter().any(|a| a == "--api") {
        return api::main().await;
    }
    if let Some(other) = args.first() {
        anyhow::bail!(
            "unknown argument `{other}`; use no arguments, --distributed, --fuzzing, --scanners or --api"
        );
    }
    let hello = std::fs::read(repo().join("toolbox/hello.wasm"))
        .context("toolbox/hello.wasm is missing: run `cargo xtask build-plugins`")?;
    let mut report = String::new();
    let mut out = |line: String| {
        println!("{line}");
        report.push_str(&line);
        report.push('\n');
    };
    out(format!(
        "# Toolhost benchmarks\n\nhello.wasm: {} KiB; {} CPUs\n",
        hello.len() / 1024,
        num_cpus()
    ));

    let dir = tempfile::tempdir()?;
    let config = config_for(dir.path())?;
    std::fs::write(config.toolbox.join("hello.wasm"), &hello)?;
    let runtime = Runtime::new(&EngineOptions::for_host(&config))?;
    let toolbox = Toolbox::open(runtime.clone(), config.clone()).await?;
    let engine = Arc::new(LocalEngine::new(toolbox.clone())?);
    let wf = toolbox.get("hello").context("hello did not load")?;
    out(format!(
        "pooling allocator: {}\n",
        if runtime.pooling() { "on" } else { "off" }
    ));

    // 1. Warm run of hello: engine path vs raw wasmtime.
    let run_dir = dir.path().join("bench-run");
    let scratch = dir.path().join("bench-scratch");
    std::fs::create_dir_all(scratch.join("workspace"))?;
    std::fs::create_dir_all(run_dir.join("artifacts"))?;
    let engine_path = {
        let mut samples = Vec::new();
        for i in 0..3000 {
            let ctx = engine.context(&wf, "hello-bench", &scratch, &run_dir, 0, None)?;
            let t = Instant::now();
            let (status, err, _) = execute(&ctx, "{}").await;
            let e = t.elapsed();
            anyhow::ensure!(
                status == toolhost::engine::RunStatus::Succeeded,
                "hello failed: {err:?}"
            );
            if i >= 300 {
                samples.push(e);
            }
        }
        stats(samples)
    };
    let raw = raw_wasmtime(&hello).await?;
    out("## 1. Warm run of `hello`\n".into());
    out("| path | median | p95 |\n| --- | --- | --- |".into());
    out(format!(
        "| raw wasmtime (minimal linker: WASI + trapping stubs), instantiate + call `run` + drop | {} | {} |",
        us(raw.median),
        us(raw.p95)
    ));
    out(format!(
        "| Toolhost engine: store with limits + epoch deadline, instantiate (InstancePre), `run`, classify, drop | {} | {} |",
        us(engine_path.median),
        us(engine_path.p95)
    ));
    out(format!(
        "\nratio (median): **{:.2}x**\n",
        engine_path.median.as_secs_f64() / raw.median.as_secs_f64()
    ));
    let full = {
        let target = dir.path().join("empty-target");
        std::fs::create_dir_all(&target)?;
        let mut samples = Vec::new();
        for i in 0..600 {
            let t = Instant::now();
            let rec = engine
                .run(request("hello", &target))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let e = t.elapsed();
            anyhow::ensure!(rec.status == toolhost::engine::RunStatus::Succeeded);
            if i >= 100 {
                samples.push(e);
            }
        }
        stats(samples)
    };
    out(format!(
        "Full `LocalEngine::run` of `hello` on an empty target (workspace, run record, SARIF, log written and flushed to disk): median {}, p95 {}\n",
        us(full.median),
        us(full.p95)
    ));

    // 2. tools.run of /bin/true vs a direct spawn.
    let direct = {
        let mut samples = Vec::new();
        for i in 0..600 {
            let t = Instant::now();
            let o = tokio::process::Command::new("/bin/true").output().await?;
            let e = t.elapsed();
            anyhow::ensure!(o.status.success());
            if i >= 100 {
                samples.push(e);
            }
        }
        stats(samples)
    };
    let capability = tool_capability(&engine, &config, &hello, dir.path()).await?;
    out("## 2. `tools.run` of `/bin/true`\n".into());
    out("| path | median | p95 |\n| --- | --- | --- |".into());
    out(format!(
        "| `tokio::process::Command::output()` | {} | {} |",
        us(direct.median),
        us(direct.p95)
    ));
    out(format!(
        "| capability (`tools.run`: grant check, env, process group, capped capture, audit) | {} | {} |",
        us(capability.median),
        us(capability.p95)
    ));
    out(format!(
        "\nratio (median): **{:.2}x**\n",
        capability.median.as_secs_f64() / direct.median.as_secs_f64()
    ));

    // 3. Hot-reload latency with a warm compile cache.
    let reload = hot_reload(&runtime, &config, &hello).await?;
    out("## 3. Hot reload (file renamed into place -> runnable), warm compile cache\n".into());
    out(format!(
        "median {}, p95 {} over {} reloads\n",
        ms(reload.median),
        ms(reload.p95),
        RELOADS
    ));

    // 4 + 5. Start-up with 50 components, cold vs warm cache; idle RSS.
    let (cold, warm, rss_idle) = startup(&hello).await?;
    out("## 4. Host start with 50 distinct components\n".into());
    out("| cache | time to ready (process start -> /healthz answers) |\n| --- | --- |".into());
    out(format!("| cold (empty compile cache) | {} |", ms(cold)));
    out(format!("| warm | {} |\n", ms(warm)));
    out("## 5. Memory\n".into());
    out(format!(
        "idle `toolhost host` RSS with 50 components loaded: **{:.1} MiB**\n",
        rss_idle as f64 / 1024.0
    ));
    let per_run = concurrent_memory(&engine, &wf, dir.path()).await?;
    out(format!(
        "memory per concurrent `hello` instance (100 live instances, RSS delta / 100): **{:.1} KiB**\n",
        per_run
    ));

    // 6. Throughput.
    out("## 6. Throughput of `hello` (full `LocalEngine::run`, records written)\n".into());
    out("| concurrent runs | runs/s |\n| --- | --- |".into());
    for n in [1usize, 2, 4, 8, 16] {
        let rate = throughput(&engine, dir.path(), n).await?;
        out(format!("| {n} | {rate:.0} |"));
    }

    let path = repo().join("target/bench/report.md");
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(&path, &report)?;
    println!("\nreport written to {}", path.display());
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn request(workflow: &str, target: &Path) -> RunRequest {
    RunRequest::new(workflow, target, json!({}))
}

struct RawState {
    ctx: wasmtime_wasi::WasiCtx,
    table: wasmtime::component::ResourceTable,
}

impl wasmtime_wasi::WasiView for RawState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// Baseline: the same component through plain wasmtime (shared Config,
/// default allocator), WASI linked, anything else a trapping stub.
async fn raw_wasmtime(bytes: &[u8]) -> Result<Stats> {
    use wasmtime::component::{Component, Linker};
    let mut cfg = toolhost::runtime::engine_config(&EngineOptions::default());
    cfg.epoch_interruption(false);
    let engine = wasmtime::Engine::new(&cfg).map_err(anyhow::Error::from)?;
    let component = Component::new(&engine, bytes).map_err(anyhow::Error::from)?;
    let mut linker = Linker::<RawState>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
    linker
        .define_unknown_imports_as_traps(&component)
        .map_err(anyhow::Error::from)?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(anyhow::Error::from)?;
    let mut samples = Vec::new();
    for i in 0..3000 {
        let t = Instant::now();
        let mut store = wasmtime::Store::new(
            &engine,
            RawState {
                ctx: wasmtime_wasi::WasiCtxBuilder::new().build(),
                table: Default::default(),
            },
        );
        let instance = pre
            .instantiate_async(&mut store)
            .await
            .map_err(anyhow::Error::from)?;
        let run = instance
            .get_typed_func::<(String,), (Result<String, String>,)>(&mut store, "run")
            .map_err(anyhow::Error::from)?;
        let (r,) = run
            .call_async(&mut store, ("{}".to_string(),))
            .await
            .map_err(anyhow::Error::from)?;
        drop(store);
        let e = t.elapsed();
        anyhow::ensure!(r.is_ok());
        if i >= 300 {
            samples.push(e);
        }
    }
    Ok(stats(samples))
}

async fn tool_capability(
    engine: &LocalEngine,
    config: &HostConfig,
    hello: &[u8],
    dir: &Path,
) -> Result<Stats> {
    use toolhost::runtime::bindings::toolhost::workflow::tools::RunOptions;
    let wf = engine.toolbox().get("hello").context("hello")?;
    // A context whose grant includes `true` (hello itself declares no tools).
    let mut info = wf.info.clone();
    info.tools = vec!["true".into()];
    let _ = (config, hello);
    let scratch = dir.join("tool-scratch");
    let run_dir = dir.join("tool-run");
    std::fs::create_dir_all(scratch.join("workspace"))?;
    std::fs::create_dir_all(&run_dir)?;
    let ctx = engine.context(&wf, "tool-bench", &scratch, &run_dir, 0, None)?;
    let offered = engine.toolbox().config().verticals["rust"]
        .tools
        .iter()
        .map(|(n, c)| {
            (
                n.clone(),
                toolhost::sandbox::policy::ResolvedTool::resolve(n, c),
            )
        })
        .collect();
    let ctx = Arc::new(toolhost::capabilities::RunContext {
        tools: toolhost::sandbox::policy::ToolGrant::new("rust", offered, &info.tools),
        ..Arc::try_unwrap(ctx).map_err(|_| anyhow::anyhow!("context shared"))?
    });
    let mut samples = Vec::new();
    for i in 0..600 {
        let opts = RunOptions {
            cwd: None,
            stdin: None,
            timeout_ms: None,
            env: vec![],
        };
        let t = Instant::now();
        let r = toolhost::capabilities::tools::run_tool(&ctx, "true", vec![], opts).await;
        let e = t.elapsed();
        anyhow::ensure!(r.is_ok(), "tool failed: {r:?}");
        if i >= 100 {
            samples.push(e);
        }
    }
    Ok(stats(samples))
}

const RELOADS: usize = 40;

async fn hot_reload(runtime: &Arc<Runtime>, config: &HostConfig, hello: &[u8]) -> Result<Stats> {
    let dir = tempfile::tempdir()?;
    let mut config = config.clone();
    config.toolbox = dir.path().join("toolbox");
    std::fs::create_dir_all(&config.toolbox)?;
    let toolbox = Toolbox::open(runtime.clone(), config.clone()).await?;
    let _watch = toolbox.watch()?;
    let variants: Vec<Vec<u8>> = (0..RELOADS).map(|i| variant(hello, 1000 + i)).collect();
    // Warm the compile cache for every variant.
    for v in &variants {
        runtime.load(&toolhost::toolbox::digest(v), v)?;
    }
    let mut samples = Vec::new();
    for v in &variants {
        let digest = toolhost::toolbox::digest(v);
        let tmp = config.toolbox.join(".hello.wasm.tmp");
        std::fs::write(&tmp, v)?;
        let t = Instant::now();
        std::fs::rename(&tmp, config.toolbox.join("hello.wasm"))?;
        loop {
            if toolbox.get("hello").is_some_and(|w| w.digest == digest) {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(10),
                "reload never happened"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        samples.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(stats(samples))
}

/// Starts the release `toolhost host` with 50 components, cold then warm;
/// returns both start times and the warm host's idle RSS in KiB.
async fn startup(hello: &[u8]) -> Result<(Duration, Duration, u64)> {
    let dir = tempfile::tempdir()?;
    let toolbox = dir.path().join("toolbox");
    std::fs::create_dir_all(&toolbox)?;
    for i in 0..50 {
        std::fs::write(
            toolbox.join(format!("hello_{i:02}.wasm")),
            variant(hello, i),
        )?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            "toolbox = \"toolbox\"\ndata_dir = \"data\"\n[host]\nlisten = \"127.0.0.1:{port}\"\n{}",
            rust_vertical()
        ),
    )?;
    let bin = repo().join("target/release/toolhost");
    anyhow::ensure!(
        bin.exists(),
        "build the release binary first (cargo build --release -p toolhost)"
    );
    let mut times = Vec::new();
    let mut rss = 0;
    for _ in 0..2 {
        let t = Instant::now();
        let mut child = Command::new(&bin)
            .args(["--config"])
            .arg(&config)
            .arg("host")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        loop {
            if healthz(port).await {
                break;
            }
            if t.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                anyhow::bail!("host never became ready");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss = vm_rss(child.id())?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let _ = child.wait();
    }
    Ok((times[0], times[1], rss))
}

fn rust_vertical() -> &'static str {
    "[verticals.rust]\n[verticals.rust.tools.cargo]\ncommand = \"cargo\"\n"
}

async fn healthz(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    // 50 files (versions); they all describe themselves as `hello`.
    String::from_utf8_lossy(&buf).contains("\"versions\":50")
}

fn vm_rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

async fn concurrent_memory(
    engine: &LocalEngine,
    wf: &Arc<toolhost::toolbox::LoadedWorkflow>,
    dir: &Path,
) -> Result<f64> {
    use toolhost::runtime::state::{CodeKind, new_store};
    let scratch = dir.join("mem-scratch");
    let run_dir = dir.join("mem-run");
    std::fs::create_dir_all(scratch.join("workspace"))?;
    std::fs::create_dir_all(&run_dir)?;
    let before = vm_rss(std::process::id())?;
    let mut live = Vec::new();
    for i in 0..100 {
        let ctx = engine.context(wf, &format!("mem-{i}"), &scratch, &run_dir, 0, None)?;
        let mut store = new_store(ctx.clone(), CodeKind::Workflow)?;
        let instance = wf.pre.instantiate_async(&mut store).await?;
        let r = instance.call_run(&mut store, "{}").await?;
        anyhow::ensure!(r.is_ok());
        live.push((store, instance));
    }
    let after = vm_rss(std::process::id())?;
    drop(live);
    Ok((after.saturating_sub(before)) as f64 / 100.0)
}

async fn throughput(engine: &Arc<LocalEngine>, dir: &Path, n: usize) -> Result<f64> {
    let target = dir.join("tp-target");
    std::fs::create_dir_all(&target)?;
    let per_task = 200;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let engine = engine.clone();
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_task {
                let rec = engine
                    .run(request("hello", &target))
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                anyhow::ensure!(rec.status == toolhost::engine::RunStatus::Succeeded);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok((n * per_task) as f64 / t.elapsed().as_secs_f64())
}
