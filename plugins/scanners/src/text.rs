//! Text scanning: committed secrets in any text file, risky patterns in Rust.

use std::sync::LazyLock;

use regex::Regex;

use crate::rustlex::{MaskedLine, mask_rust};
use crate::secrets::SecretScanner;
use crate::{Hit, Severity, dedup, normalize_path};

/// File extensions (lowercase, without the dot) of source and config text.
const EXTENSIONS: &[&str] = &[
    "rs",
    "toml",
    "py",
    "js",
    "mjs",
    "cjs",
    "jsx",
    "ts",
    "tsx",
    "go",
    "java",
    "kt",
    "rb",
    "php",
    "c",
    "h",
    "cc",
    "cpp",
    "hpp",
    "json",
    "yaml",
    "yml",
    "env",
    "sh",
    "bash",
    "zsh",
    "cfg",
    "conf",
    "ini",
    "properties",
    "pem",
    "key",
    "txt",
    "md",
    "markdown",
    "rst",
    "adoc",
    "xml",
    "html",
    "htm",
    "tf",
    "tfvars",
    "hcl",
    "sql",
    "ps1",
    "bat",
    "cmd",
    "cs",
    "swift",
    "scala",
    "kts",
    "gradle",
    "groovy",
    "lua",
    "pl",
    "dart",
    "vue",
    "svelte",
    "erb",
    "tpl",
    "j2",
    "config",
    "cnf",
    "plist",
    "ppk",
    "asc",
    "gpg",
    "http",
    "json5",
    "p12",
    "pfx",
];

/// Files without a (meaningful) extension that commonly hold credentials
/// or configuration.
const DOTFILES: &[&str] = &[
    ".npmrc",
    ".pypirc",
    ".netrc",
    ".git-credentials",
    ".dockercfg",
    "credentials",
    "id_rsa",
    "id_dsa",
    "id_ecdsa",
    "id_ed25519",
    "dockerfile",
    "jenkinsfile",
    "makefile",
    "procfile",
    "vagrantfile",
];

/// Directories never worth scanning: build output, VCS data, vendored
/// JavaScript, Python virtual environments and bytecode caches.
const SKIPPED_DIRS: &[&str] = &[
    "target",
    ".git",
    "node_modules",
    ".venv",
    "venv",
    "__pycache__",
];

/// True for paths the scanner should look at: source and config text by
/// extension (`.rs`, `.toml`, `.py`, `.json`, `.yaml`, `.pem`, `.txt`...) and
/// credential dotfiles (`.env`, `.env.local`, `.npmrc`...), except anything
/// under a directory listed in `SKIPPED_DIRS` (`target`, `.git`, `node_modules`,
/// `.venv`, `venv`, `__pycache__`).
pub fn should_scan(path: &str) -> bool {
    let path = normalize_path(path);
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let Some((name, dirs)) = parts.split_last() else {
        return false;
    };
    if dirs.iter().any(|d| SKIPPED_DIRS.contains(d)) {
        return false;
    }
    let name = name.to_ascii_lowercase();
    if name.starts_with(".env") || DOTFILES.contains(&name.as_str()) {
        return true;
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => EXTENSIONS.contains(&ext),
        _ => false,
    }
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in pattern is valid")
}

static UNSAFE: LazyLock<Regex> =
    LazyLock::new(|| re(r"\bunsafe\s*(?:(\{)|(fn|impl|trait|extern)\b)"));
static INPUT_CALL: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"parse::<|\.parse\(\)|\bfrom_str|\bfrom_slice|serde_json::from|\bread_line\b|",
        r"\bstdin\(\)|\benv::var|\bargs\(\)\.nth|\bfrom_utf8\("
    ))
});
static UNWRAP: LazyLock<Regex> = LazyLock::new(|| re(r"\.unwrap\(\)|\.expect\("));
static TEST_ATTR: LazyLock<Regex> =
    LazyLock::new(|| re(r"#\[\s*(?:cfg\s*\(\s*test\s*\)|(?:[A-Za-z_][A-Za-z0-9_]*::)*test\s*\])"));
static SHELL_COMMAND: LazyLock<Regex> = LazyLock::new(|| {
    re(r#"\bCommand::new\(\s*"(?:(?:/usr)?/bin/)?(?:sh|bash|zsh|dash|ksh|(cmd)(?:\.exe)?)"\s*\)"#)
});
static SHELL_FLAG: LazyLock<Regex> =
    LazyLock::new(|| re(r#"\.args?\(\s*(?:&?\[|vec!\[)?\s*"(?:-[a-z]*c|(/[cC]))""#));

/// Scans one text file for committed secrets (with the built-in rules) and,
/// in `.rs` files, risky Rust.
///
/// `path` is relative and is only used to label hits and pick the rules (Rust
/// rules for `.rs`, path-restricted secret rules); nothing is skipped here,
/// see [`should_scan`]. Hits come back deduplicated and sorted by line.
pub fn scan_text(path: &str, contents: &str) -> Vec<Hit> {
    scan_text_with(crate::secrets::default_scanner(), path, contents)
}

/// [`scan_text`] with the secret rules of `secrets`.
pub fn scan_text_with(secrets: &SecretScanner, path: &str, contents: &str) -> Vec<Hit> {
    let path = normalize_path(path);
    let lines: Vec<&str> = contents
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut hits = secrets.scan(&path, contents.as_bytes());
    if path.to_ascii_lowercase().ends_with(".rs") {
        scan_rust(&path, contents, &lines, &mut hits);
    }
    dedup(hits)
}

/// 1-based column, in characters, of byte offset `byte` on `line`.
fn column(line: &str, byte: usize) -> u32 {
    (line[..byte].chars().count() + 1) as u32
}

struct Ctx<'a> {
    path: &'a str,
    line_no: u32,
    line: &'a str,
}

impl Ctx<'_> {
    fn hit(
        &self,
        rule: &str,
        title: &str,
        message: String,
        severity: Severity,
        byte: usize,
        end_line: u32,
    ) -> Hit {
        Hit::new(
            rule,
            title,
            message,
            severity,
            Some(self.path.to_string()),
            Some(self.line_no),
            Some(end_line),
            Some(column(self.line, byte)),
            "",
        )
    }
}

fn scan_rust(path: &str, contents: &str, lines: &[&str], hits: &mut Vec<Hit>) {
    let masked = mask_rust(contents);
    let in_test = test_regions(&masked);
    for (idx, m) in masked.iter().enumerate() {
        let ctx = Ctx {
            path,
            line_no: idx as u32 + 1,
            line: lines[idx],
        };
        unsafe_rule(&ctx, lines, idx, m, hits);
        if !in_test[idx] {
            unwrap_rule(&ctx, &masked, idx, hits);
        }
        command_rule(&ctx, &masked, idx, hits);
    }
}

fn unsafe_rule(ctx: &Ctx<'_>, lines: &[&str], idx: usize, m: &MaskedLine, hits: &mut Vec<Hit>) {
    for caps in UNSAFE.captures_iter(&m.code) {
        let whole = caps.get(0).expect("group 0 always takes part");
        let kind = match caps.get(2).map(|k| k.as_str()) {
            None => "block",
            Some("fn") => "function",
            Some("impl") => "impl",
            Some("trait") => "trait",
            _ => "extern item",
        };
        let (severity, message) = if has_safety_comment(lines, idx) {
            (
                Severity::Info,
                format!(
                    "This `unsafe` {kind} is documented with a `SAFETY:` comment. Check that \
                     the invariants it states still hold, and keep the unsafe region as small \
                     as possible."
                ),
            )
        } else {
            (
                Severity::Low,
                format!(
                    "This `unsafe` {kind} has no `// SAFETY:` comment. Document the invariants \
                     that make it sound in a `// SAFETY:` comment on the line just above (for an \
                     `unsafe fn`, a `# Safety` section in its docs), or replace it with a safe \
                     API. Undocumented unsafe code is where memory-safety bugs hide and is hard \
                     to review."
                ),
            )
        };
        hits.push(ctx.hit(
            "rust/unsafe-block",
            "unsafe code",
            message,
            severity,
            whole.start(),
            ctx.line_no,
        ));
    }
}

/// A `SAFETY:` comment on the same line, on the line just above, or anywhere
/// in the run of comment and attribute lines directly above (a `# Safety`
/// doc section counts for `unsafe fn`).
fn has_safety_comment(lines: &[&str], idx: usize) -> bool {
    let mentions = |l: &str| l.contains("SAFETY:") || l.contains("# Safety");
    if mentions(lines[idx]) {
        return true;
    }
    let mut i = idx;
    while i > 0 {
        i -= 1;
        let t = lines[i].trim_start();
        if mentions(t) {
            return true;
        }
        let comment_or_attr =
            t.starts_with("//") || t.starts_with("/*") || t.starts_with('*') || t.starts_with("#[");
        if !comment_or_attr {
            return false;
        }
    }
    false
}

fn unwrap_rule(ctx: &Ctx<'_>, masked: &[MaskedLine], idx: usize, hits: &mut Vec<Hit>) {
    let code = &masked[idx].code;
    if let Some(input) = INPUT_CALL.find(code) {
        let after = input.start();
        if let Some(u) = UNWRAP.find_iter(code).find(|u| u.start() >= after) {
            // `?` in between means the input error is already handled.
            if !code[input.end()..u.start()].contains('?') {
                hits.push(unwrap_hit(ctx, input.as_str(), u.start()));
            }
        }
        return;
    }
    // A chain split over lines: `s\n    .parse::<u32>()\n    .unwrap();`
    let trimmed = code.trim_start();
    if !(trimmed.starts_with(".unwrap()") || trimmed.starts_with(".expect(")) {
        return;
    }
    let Some(prev) = masked[..idx]
        .iter()
        .rev()
        .map(|l| l.code.as_str())
        .find(|l| !l.trim().is_empty())
    else {
        return;
    };
    if let Some(input) = INPUT_CALL.find(prev) {
        let rest = &prev[input.end()..];
        if !rest.contains('?') && !UNWRAP.is_match(rest) && !rest.contains(';') {
            let byte = code.len() - trimmed.len();
            hits.push(unwrap_hit(ctx, input.as_str(), byte));
        }
    }
}

fn unwrap_hit(ctx: &Ctx<'_>, call: &str, byte: usize) -> Hit {
    let call = call
        .trim_start_matches('.')
        .trim_end_matches(['(', ')', '<', ':']);
    ctx.hit(
        "rust/unwrap-on-input",
        "unwrap on parsed input",
        format!(
            "`.unwrap()`/`.expect()` on the result of `{call}` panics on malformed input; \
             return an error instead. Propagate it with `?` (mapping it into your error type \
             with context such as the offending value), or handle the failure explicitly with \
             `match`/`unwrap_or`."
        ),
        Severity::Medium,
        byte,
        ctx.line_no,
    )
}

fn command_rule(ctx: &Ctx<'_>, masked: &[MaskedLine], idx: usize, hits: &mut Vec<Hit>) {
    let text = &masked[idx].no_comments;
    for caps in SHELL_COMMAND.captures_iter(text) {
        let cmd = caps.get(0).expect("group 0 always takes part");
        let windows = caps.get(1).is_some();
        let flag_matches = |s: &str| {
            SHELL_FLAG
                .captures_iter(s)
                .any(|f| f.get(1).is_some() == windows)
        };
        // The flag must be in the same statement: later on this line (before
        // a `;`), or on the next line if that line continues the call chain.
        let rest = &text[cmd.end()..];
        let rest = &rest[..rest.find(';').unwrap_or(rest.len())];
        let end_line = if flag_matches(rest) {
            Some(ctx.line_no)
        } else if rest.trim().is_empty() {
            masked[idx + 1..]
                .iter()
                .position(|l| !l.code.trim().is_empty())
                .filter(|&off| {
                    let next = &masked[idx + 1 + off];
                    next.code.trim_start().starts_with('.') && flag_matches(&next.no_comments)
                })
                .map(|off| ctx.line_no + off as u32 + 1)
        } else {
            None
        };
        let Some(end_line) = end_line else {
            continue;
        };
        let shell = if windows { "cmd /C" } else { "sh -c" };
        hits.push(ctx.hit(
            "rust/command-injection",
            "command run through a shell",
            format!(
                "`{shell}` interprets its argument as a shell script: if any part of it comes \
                 from input (a path, a name, a formatted value), shell metacharacters in that \
                 value run arbitrary commands. Run the program directly with \
                 `Command::new(program).arg(value)`, passing each value as its own argument; if \
                 a shell is unavoidable, keep the script constant and pass values as positional \
                 parameters (`sh -c 'ls -l \"$1\"' sh value`)."
            ),
            Severity::High,
            cmd.start(),
            end_line,
        ));
    }
}

/// For each line, whether it lies in test-only code: the item after
/// `#[cfg(test)]`, `#[test]` or `#[tokio::test]` (its braces, tracked on the
/// masked code so braces in strings and comments do not count).
fn test_regions(masked: &[MaskedLine]) -> Vec<bool> {
    let mut out = vec![false; masked.len()];
    let mut depth: i64 = 0;
    let mut pending = false;
    let mut region: Option<i64> = None;
    for (idx, line) in masked.iter().enumerate() {
        if region.is_some() {
            out[idx] = true;
        }
        let mut attr_end = 0;
        if region.is_none()
            && let Some(m) = TEST_ATTR.find(&line.code)
        {
            pending = true;
            attr_end = m.end();
        }
        for (pos, b) in line.code.bytes().enumerate() {
            if pos < attr_end {
                continue;
            }
            match b {
                b'{' => {
                    if pending && region.is_none() {
                        region = Some(depth);
                        pending = false;
                        out[idx] = true;
                    }
                    depth += 1;
                }
                b'}' => {
                    depth -= 1;
                    if region == Some(depth) {
                        region = None;
                    }
                }
                b';' if pending && region.is_none() => pending = false,
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Secret-looking samples are assembled with `concat!` so that this file
    // does not itself contain them.
    const AWS_KEY: &str = concat!("AKIA", "QYLPMN5HHHFPZAM2");
    const AWS_SECRET: &str = concat!("wJalrXUtnFEMI/K7MDENG/", "bPxRfiCYzK4mq2Lv9T");
    const GH_TOKEN: &str = concat!("ghp_", "R3leAs3B0tT0kenF1xtur3aBcDeFgHiJkLmN");
    const SLACK: &str = concat!("xoxb", "-2048613921-8203912390-Zq8WnT4c");

    fn rules(hits: &[Hit]) -> Vec<&str> {
        hits.iter().map(|h| h.rule_id.as_str()).collect()
    }

    fn only(path: &str, text: &str, rule: &str) -> Vec<Hit> {
        scan_text(path, text)
            .into_iter()
            .filter(|h| h.rule_id == rule)
            .collect()
    }

    fn loc(h: &Hit) -> (u32, u32) {
        (h.start_line.unwrap(), h.start_column.unwrap())
    }

    #[test]
    fn should_scan_picks_source_and_config_text() {
        for p in [
            "src/lib.rs",
            "Cargo.toml",
            "app/main.py",
            "web/index.js",
            "web/app.ts",
            "cmd/main.go",
            "src/Main.java",
            "src/x.c",
            "include/x.h",
            "src/x.cpp",
            "package.json",
            "config.yaml",
            ".github/workflows/ci.yml",
            ".env",
            ".env.local",
            "deploy/.env.production",
            "prod.env",
            "scripts/deploy.sh",
            "setup.cfg",
            "tox.ini",
            "keys/deploy_key.pem",
            "certs/server.KEY",
            "notes.txt",
            ".npmrc",
            "src\\windows\\path.rs",
            "./src/lib.rs",
            "src/target.rs",
            "README.md",
            "Makefile",
            "deploy/id_ed25519",
            "infra/main.tf",
        ] {
            assert!(should_scan(p), "{p} should be scanned");
        }
        for p in [
            "",
            "src/",
            "logo.png",
            "Cargo.lock",
            "target/debug/build/x/out/gen.rs",
            "crates/core/target/release/foo.json",
            "target",
            ".git/config",
            "sub/.git/hooks/pre-commit.sh",
            "node_modules/left-pad/index.js",
            "web/node_modules/x/package.json",
            "archive.tar.gz",
        ] {
            assert!(!should_scan(p), "{p} should be skipped");
        }
    }

    #[test]
    fn private_key_headers_are_critical_and_span_the_block() {
        let pem = concat!(
            "# deploy key\n-----BEGIN OPENSSH ",
            "PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU\nAAAAAAABAAAAMwAAAAtzc2gtZW\n",
            "-----END OPENSSH PRIVATE KEY-----\n"
        );
        let hits = scan_text("keys/id_ed25519.pem", pem);
        assert_eq!(rules(&hits), ["secrets/private-key"]);
        let h = &hits[0];
        assert_eq!(h.severity, Severity::Critical);
        assert_eq!(loc(h), (2, 1));
        assert_eq!(h.end_line, Some(5));
        assert!(!h.message.contains("b3BlbnNzaC1rZXktdjEAAAAABG5vbmU"));
        assert!(h.message.contains("Revoke or rotate"));

        for kind in [
            "PRIVATE KEY",
            "RSA PRIVATE KEY",
            "EC PRIVATE KEY",
            "DSA PRIVATE KEY",
            "PGP PRIVATE KEY BLOCK",
            "ENCRYPTED PRIVATE KEY",
        ] {
            let header = format!("-----BEGIN {kind}-----");
            let text = format!("const KEY: &str = \"{header}\\nMIIE...\";");
            let hits = only("src/keys.rs", &text, "secrets/private-key");
            assert_eq!(hits.len(), 1, "{header}");
            assert_eq!(loc(&hits[0]), (1, 20));
        }
        for text in [
            "-----BEGIN PUBLIC KEY-----",
            "-----BEGIN CERTIFICATE-----",
            "-----BEGIN RSA PUBLIC KEY-----",
            "parse a -----BEGIN PRIVATE KEY header",
        ] {
            assert!(scan_text("certs/ca.pem", text).is_empty(), "{text}");
        }
    }

    #[test]
    fn aws_access_key_ids_are_found_and_redacted() {
        let text = format!("region = \"eu-west-1\"\naccess_key_id = \"{AWS_KEY}\"\n");
        let hits = scan_text("config/aws.toml", &text);
        assert_eq!(rules(&hits), ["secrets/aws-access-key"]);
        assert_eq!(hits[0].severity, Severity::High);
        assert_eq!(loc(&hits[0]), (2, 18));
        assert!(hits[0].message.contains("AKIA****"));
        assert!(!hits[0].message.contains(AWS_KEY));
        assert!(!hits[0].title.contains(AWS_KEY));

        let temp = concat!("ASIA", "Y34FZKBOKMUTVV7A");
        // AWS's documented example key is an example, not a secret.
        assert!(scan_text("README.md.txt", concat!("AKIA", "IOSFODNN7EXAMPLE")).is_empty());
        assert_eq!(
            rules(&scan_text("a.env", &format!("KEY_ID={temp}"))),
            ["secrets/aws-access-key"]
        );
        for text in [
            concat!("akia", "iosfodnn7example"),  // lowercase
            concat!("AKIA", "IOSFODNN7EXAMPL"),   // 15 characters
            concat!("AKIA", "IOSFODNN7EXAMPLE1"), // 17 characters
            concat!("XAKIA", "IOSFODNN7EXAMPLE"), // inside a word
            concat!("AKIB", "IOSFODNN7EXAMPLE"),  // other prefix
        ] {
            assert!(scan_text("notes.txt", text).is_empty(), "{text}");
        }
    }

    #[test]
    fn aws_secret_keys_in_assignments_are_critical() {
        let cases = [
            (
                "creds.ini",
                format!("aws_secret_access_key = {AWS_SECRET}"),
                25,
            ),
            (
                "ci.yml",
                format!("  AWS_SECRET_ACCESS_KEY: \"{AWS_SECRET}\""),
                27,
            ),
            (
                ".env",
                format!("export AWS_SECRET_ACCESS_KEY={AWS_SECRET}"),
                30,
            ),
            (
                "src/aws.rs",
                format!("const AWS_SECRET_KEY: &str = \"{AWS_SECRET}\";"),
                31,
            ),
            (
                "cfg.json",
                format!("{{\"awsSecretAccessKey\": \"{AWS_SECRET}\"}}"),
                25,
            ),
        ];
        for (path, text, col) in cases {
            let hits = scan_text(path, &text);
            assert_eq!(rules(&hits), ["secrets/aws-secret-key"], "{text}");
            let h = &hits[0];
            assert_eq!(h.severity, Severity::Critical);
            assert_eq!(loc(h), (1, col), "{text}");
            assert!(h.message.contains("wJal****"));
            assert!(!h.message.contains(AWS_SECRET));
        }
        for text in [
            format!("aws_secret_access_key = {}", &AWS_SECRET[..39]),
            format!("aws_secret_access_key = {AWS_SECRET}x"),
            "aws_secret_access_key = ${AWS_SECRET_ACCESS_KEY}".to_string(),
            "aws_region = eu-west-1".to_string(),
        ] {
            assert!(
                only("creds.ini", &text, "secrets/aws-secret-key").is_empty(),
                "{text}"
            );
        }
    }

    #[test]
    fn github_tokens_are_found() {
        let text = format!("let token = \"{GH_TOKEN}\";");
        let hits = scan_text("src/bot.rs", &text);
        // The generic rule does not report the same value again.
        assert_eq!(rules(&hits), ["secrets/github-token"]);
        assert_eq!(hits[0].severity, Severity::High);
        assert_eq!(loc(&hits[0]), (1, 14));
        assert!(hits[0].message.contains("ghp_****"));
        assert!(!hits[0].message.contains(GH_TOKEN));

        for prefix in ["gho_", "ghu_", "ghs_", "ghr_"] {
            let t = format!("{prefix}{}", &GH_TOKEN[4..]);
            assert_eq!(rules(&scan_text("x.txt", &t)), ["secrets/github-token"]);
        }
        let pat = format!("github_pat_11ABCDEFG0{}", "aB3dE5fG7h".repeat(6));
        assert_eq!(rules(&scan_text("x.txt", &pat)), ["secrets/github-token"]);

        for t in [
            format!("ghp_{}", &GH_TOKEN[5..]), // 35 characters
            format!("ghx_{}", &GH_TOKEN[4..]),
            "ghp_".to_string(),
        ] {
            assert!(scan_text("x.txt", &t).is_empty(), "{t}");
        }
    }

    #[test]
    fn slack_tokens_are_found() {
        let text = format!("SLACK_BOT = {SLACK}");
        let hits = scan_text("bot.cfg", &text);
        assert_eq!(rules(&hits), ["secrets/slack-token"]);
        assert_eq!(hits[0].severity, Severity::High);
        assert_eq!(loc(&hits[0]), (1, 13));
        assert!(hits[0].message.contains("xoxb****"));
        assert!(!hits[0].message.contains(SLACK));
        for t in ["xoxq-2048613921-8203912390", "xoxb-12345", "see xoxb-"] {
            assert!(scan_text("bot.cfg", t).is_empty(), "{t}");
        }
    }

    #[test]
    fn generic_secrets_in_code_and_config() {
        let cases: &[(&str, &str, u32)] = &[
            ("app/settings.py", "DB_PASSWORD = \"Zx9kq2LmP0wT\"", 16),
            (
                "app/settings.py",
                concat!("login(user, password=", "'Zx9kq2LmP0wT4')"),
                23,
            ),
            ("config.json", "  \"api_key\": \"9f8e7d6c5b4a3921\",", 15),
            ("web/client.ts", "const apiKey = \"9f8e7d6c5b4a3921\";", 17),
            (
                "web/client.js",
                concat!("config.authToken = ", "'Qm9vdHN0cmFwVG9r';"),
                21,
            ),
            (
                "src/db.rs",
                "let db_password = String::from(\"Zx9kq2LmP0wT\");",
                33,
            ),
            (
                "src/db.rs",
                "const CLIENT_SECRET: &str = \"Zx9kq2LmP0wT\";",
                30,
            ),
            ("src/db.rs", "    secret: \"Zx9kq2LmP0wT\".to_string(),", 14),
            ("deploy/app.yaml", "  password: Zx9kq2LmP0wT", 13),
            (
                "deploy/app.yaml",
                concat!("  x-api-key: ", "'Zx9kq2LmP0wT'"),
                15,
            ),
            (".env", "DATABASE_PASSWORD=Zx9kq2LmP0wT", 19),
            ("conf/app.ini", "secret_key = Zx9kq2LmP0wT", 14),
            ("Cargo.toml", "token = \"Zx9kq2LmP0wTzz\"", 10),
        ];
        for &(path, text, col) in cases {
            let hits = scan_text(path, text);
            assert_eq!(rules(&hits), ["secrets/generic-secret"], "{path}: {text}");
            let h = &hits[0];
            assert_eq!(h.severity, Severity::Medium);
            assert_eq!(loc(h), (1, col), "{path}: {text}");
            let value: String = text.chars().skip(col as usize - 1).take(12).collect();
            assert!(!h.message.contains(&value), "{}", h.message);
            assert!(h.message.contains(&format!("{}****", &value[..4])));
        }
    }

    #[test]
    fn generic_secret_placeholders_are_not_flagged() {
        let cases: &[(&str, &str)] = &[
            ("a.py", "password = \"\""),
            ("a.py", "password = \"short\""),
            ("a.py", "password = \"changeme\""),
            ("a.py", "password = \"changeme-please-now\""),
            ("a.py", "api_key = \"xxxxxxxxxxxxxxxxxxxx\""),
            ("a.py", "api_key = \"XXXX-XXXX-XXXX-XXXX\""),
            ("a.py", "api_key = \"<your-api-key-here>\""),
            ("a.py", "api_key = \"${API_KEY_FROM_ENV}\""),
            ("a.yml", "token: ${{ secrets.GITHUB_TOKEN }}"),
            ("a.yml", "token: \"{{ vault_token_value }}\""),
            ("a.py", "password = \"example-password-1\""),
            ("a.py", "password = \"test_password_123\""),
            ("a.py", "password = \"testpassword1234\""),
            ("a.py", "password = \"fake-secret-value\""),
            ("a.py", "password = \"************\""),
            ("a.py", "password = \"aaaaaaaaaaaaaaaa\""),
            ("a.py", "password = os.environ[\"DB_PASSWORD\"]"),
            ("a.py", "token = os.getenv('API_TOKEN_VALUE')"),
            ("a.rs", "let token = std::env::var(\"API_TOKEN\")?;"),
            ("a.rs", "let token = env!(\"BUILD_TOKEN_VALUE\");"),
            ("a.rs", "fn login(password: &str, token: String) {}"),
            ("a.rs", "struct Creds { password: SecretString }"),
            ("a.rs", "if password == \"comparisonvalue1\" {"),
            ("a.rs", "if password != \"comparisonvalue1\" {"),
            ("a.js", "const token = process.env.API_TOKEN_VALUE;"),
            ("a.js", "password = getPassword(\"Zx9kq2LmP0wT\")"),
            ("a.toml", "token = \"GITHUB_TOKEN\""),
            ("a.toml", "tokenizer = \"bert-base-uncased\""),
            ("a.toml", "password_file = \"secrets/db-password.txt\""),
            ("a.toml", "secret_path = \"/run/secrets/db_password\""),
            ("a.toml", "password = \"/run/secrets/db_password\""),
            (
                "a.rs",
                "const PASSWORD_PROMPT: &str = \"Enter your password: \";",
            ),
            ("a.rs", "let msg = \"the token is invalid, try again\";"),
            ("a.rs", "password = \"my long passphrase with spaces\""),
            ("a.env", "API_TOKEN="),
            ("a.env", "API_TOKEN=$OTHER_TOKEN_VARIABLE"),
            ("a.ini", "password = %(db_password_value)s"),
        ];
        for &(path, text) in cases {
            let hits = scan_text(path, text);
            assert!(hits.is_empty(), "{path}: {text} -> {hits:#?}");
        }
    }

    #[test]
    fn unquoted_values_only_count_in_config_files() {
        let text = "password = Zx9kq2LmP0wT";
        assert_eq!(
            rules(&scan_text(".env.local", text)),
            ["secrets/generic-secret"]
        );
        assert_eq!(
            rules(&scan_text("run.sh", text)),
            ["secrets/generic-secret"]
        );
        assert!(scan_text("src/main.rs", text).is_empty());
        assert!(scan_text("app.py", text).is_empty());
    }

    #[test]
    fn secrets_in_comments_are_still_secrets() {
        let text = format!("// old key: {AWS_KEY}\nfn main() {{}}\n");
        let hits = scan_text("src/main.rs", &text);
        assert_eq!(rules(&hits), ["secrets/aws-access-key"]);
        assert_eq!(loc(&hits[0]), (1, 13));
    }

    #[test]
    fn columns_count_characters_and_crlf_is_handled() {
        let text = format!("# résumé\r\n# naïve ключ: {AWS_KEY}\r\n");
        let hits = scan_text("notes.txt", &text);
        assert_eq!(hits.len(), 1);
        assert_eq!(loc(&hits[0]), (2, 15));
    }

    #[test]
    fn unsafe_code_needs_a_safety_comment() {
        let src = "\
pub fn first(buf: &[u8]) -> u8 {
    let p = buf.as_ptr();
    unsafe { *p }
}

pub unsafe fn raw(p: *const u8) -> u8 {
    *p
}

struct Wrapper(*mut u8);
unsafe impl Send for Wrapper {}
unsafe trait Zeroable {}
";
        let hits = scan_text("src/lib.rs", src);
        assert_eq!(rules(&hits), ["rust/unsafe-block"; 4]);
        let locs: Vec<_> = hits.iter().map(loc).collect();
        assert_eq!(locs, [(3, 5), (6, 5), (11, 1), (12, 1)]);
        for h in &hits {
            assert_eq!(h.severity, Severity::Low);
            assert_eq!(h.title, "unsafe code");
            assert!(h.message.contains("// SAFETY:"));
        }
        assert!(hits[0].message.contains("`unsafe` block"));
        assert!(hits[1].message.contains("`unsafe` function"));
        assert!(hits[2].message.contains("`unsafe` impl"));
    }

    #[test]
    fn documented_unsafe_code_is_info() {
        let src = "\
fn a(p: *const u8) -> u8 {
    // SAFETY: `p` comes from a live slice of length >= 1.
    unsafe { *p }
}

fn b(p: *const u8) -> u8 {
    // SAFETY: the caller guarantees that `p` is valid
    // for reads and properly aligned.
    unsafe { *p }
}

/// Reads a byte.
///
/// # Safety
///
/// `p` must be valid for reads.
#[inline]
pub unsafe fn c(p: *const u8) -> u8 {
    unsafe { *p } // SAFETY: guaranteed by the caller, see above.
}

// SAFETY: nothing here refers to the next item.
fn d() {}
fn e(p: *const u8) -> u8 {
    unsafe { *p }
}
";
        let hits = scan_text("src/lib.rs", src);
        let got: Vec<_> = hits.iter().map(|h| (loc(h).0, h.severity)).collect();
        assert_eq!(
            got,
            [
                (3, Severity::Info),
                (9, Severity::Info),
                (18, Severity::Info),
                (19, Severity::Info),
                (25, Severity::Low),
            ]
        );
    }

    #[test]
    fn unsafe_in_comments_strings_and_other_files_is_ignored() {
        let src = "\
// We never use unsafe { } here.
/// Safe wrapper: no `unsafe fn` needed.
/* unsafe impl Send for X {} */
/*
   unsafe {
*/
const HELP: &str = \"avoid unsafe { } blocks\";
const RAW: &str = r#\"unsafe fn \"#;
fn not_unsafe() {}
let not_unsafe_thing = 1;
#[unsafe(no_mangle)]
pub extern \"C\" fn exported() {}
";
        assert!(only("src/lib.rs", src, "rust/unsafe-block").is_empty());
        assert!(scan_text("docs/notes.txt", "unsafe { *p }").is_empty());
        assert!(scan_text("src/x.c", "unsafe { *p }").is_empty());
    }

    #[test]
    fn unwrap_on_parsed_input_is_flagged() {
        let src = "\
fn port(arg: &str) -> u32 {
    arg.trim().parse::<u32>().unwrap()
}
fn cfg(body: &str) -> Config {
    serde_json::from_str(body).expect(\"valid config\")
}
fn home() -> String {
    std::env::var(\"HOME\").unwrap()
}
fn line() -> String {
    let mut s = String::new();
    std::io::stdin().read_line(&mut s).unwrap();
    s
}
fn first_arg() -> String {
    std::env::args().nth(1).expect(\"an argument\")
}
fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}
fn n(s: &str) -> i64 {
    let v: i64 = s.parse().unwrap();
    let w = i64::from_str(s).unwrap();
    v + w
}
fn chained(s: &str) -> u8 {
    s.trim()
        .parse::<u8>()
        .unwrap()
}
";
        let hits = scan_text("src/main.rs", src);
        assert!(hits.iter().all(|h| h.rule_id == "rust/unwrap-on-input"));
        let locs: Vec<_> = hits.iter().map(loc).collect();
        assert_eq!(
            locs,
            [
                (2, 30),
                (5, 31),
                (8, 26),
                (12, 39),
                (16, 28),
                (19, 29),
                (22, 27),
                (23, 29),
                (29, 9)
            ]
        );
        for h in &hits {
            assert_eq!(h.severity, Severity::Medium);
            assert!(
                h.message
                    .contains("panics on malformed input; return an error instead")
            );
        }
    }

    #[test]
    fn handled_input_and_test_code_are_not_flagged() {
        let src = "\
fn a(s: &str) -> Result<u32, std::num::ParseIntError> {
    let n = s.parse::<u32>()?;
    let m = s.parse::<u32>().unwrap_or(0);
    let k = s.parse::<u32>().map_err(|e| e)?.checked_add(1).unwrap();
    let cached = CACHE.lock().unwrap();
    // s.parse::<u32>().unwrap() in a comment
    let msg = \"call .parse().unwrap() carefully\";
    Ok(n + m + k)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses() {
        assert_eq!(\"42\".parse::<u32>().unwrap(), 42);
    }
}

#[test]
fn top_level_test() {
    let v: u8 = \"7\".parse().unwrap();
}

fn after_tests(s: &str) -> u8 {
    s.parse().unwrap()
}
";
        let hits = only("src/lib.rs", src, "rust/unwrap-on-input");
        let locs: Vec<_> = hits.iter().map(loc).collect();
        assert_eq!(locs, [(25, 14)]);
    }

    #[test]
    fn shell_commands_are_flagged() {
        let src = "\
use std::process::Command;
fn a(dir: &str) {
    Command::new(\"sh\").arg(\"-c\").arg(format!(\"ls {dir}\")).status().ok();
}
fn b(name: &str) {
    std::process::Command::new(\"bash\")
        .arg(\"-c\")
        .arg(format!(\"echo {name}\"))
        .status()
        .ok();
}
fn c(cmd: &str) {
    Command::new(\"/bin/sh\").args([\"-c\", cmd]).status().ok();
}
fn d(cmd: &str) {
    Command::new(\"cmd\").args([\"/C\", cmd]).status().ok();
}
";
        let hits = scan_text("src/run.rs", src);
        assert!(hits.iter().all(|h| h.rule_id == "rust/command-injection"));
        let got: Vec<_> = hits.iter().map(|h| (loc(h), h.end_line.unwrap())).collect();
        assert_eq!(
            got,
            [((3, 5), 3), ((6, 19), 7), ((13, 5), 13), ((16, 5), 16)]
        );
        assert!(hits.iter().all(|h| h.severity == Severity::High));
        assert!(hits[0].message.contains("`sh -c`"));
        assert!(hits[3].message.contains("`cmd /C`"));
    }

    #[test]
    fn safe_commands_are_not_flagged() {
        let src = "\
fn a() {
    Command::new(\"sh\").arg(\"script.sh\").status().ok();
    Command::new(\"git\").arg(\"-c\").arg(\"user.name=x\").status().ok();
    // Command::new(\"sh\").arg(\"-c\").arg(input)
    Command::new(\"sh\")
        .arg(\"-x\")
        .arg(\"-c\");
    let doc = \"Command::new(\\\"sh\\\")\";
    Command::new(\"cmd\").arg(\"-c\");
}
";
        assert!(scan_text("src/run.rs", src).is_empty());
    }

    #[test]
    fn rust_rules_only_apply_to_rust_files() {
        let text = "Command::new(\"sh\").arg(\"-c\")\nx.parse::<u32>().unwrap()\nunsafe { }";
        assert!(scan_text("notes.txt", text).is_empty());
        assert_eq!(scan_text("src/x.RS", text).len(), 3);
    }

    #[test]
    fn fingerprints_identify_rule_path_line_and_column() {
        let text = format!("a = \"{AWS_KEY}\"\nb = \"{AWS_KEY}\"\n");
        let hits = scan_text("x.toml", &text);
        assert_eq!(hits.len(), 2);
        assert_ne!(hits[0].fingerprint, hits[1].fingerprint);
        let again = scan_text("x.toml", &text);
        assert_eq!(hits, again);
        let other = scan_text("y.toml", &text);
        assert_ne!(hits[0].fingerprint, other[0].fingerprint);
        assert_eq!(
            hits[0].fingerprint,
            crate::fingerprint(
                "secrets/aws-access-key",
                Some("x.toml"),
                Some(1),
                Some(6),
                ""
            )
        );
        // The secret is not what the fingerprint hashes: a different key at the
        // same place has the same identity.
        let rotated = scan_text("x.toml", &text.replace("EXAMPLE", "EXAMPLF"));
        assert_eq!(hits[0].fingerprint, rotated[0].fingerprint);
    }

    #[test]
    fn paths_are_normalized() {
        let hits = scan_text(".\\config\\aws.ini", AWS_KEY);
        assert_eq!(hits[0].path.as_deref(), Some("config/aws.ini"));
    }

    /// The rows of `PLANTED.md` whose rule `scan_text` implements.
    fn planted_scan_rows() -> Vec<(String, String, u32, Severity)> {
        let table = include_str!("../../../tests/fixtures/vulnerable_crate/PLANTED.md");
        let mut rows = Vec::new();
        for line in table.lines().filter(|l| l.starts_with("| ")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (rule, file, line_no, sev) = (cells[1], cells[2], cells[3], cells[4]);
            let Ok(line_no) = line_no.parse::<u32>() else {
                continue; // the header
            };
            let severity: Severity = serde_json::from_str(&format!("\"{sev}\"")).unwrap();
            rows.push((rule.to_string(), file.to_string(), line_no, severity));
        }
        rows
    }

    const VULNERABLE: &[(&str, &str)] = &[
        (
            "src/lib.rs",
            include_str!("../../../tests/fixtures/vulnerable_crate/src/lib.rs"),
        ),
        (
            "src/config.rs",
            include_str!("../../../tests/fixtures/vulnerable_crate/src/config.rs"),
        ),
        (
            "src/parse.rs",
            include_str!("../../../tests/fixtures/vulnerable_crate/src/parse.rs"),
        ),
        (
            "keys/deploy_key.pem",
            include_str!("../../../tests/fixtures/vulnerable_crate/keys/deploy_key.pem"),
        ),
        (
            "Cargo.toml",
            include_str!("../../../tests/fixtures/vulnerable_crate/Cargo.toml"),
        ),
    ];

    #[test]
    fn vulnerable_fixture_has_exactly_the_planted_text_issues() {
        let mut hits = Vec::new();
        for (path, text) in VULNERABLE {
            assert!(should_scan(path));
            hits.extend(scan_text(path, text));
        }
        let got: Vec<_> = dedup(hits)
            .into_iter()
            .map(|h| {
                (
                    h.rule_id,
                    h.path.unwrap(),
                    h.start_line.unwrap(),
                    h.severity,
                )
            })
            .collect();
        let mut want: Vec<_> = planted_scan_rows()
            .into_iter()
            .filter(|(rule, ..)| rule.starts_with("secrets/") || rule.starts_with("rust/"))
            .collect();
        want.sort_by(|a, b| (&a.1, a.2, &a.0).cmp(&(&b.1, b.2, &b.0)));
        assert_eq!(want.len(), 6);
        assert_eq!(got, want);
    }

    #[test]
    fn clean_fixture_has_no_text_issues() {
        for (path, text) in [
            (
                "src/lib.rs",
                include_str!("../../../tests/fixtures/clean_crate/src/lib.rs"),
            ),
            (
                "src/port.rs",
                include_str!("../../../tests/fixtures/clean_crate/src/port.rs"),
            ),
            (
                "Cargo.toml",
                include_str!("../../../tests/fixtures/clean_crate/Cargo.toml"),
            ),
        ] {
            assert!(should_scan(path));
            let hits = scan_text(path, text);
            assert!(hits.is_empty(), "{path}: {hits:#?}");
        }
    }
}
