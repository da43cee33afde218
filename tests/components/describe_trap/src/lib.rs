//! Hostile component: `describe` traps (its parameters schema panics).

use std::borrow::Cow;

use toolhost_sdk::prelude::*;

#[derive(Deserialize)]
pub struct Params {}

impl JsonSchema for Params {
    fn schema_name() -> Cow<'static, str> {
        "Params".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        panic!("describe sabotaged on purpose")
    }
}

pub struct Trap;

impl Workflow for Trap {
    const NAME: &'static str = "describe_trap";
    const VERSION: &'static str = "0.1.0";
    const VERTICAL: &'static str = "test";
    type Params = Params;
    type Output = ();

    fn run(_: &Context, _: Params) -> Result<()> {
        Ok(())
    }
}

toolhost_sdk::export_workflow!(Trap);
