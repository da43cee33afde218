//! `python_sast`: static analysis of Python code. Bandit's issues (its JSON
//! report) become findings with locations and severities, and the same
//! workspace scan as `security_assessment` (shared through
//! `toolhost-scanners`) finds committed secrets.

use toolhost_scanners::workspace::{
    MinSeverity, SCAN_ACTIVITY, ScanInput, report_hits, scan_files,
};
use toolhost_scanners::{Confidence, Hit};
use toolhost_sdk::prelude::*;

/// Parameters of `python_sast`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Directory of the Python code inside the target ("" = all of it).
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub path: String,
    /// Run Bandit.
    #[serde(default = "yes")]
    pub bandit: bool,
    /// Bandit tests to skip, by id (e.g. B101 for `assert`).
    #[serde(default)]
    #[schemars(length(max = 200), inner(regex(pattern = r"^B[0-9]{3}$")))]
    pub skip: Vec<String>,
    /// Report Bandit issues only at least this confident.
    #[serde(default)]
    pub min_confidence: MinConfidence,
    /// Scan every text file for committed secrets.
    #[serde(default = "yes")]
    pub scan_files: bool,
    /// Skip files larger than this many bytes in the secret scan.
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

/// Lowest Bandit confidence reported.
#[derive(Deserialize, JsonSchema, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MinConfidence {
    #[default]
    Low,
    Medium,
    High,
}

impl MinConfidence {
    fn admits(self, c: Confidence) -> bool {
        let min = match self {
            MinConfidence::Low => Confidence::Low,
            MinConfidence::Medium => Confidence::Medium,
            MinConfidence::High => Confidence::High,
        };
        c >= min
    }
}

fn yes() -> bool {
    true
}

/// The run summary.
#[derive(Serialize)]
pub struct Summary {
    /// Files Bandit could not parse.
    bandit_errors: usize,
    files_scanned: u64,
    findings: usize,
    /// What ran, what failed and why.
    analyses: Vec<Analysis>,
}

pub struct PythonSast;

impl Workflow for PythonSast {
    const NAME: &'static str = "python_sast";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Finds security issues in Python code with Bandit, and committed secrets.";
    const VERTICAL: &'static str = "python";
    const TOOLS: &'static [&'static str] = &["bandit"];
    const TAGS: &'static [&'static str] = &["security", "python", "sast", "secrets"];
    const TIMEOUT_SECS: u32 = 3600;

    type Params = Params;
    type Output = Summary;

    fn run(ctx: &Context, params: Params) -> Result<Summary> {
        let mut hits: Vec<Hit> = Vec::new();
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

        let mut bandit_errors = 0;
        if !params.bandit {
            analyses.push(Analysis::disabled("bandit"));
        } else {
            progress(&serde_json::json!({"phase": "bandit", "files_scanned": files_scanned}));
            match bandit(&params) {
                Ok(report) => {
                    for e in &report.errors {
                        toolhost_sdk::log::warn!("bandit could not scan {e}");
                    }
                    bandit_errors = report.errors.len();
                    hits.extend(
                        report
                            .hits
                            .into_iter()
                            .filter(|(_, c)| params.min_confidence.admits(*c))
                            .map(|(h, _)| h),
                    );
                    analyses.push(Analysis::ran("bandit"));
                }
                Err(why) => {
                    toolhost_sdk::log::warn!("bandit failed: {why}");
                    analyses.push(Analysis::failed(
                        "bandit",
                        format!(
                            "bandit did not produce its report: {why} (`toolhost doctor` checks the python vertical's tools)"
                        ),
                    ));
                }
            }
        }

        // What the secret scan found is reported even when Bandit failed.
        let reported = report_hits(hits, params.min_severity);
        Ok(Summary {
            bandit_errors,
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

/// Runs Bandit on `params.path` and parses its report. Bandit exits 1
/// when it found issues and 0 when it found none; anything else, or output
/// that is not its report, is a failure, with the reason.
fn bandit(params: &Params) -> std::result::Result<toolhost_scanners::BanditReport, String> {
    let dir = if params.path.is_empty() {
        ".".to_string()
    } else {
        params.path.clone()
    };
    let mut args = vec![
        "-r".to_string(),
        dir,
        "-f".into(),
        "json".into(),
        "-q".into(),
    ];
    if !params.skip.is_empty() {
        args.push("--skip".into());
        args.push(params.skip.join(","));
    }
    let out = tools::run("bandit")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    let stderr = || {
        out.stderr_str()
            .lines()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    };
    match toolhost_scanners::parse_bandit_json(&out.stdout_str()) {
        Ok(report) if matches!(out.exit_code, Some(0 | 1)) => Ok(report),
        Ok(_) => Err(format!("exit {:?}: {}", out.exit_code, stderr())),
        Err(why) => Err(format!("exit {:?}, {why}: {}", out.exit_code, stderr())),
    }
}

toolhost_sdk::export_workflow!(PythonSast);
