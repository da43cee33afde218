//! Process plumbing shared by both services: spawning a server with its
//! output in a log file, telling whether a recorded pid is still our server,
//! stopping it, running short CLI commands with a deadline, and tiny loopback
//! probes. Signals go through `sh`'s `kill` builtin so that this crate needs
//! no `unsafe` and no `libc`; it must never signal a pid it has not checked.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// How long a stopped server gets to exit after SIGTERM before SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);

/// Spawns `cmd` with stdin closed and stdout/stderr written to `log`
/// (truncated). With `detach` it gets its own process group: a Ctrl-C aimed
/// at the caller's terminal does not reach it, and it outlives the caller.
pub(crate) fn spawn_logged(cmd: &mut Command, log: &Path, detach: bool) -> Result<Child> {
    let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    if detach {
        cmd.process_group(0);
    }
    cmd.spawn()
        .with_context(|| format!("cannot start {}", describe(cmd)))
}

/// Whether `pid` is a live process (a zombie, which a parent that never
/// reaped it keeps around, counts as dead).
pub(crate) fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the command name, which is in parentheses
        // and may itself contain ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) if Path::new("/proc/self").exists() => false,
        // No procfs (macOS): ask the kernel.
        Err(_) => signal(pid, "0").is_ok(),
    }
}

/// Whether `pid` is alive and runs a program whose file name is `program`:
/// a pid file may outlive its process, and the pid may have been recycled.
pub(crate) fn runs(pid: u32, program: &str) -> bool {
    if !is_alive(pid) {
        return false;
    }
    // A process caught in the middle of `exec` shows an empty command line
    // for an instant: look again before concluding.
    for _ in 0..20 {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return is_alive(pid) && !Path::new("/proc/self").exists();
        };
        if let Some(argv0) = cmdline.split(|&b| b == 0).next().filter(|a| !a.is_empty()) {
            return Path::new(OsStr::from_bytes(argv0)).file_name() == Some(OsStr::new(program));
        }
        if !is_alive(pid) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Sends `sig` (`TERM`, `KILL`, `0`) to `pid`.
pub(crate) fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{sig} {pid}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run sh")?;
    if !status.success() {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

/// SIGTERM, up to `grace` for `pid` to exit, then SIGKILL.
pub(crate) fn terminate(pid: u32, grace: Duration) -> Result<()> {
    if !is_alive(pid) {
        return Ok(());
    }
    let _ = signal(pid, "TERM");
    if wait_dead(pid, grace) {
        return Ok(());
    }
    let _ = signal(pid, "KILL");
    if wait_dead(pid, Duration::from_secs(5)) {
        return Ok(());
    }
    bail!("process {pid} is still alive after SIGKILL")
}

fn wait_dead(pid: u32, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if !is_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !is_alive(pid)
}

/// Stops a child of ours: SIGTERM, up to `grace`, then SIGKILL; reaps it.
pub(crate) fn stop_child(child: &mut Child, grace: Duration) -> Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let _ = signal(child.id(), "TERM");
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    kill_child(child)
}

/// SIGKILL and reap.
pub(crate) fn kill_child(child: &mut Child) -> Result<()> {
    if child.try_wait()?.is_none() {
        child.kill().context("cannot kill")?;
        child.wait()?;
    }
    Ok(())
}

/// Polls `ready` every 200 ms until it holds; fails when `alive` stops
/// holding (the server exited) or at `end`.
pub(crate) fn wait_for(
    end: Instant,
    alive: &mut dyn FnMut() -> bool,
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    loop {
        if ready() {
            return Ok(());
        }
        if !alive() {
            bail!("the server exited while waiting for {what}");
        }
        if Instant::now() >= end {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `cmd` to completion with its output captured, killing it after `timeout`.
pub(crate) fn output_within(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", describe(cmd)))?;
    // Drain both pipes while waiting, so a chatty command cannot block on a full pipe.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let end = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= end {
            let _ = kill_child(&mut child);
            bail!("{} did not finish within {timeout:?}", describe(cmd));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Like [`output_within`], but a failure is an error carrying the command's output; returns stdout.
pub(crate) fn checked(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let out = output_within(cmd, timeout)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{}{}",
            describe(cmd),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// The program and arguments of `cmd`, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `n` lines of the file at `path` (empty when it cannot be read).
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return "(empty)".into();
    }
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub(crate) fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&loopback(port), Duration::from_millis(500)).is_ok()
}

/// A plain HTTP/1.0 GET on loopback: the status code and the body.
pub(crate) fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&loopback(port), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP response from 127.0.0.1:{port}: {head:?}"))?;
    Ok((code, body.to_string()))
}

/// `n` random bytes as lowercase hex, from the kernel's generator.
pub(crate) fn random_hex(n: usize) -> Result<String> {
    let mut bytes = vec![0u8; n];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reaped_child_is_dead_and_a_zombie_too() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        assert!(is_alive(pid));
        assert!(runs(pid, "sleep"));
        assert!(!runs(pid, "garage"));
        signal(pid, "KILL").unwrap();
        // Not reaped yet: a zombie, which must count as dead.
        assert!(wait_dead(pid, Duration::from_secs(5)));
        child.wait().unwrap();
        assert!(!is_alive(pid));
    }

    #[test]
    fn terminate_stops_a_process_that_ignores_nothing() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        terminate(child.id(), Duration::from_secs(5)).unwrap();
        assert!(!child.wait().unwrap().success());
    }

    #[test]
    fn output_within_kills_a_command_that_hangs() {
        let err =
            output_within(Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
        assert_eq!(
            checked(Command::new("echo").arg("hi"), Duration::from_secs(5)).unwrap(),
            "hi\n"
        );
        let err = checked(
            Command::new("sh").args(["-c", "echo oops >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(err.to_string().contains("oops"), "{err}");
    }

    #[test]
    fn random_hex_has_the_asked_length() {
        let a = random_hex(32).unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, random_hex(32).unwrap());
    }
}
