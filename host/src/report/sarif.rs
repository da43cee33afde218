//! SARIF 2.1.0 output: one log with one run per workflow run, its findings
//! as results and one rule per distinct rule id.
//!
//! The log is built as a [`serde_json::Value`] by [`to_sarif`] and written
//! by [`write_sarif`]. The same run and findings always give byte-identical
//! output: rules are listed in the order their first finding appears and
//! results keep the order of the findings. Finding paths become relative
//! URIs based at [`WORKSPACE_BASE_ID`], the root of the scanned target.
//! [`schema_errors`] checks a document against the official JSON Schema.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::{Map, Value, json};
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};

use crate::manifest::{Finding, Location, Severity};

/// The `$schema` written into every log.
pub const SARIF_SCHEMA_URI: &str = "https://json.schemastore.org/sarif-2.1.0.json";

/// The SARIF version written into every log.
pub const SARIF_VERSION: &str = "2.1.0";

/// The `uriBaseId` finding paths are relative to: the root of the scanned target.
pub const WORKSPACE_BASE_ID: &str = "WORKSPACE";

/// The key under which a finding's fingerprint is written in `partialFingerprints`.
pub const FINGERPRINT_KEY: &str = "toolhost/v1";

/// Notification text for a failed run that gave no reason.
const UNKNOWN_FAILURE: &str = "The workflow run did not complete successfully.";

/// Result text for a finding whose message, title and rule id are all blank.
const NO_MESSAGE: &str = "The workflow reported a finding without a message.";

/// What the SARIF `tool.driver` and run properties describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SarifRun<'a> {
    /// Workflow name; the driver is named `toolhost/<workflow>`.
    pub workflow: &'a str,
    /// Workflow version (semver), the driver's `version`.
    pub workflow_version: &'a str,
    /// SHA-256 hex digest of the workflow's wasm component.
    pub component_digest: &'a str,
    /// Identifier of this run, the last part of `automationDetails.id`.
    pub run_id: &'a str,
    /// When the run started (RFC 3339); written in UTC, left out if unparsable.
    pub started_at: Option<&'a str>,
    /// When the run ended (RFC 3339); written in UTC, left out if unparsable.
    pub ended_at: Option<&'a str>,
    /// Whether the run completed (`invocations[0].executionSuccessful`).
    pub succeeded: bool,
    /// Why the run failed; reported as an error notification when `succeeded` is false.
    pub failure: Option<&'a str>,
    /// The analysis steps the workflow reported: each failed one is an
    /// error notification (and makes the run unsuccessful), each skipped
    /// one a note.
    pub analyses: &'a [crate::manifest::Analysis],
}

/// The SARIF level of a severity: critical and high are `error`, medium is `warning`, the rest `note`.
pub fn level_for(sev: Severity) -> &'static str {
    match sev {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// The numeric `security-severity` rule property (0.0-10.0, as a string) for a severity.
pub fn security_severity(sev: Severity) -> &'static str {
    match sev {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
        Severity::Info => "0.0",
    }
}

/// Builds the SARIF 2.1.0 log of a run and its findings.
pub fn to_sarif(run: &SarifRun<'_>, findings: &[Finding]) -> Value {
    let rules = collect_rules(findings);
    let index_of: BTreeMap<&str, usize> = rules
        .iter()
        .enumerate()
        .map(|(i, rule)| (rule.id, i))
        .collect();

    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let index = index_of.get(f.rule_id.as_str()).copied().unwrap_or(0);
            result(f, index)
        })
        .collect();

    let driver = json!({
        "name": format!("toolhost/{}", run.workflow),
        "version": run.workflow_version,
        "rules": rules.iter().map(Rule::to_json).collect::<Vec<_>>(),
    });

    json!({
        "$schema": SARIF_SCHEMA_URI,
        "version": SARIF_VERSION,
        "runs": [{
            "tool": { "driver": driver },
            "automationDetails": { "id": format!("{}/{}", run.workflow, run.run_id) },
            "originalUriBaseIds": {
                WORKSPACE_BASE_ID: {
                    "description": {
                        "text": "The root of the scanned target; finding paths are relative to it."
                    }
                }
            },
            "invocations": [invocation(run)],
            "columnKind": "unicodeCodePoints",
            "results": results,
            "properties": {
                "componentDigest": run.component_digest,
                "runId": run.run_id,
            },
        }],
    })
}

/// Writes the SARIF log of a run as pretty-printed JSON followed by a newline.
pub fn write_sarif(
    run: &SarifRun<'_>,
    findings: &[Finding],
    mut out: impl Write,
) -> std::io::Result<()> {
    let doc = to_sarif(run, findings);
    serde_json::to_writer_pretty(&mut out, &doc)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Validates `doc` against a draft-04 JSON Schema (such as the SARIF one) and
/// returns one message per error, each starting with the failing instance path.
pub fn schema_errors(schema: &Value, doc: &Value) -> Vec<String> {
    let validator = match jsonschema::draft4::new(schema) {
        Ok(validator) => validator,
        Err(err) => return vec![format!("the schema does not compile: {err}")],
    };
    validator
        .iter_errors(doc)
        .map(|err| {
            let path = err.instance_path.to_string();
            let path = if path.is_empty() { "/" } else { path.as_str() };
            format!("at {path}: {err}")
        })
        .collect()
}

/// One distinct rule, as first seen in the findings.
struct Rule<'a> {
    id: &'a str,
    short_description: &'a str,
    /// The worst severity among the rule's findings.
    severity: Severity,
}

impl Rule<'_> {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.id,
            "shortDescription": { "text": self.short_description },
            "defaultConfiguration": { "level": level_for(self.severity) },
            "properties": {
                "security-severity": security_severity(self.severity),
                "tags": ["security"],
            },
        })
    }
}

/// The distinct rules of `findings`, in order of first appearance.
fn collect_rules(findings: &[Finding]) -> Vec<Rule<'_>> {
    let mut rules: Vec<Rule<'_>> = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for f in findings {
        match seen.get(f.rule_id.as_str()) {
            Some(&i) => {
                if let Some(rule) = rules.get_mut(i) {
                    rule.severity = rule.severity.max(f.severity);
                }
            }
            None => {
                seen.insert(&f.rule_id, rules.len());
                rules.push(Rule {
                    id: &f.rule_id,
                    short_description: first_non_blank(&[&f.title, &f.rule_id])
                        .unwrap_or(NO_MESSAGE),
                    severity: f.severity,
                });
            }
        }
    }
    rules
}

/// The first of `texts` that is not empty or only whitespace.
fn first_non_blank<'a>(texts: &[&'a str]) -> Option<&'a str> {
    texts.iter().copied().find(|t| !t.trim().is_empty())
}

/// The SARIF result of one finding whose rule is `rules[rule_index]`.
fn result(f: &Finding, rule_index: usize) -> Value {
    let text = first_non_blank(&[&f.message, &f.title, &f.rule_id]).unwrap_or(NO_MESSAGE);
    let fingerprint = if f.fingerprint.trim().is_empty() {
        Finding::derive_fingerprint(&f.rule_id, f.location.as_ref(), &f.message)
    } else {
        f.fingerprint.clone()
    };

    let mut r = Map::new();
    r.insert("ruleId".into(), json!(f.rule_id));
    r.insert("ruleIndex".into(), json!(rule_index));
    r.insert("level".into(), json!(level_for(f.severity)));
    r.insert("message".into(), json!({ "text": text }));
    if let Some(location) = f.location.as_ref().and_then(physical_location) {
        r.insert(
            "locations".into(),
            json!([{ "physicalLocation": location }]),
        );
    }
    r.insert(
        "partialFingerprints".into(),
        json!({ FINGERPRINT_KEY: fingerprint }),
    );
    r.insert(
        "properties".into(),
        json!({ "severity": f.severity.as_str(), "title": f.title }),
    );
    Value::Object(r)
}

/// The `physicalLocation` of a finding, or `None` when its path is empty.
fn physical_location(loc: &Location) -> Option<Value> {
    let uri = artifact_uri(&loc.path)?;
    let mut p = Map::new();
    p.insert(
        "artifactLocation".into(),
        json!({ "uri": uri, "uriBaseId": WORKSPACE_BASE_ID }),
    );
    if let Some(region) = region(loc) {
        p.insert("region".into(), region);
    }
    Some(Value::Object(p))
}

/// The text region of a location. SARIF lines and columns are 1-based, so 0
/// values are dropped, as is an end line before the start line; without a
/// start line there is no region.
fn region(loc: &Location) -> Option<Value> {
    let start = loc.start_line.filter(|&line| line >= 1)?;
    let mut r = Map::new();
    r.insert("startLine".into(), json!(start));
    if let Some(end) = loc.end_line.filter(|&end| end >= start) {
        r.insert("endLine".into(), json!(end));
    }
    if let Some(column) = loc.start_column.filter(|&column| column >= 1) {
        r.insert("startColumn".into(), json!(column));
    }
    Some(Value::Object(r))
}

/// A workspace path as a relative URI reference: `\` becomes `/`, leading
/// `./` and `/` are removed and every byte other than an unreserved
/// character or `/` is percent-encoded. `None` for a path that names nothing.
fn artifact_uri(path: &str) -> Option<String> {
    let path = path.replace('\\', "/");
    let mut rest = path.as_str();
    loop {
        if let Some(r) = rest.strip_prefix("./") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix('/') {
            rest = r;
        } else {
            break;
        }
    }
    if rest.is_empty() || rest == "." {
        return None;
    }
    let mut uri = String::with_capacity(rest.len());
    for &b in rest.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    Some(uri)
}

/// The run's single invocation: success, times and, for a failed run, why.
fn invocation(run: &SarifRun<'_>) -> Value {
    let mut inv = Map::new();
    inv.insert("executionSuccessful".into(), json!(run.succeeded));
    if let Some(start) = run.started_at.and_then(utc_timestamp) {
        inv.insert("startTimeUtc".into(), json!(start));
    }
    if let Some(end) = run.ended_at.and_then(utc_timestamp) {
        inv.insert("endTimeUtc".into(), json!(end));
    }
    use crate::manifest::AnalysisStatus;
    let failed_analysis = run
        .analyses
        .iter()
        .any(|a| a.status == AnalysisStatus::Failed);
    let mut notes = Vec::new();
    if !run.succeeded && !failed_analysis {
        let text = run
            .failure
            .and_then(|f| first_non_blank(&[f]))
            .unwrap_or(UNKNOWN_FAILURE);
        notes.push(json!({ "level": "error", "message": { "text": text } }));
    }
    for a in run.analyses {
        let (level, text) = match a.status {
            AnalysisStatus::Failed => ("error", a.failure_text()),
            AnalysisStatus::Skipped => (
                "note",
                format!(
                    "analysis `{}` skipped: {}",
                    a.name,
                    a.reason.as_deref().unwrap_or("not applicable")
                ),
            ),
            AnalysisStatus::Ran | AnalysisStatus::Disabled => continue,
        };
        notes.push(json!({
            "level": level,
            "message": { "text": text },
            "properties": { "analysis": a.name },
        }));
    }
    if failed_analysis {
        inv.insert("executionSuccessful".into(), json!(false));
    }
    if !notes.is_empty() {
        inv.insert("toolExecutionNotifications".into(), Value::Array(notes));
    }
    Value::Object(inv)
}

/// Parses an RFC 3339 timestamp and formats it in UTC (`...Z`), as SARIF
/// requires; `None` when it is not a valid RFC 3339 timestamp.
fn utc_timestamp(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let digits = |from: usize, to: usize| -> Option<u32> {
        let part = b.get(from..to)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(part.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let is = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));

    let year = i32::try_from(digits(0, 4)?).ok()?;
    let month = Month::try_from(u8::try_from(digits(5, 7)?).ok()?).ok()?;
    let day = u8::try_from(digits(8, 10)?).ok()?;
    let hour = u8::try_from(digits(11, 13)?).ok()?;
    let minute = u8::try_from(digits(14, 16)?).ok()?;
    let mut second = u8::try_from(digits(17, 19)?).ok()?;
    if !(is(4, b"-") && is(7, b"-") && is(10, b"Tt ") && is(13, b":") && is(16, b":")) {
        return None;
    }

    let mut at = 19;
    let mut nanos = 0u32;
    if is(at, b".") {
        at += 1;
        let from = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == from {
            return None;
        }
        // Nanosecond precision: extra digits are cut, missing ones are zeros.
        let kept = (at - from).min(9);
        nanos = digits(from, from + kept)? * 10u32.pow(u32::try_from(9 - kept).ok()?);
    }
    if second == 60 {
        // A leap second: the latest instant `time` can represent instead.
        second = 59;
        nanos = 999_999_999;
    }

    let offset = if is(at, b"Zz") {
        at += 1;
        UtcOffset::UTC
    } else if is(at, b"+-") && is(at + 3, b":") {
        let sign: i8 = if is(at, b"-") { -1 } else { 1 };
        let hours = i8::try_from(digits(at + 1, at + 3)?).ok()?;
        let minutes = i8::try_from(digits(at + 4, at + 6)?).ok()?;
        if hours > 23 || minutes > 59 {
            return None;
        }
        at += 6;
        UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()?
    } else {
        return None;
    };
    if at != b.len() {
        return None;
    }

    let date = Date::from_calendar_date(year, month, day).ok()?;
    let time = Time::from_hms_nano(hour, minute, second, nanos).ok()?;
    PrimitiveDateTime::new(date, time)
        .assume_offset(offset)
        .checked_to_offset(UtcOffset::UTC)?
        .format(&Rfc3339)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA_PATH: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/schemas/sarif-schema-2.1.0.json"
    );

    fn schema() -> Value {
        let text = std::fs::read_to_string(SCHEMA_PATH)
            .unwrap_or_else(|e| panic!("cannot read the SARIF schema at {SCHEMA_PATH}: {e}"));
        serde_json::from_str(&text).expect("the SARIF schema is JSON")
    }

    fn assert_valid(doc: &Value) {
        let errors = schema_errors(&schema(), doc);
        assert!(
            errors.is_empty(),
            "SARIF does not match the schema:\n{}\n{doc:#}",
            errors.join("\n")
        );
    }

    fn run() -> SarifRun<'static> {
        SarifRun {
            workflow: "security_assessment",
            workflow_version: "1.2.0",
            component_digest: "ab12",
            run_id: "run-7",
            started_at: Some("2024-05-01T12:00:00Z"),
            ended_at: Some("2024-05-01T12:00:05.250Z"),
            succeeded: true,
            failure: None,
            analyses: &[],
        }
    }

    fn finding(rule: &str, sev: Severity, location: Option<Location>) -> Finding {
        let message = format!("{rule} found something");
        Finding {
            rule_id: rule.into(),
            title: format!("{rule} title"),
            fingerprint: Finding::derive_fingerprint(rule, location.as_ref(), &message),
            message,
            severity: sev,
            location,
        }
    }

    fn loc(path: &str, start: Option<u32>, end: Option<u32>, col: Option<u32>) -> Location {
        Location {
            path: path.into(),
            start_line: start,
            end_line: end,
            start_column: col,
        }
    }

    fn results(doc: &Value) -> &Vec<Value> {
        doc["runs"][0]["results"].as_array().expect("results array")
    }

    fn rules(doc: &Value) -> &Vec<Value> {
        doc["runs"][0]["tool"]["driver"]["rules"]
            .as_array()
            .expect("rules array")
    }

    #[test]
    fn empty_findings_give_a_valid_log() {
        let doc = to_sarif(&run(), &[]);
        assert_valid(&doc);
        assert_eq!(doc["$schema"], SARIF_SCHEMA_URI);
        assert_eq!(doc["version"], "2.1.0");
        assert_eq!(doc["runs"].as_array().map(Vec::len), Some(1));
        let r = &doc["runs"][0];
        assert_eq!(r["tool"]["driver"]["name"], "toolhost/security_assessment");
        assert_eq!(r["tool"]["driver"]["version"], "1.2.0");
        assert!(r["tool"]["driver"].get("informationUri").is_none());
        assert_eq!(r["automationDetails"]["id"], "security_assessment/run-7");
        assert_eq!(r["properties"]["componentDigest"], "ab12");
        assert_eq!(r["properties"]["runId"], "run-7");
        assert!(results(&doc).is_empty());
        assert!(rules(&doc).is_empty());
        let inv = &r["invocations"][0];
        assert_eq!(inv["executionSuccessful"], true);
        assert_eq!(inv["startTimeUtc"], "2024-05-01T12:00:00Z");
        assert_eq!(inv["endTimeUtc"], "2024-05-01T12:00:05.25Z");
        assert!(inv.get("toolExecutionNotifications").is_none());
    }

    #[test]
    fn findings_with_and_without_location() {
        let with = finding(
            "secrets/aws",
            Severity::Critical,
            Some(loc("src/lib.rs", Some(3), Some(4), Some(7))),
        );
        let without = finding("deps/outdated", Severity::Low, None);
        let doc = to_sarif(&run(), &[with.clone(), without]);
        assert_valid(&doc);

        let res = results(&doc);
        assert_eq!(res.len(), 2);
        assert_eq!(res[0]["ruleId"], "secrets/aws");
        assert_eq!(res[0]["level"], "error");
        assert_eq!(res[0]["message"]["text"], with.message);
        assert_eq!(
            res[0]["partialFingerprints"][FINGERPRINT_KEY],
            with.fingerprint
        );
        assert_eq!(res[0]["properties"]["severity"], "critical");
        assert_eq!(res[0]["properties"]["title"], "secrets/aws title");
        let phys = &res[0]["locations"][0]["physicalLocation"];
        assert_eq!(phys["artifactLocation"]["uri"], "src/lib.rs");
        assert_eq!(phys["artifactLocation"]["uriBaseId"], WORKSPACE_BASE_ID);
        assert_eq!(
            phys["region"],
            json!({ "startLine": 3, "endLine": 4, "startColumn": 7 })
        );

        assert_eq!(res[1]["level"], "note");
        assert!(res[1].get("locations").is_none());
        assert!(
            doc["runs"][0]["originalUriBaseIds"]
                .get(WORKSPACE_BASE_ID)
                .is_some()
        );
    }

    #[test]
    fn rules_are_deduplicated_and_indexed() {
        let mut first_b = finding("b", Severity::Low, None);
        first_b.title = "First B".into();
        let mut second_b = finding("b", Severity::High, None);
        second_b.title = "Second B".into();
        let findings = [
            first_b,
            finding("a", Severity::Medium, None),
            second_b,
            finding("c", Severity::Info, None),
            finding("a", Severity::Medium, None),
        ];
        let doc = to_sarif(&run(), &findings);
        assert_valid(&doc);

        let rules = rules(&doc);
        let ids: Vec<&str> = rules.iter().filter_map(|r| r["id"].as_str()).collect();
        assert_eq!(ids, ["b", "a", "c"]);
        for (f, r) in findings.iter().zip(results(&doc)) {
            let index = r["ruleIndex"].as_u64().expect("ruleIndex") as usize;
            assert_eq!(r["ruleId"], f.rule_id.as_str());
            assert_eq!(rules[index]["id"], f.rule_id.as_str());
            assert_eq!(r["level"], level_for(f.severity));
        }
        let b = &rules[0];
        assert_eq!(b["name"], "b");
        assert_eq!(b["shortDescription"]["text"], "First B");
        assert_eq!(b["defaultConfiguration"]["level"], "error");
        assert_eq!(b["properties"]["security-severity"], "8.0");
        assert_eq!(b["properties"]["tags"], json!(["security"]));
        assert_eq!(rules[1]["defaultConfiguration"]["level"], "warning");
        assert_eq!(rules[1]["properties"]["security-severity"], "5.5");
        assert_eq!(rules[2]["defaultConfiguration"]["level"], "note");
        assert_eq!(rules[2]["properties"]["security-severity"], "0.0");
    }

    #[test]
    fn failed_run_reports_why() {
        let failed = SarifRun {
            succeeded: false,
            failure: Some("tool `semgrep` exited with status 2"),
            ended_at: None,
            ..run()
        };
        let doc = to_sarif(&failed, &[finding("a", Severity::High, None)]);
        assert_valid(&doc);
        let inv = &doc["runs"][0]["invocations"][0];
        assert_eq!(inv["executionSuccessful"], false);
        assert!(inv.get("endTimeUtc").is_none());
        assert_eq!(
            inv["toolExecutionNotifications"],
            json!([{ "level": "error", "message": { "text": "tool `semgrep` exited with status 2" } }])
        );
        assert_eq!(results(&doc).len(), 1);

        let no_reason = SarifRun {
            succeeded: false,
            failure: Some("  "),
            ..run()
        };
        let doc = to_sarif(&no_reason, &[]);
        assert_valid(&doc);
        assert_eq!(
            doc["runs"][0]["invocations"][0]["toolExecutionNotifications"][0]["message"]["text"],
            UNKNOWN_FAILURE
        );
    }

    #[test]
    fn a_failed_analysis_is_an_unsuccessful_execution_with_its_reason() {
        use crate::manifest::{Analysis, AnalysisStatus};
        let analyses = [
            Analysis {
                name: "secrets".into(),
                status: AnalysisStatus::Ran,
                reason: None,
            },
            Analysis {
                name: "clippy".into(),
                status: AnalysisStatus::Failed,
                reason: Some("cargo exited 101: could not load Cargo configuration".into()),
            },
            Analysis {
                name: "tests".into(),
                status: AnalysisStatus::Skipped,
                reason: Some("no Cargo.toml".into()),
            },
        ];
        let partial = SarifRun {
            succeeded: false,
            failure: Some(
                "analysis `clippy` failed: cargo exited 101: could not load Cargo configuration",
            ),
            analyses: &analyses,
            ..run()
        };
        let doc = to_sarif(&partial, &[finding("secrets/x", Severity::High, None)]);
        assert_valid(&doc);
        let inv = &doc["runs"][0]["invocations"][0];
        assert_eq!(inv["executionSuccessful"], false);
        let notes = inv["toolExecutionNotifications"].as_array().unwrap();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert_eq!(notes[0]["level"], "error");
        assert_eq!(
            notes[0]["message"]["text"],
            "analysis `clippy` failed: cargo exited 101: could not load Cargo configuration"
        );
        assert_eq!(notes[0]["properties"]["analysis"], "clippy");
        assert_eq!(notes[1]["level"], "note");
        assert_eq!(results(&doc).len(), 1, "the other analyses' findings stay");
    }

    #[test]
    fn weird_paths_become_relative_uris() {
        let cases = [
            ("src/a b.rs", "src/a%20b.rs"),
            ("src\\win\\file.c", "src/win/file.c"),
            ("dir/é/ünï.py", "dir/%C3%A9/%C3%BCn%C3%AF.py"),
            ("./lib/x.js", "lib/x.js"),
            ("/abs/y.go", "abs/y.go"),
            ("C:\\repo\\z.cs", "C%3A/repo/z.cs"),
            ("odd/#1?%.txt", "odd/%231%3F%25.txt"),
            (
                "node_modules/@scope/p+q/i.ts",
                "node_modules/%40scope/p%2Bq/i.ts",
            ),
            ("../outside.rs", "../outside.rs"),
        ];
        let findings: Vec<Finding> = cases
            .iter()
            .map(|(path, _)| finding("p", Severity::Medium, Some(loc(path, Some(1), None, None))))
            .collect();
        let doc = to_sarif(&run(), &findings);
        assert_valid(&doc);

        // `uri-reference` is not a draft-04 format, so check each URI resolves
        // to a well-formed absolute `uri` under a base.
        let uri_schema = json!({ "type": "string", "format": "uri" });
        for ((path, want), r) in cases.iter().zip(results(&doc)) {
            let uri = &r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"];
            assert_eq!(uri, want, "path {path:?}");
            let absolute = json!(format!("file:///workspace/{}", want));
            assert!(
                schema_errors(&uri_schema, &absolute).is_empty(),
                "{absolute} is not a URI"
            );
        }
    }

    #[test]
    fn empty_paths_have_no_location() {
        for path in ["", "/", "./", "."] {
            let doc = to_sarif(
                &run(),
                &[finding(
                    "e",
                    Severity::Low,
                    Some(loc(path, Some(2), None, None)),
                )],
            );
            assert_valid(&doc);
            assert!(results(&doc)[0].get("locations").is_none(), "path {path:?}");
        }
    }

    #[test]
    fn zero_lines_and_columns_are_dropped() {
        let findings = [
            finding(
                "z",
                Severity::Low,
                Some(loc("a.rs", Some(0), Some(0), Some(0))),
            ),
            finding(
                "z",
                Severity::Low,
                Some(loc("a.rs", None, Some(5), Some(2))),
            ),
            finding(
                "z",
                Severity::Low,
                Some(loc("a.rs", Some(5), Some(3), Some(0))),
            ),
            finding(
                "z",
                Severity::Low,
                Some(loc("a.rs", Some(5), Some(5), None)),
            ),
        ];
        let doc = to_sarif(&run(), &findings);
        assert_valid(&doc);
        let regions: Vec<&Value> = results(&doc)
            .iter()
            .map(|r| &r["locations"][0]["physicalLocation"]["region"])
            .collect();
        assert_eq!(regions[0], &Value::Null);
        assert_eq!(regions[1], &Value::Null);
        assert_eq!(regions[2], &json!({ "startLine": 5 }));
        assert_eq!(regions[3], &json!({ "startLine": 5, "endLine": 5 }));
        assert_eq!(
            results(&doc)[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            "a.rs"
        );
    }

    #[test]
    fn messages_and_fingerprints_are_never_empty() {
        let mut blank = finding("r", Severity::Info, None);
        blank.message = " ".into();
        blank.fingerprint = String::new();
        let mut bare = finding("bare", Severity::Info, None);
        bare.message.clear();
        bare.title.clear();
        let doc = to_sarif(&run(), &[blank.clone(), bare]);
        assert_valid(&doc);
        let res = results(&doc);
        assert_eq!(res[0]["message"]["text"], "r title");
        assert_eq!(
            res[0]["partialFingerprints"][FINGERPRINT_KEY],
            Finding::derive_fingerprint("r", None, " ")
        );
        assert_eq!(res[1]["message"]["text"], "bare");
        assert_eq!(rules(&doc)[1]["shortDescription"]["text"], "bare");
    }

    #[test]
    fn output_is_deterministic_pretty_json() {
        let findings = [
            finding(
                "x",
                Severity::High,
                Some(loc("a b/c.rs", Some(9), None, Some(1))),
            ),
            finding("y", Severity::Low, None),
            finding("x", Severity::Critical, None),
        ];
        let render = || {
            let mut out = Vec::new();
            write_sarif(&run(), &findings, &mut out).expect("write to a Vec");
            out
        };
        let first = render();
        assert_eq!(first, render());
        let text = String::from_utf8(first).expect("UTF-8");
        assert!(text.ends_with("}\n") && !text.ends_with("\n\n"));
        assert!(text.contains("\n  \"version\": \"2.1.0\""), "{text}");
        let parsed: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(parsed, to_sarif(&run(), &findings));
        assert_valid(&parsed);
    }

    #[test]
    fn timestamps_are_normalised_to_utc() {
        assert_eq!(
            utc_timestamp("2024-05-01T12:30:00+02:00").as_deref(),
            Some("2024-05-01T10:30:00Z")
        );
        assert_eq!(
            utc_timestamp("2024-12-31t23:30:00.123456789123-01:00").as_deref(),
            Some("2025-01-01T00:30:00.123456789Z")
        );
        assert_eq!(
            utc_timestamp("2016-12-31T23:59:60Z").as_deref(),
            Some("2016-12-31T23:59:59.999999999Z")
        );
        for bad in [
            "",
            "yesterday",
            "2024-05-01",
            "2024-05-01T12:30:00",
            "2024-02-30T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:30:00.Z",
            "2024-05-01T12:30:00+2:00",
            "2024-05-01T12:30:00Z ",
            "2024-05-01T12:30:00+24:00",
            "０２４-05-01T12:30:00Z",
        ] {
            assert_eq!(utc_timestamp(bad), None, "{bad:?}");
        }
        let odd = SarifRun {
            started_at: Some("2024-05-01T14:00:00+02:00"),
            ended_at: Some("not a time"),
            ..run()
        };
        let doc = to_sarif(&odd, &[]);
        assert_valid(&doc);
        let inv = &doc["runs"][0]["invocations"][0];
        assert_eq!(inv["startTimeUtc"], "2024-05-01T12:00:00Z");
        assert!(inv.get("endTimeUtc").is_none());
    }

    #[test]
    fn levels_follow_severity() {
        let levels: Vec<&str> = Severity::ALL.into_iter().map(level_for).collect();
        assert_eq!(levels, ["note", "note", "warning", "error", "error"]);
        let scores: Vec<&str> = Severity::ALL.into_iter().map(security_severity).collect();
        assert_eq!(scores, ["0.0", "3.0", "5.5", "8.0", "9.5"]);
    }

    #[test]
    fn schema_errors_name_the_instance_path() {
        let mut doc = to_sarif(&run(), &[finding("a", Severity::Low, None)]);
        doc["runs"][0]["results"][0]["ruleIndex"] = json!(-2);
        doc["version"] = json!("2.0.0");
        let errors = schema_errors(&schema(), &doc);
        assert!(
            errors.iter().any(|e| e.starts_with("at /version:")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("at /runs/0/results/0/ruleIndex:")),
            "{errors:?}"
        );
        let broken = schema_errors(&json!({ "type": 12 }), &doc);
        assert_eq!(broken.len(), 1);
        assert!(
            broken[0].starts_with("the schema does not compile"),
            "{broken:?}"
        );
    }
}
