//! Where a symlink inside a tree leads, decided without following it: the
//! one link check used when a target is copied into a workspace
//! (`engine::target`), packed and unpacked (`storage::pack`). It resolves
//! links the way the kernel does (each component in turn, links within
//! links, `..` after a link applying to where the link led), so chains such
//! as `a -> .` with `x -> a/..` are seen to leave the tree. It must never
//! follow a link on disk.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed while checking where one link leads (as Linux does).
const MAX_LINK_HOPS: usize = 40;

/// What a path inside a tree is, for resolving symlinks without following
/// them on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir,
    /// A regular file (or anything else that is not a link or directory).
    File,
    /// A symlink and its target.
    Symlink(PathBuf),
    /// Nothing there.
    Missing,
}

/// What `path` is on disk, without following it if it is a link.
pub fn disk_node(path: &Path) -> Node {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            fs::read_link(path).map_or(Node::Missing, Node::Symlink)
        }
        Ok(m) if m.is_dir() => Node::Dir,
        Ok(_) => Node::File,
        Err(_) => Node::Missing,
    }
}

/// Checks that the symlink at `link` (relative to the tree root) pointing at
/// `target` resolves inside the tree, following the tree's own symlinks
/// through `lookup` the way the kernel would. Components that do not exist
/// are taken literally, which is stricter than the kernel.
pub fn check_link(
    link: &Path,
    target: &Path,
    mut lookup: impl FnMut(&Path) -> Node,
) -> Result<(), String> {
    if target.is_absolute() {
        return Err("is absolute; only relative links inside the target are kept".into());
    }
    let mut at = link.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut pending: VecDeque<OsString> = VecDeque::new();
    push_front_components(&mut pending, target)?;
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            if !at.pop() {
                return Err("leaves the target directory".into());
            }
            continue;
        }
        at.push(&part);
        if let Node::Symlink(next) = lookup(&at) {
            hops += 1;
            if hops > MAX_LINK_HOPS {
                return Err("goes through too many symlinks (a loop?)".into());
            }
            if next.is_absolute() {
                return Err(format!(
                    "goes through `{}`, a symlink to an absolute path",
                    at.display()
                ));
            }
            at.pop();
            push_front_components(&mut pending, &next)?;
        }
    }
    Ok(())
}

fn push_front_components(pending: &mut VecDeque<OsString>, path: &Path) -> Result<(), String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(name) => parts.push(name.to_os_string()),
            Component::ParentDir => parts.push(OsString::from("..")),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err("is absolute; only relative links inside the target are kept".into());
            }
        }
    }
    for p in parts.into_iter().rev() {
        pending.push_front(p);
    }
    Ok(())
}
