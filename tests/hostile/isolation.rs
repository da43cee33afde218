//! Attacks of one tool on another running at the same time (soon: of two
//! tenants). Tools without network share one empty network namespace, where
//! abstract Unix sockets are visible to every process: landlock's scopes
//! (ABI 6) keep each tool's sockets and signals to itself.

use serde_json::{Value, json};
use toolhost_tests::{TestHost, probe};

fn target() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn stdout(r: &Value) -> String {
    r["ok"]["stdout"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_concurrent_tools_cannot_connect_over_abstract_sockets() {
    let host = TestHost::new(&["probe"], "");
    let engine = host.engine().await;
    let name = format!("toolhost-probe-{}", uuid::Uuid::new_v4().simple());
    let listener = format!(
        "import socket,time\ns=socket.socket(socket.AF_UNIX)\ns.bind('\\0{name}')\ns.listen(8)\nc=socket.socket(socket.AF_UNIX)\nc.connect('\\0{name}')\nprint('self-connect ok', flush=True)\ntime.sleep(5)\n"
    );
    let intruder = format!(
        "import socket\nc=socket.socket(socket.AF_UNIX)\ntry:\n    c.connect('\\0{name}')\n    print('CONNECTED')\nexcept OSError as e:\n    print('refused', e.errno)\n"
    );
    let (a, b) = (target(), target());
    let (ra, rb) = tokio::join!(
        probe(
            &engine,
            a.path(),
            json!([{"op": "tool", "tool": "python3", "args": ["-c", listener]}]),
        ),
        probe(
            &engine,
            b.path(),
            json!([
                {"op": "sleep", "ms": 1500},
                {"op": "tool", "tool": "python3", "args": ["-c", intruder]},
            ]),
        ),
    );
    let (a_out, b_out) = (stdout(&ra.1[0]), stdout(&rb.1[1]));
    assert!(
        a_out.contains("self-connect ok"),
        "the listener works within its own tool: {:?}",
        ra.1
    );
    assert!(
        b_out.starts_with("refused"),
        "another tool reached the listener's abstract socket: {b_out:?} {:?}",
        rb.1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_cannot_signal_another_tool() {
    let host = TestHost::new(&["probe"], "");
    let engine = host.engine().await;
    let marker = format!("victim-{}", uuid::Uuid::new_v4().simple());
    // The victim traps USR1 and TERM and says so if one arrives.
    let victim = format!(
        "trap 'echo GOT-SIGNAL' USR1 TERM; i=0; while [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; echo done {marker}"
    );
    let a = target();
    let victim_run = probe(
        &engine,
        a.path(),
        json!([{"op": "tool", "tool": "sh", "args": ["-c", victim, marker]}]),
    );
    let attack = async {
        // The victim's pid on the host, found the way an attacker who
        // guessed it would use it.
        let mut pid = None;
        for _ in 0..100 {
            pid = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
                let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
                let mut args = cmd.split(|b| *b == 0);
                let is_sh = args.next().is_some_and(|a0| a0.ends_with(b"/sh"));
                let is_victim = is_sh && args.any(|a| a == marker.as_bytes());
                is_victim.then(|| e.file_name().to_string_lossy().into_owned())
            });
            if pid.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let pid = pid.expect("the victim tool runs");
        let b = target();
        let script = format!("kill -USR1 {pid}; echo usr1=$?; kill -TERM {pid}; echo term=$?");
        probe(
            &engine,
            b.path(),
            json!([{"op": "tool", "tool": "sh", "args": ["-c", script]}]),
        )
        .await
    };
    let ((_, victim), (_, attacker)) = tokio::join!(victim_run, attack);
    let attacker_out = stdout(&attacker[0]);
    assert!(
        attacker_out.contains("usr1=1") && attacker_out.contains("term=1"),
        "the signals were delivered: {attacker_out:?} {attacker:?}"
    );
    let victim_out = stdout(&victim[0]);
    assert!(victim_out.contains("done"), "{victim:?}");
    assert!(!victim_out.contains("GOT-SIGNAL"), "{victim_out:?}");
}
