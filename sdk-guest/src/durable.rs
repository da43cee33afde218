//! Deterministic time, randomness and timers for workflow code. Prefer these
//! (or `std::time::SystemTime`, which the host virtualises the same way) over
//! anything ambient.

use std::time::Duration;

use crate::bindings::toolhost::workflow::durable as wit;

/// Workflow time in milliseconds since the Unix epoch (identical on replay).
pub fn now_ms() -> u64 {
    wit::now_ms()
}

/// A random number seeded by the run id (identical on replay).
pub fn random_u64() -> u64 {
    wit::random_u64()
}

/// Sleeps `duration` of workflow time (a durable timer in distributed mode).
pub fn sleep(duration: Duration) {
    wit::sleep_ms(duration.as_millis().min(u64::MAX as u128) as u64);
}
