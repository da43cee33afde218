//! Host configuration (TOML): where the toolbox and run data live, guest
//! limits, and the verticals with the native tools each one offers.
//!
//! Resolution order: `--config FILE`, `$TOOLHOST_CONFIG`, `./toolhost.toml`,
//! then the built-in default (`host/config/default.toml`). Relative paths in
//! a file are relative to that file's directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use crate::runtime::limits::GuestLimits;
use crate::sandbox::policy::ToolConfig;

/// The built-in configuration used when no file is given.
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

/// The whole host configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Directory of `.wasm` workflow components.
    #[serde(default = "default_toolbox")]
    pub toolbox: PathBuf,
    /// Where run records are written (`<data_dir>/runs/<run-id>/`).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Where per-run workspaces are created; default:
    /// `<temp dir>/toolhost-<uid>/work-<hash of data_dir>`, outside any
    /// project tree and distinct for hosts with distinct data directories. Created
    /// with mode 0700; refused when another user owns or may write it or an
    /// ancestor, or when an ancestor holds configuration that tools would
    /// read (see [`crate::engine::workdir`]).
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
    /// Settings for `toolhost host`.
    #[serde(default)]
    pub host: HostSection,
    /// Limits applied to every guest.
    #[serde(default)]
    pub limits: GuestLimits,
    /// The native tool sandbox.
    #[serde(default)]
    pub sandbox: crate::sandbox::detect::SandboxConfig,
    /// Verticals by name.
    #[serde(default)]
    pub verticals: BTreeMap<String, VerticalConfig>,
    /// Temporal (distributed mode). Without it `toolhost host` serves
    /// embedded runs over HTTP only.
    #[serde(default)]
    pub temporal: Option<crate::distributed::TemporalConfig>,
    /// Where targets, components and results are stored.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Settings for `toolhost serve`, the authenticated API.
    #[serde(default)]
    pub serve: ServeConfig,
    /// The file this configuration was read from (none: built in).
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
}

/// Settings of `toolhost serve` (`[serve]` in the config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: String,
    /// Which engine runs the API's runs: `embedded` (in this process, the
    /// default) or `distributed` (submitted to Temporal, stored in S3;
    /// needs `[temporal]` and `[storage.s3]`, and keeps no state of its
    /// own, so replicas can share the load).
    pub engine: ServeEngine,
    /// Require a token on every request but the health checks. Off is
    /// allowed only on a loopback address.
    pub auth: bool,
    /// Largest target upload, in MiB.
    pub max_upload_mib: u64,
    /// Runs executing at once; more wait in `queued`. 0: one per CPU.
    pub max_concurrent_runs: usize,
    /// Per-token rate limits and quotas.
    pub limits: ServeLimits,
    /// `[serve.tls]`: serve HTTPS with this certificate (rustls).
    pub tls: Option<ServeTls>,
}

/// The engine behind `toolhost serve`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServeEngine {
    #[default]
    Embedded,
    Distributed,
}

/// `[serve.tls]`: PEM files of the server's certificate chain and key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeTls {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:7400".into(),
            engine: ServeEngine::Embedded,
            auth: true,
            max_upload_mib: 1024,
            max_concurrent_runs: 0,
            limits: ServeLimits::default(),
            tls: None,
        }
    }
}

/// `[serve.limits]`: what one token may do; over a limit the API answers
/// 429 with `Retry-After`. 0 turns a limit off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeLimits {
    /// Sustained requests per second.
    pub requests_per_second: f64,
    /// Requests allowed at once above the rate.
    pub burst: u32,
    /// Runs queued or running at once.
    pub concurrent_runs: usize,
    /// Upload bytes per UTC day, in MiB.
    pub upload_mib_per_day: u64,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            requests_per_second: 50.0,
            burst: 200,
            concurrent_runs: 16,
            upload_mib_per_day: 20 * 1024,
        }
    }
}

/// `[storage]`: the blob store and the target cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `[storage.s3]`: an S3-compatible bucket. Without it blobs live under
    /// `data_dir` (one machine only).
    #[serde(default)]
    pub s3: Option<crate::storage::s3::S3Config>,
    /// Size cap of this host's cache of unpacked targets.
    #[serde(default = "default_cache_mib")]
    pub target_cache_mib: u64,
    /// Size cap of the compile cache (`<data_dir>/cache/components`); the
    /// least recently used entries are removed past it.
    #[serde(default = "default_compile_cache_mib")]
    pub compile_cache_mib: u64,
    /// Largest unpacked target accepted.
    #[serde(default = "default_max_target_mib")]
    pub max_target_mib: u64,
    /// Most files in a target.
    #[serde(default = "default_max_target_files")]
    pub max_target_files: u64,
}

fn default_cache_mib() -> u64 {
    2048
}
fn default_compile_cache_mib() -> u64 {
    2048
}
fn default_max_target_mib() -> u64 {
    4096
}
fn default_max_target_files() -> u64 {
    500_000
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            s3: None,
            target_cache_mib: default_cache_mib(),
            compile_cache_mib: default_compile_cache_mib(),
            max_target_mib: default_max_target_mib(),
            max_target_files: default_max_target_files(),
        }
    }
}

impl StorageConfig {
    /// Caps applied when unpacking a target.
    pub fn unpack_caps(&self) -> crate::storage::pack::UnpackCaps {
        crate::storage::pack::UnpackCaps {
            max_bytes: self.max_target_mib.saturating_mul(1 << 20),
            max_files: self.max_target_files,
        }
    }
}

/// Settings of a long-running host process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSection {
    /// The vertical this host serves; embedded runs accept every configured vertical.
    pub vertical: Option<String>,
    /// Address of the host's HTTP API (`/healthz`, `/workflows`, `/runs`);
    /// default 127.0.0.1:7300. Keep it on loopback: it runs workflows.
    pub listen: Option<String>,
}

/// A vertical: a toolchain and the tools it offers to workflows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerticalConfig {
    /// Use the built-in vertical of this name (`host/config/default.toml`),
    /// tools and all, so a host config stays in step with the shipped one;
    /// `tools` may then not be given.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub builtin: bool,
    /// What this vertical is for.
    #[serde(default)]
    pub description: String,
    /// Tools by the name workflows use.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolConfig>,
}

fn default_toolbox() -> PathBuf {
    PathBuf::from("toolbox")
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".toolhost")
}

impl HostConfig {
    /// Parses a configuration from TOML text; `base` anchors relative paths.
    pub fn parse(text: &str, base: Option<&Path>) -> Result<Self> {
        let mut config: HostConfig = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        // Paths are made absolute once, here: the watcher, the sandbox
        // rules and tool environments all need absolute paths.
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let base = match base {
            Some(b) => cwd.join(b),
            None => cwd,
        };
        config.toolbox = base.join(&config.toolbox);
        config.data_dir = base.join(&config.data_dir);
        config.work_dir = config.work_dir.map(|w| base.join(w));
        if let Some(tls) = &mut config.serve.tls {
            tls.cert = base.join(&tls.cert);
            tls.key = base.join(&tls.key);
        }
        config.use_builtin_verticals()?;
        config.apply_env();
        config.check()?;
        Ok(config)
    }

    /// Replaces each `builtin = true` vertical with the built-in one.
    fn use_builtin_verticals(&mut self) -> Result<()> {
        let wanted: Vec<String> = self
            .verticals
            .iter()
            .filter(|(_, v)| v.builtin)
            .map(|(k, _)| k.clone())
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let builtin: HostConfig =
            toml::from_str(DEFAULT_CONFIG).map_err(|e| anyhow::anyhow!("built-in config: {e}"))?;
        for name in wanted {
            let mine = &self.verticals[&name];
            if !mine.tools.is_empty() {
                bail!(
                    "[verticals.{name}] sets `builtin = true` and its own tools; use one or the other"
                );
            }
            let Some(theirs) = builtin.verticals.get(&name) else {
                bail!(
                    "[verticals.{name}] asks for the built-in vertical `{name}`, but the built-in ones are: {}",
                    builtin.vertical_names()
                );
            };
            let description = if mine.description.is_empty() {
                theirs.description.clone()
            } else {
                mine.description.clone()
            };
            self.verticals.insert(
                name,
                VerticalConfig {
                    builtin: false,
                    description,
                    tools: theirs.tools.clone(),
                },
            );
        }
        Ok(())
    }

    /// Applies `TOOLHOST_TEMPORAL_ADDRESS`, `TOOLHOST_TEMPORAL_NAMESPACE`,
    /// `TOOLHOST_S3_ENDPOINT`, `TOOLHOST_S3_BUCKET` and `TOOLHOST_S3_REGION`
    /// (as written by `cargo xtask services up` to `.services/env`), which
    /// override the file.
    fn apply_env(&mut self) {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(address) = var("TOOLHOST_TEMPORAL_ADDRESS") {
            self.temporal.get_or_insert_with(Default::default).address = address;
        }
        if let Some(ns) = var("TOOLHOST_TEMPORAL_NAMESPACE") {
            self.temporal.get_or_insert_with(Default::default).namespace = ns;
        }
        if let Some(bucket) = var("TOOLHOST_S3_BUCKET") {
            let s3 = self.storage.s3.get_or_insert_with(Default::default);
            s3.bucket = bucket;
            if let Some(e) = var("TOOLHOST_S3_ENDPOINT") {
                s3.endpoint = Some(e);
            }
            if let Some(r) = var("TOOLHOST_S3_REGION") {
                s3.region = Some(r);
            }
        }
    }

    /// The configured blob store: S3 when `[storage.s3]` is set, else the
    /// local directory `data_dir`.
    pub fn blob_store(&self) -> Result<std::sync::Arc<dyn crate::storage::BlobStore>> {
        Ok(match &self.storage.s3 {
            Some(s3) => std::sync::Arc::new(crate::storage::s3::S3Store::new(s3.clone())?),
            None => std::sync::Arc::new(crate::storage::LocalStore::new(&self.data_dir)),
        })
    }

    /// The `[temporal]` section, or an error saying how to configure it.
    pub fn temporal(&self) -> Result<&crate::distributed::TemporalConfig> {
        self.temporal.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "no Temporal configured: add a [temporal] section (address = \"http://127.0.0.1:7233\") to the host config, or set TOOLHOST_TEMPORAL_ADDRESS (`cargo xtask services up` writes .services/env)"
            )
        })
    }

    /// Overrides the toolbox directory (absolute, relative to the current directory).
    pub fn set_toolbox(&mut self, dir: &Path) {
        self.toolbox = std::env::current_dir().unwrap_or_default().join(dir);
    }

    /// Overrides the data directory (absolute, relative to the current directory).
    pub fn set_data_dir(&mut self, dir: &Path) {
        self.data_dir = std::env::current_dir().unwrap_or_default().join(dir);
    }

    /// Loads the configuration following the resolution order in the module docs.
    pub fn load(explicit: Option<&Path>) -> Result<(Self, String)> {
        let from_env = std::env::var_os("TOOLHOST_CONFIG").map(PathBuf::from);
        let local = PathBuf::from("toolhost.toml");
        let path = explicit
            .map(Path::to_path_buf)
            .or(from_env)
            .or_else(|| local.exists().then_some(local));
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read host config `{}`", path.display()))?;
                let base = path.parent().map(|p| {
                    if p.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        p
                    }
                });
                let mut config = Self::parse(&text, base)
                    .with_context(|| format!("invalid host config `{}`", path.display()))?;
                config.config_file = Some(path.clone());
                Ok((config, path.display().to_string()))
            }
            None => Ok((
                Self::parse(DEFAULT_CONFIG, None).context("invalid built-in config")?,
                "built-in default".to_string(),
            )),
        }
    }

    fn check(&self) -> Result<()> {
        for (name, vertical) in &self.verticals {
            crate::manifest::check_name("vertical", name).map_err(anyhow::Error::msg)?;
            for (tool, cfg) in &vertical.tools {
                cfg.check(tool)
                    .with_context(|| format!("vertical `{name}`, tool `{tool}`"))?;
            }
        }
        if let Some(v) = &self.host.vertical
            && !self.verticals.contains_key(v)
        {
            bail!(
                "[host] vertical = \"{v}\" but no [verticals.{v}] is configured; configured: {}",
                self.vertical_names()
            );
        }
        if self.limits.memory_mib == 0 || self.limits.max_timeout_secs == 0 {
            bail!("limits.memory_mib and limits.max_timeout_secs must be positive");
        }
        Ok(())
    }

    /// Comma-separated vertical names, for messages.
    pub fn vertical_names(&self) -> String {
        let names: Vec<_> = self.verticals.keys().map(String::as_str).collect();
        if names.is_empty() {
            "(none)".into()
        } else {
            names.join(", ")
        }
    }

    /// The directory per-run workspaces go to.
    pub fn work_dir(&self) -> PathBuf {
        self.work_dir.clone().unwrap_or_else(|| {
            // Per user (by uid: `$USER` is whatever the environment says),
            // so two users never share it, and per data directory, so two
            // hosts on one machine never do either.
            let data = crate::toolbox::digest(self.data_dir.as_os_str().as_encoded_bytes());
            std::env::temp_dir()
                .join(format!("toolhost-{}", crate::util::private_dir::uid()))
                .join(format!("work-{}", &data[..8]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_config_parses_with_rust_vertical() {
        let c = HostConfig::parse(DEFAULT_CONFIG, None).unwrap();
        let rust = &c.verticals["rust"];
        assert!(rust.tools.contains_key("cargo"));
        assert!(rust.tools.contains_key("cargo-clippy"));
    }

    #[test]
    fn unknown_keys_and_bad_host_vertical_are_rejected() {
        let err = HostConfig::parse("toolbx = 'x'", None).unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
        let err = HostConfig::parse("[host]\nvertical = 'go'\n", None).unwrap_err();
        assert!(format!("{err:#}").contains("no [verticals.go]"), "{err:#}");
    }

    #[test]
    fn docs_config_md_shows_the_built_in_config_as_it_is() {
        let doc = include_str!("../../docs/CONFIG.md");
        let section = doc
            .split("## The built-in configuration")
            .nth(1)
            .and_then(|s| s.split("```toml\n").nth(1))
            .and_then(|s| s.split("\n```").next())
            .expect("docs/CONFIG.md has the built-in config block");
        assert_eq!(
            section.trim_end(),
            DEFAULT_CONFIG.trim_end(),
            "update docs/CONFIG.md from host/config/default.toml"
        );
    }

    #[test]
    fn builtin_verticals_are_taken_whole() {
        let c = HostConfig::parse("[verticals.rust]\nbuiltin = true\n", None).unwrap();
        let builtin = HostConfig::parse(DEFAULT_CONFIG, None).unwrap();
        let names =
            |c: &HostConfig| -> Vec<String> { c.verticals["rust"].tools.keys().cloned().collect() };
        assert_eq!(names(&c), names(&builtin));
        assert!(c.verticals["rust"].tools.contains_key("cargo-fetch"));
        let e = HostConfig::parse("[verticals.go]\nbuiltin = true\n", None).unwrap_err();
        assert!(
            format!("{e:#}").contains("built-in ones are: python, rust"),
            "{e:#}"
        );
        let e = HostConfig::parse(
            "[verticals.rust]\nbuiltin = true\n[verticals.rust.tools.x]\ncommand = \"x\"\n",
            None,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("one or the other"), "{e:#}");
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let c = HostConfig::parse("toolbox = 'tb'", Some(Path::new("/etc/th"))).unwrap();
        let d = HostConfig::parse("", None).unwrap();
        assert!(d.toolbox.is_absolute() && d.data_dir.is_absolute());
        assert_eq!(c.toolbox, PathBuf::from("/etc/th/tb"));
        assert_eq!(c.data_dir, PathBuf::from("/etc/th/.toolhost"));
    }
}
