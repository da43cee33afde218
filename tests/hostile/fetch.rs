//! Attacks through the dependency-fetch step, the only tool with network: a
//! target trying to make it reach an internal host (git and registry
//! dependencies, its own cargo configuration, path dependencies leaving the
//! target), and a tool with an egress list trying to go around its proxy.

use std::io::ErrorKind;
use std::net::TcpListener;

use serde_json::json;
use toolhost::engine::RunStatus;
use toolhost::manifest::AnalysisStatus;
use toolhost_tests::{TestHost, fixture, probe, run};

/// A stand-in for an internal service: a listener that must never be
/// connected to.
struct Internal(TcpListener);

impl Internal {
    fn new() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Internal(l)
    }
    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }
    fn assert_untouched(&self) {
        match self.0.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("the internal service was connected to: {other:?}"),
        }
    }
}

/// A copy of the deps fixture with `edit` applied to its manifest and
/// `extra` files written.
fn crate_with(edit: impl FnOnce(String) -> String, extra: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("deps_crate");
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::copy(src.join("src/lib.rs"), dir.path().join("src/lib.rs")).unwrap();
    std::fs::copy(src.join("Cargo.lock"), dir.path().join("Cargo.lock")).unwrap();
    let manifest = std::fs::read_to_string(src.join("Cargo.toml")).unwrap();
    std::fs::write(dir.path().join("Cargo.toml"), edit(manifest)).unwrap();
    for (path, text) in extra {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

async fn rust_test(target: &std::path::Path) -> toolhost::engine::RunRecord {
    let host = TestHost::new(&["rust_test"], "");
    let engine = host.engine().await;
    run(&engine, "rust_test", target, json!({})).await
}

fn refused_dependencies(record: &toolhost::engine::RunRecord) -> String {
    assert_eq!(record.status, RunStatus::Failed, "{:?}", record.summary);
    let deps = &record.analyses[0];
    assert_eq!(
        (deps.name.as_str(), deps.status),
        ("dependencies", AnalysisStatus::Failed)
    );
    deps.reason.clone().unwrap_or_default()
}

#[tokio::test]
async fn target_git_dependency_points_at_an_internal_host() {
    let internal = Internal::new();
    let url = format!("https://127.0.0.1:{}/corp/secret-lib.git", internal.port());
    let target = crate_with(
        |m| {
            m.replace(
                "[dependencies]\n",
                &format!("[dependencies]\nsecret-lib = {{ git = \"{url}\" }}\n"),
            )
        },
        &[],
    );
    let why = refused_dependencies(&rust_test(target.path()).await);
    assert!(
        why.contains("secret-lib")
            && why.contains("comes from git")
            && why.contains("sources] git"),
        "{why}"
    );
    internal.assert_untouched();
}

#[tokio::test]
async fn target_registry_dependency_names_another_registry() {
    let target = crate_with(
        |m| {
            m.replace(
                "[dependencies]\n",
                "[dependencies]\ncorp-lib = { version = \"1\", registry = \"corp\" }\n",
            )
        },
        &[],
    );
    let why = refused_dependencies(&rust_test(target.path()).await);
    assert!(
        why.contains("corp-lib") && why.contains("registry `corp`"),
        "{why}"
    );
}

#[tokio::test]
async fn target_path_dependency_leaves_the_target() {
    let target = crate_with(
        |m| {
            m.replace(
                "[dependencies]\n",
                "[dependencies]\nhost-crate = { path = \"../../../../root/project\" }\n",
            )
        },
        &[],
    );
    let why = refused_dependencies(&rust_test(target.path()).await);
    assert!(
        why.contains("host-crate") && why.contains("leaves the target"),
        "{why}"
    );
}

#[tokio::test]
async fn target_lock_file_names_a_git_source() {
    let internal = Internal::new();
    let lock = format!(
        "{}\n[[package]]\nname = \"smuggled\"\nversion = \"0.1.0\"\nsource = \"git+https://127.0.0.1:{}/x.git#abc\"\n",
        std::fs::read_to_string(fixture("deps_crate/Cargo.lock")).unwrap(),
        internal.port()
    );
    let target = crate_with(|m| m, &[("Cargo.lock", lock)]);
    let why = refused_dependencies(&rust_test(target.path()).await);
    assert!(
        why.contains("smuggled") && why.contains("Cargo.lock"),
        "{why}"
    );
    internal.assert_untouched();
}

/// The target's own `.cargo/config.toml` replaces crates.io with an
/// internal registry, sets a proxy and installs a credential helper: the
/// fetch step runs cargo outside the target, so none of it applies and the
/// real crates.io is used. (The offline build steps do read the target's
/// configuration, as building it requires; pointing them at a registry that
/// is not in the cache only breaks the target's own build.)
#[tokio::test]
async fn target_cargo_config_redirects_the_fetch_step() {
    let internal = Internal::new();
    let pwned = tempfile::tempdir().unwrap();
    let marker = pwned.path().join("helper-ran");
    let config = format!(
        "[source.crates-io]\nreplace-with = \"internal\"\n[source.internal]\nregistry = \"sparse+http://127.0.0.1:{port}/index/\"\n[http]\nproxy = \"127.0.0.1:{port}\"\n[registry]\nglobal-credential-providers = [\"/bin/sh -c 'touch {marker}'\"]\n[net]\ngit-fetch-with-cli = true\n",
        port = internal.port(),
        marker = marker.display()
    );
    let target = crate_with(|m| m, &[(".cargo/config.toml", config)]);
    let record = rust_test(target.path()).await;
    let deps = &record.analyses[0];
    assert_eq!(
        (deps.name.as_str(), deps.status),
        ("dependencies", AnalysisStatus::Ran),
        "the fetch ignored the target's configuration: {:?}",
        deps.reason
    );
    internal.assert_untouched();
    assert!(!marker.exists(), "the target's credential helper ran");
}

/// A tool with an egress list may reach its listed hosts through the proxy
/// only: not the proxy's refused hosts, not anything directly.
#[tokio::test]
async fn egress_tool_goes_around_its_proxy() {
    let internal = Internal::new();
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let allowed_port = allowed.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::Write;
        if let Ok((mut s, _)) = allowed.accept() {
            let _ = s.write_all(b"hello from allowed\n");
        }
    });
    let host = TestHost::with_config(&["probe"], "", |text| {
        text.replace(
            "[verticals.test.tools.python3]\ncommand = \"/usr/bin/python3\"\n",
            &format!(
                "[verticals.test.tools.python3]\ncommand = \"/usr/bin/python3\"\nenv = [\"PROBE_VAR\"]\negress = [\"127.0.0.1:{allowed_port}\"]\n"
            ),
        )
    });
    let engine = host.engine().await;
    let script = format!(
        r#"
import os, socket
proxy = os.environ["HTTPS_PROXY"].rsplit(":", 1)
def via_proxy(port):
    s = socket.create_connection((proxy[0].split("//")[1], int(proxy[1])), timeout=5)
    s.sendall(f"CONNECT 127.0.0.1:{{port}} HTTP/1.1\r\n\r\n".encode())
    data = b""
    while True:
        chunk = s.recv(1000)
        if not chunk:
            break
        data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    if not head.endswith("established"):
        body = ""
    return head.split("\r\n")[0] + " " + body.strip()
try:
    socket.create_connection(("127.0.0.1", {internal}), timeout=5)
    print("direct: CONNECTED")
except OSError as e:
    print("direct: refused", e.errno)
print("refused host:", via_proxy({internal}))
print("allowed host:", via_proxy({allowed_port}))
"#,
        internal = internal.port()
    );
    let (record, results) = probe(
        &engine,
        tempfile::tempdir().unwrap().path(),
        json!([{"op": "tool", "tool": "python3", "args": ["-c", script]}]),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{:?}", record.error);
    let out = results[0]["ok"]["stdout"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        out.contains("direct: refused 13"),
        "landlock refuses a direct connect (EACCES): {out} {:?}",
        results[0]
    );
    assert!(out.contains("refused host: HTTP/1.1 403"), "{out}");
    assert!(
        out.contains("allowed host: HTTP/1.1 200 Connection established hello from allowed"),
        "{out}"
    );
    internal.assert_untouched();
    let log = std::fs::read_to_string(
        host.config
            .data_dir
            .join("runs")
            .join(&record.run_id)
            .join("log.jsonl"),
    )
    .unwrap();
    assert!(
        log.contains(&format!("refused egress to 127.0.0.1:{}", internal.port())),
        "{log}"
    );
}
