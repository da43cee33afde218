//! [`BlobStore`] on a local directory; writes go to a temp file that is
//! fsynced and renamed into place so readers never see half a blob.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{BlobStore, Progress, StoreError, check_key};

/// Copy buffer for streamed transfers.
const CHUNK: usize = 1 << 20;

/// Blobs as files under a root directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore { root: root.into() }
    }

    /// The file backing `key`.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn io(key: &str) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            StoreError::NotFound(key.to_string())
        } else {
            StoreError::Io {
                key: key.to_string(),
                source,
            }
        }
    }
}

/// An I/O error that is never reported as `NotFound` (for the destination
/// side of a copy, where a missing directory is not a missing blob).
fn io_other(key: &str) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        key: key.to_string(),
        source,
    }
}

fn join_error(key: &str, e: tokio::task::JoinError) -> StoreError {
    StoreError::Io {
        key: key.to_string(),
        source: std::io::Error::other(e),
    }
}

/// Creates a temp file in `dest`'s directory (creating the directory).
async fn temp_beside(dest: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        tempfile::NamedTempFile::new_in(&dir)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Streams `src` into a temp file beside `dest`, fsyncs it and renames it
/// over `dest`. With `src_missing_is_not_found`, a missing `src` reads as a
/// missing blob; every other failure is an I/O error.
async fn copy_atomically(
    key: &str,
    src: &Path,
    dest: &Path,
    progress: Progress<'_>,
    src_missing_is_not_found: bool,
) -> Result<u64, StoreError> {
    let map_src = |e: std::io::Error| {
        if src_missing_is_not_found {
            io(key)(e)
        } else {
            io_other(key)(e)
        }
    };
    let mut input = tokio::fs::File::open(src).await.map_err(map_src)?;
    let tmp = temp_beside(dest).await.map_err(io_other(key))?;
    let mut output = tokio::fs::File::from_std(tmp.as_file().try_clone().map_err(io_other(key))?);
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        let n = input.read(&mut buf).await.map_err(io_other(key))?;
        if n == 0 {
            break;
        }
        output.write_all(&buf[..n]).await.map_err(io_other(key))?;
        done += n as u64;
        if let Some(report) = progress {
            report(done);
        }
    }
    output.flush().await.map_err(io_other(key))?;
    output.sync_all().await.map_err(io_other(key))?;
    drop(output);
    let dest = dest.to_path_buf();
    tokio::task::spawn_blocking(move || tmp.persist(dest).map_err(|e| e.error))
        .await
        .map_err(|e| join_error(key, e))?
        .map_err(io_other(key))?;
    Ok(done)
}

#[async_trait]
impl BlobStore for LocalStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        let root = self.root.clone();
        let owned_key = key.to_string();
        tokio::task::spawn_blocking(move || {
            let key = owned_key.as_str();
            let dir = path.parent().unwrap_or(&root);
            std::fs::create_dir_all(dir).map_err(io_other(key))?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_other(key))?;
            tmp.write_all(&bytes).map_err(io_other(key))?;
            tmp.as_file().sync_all().map_err(io_other(key))?;
            tmp.persist(&path).map_err(|e| io_other(key)(e.error))?;
            Ok(())
        })
        .await
        .map_err(|e| join_error(key, e))?
    }

    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        progress: Progress<'_>,
    ) -> Result<(), StoreError> {
        let dest = self.path_of(key)?;
        copy_atomically(key, path, &dest, progress, false).await?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        tokio::fs::read(self.path_of(key)?).await.map_err(io(key))
    }

    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        let src = self.path_of(key)?;
        copy_atomically(key, &src, path, None, true).await
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let path = self.path_of(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) => Ok(meta.is_file()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_other(key)(e)),
        }
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let path = self.path_of(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_other(key)(e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let root = self.root.clone();
        let owned_prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || list_blocking(&root, &owned_prefix))
            .await
            .map_err(|e| join_error(prefix, e))?
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.path_of(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_other(key)(e)),
        }
    }

    fn describe(&self) -> String {
        format!("local {}", self.root.display())
    }
}

fn list_blocking(root: &Path, prefix: &str) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    if !root.exists() {
        return Ok(out);
    }
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.map_err(|e| StoreError::Io {
            key: prefix.to_string(),
            source: e.into(),
        })?;
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        let key = rel.to_string_lossy().replace('\\', "/");
        // Temp files from interrupted writes are not blobs.
        if key
            .rsplit('/')
            .next()
            .is_some_and(|name| name.starts_with(".tmp"))
        {
            continue;
        }
        if key.starts_with(prefix) {
            out.push(key);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test]
    async fn put_get_list_and_reject_bad_keys() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::new(d.path());
        s.put("runs/a/result.json", b"{}".to_vec()).await.unwrap();
        s.put("runs/b/log.jsonl", b"x".to_vec()).await.unwrap();
        assert_eq!(s.get("runs/a/result.json").await.unwrap(), b"{}");
        assert!(s.exists("runs/b/log.jsonl").await.unwrap());
        assert!(!s.exists("runs/b/nope").await.unwrap());
        assert_eq!(
            s.list("runs/").await.unwrap(),
            ["runs/a/result.json", "runs/b/log.jsonl"]
        );
        assert!(matches!(
            s.get("runs/c").await,
            Err(StoreError::NotFound(_))
        ));
        for bad in ["", "/abs", "a/../b", "a//b", "a\\b"] {
            assert!(
                matches!(s.put(bad, Vec::new()).await, Err(StoreError::InvalidKey(_))),
                "{bad}"
            );
        }
        assert!(s.describe().starts_with("local "));
    }

    #[tokio::test]
    async fn files_stream_in_and_out_and_delete_is_idempotent() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::new(d.path().join("store"));
        let src = d.path().join("src.bin");
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();

        let seen = AtomicU64::new(0);
        let report = |n: u64| {
            assert!(n >= seen.load(Ordering::SeqCst), "progress went backwards");
            seen.store(n, Ordering::SeqCst);
        };
        s.put_file("targets/x.tar.zst", &src, Some(&report))
            .await
            .unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), data.len() as u64);

        let out = d.path().join("deep/dir/out.bin");
        let n = s.get_to_file("targets/x.tar.zst", &out).await.unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(std::fs::read(&out).unwrap(), data);
        assert!(matches!(
            s.get_to_file("targets/missing", &out).await,
            Err(StoreError::NotFound(_))
        ));
        // A failed download leaves the previous file alone.
        assert_eq!(std::fs::read(&out).unwrap(), data);

        s.delete("targets/x.tar.zst").await.unwrap();
        assert!(!s.exists("targets/x.tar.zst").await.unwrap());
        s.delete("targets/x.tar.zst").await.unwrap();
        assert!(s.list("").await.unwrap().is_empty());
    }

    #[test]
    fn usable_as_a_shared_trait_object() {
        let s: std::sync::Arc<dyn BlobStore> = std::sync::Arc::new(LocalStore::new("/nonexistent"));
        assert_eq!(s.describe(), "local /nonexistent");
    }
}
