//! The `progress` interface: the run's latest statistics (a JSON object).

use crate::runtime::GuestState;
use crate::runtime::bindings::toolhost::workflow::progress::Host;

/// Largest accepted statistics document.
const MAX_STATS: usize = 64 * 1024;

impl Host for GuestState {
    async fn update(&mut self, stats_json: String) -> anyhow::Result<()> {
        if stats_json.len() > MAX_STATS {
            self.run.journal.host_log(
                "warn",
                &format!(
                    "progress update of {} bytes ignored (limit {MAX_STATS})",
                    stats_json.len()
                ),
            );
            return Ok(());
        }
        match serde_json::from_str::<serde_json::Value>(&stats_json) {
            Ok(v @ serde_json::Value::Object(_)) => {
                self.run.journal.set_progress(v, stats_json.len())?;
            }
            _ => self
                .run
                .journal
                .host_log("warn", "progress update ignored: it is not a JSON object"),
        }
        Ok(())
    }
}
