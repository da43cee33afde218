//! The run workspace (a private copy of the target) through the host, for
//! workflow code. Activity code can also use `std::fs` under `/workspace`.

use std::fmt;

use crate::bindings::toolhost::workflow::workspace as wit;

pub use wit::EntryKind;

/// Why a workspace operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsError {
    /// Absolute, escaping or malformed path.
    InvalidPath(String),
    /// Nothing at that path.
    NotFound(String),
    /// The run's write quota is exhausted.
    QuotaExceeded(String),
    /// Any other I/O error.
    Io(String),
}

impl From<wit::FsError> for FsError {
    fn from(e: wit::FsError) -> Self {
        match e {
            wit::FsError::InvalidPath(m) => FsError::InvalidPath(m),
            wit::FsError::NotFound(m) => FsError::NotFound(m),
            wit::FsError::QuotaExceeded(m) => FsError::QuotaExceeded(m),
            wit::FsError::Io(m) => FsError::Io(m),
        }
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsError::InvalidPath(m) => write!(f, "invalid workspace path: {m}"),
            FsError::NotFound(m) => write!(f, "not found in workspace: {m}"),
            FsError::QuotaExceeded(m) => write!(f, "workspace quota exceeded: {m}"),
            FsError::Io(m) => write!(f, "workspace I/O error: {m}"),
        }
    }
}

impl std::error::Error for FsError {}

/// One directory entry.
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// Path relative to the workspace root.
    pub path: String,
    /// File, directory, symlink or other.
    pub kind: EntryKind,
    /// Size in bytes (files only).
    pub size: u64,
}

/// Reads a whole file.
pub fn read(path: &str) -> Result<Vec<u8>, FsError> {
    wit::read(path).map_err(Into::into)
}

/// Reads a whole file as UTF-8 text (invalid sequences replaced).
pub fn read_to_string(path: &str) -> Result<String, FsError> {
    read(path).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Creates or replaces a file.
pub fn write(path: &str, contents: impl AsRef<[u8]>) -> Result<(), FsError> {
    wit::write(path, contents.as_ref()).map_err(Into::into)
}

/// Lists `path` (`""` or `"."` for the root); every descendant when `recursive`.
pub fn list(path: &str, recursive: bool) -> Result<Vec<DirEntry>, FsError> {
    Ok(wit::list_dir(path, recursive)?
        .into_iter()
        .map(|e| DirEntry {
            path: e.path,
            kind: e.kind,
            size: e.size,
        })
        .collect())
}

/// True when something exists at `path`.
pub fn exists(path: &str) -> Result<bool, FsError> {
    wit::exists(path).map_err(Into::into)
}

/// Lists every file and directory under `path` (the whole workspace when
/// `path` is empty).
pub fn list_dir_or_root(path: &str) -> Result<Vec<DirEntry>, FsError> {
    list(if path.is_empty() { "." } else { path }, true)
}
