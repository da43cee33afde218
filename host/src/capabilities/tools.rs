//! The `tools` interface: checks a request against the run's tool grant and
//! the tool's configuration, runs it through the sandbox, and audits it in
//! the run log. It must never start a process the grant does not allow.

use std::time::Duration;

use serde_json::json;

use wasmtime::component::Resource;

use crate::runtime::GuestState;
use crate::runtime::bindings::toolhost::workflow::tools::{
    Host, HostProcess, RunOptions, ToolError, ToolExit, ToolOutput, ToolUpdate,
};
use crate::runtime::state::CodeKind;
use crate::sandbox::policy::ToolKind;
use crate::sandbox::process::{
    ProcessError, ProcessSpec, RunningProcess, run_process, start_process,
};

/// Longest a single `process.poll` may wait.
const MAX_POLL_WAIT: Duration = Duration::from_secs(10);

/// Most arguments one call may pass.
const MAX_ARGS: usize = 4096;
/// Most bytes of arguments, env and stdin one call may pass.
const MAX_REQUEST_BYTES: usize = 64 << 20;

impl Host for GuestState {
    async fn run(
        &mut self,
        tool: String,
        args: Vec<String>,
        options: RunOptions,
    ) -> anyhow::Result<Result<ToolOutput, ToolError>> {
        if let Some(steps) = self.run.steps_for(self.kind) {
            return steps.tool(tool, args, options).await;
        }
        Ok(run_tool(&self.run, &tool, args, options).await)
    }

    async fn start(
        &mut self,
        tool: String,
        args: Vec<String>,
        options: RunOptions,
    ) -> anyhow::Result<Result<Resource<ToolProcess>, ToolError>> {
        if self.kind != CodeKind::Activity {
            return Ok(Err(ToolError::NotPermitted(
                "`tools.start` is only available to activity code: stream a tool from an activity (`ctx.activity`), or use `tools.run` from workflow code".into(),
            )));
        }
        match start_tool(&self.run, &tool, args, options) {
            Ok(process) => Ok(Ok(self.table.push(process)?)),
            Err(e) => Ok(Err(e)),
        }
    }
}

/// A tool started by `tools.start`, owned by the guest through a handle.
pub struct ToolProcess {
    process: RunningProcess,
    tool: String,
    /// The audit record, completed when the tool ends.
    audit: serde_json::Value,
    ended: bool,
    // Kills anything left in the tool's pids cgroup when dropped.
    _cgroup: Option<crate::sandbox::cgroup::CgroupGuard>,
    // The tool's only way out, when it has `egress`; closed when dropped.
    _egress: Option<crate::sandbox::egress::EgressProxy>,
}

/// Checks and starts `tool` for `run` without waiting for it.
fn start_tool(
    run: &super::RunContext,
    tool: &str,
    args: Vec<String>,
    options: RunOptions,
) -> Result<ToolProcess, ToolError> {
    let cwd_rel = options.cwd.clone().unwrap_or_default();
    let Prepared {
        spec,
        cgroup,
        egress,
    } = prepare(run, tool, &args, options).inspect_err(|e| {
        refused(run, tool, &args, &cwd_rel, e);
    })?;
    let mut audit = start_audit(tool, &spec, &cwd_rel);
    audit["streamed"] = json!(true);
    run.journal.tool_started(tool, &args);
    let process = start_process(&spec).map_err(|e| {
        let outcome = e.to_string();
        finish_audit(run, tool, audit.clone(), json!({"error": outcome}), outcome);
        tool_error(run, e)
    })?;
    Ok(ToolProcess {
        process,
        tool: tool.to_string(),
        audit,
        ended: false,
        _cgroup: cgroup,
        _egress: egress,
    })
}

impl HostProcess for GuestState {
    async fn poll(
        &mut self,
        handle: Resource<ToolProcess>,
        wait_ms: u32,
    ) -> anyhow::Result<Result<ToolUpdate, ToolError>> {
        let run = self.run.clone();
        let p = self.table.get_mut(&handle)?;
        if p.ended {
            return Ok(Ok(ToolUpdate {
                stdout: Vec::new(),
                stderr: Vec::new(),
                dropped: 0,
                exited: None,
            }));
        }
        let wait = Duration::from_millis(u64::from(wait_ms)).min(MAX_POLL_WAIT);
        let result = p.process.poll(wait, run.stop.stopped()).await;
        let (tool, audit) = (p.tool.clone(), p.audit.clone());
        match result {
            Ok(update) => {
                let exited = update.exited.map(|(exit_code, signal, duration)| {
                    p.ended = true;
                    let outcome = ended_by(exit_code, signal);
                    finish_audit(
                        &run,
                        &tool,
                        audit,
                        json!({"exit_code": exit_code, "signal": signal, "duration_ms": duration.as_millis() as u64}),
                        outcome,
                    );
                    ToolExit {
                        exit_code,
                        signal,
                        duration_ms: duration.as_millis() as u64,
                    }
                });
                Ok(Ok(ToolUpdate {
                    stdout: update.stdout,
                    stderr: update.stderr,
                    dropped: update.dropped,
                    exited,
                }))
            }
            Err(e) => {
                p.ended = true;
                let outcome = e.to_string();
                finish_audit(&run, &tool, audit, json!({"error": outcome}), outcome);
                Ok(Err(tool_error(&run, e)))
            }
        }
    }

    async fn interrupt(&mut self, handle: Resource<ToolProcess>) -> anyhow::Result<()> {
        self.table.get_mut(&handle)?.process.interrupt();
        Ok(())
    }

    async fn drop(&mut self, handle: Resource<ToolProcess>) -> anyhow::Result<()> {
        let p = self.table.delete(handle)?;
        if !p.ended {
            let outcome = "killed: its handle was dropped while it ran".to_string();
            finish_audit(
                &self.run,
                &p.tool,
                p.audit.clone(),
                json!({"error": outcome}),
                outcome,
            );
        }
        Ok(())
    }
}

/// Audits a refused request (guest-controlled: kept small).
fn refused(run: &super::RunContext, tool: &str, args: &[String], cwd_rel: &str, e: &ToolError) {
    let shown: Vec<String> = args
        .iter()
        .take(32)
        .map(|a| crate::text::clip_bytes(a.clone(), 256))
        .collect();
    run.journal.audit(json!({
        "level": "warn", "source": "tool", "tool": crate::text::clip_bytes(tool.to_string(), 128), "args": shown,
        "cwd": cwd_rel, "refused": format!("{e:?}"),
        "message": format!("tool `{tool}` refused: {}", refusal(e)),
    }));
}

/// The audit record of a started tool, completed by [`finish_audit`].
fn start_audit(tool: &str, spec: &ProcessSpec, cwd_rel: &str) -> serde_json::Value {
    json!({
        "level": "info", "source": "tool", "tool": tool,
        "program": spec.program.display().to_string(), "args": spec.args,
        "cwd": cwd_rel, "timeout_ms": spec.timeout.as_millis() as u64,
    })
}

/// Completes and writes a tool's audit record, and announces its end.
fn finish_audit(
    run: &super::RunContext,
    tool: &str,
    mut audit: serde_json::Value,
    record: serde_json::Value,
    outcome: String,
) {
    if let Some(a) = audit.as_object_mut() {
        a.insert("message".into(), json!(format!("tool `{tool}` {outcome}")));
        if let Some(r) = record.as_object() {
            a.extend(r.clone());
        }
    }
    run.journal.audit(audit);
    run.journal.tool_finished(tool, outcome);
}

/// The guest-facing error for a process that did not run to completion.
fn tool_error(run: &super::RunContext, e: ProcessError) -> ToolError {
    match e {
        ProcessError::TimedOut(_) => ToolError::TimedOut,
        ProcessError::Stopped => match run.stop.reason() {
            Some(crate::capabilities::StopReason::DeadlineExceeded { .. }) => ToolError::TimedOut,
            _ => ToolError::Cancelled,
        },
        ProcessError::Spawn { program, source }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            ToolError::NotFound(format!("`{program}` no longer exists on this host"))
        }
        e => ToolError::Failed(e.to_string()),
    }
}

/// Runs `tool` for `run` (shared by workflow and activity code). Refused
/// requests are audited too.
pub async fn run_tool(
    run: &super::RunContext,
    tool: &str,
    args: Vec<String>,
    options: RunOptions,
) -> Result<ToolOutput, ToolError> {
    let cwd_rel = options.cwd.clone().unwrap_or_default();
    let Prepared {
        spec,
        cgroup,
        egress,
    } = match prepare(run, tool, &args, options) {
        Ok(prepared) => prepared,
        Err(e) => {
            refused(run, tool, &args, &cwd_rel, &e);
            return Err(e);
        }
    };
    let result = execute(run, tool, &args, &cwd_rel, spec, egress.as_ref()).await;
    // Kills anything left in the tool's pids cgroup and removes it.
    drop(cgroup);
    drop(egress);
    result
}

fn refusal(e: &ToolError) -> String {
    match e {
        ToolError::NotPermitted(m) | ToolError::NotFound(m) | ToolError::Failed(m) => m.clone(),
        ToolError::TimedOut => "timed out".into(),
        ToolError::Cancelled => "cancelled".into(),
    }
}

/// A checked request, ready to start.
struct Prepared {
    spec: ProcessSpec,
    cgroup: Option<crate::sandbox::cgroup::CgroupGuard>,
    egress: Option<crate::sandbox::egress::EgressProxy>,
}

/// Checks a request against the grant and the tool's configuration and
/// builds the process to start.
fn prepare(
    run: &super::RunContext,
    tool: &str,
    args: &[String],
    options: RunOptions,
) -> Result<Prepared, ToolError> {
    let resolved = run.tools.check(tool).map_err(ToolError::NotPermitted)?;
    if !run.sandbox.available() {
        return Err(ToolError::NotPermitted(
            "no tools are available here".into(),
        ));
    }
    let program = resolved
        .program
        .clone()
        .map_err(|e| ToolError::NotFound(format!("tool `{tool}`: {e}")))?;

    let request_bytes: usize = args.iter().map(String::len).sum::<usize>()
        + options.stdin.as_ref().map_or(0, Vec::len)
        + options
            .env
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    if args.len() > MAX_ARGS || request_bytes > MAX_REQUEST_BYTES {
        return Err(ToolError::NotPermitted(format!(
            "request too large: {} arguments, {request_bytes} bytes (limits: {MAX_ARGS} arguments, {MAX_REQUEST_BYTES} bytes)",
            args.len()
        )));
    }
    if args.iter().any(|a| a.contains('\0')) {
        return Err(ToolError::NotPermitted(
            "an argument contains a NUL byte".into(),
        ));
    }

    let cwd_rel = options.cwd.clone().unwrap_or_default();
    let mut cwd = run.workspace.host_dir(&cwd_rel).map_err(|e| {
        ToolError::NotPermitted(format!(
            "working directory: {}",
            super::workspace::describe(&e)
        ))
    })?;

    let mut env = resolved.base_env.clone();
    for (key, value) in options.env {
        if !resolved.config.env.contains(&key) {
            return Err(ToolError::NotPermitted(format!(
                "environment variable `{key}` is not allowed for tool `{tool}`; allowed: {}",
                if resolved.config.env.is_empty() {
                    "(none)".to_string()
                } else {
                    resolved.config.env.join(", ")
                }
            )));
        }
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
    }
    // Tools get a private home and temp dir of the run, never the host's.
    let home = run.tool_home.clone();
    let tmp = home.join("tmp");
    let _ = std::fs::create_dir_all(&tmp);
    let set = |env: &mut Vec<(String, String)>, k: &str, v: String| {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v));
    };
    set(&mut env, "HOME", home.display().to_string());
    set(&mut env, "TMPDIR", tmp.display().to_string());

    let timeout = options
        .timeout_ms
        .map(Duration::from_millis)
        .map_or(resolved.timeout, |t| t.min(resolved.timeout));
    let mut full_args = resolved.config.args.clone();
    match resolved.config.kind {
        None => full_args.extend(args.iter().cloned()),
        Some(ToolKind::CargoFetch) => {
            full_args.extend(super::fetch::cargo_fetch_args(
                run, tool, resolved, args, &cwd_rel, &cwd,
            )?);
            // Outside the target: cargo reads configuration from its
            // working directory upwards, and the target's must not apply.
            cwd = home.clone();
            env.retain(|(k, _)| k != "CARGO_NET_OFFLINE");
            set(&mut env, "CARGO_NET_GIT_FETCH_WITH_CLI", "false".into());
        }
    }
    let (mut plan, cgroup) = run
        .sandbox
        .plan(resolved, run.workspace.root(), &home, &run.run_id)
        .map_err(ToolError::Failed)?;
    let allow = resolved.config.egress_hosts();
    let egress = if allow.is_empty() || resolved.config.network {
        None
    } else {
        {
            if !run.sandbox.net_rules() {
                return Err(ToolError::Failed(format!(
                    "tool `{tool}` reaches the network through the egress proxy only, which needs landlock network rules (ABI 4); this kernel has none (`toolhost doctor`)"
                )));
            }
            let proxy = crate::sandbox::egress::EgressProxy::start(allow)
                .map_err(|e| ToolError::Failed(format!("cannot start the egress proxy: {e}")))?;
            plan.connect_ports = Some(vec![proxy.port()]);
            for k in [
                "CARGO_HTTP_PROXY",
                "HTTPS_PROXY",
                "https_proxy",
                "HTTP_PROXY",
                "http_proxy",
                "ALL_PROXY",
            ] {
                set(&mut env, k, proxy.url());
            }
            set(&mut env, "NO_PROXY", String::new());
            Some(proxy)
        }
    };
    Ok(Prepared {
        spec: ProcessSpec {
            program,
            args: full_args,
            env,
            cwd,
            stdin: options.stdin,
            timeout,
            output_limit: resolved.output_limit,
            sandbox: Some((run.sandbox.helper().to_path_buf(), plan)),
        },
        cgroup,
        egress,
    })
}

/// Runs a prepared tool process and audits how it ended.
async fn execute(
    run: &super::RunContext,
    tool: &str,
    args: &[String],
    cwd_rel: &str,
    spec: ProcessSpec,
    egress: Option<&crate::sandbox::egress::EgressProxy>,
) -> Result<ToolOutput, ToolError> {
    let audit = start_audit(tool, &spec, cwd_rel);
    run.journal.tool_started(tool, args);
    let result = run_process(&spec, run.stop.stopped()).await;
    if let Some(proxy) = egress {
        audit_egress(run, tool, proxy);
    }
    let (record, outcome) = match &result {
        Ok(out) => (
            json!({"exit_code": out.exit_code, "signal": out.signal,
                   "duration_ms": out.duration.as_millis() as u64,
                   "stdout_bytes": out.stdout.len(), "stderr_bytes": out.stderr.len(),
                   "bytes_written": out.bytes_written, "truncated": out.truncated}),
            ended_by(out.exit_code, out.signal),
        ),
        Err(e) => (json!({"error": e.to_string()}), e.to_string()),
    };
    finish_audit(run, tool, audit, record, outcome);
    match result {
        Ok(out) => Ok(ToolOutput {
            exit_code: out.exit_code,
            signal: out.signal,
            stdout: out.stdout,
            stderr: out.stderr,
            truncated: out.truncated,
            duration_ms: out.duration.as_millis() as u64,
        }),
        Err(e) => Err(tool_error(run, e)),
    }
}

/// Logs where a tool with `egress` went, and what it was refused.
fn audit_egress(run: &super::RunContext, tool: &str, proxy: &crate::sandbox::egress::EgressProxy) {
    let log = proxy.log();
    let mut opened = log.opened.clone();
    opened.sort();
    opened.dedup();
    run.journal.audit(json!({
        "level": if log.refused.is_empty() { "info" } else { "warn" },
        "source": "tool", "tool": tool, "egress": {"opened": opened, "refused": log.refused},
        "message": if log.refused.is_empty() {
            format!("tool `{tool}` reached {}", if opened.is_empty() { "nothing".to_string() } else { opened.join(", ") })
        } else {
            format!("tool `{tool}` was refused egress to {} (not in its `egress` list)", log.refused.join(", "))
        },
    }));
}

/// "exit 3", "signal 9": how a tool ended, for its audit.
fn ended_by(exit_code: Option<i32>, signal: Option<i32>) -> String {
    match (exit_code, signal) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "ended".into(),
    }
}
