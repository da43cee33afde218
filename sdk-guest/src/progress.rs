//! Live statistics shown by the CLI (and sent as heartbeats in distributed mode).

use serde::Serialize;

/// Replaces the run's current statistics with `stats` (a JSON object).
pub fn progress<T: Serialize + ?Sized>(stats: &T) {
    if let Ok(json) = serde_json::to_string(stats) {
        crate::bindings::toolhost::workflow::progress::update(&json);
    }
}
