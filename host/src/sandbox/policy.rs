//! Tool policy: a vertical's tool table, resolved against this host, and the
//! rule that a workflow gets only the tools it declared *and* the vertical
//! offers. Neither side can widen the other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// One tool as configured in a vertical.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    /// Executable: an absolute path (`~/` = host home), or a name looked up
    /// on the host's PATH.
    pub command: String,
    /// How to install the tool when it is missing (shown by `toolhost
    /// doctor` and in the error a workflow gets).
    #[serde(default)]
    pub install: Option<String>,
    /// Fixed leading arguments, before the workflow's own.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables copied from the host when set; also the only
    /// variables a workflow may set for this tool.
    #[serde(default)]
    pub env: Vec<String>,
    /// Values for variables not inherited from the host (`~/` = host home).
    #[serde(default)]
    pub env_defaults: BTreeMap<String, String>,
    /// Longest a single invocation may run, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Cap on captured stdout and on captured stderr, in MiB each.
    #[serde(default = "default_output_limit")]
    pub output_limit_mib: u64,
    /// Whether the tool may use the network (otherwise it runs in an empty
    /// network namespace). Prefer `egress`, which names what it may reach.
    #[serde(default)]
    pub network: bool,
    /// Hosts (`name:port`) the tool may reach, through the host's egress
    /// proxy, and nothing else (landlock lets it connect to the proxy's port
    /// only). Empty: no network.
    #[serde(default)]
    pub egress: Vec<String>,
    /// A tool the host knows how to drive and check itself (`cargo-fetch`);
    /// unset for ordinary tools.
    #[serde(default)]
    pub kind: Option<ToolKind>,
    /// For `kind = "cargo-fetch"`: dependency sources allowed besides
    /// crates.io and paths inside the target.
    #[serde(default)]
    pub sources: SourcePolicy,
    /// Extra paths the tool may read and execute, e.g. a toolchain. `~/`
    /// is the host user's home and `${NAME}` the value of variable `NAME`
    /// in the tool's environment (`${RUSTUP_HOME}/toolchains`). Whatever a
    /// tool can read, a submitter can read: never list credentials.
    #[serde(default)]
    pub read_paths: Vec<String>,
    /// Extra paths the tool may write (besides the workspace and its home),
    /// expanded like `read_paths`; created (mode 0700) when missing.
    #[serde(default)]
    pub write_paths: Vec<String>,
    /// Processes one invocation may have (default: `[sandbox] max_processes`).
    #[serde(default)]
    pub max_processes: Option<u64>,
    /// Largest file it may write, in MiB (default: `[sandbox] max_file_mib`).
    #[serde(default)]
    pub max_file_mib: Option<u64>,
    /// CPU seconds (RLIMIT_CPU), unlimited by default.
    #[serde(default)]
    pub cpu_secs: Option<u64>,
    /// Address space in MiB (RLIMIT_AS), unlimited by default.
    #[serde(default)]
    pub memory_mib: Option<u64>,
}

/// Tools the host drives itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolKind {
    /// `cargo fetch` of the crate at the call's `cwd`: the workflow passes
    /// no arguments; the host checks the crate's dependency sources first,
    /// runs cargo outside the target (so the target's `.cargo/config.toml`
    /// is not read), and gives it network only through the egress proxy.
    CargoFetch,
}

/// Dependency sources a `cargo-fetch` tool may fetch from, besides
/// crates.io and path dependencies inside the target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePolicy {
    /// Registry index URLs, e.g. `sparse+https://cargo.example.com/index/`
    /// (their hosts are added to `egress`).
    #[serde(default)]
    pub registries: Vec<String>,
    /// Hosts git dependencies may come from, e.g. `github.com` (added to
    /// `egress` on port 443).
    #[serde(default)]
    pub git: Vec<String>,
    /// Allow path dependencies outside the target (they must also be
    /// readable by the tool through `read_paths`).
    #[serde(default)]
    pub paths_outside: bool,
}

fn default_timeout() -> u64 {
    600
}

fn default_output_limit() -> u64 {
    16
}

impl ToolConfig {
    /// A tool running `command` with every other setting at its default.
    pub fn new(command: impl Into<String>) -> Self {
        ToolConfig {
            command: command.into(),
            args: vec![],
            env: vec![],
            env_defaults: BTreeMap::new(),
            timeout_secs: default_timeout(),
            output_limit_mib: default_output_limit(),
            network: false,
            egress: vec![],
            kind: None,
            sources: SourcePolicy::default(),
            read_paths: vec![],
            write_paths: vec![],
            max_processes: None,
            max_file_mib: None,
            cpu_secs: None,
            memory_mib: None,
            install: None,
        }
    }

    /// Where the tool may go through the egress proxy: `egress`, and for a
    /// `cargo-fetch` tool the hosts of the git hosts and registries its
    /// `sources` allow (port 443).
    pub fn egress_hosts(&self) -> Vec<(String, u16)> {
        let mut hosts: Vec<(String, u16)> = self
            .egress
            .iter()
            .filter_map(|h| crate::sandbox::egress::parse_host_port(h).ok())
            .collect();
        if self.kind == Some(ToolKind::CargoFetch) && !self.egress.is_empty() {
            for g in &self.sources.git {
                hosts.push((g.to_ascii_lowercase(), 443));
            }
            for r in &self.sources.registries {
                let url = r
                    .trim_start_matches("sparse+")
                    .trim_start_matches("registry+");
                if let Some(h) = url
                    .strip_prefix("https://")
                    .and_then(|rest| rest.split(['/', ':']).next())
                    .filter(|h| !h.is_empty())
                {
                    hosts.push((h.to_ascii_lowercase(), 443));
                }
            }
        }
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// True when the tool runs in the host's network namespace: it has the
    /// whole network, or an egress list (which the proxy and landlock
    /// narrow to the listed hosts).
    pub fn uses_network(&self) -> bool {
        self.network || !self.egress.is_empty()
    }

    pub(crate) fn check(&self, name: &str) -> Result<()> {
        crate::manifest::check_name("tool", name).map_err(anyhow::Error::msg)?;
        if self.command.trim().is_empty() {
            bail!("`command` is empty");
        }
        if self.timeout_secs == 0 {
            bail!("`timeout_secs` must be positive");
        }
        for host in &self.egress {
            crate::sandbox::egress::parse_host_port(host)
                .map_err(|e| anyhow::anyhow!("`egress`: {e}"))?;
        }
        if self.network && !self.egress.is_empty() {
            bail!(
                "`network = true` gives the tool the whole network, `egress` names what it may reach: set one of them"
            );
        }
        if self.kind.is_none() && self.sources != SourcePolicy::default() {
            bail!("`sources` applies to `kind = \"cargo-fetch\"` tools only");
        }
        Ok(())
    }
}

/// A tool ready to run on this host: its configuration plus what was
/// resolved from the host (executable, environment, byte and time limits).
#[derive(Debug, Clone)]
pub struct ResolvedTool {
    /// The name workflows use.
    pub name: String,
    /// The configuration it came from (fixed args, env allow-list, network,
    /// sandbox paths and limits are read from here).
    pub config: ToolConfig,
    /// Absolute executable path, or the lookup error to report.
    pub program: Result<PathBuf, String>,
    /// The environment the tool starts with (before per-call variables).
    pub base_env: Vec<(String, String)>,
    /// Per-invocation timeout cap.
    pub timeout: Duration,
    /// Per-stream output cap in bytes.
    pub output_limit: usize,
}

impl ResolvedTool {
    /// Resolves `config` against the host's PATH and environment.
    pub fn resolve(name: &str, config: &ToolConfig) -> Self {
        let program = find_program(&config.command).map_err(|e| match &config.install {
            Some(hint) => format!("{e} (install it: {hint})"),
            None => e,
        });
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let mut base_env = Vec::new();
        for key in &config.env {
            if let Ok(value) = std::env::var(key) {
                base_env.push((key.clone(), value));
            }
        }
        for (key, value) in &config.env_defaults {
            if base_env.iter().any(|(k, _)| k == key) {
                continue;
            }
            let value = match (value.strip_prefix("~/"), &home) {
                (Some(rest), Some(home)) => home.join(rest).display().to_string(),
                _ => value.clone(),
            };
            base_env.push((key.clone(), value));
        }
        ResolvedTool {
            name: name.to_string(),
            config: config.clone(),
            program,
            base_env,
            timeout: Duration::from_secs(config.timeout_secs),
            output_limit: usize::try_from(config.output_limit_mib.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX),
        }
    }
}

impl ResolvedTool {
    /// `path` with a leading `~/` replaced by the host user's home and each
    /// `${NAME}` by the tool's environment value of `NAME` (empty when it
    /// has none).
    pub fn expand_path(&self, path: &str) -> PathBuf {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let mut text = String::new();
        let mut rest = path;
        while let Some(start) = rest.find("${") {
            text.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            match after.find('}') {
                Some(end) => {
                    let name = &after[..end];
                    if let Some((_, v)) = self.base_env.iter().find(|(k, _)| k == name) {
                        text.push_str(v);
                    }
                    rest = &after[end + 1..];
                }
                None => {
                    text.push_str(&rest[start..]);
                    rest = "";
                }
            }
        }
        text.push_str(rest);
        match (text.strip_prefix("~/"), &home) {
            (Some(tail), Some(home)) => home.join(tail),
            _ => PathBuf::from(text),
        }
    }
}

/// Looks `command` up like a shell would, without running one.
pub fn find_program(command: &str) -> Result<PathBuf, String> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let expanded = match (command.strip_prefix("~/"), &home) {
        (Some(rest), Some(home)) => Some(home.join(rest)),
        _ => None,
    };
    let candidate = expanded.as_deref().unwrap_or(Path::new(command));
    if candidate.is_absolute() {
        return if is_executable(candidate) {
            Ok(candidate.to_path_buf())
        } else {
            Err(format!(
                "`{}` does not exist or is not executable",
                candidate.display()
            ))
        };
    }
    if command.contains('/') {
        return Err(format!(
            "`{command}` is a relative path; use an absolute path or a bare name found on PATH"
        ));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let full = dir.join(command);
        if is_executable(&full) {
            return Ok(full);
        }
    }
    Err(format!(
        "`{command}` was not found on this host's PATH; install it or set an absolute `command` in the vertical config"
    ))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The tools one run may use: declared by the workflow ∩ offered by the vertical.
#[derive(Debug, Clone, Default)]
pub struct ToolGrant {
    vertical: String,
    offered: BTreeMap<String, ResolvedTool>,
    declared: Vec<String>,
}

impl ToolGrant {
    /// The grant of workflow `info` on a host configured with `config`:
    /// the tools its vertical offers there, narrowed to those it declared.
    pub fn for_workflow(
        config: &crate::config::HostConfig,
        info: &crate::manifest::WorkflowInfo,
    ) -> Self {
        let offered = config
            .verticals
            .get(&info.vertical)
            .map(|v| {
                v.tools
                    .iter()
                    .map(|(name, cfg)| (name.clone(), ResolvedTool::resolve(name, cfg)))
                    .collect()
            })
            .unwrap_or_default();
        Self::new(&info.vertical, offered, &info.tools)
    }

    /// The grant for a workflow of `vertical` that declared `declared`.
    pub fn new(
        vertical: &str,
        offered: BTreeMap<String, ResolvedTool>,
        declared: &[String],
    ) -> Self {
        ToolGrant {
            vertical: vertical.to_string(),
            offered,
            declared: declared.to_vec(),
        }
    }

    /// The tool if granted, or a message saying why not and what is allowed.
    pub fn check(&self, tool: &str) -> Result<&ResolvedTool, String> {
        if !self.declared.iter().any(|d| d == tool) {
            return Err(format!(
                "the workflow did not declare tool `{tool}` in its metadata; declared: {}",
                list_or_none(self.declared.iter())
            ));
        }
        self.offered.get(tool).ok_or_else(|| {
            format!(
                "tool `{tool}` is not offered by vertical `{}`; offered: {}",
                self.vertical,
                list_or_none(self.offered.keys())
            )
        })
    }
}

fn list_or_none<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = items.map(String::as_str).collect();
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(cmd: &str) -> ToolConfig {
        ToolConfig {
            command: cmd.into(),
            args: vec![],
            env: vec!["PATH".into()],
            env_defaults: BTreeMap::from([("FOO".into(), "~/x".into())]),
            timeout_secs: 5,
            output_limit_mib: 1,
            network: false,
            egress: vec![],
            kind: None,
            sources: SourcePolicy::default(),
            read_paths: vec![],
            write_paths: vec![],
            max_processes: None,
            max_file_mib: None,
            cpu_secs: None,
            memory_mib: None,
            install: None,
        }
    }

    #[test]
    fn paths_expand_home_and_the_tools_own_variables() {
        let mut cfg = tool("true");
        cfg.env_defaults = BTreeMap::from([("RUSTUP_HOME".into(), "/opt/rustup".into())]);
        let t = ResolvedTool::resolve("true", &cfg);
        assert_eq!(
            t.expand_path("${RUSTUP_HOME}/toolchains"),
            PathBuf::from("/opt/rustup/toolchains")
        );
        assert_eq!(t.expand_path("${NOT_SET}/x"), PathBuf::from("/x"));
        assert_eq!(
            t.expand_path("/a/${unclosed"),
            PathBuf::from("/a/${unclosed")
        );
        let home = PathBuf::from(std::env::var_os("HOME").unwrap());
        assert_eq!(t.expand_path("~/.cache/x"), home.join(".cache/x"));
    }

    #[test]
    fn grant_is_the_intersection() {
        let offered = BTreeMap::from([
            (
                "true".to_string(),
                ResolvedTool::resolve("true", &tool("true")),
            ),
            ("ls".to_string(), ResolvedTool::resolve("ls", &tool("ls"))),
        ]);
        let grant = ToolGrant::new("rust", offered, &["true".into(), "cargo".into()]);
        assert!(grant.check("true").is_ok());
        let e = grant.check("ls").unwrap_err();
        assert!(e.contains("did not declare tool `ls`"), "{e}");
        let e = grant.check("cargo").unwrap_err();
        assert!(
            e.contains("not offered by vertical `rust`") && e.contains("ls, true"),
            "{e}"
        );
    }

    #[test]
    fn programs_resolve_on_path_and_env_defaults_expand_home() {
        let t = ResolvedTool::resolve("true", &tool("true"));
        assert!(t.program.as_ref().unwrap().is_absolute());
        let foo = t.base_env.iter().find(|(k, _)| k == "FOO").unwrap();
        assert!(foo.1.ends_with("/x") && !foo.1.starts_with('~'));
        assert!(
            find_program("definitely-not-a-tool-xyz")
                .unwrap_err()
                .contains("PATH")
        );
        assert!(find_program("./rel").is_err());
    }

    #[test]
    fn commands_expand_home_and_missing_ones_say_how_to_install() {
        let home = PathBuf::from(std::env::var_os("HOME").expect("HOME"));
        let dir = tempfile::tempdir_in(&home).expect("tempdir in HOME");
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let rel = exe.strip_prefix(&home).unwrap().display().to_string();
        assert_eq!(find_program(&format!("~/{rel}")).unwrap(), exe);

        let mut missing = tool("~/no-such-dir-xyz/bandit");
        missing.install = Some("pip install bandit".into());
        let err = ResolvedTool::resolve("bandit", &missing)
            .program
            .unwrap_err();
        assert!(
            err.contains(&home.join("no-such-dir-xyz/bandit").display().to_string())
                && err.contains("install it: pip install bandit"),
            "{err}"
        );
    }
}
