//! `toolhost host`: the long-running host. It loads the toolbox, watches it
//! (new, changed and deleted components take effect without a restart),
//! logs every load/reject/remove, and serves a small HTTP API on loopback
//! for health, metrics and the registry. Runs come through `toolhost serve`
//! or, distributed, through Temporal: no route here names a server path.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Args;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{GlobalArgs, exit, load_config};
use crate::distributed::worker::{DistributedHost, HostShared};
use crate::distributed::workflow::Driver;
use crate::engine::LocalEngine;
use crate::runtime::{EngineOptions, Runtime};
use crate::toolbox::Toolbox;

/// Arguments of `toolhost host`.
#[derive(Args, Debug)]
#[command(after_help = "\
The host logs each toolbox change (loaded / rejected / removed, with name, version,
sha256 and reason) on stderr. HTTP API (loopback by default):
  GET  /healthz            liveness, registry size, and (distributed) host id and queues
  GET  /metrics            Prometheus metrics (runs, steps, tools, caches)
  GET  /workflows          the registry (current versions and rejected files)
Runs are started through `toolhost serve` (API v1, with tokens and uploads), or in
distributed mode with `toolhost submit`.")]
pub struct HostArgs {
    /// Address to listen on (overrides [host] listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

#[derive(Clone)]
struct AppState {
    engine: Arc<LocalEngine>,
    /// Set once the host is a Temporal worker.
    distributed: Arc<std::sync::OnceLock<(Arc<HostShared>, Arc<Driver>)>>,
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
    let engine = Arc::new(LocalEngine::new(toolbox.clone())?);
    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        stop.cancel();
    });

    // The HTTP API answers at once (health, metrics), also while the host
    // is still connecting to Temporal.
    let distributed_state = Arc::new(std::sync::OnceLock::new());
    let state = AppState {
        engine: engine.clone(),
        distributed: distributed_state.clone(),
    };
    let app = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/workflows", get(workflows))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!("listening on http://{addr}");
    eprintln!("toolhost host: listening on http://{addr} (Ctrl-C to stop)");
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );

    // Distributed mode: a Temporal worker beside the HTTP API.
    let mut publisher = None;
    let distributed = match &config.temporal {
        None => None,
        Some(temporal) => {
            let Some(vertical) = config.host.vertical.clone() else {
                anyhow::bail!(
                    "a distributed host serves one vertical: set [host] vertical (configured verticals: {})",
                    config.vertical_names()
                );
            };
            let blobs = config.blob_store()?;
            let host_id = crate::distributed::worker::host_id(&config, temporal);
            let components = crate::distributed::components::Components::new(
                toolbox.clone(),
                blobs.clone(),
                &host_id,
                temporal.vertical_queue(&vertical),
            );
            publisher = Some(components.publish_continuously());
            let targets = crate::storage::target_cache::TargetCache::new(
                config.data_dir.join("cache").join("targets"),
                config.storage.target_cache_mib.saturating_mul(1 << 20),
                config.storage.unpack_caps(),
            )?;
            let empty_dir = config.data_dir.join("empty");
            std::fs::create_dir_all(&empty_dir)
                .with_context(|| format!("cannot create `{}`", empty_dir.display()))?;
            let shared = Arc::new(HostShared {
                vertical,
                host_id,
                temporal: temporal.clone(),
                components,
                blobs,
                targets,
                sandbox: engine.sandbox().clone(),
                metrics: Default::default(),
                empty_dir,
                in_flight: Default::default(),
            });
            tracing::info!("blob store: {}", shared.blobs.describe());
            Some(DistributedHost::start(shared, &shutdown).await?)
        }
    };
    if let Some(d) = &distributed {
        let _ = distributed_state.set((d.shared.clone(), d.driver.clone()));
    }
    server
        .await
        .context("HTTP server panicked")?
        .context("HTTP server failed")?;
    if let Some(d) = distributed {
        tracing::info!(
            "stopping the Temporal worker: in-flight steps get 10 s to finish, then go back to Temporal"
        );
        d.shutdown().await;
    }
    if let Some(p) = publisher {
        p.abort();
    }
    Ok(exit::OK)
}

pub(super) async fn wait_for_signal() {
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
    let mut body = json!({
        "status": "ok",
        "workflows": r.workflows().count(),
        "versions": r.versions().count(),
        "rejected": r.rejections().count(),
    });
    if let Some((shared, driver)) = s.distributed.get() {
        body["host_id"] = json!(shared.host_id);
        body["vertical"] = json!(shared.vertical);
        body["task_queues"] = json!([
            shared.temporal.vertical_queue(&shared.vertical),
            shared
                .temporal
                .host_queue(&shared.vertical, &shared.host_id)
        ]);
        body["cached_runs"] = json!(driver.cached());
    }
    Json(body)
}

async fn metrics(
    State(s): State<AppState>,
) -> (
    StatusCode,
    [(axum::http::header::HeaderName, &'static str); 1],
    String,
) {
    let text = match s.distributed.get() {
        Some((shared, driver)) => shared.metrics.render(&shared.gauges(driver.cached())),
        None => {
            let empty = crate::distributed::metrics::Metrics::default();
            empty.render(&crate::distributed::metrics::Gauges {
                target_cache_bytes: 0,
                target_cache_entries: 0,
                registry_workflows: s.engine.registry().workflows().count(),
                cached_runs: 0,
                steps_in_flight: 0,
            })
        }
    };
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
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
