//! `rust_test`: runs `cargo test` on the target and reports each failing test
//! (and a build failure) as a finding, located at the panic site when the
//! test output gives one.

use toolhost_sdk::prelude::*;

/// Parameters of `rust_test`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Directory of the crate or workspace inside the target.
    #[serde(default)]
    pub path: String,
    /// Test only this package (`cargo test -p`).
    #[serde(default)]
    pub package: Option<String>,
    /// Test the whole workspace (`--workspace`).
    #[serde(default)]
    pub workspace: bool,
    /// Extra features to enable.
    #[serde(default)]
    pub features: Vec<String>,
    /// Build in release mode.
    #[serde(default)]
    pub release: bool,
    /// Time budget for `cargo test`, in seconds.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 10, max = 7200))]
    pub timeout_secs: u32,
}

fn default_timeout() -> u32 {
    900
}

/// The run summary.
#[derive(Serialize)]
pub struct Summary {
    exit_code: Option<i32>,
    passed: u64,
    failed: u64,
    ignored: u64,
    findings: usize,
    /// Whether the tests ran, and why not.
    analyses: Vec<Analysis>,
}

pub struct RustTest;

impl Workflow for RustTest {
    const NAME: &'static str = "rust_test";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Runs `cargo test` and reports each failing test, with its panic location.";
    const VERTICAL: &'static str = "rust";
    const TOOLS: &'static [&'static str] = &["cargo-fetch", "cargo"];
    const TAGS: &'static [&'static str] = &["testing", "rust"];
    const TIMEOUT_SECS: u32 = 7800;

    type Params = Params;
    type Output = Summary;

    fn run(_ctx: &Context, params: Params) -> Result<Summary> {
        let manifest = toolhost_scanners::join_path(&params.path, "Cargo.toml");
        if !workspace::exists(&manifest)? {
            bail!("no Cargo.toml at `{manifest}` in the target: point `path` at a Rust crate");
        }
        // Tools are offline: the crate's dependencies are fetched first.
        let deps = toolhost_scanners::cargo::fetch_dependencies(&params.path)?;
        if deps.is_failed() {
            return Ok(Summary {
                exit_code: None,
                passed: 0,
                failed: 0,
                ignored: 0,
                findings: 0,
                analyses: vec![deps, toolhost_scanners::cargo::not_built("tests")],
            });
        }
        let mut cmd = tools::run("cargo")
            .args(["test", "--no-fail-fast", "--color", "never"])
            .timeout(std::time::Duration::from_secs(params.timeout_secs.into()));
        if !params.path.is_empty() {
            cmd = cmd.cwd(params.path.clone());
        }
        if let Some(p) = &params.package {
            cmd = cmd.args(["-p", p]);
        }
        if params.workspace {
            cmd = cmd.arg("--workspace");
        }
        if !params.features.is_empty() {
            cmd = cmd.args(["--features".to_string(), params.features.join(",")]);
        }
        if params.release {
            cmd = cmd.arg("--release");
        }
        progress(&serde_json::json!({"phase": "cargo test"}));
        let out = cmd.output()?;
        let (stdout, stderr) = (out.stdout_str(), out.stderr_str());
        let hits = toolhost_scanners::parse_cargo_test(&stdout, &stderr);
        for hit in &hits {
            let mut f = hit.clone();
            // Locations are relative to the crate; make them relative to the target.
            f.path = f
                .path
                .map(|p| toolhost_scanners::join_path(&params.path, &p));
            report(f.to_finding());
        }
        let (passed, failed, ignored) = totals(&stdout);
        let ran_tests = stdout.lines().any(|l| l.starts_with("test result:"));
        let build_failed = hits.iter().find(|h| h.rule_id == "test/build-failed");
        let analysis = if ran_tests || out.success() {
            Analysis::ran("tests")
        } else if let Some(b) = build_failed {
            Analysis::failed(
                "tests",
                format!("the tests do not compile: {} (a finding)", b.title),
            )
        } else {
            Analysis::failed(
                "tests",
                format!(
                    "cargo test stopped before running any test (exit {}):\n{}",
                    out.exit_code
                        .map_or("by a signal".into(), |c| c.to_string()),
                    toolhost_scanners::tail_lines(&stderr, 20)
                ),
            )
        };
        if out.truncated {
            toolhost_sdk::log::warn!(
                "cargo test output was truncated; some failures may be missing"
            );
        }
        toolhost_sdk::log::info!(
            "cargo test exited with {:?}: {passed} passed, {failed} failed, {ignored} ignored",
            out.exit_code
        );
        Ok(Summary {
            exit_code: out.exit_code,
            passed,
            failed,
            ignored,
            findings: hits.len(),
            analyses: vec![deps, analysis],
        })
    }
}

/// Sums the `test result:` lines of every test binary.
fn totals(stdout: &str) -> (u64, u64, u64) {
    let mut t = (0, 0, 0);
    for line in stdout.lines().filter(|l| l.starts_with("test result:")) {
        for part in line.split([';', '.']) {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => t.0 += n,
                "failed" => t.1 += n,
                "ignored" => t.2 += n,
                _ => {}
            }
        }
    }
    t
}

toolhost_sdk::export_workflow!(RustTest);
