//! Directories only the host user may write: the work directory (run
//! workspaces and tool homes) and the compile cache (native code the host
//! loads). A directory another user can write, or swap through a writable
//! ancestor, would let them read targets, plant files in a run or, for the
//! compile cache, run code in the host. This module creates such
//! directories with mode 0700 and refuses existing ones it cannot trust.
//!
//! The rule, for the directory and each of its ancestors: owned by root or
//! by the host user, and not writable by group or others, except for a
//! sticky directory such as `/tmp`, below which every component must be
//! the host user's own. Symlinks are resolved first, and one that sits in a
//! directory others may write is refused.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Why a directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PrivateDirError {
    /// A component belongs to another user.
    #[error(
        "`{path}` is owned by uid {owner}, not by the host user (uid {uid}) or root: another user controls it. Remove it, or configure a directory of your own"
    )]
    ForeignOwner { path: PathBuf, owner: u32, uid: u32 },
    /// A component may be written by others.
    #[error(
        "`{path}` is writable by {who} (mode {mode:o}): they could replace what Toolhost keeps below it. Run `chmod go-w {path}`, or configure another directory"
    )]
    Writable {
        path: PathBuf,
        mode: u32,
        who: &'static str,
    },
    /// A symlink in a directory others may write.
    #[error(
        "`{path}` is a symlink in a directory others may write; it could point anywhere. Remove it, or configure a real directory"
    )]
    UntrustedSymlink { path: PathBuf },
    /// Not a directory.
    #[error("`{path}` exists and is not a directory")]
    NotADirectory { path: PathBuf },
    /// The path is relative.
    #[error("`{path}` is not an absolute path")]
    Relative { path: PathBuf },
    /// The file system refused.
    #[error("cannot create or inspect `{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PrivateDirError + '_ {
    move |source| PrivateDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The host user's uid.
pub fn uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Creates `dir` (and missing parents) with mode 0700 when it does not
/// exist, after checking every existing ancestor; then checks `dir`.
/// Returns the directory with symlinks resolved.
pub fn ensure(dir: &Path) -> Result<PathBuf, PrivateDirError> {
    if !dir.is_absolute() {
        return Err(PrivateDirError::Relative {
            path: dir.to_path_buf(),
        });
    }
    let uid = uid();
    let mut at = PathBuf::from("/");
    // Once below a sticky, world-writable directory, every component must
    // be the host user's own: root's is not enough (anyone could have
    // created it there before root did, through a root-run tool).
    let mut below_sticky = false;
    for part in dir.components() {
        let name = match part {
            Component::Normal(n) => n,
            Component::RootDir | Component::CurDir => continue,
            // `at` is resolved (no symlinks), so `..` is its parent, as the
            // kernel would take it.
            Component::ParentDir => {
                at.pop();
                continue;
            }
            Component::Prefix(_) => {
                return Err(PrivateDirError::Relative {
                    path: dir.to_path_buf(),
                });
            }
        };
        let next = at.join(name);
        match std::fs::symlink_metadata(&next) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match std::fs::DirBuilder::new().mode(0o700).create(&next) {
                    Ok(()) => {}
                    // Someone created it meanwhile: judged below like any existing one.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io(&next)(e)),
                }
                at = judge(&at, &next, uid, &mut below_sticky)?;
            }
            Err(e) => return Err(io(&next)(e)),
            Ok(_) => at = judge(&at, &next, uid, &mut below_sticky)?,
        }
    }
    Ok(at)
}

/// Checks `dir` and its ancestors without creating anything.
pub fn check(dir: &Path) -> Result<PathBuf, PrivateDirError> {
    if !dir.is_absolute() {
        return Err(PrivateDirError::Relative {
            path: dir.to_path_buf(),
        });
    }
    let uid = uid();
    let mut at = PathBuf::from("/");
    let mut below_sticky = false;
    for part in dir.components() {
        match part {
            Component::Normal(name) => {
                let next = at.join(name);
                at = judge(&at, &next, uid, &mut below_sticky)?;
            }
            Component::ParentDir => {
                at.pop();
            }
            _ => {}
        }
    }
    Ok(at)
}

/// Judges the existing `path` (a child of the already judged `parent`);
/// returns it with a symlink resolved.
fn judge(
    parent: &Path,
    path: &Path,
    uid: u32,
    below_sticky: &mut bool,
) -> Result<PathBuf, PrivateDirError> {
    let lmeta = std::fs::symlink_metadata(path).map_err(io(path))?;
    let resolved = if lmeta.file_type().is_symlink() {
        let pmeta = std::fs::metadata(parent).map_err(io(parent))?;
        if pmeta.mode() & 0o022 != 0 || (lmeta.uid() != uid && lmeta.uid() != 0) {
            return Err(PrivateDirError::UntrustedSymlink {
                path: path.to_path_buf(),
            });
        }
        let target = std::fs::canonicalize(path).map_err(io(path))?;
        // The link's target is judged as a path of its own, from the root.
        let judged = check(&target)?;
        *below_sticky = false;
        judged
    } else {
        path.to_path_buf()
    };
    let meta = std::fs::metadata(&resolved).map_err(io(&resolved))?;
    if !meta.is_dir() {
        return Err(PrivateDirError::NotADirectory { path: resolved });
    }
    let owner = meta.uid();
    if owner != uid && (owner != 0 || *below_sticky) {
        return Err(PrivateDirError::ForeignOwner {
            path: resolved,
            owner,
            uid,
        });
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        let sticky = mode & 0o1000 != 0;
        if !sticky || *below_sticky {
            let who = if mode & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            };
            return Err(PrivateDirError::Writable {
                path: resolved,
                mode: mode & 0o7777,
                who,
            });
        }
        *below_sticky = true;
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory outside `/tmp`: below a sticky directory every
    /// component must be the user's own, which some cases need to avoid.
    fn base() -> tempfile::TempDir {
        tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")).unwrap()
    }

    #[test]
    fn creates_missing_directories_private() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("a/b/work");
        let got = ensure(&dir).unwrap();
        assert_eq!(got, dir.canonicalize().unwrap());
        for d in [base.path().join("a"), base.path().join("a/b"), dir.clone()] {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        // Existing and fine: accepted again.
        ensure(&dir).unwrap();
        check(&dir).unwrap();
    }

    #[test]
    fn writable_by_others_is_refused() {
        let base = base();
        let dir = base.path().join("shared");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure(&dir.join("work")).unwrap_err();
        assert!(matches!(e, PrivateDirError::Writable { .. }), "{e}");
        assert!(e.to_string().contains("chmod go-w"), "{e}");
        // Sticky and world-writable, like /tmp: fine, and what is below
        // must be the host user's own.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        ensure(&dir.join("work")).unwrap();
        // A group-writable directory below a sticky one is refused.
        let below = dir.join("grp");
        std::fs::create_dir(&below).unwrap();
        std::fs::set_permissions(&below, std::fs::Permissions::from_mode(0o770)).unwrap();
        assert!(matches!(
            check(&below),
            Err(PrivateDirError::Writable { .. })
        ));
    }

    #[test]
    fn symlinks_in_sticky_directories_and_files_are_refused() {
        let base = base();
        let sticky = base.path().join("tmp");
        std::fs::create_dir(&sticky).unwrap();
        std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let elsewhere = base.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, sticky.join("toolhost-user")).unwrap();
        let e = ensure(&sticky.join("toolhost-user/work")).unwrap_err();
        assert!(matches!(e, PrivateDirError::UntrustedSymlink { .. }), "{e}");
        // The same link in a private directory is followed and judged.
        let private = base.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::os::unix::fs::symlink(&elsewhere, private.join("link")).unwrap();
        let got = ensure(&private.join("link/work")).unwrap();
        assert_eq!(got, elsewhere.canonicalize().unwrap().join("work"));
        std::fs::write(base.path().join("file"), "x").unwrap();
        assert!(matches!(
            ensure(&base.path().join("file/work")),
            Err(PrivateDirError::NotADirectory { .. })
        ));
        assert!(matches!(
            ensure(Path::new("relative")),
            Err(PrivateDirError::Relative { .. })
        ));
    }

    #[test]
    fn another_users_directory_is_refused() {
        // Needs a second uid to own something: only root can arrange that.
        if uid() != 0 {
            return;
        }
        let base = tempfile::tempdir().unwrap();
        let theirs = base.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let e = ensure(&theirs.join("work")).unwrap_err();
        assert!(
            matches!(e, PrivateDirError::ForeignOwner { owner: 65534, .. }),
            "{e}"
        );
    }
}
