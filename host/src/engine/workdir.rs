//! The work directory: where each run gets its scratch directory
//! (`<work_dir>/<run-id>/`, holding `workspace/` and the tools' `home/`).
//!
//! Two things make a work directory unfit, and both are refused with the
//! reason instead of giving silently wrong results:
//!
//! * another user owning or able to write it or an ancestor
//!   ([`crate::util::private_dir`]): they could read targets or plant files
//!   in a run;
//! * configuration above it that tools discover by walking up from their
//!   working directory (cargo reads every `.cargo/config.toml` from the
//!   workspace up to `/`, rustup every `rust-toolchain.toml`). The sandbox
//!   rightly refuses to let a tool read such a file, so the tool fails
//!   ("could not load Cargo configuration") and a scan loses its results;
//!   and were it readable, the host's settings would leak into the run.
//!   This is what happens to a work directory inside a project checkout.
//!
//! The check runs when an engine starts and again before each run, so a
//! file planted later (another local user creating `/tmp/.cargo/`) fails
//! the run with the reason rather than its analysis.

use std::path::{Path, PathBuf};

/// Files that tools look for in every ancestor of their working directory,
/// with the tool that reads them.
pub const ANCESTOR_CONFIG: &[(&str, &str)] = &[
    (".cargo/config.toml", "cargo"),
    (".cargo/config", "cargo"),
    ("rust-toolchain.toml", "rustup"),
    ("rust-toolchain", "rustup"),
];

/// Why a work directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WorkDirError {
    /// Ownership or permissions.
    #[error("work directory `{dir}`: {source}")]
    Private {
        dir: PathBuf,
        source: crate::util::private_dir::PrivateDirError,
    },
    /// Configuration above it.
    #[error(
        "work directory `{dir}` is below `{found}`, which {tool} reads from every directory above a workspace; tools may not read it, so {tool} would fail in every run. Set `work_dir` in the host config to a directory outside that tree (the default, under the system temp directory, is), or remove the file"
    )]
    AncestorConfig {
        dir: PathBuf,
        found: PathBuf,
        tool: &'static str,
    },
    /// The scratch directory of a run.
    #[error("cannot create the run directory `{dir}`: {source}")]
    Scratch {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Creates (0700) and checks the work directory; returns it with symlinks
/// resolved.
pub fn prepare(work_dir: &Path) -> Result<PathBuf, WorkDirError> {
    let dir =
        crate::util::private_dir::ensure(work_dir).map_err(|source| WorkDirError::Private {
            dir: work_dir.to_path_buf(),
            source,
        })?;
    check_ancestors(&dir)?;
    Ok(dir)
}

/// Fails when a directory above `dir` (or `dir` itself) holds a file of
/// [`ANCESTOR_CONFIG`].
pub fn check_ancestors(dir: &Path) -> Result<(), WorkDirError> {
    for ancestor in dir.ancestors() {
        for (name, tool) in ANCESTOR_CONFIG {
            let found = ancestor.join(name);
            if std::fs::symlink_metadata(&found).is_ok() {
                return Err(WorkDirError::AncestorConfig {
                    dir: dir.to_path_buf(),
                    found,
                    tool,
                });
            }
        }
    }
    Ok(())
}

/// A fresh, empty scratch directory for run `run_id` (mode 0700), after
/// checking the work directory again. An existing one (a reused run id) is
/// removed first.
pub fn create_scratch(work_dir: &Path, run_id: &str) -> Result<PathBuf, WorkDirError> {
    let work = prepare(work_dir)?;
    let dir = work.join(run_id);
    let scratch = |source| WorkDirError::Scratch {
        dir: dir.clone(),
        source,
    };
    if std::fs::symlink_metadata(&dir).is_ok() {
        std::fs::remove_dir_all(&dir).map_err(scratch)?;
    }
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(scratch)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_above_the_work_directory_is_refused_with_the_reason() {
        let checkout = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(checkout.path().join(".cargo")).unwrap();
        std::fs::write(checkout.path().join(".cargo/config.toml"), "[build]\n").unwrap();
        let work = checkout.path().join(".toolhost/work");
        let e = prepare(&work).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(".cargo/config.toml")
                && text.contains("cargo reads")
                && text.contains("work_dir"),
            "{text}"
        );
        std::fs::remove_file(checkout.path().join(".cargo/config.toml")).unwrap();
        std::fs::write(checkout.path().join("rust-toolchain.toml"), "").unwrap();
        assert!(prepare(&work).unwrap_err().to_string().contains("rustup"));
        std::fs::remove_file(checkout.path().join("rust-toolchain.toml")).unwrap();
        prepare(&work).unwrap();
    }

    #[test]
    fn scratch_directories_are_private_and_fresh() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let work = base.path().join("work");
        let dir = create_scratch(&work, "run-1").unwrap();
        std::fs::write(dir.join("left-over"), "x").unwrap();
        let again = create_scratch(&work, "run-1").unwrap();
        assert_eq!(dir, again);
        assert!(!again.join("left-over").exists());
        let mode = std::fs::metadata(&again).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let mode = std::fs::metadata(&work).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
