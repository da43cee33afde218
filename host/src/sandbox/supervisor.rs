//! The tool supervisor: `toolhost-supervisor run <plan> -- <program> <args...>`.
//!
//! The host never confines a tool from inside its own (multi-threaded)
//! process. It starts this small, single-threaded helper instead, which
//! joins the run's pids cgroup, sets rlimits, enters new PID and network
//! namespaces, forks the tool as PID 1 of its namespace (so when the tool
//! ends or is killed, the kernel kills every descendant: a double-forked
//! daemon cannot escape), applies landlock in the child, and execs the tool.
//! It exits with the tool's exit code, or dies of the tool's signal.

use std::ffi::CString;
use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, AccessNet, NetPort, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, path_beneath_rules,
};
use nix::sched::{CloneFlags, unshare};
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, execv, fork, getpid};
use serde::{Deserialize, Serialize};

/// The landlock ABI the filesystem rules are written for (fully enforced
/// on ABI >= 5).
pub const LANDLOCK_ABI: ABI = ABI::V5;
/// The ABI that scopes abstract Unix sockets and signals to the sandbox.
pub const LANDLOCK_SCOPE_ABI: i32 = 6;
/// The ABI that can restrict TCP `connect` to given ports.
pub const LANDLOCK_NET_ABI: i32 = 4;

/// The landlock ABI version this kernel supports (0: none).
pub fn kernel_landlock_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: `landlock_create_ruleset(NULL, 0, VERSION)` only returns the
    // ABI version (or -1 with errno); it reads no memory and creates no
    // file descriptor.
    #[allow(unsafe_code)]
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    i32::try_from(v).unwrap_or(0).max(0)
}

/// What the supervisor applies to one tool process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SandboxPlan {
    /// Paths readable and executable (toolchain, system libraries).
    pub read_paths: Vec<PathBuf>,
    /// Paths readable and writable (tool home, the tool's own caches).
    pub write_paths: Vec<PathBuf>,
    /// Paths readable and writable where only regular files, directories
    /// and symlinks may be created: the workspace. Guest code and the host
    /// read it, and opening a FIFO planted there would block them.
    #[serde(default)]
    pub file_paths: Vec<PathBuf>,
    /// Apply landlock (fail when it cannot be fully enforced).
    pub landlock: bool,
    /// Also scope abstract Unix sockets and signals to the tool's own
    /// landlock domain (ABI 6), so concurrent tools cannot reach each other.
    #[serde(default)]
    pub scope_ipc: bool,
    /// TCP `connect` only to these ports (ABI 4); `None`: not restricted.
    /// A tool whose traffic must go through the host's egress proxy gets
    /// the proxy's port and nothing else.
    #[serde(default)]
    pub connect_ports: Option<Vec<u16>>,
    /// New network namespace (no network at all) unless the tool may use it.
    pub isolate_network: bool,
    /// Join this (empty, loopback down) network namespace instead of
    /// creating one: much cheaper per call.
    #[serde(default)]
    pub network_namespace: Option<PathBuf>,
    /// New PID namespace.
    pub pid_namespace: bool,
    /// pids cgroup directory to join (created by the host).
    pub cgroup: Option<PathBuf>,
    /// rlimits.
    pub limits: ProcessLimits,
}

/// rlimits for a tool (None = inherit).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessLimits {
    /// RLIMIT_CPU seconds.
    pub cpu_secs: Option<u64>,
    /// RLIMIT_AS bytes.
    pub address_space: Option<u64>,
    /// RLIMIT_FSIZE bytes.
    pub file_size: Option<u64>,
    /// RLIMIT_NOFILE.
    pub open_files: Option<u64>,
    /// RLIMIT_NPROC (per user; not enforced for root: the pids cgroup is).
    pub processes: Option<u64>,
}

fn fail(msg: String) -> ! {
    eprintln!("toolhost sandbox: {msg}");
    std::process::exit(126)
}

/// Entry point of `toolhost-supervisor run`; never returns.
pub fn main(args: Vec<String>) -> ! {
    let (plan, program, argv) = match parse(&args) {
        Ok(p) => p,
        Err(e) => fail(e),
    };
    if let Err(e) = prepare(&plan) {
        fail(e);
    }
    // SAFETY: the supervisor is single-threaded (it is a fresh process that
    // only parsed its arguments), so the child may allocate and run
    // arbitrary code before `execv`.
    #[allow(unsafe_code)]
    let forked = unsafe { fork() };
    match forked {
        Ok(ForkResult::Child) => child(&plan, &program, &argv),
        Ok(ForkResult::Parent { child }) => parent(child),
        Err(e) => fail(format!("fork failed: {e}")),
    }
}

fn parse(args: &[String]) -> Result<(SandboxPlan, CString, Vec<CString>), String> {
    let plan: SandboxPlan = serde_json::from_str(args.first().ok_or("missing plan")?)
        .map_err(|e| format!("bad plan: {e}"))?;
    if args.get(1).map(String::as_str) != Some("--") || args.len() < 3 {
        return Err("usage: toolhost-supervisor run <plan> -- <program> [args...]".into());
    }
    let cstr = |s: &String| CString::new(s.as_bytes()).map_err(|_| "NUL in argument".to_string());
    let program = cstr(&args[2])?;
    let argv = args[2..].iter().map(cstr).collect::<Result<Vec<_>, _>>()?;
    Ok((plan, program, argv))
}

/// Steps applied to the supervisor itself (inherited by the tool).
fn prepare(plan: &SandboxPlan) -> Result<(), String> {
    if let Some(cg) = &plan.cgroup {
        std::fs::write(cg.join("cgroup.procs"), getpid().to_string())
            .map_err(|e| format!("cannot join pids cgroup {}: {e}", cg.display()))?;
    }
    let l = &plan.limits;
    let set = |r: Resource, v: Option<u64>| -> Result<(), String> {
        match v {
            Some(v) => setrlimit(r, v, v).map_err(|e| format!("setrlimit {r:?}: {e}")),
            None => Ok(()),
        }
    };
    set(Resource::RLIMIT_CORE, Some(0))?;
    set(Resource::RLIMIT_CPU, l.cpu_secs)?;
    set(Resource::RLIMIT_AS, l.address_space)?;
    set(Resource::RLIMIT_FSIZE, l.file_size)?;
    set(Resource::RLIMIT_NOFILE, l.open_files)?;
    set(Resource::RLIMIT_NPROC, l.processes)?;
    let mut flags = CloneFlags::empty();
    if plan.pid_namespace {
        // Own PID, hostname and System V IPC namespaces.
        flags |= CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    }
    if plan.isolate_network {
        match &plan.network_namespace {
            Some(ns) => {
                let fd = std::fs::File::open(ns)
                    .map_err(|e| format!("cannot open network namespace {}: {e}", ns.display()))?;
                nix::sched::setns(&fd, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("cannot join network namespace {}: {e}", ns.display()))?;
            }
            None => flags |= CloneFlags::CLONE_NEWNET,
        }
    }
    if !flags.is_empty() {
        unshare(flags).map_err(|e| format!("cannot create namespaces ({flags:?}): {e}"))?;
    }
    Ok(())
}

fn child(plan: &SandboxPlan, program: &CString, argv: &[CString]) -> ! {
    // If the supervisor dies (killed with its group), so does the tool, and
    // with it, as PID 1 of its namespace, every descendant.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if let Err(e) = drop_capabilities() {
        fail(e);
    }
    if plan.landlock
        && let Err(e) = restrict(plan)
    {
        fail(e);
    }
    match execv(program, argv) {
        Err(e) => {
            eprintln!("toolhost sandbox: cannot execute {program:?}: {e}");
            std::process::exit(127)
        }
        Ok(never) => match never {},
    }
}

/// Capabilities a root tool keeps: enough to read the toolchain under a
/// root-only home and to manage files it creates; everything else
/// (mounting, modules, clock, raw I/O, admin) is dropped for good.
const KEPT_CAPABILITIES: [caps::Capability; 5] = [
    caps::Capability::CAP_DAC_OVERRIDE,
    caps::Capability::CAP_DAC_READ_SEARCH,
    caps::Capability::CAP_FOWNER,
    caps::Capability::CAP_CHOWN,
    caps::Capability::CAP_FSETID,
];

fn drop_capabilities() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let keep: caps::CapsHashSet = KEPT_CAPABILITIES.into_iter().collect();
    for cap in caps::all() {
        if !keep.contains(&cap) {
            caps::drop(None, caps::CapSet::Bounding, cap)
                .map_err(|e| format!("cannot drop {cap} from the bounding set: {e}"))?;
        }
    }
    for set in [
        caps::CapSet::Inheritable,
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
    ] {
        let current =
            caps::read(None, set).map_err(|e| format!("cannot read capabilities: {e}"))?;
        let next: caps::CapsHashSet = current.intersection(&keep).copied().collect();
        caps::set(None, set, &next).map_err(|e| format!("cannot set capabilities: {e}"))?;
    }
    Ok(())
}

/// Applies the landlock ruleset to the calling process.
pub fn restrict(plan: &SandboxPlan) -> Result<(), String> {
    let abi = LANDLOCK_ABI;
    let existing = |paths: &[PathBuf]| -> Vec<PathBuf> {
        paths.iter().filter(|p| p.exists()).cloned().collect()
    };
    // Everything in writable trees, except creating device nodes; in the
    // workspace, no FIFOs or sockets either.
    let mut writable = AccessFs::from_all(abi);
    writable.remove(AccessFs::MakeChar | AccessFs::MakeBlock);
    let mut files_only = writable;
    files_only.remove(AccessFs::MakeFifo | AccessFs::MakeSock);
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(|e| format!("landlock: {e}"))?;
    if plan.scope_ipc {
        ruleset = ruleset
            .scope(Scope::AbstractUnixSocket | Scope::Signal)
            .map_err(|e| format!("landlock scopes: {e}"))?;
    }
    if plan.connect_ports.is_some() {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(|e| format!("landlock network rules: {e}"))?;
    }
    let mut created = ruleset
        .create()
        .and_then(|r| {
            r.add_rules(path_beneath_rules(
                existing(&plan.read_paths),
                AccessFs::from_read(abi),
            ))
        })
        .and_then(|r| r.add_rules(path_beneath_rules(existing(&plan.write_paths), writable)))
        .and_then(|r| r.add_rules(path_beneath_rules(existing(&plan.file_paths), files_only)))
        .map_err(|e| format!("landlock: {e}"))?;
    for port in plan.connect_ports.iter().flatten() {
        created = created
            .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
            .map_err(|e| format!("landlock network rule for port {port}: {e}"))?;
    }
    let status = created
        .restrict_self()
        .map_err(|e| format!("landlock: {e}"))?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        return Err(format!(
            "landlock is not fully enforced on this kernel ({:?}); use sandbox mode \"degraded\" to run anyway",
            status.ruleset
        ));
    }
    Ok(())
}

fn parent(child: Pid) -> ! {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                // Die of the same signal so the host sees how the tool ended.
                // SAFETY: installing the default disposition (no handler
                // function) cannot violate any invariant of this process.
                #[allow(unsafe_code)]
                let _ =
                    unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) };
                let _ = kill(getpid(), sig);
                std::process::exit(128 + sig as i32)
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => fail(format!("waitpid: {e}")),
        }
    }
}

/// `toolhost-supervisor --hold-netns`: creates an empty network namespace
/// and keeps it alive until its standard input closes (the host exits).
/// Tools join it with `setns` instead of paying for a new one per call.
pub fn hold_netns_main() -> ! {
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
        fail(format!("cannot create a network namespace: {e}"));
    }
    println!("ready");
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    std::process::exit(0)
}

/// Runs `check` in a forked child and returns what it returned.
fn probe_in_child(check: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    // SAFETY: the probe is single-threaded, so the child may run arbitrary
    // code; it only applies a ruleset and exits.
    #[allow(unsafe_code)]
    match unsafe { fork() } {
        Ok(ForkResult::Child) => match check() {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1)
            }
        },
        Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => Ok(()),
            Ok(other) => Err(format!("not enforced ({other:?})")),
            Err(e) => Err(format!("waitpid: {e}")),
        },
        Err(e) => Err(format!("fork failed: {e}")),
    }
}

/// `toolhost-supervisor --probe`: tries each mechanism in this throwaway
/// process and prints what works, as JSON.
pub fn probe_main() -> ! {
    let mut report = serde_json::Map::new();
    let mut put = |k: &str, ok: bool, detail: String| {
        report.insert(k.into(), serde_json::json!({"ok": ok, "detail": detail}));
    };
    let root = nix::unistd::geteuid().is_root();
    put(
        "root",
        root,
        if root {
            "running as root".into()
        } else {
            "unprivileged".into()
        },
    );
    match setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        Ok(()) => put("rlimits", true, "setrlimit works".into()),
        Err(e) => put("rlimits", false, e.to_string()),
    }
    // Scopes and network rules are tried in children, before this process
    // restricts itself (a ruleset, once applied, cannot be lifted) and
    // enters a new PID namespace (whose first child would be its init).
    let abi = kernel_landlock_abi();
    let scoped = probe_in_child(|| {
        restrict(&SandboxPlan {
            landlock: true,
            scope_ipc: true,
            ..Default::default()
        })
    });
    put(
        "landlock_scopes",
        scoped.is_ok(),
        match scoped {
            Ok(()) => format!(
                "abstract Unix sockets and signals are scoped to each tool (ABI {LANDLOCK_SCOPE_ABI})"
            ),
            Err(e) => format!("needs landlock ABI {LANDLOCK_SCOPE_ABI} (kernel has {abi}): {e}"),
        },
    );
    let net = probe_in_child(|| {
        restrict(&SandboxPlan {
            landlock: true,
            connect_ports: Some(vec![1]),
            ..Default::default()
        })
    });
    put(
        "landlock_network",
        net.is_ok(),
        match net {
            Ok(()) => format!("TCP connect can be limited to given ports (ABI {LANDLOCK_NET_ABI})"),
            Err(e) => format!("needs landlock ABI {LANDLOCK_NET_ABI} (kernel has {abi}): {e}"),
        },
    );
    match unshare(CloneFlags::CLONE_NEWNET) {
        Ok(()) => put(
            "network_namespace",
            true,
            "unshare(CLONE_NEWNET) works".into(),
        ),
        Err(e) => put("network_namespace", false, e.to_string()),
    }
    match unshare(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC) {
        Ok(()) => put("pid_namespace", true, "unshare(CLONE_NEWPID) works".into()),
        Err(e) => put("pid_namespace", false, e.to_string()),
    }
    let plan = SandboxPlan {
        read_paths: vec![PathBuf::from("/usr")],
        landlock: true,
        ..Default::default()
    };
    match restrict(&plan) {
        Ok(()) => put(
            "landlock",
            true,
            format!(
                "fully enforced (kernel ABI {abi}, filesystem rules for ABI {})",
                LANDLOCK_ABI as i32
            ),
        ),
        Err(e) => put("landlock", false, e),
    }
    println!("{}", serde_json::Value::Object(report));
    std::process::exit(0)
}
