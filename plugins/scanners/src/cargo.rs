//! The dependency-fetch step the rust workflows share: the vertical's
//! `cargo-fetch` tool fills the cache that the offline build steps read.
//! Needs the `sdk` feature.

use toolhost_sdk::tools::{self, ToolError};
use toolhost_sdk::{Analysis, Result};

/// The tool every rust workflow declares for this step.
pub const FETCH_TOOL: &str = "cargo-fetch";

/// The analysis name of this step in run summaries.
pub const DEPENDENCIES: &str = "dependencies";

/// Fetches the dependencies of the crate at `crate_dir` (workspace-relative,
/// `""` = the root). `ran` when the cache now has everything; `failed` with
/// the reason otherwise: a dependency source the host refuses, a crate
/// missing on an offline host, a registry that could not be reached.
pub fn fetch_dependencies(crate_dir: &str) -> Result<Analysis> {
    toolhost_sdk::progress(&serde_json::json!({"phase": "fetching dependencies"}));
    let mut call = tools::run(FETCH_TOOL);
    let dir = crate_dir.trim_matches('/');
    if !dir.is_empty() && dir != "." {
        call = call.cwd(dir.to_string());
    }
    Ok(match call.output() {
        Ok(out) if out.success() => Analysis::ran(DEPENDENCIES),
        Ok(out) => {
            let stderr = out.stderr_str();
            let offline = stderr.contains("--offline") || stderr.contains("offline mode");
            let tail = crate::tail_lines(&stderr, 15);
            Analysis::failed(
                DEPENDENCIES,
                if offline {
                    format!(
                        "this host does not download dependencies (its `cargo-fetch` tool has no `egress`) and its cache lacks some of them:\n{tail}"
                    )
                } else {
                    format!(
                        "cargo fetch failed (exit {}):\n{tail}",
                        out.exit_code
                            .map_or("by a signal".into(), |c| c.to_string())
                    )
                },
            )
        }
        Err(ToolError::NotPermitted(why)) | Err(ToolError::Failed(why)) => {
            Analysis::failed(DEPENDENCIES, why)
        }
        Err(ToolError::NotFound(why)) => Analysis::failed(DEPENDENCIES, why),
        Err(e @ (ToolError::TimedOut | ToolError::Cancelled)) => return Err(e.into()),
    })
}

/// The analysis of a build step that did not run because the
/// dependencies could not be fetched.
pub fn not_built(name: &str) -> Analysis {
    Analysis::failed(
        name,
        format!("not run: the crate's dependencies could not be fetched (see `{DEPENDENCIES}`)"),
    )
}
