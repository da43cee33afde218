//! The workspace's shared services: one Temporal dev server and one Garage,
//! started detached so they outlive whoever started them, tracked by pid
//! files under `.services/`, and serialised by a file lock so that concurrent
//! callers (xtask, several test binaries) start them once. It never signals a
//! pid that does not run the expected program.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::env::{Env, parse_kv, write_kv};
use crate::garage::{BUCKET, GaragePorts, Instance, READY_TIMEOUT, REGION, S3Key};
use crate::install::{find_garage, temporal_cli};
use crate::process::{
    STOP_GRACE, is_alive, port_open, runs, spawn_logged, tail, terminate, wait_for,
};
use crate::services_dir;
use crate::temporal::{NAMESPACE, Temporal};

/// Default Temporal frontend port (override: `TOOLHOST_TEMPORAL_PORT`).
pub const DEFAULT_TEMPORAL_PORT: u16 = 7233;
/// Default S3 port (override: `TOOLHOST_S3_PORT`).
pub const DEFAULT_S3_PORT: u16 = 3900;
/// Default Garage RPC port (override: `TOOLHOST_GARAGE_RPC_PORT`).
pub const DEFAULT_GARAGE_RPC_PORT: u16 = 3901;
/// Default Garage admin API port (override: `TOOLHOST_GARAGE_ADMIN_PORT`).
pub const DEFAULT_GARAGE_ADMIN_PORT: u16 = 3903;

const TEMPORAL: &str = "temporal";
const GARAGE: &str = "garage";

/// The shared Temporal and Garage of a workspace (`root`).
pub struct Services;

/// One service as `Services::status` sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceStatus {
    /// `temporal` or `garage`.
    pub name: &'static str,
    /// Whether its recorded process is alive.
    pub running: bool,
    /// Where it listens.
    pub address: String,
    /// Its process, when running.
    pub pid: Option<u32>,
}

impl fmt::Display for ServiceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.running { "running" } else { "stopped" };
        write!(f, "{:<9} {state:<8} {}", self.name, self.address)?;
        if let Some(pid) = self.pid {
            write!(f, "  pid {pid}")?;
        }
        Ok(())
    }
}

/// The ports of both services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ports {
    temporal: u16,
    garage: GaragePorts,
}

impl Ports {
    /// The defaults, with the `TOOLHOST_*_PORT` overrides.
    fn configured() -> Result<Ports> {
        let port = |var: &str, default: u16| -> Result<u16> {
            match std::env::var(var) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .with_context(|| format!("{var}={v:?} is not a port number")),
                Err(_) => Ok(default),
            }
        };
        Ok(Ports {
            temporal: port("TOOLHOST_TEMPORAL_PORT", DEFAULT_TEMPORAL_PORT)?,
            garage: GaragePorts {
                s3: port("TOOLHOST_S3_PORT", DEFAULT_S3_PORT)?,
                rpc: port("TOOLHOST_GARAGE_RPC_PORT", DEFAULT_GARAGE_RPC_PORT)?,
                admin: port("TOOLHOST_GARAGE_ADMIN_PORT", DEFAULT_GARAGE_ADMIN_PORT)?,
            },
        })
    }

    /// The ports recorded by the last `up` (what running services listen on).
    fn recorded(root: &Path) -> Option<Ports> {
        let text = std::fs::read_to_string(ports_path(root)).ok()?;
        let vars: std::collections::HashMap<_, _> = parse_kv(&text).into_iter().collect();
        let get = |k: &str| vars.get(k)?.parse().ok();
        Some(Ports {
            temporal: get("TEMPORAL_PORT")?,
            garage: GaragePorts {
                s3: get("S3_PORT")?,
                rpc: get("GARAGE_RPC_PORT")?,
                admin: get("GARAGE_ADMIN_PORT")?,
            },
        })
    }

    fn record(&self, root: &Path) -> Result<()> {
        let vars = [
            ("TEMPORAL_PORT", self.temporal),
            ("S3_PORT", self.garage.s3),
            ("GARAGE_RPC_PORT", self.garage.rpc),
            ("GARAGE_ADMIN_PORT", self.garage.admin),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        write_kv(&ports_path(root), "# The ports of the last `up`.\n", &vars)
    }
}

fn ports_path(root: &Path) -> PathBuf {
    services_dir(root).join("ports")
}

fn pid_path(root: &Path, name: &str) -> PathBuf {
    services_dir(root).join(format!("{name}.pid"))
}

/// The recorded pid of `name`, when it still runs `name`.
fn running_pid(root: &Path, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(pid_path(root, name)).ok()?;
    let pid = text.trim().parse().ok()?;
    runs(pid, name).then_some(pid)
}

/// Holds `.services/lock` until dropped.
fn lock(root: &Path) -> Result<File> {
    let dir = services_dir(root);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(file)
}

impl Services {
    /// Installs what is missing: the Temporal CLI (a project-local venv) and Garage (`cargo install`, slow).
    pub fn install(root: &Path) -> Result<()> {
        crate::install::install_temporal(root)?;
        crate::install::install_garage()?;
        Ok(())
    }

    /// Starts whichever service is not running, waits until both are ready
    /// (60 s each at most), writes `.services/env` and returns it. When both
    /// run already it only checks them. Safe to call from several processes
    /// at once. Fails, naming the fix, when a tool is not installed.
    pub fn up(root: &Path) -> Result<Env> {
        let root = &std::path::absolute(root)?;
        let _lock = lock(root)?;
        let cli = temporal_cli(root);
        if !cli.exists() {
            bail!(
                "the Temporal CLI is not installed at {} (`cargo xtask services up` installs it)",
                cli.display()
            );
        }
        let garage_bin = find_garage().context(
            "the `garage` executable is not installed (`cargo xtask services up` installs it)",
        )?;
        let key = S3Key::load_or_create(&S3Key::path(root))?;
        let configured = Ports::configured()?;
        let recorded = Ports::recorded(root);
        let running = |name| running_pid(root, name).and(recorded);

        let ports = Ports {
            temporal: running(TEMPORAL).unwrap_or(configured).temporal,
            garage: running(GARAGE).unwrap_or(configured).garage,
        };
        // Recorded first, so that `status` knows where a service listens even
        // when the other one then fails to start.
        ports.record(root)?;

        let temporal = Temporal {
            cli,
            dir: services_dir(root).join(TEMPORAL),
            port: ports.temporal,
        };
        std::fs::create_dir_all(&temporal.dir)?;
        ensure_running(
            root,
            TEMPORAL,
            &[temporal.port],
            &temporal.log_path(),
            || Ok(temporal.server_command()),
            |alive, _fresh| {
                wait_for(
                    Instant::now() + READY_TIMEOUT,
                    alive,
                    "Temporal to serve its namespace",
                    || temporal.ready(),
                )
            },
        )?;

        let garage = Instance {
            bin: garage_bin,
            dir: services_dir(root).join(GARAGE),
            ports: ports.garage,
            key: key.clone(),
        };
        let GaragePorts { s3, rpc, admin } = garage.ports;
        ensure_running(
            root,
            GARAGE,
            &[s3, rpc, admin],
            &garage.log_path(),
            || {
                // Written only when starting: a running server keeps the config it read.
                garage.write_config().map(|()| garage.server_command())
            },
            |alive, fresh| {
                if fresh {
                    garage.wait_ready_and_set_up(READY_TIMEOUT, alive)
                } else {
                    wait_for(
                        Instant::now() + READY_TIMEOUT,
                        alive,
                        "Garage's /health to report OK",
                        || garage.healthy(),
                    )?;
                    // Cheap (a few CLI calls) and repairs a deleted bucket or a new key.
                    garage.set_up()
                }
            },
        )?;

        let env = Env {
            temporal_address: format!("http://{}", temporal.address()),
            temporal_namespace: NAMESPACE.into(),
            s3_endpoint: garage.endpoint(),
            s3_bucket: BUCKET.into(),
            s3_region: REGION.into(),
            access_key_id: key.id,
            secret_access_key: key.secret,
            temporal_cli: temporal.cli.clone(),
            garage: garage.bin.clone(),
        };
        env.write(root)?;
        Ok(env)
    }

    /// Stops both services (SIGTERM, SIGKILL after 10 s), removes their pid
    /// files and `.services/env`. Their data stays.
    pub fn down(root: &Path) -> Result<()> {
        let _lock = lock(root)?;
        for name in [GARAGE, TEMPORAL] {
            if let Some(pid) = running_pid(root, name) {
                eprintln!("services: stopping {name} (pid {pid})");
                terminate(pid, STOP_GRACE).with_context(|| format!("cannot stop {name}"))?;
            }
            let _ = std::fs::remove_file(pid_path(root, name));
        }
        let _ = std::fs::remove_file(Env::path(root));
        Ok(())
    }

    /// Each service: running or stopped, address (where it listens, or would
    /// listen if started now), pid.
    pub fn status(root: &Path) -> Result<Vec<ServiceStatus>> {
        let configured = Ports::configured()?;
        let recorded = Ports::recorded(root);
        let entry = |name, address: &dyn Fn(Ports) -> String| {
            let pid = running_pid(root, name);
            let ports = pid.and(recorded).unwrap_or(configured);
            ServiceStatus {
                name,
                running: pid.is_some(),
                address: address(ports),
                pid,
            }
        };
        Ok(vec![
            entry(TEMPORAL, &|p| format!("127.0.0.1:{} (gRPC)", p.temporal)),
            entry(GARAGE, &|p| {
                let GaragePorts { s3, rpc, admin } = p.garage;
                format!("http://127.0.0.1:{s3} (S3; rpc :{rpc}, admin :{admin})")
            }),
        ])
    }

    /// Whether both services run.
    pub fn running(root: &Path) -> bool {
        [TEMPORAL, GARAGE]
            .iter()
            .all(|name| running_pid(root, name).is_some())
    }
}

/// Makes `name` run and be ready: checks the recorded process, or starts
/// `command()` detached and records its pid. `wait(alive, fresh)` waits for
/// readiness; on failure a fresh server is stopped and its log tail reported.
fn ensure_running(
    root: &Path,
    name: &str,
    ports: &[u16],
    log: &Path,
    command: impl FnOnce() -> Result<std::process::Command>,
    wait: impl FnOnce(&mut dyn FnMut() -> bool, bool) -> Result<()>,
) -> Result<u32> {
    if let Some(pid) = running_pid(root, name) {
        eprintln!("services: {name} is already running (pid {pid})");
        wait(&mut || is_alive(pid), false).with_context(|| {
            format!(
                "{name} (pid {pid}) runs but is not ready; see {} or restart with \
                 `cargo xtask services down` and `up`",
                log.display()
            )
        })?;
        return Ok(pid);
    }
    for &port in ports {
        if port_open(port) {
            bail!(
                "cannot start {name}: 127.0.0.1:{port} is already in use by another program \
                 (stop it, or choose other ports: see docs/SERVICES.md)"
            );
        }
    }
    let mut cmd = command()?;
    cmd.current_dir(services_dir(root));
    let child = spawn_logged(&mut cmd, log, true)?;
    let pid = child.id();
    // Not waited for: the server must outlive this process. Should it exit
    // while we still run, `is_alive` treats the unreaped zombie as dead.
    drop(child);
    let pid_file = pid_path(root, name);
    std::fs::write(&pid_file, format!("{pid}\n"))
        .with_context(|| format!("cannot write {}", pid_file.display()))?;
    eprintln!(
        "services: started {name} (pid {pid}), log {}",
        log.display()
    );
    let started = Instant::now();
    if let Err(e) = wait(&mut || is_alive(pid), true) {
        let _ = terminate(pid, Duration::from_secs(2));
        let _ = std::fs::remove_file(&pid_file);
        bail!(
            "{name} did not become ready: {e:#}\nlast 30 lines of {}:\n{}",
            log.display(),
            tail(log, 30)
        );
    }
    eprintln!(
        "services: {name} ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(pid)
}
