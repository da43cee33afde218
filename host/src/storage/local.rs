//! [`BlobStore`] on a local directory; writes go to a temp file and are
//! renamed into place so readers never see half a blob.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{BlobStore, StoreError, check_key};

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

impl BlobStore for LocalStore {
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(io(key))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(key))?;
        tmp.write_all(bytes).map_err(io(key))?;
        tmp.as_file().sync_all().map_err(io(key))?;
        tmp.persist(&path).map_err(|e| io(key)(e.error))?;
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        std::fs::read(self.path_of(key)?).map_err(io(key))
    }

    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.path_of(key)?.exists())
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        if !self.root.exists() {
            return Ok(out);
        }
        for entry in walkdir::WalkDir::new(&self.root).follow_links(false) {
            let entry = entry.map_err(|e| StoreError::Io {
                key: prefix.to_string(),
                source: e.into(),
            })?;
            if !entry.file_type().is_file() {
                continue;
            }
            let Ok(rel) = entry.path().strip_prefix(&self.root) else {
                continue;
            };
            let key = rel.to_string_lossy().replace('\\', "/");
            if key.starts_with(prefix) {
                out.push(key);
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_list_and_reject_bad_keys() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::new(d.path());
        s.put("runs/a/result.json", b"{}").unwrap();
        s.put("runs/b/log.jsonl", b"x").unwrap();
        assert_eq!(s.get("runs/a/result.json").unwrap(), b"{}");
        assert!(s.exists("runs/b/log.jsonl").unwrap());
        assert_eq!(
            s.list("runs/").unwrap(),
            ["runs/a/result.json", "runs/b/log.jsonl"]
        );
        assert!(matches!(s.get("runs/c"), Err(StoreError::NotFound(_))));
        for bad in ["", "/abs", "a/../b", "a//b", "a\\b"] {
            assert!(
                matches!(s.put(bad, b""), Err(StoreError::InvalidKey(_))),
                "{bad}"
            );
        }
    }
}
