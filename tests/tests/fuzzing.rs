//! `cargo_fuzzing` through the real host, cargo-fuzz and libFuzzer, on the
//! fixture crate `tests/fixtures/fuzz_crate` (see its PLANTED.md): the
//! planted overflow is found with its input, the stored input replays to
//! the same crash, a cancel stops the fuzzer within seconds, and bad
//! parameters are refused with what to do.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use toolhost::engine::{RunRequest, RunStatus};
use toolhost::manifest::Severity;
use toolhost_tests::{TestHost, assert_valid_sarif, eventually, fixture, processes, run, try_run};

#[tokio::test]
async fn finds_the_planted_overflow_with_its_input_and_the_input_replays_it() {
    let host = TestHost::new(&["cargo_fuzzing"], "");
    let engine = host.engine().await;
    // The workspace is kept: its fuzz build replays the input below.
    let mut req = RunRequest::new(
        "cargo_fuzzing",
        fixture("fuzz_crate"),
        json!({"target": "parse", "budget_secs": 120, "seed_corpus": "fuzz/seeds"}),
    );
    req.keep_workspace = true;
    let record = engine.run(req).await.expect("the run starts");
    assert_eq!(record.status, RunStatus::Succeeded, "{:?}", record.error);

    // One finding: the overflow, at the read in `checksum`, once.
    assert_eq!(record.findings.len(), 1, "{:#?}", record.findings);
    let f = &record.findings[0];
    assert_eq!(f.rule_id, "fuzzing/heap-buffer-overflow");
    assert_eq!(f.severity, Severity::High);
    let loc = f.location.as_ref().expect("a location");
    assert_eq!(
        (loc.path.as_str(), loc.start_line),
        ("src/lib.rs", Some(36))
    );
    assert!(f.title.contains("tlv_parse::checksum"), "{}", f.title);
    assert!(
        f.message
            .contains("AddressSanitizer: heap-buffer-overflow in tlv_parse::checksum")
            && f.message.contains(
                "Reproduce with: `cargo +nightly fuzz run parse fuzz/artifacts/parse/crash-"
            ),
        "{}",
        f.message
    );

    // The summary and the last progress carry libFuzzer's statistics.
    let t = &record.summary["targets"][0];
    assert_eq!(t["target"], "parse");
    assert_eq!(t["unique_crashes"], 1);
    assert!(
        t["execs"].as_u64().unwrap() > 0 && t["cov"].as_u64().unwrap() > 0,
        "{t}"
    );
    assert!(
        record.progress["execs"].as_u64().unwrap() > 0,
        "{}",
        record.progress
    );

    // The crashing input is an artifact, named in the finding.
    let input_name = record
        .artifacts
        .iter()
        .find(|a| a.starts_with("parse-crash-"))
        .unwrap_or_else(|| panic!("no crash input in {:?}", record.artifacts))
        .clone();
    assert!(f.message.contains(&input_name), "{}", f.message);
    assert!(record.artifacts.iter().any(|a| a == "corpus-parse.pack"));
    let run_dir = host.config.data_dir.join("runs").join(&record.run_id);
    let input = run_dir.join("artifacts").join(&input_name);
    assert!(std::fs::metadata(&input).unwrap().len() > 4);
    let sarif: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("findings.sarif")).unwrap()).unwrap();
    assert_valid_sarif(&sarif);

    // Replaying the stored input (a copy outside the run) with the run's
    // fuzz build reproduces the crash.
    let copy = tempfile::tempdir().unwrap();
    let replayed = copy.path().join(&input_name);
    std::fs::copy(&input, &replayed).unwrap();
    let binary = host
        .config
        .work_dir()
        .join(&record.run_id)
        .join("workspace/fuzz/target/x86_64-unknown-linux-gnu/release/parse");
    let out = Command::new(&binary)
        .arg(&replayed)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the input must crash the target");
    assert!(
        stderr.contains("ERROR: AddressSanitizer: heap-buffer-overflow")
            && stderr.contains("tlv_parse::checksum"),
        "{}",
        toolhost::text::truncate_start(&stderr, 3000)
    );
    let _ = std::fs::remove_dir_all(host.config.work_dir().join(&record.run_id));
}

/// A Rust panic in the crate under test (a path dependency of the fuzz
/// crate, compiled with absolute paths): its finding points at the panic's
/// line and column, relative to the target, and no host path reaches the
/// finding, the summary or the log.
#[tokio::test]
async fn a_panic_is_a_finding_at_its_line_and_column_without_host_paths() {
    let host = TestHost::new(&["cargo_fuzzing"], "");
    let engine = host.engine().await;
    let record = run(
        &engine,
        "cargo_fuzzing",
        &fixture("fuzz_crate"),
        json!({"target": "header", "budget_secs": 60, "sanitizer": "none"}),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{:?}", record.error);
    let f = record
        .findings
        .iter()
        .find(|f| f.rule_id == "fuzzing/panic")
        .unwrap_or_else(|| panic!("no panic finding: {:#?}", record.findings));
    let loc = f.location.as_ref().expect("a location");
    assert_eq!(
        (loc.path.as_str(), loc.start_line, loc.start_column),
        ("src/lib.rs", Some(44), Some(10)),
        "{f:#?}"
    );
    assert!(
        f.message
            .contains("panicked at src/lib.rs:44:10: attempt to add with overflow"),
        "{}",
        f.message
    );
    let run_dir = host.config.data_dir.join("runs").join(&record.run_id);
    let everything = toolhost_tests::canaries::all_text(&run_dir);
    let work = host.config.work_dir().display().to_string();
    assert!(
        !everything.contains(&work),
        "a host work path reached the record"
    );
    let home = std::env::var("HOME").unwrap();
    assert!(
        !everything.contains(&format!("{home}/")),
        "the host's home reached the record"
    );
}

#[tokio::test]
async fn cancel_stops_the_fuzzer_within_seconds_and_keeps_progress_and_corpus() {
    let host = TestHost::new(&["cargo_fuzzing"], "");
    let engine = host.engine().await;
    // `checksum` has no bug: it fuzzes for its whole budget.
    let mut req = RunRequest::new(
        "cargo_fuzzing",
        fixture("fuzz_crate"),
        json!({"target": "checksum", "budget_secs": 600, "checkpoint_secs": 5}),
    );
    let cancel = req.cancel.clone();
    req.run_id = Some(format!("fuzz-cancel-{}", std::process::id()));
    let running = tokio::spawn(async move { engine.run(req).await });

    let fuzzer = |cmd: &[u8]| {
        let cmd = String::from_utf8_lossy(cmd);
        cmd.contains("release/checksum") && cmd.contains("-max_total_time")
    };
    // The build takes a while on a cold cache.
    assert!(
        eventually(Duration::from_secs(300), || processes(fuzzer) > 0).await,
        "the fuzzer never started"
    );
    // Fuzz past one corpus checkpoint.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let t = Instant::now();
    cancel.cancel();
    let record = running.await.unwrap().expect("the run starts");
    let stopped_in = t.elapsed();
    assert!(
        stopped_in < Duration::from_secs(5),
        "stopped in {stopped_in:?}"
    );
    assert_eq!(processes(fuzzer), 0, "the fuzzer was killed");
    assert_eq!(record.status, RunStatus::Cancelled, "{:?}", record.error);
    // What it did so far is kept: live statistics and the corpus.
    assert_eq!(record.progress["target"], "checksum", "{}", record.progress);
    assert!(
        record.progress["execs"].as_u64().unwrap_or(0) > 1000,
        "{}",
        record.progress
    );
    assert!(
        record.progress["cov"].as_u64().unwrap_or(0) > 0,
        "{}",
        record.progress
    );
    assert!(
        record.artifacts.iter().any(|a| a == "corpus-checksum.pack"),
        "{:?}",
        record.artifacts
    );
}

#[tokio::test]
async fn bad_parameters_and_unknown_targets_are_refused_with_what_to_do() {
    let host = TestHost::new(&["cargo_fuzzing"], "");
    let engine = host.engine().await;
    let err = try_run(
        &engine,
        "cargo_fuzzing",
        &fixture("fuzz_crate"),
        json!({"budget_secs": 0}),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("invalid parameters for `cargo_fuzzing`") && err.contains("budget_secs"),
        "{err}"
    );
    let err = try_run(
        &engine,
        "cargo_fuzzing",
        &fixture("fuzz_crate"),
        json!({"sanitizer": "thread"}),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("sanitizer"), "{err}");

    let record = run(
        &engine,
        "cargo_fuzzing",
        &fixture("fuzz_crate"),
        json!({"target": "nope"}),
    )
    .await;
    assert_eq!(record.status, RunStatus::Failed);
    let err = record.error.unwrap_or_default();
    assert!(
        err.contains("fuzz target `nope` not found") && err.contains("checksum, header, parse"),
        "{err}"
    );

    let record = run(&engine, "cargo_fuzzing", &fixture("clean_crate"), json!({})).await;
    assert_eq!(record.status, RunStatus::Failed);
    let err = record.error.unwrap_or_default();
    assert!(
        err.contains("no cargo-fuzz project") && err.contains("cargo fuzz init"),
        "{err}"
    );
}
