//! `toolhost run`: one workflow, one target, in this process.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::{CliError, GlobalArgs, exit, load_config, output};
use crate::capabilities::RunEvent;
use crate::engine::{LocalEngine, RunRequest, RunStatus, StartError};
use crate::manifest::Severity;
use crate::runtime::{EngineOptions, Runtime};

/// Arguments of `toolhost run`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  toolhost run hello --target . --param name=you
  toolhost run security_assessment --target ./my-crate --fail-on high --sarif out.sarif
  toolhost run rust_test --target ./my-crate --json | jq .findings

Parameters are checked against the workflow's JSON Schema before anything runs
(`toolhost describe <workflow>` lists them). A value is a string when the schema
says so, and JSON otherwise: --param jobs=4 --param paths='[\"src\"]'.
The run record is written to <data-dir>/runs/<run-id>/ (result.json,
findings.sarif, log.jsonl, artifacts/). Ctrl-C cancels the run, kills its
tools, and still writes the record.")]
pub struct RunArgs {
    /// Name of the workflow (see `toolhost workflows`).
    workflow: String,
    /// Directory to analyse; it is copied, never modified.
    #[arg(long, short, value_name = "DIR")]
    target: PathBuf,
    #[command(flatten)]
    params: super::ParamArgs,
    /// Print the run record as JSON on stdout instead of a summary.
    #[arg(long)]
    json: bool,
    /// Also write the findings as SARIF 2.1.0 to FILE.
    #[arg(long, value_name = "FILE")]
    sarif: Option<PathBuf>,
    /// Exit with code 1 when a finding is at least this severe.
    #[arg(long, value_name = "SEVERITY", value_parser = super::parse_severity)]
    fail_on: Option<Severity>,
    /// Use this run id (letters, digits, `-`, `_`, `.`).
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,
    /// Keep the run workspace after the run, for debugging.
    #[arg(long)]
    keep_workspace: bool,
    /// Stop the run after this many seconds (never more than the workflow's own timeout).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
}

pub(super) async fn run(g: &GlobalArgs, args: RunArgs) -> anyhow::Result<u8> {
    let config = load_config(g)?;
    let runtime = Runtime::new(&EngineOptions::for_host(&config))?;
    let toolbox = crate::toolbox::load(&runtime, &config)
        .await
        .map_err(|e| CliError::with_code(exit::INVALID_COMPONENT, format!("{e:#}")))?;
    let registry = toolbox.registry();
    for r in registry.rejections() {
        eprintln!("warning: skipped {}: {}", r.path.display(), r.reason);
    }
    let Some(wf) = registry.get(&args.workflow) else {
        return Err(CliError::with_code(
            exit::USAGE,
            StartError::UnknownWorkflow {
                name: args.workflow.clone(),
                available: registry.names(),
            }
            .to_string(),
        ));
    };
    let params = args.params.build(&wf.info.parameters_schema)?;

    let engine = LocalEngine::new(toolbox)?;
    engine.check_params(&args.workflow, &params).map_err(|e| {
        CliError::with_code(
            exit::USAGE,
            format!(
                "{e}\n(`toolhost describe {}` lists the parameters)",
                args.workflow
            ),
        )
    })?;

    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "\ncancelling: stopping tools and writing the run record (Ctrl-C again to force)"
                );
                cancel.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(i32::from(exit::CANCELLED));
                }
            }
        });
    }

    let spinner = live_spinner(!args.json, &args.workflow);
    let observer = spinner.clone().map(|bar| {
        Arc::new(move |event: &RunEvent| {
            if let Some(line) = describe_event(event) {
                bar.set_message(line);
            }
        }) as crate::capabilities::Observer
    });
    let result = engine
        .run(RunRequest {
            run_id: args.run_id.clone(),
            cancel,
            observer,
            keep_workspace: args.keep_workspace,
            timeout_secs: args.timeout,
            ..RunRequest::new(args.workflow.clone(), args.target.clone(), params)
        })
        .await;
    if let Some(bar) = &spinner {
        bar.finish_and_clear();
    }
    let record = result.map_err(|e| CliError::with_code(exit::USAGE, e.to_string()))?;

    if let Some(path) = &args.sarif {
        std::fs::write(path, record.sarif_bytes())
            .with_context(|| format!("cannot write SARIF to `{}`", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        let run_dir = engine.store().root().join("runs").join(&record.run_id);
        output::print_run_summary(&record, &run_dir);
    }
    Ok(match record.status {
        RunStatus::Succeeded => {
            let failing = args
                .fail_on
                .is_some_and(|min| record.findings.iter().any(|f| f.severity >= min));
            if failing { exit::FINDINGS } else { exit::OK }
        }
        RunStatus::Failed => exit::RUN_FAILED,
        RunStatus::TimedOut => exit::TIMED_OUT,
        RunStatus::Cancelled => exit::CANCELLED,
    })
}

fn live_spinner(enabled: bool, workflow: &str) -> Option<ProgressBar> {
    if !enabled || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(workflow.to_string());
    bar.set_message("starting");
    bar.enable_steady_tick(Duration::from_millis(100));
    Some(bar)
}

/// Longest spinner message, in characters.
const SPINNER_WIDTH: usize = 100;

fn describe_event(event: &RunEvent) -> Option<String> {
    match event {
        RunEvent::ToolStarted { tool, args } => Some(format!("running {tool} {}", args.join(" "))),
        RunEvent::ToolFinished { tool, outcome } => Some(format!("{tool}: {outcome}")),
        RunEvent::Progress(stats) => Some(output::format_stats(stats)),
        RunEvent::Finding(f) => Some(format!("found {} ({})", f.title, f.severity)),
        RunEvent::Log { level, message, .. } if level != "debug" && level != "trace" => {
            Some(message.clone())
        }
        RunEvent::Log { .. } => None,
    }
    // Guest and tool text: cut by characters, never by bytes, and made
    // safe for the terminal.
    .map(|line| crate::text::display_line(&line, SPINNER_WIDTH))
}
