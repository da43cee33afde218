//! Attacks on what the user sees: guest text meant to crash or hijack the
//! interactive display of `toolhost run`.

use std::time::Duration;

use serde_json::{Value, json};
use toolhost_tests::{TestHost, run_in_terminal};

/// 99 ASCII bytes and then a 3-byte character across byte 100: the
/// progress display used to cut this with `String::truncate(100)`, which
/// panicked, and `toolhost run` exited 101 without writing the record.
#[test]
fn guest_log_cut_inside_a_character_crashes_the_terminal_display() {
    let host = TestHost::new(&["probe"], "");
    let target = tempfile::tempdir().unwrap();
    let message = format!(
        "{}€ and then an escape \x1b[2J to clear the screen",
        "a".repeat(99)
    );
    let actions = json!([
        {"op": "say", "message": message},
        {"op": "sleep", "ms": 300},
        {"op": "say", "message": "still running"},
    ]);
    let mut cmd = host.cli();
    cmd.args(["run", "probe", "--run-id", "display-1", "--target"])
        .arg(target.path())
        .arg("--param")
        .arg(format!("actions={actions}"));
    let (code, screen) = run_in_terminal(cmd, Duration::from_secs(60));
    assert_eq!(
        code, 0,
        "toolhost run must succeed under a terminal:\n{screen}"
    );
    assert!(!screen.contains("panicked"), "{screen}");
    assert!(
        !screen.contains("\x1b[2J"),
        "the guest's escape sequence reached the terminal"
    );

    let run_dir = host.config.data_dir.join("runs/display-1");
    let record: Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("result.json")).unwrap()).unwrap();
    assert_eq!(record["status"], "succeeded", "{record}");
    assert!(run_dir.join("findings.sarif").exists());
    let log = std::fs::read_to_string(run_dir.join("log.jsonl")).unwrap();
    assert!(
        log.contains("€ and then an escape"),
        "the whole message is logged"
    );
    assert!(log.contains("still running"));
}
