//! Distributed mode end to end: real Temporal dev server, real S3 (Garage),
//! real `toolhost host` processes, driven through the `toolhost` CLI and the
//! stock `temporal` CLI. Each test uses its own task queue prefix and key
//! prefix, so tests share the servers without seeing each other's runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use toolhost_tests::services::{self, Env};
use toolhost_tests::{TEST_VERTICAL, component, fixture, toolhost_bin};

/// A set of hosts and a client sharing one task queue prefix.
struct Cluster {
    dir: tempfile::TempDir,
    prefix: String,
    env: Env,
    vertical_toml: String,
}

/// A `toolhost host` child process.
struct Host {
    child: Option<Child>,
    name: String,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    env: Env,
    /// Variables set for this host only (e.g. a fake `HOME`).
    extra_env: Vec<(String, String)>,
}

fn free_port() -> u16 {
    devservices::free_port().expect("free port")
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

impl Cluster {
    fn new(name: &str) -> Self {
        Self::with_env(name, services::shared().clone())
    }

    fn with_env(name: &str, env: Env) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        Cluster {
            dir,
            prefix: format!("t{name}-{suffix}"),
            env,
            vertical_toml: TEST_VERTICAL.to_string(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// The config of host `name` (or of the client, `name = "client"`).
    fn config(&self, name: &str, vertical: &str, port: u16) -> PathBuf {
        let default: String = toolhost::config::DEFAULT_CONFIG
            .lines()
            .filter(|l| !l.starts_with("toolbox") && !l.starts_with("data_dir"))
            .collect::<Vec<_>>()
            .join("\n");
        let text = format!(
            r#"toolbox = "toolbox-{name}"
data_dir = "data-{name}"
work_dir = "work-{name}"
{default}
{vertical_toml}
[host]
vertical = "{vertical}"
listen = "127.0.0.1:{port}"
[temporal]
host_id = "{name}"
task_queue_prefix = "{prefix}"
heartbeat_timeout_secs = 3
[storage.s3]
bucket = "{bucket}"
prefix = "{prefix}"
"#,
            vertical_toml = self.vertical_toml,
            prefix = self.prefix,
            bucket = self.env.s3_bucket,
        );
        let path = self.path(&format!("{name}.toml"));
        std::fs::write(&path, text).expect("write config");
        std::fs::create_dir_all(self.path(&format!("toolbox-{name}"))).expect("toolbox");
        path
    }

    /// Starts host `name` of `vertical` with `components` in its toolbox.
    fn host(&self, name: &str, vertical: &str, components: &[&str]) -> Host {
        self.host_with_env(name, vertical, components, &[])
    }

    /// As [`Cluster::host`], with `extra_env` set for the host process.
    fn host_with_env(
        &self,
        name: &str,
        vertical: &str,
        components: &[&str],
        extra_env: &[(&str, &str)],
    ) -> Host {
        let port = free_port();
        let config = self.config(name, vertical, port);
        for c in components {
            let dst = self.path(&format!("toolbox-{name}/{c}.wasm"));
            if !dst.exists() {
                std::fs::copy(component(c), dst).expect("copy component");
            }
        }
        let mut host = Host {
            child: None,
            name: name.to_string(),
            port,
            config,
            log: self.path(&format!("{name}.log")),
            env: self.env.clone(),
            extra_env: extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        host.start();
        host
    }

    fn client_config(&self) -> PathBuf {
        let p = self.path("client.toml");
        if !p.exists() {
            self.config("client", "test", free_port());
        }
        p
    }

    /// Runs `toolhost <args>` as a submitter.
    fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(toolhost_bin());
        cmd.arg("--config").arg(self.client_config()).args(args);
        self.env.apply_to(&mut cmd);
        cmd.output().expect("run toolhost")
    }

    /// `toolhost submit`, retried while the workflow is not yet published.
    fn submit(&self, workflow: &str, target: &Path, params: &Value, extra: &[&str]) -> Output {
        let params_file = self.path(&format!("params-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&params_file, params.to_string()).expect("params");
        let start = Instant::now();
        loop {
            let mut args = vec![
                "submit",
                workflow,
                "--target",
                target.to_str().expect("utf-8"),
                "--params-file",
                params_file.to_str().expect("utf-8"),
            ];
            args.extend_from_slice(extra);
            let out = self.cli(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("has published") && start.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(300));
                continue;
            }
            return out;
        }
    }

    /// Submits and returns the run id.
    fn start_run(&self, workflow: &str, target: &Path, params: &Value) -> String {
        let out = self.submit(workflow, target, params, &["--json"]);
        assert!(
            out.status.success(),
            "submit failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("submit --json");
        v["run_id"].as_str().expect("run_id").to_string()
    }

    /// Waits for a run and returns its record (from the blob store).
    fn wait(&self, run_id: &str) -> Value {
        let out = self.cli(&["status", run_id, "--wait", "--json"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "status --wait of {run_id}: {e}\nstdout: {stdout}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// The stock Temporal CLI.
    fn temporal(&self, args: &[&str]) -> Output {
        Command::new(&self.env.temporal_cli)
            .args(args)
            .args([
                "--address",
                self.env.temporal_host_port(),
                "--namespace",
                &self.env.temporal_namespace,
            ])
            .output()
            .expect("run temporal")
    }

    fn history(&self, run_id: &str) -> Vec<Value> {
        let out = self.temporal(&["workflow", "show", "-w", run_id, "-o", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("history json");
        v["events"].as_array().cloned().unwrap_or_default()
    }
}

impl Host {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let mut cmd = Command::new(toolhost_bin());
        cmd.arg("--config")
            .arg(&self.config)
            .arg("host")
            .env("TOOLHOST_LOG", "info,toolhost=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        self.env.apply_to(&mut cmd);
        cmd.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        self.child = Some(cmd.spawn().expect("start host"));
        let port = self.port;
        let name = self.name.clone();
        let logp = self.log.clone();
        let start = Instant::now();
        loop {
            if http_get(port, "/healthz").is_some_and(|b| b.contains("task_queues")) {
                break;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "host {name} exited ({status}):\n{}",
                    std::fs::read_to_string(&logp).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "host {name} not ready:\n{}",
                std::fs::read_to_string(&logp).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (graceful shutdown).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    fn metrics(&self) -> String {
        http_get(self.port, "/metrics").unwrap_or_default()
    }

    fn toolbox(&self) -> PathBuf {
        self.config
            .parent()
            .expect("dir")
            .join(format!("toolbox-{}", self.name))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop();
    }
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn probe(actions: Value) -> Value {
    json!({ "actions": actions })
}

fn empty_target(c: &Cluster) -> PathBuf {
    let t = c.path("target");
    std::fs::create_dir_all(&t).expect("target");
    std::fs::write(t.join("a.txt"), "hello").expect("file");
    t
}

/// Findings as comparable keys.
fn finding_keys(findings: &Value) -> Vec<String> {
    let mut keys: Vec<String> = findings
        .as_array()
        .expect("findings array")
        .iter()
        .map(|f| {
            format!(
                "{} {} {} {}",
                f["rule_id"], f["severity"], f["location"], f["fingerprint"]
            )
        })
        .collect();
    keys.sort();
    keys
}

/// 1 + 2: a submitted `security_assessment` finds what the embedded engine
/// finds on the same target, and its history has one activity per tool step.
#[tokio::test(flavor = "multi_thread")]
async fn submitted_assessment_matches_embedded_and_shows_one_activity_per_tool() {
    let target = fixture("vulnerable_crate");
    let embedded = {
        let host = toolhost_tests::TestHost::new(&["security_assessment"], "");
        let engine = host.engine().await;
        toolhost_tests::run(&engine, "security_assessment", &target, json!({})).await
    };
    assert!(!embedded.findings.is_empty());

    let c = Cluster::new("assess");
    let _h = c.host("h1", "rust", &["security_assessment"]);
    let sarif = c.path("out.sarif");
    let out = c.submit(
        "security_assessment",
        &target,
        &json!({}),
        &[
            "--wait",
            "--json",
            "--sarif",
            sarif.to_str().expect("utf-8"),
        ],
    );
    assert!(
        out.status.success(),
        "submit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: Value = serde_json::from_slice(&out.stdout).expect("record");
    assert_eq!(record["status"], "succeeded", "{record:#}");
    assert_eq!(
        finding_keys(&record["findings"]),
        finding_keys(&serde_json::to_value(&embedded.findings).expect("json")),
        "distributed and embedded findings differ"
    );
    // The SARIF written by submit is valid.
    let doc: Value = serde_json::from_slice(&std::fs::read(&sarif).expect("sarif")).expect("json");
    toolhost_tests::assert_valid_sarif(&doc);

    // One `tools.run` activity per tool invocation of the embedded run.
    let run_id = record["run_id"].as_str().expect("run id");
    let tool_steps = c
        .history(run_id)
        .iter()
        .filter(|e| {
            e["activityTaskScheduledEventAttributes"]["activityType"]["name"] == "tools.run"
        })
        .count();
    let log = c.cli(&["logs", run_id]);
    let tool_lines = String::from_utf8_lossy(&log.stdout)
        .lines()
        .filter(|l| l.contains(" tool `"))
        // The fetch step's egress audit is a line of its own.
        .filter(|l| !l.contains("` reached ") && !l.contains("refused egress"))
        .count();
    assert!(tool_steps > 0);
    assert_eq!(tool_steps, tool_lines, "one activity per tool step");
}

/// 3: kill -9 the host mid-run and start it again: the run completes and no
/// completed tool step runs twice.
#[test]
fn killed_host_resumes_without_rerunning_completed_steps() {
    let mut c = Cluster::new("kill");
    let counter = c.path("counter");
    std::fs::create_dir_all(&counter).expect("counter dir");
    let log = counter.join("steps.log");
    c.vertical_toml = c.vertical_toml.replace(
        "[verticals.test.tools.sh]\ncommand = \"sh\"\n",
        &format!(
            "[verticals.test.tools.sh]\ncommand = \"sh\"\nwrite_paths = [\"{}\"]\n",
            counter.display()
        ),
    );
    let mut host = c.host("h1", "test", &["probe"]);
    let steps: Vec<Value> = (0..6)
        .map(|i| {
            json!({"op": "tool", "tool": "sh", "args": ["-c", format!("echo step-{i} >> {}; sleep 1", log.display())]})
        })
        .collect();
    let run_id = c.start_run("probe", &empty_target(&c), &probe(Value::Array(steps)));
    let lines = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    wait_until("two steps", Duration::from_secs(60), || lines().len() >= 2);
    host.kill9();
    let at_kill = lines();
    // A workspace left behind by a run that Temporal does not know (as one
    // that ended elsewhere while this host was down): the restarted host
    // sweeps it, and keeps the live run's.
    let work = c.path("work-h1");
    assert!(
        work.join(&run_id).join(".prepared.json").is_file(),
        "the run's workspace is not on its host"
    );
    let stale = work.join(format!(
        "probe-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir_all(stale.join("workspace")).expect("stale workspace");
    std::fs::write(stale.join(".prepared.json"), "{}").expect("marker");
    std::thread::sleep(Duration::from_secs(1));
    host.start();
    wait_until("stale workspace swept", Duration::from_secs(30), || {
        !stale.exists()
    });
    let record = c.wait(&run_id);
    assert_eq!(record["status"], "succeeded", "{record:#}");
    assert!(
        !work.join(&run_id).exists(),
        "publish left the run's workspace behind"
    );
    let all = lines();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for l in &all {
        *counts.entry(l.clone()).or_default() += 1;
    }
    for i in 0..6 {
        assert!(
            counts.contains_key(&format!("step-{i}")),
            "step-{i} never ran: {all:?}"
        );
    }
    // Only the step in flight at the kill may have run twice.
    let twice: Vec<_> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k.clone())
        .collect();
    assert!(twice.len() <= 1, "steps ran twice: {twice:?} ({all:?})");
    if let Some(t) = twice.first() {
        assert_eq!(
            Some(t),
            at_kill.last(),
            "a completed step ran again: {all:?}"
        );
    }
}

/// 4: replacing the component while a run is in flight: the run finishes on
/// its pinned digest (even replayed on a restarted host that no longer has
/// that file), and a new run uses the new version.
#[test]
fn inflight_run_keeps_its_pinned_digest_across_replace_and_restart() {
    let c = Cluster::new("pin");
    let mut host = c.host("h1", "test", &["probe"]);
    let old = toolhost::toolbox::digest(&std::fs::read(component("probe")).expect("probe"));
    let run_id = c.start_run(
        "probe",
        &empty_target(&c),
        &probe(
            json!([{"op": "tool", "tool": "sleep", "args": ["3"]}, {"op": "tool", "tool": "true"}]),
        ),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let new_bytes = toolhost_tests::with_custom_section(
        &std::fs::read(component("probe")).expect("probe"),
        "version-2",
        b"2",
    );
    let new = toolhost::toolbox::digest(&new_bytes);
    toolhost_tests::publish(&host.toolbox(), "probe.wasm", &new_bytes);
    // Restart: the run is replayed here, where only the new file exists.
    host.kill9();
    host.start();
    let record = c.wait(&run_id);
    assert_eq!(record["status"], "succeeded", "{record:#}");
    assert_eq!(record["component_digest"], old.as_str());

    let start = Instant::now();
    loop {
        let run2 = c.start_run("probe", &empty_target(&c), &probe(json!([])));
        let r2 = c.wait(&run2);
        if r2["component_digest"] == new.as_str() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "new runs never used the new version"
        );
    }
}

/// 5: two hosts of one vertical share 20 concurrent submissions; every run
/// completes once and its results are in S3.
#[test]
fn two_hosts_share_twenty_runs() {
    let c = Cluster::new("share");
    let h1 = c.host("h1", "test", &["probe"]);
    let h2 = c.host("h2", "test", &["probe"]);
    let target = empty_target(&c);
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let c = &c;
                let target = &target;
                s.spawn(move || {
                    c.start_run(
                        "probe",
                        target,
                        &probe(json!([{"op": "tool", "tool": "sh", "args": ["-c", format!("echo run-{i}")]}, {"op": "sleep", "ms": 200}])),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("submit thread"))
            .collect()
    });
    for id in &ids {
        let record = c.wait(id);
        assert_eq!(record["status"], "succeeded", "{record:#}");
        let completed = c
            .history(id)
            .iter()
            .filter(|e| e.get("workflowExecutionCompletedEventAttributes").is_some())
            .count();
        assert_eq!(completed, 1, "{id} completed {completed} times");
    }
    // Results of all 20 are in the blob store.
    let out = c.cli(&["list", "--status", "completed", "--json", "--limit", "100"]);
    let listed: Value = serde_json::from_slice(&out.stdout).expect("list json");
    assert_eq!(listed.as_array().map(Vec::len), Some(20), "{listed:#}");
    for id in &ids {
        let out = c.cli(&["findings", id, "--format", "json"]);
        assert!(
            out.status.success(),
            "results of {id} missing: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Both hosts did work.
    for h in [&h1, &h2] {
        let steps = metric(&h.metrics(), "toolhost_step_duration_seconds_count");
        assert!(
            steps > 0.0,
            "host {} executed no step:\n{}",
            h.name,
            h.metrics()
        );
    }
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> usize {
    toolhost_tests::processes(|c| {
        String::from_utf8_lossy(c)
            .replace('\0', " ")
            .contains(needle)
    })
}

/// 6: cancelling a long run kills its tool within 5 s and ends it cancelled.
#[test]
fn cancel_kills_the_tool_and_ends_cancelled() {
    let c = Cluster::new("cancel");
    let _h = c.host("h1", "test", &["probe"]);
    let needle = format!("sleep 5{}.5", std::process::id() % 10);
    let secs = needle.trim_start_matches("sleep ").to_string();
    let run_id = c.start_run(
        "probe",
        &empty_target(&c),
        &probe(json!([{"op": "tool", "tool": "sleep", "args": [secs]}])),
    );
    wait_until("the tool to start", Duration::from_secs(30), || {
        processes_with(&needle) > 0
    });
    let out = c.cli(&["cancel", &run_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = Instant::now();
    wait_until("the tool to be killed", Duration::from_secs(5), || {
        processes_with(&needle) == 0
    });
    eprintln!("tool gone {} ms after cancel", t.elapsed().as_millis());
    let out = c.cli(&["status", &run_id, "--wait", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: Value = serde_json::from_slice(&out.stdout).expect("record");
    assert_eq!(record["status"], "cancelled", "{record:#}");
    let state = c.cli(&["status", &run_id, "--json"]);
    let state: Value = serde_json::from_slice(&state.stdout).expect("status");
    assert_eq!(state["run"]["status"], "cancelled");
}

/// 7: a run started (with the stock `temporal` CLI) for a vertical no host
/// serves stays queued, `toolhost status` says so, and a host of that
/// vertical completes it when it starts.
#[test]
fn run_without_a_host_stays_queued_until_one_starts() {
    let c = Cluster::new("queued");
    let run_id = format!("probe-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let queue = format!("{}-test", c.prefix);
    let input = json!({"params": {"actions": [{"op": "tool", "tool": "true"}]}}).to_string();
    let out = c.temporal(&[
        "workflow",
        "start",
        "--type",
        "probe",
        "--task-queue",
        &queue,
        "--workflow-id",
        &run_id,
        "--input",
        &input,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_secs(2));
    let out = c.cli(&["status", &run_id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("running"), "{text}");
    assert!(text.contains("no host is polling"), "{text}");

    let _h = c.host("h1", "test", &["probe"]);
    let out = c.cli(&["status", &run_id, "--wait", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: Value = serde_json::from_slice(&out.stdout).expect("record");
    assert_eq!(record["status"], "succeeded", "{record:#}");
}

/// 8: S3 down during a run: the steps that need it retry, and the run
/// completes once S3 is back.
#[test]
fn s3_outage_during_a_step_is_retried() {
    let gdir = tempfile::tempdir().expect("tempdir");
    let mut garage = services::private_garage(gdir.path());
    let c = Cluster::with_env("s3down", services::shared().with_s3(&garage));
    let _h = c.host("h1", "test", &["probe"]);
    let run_id = c.start_run(
        "probe",
        &empty_target(&c),
        &probe(json!([
            {"op": "tool", "tool": "sleep", "args": ["3"]},
            {"op": "artifact", "name": "after-outage.txt", "data": "still here"},
        ])),
    );
    // The target is uploaded: S3 goes away while the first step runs.
    garage.kill().expect("kill garage");
    assert!(!garage.is_running());
    std::thread::sleep(Duration::from_secs(8));
    let state = c.cli(&["status", &run_id, "--json"]);
    let state: Value = serde_json::from_slice(&state.stdout).expect("status json");
    assert_eq!(state["run"]["status"], "running", "{state:#}");
    garage.start().expect("restart garage");
    let record = c.wait(&run_id);
    assert_eq!(record["status"], "succeeded", "{record:#}");
    assert_eq!(record["artifacts"], json!(["after-outage.txt"]));
    let out_dir = c.path("artifacts");
    let out = c.cli(&[
        "artifacts",
        &run_id,
        "--out",
        out_dir.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("after-outage.txt")).expect("artifact"),
        "still here"
    );
}

/// `toolhost logs --follow` prints the live log of a running run, then the
/// rest once it ends, each line once.
#[test]
fn logs_follow_prints_each_line_once() {
    let c = Cluster::new("logs");
    let _h = c.host("h1", "test", &["probe"]);
    let run_id = c.start_run(
        "probe",
        &empty_target(&c),
        &probe(json!([
            {"op": "tool", "tool": "true"},
            {"op": "tool", "tool": "sleep", "args": ["3"]},
            {"op": "log", "count": 2, "size": 8},
        ])),
    );
    let out = c.cli(&["logs", &run_id, "--follow"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for line in ["tool `true` exit 0", "tool `sleep` exit 0"] {
        assert_eq!(
            text.matches(line).count(),
            1,
            "`{line}` not exactly once in:\n{text}"
        );
    }
    let final_log = c.cli(&["logs", &run_id]);
    assert_eq!(
        String::from_utf8_lossy(&final_log.stdout).lines().count(),
        text.lines().count(),
        "follow printed a different log than the final one"
    );
}

/// Identities of the workers that took the workflow tasks and activities of
/// `run_id` (`toolhost@<host id>`).
fn workers_of(c: &Cluster, run_id: &str) -> std::collections::BTreeSet<String> {
    c.history(run_id)
        .iter()
        .filter_map(|e| {
            e["workflowTaskStartedEventAttributes"]["identity"]
                .as_str()
                .or_else(|| e["activityTaskStartedEventAttributes"]["identity"].as_str())
                .map(str::to_string)
        })
        .collect()
}

/// A rust host and a python host on one Temporal server split the work by
/// vertical: `python_sast` runs only on the python host, a rust workflow
/// only on the rust host, and `toolhost workflows` shows both verticals with
/// the hosts that serve them. The rust host's toolbox also holds
/// `python_sast` (a shared toolbox): it neither publishes nor runs it.
#[test]
fn hosts_of_two_verticals_split_the_work() {
    let c = Cluster::new("verticals");
    let _rust = c.host("rust1", "rust", &["hello", "python_sast", "cargo_fuzzing"]);
    let _py = c.host("py1", "python", &["python_sast", "cargo_fuzzing"]);

    let out = c.submit(
        "python_sast",
        &fixture("vulnerable_python"),
        &json!({}),
        &["--wait", "--json"],
    );
    assert!(
        out.status.success(),
        "submit python_sast: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: Value = serde_json::from_slice(&out.stdout).expect("record");
    assert_eq!(record["status"], "succeeded", "{record:#}");
    let rules: Vec<&str> = record["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["rule_id"].as_str())
        .collect();
    for planted in ["bandit/B602", "bandit/B301", "secrets/aws-access-key"] {
        assert!(rules.contains(&planted), "{planted} not in {rules:?}");
    }
    let py_run = record["run_id"].as_str().expect("run id");
    assert_eq!(
        workers_of(&c, py_run),
        ["toolhost@py1".to_string()].into(),
        "python_sast ran outside the python host"
    );

    let out = c.submit(
        "hello",
        &empty_target(&c),
        &json!({"in_activity": true}),
        &["--wait", "--json"],
    );
    assert!(
        out.status.success(),
        "submit hello: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: Value = serde_json::from_slice(&out.stdout).expect("record");
    assert_eq!(record["summary"]["greeting"], "hello, world!", "{record:#}");
    let rust_run = record["run_id"].as_str().expect("run id");
    assert_eq!(
        workers_of(&c, rust_run),
        ["toolhost@rust1".to_string()].into(),
        "hello ran outside the rust host"
    );

    // A fuzzing campaign runs on the rust host only; its crash input is
    // an artifact in the blob store.
    let out = c.submit(
        "cargo_fuzzing",
        &fixture("fuzz_crate"),
        &json!({"target": "parse", "budget_secs": 60}),
        &["--wait", "--json"],
    );
    assert!(
        out.status.success(),
        "submit cargo_fuzzing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: Value = serde_json::from_slice(&out.stdout).expect("record");
    assert_eq!(record["status"], "succeeded", "{record:#}");
    let findings = record["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0]["rule_id"], "fuzzing/heap-buffer-overflow");
    let fuzz_run = record["run_id"].as_str().expect("run id");
    assert_eq!(
        workers_of(&c, fuzz_run),
        ["toolhost@rust1".to_string()].into(),
        "cargo_fuzzing ran outside the rust host"
    );
    let got = c.path("fuzz-artifacts");
    let out = c.cli(&["artifacts", fuzz_run, "--out", got.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = std::fs::read_dir(&got)
        .expect("artifacts downloaded")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let crash = names
        .iter()
        .find(|n| n.starts_with("parse-crash-"))
        .unwrap_or_else(|| panic!("no crash input in {names:?}"));
    assert!(
        findings[0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains(crash.as_str()),
        "the finding names its input"
    );

    let out = c.cli(&["workflows", "--json"]);
    assert!(
        out.status.success(),
        "workflows: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).expect("workflows --json");
    assert_eq!(
        listed["verticals"]["python"]["hosts"],
        json!(["py1"]),
        "{listed:#}"
    );
    assert_eq!(
        listed["verticals"]["rust"]["hosts"],
        json!(["rust1"]),
        "{listed:#}"
    );
    let vertical_of = |name: &str| {
        listed["workflows"]
            .as_array()
            .expect("workflows")
            .iter()
            .find(|w| w["name"] == name)
            .map(|w| w["vertical"].clone())
    };
    assert_eq!(vertical_of("python_sast"), Some(json!("python")));
    assert_eq!(vertical_of("hello"), Some(json!("rust")));
    let table = c.cli(&["workflows"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("python_sast") && l.contains("python") && l.contains("py1")),
        "{text}"
    );

    // Started on the wrong vertical's queue with the stock CLI, pinned to
    // the published version, the run fails and says where it belongs.
    let digest = listed["workflows"]
        .as_array()
        .expect("workflows")
        .iter()
        .find(|w| w["name"] == "python_sast")
        .and_then(|w| w["digest"].as_str())
        .expect("python_sast digest")
        .to_string();
    let run_id = format!(
        "python_sast-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let out = c.temporal(&[
        "workflow",
        "start",
        "--type",
        "python_sast",
        "--task-queue",
        &format!("{}-rust", c.prefix),
        "--workflow-id",
        &run_id,
        "--input",
        &json!({ "digest": digest }).to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = c.cli(&["status", &run_id, "--wait", "--json"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("\"failed\"")
            && text.contains("is for vertical `python`, but this host serves vertical `rust`"),
        "{text}"
    );
}

/// A fuzzing campaign in distributed mode: its live statistics travel in
/// the step's heartbeats (shown by `status`), its corpus is checkpointed to
/// the blob store, and after its host is killed and restarted the retried
/// step resumes from that corpus.
#[test]
fn fuzzing_streams_progress_in_heartbeats_and_resumes_from_its_corpus_after_a_restart() {
    let c = Cluster::new("fuzz");
    let mut host = c.host("r1", "rust", &["cargo_fuzzing"]);
    let submitted = Instant::now();
    let run_id = c.start_run(
        "cargo_fuzzing",
        &fixture("fuzz_crate"),
        &json!({"target": "checksum", "budget_secs": 20, "checkpoint_secs": 5}),
    );
    let live_execs = || -> u64 {
        let out = c.cli(&["status", &run_id, "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v["run"]["pending_steps"]
            .as_array()
            .and_then(|steps| steps.iter().find_map(|s| s["progress"]["execs"].as_u64()))
            .unwrap_or(0)
    };
    // The fuzz build takes a while on a cold cache.
    wait_until(
        "fuzzing statistics in a heartbeat",
        Duration::from_secs(300),
        || live_execs() > 0,
    );
    eprintln!(
        "first fuzzing statistics {} ms after submit",
        submitted.elapsed().as_millis()
    );
    let first = live_execs();
    std::thread::sleep(Duration::from_secs(2));
    assert!(live_execs() > first, "the heartbeat statistics move");
    // A corpus checkpoint reaches the blob store.
    let got = c.path("checkpoint");
    wait_until("a corpus checkpoint", Duration::from_secs(30), || {
        let _ = c.cli(&["artifacts", &run_id, "--out", got.to_str().expect("utf-8")]);
        got.join("corpus-checksum.pack").is_file()
    });
    let text = String::from_utf8_lossy(&c.cli(&["status", &run_id]).stdout).into_owned();
    assert!(
        text.contains("execs=") && text.contains("last heartbeat"),
        "{text}"
    );

    host.kill9();
    // Only the blob store's copy is left: the corpus in the workspace and
    // the host's local copy of the checkpoint are gone.
    let scratch = c.path("work-r1").join(&run_id);
    let corpus = scratch.join("workspace/fuzz/corpus/checksum");
    assert!(corpus.is_dir(), "no corpus at {}", corpus.display());
    std::fs::remove_dir_all(&corpus).expect("remove the corpus");
    let _ = std::fs::remove_file(scratch.join("artifacts/corpus-checksum.pack"));
    std::thread::sleep(Duration::from_secs(1));
    host.start();
    let record = c.wait(&run_id);
    assert_eq!(record["status"], "succeeded", "{record:#}");
    let target = &record["summary"]["targets"][0];
    assert!(
        target["resumed_inputs"].as_u64().unwrap_or(0) > 0,
        "the retried step did not resume from the checkpoint: {target}"
    );
    let log = String::from_utf8_lossy(&c.cli(&["logs", &run_id]).stdout).into_owned();
    assert!(log.contains("resumed from"), "{log}");
}

/// Issue item: the README's distributed commands, run as written (the hosts
/// of `examples/distributed/` and `submit` with them, against the dev
/// services): the findings are the embedded run's. The example configs used
/// to put work directories in this checkout, where cargo reads the
/// project's `.cargo/config.toml`, which the sandbox refuses, so clippy's
/// findings went missing while the summary said it ran.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_distributed_commands_give_the_embedded_findings() {
    let repo = toolhost_tests::repo();
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("README");
    let section = readme
        .split("## Distributed mode")
        .nth(1)
        .and_then(|s| s.split("```sh").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("the README has a distributed-mode block");
    let commands: Vec<String> = section
        .lines()
        .map(|l| l.split("  #").next().unwrap_or(l).trim().to_string())
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ")
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| l.starts_with("target/debug/toolhost"))
        .collect();
    let hosts: Vec<&String> = commands.iter().filter(|c| c.contains(" host ")).collect();
    assert_eq!(hosts.len(), 3, "{commands:#?}");
    let assess = commands
        .iter()
        .find(|c| c.contains("submit security_assessment"))
        .expect("the README submits security_assessment");

    // The plugins the README builds into toolbox/.
    let toolbox = repo.join("toolbox");
    std::fs::create_dir_all(&toolbox).unwrap();
    for c in [
        "security_assessment",
        "python_sast",
        "cargo_fuzzing",
        "hello",
        "rust_test",
    ] {
        toolhost_tests::publish(
            &toolbox,
            &format!("{c}.wasm"),
            &std::fs::read(component(c)).unwrap(),
        );
    }
    let env = services::shared().clone();
    let shell = |line: &str| {
        let words: Vec<&str> = line.trim_end_matches('&').split_whitespace().collect();
        let mut cmd = Command::new(repo.join(words[0]));
        cmd.args(&words[1..]).current_dir(&repo);
        env.apply_to(&mut cmd);
        cmd
    };
    let logs = tempfile::tempdir().unwrap();
    let mut running: Vec<Child> = Vec::new();
    for (i, line) in hosts.iter().enumerate() {
        let log = std::fs::File::create(logs.path().join(format!("host-{i}.log"))).unwrap();
        let mut cmd = shell(line);
        cmd.stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null());
        running.push(cmd.spawn().expect("start a README host"));
    }
    struct Kill(Vec<Child>);
    impl Drop for Kill {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = Command::new("kill").arg(c.id().to_string()).status();
                let _ = c.wait();
            }
        }
    }
    let _kill = Kill(running);
    for port in [7301, 7302, 7303] {
        wait_until(
            &format!("the README host on :{port}"),
            Duration::from_secs(90),
            || http_get(port, "/healthz").is_some_and(|b| b.contains("task_queues")),
        );
    }

    // As written: it exits 1 (findings at or above high).
    let start = Instant::now();
    let out = loop {
        let out = shell(assess).output().expect("submit");
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("has published") && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        break out;
    };
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{shown}");
    let run_id = shown
        .split_whitespace()
        .find(|w| w.starts_with("security_assessment-"))
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_'))
        .expect("the run id is printed")
        .to_string();
    let config = assess.split_whitespace().nth(2).unwrap();
    let status = shell(&format!(
        "target/debug/toolhost --config {config} status {run_id} --wait --json"
    ))
    .output()
    .unwrap();
    let record: Value = serde_json::from_slice(&status.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr)
        )
    });
    assert_eq!(record["status"], "succeeded", "{record:#}");

    let embedded = {
        let host = toolhost_tests::TestHost::new(&["security_assessment"], "");
        let engine = host.engine().await;
        toolhost_tests::run(
            &engine,
            "security_assessment",
            &fixture("vulnerable_crate"),
            json!({}),
        )
        .await
    };
    assert_eq!(
        finding_keys(&record["findings"]),
        finding_keys(&serde_json::to_value(&embedded.findings).unwrap()),
        "the README's distributed run and the embedded one disagree"
    );
    assert!(
        finding_keys(&record["findings"])
            .iter()
            .any(|k| k.starts_with("\"clippy/")),
        "clippy's findings are there"
    );
}

/// The credential canaries of the hostile suite, on a distributed host
/// whose `HOME` holds them all: the probe crate's build script, run by
/// clippy on the host, reads none of them into the record, the log or the
/// SARIF stored in S3.
#[test]
fn distributed_tools_cannot_read_host_credentials() {
    use toolhost_tests::canaries::{self, FakeHome, LOCATIONS};
    let home = FakeHome::new(LOCATIONS);
    let files: Vec<PathBuf> = home.planted.iter().map(|(_, f, _)| f.clone()).collect();
    let target = canaries::probe_crate(&files);
    let c = Cluster::new("canary");
    let home_path = home.path().display().to_string();
    let _h = c.host_with_env(
        "h1",
        "rust",
        &["security_assessment"],
        &[("HOME", &home_path)],
    );
    let run_id = c.start_run("security_assessment", target.path(), &json!({}));
    let record = c.wait(&run_id);
    assert_eq!(record["status"], "failed", "{record:#}");
    let log = String::from_utf8_lossy(&c.cli(&["logs", &run_id]).stdout).into_owned();
    let sarif = String::from_utf8_lossy(&c.cli(&["findings", &run_id, "--format", "sarif"]).stdout)
        .into_owned();
    let everything = format!("{record}\n{log}\n{sarif}");
    assert!(
        everything.contains("HOSTILE-PROBE"),
        "the probe ran and its output is in the record: {everything}"
    );
    for (loc, _, canary) in &home.planted {
        assert!(
            everything.contains(&format!("DENIED ~/{}: Permission denied", loc.rel)),
            "{}: not denied in {everything}",
            loc.id
        );
        assert!(
            !everything.contains(canary.as_str()),
            "the {} canary reached the record",
            loc.id
        );
    }
}

/// Dependency fetch in distributed mode: `rust_test` on a crate whose
/// dependency is not in the host's (empty) cargo cache builds because the
/// fetch step downloaded it.
#[test]
fn distributed_runs_fetch_missing_dependencies() {
    let c = Cluster::new("fetch");
    let cache = tempfile::tempdir().unwrap();
    let _h = c.host("h1", "rust", &["rust_test"]);
    // The host's config names the cache; point it at the empty one.
    let config = c.path("h1.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "~/.cache/toolhost/cargo",
        &cache.path().join("cargo").display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    let mut h = _h;
    h.stop();
    h.start();
    let run_id = c.start_run("rust_test", &fixture("deps_crate"), &json!({}));
    let record = c.wait(&run_id);
    assert_eq!(record["status"], "succeeded", "{record:#}");
    assert_eq!(record["summary"]["passed"], 1, "{record:#}");
    assert!(
        cache.path().join("cargo/registry/cache").is_dir(),
        "the fetch filled the empty cache"
    );
}

/// Workflow code computing past the workflow-task budget fails the
/// workflow *task*, which Temporal retries; it never decides the run's
/// outcome (replay on a faster host would decide otherwise). The run ends
/// by its execution timeout, as recorded in history.
#[test]
fn an_over_budget_workflow_task_is_retried_and_never_decides_the_outcome() {
    let c = Cluster::new("budget");
    let _h = c.host("h1", "test", &["probe"]);
    let config = c.path("h1.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "heartbeat_timeout_secs = 3",
        "heartbeat_timeout_secs = 3\nworkflow_task_budget_secs = 1",
    );
    std::fs::write(&config, text).unwrap();
    let mut h = _h;
    h.stop();
    h.start();
    let run_id = format!("budget-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let input = json!({"params": {"actions": [{"op": "loop"}]}}).to_string();
    let out = c.temporal(&[
        "workflow",
        "start",
        "--type",
        "probe",
        "--task-queue",
        &format!("{}-test", c.prefix),
        "--workflow-id",
        &run_id,
        "--input",
        &input,
        "--execution-timeout",
        "20s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // While it is retried, `toolhost status` says why.
    let mut said = String::new();
    wait_until(
        "status to show the failing task",
        Duration::from_secs(30),
        || {
            let out = c.cli(&["status", &run_id]);
            said = String::from_utf8_lossy(&out.stdout).into_owned();
            said.contains("workflow task failing (attempt")
        },
    );
    assert!(said.contains("without a durable step"), "{said}");
    wait_until("the run to end", Duration::from_secs(60), || {
        let events = c.history(&run_id);
        events
            .iter()
            .any(|e| e.get("workflowExecutionTimedOutEventAttributes").is_some())
    });
    let events = c.history(&run_id);
    let failed_tasks: Vec<&Value> = events
        .iter()
        .filter_map(|e| e.get("workflowTaskFailedEventAttributes"))
        .collect();
    assert!(!failed_tasks.is_empty(), "{events:#?}");
    assert!(
        failed_tasks[0]
            .to_string()
            .contains("without a durable step"),
        "{}",
        failed_tasks[0]
    );
    assert!(
        !events.iter().any(
            |e| e.get("workflowExecutionFailedEventAttributes").is_some()
                || e.get("workflowExecutionCompletedEventAttributes").is_some()
        ),
        "the budget decided the outcome"
    );
    assert!(
        h.metrics()
            .contains("toolhost_workflow_tasks_over_budget_total"),
        "{}",
        h.metrics()
    );
}

/// `durable.now-ms` in distributed mode is the time of the current
/// workflow task, from history: it moves on across a step (the embedded
/// engine's moves with durable sleeps only, as the WIT says).
#[test]
fn workflow_time_moves_with_each_workflow_task() {
    let c = Cluster::new("clock");
    let _h = c.host("h1", "test", &["probe"]);
    let run_id = c.start_run(
        "probe",
        &empty_target(&c),
        &probe(json!([
            {"op": "clock"},
            {"op": "tool", "tool": "sleep", "args": ["1.5"]},
            {"op": "clock"},
            {"op": "clock"},
        ])),
    );
    let record = c.wait(&run_id);
    assert_eq!(record["status"], "succeeded", "{record:#}");
    let r = &record["summary"]["results"];
    let at = |i: usize| r[i]["ok"]["now_ms"].as_u64().expect("now_ms");
    assert!(
        at(2) >= at(0) + 1500,
        "time moved with the task after the step: {r}"
    );
    assert_eq!(
        at(2),
        at(3),
        "within one workflow task, time stands still: {r}"
    );
}

/// A `toolhost serve` replica over the distributed engine, stopped when
/// dropped.
struct Replica {
    child: Child,
    url: String,
    config: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cluster {
    /// The config of API replica `name`: the cluster's, with
    /// `[serve] engine = "distributed"`.
    fn replica_config(&self, name: &str) -> PathBuf {
        let path = self.config(name, "test", free_port());
        let mut text = std::fs::read_to_string(&path).expect("config");
        text.push_str("[serve]\nengine = \"distributed\"\n");
        std::fs::write(&path, text).expect("config");
        path
    }

    fn replica(&self, name: &str) -> Replica {
        let config = self.replica_config(name);
        let mut cmd = Command::new(toolhost_bin());
        cmd.arg("--config")
            .arg(&config)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        self.env.apply_to(&mut cmd);
        let mut child = cmd.spawn().expect("toolhost serve starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let label = name.to_string();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(rest) = line.split("API v1 on ").nth(1) {
                    let url = rest.split([' ', ',']).next().unwrap_or_default();
                    let _ = tx.send(url.to_string());
                }
                eprintln!("{label}: {line}");
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the replica announces its address");
        Replica { child, url, config }
    }
}

impl Replica {
    fn cli(&self, env: &Env, args: &[&str]) -> Output {
        let mut cmd = Command::new(toolhost_bin());
        cmd.arg("--config").arg(&self.config).args(args);
        env.apply_to(&mut cmd);
        cmd.output().expect("run toolhost")
    }

    fn token(&self, env: &Env, tenant: &str, role: &str) -> String {
        let out = self.cli(
            env,
            &["token", "create", "--tenant", tenant, "--role", role],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn req(&self, method: reqwest::Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token)
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self
            .req(reqwest::Method::GET, path, token)
            .send()
            .await
            .expect("GET");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// SSE events of run `id` after `last` until the stream ends, as
    /// (id, kind, data).
    async fn events(
        &self,
        id: &str,
        token: &str,
        last: Option<&str>,
    ) -> Vec<(String, String, Value)> {
        use futures::StreamExt as _;
        let mut r = self.req(
            reqwest::Method::GET,
            &format!("/v1/runs/{id}/events"),
            token,
        );
        if let Some(l) = last {
            r = r.header("Last-Event-ID", l);
        }
        let resp = r.send().await.expect("events");
        assert_eq!(resp.status().as_u16(), 200);
        let mut stream = resp.bytes_stream();
        let (mut buf, mut out) = (String::new(), Vec::new());
        let read = async {
            while let Some(chunk) = stream.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let (mut eid, mut kind, mut data) = (None, String::new(), String::new());
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            eid = Some(v.trim().to_string());
                        } else if let Some(v) = line.strip_prefix("event:") {
                            kind = v.trim().into();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.trim_start());
                        }
                    }
                    if let Some(eid) = eid {
                        out.push((
                            eid,
                            kind,
                            serde_json::from_str(&data).unwrap_or(Value::Null),
                        ));
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(180), read)
            .await
            .expect("the event stream ends when the run does");
        out
    }
}

/// Issue 13: two `toolhost serve` replicas over one Temporal and one
/// bucket hold no state of their own. A token made for one works on the
/// other, an upload through one starts a run through the other, an
/// idempotency key sent to both starts one run, events resume on the other
/// replica, a run started on one is cancelled on the other, and the
/// tenant is in Temporal's visibility and in the S3 keys.
#[tokio::test(flavor = "multi_thread")]
async fn two_api_replicas_share_tokens_targets_runs_and_events() {
    let c = Cluster::new("api");
    let _host = c.host("h1", "test", &["probe"]);
    let (a, b) = (c.replica("api-a"), c.replica("api-b"));
    let env = c.env.clone();
    let token = a.token(&env, "team-a", "submitter");
    let other = b.token(&env, "team-b", "submitter");

    // Ready names what it checked.
    let r = reqwest::get(format!("{}/readyz", b.url))
        .await
        .expect("readyz");
    let ready: Value = r.json().await.expect("json");
    for check in ["temporal", "s3", "toolbox", "tokens"] {
        assert!(ready["checks"][check].is_object(), "{ready}");
    }

    // Upload through A; B knows it, team-b does not.
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(enc);
    let mut h = tar::Header::new_gnu();
    h.set_size(6);
    h.set_mode(0o644);
    tar.append_data(&mut h, "a.txt", &b"hello\n"[..])
        .expect("tar");
    let archive = tar.into_inner().expect("tar").finish().expect("gz");
    let up = a
        .req(reqwest::Method::POST, "/v1/targets", &token)
        .body(archive)
        .send()
        .await
        .expect("upload");
    assert_eq!(up.status().as_u16(), 201);
    let sha = up.json::<Value>().await.expect("json")["sha256"]
        .as_str()
        .expect("sha")
        .to_string();
    let head = |r: &Replica, t: &str| {
        r.req(reqwest::Method::HEAD, &format!("/v1/targets/{sha}"), t)
            .send()
    };
    assert_eq!(head(&b, &token).await.expect("head").status().as_u16(), 200);
    assert_eq!(head(&b, &other).await.expect("head").status().as_u16(), 404);

    // One run for one key, whichever replica gets it, once the hosts have
    // published the workflow.
    let body = json!({
        "workflow": "probe",
        "target": sha,
        "labels": {"ci": "yes"},
        "params": probe(json!([
            {"op": "read", "path": "a.txt"},
            {"op": "findings", "count": 2},
            {"op": "sleep", "ms": 1500},
            {"op": "artifact", "name": "out.txt", "data": "artifact bytes"},
        ])),
    });
    let key = format!("key-{}", uuid::Uuid::new_v4());
    let start = |r: &Replica| {
        r.req(reqwest::Method::POST, "/v1/runs", &token)
            .header("Idempotency-Key", key.clone())
            .json(&body)
            .send()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        let resp = start(&b).await.expect("start");
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.expect("json");
        if status == 404
            && v["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("unknown-workflow"))
        {
            assert!(Instant::now() < deadline, "probe never published: {v}");
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        assert_eq!(status, 202, "{v}");
        break v;
    };
    let id = first["run_id"].as_str().expect("run id").to_string();
    let again = start(&a).await.expect("start");
    assert_eq!(again.status().as_u16(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.expect("json")["run_id"], id);

    // Follow on A; resume on B after the first finding.
    let events = a.events(&id, &token, None).await;
    let kinds: Vec<&str> = events.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "finding").count(),
        2,
        "{kinds:?}"
    );
    let (_, last_kind, last) = events.last().expect("events");
    assert_eq!(
        (last_kind.as_str(), &last["status"]),
        ("status", &json!("succeeded")),
        "{events:?}"
    );
    let first_finding = events
        .iter()
        .position(|(_, k, _)| k == "finding")
        .expect("a finding");
    let resumed = b.events(&id, &token, Some(&events[first_finding].0)).await;
    let resumed_findings = resumed.iter().filter(|(_, k, _)| k == "finding").count();
    assert_eq!(
        resumed_findings, 1,
        "only the finding after the resume point: {resumed:?}"
    );
    assert_eq!(resumed.last().map(|(_, k, _)| k.as_str()), Some("status"));

    // Results through either replica; nothing for another tenant.
    let (s, run) = b.get(&format!("/v1/runs/{id}"), &token).await;
    assert_eq!((s, &run["status"]), (200, &json!("succeeded")), "{run}");
    let total: u64 = run["counts"]
        .as_object()
        .expect("counts")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(total, 2, "{run}");
    let sarif = a
        .req(
            reqwest::Method::GET,
            &format!("/v1/runs/{id}/findings?format=sarif"),
            &token,
        )
        .send()
        .await
        .expect("sarif")
        .bytes()
        .await
        .expect("bytes");
    toolhost_tests::assert_valid_sarif(&serde_json::from_slice(&sarif).expect("SARIF is JSON"));
    let (s, arts) = a.get(&format!("/v1/runs/{id}/artifacts"), &token).await;
    assert_eq!(s, 200);
    assert_eq!(arts["artifacts"][0]["name"], "out.txt", "{arts}");
    let art = b
        .req(
            reqwest::Method::GET,
            &format!("/v1/runs/{id}/artifacts/out.txt"),
            &token,
        )
        .send()
        .await
        .expect("artifact");
    assert_eq!(
        art.bytes().await.expect("bytes").as_ref(),
        b"artifact bytes"
    );
    let log = a
        .req(reqwest::Method::GET, &format!("/v1/runs/{id}/log"), &token)
        .send()
        .await
        .expect("log")
        .text()
        .await
        .expect("text");
    assert!(log.lines().count() > 2, "{log}");
    for r in [&a, &b] {
        let (s, _) = r.get(&format!("/v1/runs/{id}"), &other).await;
        assert_eq!(s, 404, "another tenant's run is not found");
    }

    // Listing is a visibility query on the tenant: team-a sees the run on
    // either replica (once visibility caught up), team-b never does.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, page) = b
            .get("/v1/runs?label=ci=yes&status=succeeded", &token)
            .await;
        assert_eq!(s, 200, "{page}");
        if page["runs"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["run_id"] == id))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the run never listed: {page}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (_, theirs) = a.get("/v1/runs", &other).await;
    assert!(
        !theirs["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .any(|r| r["run_id"] == id),
        "{theirs}"
    );
    let listed = c.temporal(&[
        "workflow",
        "list",
        "--query",
        &format!("ToolhostTenant = 'team-a' AND WorkflowId = '{id}'"),
        "-o",
        "json",
    ]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&id),
        "the stock CLI finds the run by tenant: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    // The results are below the tenant's prefix in the bucket.
    let closed = c
        .history(&id)
        .into_iter()
        .rev()
        .find_map(|e| {
            e["workflowExecutionCompletedEventAttributes"]["result"]["payloads"][0]["data"]
                .as_str()
                .map(str::to_string)
        })
        .expect("a completed event with a result");
    use base64::Engine as _;
    let output: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(closed)
            .expect("base64"),
    )
    .expect("result json");
    assert!(
        output["keys"]["result"]
            .as_str()
            .is_some_and(|k| k.starts_with("tenants/team-a/runs/")),
        "{output}"
    );

    // Start on one replica, cancel on the other: the host kills the tool
    // and the run ends cancelled, seen the same on both.
    let (s, long) = {
        let r = a
            .req(reqwest::Method::POST, "/v1/runs", &token)
            .json(&json!({"workflow": "probe", "params": probe(json!([{"op": "tool", "tool": "sleep", "args": ["991.5"]}]))}))
            .send()
            .await
            .expect("start");
        (r.status().as_u16(), r.json::<Value>().await.expect("json"))
    };
    assert_eq!(s, 202, "{long}");
    let long_id = long["run_id"].as_str().expect("run id").to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while processes_with("991.5") == 0 {
        assert!(Instant::now() < deadline, "the tool never started");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cancel = b
        .req(
            reqwest::Method::POST,
            &format!("/v1/runs/{long_id}/cancel"),
            &token,
        )
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancel.status().as_u16(), 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = a.get(&format!("/v1/runs/{long_id}"), &token).await;
        if v["status"] == "cancelled" {
            break;
        }
        assert!(Instant::now() < deadline, "never cancelled: {v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(processes_with("991.5"), 0, "the tool was killed");
    let again = b
        .req(
            reqwest::Method::POST,
            &format!("/v1/runs/{long_id}/cancel"),
            &token,
        )
        .send()
        .await
        .expect("cancel");
    assert_eq!(
        again.status().as_u16(),
        409,
        "an ended run cannot be cancelled"
    );

    // A revoked token stops working on both replicas (within the cache).
    let tokens = a.cli(&env, &["token", "list", "--json"]);
    let list: Value = serde_json::from_slice(&tokens.stdout).expect("token list");
    let id_of_other = list
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| t["tenant"] == "team-b")
        .expect("team-b's token")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let out = b.cli(&env, &["token", "revoke", &id_of_other]);
    assert!(out.status.success());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for r in [&a, &b] {
        assert_eq!(r.get("/v1/runs", &other).await.0, 401);
    }
    // Every replica's audited actions are in the bucket.
    let audit = a.cli(&env, &["audit", "--json"]);
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(
        text.contains("\"run.start\"") && text.contains("token.revoke"),
        "{text}"
    );
}
