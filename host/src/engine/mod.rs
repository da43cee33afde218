//! Engines execute runs. The local (embedded) engine runs a workflow now, in
//! this process; a distributed engine would turn the same durable steps into
//! Temporal activities. Both share parameter validation, workspace
//! preparation and the run record defined here.

pub mod local;
pub mod params;
pub mod record;
pub mod target;
pub mod workdir;

pub use local::{LocalEngine, RunRequest};
pub use record::{RunRecord, RunStatus};

/// Why a run could not start. Once a run starts, problems are recorded in
/// its [`RunRecord`] instead.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no workflow named `{name}` in the toolbox; available: {available}")]
    UnknownWorkflow { name: String, available: String },
    #[error("invalid parameters for `{workflow}`:\n{}", .errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    InvalidParams {
        workflow: String,
        errors: Vec<String>,
    },
    #[error("cannot prepare the target: {0:#}")]
    Target(anyhow::Error),
    #[error("cannot set up the run: {0:#}")]
    Setup(anyhow::Error),
}

/// A new run id: `<workflow>-<12 hex digits>`.
pub fn new_run_id(workflow: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{workflow}-{}", &id[..12])
}

/// Checks a run id given by a user (it becomes a directory name).
pub fn check_run_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "run id `{}` is invalid: use letters, digits, `-`, `_` and `.`",
            id.escape_debug()
        ))
    }
}
