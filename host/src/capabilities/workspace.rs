//! The `workspace` interface: file access confined to the run workspace.
//!
//! Paths are checked lexically first (no absolute paths, no `..` above the
//! root, no NUL, bounded length) and then opened through a `cap_std::fs::Dir`
//! rooted at the workspace, which refuses any symlink that leads outside. It
//! must never open a host path any other way.

use std::io::{ErrorKind, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptionsExt as _};

use crate::runtime::GuestState;
use crate::runtime::bindings::toolhost::workflow::workspace::{DirEntry, EntryKind, FsError, Host};

/// Longest accepted workspace path, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Most entries one `list-dir` call returns.
pub const MAX_LIST_ENTRIES: usize = 200_000;

/// A run's workspace directory and its write quota.
pub struct Workspace {
    root: PathBuf,
    dir: Dir,
    written: AtomicU64,
    write_quota: u64,
    max_read: u64,
}

impl Workspace {
    /// Opens the workspace at `root` (which must exist) with the run's
    /// write quota and per-read cap.
    pub fn open(
        root: &Path,
        limits: &crate::runtime::limits::GuestLimits,
    ) -> std::io::Result<Self> {
        Ok(Workspace {
            root: root.to_path_buf(),
            dir: Dir::open_ambient_dir(root, ambient_authority())?,
            written: AtomicU64::new(0),
            write_quota: limits.write_quota_mib.saturating_mul(1 << 20),
            max_read: limits.max_read_mib.saturating_mul(1 << 20),
        })
    }

    /// The host path of the workspace root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Charges `bytes` to the run's write quota.
    pub fn charge_write(&self, bytes: u64) -> Result<(), FsError> {
        let total = self.written.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total > self.write_quota {
            return Err(FsError::QuotaExceeded(format!(
                "the run may write at most {} MiB to its workspace and artifacts (`limits.write_quota_mib`)",
                self.write_quota >> 20
            )));
        }
        Ok(())
    }

    /// Reads `path` entirely, if it is at most the per-read cap
    /// (`limits.max_read_mib`): host memory holds the whole file on its way
    /// into the guest.
    pub fn read(&self, path: &str) -> Result<Vec<u8>, FsError> {
        let rel = checked_path(path)?;
        // Non-blocking, so a FIFO or device that got into the workspace
        // cannot block the host; only regular files are read.
        let mut options = cap_std::fs::OpenOptions::new();
        options
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY);
        let file = self
            .dir
            .open_with(&rel, &options)
            .map_err(|e| io_error(path, e))?;
        let meta = file.metadata().map_err(|e| io_error(path, e))?;
        if !meta.is_file() {
            return Err(FsError::Io(format!(
                "`{path}` is not a regular file{}",
                if meta.is_dir() {
                    " (a directory: use `list-dir`)"
                } else {
                    ""
                }
            )));
        }
        let too_big = |size: u64| {
            FsError::QuotaExceeded(format!(
                "`{path}` is {size} bytes; `workspace.read` returns at most {} MiB (`limits.max_read_mib`). Read big files from activity code, in pieces, through `/workspace`",
                self.max_read >> 20
            ))
        };
        let size = meta.len();
        if size > self.max_read {
            return Err(too_big(size));
        }
        // The file may grow while it is read: never past the cap.
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.take(self.max_read + 1)
            .read_to_end(&mut buf)
            .map_err(|e| io_error(path, e))?;
        if buf.len() as u64 > self.max_read {
            return Err(too_big(buf.len() as u64));
        }
        Ok(buf)
    }

    /// Writes `contents` to `path`, creating parent directories.
    pub fn write(&self, path: &str, contents: &[u8]) -> Result<(), FsError> {
        let rel = checked_path(path)?;
        if rel.as_os_str().is_empty() {
            return Err(FsError::InvalidPath(
                "cannot write to the workspace root".into(),
            ));
        }
        self.charge_write(contents.len() as u64)?;
        if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty())
            && let Err(e) = self.dir.create_dir_all(parent)
        {
            // A parent that is a symlink leading out shows up as "exists";
            // tell the guest what really happened.
            if let Err(esc) = self.dir.canonicalize(parent) {
                return Err(io_error(path, esc));
            }
            return Err(io_error(path, e));
        }
        let mut file = self.dir.create(&rel).map_err(|e| io_error(path, e))?;
        file.write_all(contents).map_err(|e| io_error(path, e))
    }

    /// Lists `path`, recursively if asked; symlinks are reported, not followed.
    pub fn list(&self, path: &str, recursive: bool) -> Result<Vec<DirEntry>, FsError> {
        let rel = checked_path(path)?;
        let mut out = Vec::new();
        let mut pending = vec![rel];
        while let Some(dir_rel) = pending.pop() {
            let entries = if dir_rel.as_os_str().is_empty() {
                self.dir.entries()
            } else {
                self.dir.read_dir(&dir_rel)
            }
            .map_err(|e| io_error(path, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| io_error(path, e))?;
                let name = entry.file_name();
                let child = dir_rel.join(&name);
                let ft = entry.file_type().map_err(|e| io_error(path, e))?;
                let kind = if ft.is_symlink() {
                    EntryKind::Symlink
                } else if ft.is_dir() {
                    EntryKind::Directory
                } else if ft.is_file() {
                    EntryKind::File
                } else {
                    EntryKind::Other
                };
                let size = if matches!(kind, EntryKind::File) {
                    entry.metadata().map(|m| m.len()).unwrap_or(0)
                } else {
                    0
                };
                if recursive && matches!(kind, EntryKind::Directory) {
                    pending.push(child.clone());
                }
                out.push(DirEntry {
                    path: to_slash(&child),
                    kind,
                    size,
                });
                if out.len() > MAX_LIST_ENTRIES {
                    return Err(FsError::Io(format!(
                        "`{path}` has more than {MAX_LIST_ENTRIES} entries; list a subdirectory"
                    )));
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// True when something exists at `path` (a dangling or escaping symlink counts).
    pub fn exists(&self, path: &str) -> Result<bool, FsError> {
        let rel = checked_path(path)?;
        if rel.as_os_str().is_empty() {
            return Ok(true);
        }
        match self.dir.symlink_metadata(&rel) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(path, e)),
        }
    }

    /// Resolves `path` to a host path inside the workspace for a tool's cwd:
    /// it must be an existing directory reached without leaving the workspace.
    pub fn host_dir(&self, path: &str) -> Result<PathBuf, FsError> {
        let rel = checked_path(path)?;
        if rel.as_os_str().is_empty() {
            return Ok(self.root.clone());
        }
        let meta = self.dir.metadata(&rel).map_err(|e| io_error(path, e))?;
        if !meta.is_dir() {
            return Err(FsError::InvalidPath(format!("`{path}` is not a directory")));
        }
        // cap-std followed any symlinks without leaving the root; resolve the
        // same way on the host and check it again.
        let host = self
            .root
            .join(&rel)
            .canonicalize()
            .map_err(|e| io_error(path, e))?;
        let root = self.root.canonicalize().map_err(|e| io_error(path, e))?;
        if !host.starts_with(&root) {
            return Err(FsError::InvalidPath(format!(
                "`{path}` resolves outside the workspace"
            )));
        }
        Ok(host)
    }
}

/// Checks a guest path lexically and returns it relative to the root
/// (empty for the root itself).
pub fn checked_path(path: &str) -> Result<PathBuf, FsError> {
    if path.len() > MAX_PATH_LEN {
        return Err(FsError::InvalidPath(format!(
            "path is {} bytes long; the limit is {MAX_PATH_LEN}",
            path.len()
        )));
    }
    if path.contains('\0') {
        return Err(FsError::InvalidPath("path contains a NUL byte".into()));
    }
    if path.starts_with('/') || path.starts_with('\\') {
        return Err(FsError::InvalidPath(format!(
            "`{path}` is absolute; workspace paths are relative to the workspace root"
        )));
    }
    let mut out = PathBuf::new();
    for comp in Path::new(path).components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(FsError::InvalidPath(format!(
                        "`{path}` escapes the workspace with `..`"
                    )));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(FsError::InvalidPath(format!("`{path}` is absolute")));
            }
        }
    }
    Ok(out)
}

/// A workspace error as a sentence (for messages built by the host).
pub fn describe(e: &FsError) -> String {
    match e {
        FsError::InvalidPath(m)
        | FsError::NotFound(m)
        | FsError::QuotaExceeded(m)
        | FsError::Io(m) => m.clone(),
    }
}

fn to_slash(p: &Path) -> String {
    p.to_string_lossy().replace('\\', "/")
}

fn io_error(path: &str, e: std::io::Error) -> FsError {
    match e.kind() {
        ErrorKind::NotFound => FsError::NotFound(format!("`{path}` does not exist")),
        // cap-std reports symlinks leading out of the root this way.
        ErrorKind::PermissionDenied if e.to_string().contains("outside") => {
            FsError::InvalidPath(format!("`{path}` leads outside the workspace (symlink)"))
        }
        _ if e.to_string().contains("outside of the filesystem") => {
            FsError::InvalidPath(format!("`{path}` leads outside the workspace (symlink)"))
        }
        _ => FsError::Io(format!("`{path}`: {e}")),
    }
}

impl Host for GuestState {
    async fn read(&mut self, path: String) -> anyhow::Result<Result<Vec<u8>, FsError>> {
        if let Some(steps) = self.run.steps_for(self.kind) {
            return steps.read(path).await;
        }
        Ok(self.run.workspace.read(&path))
    }

    async fn write(
        &mut self,
        path: String,
        contents: Vec<u8>,
    ) -> anyhow::Result<Result<(), FsError>> {
        if let Some(steps) = self.run.steps_for(self.kind) {
            return steps.write(path, contents).await;
        }
        Ok(self.run.workspace.write(&path, &contents))
    }

    async fn list_dir(
        &mut self,
        path: String,
        recursive: bool,
    ) -> anyhow::Result<Result<Vec<DirEntry>, FsError>> {
        if let Some(steps) = self.run.steps_for(self.kind) {
            return steps.list_dir(path, recursive).await;
        }
        Ok(self.run.workspace.list(&path, recursive))
    }

    async fn exists(&mut self, path: String) -> anyhow::Result<Result<bool, FsError>> {
        if let Some(steps) = self.run.steps_for(self.kind) {
            return steps.exists(path).await;
        }
        Ok(self.run.workspace.exists(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws() -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/a.rs"), "fn a() {}").unwrap();
        let limits = crate::runtime::limits::GuestLimits {
            write_quota_mib: 1,
            max_read_mib: 1,
            ..Default::default()
        };
        let ws = Workspace::open(dir.path(), &limits).unwrap();
        (dir, ws)
    }

    #[test]
    fn reading_a_fifo_or_a_directory_fails_at_once() {
        let (dir, ws) = ws();
        nix::unistd::mkfifo(&dir.path().join("pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Without O_NONBLOCK this open would wait for a writer forever.
        let err = ws.read("pipe").unwrap_err();
        assert!(
            matches!(&err, FsError::Io(m) if m.contains("not a regular file")),
            "{err:?}"
        );
        let err = ws.read("src").unwrap_err();
        assert!(
            matches!(&err, FsError::Io(m) if m.contains("use `list-dir`")),
            "{err:?}"
        );
        assert_eq!(ws.read("src/a.rs").unwrap(), b"fn a() {}");
    }

    #[test]
    fn lexical_checks_reject_escapes() {
        assert!(checked_path("src/../a").is_ok());
        assert!(matches!(checked_path("../x"), Err(FsError::InvalidPath(_))));
        assert!(matches!(
            checked_path("src/../../x"),
            Err(FsError::InvalidPath(_))
        ));
        assert!(matches!(
            checked_path("/etc/passwd"),
            Err(FsError::InvalidPath(_))
        ));
        assert!(matches!(checked_path("a\0b"), Err(FsError::InvalidPath(_))));
        assert!(matches!(
            checked_path(&"a/".repeat(3000)),
            Err(FsError::InvalidPath(_))
        ));
        assert_eq!(checked_path(".").unwrap(), PathBuf::new());
    }

    #[test]
    fn reads_writes_and_lists_inside() {
        let (_d, ws) = ws();
        assert_eq!(ws.read("src/a.rs").unwrap(), b"fn a() {}");
        ws.write("out/report.txt", b"ok").unwrap();
        assert!(ws.exists("out/report.txt").unwrap());
        let all: Vec<_> = ws
            .list("", true)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(all, ["out", "out/report.txt", "src", "src/a.rs"]);
        assert!(matches!(ws.read("nope"), Err(FsError::NotFound(_))));
    }

    #[test]
    fn symlinks_out_of_the_workspace_are_refused() {
        let (d, ws) = ws();
        std::os::unix::fs::symlink("/etc", d.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", d.path().join("host")).unwrap();
        assert!(
            matches!(ws.read("etc/hostname"), Err(FsError::InvalidPath(_))),
            "{:?}",
            ws.read("etc/hostname")
        );
        assert!(matches!(ws.read("host"), Err(FsError::InvalidPath(_))));
        let w = ws.write("etc/evil", b"x");
        assert!(matches!(w, Err(FsError::InvalidPath(_))), "{w:?}");
        assert!(matches!(ws.host_dir("etc"), Err(FsError::InvalidPath(_))));
    }

    #[test]
    fn reads_are_capped() {
        let (d, ws) = ws();
        std::fs::write(d.path().join("big"), vec![b'x'; (1 << 20) + 1]).unwrap();
        std::fs::write(d.path().join("fits"), vec![b'x'; 1 << 20]).unwrap();
        let e = ws.read("big").unwrap_err();
        assert!(
            matches!(&e, FsError::QuotaExceeded(m) if m.contains("1048577 bytes") && m.contains("max_read_mib")),
            "{e:?}"
        );
        assert_eq!(ws.read("fits").unwrap().len(), 1 << 20);
    }

    #[test]
    fn write_quota_is_enforced() {
        let (_d, ws) = ws();
        ws.write("a", &[0u8; 700 << 10]).unwrap();
        assert!(matches!(
            ws.write("b", &[0u8; 700 << 10]),
            Err(FsError::QuotaExceeded(_))
        ));
    }
}
