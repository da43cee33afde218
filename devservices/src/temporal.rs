//! The Temporal dev server (`temporal server start-dev`): its command line
//! and its readiness probe. Its state is one SQLite file under
//! `.services/temporal/`; nothing here deletes it.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::{output_within, port_open};

/// The namespace the tests use (the dev server always creates it).
pub const NAMESPACE: &str = "default";

/// One dev server: the CLI that runs it, its directory and its gRPC port.
pub(crate) struct Temporal {
    pub(crate) cli: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) port: u16,
}

impl Temporal {
    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.join("temporal.log")
    }

    /// `host:port` of the frontend.
    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's command line. Headless (no web UI); the HTTP API and
    /// metrics ports are left to the server, which picks free ones.
    pub(crate) fn server_command(&self) -> Command {
        let mut cmd = Command::new(&self.cli);
        cmd.args(["server", "start-dev", "--headless", "--ip", "127.0.0.1"])
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--db-filename")
            .arg(self.dir.join("temporal.db"))
            .args(["--namespace", NAMESPACE, "--log-level", "warn"]);
        cmd
    }

    /// Whether the frontend accepts connections and serves the namespace.
    pub(crate) fn ready(&self) -> bool {
        if !port_open(self.port) {
            return false;
        }
        let mut describe = Command::new(&self.cli);
        describe
            .args([
                "operator",
                "namespace",
                "describe",
                "--namespace",
                NAMESPACE,
            ])
            .args(["--address", &self.address(), "--command-timeout", "5s"]);
        output_within(&mut describe, Duration::from_secs(15)).is_ok_and(|out| out.status.success())
    }
}
