//! The `toolhost` command line: argument parsing, human and JSON output,
//! exit codes. It calls the engine and toolbox; it never runs guest code or
//! tools itself.

mod doctor;
mod host;
mod inspect;
mod new;
mod output;
mod remote;
mod run;
mod serve;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::manifest::Severity;

/// Exit codes (documented in `toolhost --help` and docs/CLI.md).
pub mod exit {
    /// Success; no finding at or above `--fail-on`.
    pub const OK: u8 = 0;
    /// The run succeeded but has findings at or above `--fail-on`.
    pub const FINDINGS: u8 = 1;
    /// Bad input: usage, parameters, unknown workflow, unreadable target or config.
    pub const USAGE: u8 = 2;
    /// The run failed: the workflow returned an error, trapped or hit a limit.
    pub const RUN_FAILED: u8 = 3;
    /// The run exceeded its deadline.
    pub const TIMED_OUT: u8 = 4;
    /// A component is invalid (`validate`), or the toolbox cannot be used.
    pub const INVALID_COMPONENT: u8 = 5;
    /// The run was cancelled (Ctrl-C).
    pub const CANCELLED: u8 = 130;
}

const AFTER_HELP: &str = "\
Exit codes:
  0    success (and no finding at or above --fail-on)
  1    findings at or above --fail-on
  2    bad input: usage, parameters, unknown workflow, target or config
  3    the run failed (workflow error, trap, limit exceeded)
  4    the run timed out
  5    invalid component / unusable toolbox
  130  cancelled (Ctrl-C)

Quick start:
  cargo xtask demo                                  build the plugins and scan a sample crate
  toolhost workflows                                list what the toolbox offers
  toolhost run security_assessment --target .       scan the current directory
  toolhost new my_scan                              start a new workflow crate

The API server (see docs/API.md):
  toolhost token create --tenant team-a             a token for a tenant (printed once)
  toolhost serve                                    API v1 on 127.0.0.1:7400
  toolhost login --server http://127.0.0.1:7400     then submit, status, list, ... go through it

Distributed mode (Temporal + S3; see docs/DISTRIBUTED.md):
  toolhost host --config host.toml                  a Temporal worker for one vertical
  toolhost submit security_assessment --target . --wait
  toolhost status <run-id> | list | cancel <run-id> | logs <run-id> | artifacts <run-id> --out DIR";

/// Run sandboxed WebAssembly workflows that drive native security tools.
#[derive(Parser, Debug)]
#[command(name = "toolhost", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options shared by all commands.
#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Host config file (default: $TOOLHOST_CONFIG, ./toolhost.toml, or built-in).
    #[arg(long, global = true, env = "TOOLHOST_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Toolbox directory of .wasm workflows (overrides the config).
    #[arg(long, global = true, env = "TOOLHOST_TOOLBOX", value_name = "DIR")]
    toolbox: Option<PathBuf>,
    /// Directory for run records (overrides the config).
    #[arg(long, global = true, env = "TOOLHOST_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// More log output on stderr (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a workflow against a target directory, in this process.
    Run(run::RunArgs),
    /// Run the long-lived host: watch the toolbox, serve the HTTP API.
    Host(host::HostArgs),
    /// Serve the authenticated API v1: upload targets, start and follow runs.
    Serve(serve::ServeArgs),
    /// Manage the API's tokens (create, list, revoke).
    Token(serve::TokenArgs),
    /// Read the API's audit log (who changed what, when, from where).
    Audit(serve::AuditArgs),
    /// List the workflows in the toolbox (and files that failed to load).
    Workflows(inspect::WorkflowsArgs),
    /// Show a workflow's metadata and parameters.
    Describe(inspect::DescribeArgs),
    /// Check a .wasm file the way the host would load it.
    Validate(inspect::ValidateArgs),
    /// Show the findings of a recorded run.
    Findings(inspect::FindingsArgs),
    /// Create a new workflow crate that builds with `cargo component build`.
    New(new::NewArgs),
    /// Report what the tool sandbox can enforce here, and which tools exist.
    Doctor(doctor::DoctorArgs),
    /// Log in to a `toolhost serve`: submit, status, list, ... then go through it.
    Login(server::LoginArgs),
    /// Forget the login.
    Logout,
    /// Pack and upload a target, start a run (on the server, or on Temporal).
    Submit(remote::SubmitArgs),
    /// Distributed: a run's state, live progress, or why it is still queued.
    Status(remote::StatusArgs),
    /// Distributed: runs known to Temporal.
    List(remote::ListArgs),
    /// Distributed: cancel a run (its tools are killed, the guest sees `cancelled`).
    Cancel(remote::CancelArgs),
    /// Start a run again with the same inputs (through a server).
    Retry(remote::RetryArgs),
    /// Distributed: a run's log.
    Logs(remote::LogsArgs),
    /// Distributed: download a run's artifacts.
    Artifacts(remote::ArtifactsArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Parses arguments and runs the command; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let service = matches!(cli.command, Command::Host(_) | Command::Serve(_))
        || matches!(&cli.command, Command::Workflows(w) if w.watch());
    init_tracing(cli.global.verbose, service);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let code = runtime.block_on(dispatch(cli));
    ExitCode::from(code)
}

async fn dispatch(cli: Cli) -> u8 {
    let g = cli.global;
    let result = match cli.command {
        Command::Run(args) => run::run(&g, args).await,
        Command::Host(args) => host::host(&g, args).await,
        Command::Serve(args) => serve::serve(&g, args).await,
        Command::Token(args) => serve::token(&g, args).await,
        Command::Audit(args) => serve::audit(&g, args).await,
        Command::Workflows(args) => inspect::workflows(&g, args).await,
        Command::Describe(args) => inspect::describe(&g, args).await,
        Command::Validate(args) => inspect::validate(&g, args).await,
        Command::Findings(args) => inspect::findings(&g, args).await,
        Command::New(args) => new::new(args),
        Command::Login(args) => server::login(args).await,
        Command::Logout => server::logout(),
        Command::Submit(args) => remote::submit(&g, args).await,
        Command::Retry(args) => remote::retry(&g, args).await,
        Command::Status(args) => remote::status(&g, args).await,
        Command::List(args) => remote::list(&g, args).await,
        Command::Cancel(args) => remote::cancel(&g, args).await,
        Command::Logs(args) => remote::logs(&g, args).await,
        Command::Artifacts(args) => remote::artifacts(&g, args).await,
        Command::Doctor(args) => doctor::doctor(&g, args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "toolhost",
                &mut std::io::stdout(),
            );
            Ok(exit::OK)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            e.downcast_ref::<CliError>().map_or(exit::USAGE, |c| c.code)
        }
    }
}

/// An error with a specific exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    code: u8,
    message: String,
}

impl CliError {
    fn with_code(code: u8, message: impl Into<String>) -> anyhow::Error {
        CliError {
            code,
            message: message.into(),
        }
        .into()
    }
}

fn init_tracing(verbose: u8, service: bool) {
    let default = match verbose {
        0 if service => "info",
        0 => "warn",
        1 => "toolhost=debug,info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOOLHOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Loads the config with command-line overrides applied.
fn load_config(g: &GlobalArgs) -> anyhow::Result<crate::config::HostConfig> {
    let (mut config, _source) = crate::config::HostConfig::load(g.config.as_deref())?;
    if let Some(t) = &g.toolbox {
        config.set_toolbox(t);
    }
    if let Some(d) = &g.data_dir {
        config.set_data_dir(d);
    }
    Ok(config)
}

/// `--param` and `--params-file`, as `run` and `submit` take them.
#[derive(Args, Debug)]
struct ParamArgs {
    /// A parameter, key=value (repeatable).
    #[arg(long = "param", short = 'p', value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// A JSON file with parameters (--param values override it).
    #[arg(long, value_name = "FILE")]
    params_file: Option<PathBuf>,
}

impl ParamArgs {
    /// The parameters object, typed by `schema`; validation is the
    /// caller's.
    fn build(&self, schema: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
        use anyhow::Context as _;
        let file = match &self.params_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read params file `{}`", path.display()))?;
                Some(serde_json::from_str(&text).with_context(|| {
                    format!("params file `{}` is not valid JSON", path.display())
                })?)
            }
            None => None,
        };
        crate::engine::params::build(file, &self.params, schema)
            .map_err(|e| CliError::with_code(exit::USAGE, e))
    }
}

/// Parses a `--fail-on` value.
fn parse_severity(s: &str) -> Result<Severity, String> {
    s.parse()
}
