//! Hot reload: the toolbox is watched; new, changed, broken and deleted
//! components take effect without a restart, and runs stay pinned to the
//! version they started with.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use toolhost::engine::RunStatus;
use toolhost::toolbox::digest;
use toolhost_tests::{
    TestHost, component, eventually, probe, publish, request, with_custom_section,
};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_changed_broken_and_deleted_files_take_effect_without_restart() {
    let host = TestHost::new(&["probe"], "");
    let engine = host.engine().await;
    let _watch = engine.toolbox().watch().unwrap();
    let toolbox = host.toolbox();
    let hello = std::fs::read(component("hello")).unwrap();

    // A new file published with a rename.
    publish(&toolbox, "hello.wasm", &hello);
    assert!(
        eventually(WAIT, || engine.registry().get("hello").is_some()).await,
        "hello never loaded"
    );
    let t = tempfile::tempdir().unwrap();
    let record = toolhost_tests::run(&engine, "hello", t.path(), json!({})).await;
    assert_eq!(record.status, RunStatus::Succeeded);
    assert_eq!(record.component_digest, digest(&hello));

    // A changed file replaces the version.
    let v2 = with_custom_section(&hello, "version", b"2");
    publish(&toolbox, "hello.wasm", &v2);
    let d2 = digest(&v2);
    assert!(
        eventually(WAIT, || engine
            .registry()
            .get("hello")
            .is_some_and(|w| w.digest == d2))
        .await
    );

    // A broken version is rejected and v2 stays in service.
    publish(&toolbox, "hello.wasm", b"\0asm\x0d\0\x01\0broken");
    assert!(
        eventually(WAIT, || engine
            .registry()
            .rejections()
            .any(|r| r.path.ends_with("hello.wasm")))
        .await,
        "the broken file was not reported"
    );
    assert_eq!(engine.registry().get("hello").unwrap().digest, d2);
    let record = toolhost_tests::run(&engine, "hello", t.path(), json!({})).await;
    assert_eq!(record.component_digest, d2);

    // A plain, slow, in-place write: never served half-written.
    let v3 = with_custom_section(&hello, "version", b"3");
    {
        let mut f = std::fs::File::create(toolbox.join("hello.wasm")).unwrap();
        f.write_all(&v3[..v3.len() / 2]).unwrap();
        f.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            engine.registry().get("hello").unwrap().digest,
            d2,
            "half a file must not be served"
        );
        f.write_all(&v3[v3.len() / 2..]).unwrap();
    }
    let d3 = digest(&v3);
    assert!(
        eventually(WAIT, || engine
            .registry()
            .get("hello")
            .is_some_and(|w| w.digest == d3))
        .await
    );

    // Deleting the file stops offering it.
    std::fs::remove_file(toolbox.join("hello.wasm")).unwrap();
    assert!(eventually(WAIT, || engine.registry().get("hello").is_none()).await);
    assert!(
        engine.registry().get("probe").is_some(),
        "other workflows are untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_keeps_its_digest_when_the_file_is_replaced_or_deleted() {
    let host = TestHost::new(&["probe"], "");
    let engine = Arc::new(host.engine().await);
    let _watch = engine.toolbox().watch().unwrap();
    let v1 = std::fs::read(component("probe")).unwrap();
    let d1 = digest(&v1);
    let weak_v1 = Arc::downgrade(&engine.registry().get("probe").unwrap());
    let t = tempfile::tempdir().unwrap();

    // A run that takes a while: durable sleep, then read the clock.
    let running = {
        let engine = engine.clone();
        let target = t.path().to_path_buf();
        tokio::spawn(async move {
            engine
                .run(request(
                    "probe",
                    &target,
                    json!({"actions": [{"op": "sleep", "ms": 1500}, {"op": "clock"}]}),
                ))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v2 = with_custom_section(&v1, "version", b"2");
    let d2 = digest(&v2);
    publish(&host.toolbox(), "probe.wasm", &v2);
    assert!(
        eventually(WAIT, || engine
            .registry()
            .get("probe")
            .is_some_and(|w| w.digest == d2))
        .await
    );
    // The new version takes new runs while the old one is still running.
    let (fresh, _) = probe(&engine, t.path(), json!([{"op": "clock"}])).await;
    assert_eq!(fresh.component_digest, d2);
    assert!(
        weak_v1.upgrade().is_some(),
        "v1 is alive while its run is in flight"
    );

    let pinned = running.await.unwrap().unwrap();
    assert_eq!(pinned.status, RunStatus::Succeeded, "{:?}", pinned.error);
    assert_eq!(pinned.component_digest, d1);
    assert!(
        weak_v1.upgrade().is_none(),
        "v1 is dropped once no run uses it and it is not current"
    );

    // Deleting the file mid-run does not break the run either.
    let running = {
        let engine = engine.clone();
        let target = t.path().to_path_buf();
        tokio::spawn(async move {
            engine
                .run(request(
                    "probe",
                    &target,
                    json!({"actions": [{"op": "sleep", "ms": 1000}, {"op": "clock"}]}),
                ))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::remove_file(host.toolbox().join("probe.wasm")).unwrap();
    assert!(eventually(WAIT, || engine.registry().get("probe").is_none()).await);
    let pinned = running.await.unwrap().unwrap();
    assert_eq!(pinned.status, RunStatus::Succeeded, "{:?}", pinned.error);
    assert_eq!(pinned.component_digest, d2);
}

#[test]
fn workflows_watch_streams_registry_events() {
    let host = TestHost::new(&["probe"], "");
    let mut child = host
        .cli()
        .args(["workflows", "--watch", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["event"], "loaded");
    assert_eq!(first["name"], "probe");
    // The watcher is running once the initial listing is out.
    std::thread::sleep(Duration::from_millis(200));
    publish(
        &host.toolbox(),
        "hello.wasm",
        &std::fs::read(component("hello")).unwrap(),
    );
    std::fs::write(host.toolbox().join("junk.wasm"), b"junk").unwrap();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        seen.push(v.clone());
        let loaded = seen
            .iter()
            .any(|e| e["event"] == "loaded" && e["name"] == "hello");
        let rejected = seen.iter().any(|e| {
            e["event"] == "rejected" && e["path"].as_str().unwrap().ends_with("junk.wasm")
        });
        if loaded && rejected {
            break;
        }
    }
    std::fs::remove_file(host.toolbox().join("hello.wasm")).unwrap();
    let line = lines.next().unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["event"], "removed", "{v}");
    assert_eq!(v["name"], "hello");
    child.kill().unwrap();
    let _ = child.wait();
}
