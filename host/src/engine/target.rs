//! Preparing a run workspace from a target directory: a copy, so the user's
//! tree is never modified. Symlinks that stay inside the target are kept as
//! symlinks; symlinks leading outside (directly or through other links of
//! the target) and special files are skipped (and reported), so a target
//! can never smuggle host paths into a workspace. Links are checked by
//! `storage::links`, the same check that packing and unpacking use.

use std::path::Path;

use anyhow::{Context as _, Result, bail};

/// Directory names never copied (VCS data, build output next to a manifest,
/// Toolhost's own data).
pub fn is_excluded(dir: &Path, name: &str) -> bool {
    match name {
        ".git" | ".hg" | ".svn" | ".toolhost" => true,
        "target" => dir.join("Cargo.toml").exists(),
        _ => false,
    }
}

/// What the copy did.
#[derive(Debug, Default)]
pub struct CopyReport {
    /// Files copied.
    pub files: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Skipped entries with the reason.
    pub skipped: Vec<String>,
}

/// Copies `src` into `dst` (which must not exist).
pub fn copy_target(src: &Path, dst: &Path) -> Result<CopyReport> {
    let meta = std::fs::metadata(src)
        .with_context(|| format!("target `{}` cannot be read", src.display()))?;
    if !meta.is_dir() {
        bail!("target `{}` is not a directory", src.display());
    }
    let src = src
        .canonicalize()
        .with_context(|| format!("cannot resolve target `{}`", src.display()))?;
    std::fs::create_dir_all(dst)
        .with_context(|| format!("cannot create workspace `{}`", dst.display()))?;
    let mut report = CopyReport::default();
    let mut walker = walkdir::WalkDir::new(&src).follow_links(false).into_iter();
    while let Some(entry) = walker.next() {
        let entry = entry.with_context(|| format!("cannot read inside `{}`", src.display()))?;
        let rel = match entry.path().strip_prefix(&src) {
            Ok(r) if !r.as_os_str().is_empty() => r.to_path_buf(),
            _ => continue,
        };
        let out = dst.join(&rel);
        let ft = entry.file_type();
        let name = entry.file_name().to_string_lossy();
        if ft.is_dir() {
            if is_excluded(entry.path().parent().unwrap_or(&src), &name) {
                walker.skip_current_dir();
                continue;
            }
            std::fs::create_dir_all(&out)?;
        } else if ft.is_file() {
            let n = std::fs::copy(entry.path(), &out)
                .with_context(|| format!("cannot copy `{}`", rel.display()))?;
            report.files += 1;
            report.bytes += n;
        } else if ft.is_symlink() {
            let link = std::fs::read_link(entry.path())?;
            let lookup = |p: &Path| crate::storage::links::disk_node(&src.join(p));
            match crate::storage::links::check_link(&rel, &link, lookup) {
                Ok(()) => std::os::unix::fs::symlink(&link, &out)?,
                Err(reason) => report.skipped.push(format!(
                    "{}: symlink to `{}` {reason}",
                    rel.display(),
                    link.display()
                )),
            }
        } else {
            report.skipped.push(format!(
                "{}: not a regular file, directory or symlink",
                rel.display()
            ));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_skips_escaping_links_and_build_dirs() {
        let src = tempfile::tempdir().unwrap();
        let p = src.path();
        std::fs::create_dir_all(p.join("src")).unwrap();
        std::fs::create_dir_all(p.join("target/debug")).unwrap();
        std::fs::create_dir_all(p.join(".git")).unwrap();
        std::fs::write(p.join("Cargo.toml"), "[package]").unwrap();
        std::fs::write(p.join("src/lib.rs"), "x").unwrap();
        std::fs::write(p.join("target/debug/big"), "x").unwrap();
        std::os::unix::fs::symlink("lib.rs", p.join("src/alias.rs")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", p.join("passwd")).unwrap();
        std::os::unix::fs::symlink("../../etc", p.join("src/up")).unwrap();
        let dst = tempfile::tempdir().unwrap();
        let ws = dst.path().join("ws");
        let r = copy_target(p, &ws).unwrap();
        assert!(ws.join("src/lib.rs").exists());
        assert!(ws.join("src/alias.rs").is_symlink());
        assert!(!ws.join("target").exists());
        assert!(!ws.join(".git").exists());
        assert!(!ws.join("passwd").exists() && !ws.join("passwd").is_symlink());
        assert!(!ws.join("src/up").is_symlink());
        assert_eq!(r.skipped.len(), 2, "{:?}", r.skipped);
    }

    /// Each link alone looks inside; together `x -> a/..` with `a -> .`
    /// climbs out of the target (the kernel resolves `a` first).
    #[test]
    fn chained_links_that_climb_out_are_not_copied() {
        let src = tempfile::tempdir().unwrap();
        let p = src.path().join("t");
        std::fs::create_dir_all(p.join("d")).unwrap();
        std::os::unix::fs::symlink(".", p.join("a")).unwrap();
        std::os::unix::fs::symlink("a/..", p.join("x")).unwrap();
        std::os::unix::fs::symlink("../a/..", p.join("d/y")).unwrap();
        std::os::unix::fs::symlink("../d", p.join("d/z")).unwrap();
        std::fs::write(src.path().join("secret"), "outside").unwrap();
        assert_eq!(
            std::fs::read_to_string(p.join("x/secret")).unwrap(),
            "outside"
        );
        let dst = tempfile::tempdir().unwrap();
        let ws = dst.path().join("ws");
        let r = copy_target(&p, &ws).unwrap();
        assert!(ws.join("a").is_symlink(), "`a -> .` stays inside");
        assert!(ws.join("d/z").is_symlink(), "`d/z -> ../d` stays inside");
        assert!(!ws.join("x").is_symlink() && !ws.join("d/y").is_symlink());
        assert_eq!(r.skipped.len(), 2, "{:?}", r.skipped);
        assert!(
            r.skipped.iter().all(|s| s.contains("leaves the target")),
            "{:?}",
            r.skipped
        );
    }

    #[test]
    fn missing_target_is_a_clear_error() {
        let err = copy_target(Path::new("/definitely/not/here"), Path::new("/tmp/x")).unwrap_err();
        assert!(format!("{err:#}").contains("cannot be read"));
    }
}
