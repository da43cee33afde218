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
    /// Where per-run workspaces are created; default: a directory in the
    /// system temp dir, outside any project tree.
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
        config.check()?;
        Ok(config)
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
                let config = Self::parse(&text, base)
                    .with_context(|| format!("invalid host config `{}`", path.display()))?;
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
            // SAFETY-free and portable: per-user, so two users never share it.
            let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
            std::env::temp_dir()
                .join(format!("toolhost-{user}"))
                .join("work")
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
    fn relative_paths_follow_the_file() {
        let c = HostConfig::parse("toolbox = 'tb'", Some(Path::new("/etc/th"))).unwrap();
        let d = HostConfig::parse("", None).unwrap();
        assert!(d.toolbox.is_absolute() && d.data_dir.is_absolute());
        assert_eq!(c.toolbox, PathBuf::from("/etc/th/tb"));
        assert_eq!(c.data_dir, PathBuf::from("/etc/th/.toolhost"));
    }
}
