//! A view of a blob store below one prefix: `tenants/<tenant>/` for the
//! objects of one tenant. Keys are checked before the prefix is added, so a
//! key cannot climb out of its prefix.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use super::{BlobStore, Progress, StoreError, check_key};

/// `inner`, with every key below `prefix`.
pub struct Prefixed {
    inner: Arc<dyn BlobStore>,
    prefix: String,
}

impl Prefixed {
    /// `prefix` ends with `/` (added if missing).
    pub fn new(inner: Arc<dyn BlobStore>, prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Prefixed { inner, prefix }
    }

    fn full(&self, key: &str) -> Result<String, StoreError> {
        check_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    fn strip(&self, err: StoreError) -> StoreError {
        match err {
            StoreError::NotFound(k) => StoreError::NotFound(
                k.strip_prefix(&self.prefix)
                    .map(str::to_string)
                    .unwrap_or(k),
            ),
            other => other,
        }
    }
}

#[async_trait]
impl BlobStore for Prefixed {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.inner.put(&self.full(key)?, bytes).await
    }

    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        progress: Progress<'_>,
    ) -> Result<(), StoreError> {
        self.inner.put_file(&self.full(key)?, path, progress).await
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.inner
            .get(&self.full(key)?)
            .await
            .map_err(|e| self.strip(e))
    }

    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        self.inner
            .get_to_file(&self.full(key)?, path)
            .await
            .map_err(|e| self.strip(e))
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.exists(&self.full(key)?).await
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.inner.size(&self.full(key)?).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let full = format!("{}{prefix}", self.prefix);
        Ok(self
            .inner
            .list(&full)
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_string))
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(&self.full(key)?).await
    }

    fn describe(&self) -> String {
        format!("{} under {}", self.inner.describe(), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStore;

    #[tokio::test]
    async fn keys_stay_below_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let root: Arc<dyn BlobStore> = Arc::new(LocalStore::new(dir.path()));
        let a = Prefixed::new(root.clone(), "tenants/a");
        let b = Prefixed::new(root.clone(), "tenants/b/");
        a.put("runs/x/result.json", b"{}".to_vec()).await.unwrap();
        assert!(root.exists("tenants/a/runs/x/result.json").await.unwrap());
        assert_eq!(a.list("runs/").await.unwrap(), ["runs/x/result.json"]);
        assert_eq!(a.size("runs/x/result.json").await.unwrap(), Some(2));
        assert!(!b.exists("runs/x/result.json").await.unwrap());
        assert!(b.list("").await.unwrap().is_empty());
        for escape in ["../a/runs/x/result.json", "/tenants/a/x", "a/../../b"] {
            assert!(
                matches!(b.get(escape).await, Err(StoreError::InvalidKey(_))),
                "{escape}"
            );
        }
        match b.get("runs/x/result.json").await {
            Err(StoreError::NotFound(k)) => assert_eq!(k, "runs/x/result.json"),
            other => panic!("{other:?}"),
        }
    }
}
