//! `toolhost serve` (the authenticated API over the embedded engine) and
//! `toolhost token` (its tokens, managed on the server's machine).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use super::{GlobalArgs, exit, load_config};
use crate::config::ServeEngine;
use crate::engine::LocalEngine;
use crate::runtime::{EngineOptions, Runtime};
use crate::serve::audit::{AuditEntry, AuditLog};
use crate::serve::remote::Remote;
use crate::serve::tokens::{Role, TokenStore};
use crate::serve::{Api, api_dir, check_bind};
use crate::toolbox::Toolbox;

/// Arguments of `toolhost serve`.
#[derive(Args, Debug)]
#[command(after_help = "\
Serves API v1 (docs/API.md): upload a target archive, start runs, follow their events,
read findings (JSON or SARIF), logs and artifacts, cancel and retry. Every request but
/healthz and /readyz needs `Authorization: Bearer <token>`; create one first:

  toolhost token create --tenant team-a --role submitter --name ci

Without auth ([serve] auth = false, or --no-auth) the server only listens on loopback.")]
pub struct ServeArgs {
    /// Address to listen on (overrides [serve] listen; default 127.0.0.1:7400).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Serve without tokens: everyone who can connect is admin of tenant
    /// `default`. Loopback addresses only.
    #[arg(long)]
    no_auth: bool,
}

pub(super) async fn serve(g: &GlobalArgs, args: ServeArgs) -> anyhow::Result<u8> {
    let config = load_config(g)?;
    let mut serve = config.serve.clone();
    if let Some(l) = args.listen {
        serve.listen = l;
    }
    if args.no_auth {
        serve.auth = false;
    }
    let addr: SocketAddr = serve
        .listen
        .parse()
        .with_context(|| format!("`{}` is not an address like 127.0.0.1:7400", serve.listen))?;
    check_bind(&addr, serve.auth)?;
    let tls = match &serve.tls {
        Some(t) => Some(crate::serve::tls_config(t).await?),
        None => None,
    };
    let shutdown = CancellationToken::new();
    let mut _watch = None;
    let api = match serve.engine {
        ServeEngine::Embedded => {
            let runtime = Runtime::new(&EngineOptions::for_host(&config))?;
            let toolbox = Toolbox::open(runtime, config.clone()).await?;
            for event in toolbox.registry().as_events() {
                match event {
                    crate::toolbox::ToolboxEvent::Rejected { .. } => {
                        tracing::warn!("toolbox: {event}")
                    }
                    _ => tracing::info!("toolbox: {event}"),
                }
            }
            _watch = Some(toolbox.watch()?);
            let engine = Arc::new(LocalEngine::new(toolbox)?);
            Api::new(engine, serve.clone(), shutdown.clone())?
        }
        ServeEngine::Distributed => {
            let (temporal, blobs) = distributed_parts(&config)?;
            let remote = Remote::connect(&temporal, blobs).await?;
            Api::distributed(config.clone(), serve.clone(), remote)?
        }
    };
    if serve.auth
        && api
            .tokens
            .entries()
            .await
            .map(|t| t.is_empty())
            .unwrap_or(false)
    {
        eprintln!(
            "toolhost serve: no tokens yet; create one with `toolhost token create --tenant <name> --role submitter`"
        );
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!("API listening on http://{local}");
    eprintln!(
        "toolhost serve: API v1 on {}://{local} ({} engine{}; Ctrl-C to stop)",
        if serve.tls.is_some() { "https" } else { "http" },
        match serve.engine {
            ServeEngine::Embedded => "embedded",
            ServeEngine::Distributed => "distributed",
        },
        if serve.auth {
            ""
        } else {
            " without authentication"
        }
    );
    let stop = shutdown.clone();
    tokio::spawn(async move {
        super::host::wait_for_signal().await;
        tracing::info!("shutting down: live runs are cancelled and recorded");
        stop.cancel();
    });
    crate::serve::serve(api, listener, tls, shutdown).await?;
    Ok(exit::OK)
}

/// `[temporal]` and the S3 store a distributed server needs, or an error
/// that says which is missing.
fn distributed_parts(
    config: &crate::config::HostConfig,
) -> anyhow::Result<(
    crate::distributed::TemporalConfig,
    Arc<dyn crate::storage::BlobStore>,
)> {
    let temporal = config
        .temporal()
        .context("[serve] engine = \"distributed\" submits runs to Temporal")?
        .clone();
    if config.storage.s3.is_none() {
        anyhow::bail!(
            "[serve] engine = \"distributed\" keeps targets, results and tokens in S3: add [storage.s3] (bucket, endpoint) to the config"
        );
    }
    Ok((temporal, config.blob_store()?))
}

/// The token store `toolhost serve` would use with `config`.
fn token_store(config: &crate::config::HostConfig) -> anyhow::Result<TokenStore> {
    match config.serve.engine {
        ServeEngine::Embedded => {
            let dir = api_dir(config);
            crate::util::private_dir::ensure(&dir)
                .with_context(|| format!("cannot use `{}`", dir.display()))?;
            Ok(TokenStore::new(&dir))
        }
        ServeEngine::Distributed => Ok(TokenStore::in_blobs(distributed_parts(config)?.1)),
    }
}

/// Arguments of `toolhost token`.
#[derive(Args, Debug)]
#[command(after_help = "\
Tokens live in <data_dir>/api/tokens.json (mode 0600), stored as sha256 hashes; a running
server sees changes on its next request. With [serve] engine = \"distributed\" they live in
api/tokens/ of the S3 bucket, shared by every replica (a change reaches each within 2 s). Roles: viewer (read), submitter (also upload,
start, cancel, retry), admin (also every tenant).")]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a token; it is printed once and never stored in clear.
    Create {
        /// The tenant it belongs to (lowercase letters, digits, `-`, `_`).
        #[arg(long)]
        tenant: String,
        /// viewer, submitter or admin.
        #[arg(long, default_value = "submitter")]
        role: Role,
        /// A label for people (`ci`, `laptop`).
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List tokens (ids, tenants, roles; never secrets).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id; requests with it fail from then on.
    Revoke {
        /// The token id (`toolhost token list`).
        id: String,
    },
}

impl clap::ValueEnum for Role {
    fn value_variants<'a>() -> &'a [Self] {
        &[Role::Viewer, Role::Submitter, Role::Admin]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

pub(super) async fn token(g: &GlobalArgs, args: TokenArgs) -> anyhow::Result<u8> {
    let config = load_config(g)?;
    let dir = api_dir(&config);
    crate::util::private_dir::ensure(&dir)
        .with_context(|| format!("cannot use `{}`", dir.display()))?;
    let store = token_store(&config)?;
    let audit = match config.serve.engine {
        ServeEngine::Embedded => AuditLog::new(&dir),
        ServeEngine::Distributed => {
            AuditLog::new(&dir).with_copies_in(distributed_parts(&config)?.1)
        }
    };
    let record = async |action: &str, tenant: &str, object: &str| {
        let entry = AuditEntry {
            time: crate::util::now_rfc3339(),
            actor: "cli".into(),
            tenant: tenant.into(),
            action: action.into(),
            object: Some(object.into()),
            status: 0,
            client: None,
        };
        audit
            .append(&entry)
            .with_context(|| format!("cannot append to `{}`", audit.path().display()))?;
        audit.copy(&entry).await;
        anyhow::Ok(())
    };
    match args.command {
        TokenCommand::Create { tenant, role, name } => {
            let (token, entry) = store.create(&tenant, role, &name).await?;
            record("token.create", &entry.tenant, &entry.id).await?;
            eprintln!(
                "token {} for tenant `{}`, role {}: shown once, keep it secret",
                entry.id,
                entry.tenant,
                entry.role.as_str()
            );
            println!("{token}");
        }
        TokenCommand::List { json } => {
            let entries = store.entries().await?;
            if json {
                let list: Vec<_> = entries
                    .iter()
                    .map(|e| {
                        serde_json::json!({"id": e.id, "tenant": e.tenant, "role": e.role, "name": e.name,
                            "created_at": e.created_at, "revoked_at": e.revoked_at})
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if entries.is_empty() {
                println!("no tokens; create one with `toolhost token create --tenant NAME`");
            } else {
                println!(
                    "{:<14} {:<20} {:<10} {:<22} NAME",
                    "ID", "TENANT", "ROLE", "CREATED"
                );
                for e in entries.iter() {
                    println!(
                        "{:<14} {:<20} {:<10} {:<22} {}{}",
                        e.id,
                        e.tenant,
                        e.role.as_str(),
                        e.created_at,
                        crate::text::terminal_safe(&e.name),
                        if e.revoked_at.is_some() {
                            " (revoked)"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        TokenCommand::Revoke { id } => {
            let e = store.revoke(&id).await?;
            record("token.revoke", &e.tenant, &e.id).await?;
            eprintln!("token {} of tenant `{}` revoked", e.id, e.tenant);
        }
    }
    Ok(exit::OK)
}

/// Arguments of `toolhost audit`.
#[derive(Args, Debug)]
#[command(after_help = "\
Reads <data_dir>/api/audit.jsonl (with [serve] engine = \"distributed\": api/audit/ in the S3
bucket, every replica's entries): one line per state-changing API request (refused ones
included) and per `toolhost token` change. Filters combine.")]
pub struct AuditArgs {
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Only actions starting with this (`run`, `run.cancel`, `token`).
    #[arg(long)]
    action: Option<String>,
    /// Only this actor (a token id, or `cli`).
    #[arg(long)]
    actor: Option<String>,
    /// Only entries at or after this RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
}

pub(super) async fn audit(g: &GlobalArgs, args: AuditArgs) -> anyhow::Result<u8> {
    let config = load_config(g)?;
    let entries = match config.serve.engine {
        ServeEngine::Embedded => {
            let log = AuditLog::new(&api_dir(&config));
            log.read()
                .with_context(|| format!("cannot read `{}`", log.path().display()))?
        }
        ServeEngine::Distributed => {
            let blobs = distributed_parts(&config)?.1;
            AuditLog::read_copies(blobs.as_ref())
                .await
                .with_context(|| format!("cannot read api/audit/ in {}", blobs.describe()))?
        }
    };
    if let Some(t) = &args.since {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).map_err(
            |_| anyhow::anyhow!("`{t}` is not an RFC 3339 time like 2026-12-01T10:00:00Z"),
        )?;
    }
    let shown = entries.iter().filter(|e| {
        args.tenant.as_ref().is_none_or(|t| *t == e.tenant)
            && args
                .action
                .as_ref()
                .is_none_or(|a| e.action.starts_with(a.as_str()))
            && args.actor.as_ref().is_none_or(|a| *a == e.actor)
            && args.since.as_ref().is_none_or(|s| e.time >= *s)
    });
    if args.json {
        for e in shown {
            println!("{}", serde_json::to_string(e)?);
        }
        return Ok(exit::OK);
    }
    println!(
        "{:<26} {:<16} {:<14} {:<14} {:<6} {:<40} CLIENT",
        "TIME", "ACTOR", "TENANT", "ACTION", "STATUS", "OBJECT"
    );
    for e in shown {
        println!(
            "{:<26} {:<16} {:<14} {:<14} {:<6} {:<40} {}",
            e.time,
            e.actor,
            e.tenant,
            e.action,
            if e.status == 0 {
                "-".to_string()
            } else {
                e.status.to_string()
            },
            crate::text::terminal_safe(e.object.as_deref().unwrap_or("-")),
            e.client.as_deref().unwrap_or("-")
        );
    }
    Ok(exit::OK)
}
