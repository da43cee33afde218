//! `cargo_fuzzing`: runs a crate's `cargo fuzz` targets for a time budget,
//! streams libFuzzer's statistics as live progress, and turns each crash
//! into a finding with the sanitizer's summary, the crashing input (an
//! artifact) and the command that reproduces it. The corpus is
//! checkpointed as an artifact, so a campaign retried after a host restart
//! resumes from it instead of starting over.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use toolhost_scanners::libfuzzer::{StderrReader, parse_crash};
use toolhost_sdk::prelude::*;
use toolhost_sdk::{artifacts, log};

/// `cargo +nightly fuzz` (see the rust vertical's config).
const TOOL: &str = "cargo-fuzz";
/// Resolves crash stacks the sanitizer could not symbolize in the sandbox.
const SYMBOLIZER: &str = "llvm-symbolizer";
/// The activity that fuzzes one target.
const FUZZ: &str = "fuzz";

/// Parameters of `cargo_fuzzing`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Directory of the crate inside the target (the one holding `fuzz/`); "" = the root.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub path: String,
    /// Fuzz target to run (a name from `cargo fuzz list`); omit to run every target.
    #[serde(default)]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub target: Option<String>,
    /// Time budget per target, in seconds.
    #[serde(default = "default_budget")]
    #[schemars(range(min = 1, max = 21000))]
    pub budget_secs: u32,
    /// Sanitizer the targets are built with.
    #[serde(default)]
    pub sanitizer: Sanitizer,
    /// Fuzzing processes per target (libFuzzer `-fork`); 1 runs one in-process fuzzer.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub jobs: u32,
    /// Longest input libFuzzer generates, in bytes (libFuzzer's default when omitted).
    #[serde(default)]
    #[schemars(range(min = 1, max = 16777216))]
    pub max_len: Option<u32>,
    /// A directory of seed inputs inside the crate, e.g. `fuzz/seeds`; read, never written.
    #[serde(default)]
    #[schemars(length(min = 1, max = 4096))]
    pub seed_corpus: Option<String>,
    /// An input running longer than this many seconds is reported as a hang.
    #[serde(default = "default_input_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub input_timeout_secs: u32,
    /// How often the corpus is saved with the run (to resume from), in seconds.
    #[serde(default = "default_checkpoint")]
    #[schemars(range(min = 5, max = 3600))]
    pub checkpoint_secs: u32,
    /// Restart a target after a crash while its budget lasts, up to this
    /// many crashes; the target stops early when a crash repeats.
    #[serde(default = "default_max_crashes")]
    #[schemars(range(min = 1, max = 100))]
    pub max_crashes: u32,
}

fn default_budget() -> u32 {
    60
}
fn one() -> u32 {
    1
}
fn default_input_timeout() -> u32 {
    10
}
fn default_checkpoint() -> u32 {
    60
}
fn default_max_crashes() -> u32 {
    5
}

/// Sanitizer choice.
#[derive(Deserialize, Serialize, JsonSchema, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Sanitizer {
    /// AddressSanitizer: finds out-of-bounds and use-after-free accesses.
    #[default]
    Address,
    /// No sanitizer: faster, finds panics and aborts only.
    None,
}

impl Sanitizer {
    fn args(self) -> Vec<String> {
        match self {
            Sanitizer::Address => vec![],
            Sanitizer::None => vec!["--sanitizer".into(), "none".into()],
        }
    }
}

/// Input of the `fuzz` activity.
#[derive(Serialize, Deserialize)]
struct FuzzInput {
    crate_dir: String,
    target: String,
    budget_secs: u32,
    sanitizer: Sanitizer,
    jobs: u32,
    max_len: Option<u32>,
    seed_corpus: Option<String>,
    input_timeout_secs: u32,
    checkpoint_secs: u32,
    max_crashes: u32,
}

/// What fuzzing one target did.
#[derive(Serialize, Deserialize, Default)]
pub struct TargetSummary {
    target: String,
    execs: u64,
    execs_per_sec: u64,
    cov: u64,
    corpus: u64,
    /// Inputs restored from a checkpoint of an earlier attempt.
    resumed_inputs: u64,
    crashes: u32,
    /// Distinct crash signatures.
    unique_crashes: u32,
    elapsed_secs: u64,
    /// `budget`, `crash-repeated`, `max-crashes`, `interrupted` or `failed`.
    stopped: String,
    /// Why fuzzing this target failed (the fuzzer exited without a crash
    /// report), with the end of its output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The run summary.
#[derive(Serialize)]
pub struct Summary {
    targets: Vec<TargetSummary>,
    findings: u32,
    /// `build`, then `fuzz <target>` per target: what ran and what failed.
    analyses: Vec<Analysis>,
}

impl Summary {
    /// A run that stopped at the build: nothing was fuzzed.
    fn build_failed(deps: Analysis, reason: String) -> Self {
        log::warn!("{reason}");
        Summary {
            targets: Vec::new(),
            findings: 0,
            analyses: vec![deps, Analysis::failed("build", reason)],
        }
    }
}

pub struct CargoFuzzing;

impl Workflow for CargoFuzzing {
    const NAME: &'static str = "cargo_fuzzing";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Runs a crate's cargo-fuzz targets for a time budget with live statistics; crashes become findings with their input and a reproduce command.";
    const VERTICAL: &'static str = "rust";
    const TOOLS: &'static [&'static str] =
        &[toolhost_scanners::cargo::FETCH_TOOL, TOOL, SYMBOLIZER];
    const TAGS: &'static [&'static str] = &["security", "fuzzing", "rust"];
    const TIMEOUT_SECS: u32 = 21600;

    type Params = Params;
    type Output = Summary;

    fn run(ctx: &Context, params: Params) -> Result<Summary> {
        let crate_dir = params.path.trim_matches('/').to_string();
        let cwd = if crate_dir.is_empty() {
            ".".to_string()
        } else {
            crate_dir.clone()
        };
        if !workspace::exists(&join(&crate_dir, "fuzz/Cargo.toml"))? {
            bail!(
                "no cargo-fuzz project at `{}`: expected `{}` (create one with `cargo fuzz init`, or set `path` to the crate that has it)",
                if crate_dir.is_empty() {
                    "."
                } else {
                    &crate_dir
                },
                join(&crate_dir, "fuzz/Cargo.toml")
            );
        }
        if let Some(seeds) = &params.seed_corpus
            && !workspace::exists(&join(&crate_dir, seeds))?
        {
            bail!("seed corpus `{seeds}` does not exist in the crate at `{cwd}`");
        }

        // Tools are offline: the fuzz crate's dependencies (libfuzzer-sys,
        // the crate itself) are fetched first.
        let deps = toolhost_scanners::cargo::fetch_dependencies(&join(&crate_dir, "fuzz"))?;
        if deps.is_failed() {
            return Ok(Summary {
                targets: Vec::new(),
                findings: 0,
                analyses: vec![deps, toolhost_scanners::cargo::not_built("build")],
            });
        }

        progress(&serde_json::json!({"phase": "listing targets"}));
        let listed = tools::run(TOOL).arg("list").cwd(&cwd).output()?;
        if !listed.success() {
            return Ok(Summary::build_failed(
                deps,
                format!(
                    "`cargo fuzz list` failed (exit {:?}):\n{}",
                    listed.exit_code,
                    tail(&listed.stderr_str(), 20)
                ),
            ));
        }
        let all: Vec<String> = listed
            .stdout_str()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        let targets = match &params.target {
            Some(t) if all.contains(t) => vec![t.clone()],
            Some(t) => bail!(
                "fuzz target `{t}` not found; this crate has: {}",
                all.join(", ")
            ),
            None if all.is_empty() => bail!(
                "the crate's fuzz project has no targets (`cargo fuzz add <name>` creates one)"
            ),
            None => all,
        };
        let total = u64::from(params.budget_secs) * targets.len() as u64;
        if total > 21000 {
            bail!(
                "{} targets × {} s is {total} s, more than a run may take (21000 s): lower `budget_secs` or pick one `target`",
                targets.len(),
                params.budget_secs
            );
        }

        progress(&serde_json::json!({"phase": "building", "targets": targets}));
        let mut build = vec!["build".to_string()];
        build.extend(params.sanitizer.args());
        let built = tools::run(TOOL).args(build).cwd(&cwd).output()?;
        if !built.success() {
            return Ok(Summary::build_failed(
                deps,
                format!(
                    "building the fuzz targets failed (exit {:?}):\n{}",
                    built.exit_code,
                    tail(&built.stderr_str(), 40)
                ),
            ));
        }

        let mut summary = Summary {
            targets: Vec::new(),
            findings: 0,
            analyses: vec![deps, Analysis::ran("build")],
        };
        for target in targets {
            let input = FuzzInput {
                crate_dir: crate_dir.clone(),
                target: target.clone(),
                budget_secs: params.budget_secs,
                sanitizer: params.sanitizer,
                jobs: params.jobs,
                max_len: params.max_len,
                seed_corpus: params.seed_corpus.clone(),
                input_timeout_secs: params.input_timeout_secs,
                checkpoint_secs: params.checkpoint_secs,
                max_crashes: params.max_crashes,
            };
            let done: TargetSummary = ctx.activity(FUZZ, &input)?;
            let name = format!("fuzz {target}");
            summary.analyses.push(match &done.error {
                Some(why) => Analysis::failed(&name, why.clone()),
                None => Analysis::ran(&name),
            });
            summary.findings += done.unique_crashes;
            summary.targets.push(done);
        }
        Ok(summary)
    }

    fn activity(name: &str, input: &str) -> Result<String> {
        match name {
            FUZZ => toolhost_sdk::activity::handle(input, fuzz),
            other => Err(Error::msg(format!("unknown activity `{other}`"))),
        }
    }
}

fn join(dir: &str, rel: &str) -> String {
    if dir.is_empty() {
        rel.to_string()
    } else {
        format!("{dir}/{rel}")
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Activity code: fuzzes one target for its budget.
fn fuzz(input: FuzzInput) -> Result<TargetSummary> {
    let started = Instant::now();
    let budget = Duration::from_secs(u64::from(input.budget_secs));
    let cwd = if input.crate_dir.is_empty() {
        ".".to_string()
    } else {
        input.crate_dir.clone()
    };
    // Paths as the activity sees them (the workspace is its cwd).
    let corpus_rel = format!("fuzz/corpus/{}", input.target);
    // Activity code sees the workspace at `/workspace`.
    let corpus_dir = format!("/workspace/{}", join(&input.crate_dir, &corpus_rel));
    std::fs::create_dir_all(&corpus_dir)
        .map_err(|e| Error::msg(format!("cannot create `{corpus_dir}`: {e}")))?;
    let checkpoint = format!("corpus-{}.pack", input.target);
    let resumed = restore(&checkpoint, &corpus_dir)?;
    if resumed > 0 {
        log::info!(
            "target `{}`: resumed from {resumed} corpus inputs saved by an earlier attempt",
            input.target
        );
    }

    let mut s = TargetSummary {
        target: input.target.clone(),
        resumed_inputs: resumed,
        ..Default::default()
    };
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut last_checkpoint = Instant::now();
    let mut prior_execs = 0u64;
    loop {
        let left = budget.saturating_sub(started.elapsed());
        if left < Duration::from_secs(1) {
            s.stopped = "budget".into();
            break;
        }
        let mut args = vec!["run".to_string(), input.target.clone()];
        args.extend(input.sanitizer.args());
        if input.jobs > 1 {
            args.push(format!("--jobs={}", input.jobs));
        }
        args.push(corpus_rel.clone());
        if let Some(seeds) = &input.seed_corpus {
            args.push(seeds.clone());
        }
        args.push("--".into());
        args.push(format!("-max_total_time={}", left.as_secs().max(1)));
        args.push(format!("-timeout={}", input.input_timeout_secs));
        args.push("-print_final_stats=1".into());
        // LeakSanitizer needs /proc and ptrace-like thread stops, which the
        // tool sandbox does not allow: it would fail at exit. Off, openly.
        args.push("-detect_leaks=0".into());
        if let Some(n) = input.max_len {
            args.push(format!("-max_len={n}"));
        }
        let mut process = tools::run(TOOL).args(args).cwd(&cwd).start()?;
        let mut reader = StderrReader::default();
        let mut stdout_tail: Vec<u8> = Vec::new();
        let run_started = Instant::now();
        let mut interrupted = false;
        let exit = loop {
            let update = process.poll(Duration::from_secs(1))?;
            reader.feed(&update.stderr);
            stdout_tail.extend_from_slice(&update.stdout);
            if stdout_tail.len() > 64 * 1024 {
                stdout_tail.drain(..stdout_tail.len() - 64 * 1024);
            }
            let stats = &reader.stats;
            progress(&serde_json::json!({
                "target": input.target,
                "execs": prior_execs + stats.execs,
                "execs_per_sec": stats.execs_per_sec,
                "cov": stats.cov,
                "corpus": stats.corpus,
                "crashes": s.crashes,
                "elapsed_secs": started.elapsed().as_secs(),
                "budget_secs": input.budget_secs,
            }));
            if let Some(exit) = update.exited {
                break exit;
            }
            // libFuzzer stops itself at -max_total_time; a fuzzer wedged
            // past its budget is asked to stop.
            if !interrupted && run_started.elapsed() > left + Duration::from_secs(30) {
                log::warn!(
                    "target `{}`: still running 30 s past its budget; interrupting it",
                    input.target
                );
                process.interrupt();
                interrupted = true;
            }
            if last_checkpoint.elapsed() >= Duration::from_secs(u64::from(input.checkpoint_secs)) {
                save(&checkpoint, &corpus_dir);
                last_checkpoint = Instant::now();
            }
        };
        let execs = reader
            .final_stat("number_of_executed_units")
            .unwrap_or(reader.stats.execs);
        prior_execs += execs;
        s.execs = prior_execs;
        s.cov = s.cov.max(reader.stats.cov);
        s.corpus = reader.stats.corpus.max(s.corpus);
        let secs = started.elapsed().as_secs_f64().max(0.001);
        s.execs_per_sec = (s.execs as f64 / secs) as u64;

        if reader.inputs.is_empty() {
            if exit.exit_code != Some(0) && !interrupted {
                let mut why = tail(&reader.take_report(), 30);
                if why.is_empty() {
                    why = tail(&String::from_utf8_lossy(&stdout_tail), 30);
                }
                s.error = Some(format!(
                    "`cargo fuzz run {}` exited with {:?} without a crash report:\n{why}",
                    input.target, exit.exit_code
                ));
                s.stopped = "failed".into();
                break;
            }
            s.stopped = if interrupted {
                "interrupted".into()
            } else {
                "budget".into()
            };
            break;
        }
        // A crash: libFuzzer has stopped.
        s.crashes += 1;
        let report = reader.take_report();
        let fresh = report_crash(&input, &reader, &report, &mut seen);
        if !fresh {
            s.stopped = "crash-repeated".into();
            break;
        }
        s.unique_crashes += 1;
        if s.crashes >= input.max_crashes {
            s.stopped = "max-crashes".into();
            break;
        }
    }
    save(&checkpoint, &corpus_dir);
    s.elapsed_secs = started.elapsed().as_secs();
    progress(&serde_json::json!({
        "target": input.target, "execs": s.execs, "execs_per_sec": s.execs_per_sec,
        "cov": s.cov, "corpus": s.corpus, "crashes": s.crashes,
        "elapsed_secs": s.elapsed_secs, "budget_secs": input.budget_secs, "done": true,
    }));
    Ok(s)
}

/// Reports the crash libFuzzer just wrote, with its input as an artifact.
/// False when its signature was seen before in this campaign.
fn report_crash(
    input: &FuzzInput,
    reader: &StderrReader,
    text: &str,
    seen: &mut BTreeSet<String>,
) -> bool {
    let mut crash = parse_crash(text);
    // The crate's root as the fuzzer saw it: the artifact prefix minus
    // `fuzz/artifacts/<target>/`.
    let root = reader
        .artifact_prefix
        .as_deref()
        .and_then(|p| p.strip_suffix(&format!("fuzz/artifacts/{}/", input.target)))
        .unwrap_or("")
        .to_string();
    symbolize(&mut crash, &root);
    let crash = crash.relative_to(&root);
    let signature = crash.signature(&root);
    if !seen.insert(signature.clone()) {
        log::info!(
            "target `{}`: the same crash again ({signature})",
            input.target
        );
        return false;
    }
    let written = reader.inputs.last().cloned().unwrap_or_default();
    let file_name = written.rsplit('/').next().unwrap_or("crash").to_string();
    let rel_input = format!("fuzz/artifacts/{}/{file_name}", input.target);
    let artifact = format!("{}-{file_name}", input.target);
    let stored = match artifacts::put_file(&artifact, &join(&input.crate_dir, &rel_input)) {
        Ok(()) => format!(
            "The crashing input is artifact `{artifact}` (`toolhost artifacts <run-id>` downloads it)."
        ),
        Err(e) => {
            log::warn!("cannot store the crashing input `{rel_input}`: {e}");
            format!("The crashing input could not be stored: {e}.")
        }
    };
    let sanitizer_flag = match input.sanitizer {
        Sanitizer::Address => "",
        Sanitizer::None => " --sanitizer none",
    };
    let cd = if input.crate_dir.is_empty() {
        String::new()
    } else {
        format!("cd {} && ", input.crate_dir)
    };
    let reproduce = format!(
        "{cd}cargo +nightly fuzz run{sanitizer_flag} {} {rel_input}",
        input.target
    );
    let own = crash.own_frames(&root);
    let place = own.iter().find(|f| f.function != "(panic)").or(own.first());
    let title = match place {
        Some(f) if f.function != "(panic)" => format!(
            "{} in {} (fuzz target `{}`)",
            crash.kind, f.function, input.target
        ),
        _ => format!("{} (fuzz target `{}`)", crash.kind, input.target),
    };
    let stack: Vec<String> = own
        .iter()
        .take(8)
        .map(|f| {
            format!(
                "  {} {}:{}",
                f.function,
                join(&input.crate_dir, &f.file),
                f.line
            )
        })
        .collect();
    let message = format!(
        "Fuzz target `{}` crashed: {}\n\n{stored}\nReproduce with: `{reproduce}`\n\nSignature: {signature}\nStack (this crate's frames):\n{}",
        input.target,
        crash.summary,
        stack.join("\n")
    );
    let mut finding = Finding::new(
        format!("fuzzing/{}", crash.kind),
        crash.severity().into(),
        title,
    )
    .message(message)
    .fingerprint(format!("fuzz:{}:{signature}", input.target));
    if let Some(f) = own.first() {
        let at = join(&input.crate_dir, &f.file);
        finding = finding.at(at, f.line);
        if let Some(c) = f.column {
            finding = finding.column(c);
        }
    }
    report(finding);
    log::warn!("target `{}`: {} ({signature})", input.target, crash.summary);
    true
}

/// Resolves the frames of the fuzz target's binary that the sanitizer left
/// unsymbolized (its in-process symbolizer needs `/proc`, which the tool
/// sandbox does not expose), and names the crash site in the summary.
fn symbolize(crash: &mut toolhost_scanners::libfuzzer::Crash, root: &str) {
    for (module, offsets) in crash.unresolved() {
        // Only the fuzz target itself: system libraries say little.
        if !module.starts_with(root) || root.is_empty() {
            continue;
        }
        let out = tools::run(SYMBOLIZER)
            .arg(format!("--obj={module}"))
            .args(offsets.iter().map(|o| format!("{o:#x}")))
            .timeout(Duration::from_secs(60))
            .output();
        match out {
            Ok(out) if out.success() => crash.symbolize(&module, &offsets, &out.stdout_str()),
            Ok(out) => log::warn!(
                "llvm-symbolizer failed ({:?}): {}",
                out.exit_code,
                tail(&out.stderr_str(), 5)
            ),
            Err(e) => log::warn!("crash stacks stay unsymbolized: {e}"),
        }
    }
    let site = crash
        .own_frames(root)
        .into_iter()
        .find(|f| f.function != "(panic)");
    if let (Some(f), Some((head, _))) = (site, crash.summary.clone().split_once(" (/")) {
        crash.summary = format!("{head} in {} {}:{}", f.function, f.file, f.line);
    }
}

/// Corpus checkpoints: `THC1`, then per input a u16 name length, the
/// name, a u32 size and the bytes (little-endian).
const MAGIC: &[u8; 4] = b"THC1";
/// Largest checkpoint written; past it the smallest inputs are kept.
const MAX_CHECKPOINT: usize = 64 << 20;

/// Saves the corpus as artifact `name`; a failure is logged, not fatal.
fn save(name: &str, dir: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(String, Vec<u8>)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            (name.len() <= 255).then_some(())?;
            Some((name, std::fs::read(e.path()).ok()?))
        })
        .collect();
    files.sort_by_key(|(_, b)| b.len());
    let mut pack = MAGIC.to_vec();
    for (n, b) in files {
        if pack.len() + n.len() + b.len() + 6 > MAX_CHECKPOINT {
            break;
        }
        pack.extend_from_slice(&(n.len() as u16).to_le_bytes());
        pack.extend_from_slice(n.as_bytes());
        pack.extend_from_slice(&(b.len() as u32).to_le_bytes());
        pack.extend_from_slice(&b);
    }
    if let Err(e) = artifacts::put(name, &pack) {
        log::warn!("cannot checkpoint the corpus: {e}");
    }
}

/// Restores inputs of checkpoint `name` missing from `dir`; returns how
/// many the checkpoint held.
fn restore(name: &str, dir: &str) -> Result<u64> {
    let Some(pack) = artifacts::get(name)? else {
        return Ok(0);
    };
    let bad = || Error::msg(format!("corpus checkpoint `{name}` is malformed"));
    let mut rest = pack.strip_prefix(MAGIC.as_slice()).ok_or_else(bad)?;
    let mut count = 0;
    while !rest.is_empty() {
        let take = |rest: &mut &[u8], n: usize| -> Result<Vec<u8>> {
            if rest.len() < n {
                return Err(bad());
            }
            let (head, tail) = rest.split_at(n);
            *rest = tail;
            Ok(head.to_vec())
        };
        let n = u16::from_le_bytes(take(&mut rest, 2)?.try_into().map_err(|_| bad())?) as usize;
        let file = String::from_utf8(take(&mut rest, n)?).map_err(|_| bad())?;
        let size = u32::from_le_bytes(take(&mut rest, 4)?.try_into().map_err(|_| bad())?) as usize;
        let bytes = take(&mut rest, size)?;
        if file.is_empty() || file.contains('/') || file.starts_with('.') {
            return Err(bad());
        }
        let path = format!("{dir}/{file}");
        if !std::path::Path::new(&path).exists() {
            std::fs::write(&path, bytes)
                .map_err(|e| Error::msg(format!("cannot restore `{path}`: {e}")))?;
        }
        count += 1;
    }
    Ok(count)
}

toolhost_sdk::export_workflow!(CargoFuzzing);
