//! Loading one component: read, hash, compile, link, call `describe` in a
//! bounded sandbox, and check the metadata against this host's config.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use super::registry::LoadedWorkflow;
use crate::capabilities::{RunContext, RunJournal, StopReason, StopSignal, Workspace};
use crate::config::HostConfig;
use crate::manifest::{WorkflowInfo, check_name};
use crate::runtime::clocks::WorkflowClock;
use crate::runtime::state::{CodeKind, new_store};
use crate::runtime::{GuestState, Runtime, WorkflowPre};
use crate::sandbox::policy::ToolGrant;

/// How long `describe` may take.
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Loads and validates the component at `path`.
pub async fn load_component(
    runtime: &Arc<Runtime>,
    config: &HostConfig,
    path: &Path,
) -> Result<LoadedWorkflow> {
    let meta = std::fs::metadata(path).context("cannot read the file")?;
    if meta.len() > super::MAX_COMPONENT_BYTES {
        bail!(
            "the file is {} MiB; components are limited to {} MiB",
            meta.len() >> 20,
            super::MAX_COMPONENT_BYTES >> 20
        );
    }
    let bytes = std::fs::read(path).context("cannot read the file")?;
    // A file still being written (a plain `cp`) changes under us: refuse it
    // now; the watcher sees the write finish and loads it then.
    let after = std::fs::metadata(path).context("cannot read the file")?;
    if after.len() != bytes.len() as u64 || after.modified().ok() != meta.modified().ok() {
        bail!(
            "the file changed while it was read (still being written?); it will be loaded once complete"
        );
    }
    let digest = super::digest(&bytes);
    let rt = runtime.clone();
    let d = digest.clone();
    let (component, cache) = tokio::task::spawn_blocking(move || rt.load(&d, &bytes)).await??;
    tracing::debug!(path = %path.display(), ?cache, "component compiled");
    let pre = runtime.prepare(&component)?;
    let info = describe(runtime, &pre, config).await?;
    let params = check_info(&info, config)?;
    Ok(LoadedWorkflow {
        info,
        digest,
        path: path.to_path_buf(),
        size: meta.len(),
        modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
        pre,
        params: Arc::new(params),
    })
}

/// Calls `describe` in a throwaway store with no capabilities.
pub async fn describe(
    runtime: &Arc<Runtime>,
    pre: &WorkflowPre<GuestState>,
    config: &HostConfig,
) -> Result<WorkflowInfo> {
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let journal = Arc::new(RunJournal::create(
        &scratch.path().join("describe.log"),
        1,
        0,
        None,
    )?);
    let ctx = Arc::new(RunContext {
        run_id: "describe".into(),
        info: WorkflowInfo {
            name: String::new(),
            version: String::new(),
            description: String::new(),
            vertical: String::new(),
            parameters_schema: serde_json::Value::Null,
            tools: vec![],
            tags: vec![],
            timeout_secs: 0,
        },
        digest: String::new(),
        runtime: runtime.clone(),
        pre: pre.clone(),
        tools: ToolGrant::default(),
        sandbox: Arc::new(crate::sandbox::detect::Sandbox::unavailable()),
        workspace: Workspace::open(
            scratch.path(),
            &crate::runtime::limits::GuestLimits {
                write_quota_mib: 0,
                max_read_mib: 0,
                ..Default::default()
            },
        )?,
        tool_home: scratch.path().join("home"),
        artifacts_dir: scratch.path().join("artifacts"),
        journal: journal.clone(),
        stop: StopSignal::new(),
        limits: config.limits.clone(),
        clock: WorkflowClock::new("describe", 0),
        steps: None,
        artifact_blobs: None,
    });
    let mut store = new_store(ctx.clone(), CodeKind::Describe)?;
    let call = async {
        let instance = pre.instantiate_async(&mut store).await?;
        instance.call_describe(&mut store).await
    };
    let timer = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(DESCRIBE_TIMEOUT).await;
            ctx.stop.stop(StopReason::DeadlineExceeded {
                timeout_secs: DESCRIBE_TIMEOUT.as_secs(),
            });
        })
    };
    let result = call.await;
    timer.abort();
    let raw = match result {
        Ok(raw) => raw,
        Err(e) => {
            let why = store
                .data()
                .limiter
                .exceeded
                .clone()
                .or_else(|| ctx.stop.reason().map(|r| r.message()))
                .unwrap_or_else(|| format!("{e:#}"));
            let tail = journal.stderr_tail().join("\n");
            if tail.is_empty() {
                bail!("`describe` trapped: {why}");
            }
            bail!("`describe` trapped: {why}\nguest stderr:\n{tail}");
        }
    };
    let schema: serde_json::Value = serde_json::from_str(&raw.parameters_schema).map_err(|e| {
        anyhow::anyhow!("`describe` returned a parameters schema that is not JSON: {e}")
    })?;
    Ok(WorkflowInfo {
        name: raw.name,
        version: raw.version,
        description: raw.description,
        vertical: raw.vertical,
        parameters_schema: schema,
        tools: raw.tools,
        tags: raw.tags,
        timeout_secs: raw.timeout_secs,
    })
}

/// Checks metadata against the host config; returns the compiled schema.
pub fn check_info(info: &WorkflowInfo, config: &HostConfig) -> Result<jsonschema::Validator> {
    check_name("workflow", &info.name).map_err(anyhow::Error::msg)?;
    if !is_version(&info.version) {
        bail!(
            "workflow `{}` has version `{}`; use a semantic version like 1.2.3",
            info.name,
            info.version.escape_debug()
        );
    }
    if info.description.len() > 4096 {
        bail!("workflow `{}` has a description over 4096 bytes", info.name);
    }
    let Some(vertical) = config.verticals.get(&info.vertical) else {
        bail!(
            "workflow `{}` is for vertical `{}`, which this host does not offer; configured verticals: {}",
            info.name,
            info.vertical.escape_debug(),
            config.vertical_names()
        );
    };
    if let Some(served) = &config.host.vertical
        && *served != info.vertical
    {
        bail!(
            "workflow `{}` is for vertical `{}`, but this host serves vertical `{served}`",
            info.name,
            info.vertical
        );
    }
    let missing: Vec<&str> = info
        .tools
        .iter()
        .filter(|t| !vertical.tools.contains_key(*t))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        bail!(
            "workflow `{}` needs tools that vertical `{}` does not offer: {}; offered: {}",
            info.name,
            info.vertical,
            missing.join(", "),
            vertical
                .tools
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for tag in &info.tags {
        if tag.is_empty() || tag.len() > 64 {
            bail!("workflow `{}` has an empty or over-long tag", info.name);
        }
    }
    if info.timeout_secs == 0 {
        bail!(
            "workflow `{}` declares a timeout of 0 s; declare the longest a run may take",
            info.name
        );
    }
    compile_schema(&info.parameters_schema)
        .with_context(|| format!("workflow `{}` has an invalid parameters schema", info.name))
}

/// Validates `schema` against its meta-schema and compiles it (no remote refs).
pub fn compile_schema(schema: &serde_json::Value) -> Result<jsonschema::Validator> {
    if !schema.is_object() && !schema.is_boolean() {
        bail!("a JSON Schema must be an object or a boolean");
    }
    if let Err(e) = jsonschema::meta::validate(schema) {
        bail!("{e}");
    }
    jsonschema::validator_for(schema).map_err(|e| anyhow::anyhow!("{e}"))
}

fn is_version(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        && v.len() <= 64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(is_version("0.1.0"));
        assert!(is_version("1.2.3-beta.1"));
        assert!(!is_version("1.2"));
        assert!(!is_version("v1.2.3"));
    }

    #[test]
    fn schemas_are_checked() {
        assert!(compile_schema(&serde_json::json!({"type": "object"})).is_ok());
        assert!(compile_schema(&serde_json::json!({"type": "nonsense"})).is_err());
        assert!(compile_schema(&serde_json::json!(42)).is_err());
    }
}
