//! `toolhost workflows | describe | validate | findings`: read-only views.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::{CliError, GlobalArgs, exit, load_config};
use crate::engine::RunRecord;
use crate::report::summary::{counts_line, write_findings_table};
use crate::runtime::{EngineOptions, Runtime};
use crate::storage::LocalStore;
use crate::toolbox::LoadedWorkflow;

/// Arguments of `toolhost workflows`.
#[derive(Args, Debug)]
pub struct WorkflowsArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Keep watching the toolbox and print each load, rejection and removal
    /// as it happens (one line each; JSON lines with --json).
    #[arg(long)]
    watch: bool,
    /// With [temporal] configured: list this host's toolbox instead of what
    /// the hosts of every vertical have published.
    #[arg(long)]
    local: bool,
}

impl WorkflowsArgs {
    pub(super) fn watch(&self) -> bool {
        self.watch
    }
}

/// Arguments of `toolhost describe`.
#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// Workflow name.
    workflow: String,
    /// Print JSON (the full metadata, with the parameters schema).
    #[arg(long)]
    json: bool,
}

/// Arguments of `toolhost validate`.
#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// The component file.
    file: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Output formats of `toolhost findings`.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum FindingsFormat {
    Table,
    Json,
    Sarif,
}

/// Arguments of `toolhost findings`.
#[derive(Args, Debug)]
pub struct FindingsArgs {
    /// The run id (printed by `toolhost run`).
    run_id: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: FindingsFormat,
}

async fn load(g: &GlobalArgs) -> anyhow::Result<std::sync::Arc<crate::toolbox::Registry>> {
    let config = load_config(g)?;
    let runtime = Runtime::new(&EngineOptions::for_host(&config))?;
    crate::toolbox::load(&runtime, &config)
        .await
        .map(|t| t.registry())
        .map_err(|e| CliError::with_code(exit::INVALID_COMPONENT, format!("{e:#}")))
}

fn info_json(wf: &LoadedWorkflow) -> Value {
    json!({
        "name": wf.info.name, "version": wf.info.version, "description": wf.info.description,
        "vertical": wf.info.vertical, "tools": wf.info.tools, "tags": wf.info.tags,
        "timeout_secs": wf.info.timeout_secs, "parameters_schema": wf.info.parameters_schema,
        "digest": wf.digest, "path": wf.path.display().to_string(), "size": wf.size,
    })
}

pub(super) async fn workflows(g: &GlobalArgs, args: WorkflowsArgs) -> anyhow::Result<u8> {
    if args.watch {
        return watch_workflows(g, args.json).await;
    }
    if !args.local && load_config(g)?.temporal.is_some() {
        return super::remote::published_workflows(g, args.json).await;
    }
    let registry = load(g).await?;
    if args.json {
        let doc = json!({
            "workflows": registry.workflows().map(|w| info_json(w)).collect::<Vec<_>>(),
            "rejected": registry.rejections().map(|r| json!({
                "path": r.path.display().to_string(), "reason": r.reason})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(exit::OK);
    }
    let rows: Vec<[String; 5]> = registry
        .workflows()
        .map(|w| {
            [
                w.info.name.clone(),
                w.info.version.clone(),
                w.info.vertical.clone(),
                if w.info.tools.is_empty() {
                    "-".into()
                } else {
                    w.info.tools.join(",")
                },
                w.info.description.clone(),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!(
            "no workflows in the toolbox; build some with `cargo xtask build-plugins` or `toolhost new`"
        );
    } else {
        print_table(
            &["NAME", "VERSION", "VERTICAL", "TOOLS", "DESCRIPTION"],
            &rows,
        );
    }
    for r in registry.rejections() {
        println!("rejected {}: {}", r.path.display(), r.reason);
    }
    Ok(exit::OK)
}

pub(super) fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count().min(60));
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub(super) async fn describe(g: &GlobalArgs, args: DescribeArgs) -> anyhow::Result<u8> {
    let registry = load(g).await?;
    let Some(wf) = registry.get(&args.workflow) else {
        return Err(CliError::with_code(
            exit::USAGE,
            format!(
                "no workflow named `{}`; available: {}",
                args.workflow,
                registry.names()
            ),
        ));
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info_json(&wf))?);
        return Ok(exit::OK);
    }
    let i = &wf.info;
    println!("{} {} (vertical {})", i.name, i.version, i.vertical);
    if !i.description.is_empty() {
        println!("  {}", i.description);
    }
    println!(
        "tools:   {}",
        if i.tools.is_empty() {
            "(none)".into()
        } else {
            i.tools.join(", ")
        }
    );
    println!(
        "tags:    {}",
        if i.tags.is_empty() {
            "(none)".into()
        } else {
            i.tags.join(", ")
        }
    );
    println!("timeout: {} s", i.timeout_secs);
    println!("sha256:  {}", wf.digest);
    println!("file:    {}", wf.path.display());
    println!("parameters:");
    for line in describe_params(&i.parameters_schema) {
        println!("  {line}");
    }
    Ok(exit::OK)
}

/// One line per top-level parameter: name, type, default, description.
pub fn describe_params(schema: &Value) -> Vec<String> {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return vec!["(none)".into()];
    };
    if props.is_empty() {
        return vec!["(none)".into()];
    }
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    props
        .iter()
        .map(|(name, p)| {
            // schemars puts enums and structs in `$defs` and refers to them.
            let resolved = p
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix('#'))
                .and_then(|ptr| schema.pointer(ptr));
            let mut merged = resolved.cloned().unwrap_or(Value::Null);
            if let (Some(m), Some(own)) = (merged.as_object_mut(), p.as_object()) {
                for (k, v) in own {
                    if k != "$ref" {
                        m.insert(k.clone(), v.clone());
                    }
                }
            }
            let p = if merged.is_object() { &merged } else { p };
            let ty = match p.get("type") {
                Some(Value::String(t)) => t.clone(),
                Some(Value::Array(ts)) => ts
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("|"),
                _ if p.get("enum").is_some() => "enum".into(),
                _ => "any".into(),
            };
            let mut line = format!("{name} ({ty})");
            if required.contains(&name.as_str()) {
                line.push_str(" required");
            }
            if let Some(d) = p.get("default") {
                line.push_str(&format!(" default {d}"));
            }
            if let Some(values) = p.get("enum").and_then(Value::as_array) {
                let v: Vec<String> = values.iter().map(|v| v.to_string()).collect();
                line.push_str(&format!(" one of {}", v.join(", ")));
            }
            if let Some(desc) = p.get("description").and_then(Value::as_str) {
                line.push_str(&format!(": {desc}"));
            }
            line
        })
        .collect()
}

pub(super) async fn validate(g: &GlobalArgs, args: ValidateArgs) -> anyhow::Result<u8> {
    let config = load_config(g)?;
    let runtime = Runtime::new(&EngineOptions::for_host(&config))?;
    match crate::toolbox::validate::load_component(&runtime, &config, &args.file).await {
        Ok(wf) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"valid": true, "workflow": info_json(&wf)})
                    )?
                );
            } else {
                println!(
                    "ok: {} {} (vertical {}, tools: {}), sha256 {}",
                    wf.info.name,
                    wf.info.version,
                    wf.info.vertical,
                    if wf.info.tools.is_empty() {
                        "none".into()
                    } else {
                        wf.info.tools.join(", ")
                    },
                    wf.digest
                );
            }
            Ok(exit::OK)
        }
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"valid": false, "reason": format!("{e:#}")})
                    )?
                );
                Ok(exit::INVALID_COMPONENT)
            } else {
                Err(CliError::with_code(
                    exit::INVALID_COMPONENT,
                    format!("{} is not a valid workflow: {e:#}", args.file.display()),
                ))
            }
        }
    }
}

pub(super) async fn findings(g: &GlobalArgs, args: FindingsArgs) -> anyhow::Result<u8> {
    if let Some(api) = super::remote::api_client()? {
        let format = match args.format {
            FindingsFormat::Table => "table",
            FindingsFormat::Json => "json",
            FindingsFormat::Sarif => "sarif",
        };
        return super::server::findings(&api, &args.run_id, format).await;
    }
    let config = load_config(g)?;
    let store = LocalStore::new(&config.data_dir);
    // Embedded runs are recorded locally; distributed ones in the blob
    // store once they end, and a running one answers a query.
    let mut record = RunRecord::load(&store, &args.run_id).await;
    if record.is_err() && config.storage.s3.is_some() {
        let blobs = config.blob_store()?;
        record = RunRecord::load(blobs.as_ref(), &args.run_id).await;
    }
    if record.is_err()
        && let Some(temporal) = &config.temporal
    {
        let client =
            crate::distributed::client::RunClient::connect(temporal, config.blob_store()?).await?;
        if let Ok(live) = client
            .query(&args.run_id, crate::distributed::QUERY_FINDINGS)
            .await
        {
            let findings: Vec<crate::manifest::Finding> = serde_json::from_value(live)?;
            eprintln!("run {} is still running: findings so far", args.run_id);
            match args.format {
                FindingsFormat::Json => println!("{}", serde_json::to_string_pretty(&findings)?),
                FindingsFormat::Sarif | FindingsFormat::Table => {
                    write_findings_table(&findings, &mut std::io::stdout().lock(), false)?;
                    println!("{}", counts_line(&findings));
                }
            }
            return Ok(exit::OK);
        }
    }
    let record = record.map_err(|e| CliError::with_code(exit::USAGE, format!("{e:#}")))?;
    match args.format {
        FindingsFormat::Json => println!("{}", serde_json::to_string_pretty(&record.findings)?),
        FindingsFormat::Sarif => print!("{}", String::from_utf8_lossy(&record.sarif_bytes())),
        FindingsFormat::Table => {
            println!(
                "{} {} ({})",
                record.run_id,
                record.status.as_str(),
                record.workflow
            );
            if !record.findings.is_empty() {
                let color = std::io::stdout().is_terminal();
                write_findings_table(&record.findings, &mut std::io::stdout().lock(), color)?;
            }
            println!("{}", counts_line(&record.findings));
        }
    }
    Ok(exit::OK)
}

async fn watch_workflows(g: &GlobalArgs, json_lines: bool) -> anyhow::Result<u8> {
    let config = load_config(g)?;
    let runtime = Runtime::new(&EngineOptions::for_host(&config))?;
    let toolbox = crate::toolbox::Toolbox::open(runtime, config).await?;
    let mut events = toolbox.subscribe();
    let _watch = toolbox.watch()?;
    for event in toolbox.registry().as_events() {
        emit(json_lines, &event);
    }
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(e) => emit(json_lines, &e),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => eprintln!("warning: missed {n} events"),
                Err(_) => return Ok(exit::OK),
            },
            _ = tokio::signal::ctrl_c() => return Ok(exit::OK),
        }
    }
}

fn emit(json_lines: bool, event: &crate::toolbox::ToolboxEvent) {
    if json_lines {
        println!("{}", event.to_json());
    } else {
        println!("{} {event}", crate::util::now_rfc3339());
    }
}
