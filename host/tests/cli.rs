//! The `toolhost` binary itself: its help teaches the commands, and the
//! distributed commands fail clearly when no Temporal is configured. (This
//! integration test also makes `cargo test` build the binaries, which the
//! end-to-end tests in `tests/` start as child processes.)

use std::process::Command;

fn toolhost() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_toolhost"));
    // `cargo xtask test` exports the dev services' variables: none of them
    // may leak into these checks.
    for (var, _) in std::env::vars().filter(|(k, _)| k.starts_with("TOOLHOST_")) {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn help_lists_embedded_and_distributed_commands() {
    let out = toolhost().arg("--help").output().expect("run toolhost");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "run",
        "host",
        "submit",
        "status",
        "list",
        "cancel",
        "logs",
        "artifacts",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "`{command}` missing from --help:\n{help}"
        );
    }
}

#[test]
fn distributed_commands_explain_missing_temporal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("host.toml");
    std::fs::write(&config, "").expect("config");
    let out = toolhost()
        .arg("--config")
        .arg(&config)
        .args(["status", "hello-0123456789ab"])
        .output()
        .expect("run toolhost");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no Temporal configured") && err.contains("[temporal]"),
        "{err}"
    );
}
