//! `toolhost serve`: the one authenticated HTTP API in front of the engine.
//! Submitters upload targets and start, follow, cancel and retry runs; they
//! never name a path on the server and never hold the engine's credentials.
//! Every object belongs to the tenant of the token that created it, and a
//! token of another tenant gets the same 404 as for an object that does not
//! exist. This module must never serve a host path or another tenant's data.

pub mod audit;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod remote;
pub mod runs;
pub mod targets;
pub mod tokens;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::{HostConfig, ServeConfig};
use crate::engine::{LocalEngine, StartError};
use audit::{AuditEntry, AuditLog, AuditObject};
use limits::Limiter;
use openapi::{DocumentedRouter, RouteDoc};
use problem::{ApiResult, Problem};
use remote::{EventCursor, ListFilter, Remote};
use runs::{ApiStatus, Run, RunMeta, Runs, Start};
use targets::{TargetStore, UploadError};
use tokens::{Principal, Role, TokenStore};

/// The engine that runs the API's runs.
pub enum Backend {
    /// In this process ([`Runs`]).
    Embedded(Runs),
    /// On Temporal, with targets and results in the blob store
    /// ([`Remote`]); nothing held only by this replica.
    Distributed(Arc<Remote>),
}

/// A run a request may see.
pub enum RunRef {
    Local(Arc<Run>),
    Remote(Box<RunMeta>),
}

impl RunRef {
    pub fn meta(&self) -> RunMeta {
        match self {
            RunRef::Local(r) => r.meta(),
            RunRef::Remote(m) => m.as_ref().clone(),
        }
    }
}

/// Everything a handler can reach.
pub struct Api {
    pub config: HostConfig,
    pub serve: ServeConfig,
    pub backend: Backend,
    pub targets: TargetStore,
    pub tokens: TokenStore,
    pub audit: AuditLog,
    pub limiter: Limiter,
    pub metrics: metrics::ApiMetrics,
}

type AppState = Arc<Api>;

/// Where the API keeps its own state: `<data_dir>/api`.
pub fn api_dir(config: &HostConfig) -> std::path::PathBuf {
    config.data_dir.join("api")
}

/// Checks that `listen` may be served with `auth` as configured.
pub fn check_bind(addr: &SocketAddr, auth: bool) -> anyhow::Result<()> {
    if !auth && !addr.ip().is_loopback() {
        anyhow::bail!(
            "refusing to serve {addr} without authentication: anyone who can reach it could start runs and read every result. Keep [serve] auth = true (create tokens with `toolhost token create`), or listen on 127.0.0.1"
        );
    }
    Ok(())
}

impl Api {
    /// The API over `engine`.
    pub fn new(
        engine: Arc<LocalEngine>,
        serve: ServeConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Api>> {
        let config = engine.toolbox().config().clone();
        let dir = api_dir(&config);
        crate::util::private_dir::ensure(&dir)
            .with_context(|| format!("cannot use `{}` for the API's state", dir.display()))?;
        let max_concurrent = match serve.max_concurrent_runs {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let runs = Runs::open(
            engine,
            dir.join("runs"),
            dir.join("empty-target"),
            max_concurrent,
            shutdown,
        )?;
        let targets = TargetStore::new(
            dir.join("tenants"),
            config.storage.unpack_caps(),
            serve.max_upload_mib.saturating_mul(1 << 20),
        );
        Ok(Arc::new(Api {
            tokens: TokenStore::new(&dir),
            audit: AuditLog::new(&dir),
            limiter: Limiter::new(serve.limits.clone()),
            metrics: Default::default(),
            config,
            serve,
            backend: Backend::Embedded(runs),
            targets,
        }))
    }

    /// The API over the distributed engine: runs on Temporal, tokens,
    /// targets and results in `remote`'s blob store. `config.data_dir`
    /// only holds uploads while they are checked and this replica's copy
    /// of the audit log.
    pub fn distributed(
        config: HostConfig,
        serve: ServeConfig,
        remote: Remote,
    ) -> anyhow::Result<Arc<Api>> {
        let dir = api_dir(&config);
        crate::util::private_dir::ensure(&dir)
            .with_context(|| format!("cannot use `{}` for the API's state", dir.display()))?;
        let blobs = remote.blobs().clone();
        let targets = TargetStore::new(
            dir.join("uploads"),
            config.storage.unpack_caps(),
            serve.max_upload_mib.saturating_mul(1 << 20),
        )
        .in_blobs(blobs.clone());
        Ok(Arc::new(Api {
            tokens: TokenStore::in_blobs(blobs.clone()),
            audit: AuditLog::new(&dir).with_copies_in(blobs),
            limiter: Limiter::new(serve.limits.clone()),
            metrics: Default::default(),
            config,
            serve,
            backend: Backend::Distributed(Arc::new(remote)),
            targets,
        }))
    }

    /// The embedded engine's runs, if this API runs them.
    pub fn runs(&self) -> Option<&Runs> {
        match &self.backend {
            Backend::Embedded(r) => Some(r),
            Backend::Distributed(_) => None,
        }
    }

    /// Waits for the runs this process executes (embedded) to end.
    pub async fn drain(&self) {
        if let Backend::Embedded(r) = &self.backend {
            r.drain().await;
        }
    }

    /// The routes of the API.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        let (router, _) = self.router_and_routes();
        router
    }

    /// The router and the documentation of every route it serves.
    pub fn router_and_routes(self: &Arc<Self>) -> (axum::Router, Vec<RouteDoc>) {
        use axum::http::Method;
        use openapi::schema;
        const JSON: &str = "application/json";
        let doc = |method: Method,
                   path: &'static str,
                   role: Option<Role>,
                   summary: &'static str| RouteDoc {
            method,
            path,
            summary,
            role,
            request: None,
            query: &[],
            success: (200, JSON, None),
            errors: &[],
        };
        let r = Some;
        let (v1, mut routes) = DocumentedRouter::new()
            .route(RouteDoc { errors: &[], ..doc(Method::GET, "/v1/whoami", r(Role::Viewer), "the token's id, tenant and role") }, whoami)
            .route(doc(Method::GET, "/v1/workflows", r(Role::Viewer), "the catalog of workflows, and files the toolbox rejected"), list_workflows)
            .route(RouteDoc { errors: &[404], ..doc(Method::GET, "/v1/workflows/{name}", r(Role::Viewer), "one workflow: metadata, parameter schema, versions by digest, what serves it") }, get_workflow)
            .route(
                RouteDoc {
                    request: Some(("application/octet-stream", || json!({"type": "string", "contentMediaType": "application/x-tar", "description": "a tar, tar.gz or tar.zst of the target directory"}))),
                    success: (201, JSON, Some(schema::<targets::TargetInfo>)),
                    errors: &[403, 413, 422],
                    ..doc(Method::POST, "/v1/targets", r(Role::Submitter), "upload a target archive (200 when this tenant already has it)")
                },
                upload_target,
            )
            .route(RouteDoc { success: (200, JSON, Some(schema::<targets::TargetInfo>)), errors: &[404], ..doc(Method::GET, "/v1/targets/{sha256}", r(Role::Viewer), "the record of an uploaded target") }, get_target)
            .route(RouteDoc { success: (200, "", None), errors: &[404], ..doc(Method::HEAD, "/v1/targets/{sha256}", r(Role::Viewer), "whether this tenant has the target") }, head_target)
            .route(
                RouteDoc {
                    request: Some((JSON, schema::<StartBody>)),
                    success: (202, JSON, Some(schema::<RunMeta>)),
                    errors: &[400, 403, 404, 409, 422],
                    ..doc(Method::POST, "/v1/runs", r(Role::Submitter), "start a run (header Idempotency-Key: one run per key)")
                },
                start_run,
            )
            .route(
                RouteDoc {
                    query: &[("workflow", "workflow name"), ("status", "queued, running, succeeded, failed, cancelled, timed-out"), ("label", "KEY=VALUE"), ("since", "RFC 3339, created at or after"), ("until", "RFC 3339, created before"), ("tenant", "admins: one tenant"), ("limit", "1 to 500, default 50"), ("cursor", "next_cursor of the previous page")],
                    errors: &[400, 403],
                    ..doc(Method::GET, "/v1/runs", r(Role::Viewer), "runs, newest first, filtered and paged")
                },
                list_runs,
            )
            .route(RouteDoc { request: Some((JSON, schema::<BatchBody>)), errors: &[400, 403], ..doc(Method::POST, "/v1/runs/batch", r(Role::Submitter), "start many runs; each entry gets its own answer") }, start_batch)
            .route(RouteDoc { success: (200, JSON, Some(schema::<RunMeta>)), errors: &[404], ..doc(Method::GET, "/v1/runs/{id}", r(Role::Viewer), "a run: status, live progress, pending tools, summary, counts") }, get_run)
            .route(RouteDoc { query: &[("format", "json (default) or sarif")], errors: &[400, 404, 409], ..doc(Method::GET, "/v1/runs/{id}/findings", r(Role::Viewer), "a run's findings, as JSON or SARIF 2.1.0") }, run_findings)
            .route(RouteDoc { success: (200, "application/x-ndjson", None), errors: &[404], ..doc(Method::GET, "/v1/runs/{id}/log", r(Role::Viewer), "a run's log, JSON lines") }, run_log)
            .route(RouteDoc { errors: &[404], ..doc(Method::GET, "/v1/runs/{id}/artifacts", r(Role::Viewer), "a run's artifacts, by name and size") }, run_artifacts)
            .route(RouteDoc { success: (200, "application/octet-stream", None), errors: &[404], ..doc(Method::GET, "/v1/runs/{id}/artifacts/{name}", r(Role::Viewer), "one artifact's bytes") }, run_artifact)
            .route(RouteDoc { success: (200, "text/event-stream", None), errors: &[400, 404], ..doc(Method::GET, "/v1/runs/{id}/events", r(Role::Viewer), "Server-Sent Events of a run, resumable with Last-Event-ID") }, run_events)
            .route(RouteDoc { success: (202, JSON, None), errors: &[403, 404, 409], ..doc(Method::POST, "/v1/runs/{id}/cancel", r(Role::Submitter), "cancel a live run") }, cancel_run)
            .route(RouteDoc { success: (202, JSON, Some(schema::<RunMeta>)), errors: &[403, 404], ..doc(Method::POST, "/v1/runs/{id}/retry", r(Role::Submitter), "a new run with the same inputs, linked to this one") }, retry_run)
            .split();
        let v1 = v1.route_layer(axum::middleware::from_fn_with_state(
            self.clone(),
            authenticate,
        ));
        let document = Arc::new(std::sync::OnceLock::<Value>::new());
        let served = document.clone();
        let (public, public_routes) = DocumentedRouter::new()
            .route(
                RouteDoc {
                    role: None,
                    ..doc(Method::GET, "/healthz", None, "alive")
                },
                healthz,
            )
            .route(
                RouteDoc {
                    errors: &[503],
                    ..doc(
                        Method::GET,
                        "/readyz",
                        None,
                        "ready: toolbox, storage, engine and tokens usable, each named",
                    )
                },
                readyz,
            )
            .route(
                RouteDoc {
                    success: (200, "text/plain", None),
                    ..doc(Method::GET, "/metrics", None, "Prometheus metrics")
                },
                render_metrics,
            )
            .route(
                doc(Method::GET, "/v1/openapi.json", None, "this document"),
                move || {
                    let served = served.clone();
                    async move { Json(served.get().cloned().unwrap_or_default()) }
                },
            )
            .split();
        routes.extend(public_routes);
        let _ = document.set(openapi::document(&routes, env!("CARGO_PKG_VERSION")));
        let router = public
            .merge(v1)
            .fallback(unknown_route)
            .layer(axum::middleware::from_fn_with_state(self.clone(), measure))
            .with_state(self.clone());
        (router, routes)
    }
}

/// Runs `toolhost serve` until `shutdown` fires.
pub async fn serve(
    api: Arc<Api>,
    listener: tokio::net::TcpListener,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = api.router();
    match tls {
        None => axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("HTTP server failed")?,
        Some(rustls) => {
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                stopper.graceful_shutdown(Some(Duration::from_secs(10)));
            });
            axum_server::from_tcp_rustls(listener.into_std()?, rustls)?
                .handle(handle)
                .serve(app.into_make_service_with_connect_info::<SocketAddr>())
                .await
                .context("HTTPS server failed")?;
        }
    }
    api.drain().await;
    Ok(())
}

/// The rustls configuration of `[serve.tls]`, with errors that name the file.
pub async fn tls_config(
    tls: &crate::config::ServeTls,
) -> anyhow::Result<axum_server::tls_rustls::RustlsConfig> {
    // rustls has two crypto back ends in this build; say which one serves.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    for (what, path) in [("certificate", &tls.cert), ("key", &tls.key)] {
        std::fs::metadata(path).with_context(|| {
            format!(
                "[serve.tls] {what} `{}` cannot be read; point it at a PEM file",
                path.display()
            )
        })?;
    }
    axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
        .await
        .with_context(|| {
            format!(
                "[serve.tls] `{}` and `{}` are not a PEM certificate chain and its private key",
                tls.cert.display(),
                tls.key.display()
            )
        })
}

// ------------------------------------------------------------------ auth

/// Authenticates, applies the token's rate limit, and audits every
/// state-changing request (refused ones included).
async fn authenticate(State(api): State<AppState>, mut req: Request, next: Next) -> Response {
    let changes = !matches!(req.method().as_str(), "GET" | "HEAD" | "OPTIONS");
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let action = audit::action_of(req.method().as_str(), &route);
    let principal = if api.serve.auth {
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        api.tokens.authenticate(bearer).await
    } else {
        Ok(Principal::anonymous())
    };
    let (response, who) = match principal {
        Err(e) => (Problem::unauthorized(e.to_string()).into_response(), None),
        Ok(p) => match api.limiter.request(&p.token_id) {
            Err(secs) => (
                Problem {
                    retry_after: Some(secs),
                    ..Problem::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate-limited",
                        format!(
                            "this token sent more than {} requests per second ([serve.limits] requests_per_second); retry after {secs} s",
                            api.serve.limits.requests_per_second
                        ),
                    )
                }
                .into_response(),
                Some(p),
            ),
            Ok(()) => {
                req.extensions_mut().insert(p.clone());
                (next.run(req).await, Some(p))
            }
        },
    };
    if changes {
        let object = response
            .extensions()
            .get::<AuditObject>()
            .map(|o| o.0.clone());
        let entry = AuditEntry {
            time: crate::util::now_rfc3339(),
            actor: who
                .as_ref()
                .map_or_else(|| "unauthenticated".into(), |p| p.token_id.clone()),
            tenant: who.as_ref().map(|p| p.tenant.clone()).unwrap_or_default(),
            action,
            object,
            status: response.status().as_u16(),
            client,
        };
        if let Err(e) = api.audit.append(&entry) {
            tracing::error!(
                "cannot append to the audit log {}: {e}",
                api.audit.path().display()
            );
        }
        api.audit.copy(&entry).await;
    }
    response
}

/// Counts every request by route and status, with its latency.
async fn measure(State(api): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().as_str().to_string();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    api.metrics.request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

async fn render_metrics(State(api): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.metrics.render(),
    )
        .into_response()
}

fn with_object(mut response: Response, object: &str) -> Response {
    response
        .extensions_mut()
        .insert(AuditObject(object.to_string()));
    response
}

fn need(p: &Principal, role: Role) -> ApiResult<()> {
    if p.role >= role {
        Ok(())
    } else {
        Err(Problem::forbidden(format!(
            "this needs the `{}` role; the token has `{}`: ask an admin for a token with that role",
            role.as_str(),
            p.role.as_str()
        )))
    }
}

type Who = axum::Extension<Principal>;

async fn unknown_route(req: Request) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "no-such-route",
        format!(
            "no route {} {}; GET /v1/workflows lists workflows, see docs/API.md for every route",
            req.method(),
            crate::text::clip_bytes(req.uri().path().escape_debug().to_string(), 200)
        ),
    )
}

async fn whoami(axum::Extension(p): Who) -> Json<Value> {
    Json(json!({"token_id": p.token_id, "tenant": p.tenant, "role": p.role}))
}

// --------------------------------------------------------------- health

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(api): State<AppState>) -> Response {
    let mut checks = BTreeMap::new();
    let mut ok = true;
    let mut check = |name: &'static str, good: bool, detail: Value| {
        ok &= good;
        let mut v = json!({"ok": good});
        if let (Some(m), Value::Object(d)) = (v.as_object_mut(), detail) {
            m.extend(d);
        }
        checks.insert(name, v);
    };
    match &api.backend {
        Backend::Embedded(runs) => {
            let registry = runs.engine().registry();
            let n = registry.workflows().count();
            check(
                "toolbox",
                n > 0,
                json!({"workflows": n, "rejected": registry.rejections().count()}),
            );
            let data_ok = std::fs::metadata(api_dir(&api.config)).is_ok_and(|m| m.is_dir());
            check("storage", data_ok, json!({"kind": "local"}));
            check("engine", true, json!({"kind": "embedded"}));
        }
        Backend::Distributed(remote) => {
            let temporal = remote.client().count("ExecutionStatus = 'Running'").await;
            check(
                "temporal",
                temporal.is_ok(),
                json!({"address": remote.client().address(), "error": temporal.as_ref().err().map(|e| format!("{e:#}"))}),
            );
            let blobs = remote.blobs();
            let listed = crate::distributed::components::list_published(blobs.as_ref()).await;
            check(
                "s3",
                listed.is_ok(),
                json!({"store": blobs.describe(), "error": listed.as_ref().err().map(|e| format!("{e:#}"))}),
            );
            let n = listed.as_ref().map_or(0, Vec::len);
            check(
                "toolbox",
                n > 0,
                json!({"workflows": n, "hint": (n == 0).then_some("no host has published a workflow: start `toolhost host` with a toolbox")}),
            );
            check("engine", true, json!({"kind": "distributed"}));
        }
    }
    let tokens_ok = !api.serve.auth || api.tokens.usable().await;
    check("tokens", tokens_ok, json!({"store": api.tokens.describe()}));
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"status": if ok {"ready"} else {"not-ready"}, "checks": checks})),
    )
        .into_response()
}

// ------------------------------------------------------------ workflows

fn workflow_json(w: &crate::toolbox::LoadedWorkflow) -> Value {
    json!({
        "name": w.info.name,
        "version": w.info.version,
        "description": w.info.description,
        "vertical": w.info.vertical,
        "tools": w.info.tools,
        "tags": w.info.tags,
        "timeout_secs": w.info.timeout_secs,
        "digest": w.digest,
        "size": w.size,
        "parameters_schema": w.info.parameters_schema,
    })
}

fn published_json(
    w: &crate::distributed::components::PublishedWorkflow,
    hosts: &[String],
) -> Value {
    json!({
        "name": w.name,
        "version": w.version,
        "description": w.description,
        "vertical": w.vertical,
        "tools": w.tools,
        "timeout_secs": w.timeout_secs,
        "digest": w.digest,
        "parameters_schema": w.parameters_schema,
        "task_queue": w.task_queue,
        "published_at": w.published_at,
        "published_by": w.host,
        "hosts": hosts,
    })
}

/// The hosts polling `queue` (Temporal remembers a poller for minutes).
async fn hosts_of(remote: &Remote, queue: &str) -> Vec<String> {
    let mut hosts: Vec<String> = remote
        .client()
        .pollers(queue)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.strip_prefix("toolhost@").unwrap_or(&p).to_string())
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

async fn list_workflows(State(api): State<AppState>) -> ApiResult<Json<Value>> {
    match &api.backend {
        Backend::Embedded(runs) => {
            let registry = runs.engine().registry();
            Ok(Json(json!({
                "workflows": registry.workflows().map(|w| workflow_json(w)).collect::<Vec<_>>(),
                "rejected": registry.rejections().map(|r| json!({
                    "file": r.path.file_name().map(|n| n.to_string_lossy().into_owned()),
                    "reason": r.reason,
                })).collect::<Vec<_>>(),
                "engine": "embedded",
            })))
        }
        Backend::Distributed(remote) => {
            let blobs = remote.blobs();
            let names = crate::distributed::components::list_published(blobs.as_ref())
                .await
                .map_err(|e| Problem::unavailable(format!("{e:#}")))?;
            let mut out = Vec::new();
            let mut queues: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for name in names {
                let Ok(wf) = crate::distributed::components::published(blobs.as_ref(), &name).await
                else {
                    continue;
                };
                if !queues.contains_key(&wf.task_queue) {
                    let hosts = hosts_of(remote, &wf.task_queue).await;
                    queues.insert(wf.task_queue.clone(), hosts);
                }
                out.push(published_json(&wf, &queues[&wf.task_queue]));
            }
            Ok(Json(
                json!({"workflows": out, "rejected": [], "engine": "distributed"}),
            ))
        }
    }
}

async fn get_workflow(
    State(api): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    match &api.backend {
        Backend::Embedded(runs) => {
            let registry = runs.engine().registry();
            let wf = registry
                .get(&name)
                .ok_or_else(|| Problem::not_found("workflow", &name))?;
            let mut body = workflow_json(&wf);
            body["versions"] = registry
                .versions()
                .filter(|v| v.info.name == name)
                .map(|v| json!({"version": v.info.version, "digest": v.digest, "current": v.digest == wf.digest}))
                .collect();
            body["served_by"] = json!([{"engine": "embedded", "vertical": wf.info.vertical}]);
            Ok(Json(body))
        }
        Backend::Distributed(remote) => {
            let wf = remote
                .workflow(&name)
                .await
                .map_err(|_| Problem::not_found("workflow", &name))?;
            let hosts = hosts_of(remote, &wf.task_queue).await;
            let mut body = published_json(&wf, &hosts);
            body["versions"] =
                json!([{"version": wf.version, "digest": wf.digest, "current": true}]);
            body["served_by"] = json!([{"engine": "distributed", "vertical": wf.vertical, "task_queue": wf.task_queue, "hosts": hosts}]);
            Ok(Json(body))
        }
    }
}

// -------------------------------------------------------------- targets

async fn upload_target(State(api): State<AppState>, who: Who, body: Body) -> Response {
    match store_upload(api, who, body).await {
        Ok(r) => r,
        // A refusal may leave the rest of the body unread: the connection
        // cannot carry another request, so say so rather than let a client
        // reuse it and fail.
        Err(problem) => {
            let mut r = problem.into_response();
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            r
        }
    }
}

async fn store_upload(api: AppState, axum::Extension(p): Who, body: Body) -> ApiResult<Response> {
    need(&p, Role::Submitter)?;
    let (allowance, reset) = api.limiter.upload_allowance(&p.token_id);
    if allowance == 0 {
        return Err(quota_problem(&api, reset));
    }
    let stream = body.into_data_stream();
    let counted = |n: u64| {
        api.limiter.count_upload(&p.token_id, n);
        api.metrics.upload_bytes(n);
    };
    match api
        .targets
        .upload(&p.tenant, stream, allowance, counted)
        .await
    {
        Ok((info, existed)) => {
            let status = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let mut body = serde_json::to_value(&info).unwrap_or_default();
            body["deduplicated"] = json!(existed);
            Ok(with_object(
                (
                    status,
                    [(header::LOCATION, format!("/v1/targets/{}", info.sha256))],
                    Json(body),
                )
                    .into_response(),
                &info.sha256,
            ))
        }
        Err(UploadError::TooLarge { .. })
            if allowance < api.serve.max_upload_mib.saturating_mul(1 << 20) =>
        {
            Err(quota_problem(&api, reset))
        }
        Err(e @ UploadError::TooLarge { .. }) => Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            e.to_string(),
        )),
        Err(e @ (UploadError::Unsafe(_) | UploadError::Empty)) => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad-archive",
            e.to_string(),
        )),
        Err(e @ UploadError::Interrupted(_)) => Err(Problem::bad_request(e.to_string())),
        Err(UploadError::Io(e)) => Err(Problem::internal(format!("{e:#}"))),
    }
}

fn quota_problem(api: &Api, reset: u64) -> Problem {
    Problem {
        retry_after: Some(reset),
        ..Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota-exceeded",
            format!(
                "this token has used its upload quota of {} MiB for today ([serve.limits] upload_mib_per_day); it resets at midnight UTC, in {reset} s",
                api.serve.limits.upload_mib_per_day
            ),
        )
    }
}

/// The record of target `sha` as `p` may see it: its own tenant's, or for
/// an admin any tenant's.
async fn visible_target(api: &Api, p: &Principal, sha: &str) -> Option<targets::TargetInfo> {
    if let Some(info) = api.targets.find(&p.tenant, sha).await {
        return Some(info);
    }
    if p.role != Role::Admin {
        return None;
    }
    let owner = api.targets.find_owners(sha).await.into_iter().next()?;
    api.targets.find(&owner, sha).await
}

async fn get_target(
    State(api): State<AppState>,
    axum::Extension(p): Who,
    Path(sha): Path<String>,
) -> ApiResult<Json<targets::TargetInfo>> {
    visible_target(&api, &p, &sha)
        .await
        .map(Json)
        .ok_or_else(|| Problem::not_found("target", &sha))
}

async fn head_target(
    State(api): State<AppState>,
    axum::Extension(p): Who,
    Path(sha): Path<String>,
) -> StatusCode {
    if visible_target(&api, &p, &sha).await.is_some() {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

// ----------------------------------------------------------------- runs

/// A request to start a run.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct StartBody {
    workflow: String,
    #[serde(default)]
    params: Option<Value>,
    /// sha256 of an uploaded target.
    #[serde(default)]
    target: Option<String>,
    /// Run only if the workflow is at this digest.
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    timeout_secs: Option<u64>,
}

fn start_problem(e: StartError) -> Problem {
    match e {
        StartError::UnknownWorkflow { ref name, .. } => {
            Problem::new(StatusCode::NOT_FOUND, "unknown-workflow", e.to_string())
                .with("workflow", json!(name))
        }
        StartError::InvalidParams { ref errors, .. } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-params",
            format!("{e}\nfix the parameters: GET /v1/workflows/<name> shows their schema"),
        )
        .with("errors", json!(errors)),
        StartError::Target(_) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad-target",
            e.to_string(),
        ),
        StartError::Setup(ref err) if err.to_string().contains("pinned") => {
            Problem::conflict(e.to_string())
        }
        StartError::Setup(err) => Problem::internal(format!("{err:#}")),
    }
}

fn check_labels(labels: &BTreeMap<String, String>) -> ApiResult<()> {
    if labels.len() > 32 {
        return Err(Problem::bad_request("at most 32 labels per run"));
    }
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= 63
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        if !key_ok || v.len() > 256 || v.chars().any(char::is_control) {
            return Err(Problem::bad_request(format!(
                "label `{}` is invalid: keys are 1-63 letters, digits, `-_./`; values at most 256 characters without control characters",
                k.escape_debug()
            )));
        }
    }
    Ok(())
}

impl Api {
    async fn start(
        &self,
        p: &Principal,
        body: StartBody,
        key: Option<String>,
        retry_of: Option<String>,
    ) -> ApiResult<(RunRef, bool)> {
        need(p, Role::Submitter)?;
        check_labels(&body.labels)?;
        let most = self.serve.limits.concurrent_runs;
        if most > 0 {
            let live = match &self.backend {
                Backend::Embedded(runs) => runs.live_count_by(&p.token_id),
                Backend::Distributed(remote) => remote
                    .live_count_by(&p.token_id)
                    .await
                    .map_err(|e| Problem::unavailable(format!("{e:#}")))?,
            };
            if live >= most {
                return Err(Problem {
                    retry_after: Some(5),
                    ..Problem::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too-many-runs",
                        format!(
                            "this token already has {most} runs queued or running ([serve.limits] concurrent_runs); wait for one to end"
                        ),
                    )
                });
            }
        }
        let target = match &body.target {
            None => None,
            Some(sha) => {
                let sha = sha.strip_prefix("sha256:").unwrap_or(sha).to_string();
                if self.targets.find(&p.tenant, &sha).await.is_none() {
                    return Err(Problem::not_found("target", &sha));
                }
                Some(sha)
            }
        };
        let params = body.params.unwrap_or_else(|| json!({}));
        if !params.is_object() {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-params",
                "`params` must be a JSON object of the workflow's parameters",
            ));
        }
        let start = Start {
            tenant: p.tenant.clone(),
            token_id: p.token_id.clone(),
            workflow: body.workflow,
            digest: body.digest,
            params,
            target_tree: target
                .as_ref()
                .and_then(|sha| self.targets.tree(&p.tenant, sha)),
            target,
            labels: body.labels,
            idempotency_key: key,
            retry_of,
            timeout_secs: body.timeout_secs,
        };
        let (run, replayed) = match &self.backend {
            Backend::Embedded(runs) => {
                if let Some(k) = &start.idempotency_key
                    && let Some(existing) = runs.by_idempotency_key(&p.tenant, k)
                {
                    return Ok((RunRef::Local(existing), true));
                }
                (
                    RunRef::Local(runs.start(start).map_err(start_problem)?),
                    false,
                )
            }
            Backend::Distributed(remote) => {
                let (meta, replayed) = remote.start(start).await.map_err(start_problem)?;
                (RunRef::Remote(Box::new(meta)), replayed)
            }
        };
        if !replayed {
            self.metrics.run_started(&run.meta().tenant);
        }
        Ok((run, replayed))
    }
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let k = v.to_str().unwrap_or_default();
            if k.is_empty() || k.len() > 255 {
                return Err(Problem::bad_request(
                    "the Idempotency-Key header must be 1 to 255 visible ASCII characters",
                ));
            }
            Ok(Some(k.to_string()))
        }
    }
}

async fn start_run(
    State(api): State<AppState>,
    axum::Extension(p): Who,
    headers: HeaderMap,
    body: Result<Json<StartBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let Json(body) = body.map_err(|e| {
        Problem::bad_request(format!(
            "the body is not a run request: {}; send {{\"workflow\": NAME, \"params\": {{...}}, \"target\": SHA256}}",
            e.body_text()
        ))
    })?;
    let key = idempotency_key(&headers)?;
    let (run, replayed) = api.start(&p, body, key, None).await?;
    let view = run_view(&api, &run, false).await;
    if replayed {
        return Ok((
            StatusCode::OK,
            [("idempotent-replayed", "true")],
            Json(view),
        )
            .into_response());
    }
    let id = run.meta().run_id;
    let location = format!("/v1/runs/{id}");
    Ok(with_object(
        (
            StatusCode::ACCEPTED,
            [(header::LOCATION, location)],
            Json(view),
        )
            .into_response(),
        &id,
    ))
}

const MAX_BATCH: usize = 100;

/// Many run requests.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    runs: Vec<Value>,
}

/// Starts many runs; each entry gets its own answer (a run view, or a
/// problem), in the order given, so one bad entry stops none of the others.
async fn start_batch(
    State(api): State<AppState>,
    axum::Extension(p): Who,
    body: Result<Json<BatchBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    need(&p, Role::Submitter)?;
    let Json(body) = body.map_err(|e| {
        Problem::bad_request(format!(
            "the body is not a batch: {}; send {{\"runs\": [run request, ...]}}",
            e.body_text()
        ))
    })?;
    if body.runs.is_empty() || body.runs.len() > MAX_BATCH {
        return Err(Problem::bad_request(format!(
            "a batch holds 1 to {MAX_BATCH} runs, not {}",
            body.runs.len()
        )));
    }
    let mut results = Vec::new();
    for entry in body.runs {
        let answer = match serde_json::from_value::<StartBody>(entry) {
            Err(e) => Err(Problem::bad_request(format!("not a run request: {e}"))),
            Ok(b) => api.start(&p, b, None, None).await.map(|(run, _)| run),
        };
        results.push(match answer {
            Ok(run) => json!({"status": 202, "run": run_view(&api, &run, false).await}),
            Err(problem) => json!({
                "status": problem.status.as_u16(),
                "problem": {
                    "type": format!("urn:toolhost:problem:{}", problem.kind),
                    "detail": problem.detail,
                    "errors": problem.extra.get("errors"),
                },
            }),
        });
    }
    Ok(Json(json!({"results": results})))
}

async fn retry_run(
    State(api): State<AppState>,
    axum::Extension(p): Who,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let old = visible(&api, &p, &id).await?.meta();
    need(&p, Role::Submitter)?;
    let body = StartBody {
        workflow: old.workflow.clone(),
        params: Some(old.params.clone()),
        target: old.target.clone(),
        digest: None,
        labels: old.labels.clone(),
        timeout_secs: old.timeout_secs,
    };
    // The retry belongs to the old run's tenant (an admin may retry any).
    let owner = Principal {
        tenant: old.tenant.clone(),
        ..p.clone()
    };
    let (run, _) = api
        .start(&owner, body, None, Some(old.run_id.clone()))
        .await?;
    let view = run_view(&api, &run, false).await;
    let id = run.meta().run_id;
    let location = format!("/v1/runs/{id}");
    Ok(with_object(
        (
            StatusCode::ACCEPTED,
            [(header::LOCATION, location)],
            Json(view),
        )
            .into_response(),
        &id,
    ))
}

/// Run `id` if `p` may see it; the same 404 whether it does not exist or
/// belongs to another tenant.
async fn visible(api: &Api, p: &Principal, id: &str) -> ApiResult<RunRef> {
    let found = match &api.backend {
        Backend::Embedded(runs) => runs.get(id, |tenant| p.sees(tenant)).map(RunRef::Local),
        Backend::Distributed(remote) => remote
            .meta(id)
            .await
            .filter(|m| p.sees(&m.tenant))
            .map(|m| RunRef::Remote(Box::new(m))),
    };
    found.ok_or_else(|| Problem::not_found("run", id))
}

/// The record of a finished run.
async fn record_of(api: &Api, meta: &RunMeta) -> Option<crate::engine::RunRecord> {
    match &api.backend {
        Backend::Embedded(runs) => runs.record(&meta.run_id).await,
        Backend::Distributed(remote) => remote.record(meta).await,
    }
}

/// The view of a run; `live` adds what only the run itself knows while it
/// runs (progress, pending steps), which a distributed run answers through
/// a query to its host.
async fn run_view(api: &Api, run: &RunRef, live: bool) -> Value {
    let meta = run.meta();
    let mut v = serde_json::to_value(&meta).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        map.remove("idempotency_key");
    }
    if meta.status.is_final() {
        if let Some(record) = record_of(api, &meta).await {
            // The whole record but its findings (`/findings` has them).
            if let (Some(view), Ok(Value::Object(rec))) =
                (v.as_object_mut(), serde_json::to_value(&record))
            {
                for (k, val) in rec {
                    if k == "target" {
                        view.insert("target_label".into(), val);
                    } else if k != "findings" && !view.contains_key(&k) {
                        view.insert(k, val);
                    }
                }
            }
            v["workflow_version"] = json!(record.workflow_version);
            v["component_digest"] = json!(record.component_digest);
            v["started_at"] = json!(record.started_at);
            v["duration_ms"] = json!(record.duration_ms);
            v["summary"] = record.summary;
            v["counts"] = json!(record.counts);
            v["analyses"] = json!(record.analyses);
            v["progress"] = record.progress;
            v["artifacts"] = json!(record.artifacts);
            if v.get("error").is_none()
                && let Some(e) = record.error
            {
                v["error"] = json!(e);
            }
        }
        return v;
    }
    match run {
        RunRef::Remote(_) if !live => {}
        RunRef::Local(run) => {
            v["progress"] = run.progress().unwrap_or(Value::Null);
            v["pending"] = json!(run.pending_tools());
            v["findings_so_far"] = json!(run.live_findings().len());
        }
        RunRef::Remote(meta) => {
            let Backend::Distributed(remote) = &api.backend else {
                return v;
            };
            let status = remote
                .query(&meta.run_id, crate::distributed::QUERY_STATUS, None)
                .await;
            let state = remote.state(&meta.run_id).await;
            let progress = status
                .as_ref()
                .map(|s| s["progress"].clone())
                .filter(Value::is_object)
                .or_else(|| state.as_ref().and_then(|s| s.step_progress().cloned()));
            v["progress"] = progress.unwrap_or(Value::Null);
            v["pending"] = json!(state.map(|s| s.pending_steps).unwrap_or_default());
            if let Some(s) = status {
                v["findings_so_far"] = s["findings"].clone();
                v["phase"] = s["phase"].clone();
                v["host"] = s["host"].clone();
            }
        }
    }
    v
}

async fn get_run(
    State(api): State<AppState>,
    axum::Extension(p): Who,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let run = visible(&api, &p, &id).await?;
    Ok(Json(run_view(&api, &run, true).await))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    workflow: Option<String>,
    status: Option<String>,
    /// `key=value`
    label: Option<String>,
    /// RFC 3339: runs created at or after.
    since: Option<String>,
    /// RFC 3339: runs created before.
    until: Option<String>,
    tenant: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn list_runs(
    State(api): State<AppState>,
    axum::Extension(p): Who,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query.map_err(|e| {
        Problem::bad_request(format!(
            "{}; filters are workflow, status, label=KEY=VALUE, since, until (RFC 3339), tenant (admin), limit, cursor",
            e.body_text()
        ))
    })?;
    let status = q
        .status
        .as_deref()
        .map(str::parse::<ApiStatus>)
        .transpose()
        .map_err(Problem::bad_request)?;
    let label = match q.label.as_deref() {
        None => None,
        Some(l) => Some(l.split_once('=').ok_or_else(|| {
            Problem::bad_request("`label` is KEY=VALUE, for example label=branch=main")
        })?),
    };
    for t in [&q.since, &q.until].into_iter().flatten() {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).map_err(
            |_| {
                Problem::bad_request(format!(
                    "`{t}` is not an RFC 3339 time like 2026-12-01T10:00:00Z"
                ))
            },
        )?;
    }
    if q.tenant.is_some() {
        need(&p, Role::Admin)?;
    }
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let bad_cursor =
        || Problem::bad_request("`cursor` is not one this server gave; start again without it");
    let (page, next) = match &api.backend {
        Backend::Embedded(runs) => {
            let cursor = match q.cursor.as_deref() {
                None => None,
                Some(c) => Some(decode_cursor(c).ok_or_else(bad_cursor)?),
            };
            let (page, more) = runs.page(
                |m| {
                    p.sees(&m.tenant)
                        && q.tenant.as_ref().is_none_or(|t| *t == m.tenant)
                        && q.workflow.as_ref().is_none_or(|w| *w == m.workflow)
                        && status.is_none_or(|s| s == m.status)
                        && label.is_none_or(|(k, v)| m.labels.get(k).is_some_and(|x| x == v))
                        && q.since.as_ref().is_none_or(|s| m.created_at >= *s)
                        && q.until.as_ref().is_none_or(|u| m.created_at < *u)
                        && cursor
                            .as_ref()
                            .is_none_or(|(c, id)| (&m.created_at, &m.run_id) < (c, id))
                },
                limit,
            );
            let next = more
                .then(|| page.last().map(|m| encode_cursor(&m.created_at, &m.run_id)))
                .flatten();
            (page, next)
        }
        Backend::Distributed(remote) => {
            // A visibility query: the tenant filter is Temporal's, so a
            // page never holds another tenant's run.
            let tenant = if p.role == Role::Admin {
                q.tenant.as_deref()
            } else {
                Some(p.tenant.as_str())
            };
            let filter = ListFilter {
                tenant,
                workflow: q.workflow.as_deref(),
                status,
                label,
                since: q.since.as_deref(),
                until: q.until.as_deref(),
            };
            remote
                .page(&filter, limit, q.cursor.as_deref())
                .await
                .map_err(Problem::bad_request)?
        }
    };
    Ok(Json(json!({
        "runs": page.iter().filter(|m| p.sees(&m.tenant)).map(|m| {
            let mut v = serde_json::to_value(m).unwrap_or_default();
            if let Some(map) = v.as_object_mut() { map.remove("idempotency_key"); map.remove("params"); }
            v
        }).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

fn encode_cursor(created_at: &str, run_id: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{created_at}|{run_id}"))
}

fn decode_cursor(c: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (a, b) = text.split_once('|')?;
    Some((a.into(), b.into()))
}

#[derive(Debug, Deserialize)]
struct FormatQuery {
    format: Option<String>,
}

async fn run_findings(
    State(api): State<AppState>,
    axum::Extension(p): Who,
    Path(id): Path<String>,
    Query(q): Query<FormatQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let run = visible(&api, &p, &id).await?;
    let meta = run.meta();
    let sarif = q.format.as_deref() == Some("sarif")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/sarif+json"));
    if let Some(f) = q.format.as_deref()
        && !matches!(f, "sarif" | "json")
    {
        return Err(Problem::bad_request(format!(
            "unknown format `{}`: use json or sarif",
            f.escape_debug()
        )));
    }
    if !meta.status.is_final() {
        if sarif {
            return Err(Problem::conflict(
                "the run is still live; its SARIF is written when it ends (follow GET /v1/runs/{id}/events, or ask for JSON for the findings so far)",
            ));
        }
        let findings = match &run {
            RunRef::Local(r) => r.live_findings(),
            RunRef::Remote(m) => match &api.backend {
                Backend::Distributed(remote) => remote
                    .query(&m.run_id, crate::distributed::QUERY_FINDINGS, None)
                    .await
                    .and_then(|v| v.as_array().cloned())
                    .unwrap_or_default(),
                Backend::Embedded(_) => Vec::new(),
            },
        };
        return Ok(Json(json!({"final": false, "findings": findings})).into_response());
    }
    let Some(record) = record_of(&api, &meta).await else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "no-record",
            format!(
                "run `{id}` ended without a record ({}); retry it",
                meta.error.unwrap_or_default()
            ),
        ));
    };
    if sarif {
        return Ok((
            [(header::CONTENT_TYPE, "application/sarif+json")],
            record.sarif_bytes(),
        )
            .into_response());
    }
    Ok(
        Json(json!({"final": true, "counts": record.counts, "findings": record.findings}))
            .into_response(),
    )
}

async fn run_log(
    State(api): State<AppState>,
    axum::Extension(p): Who,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let run = visible(&api, &p, &id).await?;
    const NDJSON: (header::HeaderName, &str) = (header::CONTENT_TYPE, "application/x-ndjson");
    match (&api.backend, &run) {
        (Backend::Embedded(runs), _) => {
            let path = runs.run_dir(&run.meta().run_id).join("log.jsonl");
            match tokio::fs::File::open(&path).await {
                Ok(file) => Ok((
                    [NDJSON],
                    Body::from_stream(tokio_util::io::ReaderStream::new(file)),
                )
                    .into_response()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Ok(([NDJSON], String::new()).into_response())
                }
                Err(e) => Err(Problem::internal(e)),
            }
        }
        (Backend::Distributed(remote), run) => {
            let bytes = remote
                .log(&run.meta())
                .await
                .map_err(|e| Problem::unavailable(format!("cannot read the run log: {e:#}")))?;
            Ok(([NDJSON], bytes).into_response())
        }
    }
}

async fn run_artifacts(
    State(api): State<AppState>,
    axum::Extension(p): Who,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let run = visible(&api, &p, &id).await?;
    let mut out = Vec::new();
    match &api.backend {
        Backend::Embedded(runs) => {
            let dir = runs.run_dir(&run.meta().run_id).join("artifacts");
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    if let (Ok(meta), Some(name)) = (e.metadata(), e.file_name().to_str())
                        && meta.is_file()
                    {
                        out.push(json!({"name": name, "bytes": meta.len()}));
                    }
                }
            }
        }
        Backend::Distributed(remote) => {
            let listed = remote
                .artifacts(&run.meta())
                .await
                .map_err(|e| Problem::unavailable(format!("cannot list the artifacts: {e:#}")))?;
            for (name, bytes) in listed {
                out.push(json!({"name": name, "bytes": bytes}));
            }
        }
    }
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Json(json!({"artifacts": out})))
}

fn attachment(name: &str, body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"{}\"",
                    name.replace(['"', '\\'], "_")
                ),
            ),
        ],
        body,
    )
        .into_response()
}

async fn run_artifact(
    State(api): State<AppState>,
    axum::Extension(p): Who,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let run = visible(&api, &p, &id).await?;
    let safe = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0');
    if !safe {
        return Err(Problem::not_found("artifact", &name));
    }
    match &api.backend {
        Backend::Embedded(runs) => {
            let path = runs
                .run_dir(&run.meta().run_id)
                .join("artifacts")
                .join(&name);
            // Artifacts are regular files the host wrote; never follow a link.
            use std::os::unix::fs::OpenOptionsExt as _;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path);
            match file {
                Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => Ok(attachment(
                    &name,
                    Body::from_stream(tokio_util::io::ReaderStream::new(
                        tokio::fs::File::from_std(f),
                    )),
                )),
                _ => Err(Problem::not_found("artifact", &name)),
            }
        }
        Backend::Distributed(remote) => match remote.artifact(&run.meta(), &name).await {
            Ok(Some(bytes)) => Ok(attachment(&name, Body::from(bytes))),
            Ok(None) => Err(Problem::not_found("artifact", &name)),
            Err(e) => Err(Problem::unavailable(format!(
                "cannot read the artifact: {e:#}"
            ))),
        },
    }
}

async fn cancel_run(
    State(api): State<AppState>,
    axum::Extension(p): Who,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let run = visible(&api, &p, &id).await?;
    need(&p, Role::Submitter)?;
    let meta = run.meta();
    let cancelled = match (&api.backend, &run) {
        (Backend::Embedded(runs), RunRef::Local(r)) => runs.cancel(r),
        (Backend::Distributed(remote), _) if !meta.status.is_final() => {
            remote
                .cancel(&id)
                .await
                .map_err(|e| Problem::unavailable(format!("{e:#}")))?;
            true
        }
        _ => false,
    };
    if !cancelled {
        return Err(Problem::conflict(format!(
            "run `{id}` has already ended ({}); retry it to run it again",
            meta.status.as_str()
        )));
    }
    Ok(with_object(
        (
            StatusCode::ACCEPTED,
            Json(json!({"run_id": id, "cancelling": true})),
        )
            .into_response(),
        &id,
    ))
}

async fn run_events(
    State(api): State<AppState>,
    axum::Extension(p): Who,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    use futures::StreamExt as _;
    let run = visible(&api, &p, &id).await?;
    let last = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or_default().trim().to_string());
    let bad_id = || Problem::bad_request("Last-Event-ID must be an event id this server sent");
    let run = match run {
        RunRef::Remote(meta) => {
            let Backend::Distributed(remote) = &api.backend else {
                return Err(Problem::internal("a distributed run on an embedded server"));
            };
            let after = match last.as_deref() {
                None => EventCursor::default(),
                Some(s) => EventCursor::parse(s).ok_or_else(bad_id)?,
            };
            let stream = remote
                .clone()
                .events(*meta, after, Duration::from_millis(500))
                .map(|e| {
                    Ok::<_, std::convert::Infallible>(
                        SseEvent::default()
                            .id(e.id)
                            .event(e.kind)
                            .data(e.data.to_string()),
                    )
                });
            return Ok(Sse::new(stream)
                .keep_alive(KeepAlive::default())
                .into_response());
        }
        RunRef::Local(run) => run,
    };
    let after: u64 = match last.as_deref() {
        None => 0,
        Some(s) => s.parse().map_err(|_| bad_id())?,
    };
    let stream =
        futures::stream::unfold((run, after, false), |(run, mut after, done)| async move {
            if done {
                return None;
            }
            loop {
                // Register for the next change before reading, so no event
                // slips between the read and the wait.
                let watched = run.clone();
                let changed = watched.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let (events, ended) = run.events_after(after);
                if !events.is_empty() {
                    after = events.last().map_or(after, |e| e.id);
                    let batch: Vec<Result<SseEvent, std::convert::Infallible>> = events
                        .into_iter()
                        .map(|e| {
                            Ok(SseEvent::default()
                                .id(e.id.to_string())
                                .event(e.kind)
                                .data(e.data.to_string()))
                        })
                        .collect();
                    // Stop after the final status event went out.
                    let finished = ended && run.events_after(after).0.is_empty();
                    return Some((futures::stream::iter(batch), (run, after, finished)));
                }
                if ended {
                    return None;
                }
                let _ = tokio::time::timeout(Duration::from_secs(15), changed).await;
            }
        });
    Ok(Sse::new(stream.flatten())
        .keep_alive(KeepAlive::default())
        .into_response())
}
