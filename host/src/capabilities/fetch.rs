//! The `cargo-fetch` tool kind: fills the vertical's cargo cache with the
//! dependencies of the crate at the call's `cwd`, so the offline steps that
//! follow (clippy, tests, fuzzing) can build it.
//!
//! The workflow passes no arguments; the host builds the command. Before
//! anything runs, the crate's manifests and lock file are checked
//! ([`super::cargo_sources`]): git, custom-registry and out-of-tree path
//! dependencies are refused unless the operator allowed them. Cargo then
//! runs outside the target (so the target's `.cargo/config.toml`, which
//! could name other registries, proxies or credential helpers, is not
//! read), executes nothing of the target (`cargo fetch` resolves and
//! downloads only), and reaches the network only through the egress proxy.
//! With an empty `egress` the host is offline: `--offline` makes cargo check
//! the cache and name what is missing.

use std::path::Path;

use crate::runtime::bindings::toolhost::workflow::tools::ToolError;
use crate::sandbox::policy::ResolvedTool;

/// The arguments after the tool's fixed ones, for fetching the crate at
/// `cwd_rel` (host path `cwd`).
pub fn cargo_fetch_args(
    run: &super::RunContext,
    tool: &str,
    resolved: &ResolvedTool,
    args: &[String],
    cwd_rel: &str,
    cwd: &Path,
) -> Result<Vec<String>, ToolError> {
    if !args.is_empty() {
        return Err(ToolError::NotPermitted(format!(
            "tool `{tool}` takes no arguments: it fetches the dependencies of the crate in its working directory (set `cwd` to the crate's directory)"
        )));
    }
    let refusals =
        super::cargo_sources::check(run.workspace.root(), cwd_rel, &resolved.config.sources)
            .map_err(|e| {
                ToolError::Failed(format!(
                    "tool `{tool}`: cannot read the crate's manifests: {e}"
                ))
            })?;
    if !refusals.is_empty() {
        return Err(ToolError::NotPermitted(super::cargo_sources::explain(
            &refusals,
        )));
    }
    let mut out = vec![
        "fetch".to_string(),
        "--manifest-path".into(),
        cwd.join("Cargo.toml").display().to_string(),
    ];
    if resolved.config.egress_hosts().is_empty() {
        out.push("--offline".into());
    }
    Ok(out)
}
