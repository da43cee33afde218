//! `cargo xtask <verb>`: every repeated chore of this repository, so the
//! README stays two commands. Installs what it needs when it is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  demo                    build the plugins and scan the sample crate (tests/fixtures/vulnerable_crate)
  test                    install missing tools, build everything once, run every test
  build-plugins           build plugins/ for wasm32-wasip2 into toolbox/
  build-test-components   build tests/components/ into target/test-toolbox/
  setup                   install what is missing: the rust targets, cargo-component, the
                          python vertical's Bandit environment (~/.toolhost/python), and
                          for fuzzing the nightly toolchain, cargo-fuzz and llvm-symbolizer
  lint                    cargo fmt --check and cargo clippy -D warnings on all workspaces
  bench                   build in release and run the benchmarks (report: target/bench/report.md)
  bench --distributed     the same for distributed mode, against the dev services
                          [--runs N --concurrency N --rounds N --upload-mib N]
                          (report: target/bench/report-distributed.md)
  bench --fuzzing         libFuzzer execs/s through cargo_fuzzing against `cargo fuzz run`
                          on the same target (report: target/bench/report-fuzzing.md)
  bench --api             API v1 latency through `toolhost serve` against the run layer
                          called directly, and listing over 100,000 runs
                          (report: target/bench/report-api.md)
  bench --scanners        secret scanning: recall, false positives and MB/s of
                          security_assessment against detect-secrets on a planted corpus
                          (report: target/bench/report-scanners.md)
  services up|down|status start (installing when missing), stop, or show the Temporal and
                          Garage (S3) dev servers used by the distributed tests (docs/SERVICES.md)";

/// Plugins copied into `toolbox/`.
const PLUGINS: &[&str] = &[
    "hello",
    "rust_test",
    "security_assessment",
    "python_sast",
    "cargo_fuzzing",
];
/// Test components copied into `target/test-toolbox/`.
const TEST_COMPONENTS: &[&str] = &["probe", "describe_trap", "bad_schema"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(),
        Some("test") => test(&args[1..]),
        Some("build-plugins") => setup_targets().and_then(|()| build_plugins()),
        Some("build-test-components") => setup_targets().and_then(|()| build_test_components()),
        Some("setup") => setup(),
        Some("lint") => lint(),
        Some("bench") => bench(),
        Some("services") => services(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Rust targets: wasm32-wasip2 (plain cargo) and wasm32-wasip1 (cargo component).
fn setup_targets() -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("rustup is needed to add the wasm targets")?;
    for target in ["wasm32-wasip2", "wasm32-wasip1"] {
        if !installed.lines().any(|l| l.trim() == target) {
            run(Command::new("rustup").args(["target", "add", target]))?;
        }
    }
    Ok(())
}

fn setup() -> Result<()> {
    setup_targets()?;
    let has_component = Command::new("cargo")
        .args(["component", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_component {
        run(cargo().args(["install", "--locked", "cargo-component@0.21.1"]))?;
    }
    setup_python()?;
    setup_fuzzing()
}

/// cargo-fuzz, pinned, for the rust vertical's `cargo-fuzz` tool.
const CARGO_FUZZ: &str = "cargo-fuzz@0.13.2";

/// The rust vertical's fuzzing tools: the nightly toolchain, cargo-fuzz and
/// llvm-symbolizer (crash stacks). Dependencies of a fuzzed crate are
/// fetched by the workflows themselves (the `cargo-fetch` tool).
fn setup_fuzzing() -> Result<()> {
    let has_nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_nightly {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let has_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_fuzz {
        run(cargo().args(["install", "--locked", CARGO_FUZZ]))?;
    }
    let has_symbolizer = Command::new("llvm-symbolizer")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_symbolizer {
        let root_user = output(Command::new("id").arg("-u")).is_ok_and(|u| u.trim() == "0");
        if root_user {
            run(Command::new("apt-get").args(["install", "-y", "--no-install-recommends", "llvm"]))
                .context("cannot install llvm-symbolizer (Debian package `llvm`)")?;
        } else {
            eprintln!(
                "xtask: llvm-symbolizer is missing: crash stacks of fuzz targets stay unsymbolized (install the `llvm` package)"
            );
        }
    }
    Ok(())
}

/// Bandit, pinned, for the python vertical.
const BANDIT: &str = "bandit==1.9.4";

/// The python vertical's tools: a virtual environment at
/// `~/.toolhost/python` with Bandit (the paths `host/config/default.toml`
/// names). Its interpreter comes from `/usr/bin/python3` when there is one,
/// so the tool sandbox (which reads `/usr`) can run it.
fn setup_python() -> Result<()> {
    let home = PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?);
    let venv = home.join(".toolhost/python");
    if venv.join("bin/bandit").exists() {
        return Ok(());
    }
    let base = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    eprintln!("xtask: creating {} with {BANDIT}", venv.display());
    run(Command::new(base).arg("-m").arg("venv").arg(&venv)).context(
        "cannot create the python vertical's environment (on Debian: apt-get install python3-venv)",
    )?;
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        BANDIT,
    ]))
}

fn build_wasm_workspace(manifest: &str, crates: &[&str], dest: &Path) -> Result<()> {
    let root = root();
    run(cargo().args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--manifest-path",
        manifest,
        "--target-dir",
        "target/wasm",
    ]))?;
    std::fs::create_dir_all(dest)?;
    for name in crates {
        let built = root
            .join("target/wasm/wasm32-wasip2/release")
            .join(format!("{name}.wasm"));
        let tmp = dest.join(format!(".{name}.wasm.tmp"));
        let fin = dest.join(format!("{name}.wasm"));
        // Copy under a hidden name, then rename: a watching host never sees half a file.
        std::fs::copy(&built, &tmp).with_context(|| format!("cannot copy {}", built.display()))?;
        std::fs::rename(&tmp, &fin)?;
        eprintln!("xtask: {} -> {}", name, fin.display());
    }
    Ok(())
}

fn build_plugins() -> Result<()> {
    build_wasm_workspace("plugins/Cargo.toml", PLUGINS, &root().join("toolbox"))
}

fn build_test_components() -> Result<()> {
    build_wasm_workspace(
        "tests/components/Cargo.toml",
        TEST_COMPONENTS,
        &root().join("target/test-toolbox"),
    )
}

fn demo() -> Result<()> {
    setup_targets()?;
    build_plugins()?;
    run(cargo().args(["build", "--package", "toolhost", "--bins"]))?;
    let bin = root().join("target/debug/toolhost");
    println!("\n$ toolhost workflows");
    run(Command::new(&bin).current_dir(root()).arg("workflows"))?;
    println!("\n$ toolhost run security_assessment --target tests/fixtures/vulnerable_crate");
    let status = Command::new(&bin)
        .current_dir(root())
        .args([
            "run",
            "security_assessment",
            "--target",
            "tests/fixtures/vulnerable_crate",
            "--sarif",
            "target/demo.sarif",
        ])
        .status()?;
    if !status.success() {
        bail!("the demo run failed ({status})");
    }
    println!("\nSARIF written to target/demo.sarif");
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    setup()?;
    build_plugins()?;
    build_test_components()?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    // The shared scanners are plain Rust: test them natively.
    run(cargo().args([
        "test",
        "--manifest-path",
        "plugins/Cargo.toml",
        "--package",
        "toolhost-scanners",
        "--target-dir",
        "target/plugins-native",
    ]))?;
    // One `cargo test --workspace` builds everything in one feature set:
    // the benchmarks (no tests of their own, but they must keep compiling),
    // and the binaries the end-to-end tests start.
    let test_cmd = || {
        let mut cmd = cargo();
        cmd.args(["test", "--workspace"]);
        cmd
    };
    // Compile the tests before starting the servers, so they do not idle
    // through the build. The arguments after `--` are for the test binaries.
    let cargo_args = extra.split(|a| a == "--").next().unwrap_or_default();
    run(test_cmd().arg("--no-run").args(cargo_args))?;
    let root = root();
    devservices::Services::install(&root)?;
    // Stop at the end only what this run started: services a developer
    // brought up by hand stay up.
    let was_running = devservices::Services::running(&root);
    let keep = was_running || std::env::var("TOOLHOST_KEEP_SERVICES").is_ok_and(|v| v == "1");
    let result = devservices::Services::up(&root).and_then(|env| {
        print_status(&root)?;
        let mut cmd = test_cmd();
        cmd.args(extra);
        // Announced before the variables are added: `{cmd:?}` would print the secret key.
        eprintln!(
            "xtask: running {cmd:?} with the variables of {}",
            devservices::Env::path(&root).display()
        );
        env.apply_to(&mut cmd);
        // The `--no-run` build above made the binaries (host/tests/cli.rs
        // needs them) in the tests' own feature set: the harness must not
        // rebuild them in another one.
        cmd.env("TOOLHOST_PREBUILT", "1");
        let status = cmd.status().context("cannot start cargo test")?;
        if !status.success() {
            bail!("cargo test failed with {status}");
        }
        Ok(())
    });
    if !keep && let Err(e) = devservices::Services::down(&root) {
        eprintln!("xtask: cannot stop the services: {e:#}");
    }
    result
}

/// `cargo xtask services up|down|status`.
fn services(args: &[String]) -> Result<()> {
    let root = root();
    match args.first().map(String::as_str) {
        Some("up") => {
            devservices::Services::install(&root)?;
            let env = devservices::Services::up(&root)?;
            print_status(&root)?;
            println!(
                "\nenvironment in {}:",
                devservices::Env::path(&root).display()
            );
            for (key, value) in env.vars() {
                println!("  {key}={value}");
            }
            Ok(())
        }
        Some("down") => {
            devservices::Services::down(&root)?;
            print_status(&root)
        }
        Some("status") => print_status(&root),
        _ => bail!("usage: cargo xtask services up|down|status"),
    }
}

fn print_status(root: &Path) -> Result<()> {
    for service in devservices::Services::status(root)? {
        println!("{service}");
    }
    Ok(())
}

/// `cargo xtask bench [--distributed [--runs N] [--concurrency N] [--rounds N] [--upload-mib N]]`:
/// the arguments go to the harness; `--distributed` measures distributed
/// mode against the dev services, started here when they are not running
/// (and stopped again at the end).
fn bench() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(2).collect();
    setup_targets()?;
    build_plugins()?;
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "toolhost",
        "--package",
        "toolhost-bench",
    ]))?;
    let mut cmd = Command::new(root().join("target/release/toolhost-bench"));
    cmd.current_dir(root()).args(&args);
    if !args.iter().any(|a| a == "--distributed") {
        return run(&mut cmd);
    }
    let root = root();
    devservices::Services::install(&root)?;
    let was_running = devservices::Services::running(&root);
    let result = devservices::Services::up(&root).and_then(|env| {
        // Announced before the variables are added: `{cmd:?}` would print the secret key.
        eprintln!(
            "xtask: running {cmd:?} with the variables of {}",
            devservices::Env::path(&root).display()
        );
        env.apply_to(&mut cmd);
        let status = cmd.status().context("cannot start the benchmark")?;
        if !status.success() {
            bail!("the benchmark failed with {status}");
        }
        Ok(())
    });
    if !was_running && let Err(e) = devservices::Services::down(&root) {
        eprintln!("xtask: cannot stop the services: {e:#}");
    }
    result
}

fn lint() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    for manifest in ["plugins/Cargo.toml", "tests/components/Cargo.toml"] {
        run(cargo().args([
            "clippy",
            "--manifest-path",
            manifest,
            "--target",
            "wasm32-wasip2",
            "--target-dir",
            "target/wasm",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    Ok(())
}
