//! Credential canaries: a fake home directory with a secret planted where a
//! host keeps credentials, and a target crate whose build script tries to
//! read each of them (it runs inside `cargo clippy`, as a hostile target's
//! would) and prints what it got into the run's record. Used by the hostile
//! suite (embedded engine) and the distributed tests.

use std::path::{Path, PathBuf};

/// A place a host keeps credentials, relative to the host user's home.
#[derive(Debug, Clone, Copy)]
pub struct Location {
    /// Short name (used in canaries and test names).
    pub id: &'static str,
    /// Path below the home directory.
    pub rel: &'static str,
    /// File contents; `{}` is replaced by the canary.
    pub template: &'static str,
}

/// Where credentials live on a developer's or CI machine.
pub const LOCATIONS: &[Location] = &[
    Location {
        id: "cargo-credentials",
        rel: ".cargo/credentials.toml",
        template: "[registry]\ntoken = \"{}\"\n",
    },
    Location {
        id: "cargo-config",
        rel: ".cargo/config.toml",
        template: "# {}\n[registries.corp]\nindex = \"sparse+https://cargo.example.com/\"\n",
    },
    Location {
        id: "netrc",
        rel: ".netrc",
        template: "machine example.com login ci password {}\n",
    },
    Location {
        id: "aws",
        rel: ".aws/credentials",
        template: "[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = {}\n",
    },
    Location {
        id: "ssh",
        rel: ".ssh/id_ed25519",
        template: "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
    },
    Location {
        id: "config-dir",
        rel: ".config/gh/hosts.yml",
        template: "github.com:\n    oauth_token: {}\n",
    },
    Location {
        id: "docker",
        rel: ".docker/config.json",
        template: "{\"auths\": {\"registry.example.com\": {\"auth\": \"{}\"}}}\n",
    },
    Location {
        id: "git-credentials",
        rel: ".git-credentials",
        template: "https://ci:{}@git.example.com\n",
    },
    Location {
        id: "services-env",
        rel: "checkout/.services/env",
        template: "TOOLHOST_S3_SECRET_ACCESS_KEY={}\n",
    },
];

/// A home directory with canaries planted, and the real toolchain linked in.
pub struct FakeHome {
    /// The directory (the host's `HOME` in a test).
    pub dir: tempfile::TempDir,
    /// (location, file, canary) for each planted secret.
    pub planted: Vec<(Location, PathBuf, String)>,
}

impl FakeHome {
    /// A home with a canary at each of `locations`. The real `~/.rustup`
    /// is linked in (the toolchain a rust vertical needs); the real
    /// `~/.cargo/bin` stays on `PATH`.
    pub fn new(locations: &[Location]) -> Self {
        let dir = tempfile::tempdir().expect("fake home");
        let real = PathBuf::from(std::env::var_os("HOME").expect("HOME is set"));
        std::os::unix::fs::symlink(real.join(".rustup"), dir.path().join(".rustup"))
            .expect("link the toolchain");
        let mut planted = Vec::new();
        for loc in locations {
            let canary = format!(
                "CANARY-{}-{}",
                loc.id,
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            );
            let file = dir.path().join(loc.rel);
            std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
            std::fs::write(&file, loc.template.replace("{}", &canary)).expect("plant");
            planted.push((*loc, file, canary));
        }
        FakeHome { dir, planted }
    }

    /// The home directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A crate whose build script reads each of `files` (directly and through
/// `/proc/self/root`) and fails with everything it got, so it lands in the
/// run's record: a tool's output is what a submitter sees.
pub fn probe_crate(files: &[PathBuf]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("probe crate");
    let p = dir.path();
    std::fs::create_dir_all(p.join("src")).expect("src");
    std::fs::write(
        p.join("Cargo.toml"),
        "[package]\nname = \"credential-probe\"\nversion = \"0.1.0\"\nedition = \"2021\"\nbuild = \"build.rs\"\n",
    )
    .expect("manifest");
    std::fs::write(p.join("src/lib.rs"), "pub fn f() {}\n").expect("lib");
    let list: Vec<String> = files
        .iter()
        .map(|f| format!("{:?}", f.display().to_string()))
        .collect();
    std::fs::write(
        p.join("build.rs"),
        format!(
            r#"fn main() {{
    let mut seen = Vec::new();
    for path in [{list}] {{
        for p in [path.to_string(), format!("/proc/self/root{{path}}")] {{
            match std::fs::read_to_string(&p) {{
                Ok(s) => seen.push(format!("READ {{p}}: {{}}", s.replace('\n', " "))),
                Err(e) => seen.push(format!("DENIED {{p}}: {{e}}")),
            }}
        }}
    }}
    panic!("HOSTILE-PROBE {{}}", seen.join(" | "));
}}
"#,
            list = list.join(", ")
        ),
    )
    .expect("build.rs");
    dir
}

/// Every file under `dir`, as text (lossy), for searching a record.
pub fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    for entry in walkdir(dir) {
        if let Ok(bytes) = std::fs::read(&entry) {
            out.push_str(&String::from_utf8_lossy(&bytes));
            out.push('\n');
        }
    }
    out
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => pending.push(path),
                Ok(t) if t.is_file() => files.push(path),
                _ => {}
            }
        }
    }
    files
}
