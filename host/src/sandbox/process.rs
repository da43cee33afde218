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

/// Builds the command for `spec`: no shell, cleared environment, own
/// process group, piped output.
fn command(spec: &ProcessSpec) -> Command {
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
    cmd
}

/// Starts `spec`, feeding its stdin in the background. Returns the child
/// and its process group (its pid, from `process_group(0)`).
fn spawn(spec: &ProcessSpec) -> Result<(tokio::process::Child, Option<Pid>), ProcessError> {
    let mut child = command(spec)
        .spawn()
        .map_err(|source| ProcessError::Spawn {
            program: spec.program.display().to_string(),
            source,
        })?;
    let group = child.id().map(|pid| Pid::from_raw(pid as i32));
    if let (Some(bytes), Some(mut stdin)) = (spec.stdin.clone(), child.stdin.take()) {
        tokio::spawn(async move {
            // A tool that exits without reading its input is not an error.
            let _ = stdin.write_all(&bytes).await;
        });
    }
    Ok((child, group))
}

/// Runs `spec` to completion, or until `stop` resolves (then kills it).
pub async fn run_process(
    spec: &ProcessSpec,
    stop: impl std::future::Future<Output = ()>,
) -> Result<ProcessOutcome, ProcessError> {
    let started = Instant::now();
    let (mut child, group) = spawn(spec)?;
    let _guard = GroupGuard(group);
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
    let closer = cancel_after_grace(&pipes_done);
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

/// Stops the output readers [`PIPE_GRACE`] from now (abort the returned
/// task when they finish sooner).
fn cancel_after_grace(
    readers: &tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let done = readers.clone();
    tokio::spawn(async move {
        tokio::time::sleep(PIPE_GRACE).await;
        done.cancel();
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

/// A tool started by [`start_process`], whose output the caller streams
/// with [`RunningProcess::poll`]. Dropping it kills the process group.
pub struct RunningProcess {
    shared: std::sync::Arc<std::sync::Mutex<Streams>>,
    notify: std::sync::Arc<tokio::sync::Notify>,
    group: Option<Pid>,
    waiter: tokio::task::JoinHandle<()>,
    interrupted: bool,
}

/// Output not yet delivered, and how the process ended.
#[derive(Default)]
struct Streams {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    dropped: u64,
    /// Readers still open (0, 1 or 2).
    open: u8,
    ended: Option<Result<(std::process::ExitStatus, Duration), ProcessError>>,
    delivered: bool,
}

/// What a running tool wrote since the last poll.
#[derive(Debug, Default)]
pub struct ProcessUpdate {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Bytes dropped at the pending-output cap.
    pub dropped: u64,
    /// Set once, when the process has ended and its output is drained.
    pub exited: Option<(Option<i32>, Option<i32>, Duration)>,
}

/// Starts `spec` without waiting for it. Its output is buffered (at most
/// `output_limit` bytes per stream between two polls; the rest is counted
/// as dropped) until [`RunningProcess::poll`] collects it.
pub fn start_process(spec: &ProcessSpec) -> Result<RunningProcess, ProcessError> {
    let started = Instant::now();
    let (mut child, group) = spawn(spec)?;
    let shared = std::sync::Arc::new(std::sync::Mutex::new(Streams {
        open: 2,
        ..Streams::default()
    }));
    let notify = std::sync::Arc::new(tokio::sync::Notify::new());
    let readers_done = tokio_util::sync::CancellationToken::new();
    let mut readers = Vec::new();
    for is_err in [false, true] {
        let stream: Option<Box<dyn AsyncRead + Unpin + Send>> = if is_err {
            child.stderr.take().map(|s| Box::new(s) as _)
        } else {
            child.stdout.take().map(|s| Box::new(s) as _)
        };
        readers.push(tokio::spawn(stream_into(
            stream,
            is_err,
            spec.output_limit,
            shared.clone(),
            notify.clone(),
            readers_done.clone(),
        )));
    }
    let timeout = spec.timeout;
    let (shared2, notify2) = (shared.clone(), notify.clone());
    let waiter = tokio::spawn(async move {
        let ended = tokio::select! {
            status = child.wait() => status.map(|s| (s, started.elapsed())).map_err(ProcessError::Wait),
            _ = tokio::time::sleep(timeout) => {
                kill_group(group);
                let _ = child.wait().await;
                Err(ProcessError::TimedOut(timeout))
            }
        };
        kill_group(group);
        // As in `run_process`: an escaped descendant holding the pipes
        // does not keep the end from being reported.
        let closer = cancel_after_grace(&readers_done);
        for r in readers {
            let _ = r.await;
        }
        closer.abort();
        if let Ok(mut s) = shared2.lock() {
            s.ended = Some(ended);
        }
        notify2.notify_one();
    });
    Ok(RunningProcess {
        shared,
        notify,
        group,
        waiter,
        interrupted: false,
    })
}

async fn stream_into(
    stream: Option<Box<dyn AsyncRead + Unpin + Send>>,
    is_err: bool,
    cap: usize,
    shared: std::sync::Arc<std::sync::Mutex<Streams>>,
    notify: std::sync::Arc<tokio::sync::Notify>,
    done: tokio_util::sync::CancellationToken,
) {
    if let Some(mut stream) = stream {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let read = tokio::select! {
                r = stream.read(&mut chunk) => r,
                _ = done.cancelled() => break,
            };
            let n = match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Ok(mut s) = shared.lock() {
                let buf = if is_err { &mut s.stderr } else { &mut s.stdout };
                let room = cap.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..n.min(room)]);
                s.dropped += n.saturating_sub(room) as u64;
            }
            notify.notify_one();
        }
    }
    if let Ok(mut s) = shared.lock() {
        s.open = s.open.saturating_sub(1);
    }
    notify.notify_one();
}

impl RunningProcess {
    /// Waits up to `wait` for output or the end, then returns what is
    /// pending. When `stop` resolves first the process group is killed and
    /// [`ProcessError::Stopped`] returned. After the end was delivered,
    /// every poll returns an empty update.
    pub async fn poll(
        &mut self,
        wait: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<ProcessUpdate, ProcessError> {
        let deadline = tokio::time::Instant::now() + wait;
        tokio::pin!(stop);
        loop {
            if let Some(update) = self.take()? {
                return Ok(update);
            }
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Ok(self.take()?.unwrap_or_default());
                }
                _ = &mut stop => {
                    kill_group(self.group);
                    return Err(ProcessError::Stopped);
                }
            }
        }
    }

    /// Pending output, or `None` when there is none and the end is not
    /// ready to be reported.
    fn take(&mut self) -> Result<Option<ProcessUpdate>, ProcessError> {
        let mut s = self
            .shared
            .lock()
            .map_err(|_| ProcessError::Wait(std::io::Error::other("output buffer poisoned")))?;
        let mut update = ProcessUpdate {
            stdout: std::mem::take(&mut s.stdout),
            stderr: std::mem::take(&mut s.stderr),
            dropped: std::mem::take(&mut s.dropped),
            exited: None,
        };
        if !s.delivered && s.open == 0 {
            match s.ended.take() {
                Some(Ok((status, duration))) => {
                    use std::os::unix::process::ExitStatusExt;
                    s.delivered = true;
                    update.exited = Some((status.code(), status.signal(), duration));
                }
                Some(Err(e)) => {
                    s.delivered = true;
                    return Err(e);
                }
                None => {}
            }
        }
        let empty = update.stdout.is_empty()
            && update.stderr.is_empty()
            && update.dropped == 0
            && update.exited.is_none();
        Ok((!empty || s.delivered).then_some(update))
    }

    /// SIGINT to the process group now, SIGKILL two seconds later if it
    /// has not ended (libFuzzer, like most tools, writes its final report
    /// on SIGINT).
    pub fn interrupt(&mut self) {
        if self.interrupted || self.waiter.is_finished() {
            return;
        }
        self.interrupted = true;
        if let Some(pgid) = self.group {
            let _ = killpg(pgid, Signal::SIGINT);
            let shared = self.shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let ended = shared
                    .lock()
                    .map(|s| s.ended.is_some() || s.delivered)
                    .unwrap_or(true);
                if !ended {
                    let _ = killpg(pgid, Signal::SIGKILL);
                }
            });
        }
    }
}

impl Drop for RunningProcess {
    fn drop(&mut self) {
        kill_group(self.group);
        self.waiter.abort();
    }
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
    async fn a_started_tool_streams_its_output_then_its_exit() {
        let mut p = start_process(&spec(
            "sh",
            &["-c", "echo one; sleep 0.3; echo two >&2; sleep 0.3; exit 4"],
        ))
        .unwrap();
        let (mut out, mut err, mut exit) = (Vec::new(), Vec::new(), None);
        let mut polls = 0;
        while exit.is_none() {
            let u = p
                .poll(Duration::from_secs(5), std::future::pending())
                .await
                .unwrap();
            out.extend(u.stdout);
            err.extend(u.stderr);
            exit = u.exited;
            polls += 1;
            if polls == 1 {
                // The first line arrives while the tool still runs.
                assert_eq!(out, b"one\n");
                assert!(exit.is_none());
            }
        }
        assert_eq!(
            (out.as_slice(), err.as_slice()),
            (&b"one\n"[..], &b"two\n"[..])
        );
        assert_eq!(exit.map(|e| e.0), Some(Some(4)));
        // After the end, polls return at once and empty.
        let u = p
            .poll(Duration::from_secs(5), std::future::pending())
            .await
            .unwrap();
        assert!(u.stdout.is_empty() && u.exited.is_none());
    }

    #[tokio::test]
    async fn a_started_tool_is_interrupted_or_stopped() {
        let mut p = start_process(&spec(
            "sh",
            &["-c", "trap 'echo bye; exit 7' INT; sleep 30 & wait"],
        ))
        .unwrap();
        let u = p
            .poll(Duration::from_millis(200), std::future::pending())
            .await
            .unwrap();
        assert!(u.exited.is_none());
        p.interrupt();
        let mut exit = None;
        let t = Instant::now();
        while exit.is_none() && t.elapsed() < Duration::from_secs(5) {
            exit = p
                .poll(Duration::from_secs(1), std::future::pending())
                .await
                .unwrap()
                .exited;
        }
        assert_eq!(
            exit.map(|e| e.0),
            Some(Some(7)),
            "it ran its SIGINT handler"
        );

        let mut p = start_process(&spec("sleep", &["30"])).unwrap();
        let t = Instant::now();
        let err = p
            .poll(
                Duration::from_secs(10),
                tokio::time::sleep(Duration::from_millis(200)),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, ProcessError::Stopped) && t.elapsed() < Duration::from_secs(3));

        // Output past the cap between two polls is counted, not kept.
        let mut p = start_process(&spec("sh", &["-c", "head -c 5000 /dev/zero"])).unwrap();
        let mut kept = 0;
        let mut dropped = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let u = p
                .poll(Duration::from_secs(5), std::future::pending())
                .await
                .unwrap();
            kept += u.stdout.len();
            dropped += u.dropped;
            if u.exited.is_some() {
                break;
            }
        }
        assert_eq!(kept as u64 + dropped, 5000);
        assert!(kept <= 1024 * 2, "{kept}");
    }

    #[tokio::test]
    async fn stdin_is_fed() {
        let mut s = spec("cat", &[]);
        s.stdin = Some(b"piped".to_vec());
        let out = run_process(&s, std::future::pending()).await.unwrap();
        assert_eq!(out.stdout, b"piped");
    }
}
