//! Single-node Garage (S3): its config file, the one-time cluster setup (layout,
//! the fixed access key, bucket `toolhost`, its grant), done idempotently on
//! every start, and [`Garage`], a private instance a test owns and may stop and
//! restart on the same data. It never deletes a data directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::env::{parse_kv, write_kv};
use crate::process::{
    STOP_GRACE, checked, http_get, kill_child, port_open, random_hex, spawn_logged, stop_child,
    tail, wait_for,
};

/// The bucket every instance serves.
pub const BUCKET: &str = "toolhost";
/// The S3 region every instance answers to.
pub const REGION: &str = "garage";
/// The name of the imported access key.
const KEY_NAME: &str = "toolhost";
/// How long a start may take before it counts as failed.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one `garage` CLI call may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// An S3 access key: `GK` + 24 hex digits, and a 64-hex-digit secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Key {
    /// The access key id (`AWS_ACCESS_KEY_ID`).
    pub id: String,
    /// The secret (`AWS_SECRET_ACCESS_KEY`).
    pub secret: String,
}

impl S3Key {
    /// Where the workspace keeps its key: `.services/s3-key`.
    pub fn path(root: &Path) -> PathBuf {
        crate::services_dir(root).join("s3-key")
    }

    /// The key stored at `path`, generated and stored on first use. Every
    /// Garage of the workspace imports this one key, so a test's S3 client
    /// works against the shared and the private instances alike.
    pub fn load_or_create(path: &Path) -> Result<S3Key> {
        let vars = load_or_create(path, || {
            Ok(vec![
                ("AWS_ACCESS_KEY_ID".into(), format!("GK{}", random_hex(12)?)),
                ("AWS_SECRET_ACCESS_KEY".into(), random_hex(32)?),
            ])
        })?;
        let key = S3Key {
            id: vars.get("AWS_ACCESS_KEY_ID").cloned().unwrap_or_default(),
            secret: vars
                .get("AWS_SECRET_ACCESS_KEY")
                .cloned()
                .unwrap_or_default(),
        };
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !(key.id.starts_with("GK") && hex(&key.id[2..], 24) && hex(&key.secret, 64)) {
            bail!(
                "{} does not hold a valid Garage key (AWS_ACCESS_KEY_ID=GK + 24 hex digits, \
                 AWS_SECRET_ACCESS_KEY=64 hex digits); delete it to get a new one",
                path.display()
            );
        }
        Ok(key)
    }
}

/// Reads the `KEY=VALUE` file at `path`, or creates it from `make`. Two
/// processes racing here agree on one file: it is published with a hard
/// link, which never overwrites.
fn load_or_create(
    path: &Path,
    make: impl FnOnce() -> Result<Vec<(String, String)>>,
) -> Result<HashMap<String, String>> {
    if !path.exists() {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_extension(format!("new{}", std::process::id()));
        write_kv(&tmp, "# Generated once; keep it.\n", &make()?)?;
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(parse_kv(&text).into_iter().collect())
}

/// The three ports of an instance (all on 127.0.0.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GaragePorts {
    /// The S3 API.
    pub s3: u16,
    /// Node-to-node RPC, which the `garage` CLI uses too.
    pub rpc: u16,
    /// The admin API (`/health`).
    pub admin: u16,
}

/// One Garage: where its files are, its ports, and the key it must serve.
#[derive(Clone, Debug)]
pub(crate) struct Instance {
    pub(crate) bin: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) ports: GaragePorts,
    pub(crate) key: S3Key,
}

impl Instance {
    pub(crate) fn config_path(&self) -> PathBuf {
        self.dir.join("garage.toml")
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.join("garage.log")
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.s3)
    }

    /// Writes `garage.toml` for the current ports; the RPC secret and admin
    /// token are generated once per directory and kept.
    pub(crate) fn write_config(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let secrets = load_or_create(&self.dir.join("secrets"), || {
            Ok(vec![
                ("RPC_SECRET".into(), random_hex(32)?),
                ("ADMIN_TOKEN".into(), random_hex(32)?),
            ])
        })?;
        let secret = |k: &str| {
            secrets
                .get(k)
                .cloned()
                .with_context(|| format!("{k} missing from {}", self.dir.join("secrets").display()))
        };
        let dir = toml_string(&self.dir.display().to_string());
        let GaragePorts { s3, rpc, admin } = self.ports;
        let config = format!(
            "# Written by devservices at every start; edits are lost.\n\
             metadata_dir = \"{dir}/meta\"\n\
             data_dir = \"{dir}/data\"\n\
             db_engine = \"sqlite\"\n\
             replication_factor = 1\n\
             rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_secret = \"{rpc_secret}\"\n\
             \n\
             [s3_api]\n\
             s3_region = \"{REGION}\"\n\
             api_bind_addr = \"127.0.0.1:{s3}\"\n\
             \n\
             [admin]\n\
             api_bind_addr = \"127.0.0.1:{admin}\"\n\
             admin_token = \"{admin_token}\"\n",
            rpc_secret = secret("RPC_SECRET")?,
            admin_token = secret("ADMIN_TOKEN")?,
        );
        std::fs::write(self.config_path(), config)
            .with_context(|| format!("cannot write {}", self.config_path().display()))
    }

    /// `garage -c <config> server`.
    pub(crate) fn server_command(&self) -> Command {
        let mut cmd = self.cli();
        cmd.arg("server");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "garage=info,warn");
        }
        // Its log goes to a file: no colour codes.
        if std::env::var_os("NO_COLOR").is_none() {
            cmd.env("NO_COLOR", "1");
        }
        cmd
    }

    fn cli(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c").arg(self.config_path());
        cmd
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        checked(self.cli().args(args), CLI_TIMEOUT)
    }

    /// Whether the admin API reports the cluster fully operational.
    pub(crate) fn healthy(&self) -> bool {
        http_get(self.ports.admin, "/health").is_ok_and(|(code, _)| code == 200)
    }

    /// Waits (while `alive`) for the server to answer, then makes sure the
    /// layout, the key, the bucket and the grant exist, then waits for health.
    pub(crate) fn wait_ready_and_set_up(
        &self,
        timeout: Duration,
        alive: &mut dyn FnMut() -> bool,
    ) -> Result<()> {
        let end = Instant::now() + timeout;
        wait_for(end, alive, "`garage status` to answer", || {
            self.run(&["status"]).is_ok()
        })?;
        self.set_up()?;
        wait_for(end, alive, "Garage's /health to report OK", || {
            self.healthy()
        })
    }

    /// Makes the layout, the key, the bucket and the grant exist (each step only when missing).
    pub(crate) fn set_up(&self) -> Result<()> {
        let layout = self.run(&["layout", "show"])?;
        let version = layout
            .lines()
            .find_map(|l| l.strip_prefix("Current cluster layout version:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .with_context(|| format!("cannot read the layout version from:\n{layout}"))?;
        if version == 0 {
            let node = self.run(&["node", "id", "-q"])?;
            let node = node.trim().split('@').next().unwrap_or_default();
            self.run(&["layout", "assign", "-z", "dc1", "-c", "1G", node])?;
            self.run(&["layout", "apply", "--version", "1"])?;
        }
        let key = &self.key;
        if self.run(&["key", "info", &key.id]).is_err() {
            self.run(&[
                "key",
                "import",
                "--yes",
                &key.id,
                &key.secret,
                "-n",
                KEY_NAME,
            ])?;
        }
        if self.run(&["bucket", "info", BUCKET]).is_err() {
            self.run(&["bucket", "create", BUCKET])?;
        }
        self.run(&[
            "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", &key.id,
        ])?;
        Ok(())
    }
}

/// Quotes `s` for a TOML basic string.
fn toml_string(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A private single-node Garage owned by a test: its own directory and
/// ports, bucket `toolhost`, the workspace's key. [`Garage::stop`] and
/// [`Garage::start`] take S3 away and bring it back on the same data; dropping
/// it kills the server (the directory stays).
#[derive(Debug)]
pub struct Garage {
    instance: Instance,
    child: Option<Child>,
}

impl Garage {
    /// Starts a Garage with its data under `dir` and waits until it serves the bucket.
    pub fn start_private(
        dir: &Path,
        s3_port: u16,
        rpc_port: u16,
        admin_port: u16,
    ) -> Result<Garage> {
        let bin = crate::install::find_garage().context(
            "the `garage` executable is not installed (`cargo xtask services up` installs it)",
        )?;
        let key = S3Key::load_or_create(&S3Key::path(&crate::workspace_root()))?;
        let mut garage = Garage {
            instance: Instance {
                bin,
                dir: dir.to_path_buf(),
                ports: GaragePorts {
                    s3: s3_port,
                    rpc: rpc_port,
                    admin: admin_port,
                },
                key,
            },
            child: None,
        };
        garage.start()?;
        Ok(garage)
    }

    /// Starts the server again (on the same data); a no-op when it runs.
    pub fn start(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let GaragePorts { s3, rpc, admin } = self.instance.ports;
        for port in [s3, rpc, admin] {
            if port_open(port) {
                bail!("cannot start Garage: 127.0.0.1:{port} is already in use");
            }
        }
        self.instance.write_config()?;
        let log = self.instance.log_path();
        let mut child = spawn_logged(&mut self.instance.server_command(), &log, false)?;
        let ready = self.instance.wait_ready_and_set_up(READY_TIMEOUT, &mut || {
            child.try_wait().is_ok_and(|status| status.is_none())
        });
        if let Err(e) = ready {
            let _ = kill_child(&mut child);
            bail!(
                "Garage in {} did not become ready: {e:#}\nlast 30 lines of {}:\n{}",
                self.instance.dir.display(),
                log.display(),
                tail(&log, 30)
            );
        }
        self.child = Some(child);
        Ok(())
    }

    /// Stops the server gracefully (SIGTERM, then SIGKILL after 10 s); keeps its data.
    pub fn stop(&mut self) -> Result<()> {
        match self.child.take() {
            Some(mut child) => stop_child(&mut child, STOP_GRACE),
            None => Ok(()),
        }
    }

    /// Kills the server at once (SIGKILL), as a crash would; keeps its data.
    pub fn kill(&mut self) -> Result<()> {
        match self.child.take() {
            Some(mut child) => kill_child(&mut child),
            None => Ok(()),
        }
    }

    /// Whether the server process is alive.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().is_ok_and(|status| status.is_none()),
            None => false,
        }
    }

    /// The S3 endpoint, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        self.instance.endpoint()
    }

    /// The ports it listens on.
    pub fn ports(&self) -> GaragePorts {
        self.instance.ports
    }

    /// The bucket it serves.
    pub fn bucket(&self) -> &str {
        BUCKET
    }

    /// The S3 region it answers to.
    pub fn region(&self) -> &str {
        REGION
    }

    /// The access key with read, write and owner rights on the bucket.
    pub fn key(&self) -> &S3Key {
        &self.instance.key
    }

    /// Its directory (config, log, data).
    pub fn dir(&self) -> &Path {
        &self.instance.dir
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.instance.log_path()
    }

    /// A `garage -c <its config>` command, for anything else a test needs.
    pub fn cli(&self) -> Command {
        self.instance.cli()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::free_port;

    #[test]
    fn a_key_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/s3-key");
        let a = S3Key::load_or_create(&path).unwrap();
        assert!(a.id.starts_with("GK") && a.id.len() == 26, "{a:?}");
        assert_eq!(a.secret.len(), 64);
        assert_eq!(S3Key::load_or_create(&path).unwrap(), a);
        std::fs::write(&path, "AWS_ACCESS_KEY_ID=nope\n").unwrap();
        assert!(S3Key::load_or_create(&path).is_err());
    }

    #[test]
    fn config_paths_are_quoted() {
        assert_eq!(toml_string(r#"a"b\c"#), r#"a\"b\\c"#);
    }

    /// A real Garage: start, serve, stop, start again on the same data.
    #[test]
    fn private_garage_stops_and_starts_on_its_data() {
        if crate::install::find_garage().is_none() {
            eprintln!("skipped: `garage` is not installed (`cargo xtask services up` installs it)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ports = [
            free_port().unwrap(),
            free_port().unwrap(),
            free_port().unwrap(),
        ];
        let mut garage = Garage::start_private(dir.path(), ports[0], ports[1], ports[2]).unwrap();
        assert!(garage.is_running());
        let s3 = garage.ports().s3;
        // An anonymous request gets an S3 error document: S3 is up.
        let (code, body) = http_get(s3, "/").unwrap();
        assert_eq!(code, 403, "{body}");
        assert!(body.contains("<Error>"), "{body}");
        let info = checked(garage.cli().args(["bucket", "info", BUCKET]), CLI_TIMEOUT).unwrap();
        assert!(info.contains(&garage.key().id), "{info}");

        garage.stop().unwrap();
        assert!(!garage.is_running());
        assert!(!port_open(s3), "S3 still answers after stop");

        garage.start().unwrap();
        assert!(port_open(s3));
        assert!(std::fs::read_to_string(garage.log_path()).is_ok());
        // Same data: the bucket came back without being created again.
        let again = checked(garage.cli().args(["bucket", "info", BUCKET]), CLI_TIMEOUT).unwrap();
        let id = |s: &str| s.lines().find(|l| l.contains("Bucket:")).map(str::to_owned);
        assert_eq!(id(&info), id(&again));

        garage.kill().unwrap();
        assert!(!port_open(s3));
        garage.start().unwrap();
        assert!(garage.instance.healthy());
    }
}
