//! Components by digest, for runs pinned to a version: from this host's
//! toolbox when it has that version, else from the blob store
//! (`components/<sha256>.wasm`), where every host publishes what it loads.
//! The host also publishes each workflow's metadata at
//! `registry/<name>.json`, which `toolhost submit` reads to find the
//! vertical and validate parameters before starting a run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::storage::{BlobStore, StoreError};
use crate::toolbox::{LoadedWorkflow, Toolbox, ToolboxEvent};

/// A workflow as published in the blob store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishedWorkflow {
    pub name: String,
    pub version: String,
    pub vertical: String,
    pub digest: String,
    pub description: String,
    pub parameters_schema: serde_json::Value,
    pub timeout_secs: u32,
    pub tools: Vec<String>,
    /// The Temporal task queue its runs are started on.
    pub task_queue: String,
    pub published_at: String,
    pub host: String,
}

/// Key of a component.
pub fn component_key(digest: &str) -> String {
    format!("components/{digest}.wasm")
}

/// Key of a workflow's published metadata.
pub fn registry_key(name: &str) -> String {
    format!("registry/{name}.json")
}

/// A component that can never load on this host: not a digest, a corrupt
/// copy, or rejected by this host's validation (another vertical, tools
/// its vertical lacks). Retrying cannot help, unlike a blob store outage.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct Unloadable(pub anyhow::Error);

/// Resolves and publishes components.
pub struct Components {
    toolbox: Arc<Toolbox>,
    blobs: Arc<dyn BlobStore>,
    fetched: Mutex<HashMap<String, Arc<LoadedWorkflow>>>,
    fetch_lock: tokio::sync::Mutex<()>,
    dir: PathBuf,
    host: String,
    task_queue: String,
}

impl Components {
    /// Resolves over `toolbox` and `blobs`; fetched components are kept in
    /// `<data_dir>/components`; workflows are published with `task_queue`
    /// as the queue their runs start on.
    pub fn new(
        toolbox: Arc<Toolbox>,
        blobs: Arc<dyn BlobStore>,
        host: &str,
        task_queue: String,
    ) -> Arc<Self> {
        let dir = toolbox.config().data_dir.join("components");
        Arc::new(Components {
            toolbox,
            blobs,
            fetched: Mutex::new(HashMap::new()),
            fetch_lock: tokio::sync::Mutex::new(()),
            dir,
            host: host.to_string(),
            task_queue,
        })
    }

    /// The toolbox.
    pub fn toolbox(&self) -> &Arc<Toolbox> {
        &self.toolbox
    }

    /// The blob store.
    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    /// The component with `digest`.
    pub async fn get(&self, digest: &str) -> anyhow::Result<Arc<LoadedWorkflow>> {
        if let Some(wf) = self.toolbox.registry().by_digest(digest) {
            return Ok(wf);
        }
        if let Some(wf) = self.cached(digest) {
            return Ok(wf);
        }
        let _one_at_a_time = self.fetch_lock.lock().await;
        if let Some(wf) = self.cached(digest) {
            return Ok(wf);
        }
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Unloadable(anyhow::anyhow!("`{digest}` is not a sha256 digest")).into());
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create `{}`", self.dir.display()))?;
        let path = self.dir.join(format!("{digest}.wasm"));
        let bytes = match self.blobs.get(&component_key(digest)).await {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => bail!(
                "component {digest} is in no toolbox here and was never published to the blob store ({}); a host that has it must publish it",
                self.blobs.describe()
            ),
            Err(e) => return Err(e.into()),
        };
        if crate::toolbox::digest(&bytes) != digest {
            return Err(Unloadable(anyhow::anyhow!(
                "the blob store's copy of component {digest} is corrupt (its sha256 differs)"
            ))
            .into());
        }
        std::fs::write(&path, &bytes)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
        let wf = crate::toolbox::validate::load_component(
            self.toolbox.runtime(),
            self.toolbox.config(),
            &path,
        )
        .await
        .map_err(|e| {
            Unloadable(e.context(format!(
                "component {digest} from the blob store does not load on this host"
            )))
        })?;
        let wf = Arc::new(wf);
        self.fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.to_string(), wf.clone());
        tracing::info!(workflow = %wf.info.name, version = %wf.info.version, digest, "pinned version fetched from the blob store");
        Ok(wf)
    }

    fn cached(&self, digest: &str) -> Option<Arc<LoadedWorkflow>> {
        self.fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .cloned()
    }

    /// Publishes `wf`'s component (once) and its metadata. A host's
    /// toolbox only loads workflows of the vertical it serves.
    pub async fn publish(&self, wf: &LoadedWorkflow) -> anyhow::Result<()> {
        let key = component_key(&wf.digest);
        if !self.blobs.exists(&key).await? {
            let bytes = tokio::fs::read(&wf.path)
                .await
                .with_context(|| format!("cannot read `{}`", wf.path.display()))?;
            if crate::toolbox::digest(&bytes) != wf.digest {
                bail!(
                    "`{}` changed since it was loaded; it will be published when reloaded",
                    wf.path.display()
                );
            }
            self.blobs.put(&key, bytes).await?;
        }
        let meta = PublishedWorkflow {
            name: wf.info.name.clone(),
            version: wf.info.version.clone(),
            vertical: wf.info.vertical.clone(),
            digest: wf.digest.clone(),
            description: wf.info.description.clone(),
            parameters_schema: wf.info.parameters_schema.clone(),
            timeout_secs: wf.info.timeout_secs,
            tools: wf.info.tools.clone(),
            task_queue: self.task_queue.clone(),
            published_at: crate::util::now_rfc3339(),
            host: self.host.clone(),
        };
        self.blobs
            .put(
                &registry_key(&wf.info.name),
                serde_json::to_vec_pretty(&meta)?,
            )
            .await?;
        Ok(())
    }

    /// Publishes everything in the toolbox now, then every version the
    /// toolbox loads from now on (until the returned task is aborted).
    pub fn publish_continuously(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let mut events = self.toolbox.subscribe();
        let this = self.clone();
        tokio::spawn(async move {
            let current: Vec<_> = this.toolbox.registry().workflows().cloned().collect();
            for wf in current {
                this.publish_logged(&wf).await;
            }
            loop {
                match events.recv().await {
                    Ok(ToolboxEvent::Loaded { digest, .. }) => {
                        if let Some(wf) = this.toolbox.registry().by_digest(&digest) {
                            this.publish_logged(&wf).await;
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let current: Vec<_> =
                            this.toolbox.registry().workflows().cloned().collect();
                        for wf in current {
                            this.publish_logged(&wf).await;
                        }
                    }
                    Err(_) => break,
                }
            }
        })
    }

    async fn publish_logged(&self, wf: &LoadedWorkflow) {
        // The blob store may be down: keep trying, backing off to 30 s.
        for attempt in 0u32.. {
            match self.publish(wf).await {
                Ok(()) => {
                    tracing::info!(workflow = %wf.info.name, digest = %wf.digest, "published to the blob store");
                    return;
                }
                Err(e) => {
                    tracing::warn!(workflow = %wf.info.name, "cannot publish to the blob store (attempt {}): {e:#}", attempt + 1);
                    tokio::time::sleep(std::time::Duration::from_secs(1 << attempt.min(5))).await;
                }
            }
        }
    }
}

/// Reads a workflow's published metadata.
pub async fn published(blobs: &dyn BlobStore, name: &str) -> anyhow::Result<PublishedWorkflow> {
    crate::engine::check_run_id(name).map_err(anyhow::Error::msg)?;
    let bytes = match blobs.get(&registry_key(name)).await {
        Ok(b) => b,
        Err(StoreError::NotFound(_)) => {
            let known = list_published(blobs).await.unwrap_or_default();
            bail!(
                "no host has published a workflow named `{name}` to {}; published: {}",
                blobs.describe(),
                if known.is_empty() {
                    "(none: start a host with this workflow in its toolbox)".to_string()
                } else {
                    known.join(", ")
                }
            )
        }
        Err(e) => return Err(e.into()),
    };
    serde_json::from_slice(&bytes).with_context(|| format!("`{}` is corrupt", registry_key(name)))
}

/// Names of all published workflows.
pub async fn list_published(blobs: &dyn BlobStore) -> anyhow::Result<Vec<String>> {
    Ok(blobs
        .list("registry/")
        .await?
        .into_iter()
        .filter_map(|k| {
            k.strip_prefix("registry/")
                .and_then(|n| n.strip_suffix(".json"))
                .map(str::to_string)
        })
        .collect())
}
