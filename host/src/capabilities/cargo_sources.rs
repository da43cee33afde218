//! Where a crate's dependencies would be fetched from, read from its
//! manifests and lock file before `cargo fetch` runs, so a target cannot use
//! the fetch step (the only rust tool with network) to reach hosts the
//! operator did not allow: git dependencies, other registries and path
//! dependencies leaving the target are refused, each with the manifest and
//! dependency that asked for it and how to allow it. The egress proxy
//! enforces the same rule on the wire; this check gives the clear message.
//!
//! Read: the crate's `Cargo.toml`, the workspace root above it (inside the
//! workspace), the members its `members` globs name, every path dependency
//! (transitively), each manifest's `dependencies`, `dev-dependencies`,
//! `build-dependencies` (also per `target`), `workspace.dependencies`,
//! `patch` and `replace`, and `Cargo.lock`.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Component, Path, PathBuf};

use crate::sandbox::policy::SourcePolicy;

/// The crates.io index, as manifests and lock files name it.
const CRATES_IO: &[&str] = &[
    "registry+https://github.com/rust-lang/crates.io-index",
    "sparse+https://index.crates.io/",
];

/// Most manifests read for one check.
const MAX_MANIFESTS: usize = 2000;
/// Largest manifest or lock file read.
const MAX_FILE: u64 = 8 << 20;

/// One refused dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Manifest (workspace-relative) or `Cargo.lock`.
    pub file: String,
    /// The dependency's name (or lock entry).
    pub dependency: String,
    /// What it comes from and how to allow it.
    pub why: String,
}

/// Checks the crate at `crate_dir` (workspace-relative, `""` = the root) of
/// the workspace at `root`. `Ok` with the list of refusals (empty: fetch
/// may run); `Err` when the manifests cannot be read or parsed.
pub fn check(root: &Path, crate_dir: &str, policy: &SourcePolicy) -> Result<Vec<Refusal>, String> {
    let mut c = Checker {
        root,
        policy,
        refusals: Vec::new(),
        seen: BTreeSet::new(),
        pending: VecDeque::new(),
    };
    let start = normalize(Path::new(crate_dir))
        .ok_or_else(|| format!("`{crate_dir}` leaves the workspace"))?;
    if !root.join(&start).join("Cargo.toml").is_file() {
        return Err(format!(
            "no Cargo.toml in `{}`: set the call's cwd to the crate directory",
            display(&start)
        ));
    }
    c.pending.push_back(start.clone());
    // The workspace root is the nearest manifest above with `[workspace]`.
    let mut above = start.clone();
    while above.pop() {
        if let Some(t) = c.read_manifest(&above)?
            && t.contains_key("workspace")
        {
            c.pending.push_back(above.clone());
            break;
        }
    }
    while let Some(dir) = c.pending.pop_front() {
        if !c.seen.insert(dir.clone()) {
            continue;
        }
        if c.seen.len() > MAX_MANIFESTS {
            return Err(format!(
                "the crate has more than {MAX_MANIFESTS} manifests to check"
            ));
        }
        if let Some(manifest) = c.read_manifest(&dir)? {
            c.manifest(&dir, &manifest)?;
        }
    }
    for dir in c.seen.clone() {
        let lock = c.root.join(&dir).join("Cargo.lock");
        if lock.is_file() {
            c.lock_file(&dir, &lock)?;
        }
    }
    Ok(c.refusals)
}

/// A refusal list as one message, saying what to do.
pub fn explain(refusals: &[Refusal]) -> String {
    let mut lines = vec![format!(
        "cargo-fetch refused to fetch {} dependenc{} (a target may only use crates.io and paths inside it unless the operator allows more):",
        refusals.len(),
        if refusals.len() == 1 { "y" } else { "ies" }
    )];
    for r in refusals.iter().take(20) {
        lines.push(format!("  - `{}` in {}: {}", r.dependency, r.file, r.why));
    }
    if refusals.len() > 20 {
        lines.push(format!("  - and {} more", refusals.len() - 20));
    }
    lines.join("\n")
}

struct Checker<'a> {
    root: &'a Path,
    policy: &'a SourcePolicy,
    refusals: Vec<Refusal>,
    seen: BTreeSet<PathBuf>,
    pending: VecDeque<PathBuf>,
}

fn display(dir: &Path) -> String {
    if dir.as_os_str().is_empty() {
        ".".into()
    } else {
        dir.display().to_string()
    }
}

/// `path` with `.` and `..` resolved lexically; `None` when it climbs above
/// its start.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_FILE)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text)
}

impl Checker<'_> {
    fn refuse(&mut self, file: &Path, dependency: &str, why: String) {
        self.refusals.push(Refusal {
            file: file.display().to_string(),
            dependency: dependency.to_string(),
            why,
        });
    }

    /// The parsed `dir/Cargo.toml`, `None` when there is none.
    fn read_manifest(&self, dir: &Path) -> Result<Option<toml::Table>, String> {
        let path = self.root.join(dir).join("Cargo.toml");
        if !path.is_file() {
            return Ok(None);
        }
        let text = read_bounded(&path)?;
        text.parse::<toml::Table>()
            .map(Some)
            .map_err(|e| format!("{}/Cargo.toml is not valid TOML: {e}", display(dir)))
    }

    fn manifest(&mut self, dir: &Path, m: &toml::Table) -> Result<(), String> {
        let file = dir.join("Cargo.toml");
        let tables = |t: &toml::Table| -> Vec<toml::Table> {
            ["dependencies", "dev-dependencies", "build-dependencies"]
                .iter()
                .filter_map(|k| t.get(*k).and_then(toml::Value::as_table).cloned())
                .collect()
        };
        let mut deps: Vec<toml::Table> = tables(m);
        if let Some(targets) = m.get("target").and_then(toml::Value::as_table) {
            for t in targets.values().filter_map(toml::Value::as_table) {
                deps.extend(tables(t));
            }
        }
        if let Some(ws) = m.get("workspace").and_then(toml::Value::as_table) {
            if let Some(d) = ws.get("dependencies").and_then(toml::Value::as_table) {
                deps.push(d.clone());
            }
            for member in ws
                .get("members")
                .and_then(toml::Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(toml::Value::as_str)
            {
                for found in self.glob(dir, member) {
                    self.pending.push_back(found);
                }
            }
        }
        if let Some(patch) = m.get("patch").and_then(toml::Value::as_table) {
            for (source, entries) in patch {
                if source != "crates-io" {
                    // Patching another source means depending on it.
                    self.source_url(&file, &format!("[patch.{source}]"), source);
                }
                if let Some(t) = entries.as_table() {
                    deps.push(t.clone());
                }
            }
        }
        if let Some(replace) = m.get("replace").and_then(toml::Value::as_table) {
            deps.push(replace.clone());
        }
        for table in deps {
            for (name, spec) in &table {
                self.dependency(dir, &file, name, spec);
            }
        }
        Ok(())
    }

    fn dependency(&mut self, dir: &Path, file: &Path, name: &str, spec: &toml::Value) {
        let Some(spec) = spec.as_table() else {
            return; // `name = "1.0"`: crates.io.
        };
        if let Some(url) = spec.get("git").and_then(toml::Value::as_str) {
            self.git(file, name, url);
        }
        if let Some(path) = spec.get("path").and_then(toml::Value::as_str) {
            match normalize(&dir.join(path)) {
                Some(inside) if !Path::new(path).is_absolute() => {
                    self.pending.push_back(inside);
                }
                _ if self.policy.paths_outside => {}
                _ => self.refuse(
                    file,
                    name,
                    format!(
                        "its path `{path}` leaves the target; vendor the crate into the target, or allow it with [verticals.rust.tools.cargo-fetch.sources] paths_outside = true (and make it readable)"
                    ),
                ),
            }
        }
        for key in ["registry", "registry-index"] {
            if let Some(reg) = spec.get(key).and_then(toml::Value::as_str)
                && !self.policy.registries.iter().any(|r| r == reg)
            {
                self.refuse(
                    file,
                    name,
                    format!(
                        "it comes from registry `{reg}`; only crates.io is allowed unless the operator lists it in [verticals.rust.tools.cargo-fetch.sources] registries"
                    ),
                );
            }
        }
    }

    fn git(&mut self, file: &Path, name: &str, url: &str) {
        let host = git_host(url);
        let allowed = host
            .as_deref()
            .is_some_and(|h| self.policy.git.iter().any(|g| g.eq_ignore_ascii_case(h)));
        if !allowed {
            self.refuse(
                file,
                name,
                format!(
                    "it comes from git ({url}); git dependencies are fetched only from hosts the operator lists in [verticals.rust.tools.cargo-fetch.sources] git{}",
                    host.map(|h| format!(" (this one: \"{h}\")")).unwrap_or_default()
                ),
            );
        }
    }

    /// A source URL (of a lock entry or a `[patch]` table).
    fn source_url(&mut self, file: &Path, dependency: &str, source: &str) {
        if CRATES_IO.contains(&source) {
            return;
        }
        if let Some(url) = source.strip_prefix("git+") {
            self.git(file, dependency, url);
        } else if source.starts_with("https://")
            || source.starts_with("http://")
            || source.starts_with("ssh://")
        {
            // `[patch."https://github.com/..."]` names a git source.
            self.git(file, dependency, source);
        } else {
            let bare = source.strip_prefix("registry+").unwrap_or(source);
            if !self
                .policy
                .registries
                .iter()
                .any(|r| r == source || r == bare)
            {
                self.refuse(
                    file,
                    dependency,
                    format!(
                        "it comes from the registry {source}; only crates.io is allowed unless the operator lists it in [verticals.rust.tools.cargo-fetch.sources] registries"
                    ),
                );
            }
        }
    }

    fn lock_file(&mut self, dir: &Path, lock: &Path) -> Result<(), String> {
        let file = dir.join("Cargo.lock");
        let text = read_bounded(lock)?;
        let parsed: toml::Table = text
            .parse()
            .map_err(|e| format!("{} is not valid TOML: {e}", display(&file)))?;
        let packages = parsed
            .get("package")
            .and_then(toml::Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut seen = BTreeSet::new();
        for p in packages.iter().filter_map(toml::Value::as_table) {
            let (Some(name), Some(source)) = (
                p.get("name").and_then(toml::Value::as_str),
                p.get("source").and_then(toml::Value::as_str),
            ) else {
                continue;
            };
            // One refusal per source, not per version.
            let key = source.split('#').next().unwrap_or(source).to_string();
            if seen.insert(key.clone()) {
                self.source_url(&file, name, &key);
            }
        }
        Ok(())
    }

    /// Directories below `dir` matching the members glob `pattern`
    /// (`*` and `?` within one path component).
    fn glob(&self, dir: &Path, pattern: &str) -> Vec<PathBuf> {
        let mut found = vec![dir.to_path_buf()];
        for part in Path::new(pattern).components() {
            let part = match part {
                Component::Normal(p) => p.to_string_lossy().into_owned(),
                Component::CurDir => continue,
                // Members outside the workspace root are not read.
                _ => return Vec::new(),
            };
            let mut next = Vec::new();
            for base in &found {
                if !part.contains(['*', '?']) {
                    next.push(base.join(&part));
                    continue;
                }
                let Ok(entries) = std::fs::read_dir(self.root.join(base)) else {
                    continue;
                };
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if e.file_type().is_ok_and(|t| t.is_dir()) && wildcard(&part, &name) {
                        next.push(base.join(name));
                    }
                }
            }
            found = next;
        }
        found.sort();
        found
    }
}

/// `*` and `?` matching of one name.
fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The host of a git URL (`https://host/...`, `ssh://git@host/...`,
/// `git@host:path`), lowercased.
pub fn git_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host = rest.split(['/', ':', '?', '#']).next()?;
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = d.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        d
    }

    const PKG: &str = "[package]\nname = \"a\"\nversion = \"0.1.0\"\n";

    #[test]
    fn crates_io_and_inner_paths_pass() {
        let d = tree(&[
            (
                "Cargo.toml",
                &format!("{PKG}[dependencies]\nserde = \"1\"\nb = {{ path = \"crates/b\" }}\n"),
            ),
            (
                "crates/b/Cargo.toml",
                &format!("{PKG}[dev-dependencies]\nitoa = {{ version = \"1\" }}\n"),
            ),
            (
                "Cargo.lock",
                "version = 4\n[[package]]\nname = \"itoa\"\nversion = \"1.0.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n",
            ),
        ]);
        assert_eq!(check(d.path(), "", &SourcePolicy::default()).unwrap(), []);
    }

    #[test]
    fn git_registries_and_escaping_paths_are_refused_with_how_to_allow_them() {
        let d = tree(&[
            (
                "Cargo.toml",
                "[workspace]\nmembers = [\"crates/*\"]\n[workspace.dependencies]\nw = { git = \"https://internal.example/w.git\" }\n[patch.crates-io]\np = { path = \"../../p\" }\n",
            ),
            (
                "crates/x/Cargo.toml",
                &format!(
                    "{PKG}[target.'cfg(unix)'.build-dependencies]\nr = {{ version = \"1\", registry = \"corp\" }}\n"
                ),
            ),
            (
                "crates/x/Cargo.lock",
                "[[package]]\nname = \"g\"\nversion = \"0.1.0\"\nsource = \"git+ssh://git@10.0.0.5/g.git#abc\"\n",
            ),
        ]);
        let refusals = check(d.path(), "crates/x", &SourcePolicy::default()).unwrap();
        let names: Vec<&str> = refusals.iter().map(|r| r.dependency.as_str()).collect();
        assert_eq!(names, ["r", "w", "p", "g"], "{refusals:?}");
        let text = explain(&refusals);
        assert!(
            text.contains("internal.example") && text.contains("sources] git"),
            "{text}"
        );
        assert!(
            text.contains("leaves the target") && text.contains("registry `corp`"),
            "{text}"
        );
        assert!(text.contains("10.0.0.5"), "{text}");

        let allowing = SourcePolicy {
            registries: vec!["corp".into()],
            git: vec!["internal.example".into(), "10.0.0.5".into()],
            paths_outside: true,
        };
        assert_eq!(check(d.path(), "crates/x", &allowing).unwrap(), []);
    }

    #[test]
    fn broken_manifests_and_missing_crates_are_errors() {
        let d = tree(&[("Cargo.toml", "[package\n")]);
        assert!(
            check(d.path(), "", &SourcePolicy::default())
                .unwrap_err()
                .contains("not valid TOML")
        );
        assert!(
            check(d.path(), "nope", &SourcePolicy::default())
                .unwrap_err()
                .contains("no Cargo.toml")
        );
        assert!(
            check(d.path(), "../x", &SourcePolicy::default())
                .unwrap_err()
                .contains("leaves")
        );
    }

    #[test]
    fn git_hosts_and_wildcards() {
        assert_eq!(
            git_host("https://GitHub.com/a/b").as_deref(),
            Some("github.com")
        );
        assert_eq!(git_host("ssh://git@host:22/x").as_deref(), Some("host"));
        assert_eq!(git_host("git@host:org/x.git").as_deref(), Some("host"));
        assert!(wildcard("crate-*", "crate-a") && wildcard("*", "x") && wildcard("a?c", "abc"));
        assert!(!wildcard("crate-*", "other"));
    }
}
