//! Attacks on the host's secrets. A target's build script runs inside
//! `cargo clippy`; whatever a tool can read, the submitter can read, since
//! tool output flows into logs, findings and artifacts. Each case plants a
//! canary where a host keeps credentials and runs `security_assessment` on
//! a crate whose build script tries to read it (directly and through
//! `/proc/self/root`) and prints what it got: the probe's output reaches the
//! record (so the attack really ran), the canary does not.

use std::process::Command;

use toolhost_tests::TestHost;
use toolhost_tests::canaries::{self, FakeHome, LOCATIONS, Location};

fn location(id: &str) -> Location {
    *LOCATIONS
        .iter()
        .find(|l| l.id == id)
        .unwrap_or_else(|| panic!("no location {id}"))
}

/// Runs the probe crate as the embedded engine's `toolhost run` with the
/// fake home as the host's `HOME`; returns the run directory's text and
/// the command's output.
fn run_probe(host: &TestHost, home: &FakeHome, files: &[std::path::PathBuf]) -> (String, String) {
    let target = canaries::probe_crate(files);
    let mut cmd: Command = host.cli();
    cmd.env("HOME", home.path())
        .args([
            "run",
            "security_assessment",
            "--run-id",
            "credential-probe",
            "--target",
        ])
        .arg(target.path());
    let out = cmd.output().expect("toolhost runs");
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "the build script fails the clippy analysis, so the run: {shown}"
    );
    let run_dir = host.config.data_dir.join("runs/credential-probe");
    (canaries::all_text(&run_dir), shown)
}

fn tool_cannot_read(id: &str) {
    let loc = location(id);
    let home = FakeHome::new(&[loc]);
    let (_, file, canary) = home.planted[0].clone();
    let host = TestHost::new(&["security_assessment"], "");
    let (record, shown) = run_probe(&host, &home, std::slice::from_ref(&file));
    assert!(
        record.contains("HOSTILE-PROBE"),
        "the probe's output reaches the record, so a readable secret would too:\n{record}"
    );
    // Host paths are redacted in the record: the home directory is `~`.
    assert!(
        record.contains(&format!("DENIED ~/{}: Permission denied", loc.rel)),
        "the read of {} was denied:\n{record}",
        file.display()
    );
    assert!(
        !record.contains(&canary) && !shown.contains(&canary),
        "the {id} canary reached the record"
    );
}

#[test]
fn tool_reads_cargo_credentials() {
    tool_cannot_read("cargo-credentials");
}

#[test]
fn tool_reads_cargo_config() {
    tool_cannot_read("cargo-config");
}

#[test]
fn tool_reads_netrc() {
    tool_cannot_read("netrc");
}

#[test]
fn tool_reads_aws_credentials() {
    tool_cannot_read("aws");
}

#[test]
fn tool_reads_ssh_keys() {
    tool_cannot_read("ssh");
}

#[test]
fn tool_reads_the_config_directory() {
    tool_cannot_read("config-dir");
}

#[test]
fn tool_reads_docker_logins() {
    tool_cannot_read("docker");
}

#[test]
fn tool_reads_git_credentials() {
    tool_cannot_read("git-credentials");
}

#[test]
fn tool_reads_the_dev_services_env_file() {
    tool_cannot_read("services-env");
}

#[test]
fn tool_reads_the_host_config_with_its_keys() {
    let canary = format!("CANARY-host-config-{}", uuid::Uuid::new_v4().simple());
    let host = TestHost::with_config(&["security_assessment"], "", |text| {
        format!("# secret: {canary}\n{text}")
    });
    let home = FakeHome::new(&[]);
    let (record, shown) = run_probe(&host, &home, std::slice::from_ref(&host.config_path));
    assert!(
        record.contains("host.toml: Permission denied"),
        "the read of the host config was denied:\n{record}"
    );
    assert!(!record.contains(&canary) && !shown.contains(&canary));
}
