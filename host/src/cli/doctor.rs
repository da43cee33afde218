//! `toolhost doctor`: what the tool sandbox can enforce on this machine,
//! and whether the configured tools are installed.

use clap::Args;

use super::{GlobalArgs, exit, load_config};
use crate::sandbox::detect::{Sandbox, SandboxMode};
use crate::sandbox::policy::find_program;

/// Arguments of `toolhost doctor`.
#[derive(Args, Debug)]
pub struct DoctorArgs {}

pub(super) fn doctor(g: &GlobalArgs, _args: DoctorArgs) -> anyhow::Result<u8> {
    let config = load_config(g)?;
    let probe = Sandbox::probe(&config.sandbox)?;
    println!("sandbox supervisor: {}", probe.helper().display());
    println!("mechanisms:");
    for (name, p) in probe.support().mechanisms() {
        println!(
            "  {:<18} {:<4} {}",
            name,
            if p.ok { "ok" } else { "NO" },
            p.detail
        );
    }
    println!("tools:");
    let names: Vec<(String, &crate::sandbox::policy::ToolConfig)> = config
        .verticals
        .iter()
        .flat_map(|(v, vc)| vc.tools.iter().map(move |(t, tc)| (format!("{v}/{t}"), tc)))
        .collect();
    let width = names.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, t) in &names {
        match find_program(&t.command) {
            Ok(p) => println!("  {name:<width$}  ok   {}", p.display()),
            Err(e) => match &t.install {
                Some(hint) => println!("  {name:<width$}  NO   {e}; install it: {hint}"),
                None => println!("  {name:<width$}  NO   {e}"),
            },
        }
    }
    let exposures = crate::sandbox::exposure::scan_config(&config, config.config_file.as_deref());
    if exposures.is_empty() {
        println!("credentials readable by tools: none found");
    } else {
        println!("credentials readable by tools (whatever a tool reads, a submitter can read):");
        for e in &exposures {
            println!(
                "  NO   {} ({}), through read path {}",
                e.found.display(),
                e.what,
                e.read_path.display()
            );
        }
    }
    match crate::engine::workdir::prepare(&config.work_dir()) {
        Ok(dir) => println!("work directory: ok   {}", dir.display()),
        Err(e) => println!("work directory: NO   {e}"),
    }
    let mode = match config.sandbox.mode {
        SandboxMode::Enforce => "enforce",
        SandboxMode::Degraded => "degraded",
    };
    if probe.missing().is_empty() {
        println!("verdict: the sandbox is fully enforced (mode {mode})");
        Ok(exit::OK)
    } else if config.sandbox.mode == SandboxMode::Degraded {
        println!(
            "verdict: degraded; tools run without: {}",
            probe.missing().join("; ")
        );
        Ok(exit::OK)
    } else {
        println!(
            "verdict: mode \"enforce\" but missing: {}; hosts will refuse to start",
            probe.missing().join("; ")
        );
        Ok(exit::INVALID_COMPONENT)
    }
}
