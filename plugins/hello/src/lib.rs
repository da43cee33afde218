//! `hello`: the smallest useful workflow. It greets, and reports nothing.
//! Used in the docs and the benchmarks; with `in_activity` the greeting is
//! made by an activity, one durable step, which is the shape the
//! distributed benchmark compares with a native Temporal workflow.

use toolhost_sdk::prelude::*;

/// Parameters of `hello`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Who to greet.
    #[serde(default = "default_name")]
    pub name: String,
    /// Make the greeting in an activity (one durable step) rather than in
    /// workflow code.
    #[serde(default)]
    pub in_activity: bool,
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

    fn run(ctx: &Context, params: Params) -> Result<Summary> {
        let greeting = if params.in_activity {
            ctx.activity("greet", &params.name)?
        } else {
            greet(params.name)?
        };
        Ok(Summary { greeting })
    }

    fn activity(name: &str, input: &str) -> Result<String> {
        match name {
            "greet" => toolhost_sdk::activity::handle(input, greet),
            other => Err(Error::msg(format!("unknown activity `{other}`"))),
        }
    }
}

fn greet(name: String) -> Result<String> {
    Ok(format!("hello, {name}!"))
}

toolhost_sdk::export_workflow!(Hello);
