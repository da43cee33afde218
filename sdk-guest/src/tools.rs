//! Native tools, run by the host in its sandbox: `tools::run("cargo").arg("test").output()?`.

use std::fmt;
use std::time::Duration;

use crate::bindings::toolhost::workflow::tools as wit;

/// Starts building a call to `tool`, a tool name the workflow declared in
/// [`crate::Workflow::TOOLS`].
pub fn run(tool: &str) -> ToolCall {
    ToolCall {
        tool: tool.to_string(),
        args: Vec::new(),
        options: wit::RunOptions {
            cwd: None,
            stdin: None,
            timeout_ms: None,
            env: Vec::new(),
        },
    }
}

/// A tool invocation being built; finish with [`ToolCall::output`].
#[derive(Debug, Clone)]
#[must_use = "a tool call does nothing until `.output()` is called"]
pub struct ToolCall {
    tool: String,
    args: Vec<String>,
    options: wit::RunOptions,
}

impl ToolCall {
    /// Appends one argument (no shell: passed as is).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Working directory, relative to the workspace root.
    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.options.cwd = Some(dir.into());
        self
    }

    /// Bytes fed to the tool's standard input.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.options.stdin = Some(bytes.into());
        self
    }

    /// Timeout (capped by the host's limit for this tool).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout_ms = Some(timeout.as_millis().min(u64::MAX as u128) as u64);
        self
    }

    /// Sets an environment variable the host allows for this tool.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.env.push((key.into(), value.into()));
        self
    }

    /// Starts the tool and returns at once, to stream its output with
    /// [`Process::poll`]. Only activity code may start tools.
    pub fn start(self) -> Result<Process, ToolError> {
        wit::start(&self.tool, &self.args, &self.options)
            .map(|handle| Process { handle })
            .map_err(Into::into)
    }

    /// Runs the tool to completion. A non-zero exit is `Ok` with the code;
    /// `Err` means the tool could not run to completion.
    pub fn output(self) -> Result<ToolOutput, ToolError> {
        match wit::run(&self.tool, &self.args, &self.options) {
            Ok(out) => Ok(ToolOutput {
                exit_code: out.exit_code,
                signal: out.signal,
                stdout: out.stdout,
                stderr: out.stderr,
                truncated: out.truncated,
                duration: Duration::from_millis(out.duration_ms),
            }),
            Err(e) => Err(e.into()),
        }
    }
}

/// A tool started with [`ToolCall::start`] (activity code only). Its
/// output is streamed with [`Process::poll`]; dropping it kills the tool.
///
/// ```ignore
/// let mut p = tools::run("cargo").args(["fuzz", "run", "parse"]).start()?;
/// loop {
///     let update = p.poll(Duration::from_secs(1))?;
///     // ... parse update.stderr, call progress(...)
///     if let Some(exit) = update.exited { break; }
/// }
/// ```
#[derive(Debug)]
pub struct Process {
    handle: wit::Process,
}

/// What a running tool wrote since the previous poll.
#[derive(Debug, Clone, Default)]
pub struct ToolUpdate {
    /// New standard output.
    pub stdout: Vec<u8>,
    /// New standard error.
    pub stderr: Vec<u8>,
    /// Bytes the host dropped because the guest polled too rarely.
    pub dropped: u64,
    /// Set once: the tool has ended and all its output was delivered.
    pub exited: Option<ToolExit>,
}

/// How a streamed tool ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolExit {
    /// Exit code; `None` when killed by a signal.
    pub exit_code: Option<i32>,
    /// Signal that ended the tool, if any.
    pub signal: Option<i32>,
    /// How long the tool ran.
    pub duration: Duration,
}

impl Process {
    /// Waits up to `wait` (at most 10 s) for output or the end of the
    /// tool, and returns what it wrote since the previous poll.
    pub fn poll(&mut self, wait: Duration) -> Result<ToolUpdate, ToolError> {
        let ms = wait.as_millis().min(u32::MAX as u128) as u32;
        let u = self.handle.poll(ms)?;
        Ok(ToolUpdate {
            stdout: u.stdout,
            stderr: u.stderr,
            dropped: u.dropped,
            exited: u.exited.map(|e| ToolExit {
                exit_code: e.exit_code,
                signal: e.signal,
                duration: Duration::from_millis(e.duration_ms),
            }),
        })
    }

    /// Asks the tool to finish (SIGINT, SIGKILL two seconds later); keep
    /// polling for its last output and its exit.
    pub fn interrupt(&mut self) {
        self.handle.interrupt();
    }
}

/// What a finished tool produced.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    /// Exit code; `None` when killed by a signal.
    pub exit_code: Option<i32>,
    /// Signal that ended the tool, if any.
    pub signal: Option<i32>,
    /// Captured stdout (capped by the host).
    pub stdout: Vec<u8>,
    /// Captured stderr (capped by the host).
    pub stderr: Vec<u8>,
    /// True when output was cut at the host's cap.
    pub truncated: bool,
    /// How long the tool ran.
    pub duration: Duration,
}

impl ToolOutput {
    /// True when the tool exited with code 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// Stdout as text (invalid UTF-8 replaced).
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as text (invalid UTF-8 replaced).
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Why a tool could not run to completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolError {
    /// Not declared, not offered by the vertical, or an option not allowed.
    NotPermitted(String),
    /// Configured, but the executable is missing on this host.
    NotFound(String),
    /// Killed after exceeding its timeout.
    TimedOut,
    /// Could not be started or waited for.
    Failed(String),
    /// The run was cancelled; the tool was killed.
    Cancelled,
}

impl From<wit::ToolError> for ToolError {
    fn from(e: wit::ToolError) -> Self {
        match e {
            wit::ToolError::NotPermitted(m) => ToolError::NotPermitted(m),
            wit::ToolError::NotFound(m) => ToolError::NotFound(m),
            wit::ToolError::TimedOut => ToolError::TimedOut,
            wit::ToolError::Failed(m) => ToolError::Failed(m),
            wit::ToolError::Cancelled => ToolError::Cancelled,
        }
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolError::NotPermitted(m) => write!(f, "not permitted: {m}"),
            ToolError::NotFound(m) => write!(f, "tool not found: {m}"),
            ToolError::TimedOut => f.write_str("tool timed out"),
            ToolError::Failed(m) => write!(f, "tool failed: {m}"),
            ToolError::Cancelled => f.write_str("run cancelled"),
        }
    }
}

impl std::error::Error for ToolError {}
