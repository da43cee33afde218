//! Committed secrets, found by rules kept as data ([`config`]): the
//! built-in `rules/secrets.toml`, extended by an operator's rules (a
//! parameter) and a target's own (`.gitleaks.toml` or
//! `.toolhost-secrets.toml`).
//!
//! A file is scanned whole (a rule may span lines, like a private key
//! block): a keyword prefilter picks the rules worth running (a rule runs
//! only when one of its keywords occurs in the file), each rule's regex
//! finds candidates, and a candidate is dropped when its secret is not
//! random enough (`entropy`), when an allowlist allows it (placeholders such
//! as `AKIAIOSFODNN7EXAMPLE`, `<your-password>`, `xxxx…`, `${VAR}`), when
//! its line says `toolhost:allow`, `gitleaks:allow` or `pragma: allowlist
//! secret`, or when it is a generic rule's finding at the place of a
//! specific rule's. A finding never carries a secret: at most its first four
//! characters.

pub mod config;
pub mod samples;

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind};

use crate::{Hit, normalize_path, redact};
use config::Rules;
pub use config::RulesError;

/// The built-in rules.
pub const DEFAULT_RULES: &str = include_str!("../../rules/secrets.toml");

/// Markers that allow every finding on their line.
const INLINE_ALLOW: &[&[u8]] = &[
    b"toolhost:allow",
    b"gitleaks:allow",
    b"pragma: allowlist secret",
];

/// Rules files a target may carry, at its root.
pub const TARGET_RULE_FILES: &[&str] = &[".gitleaks.toml", ".toolhost-secrets.toml"];

/// A compiled set of rules, ready to scan files.
pub struct SecretScanner {
    rules: Rules,
    /// Keyword automaton over lowercase text; pattern `i` is `keywords[i]`.
    keywords: Option<AhoCorasick>,
    /// For each keyword, the rules it enables.
    keyword_rules: Vec<Vec<usize>>,
    /// Rules without keywords: they run on every file.
    always: Vec<usize>,
}

static DEFAULT: LazyLock<SecretScanner> =
    LazyLock::new(|| SecretScanner::new(&[]).expect("the built-in secret rules are valid"));

/// The scanner with the built-in rules only.
pub fn default_scanner() -> &'static SecretScanner {
    &DEFAULT
}

impl SecretScanner {
    /// The built-in rules extended by `extra` files, as (source, TOML).
    pub fn new(extra: &[(String, String)]) -> Result<Self, RulesError> {
        let mut rules = Rules::default();
        rules.add("built-in rules", DEFAULT_RULES)?;
        for (source, text) in extra {
            rules.add(source, text)?;
        }
        Ok(Self::compile(rules))
    }

    fn compile(rules: Rules) -> Self {
        let mut keywords: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        let mut always = Vec::new();
        for (i, r) in rules.rules.iter().enumerate() {
            if r.keywords.is_empty() {
                always.push(i);
            }
            for k in &r.keywords {
                match keywords.iter().position(|x| x == k) {
                    Some(at) => keyword_rules[at].push(i),
                    None => {
                        keywords.push(k.clone());
                        keyword_rules.push(vec![i]);
                    }
                }
            }
        }
        // A DFA: overlapping search over every byte of every file is the
        // hot loop, and a DFA takes one table lookup per byte. Case is
        // ignored in the automaton, so contents are not lowercased first.
        let automaton = (!keywords.is_empty())
            .then(|| {
                let mut builder = AhoCorasick::builder();
                builder.ascii_case_insensitive(true);
                builder
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(&keywords)
                    .or_else(|_| builder.kind(None).build(&keywords))
                    .ok()
            })
            .flatten();
        if automaton.is_none() && !keywords.is_empty() {
            // Too many keywords for an automaton: every rule runs.
            always = (0..rules.rules.len()).collect();
        }
        SecretScanner {
            rules,
            keywords: automaton,
            keyword_rules,
            always,
        }
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.rules.rules.len()
    }

    /// Where the rules came from.
    pub fn sources(&self) -> &[String] {
        &self.rules.sources
    }

    /// The secrets in one file (`path` relative to the scanned tree).
    pub fn scan(&self, path: &str, contents: &[u8]) -> Vec<Hit> {
        let path = normalize_path(path);
        if self.rules.global.iter().any(|a| a.allows_path(&path)) {
            return Vec::new();
        }
        let mut candidates = vec![false; self.rules.rules.len()];
        for &i in &self.always {
            candidates[i] = true;
        }
        if let Some(ac) = &self.keywords {
            for m in ac.find_overlapping_iter(contents) {
                for &i in &self.keyword_rules[m.pattern().as_usize()] {
                    candidates[i] = true;
                }
            }
        }
        let lines = LineIndex::new(contents);
        let mut found: Vec<Found> = Vec::new();
        for (i, rule) in self.rules.rules.iter().enumerate() {
            if !candidates[i] {
                continue;
            }
            if let Some(p) = &rule.path
                && !p.is_match(path.as_bytes())
            {
                continue;
            }
            if rule.allowlists.iter().any(|a| a.allows_path(&path)) {
                continue;
            }
            let Some(regex) = &rule.regex else {
                // A path-only rule: the file itself is the finding.
                found.push(Found {
                    rule: i,
                    secret: (0, 0),
                    name: None,
                });
                continue;
            };
            for caps in regex.captures_iter(contents) {
                let whole = caps.get(0).expect("group 0 always takes part");
                let (start, end) = trim_newlines(contents, whole.start(), whole.end());
                let secret = match rule.secret_group {
                    0 => (1..caps.len())
                        .filter(|&g| regex.capture_names().nth(g).flatten() != Some("name"))
                        .find_map(|g| caps.get(g).filter(|m| !m.is_empty()))
                        .map_or((start, end), |m| (m.start(), m.end())),
                    g => caps.get(g).map_or((start, end), |m| (m.start(), m.end())),
                };
                let line = lines.line_text(contents, secret.0);
                if INLINE_ALLOW
                    .iter()
                    .any(|m| memchr::memmem::find(line, m).is_some())
                {
                    continue;
                }
                let secret_bytes = &contents[secret.0..secret.1];
                if rule.entropy > 0.0 && shannon_entropy(secret_bytes) <= rule.entropy {
                    continue;
                }
                let matched = &contents[start..end];
                let allowed = self
                    .rules
                    .global
                    .iter()
                    .chain(&rule.allowlists)
                    .any(|a| a.allows(&path, secret_bytes, matched, line));
                if allowed {
                    continue;
                }
                let name = caps
                    .name("name")
                    .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned());
                found.push(Found {
                    rule: i,
                    secret,
                    name,
                });
            }
        }
        // A generic finding gives way to a specific one at the same place.
        let specific: Vec<(usize, usize, usize)> = found
            .iter()
            .filter(|f| !self.rules.rules[f.rule].generic)
            .map(|f| (lines.line_of(f.secret.0), f.secret.0, f.secret.1))
            .collect();
        found.retain(|f| {
            let (start, end) = f.secret;
            !self.rules.rules[f.rule].generic
                || !specific
                    .iter()
                    .any(|&(line, s, e)| line == lines.line_of(start) && s < end && start < e)
        });
        found
            .into_iter()
            .map(|f| self.hit(&path, contents, &lines, f))
            .collect()
    }

    fn hit(&self, path: &str, contents: &[u8], lines: &LineIndex, f: Found) -> Hit {
        let rule = &self.rules.rules[f.rule];
        let secret = String::from_utf8_lossy(&contents[f.secret.0..f.secret.1]).into_owned();
        let line_no = lines.line_of(f.secret.0) as u32 + 1;
        let column = lines.column_of(contents, f.secret.0);
        // A PEM block spans to its end line.
        let end_line = if secret.starts_with("-----BEGIN") {
            let after = &contents[f.secret.1.min(contents.len())..];
            memchr::memmem::find(after, b"-----END ")
                .map_or(line_no, |at| lines.line_of(f.secret.1 + at) as u32 + 1)
        } else {
            lines.line_of(f.secret.1.saturating_sub(1).max(f.secret.0)) as u32 + 1
        };
        let shown = if secret.starts_with("-----BEGIN") {
            // The header is not secret; the body is.
            format!("`{}`", secret.lines().next().unwrap_or_default())
        } else if secret.is_empty() {
            String::new()
        } else {
            format!("`{}`", redact(&secret))
        };
        let advice = rule.advice.as_deref().unwrap_or(
            "Revoke or rotate it now, remove it from the repository and its history, and read it at run time from the environment or a secret store.",
        );
        let what = match (&f.name, rule.generic) {
            (Some(name), true) => format!("`{name}` is assigned a literal secret ({shown})"),
            _ if shown.is_empty() => format!("A {} file is committed", rule.description),
            _ => format!("{} ({shown}) is committed", capitalise(&rule.description)),
        };
        let message =
            format!("{what} in `{path}`. Anyone who can read the repository can use it. {advice}");
        let title = if rule.generic {
            "hard-coded secret".to_string()
        } else {
            format!("{} committed", rule.description)
        };
        Hit::new(
            format!("secrets/{}", rule.report_as),
            title,
            message,
            rule.severity,
            Some(path.to_string()),
            Some(line_no),
            Some(end_line.max(line_no)),
            Some(column),
            "",
        )
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

struct Found {
    rule: usize,
    /// Byte range of the secret in the file.
    secret: (usize, usize),
    /// The assigned name, for generic rules.
    name: Option<String>,
}

fn trim_newlines(text: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    while start < end && text[start] == b'\n' {
        start += 1;
    }
    while end > start && matches!(text[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    (start, end)
}

/// Shannon entropy (bits per byte) of `data`.
pub fn shannon_entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0usize; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let len = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / len;
            -p * p.log2()
        })
        .sum()
}

/// Byte offsets of line starts, for turning offsets into lines and columns.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &[u8]) -> Self {
        let mut starts = vec![0];
        starts.extend(memchr::memchr_iter(b'\n', text).map(|i| i + 1));
        LineIndex { starts }
    }

    /// 0-based line of byte `at`.
    fn line_of(&self, at: usize) -> usize {
        match self.starts.binary_search(&at) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        }
    }

    /// The line containing byte `at`, without its newline.
    fn line_text<'a>(&self, text: &'a [u8], at: usize) -> &'a [u8] {
        let i = self.line_of(at);
        let start = self.starts[i];
        let end = self
            .starts
            .get(i + 1)
            .map_or(text.len(), |&next| next.saturating_sub(1));
        let line = &text[start..end.max(start)];
        line.strip_suffix(b"\r").unwrap_or(line)
    }

    /// 1-based column, in characters, of byte `at`.
    fn column_of(&self, text: &[u8], at: usize) -> u32 {
        let start = self.starts[self.line_of(at)];
        String::from_utf8_lossy(&text[start..at]).chars().count() as u32 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(hits: &[Hit]) -> Vec<&str> {
        let mut v: Vec<&str> = hits.iter().map(|h| h.rule_id.as_str()).collect();
        v.sort();
        v
    }

    const TOKEN: &str = concat!("ghp_", "Q7mZk2LpX9wR4tYv8NcB3dHf6JsA1eUo5GiK");

    #[test]
    fn inline_markers_allow_a_line() {
        for marker in [
            "toolhost:allow",
            "gitleaks:allow",
            "pragma: allowlist secret",
        ] {
            let text = format!("token = \"{TOKEN}\" # {marker}\nother = \"{TOKEN}\"\n");
            let hits = default_scanner().scan("a.py", text.as_bytes());
            assert_eq!(hits.len(), 1, "{marker}: {hits:?}");
            assert_eq!(hits[0].start_line, Some(2));
        }
    }

    #[test]
    fn a_generic_finding_gives_way_to_a_specific_one() {
        let text = format!("GITHUB_TOKEN = \"{TOKEN}\"\n");
        assert_eq!(
            ids(&default_scanner().scan("ci.py", text.as_bytes())),
            ["secrets/github-token"]
        );
    }

    #[test]
    fn path_rules_report_the_file() {
        let hits = default_scanner().scan("certs/client.p12", b"\x30\x82binary");
        assert_eq!(ids(&hits), ["secrets/private-key"]);
        assert!(hits[0].message.contains("PKCS#12"), "{}", hits[0].message);
    }

    #[test]
    fn rules_files_extend_the_built_in_rules() {
        let internal = concat!("corp_", "k7Yw2QmZx9Lp4RtV8nBc");
        let text = format!("CORP_TOKEN = \"{internal}\"\nkey = \"{TOKEN}\"\n");
        // Built in: the internal token is only a generic secret.
        let before = default_scanner().scan("docs/setup.py", text.as_bytes());
        assert_eq!(
            ids(&before),
            ["secrets/generic-secret", "secrets/github-token"]
        );
        let repo = r#"
[[rules]]
id = "corp-token"
description = "Corp internal token"
regex = '''\b(corp_[A-Za-z0-9]{20})\b'''
keywords = ["corp_"]
severity = "critical"
[[allowlists]]
description = "documentation"
targetRules = ["github-token"]
paths = ['''^docs/''']
"#;
        let scanner = SecretScanner::new(&[(".gitleaks.toml".into(), repo.into())]).unwrap();
        let after = scanner.scan("docs/setup.py", text.as_bytes());
        assert_eq!(ids(&after), ["secrets/corp-token"], "{after:#?}");
        assert_eq!(after[0].severity, crate::Severity::Critical);
        assert_eq!(scanner.sources(), ["built-in rules", ".gitleaks.toml"]);
        // Stopwords and disabled rules.
        let quiet = SecretScanner::new(&[(
            "param".into(),
            "[extend]\ndisabledRules = [\"generic-secret\"]\n[[allowlists]]\nstopwords = [\"q7mzk2\"]\n".into(),
        )])
        .unwrap();
        assert!(quiet.scan("a.py", text.as_bytes()).is_empty());
    }

    #[test]
    fn a_gitleaks_configuration_reads_as_it_is() {
        // The shapes of gitleaks' own default configuration: the deprecated
        // single `[allowlist]`, Go braces, `(?i)` in mid-pattern, `\x60`.
        let gitleaks = r#"
title = "gitleaks config"
[allowlist]
description = "global allow lists"
regexes = ['''^\${(?:[A-Z_]+|[a-z_]+)}$''']
paths = ['''gitleaks\.toml''']
[[rules]]
id = "adobe-client-secret"
description = "Adobe Client Secret"
regex = '''\b(p8e-(?i)[a-z0-9]{32})(?:[\x60'"\s;]|\\[nr]|$)'''
entropy = 2
keywords = ["p8e-"]
"#;
        let scanner = SecretScanner::new(&[("gitleaks.toml".into(), gitleaks.into())]).unwrap();
        let secret = concat!("p8e-", "Zq81wXrT3yLm0PkV7cNb2HsJd4Fg6AaE");
        let hits = scanner.scan("adobe.env", format!("ADOBE={secret}\n").as_bytes());
        assert_eq!(ids(&hits), ["secrets/adobe-client-secret"]);
        assert!(scanner.scan("x.env", b"A=${SECRET_VALUE}\n").is_empty());
    }

    #[test]
    fn entropy_and_lines_are_counted_right() {
        assert_eq!(shannon_entropy(b""), 0.0);
        assert_eq!(shannon_entropy(b"aaaa"), 0.0);
        assert!((shannon_entropy(b"abcd") - 2.0).abs() < 1e-9);
        let text = "one\r\ntwo €\nthree\n";
        let idx = LineIndex::new(text.as_bytes());
        let at = text.find("three").unwrap();
        assert_eq!(idx.line_of(at), 2);
        assert_eq!(idx.line_text(text.as_bytes(), 0), b"one");
        let e = text.find('€').unwrap() + 3;
        assert_eq!(idx.column_of(text.as_bytes(), e), 6);
    }
}
