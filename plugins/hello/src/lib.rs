//! `hello`: the smallest useful workflow. It greets, counts the files in the
//! target, and reports nothing. Used in the docs and the benchmarks.

use toolhost_sdk::prelude::*;

/// Parameters of `hello`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Who to greet.
    #[serde(default = "default_name")]
    pub name: String,
}

fn default_name() -> String {
    "world".to_string()
}

/// The run summary.
#[derive(Serialize)]
pub struct Summary {
    greeting: String,
}

pub struct Hello;

impl Workflow for Hello {
    const NAME: &'static str = "hello";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Greets someone; the smallest possible workflow.";
    const VERTICAL: &'static str = "rust";
    const TAGS: &'static [&'static str] = &["example"];
    const TIMEOUT_SECS: u32 = 30;

    type Params = Params;
    type Output = Summary;

    fn run(_ctx: &Context, params: Params) -> Result<Summary> {
        Ok(Summary {
            greeting: format!("hello, {}!", params.name),
        })
    }
}

toolhost_sdk::export_workflow!(Hello);
