//! API tokens: random secrets shown once, stored hashed, each bound to one
//! tenant and one role. The embedded server keeps them in one JSON file
//! (`tokens.json`, mode 0600) that `toolhost token` edits and the server
//! re-reads when it changes, so a revocation takes effect on the next
//! request without a restart. A distributed server keeps one object per
//! token in the blob store (`api/tokens/<id>.json`), shared by every
//! replica, each of which caches an answer for [`BLOB_CACHE`]. This module
//! never writes or logs a token's secret.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// What a token may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads its tenant's workflows, runs, findings, logs and artifacts.
    Viewer,
    /// Also uploads targets, starts, cancels and retries runs.
    Submitter,
    /// Also manages tokens and sees every tenant.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Submitter => "submitter",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "submitter" => Ok(Role::Submitter),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role `{other}`: use viewer, submitter or admin"
            )),
        }
    }
}

/// One stored token (its secret only as a hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenEntry {
    /// Public id, part of the token (`thk_<id>_<secret>`), for `list` and `revoke`.
    pub id: String,
    pub tenant: String,
    pub role: Role,
    /// A label for people (`ci`, `alice laptop`).
    #[serde(default)]
    pub name: String,
    /// sha256 of the whole token, hex.
    pub sha256: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<TokenEntry>,
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Token id (`anonymous` when auth is off).
    pub token_id: String,
    pub tenant: String,
    pub role: Role,
}

impl Principal {
    /// The principal of a server without auth (loopback only): one tenant,
    /// every right.
    pub fn anonymous() -> Self {
        Principal {
            token_id: "anonymous".into(),
            tenant: "default".into(),
            role: Role::Admin,
        }
    }

    /// Whether this principal may see objects of `tenant`.
    pub fn sees(&self, tenant: &str) -> bool {
        self.tenant == tenant || self.role == Role::Admin
    }
}

/// Why a token was not accepted. The messages never say whether a token
/// id exists.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "this server needs a token: send `Authorization: Bearer <token>` (an operator creates one with `toolhost token create`)"
    )]
    Missing,
    #[error(
        "the token is not valid (malformed, unknown or revoked); ask the server's operator for a new one"
    )]
    Invalid,
}

/// The parsed file, with the modification time and size it was read at.
type CachedTokens = (SystemTime, u64, Arc<Vec<TokenEntry>>);

/// How long a replica trusts what it read of a token in the blob store
/// (so a revocation reaches every replica within this time).
pub const BLOB_CACHE: std::time::Duration = std::time::Duration::from_secs(2);

/// Entries read from the blob store, by token id, with when they were read.
type BlobCache = std::collections::HashMap<String, (std::time::Instant, Option<TokenEntry>)>;

/// Where the tokens are.
enum Backend {
    /// The token file and a cache of it keyed by its modification time.
    File {
        path: PathBuf,
        cache: Mutex<Option<CachedTokens>>,
    },
    /// `api/tokens/<id>.json` in a shared blob store.
    Blob {
        blobs: Arc<dyn crate::storage::BlobStore>,
        cache: Mutex<BlobCache>,
    },
}

/// The tokens of a server.
pub struct TokenStore {
    backend: Backend,
}

/// Checks a tenant name (it becomes part of storage keys).
pub fn check_tenant(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tenant `{}` is invalid: use 1 to 64 lowercase letters, digits, `-` and `_`",
            name.escape_debug()
        ))
    }
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Splits `thk_<id>_<secret>` into its id, or `None` if malformed.
fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("thk_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 12
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && secret.len() >= 32
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some(id)
}

impl TokenStore {
    /// The store in `dir/tokens.json` (the file need not exist yet).
    pub fn new(dir: &Path) -> Self {
        TokenStore {
            backend: Backend::File {
                path: dir.join("tokens.json"),
                cache: Mutex::new(None),
            },
        }
    }

    /// The store in `api/tokens/` of `blobs`, shared by every replica.
    pub fn in_blobs(blobs: Arc<dyn crate::storage::BlobStore>) -> Self {
        TokenStore {
            backend: Backend::Blob {
                blobs,
                cache: Mutex::new(Default::default()),
            },
        }
    }

    /// Where the tokens are, for messages.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::File { path, .. } => format!("`{}`", path.display()),
            Backend::Blob { blobs, .. } => format!("api/tokens/ in {}", blobs.describe()),
        }
    }

    fn blob_key(id: &str) -> String {
        format!("api/tokens/{id}.json")
    }

    /// All entries, revoked ones included.
    pub async fn entries(&self) -> anyhow::Result<Arc<Vec<TokenEntry>>> {
        match &self.backend {
            Backend::File { path, cache } => file_entries(path, cache),
            Backend::Blob { blobs, .. } => {
                let mut out = Vec::new();
                for key in blobs.list("api/tokens/").await? {
                    let bytes = blobs.get(&key).await?;
                    match serde_json::from_slice::<TokenEntry>(&bytes) {
                        Ok(e) => out.push(e),
                        Err(e) => tracing::warn!("ignoring token object `{key}`: {e}"),
                    }
                }
                out.sort_by(|a, b| a.created_at.cmp(&b.created_at));
                Ok(Arc::new(out))
            }
        }
    }

    /// Whether the store can be read (for readiness).
    pub async fn usable(&self) -> bool {
        match &self.backend {
            Backend::File { path, cache } => file_entries(path, cache).is_ok(),
            Backend::Blob { blobs, .. } => blobs.list("api/tokens/").await.is_ok(),
        }
    }

    /// The entry of token id `id`.
    async fn entry(&self, id: &str) -> anyhow::Result<Option<TokenEntry>> {
        match &self.backend {
            Backend::File { path, cache } => Ok(file_entries(path, cache)?
                .iter()
                .find(|e| e.id == id)
                .cloned()),
            Backend::Blob { blobs, cache } => {
                if let Some((at, entry)) = cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(id)
                    .cloned()
                    && at.elapsed() < BLOB_CACHE
                {
                    return Ok(entry);
                }
                let entry = match blobs.get(&Self::blob_key(id)).await {
                    Ok(bytes) => Some(serde_json::from_slice::<TokenEntry>(&bytes).with_context(
                        || format!("token object `{}` is not a token entry", Self::blob_key(id)),
                    )?),
                    Err(crate::storage::StoreError::NotFound(_)) => None,
                    Err(e) => return Err(e.into()),
                };
                let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() > 10_000 {
                    cache.clear();
                }
                cache.insert(id.to_string(), (std::time::Instant::now(), entry.clone()));
                Ok(entry)
            }
        }
    }

    /// The principal of a bearer token.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        let token = token.ok_or(AuthError::Missing)?;
        let id = token_id(token).ok_or(AuthError::Invalid)?;
        let entry = self.entry(id).await.map_err(|e| {
            tracing::error!("tokens: {e:#}");
            AuthError::Invalid
        })?;
        let digest = hash(token);
        entry
            .filter(|e| e.revoked_at.is_none() && constant_time_eq(&e.sha256, &digest))
            .map(|e| Principal {
                token_id: e.id,
                tenant: e.tenant,
                role: e.role,
            })
            .ok_or(AuthError::Invalid)
    }

    /// Creates a token and returns it with its entry; the secret exists
    /// only in the returned string.
    pub async fn create(
        &self,
        tenant: &str,
        role: Role,
        name: &str,
    ) -> anyhow::Result<(String, TokenEntry)> {
        check_tenant(tenant).map_err(anyhow::Error::msg)?;
        use rand::Rng as _;
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let mut id = [0u8; 6];
        rand::rng().fill_bytes(&mut id);
        let id = hex::encode(id);
        use base64::Engine as _;
        let token = format!(
            "thk_{id}_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let entry = TokenEntry {
            id,
            tenant: tenant.into(),
            role,
            name: name.into(),
            sha256: hash(&token),
            created_at: crate::util::now_rfc3339(),
            revoked_at: None,
        };
        match &self.backend {
            Backend::File { path, cache } => file_update(path, cache, |tokens| {
                tokens.push(entry.clone());
                Ok(())
            })?,
            Backend::Blob { blobs, .. } => {
                blobs
                    .put(
                        &Self::blob_key(&entry.id),
                        serde_json::to_vec_pretty(&entry)?,
                    )
                    .await?
            }
        }
        Ok((token, entry))
    }

    /// Revokes the token with id `id` (idempotent).
    pub async fn revoke(&self, id: &str) -> anyhow::Result<TokenEntry> {
        let unknown =
            || anyhow::anyhow!("no token with id `{id}`; `toolhost token list` shows the ids");
        match &self.backend {
            Backend::File { path, cache } => {
                let mut found = None;
                file_update(path, cache, |tokens| {
                    let entry = tokens.iter_mut().find(|e| e.id == id).ok_or_else(unknown)?;
                    if entry.revoked_at.is_none() {
                        entry.revoked_at = Some(crate::util::now_rfc3339());
                    }
                    found = Some(entry.clone());
                    Ok(())
                })?;
                found.ok_or_else(unknown)
            }
            Backend::Blob { blobs, cache } => {
                if token_id(&format!("thk_{id}_{}", "x".repeat(32))).is_none() {
                    return Err(unknown());
                }
                let key = Self::blob_key(id);
                let mut entry: TokenEntry = match blobs.get(&key).await {
                    Ok(b) => serde_json::from_slice(&b)?,
                    Err(crate::storage::StoreError::NotFound(_)) => return Err(unknown()),
                    Err(e) => return Err(e.into()),
                };
                if entry.revoked_at.is_none() {
                    entry.revoked_at = Some(crate::util::now_rfc3339());
                    blobs.put(&key, serde_json::to_vec_pretty(&entry)?).await?;
                }
                cache.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
                Ok(entry)
            }
        }
    }
}

/// The token file's entries, re-read when it changed.
fn file_entries(
    path: &Path,
    cache: &Mutex<Option<CachedTokens>>,
) -> anyhow::Result<Arc<Vec<TokenEntry>>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Arc::new(Vec::new())),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read `{}`", path.display()));
        }
    };
    if meta.permissions().mode() & 0o077 != 0 {
        anyhow::bail!(
            "`{}` is readable or writable by others (mode {:o}); tokens are refused until it is private: chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let stamp = (
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        meta.len(),
    );
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((m, len, entries)) = cache.as_ref()
        && (*m, *len) == stamp
    {
        return Ok(entries.clone());
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    let file: TokenFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "`{}` is not a token file; restore it from a backup or remove it and create tokens again",
            path.display()
        )
    })?;
    let entries = Arc::new(file.tokens);
    *cache = Some((stamp.0, stamp.1, entries.clone()));
    Ok(entries)
}

/// Read-modify-write of the token file under an exclusive lock, replaced
/// atomically, mode 0600.
fn file_update(
    path: &Path,
    cache: &Mutex<Option<CachedTokens>>,
    change: impl FnOnce(&mut Vec<TokenEntry>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let lock_path = dir.join(".tokens.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .with_context(|| format!("cannot open `{}`", lock_path.display()))?;
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("cannot lock `{}`", lock_path.display()))?;
    let mut tokens = file_entries(path, cache)?.as_ref().clone();
    change(&mut tokens)?;
    let text = serde_json::to_string_pretty(&TokenFile { tokens })?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tokens-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in `{}`", dir.display()))?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot replace `{}`", path.display()))?;
    *cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
    Ok(())
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_token_authenticates_until_it_is_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        let (token, entry) = store.create("team-a", Role::Submitter, "ci").await.unwrap();
        let mode = std::fs::metadata(dir.path().join("tokens.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(dir.path().join("tokens.json")).unwrap();
        assert!(!text.contains(&token[17..]), "the secret is not stored");
        let who = store.authenticate(Some(&token)).await.unwrap();
        assert_eq!((who.tenant.as_str(), who.role), ("team-a", Role::Submitter));
        // A token with the right id and a wrong secret is refused.
        let forged = format!("{}{}", &token[..17], "A".repeat(token.len() - 17));
        assert!(matches!(
            store.authenticate(Some(&forged)).await,
            Err(AuthError::Invalid)
        ));
        assert!(matches!(
            store.authenticate(None).await,
            Err(AuthError::Missing)
        ));
        store.revoke(&entry.id).await.unwrap();
        assert!(matches!(
            store.authenticate(Some(&token)).await,
            Err(AuthError::Invalid)
        ));
    }

    #[tokio::test]
    async fn a_token_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        let (token, _) = store.create("team-a", Role::Viewer, "").await.unwrap();
        std::fs::set_permissions(
            dir.path().join("tokens.json"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(store.authenticate(Some(&token)).await.is_err());
        assert!(format!("{:#}", store.entries().await.unwrap_err()).contains("chmod 600"));
    }

    #[tokio::test]
    async fn tokens_in_a_blob_store_are_shared_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let blobs: Arc<dyn crate::storage::BlobStore> =
            Arc::new(crate::storage::LocalStore::new(dir.path()));
        // Two replicas over one store.
        let a = TokenStore::in_blobs(blobs.clone());
        let b = TokenStore::in_blobs(blobs.clone());
        let (token, entry) = a.create("team-a", Role::Viewer, "ci").await.unwrap();
        let stored =
            std::fs::read_to_string(dir.path().join(format!("api/tokens/{}.json", entry.id)))
                .unwrap();
        assert!(!stored.contains(&token[17..]), "the secret is not stored");
        assert_eq!(b.authenticate(Some(&token)).await.unwrap().tenant, "team-a");
        a.revoke(&entry.id).await.unwrap();
        // Revoked on `a` at once; on `b` once its cache expires.
        assert!(a.authenticate(Some(&token)).await.is_err());
        tokio::time::sleep(BLOB_CACHE + std::time::Duration::from_millis(100)).await;
        assert!(b.authenticate(Some(&token)).await.is_err());
        assert_eq!(b.entries().await.unwrap().len(), 1);
        assert!(a.revoke("../../etc").await.is_err());
    }

    #[test]
    fn tenant_names_are_checked() {
        assert!(check_tenant("team-a").is_ok());
        for bad in ["", "../x", "Team", "a/b", "-x", &"a".repeat(65)] {
            assert!(check_tenant(bad).is_err(), "{bad}");
        }
    }
}
