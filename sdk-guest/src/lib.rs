//! `toolhost-sdk`: everything a workflow author needs, and nothing else.
//!
//! A workflow is a type implementing [`Workflow`] plus one
//! [`export_workflow!`] line. Metadata lives in the trait's associated
//! constants, the parameters are a typed serde struct whose JSON Schema is
//! derived with `schemars`, and the host's capabilities are reached through
//! the small modules below ([`tools`], [`workspace`], [`findings`],
//! [`progress`], [`log`], [`durable`], [`artifacts`]); [`analysis`] says in
//! the summary which analysis steps ran and which failed. The raw WIT bindings
//! stay private to this crate: authors never see them.
//!
//! ```ignore
//! use toolhost_sdk::prelude::*;
//!
//! #[derive(Deserialize, JsonSchema)]
//! pub struct Params {
//!     /// Who to greet.
//!     #[serde(default = "world")]
//!     name: String,
//! }
//! fn world() -> String { "world".into() }
//!
//! pub struct Hello;
//!
//! impl Workflow for Hello {
//!     const NAME: &'static str = "hello";
//!     const VERSION: &'static str = env!("CARGO_PKG_VERSION");
//!     const DESCRIPTION: &'static str = "Greets someone.";
//!     const VERTICAL: &'static str = "rust";
//!     type Params = Params;
//!     type Output = String;
//!
//!     fn run(_ctx: &Context, params: Params) -> Result<String> {
//!         Ok(format!("hello, {}", params.name))
//!     }
//! }
//!
//! toolhost_sdk::export_workflow!(Hello);
//! ```

#[doc(hidden)]
pub mod bindings;
mod error;

pub mod analysis;
pub mod artifacts;
pub mod durable;
pub mod findings;
pub mod log;
pub mod progress;
pub mod tools;
pub mod workspace;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use analysis::{Analysis, AnalysisStatus};
pub use error::{Error, Result};
pub use findings::{Finding, Severity, report};
pub use progress::progress;

/// Re-exports for `use toolhost_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::analysis::{Analysis, AnalysisStatus};
    pub use crate::findings::{Finding, Severity, report};
    pub use crate::progress::progress;
    pub use crate::tools::{self, ToolError, ToolOutput};
    pub use crate::workspace;
    pub use crate::{Context, Error, Result, Workflow, bail};
    pub use schemars::JsonSchema;
    pub use serde::{Deserialize, Serialize};
}

#[doc(hidden)]
pub mod __private {
    pub use schemars;
    pub use serde_json;
}

/// A workflow: metadata in constants, orchestration in [`Workflow::run`],
/// heavy work in [`Workflow::activity`].
pub trait Workflow: 'static {
    /// Registry name: lowercase letters, digits and `_` (the Temporal workflow type).
    const NAME: &'static str;
    /// Semantic version; usually `env!("CARGO_PKG_VERSION")`.
    const VERSION: &'static str;
    /// One or two sentences for `toolhost workflows`.
    const DESCRIPTION: &'static str = "";
    /// The vertical (toolchain) whose hosts run this workflow.
    const VERTICAL: &'static str;
    /// Native tools this workflow calls; anything else is refused.
    const TOOLS: &'static [&'static str] = &[];
    /// Discovery tags.
    const TAGS: &'static [&'static str] = &[];
    /// Wall-clock budget of one run, in seconds.
    const TIMEOUT_SECS: u32 = 600;

    /// Typed parameters; their JSON Schema is published in `describe`.
    type Params: DeserializeOwned + schemars::JsonSchema;
    /// The run's JSON summary.
    type Output: Serialize;

    /// Workflow code: must be deterministic (see the crate docs). Use
    /// [`Context::activity`] for heavy work.
    fn run(ctx: &Context, params: Self::Params) -> Result<Self::Output>;

    /// Activity code: runs in a fresh instance with the workspace at
    /// `/workspace`. Dispatch on `name`, e.g. with [`activity::handle`].
    fn activity(name: &str, input: &str) -> Result<String> {
        let _ = input;
        Err(Error::msg(format!(
            "workflow `{}` has no activity named `{name}`",
            Self::NAME
        )))
    }
}

/// Handle given to workflow code.
#[derive(Debug)]
#[non_exhaustive]
pub struct Context {}

impl Context {
    #[doc(hidden)]
    pub fn __new() -> Self {
        Context {}
    }

    /// Runs the activity `name` of this component with `input` (one durable
    /// step) and returns its typed output.
    pub fn activity<I: Serialize, O: DeserializeOwned>(&self, name: &str, input: &I) -> Result<O> {
        let input = serde_json::to_string(input)
            .map_err(|e| Error::msg(format!("cannot encode input of activity `{name}`: {e}")))?;
        let output = bindings::toolhost::workflow::activities::call(name, &input)
            .map_err(|e| Error::msg(format!("activity `{name}` failed: {e}")))?;
        serde_json::from_str(&output)
            .map_err(|e| Error::msg(format!("activity `{name}` returned unexpected output: {e}")))
    }
}

/// Helpers for implementing [`Workflow::activity`].
pub mod activity {
    use super::{Error, Result};
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    /// Decodes `input`, runs `f`, encodes its output: one arm of an activity `match`.
    pub fn handle<I, O, F>(input: &str, f: F) -> Result<String>
    where
        I: DeserializeOwned,
        O: Serialize,
        F: FnOnce(I) -> Result<O>,
    {
        let input: I = serde_json::from_str(input)
            .map_err(|e| Error::msg(format!("invalid activity input: {e}")))?;
        let output = f(input)?;
        serde_json::to_string(&output)
            .map_err(|e| Error::msg(format!("cannot encode activity output: {e}")))
    }
}

#[doc(hidden)]
pub struct __Adapter<W>(core::marker::PhantomData<W>);

impl<W: Workflow> bindings::Guest for __Adapter<W> {
    fn describe() -> bindings::toolhost::workflow::types::WorkflowInfo {
        let schema = schemars::schema_for!(W::Params);
        bindings::toolhost::workflow::types::WorkflowInfo {
            name: W::NAME.to_string(),
            version: W::VERSION.to_string(),
            description: W::DESCRIPTION.to_string(),
            vertical: W::VERTICAL.to_string(),
            parameters_schema: serde_json::to_string(&schema).unwrap_or_else(|_| "{}".into()),
            tools: W::TOOLS.iter().map(|t| t.to_string()).collect(),
            tags: W::TAGS.iter().map(|t| t.to_string()).collect(),
            timeout_secs: W::TIMEOUT_SECS,
        }
    }

    fn run(params_json: String) -> core::result::Result<String, String> {
        let params: W::Params = serde_json::from_str(&params_json)
            .map_err(|e| format!("invalid parameters for `{}`: {e}", W::NAME))?;
        let ctx = Context::__new();
        let output = W::run(&ctx, params).map_err(|e| e.to_string())?;
        serde_json::to_string(&output).map_err(|e| format!("cannot encode the run summary: {e}"))
    }

    fn activity(name: String, input_json: String) -> core::result::Result<String, String> {
        W::activity(&name, &input_json).map_err(|e| e.to_string())
    }
}

/// Exports `$ty` (a [`Workflow`]) as the component's `describe`, `run` and
/// `activity`. Use exactly once per plugin crate.
#[macro_export]
macro_rules! export_workflow {
    ($ty:ty) => {
        type __ToolhostWorkflowExport = $crate::__Adapter<$ty>;
        $crate::bindings::export!(__ToolhostWorkflowExport with_types_in $crate::bindings);
    };
}
