//! What travels in Temporal payloads between a run's workflow code and the
//! activities that execute its host steps: the step requests, their results,
//! and byte strings, which are carried inline (base64) when small and by
//! reference to a content-addressed blob when large, so no payload comes
//! near Temporal's size limits.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::runtime::bindings::toolhost::workflow::tools::{ToolError, ToolOutput};
use crate::runtime::bindings::toolhost::workflow::workspace::{DirEntry, EntryKind, FsError};
use crate::storage::BlobStore;

/// Byte strings above this size travel as blobs, not inline.
pub const INLINE_MAX: usize = 256 << 10;

/// A byte string in a payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bytes {
    /// Base64 of the bytes.
    Inline { b64: String },
    /// Stored at `blob` (`blobs/<sha256>`) in the blob store.
    Blob { blob: String, len: u64 },
}

impl Bytes {
    /// Always inline.
    pub fn inline(bytes: Vec<u8>) -> Self {
        Bytes::Inline {
            b64: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// Inline when small, else stored (once, by content) in `store`.
    pub async fn offload(bytes: Vec<u8>, store: &dyn BlobStore) -> anyhow::Result<Self> {
        if bytes.len() <= INLINE_MAX {
            return Ok(Bytes::inline(bytes));
        }
        let key = format!("blobs/{}", crate::toolbox::digest(&bytes));
        let len = bytes.len() as u64;
        if !store.exists(&key).await? {
            store.put(&key, bytes).await?;
        }
        Ok(Bytes::Blob { blob: key, len })
    }

    /// The bytes.
    pub async fn resolve(self, store: &dyn BlobStore) -> anyhow::Result<Vec<u8>> {
        match self {
            Bytes::Inline { b64 } => Ok(base64::engine::general_purpose::STANDARD.decode(b64)?),
            Bytes::Blob { blob, .. } => Ok(store.get(&blob).await?),
        }
    }
}

/// A step that runs on the host holding the run's workspace.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HostStep {
    /// `tools.run`.
    Tool {
        tool: String,
        args: Vec<String>,
        cwd: Option<String>,
        stdin: Option<Bytes>,
        timeout_ms: Option<u64>,
        env: Vec<(String, String)>,
    },
    /// `workspace.read`.
    Read { path: String },
    /// `workspace.write`.
    Write { path: String, contents: Bytes },
    /// `workspace.list-dir`.
    ListDir { path: String, recursive: bool },
    /// `workspace.exists`.
    Exists { path: String },
    /// `activities.call`.
    Activity { name: String, input: String },
    /// `artifacts.put` / `artifacts.put-file`.
    Artifact {
        name: String,
        contents: Option<Bytes>,
        path: Option<String>,
    },
}

impl HostStep {
    /// The Temporal activity type of the step, as `temporal workflow show`
    /// lists it.
    pub fn activity_type(&self) -> &'static str {
        match self {
            HostStep::Tool { .. } => "tools.run",
            HostStep::Read { .. } => "workspace.read",
            HostStep::Write { .. } => "workspace.write",
            HostStep::ListDir { .. } => "workspace.list-dir",
            HostStep::Exists { .. } => "workspace.exists",
            HostStep::Activity { .. } => "activity",
            HostStep::Artifact { .. } => "artifacts.put",
        }
    }

    /// A short description for activity ids and logs.
    pub fn label(&self) -> String {
        match self {
            HostStep::Tool { tool, .. } => format!("tool-{tool}"),
            HostStep::Activity { name, .. } => format!("activity-{name}"),
            HostStep::Artifact { name, .. } => format!("artifact-{name}"),
            other => other.activity_type().replace('.', "-"),
        }
    }
}

/// `Ok`/`Err` as `{"ok": ..}` / `{"err": ..}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome<T, E> {
    Ok(T),
    Err(E),
}

impl<T, E> From<Result<T, E>> for Outcome<T, E> {
    fn from(r: Result<T, E>) -> Self {
        match r {
            Ok(v) => Outcome::Ok(v),
            Err(e) => Outcome::Err(e),
        }
    }
}

/// `tool-output` on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireToolOutput {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Bytes,
    pub stderr: Bytes,
    pub truncated: bool,
    pub duration_ms: u64,
}

/// `tool-error` and `fs-error` on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireError {
    pub kind: String,
    #[serde(default)]
    pub message: String,
}

impl From<&ToolError> for WireError {
    fn from(e: &ToolError) -> Self {
        let (kind, message) = match e {
            ToolError::NotPermitted(m) => ("not_permitted", m.clone()),
            ToolError::NotFound(m) => ("not_found", m.clone()),
            ToolError::Failed(m) => ("failed", m.clone()),
            ToolError::TimedOut => ("timed_out", String::new()),
            ToolError::Cancelled => ("cancelled", String::new()),
        };
        WireError {
            kind: kind.into(),
            message,
        }
    }
}

impl From<&FsError> for WireError {
    fn from(e: &FsError) -> Self {
        let (kind, message) = match e {
            FsError::InvalidPath(m) => ("invalid_path", m),
            FsError::NotFound(m) => ("not_found", m),
            FsError::QuotaExceeded(m) => ("quota_exceeded", m),
            FsError::Io(m) => ("io", m),
        };
        WireError {
            kind: kind.into(),
            message: message.clone(),
        }
    }
}

impl WireError {
    fn tool_error(self) -> ToolError {
        match self.kind.as_str() {
            "not_permitted" => ToolError::NotPermitted(self.message),
            "not_found" => ToolError::NotFound(self.message),
            "timed_out" => ToolError::TimedOut,
            "cancelled" => ToolError::Cancelled,
            _ => ToolError::Failed(self.message),
        }
    }

    fn fs_error(self) -> FsError {
        match self.kind.as_str() {
            "invalid_path" => FsError::InvalidPath(self.message),
            "not_found" => FsError::NotFound(self.message),
            "quota_exceeded" => FsError::QuotaExceeded(self.message),
            _ => FsError::Io(self.message),
        }
    }
}

/// `dir-entry` on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireDirEntry {
    pub path: String,
    pub kind: String,
    pub size: u64,
}

impl From<&DirEntry> for WireDirEntry {
    fn from(e: &DirEntry) -> Self {
        WireDirEntry {
            path: e.path.clone(),
            kind: match e.kind {
                EntryKind::File => "file",
                EntryKind::Directory => "directory",
                EntryKind::Symlink => "symlink",
                EntryKind::Other => "other",
            }
            .into(),
            size: e.size,
        }
    }
}

/// Encodes a tool result for the wire, offloading large output.
pub async fn encode_tool(
    result: Result<ToolOutput, ToolError>,
    store: &dyn BlobStore,
) -> anyhow::Result<Value> {
    let outcome: Outcome<WireToolOutput, WireError> = match result {
        Ok(out) => Outcome::Ok(WireToolOutput {
            exit_code: out.exit_code,
            signal: out.signal,
            stdout: Bytes::offload(out.stdout, store).await?,
            stderr: Bytes::offload(out.stderr, store).await?,
            truncated: out.truncated,
            duration_ms: out.duration_ms,
        }),
        Err(e) => Outcome::Err(WireError::from(&e)),
    };
    Ok(serde_json::to_value(outcome)?)
}

fn malformed(what: &str, e: impl std::fmt::Display) -> String {
    format!("malformed {what} result from the workspace host: {e}")
}

/// Decodes a tool result.
pub async fn decode_tool(v: Value, store: &dyn BlobStore) -> Result<ToolOutput, ToolError> {
    let outcome: Outcome<WireToolOutput, WireError> =
        serde_json::from_value(v).map_err(|e| ToolError::Failed(malformed("tool", e)))?;
    match outcome {
        Outcome::Ok(o) => {
            let stdout = o.stdout.resolve(store).await;
            let stderr = o.stderr.resolve(store).await;
            match (stdout, stderr) {
                (Ok(stdout), Ok(stderr)) => Ok(ToolOutput {
                    exit_code: o.exit_code,
                    signal: o.signal,
                    stdout,
                    stderr,
                    truncated: o.truncated,
                    duration_ms: o.duration_ms,
                }),
                (Err(e), _) | (_, Err(e)) => Err(ToolError::Failed(format!(
                    "cannot fetch the tool's output from the blob store: {e:#}"
                ))),
            }
        }
        Outcome::Err(e) => Err(e.tool_error()),
    }
}

/// Encodes a `workspace.*` result.
pub async fn encode_fs<T: Serialize>(result: Result<T, FsError>) -> anyhow::Result<Value> {
    let outcome: Outcome<T, WireError> = match result {
        Ok(v) => Outcome::Ok(v),
        Err(e) => Outcome::Err(WireError::from(&e)),
    };
    Ok(serde_json::to_value(outcome)?)
}

/// Decodes a `workspace.*` result with a plain JSON value.
pub fn decode_fs<T: for<'de> Deserialize<'de>>(v: Value) -> Result<T, FsError> {
    let outcome: Outcome<T, WireError> =
        serde_json::from_value(v).map_err(|e| FsError::Io(malformed("workspace", e)))?;
    match outcome {
        Outcome::Ok(v) => Ok(v),
        Outcome::Err(e) => Err(e.fs_error()),
    }
}

/// Decodes a `workspace.read` result.
pub async fn decode_read(v: Value, store: &dyn BlobStore) -> Result<Vec<u8>, FsError> {
    let bytes: Bytes = decode_fs(v)?;
    bytes
        .resolve(store)
        .await
        .map_err(|e| FsError::Io(format!("cannot fetch the file from the blob store: {e:#}")))
}

/// Decodes a `workspace.list-dir` result.
pub fn decode_list(v: Value) -> Result<Vec<DirEntry>, FsError> {
    let entries: Vec<WireDirEntry> = decode_fs(v)?;
    Ok(entries
        .into_iter()
        .map(|e| DirEntry {
            path: e.path,
            kind: match e.kind.as_str() {
                "file" => EntryKind::File,
                "directory" => EntryKind::Directory,
                "symlink" => EntryKind::Symlink,
                _ => EntryKind::Other,
            },
            size: e.size,
        })
        .collect())
}

/// Decodes a `result<string, string>`.
pub fn decode_string_result(v: Value) -> Result<String, String> {
    match serde_json::from_value::<Outcome<String, String>>(v) {
        Ok(Outcome::Ok(s)) => Ok(s),
        Ok(Outcome::Err(e)) => Err(e),
        Err(e) => Err(malformed("activity", e)),
    }
}

/// Decodes a `result<_, string>`.
pub fn decode_unit_result(v: Value) -> Result<(), String> {
    match serde_json::from_value::<Outcome<(), String>>(v) {
        Ok(Outcome::Ok(())) => Ok(()),
        Ok(Outcome::Err(e)) => Err(e),
        Err(e) => Err(malformed("artifact", e)),
    }
}
