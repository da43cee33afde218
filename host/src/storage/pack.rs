//! Target archives: [`pack_target`] turns a directory into a deterministic
//! `tar.zst` (same tree, same bytes, same sha256) and [`unpack_target`] turns
//! one back into a directory without trusting it.
//!
//! Unpacking treats the archive as hostile: it never writes outside the
//! destination, never writes through a symlink (every parent of a written
//! entry is a real directory this module created), never creates hardlinks,
//! devices or FIFOs, and stops as soon as the bytes actually written or the
//! number of entries pass the caps, which also bounds a decompression bomb.
//! This module must never follow a link found in an archive.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::links::{Node, check_link, disk_node};
use sha2::{Digest, Sha256};

/// zstd level for target archives: fast, and deterministic for a given zstd.
pub const ZSTD_LEVEL: i32 = 3;

/// Largest path or symlink target accepted in an archive (Linux `PATH_MAX`).
const MAX_NAME: usize = 4096;

/// Largest zstd window accepted when unpacking (16 MiB; the packer uses 2 MiB),
/// so a hostile frame cannot make the decoder allocate gigabytes.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// Copy buffer size.
const CHUNK: usize = 256 * 1024;

/// The blob key of a packed target: `targets/<sha256>.tar.zst`.
pub fn target_key(sha256: &str) -> String {
    format!("targets/{sha256}.tar.zst")
}

/// True when `s` looks like a sha256 digest as this module prints them
/// (64 lowercase hex digits), so it is safe to use as a file name.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// sha256 of the file at `path`, lowercase hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// What [`pack_target`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackInfo {
    /// sha256 of the `.tar.zst` bytes, lowercase hex.
    pub sha256: String,
    /// Size of the `.tar.zst` file.
    pub bytes: u64,
    /// Entries packed: files, directories and symlinks.
    pub files: u64,
    /// Total size of the regular files packed.
    pub unpacked_bytes: u64,
    /// Entries left out, each as `path: reason` (symlinks leaving the tree,
    /// sockets, devices and FIFOs).
    pub skipped: Vec<String>,
}

/// Limits on what [`unpack_target`] may create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackCaps {
    /// Most bytes of file contents written.
    pub max_bytes: u64,
    /// Most entries created: files, directories and symlinks.
    pub max_files: u64,
}

impl Default for UnpackCaps {
    /// 8 GiB and 1,000,000 entries: more than any source tree we scan.
    fn default() -> Self {
        UnpackCaps {
            max_bytes: 8 << 30,
            max_files: 1_000_000,
        }
    }
}

/// What [`unpack_target`] created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackInfo {
    /// Bytes of file contents written.
    pub bytes: u64,
    /// Entries created: files, directories and symlinks.
    pub files: u64,
}

/// Why a target archive was not unpacked. Nothing is left at the
/// destination when any of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The archive tries to escape the destination or holds a forbidden kind
    /// of entry.
    #[error(
        "target archive entry `{entry}` is rejected: {reason}; the archive is unsafe or was not \
         made by `toolhost`, so pack the target again"
    )]
    Unsafe {
        /// The entry's path as written in the archive.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The files would take more than `limit` bytes.
    #[error(
        "target unpacks to more than {limit} bytes (stopped at `{entry}`); raise the target \
         cache's unpack byte cap or make the target smaller"
    )]
    TooLarge {
        /// The entry being written when the cap was passed.
        entry: String,
        /// The byte cap.
        limit: u64,
    },
    /// The archive has more than `limit` entries.
    #[error(
        "target has more than {limit} entries (stopped at `{entry}`); raise the target cache's \
         unpack file cap or make the target smaller"
    )]
    TooManyFiles {
        /// The entry that passed the cap.
        entry: String,
        /// The entry cap.
        limit: u64,
    },
    /// The archive is not a readable `tar.zst`.
    #[error("target archive `{}` is corrupt: {message}; pack and upload the target again", .archive.display())]
    Corrupt {
        /// The archive file.
        archive: PathBuf,
        /// What the decoder reported.
        message: String,
    },
    /// A local file operation failed.
    #[error("cannot unpack into `{}`: {source}; check free space and permissions there", .path.display())]
    Io {
        /// The file or directory being accessed.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The destination is already there.
    #[error("cannot unpack into `{}`: it already exists; remove it or pick another destination", .0.display())]
    DestinationExists(PathBuf),
}

// ---------------------------------------------------------------- packing

/// Packs the tree at `dir` into a deterministic `tar.zst` at `out` (written
/// to a temp file beside it and renamed into place). Entries are sorted, owned
/// by 0:0 with mtime 0, and keep only the executable bit of their mode.
/// Regular files, directories and symlinks that stay inside the tree are
/// packed; anything else is listed in [`PackInfo::skipped`]. `progress`
/// receives the number of file bytes read so far.
pub fn pack_target(
    dir: &Path,
    out: &Path,
    progress: Option<&dyn Fn(u64)>,
) -> anyhow::Result<PackInfo> {
    let meta = fs::metadata(dir)
        .with_context(|| format!("cannot read target directory `{}`", dir.display()))?;
    if !meta.is_dir() {
        anyhow::bail!(
            "target `{}` is not a directory; pass the directory to pack",
            dir.display()
        );
    }
    let out_dir = parent_or_dot(out);
    fs::create_dir_all(out_dir).with_context(|| {
        format!(
            "cannot create `{}` for the target archive",
            out_dir.display()
        )
    })?;
    if let (Ok(tree), Ok(at)) = (dir.canonicalize(), out_dir.canonicalize())
        && at.starts_with(&tree)
    {
        anyhow::bail!(
            "the archive `{}` would be written inside the target `{}` it packs; write it elsewhere",
            out.display(),
            dir.display()
        );
    }
    let tmp = tempfile::Builder::new()
        .prefix(".pack-")
        .tempfile_in(out_dir)
        .with_context(|| format!("cannot create a temp file in `{}`", out_dir.display()))?;
    let sink = HashingWriter {
        inner: BufWriter::new(tmp.as_file().try_clone()?),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut encoder = zstd::Encoder::new(sink, ZSTD_LEVEL)?;
    encoder.include_checksum(true)?;
    let mut builder = tar::Builder::new(encoder);
    builder.follow_symlinks(false);

    let mut info = PackInfo {
        sha256: String::new(),
        bytes: 0,
        files: 0,
        unpacked_bytes: 0,
        skipped: Vec::new(),
    };
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .min_depth(1)
        .sort_by_file_name();
    for entry in walker {
        let entry =
            entry.with_context(|| format!("cannot walk target directory `{}`", dir.display()))?;
        let rel = entry
            .path()
            .strip_prefix(dir)
            .context("walked outside the target directory")?;
        let kind = entry.file_type();
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        let packed = if kind.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            builder.append_data(&mut header, rel, io::empty())
        } else if kind.is_file() {
            let file = File::open(entry.path())
                .with_context(|| format!("cannot read `{}`", entry.path().display()))?;
            let meta = file.metadata()?;
            let executable = meta.permissions().mode() & 0o111 != 0;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if executable { 0o755 } else { 0o644 });
            header.set_size(meta.len());
            let reader = ExactReader {
                inner: file,
                remaining: meta.len(),
                done: info.unpacked_bytes,
                progress,
            };
            info.unpacked_bytes += meta.len();
            builder.append_data(&mut header, rel, reader)
        } else if kind.is_symlink() {
            let target = fs::read_link(entry.path())
                .with_context(|| format!("cannot read symlink `{}`", entry.path().display()))?;
            let lookup = |p: &Path| disk_node(&dir.join(p));
            if let Err(reason) = check_link(rel, &target, lookup) {
                info.skipped.push(format!(
                    "{}: symlink to `{}` {reason}",
                    rel.display(),
                    target.display()
                ));
                continue;
            }
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            builder.append_link(&mut header, rel, &target)
        } else {
            info.skipped.push(format!(
                "{}: not a regular file, directory or symlink",
                rel.display()
            ));
            continue;
        };
        packed.with_context(|| format!("cannot pack `{}`", entry.path().display()))?;
        info.files += 1;
    }

    let encoder = builder
        .into_inner()
        .context("cannot finish the target archive")?;
    let sink = encoder
        .finish()
        .context("cannot finish the target archive")?;
    let HashingWriter {
        mut inner,
        hasher,
        bytes,
    } = sink;
    inner.flush()?;
    drop(inner);
    tmp.as_file().sync_all()?;
    tmp.persist(out)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write the target archive `{}`", out.display()))?;
    info.sha256 = hex::encode(hasher.finalize());
    info.bytes = bytes;
    Ok(info)
}

/// Hashes and counts what passes through to `inner`.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Yields exactly the size written in the tar header: a file that shrinks
/// while it is packed would otherwise corrupt the archive silently.
struct ExactReader<'a> {
    inner: File,
    remaining: u64,
    done: u64,
    progress: Option<&'a dyn Fn(u64)>,
}

impl Read for ExactReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was packed; pack again once nothing writes to the target",
            ));
        }
        self.remaining -= n as u64;
        self.done += n as u64;
        if let Some(report) = self.progress {
            report(self.done);
        }
        Ok(n)
    }
}

fn parent_or_dot(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

// ---------------------------------------------------------------- unpacking

/// How a target archive is compressed, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    TarZst,
    TarGz,
    /// Anything else is read as a plain tar (and refused as corrupt if it
    /// is not one).
    Tar,
}

impl ArchiveFormat {
    /// The format of an archive that starts with `head`.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            ArchiveFormat::TarZst
        } else if head.starts_with(&[0x1f, 0x8b]) {
            ArchiveFormat::TarGz
        } else {
            ArchiveFormat::Tar
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ArchiveFormat::TarZst => "tar.zst",
            ArchiveFormat::TarGz => "tar.gz",
            ArchiveFormat::Tar => "tar",
        }
    }
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Unpacks the archive at `archive` (`tar.zst` as [`pack_target`] makes
/// it, or an uploaded `tar.gz` or plain `tar`) into the new directory `dest`, within
/// `caps`. Entries are written into a temp directory beside `dest` that is
/// renamed into place once everything checked out; on any error nothing is
/// left behind. See the module docs for what is rejected.
pub fn unpack_target(
    archive: &Path,
    dest: &Path,
    caps: UnpackCaps,
) -> Result<UnpackInfo, UnpackError> {
    if fs::symlink_metadata(dest).is_ok() {
        return Err(UnpackError::DestinationExists(dest.to_path_buf()));
    }
    let parent = parent_or_dot(dest);
    fs::create_dir_all(parent).map_err(io_at(parent))?;
    let staging = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(parent)
        .map_err(io_at(parent))?;
    fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o755))
        .map_err(io_at(staging.path()))?;
    let info = Unpacker::new(staging.path(), caps).run(archive)?;
    // One syncfs instead of an fsync per file: the tree must be on disk
    // before its name says it is complete.
    let dir = File::open(staging.path()).map_err(io_at(staging.path()))?;
    nix::unistd::syncfs(&dir).map_err(|e| io_at(staging.path())(e.into()))?;
    drop(dir);
    fs::rename(staging.path(), dest).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists || e.raw_os_error() == Some(libc::ENOTEMPTY) {
            UnpackError::DestinationExists(dest.to_path_buf())
        } else {
            io_at(dest)(e)
        }
    })?;
    // Renamed: nothing left for the guard to clean up.
    let _ = staging.keep();
    Ok(info)
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The state of one unpack: what exists in the staging tree so far.
struct Unpacker<'a> {
    root: &'a Path,
    caps: UnpackCaps,
    nodes: HashMap<PathBuf, Node>,
    symlinks: Vec<(String, PathBuf, PathBuf)>,
    bytes: u64,
    entries: u64,
}

impl<'a> Unpacker<'a> {
    fn new(root: &'a Path, caps: UnpackCaps) -> Self {
        Unpacker {
            root,
            caps,
            nodes: HashMap::new(),
            symlinks: Vec::new(),
            bytes: 0,
            entries: 0,
        }
    }

    fn run(mut self, archive: &Path) -> Result<UnpackInfo, UnpackError> {
        let corrupt = |e: io::Error| UnpackError::Corrupt {
            archive: archive.to_path_buf(),
            message: e.to_string(),
        };
        let mut file = File::open(archive).map_err(io_at(archive))?;
        let mut head = [0u8; 4];
        let n = read_up_to(&mut file, &mut head).map_err(io_at(archive))?;
        io::Seek::seek(&mut file, io::SeekFrom::Start(0)).map_err(io_at(archive))?;
        let reader: Box<dyn Read> = match ArchiveFormat::sniff(&head[..n]) {
            ArchiveFormat::TarZst => {
                let mut decoder = zstd::Decoder::new(file).map_err(corrupt)?;
                decoder
                    .window_log_max(ZSTD_WINDOW_LOG_MAX)
                    .map_err(corrupt)?;
                Box::new(decoder)
            }
            ArchiveFormat::TarGz => Box::new(flate2::read::MultiGzDecoder::new(file)),
            ArchiveFormat::Tar => Box::new(file),
        };
        let mut tar = tar::Archive::new(reader);
        // Raw entries: GNU long names are read here, with a size limit,
        // instead of into memory of whatever size the header claims.
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        for entry in tar.entries().map_err(corrupt)?.raw(true) {
            let mut entry = entry.map_err(corrupt)?;
            let kind = entry.header().entry_type();
            let declared = entry.header().entry_size().map_err(corrupt)?;
            if kind.is_gnu_longname() || kind.is_gnu_longlink() {
                let which = if kind.is_gnu_longname() {
                    &mut long_name
                } else {
                    &mut long_link
                };
                if which.is_some() || declared > MAX_NAME as u64 + 1 {
                    return Err(UnpackError::Unsafe {
                        entry: String::from_utf8_lossy(&entry.header().path_bytes()).into_owned(),
                        reason: format!(
                            "a GNU long name record is repeated or longer than {MAX_NAME} bytes"
                        ),
                    });
                }
                let mut name = Vec::with_capacity(declared as usize);
                entry.read_to_end(&mut name).map_err(corrupt)?;
                while name.last() == Some(&0) {
                    name.pop();
                }
                *which = Some(name);
                continue;
            }
            let name = long_name
                .take()
                .unwrap_or_else(|| entry.header().path_bytes().into_owned());
            let shown = String::from_utf8_lossy(&name).into_owned();
            let link = long_link
                .take()
                .or_else(|| entry.header().link_name_bytes().map(|l| l.into_owned()));
            let unsafe_entry = |reason: &str| UnpackError::Unsafe {
                entry: shown.clone(),
                reason: reason.to_string(),
            };
            let rel = relative_path(&name).map_err(|r| unsafe_entry(&r))?;
            if rel.as_os_str().is_empty() {
                // `./`: the root itself, which exists already.
                if kind.is_dir() {
                    continue;
                }
                return Err(unsafe_entry("names the target root but is not a directory"));
            }
            match kind {
                tar::EntryType::Directory => {
                    self.no_data(&shown, declared)?;
                    self.make_parents(&shown, &rel)?;
                    match self.nodes.get(&rel) {
                        Some(Node::Dir) => {}
                        Some(_) => return Err(unsafe_entry("appears twice in the archive")),
                        None => self.make_dir(&shown, &rel)?,
                    }
                }
                tar::EntryType::Regular => {
                    self.make_parents(&shown, &rel)?;
                    if self.nodes.contains_key(&rel) {
                        return Err(unsafe_entry("appears twice in the archive"));
                    }
                    self.count(&shown)?;
                    let mode = entry.header().mode().map_err(corrupt)?;
                    let written =
                        self.write_file(&shown, &rel, &mut entry, declared, mode, archive)?;
                    if written != declared {
                        return Err(UnpackError::Corrupt {
                            archive: archive.to_path_buf(),
                            message: format!("entry `{shown}` is truncated"),
                        });
                    }
                }
                tar::EntryType::Symlink => {
                    self.no_data(&shown, declared)?;
                    let Some(target) = link else {
                        return Err(unsafe_entry("is a symlink without a target"));
                    };
                    if target.len() > MAX_NAME {
                        return Err(unsafe_entry("has a symlink target longer than 4096 bytes"));
                    }
                    let target = PathBuf::from(OsStr::from_bytes(&target));
                    self.make_parents(&shown, &rel)?;
                    if self.nodes.contains_key(&rel) {
                        return Err(unsafe_entry("appears twice in the archive"));
                    }
                    self.check_symlink(&shown, &rel, &target)?;
                    self.count(&shown)?;
                    let path = self.root.join(&rel);
                    std::os::unix::fs::symlink(&target, &path).map_err(io_at(&path))?;
                    self.nodes
                        .insert(rel.clone(), Node::Symlink(target.clone()));
                    self.symlinks.push((shown, rel, target));
                }
                tar::EntryType::Link => {
                    return Err(unsafe_entry(
                        "is a hard link; target archives may not contain hard links",
                    ));
                }
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    return Err(unsafe_entry(
                        "is a device or FIFO; only files, directories and symlinks are allowed",
                    ));
                }
                tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => {
                    return Err(unsafe_entry(
                        "is a pax header, which target archives do not use",
                    ));
                }
                tar::EntryType::GNUSparse => {
                    return Err(unsafe_entry(
                        "is a sparse file, which target archives do not use",
                    ));
                }
                other => {
                    return Err(unsafe_entry(&format!(
                        "has entry type {:?}; only files, directories and symlinks are allowed",
                        other.as_byte() as char
                    )));
                }
            }
        }
        if long_name.is_some() || long_link.is_some() {
            return Err(UnpackError::Corrupt {
                archive: archive.to_path_buf(),
                message: "it ends with a long-name record that names no entry".into(),
            });
        }
        // A link that was fine when written can lead out of the tree through
        // links that came later (`a -> .` after `x -> a/..`): check them all
        // against the finished tree.
        for (shown, rel, target) in std::mem::take(&mut self.symlinks) {
            self.check_symlink(&shown, &rel, &target)?;
        }
        Ok(UnpackInfo {
            bytes: self.bytes,
            files: self.entries,
        })
    }

    fn no_data(&self, shown: &str, declared: u64) -> Result<(), UnpackError> {
        if declared != 0 {
            return Err(UnpackError::Unsafe {
                entry: shown.to_string(),
                reason: format!("is not a regular file but carries {declared} bytes of data"),
            });
        }
        Ok(())
    }

    fn count(&mut self, shown: &str) -> Result<(), UnpackError> {
        self.entries += 1;
        if self.entries > self.caps.max_files {
            return Err(UnpackError::TooManyFiles {
                entry: shown.to_string(),
                limit: self.caps.max_files,
            });
        }
        Ok(())
    }

    /// Creates every missing parent of `rel` as a real directory, refusing
    /// to go through anything that is not one this unpack created.
    fn make_parents(&mut self, shown: &str, rel: &Path) -> Result<(), UnpackError> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        let mut at = PathBuf::new();
        for part in parent.components() {
            at.push(part);
            match self.nodes.get(&at) {
                Some(Node::Dir) => {}
                Some(Node::Symlink(_)) => {
                    return Err(UnpackError::Unsafe {
                        entry: shown.to_string(),
                        reason: format!(
                            "goes through the symlink `{}`; entries may not be written through links",
                            at.display()
                        ),
                    });
                }
                Some(_) => {
                    return Err(UnpackError::Unsafe {
                        entry: shown.to_string(),
                        reason: format!(
                            "goes through `{}`, which is not a directory",
                            at.display()
                        ),
                    });
                }
                None => self.make_dir(shown, &at)?,
            }
        }
        Ok(())
    }

    fn make_dir(&mut self, shown: &str, rel: &Path) -> Result<(), UnpackError> {
        self.count(shown)?;
        let path = self.root.join(rel);
        fs::create_dir(&path).map_err(io_at(&path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(io_at(&path))?;
        self.nodes.insert(rel.to_path_buf(), Node::Dir);
        Ok(())
    }

    fn check_symlink(&self, shown: &str, rel: &Path, target: &Path) -> Result<(), UnpackError> {
        let lookup = |p: &Path| self.nodes.get(p).cloned().unwrap_or(Node::Missing);
        check_link(rel, target, lookup).map_err(|reason| UnpackError::Unsafe {
            entry: shown.to_string(),
            reason: format!("symlink to `{}` {reason}", target.display()),
        })
    }

    /// Writes one file's data, counting the bytes actually written against
    /// the cap rather than trusting the header.
    fn write_file(
        &mut self,
        shown: &str,
        rel: &Path,
        data: &mut impl Read,
        declared: u64,
        mode: u32,
        archive: &Path,
    ) -> Result<u64, UnpackError> {
        let limit = self.caps.max_bytes;
        let too_large = || UnpackError::TooLarge {
            entry: shown.to_string(),
            limit,
        };
        let room = limit.saturating_sub(self.bytes);
        if declared > room {
            return Err(too_large());
        }
        let path = self.root.join(rel);
        let perm = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
        // create_new: O_EXCL never follows a link at the final component.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(perm)
            .open(&path)
            .map_err(io_at(&path))?;
        file.set_permissions(fs::Permissions::from_mode(perm))
            .map_err(io_at(&path))?;
        self.nodes.insert(rel.to_path_buf(), Node::File);
        let mut buf = vec![0u8; CHUNK];
        let mut written = 0u64;
        loop {
            let n = data.read(&mut buf).map_err(|e| UnpackError::Corrupt {
                archive: archive.to_path_buf(),
                message: format!("reading entry `{shown}`: {e}"),
            })?;
            if n == 0 {
                break;
            }
            written += n as u64;
            if written > room {
                return Err(too_large());
            }
            file.write_all(&buf[..n]).map_err(io_at(&path))?;
        }
        self.bytes += written;
        Ok(written)
    }
}

/// The archive path `name` as a relative path of plain components, or why
/// it is not one.
fn relative_path(name: &[u8]) -> Result<PathBuf, String> {
    if name.is_empty() {
        return Err("has an empty name".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("has a name longer than {MAX_NAME} bytes"));
    }
    if name.starts_with(b"/") {
        return Err("has an absolute path".into());
    }
    let mut out = PathBuf::new();
    for part in name.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("contains `..`".into()),
            _ => out.push(OsStr::from_bytes(part)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::fs::symlink;
    use std::time::Instant;
    use tar::{EntryType, Header};

    /// A header whose name bytes are written raw, bypassing the `tar`
    /// crate's checks, as a hostile packer would.
    fn raw_header(name: &[u8], kind: EntryType, size: u64) -> Header {
        let mut h = Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h
    }

    fn raw_link(name: &[u8], kind: EntryType, target: &[u8]) -> Header {
        let mut h = raw_header(name, kind, 0);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target);
        h
    }

    /// Writes a `tar.zst` of `entries` (header, data) to `dir/archive.tar.zst`.
    fn hostile(dir: &Path, entries: Vec<(Header, Vec<u8>)>) -> PathBuf {
        let path = dir.join("archive.tar.zst");
        let enc = zstd::Encoder::new(File::create(&path).unwrap(), 3).unwrap();
        let mut b = tar::Builder::new(enc);
        for (mut h, data) in entries {
            h.set_cksum();
            b.append(&h, data.as_slice()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
        path
    }

    fn caps() -> UnpackCaps {
        UnpackCaps {
            max_bytes: 10 << 20,
            max_files: 1000,
        }
    }

    fn file(name: &[u8], data: &[u8]) -> (Header, Vec<u8>) {
        (
            raw_header(name, EntryType::Regular, data.len() as u64),
            data.to_vec(),
        )
    }

    /// A file whose name is too long for the header, announced by a GNU
    /// long-name record as GNU tar writes it.
    fn long_file(name: &[u8], data: &[u8]) -> Vec<(Header, Vec<u8>)> {
        let mut record = name.to_vec();
        record.push(0);
        let announce = raw_header(
            b"././@LongLink",
            EntryType::GNULongName,
            record.len() as u64,
        );
        vec![(announce, record), file(&name[..100], data)]
    }

    fn dir(name: &[u8]) -> (Header, Vec<u8>) {
        (raw_header(name, EntryType::Directory, 0), Vec::new())
    }

    fn link(name: &[u8], target: &[u8]) -> (Header, Vec<u8>) {
        (raw_link(name, EntryType::Symlink, target), Vec::new())
    }

    /// Unpacks `entries` and expects a rejection naming `entry`; checks
    /// nothing is left beside the destination.
    fn rejects(entries: Vec<(Header, Vec<u8>)>, entry: &str) -> UnpackError {
        let d = tempfile::tempdir().unwrap();
        let archive = hostile(d.path(), entries);
        let out = d.path().join("out");
        let err = unpack_target(&archive, &out, caps()).unwrap_err();
        assert!(err.to_string().contains(&format!("`{entry}`")), "{err}");
        let left: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [OsString::from("archive.tar.zst")], "{err}");
        err
    }

    fn sample_tree(root: &Path) {
        fs::create_dir_all(root.join("src/nested")).unwrap();
        fs::write(root.join("Cargo.toml"), "[package]\nname = \"t\"\n").unwrap();
        fs::write(root.join("src/main.rs"), "fn main() {}\n").unwrap();
        fs::write(root.join("src/nested/data.bin"), vec![7u8; 100_000]).unwrap();
        fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::create_dir(root.join("empty")).unwrap();
        let long = "d".repeat(120);
        fs::create_dir_all(root.join(&long).join(&long)).unwrap();
        fs::write(root.join(&long).join(&long).join("deep.txt"), "deep").unwrap();
        symlink("src/main.rs", root.join("main-link")).unwrap();
        symlink("../Cargo.toml", root.join("src/manifest")).unwrap();
        symlink("/etc/passwd", root.join("abs-link")).unwrap();
        symlink("../../outside", root.join("src/escape")).unwrap();
    }

    #[test]
    fn round_trip_is_deterministic_and_drops_escaping_links() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        sample_tree(&tree);
        let last = std::cell::Cell::new(0);
        let report = |n: u64| last.set(n);
        let a = pack_target(&tree, &d.path().join("a.tar.zst"), Some(&report)).unwrap();
        assert_eq!(last.get(), a.unpacked_bytes);
        // Different mtimes must not change the archive.
        fs::write(tree.join("src/main.rs"), "fn main() {}\n").unwrap();
        let b = pack_target(&tree, &d.path().join("b.tar.zst"), None).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.sha256.len(), 64);
        assert_eq!(
            a.sha256,
            hex::encode(Sha256::digest(
                fs::read(d.path().join("a.tar.zst")).unwrap()
            ))
        );
        assert_eq!(a.skipped.len(), 2, "{:?}", a.skipped);
        assert!(a.skipped.iter().any(|s| s.starts_with("abs-link:")));
        assert!(a.skipped.iter().any(|s| s.starts_with("src/escape:")));
        assert_eq!(
            target_key(&a.sha256),
            format!("targets/{}.tar.zst", a.sha256)
        );

        let out = d.path().join("cache/out");
        let info = unpack_target(&d.path().join("a.tar.zst"), &out, caps()).unwrap();
        assert_eq!(info.bytes, a.unpacked_bytes);
        assert_eq!(info.files, a.files);
        assert_eq!(
            fs::read(out.join("src/nested/data.bin")).unwrap(),
            vec![7u8; 100_000]
        );
        let long = "d".repeat(120);
        assert_eq!(
            fs::read_to_string(out.join(&long).join(&long).join("deep.txt")).unwrap(),
            "deep"
        );
        assert_eq!(
            fs::read_link(out.join("main-link")).unwrap(),
            Path::new("src/main.rs")
        );
        assert_eq!(
            fs::read_to_string(out.join("src/manifest")).unwrap(),
            "[package]\nname = \"t\"\n"
        );
        assert!(out.join("empty").is_dir());
        assert_eq!(
            fs::metadata(out.join("run.sh"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        assert_eq!(
            fs::metadata(out.join("Cargo.toml"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o644
        );
        assert!(fs::symlink_metadata(out.join("abs-link")).is_err());
        let leftovers: Vec<_> = fs::read_dir(d.path().join("cache")).unwrap().collect();
        assert_eq!(leftovers.len(), 1);

        assert!(matches!(
            unpack_target(&d.path().join("a.tar.zst"), &out, caps()),
            Err(UnpackError::DestinationExists(_))
        ));
    }

    #[test]
    fn rejects_parent_dir_traversal() {
        let err = rejects(
            vec![file(b"ok.txt", b"1"), file(b"a/../../evil", b"x")],
            "a/../../evil",
        );
        assert!(err.to_string().contains("`..`"));
        rejects(vec![file(b"../evil", b"x")], "../evil");
    }

    #[test]
    fn rejects_absolute_paths() {
        let err = rejects(vec![file(b"/tmp/evil", b"x")], "/tmp/evil");
        assert!(err.to_string().contains("absolute"));
    }

    #[test]
    fn rejects_symlinks_leaving_the_tree() {
        rejects(vec![link(b"passwd", b"/etc/passwd")], "passwd");
        rejects(vec![dir(b"a/"), link(b"a/up", b"../..")], "a/up");
        // Each link alone stays inside; together `x` leads out.
        let err = rejects(
            vec![dir(b"s/"), link(b"s/x", b"d/../.."), link(b"s/d", b".")],
            "s/x",
        );
        assert!(err.to_string().contains("leaves the target"), "{err}");
    }

    #[test]
    fn never_writes_through_an_earlier_symlink() {
        let err = rejects(
            vec![link(b"a", b"."), file(b"a/../../x", b"x")],
            "a/../../x",
        );
        assert!(err.to_string().contains("`..`"), "{err}");
        let err = rejects(vec![link(b"a", b"."), file(b"a/x", b"x")], "a/x");
        assert!(err.to_string().contains("symlink `a`"), "{err}");
        rejects(
            vec![link(b"link", b"/etc"), file(b"link/passwd", b"x")],
            "link",
        );
        // Even an in-tree link may not be written through.
        let err = rejects(
            vec![dir(b"real/"), link(b"alias", b"real"), dir(b"alias/sub/")],
            "alias/sub/",
        );
        assert!(err.to_string().contains("through the symlink"), "{err}");
        // Nor may a later entry replace an earlier one.
        rejects(vec![link(b"f", b"real"), file(b"f", b"x")], "f");
    }

    #[test]
    fn rejects_hardlinks_devices_and_fifos() {
        let err = rejects(
            vec![
                file(b"a", b"x"),
                (raw_link(b"b", EntryType::Link, b"a"), Vec::new()),
            ],
            "b",
        );
        assert!(err.to_string().contains("hard link"));
        for kind in [EntryType::Char, EntryType::Block, EntryType::Fifo] {
            let err = rejects(vec![(raw_header(b"dev", kind, 0), Vec::new())], "dev");
            assert!(err.to_string().contains("device or FIFO"), "{err}");
        }
    }

    #[test]
    fn decompression_bomb_stops_at_the_byte_cap() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("bomb.tar.zst");
        let enc = zstd::Encoder::new(File::create(&path).unwrap(), 3).unwrap();
        let mut b = tar::Builder::new(enc);
        let mut h = raw_header(b"zeros", EntryType::Regular, 1 << 30);
        h.set_cksum();
        b.append(&h, io::repeat(0).take(1 << 30)).unwrap();
        b.into_inner().unwrap().finish().unwrap();
        assert!(fs::metadata(&path).unwrap().len() < 1 << 20);

        let started = Instant::now();
        let out = d.path().join("out");
        let err = unpack_target(&path, &out, caps()).unwrap_err();
        assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("`zeros`"));
        assert!(
            started.elapsed().as_secs() < 5,
            "took {:?}",
            started.elapsed()
        );
        assert!(!out.exists());
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn byte_cap_counts_every_file() {
        let chunk = vec![1u8; 4 << 20];
        let err = rejects(
            vec![file(b"a", &chunk), file(b"b", &chunk), file(b"c", &chunk)],
            "c",
        );
        assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn file_count_cap() {
        let entries: Vec<_> = (0..1001)
            .map(|i| file(format!("f{i}").as_bytes(), b""))
            .collect();
        let err = rejects(entries, "f1000");
        assert!(
            matches!(err, UnpackError::TooManyFiles { limit: 1000, .. }),
            "{err}"
        );
        // Implicit parent directories count too.
        let deep = "d/".repeat(1000) + "f";
        let err = rejects(long_file(deep.as_bytes(), b""), &deep);
        assert!(matches!(err, UnpackError::TooManyFiles { .. }), "{err}");
    }

    #[test]
    fn corrupt_archives_are_reported_as_corrupt() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("junk.tar.zst");
        fs::write(&path, b"this is not zstd").unwrap();
        let err = unpack_target(&path, &d.path().join("out"), caps()).unwrap_err();
        assert!(matches!(err, UnpackError::Corrupt { .. }), "{err}");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
