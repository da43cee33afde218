//! Realistic samples of every kind of secret the built-in rules know, and
//! decoys that look like secrets but are not: for the rules' own tests and
//! for the planted corpus of `cargo xtask bench --scanners`. Values are
//! random (from a seed), never real credentials.

/// A planted secret: the line that holds it, in a file of this kind.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The rule id expected to find it (`secrets/<id>`).
    pub rule: &'static str,
    /// A file name it would live in.
    pub file: &'static str,
    /// The file's text; the secret is on line 1 (or starts there).
    pub text: String,
}

/// A small deterministic generator (splitmix64).
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `n` characters drawn from `set`.
    pub fn pick(&mut self, set: &str, n: usize) -> String {
        let chars: Vec<char> = set.chars().collect();
        (0..n)
            .map(|_| chars[(self.next_u64() % chars.len() as u64) as usize])
            .collect()
    }

    pub fn alnum(&mut self, n: usize) -> String {
        self.pick(ALNUM, n)
    }
    pub fn lower(&mut self, n: usize) -> String {
        self.pick("abcdefghijklmnopqrstuvwxyz0123456789", n)
    }
    pub fn upper(&mut self, n: usize) -> String {
        self.pick("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", n)
    }
    pub fn hex(&mut self, n: usize) -> String {
        self.pick("0123456789abcdef", n)
    }
    pub fn b64(&mut self, n: usize) -> String {
        self.pick(
            concat!(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                "0123456789+/"
            ),
            n,
        )
    }
    pub fn url(&mut self, n: usize) -> String {
        self.pick(
            concat!(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                "0123456789_-"
            ),
            n,
        )
    }
    pub fn uuid(&mut self) -> String {
        format!(
            "{}-{}-{}-{}-{}",
            self.hex(8),
            self.hex(4),
            self.hex(4),
            self.hex(4),
            self.hex(12)
        )
    }
}

const ALNUM: &str = concat!(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "0123456789"
);

/// One sample of each kind of secret, with random values from `rng`.
pub fn secrets(r: &mut Rng) -> Vec<Sample> {
    let s = |rule, file, text: String| Sample { rule, file, text };
    let pem = |kind: &str, body: &str| {
        format!("-----BEGIN {kind}-----\n{body}\n{body}\n-----END {kind}-----\n")
    };
    vec![
        s(
            "private-key",
            "deploy_key.pem",
            pem("RSA PRIVATE KEY", &r.b64(64)),
        ),
        s(
            "private-key",
            "id_ed25519",
            pem("OPENSSH PRIVATE KEY", &r.b64(70)),
        ),
        s("private-key", "key.pem", pem("EC PRIVATE KEY", &r.b64(64))),
        s(
            "private-key",
            "signing.asc",
            pem("PGP PRIVATE KEY BLOCK", &r.b64(64)),
        ),
        s("private-key", "server.key", pem("PRIVATE KEY", &r.b64(64))),
        s(
            "private-key",
            "host.ppk",
            format!(
                "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nPrivate-Lines: 1\n{}\n",
                r.b64(40)
            ),
        ),
        s(
            "age-secret-key",
            "keys.txt",
            format!(
                "# created: 2024\nAGE-SECRET-KEY-1{}\n",
                r.pick("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58)
            ),
        ),
        s(
            "aws-access-key",
            "config.py",
            format!("AWS_ACCESS_KEY_ID = \"AKIA{}\"\n", r.upper(16)),
        ),
        s(
            "aws-secret-key",
            ".env",
            format!("AWS_SECRET_ACCESS_KEY={}\n", r.b64(40)),
        ),
        s(
            "aws-secret-key",
            "deploy.tf",
            format!("  aws_secret_key = \"{}\"\n", r.b64(40)),
        ),
        s(
            "aws-session-token",
            "creds.ini",
            format!("aws_session_token = {}\n", r.b64(180)),
        ),
        s(
            "gcp-api-key",
            "firebase.js",
            format!(
                "const firebaseConfig = {{ apiKey: \"AIza{}\" }};\n",
                r.url(35)
            ),
        ),
        s(
            "gcp-service-account",
            "sa.json",
            format!(
                "{{\n  \"type\": \"service_account\",\n  \"project_id\": \"proj-{}\",\n  \"private_key_id\": \"{}\"\n}}\n",
                r.lower(6),
                r.hex(40)
            ),
        ),
        s(
            "gcp-oauth-client-secret",
            "client.json",
            format!("{{\"client_secret\": \"GOCSPX-{}\"}}\n", r.url(28)),
        ),
        s(
            "azure-storage-key",
            "app.config",
            format!(
                "DefaultEndpointsProtocol=https;AccountName=store{};AccountKey={}==;EndpointSuffix=core.windows.net\n",
                r.lower(5),
                r.b64(86)
            ),
        ),
        s(
            "azure-ad-client-secret",
            "appsettings.json",
            format!("\"ClientSecret\": \"{}8Q~{}\"\n", r.alnum(3), r.alnum(34)),
        ),
        s(
            "alibaba-access-key",
            "aliyun.ini",
            format!("access_key_id = LTAI{}\n", r.alnum(20)),
        ),
        s(
            "digitalocean-token",
            "do.env",
            format!("DIGITALOCEAN_TOKEN=dop_v1_{}\n", r.hex(64)),
        ),
        s(
            "heroku-api-key",
            "Procfile.env",
            format!("HEROKU_API_KEY={}\n", r.uuid()),
        ),
        s(
            "ibm-cloud-iam-key",
            "ibm.yaml",
            format!("ibm_cloud_api_key: {}\n", r.url(44)),
        ),
        s(
            "cloudflare-api-key",
            "cf.toml",
            format!("cloudflare_api_token = \"{}\"\n", r.url(40)),
        ),
        s(
            "github-token",
            "release.sh",
            format!("export GITHUB_TOKEN=ghp_{}\n", r.alnum(36)),
        ),
        s(
            "github-token",
            "bot.ts",
            format!(
                "const token = \"github_pat_11{}_{}\";\n",
                r.upper(20),
                r.alnum(59)
            ),
        ),
        s(
            "gitlab-token",
            ".gitlab-ci.yml",
            format!("  GITLAB_TOKEN: glpat-{}\n", r.url(20)),
        ),
        s(
            "atlassian-api-token",
            "jira.cfg",
            format!("jira_api_token = {}{}\n", r.lower(20), r.hex(4)),
        ),
        s(
            "npm-token",
            ".npmrc",
            format!("//registry.npmjs.org/:_authToken=npm_{}\n", r.alnum(36)),
        ),
        s(
            "pypi-token",
            ".pypirc",
            format!(
                "[pypi]\nusername = __token__\npassword = pypi-AgEIcHlwaS5vcmc{}\n",
                r.url(70)
            ),
        ),
        s(
            "rubygems-token",
            "credentials",
            format!("---\n:rubygems_api_key: rubygems_{}\n", r.hex(48)),
        ),
        s(
            "docker-config-auth",
            "config.json",
            format!(
                "{{\"auths\": {{\"registry.corp.net\": {{\"auth\": \"{}=\"}}}}}}\n",
                r.b64(39)
            ),
        ),
        s(
            "dockerhub-pat",
            "ci.env",
            format!("DOCKERHUB_TOKEN=dckr_pat_{}\n", r.url(27)),
        ),
        s(
            "vault-token",
            "vault.env",
            format!("VAULT_TOKEN=hvs.{}\n", r.url(95)),
        ),
        s(
            "doppler-token",
            "doppler.yaml",
            format!("token: dp.pt.{}\n", r.alnum(43)),
        ),
        s(
            "databricks-token",
            "notebook.py",
            format!("DATABRICKS_TOKEN = \"dapi{}\"\n", r.hex(32)),
        ),
        s(
            "postman-token",
            "postman.env",
            format!("POSTMAN_API_KEY=PMAK-{}-{}\n", r.hex(24), r.hex(34)),
        ),
        s(
            "linear-api-key",
            "linear.ts",
            format!(
                "const client = new LinearClient({{ apiKey: \"lin_api_{}\" }});\n",
                r.alnum(40)
            ),
        ),
        s(
            "slack-token",
            "slack.py",
            format!(
                "client = WebClient(token=\"xoxb-{}-{}-{}\")\n",
                r.pick("0123456789", 12),
                r.pick("0123456789", 13),
                r.alnum(24)
            ),
        ),
        s(
            "slack-webhook",
            "notify.sh",
            format!(
                "curl -X POST https://hooks.slack.com/services/T{}/B{}/{}\n",
                r.upper(8),
                r.upper(10),
                r.alnum(24)
            ),
        ),
        s(
            "discord-bot-token",
            "bot.js",
            format!(
                "client.login(\"M{}.{}.{}\");\n",
                r.url(23),
                r.url(6),
                r.url(38)
            ),
        ),
        s(
            "telegram-bot-token",
            "tg.py",
            format!(
                "bot = telebot.TeleBot(\"{}:AA{}\")\n",
                r.pick("0123456789", 10),
                r.url(33)
            ),
        ),
        s(
            "twilio-api-key",
            "twilio.rb",
            format!(
                "@client = Twilio::REST::Client.new('AC{}', auth)\n",
                r.hex(32)
            ),
        ),
        s(
            "sendgrid-api-key",
            "mail.go",
            format!(
                "sg := sendgrid.NewSendClient(\"SG.{}.{}\")\n",
                r.url(22),
                r.url(43)
            ),
        ),
        s(
            "mailgun-api-key",
            "mailgun.php",
            format!("$mailgun_key = 'key-{}';\n", r.hex(32)),
        ),
        s(
            "mailchimp-api-key",
            "mc.py",
            format!(
                "MAILCHIMP = \"{}-us{}\"\n",
                r.hex(32),
                r.pick("123456789", 1)
            ),
        ),
        s(
            "stripe-key",
            "billing.rb",
            format!("Stripe.api_key = \"sk_live_{}\"\n", r.alnum(24)),
        ),
        s(
            "square-token",
            "square.env",
            format!("SQUARE_ACCESS_TOKEN=EAAA{}\n", r.url(60)),
        ),
        s(
            "shopify-token",
            "shop.py",
            format!(
                "headers = {{\"X-Shopify-Access-Token\": \"shpat_{}\"}}\n",
                r.hex(32)
            ),
        ),
        s(
            "openai-api-key",
            "ai.py",
            format!(
                "openai.api_key = \"sk-proj-{}T3BlbkFJ{}\"\n",
                r.url(74),
                r.url(74)
            ),
        ),
        s(
            "anthropic-api-key",
            "claude.ts",
            format!("const key = \"sk-ant-api03-{}AA\";\n", r.url(93)),
        ),
        s(
            "huggingface-token",
            "hf.py",
            format!(
                "login(token=\"hf_{}\")\n",
                r.pick("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", 34)
            ),
        ),
        s(
            "sentry-token",
            "sentry.env",
            format!("SENTRY_AUTH_TOKEN=sntryu_{}\n", r.hex(64)),
        ),
        s(
            "new-relic-key",
            "newrelic.yml",
            format!("api_key: NRAK-{}\n", r.upper(27)),
        ),
        s(
            "datadog-api-key",
            "datadog.yaml",
            format!("datadog_api_key: {}\n", r.hex(32)),
        ),
        s(
            "grafana-token",
            "grafana.ini",
            format!("token = glsa_{}_{}\n", r.alnum(32), r.hex(8)),
        ),
        s(
            "notion-token",
            "notion.js",
            format!(
                "const notion = new Client({{ auth: \"ntn_{}{}\" }});\n",
                r.pick("0123456789", 11),
                r.alnum(35)
            ),
        ),
        s(
            "1password-service-token",
            "op.env",
            format!("OP_SERVICE_ACCOUNT_TOKEN=ops_eyJ{}\n", r.b64(260)),
        ),
        s(
            "url-password",
            "database.yml",
            format!(
                "  url: postgres://app:{}@db.internal:5432/prod\n",
                r.alnum(16)
            ),
        ),
        s(
            "url-password",
            "settings.py",
            format!(
                "BROKER_URL = \"amqp://worker:{}@rabbit:5672//\"\n",
                r.alnum(14)
            ),
        ),
        s(
            "jwt",
            "api.http",
            format!(
                "Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{}.{}\n",
                base64url(
                    format!(
                        "{{\"sub\":\"{}\",\"name\":\"{}\",\"iat\":{}}}",
                        1_000_000 + r.next_u64() % 9_000_000,
                        r.lower(8),
                        1_700_000_000 + r.next_u64() % 100_000_000
                    )
                    .as_bytes()
                ),
                r.url(43)
            ),
        ),
        s(
            "generic-secret",
            "settings.py",
            format!("DB_PASSWORD = \"{}\"\n", r.alnum(16)),
        ),
        s(
            "generic-secret",
            "config.yaml",
            format!("  api_key: {}\n", r.alnum(24)),
        ),
        s(
            "generic-secret",
            "app.js",
            format!("const clientSecret = '{}';\n", r.alnum(20)),
        ),
        s(
            "generic-secret",
            "App.java",
            format!(
                "    private static final String PASSWORD = \"{}\";\n",
                r.alnum(14)
            ),
        ),
        s(
            "generic-secret",
            ".netrc",
            format!(
                "machine api.corp.net login deploy password {}\n",
                r.alnum(18)
            ),
        ),
    ]
}

/// Text that looks like a secret but is not one: documented examples,
/// placeholders, templates, hashes, identifiers. No rule may report these.
pub fn decoys(r: &mut Rng) -> Vec<(&'static str, String)> {
    vec![
        ("aws.md.txt", "aws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n".to_string()),
        ("settings.py", "DB_PASSWORD = \"<your-password>\"\n".to_string()),
        ("settings.py", "SECRET_KEY = \"changeme-before-deploy\"\n".to_string()),
        ("config.yaml", "password: ${DB_PASSWORD}\ntoken: \"{{ vault_token }}\"\n".to_string()),
        ("ci.yml", "  token: ${{ secrets.GITHUB_TOKEN }}\n".to_string()),
        ("app.env", "API_KEY=xxxxxxxxxxxxxxxxxxxxxxxx\n".to_string()),
        ("app.env", "API_TOKEN=\n".to_string()),
        ("README.txt", "Set `api_key = \"YOUR_API_KEY_HERE\"` in the config.\n".to_string()),
        ("test_login.py", "password = \"test_password_1234\"\n".to_string()),
        ("login.rs", "fn login(password: &str, token: String) -> bool { !password.is_empty() }\n".to_string()),
        ("compare.rs", "if password == \"comparisonvalue1\" { deny(); }\n".to_string()),
        ("Cargo.lock", format!("[[package]]\nname = \"serde\"\nchecksum = \"{}\"\n", r.hex(64))),
        ("package-lock.json", format!("\"integrity\": \"sha512-{}==\"\n", r.b64(86))),
        ("ids.json", format!("{{\"id\": \"{}\", \"commit\": \"{}\"}}\n", r.uuid(), r.hex(40))),
        ("hash.txt", format!("sha256: {}\n", r.hex(64))),
        ("main.go", "import \"github.com/aws/aws-sdk-go/aws/credentials\"\n".to_string()),
        ("db.py", "engine = create_engine(\"postgresql://user:password@localhost/db\")\n".to_string()),
        ("token.rs", "let tokenizer = \"bert-base-uncased\";\n".to_string()),
        ("paths.toml", "password_file = \"/run/secrets/db_password\"\n".to_string()),
        ("messages.rs", "let msg = \"the token is invalid, try again\";\n".to_string()),
        ("env.py", "token = os.environ[\"API_TOKEN\"]\n".to_string()),
        ("allowed.py", format!("API_KEY = \"{}\"  # toolhost:allow (a public test key)\n", r.alnum(24))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::default_scanner;

    #[test]
    fn base64url_matches_rfc_4648() {
        assert_eq!(base64url(b"{\"a\":1}"), "eyJhIjoxfQ");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(b"fooba"), "Zm9vYmE");
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn every_sample_is_found_by_its_rule() {
        let mut r = Rng::new(7);
        for sample in secrets(&mut r) {
            let hits = default_scanner().scan(sample.file, sample.text.as_bytes());
            let ids: Vec<&str> = hits.iter().map(|h| h.rule_id.as_str()).collect();
            assert!(
                hits.iter()
                    .any(|h| h.rule_id == format!("secrets/{}", sample.rule)),
                "{} in {}: {:?}\n{}",
                sample.rule,
                sample.file,
                ids,
                sample.text
            );
            // A finding never carries the secret.
            for h in &hits {
                let secret_free = sample
                    .text
                    .split(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-')
                    .filter(|w| w.len() >= 16)
                    .all(|w| !h.message.contains(w) && !h.title.contains(w));
                assert!(secret_free, "{} leaks its value: {}", h.rule_id, h.message);
            }
        }
    }

    #[test]
    fn decoys_are_not_reported() {
        let mut r = Rng::new(11);
        for (file, text) in decoys(&mut r) {
            let hits = default_scanner().scan(file, text.as_bytes());
            assert!(hits.is_empty(), "{file}: {text:?} -> {hits:#?}");
        }
    }

    #[test]
    fn every_built_in_kind_has_a_sample_or_a_reason() {
        // Kinds without a sample above: covered by the rule tests of
        // `secrets/mod.rs` or by shape only (path rules, rare services).
        let mut r = Rng::new(1);
        let sampled: std::collections::BTreeSet<&str> =
            secrets(&mut r).iter().map(|s| s.rule).collect();
        assert!(sampled.len() >= 50, "{} kinds sampled", sampled.len());
    }
}

/// Unpadded base64url (RFC 4648 §5), for well-formed JWTs.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}
