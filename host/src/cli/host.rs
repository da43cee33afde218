//! `toolhost host`: the long-running host. It loads the toolbox, watches it
//! (new, changed and deleted components take effect without a restart),
//! logs every load/reject/remove, and serves a small HTTP API on loopback
//! for health, the registry, and runs through the embedded engine.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{GlobalArgs, exit, load_config};
use crate::engine::{LocalEngine, RunRecord, RunRequest, StartError};
use crate::runtime::{EngineOptions, Runtime};
use crate::toolbox::Toolbox;

/// Arguments of `toolhost host`.
#[derive(Args, Debug)]
#[command(after_help = "\
The host logs each toolbox change (loaded / rejected / removed, with name, version,
sha256 and reason) on stderr. HTTP API (loopback by default):
  GET  /healthz            liveness and registry size
  GET  /workflows          the registry (current versions and rejected files)
  POST /runs               {\"workflow\": \"hello\", \"target\": \"/path\", \"params\": {}} -> run record
  GET  /runs/<run-id>      a recorded run")]
pub struct HostArgs {
    /// Address to listen on (overrides [host] listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

#[derive(Clone)]
struct AppState {
    engine: Arc<LocalEngine>,
    shutdown: CancellationToken,
}

pub(super) async fn host(g: &GlobalArgs, args: HostArgs) -> anyhow::Result<u8> {
    let config = load_config(g)?;
    let listen = args
        .listen
        .or_else(|| config.host.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:7300".into());
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("`{listen}` is not an address like 127.0.0.1:7300"))?;
    let runtime = Runtime::new(&EngineOptions::for_host(&config))?;
    let started = std::time::Instant::now();
    let toolbox = Toolbox::open(runtime.clone(), config.clone()).await?;
    let registry = toolbox.registry();
    for event in registry.as_events() {
        match event {
            crate::toolbox::ToolboxEvent::Rejected { .. } => tracing::warn!("toolbox: {event}"),
            _ => tracing::info!("toolbox: {event}"),
        }
    }
    tracing::info!(
        "host ready in {} ms: {} workflows, vertical {}, pooling allocator {}",
        started.elapsed().as_millis(),
        registry.workflows().count(),
        config
            .host
            .vertical
            .as_deref()
            .unwrap_or("(all configured)"),
        if runtime.pooling() { "on" } else { "off" }
    );
    let _watch = toolbox.watch()?;

    let shutdown = CancellationToken::new();
    let state = AppState {
        engine: Arc::new(LocalEngine::new(toolbox)?),
        shutdown: shutdown.clone(),
    };
    let app = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/workflows", get(workflows))
        .route("/runs", post(start_run))
        .route("/runs/{id}", get(get_run))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!("listening on http://{addr}");
    eprintln!("toolhost host: listening on http://{addr} (Ctrl-C to stop)");

    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: cancelling runs in flight");
        stop.cancel();
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("HTTP server failed")?;
    Ok(exit::OK)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn healthz(State(s): State<AppState>) -> Json<Value> {
    let r = s.engine.registry();
    Json(json!({
        "status": "ok",
        "workflows": r.workflows().count(),
        "versions": r.versions().count(),
        "rejected": r.rejections().count(),
    }))
}

async fn workflows(State(s): State<AppState>) -> Json<Value> {
    let r = s.engine.registry();
    Json(json!({
        "workflows": r.workflows().map(|w| json!({
            "name": w.info.name, "version": w.info.version, "vertical": w.info.vertical,
            "tools": w.info.tools, "digest": w.digest, "path": w.path.display().to_string(),
            "parameters_schema": w.info.parameters_schema,
        })).collect::<Vec<_>>(),
        "rejected": r.rejections().map(|x| json!({"path": x.path.display().to_string(), "reason": x.reason})).collect::<Vec<_>>(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRun {
    workflow: String,
    target: PathBuf,
    #[serde(default)]
    params: Option<Value>,
    #[serde(default)]
    timeout_secs: Option<u64>,
}

async fn start_run(
    State(s): State<AppState>,
    Json(req): Json<StartRun>,
) -> Result<Json<RunRecord>, (StatusCode, Json<Value>)> {
    let result = s
        .engine
        .run(RunRequest {
            cancel: s.shutdown.child_token(),
            timeout_secs: req.timeout_secs,
            ..RunRequest::new(
                req.workflow,
                req.target,
                req.params.unwrap_or_else(|| json!({})),
            )
        })
        .await;
    result.map(Json).map_err(|e| {
        let status = match e {
            StartError::UnknownWorkflow { .. } => StatusCode::NOT_FOUND,
            StartError::InvalidParams { .. } | StartError::Target(_) => StatusCode::BAD_REQUEST,
            StartError::Setup(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(json!({"error": e.to_string()})))
    })
}

async fn get_run(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunRecord>, (StatusCode, Json<Value>)> {
    RunRecord::load(s.engine.store(), &id)
        .map(Json)
        .map_err(|e| {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": format!("{e:#}")})),
            )
        })
}
