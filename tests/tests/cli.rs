//! The `toolhost` binary as a user runs it: exit codes, SARIF output,
//! Ctrl-C, validation, scaffolding a new workflow.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use toolhost_tests::{TestHost, assert_valid_sarif, fixture};

fn code(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("toolhost runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exit_codes_follow_the_documentation() {
    let host = TestHost::new(&["hello", "probe", "security_assessment"], "");
    let target = fixture("clean_crate");
    let t = target.to_str().unwrap();

    let (c, out, _) = code(
        host.cli()
            .args(["run", "hello", "--target", t, "-p", "name=cli"]),
    );
    assert_eq!(c, 0, "{out}");
    assert!(out.contains("hello 0.1.0 succeeded"), "{out}");

    let sarif = host.dir.path().join("out.sarif");
    let vuln = fixture("vulnerable_crate");
    let (c, out, err) = code(host.cli().args([
        "run",
        "security_assessment",
        "--target",
        vuln.to_str().unwrap(),
        "--fail-on",
        "high",
        "--sarif",
        sarif.to_str().unwrap(),
    ]));
    assert_eq!(c, 1, "{out}{err}");
    assert!(out.contains("secrets/aws-access-key"), "{out}");
    assert_valid_sarif(&serde_json::from_slice(&std::fs::read(&sarif).unwrap()).unwrap());
    let (c, _, _) = code(host.cli().args([
        "run",
        "security_assessment",
        "--target",
        vuln.to_str().unwrap(),
        "--fail-on",
        "critical",
        "-p",
        "scan_files=false",
    ]));
    assert_eq!(c, 0, "no critical finding without the file scan");

    let (c, _, err) = code(host.cli().args([
        "run", "hello", "--target", t, "-p", "name=1", "-p", "bogus=2",
    ]));
    assert_eq!(c, 2);
    assert!(
        err.contains("invalid parameters for `hello`") && err.contains("bogus"),
        "{err}"
    );
    let (c, _, err) = code(host.cli().args(["run", "nope", "--target", t]));
    assert_eq!(c, 2);
    assert!(
        err.contains("available: hello, probe, security_assessment"),
        "{err}"
    );
    let (c, _, err) = code(
        host.cli()
            .args(["run", "hello", "--target", "/definitely/missing"]),
    );
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("cannot be read"), "{err}");

    let (c, out, _) = code(host.cli().args([
        "run",
        "probe",
        "--target",
        t,
        "--json",
        "-p",
        r#"actions=[{"op":"fail","message":"bad"}]"#,
    ]));
    assert_eq!(c, 3);
    let record: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(record["status"], "failed");
    assert_eq!(record["error"], "bad");

    let (c, _, _) = code(host.cli().args([
        "run",
        "probe",
        "--target",
        t,
        "--timeout",
        "1",
        "-p",
        r#"actions=[{"op":"loop"}]"#,
    ]));
    assert_eq!(c, 4);
}

#[test]
fn findings_of_a_recorded_run_can_be_shown_in_every_format() {
    let host = TestHost::new(&["security_assessment"], "");
    let vuln = fixture("vulnerable_crate");
    let (c, _, err) = code(host.cli().args([
        "run",
        "security_assessment",
        "--target",
        vuln.to_str().unwrap(),
        "--run-id",
        "sa-1",
        "-p",
        "clippy=false",
    ]));
    assert_eq!(c, 0, "{err}");
    let (c, table, _) = code(host.cli().args(["findings", "sa-1"]));
    assert_eq!(c, 0);
    assert!(
        table.contains("secrets/private-key") && table.contains("keys/deploy_key.pem:1"),
        "{table}"
    );
    let (_, json, _) = code(host.cli().args(["findings", "sa-1", "--format", "json"]));
    let findings: Vec<Value> = serde_json::from_str(&json).unwrap();
    assert!(findings.len() >= 6);
    let (_, sarif, _) = code(host.cli().args(["findings", "sa-1", "--format", "sarif"]));
    assert_valid_sarif(&serde_json::from_str(&sarif).unwrap());
    let (c, _, err) = code(host.cli().args(["findings", "no-such-run"]));
    assert_eq!(c, 2);
    assert!(err.contains("no run `no-such-run`"), "{err}");
    let (c, _, _) = code(host.cli().args(["findings", "../../etc"]));
    assert_eq!(c, 2);
}

#[test]
fn workflows_describe_and_validate_report_clearly() {
    let host = TestHost::new(&["hello", "rust_test"], "");
    std::fs::write(host.toolbox().join("broken.wasm"), b"\0asmjunk").unwrap();
    let (c, out, _) = code(host.cli().args(["workflows"]));
    assert_eq!(c, 0);
    assert!(
        out.contains("hello") && out.contains("rust_test") && out.contains("cargo"),
        "{out}"
    );
    assert!(
        out.contains("rejected") && out.contains("broken.wasm"),
        "{out}"
    );
    let (_, json, _) = code(host.cli().args(["workflows", "--json"]));
    let doc: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["workflows"].as_array().unwrap().len(), 2);
    assert_eq!(doc["rejected"].as_array().unwrap().len(), 1);

    let (c, out, _) = code(host.cli().args(["describe", "rust_test"]));
    assert_eq!(c, 0);
    assert!(out.contains("timeout_secs (integer) default 900"), "{out}");

    let (c, out, _) = code(host.cli().args([
        "validate",
        host.toolbox().join("hello.wasm").to_str().unwrap(),
    ]));
    assert_eq!(c, 0);
    assert!(out.starts_with("ok: hello 0.1.0"), "{out}");
    let (c, _, err) = code(host.cli().args([
        "validate",
        host.toolbox().join("broken.wasm").to_str().unwrap(),
    ]));
    assert_eq!(c, 5);
    assert!(err.contains("not a valid workflow"), "{err}");

    let (c, out, _) = code(host.cli().args(["completions", "bash"]));
    assert_eq!(c, 0);
    assert!(out.contains("toolhost") && out.contains("workflows"));
}

/// Pids of processes whose command line is exactly `argv`.
fn pids_with_cmdline(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

#[test]
fn ctrl_c_kills_the_tool_and_records_a_cancelled_run() {
    let host = TestHost::new(&["probe"], "");
    let target = fixture("clean_crate");
    let actions =
        r#"actions=[{"op":"findings","count":2},{"op":"tool","tool":"sleep","args":["987.25"]}]"#;
    let mut child = host
        .cli()
        .args([
            "run",
            "probe",
            "--run-id",
            "cancel-me",
            "--target",
            target.to_str().unwrap(),
            "-p",
            actions,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids_with_cmdline(&["/usr/bin/sleep", "987.25"]).is_empty()
        && pids_with_cmdline(&["/bin/sleep", "987.25"]).is_empty()
    {
        assert!(Instant::now() < deadline, "the tool never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(status.code(), Some(130));
    assert!(
        pids_with_cmdline(&["/usr/bin/sleep", "987.25"]).is_empty(),
        "the tool survived"
    );
    assert!(
        pids_with_cmdline(&["/bin/sleep", "987.25"]).is_empty(),
        "the tool survived"
    );
    let record: Value = serde_json::from_slice(
        &std::fs::read(host.config.data_dir.join("runs/cancel-me/result.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["status"], "cancelled");
    assert_eq!(
        record["findings"].as_array().unwrap().len(),
        2,
        "findings so far are kept"
    );
}

#[test]
fn a_new_workflow_builds_with_cargo_component_and_runs() {
    let host = TestHost::new(&[], "");
    let dir = host.dir.path().join("my_check");
    let (c, out, err) = code(
        host.cli()
            .args(["new", "my_check", "--path", dir.to_str().unwrap()]),
    );
    assert_eq!(c, 0, "{out}{err}");
    // Share the wasm dependency builds with the rest of the test suite.
    let target_dir = toolhost_tests::repo().join("target/wasm-component");
    let out = Command::new("cargo")
        .args(["component", "build", "--release", "--target-dir"])
        .arg(&target_dir)
        .current_dir(&dir)
        .output()
        .expect("cargo component is installed (cargo xtask setup)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = target_dir.join("wasm32-wasip1/release/my_check.wasm");
    std::fs::copy(&wasm, host.toolbox().join("my_check.wasm")).unwrap();
    let target = tempfile::tempdir().unwrap();
    std::fs::write(target.path().join("notes.txt"), "TODO: rotate keys\n").unwrap();
    let (c, out, err) = code(host.cli().args([
        "run",
        "my_check",
        "--target",
        target.path().to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(c, 0, "{err}");
    let record: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(record["summary"]["files"], 1);
    assert_eq!(record["findings"][0]["rule_id"], "my_check/todo");
    // Plain cargo builds the same crate for wasm32-wasip2 too.
    let out = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir)
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (c, _, err) = code(
        host.cli().args([
            "validate",
            target_dir
                .join("wasm32-wasip2/release/my_check.wasm")
                .to_str()
                .unwrap(),
        ]),
    );
    assert_eq!(c, 0, "{err}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http(port: u16, request: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(request.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// `toolhost host` serves health, metrics and the registry; runs go
/// through `toolhost serve` (tests/tests/api.rs), and no route of the host
/// lets a client name a path on the server.
#[test]
fn host_serves_health_and_registry_but_no_runs_by_path() {
    let host = TestHost::new(&["probe", "hello"], "");
    let port = free_port();
    let mut child = host
        .cli()
        .args(["host", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = Instant::now();
    while http(port, "GET /healthz HTTP/1.0\r\n\r\n").is_err() {
        assert!(
            ready.elapsed() < Duration::from_secs(60),
            "host never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let health = http(port, "GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    assert!(health.contains("\"workflows\":2"), "{health}");
    let workflows = http(port, "GET /workflows HTTP/1.0\r\n\r\n").unwrap();
    assert!(workflows.contains("\"hello\""), "{workflows}");

    let target = fixture("clean_crate");
    let body =
        serde_json::json!({"workflow": "hello", "target": target, "params": {"name": "http"}})
            .to_string();
    let resp = http(
        port,
        &format!("POST /runs HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
    )
    .unwrap();
    assert!(
        resp.starts_with("HTTP/1.0 404") || resp.starts_with("HTTP/1.1 404"),
        "{resp}"
    );
    assert!(!resp.contains("hello, http!"), "{resp}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopping = Instant::now();
    let status = child.wait().unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(15));
    assert!(status.success(), "graceful shutdown exits 0");
}

#[test]
fn doctor_reports_every_sandbox_mechanism() {
    let host = TestHost::new(&[], "");
    let (c, out, err) = code(host.cli().args(["doctor"]));
    assert_eq!(c, 0, "{out}{err}");
    for mechanism in [
        "landlock",
        "network_namespace",
        "pid_namespace",
        "pids_cgroup",
        "rlimits",
    ] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(mechanism))
            .unwrap_or_default();
        assert!(line.contains(" ok "), "{mechanism}: {out}");
    }
    assert!(
        out.contains("test/sh") && out.contains("verdict: the sandbox is fully enforced"),
        "{out}"
    );
}
