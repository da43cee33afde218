//! `security_assessment`: finds hard-coded secrets and dangerous patterns
//! (an activity scans every text file of the workspace) and turns
//! `cargo clippy` diagnostics into findings, after fetching the crate's
//! dependencies; results are deduplicated and severities mapped
//! consistently, and the summary's `analyses` say what ran and what failed.

use toolhost_scanners::workspace::{
    MinSeverity, SCAN_ACTIVITY, ScanInput, report_hits, scan_files,
};
use toolhost_sdk::prelude::*;

/// Parameters of `security_assessment`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Scan files for secrets and dangerous code patterns.
    #[serde(default = "yes")]
    pub scan_files: bool,
    /// Run `cargo clippy` when the target has a Cargo.toml.
    #[serde(default = "yes")]
    pub clippy: bool,
    /// Directory of the Rust crate inside the target (for clippy).
    #[serde(default)]
    pub path: String,
    /// Skip files larger than this many bytes.
    #[serde(default = "toolhost_scanners::workspace::default_max_file_bytes")]
    #[schemars(range(min = 1, max = 104857600))]
    pub max_file_bytes: u64,
    /// Report only findings at least this severe.
    #[serde(default)]
    pub min_severity: MinSeverity,
    /// Secret rules in the gitleaks TOML format that extend the built-in
    /// ones: new rules, allowlists (paths, regexes), stopwords.
    #[serde(default)]
    #[schemars(length(max = 1048576))]
    pub secret_rules: Option<String>,
    /// Also apply the target's own secret rules (`.gitleaks.toml`,
    /// `.toolhost-secrets.toml` at its root).
    #[serde(default = "yes")]
    pub target_rules: bool,
}

fn yes() -> bool {
    true
}

/// The run summary.
#[derive(Serialize)]
pub struct Summary {
    files_scanned: u64,
    findings: usize,
    /// What ran, what failed and why, what was skipped.
    analyses: Vec<Analysis>,
}

pub struct SecurityAssessment;

impl Workflow for SecurityAssessment {
    const NAME: &'static str = "security_assessment";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Finds hard-coded secrets, risky Rust patterns and clippy diagnostics.";
    const VERTICAL: &'static str = "rust";
    const TOOLS: &'static [&'static str] = &["cargo-fetch", "cargo-clippy"];
    const TAGS: &'static [&'static str] = &["security", "secrets", "rust", "sast"];
    const TIMEOUT_SECS: u32 = 3600;

    type Params = Params;
    type Output = Summary;

    fn run(ctx: &Context, params: Params) -> Result<Summary> {
        let mut hits = Vec::new();
        let mut files_scanned = 0;
        let mut analyses = Vec::new();
        if params.scan_files {
            let out = scan_files(
                ctx,
                &ScanInput {
                    max_file_bytes: params.max_file_bytes,
                    secret_rules: params.secret_rules.clone(),
                    target_rules: params.target_rules,
                },
            )?;
            files_scanned = out.files_scanned;
            hits.extend(out.hits);
            analyses.push(Analysis::ran("secrets"));
        } else {
            analyses.push(Analysis::disabled("secrets"));
        }

        let manifest = toolhost_scanners::join_path(&params.path, "Cargo.toml");
        if !params.clippy {
            analyses.push(Analysis::disabled("clippy"));
        } else if !workspace::exists(&manifest)? {
            analyses.push(Analysis::skipped(
                "clippy",
                format!("no `{manifest}` in the target"),
            ));
        } else {
            // Tools are offline: the crate's dependencies are fetched first.
            let deps = toolhost_scanners::cargo::fetch_dependencies(&params.path)?;
            let fetched = !deps.is_failed();
            analyses.push(deps);
            if fetched {
                let (analysis, clippy_hits) = clippy(&params, files_scanned)?;
                analyses.push(analysis);
                hits.extend(clippy_hits);
            } else {
                analyses.push(toolhost_scanners::cargo::not_built("clippy"));
            }
        }

        let reported = report_hits(hits, params.min_severity);
        Ok(Summary {
            files_scanned,
            findings: reported,
            analyses,
        })
    }

    fn activity(name: &str, input: &str) -> Result<String> {
        match name {
            SCAN_ACTIVITY => {
                toolhost_sdk::activity::handle(input, toolhost_scanners::workspace::scan)
            }
            other => Err(Error::msg(format!("unknown activity `{other}`"))),
        }
    }
}

/// Runs `cargo clippy` on the crate at `params.path`: its diagnostics
/// (paths relative to the target) and whether it really analysed the code.
fn clippy(params: &Params, files_scanned: u64) -> Result<(Analysis, Vec<toolhost_scanners::Hit>)> {
    use toolhost_scanners::BuildOutcome;
    progress(&serde_json::json!({"phase": "cargo clippy", "files_scanned": files_scanned}));
    let mut cmd = tools::run("cargo-clippy").args([
        "--message-format=json",
        "--all-targets",
        "--quiet",
        "--color",
        "never",
    ]);
    if !params.path.is_empty() {
        cmd = cmd.cwd(params.path.clone());
    }
    let out = cmd.output()?;
    let stdout = out.stdout_str();
    let hits: Vec<_> = toolhost_scanners::parse_clippy_json(&stdout)
        .into_iter()
        .map(|mut h| {
            h.path = h
                .path
                .map(|p| toolhost_scanners::join_path(&params.path, &p));
            h
        })
        .collect();
    let stderr_tail = || toolhost_scanners::tail_lines(&out.stderr_str(), 20);
    let analysis = match toolhost_scanners::cargo_build_outcome(&stdout) {
        BuildOutcome::Finished => Analysis::ran("clippy"),
        BuildOutcome::CompileErrors { count, first } => Analysis::failed(
            "clippy",
            format!(
                "the crate does not compile ({count} error{}, the first: {first}); clippy's lints need code that compiles (the errors are findings)",
                if count == 1 { "" } else { "s" }
            ),
        ),
        BuildOutcome::NotBuilt => Analysis::failed(
            "clippy",
            format!(
                "cargo stopped before clippy could analyse the code (exit {}):\n{}",
                out.exit_code
                    .map_or("by a signal".into(), |c| c.to_string()),
                stderr_tail()
            ),
        ),
    };
    if analysis.is_failed() {
        toolhost_sdk::log::warn!("{}", analysis.reason.as_deref().unwrap_or_default());
    }
    Ok((analysis, hits))
}

toolhost_sdk::export_workflow!(SecurityAssessment);
