//! The shipped plugins, run through the real host against the fixtures:
//! every planted issue is found at its place with its severity, a clean
//! crate yields nothing, and the SARIF written is valid.

use serde_json::json;
use toolhost::engine::RunStatus;
use toolhost::manifest::{AnalysisStatus, Severity};
use toolhost_tests::{TestHost, assert_valid_sarif, fixture, run};

/// How analysis `name` of a run ended.
fn analysis(record: &toolhost::engine::RunRecord, name: &str) -> AnalysisStatus {
    record
        .analyses
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("no analysis `{name}` in {:?}", record.analyses))
        .status
}

/// (rule, file, line, severity) rows of `vulnerable_crate/PLANTED.md`.
fn planted() -> Vec<(String, String, u32, Severity)> {
    planted_in("vulnerable_crate")
}

#[tokio::test]
async fn security_assessment_finds_every_planted_issue() {
    let host = TestHost::new(&["security_assessment"], "");
    let engine = host.engine().await;
    let record = run(
        &engine,
        "security_assessment",
        &fixture("vulnerable_crate"),
        json!({}),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{:?}", record.error);

    let expected: Vec<_> = planted()
        .into_iter()
        .filter(|(rule, ..)| !rule.starts_with("test/"))
        .collect();
    assert!(expected.len() >= 8, "PLANTED.md lists the issues");
    for (rule, file, line, severity) in &expected {
        let hit = record.findings.iter().find(|f| {
            f.rule_id == *rule
                && f.location
                    .as_ref()
                    .is_some_and(|l| l.path == *file && l.start_line == Some(*line))
        });
        let hit = hit.unwrap_or_else(|| {
            panic!(
                "{rule} at {file}:{line} not found; got {:#?}",
                record.findings
            )
        });
        assert_eq!(hit.severity, *severity, "{rule}");
    }
    assert_eq!(
        record.findings.len(),
        expected.len(),
        "unexpected extra findings: {:#?}",
        record.findings
    );
    // Secrets never appear in full in the messages.
    assert!(
        record
            .findings
            .iter()
            .all(|f| !f.message.contains("AKIAQYLPMN5HHHFPZAM2"))
    );
    assert_eq!(analysis(&record, "clippy"), AnalysisStatus::Ran);
    assert_eq!(analysis(&record, "dependencies"), AnalysisStatus::Ran);

    let sarif: serde_json::Value =
        serde_json::from_slice(&record.sarif_bytes()).expect("SARIF is JSON");
    assert_valid_sarif(&sarif);
    assert_eq!(
        sarif["runs"][0]["results"].as_array().unwrap().len(),
        expected.len()
    );
    // The file written to the run directory is the same valid document.
    let on_disk = host
        .config
        .data_dir
        .join("runs")
        .join(&record.run_id)
        .join("findings.sarif");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(on_disk).unwrap()).unwrap();
    assert_valid_sarif(&written);
}

#[tokio::test]
async fn security_assessment_on_a_clean_crate_reports_nothing() {
    let host = TestHost::new(&["security_assessment"], "");
    let engine = host.engine().await;
    let record = run(
        &engine,
        "security_assessment",
        &fixture("clean_crate"),
        json!({}),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{:?}", record.error);
    assert!(record.findings.is_empty(), "{:#?}", record.findings);
    assert_valid_sarif(&serde_json::from_slice(&record.sarif_bytes()).unwrap());
}

#[tokio::test]
async fn security_assessment_filters_by_min_severity() {
    let host = TestHost::new(&["security_assessment"], "");
    let engine = host.engine().await;
    let record = run(
        &engine,
        "security_assessment",
        &fixture("vulnerable_crate"),
        json!({"min_severity": "high", "clippy": false}),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{:?}", record.error);
    assert!(!record.findings.is_empty());
    assert!(record.findings.iter().all(|f| f.severity >= Severity::High));
    assert_eq!(analysis(&record, "clippy"), AnalysisStatus::Disabled);
}

#[tokio::test]
async fn rust_test_reports_the_failing_test_at_its_panic_site() {
    let host = TestHost::new(&["rust_test"], "");
    let engine = host.engine().await;
    let record = run(
        &engine,
        "rust_test",
        &fixture("vulnerable_crate"),
        json!({}),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{:?}", record.error);
    let (rule, file, line, severity) = planted()
        .into_iter()
        .find(|(r, ..)| r == "test/failed")
        .unwrap();
    assert_eq!(record.findings.len(), 1, "{:#?}", record.findings);
    let f = &record.findings[0];
    assert_eq!(f.rule_id, rule);
    assert_eq!(f.severity, severity);
    let loc = f.location.as_ref().unwrap();
    assert_eq!(
        (loc.path.as_str(), loc.start_line),
        (file.as_str(), Some(line))
    );
    assert!(f.title.contains("splits_host_and_port"), "{}", f.title);
    assert_eq!(record.summary["failed"], 1);
    assert!(record.summary["passed"].as_u64().unwrap() >= 2);
}

#[tokio::test]
async fn rust_test_on_a_clean_crate_reports_nothing() {
    let host = TestHost::new(&["rust_test"], "");
    let engine = host.engine().await;
    let record = run(&engine, "rust_test", &fixture("clean_crate"), json!({})).await;
    assert_eq!(record.status, RunStatus::Succeeded, "{:?}", record.error);
    assert!(record.findings.is_empty(), "{:#?}", record.findings);
    assert_eq!(record.summary["failed"], 0);
    assert!(record.summary["passed"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn rust_test_refuses_a_target_without_a_crate() {
    let host = TestHost::new(&["rust_test"], "");
    let engine = host.engine().await;
    let empty = tempfile::tempdir().unwrap();
    let record = run(&engine, "rust_test", empty.path(), json!({})).await;
    assert_eq!(record.status, RunStatus::Failed);
    assert!(record.error.unwrap().contains("no Cargo.toml"));
}

#[tokio::test]
async fn hello_greets_and_the_user_tree_is_untouched() {
    let host = TestHost::new(&["hello"], "");
    let engine = host.engine().await;
    let target = tempfile::tempdir().unwrap();
    std::fs::write(target.path().join("a.txt"), "x").unwrap();
    let record = run(&engine, "hello", target.path(), json!({"name": "tests"})).await;
    assert_eq!(record.status, RunStatus::Succeeded);
    assert_eq!(record.summary["greeting"], "hello, tests!");
    let names: Vec<_> = std::fs::read_dir(target.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "the target must not be modified");
    // The workspace copy is removed after the run.
    let work = host.config.work_dir().join(&record.run_id);
    assert!(!work.exists());
}

/// (rule, file, line, severity) rows of a fixture's `PLANTED.md`.
fn planted_in(fixture_dir: &str) -> Vec<(String, String, u32, Severity)> {
    let text = std::fs::read_to_string(fixture(&format!("{fixture_dir}/PLANTED.md"))).unwrap();
    text.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| rule_id") && !l.starts_with("| ---"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (
                cells[1].to_string(),
                cells[2].to_string(),
                cells[3].parse().unwrap(),
                cells[4].parse().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn python_sast_finds_every_planted_issue() {
    let host = TestHost::new(&["python_sast"], "");
    let engine = host.engine().await;
    let record = run(
        &engine,
        "python_sast",
        &fixture("vulnerable_python"),
        json!({}),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{:?}", record.error);
    assert_eq!(
        analysis(&record, "bandit"),
        AnalysisStatus::Ran,
        "{}",
        record.summary
    );

    let expected = planted_in("vulnerable_python");
    assert!(expected.len() >= 10, "PLANTED.md lists the issues");
    let found: Vec<(String, String, u32, Severity)> = record
        .findings
        .iter()
        .filter_map(|f| {
            let l = f.location.as_ref()?;
            Some((f.rule_id.clone(), l.path.clone(), l.start_line?, f.severity))
        })
        .collect();
    for row in &expected {
        assert!(found.contains(row), "{row:?} not found; got {found:#?}");
    }
    assert_eq!(
        record.findings.len(),
        expected.len(),
        "unexpected extra findings: {found:#?}"
    );
    // Bandit's findings keep its columns, CWE and advice.
    let shell = record
        .findings
        .iter()
        .find(|f| f.rule_id == "bandit/B602")
        .unwrap();
    assert_eq!(shell.location.as_ref().unwrap().start_column, Some(12));
    assert!(shell.message.contains("CWE-78"), "{}", shell.message);
    // The secret is never shown in full.
    assert!(
        record
            .findings
            .iter()
            .all(|f| !f.message.contains("AKIAQYLPMN5HHHFPZAM2"))
    );
    assert_valid_sarif(&serde_json::from_slice(&record.sarif_bytes()).unwrap());
}

#[tokio::test]
async fn python_sast_filters_by_confidence_and_skips_tests() {
    let host = TestHost::new(&["python_sast"], "");
    let engine = host.engine().await;
    let record = run(
        &engine,
        "python_sast",
        &fixture("vulnerable_python"),
        json!({"min_confidence": "high", "skip": ["B602", "B404"], "scan_files": false}),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{:?}", record.error);
    let rules: Vec<&str> = record.findings.iter().map(|f| f.rule_id.as_str()).collect();
    // B105 has medium confidence; B602 and B404 are skipped; no secret scan.
    for gone in [
        "bandit/B105",
        "bandit/B602",
        "bandit/B404",
        "secrets/aws-access-key",
    ] {
        assert!(!rules.contains(&gone), "{gone} reported: {rules:?}");
    }
    for kept in ["bandit/B301", "bandit/B506", "bandit/B324", "bandit/B307"] {
        assert!(rules.contains(&kept), "{kept} missing: {rules:?}");
    }
    assert_eq!(record.summary["files_scanned"], 0);
}

#[tokio::test]
async fn python_sast_rejects_a_bad_skip_id() {
    let host = TestHost::new(&["python_sast"], "");
    let engine = host.engine().await;
    let err = engine
        .check_params("python_sast", &json!({"skip": ["B602; rm -rf /"]}))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("invalid parameters for `python_sast`") && err.contains("skip"),
        "{err}"
    );
}

#[tokio::test]
async fn python_sast_without_bandit_fails_says_how_to_install_and_keeps_the_secrets() {
    let host = TestHost::with_config(&["python_sast"], "", |text| {
        assert!(text.contains("~/.toolhost/python/bin/bandit"));
        text.replace(
            "~/.toolhost/python/bin/bandit",
            "/nonexistent/toolhost/bandit",
        )
    });
    let engine = host.engine().await;
    let record = run(
        &engine,
        "python_sast",
        &fixture("vulnerable_python"),
        json!({}),
    )
    .await;
    assert_eq!(record.status, RunStatus::Failed, "{:?}", record.error);
    let err = record.error.clone().unwrap_or_default();
    assert!(
        err.contains("analysis `bandit` failed: bandit did not produce its report")
            && err.contains("/nonexistent/toolhost/bandit")
            && err.contains("install it: python3 -m venv"),
        "{err}"
    );
    assert_eq!(analysis(&record, "bandit"), AnalysisStatus::Failed);
    assert_eq!(
        record.summary["files_scanned"], 6,
        "the summary is kept (the five sources and PLANTED.md)"
    );
    // The secret scan ran before, and its findings are kept.
    assert!(
        record
            .findings
            .iter()
            .any(|f| f.rule_id == "secrets/aws-access-key"),
        "{:#?}",
        record.findings
    );
    assert_valid_sarif(&serde_json::from_slice(&record.sarif_bytes()).unwrap());
}

/// A clean crate copied with `extra` files written into it.
fn clean_crate_with(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("clean_crate");
    for entry in walkdir(&src) {
        let rel = entry.strip_prefix(&src).unwrap();
        let to = dir.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
    for (path, text) in extra {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// clippy that never analysed anything (cargo could not even load its
/// configuration) is a failed analysis, a failed run, and an unsuccessful
/// SARIF invocation with the reason, never "clippy found nothing".
#[tokio::test]
async fn clippy_that_could_not_run_fails_the_analysis_with_its_reason() {
    let host = TestHost::new(&["security_assessment"], "");
    let engine = host.engine().await;
    let target = clean_crate_with(&[(".cargo/config.toml", "this is [ not toml")]);
    let record = run(&engine, "security_assessment", target.path(), json!({})).await;
    assert_eq!(record.status, RunStatus::Failed, "{:#}", record.summary);
    assert_eq!(analysis(&record, "clippy"), AnalysisStatus::Failed);
    assert_eq!(analysis(&record, "secrets"), AnalysisStatus::Ran);
    let error = record.error.clone().unwrap();
    assert!(
        error.contains(
            "analysis `clippy` failed: cargo stopped before clippy could analyse the code"
        ) && error.contains("could not load Cargo configuration"),
        "{error}"
    );
    let sarif: serde_json::Value = serde_json::from_slice(&record.sarif_bytes()).unwrap();
    assert_valid_sarif(&sarif);
    let inv = &sarif["runs"][0]["invocations"][0];
    assert_eq!(inv["executionSuccessful"], false);
    let notes = inv["toolExecutionNotifications"].as_array().unwrap();
    assert!(
        notes.iter().any(|n| n["level"] == "error"
            && n["properties"]["analysis"] == "clippy"
            && n["message"]["text"]
                .as_str()
                .unwrap()
                .contains("could not load Cargo configuration")),
        "{notes:?}"
    );
}

/// A crate whose code does not compile: clippy's lints did not run, which
/// the analysis says, and the compile error is a finding.
#[tokio::test]
async fn a_crate_that_does_not_compile_fails_the_clippy_analysis() {
    let host = TestHost::new(&["security_assessment"], "");
    let engine = host.engine().await;
    let target = clean_crate_with(&[("src/broken.rs", "pub fn f() -> u32 { \"text\" }\n")]);
    let lib = std::fs::read_to_string(target.path().join("src/lib.rs")).unwrap();
    std::fs::write(
        target.path().join("src/lib.rs"),
        format!("{lib}\npub mod broken;\n"),
    )
    .unwrap();
    let record = run(&engine, "security_assessment", target.path(), json!({})).await;
    assert_eq!(record.status, RunStatus::Failed);
    let clippy = record.analyses.iter().find(|a| a.name == "clippy").unwrap();
    assert_eq!(clippy.status, AnalysisStatus::Failed);
    let why = clippy.reason.as_deref().unwrap();
    assert!(
        why.contains("does not compile") && why.contains("mismatched types"),
        "{why}"
    );
    assert!(
        record.findings.iter().any(|f| f.rule_id == "rustc/E0308"
            && f.location
                .as_ref()
                .is_some_and(|l| l.path == "src/broken.rs" && l.start_line == Some(1))),
        "{:#?}",
        record.findings
    );
}
