//! Hostile component: `describe` returns an invalid parameters schema.

use std::borrow::Cow;

use toolhost_sdk::prelude::*;

#[derive(Deserialize)]
pub struct Params {}

impl JsonSchema for Params {
    fn schema_name() -> Cow<'static, str> {
        "Params".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": 12, "properties": "not an object"})
    }
}

pub struct BadSchema;

impl Workflow for BadSchema {
    const NAME: &'static str = "bad_schema";
    const VERSION: &'static str = "0.1.0";
    const VERTICAL: &'static str = "test";
    type Params = Params;
    type Output = ();

    fn run(_: &Context, _: Params) -> Result<()> {
        Ok(())
    }
}

toolhost_sdk::export_workflow!(BadSchema);
