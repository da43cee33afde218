//! The `activities` interface: workflow code runs the component's `activity`
//! export in a fresh instance with the workspace preopened. Activity code
//! cannot start further activities.

use crate::runtime::GuestState;
use crate::runtime::bindings::toolhost::workflow::activities::Host;
use crate::runtime::state::{CodeKind, new_store};

const MAX_INPUT: usize = 16 << 20;

impl Host for GuestState {
    async fn call(
        &mut self,
        name: String,
        input_json: String,
    ) -> anyhow::Result<Result<String, String>> {
        if self.kind != CodeKind::Workflow {
            return Ok(Err(
                "activities can only be started from workflow code (`run`), not from an activity"
                    .into(),
            ));
        }
        if input_json.len() > MAX_INPUT {
            return Ok(Err(format!(
                "activity input is {} bytes; the limit is {MAX_INPUT}: pass workspace paths, not contents",
                input_json.len()
            )));
        }
        if let Some(steps) = self.run.steps_for(self.kind) {
            return steps.activity(name, input_json).await;
        }
        call_activity(self.run.clone(), &name, &input_json).await
    }
}

/// Runs the `activity` export `name` of `run`'s component in a fresh
/// instance with the workspace preopened. A trap is an `Err`.
pub async fn call_activity(
    run: std::sync::Arc<crate::capabilities::RunContext>,
    name: &str,
    input_json: &str,
) -> anyhow::Result<Result<String, String>> {
    {
        run.journal
            .host_log("debug", &format!("activity `{name}` started"));
        let started = std::time::Instant::now();
        let mut store = new_store(run.clone(), CodeKind::Activity)?;
        let instance = run.pre.instantiate_async(&mut store).await?;
        // A trap inside the activity (limit, panic, deadline) ends the run:
        // propagate it as a trap of the workflow instance too.
        let result = instance
            .call_activity(&mut store, name, input_json)
            .await
            .map_err(|e| match store.data().limiter.exceeded.clone() {
                Some(limit) => anyhow::anyhow!("activity `{name}`: {limit}"),
                None => anyhow::anyhow!("activity `{name}` trapped: {e:#}"),
            })?;
        run.journal.host_log(
            "debug",
            &format!(
                "activity `{name}` {} in {} ms",
                if result.is_ok() {
                    "completed"
                } else {
                    "failed"
                },
                started.elapsed().as_millis()
            ),
        );
        Ok(result)
    }
}
