//! What the native sandbox can enforce on this machine, and the decision to
//! run with it: in `enforce` mode a host refuses to start when a mechanism
//! is missing; in `degraded` mode it runs with what is available and says
//! so in its log. Detection runs the supervisor's probe in a throwaway
//! process, so it tests the real thing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use super::cgroup::{CgroupGuard, CgroupPool, CgroupRoot};
use super::policy::ResolvedTool;
use super::supervisor::{ProcessLimits, SandboxPlan};

/// `[sandbox]` in the host config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// `enforce` (refuse to start without every mechanism) or `degraded`.
    pub mode: SandboxMode,
    /// Paths every tool may read and execute (system libraries and tools).
    pub system_paths: Vec<String>,
    /// Processes (threads included) one tool invocation may have at once.
    pub max_processes: u64,
    /// Largest file a tool may write, in MiB.
    pub max_file_mib: u64,
    /// Open files per tool process.
    pub max_open_files: u64,
    /// Where tool pids cgroups are created. Default: the cgroup v1 pids
    /// hierarchy's `toolhost/`, else `toolhost/` of the cgroup2 mount. On a
    /// cgroup v2 machine where the host does not run as root in the root
    /// cgroup, point it at a delegated cgroup (see docs/SANDBOX.md).
    pub cgroup_root: Option<PathBuf>,
}

/// How strictly the sandbox is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Every mechanism must work, or the host does not start.
    #[default]
    Enforce,
    /// Use what works; log what does not.
    Degraded,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            mode: SandboxMode::Enforce,
            system_paths: [
                "/usr",
                "/lib",
                "/lib64",
                "/lib32",
                "/bin",
                "/sbin",
                "/opt",
                "/etc/ld.so.cache",
                "/etc/ld.so.conf",
                "/etc/ld.so.conf.d",
                "/etc/localtime",
                "/etc/ssl",
                "/etc/ca-certificates",
                "/etc/alternatives",
                "/etc/passwd",
                "/etc/group",
                "/etc/nsswitch.conf",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/etc/mime.types",
                "/dev/null",
                "/dev/zero",
                "/dev/urandom",
                "/dev/random",
                "/dev/full",
                "/proc/self",
                "/proc/cpuinfo",
                "/proc/meminfo",
                "/proc/stat",
                "/sys/devices/system/cpu",
                "/sys/fs/cgroup",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            max_processes: 1024,
            max_file_mib: 4096,
            max_open_files: 4096,
            cgroup_root: None,
        }
    }
}

/// Result of the probe: mechanism -> (works, detail).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Support {
    mechanisms: std::collections::BTreeMap<String, Probe>,
}

/// One probed mechanism.
#[derive(Debug, Clone, Deserialize)]
pub struct Probe {
    /// It works here.
    pub ok: bool,
    /// What was observed.
    pub detail: String,
}

impl Support {
    fn ok(&self, name: &str) -> bool {
        self.mechanisms.get(name).is_some_and(|p| p.ok)
    }

    /// Every probed mechanism.
    pub fn mechanisms(&self) -> impl Iterator<Item = (&String, &Probe)> {
        self.mechanisms.iter()
    }
}

/// The sandbox as this host will apply it.
#[derive(Debug)]
pub struct Sandbox {
    config: SandboxConfig,
    helper: PathBuf,
    support: Support,
    landlock: bool,
    /// Landlock can scope abstract sockets and signals (ABI 6).
    scopes: bool,
    /// Landlock can restrict TCP connect by port (ABI 4).
    net_rules: bool,
    netns: bool,
    pidns: bool,
    cgroup: bool,
    missing: Vec<String>,
    counter: AtomicU64,
    available: bool,
    netns_holder: Option<NetnsHolder>,
    cgroups: Option<Arc<CgroupPool>>,
}

/// A process keeping one empty network namespace alive for the tools.
#[derive(Debug)]
struct NetnsHolder {
    child: std::process::Child,
    path: PathBuf,
}

impl NetnsHolder {
    fn start(helper: &Path) -> Result<Self> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(helper)
            .arg("--hold-netns")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("cannot start the network namespace holder")?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            std::io::BufReader::new(out).read_line(&mut line)?;
        }
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the network namespace holder did not start");
        }
        let path = PathBuf::from(format!("/proc/{}/ns/net", child.id()));
        Ok(NetnsHolder { child, path })
    }
}

impl Drop for NetnsHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Name of the supervisor binary, installed next to `toolhost`.
pub const SUPERVISOR: &str = "toolhost-supervisor";

/// Finds the supervisor binary: `$TOOLHOST_SUPERVISOR`, else next to the
/// running executable (or one directory up, for tests and benchmarks).
pub fn find_helper() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TOOLHOST_SUPERVISOR") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join(SUPERVISOR);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "cannot find `{SUPERVISOR}` next to `{}`; install it beside toolhost (cargo build builds both) or set TOOLHOST_SUPERVISOR",
        exe.display()
    )
}

impl Sandbox {
    /// Probes the machine and decides; fails in `enforce` mode when a
    /// mechanism is missing, and logs what is missing in `degraded` mode.
    pub fn new(config: &SandboxConfig) -> Result<Self> {
        let mut sandbox = Self::probe(config)?;
        // Tools share one empty network namespace only where landlock keeps
        // their abstract Unix sockets apart; elsewhere each gets its own.
        if sandbox.netns && sandbox.scopes {
            sandbox.netns_holder = Some(NetnsHolder::start(&sandbox.helper)?);
        }
        if !sandbox.missing.is_empty() {
            match config.mode {
                SandboxMode::Enforce => bail!(
                    "the tool sandbox cannot be enforced on this machine; missing: {}. Fix the machine (see `toolhost doctor`), or set [sandbox] mode = \"degraded\" in the host config to run tools with what is available",
                    sandbox.missing.join("; ")
                ),
                SandboxMode::Degraded => tracing::warn!(
                    "sandbox = \"degraded\": tools run without {}",
                    sandbox.missing.join("; ")
                ),
            }
        }
        Ok(sandbox)
    }

    /// Probes the machine without judging (for `toolhost doctor`).
    pub fn probe(config: &SandboxConfig) -> Result<Self> {
        let helper = find_helper()?;
        let out = std::process::Command::new(&helper)
            .arg("--probe")
            .output()
            .with_context(|| format!("cannot run the sandbox probe `{}`", helper.display()))?;
        let mut mechanisms: std::collections::BTreeMap<String, Probe> =
            serde_json::from_slice(&out.stdout).with_context(|| {
                format!(
                    "the sandbox probe failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })?;
        // The cgroup is set up by the host itself: it outlives the probe.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let cgroup_root = CgroupRoot::find(config.cgroup_root.as_deref(), &mountinfo);
        let cgroup_probe = cgroup_root.clone().and_then(|r| r.probe());
        mechanisms.insert(
            "pids_cgroup".into(),
            match &cgroup_probe {
                Ok(detail) => Probe {
                    ok: true,
                    detail: detail.clone(),
                },
                Err(e) => Probe {
                    ok: false,
                    detail: e.clone(),
                },
            },
        );
        let cgroups = match (cgroup_root, &cgroup_probe) {
            (Ok(root), Ok(_)) => Some(CgroupPool::new(root)),
            _ => None,
        };
        let support = Support { mechanisms };
        let root = support.ok("root");
        let landlock = support.ok("landlock");
        let scopes = landlock && support.ok("landlock_scopes");
        let net_rules = landlock && support.ok("landlock_network");
        let netns = support.ok("network_namespace");
        let pidns = support.ok("pid_namespace");
        let cgroup = cgroups.is_some();
        let mut missing = Vec::new();
        for (ok, name) in [
            (landlock, "landlock (filesystem confinement)"),
            (netns, "network namespace (no network unless granted)"),
            (
                pidns,
                "PID namespace (no tool descendant outlives the tool)",
            ),
        ] {
            if !ok {
                missing.push(name.to_string());
            }
        }
        // Root is exempt from RLIMIT_NPROC: a fork bomb needs the pids cgroup.
        if root && !cgroup {
            missing.push("pids cgroup (process limit; RLIMIT_NPROC does not bind root)".into());
        }
        Ok(Sandbox {
            config: config.clone(),
            helper,
            support,
            landlock,
            scopes,
            net_rules,
            netns,
            pidns,
            cgroup,
            missing,
            counter: AtomicU64::new(0),
            available: true,
            netns_holder: None,
            cgroups,
        })
    }

    /// A sandbox that refuses every tool (for `describe`, which gets none).
    pub fn unavailable() -> Self {
        Sandbox {
            config: SandboxConfig::default(),
            helper: PathBuf::new(),
            support: Support::default(),
            landlock: false,
            scopes: false,
            net_rules: false,
            netns: false,
            pidns: false,
            cgroup: false,
            missing: vec!["everything".into()],
            counter: AtomicU64::new(0),
            available: false,
            netns_holder: None,
            cgroups: None,
        }
    }

    /// False for [`Sandbox::unavailable`].
    pub fn available(&self) -> bool {
        self.available
    }

    /// What was probed.
    pub fn support(&self) -> &Support {
        &self.support
    }

    /// Tools are under landlock, so the workspace holds only regular
    /// files, directories and symlinks: nothing whose opening blocks.
    pub fn workspace_files_only(&self) -> bool {
        self.available && self.landlock
    }

    /// Landlock can restrict TCP connect to given ports (egress tools).
    pub fn net_rules(&self) -> bool {
        self.net_rules
    }

    /// Mechanisms not applied (empty when fully enforced).
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// The supervisor binary.
    pub fn helper(&self) -> &Path {
        &self.helper
    }

    /// The plan for one invocation of `tool`, with the pids cgroup created.
    pub fn plan(
        &self,
        tool: &ResolvedTool,
        workspace: &Path,
        home: &Path,
        run_id: &str,
    ) -> Result<(SandboxPlan, Option<CgroupGuard>), String> {
        let expand = |p: &String| tool.expand_path(p);
        let mut read_paths: Vec<PathBuf> = self.config.system_paths.iter().map(expand).collect();
        read_paths.extend(tool.config.read_paths.iter().map(expand));
        if let Ok(program) = &tool.program {
            // The tool's own executable (and its directory, for siblings).
            if let Some(dir) = program.parent() {
                read_paths.push(dir.to_path_buf());
            }
        }
        let mut write_paths = vec![home.to_path_buf()];
        for extra in tool.config.write_paths.iter().map(expand) {
            // A shared cache the tool fills (e.g. cargo's registry for the
            // fetch step) may not exist yet: create it, private to the host
            // user, so the rule applies from the first call.
            if let Err(e) = crate::util::private_dir::ensure(&extra) {
                return Err(format!("write path of tool `{}`: {e}", tool.name));
            }
            write_paths.push(extra);
        }
        let max_processes = tool
            .config
            .max_processes
            .unwrap_or(self.config.max_processes);
        let cgroup = if let Some(pool) = self.cgroups.as_ref().filter(|_| self.cgroup) {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let name = format!("{run_id}-{}-{n}", std::process::id());
            match pool.acquire(&name, max_processes) {
                Ok(guard) => Some(guard),
                Err(e) if self.config.mode == SandboxMode::Enforce => {
                    return Err(format!("cannot create the tool's pids cgroup: {e}"));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sandbox degraded: tool runs without a pids cgroup");
                    None
                }
            }
        } else {
            None
        };
        let plan = SandboxPlan {
            read_paths,
            write_paths,
            file_paths: vec![workspace.to_path_buf()],
            landlock: self.landlock,
            scope_ipc: self.scopes,
            connect_ports: None,
            isolate_network: self.netns && !tool.config.uses_network(),
            network_namespace: self.netns_holder.as_ref().map(|h| h.path.clone()),
            pid_namespace: self.pidns,
            cgroup: cgroup.as_ref().map(|c| c.dir().to_path_buf()),
            limits: ProcessLimits {
                cpu_secs: tool.config.cpu_secs,
                address_space: tool.config.memory_mib.map(|m| m << 20),
                file_size: Some(tool.config.max_file_mib.unwrap_or(self.config.max_file_mib) << 20),
                open_files: Some(self.config.max_open_files),
                processes: Some(max_processes),
            },
        };
        Ok((plan, cgroup))
    }
}
