//! Parsing of `cargo test` output (libtest's human format).

use std::sync::LazyLock;

use regex::Regex;

use crate::{Hit, Severity, dedup, normalize_path};

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in pattern is valid")
}

static ANSI: LazyLock<Regex> =
    LazyLock::new(|| re(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\([A-Za-z0-9]|\x1b[=>]"));
/// `test name ... FAILED` (pretty format) or `name --- FAILED` (terse, `-q`).
static FAILED_TEST: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(?:test (.+?) \.\.\. FAILED|(\S.*?) --- FAILED)$"));
static RUNNING: LazyLock<Regex> = LazyLock::new(|| re(r"^running \d+ tests?$"));
static BLOCK_HEADER: LazyLock<Regex> = LazyLock::new(|| re(r"^---- (.+?) std(?:out|err) ----$"));
/// Since Rust 1.73: `thread 'name' panicked at src/lib.rs:10:5:`, the
/// message on the following lines; newer versions add the thread id:
/// `thread 'name' (1234) panicked at ...`.
static PANIC: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^thread '(?P<thread>[^']*)'(?: \(\d+\))? panicked at (?P<file>.+?):(?P<line>\d+):(?P<col>\d+):$",
    )
});
/// Before Rust 1.73: `thread 'name' panicked at 'message', src/lib.rs:10:5`.
static OLD_PANIC: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^thread '(?P<thread>[^']*)'(?: \(\d+\))? panicked at '(?P<msg>.*)', (?P<file>.+?):(?P<line>\d+):(?P<col>\d+)$",
    )
});
static NO_PANIC: LazyLock<Regex> = LazyLock::new(|| {
    re(r"test did not panic as expected(?: at (?P<file>.+?):(?P<line>\d+):(?P<col>\d+))?")
});
static DOC_TEST: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(?P<file>\S+) - .*\(line (?P<line>\d+)\)$"));
static COMPILE_ERROR: LazyLock<Regex> =
    LazyLock::new(|| re(r"^error(?:\[(?P<code>E\d{4})\])?: (?P<msg>.+)$"));
static ERROR_LOCATION: LazyLock<Regex> =
    LazyLock::new(|| re(r"^\s*--> (?P<file>.+?):(?P<line>\d+):(?P<col>\d+)$"));

/// Where and why one test failed.
#[derive(Default)]
struct Failure {
    location: Option<(String, u32, u32)>,
    message: String,
}

/// Parses `cargo test` output (stdout and stderr as captured) into one
/// `test/failed` hit per failing test, located at its panic, or one
/// `test/build-failed` hit if the tests did not compile.
///
/// Failing tests come from `test some::name ... FAILED` lines (or
/// `some::name --- FAILED` with `-q`, or the `failures:` list); the location
/// and message from that test's panic in the failures section (`thread
/// 'some::name' panicked at src/lib.rs:10:5:` followed by the message),
/// falling back to a panic line of the same thread anywhere in the output.
/// `#[should_panic]` tests that did not panic, tests returning `Err` and doc
/// tests are understood too. A build failure (`error[E...]` or `error: could
/// not compile`) gives a single `High` hit with the first error and its
/// `-->` location.
pub fn parse_cargo_test(stdout: &str, stderr: &str) -> Vec<Hit> {
    let stdout = ANSI.replace_all(stdout, "");
    let stderr = ANSI.replace_all(stderr, "");
    let lines: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .map(|l| l.trim_end_matches('\r'))
        .collect();

    let mut hits = Vec::new();
    if let Some(hit) = build_failure(&lines) {
        hits.push(hit);
    }

    // Each test binary prints its own `running N tests` section; names are
    // only unique within one.
    let mut sections: Vec<&[&str]> = Vec::new();
    let mut start = 0;
    for (i, line) in lines.iter().enumerate() {
        if RUNNING.is_match(line) && i > start {
            sections.push(&lines[start..i]);
            start = i;
        }
    }
    sections.push(&lines[start..]);

    for section in sections {
        for name in failed_tests(section) {
            let failure = failure_block(section, &name)
                .map(|block| describe_block(&block))
                .or_else(|| panic_of_thread(&lines, &name))
                .unwrap_or_default();
            hits.push(test_hit(&name, failure));
        }
    }
    dedup(hits)
}

/// Names of the failed tests of one section, in order: from the per-test
/// result lines, and from the `failures:` list at the end of the section
/// (which is all there is in some output formats).
fn failed_tests(section: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        let name = name.trim_end_matches(" - should panic");
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    };
    for (i, line) in section.iter().enumerate() {
        if let Some(caps) = FAILED_TEST.captures(line) {
            add(caps.get(1).or(caps.get(2)).map_or("", |m| m.as_str()));
        } else if *line == "failures:" {
            let list = section[i + 1..]
                .iter()
                .skip_while(|l| l.trim().is_empty())
                .take_while(|l| l.starts_with("    ") && !l.starts_with("     "));
            for entry in list {
                add(entry.trim());
            }
        }
    }
    names
}

/// The lines of the `---- name stdout ----` block of `name`.
fn failure_block<'a>(section: &[&'a str], name: &str) -> Option<Vec<&'a str>> {
    let start = section.iter().position(|l| {
        BLOCK_HEADER
            .captures(l)
            .is_some_and(|c| c[1].trim_end_matches(" - should panic") == name)
    })?;
    let block = section[start + 1..]
        .iter()
        .take_while(|l| {
            !BLOCK_HEADER.is_match(l) && **l != "failures:" && !l.starts_with("test result:")
        })
        .copied()
        .collect();
    Some(block)
}

/// The panic (or other failure) described by a failure block.
fn describe_block(block: &[&str]) -> Failure {
    if let Some(f) = find_panic(block, |_| true) {
        return f;
    }
    for line in block {
        if let Some(c) = NO_PANIC.captures(line) {
            return Failure {
                location: location(c.name("file"), c.name("line"), c.name("col")),
                message: "test did not panic as expected (`#[should_panic]`)".to_string(),
            };
        }
    }
    // A test returning `Err(...)` prints `Error: ...`; otherwise keep the
    // captured output itself.
    let text: Vec<&str> = block
        .iter()
        .map(|l| l.trim_end())
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .take(20)
        .collect();
    Failure {
        location: None,
        message: text.join("\n"),
    }
}

/// The first panic line in `lines` whose thread name passes `thread_ok`,
/// with the message lines after it.
fn find_panic(lines: &[&str], thread_ok: impl Fn(&str) -> bool) -> Option<Failure> {
    for (i, line) in lines.iter().enumerate() {
        if let Some(c) = PANIC.captures(line).filter(|c| thread_ok(&c["thread"])) {
            let message: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| {
                    !l.trim().is_empty()
                        && !l.starts_with("note: ")
                        && !l.starts_with("stack backtrace:")
                        && !l.starts_with("thread '")
                        && !BLOCK_HEADER.is_match(l)
                })
                .take(40)
                .copied()
                .collect();
            return Some(Failure {
                location: location(c.name("file"), c.name("line"), c.name("col")),
                message: message.join("\n"),
            });
        }
        if let Some(c) = OLD_PANIC.captures(line).filter(|c| thread_ok(&c["thread"])) {
            return Some(Failure {
                location: location(c.name("file"), c.name("line"), c.name("col")),
                message: c["msg"].to_string(),
            });
        }
    }
    None
}

/// A panic of the test's own thread anywhere in the output (as printed with
/// `--nocapture`, when there is no failures section for it).
fn panic_of_thread(lines: &[&str], name: &str) -> Option<Failure> {
    find_panic(lines, |thread| thread == name)
}

/// A location in the crate: paths into the toolchain or the registry are of
/// no use to the reader and are dropped.
fn location(
    file: Option<regex::Match<'_>>,
    line: Option<regex::Match<'_>>,
    col: Option<regex::Match<'_>>,
) -> Option<(String, u32, u32)> {
    let file = normalize_path(file?.as_str());
    if file.starts_with("/rustc/") || file.contains("/.cargo/registry/") {
        return None;
    }
    let line = line?.as_str().parse().ok()?;
    let col = col.and_then(|c| c.as_str().parse().ok()).unwrap_or(1);
    Some((file, line, col))
}

fn test_hit(name: &str, failure: Failure) -> Hit {
    let location = failure.location.or_else(|| {
        // A doc test is named `src/lib.rs - item (line 3)`.
        let c = DOC_TEST.captures(name)?;
        Some((normalize_path(&c["file"]), c["line"].parse().ok()?, 1))
    });
    let at = location
        .as_ref()
        .map(|(f, l, c)| format!(" at {f}:{l}:{c}"))
        .unwrap_or_default();
    let why = if failure.message.is_empty() {
        "(no panic message was captured)".to_string()
    } else {
        failure.message
    };
    let message = format!(
        "Test `{name}` failed{at}:\n{why}\n\nReproduce it with `cargo test -- --exact '{name}'`, \
         then fix the code under test or, if the expectation is wrong, the test."
    );
    let (path, line, col) = match location {
        Some((f, l, c)) => (Some(f), Some(l), Some(c)),
        None => (None, None, None),
    };
    Hit::new(
        "test/failed",
        format!("test `{name}` failed"),
        message,
        Severity::Medium,
        path,
        line,
        line,
        col,
        name,
    )
}

/// One hit for a compilation failure: the first error and its location.
fn build_failure(lines: &[&str]) -> Option<Hit> {
    let failed = lines
        .iter()
        .any(|l| l.starts_with("error[E") || l.starts_with("error: could not compile"));
    if !failed {
        return None;
    }
    let is_summary = |msg: &str| {
        msg.starts_with("could not compile")
            || msg.starts_with("test failed")
            || msg.starts_with("doctest failed")
            || msg.starts_with("aborting due to")
            || msg.contains("targets failed")
            || msg.starts_with("build failed")
    };
    let first = lines.iter().enumerate().find_map(|(i, l)| {
        let c = COMPILE_ERROR.captures(l)?;
        (!is_summary(&c["msg"])).then_some((i, c))
    });
    let (text, location) = match first {
        Some((i, c)) => {
            let location = lines[i + 1..]
                .iter()
                .take_while(|l| !l.starts_with("error"))
                .find_map(|l| ERROR_LOCATION.captures(l))
                .and_then(|c| location(c.name("file"), c.name("line"), c.name("col")));
            (c[0].to_string(), location)
        }
        None => {
            let line = lines
                .iter()
                .find(|l| l.starts_with("error: could not compile"))?;
            (line.to_string(), None)
        }
    };
    let errors = lines
        .iter()
        .filter(|l| {
            COMPILE_ERROR
                .captures(l)
                .is_some_and(|c| !is_summary(&c["msg"]))
        })
        .count()
        .max(1);
    let at = location
        .as_ref()
        .map(|(f, l, c)| format!("\n  --> {f}:{l}:{c}"))
        .unwrap_or_default();
    let more = match errors {
        1 => String::new(),
        2 => " (1 more compilation error follows it)".to_string(),
        n => format!(" ({} more compilation errors follow it)", n - 1),
    };
    let message = format!(
        "The tests could not be built, so none of them ran. First error{more}:\n{text}{at}\n\n\
         Fix the compilation errors (`cargo test --no-run` shows them all), then run the tests \
         again."
    );
    let (path, line, col) = match location {
        Some((f, l, c)) => (Some(f), Some(l), Some(c)),
        None => (None, None, None),
    };
    Some(Hit::new(
        "test/build-failed",
        "tests do not compile",
        message,
        Severity::High,
        path,
        line,
        line,
        col,
        "",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real `cargo test` output (Rust 1.95), stdout and stderr captured apart.
    // The vulnerable fixture's was captured with RUST_BACKTRACE=1.
    const VULNERABLE: (&str, &str) = (
        include_str!("../testdata/vulnerable_test.stdout"),
        include_str!("../testdata/vulnerable_test.stderr"),
    );
    const CLEAN: (&str, &str) = (
        include_str!("../testdata/clean_test.stdout"),
        include_str!("../testdata/clean_test.stderr"),
    );
    const MISC: (&str, &str) = (
        include_str!("../testdata/misc_test.stdout"),
        include_str!("../testdata/misc_test.stderr"),
    );
    const BUILD_FAILED: (&str, &str) = (
        include_str!("../testdata/build_failed_test.stdout"),
        include_str!("../testdata/build_failed_test.stderr"),
    );

    type Summary<'a> = (&'a str, Option<&'a str>, Option<u32>, Option<u32>);

    fn summary(hits: &[Hit]) -> Vec<Summary<'_>> {
        hits.iter()
            .map(|h| {
                (
                    h.title.as_str(),
                    h.path.as_deref(),
                    h.start_line,
                    h.start_column,
                )
            })
            .collect()
    }

    #[test]
    fn vulnerable_fixture_has_one_failing_test() {
        let hits = parse_cargo_test(VULNERABLE.0, VULNERABLE.1);
        assert_eq!(
            summary(&hits),
            [(
                "test `parse::tests::splits_host_and_port` failed",
                Some("src/parse.rs"),
                Some(27),
                Some(9)
            )]
        );
        let h = &hits[0];
        assert_eq!(h.rule_id, "test/failed");
        assert_eq!(h.severity, Severity::Medium);
        assert!(h.message.contains(
            "assertion `left == right` failed\n  left: (\"example.org\", 443)\n right: (\"example.org\", 444)"
        ));
        assert!(!h.message.contains("stack backtrace"));
        assert!(!h.message.contains("rust_begin_unwind"));
    }

    #[test]
    fn passing_run_has_no_hits() {
        assert!(parse_cargo_test(CLEAN.0, CLEAN.1).is_empty());
        assert!(parse_cargo_test("", "").is_empty());
    }

    #[test]
    fn many_kinds_of_failure() {
        let hits = parse_cargo_test(MISC.0, MISC.1);
        assert_eq!(
            summary(&hits),
            [
                ("test `tests::returns_err` failed", None, None, None),
                (
                    "test `src/lib.rs - add (line 3)` failed",
                    Some("src/lib.rs"),
                    Some(5),
                    Some(1)
                ),
                (
                    "test `tests::should_have_panicked` failed",
                    Some("src/lib.rs"),
                    Some(29),
                    Some(8)
                ),
                (
                    "test `tests::unwraps_none` failed",
                    Some("src/lib.rs"),
                    Some(33),
                    Some(11)
                ),
                (
                    "test `tests::panics_with_message` failed",
                    Some("src/lib.rs"),
                    Some(37),
                    Some(9)
                ),
                (
                    "test `integration_fails` failed",
                    Some("tests/it.rs"),
                    Some(3),
                    Some(5)
                ),
            ]
        );
        let msg = |title: &str| {
            hits.iter()
                .find(|h| h.title.contains(title))
                .map(|h| h.message.clone())
                .unwrap()
        };
        assert!(msg("returns_err").contains("Error: \"boom\""));
        assert!(msg("should_have_panicked").contains("did not panic as expected"));
        assert!(msg("unwraps_none").contains("called `Option::unwrap()` on a `None` value"));
        assert!(msg("panics_with_message").contains("first line\nsecond line"));
        assert!(msg("integration_fails").contains("math is broken"));
        assert!(msg("add (line 3)").contains("left: 2\n right: 3"));
        assert!(hits.iter().all(|h| h.rule_id == "test/failed"));
        // stderr's "error: test failed, to rerun pass `--lib`" is no build failure.
        assert!(MISC.1.contains("error: test failed"));
    }

    #[test]
    fn build_failure_is_one_high_hit() {
        let hits = parse_cargo_test(BUILD_FAILED.0, BUILD_FAILED.1);
        assert_eq!(hits.len(), 1);
        let h = &hits[0];
        assert_eq!(h.rule_id, "test/build-failed");
        assert_eq!(h.severity, Severity::High);
        assert_eq!(
            (h.path.as_deref(), h.start_line, h.start_column),
            (Some("src/lib.rs"), Some(4), Some(13))
        );
        assert!(
            h.message
                .contains("error[E0308]: mismatched types\n  --> src/lib.rs:4:13")
        );
        assert!(h.message.contains("(1 more compilation error follows it)"));
    }

    #[test]
    fn build_failure_without_a_code_or_location() {
        let stderr = "   Compiling x v0.1.0\nerror: linking with `cc` failed: exit status: 1\n  |\n  = note: ld: cannot find -lfoo\n\nerror: could not compile `x` (lib test) due to 1 previous error\n";
        let hits = parse_cargo_test("", stderr);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].rule_id, "test/build-failed");
        assert_eq!(hits[0].path, None);
        assert!(hits[0].message.contains("error: linking with `cc` failed"));

        let only_summary = "error: could not compile `x` (lib) due to 2 previous errors";
        let hits = parse_cargo_test("", only_summary);
        assert_eq!(hits.len(), 1);
        assert!(hits[0].message.contains(only_summary));
    }

    #[test]
    fn terse_format_from_cargo_test_quiet() {
        let stdout = "\nrunning 3 tests\n.. 2/3\nparse::tests::splits_host_and_port --- FAILED\n\nfailures:\n\n---- parse::tests::splits_host_and_port stdout ----\n\nthread 'parse::tests::splits_host_and_port' (22198) panicked at src/parse.rs:27:9:\nassertion `left == right` failed\n  left: (\"example.org\", 443)\n right: (\"example.org\", 444)\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\n\nfailures:\n    parse::tests::splits_host_and_port\n\ntest result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\n";
        let hits = parse_cargo_test(stdout, "error: test failed, to rerun pass `--lib`\n");
        assert_eq!(
            summary(&hits),
            [(
                "test `parse::tests::splits_host_and_port` failed",
                Some("src/parse.rs"),
                Some(27),
                Some(9)
            )]
        );
    }

    #[test]
    fn failures_list_alone_is_enough() {
        let stdout = "running 2 tests\n.F\nfailures:\n\n---- m::b stdout ----\nthread 'm::b' panicked at src/m.rs:4:5:\nnope\n\nfailures:\n    m::b\n\ntest result: FAILED. 1 passed; 1 failed\n";
        let hits = parse_cargo_test(stdout, "");
        assert_eq!(
            summary(&hits),
            [("test `m::b` failed", Some("src/m.rs"), Some(4), Some(5))]
        );
    }

    #[test]
    fn pre_1_73_panic_format() {
        let stdout = "\nrunning 1 test\ntest tests::old ... FAILED\n\nfailures:\n\n---- tests::old stdout ----\nthread 'tests::old' panicked at 'assertion failed: `(left == right)`', src/lib.rs:10:5\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\n\nfailures:\n    tests::old\n\ntest result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n";
        let hits = parse_cargo_test(stdout, "");
        assert_eq!(
            summary(&hits),
            [(
                "test `tests::old` failed",
                Some("src/lib.rs"),
                Some(10),
                Some(5)
            )]
        );
        assert!(
            hits[0]
                .message
                .contains("assertion failed: `(left == right)`")
        );
    }

    #[test]
    fn nocapture_panics_are_matched_by_thread_name() {
        // With --nocapture the panic goes to stderr and there is no block.
        let stdout = "\nrunning 2 tests\ntest a::one ... FAILED\ntest a::two ... ok\n\nfailures:\n\nfailures:\n    a::one\n\ntest result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n";
        let stderr = "thread 'a::two' (77) panicked at src/a.rs:1:1:\nnot this one\nthread 'a::one' (78) panicked at src/a.rs:20:13:\nindex out of bounds: the len is 0 but the index is 0\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\nerror: test failed, to rerun pass `--lib`\n";
        let hits = parse_cargo_test(stdout, stderr);
        assert_eq!(
            summary(&hits),
            [("test `a::one` failed", Some("src/a.rs"), Some(20), Some(13))]
        );
        assert!(hits[0].message.contains("index out of bounds"));
        assert!(!hits[0].message.contains("not this one"));
    }

    #[test]
    fn same_name_in_two_binaries_and_colors_and_crlf() {
        let block = |file: &str, line: u32| {
            format!(
                "\x1b[0m\nrunning 1 test\r\ntest tests::it_works ... \x1b[31mFAILED\x1b[0m\r\n\r\nfailures:\r\n\r\n---- tests::it_works stdout ----\r\n\r\nthread 'tests::it_works' (9) panicked at {file}:{line}:5:\r\nboom\r\n\r\n\r\nfailures:\r\n    tests::it_works\r\n\r\ntest result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\r\n"
            )
        };
        let stdout = block("src/lib.rs", 3) + &block("src/main.rs", 8);
        let hits = parse_cargo_test(&stdout, "");
        assert_eq!(
            summary(&hits),
            [
                (
                    "test `tests::it_works` failed",
                    Some("src/lib.rs"),
                    Some(3),
                    Some(5)
                ),
                (
                    "test `tests::it_works` failed",
                    Some("src/main.rs"),
                    Some(8),
                    Some(5)
                ),
            ]
        );
        assert_ne!(hits[0].fingerprint, hits[1].fingerprint);
        assert!(hits.iter().all(|h| !h.message.contains('\r')));
    }

    #[test]
    fn panics_in_the_toolchain_have_no_location() {
        let stdout = "running 1 test\ntest t ... FAILED\n\nfailures:\n\n---- t stdout ----\nthread 't' (3) panicked at /rustc/abc/library/core/src/str/mod.rs:68:5:\nbyte index 9 is out of bounds\n\nfailures:\n    t\n";
        let hits = parse_cargo_test(stdout, "");
        assert_eq!(summary(&hits), [("test `t` failed", None, None, None)]);
        assert!(hits[0].message.contains("byte index 9 is out of bounds"));
    }

    #[test]
    fn planted_failing_test_matches() {
        let table = include_str!("../../../tests/fixtures/vulnerable_crate/PLANTED.md");
        let row: Vec<&str> = table
            .lines()
            .find(|l| l.starts_with("| test/failed"))
            .unwrap()
            .split('|')
            .map(str::trim)
            .collect();
        let hits = parse_cargo_test(VULNERABLE.0, VULNERABLE.1);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].path.as_deref(), Some(row[2]));
        assert_eq!(hits[0].start_line, Some(row[3].parse().unwrap()));
        assert_eq!(row[4], "medium");
    }
}
