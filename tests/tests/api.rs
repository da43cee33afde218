//! `toolhost serve` as a client sees it: a real server process, a real
//! HTTP client, uploads, runs, events, tenants and tokens.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};
use toolhost_tests::{TestHost, assert_valid_sarif};

/// A running `toolhost serve`, stopped when dropped.
struct Server {
    child: Child,
    url: String,
    host: TestHost,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(components: &[&str], serve: &str) -> Server {
        let host =
            TestHost::with_config(components, "", |text| format!("{text}\n[serve]\n{serve}\n"));
        Self::start_on(host, &[])
    }

    fn start_on(host: TestHost, extra: &[&str]) -> Server {
        let mut child = host
            .cli()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("toolhost serve starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("API v1 on ").nth(1) {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(url.to_string());
                }
                eprintln!("serve: {line}");
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the server announces its address");
        Server { child, url, host }
    }

    fn token(&self, tenant: &str, role: &str) -> String {
        let out = self
            .host
            .cli()
            .args([
                "token", "create", "--tenant", tenant, "--role", role, "--name", "test",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn api_dir(&self) -> std::path::PathBuf {
        self.host.config.data_dir.join("api")
    }
}

/// A client that sends `token`.
struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(server: &Server, token: Option<&str>) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: server.url.clone(),
            token: token.map(String::from),
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.req(reqwest::Method::GET, path).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .req(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn upload(&self, bytes: Vec<u8>) -> (u16, Value) {
        let resp = self
            .req(reqwest::Method::POST, "/v1/targets")
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Waits for the run to end and returns its view.
    async fn wait(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (s, v) = self.get(&format!("/v1/runs/{id}")).await;
            assert_eq!(s, 200, "{v}");
            if !matches!(v["status"].as_str(), Some("queued" | "running")) {
                return v;
            }
            assert!(Instant::now() < deadline, "run {id} never ended: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every event of a run from after `last` to its end, as (id, kind, data).
    async fn events(&self, id: &str, last: Option<u64>) -> Vec<(u64, String, Value)> {
        let mut r = self.req(reqwest::Method::GET, &format!("/v1/runs/{id}/events"));
        if let Some(l) = last {
            r = r.header("Last-Event-ID", l.to_string());
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        let mut out = Vec::new();
        let read = async {
            while let Some(chunk) = stream.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let (mut eid, mut kind, mut data) = (None, String::new(), String::new());
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id: ").or(line.strip_prefix("id:")) {
                            eid = v.trim().parse().ok();
                        } else if let Some(v) =
                            line.strip_prefix("event: ").or(line.strip_prefix("event:"))
                        {
                            kind = v.trim().into();
                        } else if let Some(v) =
                            line.strip_prefix("data: ").or(line.strip_prefix("data:"))
                        {
                            data.push_str(v);
                        }
                    }
                    if let Some(eid) = eid {
                        out.push((eid, kind, serde_json::from_str(&data).unwrap()));
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(120), read)
            .await
            .expect("the event stream ends when the run does");
        out
    }
}

/// A tar.gz of a directory holding `files`.
fn tar_gz(files: &[(&str, &str)]) -> Vec<u8> {
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(enc);
    for (name, text) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, text.as_bytes()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// A plain tar whose one entry's name is written raw (so it can escape).
fn tar_with_raw_name(name: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    {
        let raw = h.as_old_mut();
        raw.name[..name.len()].copy_from_slice(name);
    }
    h.set_size(4);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    let mut data = b"evil".to_vec();
    data.resize(512, 0);
    out.extend(data);
    out.extend([0u8; 1024]);
    out
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn upload_run_follow_and_read_the_results() {
    let server = Server::start(&["probe"], "");
    let token = server.token("team-a", "submitter");
    let c = Client::new(&server, Some(&token));

    let archive = tar_gz(&[
        ("notes.txt", "plain text\n"),
        ("src/lib.rs", "fn main() {}\n"),
    ]);
    let (s, target) = c.upload(archive.clone()).await;
    assert_eq!(s, 201, "{target}");
    assert_eq!(target["format"], "tar.gz");
    assert_eq!(target["deduplicated"], false);
    let sha = target["sha256"].as_str().unwrap().to_string();
    let (s, again) = c.upload(archive).await;
    assert_eq!((s, &again["deduplicated"]), (200, &json!(true)), "{again}");
    let head = c
        .req(reqwest::Method::HEAD, &format!("/v1/targets/{sha}"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 200);

    let actions = json!([
        {"op": "read", "path": "notes.txt"},
        {"op": "findings", "count": 3},
        {"op": "progress", "count": 2},
        {"op": "artifact", "name": "out.txt", "data": "artifact bytes"},
        {"op": "say", "message": "done probing"},
    ]);
    let (s, run) = c
        .post(
            "/v1/runs",
            json!({"workflow": "probe", "params": {"actions": actions}, "target": sha, "labels": {"branch": "main"}}),
        )
        .await;
    assert_eq!(s, 202, "{run}");
    let id = run["run_id"].as_str().unwrap().to_string();

    let events = c.events(&id, None).await;
    let ids: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(
        ids,
        (1..=ids.len() as u64).collect::<Vec<_>>(),
        "in order, none missing"
    );
    assert_eq!(events.first().unwrap().1, "status");
    let last = events.last().unwrap();
    assert_eq!(
        (last.1.as_str(), &last.2["status"]),
        ("status", &json!("succeeded")),
        "{events:?}"
    );
    assert_eq!(events.iter().filter(|e| e.1 == "finding").count(), 3);
    assert!(events.iter().any(|e| e.1 == "progress"));
    assert!(events.iter().any(|e| {
        e.1 == "log"
            && e.2["message"]
                .as_str()
                .unwrap_or_default()
                .contains("done probing")
    }));

    // A follower that reconnects after event k gets exactly the rest.
    let k = events.len() as u64 / 2;
    let tail = c.events(&id, Some(k)).await;
    assert_eq!(
        tail.iter().map(|e| e.0).collect::<Vec<_>>(),
        ((k + 1)..=events.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(tail.last().unwrap().2, last.2);

    let view = c.wait(&id).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(view["counts"]["low"], 3);
    assert_eq!(view["labels"]["branch"], "main");
    assert_eq!(view["target"], sha);
    let (s, findings) = c.get(&format!("/v1/runs/{id}/findings")).await;
    assert_eq!(s, 200);
    assert_eq!(findings["findings"].as_array().unwrap().len(), 3);
    let sarif: Value = c
        .req(
            reqwest::Method::GET,
            &format!("/v1/runs/{id}/findings?format=sarif"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_valid_sarif(&sarif);
    assert_eq!(sarif["runs"][0]["results"].as_array().unwrap().len(), 3);

    let log = c
        .req(reqwest::Method::GET, &format!("/v1/runs/{id}/log"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(log.contains("done probing"), "{log}");
    assert!(
        log.contains(&format!("sha256:{sha}")),
        "the log names the target by digest"
    );
    let work = server.host.dir.path().to_str().unwrap().to_string();
    assert!(!log.contains(&work), "no host path in the log: {log}");

    let (s, list) = c.get(&format!("/v1/runs/{id}/artifacts")).await;
    assert_eq!(s, 200);
    assert_eq!(list["artifacts"][0]["name"], "out.txt");
    let bytes = c
        .req(
            reqwest::Method::GET,
            &format!("/v1/runs/{id}/artifacts/out.txt"),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(bytes, "artifact bytes");
    let (s, _) = c.get(&format!("/v1/runs/{id}/artifacts/..")).await;
    assert_eq!(s, 404);

    // Listing with filters, and cursor pagination.
    for _ in 0..3 {
        let (s, _) = c
            .post("/v1/runs", json!({"workflow": "probe", "params": {"actions": []}, "labels": {"branch": "dev"}}))
            .await;
        assert_eq!(s, 202);
    }
    let (_, page) = c.get("/v1/runs?label=branch=main").await;
    assert_eq!(page["runs"].as_array().unwrap().len(), 1, "{page}");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/runs?limit=2&cursor={c}"),
            None => "/v1/runs?limit=2".into(),
        };
        let (s, page) = c.get(&path).await;
        assert_eq!(s, 200, "{page}");
        seen.extend(
            page["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["run_id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(n) => cursor = Some(n.into()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    let unique: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 4, "no run twice across pages");
    let (s, bad) = c.get("/v1/runs?status=sideways").await;
    assert_eq!(s, 400);
    assert!(
        bad["detail"].as_str().unwrap().contains("succeeded"),
        "{bad}"
    );
}

#[tokio::test]
async fn tenants_see_only_their_own_objects() {
    let server = Server::start(&["probe"], "");
    let a = Client::new(&server, Some(&server.token("team-a", "submitter")));
    let a_viewer = Client::new(&server, Some(&server.token("team-a", "viewer")));
    // team-b's submitter (an admin of any tenant sees every tenant).
    let b = Client::new(&server, Some(&server.token("team-b", "submitter")));
    let admin = Client::new(&server, Some(&server.token("ops", "admin")));
    let anonymous = Client::new(&server, None);

    let (s, t) = a.upload(tar_gz(&[("a.txt", "team a only\n")])).await;
    assert_eq!(s, 201);
    let sha = t["sha256"].as_str().unwrap().to_string();
    let (s, run) = a
        .post(
            "/v1/runs",
            json!({"workflow": "probe", "target": sha, "params": {"actions": [
                {"op": "read", "path": "a.txt"}, {"op": "findings", "count": 1},
                {"op": "artifact", "name": "x.txt", "data": "team a artifact"}]}}),
        )
        .await;
    assert_eq!(s, 202, "{run}");
    let id = run["run_id"].as_str().unwrap().to_string();
    a.wait(&id).await;

    let reads = [
        format!("/v1/runs/{id}"),
        format!("/v1/runs/{id}/findings"),
        format!("/v1/runs/{id}/findings?format=sarif"),
        format!("/v1/runs/{id}/log"),
        format!("/v1/runs/{id}/artifacts"),
        format!("/v1/runs/{id}/artifacts/x.txt"),
        format!("/v1/runs/{id}/events"),
        format!("/v1/targets/{sha}"),
    ];
    for path in &reads {
        for (who, client, want) in [
            ("owner", &a, 200),
            ("viewer", &a_viewer, 200),
            ("admin", &admin, 200),
            ("other tenant", &b, 404),
            ("no token", &anonymous, 401),
        ] {
            let resp = client.req(reqwest::Method::GET, path).send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            assert_eq!(status, want, "{who} GET {path}: {text}");
            if want != 200 {
                assert!(!text.contains("team a"), "{who} got data of {path}: {text}");
                assert!(!text.contains(&sha) || path.contains(&sha), "{text}");
            }
        }
    }
    let head = b
        .req(reqwest::Method::HEAD, &format!("/v1/targets/{sha}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.status().as_u16(),
        404,
        "another tenant cannot learn a target exists"
    );

    for (path, body) in [
        (format!("/v1/runs/{id}/cancel"), json!({})),
        (format!("/v1/runs/{id}/retry"), json!({})),
    ] {
        let (s, _) = b.post(&path, body.clone()).await;
        assert_eq!(s, 404, "other tenant POST {path}");
        let (s, v) = a_viewer.post(&path, body).await;
        assert_eq!(s, 403, "viewer POST {path}: {v}");
        assert!(v["detail"].as_str().unwrap().contains("submitter"), "{v}");
    }
    let (s, _) = b
        .post(
            "/v1/runs",
            json!({"workflow": "probe", "target": sha, "params": {"actions": []}}),
        )
        .await;
    assert_eq!(s, 404, "another tenant cannot run a's target");
    // Even uploading the same bytes does not reveal it: a new target of b's own.
    let (s, tb) = b.upload(tar_gz(&[("a.txt", "team a only\n")])).await;
    assert_eq!((s, &tb["deduplicated"]), (201, &json!(false)));
    let (s, _) = a_viewer
        .post(
            "/v1/runs",
            json!({"workflow": "probe", "params": {"actions": []}}),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = a_viewer.upload(tar_gz(&[("x", "y")])).await;
    assert_eq!(s, 403);

    let (_, list) = b.get("/v1/runs").await;
    assert!(list["runs"].as_array().unwrap().is_empty(), "{list}");
    let (_, list) = admin.get("/v1/runs?tenant=team-a").await;
    assert_eq!(list["runs"].as_array().unwrap().len(), 1);
    let (s, _) = a.get("/v1/runs?tenant=team-b").await;
    assert_eq!(s, 403, "only admins pick a tenant");

    // A revoked token stops working on the next request.
    let token = server.token("team-a", "viewer");
    let c = Client::new(&server, Some(&token));
    assert_eq!(c.get("/v1/workflows").await.0, 200);
    let list = server
        .host
        .cli()
        .args(["token", "list", "--json"])
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    let tokens = std::fs::read_to_string(server.api_dir().join("tokens.json")).unwrap();
    assert!(!tokens.contains(&token), "tokens are stored hashed");
    let id_of = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .find(|i| token.contains(i.as_str()))
        .unwrap();
    let out = server
        .host
        .cli()
        .args(["token", "revoke", &id_of])
        .output()
        .unwrap();
    assert!(out.status.success());
    let (s, v) = c.get("/v1/workflows").await;
    assert_eq!(s, 401, "{v}");
    let (s, v) = Client::new(
        &server,
        Some("thk_000000000000_notatokenatallnotatokenatallnotat"),
    )
    .get("/v1/workflows")
    .await;
    assert_eq!(s, 401, "{v}");
}

#[tokio::test]
async fn bad_input_is_refused_with_a_reason_and_nothing_is_stored() {
    let server = Server::start(&["probe", "hello"], "max_upload_mib = 1");
    let c = Client::new(&server, Some(&server.token("team-a", "submitter")));
    let targets = server.api_dir().join("tenants/team-a/targets");

    // An archive that writes outside its directory.
    let (s, v) = c.upload(tar_with_raw_name(b"../escaped.txt")).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("nothing was stored"),
        "{v}"
    );
    assert_eq!(entries(&targets), 0);
    assert_eq!(entries(&server.api_dir().join("tenants/team-a/uploads")), 0);
    assert!(!server.api_dir().join("tenants/team-a/escaped.txt").exists());
    // Not an archive at all.
    let (s, v) = c
        .upload(b"this is not a tar file, not at all".to_vec())
        .await;
    assert_eq!(s, 422, "{v}");
    // Past the size cap (1 MiB here), refused while it streams.
    let big: String = (0..300_000).map(|i| format!("{i:x}")).collect();
    let (s, v) = c
        .upload(
            tar_gz(&[("big.txt", &big)])
                .into_iter()
                .chain(std::iter::repeat_n(0u8, 2 << 20))
                .collect(),
        )
        .await;
    assert_eq!(s, 413, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("max_upload_mib"),
        "{v}"
    );
    assert_eq!(entries(&targets), 0);

    let (s, v) = c
        .post(
            "/v1/runs",
            json!({"workflow": "hello", "params": {"name": 7}}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(!v["errors"].as_array().unwrap().is_empty(), "{v}");
    let (s, v) = c.post("/v1/runs", json!({"workflow": "nope"})).await;
    assert_eq!(s, 404, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("hello"),
        "names what exists: {v}"
    );
    let (s, v) = c
        .post("/v1/runs", json!({"workflow": "hello", "target": "/etc"}))
        .await;
    assert_eq!(s, 404, "a path is not a target: {v}");
    let (s, v) = c
        .post("/v1/runs", json!({"workflow": "hello", "extra": 1}))
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = c
        .post("/v1/runs", json!({"workflow": "hello", "digest": "00"}))
        .await;
    assert_eq!(s, 409, "{v}");
    let resp = c
        .req(reqwest::Method::GET, "/v1/nothing-here")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");

    // An idempotency key starts one run, however often it is sent.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let resp = c
            .req(reqwest::Method::POST, "/v1/runs")
            .header("Idempotency-Key", "ci-job-42")
            .json(&json!({"workflow": "hello", "params": {"name": "once"}}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
        let v: Value = resp.json().await.unwrap();
        ids.push(v["run_id"].as_str().unwrap().to_string());
    }
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    let (_, list) = c.get("/v1/runs?workflow=hello").await;
    assert_eq!(list["runs"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn cancel_and_retry() {
    let server = Server::start(&["probe"], "");
    let c = Client::new(&server, Some(&server.token("team-a", "submitter")));
    let (s, run) = c
        .post("/v1/runs", json!({"workflow": "probe", "params": {"actions": [{"op": "tool", "tool": "sleep", "args": ["977.25"]}]}}))
        .await;
    assert_eq!(s, 202, "{run}");
    let id = run["run_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = c.get(&format!("/v1/runs/{id}")).await;
        if v["pending"].as_array().is_some_and(|p| !p.is_empty()) {
            assert_eq!(v["pending"][0]["tool"], "sleep", "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "the tool never started: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, v) = c.post(&format!("/v1/runs/{id}/cancel"), json!({})).await;
    assert_eq!(s, 202, "{v}");
    let view = c.wait(&id).await;
    assert_eq!(view["status"], "cancelled", "{view}");
    let (s, v) = c.post(&format!("/v1/runs/{id}/cancel"), json!({})).await;
    assert_eq!(s, 409, "{v}");

    let (s, retry) = c.post(&format!("/v1/runs/{id}/retry"), json!({})).await;
    assert_eq!(s, 202, "{retry}");
    assert_eq!(retry["retry_of"], id.as_str());
    assert_eq!(retry["params"], view["params"]);
    let new_id = retry["run_id"].as_str().unwrap();
    assert_ne!(new_id, id);
    c.post(&format!("/v1/runs/{new_id}/cancel"), json!({}))
        .await;
    assert_eq!(c.wait(new_id).await["status"], "cancelled");
}

/// SIGTERM with a tool in flight: the tool is killed, the run is recorded
/// as cancelled, the server exits 0.
#[tokio::test]
async fn shutdown_cancels_live_runs_and_leaves_no_orphan_tool() {
    let mut server = Server::start(&["probe"], "");
    let c = Client::new(&server, Some(&server.token("team-a", "submitter")));
    let (_, run) = c
        .post("/v1/runs", json!({"workflow": "probe", "params": {"actions": [{"op": "tool", "tool": "sleep", "args": ["985.5"]}]}}))
        .await;
    let id = run["run_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while toolhost_tests::processes(|c| c.ends_with(b"sleep\x00985.5\x00")) == 0 {
        assert!(Instant::now() < deadline, "the tool never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopping = Instant::now();
    let status = server.child.wait().unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(20));
    assert!(status.success(), "graceful shutdown exits 0: {status}");
    assert_eq!(
        toolhost_tests::processes(|c| c.ends_with(b"sleep\x00985.5\x00")),
        0,
        "orphaned tool"
    );
    let meta: Value = serde_json::from_slice(
        &std::fs::read(server.api_dir().join(format!("runs/{id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["status"], "cancelled", "{meta}");
}

#[test]
fn serving_without_auth_beyond_loopback_is_refused() {
    let host = TestHost::new(&["hello"], "");
    let out = host
        .cli()
        .args(["serve", "--no-auth", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without authentication") && err.contains("toolhost token create"),
        "{err}"
    );
}

#[tokio::test]
async fn without_auth_on_loopback_everyone_is_the_default_tenant() {
    let host = TestHost::new(&["hello"], "");
    let server = Server::start_on(host, &["--no-auth"]);
    let c = Client::new(&server, None);
    let (s, v) = c.get("/v1/whoami").await;
    assert_eq!((s, &v["tenant"]), (200, &json!("default")), "{v}");
    let (s, run) = c
        .post(
            "/v1/runs",
            json!({"workflow": "hello", "params": {"name": "api"}}),
        )
        .await;
    assert_eq!(s, 202, "{run}");
    let view = c.wait(run["run_id"].as_str().unwrap()).await;
    assert_eq!(view["status"], "succeeded");
    assert_eq!(view["summary"]["greeting"], "hello, api!", "{view}");
    let (s, ready) = c.get("/readyz").await;
    assert_eq!(s, 200, "{ready}");
    assert_eq!(ready["checks"]["toolbox"]["ok"], true);
}

#[tokio::test]
async fn rate_limits_and_quotas_answer_429_with_retry_after() {
    let server = Server::start(
        &["probe"],
        "[serve.limits]\nrequests_per_second = 0.5\nburst = 5\nconcurrent_runs = 1\nupload_mib_per_day = 1",
    );
    let c = Client::new(&server, Some(&server.token("team-a", "submitter")));
    let other = Client::new(&server, Some(&server.token("team-a", "submitter")));

    // One run at a time per token.
    let (s, run) = c
        .post(
            "/v1/runs",
            json!({"workflow": "probe", "params": {"actions": [{"op": "sleep", "ms": 60000}]}}),
        )
        .await;
    assert_eq!(s, 202, "{run}");
    let resp = c
        .req(reqwest::Method::POST, "/v1/runs")
        .json(&json!({"workflow": "probe", "params": {"actions": []}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["detail"].as_str().unwrap().contains("concurrent_runs"),
        "{v}"
    );

    // A day's upload quota (1 MiB): an upload past it is refused while it streams.
    let big: Vec<u8> = tar_gz(&[("a", "x")])
        .into_iter()
        .chain(std::iter::repeat_n(0u8, 3 << 19))
        .collect();
    let (s, v) = other.upload(big).await;
    assert_eq!(s, 429, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("upload_mib_per_day"),
        "{v}"
    );

    // Requests: a burst of 5, then 0.5 per second.
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..4 {
        let resp = c
            .req(reqwest::Method::GET, "/v1/workflows")
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
        if resp.status().as_u16() == 429 {
            retry_after = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
        }
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(
        matches!(retry_after.as_deref(), Some("1" | "2")),
        "the next request at 0.5/s is 1 or 2 s away: {retry_after:?}"
    );
    let (s, _) = other.get("/v1/workflows").await;
    assert_eq!(s, 200, "the limit is per token");
    let id = run["run_id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (s, _) = c.post(&format!("/v1/runs/{id}/cancel"), json!({})).await;
    assert_eq!(s, 202);
}

#[tokio::test]
async fn batch_starts_each_entry_on_its_own_and_the_audit_log_records_it() {
    let server = Server::start(&["hello"], "");
    let token = server.token("team-a", "submitter");
    let c = Client::new(&server, Some(&token));
    let (s, v) = c
        .post(
            "/v1/runs/batch",
            json!({"runs": [
                {"workflow": "hello", "params": {"name": "one"}},
                {"workflow": "hello", "params": {"name": 2}},
                {"workflow": "nope"},
                {"workflow": "hello", "params": {"name": "three"}},
            ]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let results = v["results"].as_array().unwrap();
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [202, 422, 404, 202], "{v}");
    assert!(
        !results[1]["problem"]["errors"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    for r in [&results[0], &results[3]] {
        let view = c.wait(r["run"]["run_id"].as_str().unwrap()).await;
        assert_eq!(view["status"], "succeeded", "{view}");
    }

    // Unauthenticated and refused requests are audited too.
    let (s, _) = Client::new(&server, None)
        .post("/v1/runs", json!({"workflow": "hello"}))
        .await;
    assert_eq!(s, 401);
    let (s, _) = c
        .post("/v1/runs/hello-000000000000/cancel", json!({}))
        .await;
    assert_eq!(s, 404);
    let out = server
        .host
        .cli()
        .args(["audit", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let entries: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<(&str, u64)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("token.create", 0),
            ("run.batch", 200),
            ("run.start", 401),
            ("run.cancel", 404)
        ],
        "{entries:#?}"
    );
    assert_eq!(entries[3]["object"], json!(null));
    assert!(
        entries[1]["client"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&token),
        "no secret in the audit log"
    );
    let out = server
        .host
        .cli()
        .args(["audit", "--action", "run.cancel"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 2, "a header and one entry: {text}");

    let metrics = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("toolhost_api_runs_started_total{tenant=\"team-a\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "toolhost_api_requests_total{method=\"POST\",route=\"/v1/runs/batch\",status=\"200\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("toolhost_api_request_seconds_bucket{method=\"GET\",route=\"/v1/runs/{id}\""),
        "{metrics}"
    );
}

/// The OpenAPI document is made with the router: every route in it is
/// served, and docs/API.md lists exactly the routes it has.
#[tokio::test]
async fn the_openapi_document_matches_the_routes_and_the_docs() {
    let server = Server::start(&["hello"], "");
    let c = Client::new(&server, Some(&server.token("team-a", "submitter")));
    let (s, doc) = Client::new(&server, None).get("/v1/openapi.json").await;
    assert_eq!(s, 200, "the document needs no token");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.insert(format!("{} {path}", method.to_uppercase()));
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path}"
            );
            let concrete: String = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { "x" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = c.req(m, &concrete).json(&json!({})).send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            assert_ne!(status, 405, "{method} {path} is documented but not served");
            assert!(
                !body.contains("no-such-route"),
                "{method} {path} is documented but not served: {body}"
            );
        }
    }
    // A route the server lacks answers as such (the check above can fail).
    let resp = c
        .req(reqwest::Method::GET, "/v1/runs/x/nothing")
        .send()
        .await
        .unwrap();
    assert!(resp.text().await.unwrap().contains("no-such-route"));

    let api_md = std::fs::read_to_string(toolhost_tests::repo().join("docs/API.md")).unwrap();
    let mut in_docs = std::collections::BTreeSet::new();
    for line in api_md.lines().filter(|l| l.starts_with("| `")) {
        let cell = line
            .trim_start_matches("| `")
            .split('`')
            .next()
            .unwrap_or_default();
        let Some((method, rest)) = cell.split_once(' ') else {
            continue;
        };
        if !matches!(method, "GET" | "POST" | "HEAD" | "DELETE" | "PUT") {
            continue;
        }
        in_docs.insert(format!("{method} {rest}"));
        // `HEAD /v1/targets/{sha256}`, `GET …`: the same path, another method.
        if line.contains("`, `GET …`") {
            in_docs.insert(format!("GET {rest}"));
        }
    }
    assert_eq!(
        in_docs, documented,
        "docs/API.md's route table and the served routes differ"
    );
}

/// CI through the CLI: log in, submit with --wait, --fail-on and --sarif,
/// then status, list, findings, logs, artifacts and retry, all through the
/// server, with `toolhost run`'s exit codes.
#[tokio::test]
async fn the_ci_flow_through_the_cli() {
    let server = Server::start(&["probe"], "");
    let token = server.token("team-a", "submitter");
    let home = tempfile::tempdir().unwrap();
    let creds = home.path().join("credentials.json");
    let cli = |args: &[&str]| {
        let mut c = server.host.cli();
        c.env("TOOLHOST_CREDENTIALS", &creds)
            .env_remove("TOOLHOST_SERVER")
            .env_remove("TOOLHOST_TOKEN")
            .args(args);
        c
    };
    let run = |c: &mut std::process::Command| {
        let out = c.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // A wrong token is refused and nothing is stored.
    let (code, _, err) = run(cli(&["login", "--server", &server.url]).env(
        "TOOLHOST_TOKEN",
        "thk_000000000000_wrongwrongwrongwrongwrongwrongwrong",
    ));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not valid"), "{err}");
    assert!(!creds.exists());
    let (code, out, err) =
        run(cli(&["login", "--server", &server.url]).env("TOOLHOST_TOKEN", &token));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("tenant `team-a`"), "{err}");
    assert!(
        !out.contains(&token) && !err.contains(&token),
        "the token is never printed"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let target = tempfile::tempdir().unwrap();
    std::fs::write(target.path().join("notes.txt"), "hello\n").unwrap();
    let params = home.path().join("params.json");
    std::fs::write(
        &params,
        json!({"actions": [{"op": "read", "path": "notes.txt"}, {"op": "findings", "count": 2},
            {"op": "artifact", "name": "report.txt", "data": "the report"}, {"op": "say", "message": "probe says hi"}]})
        .to_string(),
    )
    .unwrap();
    let sarif = home.path().join("out.sarif");
    let t = target.path().to_str().unwrap();
    let (code, out, err) = run(&mut cli(&[
        "submit",
        "probe",
        "--target",
        t,
        "--params-file",
        params.to_str().unwrap(),
        "--wait",
        "--fail-on",
        "low",
        "--sarif",
        sarif.to_str().unwrap(),
        "--label",
        "ci=yes",
    ]));
    assert_eq!(code, 1, "findings at --fail-on give 1: {out}{err}");
    assert!(out.contains("probe 0.1.0 succeeded"), "{out}");
    let doc: Value = serde_json::from_slice(&std::fs::read(&sarif).unwrap()).unwrap();
    assert_valid_sarif(&doc);
    assert_eq!(doc["runs"][0]["results"].as_array().unwrap().len(), 2);

    let (code, out, _) = run(&mut cli(&["list", "--json"]));
    assert_eq!(code, 0);
    let runs: Value = serde_json::from_str(&out).unwrap();
    let id = runs[0]["run_id"].as_str().unwrap().to_string();
    assert_eq!(runs[0]["labels"]["ci"], "yes");
    let (code, out, _) = run(&mut cli(&["status", &id]));
    assert_eq!(code, 0);
    assert!(out.contains("succeeded"), "{out}");
    let (_, out, _) = run(&mut cli(&["findings", &id, "--format", "json"]));
    let findings: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(findings.as_array().unwrap().len(), 2);
    let (_, out, _) = run(&mut cli(&["logs", &id]));
    assert!(out.contains("probe says hi"), "{out}");
    let dl = home.path().join("artifacts");
    let (code, _, err) = run(&mut cli(&["artifacts", &id, "--out", dl.to_str().unwrap()]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(dl.join("report.txt")).unwrap(),
        "the report"
    );
    let (code, out, err) = run(&mut cli(&["retry", &id, "--wait"]));
    assert_eq!(code, 0, "no --fail-on: 0: {out}{err}");
    let (_, out, _) = run(&mut cli(&["list", "--json"]));
    let runs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(runs[0]["retry_of"], id.as_str());

    // A failing run exits 3; a submit with bad parameters 2, before any upload.
    std::fs::write(
        &params,
        json!({"actions": [{"op": "fail", "message": "broken on purpose"}]}).to_string(),
    )
    .unwrap();
    let (code, out, _) = run(&mut cli(&[
        "submit",
        "probe",
        "--target",
        t,
        "--params-file",
        params.to_str().unwrap(),
        "--wait",
    ]));
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("broken on purpose"), "{out}");
    let (code, _, err) = run(&mut cli(&[
        "submit", "probe", "--target", t, "-p", "nope=1",
    ]));
    assert_eq!(code, 2, "{err}");

    // A dead server is named as such.
    let (code, _, err) = run(cli(&["list"])
        .env("TOOLHOST_SERVER", "http://127.0.0.1:9")
        .env("TOOLHOST_TOKEN", &token));
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot reach the server at http://127.0.0.1:9"),
        "{err}"
    );
    let (code, _, _) = run(&mut cli(&["logout"]));
    assert_eq!(code, 0);
    assert!(!creds.exists());
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A 2 GiB upload streams through the server: its memory stays bounded,
/// the target is stored whole, and its digest is that of the bytes sent.
#[tokio::test]
async fn a_multi_gib_upload_streams_with_bounded_memory() {
    let server = Server::start(&["probe"], "max_upload_mib = 4096");
    let c = Client::new(&server, Some(&server.token("team-a", "submitter")));
    let before = peak_rss_kib(server.child.id());
    const SIZE: u64 = 2 << 30;
    let mut header = tar::Header::new_gnu();
    header.set_path("big.bin").unwrap();
    header.set_size(SIZE);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let head = header.as_bytes().to_vec();
    let chunk = vec![0u8; 1 << 20];
    let chunks = (SIZE >> 20) as usize;
    // Generated as it is sent: the client holds 1 MiB at a time too.
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut hasher, &head);
    for _ in 0..chunks {
        sha2::Digest::update(&mut hasher, &chunk);
    }
    sha2::Digest::update(&mut hasher, [0u8; 1024]);
    let expected = hex::encode(sha2::Digest::finalize(hasher));
    let body = futures::stream::iter(
        std::iter::once(head)
            .chain(std::iter::repeat_n(chunk, chunks))
            .chain(std::iter::once(vec![0u8; 1024]))
            .map(Ok::<_, std::io::Error>),
    );
    let resp = c
        .req(reqwest::Method::POST, "/v1/targets")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["sha256"], expected.as_str());
    assert_eq!(v["bytes"], SIZE + 1536);
    assert_eq!(v["unpacked_bytes"], SIZE);
    let grew_mib = (peak_rss_kib(server.child.id()) - before) / 1024;
    assert!(
        grew_mib < 64,
        "the server's peak memory grew by {grew_mib} MiB for a 2 GiB upload"
    );
    let tree = server
        .api_dir()
        .join(format!("tenants/team-a/targets/{expected}/tree/big.bin"));
    assert_eq!(std::fs::metadata(tree).unwrap().len(), SIZE);
}

/// `[serve.tls]` turns the server into an HTTPS one (rustls).
#[tokio::test]
async fn tls_is_one_config_section_away() {
    let dir = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert_pem = certified.cert.pem();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = Server::start(
        &["hello"],
        &format!(
            "[serve.tls]\ncert = \"{}\"\nkey = \"{}\"",
            cert.display(),
            key.display()
        ),
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let token = server.token("team-a", "viewer");
    let resp = https
        .get(format!("{}/v1/workflows", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let plain = server.url.replace("https://", "http://");
    let answer = reqwest::get(format!("{plain}/healthz")).await;
    assert!(
        answer.is_err() || !answer.unwrap().status().is_success(),
        "no plain HTTP on a TLS port"
    );

    // A key that is not one is refused at start with the file named.
    std::fs::write(&key, "not a key").unwrap();
    let host = TestHost::with_config(&["hello"], "", |text| {
        format!(
            "{text}\n[serve.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        )
    });
    let out = host
        .cli()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[serve.tls]") && err.contains("key.pem"),
        "{err}"
    );
}
