//! Starting, bounding and killing one tool process.
//!
//! A tool runs with no shell, a cleared environment plus the given
//! variables, a working directory inside the workspace, and its own process
//! group, so a timeout or cancel kills it *and* everything it started.
//! Output is read concurrently into buffers capped at a byte limit; anything
//! past the cap is drained and dropped so a flooding tool never blocks, and
//! never grows host memory.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Absolute path of the executable.
    pub program: PathBuf,
    /// Arguments (fixed ones first).
    pub args: Vec<String>,
    /// The complete environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Bytes for stdin (then closed); `None` = /dev/null.
    pub stdin: Option<Vec<u8>>,
    /// Kill after this long.
    pub timeout: Duration,
    /// Per-stream capture cap in bytes.
    pub output_limit: usize,
    /// Run under the supervisor (`toolhost-supervisor run`) with this plan.
    pub sandbox: Option<(PathBuf, super::supervisor::SandboxPlan)>,
}

/// How a tool process ended.
#[derive(Debug, Clone)]
pub struct ProcessOutcome {
    /// Exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
    /// Captured stdout (at most the cap).
    pub stdout: Vec<u8>,
    /// Captured stderr (at most the cap).
    pub stderr: Vec<u8>,
    /// Total bytes the tool wrote to stdout and stderr.
    pub bytes_written: u64,
    /// True when some output was dropped at the cap.
    pub truncated: bool,
    /// Wall-clock duration.
    pub duration: Duration,
}

/// Why a tool did not run to completion.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("tool exceeded its timeout of {0:?} and was killed with its process group")]
    TimedOut(Duration),
    #[error("tool was killed because the run was stopped")]
    Stopped,
    #[error("waiting for the tool failed: {0}")]
    Wait(std::io::Error),
}

/// How long to wait for output pipes after the tool exited (a daemonised
/// grandchild may hold them open).
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// Runs `spec` to completion, or until `stop` resolves (then kills it).
pub async fn run_process(
    spec: &ProcessSpec,
    stop: impl std::future::Future<Output = ()>,
) -> Result<ProcessOutcome, ProcessError> {
    let mut cmd = match &spec.sandbox {
        Some((helper, plan)) => {
            let mut c = Command::new(helper);
            c.arg("run")
                .arg(serde_json::to_string(plan).unwrap_or_default())
                .arg("--")
                .arg(&spec.program);
            c
        }
        None => Command::new(&spec.program),
    };
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);

    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn {
        program: spec.program.display().to_string(),
        source,
    })?;
    // The group id equals the child's pid (process_group(0)).
    let group = child.id().map(|pid| Pid::from_raw(pid as i32));
    let _guard = GroupGuard(group);

    if let (Some(bytes), Some(mut stdin)) = (spec.stdin.clone(), child.stdin.take()) {
        tokio::spawn(async move {
            // A tool that exits without reading its input is not an error.
            let _ = stdin.write_all(&bytes).await;
        });
    }
    let pipes_done = tokio_util::sync::CancellationToken::new();
    let out = tokio::spawn(read_capped(
        child.stdout.take(),
        spec.output_limit,
        pipes_done.clone(),
    ));
    let err = tokio::spawn(read_capped(
        child.stderr.take(),
        spec.output_limit,
        pipes_done.clone(),
    ));

    tokio::pin!(stop);
    let status = tokio::select! {
        status = child.wait() => status.map_err(ProcessError::Wait)?,
        _ = tokio::time::sleep(spec.timeout) => {
            kill_group(group);
            let _ = child.wait().await;
            return Err(ProcessError::TimedOut(spec.timeout));
        }
        _ = &mut stop => {
            kill_group(group);
            let _ = child.wait().await;
            return Err(ProcessError::Stopped);
        }
    };
    let duration = started.elapsed();
    // Leftover members of the group (background children) die with the tool.
    kill_group(group);

    // Normally the pipes close with the group; if an escaped descendant
    // still holds them, stop reading after a grace period and keep what
    // was captured.
    let closer = {
        let done = pipes_done.clone();
        tokio::spawn(async move {
            tokio::time::sleep(PIPE_GRACE).await;
            done.cancel();
        })
    };
    let (stdout, out_total) = out.await.unwrap_or_default();
    let (stderr, err_total) = err.await.unwrap_or_default();
    closer.abort();
    use std::os::unix::process::ExitStatusExt;
    Ok(ProcessOutcome {
        exit_code: status.code(),
        signal: status.signal(),
        truncated: out_total > stdout.len() as u64 || err_total > stderr.len() as u64,
        bytes_written: out_total + err_total,
        stdout,
        stderr,
        duration,
    })
}

async fn read_capped(
    stream: Option<impl AsyncRead + Unpin>,
    cap: usize,
    done: tokio_util::sync::CancellationToken,
) -> (Vec<u8>, u64) {
    let Some(mut stream) = stream else {
        return (Vec::new(), 0);
    };
    let mut kept = Vec::new();
    let mut total: u64 = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::select! {
            r = stream.read(&mut chunk) => r,
            _ = done.cancelled() => break,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n as u64;
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
    (kept, total)
}

fn kill_group(group: Option<Pid>) {
    if let Some(pgid) = group {
        // ESRCH (already gone) is the common, fine case.
        let _ = killpg(pgid, Signal::SIGKILL);
    }
}

/// Kills the process group if the run future is dropped mid-flight
/// (host shutdown, run abandoned), so no tool outlives its run.
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(program: &str, args: &[&str]) -> ProcessSpec {
        ProcessSpec {
            program: crate::sandbox::policy::find_program(program).unwrap(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: std::env::temp_dir(),
            stdin: None,
            timeout: Duration::from_secs(10),
            output_limit: 1024,
            sandbox: None,
        }
    }

    #[tokio::test]
    async fn captures_exit_code_and_output() {
        let out = run_process(
            &spec("sh", &["-c", "echo hi; echo err >&2; exit 3"]),
            std::future::pending(),
        )
        .await
        .unwrap();
        assert_eq!(out.exit_code, Some(3));
        assert_eq!(out.stdout, b"hi\n");
        assert_eq!(out.stderr, b"err\n");
        assert!(!out.truncated);
    }

    #[tokio::test]
    async fn environment_is_cleared() {
        // SAFETY-free: set_var is only unsafe with concurrent readers; read it back via the tool.
        let out = run_process(&spec("env", &[]), std::future::pending())
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "PATH=/usr/bin:/bin\n");
    }

    #[tokio::test]
    async fn flood_is_capped_without_blocking() {
        let out = run_process(
            &spec("sh", &["-c", "head -c 5000000 /dev/zero"]),
            std::future::pending(),
        )
        .await
        .unwrap();
        assert_eq!(out.stdout.len(), 1024);
        assert!(out.truncated);
        assert_eq!(out.bytes_written, 5_000_000);
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let mut s = spec("sh", &["-c", "sleep 30 & sleep 30; echo never"]);
        s.timeout = Duration::from_millis(300);
        let t = Instant::now();
        let err = run_process(&s, std::future::pending()).await.unwrap_err();
        assert!(matches!(err, ProcessError::TimedOut(_)), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn stop_kills_the_tool() {
        let s = spec("sleep", &["30"]);
        let err = run_process(&s, tokio::time::sleep(Duration::from_millis(200)))
            .await
            .unwrap_err();
        assert!(matches!(err, ProcessError::Stopped));
    }

    #[tokio::test]
    async fn stdin_is_fed() {
        let mut s = spec("cat", &[]);
        s.stdin = Some(b"piped".to_vec());
        let out = run_process(&s, std::future::pending()).await.unwrap();
        assert_eq!(out.stdout, b"piped");
    }
}
