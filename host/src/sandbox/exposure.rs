//! Credentials a tool could read. Whatever a tool can read, the submitter
//! of a run can read (tool output flows into logs, findings and
//! artifacts), so no configured read path may contain credentials. This
//! module looks for them under every path a tool may read, for `toolhost
//! doctor` and the warnings a host prints when it starts.

use std::path::{Path, PathBuf};

/// Names that hold credentials wherever they are found (a file or a
/// directory), with what they are.
const SECRET_NAMES: &[(&str, &str)] = &[
    ("credentials", "cargo/AWS credentials"),
    ("credentials.toml", "cargo registry tokens"),
    (".netrc", "passwords for hosts (curl, git, pip)"),
    (".git-credentials", "git passwords and tokens"),
    (".aws", "AWS credentials"),
    (".ssh", "SSH keys"),
    (".gnupg", "GnuPG keys"),
    (".docker", "Docker registry logins"),
    (".kube", "Kubernetes credentials"),
    (".npmrc", "npm tokens"),
    (".pypirc", "PyPI tokens"),
    (
        ".config",
        "application configuration and tokens (gh, gcloud, ...)",
    ),
    ("id_rsa", "an SSH private key"),
    ("id_ecdsa", "an SSH private key"),
    ("id_ed25519", "an SSH private key"),
    ("shadow", "password hashes"),
    ("gshadow", "group password hashes"),
];

/// Files that hold credentials in a directory of this name (`.cargo/config.toml`
/// may hold registry tokens; `.services/env` is the dev services' S3 key).
const SECRET_IN_DIR: &[(&str, &str, &str)] = &[
    (
        ".cargo",
        "config.toml",
        "cargo configuration (may hold registry tokens)",
    ),
    (
        ".cargo",
        "config",
        "cargo configuration (may hold registry tokens)",
    ),
    (".services", "env", "the dev services' S3 key"),
];

/// How deep below a read path to look.
const MAX_DEPTH: usize = 3;
/// Most entries examined below one read path.
const MAX_ENTRIES: usize = 20_000;

/// A credential file or directory a tool may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    /// The configured read path it is under (or equal to).
    pub read_path: PathBuf,
    /// The credential file or directory.
    pub found: PathBuf,
    /// What it is.
    pub what: &'static str,
}

fn what(path: &Path) -> Option<&'static str> {
    let name = path.file_name()?.to_str()?;
    if let Some((_, w)) = SECRET_NAMES.iter().find(|(n, _)| *n == name) {
        return Some(w);
    }
    let parent = path.parent()?.file_name()?.to_str()?;
    SECRET_IN_DIR
        .iter()
        .find(|(d, f, _)| *d == parent && *f == name)
        .map(|(_, _, w)| *w)
}

/// Credentials readable through `read_path`: the path itself (or an
/// ancestor of it) being one, or one below it (a few levels deep).
pub fn scan(read_path: &Path) -> Vec<Exposure> {
    let mut out = Vec::new();
    let Ok(meta) = std::fs::metadata(read_path) else {
        return out;
    };
    for ancestor in read_path.ancestors() {
        if let Some(w) = what(ancestor) {
            out.push(Exposure {
                read_path: read_path.to_path_buf(),
                found: ancestor.to_path_buf(),
                what: w,
            });
            return out;
        }
    }
    if !meta.is_dir() {
        return out;
    }
    let walker = walkdir::WalkDir::new(read_path)
        .min_depth(1)
        .max_depth(MAX_DEPTH)
        .follow_links(false)
        .into_iter()
        .take(MAX_ENTRIES);
    let mut it = walker;
    while let Some(Ok(entry)) = it.next() {
        if let Some(w) = what(entry.path()) {
            out.push(Exposure {
                read_path: read_path.to_path_buf(),
                found: entry.path().to_path_buf(),
                what: w,
            });
        }
    }
    out
}

/// Credentials readable by any tool of `config` (its system paths and each
/// tool's read paths, as that tool resolves them), and the host config file
/// itself when a tool can read it.
pub fn scan_config(
    config: &crate::config::HostConfig,
    config_file: Option<&Path>,
) -> Vec<Exposure> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for v in config.verticals.values() {
        for (name, t) in &v.tools {
            let resolved = super::policy::ResolvedTool::resolve(name, t);
            paths.extend(
                config
                    .sandbox
                    .system_paths
                    .iter()
                    .map(|p| resolved.expand_path(p)),
            );
            paths.extend(t.read_paths.iter().map(|p| resolved.expand_path(p)));
            if let Ok(program) = &resolved.program
                && let Some(dir) = program.parent()
            {
                paths.push(dir.to_path_buf());
            }
        }
    }
    paths.sort();
    paths.dedup();
    let mut out: Vec<Exposure> = paths.iter().flat_map(|p| scan(p)).collect();
    if let Some(file) = config_file.and_then(|f| f.canonicalize().ok())
        && let Some(under) = paths.iter().find(|p| file.starts_with(p))
    {
        out.push(Exposure {
            read_path: under.clone(),
            found: file,
            what: "this host's own configuration",
        });
    }
    out.sort_by(|a, b| a.found.cmp(&b.found));
    out.dedup_by(|a, b| a.found == b.found);
    out
}

/// One warning line per exposure.
pub fn warnings(exposures: &[Exposure]) -> Vec<String> {
    exposures
        .iter()
        .map(|e| {
            format!(
                "tools can read `{}` ({}) through the read path `{}`: whatever a tool reads, the submitter of a run can read. Narrow the path in the host config",
                e.found.display(),
                e.what,
                e.read_path.display()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_under_and_above_a_read_path_are_found() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        std::fs::create_dir_all(h.join(".cargo/registry")).unwrap();
        std::fs::create_dir_all(h.join(".cargo/bin")).unwrap();
        std::fs::write(h.join(".cargo/credentials.toml"), "token").unwrap();
        std::fs::write(h.join(".cargo/config.toml"), "").unwrap();
        std::fs::create_dir_all(h.join(".ssh")).unwrap();
        std::fs::write(h.join(".ssh/id_ed25519"), "key").unwrap();

        let found: Vec<PathBuf> = scan(&h.join(".cargo"))
            .into_iter()
            .map(|e| e.found)
            .collect();
        assert!(
            found.contains(&h.join(".cargo/credentials.toml")),
            "{found:?}"
        );
        assert!(found.contains(&h.join(".cargo/config.toml")), "{found:?}");
        assert!(scan(&h.join(".cargo/registry")).is_empty());
        assert!(scan(&h.join(".cargo/bin")).is_empty());
        let inside = scan(&h.join(".ssh/id_ed25519"));
        assert_eq!(inside.len(), 1);
        assert_eq!(inside[0].found, h.join(".ssh/id_ed25519"));
        let below = scan(&h.join(".ssh/keys"));
        assert!(
            below.is_empty(),
            "a path that does not exist exposes nothing"
        );
        std::fs::create_dir(h.join(".ssh/keys")).unwrap();
        assert_eq!(scan(&h.join(".ssh/keys"))[0].found, h.join(".ssh"));
        let whole = scan(h);
        assert!(whole.iter().any(|e| e.found == h.join(".ssh")), "{whole:?}");
        assert!(warnings(&whole)[0].contains("the submitter of a run can read"));
    }

    #[test]
    fn the_built_in_config_exposes_no_credentials() {
        // A home laid out like a developer's: credentials beside the
        // toolchain and the caches the built-in config grants.
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        for d in [
            ".cargo/bin",
            ".rustup/toolchains",
            ".cache/toolhost/cargo/registry",
            ".aws",
            ".ssh",
            ".config/gh",
        ] {
            std::fs::create_dir_all(h.join(d)).unwrap();
        }
        for f in [
            ".cargo/credentials.toml",
            ".cargo/config.toml",
            ".netrc",
            ".git-credentials",
            ".aws/credentials",
            ".config/gh/hosts.yml",
        ] {
            std::fs::write(h.join(f), "secret").unwrap();
        }
        let config = crate::config::HostConfig::parse(crate::config::DEFAULT_CONFIG, None).unwrap();
        for v in config.verticals.values() {
            for (name, t) in &v.tools {
                let mut t = t.clone();
                // Resolve `~/` against the fake home.
                t.read_paths = t
                    .read_paths
                    .iter()
                    .map(|p| p.replace("~/", &format!("{}/", h.display())))
                    .collect();
                t.env_defaults = t
                    .env_defaults
                    .iter()
                    .map(|(k, v)| (k.clone(), v.replace("~/", &format!("{}/", h.display()))))
                    .collect();
                t.env.retain(|e| e != "RUSTUP_HOME");
                let resolved = crate::sandbox::policy::ResolvedTool::resolve(name, &t);
                for p in &t.read_paths {
                    let path = resolved.expand_path(p);
                    assert!(path.starts_with(h), "{name}: {}", path.display());
                    assert_eq!(scan(&path), [], "{name} reads {}", path.display());
                }
            }
        }
    }
}
