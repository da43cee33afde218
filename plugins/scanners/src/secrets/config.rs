//! Secret rules as data: the gitleaks TOML format (`[[rules]]` with `id`,
//! `description`, `regex`, `secretGroup`, `entropy`, `keywords`, `path` and
//! `[[rules.allowlists]]`; global `[allowlist]` / `[[allowlists]]` with
//! `paths`, `regexes`, `regexTarget`, `stopwords`, `condition` and
//! `targetRules`; `[extend] disabledRules`), so a gitleaks configuration
//! works as it is, plus a few keys of Toolhost's own:
//!
//! | key | meaning |
//! | --- | --- |
//! | `severity` | `info` … `critical` (default `high`) |
//! | `advice` | what to do about such a secret, appended to the finding |
//! | `identifiers` + `secret` | shorthand for gitleaks' "semi-generic" regex: an identifier (`heroku`), an assignment, then the secret pattern |
//! | `secret` alone | shorthand for a token with a unique shape: `\b(<secret>)` and a terminator |
//! | `reportAs` | the finding's rule id (`secrets/<reportAs>`), when several rules report one kind |
//!
//! Go's regular expressions are RE2; they are compiled in ASCII byte mode
//! (`\w`, `\d`, `\s`, `\b` are ASCII, as in Go), and a `{` that does not
//! start a repetition is taken literally, as Go takes it.

use std::collections::BTreeMap;

use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;

use crate::Severity;

/// A rules file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesError(pub String);

impl std::fmt::Display for RulesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Deserialize, Default)]
struct FileSpec {
    #[serde(default)]
    extend: Option<ExtendSpec>,
    #[serde(default)]
    allowlist: Option<AllowlistSpec>,
    #[serde(default)]
    allowlists: Vec<AllowlistSpec>,
    #[serde(default)]
    rules: Vec<RuleSpec>,
}

#[derive(Deserialize, Default)]
struct ExtendSpec {
    #[serde(default, alias = "disabledrules", rename = "disabledRules")]
    disabled_rules: Vec<String>,
}

#[derive(Deserialize, Default, Clone)]
struct RuleSpec {
    id: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default, alias = "secretgroup", rename = "secretGroup")]
    secret_group: Option<usize>,
    #[serde(default)]
    entropy: Option<f64>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    allowlist: Option<AllowlistSpec>,
    #[serde(default)]
    allowlists: Vec<AllowlistSpec>,
    #[serde(default)]
    severity: Option<Severity>,
    #[serde(default)]
    advice: Option<String>,
    #[serde(default)]
    identifiers: Vec<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default, alias = "reportas", rename = "reportAs")]
    report_as: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
struct AllowlistSpec {
    #[serde(default)]
    description: String,
    #[serde(default)]
    condition: Option<String>,
    #[serde(default)]
    commits: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default, alias = "regextarget", rename = "regexTarget")]
    regex_target: Option<String>,
    #[serde(default)]
    stopwords: Vec<String>,
    #[serde(default, alias = "targetrules", rename = "targetRules")]
    target_rules: Vec<String>,
}

/// What an allowlist's `regexes` look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The secret itself (the default).
    Secret,
    /// The whole text the rule matched.
    Match,
    /// The line(s) of the match.
    Line,
}

/// A compiled allowlist.
#[derive(Debug, Clone)]
pub struct Allowlist {
    /// Where it came from, for reports.
    pub source: String,
    /// All given criteria must hold (`condition = "AND"`), else any.
    pub and: bool,
    pub paths: Vec<Regex>,
    pub regexes: Vec<Regex>,
    pub target: Target,
    /// Lowercase; a secret containing one is allowed.
    pub stopwords: Vec<String>,
    /// Commits only: never matches a working tree.
    pub commits_only: bool,
}

impl Allowlist {
    /// True when this allowlist allows a finding (`path`, its `secret`, the
    /// rule's whole `matched` text and the `line` it is on).
    pub fn allows(&self, path: &str, secret: &[u8], matched: &[u8], line: &[u8]) -> bool {
        if self.commits_only {
            return false;
        }
        let text = match self.target {
            Target::Secret => secret,
            Target::Match => matched,
            Target::Line => line,
        };
        let mut checks: Vec<bool> = Vec::with_capacity(3);
        if !self.paths.is_empty() {
            checks.push(self.paths.iter().any(|p| p.is_match(path.as_bytes())));
        }
        if !self.regexes.is_empty() {
            checks.push(self.regexes.iter().any(|r| r.is_match(text)));
        }
        if !self.stopwords.is_empty() {
            let lower = secret.to_ascii_lowercase();
            checks.push(
                self.stopwords
                    .iter()
                    .any(|w| memchr::memmem::find(&lower, w.as_bytes()).is_some()),
            );
        }
        if self.and {
            !checks.is_empty() && checks.iter().all(|&c| c)
        } else {
            checks.iter().any(|&c| c)
        }
    }

    /// True when it allows whole files by path alone (checked before any
    /// rule runs on a file).
    pub fn allows_path(&self, path: &str) -> bool {
        !self.and
            && !self.paths.is_empty()
            && self.paths.iter().any(|p| p.is_match(path.as_bytes()))
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    /// The finding's rule id, without the `secrets/` prefix.
    pub report_as: String,
    pub description: String,
    pub regex: Option<Regex>,
    /// Only files whose path matches; alone (no `regex`), the file itself
    /// is the finding.
    pub path: Option<Regex>,
    /// 0: the first non-empty group that is not named `name` (else the
    /// whole match).
    pub secret_group: usize,
    /// A secret must have more Shannon entropy than this (0: no check).
    pub entropy: f64,
    /// Lowercase; the rule runs on a file only if one occurs in it.
    pub keywords: Vec<String>,
    pub allowlists: Vec<Allowlist>,
    pub severity: Severity,
    pub advice: Option<String>,
    /// A generic rule (its id contains `generic`) gives way to a specific
    /// rule's finding at the same place.
    pub generic: bool,
}

/// Rules and global allowlists, as loaded from one or more files.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub rules: Vec<Rule>,
    pub global: Vec<Allowlist>,
    /// Where each part came from, in order.
    pub sources: Vec<String>,
}

/// gitleaks' identifier-assignment-secret template.
fn semi_generic(identifiers: &[String], secret: &str) -> String {
    format!(
        r#"(?i)[\w.-]{{0,50}}?(?:{})(?:[ \t\w.-]{{0,20}})[\s'"]{{0,3}}(?:=|>|:{{1,3}}=|\|\||:|=>|\?=|,)[\x60'"\s=]{{0,5}}({secret})(?:[\x60'"\s;]|\\[nr]|$)"#,
        identifiers.join("|")
    )
}

/// gitleaks' unique-token template.
fn unique_token(secret: &str) -> String {
    format!(r#"\b({secret})(?:[\x60'"\s;]|\\[nr]|$)"#)
}

/// Go (RE2) syntax to Rust `regex` syntax: a `{` that does not begin a
/// repetition (`{n}`, `{n,}`, `{n,m}`) is escaped, as Go reads it
/// literally and Rust rejects it.
pub fn go_to_rust(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut in_class = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            out.push(c);
            if let Some(&next) = chars.get(i + 1) {
                out.push(next);
            }
            i += 2;
            continue;
        }
        if in_class {
            if c == ']' {
                in_class = false;
            }
            out.push(c);
        } else if c == '[' {
            in_class = true;
            out.push(c);
            // A `]` right after `[` or `[^` is a literal member.
            if chars.get(i + 1) == Some(&'^') {
                out.push('^');
                i += 1;
            }
            if chars.get(i + 1) == Some(&']') {
                out.push(']');
                i += 1;
            }
        } else if c == '{' && !is_repetition(&chars[i..]) {
            out.push_str("\\{");
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

fn is_repetition(rest: &[char]) -> bool {
    let Some(close) = rest.iter().position(|&c| c == '}') else {
        return false;
    };
    let inner: String = rest[1..close].iter().collect();
    let mut parts = inner.splitn(2, ',');
    let first = parts.next().unwrap_or_default();
    let valid_num = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    match parts.next() {
        None => valid_num(first),
        Some(second) => valid_num(first) && (second.is_empty() || valid_num(second)),
    }
}

fn compile(pattern: &str, what: &str) -> Result<Regex, RulesError> {
    RegexBuilder::new(&go_to_rust(pattern))
        .unicode(false)
        .size_limit(64 << 20)
        .build()
        .map_err(|e| RulesError(format!("{what}: invalid regex `{pattern}`: {e}")))
}

fn allowlist(spec: &AllowlistSpec, source: &str, what: &str) -> Result<Allowlist, RulesError> {
    let what = if spec.description.is_empty() {
        what.to_string()
    } else {
        format!("{what} ({})", spec.description)
    };
    let and = match spec
        .condition
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("") | Some("OR") | Some("||") => false,
        Some("AND") | Some("&&") => true,
        Some(other) => {
            return Err(RulesError(format!(
                "{what}: condition `{other}` is not `OR` or `AND`"
            )));
        }
    };
    let target = match spec.regex_target.as_deref() {
        None | Some("") | Some("secret") => Target::Secret,
        Some("match") => Target::Match,
        Some("line") => Target::Line,
        Some(other) => {
            return Err(RulesError(format!(
                "{what}: regexTarget `{other}` is not `secret`, `match` or `line`"
            )));
        }
    };
    if spec.paths.is_empty()
        && spec.regexes.is_empty()
        && spec.stopwords.is_empty()
        && spec.commits.is_empty()
    {
        return Err(RulesError(format!(
            "{what}: an allowlist needs `paths`, `regexes`, `stopwords` or `commits`"
        )));
    }
    Ok(Allowlist {
        source: source.to_string(),
        and,
        paths: spec
            .paths
            .iter()
            .map(|p| compile(p, &format!("{what}, path")))
            .collect::<Result<_, _>>()?,
        regexes: spec
            .regexes
            .iter()
            .map(|r| compile(r, &format!("{what}, regex")))
            .collect::<Result<_, _>>()?,
        target,
        stopwords: spec
            .stopwords
            .iter()
            .map(|w| w.to_ascii_lowercase())
            .filter(|w| !w.is_empty())
            .collect(),
        commits_only: spec.paths.is_empty() && spec.regexes.is_empty() && spec.stopwords.is_empty(),
    })
}

/// Compiles `spec`; `merging` into an existing rule, it may have no pattern.
fn rule(spec: &RuleSpec, source: &str, merging: bool) -> Result<Rule, RulesError> {
    let what = format!("{source}: rule `{}`", spec.id);
    if spec.id.trim().is_empty() {
        return Err(RulesError(format!("{source}: a rule has no `id`")));
    }
    let pattern = match (&spec.regex, &spec.secret) {
        (Some(r), _) => Some(r.clone()),
        (None, Some(s)) if !spec.identifiers.is_empty() => Some(semi_generic(&spec.identifiers, s)),
        (None, Some(s)) => Some(unique_token(s)),
        (None, None) => None,
    };
    if pattern.is_none() && spec.path.is_none() && !merging {
        return Err(RulesError(format!(
            "{what}: a rule needs a `regex` (or `secret`), a `path`, or both"
        )));
    }
    let regex = pattern.as_deref().map(|p| compile(p, &what)).transpose()?;
    let secret_group = spec.secret_group.unwrap_or(0);
    if let Some(r) = &regex
        && secret_group >= r.captures_len()
    {
        return Err(RulesError(format!(
            "{what}: secretGroup {secret_group} but the regex has {} groups",
            r.captures_len() - 1
        )));
    }
    let mut keywords: Vec<String> = spec
        .keywords
        .iter()
        .map(|k| k.to_ascii_lowercase())
        .collect();
    if keywords.is_empty() && spec.regex.is_none() {
        keywords = spec
            .identifiers
            .iter()
            .map(|k| k.to_ascii_lowercase())
            .collect();
    }
    let mut allowlists = Vec::new();
    for (i, a) in spec.allowlist.iter().chain(&spec.allowlists).enumerate() {
        allowlists.push(allowlist(
            a,
            source,
            &format!("{what}, allowlist {}", i + 1),
        )?);
    }
    Ok(Rule {
        id: spec.id.clone(),
        report_as: spec.report_as.clone().unwrap_or_else(|| spec.id.clone()),
        description: if spec.description.is_empty() {
            spec.id.replace('-', " ")
        } else {
            spec.description.clone()
        },
        regex,
        path: spec
            .path
            .as_deref()
            .map(|p| compile(p, &format!("{what}, path")))
            .transpose()?,
        secret_group,
        entropy: spec.entropy.unwrap_or(0.0),
        keywords,
        allowlists,
        severity: spec.severity.unwrap_or(Severity::High),
        advice: spec.advice.clone(),
        generic: spec.id.contains("generic")
            || spec
                .report_as
                .as_deref()
                .is_some_and(|r| r.contains("generic")),
    })
}

impl Rules {
    /// Adds the rules file `text` (named `source` in messages): new rules
    /// are added, a rule with an existing id is merged into it (as gitleaks
    /// extends a configuration: a new regex, description, entropy, group or
    /// path replaces the old one, keywords and allowlists are added),
    /// `[extend] disabledRules` removes rules, and allowlists are added
    /// globally or, with `targetRules`, to those rules.
    pub fn add(&mut self, source: &str, text: &str) -> Result<(), RulesError> {
        let spec: FileSpec = toml::from_str(text)
            .map_err(|e| RulesError(format!("{source} is not a valid rules file: {e}")))?;
        if spec.allowlist.is_some() && !spec.allowlists.is_empty() {
            return Err(RulesError(format!(
                "{source}: use `[allowlist]` or `[[allowlists]]`, not both"
            )));
        }
        let mut added: BTreeMap<String, Rule> = BTreeMap::new();
        for r in &spec.rules {
            if r.allowlist.is_some() && !r.allowlists.is_empty() {
                return Err(RulesError(format!(
                    "{source}: rule `{}`: use `[rules.allowlist]` or `[[rules.allowlists]]`, not both",
                    r.id
                )));
            }
            let merging = self.rules.iter().any(|x| x.id == r.id);
            let compiled = rule(r, source, merging)?;
            match self.rules.iter_mut().find(|x| x.id == r.id) {
                Some(existing) => {
                    if compiled.regex.is_some() {
                        existing.regex = compiled.regex;
                        existing.secret_group = compiled.secret_group;
                    }
                    if !r.description.is_empty() {
                        existing.description = compiled.description;
                    }
                    if r.entropy.is_some() {
                        existing.entropy = compiled.entropy;
                    }
                    if compiled.path.is_some() {
                        existing.path = compiled.path;
                    }
                    if r.severity.is_some() {
                        existing.severity = compiled.severity;
                    }
                    if compiled.advice.is_some() {
                        existing.advice = compiled.advice;
                    }
                    existing.keywords.extend(compiled.keywords);
                    existing.allowlists.extend(compiled.allowlists);
                }
                None => {
                    added.insert(compiled.id.clone(), compiled);
                }
            }
        }
        // In file order.
        for r in &spec.rules {
            if let Some(rule) = added.remove(&r.id) {
                self.rules.push(rule);
            }
        }
        if let Some(ext) = &spec.extend {
            self.rules.retain(|r| !ext.disabled_rules.contains(&r.id));
        }
        for (i, a) in spec.allowlist.iter().chain(&spec.allowlists).enumerate() {
            let compiled = allowlist(a, source, &format!("{source}: allowlist {}", i + 1))?;
            if a.target_rules.is_empty() {
                self.global.push(compiled);
                continue;
            }
            for target in &a.target_rules {
                let Some(r) = self.rules.iter_mut().find(|r| r.id == *target) else {
                    return Err(RulesError(format!(
                        "{source}: allowlist {} targets rule `{target}`, which does not exist",
                        i + 1
                    )));
                };
                r.allowlists.push(compiled.clone());
            }
        }
        self.sources.push(source.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_braces_are_escaped_unless_they_repeat() {
        assert_eq!(go_to_rust(r"^\$(?:\d+|{\d+})$"), r"^\$(?:\d+|\{\d+})$");
        assert_eq!(go_to_rust(r"a{2,5}b{3}c{1,}"), r"a{2,5}b{3}c{1,}");
        assert_eq!(go_to_rust(r"[{}]{2}"), r"[{}]{2}");
        assert_eq!(go_to_rust(r"\{\{x}}"), r"\{\{x}}");
        assert_eq!(
            go_to_rust(r"import[ \t]+{[ \t\w,]+}"),
            r"import[ \t]+\{[ \t\w,]+}"
        );
        for p in [r"^\$(?:\d+|{\d+})$", r"['\x22]?\$?{{[^}]+}}"] {
            compile(p, "test").unwrap();
        }
    }

    #[test]
    fn a_gitleaks_file_loads_and_extends() {
        let mut rules = Rules::default();
        rules
            .add(
                "default",
                r#"
[[rules]]
id = "stripe"
regex = '''\b(sk_live_[a-z0-9]{24})\b'''
keywords = ["sk_live_"]
[[rules]]
id = "heroku"
identifiers = ["heroku"]
secret = '''[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'''
[allowlist]
stopwords = ["EXAMPLE"]
"#,
            )
            .unwrap();
        assert_eq!(rules.rules[1].keywords, ["heroku"]);
        rules
            .add(
                ".gitleaks.toml",
                r#"
title = "repo rules"
[extend]
useDefault = true
disabledRules = ["heroku"]
[[rules]]
id = "stripe"
description = "Stripe live key"
[[rules.allowlists]]
regexTarget = "line"
regexes = ['''fixture''']
[[allowlists]]
targetRules = ["stripe"]
paths = ['''^docs/''']
"#,
            )
            .unwrap();
        assert_eq!(rules.rules.len(), 1);
        let stripe = &rules.rules[0];
        assert_eq!(stripe.description, "Stripe live key");
        assert_eq!(stripe.allowlists.len(), 2);
        assert_eq!(rules.global.len(), 1);
        assert_eq!(rules.global[0].stopwords, ["example"]);
        assert_eq!(rules.sources, ["default", ".gitleaks.toml"]);
    }

    #[test]
    fn broken_rules_say_what_is_wrong() {
        let mut rules = Rules::default();
        for (text, needle) in [
            (
                "[[rules]]\nid = \"x\"\nregex = '''(unclosed'''\n",
                "rule `x`: invalid regex",
            ),
            ("[[rules]]\nid = \"x\"\n", "needs a `regex`"),
            (
                "[[rules]]\nid = \"x\"\nregex = 'a'\nsecretGroup = 2\n",
                "secretGroup 2",
            ),
            ("[[allowlists]]\ndescription = \"d\"\n", "needs `paths`"),
            (
                "[[allowlists]]\nregexTarget = \"file\"\nregexes = ['a']\n",
                "regexTarget `file`",
            ),
            (
                "[[allowlists]]\ntargetRules = [\"nope\"]\nregexes = ['a']\n",
                "rule `nope`",
            ),
            ("rules = 3", "not a valid rules file"),
        ] {
            let e = rules.add("f.toml", text).unwrap_err();
            assert!(e.0.contains(needle) && e.0.contains("f.toml"), "{e}");
        }
    }
}
