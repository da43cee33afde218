//! `toolhost new`: scaffolds a workflow crate that builds with
//! `cargo component build` and `cargo build --target wasm32-wasip2`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;

use super::exit;

/// Arguments of `toolhost new`.
#[derive(Args, Debug)]
#[command(after_help = "\
Then:
  cd <name> && cargo component build --release      (or: cargo build --release --target wasm32-wasip2)
  cp target/wasm32-wasip1/release/<name>.wasm <toolbox>/.<name>.tmp   (wasm32-wasip2 with plain cargo)
  mv <toolbox>/.<name>.tmp <toolbox>/<name>.wasm     (a rename publishes it atomically)
  toolhost --toolbox <toolbox> run <name> --target <dir>")]
pub struct NewArgs {
    /// Workflow name: lowercase letters, digits and `_` (also the crate name).
    name: String,
    /// Directory to create (default: ./<name>).
    #[arg(long, value_name = "DIR")]
    path: Option<PathBuf>,
    /// Path to the toolhost-sdk crate (default: the SDK next to this toolhost build).
    #[arg(long, value_name = "DIR", env = "TOOLHOST_SDK")]
    sdk: Option<PathBuf>,
    /// Vertical the workflow targets.
    #[arg(long, default_value = "rust")]
    vertical: String,
}

pub(super) fn new(args: NewArgs) -> anyhow::Result<u8> {
    crate::manifest::check_name("workflow", &args.name).map_err(anyhow::Error::msg)?;
    if args.name.contains('-') {
        bail!(
            "use `_` instead of `-` in workflow names (`{}`)",
            args.name.replace('-', "_")
        );
    }
    let dir = args
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() {
        bail!(
            "`{}` already exists; choose another name or --path",
            dir.display()
        );
    }
    let sdk = match args.sdk {
        Some(p) => p,
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk-guest")),
    };
    let sdk = sdk.canonicalize().with_context(|| {
        format!(
            "the toolhost-sdk crate was not found at `{}`; pass --sdk <path to sdk-guest>",
            sdk.display()
        )
    })?;
    write_crate(&dir, &args.name, &args.vertical, &sdk)?;
    println!(
        "created workflow crate `{}` in {}",
        args.name,
        dir.display()
    );
    println!("next:");
    println!("  cd {} && cargo component build --release", dir.display());
    println!(
        "  cp target/wasm32-wasip1/release/{n}.wasm <toolbox>/.{n}.tmp && mv <toolbox>/.{n}.tmp <toolbox>/{n}.wasm",
        n = args.name
    );
    println!(
        "  toolhost --toolbox <toolbox> run {} --target <dir>",
        args.name
    );
    Ok(exit::OK)
}

fn write_crate(dir: &Path, name: &str, vertical: &str, sdk: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("cannot create `{}`", dir.display()))?;
    let sdk_path = sdk.display().to_string().replace('\\', "/");
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
toolhost-sdk = {{ path = "{sdk_path}" }}
serde = {{ version = "1", features = ["derive"] }}
schemars = "1"

[profile.release]
opt-level = "s"
lto = true
strip = "debuginfo"

# A standalone crate, not part of an enclosing workspace.
[workspace]
"#
    );
    let lib = format!(
        r#"//! `{name}`: a Toolhost workflow.

use toolhost_sdk::prelude::*;

/// Parameters, validated by the host against the JSON Schema derived from this type.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {{
    /// Only look at files under this directory of the target.
    #[serde(default)]
    pub path: String,
}}

/// The run summary returned to the host.
#[derive(Serialize)]
pub struct Summary {{
    files: usize,
}}

pub struct Workflow;

impl toolhost_sdk::Workflow for Workflow {{
    const NAME: &'static str = "{name}";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Describe what {name} checks.";
    const VERTICAL: &'static str = "{vertical}";
    /// Tools this workflow may run; the host's vertical must offer them.
    const TOOLS: &'static [&'static str] = &[];
    const TIMEOUT_SECS: u32 = 300;

    type Params = Params;
    type Output = Summary;

    fn run(_ctx: &Context, params: Params) -> Result<Summary> {{
        let entries = workspace::list_dir_or_root(&params.path)?;
        let mut files = 0;
        for entry in entries {{
            if !matches!(entry.kind, workspace::EntryKind::File) {{
                continue;
            }}
            files += 1;
            let text = workspace::read_to_string(&entry.path)?;
            if text.contains("TODO") {{
                report(
                    Finding::new("{name}/todo", Severity::Info, "TODO left in the code")
                        .message("Resolve or track this TODO.")
                        .in_file(entry.path.clone()),
                );
            }}
        }}
        toolhost_sdk::log::info!("looked at {{files}} files");
        Ok(Summary {{ files }})
    }}
}}

toolhost_sdk::export_workflow!(Workflow);
"#
    );
    std::fs::write(dir.join("Cargo.toml"), cargo)?;
    std::fs::write(dir.join("src/lib.rs"), lib)?;
    std::fs::write(dir.join(".gitignore"), "/target\n")?;
    Ok(())
}
