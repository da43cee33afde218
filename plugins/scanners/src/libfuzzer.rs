//! libFuzzer's standard error, read as it streams: status lines become
//! live statistics, a crash report becomes a [`Crash`] with a stable
//! signature, a severity and the in-crate location.
//!
//! Formats handled (libFuzzer as built by `cargo fuzz`):
//! * status: `#4096 NEW cov: 57 ft: 65 corp: 7/37b lim: 17 exec/s: 2048 rss: 40Mb ...`
//!   and, in fork mode (`-fork=N`), `#4096: cov: 57 ft: 65 corp: 7 exec/s 2048 ...`;
//! * final statistics (`-print_final_stats=1`): `stat::number_of_executed_units: 12345`;
//! * crash reports: sanitizer reports (`==1==ERROR: AddressSanitizer: heap-buffer-overflow ...`,
//!   `SUMMARY: ...`), Rust panics (`thread '<unnamed>' panicked at src/lib.rs:3:5:`),
//!   libFuzzer's own (`ERROR: libFuzzer: timeout after 10 seconds`), and
//!   `Test unit written to <path>`, the crashing input.

use serde::Serialize;

use crate::Severity;

/// Live statistics of one fuzzer, from its latest status line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Inputs executed so far.
    pub execs: u64,
    /// Executions per second, as libFuzzer reports it.
    pub execs_per_sec: u64,
    /// Coverage: edges (`cov`).
    pub cov: u64,
    /// Features (`ft`).
    pub ft: u64,
    /// Inputs in the corpus.
    pub corpus: u64,
}

/// Parses one status line; `None` for anything else.
pub fn parse_status(line: &str) -> Option<Stats> {
    let rest = line.strip_prefix('#')?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    let execs = rest[..end].parse().ok()?;
    let words: Vec<&str> = rest[end..].split_whitespace().collect();
    let after = |key: &str| -> Option<u64> {
        let i = words.iter().position(|w| *w == key)?;
        let v = words.get(i + 1)?;
        let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    Some(Stats {
        execs,
        cov: after("cov:")?,
        ft: after("ft:").unwrap_or(0),
        corpus: after("corp:").unwrap_or(0),
        execs_per_sec: after("exec/s:").or_else(|| after("exec/s")).unwrap_or(0),
    })
}

/// Parses a `stat::name: value` line of `-print_final_stats=1`.
pub fn parse_final_stat(line: &str) -> Option<(&str, u64)> {
    let rest = line.strip_prefix("stat::")?;
    let (name, value) = rest.split_once(':')?;
    Some((name, value.trim().parse().ok()?))
}

/// One frame of a sanitizer stack trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Frame {
    pub function: String,
    pub file: String,
    pub line: u32,
    pub column: Option<u32>,
    /// For a frame the sanitizer could not symbolize: the binary and the
    /// offset of the frame's instruction in it.
    pub unresolved: Option<(String, u64)>,
}

/// A crash, parsed from the report libFuzzer printed before it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Crash {
    /// What went wrong: `heap-buffer-overflow`, `panic`, `timeout`, ...
    pub kind: String,
    /// `READ` or `WRITE` for memory errors.
    pub access: Option<String>,
    /// The sanitizer's one-line summary (`SUMMARY: ...`), or the panic.
    pub summary: String,
    /// The panic message, for Rust panics.
    pub panic: Option<String>,
    /// Frames of the crashing stack (the first trace only).
    pub frames: Vec<Frame>,
    /// Where the crashing input was written (`Test unit written to ...`).
    pub input: Option<String>,
}

/// Parses a crash report (the fuzzer's stderr around the crash).
pub fn parse_crash(report: &str) -> Crash {
    let mut kind = None;
    let mut access = None;
    let mut summary = None;
    let mut panic = None;
    let mut panic_at = None;
    let mut frames = Vec::new();
    let mut frames_done = false;
    let mut input = None;
    let mut lines = report.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if let Some((_, rest)) = t.split_once("ERROR: ").filter(|_| t.starts_with("==")) {
            // `==1==ERROR: AddressSanitizer: heap-buffer-overflow on ...`,
            // `==1== ERROR: libFuzzer: deadly signal`.
            if kind.is_none() {
                kind = rest
                    .split_once(": ")
                    .and_then(|(_, k)| k.split_whitespace().next())
                    .map(|k| match k {
                        "deadly" => "deadly-signal".to_string(),
                        "detected" => "leak".to_string(),
                        k => k.to_string(),
                    });
            }
        } else if let Some(rest) = t.strip_prefix("SUMMARY: ") {
            summary.get_or_insert_with(|| rest.to_string());
        } else if access.is_none()
            && (t.starts_with("READ of size") || t.starts_with("WRITE of size"))
        {
            access = t.split_whitespace().next().map(str::to_string);
        } else if let Some(at) = t
            .split_once("panicked at ")
            .filter(|(head, _)| head.starts_with("thread "))
            .map(|(_, at)| at.trim_end_matches(':'))
        {
            panic_at = Some(at.to_string());
            // The message is the next line (current Rust) or after a comma.
            if let Some(next) = lines.peek() {
                panic = Some(next.trim().to_string());
            }
        } else if let Some(frame) = parse_frame(t) {
            if !frames_done {
                frames.push(frame);
            }
        } else if !frames.is_empty() {
            // The first trace ends at the first line that is not a frame.
            frames_done = true;
        }
        if let Some((_, path)) = t.split_once("Test unit written to ") {
            input = Some(path.trim().to_string());
        }
    }
    let mut kind = kind.unwrap_or_else(|| "crash".into());
    if panic.is_some() {
        kind = "panic".into();
        if let Some((file, line, column)) = panic_at.as_deref().and_then(split_location) {
            frames.insert(
                0,
                Frame {
                    function: "(panic)".into(),
                    file,
                    line,
                    column,
                    unresolved: None,
                },
            );
        }
    }
    let summary = match (&panic, &panic_at) {
        (Some(m), Some(at)) => format!("panicked at {at}: {m}"),
        _ => summary.unwrap_or_else(|| format!("libFuzzer: {kind}")),
    };
    Crash {
        kind,
        access,
        summary,
        panic,
        frames,
        input,
    }
}

/// `    #10 0x5637b843cb52 in tlv_parse::checksum /path/src/lib.rs:36:10`, or
/// unsymbolized: `    #1 0x5639f784ff56  (/path/parse+0x144f56) (BuildId: c798...)`.
fn parse_frame(line: &str) -> Option<Frame> {
    let rest = line.strip_prefix('#')?;
    let index: u32 = rest.split_whitespace().next()?.parse().ok()?;
    let Some((_, rest)) = rest.split_once(" in ") else {
        let inner = rest.split_once('(')?.1.split_once(')')?.0;
        let (module, offset) = inner.rsplit_once("+0x")?;
        let offset = u64::from_str_radix(offset, 16).ok()?;
        return Some(Frame {
            function: String::new(),
            file: String::new(),
            line: 0,
            column: None,
            // Above the first frame the offset is a return address: the
            // call is the instruction before it.
            unresolved: Some((
                module.to_string(),
                if index > 0 {
                    offset.saturating_sub(1)
                } else {
                    offset
                },
            )),
        });
    };
    let (function, location) = rest.rsplit_once(' ')?;
    let (file, line_no, column) = split_location(location)?;
    Some(Frame {
        function: function.to_string(),
        file,
        line: line_no,
        column,
        unresolved: None,
    })
}

/// `path:line[:column]`.
fn split_location(s: &str) -> Option<(String, u32, Option<u32>)> {
    let mut parts = s.rsplitn(3, ':');
    let last = parts.next()?;
    let mid = parts.next()?;
    match (parts.next(), mid.parse::<u32>(), last.parse::<u32>()) {
        (Some(file), Ok(line), Ok(col)) => Some((file.to_string(), line, Some(col))),
        (_, _, Ok(line)) => {
            let file = s.rsplit_once(':')?.0;
            Some((file.to_string(), line, None))
        }
        _ => None,
    }
}

impl Crash {
    /// Frames the sanitizer could not symbolize (its symbolizer could not
    /// run), by binary: feed each binary's offsets to `llvm-symbolizer
    /// --obj=<binary>` and its output to [`Crash::symbolize`].
    pub fn unresolved(&self) -> Vec<(String, Vec<u64>)> {
        let mut by_module: Vec<(String, Vec<u64>)> = Vec::new();
        for (module, offset) in self.frames.iter().filter_map(|f| f.unresolved.clone()) {
            match by_module.iter_mut().find(|(m, _)| *m == module) {
                Some((_, offsets)) => offsets.push(offset),
                None => by_module.push((module, vec![offset])),
            }
        }
        by_module
    }

    /// Resolves the frames of `module` from `llvm-symbolizer` output for
    /// `offsets` (one block per address, inlined calls first, blocks
    /// separated by blank lines). Each address may become several frames.
    pub fn symbolize(&mut self, module: &str, offsets: &[u64], output: &str) {
        let blocks: Vec<Vec<Frame>> = output
            .split("\n\n")
            .map(|block| {
                let lines: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
                lines
                    .chunks(2)
                    .filter_map(|pair| {
                        let function = pair.first()?.trim();
                        let (file, line, column) = split_location(pair.get(1)?.trim())?;
                        (function != "??").then(|| Frame {
                            function: function.to_string(),
                            file,
                            line,
                            column: column.filter(|c| *c > 0),
                            unresolved: None,
                        })
                    })
                    .collect()
            })
            .collect();
        let mut frames = Vec::with_capacity(self.frames.len());
        for f in std::mem::take(&mut self.frames) {
            let resolved = match &f.unresolved {
                Some((m, off)) if m == module => offsets
                    .iter()
                    .position(|o| o == off)
                    .and_then(|i| blocks.get(i))
                    .filter(|b| !b.is_empty()),
                _ => None,
            };
            match resolved {
                Some(b) => frames.extend(b.iter().cloned()),
                None => frames.push(f),
            }
        }
        self.frames = frames;
    }

    /// Frames in the fuzzed crate: files under `root` (the crate's absolute
    /// path as the fuzzer saw it), with `root` stripped.
    pub fn own_frames(&self, root: &str) -> Vec<Frame> {
        self.frames
            .iter()
            .filter(|f| f.unresolved.is_none())
            .filter_map(|f| {
                let rel = if f.function == "(panic)" {
                    // A panic location is relative to the workspace it was
                    // compiled in, which for the crate under test (a path
                    // dependency of the fuzz crate) is absolute.
                    f.file
                        .strip_prefix(root)
                        .filter(|_| !root.is_empty())
                        .unwrap_or(f.file.as_str())
                } else {
                    f.file.strip_prefix(root).filter(|_| !root.is_empty())?
                };
                (!rel.starts_with('/') && !rel.contains("/.cargo/registry/")).then(|| Frame {
                    file: rel.to_string(),
                    ..f.clone()
                })
            })
            .collect()
    }

    /// The crash with `root` (the crate's absolute path as the fuzzer saw
    /// it, ending in `/`) removed from its summary and panic location, so
    /// its text names crate-relative paths only.
    pub fn relative_to(mut self, root: &str) -> Self {
        if !root.is_empty() {
            self.summary = self.summary.replace(root, "");
        }
        self
    }

    /// A stable identity of the bug: its kind and the crate's functions on
    /// the crashing stack (no addresses, no line numbers), so the same bug
    /// found through different inputs or builds is reported once.
    pub fn signature(&self, root: &str) -> String {
        let mut sig = self.kind.clone();
        if let Some(a) = &self.access {
            sig.push(' ');
            sig.push_str(a);
        }
        let own = self.own_frames(root);
        let named: Vec<&str> = own
            .iter()
            .filter(|f| f.function != "(panic)")
            .map(|f| f.function.as_str())
            .take(3)
            .collect();
        if !named.is_empty() {
            sig.push_str(" in ");
            sig.push_str(&named.join(" < "));
        } else if let Some(f) = own.first() {
            sig.push_str(&format!(" at {}", f.file));
        }
        if let Some(p) = &self.panic {
            // Messages carry values (`index out of bounds: the len is 3`):
            // keep their text before the first digit.
            let stable: String = p.chars().take_while(|c| !c.is_ascii_digit()).collect();
            sig.push_str(&format!(": {}", stable.trim()));
        }
        sig
    }

    /// How bad it is: memory writes and use-after-free are critical, other
    /// memory errors high, panics and aborts medium, resource limits low.
    pub fn severity(&self) -> Severity {
        let k = self.kind.as_str();
        let memory = k.contains("overflow")
            || k.contains("use-after")
            || k.contains("double-free")
            || k.contains("bad-free")
            || k == "SEGV"
            || k.contains("invalid");
        if k.contains("use-after")
            || k.contains("double-free")
            || (memory && self.access.as_deref() == Some("WRITE"))
        {
            Severity::Critical
        } else if memory {
            Severity::High
        } else if matches!(k, "timeout" | "out-of-memory" | "malloc" | "leak") {
            Severity::Low
        } else {
            Severity::Medium
        }
    }
}

/// Reads a fuzzer's stderr incrementally: whole lines only, the latest
/// statistics, final statistics, and the text of the crash report.
#[derive(Debug, Default)]
pub struct StderrReader {
    partial: String,
    /// Latest status.
    pub stats: Stats,
    /// `stat::` lines seen (`number_of_executed_units`, ...).
    pub final_stats: Vec<(String, u64)>,
    /// Lines from the first error line on (capped).
    report: Vec<String>,
    in_report: bool,
    /// Crashing inputs written, in order.
    pub inputs: Vec<String>,
    /// `-artifact_prefix=` of the fuzzer's command line, when seen.
    pub artifact_prefix: Option<String>,
}

/// Most report lines kept per crash.
const MAX_REPORT_LINES: usize = 400;

impl StderrReader {
    /// Feeds new bytes; returns true when a new status line was read.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        self.partial.push_str(&String::from_utf8_lossy(bytes));
        let mut updated = false;
        while let Some(nl) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=nl).collect();
            updated |= self.line(line.trim_end());
        }
        // A line longer than 64 KiB is not a report line worth keeping.
        if self.partial.len() > 64 * 1024 {
            self.partial.clear();
        }
        updated
    }

    fn line(&mut self, line: &str) -> bool {
        if let Some(s) = parse_status(line) {
            self.stats = s;
            return true;
        }
        if let Some((name, v)) = parse_final_stat(line) {
            self.final_stats.push((name.to_string(), v));
            return false;
        }
        if self.artifact_prefix.is_none()
            && let Some(p) = line.split("-artifact_prefix=").nth(1)
        {
            self.artifact_prefix = p
                .split_whitespace()
                .next()
                .map(|s| s.trim_matches('\'').to_string());
        }
        let starts_report = line.contains("ERROR: ")
            && (line.starts_with("==") || line.contains("libFuzzer"))
            || (line.starts_with("thread ") && line.contains(" panicked at "));
        if starts_report {
            self.in_report = true;
        }
        if self.in_report && self.report.len() < MAX_REPORT_LINES {
            self.report.push(line.to_string());
        }
        if let Some((_, path)) = line.split_once("Test unit written to ") {
            self.inputs.push(path.trim().to_string());
            if !self.in_report {
                self.report.push(line.to_string());
            }
            self.in_report = false;
        }
        false
    }

    /// The crash report read so far, and forgets it (a restarted fuzzer
    /// starts a new one).
    pub fn take_report(&mut self) -> String {
        self.in_report = false;
        std::mem::take(&mut self.report).join("\n")
    }

    /// A final statistic by name.
    pub fn final_stat(&self, name: &str) -> Option<u64> {
        self.final_stats
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ASAN: &str = include_str!("../testdata/libfuzzer_asan_crash.stderr");
    const ROOT: &str = "/work/main/tests/fixtures/fuzz_crate/";

    #[test]
    fn status_lines() {
        let s = parse_status(
            "#2598\tNEW    cov: 59 ft: 65 corp: 7/37b lim: 17 exec/s: 1300 rss: 40Mb L: 8/8 MS: 3",
        )
        .unwrap();
        assert_eq!(
            s,
            Stats {
                execs: 2598,
                execs_per_sec: 1300,
                cov: 59,
                ft: 65,
                corpus: 7
            }
        );
        let fork = parse_status("#120000: cov: 80 ft: 140 corp: 31 exec/s 40000 oom/timeout/crash: 0/0/0 time: 3s job: 2 dft_time: 0").unwrap();
        assert_eq!(
            fork,
            Stats {
                execs: 120000,
                execs_per_sec: 40000,
                cov: 80,
                ft: 140,
                corpus: 31
            }
        );
        assert_eq!(parse_status("#10 0x5637b843cb52 in main /x.rs:1:1"), None);
        assert_eq!(parse_status("INFO: Seed: 1"), None);
        assert_eq!(
            parse_final_stat("stat::number_of_executed_units: 5231"),
            Some(("number_of_executed_units", 5231))
        );
    }

    #[test]
    fn asan_report_becomes_a_crash() {
        let mut r = StderrReader::default();
        // Fed in odd-sized chunks, as a pipe delivers it.
        for chunk in ASAN.as_bytes().chunks(333) {
            r.feed(chunk);
        }
        assert!(r.stats.execs > 1000 && r.stats.cov > 0, "{:?}", r.stats);
        assert_eq!(
            r.artifact_prefix.as_deref(),
            Some("/work/main/tests/fixtures/fuzz_crate/fuzz/artifacts/parse/")
        );
        assert_eq!(r.inputs.len(), 1);
        assert!(
            r.inputs[0]
                .ends_with("/fuzz/artifacts/parse/crash-576ca59ecfeaad2ba9763691e0d0438fdac3c7cb")
        );
        let crash = parse_crash(&r.take_report());
        assert_eq!(crash.kind, "heap-buffer-overflow");
        assert_eq!(crash.access.as_deref(), Some("READ"));
        assert!(
            crash
                .summary
                .starts_with("AddressSanitizer: heap-buffer-overflow"),
            "{}",
            crash.summary
        );
        assert_eq!(crash.severity(), Severity::High);
        let own = crash.own_frames(ROOT);
        assert_eq!(own[0].file, "src/lib.rs");
        assert_eq!(own[0].function, "tlv_parse::checksum");
        assert_eq!(own[0].line, 36);
        assert_eq!(own[1].file, "fuzz/fuzz_targets/parse.rs");
        assert_eq!(
            crash.signature(ROOT),
            "heap-buffer-overflow READ in tlv_parse::checksum < parse::_::__libfuzzer_sys_run"
        );
        // Only the crashing stack: not the allocation's.
        assert!(crash.frames.iter().all(|f| f.function != "malloc"));
    }

    #[test]
    fn unsymbolized_frames_are_resolved_offline() {
        let report = "==17==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x7c3a at pc 0x56 bp 0x7f sp 0x7f\nREAD of size 1 at 0x7c3a thread T0\n    #0 0x5639f7852b72  (/w/fuzz/target/x86_64-unknown-linux-gnu/release/parse+0x147b72) (BuildId: c798)\n    #1 0x5639f784ff56  (/w/fuzz/target/x86_64-unknown-linux-gnu/release/parse+0x144f56) (BuildId: c798)\n    #2 0x7f00  (/lib/x86_64-linux-gnu/libc.so.6+0x29d8f) (BuildId: 1)\n\n0x7c3a is located 0 bytes after 78-byte region\nSUMMARY: AddressSanitizer: heap-buffer-overflow (/w/fuzz/target/x86_64-unknown-linux-gnu/release/parse+0x147b72) (BuildId: c798)\n";
        let mut c = parse_crash(report);
        assert_eq!(
            c.signature("/w/"),
            "heap-buffer-overflow READ",
            "nothing known before symbolizing"
        );
        let binary = "/w/fuzz/target/x86_64-unknown-linux-gnu/release/parse";
        assert_eq!(
            c.unresolved(),
            vec![
                (binary.to_string(), vec![0x147b72, 0x144f55]),
                ("/lib/x86_64-linux-gnu/libc.so.6".to_string(), vec![0x29d8e])
            ]
        );
        // What `llvm-symbolizer --obj=<binary> 0x147b72 0x144f55` prints:
        // the first address is in an inlined call.
        let out = "fold<u8, u32>\n/rustc/abc/library/core/src/slice/iter/macros.rs:279:27\ntlv_parse::checksum\n/w/src/lib.rs:36:10\n\nparse::_::__libfuzzer_sys_run\n/w/fuzz/fuzz_targets/parse.rs:7:17\n\n";
        c.symbolize(binary, &[0x147b72, 0x144f55], out);
        let own = c.own_frames("/w/");
        assert_eq!(
            (own[0].function.as_str(), own[0].file.as_str(), own[0].line),
            ("tlv_parse::checksum", "src/lib.rs", 36)
        );
        assert_eq!(
            c.signature("/w/"),
            "heap-buffer-overflow READ in tlv_parse::checksum < parse::_::__libfuzzer_sys_run"
        );
        assert_eq!(c.unresolved().len(), 1, "libc stays unresolved");
    }

    #[test]
    fn panics_and_timeouts() {
        let panic = "thread '<unnamed>' panicked at src/lib.rs:12:9:\nindex out of bounds: the len is 3 but the index is 7\nnote: run with `RUST_BACKTRACE=1`\n==77== ERROR: libFuzzer: deadly signal\n    #0 0x55 in __sanitizer_print_stack_trace /rustc/llvm/x.cpp:87:3\n    #7 0x55 in tlv_parse::parse /w/src/lib.rs:12:9\nSUMMARY: libFuzzer: deadly signal\nTest unit written to /w/fuzz/artifacts/parse/crash-abc\n";
        let c = parse_crash(panic);
        assert_eq!(c.kind, "panic");
        assert_eq!(c.severity(), Severity::Medium);
        assert_eq!(
            c.summary,
            "panicked at src/lib.rs:12:9: index out of bounds: the len is 3 but the index is 7"
        );
        assert_eq!(
            c.signature("/w/"),
            "panic in tlv_parse::parse: index out of bounds: the len is"
        );
        assert_eq!(
            c.input.as_deref(),
            Some("/w/fuzz/artifacts/parse/crash-abc")
        );
        let other_input = panic
            .replace("is 7", "is 9")
            .replace("crash-abc", "crash-def");
        assert_eq!(
            parse_crash(&other_input).signature("/w/"),
            c.signature("/w/"),
            "same bug, other input"
        );

        // The crate under test is a path dependency of the fuzz crate, so
        // its panic location is absolute: made crate-relative, with its line.
        let abs = "thread '<unnamed>' (4242) panicked at /tmp/toolhost-0/work-1/run/workspace/src/lib.rs:20:18:\nattempt to add with overflow\n==7== ERROR: libFuzzer: deadly signal\nSUMMARY: libFuzzer: deadly signal\n";
        let root = "/tmp/toolhost-0/work-1/run/workspace/";
        let c = parse_crash(abs).relative_to(root);
        assert_eq!(
            c.summary,
            "panicked at src/lib.rs:20:18: attempt to add with overflow"
        );
        let own = c.own_frames(root);
        assert_eq!(
            (own[0].file.as_str(), own[0].line, own[0].column),
            ("src/lib.rs", 20, Some(18))
        );

        let timeout = "ALARM: working on the last Unit for 11 seconds\n==9== ERROR: libFuzzer: timeout after 11 seconds\nSUMMARY: libFuzzer: timeout\n";
        let t = parse_crash(timeout);
        assert_eq!(t.kind, "timeout");
        assert_eq!(t.severity(), Severity::Low);
        assert_eq!(t.summary, "libFuzzer: timeout");
    }
}
