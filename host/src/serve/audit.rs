//! The audit log: one JSON line per state-changing request (who, tenant,
//! action, object, outcome, client address, time), appended to
//! `<data_dir>/api/audit.jsonl` and never rewritten. Token changes made with
//! `toolhost token` are logged the same way. Reading is `toolhost audit`.
//! A distributed server also puts each entry in the blob store
//! (`api/audit/<day>/<time>-<uuid>.json`), so the log of every replica is
//! in one place and outlives the replica's disk.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One audited action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEntry {
    pub time: String,
    /// Token id, `cli` for `toolhost token`, or `anonymous`.
    pub actor: String,
    pub tenant: String,
    /// `run.start`, `run.cancel`, `run.retry`, `target.upload`,
    /// `token.create`, `token.revoke`, ...
    pub action: String,
    /// The run id, target digest or token id acted on, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// HTTP status of the answer (201, 404, 429, ...), or 0 for CLI actions.
    pub status: u16,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// The object of an audited request, set by its handler on the response.
#[derive(Debug, Clone)]
pub struct AuditObject(pub String);

/// The append-only audit file.
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
    copies: Option<std::sync::Arc<dyn crate::storage::BlobStore>>,
}

impl AuditLog {
    pub fn new(dir: &Path) -> Self {
        AuditLog {
            path: dir.join("audit.jsonl"),
            file: Mutex::new(None),
            copies: None,
        }
    }

    /// Also keeps each entry in `blobs`.
    pub fn with_copies_in(self, blobs: std::sync::Arc<dyn crate::storage::BlobStore>) -> Self {
        AuditLog {
            copies: Some(blobs),
            ..self
        }
    }

    /// Puts `entry` in the blob store, if this log keeps copies there; a
    /// failure is logged (the local line is already written).
    pub async fn copy(&self, entry: &AuditEntry) {
        let Some(blobs) = &self.copies else { return };
        let day = entry.time.get(..10).unwrap_or("unknown");
        let key = format!(
            "api/audit/{day}/{}-{}.json",
            entry.time.replace(':', ""),
            uuid::Uuid::new_v4().simple()
        );
        let bytes = serde_json::to_vec(entry).unwrap_or_default();
        if let Err(e) = blobs.put(&key, bytes).await {
            tracing::error!("cannot copy an audit entry to {}: {e}", blobs.describe());
        }
    }

    /// Every entry kept in `blobs`, oldest first.
    pub async fn read_copies(
        blobs: &dyn crate::storage::BlobStore,
    ) -> anyhow::Result<Vec<AuditEntry>> {
        let mut out = Vec::new();
        for key in blobs.list("api/audit/").await? {
            if let Ok(e) = serde_json::from_slice::<AuditEntry>(&blobs.get(&key).await?) {
                out.push(e);
            }
        }
        out.sort_by(|a, b| a.time.cmp(&b.time));
        Ok(out)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry` (one `write` of one line, `O_APPEND`, so concurrent
    /// writers never interleave within a line).
    pub fn append(&self, entry: &AuditEntry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(&self.path)?,
            );
        }
        let file = guard.as_mut().expect("opened above");
        file.write_all(&line)?;
        file.sync_data()
    }

    /// Every entry, oldest first; lines that do not parse are skipped.
    pub fn read(&self) -> std::io::Result<Vec<AuditEntry>> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

/// The action name of a request: `POST /v1/runs/{id}/cancel` -> `run.cancel`.
pub fn action_of(method: &str, route: &str) -> String {
    let parts: Vec<&str> = route
        .trim_start_matches("/v1/")
        .split('/')
        .filter(|p| !p.starts_with('{'))
        .collect();
    let noun = parts
        .first()
        .map(|n| n.trim_end_matches('s'))
        .unwrap_or("request");
    let verb = match (method, parts.get(1)) {
        (_, Some(v)) => (*v).to_string(),
        ("POST", None) if noun == "target" => "upload".into(),
        ("POST", None) => "start".into(),
        ("DELETE", None) => "delete".into(),
        (m, None) => m.to_ascii_lowercase(),
    };
    format!("{noun}.{verb}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_named_by_route() {
        assert_eq!(action_of("POST", "/v1/runs"), "run.start");
        assert_eq!(action_of("POST", "/v1/runs/{id}/cancel"), "run.cancel");
        assert_eq!(action_of("POST", "/v1/runs/{id}/retry"), "run.retry");
        assert_eq!(action_of("POST", "/v1/runs/batch"), "run.batch");
        assert_eq!(action_of("POST", "/v1/targets"), "target.upload");
    }

    #[test]
    fn entries_are_appended_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path());
        let e = AuditEntry {
            time: "2026-12-02T00:00:00Z".into(),
            actor: "abc".into(),
            tenant: "t".into(),
            action: "run.start".into(),
            object: Some("hello-1".into()),
            status: 202,
            client: Some("127.0.0.1:5000".into()),
        };
        log.append(&e).unwrap();
        log.append(&AuditEntry {
            status: 404,
            ..e.clone()
        })
        .unwrap();
        let back = log.read().unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], e);
        assert_eq!(back[1].status, 404);
    }
}
