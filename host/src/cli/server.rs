//! The CLI as a client of `toolhost serve`: `login` and `logout`, and the
//! API side of `submit`, `status`, `list`, `cancel`, `retry`, `findings`,
//! `logs` and `artifacts`. A login (or `$TOOLHOST_SERVER` with
//! `$TOOLHOST_TOKEN`) makes those commands go through the server; the token
//! is kept in a file only its owner can read, and is never printed.

use std::io::IsTerminal as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{CliError, exit, output};
use crate::engine::{RunRecord, RunStatus};
use crate::manifest::{Finding, Severity};

/// Where a login is kept: `$TOOLHOST_CREDENTIALS`, else
/// `$XDG_CONFIG_HOME/toolhost/credentials.json`, else
/// `~/.config/toolhost/credentials.json`.
pub fn credentials_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TOOLHOST_CREDENTIALS") {
        return Ok(PathBuf::from(p));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(x) if !x.is_empty() => PathBuf::from(x),
        _ => PathBuf::from(std::env::var_os("HOME").context(
            "HOME is not set: set TOOLHOST_CREDENTIALS to the file that should keep the login",
        )?)
        .join(".config"),
    };
    Ok(base.join("toolhost").join("credentials.json"))
}

/// A server and the token to use with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Login {
    pub server: String,
    pub token: String,
}

/// The login to use: `$TOOLHOST_SERVER` and `$TOOLHOST_TOKEN`, else the
/// credentials file, else none.
pub fn current_login() -> anyhow::Result<Option<Login>> {
    if let Ok(server) = std::env::var("TOOLHOST_SERVER")
        && !server.is_empty()
    {
        let token = std::env::var("TOOLHOST_TOKEN").unwrap_or_default();
        return Ok(Some(Login {
            server: server.trim_end_matches('/').to_string(),
            token,
        }));
    }
    let path = credentials_path()?;
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
    };
    if meta.permissions().mode() & 0o077 != 0 {
        anyhow::bail!(
            "`{}` holds a token and others may read it (mode {:o}): chmod 600 it, or log in again",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    let login: Login = serde_json::from_str(&text).with_context(|| {
        format!(
            "`{}` is not a login; run `toolhost login --server URL` again",
            path.display()
        )
    })?;
    Ok(Some(login))
}

/// A client of one server.
pub struct ApiClient {
    http: reqwest::Client,
    login: Login,
}

/// Maps an API answer that is not a success to an error with the exit code
/// `toolhost` uses for it.
async fn problem(resp: reqwest::Response, what: &str) -> anyhow::Error {
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let mut detail = body["detail"]
        .as_str()
        .map(crate::text::terminal_safe)
        .unwrap_or_else(|| format!("the server answered {status}"));
    if let Some(errors) = body["errors"].as_array() {
        for e in errors {
            detail.push_str(&format!(
                "\n  - {}",
                crate::text::terminal_safe(e.as_str().unwrap_or_default())
            ));
        }
    }
    if let Some(r) = retry {
        detail.push_str(&format!(" (retry after {r} s)"));
    }
    let hint = match status {
        401 => "; log in again with `toolhost login --server URL`",
        _ => "",
    };
    CliError::with_code(exit::USAGE, format!("{what}: {detail}{hint}"))
}

impl ApiClient {
    pub fn new(login: Login) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("cannot make an HTTP client")?;
        Ok(ApiClient { http, login })
    }

    pub fn server(&self) -> &str {
        &self.login.server
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self
            .http
            .request(method, format!("{}{path}", self.login.server));
        if self.login.token.is_empty() {
            r
        } else {
            r.bearer_auth(&self.login.token)
        }
    }

    async fn send(
        &self,
        rb: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let resp = rb.send().await.map_err(|e| {
            CliError::with_code(
                exit::USAGE,
                format!(
                    "cannot reach the server at {}: {e}; is `toolhost serve` running there?",
                    self.login.server
                ),
            )
        })?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(problem(resp, what).await)
        }
    }

    pub async fn get(&self, path: &str, what: &str) -> anyhow::Result<Value> {
        let resp = self
            .send(self.req(reqwest::Method::GET, path), what)
            .await?;
        resp.json()
            .await
            .with_context(|| format!("{what}: the answer is not JSON"))
    }

    pub async fn post(&self, path: &str, body: &Value, what: &str) -> anyhow::Result<Value> {
        let resp = self
            .send(self.req(reqwest::Method::POST, path).json(body), what)
            .await?;
        resp.json()
            .await
            .with_context(|| format!("{what}: the answer is not JSON"))
    }

    /// Packs `dir` and uploads it unless the server has it; returns its sha256.
    pub async fn upload_target(&self, dir: &Path, show: bool) -> anyhow::Result<String> {
        let meta = std::fs::metadata(dir)
            .with_context(|| format!("target `{}` cannot be read", dir.display()))?;
        if !meta.is_dir() {
            return Err(CliError::with_code(
                exit::USAGE,
                format!("target `{}` is not a directory", dir.display()),
            ));
        }
        let tmp = tempfile::Builder::new()
            .prefix("toolhost-target-")
            .suffix(".tar.zst")
            .tempfile()
            .context("cannot create a temporary file")?;
        let out = tmp.path().to_path_buf();
        let src = dir.to_path_buf();
        let info = tokio::task::spawn_blocking(move || {
            crate::storage::pack::pack_target(&src, &out, None)
        })
        .await??;
        let head = self
            .req(
                reqwest::Method::HEAD,
                &format!("/v1/targets/{}", info.sha256),
            )
            .send()
            .await;
        if head.is_ok_and(|r| r.status().is_success()) {
            if show {
                eprintln!(
                    "target already on the server (sha256 {})",
                    &info.sha256[..12]
                );
            }
            return Ok(info.sha256);
        }
        let bar = progress_bar(show, info.bytes);
        let file = tokio::fs::File::open(tmp.path())
            .await
            .context("cannot read the packed target")?;
        let b = bar.clone();
        let stream = tokio_util::io::ReaderStream::new(file).inspect(move |chunk| {
            if let Ok(c) = chunk {
                b.inc(c.len() as u64);
            }
        });
        let answer = self
            .send(
                self.req(reqwest::Method::POST, "/v1/targets")
                    .header("content-type", "application/zstd")
                    .body(reqwest::Body::wrap_stream(stream)),
                "the upload was refused",
            )
            .await?;
        bar.finish_and_clear();
        let body: Value = answer.json().await.unwrap_or_default();
        if show {
            eprintln!(
                "uploaded target: {} files, {} bytes packed (sha256 {})",
                info.files,
                info.bytes,
                &info.sha256[..12]
            );
        }
        Ok(body["sha256"].as_str().unwrap_or(&info.sha256).to_string())
    }

    /// Follows a run's events until it ends, showing progress on stderr.
    pub async fn follow(&self, run_id: &str, show: bool, print_log: bool) -> anyhow::Result<()> {
        let spinner = if show && std::io::stderr().is_terminal() {
            let s = indicatif::ProgressBar::new_spinner();
            s.enable_steady_tick(Duration::from_millis(100));
            s
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut last: Option<u64> = None;
        let mut findings = 0usize;
        // Reconnect where the stream stopped (a proxy that cut it, a
        // restart): the server resumes after the last event seen.
        for attempt in 0..10 {
            let mut rb = self.req(reqwest::Method::GET, &format!("/v1/runs/{run_id}/events"));
            if let Some(l) = last {
                rb = rb.header("Last-Event-ID", l.to_string());
            }
            let resp = match self.send(rb, "cannot follow the run").await {
                Ok(r) => r,
                Err(e) if attempt < 9 && format!("{e:#}").contains("cannot reach") => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut stream = resp.bytes_stream();
            let mut buf = String::new();
            while let Some(chunk) = stream.next().await {
                let Ok(chunk) = chunk else { break };
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let (mut id, mut kind, mut data) = (None, String::new(), String::new());
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            id = v.trim().parse().ok();
                        } else if let Some(v) = line.strip_prefix("event:") {
                            kind = v.trim().to_string();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.trim_start());
                        }
                    }
                    if id.is_some() {
                        last = id;
                    }
                    let data: Value = serde_json::from_str(&data).unwrap_or_default();
                    match kind.as_str() {
                        "finding" => findings += 1,
                        "log" if print_log => spinner.suspend(|| {
                            println!(
                                "{} {} {}",
                                data["level"].as_str().unwrap_or_default(),
                                data["source"].as_str().unwrap_or_default(),
                                crate::text::terminal_safe(
                                    data["message"].as_str().unwrap_or_default()
                                )
                            )
                        }),
                        "progress" => spinner.set_message(format!(
                            "running · {findings} findings · {}",
                            output::format_stats(&data)
                        )),
                        "status" => {
                            let status = data["status"].as_str().unwrap_or_default().to_string();
                            spinner.set_message(format!("{status} · {findings} findings"));
                            if !matches!(status.as_str(), "queued" | "running") {
                                spinner.finish_and_clear();
                                return Ok(());
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        spinner.finish_and_clear();
        anyhow::bail!(
            "lost the event stream of run {run_id}; `toolhost status {run_id}` shows where it is"
        )
    }

    /// The record of an ended run, rebuilt from its view and findings.
    pub async fn record(&self, run_id: &str) -> anyhow::Result<RunRecord> {
        let mut view = self
            .get(&format!("/v1/runs/{run_id}"), "cannot read the run")
            .await?;
        let findings = self
            .get(
                &format!("/v1/runs/{run_id}/findings"),
                "cannot read the findings",
            )
            .await?;
        view["findings"] = findings["findings"].clone();
        if let Some(label) = view.get("target_label").cloned() {
            view["target"] = label;
        }
        serde_json::from_value(view).context("the server's run view is not a run record")
    }
}

fn progress_bar(show: bool, total: u64) -> indicatif::ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "uploading [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Arguments of `toolhost login`.
#[derive(Args, Debug)]
#[command(after_help = "\
The token is read from $TOOLHOST_TOKEN, or else one line of stdin; it is checked with
the server (GET /v1/whoami) and kept in $XDG_CONFIG_HOME/toolhost/credentials.json
(mode 0600; $TOOLHOST_CREDENTIALS moves it). From then on submit, status, list, cancel,
retry, findings, logs and artifacts go through the server.

  echo \"$TOKEN\" | toolhost login --server https://toolhost.example.com")]
pub struct LoginArgs {
    /// The server's URL (http://127.0.0.1:7400).
    #[arg(long)]
    server: String,
}

pub(super) async fn login(args: LoginArgs) -> anyhow::Result<u8> {
    let server = args.server.trim_end_matches('/').to_string();
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        return Err(CliError::with_code(
            exit::USAGE,
            format!("`{server}` is not a URL like http://127.0.0.1:7400"),
        ));
    }
    let token = match std::env::var("TOOLHOST_TOKEN") {
        Ok(t) if !t.is_empty() => t,
        _ => {
            if std::io::stdin().is_terminal() {
                eprint!("token: ");
            }
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the token from stdin")?;
            line.trim().to_string()
        }
    };
    if token.is_empty() {
        return Err(CliError::with_code(
            exit::USAGE,
            "no token: set TOOLHOST_TOKEN or pass it on stdin (an operator makes one with `toolhost token create`)",
        ));
    }
    let login = Login { server, token };
    let client = ApiClient::new(login.clone())?;
    let who = client
        .get("/v1/whoami", "the server refused the token")
        .await?;
    let path = credentials_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write `{}`", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    use std::io::Write as _;
    file.write_all(serde_json::to_string_pretty(&login)?.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write `{}`", path.display()))?;
    eprintln!(
        "logged in to {} as tenant `{}` ({}); the token is in {}",
        login.server,
        who["tenant"].as_str().unwrap_or("?"),
        who["role"].as_str().unwrap_or("?"),
        path.display()
    );
    Ok(exit::OK)
}

pub(super) fn logout() -> anyhow::Result<u8> {
    let path = credentials_path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => eprintln!("logged out (removed {})", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => eprintln!("not logged in"),
        Err(e) => return Err(e).with_context(|| format!("cannot remove `{}`", path.display())),
    }
    Ok(exit::OK)
}

/// The exit code of an ended run, as `toolhost run` gives it.
pub fn exit_code(record: &RunRecord, fail_on: Option<Severity>) -> u8 {
    match record.status {
        RunStatus::Succeeded => {
            if fail_on.is_some_and(|min| record.findings.iter().any(|f| f.severity >= min)) {
                exit::FINDINGS
            } else {
                exit::OK
            }
        }
        RunStatus::Failed => exit::RUN_FAILED,
        RunStatus::TimedOut => exit::TIMED_OUT,
        RunStatus::Cancelled => exit::CANCELLED,
    }
}

/// What `submit` needs, whichever engine it goes to.
pub struct SubmitRequest<'a> {
    pub workflow: &'a str,
    pub target: &'a Path,
    pub params: &'a super::ParamArgs,
    pub labels: &'a [String],
    pub idempotency_key: Option<&'a str>,
    pub wait: bool,
    pub sarif: Option<&'a PathBuf>,
    pub fail_on: Option<Severity>,
    pub json: bool,
}

/// `toolhost submit` through the server.
pub async fn submit(client: &ApiClient, req: SubmitRequest<'_>) -> anyhow::Result<u8> {
    let wf = client
        .get(
            &format!("/v1/workflows/{}", req.workflow),
            "unknown workflow",
        )
        .await?;
    let params = req.params.build(&wf["parameters_schema"])?;
    let mut labels = serde_json::Map::new();
    for l in req.labels {
        let (k, v) = l.split_once('=').ok_or_else(|| {
            CliError::with_code(exit::USAGE, format!("label `{l}` is not KEY=VALUE"))
        })?;
        labels.insert(k.into(), json!(v));
    }
    let show = !req.json;
    let sha = client.upload_target(req.target, show).await?;
    let mut rb = client.req(reqwest::Method::POST, "/v1/runs").json(
        &json!({"workflow": req.workflow, "params": params, "target": sha, "labels": labels}),
    );
    if let Some(k) = req.idempotency_key {
        rb = rb.header("Idempotency-Key", k);
    }
    let run: Value = client
        .send(rb, "the run was refused")
        .await?
        .json()
        .await
        .context("the server's answer is not JSON")?;
    let run_id = run["run_id"].as_str().unwrap_or_default().to_string();
    if !req.wait {
        if req.json {
            println!(
                "{}",
                json!({"run_id": run_id, "workflow": req.workflow, "server": client.server()})
            );
        } else {
            println!("{run_id}");
            eprintln!(
                "started {} on {}; follow it with `toolhost status {run_id} --wait`",
                req.workflow,
                client.server()
            );
        }
        return Ok(exit::OK);
    }
    if show {
        eprintln!("started run {run_id} on {}", client.server());
    }
    client.follow(&run_id, show, false).await?;
    finish(client, &run_id, req.json, req.sarif, req.fail_on).await
}

/// Prints an ended run and writes its SARIF; returns the exit code.
pub async fn finish(
    client: &ApiClient,
    run_id: &str,
    json_out: bool,
    sarif: Option<&PathBuf>,
    fail_on: Option<Severity>,
) -> anyhow::Result<u8> {
    let record = client.record(run_id).await?;
    if let Some(path) = sarif {
        let bytes = client
            .send(
                client.req(
                    reqwest::Method::GET,
                    &format!("/v1/runs/{run_id}/findings?format=sarif"),
                ),
                "cannot read the SARIF",
            )
            .await?
            .bytes()
            .await?;
        std::fs::write(path, &bytes)
            .with_context(|| format!("cannot write SARIF to `{}`", path.display()))?;
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        output::print_run_summary(
            &record,
            Path::new(&format!("{}/v1/runs/{run_id}", client.server())),
        );
    }
    Ok(exit_code(&record, fail_on))
}

/// `toolhost status` through the server.
pub async fn status(
    client: &ApiClient,
    run_id: &str,
    json_out: bool,
    wait: bool,
) -> anyhow::Result<u8> {
    if wait {
        client.follow(run_id, !json_out, false).await?;
        return finish(client, run_id, json_out, None, None).await;
    }
    let view = client
        .get(&format!("/v1/runs/{run_id}"), "cannot read the run")
        .await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(exit::OK);
    }
    let status = view["status"].as_str().unwrap_or("?");
    println!(
        "{run_id}: {status} ({})",
        view["workflow"].as_str().unwrap_or("?")
    );
    if let Some(p) = view.get("progress").filter(|p| !p.is_null()) {
        println!("  progress: {}", output::format_stats(p));
    }
    for t in view["pending"].as_array().into_iter().flatten() {
        println!("  running tool `{}`", t["tool"].as_str().unwrap_or("?"));
    }
    if let Some(n) = view["findings_so_far"].as_u64() {
        println!("  findings so far: {n}");
    }
    if let Some(c) = view.get("counts").filter(|c| c.is_object()) {
        println!("  findings: {c}");
    }
    if let Some(e) = view["error"].as_str() {
        println!("  reason: {}", crate::text::terminal_safe(e));
    }
    Ok(exit::OK)
}

/// `toolhost list` through the server.
pub async fn list(
    client: &ApiClient,
    workflow: Option<&str>,
    status: Option<&str>,
    limit: usize,
    json_out: bool,
) -> anyhow::Result<u8> {
    let mut query = vec![format!("limit={}", limit.clamp(1, 500))];
    if let Some(w) = workflow {
        query.push(format!("workflow={w}"));
    }
    if let Some(s) = status {
        query.push(format!("status={s}"));
    }
    let page = client
        .get(&format!("/v1/runs?{}", query.join("&")), "cannot list runs")
        .await?;
    let runs = page["runs"].as_array().cloned().unwrap_or_default();
    if json_out {
        println!("{}", serde_json::to_string_pretty(&runs)?);
    } else if runs.is_empty() {
        println!("no runs");
    } else {
        for r in runs {
            println!(
                "{:<40} {:<11} {:<24} {}",
                r["run_id"].as_str().unwrap_or_default(),
                r["status"].as_str().unwrap_or_default(),
                r["workflow"].as_str().unwrap_or_default(),
                r["created_at"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(exit::OK)
}

/// `toolhost cancel` through the server.
pub async fn cancel(client: &ApiClient, run_id: &str) -> anyhow::Result<u8> {
    client
        .post(
            &format!("/v1/runs/{run_id}/cancel"),
            &json!({}),
            "cannot cancel the run",
        )
        .await?;
    eprintln!("cancellation requested for {run_id}; its tools are stopped within seconds");
    Ok(exit::OK)
}

/// `toolhost retry` through the server.
pub async fn retry(
    client: &ApiClient,
    run_id: &str,
    wait: bool,
    json_out: bool,
) -> anyhow::Result<u8> {
    let run = client
        .post(
            &format!("/v1/runs/{run_id}/retry"),
            &json!({}),
            "cannot retry the run",
        )
        .await?;
    let new_id = run["run_id"].as_str().unwrap_or_default().to_string();
    if !wait {
        println!("{new_id}");
        eprintln!("started {new_id}, a retry of {run_id}");
        return Ok(exit::OK);
    }
    client.follow(&new_id, !json_out, false).await?;
    finish(client, &new_id, json_out, None, None).await
}

/// `toolhost findings` through the server.
pub async fn findings(client: &ApiClient, run_id: &str, format: &str) -> anyhow::Result<u8> {
    if format == "sarif" {
        let bytes = client
            .send(
                client.req(
                    reqwest::Method::GET,
                    &format!("/v1/runs/{run_id}/findings?format=sarif"),
                ),
                "cannot read the SARIF",
            )
            .await?
            .bytes()
            .await?;
        print!("{}", String::from_utf8_lossy(&bytes));
        return Ok(exit::OK);
    }
    let answer = client
        .get(
            &format!("/v1/runs/{run_id}/findings"),
            "cannot read the findings",
        )
        .await?;
    let list: Vec<Finding> = serde_json::from_value(answer["findings"].clone()).unwrap_or_default();
    if answer["final"] == false {
        eprintln!("run {run_id} is still running: findings so far");
    }
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        crate::report::summary::write_findings_table(&list, &mut std::io::stdout().lock(), false)?;
        println!("{}", crate::report::summary::counts_line(&list));
    }
    Ok(exit::OK)
}

/// `toolhost logs` through the server.
pub async fn logs(client: &ApiClient, run_id: &str, follow: bool) -> anyhow::Result<u8> {
    if follow {
        client.follow(run_id, false, true).await?;
        return Ok(exit::OK);
    }
    let text = client
        .send(
            client.req(reqwest::Method::GET, &format!("/v1/runs/{run_id}/log")),
            "cannot read the log",
        )
        .await?
        .text()
        .await?;
    super::remote::print_log(text.as_bytes());
    Ok(exit::OK)
}

/// `toolhost artifacts` through the server.
pub async fn artifacts(client: &ApiClient, run_id: &str, out: &Path) -> anyhow::Result<u8> {
    let list = client
        .get(
            &format!("/v1/runs/{run_id}/artifacts"),
            "cannot list the artifacts",
        )
        .await?;
    let names: Vec<String> = list["artifacts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["name"].as_str().map(String::from))
        .collect();
    if names.is_empty() {
        eprintln!("run {run_id} has no artifacts");
        return Ok(exit::OK);
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create `{}`", out.display()))?;
    for name in names {
        crate::capabilities::artifacts::check_name(&name).map_err(anyhow::Error::msg)?;
        let bytes = client
            .send(
                client.req(
                    reqwest::Method::GET,
                    &format!("/v1/runs/{run_id}/artifacts/{name}"),
                ),
                "cannot download an artifact",
            )
            .await?
            .bytes()
            .await?;
        let dest = out.join(&name);
        std::fs::write(&dest, &bytes)
            .with_context(|| format!("cannot write `{}`", dest.display()))?;
        println!("{} ({} bytes)", dest.display(), bytes.len());
    }
    Ok(exit::OK)
}
