//! `cargo xtask bench --scanners`: Toolhost's secret scan against
//! detect-secrets 1.5.0 (PyPI) on the same planted corpus, in one run.
//!
//! The corpus (under `target/bench/secrets-corpus/`, rebuilt each time from
//! a fixed seed) holds one planted secret of every kind the built-in rules
//! know, three times over with different values, each hidden in a file of
//! ordinary code; decoys (documented example keys, placeholders,
//! templates, hashes, identifiers named like secrets); and thousands of
//! ordinary files in a dozen languages, one in ten of them with hashes,
//! checksums and encoded data. Every tool scans the whole tree.
//!
//! Scoring is per line: a planted secret counts as found when the tool
//! reports a secret on one of its lines; every other line reported (in any
//! file) is a false positive. Speed is the corpus bytes over the wall time
//! of the whole command, start-up included, median of three runs after a
//! warm-up: `toolhost run security_assessment` with clippy off (the scan
//! runs as activity code in wasm, in the sandboxed host, on the run's
//! private copy of the target) against `detect-secrets scan --all-files`.
//! The time of the scan activity alone and the scanners crate's native
//! speed are reported beside them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use toolhost_scanners::secrets::samples::{self, Rng};

/// Ordinary files in the corpus.
const ORDINARY_FILES: usize = 4000;
/// Rounds of planted secrets (each a new value of every kind).
const ROUNDS: u64 = 3;
/// detect-secrets, pinned.
const DETECT_SECRETS: &str = "detect-secrets==1.5.0";
/// Timed runs per scanner, after one warm-up.
const RUNS: usize = 3;

pub async fn main() -> Result<()> {
    let root = super::repo().join("target/bench");
    let corpus = root.join("secrets-corpus");
    let truth = build_corpus(&corpus)?;
    let bytes = dir_bytes(&corpus)?;
    let files = truth.files;
    eprintln!(
        "bench: corpus {} with {} files, {:.1} MiB, {} planted secrets, {} decoy files",
        corpus.display(),
        files,
        bytes as f64 / (1 << 20) as f64,
        truth.planted.len(),
        truth.decoys
    );

    let toolhost = toolhost_scan(&root, &corpus)?;
    let native = native_scan(&corpus)?;
    let detect = detect_secrets_scan(&root, &corpus)?;

    let mut report = String::new();
    let mut out = |line: String| {
        println!("{line}");
        report.push_str(&line);
        report.push('\n');
    };
    out(format!(
        "# Secret scanning: Toolhost against detect-secrets\n\nplanted corpus: {files} files, {:.1} MiB, {} planted secrets of {} kinds, {} decoy files (seeded, `target/bench/secrets-corpus`); {} CPUs; times are medians of {RUNS} runs after a warm-up\n",
        bytes as f64 / (1 << 20) as f64,
        truth.planted.len(),
        truth.kinds,
        truth.decoys,
        super::num_cpus()
    ));
    out("| scanner | recall | false positives (lines) | wall time | MB/s |\n| --- | --- | --- | --- | --- |".into());
    let scan_only = Reported {
        lines: toolhost.lines.clone(),
        secs: toolhost.activity_secs,
        activity_secs: toolhost.activity_secs,
    };
    for (name, r) in [
        (
            "Toolhost: `toolhost run security_assessment -p clippy=false` (copy of the target, wasm activity, sandboxed host)",
            &toolhost,
        ),
        (
            "Toolhost: its scan activity alone (from the run log)",
            &scan_only,
        ),
        (DETECT_SECRETS, &detect),
        (
            "toolhost-scanners, native (the same rules, no host)",
            &native,
        ),
    ] {
        let score = score(&truth, r);
        out(format!(
            "| {name} | {}/{} ({:.1} %) | {} | {:.2} s | {:.1} |",
            score.found.len(),
            truth.planted.len(),
            100.0 * score.found.len() as f64 / truth.planted.len() as f64,
            score.false_positives.len(),
            r.secs,
            bytes as f64 / 1e6 / r.secs
        ));
    }
    let (ours, theirs) = (score(&truth, &toolhost), score(&truth, &detect));
    out(format!(
        "\nToolhost finds {} planted secrets detect-secrets misses and misses {} it finds; speed ratio {:.1}x end to end, {:.1}x for the scan activity.",
        ours.found.difference(&theirs.found).count(),
        theirs.found.difference(&ours.found).count(),
        detect.secs / toolhost.secs,
        detect.secs / toolhost.activity_secs,
    ));
    let missed = |s: &Score| -> BTreeMap<&str, usize> {
        truth
            .planted
            .iter()
            .filter(|(k, _)| !s.found.contains(*k))
            .fold(BTreeMap::new(), |mut m, (_, p)| {
                *m.entry(p.kind.as_str()).or_default() += 1;
                m
            })
    };
    if !missed(&ours).is_empty() {
        out(format!("\nKinds Toolhost missed: {:?}", missed(&ours)));
    }
    out(format!(
        "\nKinds detect-secrets missed: {:?}",
        missed(&theirs)
    ));
    let fp_by_dir = |s: &Score| -> BTreeMap<String, usize> {
        s.false_positives
            .iter()
            .fold(BTreeMap::new(), |mut m, (f, _)| {
                *m.entry(f.split('/').next().unwrap_or_default().to_string())
                    .or_default() += 1;
                m
            })
    };
    out(format!(
        "\nFalse positives by corpus directory (src: ordinary code, docs: decoys, app: planted files, off the secret's lines): Toolhost {:?}, detect-secrets {:?}",
        fp_by_dir(&ours),
        fp_by_dir(&theirs)
    ));
    if !ours.false_positives.is_empty() {
        let first: Vec<_> = ours.false_positives.iter().take(10).collect();
        out(format!(
            "\nToolhost's false positives (first 10): {first:?}"
        ));
    }
    let path = root.join("report-scanners.md");
    std::fs::write(&path, report)?;
    eprintln!("bench: report written to {}", path.display());
    Ok(())
}

/// What the corpus holds.
struct Truth {
    /// Planted file (relative) -> what was planted in it.
    planted: BTreeMap<String, Planted>,
    kinds: usize,
    decoys: usize,
    files: usize,
}

/// One planted secret: its kind and the lines it spans (1-based).
struct Planted {
    kind: String,
    lines: std::ops::RangeInclusive<u64>,
}

/// Lines (file, 1-based line) one scanner reported secrets on, and how
/// long it took.
struct Reported {
    lines: BTreeSet<(String, u64)>,
    secs: f64,
    /// Toolhost: the scan activity's own time.
    activity_secs: f64,
}

struct Score {
    /// The planted files whose secret it reported.
    found: BTreeSet<String>,
    /// Lines it reported that hold no planted secret.
    false_positives: BTreeSet<(String, u64)>,
}

fn score(truth: &Truth, r: &Reported) -> Score {
    let mut found = BTreeSet::new();
    let mut false_positives = BTreeSet::new();
    for (file, line) in &r.lines {
        match truth.planted.get(file) {
            Some(p) if p.lines.contains(line) => {
                found.insert(file.clone());
            }
            _ => {
                false_positives.insert((file.clone(), *line));
            }
        }
    }
    Score {
        found,
        false_positives,
    }
}

/// Lines of ordinary code in several languages: identifiers named like
/// secrets used as they should be, ids, URLs without credentials; with
/// `noisy`, also hashes, checksums and encoded data.
fn ordinary(r: &mut Rng, lang: &str, lines: usize, noisy: bool) -> String {
    let mut out = String::new();
    for i in 0..lines {
        let word = r.lower(8);
        let kind = i % 9;
        let high_entropy = kind == 7
            || matches!(
                (lang, kind),
                ("rs", 1 | 3)
                    | ("py", 1)
                    | ("js", 1 | 3)
                    | ("go", 1)
                    | ("java", 1)
                    | ("yaml", 1)
                    | ("json", 0 | 1)
                    | ("md", 1)
            );
        let kind = if high_entropy && !noisy { 8 } else { kind };
        let line = match (lang, kind) {
            ("rs", 0) => format!(
                "pub fn {word}_{i}(token: &str, password: &str) -> bool {{ check(token, password) }}"
            ),
            ("rs", 1) => format!(
                "    let digest = \"{}\"; // sha256 of the release",
                r.hex(64)
            ),
            ("rs", 2) => format!("    let token = std::env::var(\"API_TOKEN_{i}\")?;"),
            ("rs", 3) => format!("    const ID: &str = \"{}\";", r.uuid()),
            ("py", 0) => format!(
                "def {word}_{i}(api_key, secret):\n    return client.call(api_key=api_key, secret=secret)"
            ),
            ("py", 1) => format!("CHECKSUM = \"{}\"", r.hex(40)),
            ("py", 2) => format!("password = os.environ[\"DB_PASSWORD_{i}\"]"),
            ("py", 3) => format!("url = \"https://api.{word}.example.org/v1/items/{i}\""),
            ("js", 0) => {
                format!("export function {word}{i}(token) {{ return fetch(`/api/${{token}}`); }}")
            }
            ("js", 1) => format!("const integrity = \"sha384-{}\";", r.b64(64)),
            ("js", 2) => format!("const apiKey = process.env.API_KEY_{i};"),
            ("js", 3) => format!("const id = \"{}\";", r.uuid()),
            ("go", 0) => format!(
                "func {word}{i}(token string, secret []byte) error {{ return verify(token, secret) }}"
            ),
            ("go", 1) => format!("\tconst build = \"{}\"", r.hex(40)),
            ("go", 2) => format!("\tkey := os.Getenv(\"SIGNING_KEY_{i}\")"),
            ("java", 0) => format!(
                "    public boolean {word}{i}(String password) {{ return encoder.matches(password, hash); }}"
            ),
            ("java", 1) => format!(
                "    private static final String VERSION_HASH = \"{}\";",
                r.hex(32)
            ),
            ("yaml", 0) => format!("  {word}: {i}"),
            ("yaml", 1) => format!("  image: registry.example.org/{word}@sha256:{}", r.hex(64)),
            ("yaml", 2) => format!("  password: ${{{{ secrets.DB_PASSWORD_{i} }}}}"),
            ("yaml", 3) => format!("  token_file: /run/secrets/{word}"),
            ("json", 0) => format!(
                "  \"{word}\": {{ \"id\": \"{}\", \"count\": {i} }},",
                r.uuid()
            ),
            ("json", 1) => format!("  \"etag\": \"{}\",", r.hex(32)),
            ("md", 0) => format!("Set `API_KEY` in your environment before running `{word}`."),
            ("md", 1) => format!("The build {} passed on commit {}.", r.lower(6), r.hex(40)),
            (_, 4) => {
                format!("// {word} handles request number {i} and returns the parsed payload")
            }
            (_, 5) => format!("    value_{i} = compute({word}, {i})"),
            (_, 6) => format!("    log(\"processing {word} at step {i}\")"),
            (_, 7) => format!("    data_{i} = \"{}\"", r.b64(24)),
            _ => format!("    {word}_{i} = {}", r.next_u64() % 100000),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

const LANGS: &[(&str, &str)] = &[
    ("rs", "rs"),
    ("py", "py"),
    ("js", "js"),
    ("ts", "js"),
    ("go", "go"),
    ("java", "java"),
    ("yaml", "yaml"),
    ("json", "json"),
    ("md", "md"),
    ("toml", "yaml"),
    ("rb", "py"),
    ("sh", "py"),
];

fn build_corpus(dir: &Path) -> Result<Truth> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let mut r = Rng::new(0x5EC2E75);
    let mut planted = BTreeMap::new();
    let mut kinds = BTreeSet::new();
    let write = |rel: &str, text: &str| -> Result<()> {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().context("parent")?)?;
        std::fs::write(&p, text).with_context(|| format!("write {}", p.display()))
    };
    for i in 0..ORDINARY_FILES {
        let (ext, lang) = LANGS[i % LANGS.len()];
        let rel = format!("src/m{:02}/{}_{i}.{ext}", i % 40, r.lower(6));
        let lines = 40 + (r.next_u64() % 80) as usize;
        write(&rel, &ordinary(&mut r, lang, lines, i % 10 == 0))?;
    }
    for round in 0..ROUNDS {
        let mut sr = Rng::new(round + 1);
        for (n, s) in samples::secrets(&mut sr).into_iter().enumerate() {
            // Hidden in a file of ordinary code, with its own name.
            let rel = format!("app/r{round}/s{n:03}/{}", s.file);
            let (_, lang) = LANGS[n % LANGS.len()];
            let bare = s.file.starts_with('.')
                || s.file.ends_with(".pem")
                || s.file.ends_with(".json")
                || s.file.contains("id_")
                || s.file.ends_with(".ppk");
            let before = if bare {
                String::new()
            } else {
                ordinary(&mut r, lang, 8, false)
            };
            let after = if s.file.ends_with(".json") {
                String::new()
            } else {
                ordinary(&mut r, lang, 8, false)
            };
            let mut secret = s.text.clone();
            if !secret.ends_with('\n') {
                secret.push('\n');
            }
            let first = before.lines().count() as u64 + 1;
            let last = first + secret.lines().count().max(1) as u64 - 1;
            write(&rel, &format!("{before}{secret}{after}"))?;
            planted.insert(
                rel,
                Planted {
                    kind: s.rule.to_string(),
                    lines: first..=last,
                },
            );
            kinds.insert(s.rule);
        }
    }
    let mut decoys = 0;
    for round in 0..ROUNDS {
        let mut dr = Rng::new(100 + round);
        for (n, (file, text)) in samples::decoys(&mut dr).into_iter().enumerate() {
            write(&format!("docs/d{round}/{n:03}/{file}"), &text)?;
            decoys += 1;
        }
    }
    Ok(Truth {
        files: ORDINARY_FILES + planted.len() + decoys,
        planted,
        kinds: kinds.len(),
        decoys,
    })
}

fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in walk(dir) {
        total += std::fs::metadata(&e)?.len();
    }
    Ok(total)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                pending.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Runs `once` once to warm up, then [`RUNS`] times; the result of the
/// last run with the median times.
fn median_of(mut once: impl FnMut() -> Result<Reported>) -> Result<Reported> {
    // Each run starts from a flushed file system: the previous run's
    // deleted workspace (thousands of inodes) is not charged to the next.
    let sync = || Command::new("sync").status().map(|_| ());
    sync()?;
    once()?;
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        sync()?;
        runs.push(once()?);
    }
    let median = |f: &dyn Fn(&Reported) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let secs = median(&|r| r.secs);
    let activity_secs = median(&|r| r.activity_secs);
    let last = runs.pop().context("no run")?;
    Ok(Reported {
        lines: last.lines,
        secs,
        activity_secs,
    })
}

/// `toolhost run security_assessment` on the corpus, clippy off, with a
/// data directory (and so a compile cache) kept between runs.
fn toolhost_scan(root: &Path, corpus: &Path) -> Result<Reported> {
    let bin = super::repo().join("target/release/toolhost");
    let data = root.join("scanners-data");
    median_of(|| {
        let start = Instant::now();
        let out = Command::new(&bin)
            .current_dir(super::repo())
            .args(["--data-dir"])
            .arg(&data)
            .args([
                "run",
                "security_assessment",
                "-p",
                "clippy=false",
                "--json",
                "--target",
            ])
            .arg(corpus)
            .output()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let secs = start.elapsed().as_secs_f64();
        let record: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "toolhost run did not print a record: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        let lines = record["findings"]
            .as_array()
            .context("findings")?
            .iter()
            .filter(|f| {
                f["rule_id"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("secrets/"))
            })
            .filter_map(|f| {
                let path = f["location"]["path"].as_str()?;
                Some((path.to_string(), f["location"]["start_line"].as_u64()?))
            })
            .collect();
        let run_id = record["run_id"].as_str().context("run_id")?;
        let log = std::fs::read_to_string(data.join("runs").join(run_id).join("log.jsonl"))?;
        let ms: f64 = log
            .lines()
            .find_map(|l| {
                let m = l.split("activity `scan` completed in ").nth(1)?;
                m.split(' ').next()?.parse().ok()
            })
            .context("the run log names no scan activity time")?;
        std::fs::remove_dir_all(data.join("runs").join(run_id))?;
        Ok(Reported {
            lines,
            secs,
            activity_secs: ms / 1000.0,
        })
    })
}

/// The same rules, natively, over the same files (what the activity reads).
fn native_scan(corpus: &Path) -> Result<Reported> {
    let scanner = toolhost_scanners::default_scanner();
    median_of(|| {
        let start = Instant::now();
        let mut lines = BTreeSet::new();
        for p in walk(corpus) {
            let rel = p.strip_prefix(corpus)?.display().to_string();
            if !toolhost_scanners::should_scan(&rel) {
                continue;
            }
            let bytes = std::fs::read(&p)?;
            for hit in scanner.scan(&rel, &bytes) {
                lines.insert((rel.clone(), u64::from(hit.start_line.unwrap_or(0))));
            }
        }
        let secs = start.elapsed().as_secs_f64();
        Ok(Reported {
            lines,
            secs,
            activity_secs: secs,
        })
    })
}

/// `detect-secrets scan --all-files`, from inside the corpus (outside a
/// git repository it reports nothing when given an absolute path).
fn detect_secrets_scan(root: &Path, corpus: &Path) -> Result<Reported> {
    let venv = root.join("detect-secrets-venv");
    let exe = venv.join("bin/detect-secrets");
    if !exe.exists() {
        eprintln!("bench: installing {DETECT_SECRETS} into {}", venv.display());
        let ok = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()?
            .success()
            && Command::new(venv.join("bin/pip"))
                .args([
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    DETECT_SECRETS,
                ])
                .status()?
                .success();
        if !ok {
            bail!(
                "cannot install {DETECT_SECRETS} (PyPI) into {}",
                venv.display()
            );
        }
    }
    median_of(|| {
        let start = Instant::now();
        let out = Command::new(&exe)
            .args(["scan", "--all-files"])
            .current_dir(corpus)
            .output()
            .context("detect-secrets")?;
        let secs = start.elapsed().as_secs_f64();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "detect-secrets printed no report: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        let mut lines = BTreeSet::new();
        for (file, secrets) in report["results"].as_object().context("results")? {
            for secret in secrets.as_array().into_iter().flatten() {
                if let Some(line) = secret["line_number"].as_u64() {
                    lines.insert((file.trim_start_matches("./").to_string(), line));
                }
            }
        }
        Ok(Reported {
            lines,
            secs,
            activity_secs: secs,
        })
    })
}
