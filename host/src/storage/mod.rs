//! Blob storage for run records, components and targets. Keys are
//! slash-separated (`runs/<run-id>/result.json`). The embedded engine uses
//! [`LocalStore`]; other backends implement [`BlobStore`] the same way.
//! This module moves bytes; it never interprets them.

pub mod local;

pub use local::LocalStore;

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob key `{0}` is invalid: use relative, slash-separated names without `..`")]
    InvalidKey(String),
    #[error("blob `{0}` does not exist")]
    NotFound(String),
    #[error("blob store I/O error on `{key}`: {source}")]
    Io { key: String, source: std::io::Error },
}

/// A content store addressed by key.
pub trait BlobStore: Send + Sync {
    /// Stores `bytes` at `key`, atomically replacing any previous value.
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// Reads the value at `key`.
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError>;
    /// True when `key` exists.
    fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// Keys starting with `prefix`, sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
}

/// Checks a key: non-empty, relative, no empty, `.` or `..` segments.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.contains('\0')
        || key.contains('\\')
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        return Err(StoreError::InvalidKey(key.to_string()));
    }
    Ok(())
}
