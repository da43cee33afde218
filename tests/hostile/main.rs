//! The hostile suite: one named case per attack. Each asserts that the
//! attack is contained (with a clear reason where one is reported) and that
//! the host still serves a normal run afterwards.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use toolhost::engine::{LocalEngine, RunRecord, RunStatus, StartError};
use toolhost_tests::{TestHost, probe, request, try_run};

mod display;
mod fetch;
mod host_dirs;
mod isolation;
mod secrets;

// ---------------------------------------------------------------- helpers

fn target() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("src")).unwrap();
    std::fs::write(t.path().join("src/lib.rs"), "pub fn f() {}\n").unwrap();
    t
}

async fn host() -> (TestHost, LocalEngine) {
    let host = TestHost::new(&["probe", "hello"], "");
    let engine = host.engine().await;
    (host, engine)
}

/// The host still runs a normal workflow after the attack.
async fn still_serves(engine: &LocalEngine) {
    let t = target();
    let record = toolhost_tests::run(engine, "hello", t.path(), json!({"name": "after"})).await;
    assert_eq!(record.status, RunStatus::Succeeded, "{:?}", record.error);
    assert_eq!(record.summary["greeting"], "hello, after!");
}

async fn attack(engine: &LocalEngine, actions: Value) -> (RunRecord, Vec<Value>) {
    let t = target();
    probe(engine, t.path(), actions).await
}

/// Runs one shell command as the `sh` tool; returns the probe result.
async fn sh(engine: &LocalEngine, script: &str) -> Value {
    let (record, r) = attack(
        engine,
        json!([{"op": "tool", "tool": "sh", "args": ["-c", script]}]),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{:?}", record.error);
    r[0].clone()
}

fn err_kind(result: &Value) -> String {
    match &result["err"] {
        Value::String(s) => s.clone(),
        Value::Object(m) => m.keys().next().cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

/// Processes with `arg` as one of their arguments.
fn processes_with_arg(arg: &str) -> usize {
    toolhost_tests::processes(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
}

// ------------------------------------------------------------- guest code

#[tokio::test]
async fn guest_infinite_loop_stops_at_deadline() {
    let (_h, engine) = host().await;
    let t = target();
    let mut req = request("probe", t.path(), json!({"actions": [{"op": "loop"}]}));
    req.timeout_secs = Some(1);
    let record = engine.run(req).await.unwrap();
    assert_eq!(record.status, RunStatus::TimedOut);
    still_serves(&engine).await;
}

#[tokio::test]
async fn guest_memory_bomb_traps_at_limit() {
    let host = TestHost::new(&["probe", "hello"], "memory_mib = 48");
    let engine = host.engine().await;
    let (record, _) = attack(&engine, json!([{"op": "alloc", "mib": 4096}])).await;
    assert_eq!(record.status, RunStatus::Failed);
    assert!(record.error.unwrap().contains("memory limit of 48 MiB"));
    still_serves(&engine).await;
}

#[tokio::test]
async fn guest_deep_recursion_traps() {
    let (_h, engine) = host().await;
    let (record, _) = attack(&engine, json!([{"op": "recurse"}])).await;
    assert_eq!(record.status, RunStatus::Failed);
    still_serves(&engine).await;
}

#[tokio::test]
async fn guest_floods_logs() {
    let host = TestHost::new(&["probe", "hello"], "output_quota_mib = 2");
    let engine = host.engine().await;
    let (record, _) = attack(
        &engine,
        json!([{"op": "log", "count": 100000, "size": 100}]),
    )
    .await;
    assert_eq!(record.status, RunStatus::Failed);
    assert!(record.error.unwrap().contains("output quota"));
    let log = host
        .config
        .data_dir
        .join("runs")
        .join(&record.run_id)
        .join("log.jsonl");
    assert!(
        std::fs::metadata(log).unwrap().len() < 4 << 20,
        "the log stays bounded"
    );
    still_serves(&engine).await;
}

#[tokio::test]
async fn guest_floods_stdout() {
    let host = TestHost::new(&["probe", "hello"], "output_quota_mib = 2");
    let engine = host.engine().await;
    let (record, _) = attack(
        &engine,
        json!([{"op": "print", "count": 100000, "size": 100}]),
    )
    .await;
    assert_eq!(record.status, RunStatus::Failed, "{:?}", record.error);
    still_serves(&engine).await;
}

#[tokio::test]
async fn guest_floods_findings() {
    let host = TestHost::new(&["probe", "hello"], "max_findings = 50");
    let engine = host.engine().await;
    let (record, _) = attack(&engine, json!([{"op": "findings", "count": 100000}])).await;
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.findings.len(), 50);
    still_serves(&engine).await;
}

#[tokio::test]
async fn guest_floods_progress() {
    let host = TestHost::new(&["probe", "hello"], "output_quota_mib = 1");
    let engine = host.engine().await;
    let (record, _) = attack(&engine, json!([{"op": "progress", "count": 100000}])).await;
    assert_eq!(record.status, RunStatus::Failed);
    assert!(record.error.unwrap().contains("output quota"));
    still_serves(&engine).await;
}

#[tokio::test]
async fn guest_panic_is_a_failed_run_not_a_host_crash() {
    let (_h, engine) = host().await;
    let (record, _) = attack(&engine, json!([{"op": "panic", "message": "evil"}])).await;
    assert_eq!(record.status, RunStatus::Failed);
    assert!(record.error.unwrap().contains("evil"));
    still_serves(&engine).await;
}

#[tokio::test]
async fn guest_asks_for_an_undeclared_tool() {
    let (_h, engine) = host().await;
    let (_, r) = attack(
        &engine,
        json!([{"op": "tool", "tool": "cargo", "args": ["--version"]}]),
    )
    .await;
    assert_eq!(err_kind(&r[0]), "not_permitted");
    still_serves(&engine).await;
}

#[tokio::test]
async fn guest_asks_for_a_tool_its_vertical_lacks() {
    // A host whose `test` vertical lacks `python3`: the probe needs it, so
    // the probe is refused at load, with the reason, and hello still runs.
    let host = TestHost::new(&["probe", "hello"], "");
    let text = std::fs::read_to_string(&host.config_path).unwrap();
    let text = text.replace(
        "[verticals.test.tools.python3]\ncommand = \"/usr/bin/python3\"\ntimeout_secs = 30\n",
        "",
    );
    std::fs::write(&host.config_path, &text).unwrap();
    let config = toolhost::config::HostConfig::parse(&text, Some(host.dir.path())).unwrap();
    let runtime =
        toolhost::runtime::Runtime::new(&toolhost::runtime::EngineOptions::default()).unwrap();
    let toolbox = toolhost::toolbox::load(&runtime, &config).await.unwrap();
    let registry = toolbox.registry();
    assert!(registry.get("probe").is_none());
    let reason = &registry.rejections().next().unwrap().reason;
    assert!(reason.contains("does not offer: python3"), "{reason}");
    let engine = LocalEngine::new(toolbox).unwrap();
    still_serves(&engine).await;
}

#[tokio::test]
async fn guest_starts_activities_from_activity_code() {
    let (_h, engine) = host().await;
    let (_, r) = attack(
        &engine,
        json!([{"op": "activity", "actions": [{"op": "nested_activity"}]}]),
    )
    .await;
    assert!(
        r[0]["ok"][0]["err"]
            .as_str()
            .unwrap()
            .contains("only be started from workflow code")
    );
    still_serves(&engine).await;
}

// ------------------------------------------------------------ native tools

#[tokio::test]
async fn tool_reads_etc_shadow() {
    let (_h, engine) = host().await;
    let r = sh(&engine, "cat /etc/shadow; echo exit=$?").await;
    let out = r["ok"]["stdout"].as_str().unwrap();
    assert!(out.contains("exit=1") && !out.contains("root:"), "{r}");
    still_serves(&engine).await;
}

#[tokio::test]
async fn tool_reads_host_home_and_ssh_keys() {
    let (_h, engine) = host().await;
    let home = std::env::var("HOME").unwrap();
    let r = sh(
        &engine,
        &format!("ls {home} {home}/.ssh; cat {home}/.bash_history; echo exit=$?"),
    )
    .await;
    let stderr = r["ok"]["stderr"].as_str().unwrap();
    assert!(stderr.contains("Permission denied"), "{r}");
    still_serves(&engine).await;
}

#[tokio::test]
async fn tool_reads_another_runs_workspace() {
    let (host, engine) = host().await;
    let victim_target = target();
    std::fs::write(victim_target.path().join("secret.txt"), "victim-secret-42").unwrap();
    let mut req = request("probe", victim_target.path(), json!({"actions": []}));
    req.keep_workspace = true;
    let victim = engine.run(req).await.unwrap();
    let victim_ws = host
        .config
        .work_dir()
        .join(&victim.run_id)
        .join("workspace/secret.txt");
    assert!(victim_ws.exists());
    let r = sh(&engine, &format!("cat {}", victim_ws.display())).await;
    assert!(
        !r["ok"]["stdout"]
            .as_str()
            .unwrap()
            .contains("victim-secret-42"),
        "{r}"
    );
    assert!(
        r["ok"]["stderr"]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{r}"
    );
    still_serves(&engine).await;
}

#[tokio::test]
async fn tool_reads_the_host_config() {
    let (host, engine) = host().await;
    let r = sh(&engine, &format!("cat {}", host.config_path.display())).await;
    assert!(
        !r["ok"]["stdout"].as_str().unwrap().contains("verticals"),
        "{r}"
    );
    still_serves(&engine).await;
}

#[tokio::test]
async fn tool_writes_outside_the_workspace() {
    let (_h, engine) = host().await;
    let outside = tempfile::tempdir().unwrap();
    let evil = outside.path().join("evil.txt");
    let r = sh(&engine, &format!("echo pwned > {}; echo pwned > /etc/evil-toolhost; echo ok > inside.txt && echo inside-ok", evil.display())).await;
    assert!(!evil.exists());
    assert!(!Path::new("/etc/evil-toolhost").exists());
    assert!(
        r["ok"]["stdout"].as_str().unwrap().contains("inside-ok"),
        "the workspace stays writable: {r}"
    );
    still_serves(&engine).await;
}

#[tokio::test]
async fn tool_opens_a_network_socket() {
    let (_h, engine) = host().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "import socket\ntry:\n  socket.create_connection(('127.0.0.1', {port}), timeout=2)\n  print('connected')\nexcept OSError as e:\n  print('blocked', e)"
    );
    let (_, r) = attack(
        &engine,
        json!([{"op": "tool", "tool": "python3", "args": ["-c", script]}]),
    )
    .await;
    let out = r[0]["ok"]["stdout"].as_str().unwrap_or_default();
    assert!(out.starts_with("blocked"), "{}", r[0]);
    assert!(
        listener.accept().is_err(),
        "nothing reached the host's loopback"
    );
    still_serves(&engine).await;
}

#[tokio::test]
async fn tool_fork_bomb_is_contained() {
    let (_h, engine) = host().await;
    let started = Instant::now();
    let (record, r) = attack(
        &engine,
        json!([{"op": "tool", "tool": "sh", "args": ["-c", "b() { b | b & }; b; sleep 2; echo survived"], "timeout_ms": 5000}]),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{:?}", record.error);
    assert!(started.elapsed() < Duration::from_secs(20));
    let _ = r;
    still_serves(&engine).await;
}

#[tokio::test]
async fn tool_ignores_sigterm() {
    let (_h, engine) = host().await;
    let started = Instant::now();
    let (_, r) = attack(
        &engine,
        json!([{"op": "tool", "tool": "sh", "args": ["-c", "trap '' TERM INT HUP; sleep 986.5"], "timeout_ms": 500}]),
    )
    .await;
    assert_eq!(r[0]["err"], "timed_out");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        processes_with_arg("986.5"),
        0,
        "the tool outlived its timeout"
    );
    still_serves(&engine).await;
}

#[tokio::test]
async fn tool_daemonises_to_escape_the_kill() {
    let (_h, engine) = host().await;
    // Double fork + new session: the classic escape from a process group.
    let r = sh(
        &engine,
        "(setsid sh -c 'sleep 987.5' > /dev/null 2>&1 &) ; echo started",
    )
    .await;
    assert!(r["ok"]["stdout"].as_str().unwrap().contains("started"));
    let gone =
        toolhost_tests::eventually(Duration::from_secs(5), || processes_with_arg("987.5") == 0)
            .await;
    assert!(gone, "a daemon escaped the tool's end");
    still_serves(&engine).await;
}

#[tokio::test]
async fn tool_floods_stdout() {
    let (_h, engine) = host().await;
    let (_, r) = attack(
        &engine,
        json!([{"op": "tool", "tool": "sh", "args": ["-c", "yes"], "timeout_ms": 1500}]),
    )
    .await;
    assert_eq!(r[0]["err"], "timed_out", "{}", r[0]);
    let (_, r) = attack(
        &engine,
        json!([{"op": "tool", "tool": "sh", "args": ["-c", "head -c 20000000 /dev/zero"]}]),
    )
    .await;
    assert_eq!(r[0]["ok"]["stdout_len"], 1 << 20);
    assert_eq!(r[0]["ok"]["truncated"], true);
    still_serves(&engine).await;
}

#[tokio::test]
async fn tool_writes_a_huge_file() {
    let (_h, engine) = host().await;
    // The test vertical caps files at 1 MiB (RLIMIT_FSIZE).
    let r = sh(
        &engine,
        "head -c 50000000 /dev/zero > big.bin; ls -l big.bin",
    )
    .await;
    let listing = r["ok"]["stdout"].as_str().unwrap();
    let size: u64 = listing.split_whitespace().nth(4).unwrap().parse().unwrap();
    assert!(size <= 1 << 20, "{listing}");
    still_serves(&engine).await;
}

#[tokio::test]
async fn tool_sets_a_forbidden_environment_variable() {
    let (_h, engine) = host().await;
    let (_, r) = attack(&engine, json!([{"op": "tool", "tool": "sh", "args": ["-c", "true"], "env": [["LD_PRELOAD", "/tmp/evil.so"]]}])).await;
    assert_eq!(err_kind(&r[0]), "not_permitted");
    still_serves(&engine).await;
}

#[tokio::test]
async fn tool_cwd_escapes_the_workspace() {
    let (_h, engine) = host().await;
    let (_, r) = attack(
        &engine,
        json!([{"op": "tool", "tool": "sh", "args": ["-c", "pwd"], "cwd": "../../.."}]),
    )
    .await;
    assert_eq!(err_kind(&r[0]), "not_permitted");
    still_serves(&engine).await;
}

// ------------------------------------------------------- workspace interface

async fn workspace_error(engine: &LocalEngine, path: &str) -> String {
    let (_, r) = attack(engine, json!([{"op": "read", "path": path}])).await;
    err_kind(&r[0])
}

#[tokio::test]
async fn workspace_dotdot_escape() {
    let (_h, engine) = host().await;
    assert_eq!(
        workspace_error(&engine, "src/../../../../etc/passwd").await,
        "invalid_path"
    );
    still_serves(&engine).await;
}

#[tokio::test]
async fn workspace_absolute_path() {
    let (_h, engine) = host().await;
    assert_eq!(
        workspace_error(&engine, "/etc/passwd").await,
        "invalid_path"
    );
    still_serves(&engine).await;
}

#[tokio::test]
async fn workspace_symlink_to_root() {
    let (_h, engine) = host().await;
    let (_, r) = attack(
        &engine,
        json!([
            {"op": "tool", "tool": "sh", "args": ["-c", "ln -s / rootlink"]},
            {"op": "read", "path": "rootlink/etc/passwd"},
            {"op": "write", "path": "rootlink/tmp/evil", "data": "x"},
        ]),
    )
    .await;
    assert_eq!(err_kind(&r[1]), "invalid_path", "{}", r[1]);
    assert_eq!(err_kind(&r[2]), "invalid_path", "{}", r[2]);
    assert!(!Path::new("/tmp/evil").exists());
    still_serves(&engine).await;
}

#[tokio::test]
async fn workspace_nul_byte() {
    let (_h, engine) = host().await;
    assert_eq!(
        workspace_error(&engine, "src/lib.rs\u{0}/../../etc/passwd").await,
        "invalid_path"
    );
    still_serves(&engine).await;
}

#[tokio::test]
async fn workspace_very_long_path() {
    let (_h, engine) = host().await;
    assert_eq!(
        workspace_error(&engine, &"a/".repeat(100_000)).await,
        "invalid_path"
    );
    still_serves(&engine).await;
}

#[tokio::test]
async fn target_with_symlinks_pointing_outside() {
    let (_h, engine) = host().await;
    let t = target();
    std::os::unix::fs::symlink("/etc/passwd", t.path().join("passwd")).unwrap();
    std::os::unix::fs::symlink("../../../../../etc", t.path().join("src/etc")).unwrap();
    let (record, r) = probe(
        &engine,
        t.path(),
        json!([{"op": "list", "path": ""}, {"op": "read", "path": "passwd"}]),
    )
    .await;
    let listed = r[0]["ok"].as_array().unwrap();
    assert!(
        !listed.iter().any(|p| p == "passwd" || p == "src/etc"),
        "{listed:?}"
    );
    assert_eq!(err_kind(&r[1]), "not_found");
    let log = std::fs::read_to_string(
        _h.config
            .data_dir
            .join("runs")
            .join(&record.run_id)
            .join("log.jsonl"),
    )
    .unwrap();
    assert!(
        log.contains("passwd: symlink to `/etc/passwd` is absolute")
            && log.contains("src/etc: symlink to `../../../../../etc` leaves the target"),
        "the skips are reported: {log}"
    );
    still_serves(&engine).await;
}

/// `a -> .` and `x -> a/..` each look harmless to a lexical check, but the
/// kernel resolves `a` first, so `x` is the target's parent directory.
#[tokio::test]
async fn target_with_chained_symlinks_climbing_out() {
    let (host, engine) = host().await;
    let outer = tempfile::tempdir().unwrap();
    let t = outer.path().join("target");
    std::fs::create_dir_all(t.join("src")).unwrap();
    std::fs::write(outer.path().join("secret.txt"), "CANARY-chain-7f3a").unwrap();
    std::os::unix::fs::symlink(".", t.join("a")).unwrap();
    std::os::unix::fs::symlink("a/..", t.join("x")).unwrap();
    std::os::unix::fs::symlink("../a/../a/..", t.join("src/y")).unwrap();
    assert!(
        t.join("x/secret.txt").exists(),
        "the chain escapes on the host"
    );
    let (record, r) = probe(
        &engine,
        &t,
        json!([
            {"op": "list", "path": ""},
            {"op": "read", "path": "x/secret.txt"},
            {"op": "tool", "tool": "cat", "args": ["x/secret.txt"]},
        ]),
    )
    .await;
    let listed = r[0]["ok"].as_array().unwrap();
    assert!(
        listed.iter().any(|p| p == "a"),
        "`a -> .` is kept: {listed:?}"
    );
    assert!(
        !listed.iter().any(|p| p == "x" || p == "src/y"),
        "{listed:?}"
    );
    assert_eq!(err_kind(&r[1]), "not_found");
    assert_ne!(r[2]["ok"]["exit_code"], 0, "{}", r[2]);
    let log = std::fs::read_to_string(
        host.config
            .data_dir
            .join("runs")
            .join(&record.run_id)
            .join("log.jsonl"),
    )
    .unwrap();
    assert!(
        !log.contains("CANARY-chain-7f3a"),
        "the secret reached the log"
    );
    assert!(
        !serde_json::to_string(&record)
            .unwrap()
            .contains("CANARY-chain-7f3a")
    );
    assert!(
        log.contains("x: symlink to `a/..` leaves the target"),
        "{log}"
    );
    still_serves(&engine).await;
}

// ------------------------------------------------------------- components

async fn rejection_for(file: &str, bytes: &[u8]) -> (TestHost, LocalEngine, String) {
    let host = TestHost::new(&["hello"], "");
    std::fs::write(host.toolbox().join(file), bytes).unwrap();
    let engine = host.engine().await;
    let registry = engine.registry();
    let reason = registry
        .rejections()
        .find(|r| r.path.ends_with(file))
        .map(|r| r.reason.clone())
        .unwrap_or_else(|| panic!("{file} was not rejected"));
    (host, engine, reason)
}

#[tokio::test]
async fn corrupt_wasm_is_rejected() {
    let (_h, engine, reason) =
        rejection_for("corrupt.wasm", b"\0asm\x0d\0\x01\0\xff\xff\xff").await;
    assert!(
        reason.contains("not a valid WebAssembly component"),
        "{reason}"
    );
    still_serves(&engine).await;
}

#[tokio::test]
async fn component_importing_an_unknown_interface_is_rejected() {
    let wat = br#"(component (import "evil:backdoor/door" (instance (export "open" (func)))))"#;
    let (_h, engine, reason) = rejection_for("foreign.wasm", wat).await;
    assert!(
        reason.contains("evil:backdoor/door") && reason.contains("does not provide"),
        "{reason}"
    );
    still_serves(&engine).await;
}

#[tokio::test]
async fn core_module_instead_of_component_is_rejected() {
    let (_h, engine, reason) = rejection_for("core.wasm", b"\0asm\x01\0\0\0").await;
    assert!(
        reason.contains("core WebAssembly module, not a component"),
        "{reason}"
    );
    still_serves(&engine).await;
}

#[tokio::test]
async fn component_for_another_wit_version_is_rejected() {
    let wat =
        br#"(component (import "toolhost:workflow/tools@0.2.0" (instance (export "run" (func)))))"#;
    let (_h, engine, reason) = rejection_for("future.wasm", wat).await;
    assert!(
        reason.contains("toolhost:workflow/tools@0.2.0") && reason.contains("another WIT version"),
        "{reason}"
    );
    still_serves(&engine).await;
}

#[tokio::test]
async fn describe_that_traps_is_rejected() {
    let bytes = std::fs::read(toolhost_tests::component("describe_trap")).unwrap();
    let (_h, engine, reason) = rejection_for("describe_trap.wasm", &bytes).await;
    assert!(
        reason.contains("`describe` trapped") && reason.contains("sabotaged"),
        "{reason}"
    );
    still_serves(&engine).await;
}

#[tokio::test]
async fn describe_with_an_invalid_schema_is_rejected() {
    let bytes = std::fs::read(toolhost_tests::component("bad_schema")).unwrap();
    let (_h, engine, reason) = rejection_for("bad_schema.wasm", &bytes).await;
    assert!(reason.contains("invalid parameters schema"), "{reason}");
    still_serves(&engine).await;
}

#[tokio::test]
async fn a_huge_file_named_wasm_is_rejected_without_loading_it() {
    let host = TestHost::new(&["hello"], "");
    let f = std::fs::File::create(host.toolbox().join("huge.wasm")).unwrap();
    f.set_len(toolhost::toolbox::MAX_COMPONENT_BYTES + 1)
        .unwrap();
    let engine = host.engine().await;
    let registry = engine.registry();
    let reason = &registry.rejections().next().unwrap().reason;
    assert!(reason.contains("components are limited"), "{reason}");
    still_serves(&engine).await;
}

// ------------------------------------------------------------- parameters

async fn params_error(engine: &LocalEngine, params: Value) -> Vec<String> {
    let t = target();
    match try_run(engine, "hello", t.path(), params).await {
        Err(StartError::InvalidParams { errors, .. }) => errors,
        other => panic!("expected invalid params, got {:?}", other.map(|r| r.status)),
    }
}

#[tokio::test]
async fn params_that_are_huge() {
    let (_h, engine) = host().await;
    let errors = params_error(&engine, json!({"name": "x".repeat(4 << 20)})).await;
    assert!(errors[0].contains("limit"), "{errors:?}");
    still_serves(&engine).await;
}

#[tokio::test]
async fn params_that_are_deeply_nested() {
    let (_h, engine) = host().await;
    let mut deep = json!("x");
    for _ in 0..5000 {
        deep = json!([deep]);
    }
    let errors = params_error(&engine, json!({"name": deep})).await;
    assert!(errors[0].contains("nested"), "{errors:?}");
    still_serves(&engine).await;
}

#[tokio::test]
async fn params_of_the_wrong_types() {
    let (_h, engine) = host().await;
    let errors = params_error(&engine, json!({"name": {"not": "a string"}})).await;
    assert!(
        errors.iter().any(|e| e.contains("parameter `name`")),
        "{errors:?}"
    );
    let errors = params_error(&engine, json!([1, 2, 3])).await;
    assert!(!errors.is_empty());
    still_serves(&engine).await;
}

#[tokio::test]
async fn guest_burns_fuel() {
    let host = TestHost::new(&["probe", "hello"], "fuel = 50000000");
    let engine = host.engine().await;
    let (record, _) = attack(&engine, json!([{"op": "loop"}])).await;
    assert_eq!(record.status, RunStatus::Failed);
    assert!(record.error.unwrap().contains("fuel"));
    still_serves(&engine).await;
}

#[tokio::test]
async fn tool_creates_a_device_node() {
    let (_h, engine) = host().await;
    // Root could otherwise create a raw disk device inside the workspace.
    let r = sh(
        &engine,
        "mknod dev-null-copy c 1 3; echo exit=$?; ls -l dev-null-copy",
    )
    .await;
    let out = r["ok"]["stdout"].as_str().unwrap();
    assert!(!out.contains("exit=0"), "{r}");
    still_serves(&engine).await;
}

#[tokio::test]
async fn tool_changes_the_hostname_or_mounts() {
    let (_h, engine) = host().await;
    let before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let r = sh(
        &engine,
        "hostname pwned-by-tool; mount -t tmpfs none /mnt; echo done",
    )
    .await;
    assert!(r["ok"]["stdout"].as_str().unwrap().contains("done"));
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        before
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.lines().any(|l| l.starts_with("none /mnt tmpfs")),
        "a tool mounted on the host"
    );
    still_serves(&engine).await;
}
