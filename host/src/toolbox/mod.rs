//! The toolbox: a directory of workflow components, and the registry of what
//! loaded from it. Loading hashes, compiles, links and validates every
//! `.wasm`; a broken file is rejected with its reason and never stops the
//! others from loading.

pub mod registry;
pub mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::HostConfig;
use crate::runtime::Runtime;

pub use registry::{LoadedWorkflow, Registry, Rejection};

/// Largest component file accepted.
pub const MAX_COMPONENT_BYTES: u64 = 256 << 20;

/// sha256 of `bytes`, lowercase hex.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The `.wasm` files of `dir`, sorted; hidden and temporary files are skipped
/// (a copy in progress should be written under a hidden or `.tmp` name and
/// renamed into place).
pub fn component_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".wasm") {
            continue;
        }
        if entry
            .file_type()
            .map(|t| t.is_file() || t.is_symlink())
            .unwrap_or(false)
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads every component in the configured toolbox. Rejections are part of
/// the result, not errors; only an unreadable toolbox directory is an error.
pub async fn load(runtime: &Arc<Runtime>, config: &HostConfig) -> anyhow::Result<Registry> {
    let dir = &config.toolbox;
    let files = component_files(dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the toolbox `{}`: {e}; create it or point `toolbox` (or --toolbox) at your plugins",
            dir.display()
        )
    })?;
    let mut tasks = Vec::new();
    for path in files {
        let runtime = runtime.clone();
        let config = config.clone();
        tasks.push(tokio::spawn(async move {
            let res = validate::load_component(&runtime, &config, &path).await;
            (path, res)
        }));
    }
    let mut registry = Registry::default();
    for task in tasks {
        let (path, res) = task.await?;
        match res {
            Ok(wf) => registry.insert(wf),
            Err(reason) => registry.reject(Rejection {
                path,
                reason: format!("{reason:#}"),
            }),
        }
    }
    Ok(registry)
}
