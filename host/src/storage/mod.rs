//! Blob storage for run records, components and targets. Keys are
//! slash-separated (`runs/<run-id>/result.json`, `targets/<sha256>.tar.zst`).
//! The embedded engine uses [`LocalStore`]; distributed mode uses [`S3Store`]
//! so every host sees the same blobs. [`pack`] turns a target directory into
//! a deterministic archive and unpacks one without trusting it, and
//! [`target_cache`] keeps unpacked targets on a host under a size cap.
//! This module moves bytes; it never interprets run records or components.

pub mod links;
pub mod local;
pub mod pack;
pub mod prefixed;
pub mod s3;
pub mod target_cache;

use std::path::Path;

use async_trait::async_trait;

pub use local::LocalStore;
pub use pack::{
    PackInfo, UnpackCaps, UnpackError, UnpackInfo, pack_target, target_key, unpack_target,
};
pub use prefixed::Prefixed;
pub use s3::{S3Config, S3Store};
pub use target_cache::{TargetCache, TargetLease};

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key is not a relative, slash-separated name.
    #[error("blob key `{0}` is invalid: use relative, slash-separated names without `..`")]
    InvalidKey(String),
    /// Nothing is stored at the key.
    #[error("blob `{0}` does not exist")]
    NotFound(String),
    /// A local file operation failed.
    #[error("blob store I/O error on `{key}`: {source}")]
    Io {
        /// The key being read or written.
        key: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A remote store refused or could not be reached; `message` says what
    /// to check (endpoint, credentials, bucket).
    #[error("blob store error on `{key}`: {message}")]
    Backend {
        /// The key (or prefix) being accessed.
        key: String,
        /// What went wrong and what to check.
        message: String,
    },
}

/// Reports how many bytes of a transfer are done so far.
pub type Progress<'a> = Option<&'a (dyn Fn(u64) + Send + Sync)>;

/// A content store addressed by key. Object-safe: hosts hold an
/// `Arc<dyn BlobStore>` chosen by configuration.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores `bytes` at `key`, atomically replacing any previous value.
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError>;
    /// Stores the contents of the file at `path` at `key` without reading it
    /// into memory, atomically replacing any previous value; `progress`
    /// receives the number of bytes uploaded so far.
    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        progress: Progress<'_>,
    ) -> Result<(), StoreError>;
    /// Reads the value at `key`.
    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError>;
    /// Streams the value at `key` into the file at `path` (written to a
    /// temporary file beside it and renamed into place); returns its size.
    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError>;
    /// True when `key` exists.
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// The size of the value at `key`, or `None` when there is none.
    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError>;
    /// All keys starting with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Removes `key`; removing a key that does not exist is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Where the blobs live, for logs and error messages
    /// (`local /var/lib/toolhost`, `s3://bucket at http://127.0.0.1:3900`).
    fn describe(&self) -> String;
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
