//! Host paths never reach a submitter. Tools print absolute paths (cargo's
//! `Compiling x (/tmp/toolhost-0/work-…/run/workspace)`, a panic's
//! `/root/.cache/toolhost/cargo/registry/src/…`), and those would tell a
//! submitter the host's layout, user names and where other runs live. The
//! journal passes every text it records (log lines, findings, progress,
//! audits) and the run record (summary, error) through a [`Redactor`] that
//! replaces the run's host paths with stable names:
//!
//! | host path | becomes |
//! | --- | --- |
//! | the run's workspace | `/workspace` (what activity code sees) |
//! | the tools' home | `$HOME` (the tools' `HOME`) |
//! | a path a tool's environment names (`CARGO_HOME`, `RUSTUP_HOME`, …) | `$CARGO_HOME`, … |
//! | the work and data directories | `$WORK_DIR`, `$DATA_DIR` |
//! | the host user's home | `~` |
//!
//! Only whole path components are replaced (`/root` is not cut out of
//! `/rootfs`), longest paths first.

use std::path::Path;

use serde_json::Value;

/// Replaces host path prefixes in text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// (host path, replacement), longest host path first.
    pairs: Vec<(String, String)>,
}

impl Redactor {
    /// A redactor for `pairs` of host path and replacement; paths are also
    /// matched in their canonical form.
    pub fn new(pairs: impl IntoIterator<Item = (std::path::PathBuf, String)>) -> Self {
        let mut out: Vec<(String, String)> = Vec::new();
        for (path, name) in pairs {
            let mut forms = vec![path.clone()];
            if let Ok(c) = path.canonicalize() {
                forms.push(c);
            }
            for f in forms {
                let text = f.display().to_string();
                let text = text.trim_end_matches('/').to_string();
                // `/` alone, or a relative path, would match everywhere.
                if text.len() > 1 && text.starts_with('/') && !out.iter().any(|(p, _)| *p == text) {
                    out.push((text, name.clone()));
                }
            }
        }
        out.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        Redactor { pairs: out }
    }

    /// The redactor of a run: its workspace and tool home, the paths its
    /// tools' environments name, the work and data directories and the host
    /// user's home.
    pub fn for_run(workspace: &Path, tool_home: &Path, config: &crate::config::HostConfig) -> Self {
        let mut pairs = vec![
            (workspace.to_path_buf(), "/workspace".to_string()),
            (tool_home.to_path_buf(), "$HOME".to_string()),
            (config.work_dir(), "$WORK_DIR".to_string()),
            (config.data_dir.clone(), "$DATA_DIR".to_string()),
        ];
        for v in config.verticals.values() {
            for (name, t) in &v.tools {
                let resolved = crate::sandbox::policy::ResolvedTool::resolve(name, t);
                for (k, val) in &resolved.base_env {
                    if val.starts_with('/') && k != "PATH" && k != "HOME" {
                        pairs.push((val.into(), format!("${k}")));
                    }
                }
            }
        }
        if let Some(home) = std::env::var_os("HOME") {
            pairs.push((home.into(), "~".to_string()));
        }
        Self::new(pairs)
    }

    /// True when it replaces nothing.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// `text` with the host paths replaced.
    pub fn text(&self, text: &str) -> String {
        if self.pairs.is_empty() || !text.contains('/') {
            return text.to_string();
        }
        let mut out = text.to_string();
        for (path, name) in &self.pairs {
            if out.contains(path.as_str()) {
                out = replace_components(&out, path, name);
            }
        }
        out
    }

    /// Every string in `value` redacted, in place.
    pub fn value(&self, value: &mut Value) {
        if self.pairs.is_empty() {
            return;
        }
        match value {
            Value::String(s) if s.contains('/') => *s = self.text(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.value(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.value(v)),
            _ => {}
        }
    }

    /// A finding with its text fields and location redacted.
    pub fn finding(&self, mut f: crate::manifest::Finding) -> crate::manifest::Finding {
        if self.pairs.is_empty() {
            return f;
        }
        f.title = self.text(&f.title);
        f.message = self.text(&f.message);
        if let Some(loc) = f.location.as_mut() {
            loc.path = self.text(&loc.path);
            // A location under the workspace is a workspace-relative path.
            if let Some(rel) = loc.path.strip_prefix("/workspace/") {
                loc.path = rel.to_string();
            }
        }
        f
    }
}

/// `text` with each occurrence of `path` that ends at a component boundary
/// replaced by `name`.
fn replace_components(text: &str, path: &str, name: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(path) {
        let end = at + path.len();
        let boundary = rest[end..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || matches!(c, '.' | '_' | '-')));
        out.push_str(&rest[..at]);
        out.push_str(if boundary { name } else { path });
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_paths_become_names_on_component_boundaries() {
        let r = Redactor::new([
            (
                "/tmp/toolhost-0/work-ab/run-1/workspace".into(),
                "/workspace".to_string(),
            ),
            (
                "/tmp/toolhost-0/work-ab/run-1/home".into(),
                "$HOME".to_string(),
            ),
            ("/tmp/toolhost-0/work-ab".into(), "$WORK_DIR".to_string()),
            (
                "/root/.cache/toolhost/cargo".into(),
                "$CARGO_HOME".to_string(),
            ),
            ("/root".into(), "~".to_string()),
        ]);
        assert_eq!(
            r.text("Compiling x v0.1.0 (/tmp/toolhost-0/work-ab/run-1/workspace)"),
            "Compiling x v0.1.0 (/workspace)"
        );
        assert_eq!(
            r.text(
                "at /root/.cache/toolhost/cargo/registry/src/a.rs:3 and /root/.rustup/x and /rootfs"
            ),
            "at $CARGO_HOME/registry/src/a.rs:3 and ~/.rustup/x and /rootfs"
        );
        assert_eq!(
            r.text("/tmp/toolhost-0/work-ab/run-2/workspace"),
            "$WORK_DIR/run-2/workspace"
        );
        let mut v = serde_json::json!({"a": ["/root/x", 3], "b": {"c": "/tmp/toolhost-0/work-ab/run-1/home/.x"}});
        r.value(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a": ["~/x", 3], "b": {"c": "$HOME/.x"}})
        );
    }

    #[test]
    fn findings_under_the_workspace_get_relative_locations() {
        let r = Redactor::new([("/w/run/workspace".into(), "/workspace".to_string())]);
        let f = crate::manifest::Finding {
            rule_id: "x".into(),
            title: "crash at /w/run/workspace/src/lib.rs:20".into(),
            message: "see /w/run/workspace/src/lib.rs".into(),
            severity: crate::manifest::Severity::High,
            location: Some(crate::manifest::Location {
                path: "/w/run/workspace/src/lib.rs".into(),
                start_line: Some(20),
                end_line: None,
                start_column: None,
            }),
            fingerprint: "f".into(),
        };
        let f = r.finding(f);
        assert_eq!(f.title, "crash at /workspace/src/lib.rs:20");
        assert_eq!(f.location.unwrap().path, "src/lib.rs");
        assert!(Redactor::new([("/".into(), "x".to_string())]).is_empty());
    }
}
