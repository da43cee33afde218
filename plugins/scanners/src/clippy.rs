//! Parsing of `cargo clippy --message-format=json` output.

use serde::Deserialize;

use crate::{Hit, Severity, dedup, normalize_path};

/// Clippy lints of the `correctness` and `suspicious` groups (plus a few
/// rustc lints) whose warnings usually point at a real bug: these warnings
/// are reported as [`Severity::Medium`], other warnings as `Low`.
/// Correctness lints are errors by default, so they only show up here when a
/// crate lowered them to warnings.
const LIKELY_BUGS: &[&str] = &[
    // clippy::suspicious
    "clippy::almost_complete_range",
    "clippy::arc_with_non_send_sync",
    "clippy::await_holding_lock",
    "clippy::await_holding_refcell_ref",
    "clippy::cast_abs_to_unsigned",
    "clippy::cast_enum_constructor",
    "clippy::cast_enum_truncation",
    "clippy::cast_nan_to_int",
    "clippy::cast_slice_from_raw_parts",
    "clippy::const_is_empty",
    "clippy::declare_interior_mutable_const",
    "clippy::drop_non_drop",
    "clippy::duplicate_mod",
    "clippy::empty_loop",
    "clippy::float_equality_without_abs",
    "clippy::forget_non_drop",
    "clippy::four_forward_slashes",
    "clippy::ineffective_open_options",
    "clippy::iter_out_of_bounds",
    "clippy::join_absolute_paths",
    "clippy::let_underscore_future",
    "clippy::lines_filter_map_ok",
    "clippy::misrefactored_assign_op",
    "clippy::multi_assignments",
    "clippy::mut_range_bound",
    "clippy::mutable_key_type",
    "clippy::no_effect_replace",
    "clippy::octal_escapes",
    "clippy::permissions_set_readonly_false",
    "clippy::print_in_format_impl",
    "clippy::rc_clone_in_vec_init",
    "clippy::repeat_vec_with_capacity",
    "clippy::single_range_in_vec_init",
    "clippy::size_of_ref",
    "clippy::suspicious_arithmetic_impl",
    "clippy::suspicious_assignment_formatting",
    "clippy::suspicious_command_arg_space",
    "clippy::suspicious_doc_comments",
    "clippy::suspicious_else_formatting",
    "clippy::suspicious_map",
    "clippy::suspicious_op_assign_impl",
    "clippy::suspicious_open_options",
    "clippy::suspicious_to_owned",
    "clippy::suspicious_unary_op_formatting",
    "clippy::swap_ptr_to_ref",
    "clippy::type_id_on_box",
    "clippy::unconditional_recursion",
    "clippy::zombie_processes",
    // clippy::correctness
    "clippy::absurd_extreme_comparisons",
    "clippy::almost_swapped",
    "clippy::approx_constant",
    "clippy::bad_bit_mask",
    "clippy::eq_op",
    "clippy::erasing_op",
    "clippy::ifs_same_cond",
    "clippy::impossible_comparisons",
    "clippy::infinite_iter",
    "clippy::invalid_regex",
    "clippy::iter_next_loop",
    "clippy::iterator_step_by_zero",
    "clippy::let_underscore_lock",
    "clippy::mem_replace_with_uninit",
    "clippy::min_max",
    "clippy::modulo_one",
    "clippy::mut_from_ref",
    "clippy::never_loop",
    "clippy::nonsensical_open_options",
    "clippy::not_unsafe_ptr_arg_deref",
    "clippy::out_of_bounds_indexing",
    "clippy::panicking_unwrap",
    "clippy::possible_missing_comma",
    "clippy::read_line_without_trim",
    "clippy::recursive_format_impl",
    "clippy::reversed_empty_ranges",
    "clippy::self_assignment",
    "clippy::transmuting_null",
    "clippy::uninit_assumed_init",
    "clippy::uninit_vec",
    "clippy::unit_cmp",
    "clippy::unsound_collection_iter",
    "clippy::unused_io_amount",
    "clippy::while_immutable_condition",
    "clippy::wrong_transmute",
    // rustc
    "unconditional_recursion",
    "unused_must_use",
    "invalid_value",
    "dangling_pointers_from_temporaries",
    "invalid_from_utf8",
];

#[derive(Deserialize)]
struct CargoMessage {
    reason: Option<String>,
    message: Option<Diagnostic>,
}

#[derive(Deserialize)]
struct Diagnostic {
    message: String,
    code: Option<Code>,
    level: String,
    #[serde(default)]
    spans: Vec<Span>,
    #[serde(default)]
    children: Vec<Diagnostic>,
}

#[derive(Deserialize)]
struct Code {
    code: String,
}

#[derive(Deserialize)]
struct Span {
    file_name: String,
    line_start: u32,
    line_end: u32,
    column_start: u32,
    #[serde(default)]
    is_primary: bool,
    label: Option<String>,
    suggested_replacement: Option<String>,
    #[serde(default)]
    text: Vec<SpanText>,
    expansion: Option<Box<Expansion>>,
}

#[derive(Deserialize)]
struct Expansion {
    span: Span,
}

#[derive(Deserialize)]
struct SpanText {
    text: String,
    highlight_start: usize,
    highlight_end: usize,
}

/// Parses `cargo clippy --message-format=json` stdout (one JSON object per
/// line; other lines are ignored) into hits.
///
/// Only `"reason":"compiler-message"` diagnostics of level `warning` or
/// `error` with a primary span count. Rule ids are `clippy/<lint>` for
/// clippy lints and `rustc/<lint or code>` for rustc (`rustc/error` or
/// `rustc/warning` when the diagnostic has no code). Errors are `High`;
/// warnings are `Medium` for lints that usually mean a bug (see
/// `LIKELY_BUGS`) and `Low` otherwise. The location is the primary span (or,
/// for a span inside a foreign macro, the first call site in the crate). The
/// message is the diagnostic's message, the primary span's label and the
/// `help` children. Duplicates (the same diagnostic for the lib and its test
/// target) are removed and the hits are sorted.
pub fn parse_clippy_json(stdout: &str) -> Vec<Hit> {
    let mut hits = Vec::new();
    for line in stdout.lines() {
        let line = line.trim();
        if !line.starts_with('{') {
            continue;
        }
        let Ok(msg) = serde_json::from_str::<CargoMessage>(line) else {
            continue;
        };
        if msg.reason.as_deref() != Some("compiler-message") {
            continue;
        }
        if let Some(hit) = msg.message.as_ref().and_then(diagnostic_hit) {
            hits.push(hit);
        }
    }
    dedup(hits)
}

/// How a `cargo clippy`/`cargo build --message-format=json` run went, from
/// its JSON messages: whether the code was analysed at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildOutcome {
    /// Cargo built (and linted) the crate; errors, if any, were lints the
    /// crate denies, which are findings like any other.
    Finished,
    /// The crate's own code does not compile: lints that need a compiled
    /// crate did not run. `first` is the first error's message.
    CompileErrors { count: usize, first: String },
    /// Cargo stopped before or outside the compiler (configuration,
    /// dependency resolution, a failing build script, ...): nothing was
    /// analysed. The reason is in cargo's stderr.
    NotBuilt,
}

#[derive(Deserialize)]
struct BuildFinished {
    reason: Option<String>,
    success: Option<bool>,
}

/// Reads the outcome of a cargo build from its JSON stdout.
pub fn cargo_build_outcome(stdout: &str) -> BuildOutcome {
    let mut finished = None;
    let mut compile_errors = 0;
    let mut denied_lints = 0;
    let mut first = None;
    // With `--all-targets` a library is compiled twice (lib and its
    // tests): the same error at the same place counts once.
    let mut seen = std::collections::HashSet::new();
    for line in stdout.lines().map(str::trim).filter(|l| l.starts_with('{')) {
        if let Ok(f) = serde_json::from_str::<BuildFinished>(line)
            && f.reason.as_deref() == Some("build-finished")
        {
            finished = f.success;
            continue;
        }
        let Ok(msg) = serde_json::from_str::<CargoMessage>(line) else {
            continue;
        };
        let Some(d) = msg
            .message
            .filter(|_| msg.reason.as_deref() == Some("compiler-message"))
        else {
            continue;
        };
        // A lint a crate denies has the lint's name as code; a compile error
        // an `E0xxx` code or none. "aborting due to ..." has no span.
        let is_error_code = |code: &str| {
            code.strip_prefix('E')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        };
        let is_lint = d.code.as_ref().is_some_and(|c| !is_error_code(&c.code));
        let place = d
            .spans
            .first()
            .map(|sp| (sp.file_name.clone(), sp.line_start));
        if d.level == "error" && !d.spans.is_empty() && seen.insert((d.message.clone(), place)) {
            if is_lint {
                denied_lints += 1;
            } else {
                compile_errors += 1;
                first.get_or_insert(d.message.clone());
            }
        }
    }
    match finished {
        None => BuildOutcome::NotBuilt,
        Some(true) => BuildOutcome::Finished,
        Some(false) if compile_errors > 0 => BuildOutcome::CompileErrors {
            count: compile_errors,
            first: first.unwrap_or_default(),
        },
        // Only denied lints stopped the build: it was linted.
        Some(false) if denied_lints > 0 => BuildOutcome::Finished,
        Some(false) => BuildOutcome::NotBuilt,
    }
}

fn diagnostic_hit(d: &Diagnostic) -> Option<Hit> {
    let is_error = match d.level.as_str() {
        "error" => true,
        "warning" => false,
        _ => return None,
    };
    let primary = d.spans.iter().find(|s| s.is_primary)?;
    let location = local_span(primary);
    let code = d.code.as_ref().map(|c| c.code.as_str());
    let rule_id = match code {
        Some(c) if c.contains("::") => c.replace("::", "/"),
        Some(c) => format!("rustc/{c}"),
        None => format!("rustc/{}", d.level),
    };
    let severity = if is_error {
        Severity::High
    } else if code.is_some_and(|c| LIKELY_BUGS.contains(&c)) {
        Severity::Medium
    } else {
        Severity::Low
    };

    let mut message = d.message.clone();
    if let Some(label) = primary.label.as_deref().filter(|l| !l.is_empty()) {
        message.push_str(&format!("\n{label}"));
    }
    for child in d.children.iter().filter(|c| c.level == "help") {
        message.push_str(&format!("\nhelp: {}", child.message));
        let edits: Vec<String> = child.spans.iter().filter_map(suggestion).collect();
        if !edits.is_empty() {
            message.push_str(&format!(" ({})", edits.join("; ")));
        }
    }
    let title = d.message.lines().next().unwrap_or_default();
    let title = truncate(title, 120);

    Some(Hit::new(
        rule_id,
        title,
        message,
        severity,
        Some(normalize_path(&location.file_name)),
        Some(location.line_start),
        Some(location.line_end.max(location.line_start)),
        Some(location.column_start),
        "",
    ))
}

/// The span itself if it is in the crate (a relative path), else the first
/// macro call site that is; falls back to the span itself.
fn local_span(span: &Span) -> &Span {
    let mut current = span;
    loop {
        if is_local(&current.file_name) {
            return current;
        }
        match current.expansion.as_deref() {
            Some(exp) => current = &exp.span,
            None => return span,
        }
    }
}

fn is_local(file: &str) -> bool {
    let file = file.replace('\\', "/");
    !(file.starts_with('/') || file.starts_with('<') || file.get(1..3) == Some(":/"))
}

/// `replace `old` with `new``, from a suggestion span on one line.
fn suggestion(span: &Span) -> Option<String> {
    let new = span.suggested_replacement.as_deref()?;
    let old = span.text.first().and_then(|t| {
        let chars: Vec<char> = t.text.chars().collect();
        let (a, b) = (
            t.highlight_start.checked_sub(1)?,
            t.highlight_end.checked_sub(1)?,
        );
        (a <= b && b <= chars.len()).then(|| chars[a..b].iter().collect::<String>())
    });
    Some(match old {
        Some(old) if span.line_start == span.line_end && !old.is_empty() => {
            if new.is_empty() {
                format!("remove `{old}`")
            } else {
                format!("replace `{old}` with `{new}`")
            }
        }
        _ => format!("suggested: `{new}`"),
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max - 3).collect();
        out.push_str("...");
        out
    }
}

#[cfg(test)]
mod outcome_tests {
    use super::*;

    const FINISHED_OK: &str = r#"{"reason":"build-finished","success":true}"#;
    const FINISHED_FAIL: &str = r#"{"reason":"build-finished","success":false}"#;
    const E0308: &str = r#"{"reason":"compiler-message","message":{"message":"mismatched types","code":{"code":"E0308"},"level":"error","spans":[{"file_name":"src/lib.rs","line_start":3,"line_end":3,"column_start":5,"is_primary":true}],"children":[]}}"#;
    const ABORTING: &str = r#"{"reason":"compiler-message","message":{"message":"aborting due to 1 previous error","code":null,"level":"error","spans":[],"children":[]}}"#;
    const DENIED_LINT: &str = r#"{"reason":"compiler-message","message":{"message":"used `unwrap()`","code":{"code":"clippy::unwrap_used"},"level":"error","spans":[{"file_name":"src/lib.rs","line_start":3,"line_end":3,"column_start":5,"is_primary":true}],"children":[]}}"#;

    #[test]
    fn a_build_that_never_started_is_not_built() {
        // `could not load Cargo configuration`: cargo prints to stderr only.
        assert_eq!(cargo_build_outcome(""), BuildOutcome::NotBuilt);
        // A build script failed: the build finished, unsuccessfully, with
        // no compiler error.
        assert_eq!(cargo_build_outcome(FINISHED_FAIL), BuildOutcome::NotBuilt);
    }

    #[test]
    fn an_error_reported_for_the_lib_and_its_tests_counts_once() {
        let out = format!("{E0308}\n{E0308}\n{ABORTING}\n{FINISHED_FAIL}");
        match cargo_build_outcome(&out) {
            BuildOutcome::CompileErrors { count, .. } => assert_eq!(count, 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn compile_errors_and_denied_lints_are_told_apart() {
        let broken = [E0308, ABORTING, FINISHED_FAIL].join("\n");
        assert_eq!(
            cargo_build_outcome(&broken),
            BuildOutcome::CompileErrors {
                count: 1,
                first: "mismatched types".into()
            }
        );
        let denied = [DENIED_LINT, ABORTING, FINISHED_FAIL].join("\n");
        assert_eq!(cargo_build_outcome(&denied), BuildOutcome::Finished);
        assert_eq!(cargo_build_outcome(FINISHED_OK), BuildOutcome::Finished);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real `cargo clippy --all-targets --message-format=json` output (Rust
    // 1.95) for the fixture crates and two small crates.
    const VULNERABLE: &str = include_str!("../testdata/vulnerable_clippy.json");
    const CLEAN: &str = include_str!("../testdata/clean_clippy.json");
    const MISC: &str = include_str!("../testdata/misc_clippy.json");
    const BUILD_FAILED: &str = include_str!("../testdata/build_failed_clippy.json");

    fn summary(hits: &[Hit]) -> Vec<(&str, &str, u32, u32, Severity)> {
        hits.iter()
            .map(|h| {
                (
                    h.rule_id.as_str(),
                    h.path.as_deref().unwrap(),
                    h.start_line.unwrap(),
                    h.start_column.unwrap(),
                    h.severity,
                )
            })
            .collect()
    }

    #[test]
    fn vulnerable_fixture_warnings() {
        // Each warning is printed for the lib and again for its test target.
        assert_eq!(
            VULNERABLE
                .lines()
                .filter(|l| l.contains("\"reason\":\"compiler-message\""))
                .count(),
            4
        );
        let hits = parse_clippy_json(VULNERABLE);
        assert_eq!(
            summary(&hits),
            [
                (
                    "clippy/needless_range_loop",
                    "src/lib.rs",
                    12,
                    14,
                    Severity::Low
                ),
                (
                    "clippy/suspicious_map",
                    "src/lib.rs",
                    20,
                    5,
                    Severity::Medium
                ),
            ]
        );
        let h = &hits[0];
        assert_eq!(
            h.title,
            "the loop variable `i` is only used to index `readings`"
        );
        assert_eq!(h.end_line, Some(12));
        assert_eq!(
            h.message,
            "the loop variable `i` is only used to index `readings`\n\
             help: for further information visit \
             https://rust-lang.github.io/rust-clippy/rust-1.95.0/index.html#needless_range_loop\n\
             help: consider using an iterator (replace `i` with `<item>`; replace \
             `0..readings.len()` with `&readings`)"
        );
        // Notes are not part of the message.
        assert!(!hits[1].message.contains("on by default"));
        assert!(
            hits[1]
                .message
                .contains("help: make sure you did not confuse `map` with `filter`")
        );
    }

    #[test]
    fn clean_fixture_has_no_warnings() {
        assert!(parse_clippy_json(CLEAN).is_empty());
    }

    #[test]
    fn rustc_lints_and_other_targets() {
        let hits = parse_clippy_json(MISC);
        assert_eq!(
            summary(&hits),
            [
                ("rustc/unused_variables", "src/lib.rs", 7, 9, Severity::Low),
                (
                    "clippy/unnecessary_literal_unwrap",
                    "src/lib.rs",
                    33,
                    9,
                    Severity::Low
                ),
                (
                    "clippy/assertions_on_constants",
                    "tests/it.rs",
                    3,
                    5,
                    Severity::Low
                ),
            ]
        );
        assert!(hits[0].message.contains(
            "help: if this is intentional, prefix it with an underscore \
             (replace `unused` with `_unused`)"
        ));
        assert!(
            hits[1]
                .message
                .contains("help: remove the `None` and `unwrap()`")
        );
    }

    #[test]
    fn compile_errors_are_high() {
        let hits = parse_clippy_json(BUILD_FAILED);
        // The first error's primary span is inside a local macro: it stays
        // where rustc put it. `failure-note` messages are not hits.
        assert_eq!(
            summary(&hits),
            [
                ("rustc/E0308", "src/lib.rs", 4, 13, Severity::High),
                ("rustc/E0277", "src/lib.rs", 13, 7, Severity::High),
            ]
        );
        assert_eq!(
            hits[0].message,
            "mismatched types\nexpected `u32`, found `&str`"
        );
        assert!(
            hits[1].message.starts_with(
                "cannot add `&str` to `u32`\nno implementation for `u32 + &str`\nhelp: "
            )
        );
    }

    fn diagnostic(level: &str, code: Option<&str>, spans: &str) -> String {
        let code = code.map_or("null".to_string(), |c| {
            format!("{{\"code\":\"{c}\",\"explanation\":null}}")
        });
        format!(
            "{{\"reason\":\"compiler-message\",\"package_id\":\"x 0.1.0\",\"message\":{{\
             \"message\":\"something\",\"code\":{code},\"level\":\"{level}\",\
             \"spans\":[{spans}],\"children\":[],\"rendered\":\"\"}}}}"
        )
    }

    fn span(file: &str, line: u32, col: u32, primary: bool, expansion: &str) -> String {
        format!(
            "{{\"file_name\":\"{file}\",\"byte_start\":0,\"byte_end\":1,\"line_start\":{line},\
             \"line_end\":{line},\"column_start\":{col},\"column_end\":{col},\
             \"is_primary\":{primary},\"label\":null,\"suggested_replacement\":null,\
             \"suggestion_applicability\":null,\"text\":[],\"expansion\":{expansion}}}"
        )
    }

    #[test]
    fn levels_codes_and_spans() {
        let local = span("src/a.rs", 3, 5, true, "null");
        let out = [
            "   Compiling x v0.1.0".to_string(),
            "not json {".to_string(),
            "{\"reason\":\"compiler-artifact\",\"package_id\":\"x\"}".to_string(),
            "{\"reason\":\"build-finished\",\"success\":false}".to_string(),
            // No primary span: summaries such as "2 warnings emitted".
            diagnostic("warning", None, ""),
            diagnostic("warning", None, &span("src/a.rs", 1, 1, false, "null")),
            diagnostic("note", Some("clippy::x"), &local),
            diagnostic("failure-note", None, &local),
            diagnostic("error: internal compiler error", None, &local),
            diagnostic(
                "error",
                None,
                &span("src\\\\win\\\\b.rs", 9, 2, true, "null"),
            ),
            diagnostic("warning", Some("rustdoc::broken_intra_doc_links"), &local),
            diagnostic("warning", Some("clippy::eq_op"), &local),
            diagnostic("warning", Some("unused_must_use"), &local),
            diagnostic("warning", Some("clippy::unwrap_used"), &local),
            // The same diagnostic again (lib and test target).
            diagnostic("warning", Some("clippy::unwrap_used"), &local),
        ]
        .join("\n");
        let hits = parse_clippy_json(&out);
        assert_eq!(
            summary(&hits),
            [
                ("clippy/eq_op", "src/a.rs", 3, 5, Severity::Medium),
                ("clippy/unwrap_used", "src/a.rs", 3, 5, Severity::Low),
                ("rustc/unused_must_use", "src/a.rs", 3, 5, Severity::Medium),
                (
                    "rustdoc/broken_intra_doc_links",
                    "src/a.rs",
                    3,
                    5,
                    Severity::Low
                ),
                ("rustc/error", "src/win/b.rs", 9, 2, Severity::High),
            ]
        );
        assert!(hits.iter().all(|h| h.message == "something"));
    }

    #[test]
    fn spans_in_foreign_macros_point_at_the_call_site() {
        let call = span("src/main.rs", 7, 9, false, "null");
        let inner = span(
            "/rustc/abc/library/core/src/macros/mod.rs",
            40,
            1,
            false,
            &format!("{{\"span\":{call},\"macro_decl_name\":\"assert!\",\"def_site_span\":null}}"),
        );
        let primary = span(
            "/home/u/.cargo/registry/src/x-1.0/src/lib.rs",
            100,
            3,
            true,
            &format!("{{\"span\":{inner},\"macro_decl_name\":\"inner!\",\"def_site_span\":null}}"),
        );
        let hits = parse_clippy_json(&diagnostic("warning", Some("clippy::foo"), &primary));
        assert_eq!(
            summary(&hits),
            [("clippy/foo", "src/main.rs", 7, 9, Severity::Low)]
        );
    }

    #[test]
    fn fingerprints_are_stable() {
        let a = parse_clippy_json(VULNERABLE);
        let b = parse_clippy_json(VULNERABLE);
        assert_eq!(a, b);
        assert_eq!(
            a[0].fingerprint,
            crate::fingerprint(
                "clippy/needless_range_loop",
                Some("src/lib.rs"),
                Some(12),
                Some(14),
                ""
            )
        );
    }

    #[test]
    fn planted_clippy_rows_match() {
        let table = include_str!("../../../tests/fixtures/vulnerable_crate/PLANTED.md");
        let planted: Vec<(String, String, u32)> = table
            .lines()
            .filter(|l| l.starts_with("| clippy/"))
            .map(|l| {
                let c: Vec<&str> = l.split('|').map(str::trim).collect();
                (c[1].to_string(), c[2].to_string(), c[3].parse().unwrap())
            })
            .collect();
        let got: Vec<(String, String, u32)> = parse_clippy_json(VULNERABLE)
            .into_iter()
            .map(|h| (h.rule_id, h.path.unwrap(), h.start_line.unwrap()))
            .collect();
        assert_eq!(got, planted);
    }
}
