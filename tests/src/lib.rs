//! Test harness: builds the plugins and test components once per test
//! process (a no-op when they are up to date), gives each test a private
//! host config, toolbox, data and work directory, and runs workflows through
//! the real host (library or `toolhost` binary).

pub mod canaries;
pub mod services;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use toolhost::config::HostConfig;
use toolhost::engine::{LocalEngine, RunRecord, RunRequest, StartError};
use toolhost::runtime::{EngineOptions, Runtime};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A fixture under `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(repo());
    c
}

fn checked(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds both wasm workspaces and the `toolhost` binary, once. With
/// `TOOLHOST_PREBUILT=1` (set by `cargo xtask test`, which has built them
/// already in the same feature set as the tests) nothing is rebuilt.
fn build_all() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if std::env::var("TOOLHOST_PREBUILT").is_ok_and(|v| v == "1") {
            return;
        }
        for manifest in ["plugins/Cargo.toml", "tests/components/Cargo.toml"] {
            checked(cargo().args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--target-dir",
                "target/wasm",
                "--manifest-path",
                manifest,
            ]));
        }
        checked(cargo().args(["build", "--package", "toolhost", "--bins"]));
    });
}

/// A built component (`hello`, `security_assessment`, `probe`, ...).
pub fn component(name: &str) -> PathBuf {
    build_all();
    let p = repo()
        .join("target/wasm/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(p.exists(), "{} was not built", p.display());
    p
}

/// The `toolhost` binary of this build.
pub fn toolhost_bin() -> PathBuf {
    build_all();
    let exe = if cfg!(windows) {
        "toolhost.exe"
    } else {
        "toolhost"
    };
    repo().join("target/debug").join(exe)
}

/// Extra vertical for the probe: harmless system tools.
pub const TEST_VERTICAL: &str = r#"
[verticals.test]
description = "test tools"
[verticals.test.tools.sleep]
command = "sleep"
timeout_secs = 60
[verticals.test.tools.sh]
command = "sh"
env = ["PATH", "PROBE_VAR"]
timeout_secs = 30
output_limit_mib = 1
max_processes = 64
max_file_mib = 1
[verticals.test.tools.python3]
command = "/usr/bin/python3"
timeout_secs = 30
[verticals.test.tools.cat]
command = "cat"
[verticals.test.tools.true]
command = "true"
[verticals.test.tools.env]
command = "env"
"#;

/// A private host: its own config file, toolbox, data and work directories.
pub struct TestHost {
    /// Holds every directory of this host.
    pub dir: tempfile::TempDir,
    /// The parsed config.
    pub config: HostConfig,
    /// The config file (for the CLI).
    pub config_path: PathBuf,
}

impl TestHost {
    /// A host whose toolbox holds `components`, with `limits` TOML lines added.
    pub fn new(components: &[&str], limits: &str) -> Self {
        Self::with_config(components, limits, |text| text)
    }

    /// As [`TestHost::new`], with the config text passed through `edit`
    /// before it is written and parsed.
    pub fn with_config(
        components: &[&str],
        limits: &str,
        edit: impl FnOnce(String) -> String,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let toolbox = dir.path().join("toolbox");
        std::fs::create_dir_all(&toolbox).expect("toolbox dir");
        for name in components {
            std::fs::copy(component(name), toolbox.join(format!("{name}.wasm"))).expect("copy");
        }
        let default = toolhost::config::DEFAULT_CONFIG;
        let text = edit(format!(
            "toolbox = \"toolbox\"\ndata_dir = \"data\"\nwork_dir = \"work\"\n{}\n{TEST_VERTICAL}",
            merge_limits(default, limits)
        ));
        let config_path = dir.path().join("host.toml");
        std::fs::write(&config_path, &text).expect("write config");
        let config = HostConfig::parse(&text, Some(dir.path())).expect("test config parses");
        TestHost {
            dir,
            config,
            config_path,
        }
    }

    /// The toolbox directory.
    pub fn toolbox(&self) -> PathBuf {
        self.config.toolbox.clone()
    }

    /// Loads the toolbox and returns an engine over it.
    pub async fn engine(&self) -> LocalEngine {
        // One compile cache for the whole test suite.
        let options = EngineOptions {
            cache_dir: Some(repo().join("target/test-compile-cache")),
            ..EngineOptions::for_host(&self.config)
        };
        let runtime = Runtime::new(&options).expect("runtime");
        let toolbox = toolhost::toolbox::load(&runtime, &self.config)
            .await
            .expect("toolbox loads");
        LocalEngine::new(toolbox).expect("sandbox available")
    }

    /// The `toolhost` command with this host's config.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(toolhost_bin());
        c.arg("--config").arg(&self.config_path);
        // An embedded host: the dev services' variables (exported by
        // `cargo xtask test`) would turn it into a distributed one.
        for var in [
            "TOOLHOST_CONFIG",
            "TOOLHOST_TEMPORAL_ADDRESS",
            "TOOLHOST_TEMPORAL_NAMESPACE",
            "TOOLHOST_S3_BUCKET",
            "TOOLHOST_S3_ENDPOINT",
            "TOOLHOST_S3_REGION",
        ] {
            c.env_remove(var);
        }
        c
    }
}

/// Replaces the `[limits]` section of the default config with defaults plus `extra` lines.
fn merge_limits(default: &str, extra: &str) -> String {
    let mut out = String::new();
    let mut in_limits = false;
    for line in default.lines() {
        if line.starts_with('[') {
            in_limits = line.trim() == "[limits]";
            if in_limits {
                out.push_str("[limits]\n");
                out.push_str(extra);
                out.push('\n');
                continue;
            }
        }
        if in_limits || line.starts_with("toolbox") || line.starts_with("data_dir") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A run request with defaults.
pub fn request(workflow: &str, target: &Path, params: Value) -> RunRequest {
    RunRequest::new(workflow, target, params)
}

/// Runs `workflow` and returns the record; panics when it cannot start.
pub async fn run(engine: &LocalEngine, workflow: &str, target: &Path, params: Value) -> RunRecord {
    try_run(engine, workflow, target, params)
        .await
        .unwrap_or_else(|e| panic!("run of {workflow} could not start: {e}"))
}

/// Runs `workflow`, returning the start error if any.
pub async fn try_run(
    engine: &LocalEngine,
    workflow: &str,
    target: &Path,
    params: Value,
) -> Result<RunRecord, StartError> {
    engine.run(request(workflow, target, params)).await
}

/// Runs the probe with `actions` against an empty target; returns the record
/// and its `results` array.
pub async fn probe(engine: &LocalEngine, target: &Path, actions: Value) -> (RunRecord, Vec<Value>) {
    let record = run(
        engine,
        "probe",
        target,
        serde_json::json!({ "actions": actions }),
    )
    .await;
    let results = record
        .summary
        .get("results")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    (record, results)
}

/// The official SARIF 2.1.0 schema.
pub fn sarif_schema() -> Value {
    let path = repo().join("../shared/schemas/sarif-schema-2.1.0.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("schema is JSON")
}

/// Asserts `doc` is valid SARIF 2.1.0.
pub fn assert_valid_sarif(doc: &Value) {
    let errors = toolhost::report::sarif::schema_errors(&sarif_schema(), doc);
    assert!(
        errors.is_empty(),
        "SARIF is invalid:\n{}",
        errors.join("\n")
    );
}

/// `bytes` (a component) with a custom section appended: same behaviour,
/// different digest — a new "version" for reload tests.
pub fn with_custom_section(bytes: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut content = Vec::new();
    leb(name.len(), &mut content);
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(payload);
    let mut out = bytes.to_vec();
    out.push(0);
    leb(content.len(), &mut out);
    out.extend_from_slice(&content);
    out
}

/// Writes `bytes` to `dir/name` the way a careful deployer does: a hidden
/// temporary file renamed into place.
pub fn publish(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).expect("write temp");
    std::fs::rename(&tmp, dir.join(name)).expect("rename into place");
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes.
pub async fn eventually(timeout: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if check() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    check()
}

/// How many processes have a command line (its NUL-separated arguments)
/// for which `matches` holds.
pub fn processes(matches: impl Fn(&[u8]) -> bool) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| matches(&c)))
        .count()
}

/// Runs `cmd` with its stdin, stdout and stderr on a new pseudo-terminal
/// (so it behaves as in a user's terminal: spinners, colours); returns its
/// exit code (-1 when killed by a signal) and everything it wrote.
pub fn run_in_terminal(mut cmd: Command, timeout: std::time::Duration) -> (i32, String) {
    use std::io::Read;
    use std::os::fd::OwnedFd;
    let pty = nix::pty::openpty(
        Some(&nix::pty::Winsize {
            ws_row: 40,
            ws_col: 160,
            ws_xpixel: 0,
            ws_ypixel: 0,
        }),
        None,
    )
    .expect("openpty");
    let slave = |fd: &OwnedFd| std::process::Stdio::from(fd.try_clone().expect("dup pty"));
    cmd.stdin(slave(&pty.slave))
        .stdout(slave(&pty.slave))
        .stderr(slave(&pty.slave))
        .env("TERM", "xterm-256color");
    let mut child = cmd.spawn().expect("start the command on a terminal");
    let shown = format!("{cmd:?}");
    // The command holds copies of the terminal's slave side: only once they
    // and ours are closed does reading the master end at the child's exit.
    drop(cmd);
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the last slave descriptor is closed: the end.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    });
    let end = std::time::Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > end {
            let _ = child.kill();
            panic!("{shown} did not end within {timeout:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = reader.join().unwrap_or_default();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out).into_owned(),
    )
}
