//! Attacks on the host's own directories and memory: another local user
//! owning the work directory or planting configuration above it, a
//! compile-cache entry others may write, a guest reading a huge file.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;
use toolhost::engine::{LocalEngine, RunStatus};
use toolhost_tests::{TestHost, probe};

/// A world-writable work directory (or one another user owns) could be
/// swapped or read by others: the engine refuses to start, with the reason.
#[tokio::test]
async fn work_directory_writable_by_others_is_refused() {
    let host = TestHost::new(&["probe"], "");
    let work = host.config.work_dir();
    std::fs::create_dir_all(&work).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
    let runtime =
        toolhost::runtime::Runtime::new(&toolhost::runtime::EngineOptions::default()).unwrap();
    let toolbox = toolhost::toolbox::load(&runtime, &host.config)
        .await
        .unwrap();
    let err = LocalEngine::new(toolbox)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("writable by everyone") && err.contains("chmod go-w"),
        "{err}"
    );
    if nix::unistd::geteuid().is_root() {
        std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&work, Some(65534), Some(65534)).unwrap();
        let toolbox = toolhost::toolbox::load(&runtime, &host.config)
            .await
            .unwrap();
        let err = LocalEngine::new(toolbox)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("owned by uid 65534"), "{err}");
    }
}

/// Cargo configuration planted above the work directory after the host
/// started (another local user creating `/tmp/.cargo/config.toml`): the
/// next run fails at once, with the reason, instead of losing clippy's
/// findings to "could not load Cargo configuration".
#[tokio::test]
async fn cargo_config_planted_above_the_work_directory_fails_the_next_run() {
    let host = TestHost::new(&["probe", "hello"], "");
    let engine = host.engine().await;
    let target = tempfile::tempdir().unwrap();
    let ok = toolhost_tests::run(&engine, "hello", target.path(), json!({})).await;
    assert_eq!(ok.status, RunStatus::Succeeded);
    // The work directory is `<TestHost dir>/work`: plant above it.
    let above = host.dir.path().join(".cargo");
    std::fs::create_dir_all(&above).unwrap();
    std::fs::write(
        above.join("config.toml"),
        "[build]\nrustc-wrapper = \"/tmp/x\"\n",
    )
    .unwrap();
    let err = toolhost_tests::try_run(&engine, "hello", target.path(), json!({}))
        .await
        .expect_err("the run must not start");
    let text = err.to_string();
    assert!(
        text.contains(".cargo/config.toml") && text.contains("work_dir"),
        "{text}"
    );
    std::fs::remove_dir_all(&above).unwrap();
    let ok = toolhost_tests::run(&engine, "hello", target.path(), json!({})).await;
    assert_eq!(ok.status, RunStatus::Succeeded, "the host keeps serving");
}

/// A compile-cache entry that others may write could have been replaced
/// by native code of theirs: it is not loaded, the component is compiled
/// again and the entry replaced by a private one.
#[tokio::test]
async fn compile_cache_entry_others_may_write_is_not_loaded() {
    let host = TestHost::new(&["hello"], "");
    let cache = host.config.data_dir.join("cache/components");
    let options = toolhost::runtime::EngineOptions::for_host(&host.config);
    let runtime = toolhost::runtime::Runtime::new(&options).unwrap();
    toolhost::toolbox::load(&runtime, &host.config)
        .await
        .unwrap();
    let entry = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .next()
        .expect("an entry")
        .path();
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
    let runtime = toolhost::runtime::Runtime::new(&options).unwrap();
    let toolbox = toolhost::toolbox::load(&runtime, &host.config)
        .await
        .unwrap();
    assert!(toolbox.registry().get("hello").is_some());
    let mode = std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the entry was replaced by a private one");
    // A cache directory others may write is not used at all.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let runtime = toolhost::runtime::Runtime::new(&options).unwrap();
    assert!(
        !runtime.has_cache(),
        "a world-writable compile cache is disabled"
    );
}

/// `workspace.read` of a file past `limits.max_read_mib` would hold it all
/// in host memory: `quota-exceeded`, and the host keeps serving.
#[tokio::test]
async fn guest_reads_a_huge_workspace_file() {
    let host = TestHost::new(&["probe", "hello"], "max_read_mib = 1");
    let engine = host.engine().await;
    let target = tempfile::tempdir().unwrap();
    std::fs::write(target.path().join("big.bin"), vec![b'x'; (1 << 20) + 10]).unwrap();
    let (record, r) = probe(
        &engine,
        target.path(),
        json!([{"op": "read", "path": "big.bin"}]),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{:?}", record.error);
    let why = r[0]["err"]["quota_exceeded"].as_str().unwrap_or_default();
    assert!(why.contains("max_read_mib"), "{:?}", r[0]);
    let ok = toolhost_tests::run(&engine, "hello", target.path(), json!({})).await;
    assert_eq!(ok.status, RunStatus::Succeeded);
}

/// A FIFO in the workspace would block whoever opens it: the host's
/// `workspace.read`, or activity code walking `/workspace` on the host's
/// own thread. Tools cannot make FIFOs or sockets there (they still can in
/// their home), so the workspace holds only files, directories and links.
#[tokio::test]
async fn tool_cannot_plant_a_fifo_or_socket_in_the_workspace() {
    let host = TestHost::new(&["probe", "hello"], "");
    let engine = host.engine().await;
    let target = tempfile::tempdir().unwrap();
    let script = "mkfifo pipe 2>&1; echo fifo=$?; \
        python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind(\"sock\")' 2>/dev/null; echo sock=$?; \
        mkfifo \"$HOME/pipe\" && echo home=ok; ls -A";
    let (record, r) = probe(
        &engine,
        target.path(),
        json!([
            {"op": "tool", "tool": "sh", "args": ["-c", script]},
            {"op": "read", "path": "pipe"},
        ]),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{:?}", record.error);
    let out = r[0]["ok"]["stdout"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(out.contains("Permission denied"), "{}", r[0]);
    assert!(!out.contains("fifo=0") && !out.contains("sock=0"), "{out}");
    assert!(
        out.contains("home=ok"),
        "the rule is the workspace's: {out}"
    );
    assert!(!out.lines().any(|l| l == "pipe" || l == "sock"), "{out}");
    assert!(r[1]["err"]["not_found"].is_string(), "{}", r[1]);
    let ok = toolhost_tests::run(&engine, "hello", target.path(), json!({})).await;
    assert_eq!(ok.status, RunStatus::Succeeded);
}
