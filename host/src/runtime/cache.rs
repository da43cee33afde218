//! On-disk cache of compiled components, keyed by component digest plus a
//! fingerprint of the engine configuration.
//!
//! An entry is `MAGIC | sha256(artifact) | artifact`, written to a temporary
//! file and renamed into place. On load the checksum is verified before the
//! artifact is handed to wasmtime; a missing, stale, truncated or corrupt
//! entry is recompiled and rewritten, never trusted.

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
}

impl CompileCache {
    /// A cache in `dir` for artifacts of `engine`.
    pub fn new(dir: impl Into<PathBuf>, engine: &Engine) -> Self {
        CompileCache {
            dir: dir.into(),
            fingerprint: engine_fingerprint(engine),
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
        match std::fs::read(&path) {
            Ok(entry) => match verified_artifact(&entry) {
                Some(artifact) => {
                    // SAFETY: `Component::deserialize` trusts its input to be
                    // an artifact wasmtime produced. This one was produced by
                    // `Component::serialize` of this host, for an engine with
                    // the same configuration fingerprint (in the file name),
                    // written atomically, and its sha256 was just verified,
                    // so it is byte-for-byte what was serialized. wasmtime
                    // additionally checks the header and engine compatibility
                    // and returns an error (handled below) on mismatch.
                    #[allow(unsafe_code)]
                    match unsafe { Component::deserialize(engine, artifact) } {
                        Ok(component) => return Ok((component, CacheOutcome::Hit)),
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
                tracing::warn!(path = %path.display(), error = %e, "cannot read compile cache entry; recompiling");
                outcome = CacheOutcome::Repaired;
            }
        }
        let component = compile(bytes)?;
        match component.serialize() {
            Ok(artifact) => {
                if let Err(e) = write_entry(&self.dir, &path, &artifact) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write compile cache entry");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialize compiled component"),
        }
        Ok((component, outcome))
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
    std::fs::create_dir_all(dir)?;
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
        let cache = CompileCache::new(dir.path(), &engine);
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
