//! The addresses and credentials of running services, as the environment
//! variables the tests read (`.services/env`, one `KEY=VALUE` a line). It only
//! describes services; it never starts or checks them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::Garage;

/// Where the services are and how to use them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    /// `TOOLHOST_TEMPORAL_ADDRESS`, e.g. `http://127.0.0.1:7233`.
    pub temporal_address: String,
    /// `TOOLHOST_TEMPORAL_NAMESPACE`.
    pub temporal_namespace: String,
    /// `TOOLHOST_S3_ENDPOINT`, e.g. `http://127.0.0.1:3900`.
    pub s3_endpoint: String,
    /// `TOOLHOST_S3_BUCKET`.
    pub s3_bucket: String,
    /// `TOOLHOST_S3_REGION`.
    pub s3_region: String,
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
    /// `TOOLHOST_TEMPORAL_CLI`: the `temporal` executable.
    pub temporal_cli: PathBuf,
    /// `TOOLHOST_GARAGE`: the `garage` executable.
    pub garage: PathBuf,
}

/// The variables, in file order.
pub const KEYS: [&str; 9] = [
    "TOOLHOST_TEMPORAL_ADDRESS",
    "TOOLHOST_TEMPORAL_NAMESPACE",
    "TOOLHOST_S3_ENDPOINT",
    "TOOLHOST_S3_BUCKET",
    "TOOLHOST_S3_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "TOOLHOST_TEMPORAL_CLI",
    "TOOLHOST_GARAGE",
];

impl Env {
    /// The environment file under `root`.
    pub fn path(root: &Path) -> PathBuf {
        crate::services_dir(root).join("env")
    }

    /// Reads `.services/env` (written by `Services::up`).
    pub fn load(root: &Path) -> Result<Env> {
        let path = Env::path(root);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (start the services with `cargo xtask services up`)",
                path.display()
            )
        })?;
        Env::from_vars(parse_kv(&text)).with_context(|| format!("in {}", path.display()))
    }

    /// The services named by this process's environment, when
    /// `TOOLHOST_TEMPORAL_ADDRESS` is set (an error when others are missing).
    pub fn from_process_env() -> Result<Option<Env>> {
        if std::env::var_os(KEYS[0]).is_none() {
            return Ok(None);
        }
        Env::from_vars(
            KEYS.iter()
                .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?))),
        )
        .context("in the process environment")
        .map(Some)
    }

    /// Builds an `Env` from `(KEY, VALUE)` pairs; every key of [`KEYS`] is required.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Env> {
        let vars: std::collections::HashMap<String, String> = vars.into_iter().collect();
        let missing: Vec<&str> = KEYS
            .iter()
            .copied()
            .filter(|k| !vars.contains_key(*k))
            .collect();
        if !missing.is_empty() {
            bail!("missing {}", missing.join(", "));
        }
        let get = |k: &str| vars[k].clone();
        Ok(Env {
            temporal_address: get(KEYS[0]),
            temporal_namespace: get(KEYS[1]),
            s3_endpoint: get(KEYS[2]),
            s3_bucket: get(KEYS[3]),
            s3_region: get(KEYS[4]),
            access_key_id: get(KEYS[5]),
            secret_access_key: get(KEYS[6]),
            temporal_cli: get(KEYS[7]).into(),
            garage: get(KEYS[8]).into(),
        })
    }

    /// The variables as `(KEY, VALUE)` pairs, in [`KEYS`] order.
    pub fn vars(&self) -> Vec<(String, String)> {
        let values = [
            self.temporal_address.clone(),
            self.temporal_namespace.clone(),
            self.s3_endpoint.clone(),
            self.s3_bucket.clone(),
            self.s3_region.clone(),
            self.access_key_id.clone(),
            self.secret_access_key.clone(),
            self.temporal_cli.display().to_string(),
            self.garage.display().to_string(),
        ];
        KEYS.iter().map(|k| k.to_string()).zip(values).collect()
    }

    /// Sets every variable on `cmd`.
    pub fn apply_to(&self, cmd: &mut Command) {
        cmd.envs(self.vars());
    }

    /// The Temporal frontend as `host:port`, the form the `temporal` CLI's `--address` takes.
    pub fn temporal_host_port(&self) -> &str {
        strip_scheme(&self.temporal_address)
    }

    /// The same services, but S3 served by `garage` (a private instance).
    pub fn with_s3(&self, garage: &Garage) -> Env {
        Env {
            s3_endpoint: garage.endpoint(),
            s3_bucket: garage.bucket().to_string(),
            s3_region: garage.region().to_string(),
            access_key_id: garage.key().id.clone(),
            secret_access_key: garage.key().secret.clone(),
            ..self.clone()
        }
    }

    pub(crate) fn write(&self, root: &Path) -> Result<()> {
        let header = "# Written by `cargo xtask services up`; removed by `services down`.\n";
        write_kv(&Env::path(root), header, &self.vars())
    }
}

fn strip_scheme(address: &str) -> &str {
    address
        .split_once("://")
        .map_or(address, |(_, rest)| rest)
        .trim_end_matches('/')
}

/// Parses `KEY=VALUE` lines; blank lines and `#` comments are skipped.
pub(crate) fn parse_kv(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Writes `KEY=VALUE` lines to `path` through a temporary file and a rename,
/// so a concurrent reader never sees half a file.
pub(crate) fn write_kv(path: &Path, header: &str, vars: &[(String, String)]) -> Result<()> {
    let mut text = header.to_string();
    for (k, v) in vars {
        text.push_str(&format!("{k}={v}\n"));
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Env {
        Env {
            temporal_address: "http://127.0.0.1:7233".into(),
            temporal_namespace: "default".into(),
            s3_endpoint: "http://127.0.0.1:3900".into(),
            s3_bucket: "toolhost".into(),
            s3_region: "garage".into(),
            access_key_id: "GK0123456789abcdef01234567".into(),
            secret_access_key: "ab".repeat(32),
            temporal_cli: "/x/.services/venv/bin/temporal".into(),
            garage: "/root/.cargo/bin/garage".into(),
        }
    }

    #[test]
    fn the_env_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(crate::services_dir(dir.path())).unwrap();
        sample().write(dir.path()).unwrap();
        assert_eq!(Env::load(dir.path()).unwrap(), sample());
        let text = std::fs::read_to_string(Env::path(dir.path())).unwrap();
        assert!(text.contains("\nTOOLHOST_S3_BUCKET=toolhost\n"), "{text}");
    }

    #[test]
    fn a_missing_key_is_named() {
        let mut vars = sample().vars();
        vars.retain(|(k, _)| k != "AWS_SECRET_ACCESS_KEY");
        let err = Env::from_vars(vars).unwrap_err();
        assert_eq!(err.to_string(), "missing AWS_SECRET_ACCESS_KEY");
    }

    #[test]
    fn apply_to_sets_every_variable() {
        let mut cmd = Command::new("env");
        sample().apply_to(&mut cmd);
        assert_eq!(cmd.get_envs().count(), KEYS.len());
        assert_eq!(sample().temporal_host_port(), "127.0.0.1:7233");
    }
}
