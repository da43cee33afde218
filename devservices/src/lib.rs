//! Development services for Toolhost's distributed mode: a real Temporal dev
//! server and a real single-node S3 server (Garage) on loopback, with their
//! data under the workspace's `.services/`. Both `cargo xtask services` and the
//! test harness use it. It installs and starts local processes only; it never
//! deletes service data (resetting is `down` plus `rm -rf`, see docs/SERVICES.md).

mod env;
mod garage;
mod install;
mod process;
mod services;
mod temporal;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

pub use env::{Env, KEYS};
pub use garage::{BUCKET, Garage, GaragePorts, REGION, S3Key};
pub use install::{
    GARAGE_CRATE, TEMPORAL_REQUIREMENT, find_garage, install_garage, install_temporal, temporal_cli,
};
pub use services::{
    DEFAULT_GARAGE_ADMIN_PORT, DEFAULT_GARAGE_RPC_PORT, DEFAULT_S3_PORT, DEFAULT_TEMPORAL_PORT,
    ServiceStatus, Services,
};
pub use temporal::NAMESPACE;

/// The workspace this crate belongs to (the parent of `devservices/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where the services of the workspace at `root` keep everything: `.services/`.
pub fn services_dir(root: &Path) -> PathBuf {
    root.join(".services")
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick).
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
