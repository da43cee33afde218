//! Uploaded targets: a directory archive (tar, tar.gz or tar.zst) streamed
//! to disk while it is hashed, refused past the size cap, then unpacked
//! with the hostile-archive rules of [`crate::storage::pack`] before it is
//! recorded. A target is addressed by the sha256 of the uploaded bytes and
//! lives under its tenant: another tenant cannot learn that it exists, not
//! even by uploading the same bytes. Memory stays bounded whatever the
//! upload's size; nothing is kept of an upload that fails.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::storage::pack::{UnpackCaps, UnpackError, is_sha256_hex, unpack_target};

/// What is known of a stored target.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TargetInfo {
    pub sha256: String,
    /// Bytes uploaded.
    pub bytes: u64,
    /// `tar`, `tar.gz` or `tar.zst`.
    pub format: String,
    /// Entries unpacked.
    pub files: u64,
    /// Bytes of file contents unpacked.
    pub unpacked_bytes: u64,
    pub uploaded_at: String,
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(
        "the upload is larger than this server's cap of {cap_mib} MiB ([serve] max_upload_mib); send a smaller target (leave out build output and dependencies)"
    )]
    TooLarge { cap_mib: u64 },
    #[error("the archive was refused, nothing was stored: {0}")]
    Unsafe(UnpackError),
    #[error("the upload was interrupted: {0}")]
    Interrupted(String),
    #[error("the upload is empty: send a tar, tar.gz or tar.zst of the target directory")]
    Empty,
    #[error(transparent)]
    Io(#[from] anyhow::Error),
}

/// The targets of all tenants: unpacked under one directory (embedded
/// engine), or checked there and then kept as archives in the blob store
/// under `tenants/<tenant>/targets/` (distributed engine), where hosts
/// fetch them.
pub struct TargetStore {
    root: PathBuf,
    caps: UnpackCaps,
    max_upload_bytes: u64,
    blobs: Option<std::sync::Arc<dyn crate::storage::BlobStore>>,
}

impl TargetStore {
    pub fn new(root: PathBuf, caps: UnpackCaps, max_upload_bytes: u64) -> Self {
        TargetStore {
            root,
            caps,
            max_upload_bytes,
            blobs: None,
        }
    }

    /// Targets kept in `blobs`; `root` only holds uploads being checked.
    pub fn in_blobs(self, blobs: std::sync::Arc<dyn crate::storage::BlobStore>) -> Self {
        TargetStore {
            blobs: Some(blobs),
            ..self
        }
    }

    fn owner_key(sha256: &str, tenant: &str) -> String {
        format!("api/target-owners/{sha256}/{tenant}")
    }

    /// The record of `tenant`'s target `sha256`, wherever it is kept.
    pub async fn find(&self, tenant: &str, sha256: &str) -> Option<TargetInfo> {
        let Some(blobs) = &self.blobs else {
            return self.info(tenant, sha256);
        };
        if !is_sha256_hex(sha256) || super::tokens::check_tenant(tenant).is_err() {
            return None;
        }
        let store = super::remote::tenant_store(blobs, tenant);
        let bytes = store.get(&format!("targets/{sha256}.json")).await.ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The tenants that have target `sha256`, wherever it is kept.
    pub async fn find_owners(&self, sha256: &str) -> Vec<String> {
        let Some(blobs) = &self.blobs else {
            return self.owners(sha256);
        };
        if !is_sha256_hex(sha256) {
            return Vec::new();
        }
        let prefix = format!("api/target-owners/{sha256}/");
        blobs
            .list(&prefix)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    fn dir(&self, tenant: &str, sha256: &str) -> PathBuf {
        self.root.join(tenant).join("targets").join(sha256)
    }

    /// The unpacked tree of `tenant`'s target `sha256`, if it has one.
    pub fn tree(&self, tenant: &str, sha256: &str) -> Option<PathBuf> {
        self.info(tenant, sha256)
            .map(|_| self.dir(tenant, sha256).join("tree"))
    }

    /// The record of `tenant`'s target `sha256`, if it exists.
    pub fn info(&self, tenant: &str, sha256: &str) -> Option<TargetInfo> {
        if !is_sha256_hex(sha256) {
            return None;
        }
        let text = std::fs::read_to_string(self.dir(tenant, sha256).join("target.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The tenants that have target `sha256` (for admins, who see all).
    pub fn owners(&self, sha256: &str) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(&self.root)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|t| self.info(t, sha256).is_some())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Stores an upload for `tenant`; returns its record and whether it was
    /// already there.
    pub async fn upload<S, E>(
        &self,
        tenant: &str,
        mut body: S,
        allowance: u64,
        on_bytes: impl Fn(u64),
    ) -> Result<(TargetInfo, bool), UploadError>
    where
        S: futures::Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let uploads = self.root.join(tenant).join("uploads");
        tokio::fs::create_dir_all(&uploads)
            .await
            .with_context(|| format!("cannot create `{}`", uploads.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(&uploads)
            .with_context(|| format!("cannot create a file in `{}`", uploads.display()))?;
        let (file, tmp_path) = tmp.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        let mut head = Vec::with_capacity(8);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| UploadError::Interrupted(e.to_string()))?;
            bytes += chunk.len() as u64;
            on_bytes(chunk.len() as u64);
            if bytes > self.max_upload_bytes.min(allowance) {
                return Err(UploadError::TooLarge {
                    cap_mib: self.max_upload_bytes >> 20,
                });
            }
            if head.len() < 8 {
                head.extend(chunk.iter().take(8 - head.len()));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .context("cannot write the upload")?;
        }
        if bytes == 0 {
            return Err(UploadError::Empty);
        }
        file.sync_all().await.context("cannot write the upload")?;
        drop(file);
        let sha256 = hex::encode(hasher.finalize());
        if let Some(info) = self.find(tenant, &sha256).await {
            return Ok((info, true));
        }
        let dir = self.dir(tenant, &sha256);
        let caps = self.caps;
        let archive = tmp_path.to_path_buf();
        let format = crate::storage::pack::ArchiveFormat::sniff(&head).name();
        let sha = sha256.clone();
        let info = tokio::task::spawn_blocking(move || -> Result<TargetInfo, UploadError> {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
            let tree = dir.join("tree");
            if tree.exists() {
                // A half-finished earlier upload of the same bytes.
                std::fs::remove_dir_all(&tree)
                    .with_context(|| format!("cannot clear `{}`", tree.display()))?;
            }
            let unpacked = match unpack_target(&archive, &tree, caps) {
                Ok(u) => u,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(UploadError::Unsafe(e));
                }
            };
            let info = TargetInfo {
                sha256: sha,
                bytes,
                format: format.into(),
                files: unpacked.files,
                unpacked_bytes: unpacked.bytes,
                uploaded_at: crate::util::now_rfc3339(),
            };
            write_json(&dir.join("target.json"), &info)?;
            Ok(info)
        })
        .await
        .context("the unpacking task failed")??;
        if let Some(blobs) = &self.blobs {
            // Checked: keep the archive as uploaded (hosts unpack it with
            // the same rules), then the record, then the owner index.
            let store = super::remote::tenant_store(blobs, tenant);
            let key = crate::storage::pack::target_key(&sha256);
            store
                .put_file(&key, &tmp_path, None)
                .await
                .with_context(|| format!("cannot store the target in {}", store.describe()))?;
            store
                .put(
                    &format!("targets/{sha256}.json"),
                    serde_json::to_vec(&info).context("cannot encode the target record")?,
                )
                .await
                .with_context(|| format!("cannot store the target in {}", store.describe()))?;
            blobs
                .put(&Self::owner_key(&sha256, tenant), Vec::new())
                .await
                .with_context(|| format!("cannot store the target in {}", blobs.describe()))?;
            let dir = self.dir(tenant, &sha256);
            let _ = tokio::fs::remove_dir_all(&dir).await;
        }
        drop(tmp_path);
        Ok((info, false))
    }
}

/// Writes `value` to `path` atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in `{}`", dir.display()))?;
    serde_json::to_writer(&mut tmp, value)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    Ok(())
}
