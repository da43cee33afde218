//! The embedded engine and the capabilities, driven through the `probe`
//! test component: permissions, workspace confinement, limits, determinism,
//! bad input.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use toolhost::engine::{RunStatus, StartError};
use toolhost_tests::{TestHost, probe, request, try_run};

fn target() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("src")).unwrap();
    std::fs::write(t.path().join("src/lib.rs"), "pub fn f() {}\n").unwrap();
    t
}

fn err_kind(result: &Value) -> String {
    match &result["err"] {
        Value::String(s) => s.clone(),
        Value::Object(m) => m.keys().next().cloned().unwrap_or_default(),
        other => panic!("expected an error, got {result} ({other})"),
    }
}

#[tokio::test]
async fn declared_tools_run_and_undeclared_ones_are_not_permitted() {
    let host = TestHost::new(&["probe"], "");
    let engine = host.engine().await;
    let t = target();
    let (record, r) = probe(
        &engine,
        t.path(),
        json!([
            {"op": "tool", "tool": "sh", "args": ["-c", "echo out; echo err >&2; exit 7"]},
            {"op": "tool", "tool": "cargo", "args": ["--version"]},
            {"op": "tool", "tool": "rm", "args": ["-rf", "/"]},
            {"op": "tool", "tool": "env"},
            {"op": "tool", "tool": "sh", "args": ["-c", "pwd"], "cwd": "src"},
            {"op": "tool", "tool": "sh", "args": ["-c", "pwd"], "cwd": "../.."},
            {"op": "tool", "tool": "sh", "args": ["-c", "echo $PROBE_VAR"], "env": [["PROBE_VAR", "v1"]]},
            {"op": "tool", "tool": "sh", "args": ["-c", "true"], "env": [["LD_PRELOAD", "/x.so"]]},
        ]),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{:?}", record.error);
    let ok = &r[0]["ok"];
    assert_eq!(ok["exit_code"], 7);
    assert_eq!(ok["stdout"], "out\n");
    assert_eq!(ok["stderr"], "err\n");
    // `cargo` exists in the rust vertical but the probe did not declare it.
    assert_eq!(err_kind(&r[1]), "not_permitted");
    assert!(
        r[1]["err"]["not_permitted"]
            .as_str()
            .unwrap()
            .contains("did not declare")
    );
    assert_eq!(err_kind(&r[2]), "not_permitted");
    // Cleared environment: only HOME and TMPDIR inside the workspace.
    let env = r[3]["ok"]["stdout"].as_str().unwrap();
    let keys: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    assert_eq!(keys.len(), 2, "{env}");
    assert!(keys.contains(&"HOME") && keys.contains(&"TMPDIR"), "{env}");
    assert!(!env.contains("/root"), "{env}");
    assert!(
        r[4]["ok"]["stdout"]
            .as_str()
            .unwrap()
            .trim_end()
            .ends_with("/src")
    );
    assert_eq!(err_kind(&r[5]), "not_permitted");
    assert_eq!(r[6]["ok"]["stdout"], "v1\n");
    assert_eq!(err_kind(&r[7]), "not_permitted");
    // Every invocation is audited in the run log.
    let log = std::fs::read_to_string(
        host.config
            .data_dir
            .join("runs")
            .join(&record.run_id)
            .join("log.jsonl"),
    )
    .unwrap();
    let audits: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"source\":\"tool\""))
        .collect();
    // Four tools ran, four requests were refused: all eight are audited.
    assert_eq!(audits.len(), 8, "{log}");
    let refused = audits.iter().filter(|l| l.contains("\"refused\"")).count();
    assert_eq!(refused, 4, "{log}");
    assert!(
        audits.iter().any(|l| l.contains("\"exit_code\":7")),
        "{log}"
    );
}

#[tokio::test]
async fn workspace_paths_cannot_escape() {
    let host = TestHost::new(&["probe"], "");
    let engine = host.engine().await;
    let t = target();
    std::os::unix::fs::symlink("/", t.path().join("root")).unwrap();
    let (record, r) = probe(
        &engine,
        t.path(),
        json!([
            {"op": "read", "path": "src/lib.rs"},
            {"op": "read", "path": "../../../../etc/passwd"},
            {"op": "read", "path": "/etc/passwd"},
            {"op": "tool", "tool": "sh", "args": ["-c", "ln -s / inside-root"]},
            {"op": "read", "path": "src/\u{0}x"},
            {"op": "write", "path": "out/new.txt", "data": "hi"},
            {"op": "read", "path": "out/new.txt"},
            {"op": "write", "path": "../escape.txt", "data": "x"},
            {"op": "list", "path": ""},
            {"op": "read", "path": "inside-root/etc/passwd"},
            {"op": "activity", "actions": [
                {"op": "fs_read", "path": "/workspace/src/lib.rs"},
                {"op": "fs_read", "path": "/etc/passwd"},
                {"op": "fs_read", "path": "/workspace/../etc/passwd"},
            ]},
        ]),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{:?}", record.error);
    assert_eq!(r[0]["ok"], "pub fn f() {}\n");
    for i in [1, 2, 4, 7, 9] {
        assert_eq!(err_kind(&r[i]), "invalid_path", "action {i}: {}", r[i]);
    }
    assert_eq!(r[6]["ok"], "hi");
    let listed: Vec<&str> = r[8]["ok"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&"src/lib.rs") && listed.contains(&"out/new.txt"),
        "{listed:?}"
    );
    // The target symlink to `/` was never copied into the workspace.
    assert!(!listed.contains(&"root"), "{listed:?}");
    let activity = r[10]["ok"].as_array().expect("activity ran");
    assert_eq!(activity[0]["ok"], "pub fn f() {}\n");
    assert!(activity[1].get("err").is_some(), "{}", activity[1]);
    assert!(activity[2].get("err").is_some(), "{}", activity[2]);
    // The user's tree did not change.
    assert!(!t.path().join("out").exists());
}

#[tokio::test]
async fn an_infinite_loop_stops_at_the_deadline_and_the_host_carries_on() {
    let host = TestHost::new(&["probe"], "");
    let engine = host.engine().await;
    let t = target();
    let mut req = request("probe", t.path(), json!({"actions": [{"op": "loop"}]}));
    req.timeout_secs = Some(1);
    let started = Instant::now();
    let record = engine.run(req).await.unwrap();
    assert_eq!(record.status, RunStatus::TimedOut);
    assert!(record.error.unwrap().contains("deadline of 1 s"));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let (after, _) = probe(&engine, t.path(), json!([{"op": "clock"}])).await;
    assert_eq!(after.status, RunStatus::Succeeded);
}

#[tokio::test]
async fn a_memory_bomb_traps_at_the_memory_limit() {
    let host = TestHost::new(&["probe"], "memory_mib = 64");
    let engine = host.engine().await;
    let t = target();
    let (record, _) = probe(&engine, t.path(), json!([{"op": "alloc", "mib": 1000}])).await;
    assert_eq!(record.status, RunStatus::Failed);
    let err = record.error.unwrap();
    assert!(err.contains("memory limit of 64 MiB"), "{err}");
    let (ok, r) = probe(&engine, t.path(), json!([{"op": "alloc", "mib": 8}])).await;
    assert_eq!(ok.status, RunStatus::Succeeded, "{:?}", ok.error);
    assert_eq!(r[0]["ok"], 8);
}

#[tokio::test]
async fn deep_recursion_and_panics_fail_the_run_with_a_reason() {
    let host = TestHost::new(&["probe"], "");
    let engine = host.engine().await;
    let t = target();
    let (record, _) = probe(&engine, t.path(), json!([{"op": "recurse"}])).await;
    assert_eq!(record.status, RunStatus::Failed);
    assert!(
        record.error.as_ref().unwrap().contains("recursion"),
        "{:?}",
        record.error
    );
    let (record, _) = probe(
        &engine,
        t.path(),
        json!([{"op": "panic", "message": "boom-123"}]),
    )
    .await;
    assert_eq!(record.status, RunStatus::Failed);
    assert!(
        record.error.as_ref().unwrap().contains("boom-123"),
        "{:?}",
        record.error
    );
    let (record, _) = probe(
        &engine,
        t.path(),
        json!([{"op": "fail", "message": "nope-7"}]),
    )
    .await;
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.error.as_deref(), Some("nope-7"));
}

#[tokio::test]
async fn floods_end_at_the_output_quota() {
    let host = TestHost::new(&["probe"], "output_quota_mib = 1\nmax_findings = 100");
    let engine = host.engine().await;
    let t = target();
    let (record, _) = probe(
        &engine,
        t.path(),
        json!([{"op": "log", "count": 5000, "size": 1000}]),
    )
    .await;
    assert_eq!(record.status, RunStatus::Failed);
    assert!(record.error.unwrap().contains("output quota of 1 MiB"));
    let (record, _) = probe(&engine, t.path(), json!([{"op": "findings", "count": 500}])).await;
    assert_eq!(record.status, RunStatus::Failed);
    assert!(record.error.unwrap().contains("limit of 100 findings"));
    assert_eq!(record.findings.len(), 100, "findings so far are kept");
}

#[tokio::test]
async fn workflow_clock_and_random_are_deterministic_per_run_id() {
    let host = TestHost::new(&["probe"], "");
    let engine = host.engine().await;
    let t = target();
    let actions = json!({"actions": [{"op": "clock"}, {"op": "sleep", "ms": 20}, {"op": "clock"}]});
    let mut values = Vec::new();
    for run_id in ["det-a", "det-a", "det-b"] {
        let mut req = request("probe", t.path(), actions.clone());
        req.run_id = Some(run_id.into());
        req.workflow_start_ms = Some(1_700_000_000_000);
        let record = engine.run(req).await.unwrap();
        assert_eq!(record.status, RunStatus::Succeeded, "{:?}", record.error);
        values.push(record.summary["results"].clone());
        // Make sure real time passes between runs.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(values[0], values[1], "same run id replays identically");
    let first = &values[0][0]["ok"];
    let second = &values[0][2]["ok"];
    assert_eq!(first["now_ms"], 1_700_000_000_000u64);
    assert_eq!(
        second["now_ms"], 1_700_000_000_020u64,
        "durable sleep advances workflow time"
    );
    assert_eq!(
        first["wall_ns"].as_u64().unwrap() / 1_000_000,
        1_700_000_000_000
    );
    assert_ne!(first["random"], second["random"]);
    let other = &values[2][0]["ok"];
    assert_ne!(
        first["random"], other["random"],
        "different run id, different randomness"
    );
    assert_ne!(first["std_random"], other["std_random"]);
}

#[tokio::test]
async fn invalid_params_are_refused_before_any_run() {
    let host = TestHost::new(&["probe", "hello"], "");
    let engine = host.engine().await;
    let t = target();
    let err = try_run(&engine, "hello", t.path(), json!({"name": 5, "nope": true}))
        .await
        .unwrap_err();
    let StartError::InvalidParams { errors, .. } = &err else {
        panic!("{err}")
    };
    assert!(
        errors.iter().any(|e| e.contains("parameter `name`")),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.contains("nope")), "{errors:?}");
    let err = try_run(
        &engine,
        "probe",
        t.path(),
        json!({"actions": [{"op": "teleport"}]}),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StartError::InvalidParams { .. }), "{err}");
    let err = try_run(&engine, "nope", t.path(), json!({}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("available: hello, probe"), "{err}");
    // Nothing was recorded for refused runs.
    assert!(!host.config.data_dir.join("runs").exists());
}

#[tokio::test]
async fn a_corrupt_component_is_rejected_while_the_others_load() {
    let host = TestHost::new(&["probe", "hello"], "");
    std::fs::write(
        host.toolbox().join("broken.wasm"),
        b"\0asm\x0d\0\x01\0garbage",
    )
    .unwrap();
    std::fs::write(host.toolbox().join("text.wasm"), b"not wasm at all").unwrap();
    let core = wat_core_module();
    std::fs::write(host.toolbox().join("core.wasm"), core).unwrap();
    let engine = host.engine().await;
    let names: Vec<_> = engine
        .registry()
        .workflows()
        .map(|w| w.info.name.clone())
        .collect();
    assert_eq!(names, ["hello", "probe"]);
    let registry = engine.registry();
    let rejected: Vec<_> = registry.rejections().collect();
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    let core = rejected
        .iter()
        .find(|r| r.path.ends_with("core.wasm"))
        .unwrap();
    assert!(
        core.reason
            .contains("core WebAssembly module, not a component"),
        "{}",
        core.reason
    );
}

/// The smallest core module: `(module)`.
fn wat_core_module() -> Vec<u8> {
    vec![0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]
}

#[tokio::test]
async fn activities_run_in_their_own_instance_and_cannot_nest() {
    let host = TestHost::new(&["probe"], "");
    let engine = host.engine().await;
    let t = target();
    let (record, r) = probe(
        &engine,
        t.path(),
        json!([{"op": "activity", "actions": [{"op": "nested_activity"}, {"op": "clock"}]}]),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{:?}", record.error);
    let inner = r[0]["ok"].as_array().unwrap();
    assert!(
        inner[0]["err"]
            .as_str()
            .unwrap()
            .contains("only be started from workflow code")
    );
    // Activity code sees real time, not workflow time.
    let now = toolhost::util::now_ms();
    let seen = inner[1]["ok"]["now_ms"].as_u64().unwrap();
    assert!(now.abs_diff(seen) < 60_000, "{seen} vs {now}");
}

#[tokio::test]
async fn tool_timeouts_kill_the_tool_and_artifacts_are_stored() {
    let host = TestHost::new(&["probe"], "");
    let engine = host.engine().await;
    let t = target();
    let started = Instant::now();
    let (record, r) = probe(
        &engine,
        t.path(),
        json!([
            {"op": "tool", "tool": "sleep", "args": ["30"], "timeout_ms": 300},
            {"op": "tool", "tool": "sh", "args": ["-c", "head -c 3000000 /dev/zero"]},
            {"op": "artifact", "name": "crash-1.bin", "data": "AAAA"},
            {"op": "artifact", "name": "../evil", "data": "x"},
        ]),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{:?}", record.error);
    assert_eq!(r[0]["err"], "timed_out");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        r[1]["ok"]["stdout_len"],
        1 << 20,
        "capped at the vertical's 1 MiB"
    );
    assert_eq!(r[1]["ok"]["truncated"], true);
    assert!(r[2].get("ok").is_some());
    assert!(r[3].get("err").is_some());
    assert_eq!(record.artifacts, ["crash-1.bin"]);
    let stored = host
        .config
        .data_dir
        .join("runs")
        .join(&record.run_id)
        .join("artifacts/crash-1.bin");
    assert_eq!(std::fs::read(stored).unwrap(), b"AAAA");
}
