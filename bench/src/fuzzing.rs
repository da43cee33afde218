//! `cargo xtask bench --fuzzing`: libFuzzer executions per second through
//! Toolhost (`cargo_fuzzing`, tool sandbox on) against `cargo fuzz run`
//! launched directly on the same target for the same time.
//!
//! Target: `checksum` of `tests/fixtures/fuzz_crate` (no bug: it fuzzes for
//! the whole budget). Both sides start from an empty corpus and include
//! cargo-fuzz's start-up in their time; rounds alternate the sides.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use serde_json::json;
use toolhost::engine::{LocalEngine, RunRequest, RunStatus};
use toolhost::runtime::{EngineOptions, Runtime};
use toolhost::toolbox::Toolbox;

/// Seconds each side fuzzes per round.
const BUDGET: u64 = 30;
const ROUNDS: usize = 3;

pub async fn main() -> Result<()> {
    let fixture = super::repo().join("tests/fixtures/fuzz_crate");
    let dir = tempfile::tempdir()?;
    let config = super::config_for(dir.path())?;
    std::fs::copy(
        super::repo().join("toolbox/cargo_fuzzing.wasm"),
        config.toolbox.join("cargo_fuzzing.wasm"),
    )
    .context("toolbox/cargo_fuzzing.wasm is missing: run `cargo xtask build-plugins`")?;
    let runtime = Runtime::new(&EngineOptions::for_host(&config))?;
    let toolbox = Toolbox::open(runtime, config.clone()).await?;
    let engine = Arc::new(LocalEngine::new(toolbox)?);

    // The direct side: a copy of the fixture, built once.
    let direct = dir.path().join("direct");
    copy_dir(&fixture, &direct)?;
    let built = Command::new("cargo")
        .args(["+nightly", "fuzz", "build", "checksum"])
        .current_dir(&direct)
        .status()
        .context("cargo fuzz")?;
    if !built.success() {
        bail!("cargo fuzz build failed in {}", direct.display());
    }

    let mut report = String::new();
    let mut out = |line: String| {
        println!("{line}");
        report.push_str(&line);
        report.push('\n');
    };
    out(format!(
        "# Fuzzing throughput\n\ntarget `checksum` of tests/fixtures/fuzz_crate, {BUDGET} s per side per round, address sanitizer, {} CPUs\n",
        super::num_cpus()
    ));
    out("| round | Toolhost execs/s | direct `cargo fuzz run` execs/s | ratio | direct with leak detection (libFuzzer default) | ratio |\n| --- | --- | --- | --- | --- | --- |".into());
    let (mut ours, mut theirs, mut quiet) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let t = toolhost_side(&engine, &fixture).await?;
        let d = direct_side(&direct, false)?;
        let q = direct_side(&direct, true)?;
        out(format!(
            "| {round} | {t:.0} | {d:.0} | {:.1} % | {q:.0} | {:.1} % |",
            100.0 * t / d,
            100.0 * t / q
        ));
        ours.push(t);
        theirs.push(d);
        quiet.push(q);
    }
    let (t, d, q) = (median(ours), median(theirs), median(quiet));
    out(format!(
        "\nmedian: Toolhost {t:.0} execs/s, direct {d:.0} execs/s: **{:.1} %** (goal >= 95 %); against direct with leak detection on ({q:.0} execs/s): **{:.1} %**\n",
        100.0 * t / d,
        100.0 * t / q
    ));
    let path = super::repo().join("target/bench/report-fuzzing.md");
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(&path, report)?;
    eprintln!("report written to {}", path.display());
    Ok(())
}

/// One `cargo_fuzzing` run; execs/s over the fuzzing activity's time (its
/// build is not counted: the direct side is built beforehand too).
async fn toolhost_side(engine: &LocalEngine, fixture: &Path) -> Result<f64> {
    let req = RunRequest::new(
        "cargo_fuzzing",
        fixture,
        json!({"target": "checksum", "budget_secs": BUDGET, "checkpoint_secs": 3600}),
    );
    let record = engine.run(req).await?;
    if record.status != RunStatus::Succeeded {
        bail!("cargo_fuzzing {:?}: {:?}", record.status, record.error);
    }
    let t = &record.summary["targets"][0];
    let execs = t["execs"].as_f64().context("execs")?;
    let secs = t["elapsed_secs"].as_f64().context("elapsed")?.max(1.0);
    Ok(execs / secs)
}

/// `cargo fuzz run` for the same time from an empty corpus, with the same
/// flags as `cargo_fuzzing` (which turns leak detection off: LeakSanitizer
/// cannot run in the tool sandbox). With `leaks`, libFuzzer's default leak
/// detection stays on.
fn direct_side(dir: &Path, leaks: bool) -> Result<f64> {
    let corpus = dir.join("fuzz/corpus/checksum");
    let _ = std::fs::remove_dir_all(&corpus);
    std::fs::create_dir_all(&corpus)?;
    let t = Instant::now();
    let mut cmd = Command::new("cargo");
    if !leaks {
        cmd.env("ASAN_OPTIONS", "detect_leaks=0");
    }
    let out = cmd
        .args([
            "+nightly",
            "fuzz",
            "run",
            "checksum",
            "fuzz/corpus/checksum",
            "--",
        ])
        .arg(format!("-max_total_time={BUDGET}"))
        .args(["-timeout=10", "-print_final_stats=1"])
        .arg(format!("-detect_leaks={}", u8::from(leaks)))
        .current_dir(dir)
        .output()
        .context("cargo fuzz run")?;
    let secs = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let execs = stderr
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| {
            format!(
                "no final stats in:\n{}",
                toolhost::text::truncate_start(&stderr, 2000)
            )
        })?;
    // Whole seconds, as the workflow reports its elapsed time.
    Ok(execs / secs.floor().max(1.0))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)?.flatten() {
        let name = entry.file_name();
        if name == "target" || name == "corpus" || name == "artifacts" {
            continue;
        }
        let dest = to.join(&name);
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}
