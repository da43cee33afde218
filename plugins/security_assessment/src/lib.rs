//! `security_assessment`: finds hard-coded secrets and dangerous patterns
//! (an activity scans every text file of the workspace) and turns
//! `cargo clippy` diagnostics into findings; results are deduplicated and
//! severities mapped consistently.

use toolhost_scanners::workspace::{MinSeverity, SCAN_ACTIVITY, report_hits, scan_files};
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
}

fn yes() -> bool {
    true
}

/// The run summary.
#[derive(Serialize)]
pub struct Summary {
    files_scanned: u64,
    clippy: &'static str,
    findings: usize,
}

pub struct SecurityAssessment;

impl Workflow for SecurityAssessment {
    const NAME: &'static str = "security_assessment";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Finds hard-coded secrets, risky Rust patterns and clippy diagnostics.";
    const VERTICAL: &'static str = "rust";
    const TOOLS: &'static [&'static str] = &["cargo-clippy"];
    const TAGS: &'static [&'static str] = &["security", "secrets", "rust", "sast"];
    const TIMEOUT_SECS: u32 = 3600;

    type Params = Params;
    type Output = Summary;

    fn run(ctx: &Context, params: Params) -> Result<Summary> {
        let mut hits = Vec::new();
        let mut files_scanned = 0;
        if params.scan_files {
            let out = scan_files(ctx, params.max_file_bytes)?;
            files_scanned = out.files_scanned;
            hits.extend(out.hits);
        }

        let manifest = toolhost_scanners::join_path(&params.path, "Cargo.toml");
        let clippy = if !params.clippy {
            "disabled"
        } else if !workspace::exists(&manifest)? {
            "skipped: no Cargo.toml"
        } else {
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
            let clippy_hits = toolhost_scanners::parse_clippy_json(&out.stdout_str());
            if !out.success() && clippy_hits.is_empty() {
                toolhost_sdk::log::warn!(
                    "cargo clippy failed (exit {:?}): {}",
                    out.exit_code,
                    out.stderr_str()
                        .lines()
                        .take(20)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            hits.extend(clippy_hits.into_iter().map(|mut h| {
                h.path = h
                    .path
                    .map(|p| toolhost_scanners::join_path(&params.path, &p));
                h
            }));
            if out.success() || out.exit_code == Some(101) {
                "ran"
            } else {
                "failed"
            }
        };

        let reported = report_hits(hits, params.min_severity);
        Ok(Summary {
            files_scanned,
            clippy,
            findings: reported,
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

toolhost_sdk::export_workflow!(SecurityAssessment);
