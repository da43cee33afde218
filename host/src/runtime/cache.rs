//! On-disk cache of compiled components, keyed by component digest plus a
//! fingerprint of the engine configuration.
//!
//! An entry is `MAGIC | sha256(artifact) | artifact`, written to a temporary
//! file and renamed into place. On load the checksum is verified before the
//! artifact is handed to wasmtime; a missing, stale, truncated or corrupt
//! entry is recompiled and rewritten, never trusted. The checksum detects
//! damage, not tampering: what makes an entry trustworthy is that only the
//! host user can write the directory ([`crate::util::private_dir`], checked
//! when the runtime starts) and the entry (checked on every load).
//!
//! The cache is capped in size: a hit refreshes an entry's modification
//! time, and after each write the least recently used entries are removed
//! until the cache fits.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"THCC\x00\x00\x00\x01";

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from a verified cache entry.
    Hit,
    /// Compiled; the cache had no entry.
    Miss,
    /// Compiled; the cache entry was corrupt or incompatible and was replaced.
    Repaired,
    /// Compiled; no cache is configured.
    Disabled,
}

/// The compile cache directory for one engine configuration.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    fingerprint: String,
    max_bytes: Option<u64>,
}

impl CompileCache {
    /// A cache in `dir` (which only the host user may write) for artifacts
    /// of `engine`, at most `max_bytes` large.
    pub fn new(dir: impl Into<PathBuf>, engine: &Engine, max_bytes: Option<u64>) -> Self {
        CompileCache {
            dir: dir.into(),
            fingerprint: engine_fingerprint(engine),
            max_bytes,
        }
    }

    /// The entry file for `digest`.
    pub fn entry_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join(format!("{digest}-{}.cwasm", self.fingerprint))
    }

    /// Returns the compiled component for `bytes` (whose sha256 is `digest`),
    /// from the cache when a verified entry exists, else by compiling.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
        compile: impl FnOnce(&[u8]) -> anyhow::Result<Component>,
    ) -> anyhow::Result<(Component, CacheOutcome)> {
        let path = self.entry_path(digest);
        let mut outcome = CacheOutcome::Miss;
        match read_own_entry(&path) {
            Ok(entry) => match verified_artifact(&entry) {
                Some(artifact) => {
                    // SAFETY: `Component::deserialize` runs its input as
                    // native code, trusting it to be an artifact wasmtime
                    // produced. The invariant that makes this one so: only
                    // the host user can write the cache directory and its
                    // ancestors (checked with `private_dir::ensure` when the
                    // runtime started) and this entry file (checked on the
                    // open descriptor by `read_own_entry`), and this host
                    // writes entries only from `Component::serialize`, for an
                    // engine whose configuration fingerprint is in the file
                    // name. The sha256 just verified rules out a torn or
                    // damaged file (it is not an authentication), and
                    // wasmtime itself checks the header and engine
                    // compatibility, returning an error (handled below).
                    #[allow(unsafe_code)]
                    match unsafe { Component::deserialize(engine, artifact) } {
                        Ok(component) => {
                            touch(&path);
                            return Ok((component, CacheOutcome::Hit));
                        }
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "compile cache entry is incompatible; recompiling");
                            outcome = CacheOutcome::Repaired;
                        }
                    }
                }
                None => {
                    tracing::warn!(path = %path.display(), "compile cache entry is corrupt; recompiling");
                    outcome = CacheOutcome::Repaired;
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "compile cache entry not used; recompiling");
                outcome = CacheOutcome::Repaired;
            }
        }
        let component = compile(bytes)?;
        match component.serialize() {
            Ok(artifact) => {
                if let Err(e) = write_entry(&self.dir, &path, &artifact) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write compile cache entry");
                } else if let Some(max) = self.max_bytes {
                    self.evict(max, &path);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialize compiled component"),
        }
        Ok((component, outcome))
    }
}

impl CompileCache {
    /// Removes the least recently used entries (by modification time, which
    /// a hit refreshes) until the cache holds at most `max` bytes; `keep`,
    /// the entry just written, stays. Returns how many were removed.
    pub fn evict(&self, max: u64, keep: &Path) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                meta.is_file().then(|| {
                    (
                        meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                        meta.len(),
                        e.path(),
                    )
                })
            })
            .collect();
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        files.sort();
        let mut removed = 0;
        for (_, len, path) in files {
            if total <= max {
                break;
            }
            if path == keep {
                continue;
            }
            // Another process may be removing it too, or loading it (it
            // then keeps its open file); either way it is gone from here.
            if std::fs::remove_file(&path).is_ok() {
                tracing::debug!(path = %path.display(), "compile cache entry evicted");
                removed += 1;
            }
            total = total.saturating_sub(len);
        }
        removed
    }
}

/// Reads the entry at `path` if the host user owns it and nobody else may
/// write it (checked on the open file, so it cannot be swapped between the
/// check and the read).
fn read_own_entry(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if meta.uid() != crate::util::private_dir::uid() || meta.mode() & 0o022 != 0 || !meta.is_file()
    {
        return Err(std::io::Error::other(format!(
            "owned by uid {} with mode {:o}: only the host user's own entries are loaded",
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Marks an entry as just used (eviction goes by modification time).
fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().write(true).open(path) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// A stable description of the engine's code-generation settings.
pub fn engine_fingerprint(engine: &Engine) -> String {
    let mut h = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    format!("{:016x}", h.finish())
}

fn verified_artifact(entry: &[u8]) -> Option<&[u8]> {
    let rest = entry.strip_prefix(MAGIC.as_slice())?;
    if rest.len() < 32 {
        return None;
    }
    let (sum, artifact) = rest.split_at(32);
    (Sha256::digest(artifact).as_slice() == sum).then_some(artifact)
}

fn write_entry(dir: &Path, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(MAGIC)?;
    tmp.write_all(&Sha256::digest(artifact))?;
    tmp.write_all(artifact)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{EngineOptions, engine_config};

    const WAT: &str = r#"(component (core module (func (export "f"))))"#;

    fn compile(engine: &Engine) -> impl FnOnce(&[u8]) -> anyhow::Result<Component> + '_ {
        move |b| Component::new(engine, b).map_err(anyhow::Error::from)
    }

    #[test]
    fn artifacts_from_the_shared_config_round_trip_and_corruption_is_repaired() {
        let engine = Engine::new(&engine_config(&EngineOptions::default())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path(), &engine, None);
        let bytes = WAT.as_bytes().to_vec();
        let digest = crate::toolbox::digest(&bytes);

        let (_, first) = cache
            .load_or_compile(&engine, &digest, &bytes, compile(&engine))
            .unwrap();
        assert_eq!(first, CacheOutcome::Miss);
        let (_, second) = cache
            .load_or_compile(&engine, &digest, &bytes, compile(&engine))
            .unwrap();
        assert_eq!(
            second,
            CacheOutcome::Hit,
            "artifacts of the shared Config load"
        );

        // Flip one byte in the middle of the artifact: detected, recompiled, rewritten.
        let path = cache.entry_path(&digest);
        let mut entry = std::fs::read(&path).unwrap();
        let mid = entry.len() / 2;
        entry[mid] ^= 0xff;
        std::fs::write(&path, &entry).unwrap();
        let (_, third) = cache
            .load_or_compile(&engine, &digest, &bytes, compile(&engine))
            .unwrap();
        assert_eq!(third, CacheOutcome::Repaired);
        let (_, fourth) = cache
            .load_or_compile(&engine, &digest, &bytes, compile(&engine))
            .unwrap();
        assert_eq!(fourth, CacheOutcome::Hit);

        // A truncated entry is repaired too.
        std::fs::write(&path, &MAGIC[..4]).unwrap();
        let (_, fifth) = cache
            .load_or_compile(&engine, &digest, &bytes, compile(&engine))
            .unwrap();
        assert_eq!(fifth, CacheOutcome::Repaired);
    }

    #[test]
    fn the_cache_keeps_to_its_size_and_evicts_the_least_recently_used() {
        let engine = Engine::new(&engine_config(&EngineOptions::default())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let wat = |i: usize| format!(r#"(component (core module (func (export "f{i}"))))"#);
        let unbounded = CompileCache::new(dir.path(), &engine, None);
        let digests: Vec<String> = (0..4)
            .map(|i| {
                let bytes = wat(i).into_bytes();
                let digest = crate::toolbox::digest(&bytes);
                unbounded
                    .load_or_compile(&engine, &digest, &bytes, compile(&engine))
                    .unwrap();
                digest
            })
            .collect();
        let size = std::fs::metadata(unbounded.entry_path(&digests[0]))
            .unwrap()
            .len();
        // Entry 0 is the oldest by creation, but used last: it stays.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for (i, d) in digests.iter().enumerate() {
            let f = std::fs::File::options()
                .write(true)
                .open(unbounded.entry_path(d))
                .unwrap();
            f.set_modified(old + std::time::Duration::from_secs(i as u64))
                .unwrap();
        }
        let bytes = wat(0).into_bytes();
        let (_, hit) = unbounded
            .load_or_compile(&engine, &digests[0], &bytes, compile(&engine))
            .unwrap();
        assert_eq!(hit, CacheOutcome::Hit);
        // Room for two entries and a half: writing a fifth one evicts three.
        let capped = CompileCache::new(dir.path(), &engine, Some(size * 5 / 2));
        let bytes = wat(4).into_bytes();
        let fifth = crate::toolbox::digest(&bytes);
        capped
            .load_or_compile(&engine, &fifth, &bytes, compile(&engine))
            .unwrap();
        let left: Vec<bool> = digests
            .iter()
            .map(|d| capped.entry_path(d).exists())
            .collect();
        assert_eq!(left, [true, false, false, false]);
        assert!(capped.entry_path(&fifth).exists());
    }

    #[test]
    fn an_entry_others_may_write_is_not_loaded() {
        use std::os::unix::fs::PermissionsExt;
        let engine = Engine::new(&engine_config(&EngineOptions::default())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path(), &engine, None);
        let bytes = WAT.as_bytes().to_vec();
        let digest = crate::toolbox::digest(&bytes);
        cache
            .load_or_compile(&engine, &digest, &bytes, compile(&engine))
            .unwrap();
        let path = cache.entry_path(&digest);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let (_, outcome) = cache
            .load_or_compile(&engine, &digest, &bytes, compile(&engine))
            .unwrap();
        assert_eq!(
            outcome,
            CacheOutcome::Repaired,
            "a world-writable entry is recompiled"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "and replaced by a private one");
    }

    #[test]
    fn a_different_engine_config_uses_a_different_entry() {
        let a = Engine::new(&engine_config(&EngineOptions::default())).unwrap();
        let b = Engine::new(&engine_config(&EngineOptions {
            consume_fuel: true,
            ..Default::default()
        }))
        .unwrap();
        assert_ne!(engine_fingerprint(&a), engine_fingerprint(&b));
    }
}
