//! The toolbox: a directory of workflow components, and the registry of what
//! loaded from it. Loading hashes, compiles (or fetches from the compile
//! cache), links and validates every `.wasm`; a broken file is rejected with
//! its reason and never stops the others, nor replaces a good version. With
//! [`Toolbox::watch`] changes are picked up while the host runs.

pub mod registry;
pub mod validate;
pub mod watch;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::config::HostConfig;
use crate::runtime::Runtime;

pub use registry::{LoadedWorkflow, Registry, Rejection};

/// Largest component file accepted.
pub const MAX_COMPONENT_BYTES: u64 = 256 << 20;

/// sha256 of `bytes`, lowercase hex.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// True for names the toolbox loads: `*.wasm`, not hidden. Write a file under
/// a hidden or other name and rename it into place to publish it atomically.
pub fn is_component_name(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(".wasm")
}

/// The component files of `dir`, sorted.
pub fn component_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_component_name(&name) {
            continue;
        }
        if entry
            .file_type()
            .map(|t| t.is_file() || t.is_symlink())
            .unwrap_or(false)
        {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// A change of the registry, for logs and `toolhost workflows --watch`.
#[derive(Debug, Clone)]
pub enum ToolboxEvent {
    /// A file loaded; `replaced` is the digest this file provided before.
    Loaded {
        name: String,
        version: String,
        digest: String,
        path: PathBuf,
        replaced: Option<String>,
    },
    /// A file was rejected; `kept` is the version that stays in service.
    Rejected {
        path: PathBuf,
        reason: String,
        kept: Option<(String, String)>,
    },
    /// A file disappeared and stopped providing `name`.
    Removed {
        name: String,
        version: String,
        digest: String,
        path: PathBuf,
    },
}

impl fmt::Display for ToolboxEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolboxEvent::Loaded {
                name,
                version,
                digest,
                path,
                replaced,
            } => {
                write!(
                    f,
                    "loaded {name} {version} (sha256 {}) from {}",
                    short(digest),
                    path.display()
                )?;
                if let Some(old) = replaced {
                    write!(f, ", replacing sha256 {}", short(old))?;
                }
                Ok(())
            }
            ToolboxEvent::Rejected { path, reason, kept } => {
                write!(f, "rejected {}: {reason}", path.display())?;
                if let Some((name, digest)) = kept {
                    write!(f, " (still serving {name} sha256 {})", short(digest))?;
                }
                Ok(())
            }
            ToolboxEvent::Removed {
                name,
                version,
                digest,
                path,
            } => write!(
                f,
                "removed {name} {version} (sha256 {}): {} is gone",
                short(digest),
                path.display()
            ),
        }
    }
}

impl ToolboxEvent {
    /// The event as one JSON object (`toolhost workflows --watch --json`).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            ToolboxEvent::Loaded {
                name,
                version,
                digest,
                path,
                replaced,
            } => json!({
                "event": "loaded", "name": name, "version": version, "digest": digest,
                "path": path.display().to_string(), "replaced": replaced}),
            ToolboxEvent::Rejected { path, reason, kept } => json!({
                "event": "rejected", "path": path.display().to_string(), "reason": reason,
                "kept": kept.as_ref().map(|(n, d)| json!({"name": n, "digest": d}))}),
            ToolboxEvent::Removed {
                name,
                version,
                digest,
                path,
            } => json!({
                "event": "removed", "name": name, "version": version, "digest": digest,
                "path": path.display().to_string()}),
        }
    }
}

impl Registry {
    /// The current state as events: one `Loaded` per current workflow and
    /// one `Rejected` per rejected file (what a fresh watcher has seen).
    pub fn as_events(&self) -> Vec<ToolboxEvent> {
        let loaded = self.workflows().map(|w| ToolboxEvent::Loaded {
            name: w.info.name.clone(),
            version: w.info.version.clone(),
            digest: w.digest.clone(),
            path: w.path.clone(),
            replaced: None,
        });
        let rejected = self.rejections().map(|r| ToolboxEvent::Rejected {
            path: r.path.clone(),
            reason: r.reason.clone(),
            kept: None,
        });
        loaded.chain(rejected).collect()
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

/// The live toolbox of a host: the current registry snapshot and the
/// machinery to update it.
pub struct Toolbox {
    runtime: Arc<Runtime>,
    config: HostConfig,
    current: RwLock<Arc<Registry>>,
    events: broadcast::Sender<ToolboxEvent>,
    /// Serialises updates so two reloads never interleave.
    update: tokio::sync::Mutex<()>,
}

impl Toolbox {
    /// Loads every component in the configured toolbox directory. Rejected
    /// files are part of the registry; only an unreadable directory is an error.
    pub async fn open(runtime: Arc<Runtime>, config: HostConfig) -> anyhow::Result<Arc<Self>> {
        let files = component_files(&config.toolbox).map_err(|e| {
            anyhow::anyhow!(
                "cannot read the toolbox `{}`: {e}; create it or point `toolbox` (or --toolbox) at your plugins",
                config.toolbox.display()
            )
        })?;
        let (events, _) = broadcast::channel(1024);
        let toolbox = Arc::new(Toolbox {
            runtime,
            config,
            current: RwLock::new(Arc::new(Registry::default())),
            events,
            update: tokio::sync::Mutex::new(()),
        });
        let mut tasks = Vec::new();
        for path in files {
            let runtime = toolbox.runtime.clone();
            let config = toolbox.config.clone();
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
        *toolbox.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(registry);
        Ok(toolbox)
    }

    /// The current registry snapshot.
    pub fn registry(&self) -> Arc<Registry> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current version of `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedWorkflow>> {
        self.registry().get(name)
    }

    /// The host config the toolbox validates against.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// The runtime components are compiled for.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Subscribes to registry changes.
    pub fn subscribe(&self) -> broadcast::Receiver<ToolboxEvent> {
        self.events.subscribe()
    }

    fn publish(&self, event: ToolboxEvent) {
        match &event {
            ToolboxEvent::Rejected { .. } => tracing::warn!("toolbox: {event}"),
            _ => tracing::info!("toolbox: {event}"),
        }
        let _ = self.events.send(event);
    }

    fn swap(&self, f: impl FnOnce(&mut Registry)) {
        let mut guard = self.current.write().unwrap_or_else(|p| p.into_inner());
        let mut next = Registry::clone(&guard);
        f(&mut next);
        *guard = Arc::new(next);
    }

    /// Re-examines one path of the toolbox after a change: loads it, rejects
    /// it (keeping what it provided), or removes what it provided.
    pub async fn reload_path(&self, path: &Path) {
        let _serial = self.update.lock().await;
        let path = path.to_path_buf();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let previous = self.registry().by_path(&path);
        if !is_component_name(&name) || !path.exists() {
            if let Some(prev) = previous {
                self.swap(|r| {
                    r.remove(&path);
                });
                self.publish(ToolboxEvent::Removed {
                    name: prev.info.name.clone(),
                    version: prev.info.version.clone(),
                    digest: prev.digest.clone(),
                    path,
                });
            } else {
                self.swap(|r| {
                    r.remove(&path);
                });
            }
            return;
        }
        // Unchanged content (a touch, or a good file restored after a bad
        // write): the version stands; forget any rejection of this path.
        if let (Some(prev), Ok(bytes)) = (&previous, std::fs::read(&path))
            && digest(&bytes) == prev.digest
        {
            self.swap(|r| r.clear_rejection(&path));
            return;
        }
        match validate::load_component(&self.runtime, &self.config, &path).await {
            Ok(wf) => {
                let event = ToolboxEvent::Loaded {
                    name: wf.info.name.clone(),
                    version: wf.info.version.clone(),
                    digest: wf.digest.clone(),
                    path: path.clone(),
                    replaced: previous.map(|p| p.digest.clone()),
                };
                self.swap(|r| r.insert(wf));
                self.publish(event);
            }
            Err(reason) => {
                let reason = format!("{reason:#}");
                self.swap(|r| {
                    r.reject(Rejection {
                        path: path.clone(),
                        reason: reason.clone(),
                    })
                });
                self.publish(ToolboxEvent::Rejected {
                    path,
                    reason,
                    kept: previous.map(|p| (p.info.name.clone(), p.digest.clone())),
                });
            }
        }
    }

    /// Rescans the whole directory (after a watcher overflow, for instance).
    pub async fn rescan(&self) {
        let mut paths: Vec<PathBuf> = component_files(&self.config.toolbox).unwrap_or_default();
        let known: Vec<PathBuf> = {
            let r = self.registry();
            r.versions()
                .map(|w| w.path.clone())
                .chain(r.rejections().map(|x| x.path.clone()))
                .collect()
        };
        for p in known {
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
        for p in paths {
            self.reload_path(&p).await;
        }
    }
}

/// Loads the configured toolbox once (no watching).
pub async fn load(runtime: &Arc<Runtime>, config: &HostConfig) -> anyhow::Result<Arc<Toolbox>> {
    Toolbox::open(runtime.clone(), config.clone()).await
}
