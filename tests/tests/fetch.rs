//! The dependency-fetch step: real crates build in the offline sandbox
//! because `cargo-fetch` (the only tool with network, through the egress
//! proxy) filled the cache first; an offline host says what is missing;
//! sources a target may not use are refused before anything runs.
//! crates.io is reachable where these tests run.

use serde_json::json;
use toolhost::engine::RunStatus;
use toolhost::manifest::AnalysisStatus;
use toolhost_tests::{TestHost, fixture, run};

/// A host whose cargo cache is a new, empty directory of its own.
fn host_with_empty_cache(edit: impl FnOnce(String) -> String) -> (TestHost, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let path = cache.path().join("cargo").display().to_string();
    let host = TestHost::with_config(&["rust_test", "security_assessment"], "", |text| {
        edit(text.replace("~/.cache/toolhost/cargo", &path))
    });
    (host, cache)
}

fn log_of(host: &TestHost, run_id: &str) -> String {
    std::fs::read_to_string(
        host.config
            .data_dir
            .join("runs")
            .join(run_id)
            .join("log.jsonl"),
    )
    .unwrap()
}

#[tokio::test]
async fn a_dependency_missing_from_the_cache_is_fetched_then_the_tests_build_offline() {
    let (host, cache) = host_with_empty_cache(|t| t);
    let engine = host.engine().await;
    let record = run(&engine, "rust_test", &fixture("deps_crate"), json!({})).await;
    assert_eq!(
        record.status,
        RunStatus::Succeeded,
        "{:?} {:#}",
        record.error,
        record.summary
    );
    assert_eq!(record.summary["passed"], 1, "{:#}", record.summary);
    let statuses: Vec<_> = record
        .analyses
        .iter()
        .map(|a| (a.name.as_str(), a.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("dependencies", AnalysisStatus::Ran),
            ("tests", AnalysisStatus::Ran)
        ]
    );
    let log = log_of(&host, &record.run_id);
    assert!(
        log.contains("tool `cargo-fetch` reached") && log.contains("index.crates.io:443"),
        "the fetch went through the egress proxy: {log}"
    );
    assert!(!log.contains("refused egress"), "{log}");
    let downloaded = std::fs::read_dir(cache.path().join("cargo/registry/cache"))
        .unwrap()
        .flatten()
        .any(|d| {
            std::fs::read_dir(d.path())
                .unwrap()
                .flatten()
                .any(|f| f.file_name().to_string_lossy().starts_with("itoa-1.0.15"))
        });
    assert!(downloaded, "itoa is in the fresh cache");
}

#[tokio::test]
async fn an_offline_host_says_which_dependency_is_missing() {
    let (host, _cache) = host_with_empty_cache(|t| {
        t.replace(
            "egress = [\"index.crates.io:443\", \"static.crates.io:443\"]",
            "egress = []",
        )
    });
    let engine = host.engine().await;
    let record = run(&engine, "rust_test", &fixture("deps_crate"), json!({})).await;
    assert_eq!(record.status, RunStatus::Failed);
    let deps = &record.analyses[0];
    assert_eq!(
        (deps.name.as_str(), deps.status),
        ("dependencies", AnalysisStatus::Failed)
    );
    let why = deps.reason.as_deref().unwrap_or_default();
    assert!(
        why.contains("does not download") && why.contains("itoa"),
        "{why}"
    );
    assert_eq!(
        record.analyses[1].status,
        AnalysisStatus::Failed,
        "the tests did not run"
    );
    assert!(
        record
            .error
            .unwrap()
            .contains("analysis `dependencies` failed")
    );
}

#[tokio::test]
async fn security_assessment_on_a_crate_with_dependencies_runs_clippy() {
    let (host, _cache) = host_with_empty_cache(|t| t);
    let engine = host.engine().await;
    let record = run(
        &engine,
        "security_assessment",
        &fixture("deps_crate"),
        json!({}),
    )
    .await;
    assert_eq!(record.status, RunStatus::Succeeded, "{:?}", record.error);
    let clippy = record.analyses.iter().find(|a| a.name == "clippy").unwrap();
    assert_eq!(clippy.status, AnalysisStatus::Ran, "{:?}", clippy.reason);
}
