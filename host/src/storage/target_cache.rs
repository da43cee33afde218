//! The host's cache of unpacked targets: `root/<sha256>/` holds the tree of
//! `targets/<sha256>.tar.zst`, downloaded once, verified against its digest,
//! unpacked with [`unpack_target`]'s checks and renamed into place, so a
//! directory named by a digest is always complete. Entries are evicted least
//! recently used first once the total passes the size cap, but never while a
//! [`TargetLease`] holds them. One cache per root directory: two processes
//! sharing a root would evict each other's trees.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use anyhow::Context;

use super::pack::{UnpackCaps, is_sha256_hex, sha256_file, target_key, unpack_target};
use super::{BlobStore, StoreError};

/// Name prefixes of the cache's own scratch entries, removed at startup.
const SCRATCH_PREFIXES: [&str; 3] = [".download-", ".unpack-", ".evict-"];

/// A size-capped, least-recently-used cache of unpacked targets.
#[derive(Debug, Clone)]
pub struct TargetCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    max_bytes: u64,
    caps: UnpackCaps,
    state: Mutex<State>,
    /// One lock per digest being fetched, so concurrent checkouts of the
    /// same target download it once.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    total: u64,
    clock: u64,
    evicted: u64,
}

#[derive(Debug)]
struct Entry {
    bytes: u64,
    last_used: u64,
    leases: u32,
}

/// A checked-out target: its directory stays on disk until every lease on it
/// is dropped.
#[derive(Debug)]
pub struct TargetLease {
    inner: Arc<Inner>,
    sha256: String,
    path: PathBuf,
}

impl TargetLease {
    /// The unpacked target directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The digest of the target's archive.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

impl Drop for TargetLease {
    fn drop(&mut self) {
        self.inner.release(&self.sha256);
    }
}

impl TargetCache {
    /// Opens the cache at `root` (created if missing), keeping at most
    /// `max_bytes` of unpacked files and unpacking archives within `caps`.
    /// Recovers entries left by an earlier run from disk and removes the
    /// scratch files of interrupted ones; this walks the cache, so call it
    /// once at startup, off the async threads if the cache is large.
    pub fn new(root: PathBuf, max_bytes: u64, caps: UnpackCaps) -> anyhow::Result<TargetCache> {
        fs::create_dir_all(&root).with_context(|| {
            format!(
                "cannot create the target cache `{}`; check the path and its permissions",
                root.display()
            )
        })?;
        let mut found = Vec::new();
        let listing = fs::read_dir(&root)
            .with_context(|| format!("cannot read the target cache `{}`", root.display()))?;
        for item in listing {
            let item =
                item.with_context(|| format!("cannot read the target cache `{}`", root.display()))?;
            let name = item.file_name().to_string_lossy().into_owned();
            let path = item.path();
            let kind = item.file_type()?;
            if is_sha256_hex(&name) && kind.is_dir() {
                let bytes = tree_bytes(&path)?;
                let used = fs::symlink_metadata(&path)
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                found.push((used, name, bytes));
            } else if SCRATCH_PREFIXES.iter().any(|p| name.starts_with(p)) {
                let removed = if kind.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                if let Err(e) = removed {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove leftover scratch entry in the target cache");
                }
            } else {
                tracing::warn!(
                    path = %path.display(),
                    "unexpected entry in the target cache; leaving it alone (the cache directory should hold only cached targets)"
                );
            }
        }
        // Oldest first, so the least recently used get the smallest clock.
        found.sort();
        let mut state = State::default();
        for (_, sha, bytes) in found {
            state.clock += 1;
            state.total += bytes;
            state.entries.insert(
                sha,
                Entry {
                    bytes,
                    last_used: state.clock,
                    leases: 0,
                },
            );
        }
        let inner = Arc::new(Inner {
            root,
            max_bytes,
            caps,
            state: Mutex::new(state),
            fetching: Mutex::new(HashMap::new()),
        });
        let trash = inner.evict(&mut inner.lock());
        remove_all(trash);
        Ok(TargetCache { inner })
    }

    /// Leases the unpacked target whose archive has digest `sha256`,
    /// downloading `targets/<sha256>.tar.zst` from `store`, verifying it and
    /// unpacking it first if it is not cached. Concurrent checkouts of one
    /// target download it once.
    pub async fn checkout(
        &self,
        sha256: &str,
        store: &dyn BlobStore,
    ) -> anyhow::Result<TargetLease> {
        if !is_sha256_hex(sha256) {
            anyhow::bail!(
                "target digest `{sha256}` is not a sha256 (64 lowercase hex digits); pass the digest printed when the target was packed"
            );
        }
        if let Some(lease) = self.inner.try_lease(sha256) {
            return Ok(lease);
        }
        let lock = self.inner.fetch_lock(sha256);
        let result = {
            let _fetching = lock.lock().await;
            match self.inner.try_lease(sha256) {
                Some(lease) => Ok(lease),
                None => self.fetch(sha256, store).await,
            }
        };
        self.inner.forget_fetch_lock(sha256, lock);
        result
    }

    async fn fetch(&self, sha256: &str, store: &dyn BlobStore) -> anyhow::Result<TargetLease> {
        let inner = &self.inner;
        let dest = inner.root.join(sha256);
        if fs::symlink_metadata(&dest).is_ok() {
            anyhow::bail!(
                "`{}` exists but this target cache did not record it; is another host process using the same cache directory? \
                 Give each process its own cache directory",
                dest.display()
            );
        }
        let scratch = tempfile::Builder::new()
            .prefix(".download-")
            .tempdir_in(&inner.root)
            .with_context(|| {
                format!(
                    "cannot create a download directory in `{}`",
                    inner.root.display()
                )
            })?;
        let archive = scratch.path().join("target.tar.zst");
        let key = target_key(sha256);
        let started = std::time::Instant::now();
        let downloaded = store.get_to_file(&key, &archive).await.map_err(|e| match e {
            StoreError::NotFound(_) => anyhow::anyhow!(
                "target {sha256} is not in {}: upload it (`{key}`) before running workflows on it",
                store.describe()
            ),
            other => anyhow::Error::new(other).context(format!(
                "cannot download target {sha256} from {}",
                store.describe()
            )),
        })?;
        tracing::debug!(
            sha256,
            bytes = downloaded,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "downloaded target"
        );
        // Verifying, unpacking and recording run to completion even if the
        // caller stops waiting, so a finished tree is never left untracked.
        let owned = Arc::clone(inner);
        let sha = sha256.to_string();
        let described = store.describe();
        tokio::task::spawn_blocking(move || {
            let actual = sha256_file(&archive)
                .with_context(|| format!("cannot read the downloaded target `{}`", archive.display()))?;
            if actual != sha {
                anyhow::bail!(
                    "the archive stored as `{}` in {described} has sha256 {actual}, not {sha}: it is corrupt or was uploaded \
                     under the wrong name; pack and upload the target again",
                    target_key(&sha)
                );
            }
            let info = unpack_target(&archive, &owned.root.join(&sha), owned.caps)
                .with_context(|| format!("cannot unpack target {sha}"))?;
            drop(scratch);
            let lease = owned.insert(&sha, info.bytes);
            tracing::info!(sha256 = sha, bytes = info.bytes, files = info.files, "cached target");
            Ok(lease)
        })
        .await
        .context("the unpack task failed")?
    }

    /// Total size of the cached targets' files, in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.inner.lock().total
    }

    /// Number of cached targets.
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// True when no target is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The size cap, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is updated in single steps; a panic elsewhere cannot
        // leave it half-changed.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lease(self: &Arc<Self>, sha256: &str) -> TargetLease {
        TargetLease {
            inner: Arc::clone(self),
            sha256: sha256.to_string(),
            path: self.root.join(sha256),
        }
    }

    fn try_lease(self: &Arc<Self>, sha256: &str) -> Option<TargetLease> {
        let path = self.root.join(sha256);
        let mut state = self.lock();
        state.clock += 1;
        let now = state.clock;
        let entry = state.entries.get_mut(sha256)?;
        if entry.leases == 0 && !path.is_dir() {
            // Removed behind our back: forget it and fetch again.
            let bytes = entry.bytes;
            state.entries.remove(sha256);
            state.total -= bytes;
            tracing::warn!(path = %path.display(), "a cached target disappeared from disk; fetching it again");
            return None;
        }
        entry.leases += 1;
        entry.last_used = now;
        drop(state);
        // Best effort: the directory's mtime orders entries after a restart.
        if let Ok(dir) = fs::File::open(&path) {
            let _ = dir.set_modified(SystemTime::now());
        }
        Some(self.lease(sha256))
    }

    /// Records a freshly unpacked target, leased once, and evicts others if
    /// that passes the cap.
    fn insert(self: &Arc<Self>, sha256: &str, bytes: u64) -> TargetLease {
        let mut state = self.lock();
        state.clock += 1;
        let now = state.clock;
        state.total += bytes;
        state.entries.insert(
            sha256.to_string(),
            Entry {
                bytes,
                last_used: now,
                leases: 1,
            },
        );
        let trash = self.evict(&mut state);
        drop(state);
        remove_all(trash);
        self.lease(sha256)
    }

    fn release(&self, sha256: &str) {
        let mut state = self.lock();
        state.clock += 1;
        let now = state.clock;
        if let Some(entry) = state.entries.get_mut(sha256) {
            entry.leases = entry.leases.saturating_sub(1);
            entry.last_used = now;
        }
        let trash = self.evict(&mut state);
        drop(state);
        if trash.is_empty() {
            return;
        }
        // Deleting a tree can take a while; keep it off the async threads.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || remove_all(trash));
            }
            Err(_) => remove_all(trash),
        }
    }

    /// Drops unleased entries, least recently used first, until the total
    /// fits the cap. Each victim is renamed out of the way while the state is
    /// locked (so a new checkout never sees half a tree) and returned for
    /// deletion after unlocking.
    fn evict(&self, state: &mut State) -> Vec<PathBuf> {
        let mut trash = Vec::new();
        while state.total > self.max_bytes {
            let victim = state
                .entries
                .iter()
                .filter(|(_, e)| e.leases == 0)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(sha, _)| sha.clone());
            let Some(sha) = victim else {
                // Everything left is in use; evict once leases are released.
                break;
            };
            if let Some(entry) = state.entries.remove(&sha) {
                state.total -= entry.bytes;
            }
            state.evicted += 1;
            let from = self.root.join(&sha);
            let to = self.root.join(format!(
                ".evict-{sha}-{}-{}",
                std::process::id(),
                state.evicted
            ));
            match fs::rename(&from, &to) {
                Ok(()) => trash.push(to),
                Err(e) => {
                    tracing::warn!(path = %from.display(), error = %e, "cannot evict a cached target")
                }
            }
            tracing::debug!(sha256 = sha, "evicted target");
        }
        trash
    }

    fn fetch_lock(&self, sha256: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(sha256.to_string()).or_default())
    }

    fn forget_fetch_lock(&self, sha256: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
        // Ours and the map's: nobody else is waiting. Our handle is dropped
        // while the map is locked, so the last of several callers sees 2.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(sha256);
        }
        drop(lock);
        drop(locks);
    }
}

fn remove_all(trash: Vec<PathBuf>) {
    for path in trash {
        if let Err(e) = fs::remove_dir_all(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete an evicted target; it is removed at the next start");
        }
    }
}

/// Bytes of regular files under `dir`, not following symlinks.
fn tree_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in walkdir::WalkDir::new(dir).follow_links(false) {
        let entry =
            entry.with_context(|| format!("cannot read cached target `{}`", dir.display()))?;
        if entry.file_type().is_file() {
            total += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{LocalStore, Progress, pack_target};
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A [`LocalStore`] that counts downloads, to prove they happen once.
    struct CountingStore {
        inner: LocalStore,
        downloads: AtomicUsize,
    }

    #[async_trait]
    impl BlobStore for CountingStore {
        async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
            self.inner.put(key, bytes).await
        }
        async fn put_file(
            &self,
            key: &str,
            path: &Path,
            progress: Progress<'_>,
        ) -> Result<(), StoreError> {
            self.inner.put_file(key, path, progress).await
        }
        async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
            self.downloads.fetch_add(1, Ordering::SeqCst);
            self.inner.get(key).await
        }
        async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
            self.downloads.fetch_add(1, Ordering::SeqCst);
            // Slow enough that concurrent checkouts overlap.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            self.inner.get_to_file(key, path).await
        }
        async fn exists(&self, key: &str) -> Result<bool, StoreError> {
            self.inner.exists(key).await
        }
        async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
            self.inner.size(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.inner.delete(key).await
        }
        fn describe(&self) -> String {
            self.inner.describe()
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        store: CountingStore,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store = CountingStore {
                inner: LocalStore::new(dir.path().join("store")),
                downloads: AtomicUsize::new(0),
            };
            Fixture { dir, store }
        }

        /// Packs and uploads a target holding `bytes` bytes; returns its digest.
        async fn target(&self, name: &str, bytes: usize) -> String {
            let tree = self.dir.path().join("trees").join(name);
            fs::create_dir_all(&tree).unwrap();
            fs::write(tree.join("data"), &name.repeat(bytes).as_bytes()[..bytes]).unwrap();
            let out = self
                .dir
                .path()
                .join("packed")
                .join(format!("{name}.tar.zst"));
            let info = pack_target(&tree, &out, None).unwrap();
            self.store
                .put_file(&target_key(&info.sha256), &out, None)
                .await
                .unwrap();
            info.sha256
        }

        fn cache(&self, max_bytes: u64) -> TargetCache {
            TargetCache::new(
                self.dir.path().join("cache"),
                max_bytes,
                UnpackCaps::default(),
            )
            .unwrap()
        }

        fn downloads(&self) -> usize {
            self.store.downloads.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn cap_is_kept_by_evicting_the_least_recently_used() {
        let f = Fixture::new();
        let (a, b, c) = (
            f.target("a", 1000).await,
            f.target("b", 1000).await,
            f.target("c", 1000).await,
        );
        let cache = f.cache(2500);
        drop(cache.checkout(&a, &f.store).await.unwrap());
        drop(cache.checkout(&b, &f.store).await.unwrap());
        // Touch `a`: now `b` is the least recently used.
        let again = cache.checkout(&a, &f.store).await.unwrap();
        assert_eq!(
            fs::read(again.path().join("data")).unwrap(),
            vec![b'a'; 1000]
        );
        drop(again);
        assert_eq!(f.downloads(), 2);
        let lease_c = cache.checkout(&c, &f.store).await.unwrap();
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.size_bytes(), 2000);
        assert!(cache.root().join(&a).is_dir());
        assert!(!cache.root().join(&b).exists());
        assert!(lease_c.path().join("data").is_file());
        drop(lease_c);
        // `b` comes back with a fresh download and pushes out `a`.
        drop(cache.checkout(&b, &f.store).await.unwrap());
        assert_eq!(f.downloads(), 4);
        assert!(!cache.root().join(&a).exists());
        assert!(cache.size_bytes() <= cache.max_bytes());
    }

    #[tokio::test]
    async fn leased_entries_are_not_evicted_until_released() {
        let f = Fixture::new();
        let (a, b) = (f.target("a", 1000).await, f.target("b", 1000).await);
        let cache = f.cache(1500);
        let lease_a = cache.checkout(&a, &f.store).await.unwrap();
        let lease_b = cache.checkout(&b, &f.store).await.unwrap();
        // Both in use: over the cap for now.
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.size_bytes(), 2000);
        assert!(lease_a.path().join("data").is_file());
        drop(lease_a);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.size_bytes(), 1000);
        assert!(!cache.root().join(&a).exists());
        assert!(lease_b.path().join("data").is_file());
        drop(lease_b);
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_checkouts_download_once() {
        let f = Fixture::new();
        let a = f.target("a", 5000).await;
        let cache = f.cache(1 << 20);
        let leases = futures::future::join_all((0..8).map(|_| cache.checkout(&a, &f.store))).await;
        let leases: Vec<_> = leases.into_iter().map(Result::unwrap).collect();
        assert_eq!(f.downloads(), 1);
        assert!(leases.iter().all(|l| l.path() == cache.root().join(&a)));
        assert_eq!(cache.len(), 1);
        assert!(cache.inner.fetching.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn archive_with_the_wrong_digest_is_rejected() {
        let f = Fixture::new();
        let a = f.target("a", 100).await;
        let wrong = "0".repeat(64);
        f.store
            .put(
                &target_key(&wrong),
                f.store.get(&target_key(&a)).await.unwrap(),
            )
            .await
            .unwrap();
        let cache = f.cache(1 << 20);
        let err = cache.checkout(&wrong, &f.store).await.unwrap_err();
        assert!(
            format!("{err:#}").contains(&format!("has sha256 {a}, not {wrong}")),
            "{err:#}"
        );
        assert!(cache.is_empty());
        assert_eq!(
            fs::read_dir(cache.root()).unwrap().count(),
            0,
            "nothing left behind"
        );

        let missing = "1".repeat(64);
        let err = cache.checkout(&missing, &f.store).await.unwrap_err();
        assert!(format!("{err:#}").contains("upload it"), "{err:#}");
        let err = cache.checkout("../etc", &f.store).await.unwrap_err();
        assert!(err.to_string().contains("not a sha256"), "{err}");
    }

    #[tokio::test]
    async fn state_is_recovered_from_disk() {
        let f = Fixture::new();
        let (a, b) = (f.target("a", 1000).await, f.target("b", 700).await);
        let cache = f.cache(1 << 20);
        drop(cache.checkout(&a, &f.store).await.unwrap());
        drop(cache.checkout(&b, &f.store).await.unwrap());
        drop(cache);
        let root = f.dir.path().join("cache");
        fs::create_dir_all(root.join(".unpack-interrupted/x")).unwrap();
        fs::create_dir_all(root.join(".download-interrupted")).unwrap();

        let cache = f.cache(1 << 20);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.size_bytes(), 1700);
        assert!(!root.join(".unpack-interrupted").exists());
        assert!(!root.join(".download-interrupted").exists());
        let before = f.downloads();
        drop(cache.checkout(&a, &f.store).await.unwrap());
        assert_eq!(f.downloads(), before, "a recovered entry is a hit");

        // Reopening with a smaller cap evicts down to it.
        let small = f.cache(1000);
        assert_eq!(small.len(), 1);
        assert!(small.size_bytes() <= 1000);
    }
}
