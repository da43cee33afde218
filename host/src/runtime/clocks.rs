//! Deterministic clocks and randomness for workflow code: values depend only
//! on the run's identity (id and recorded start time), its durable sleeps
//! and, in the distributed engine, the times of its workflow tasks (from
//! history), never on when or where the code happens to execute.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::ChaCha12Rng;
use sha2::{Digest, Sha256};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// Workflow time: the run's recorded start, moved on by durable sleeps and,
/// in the distributed engine, to the time of each workflow task.
#[derive(Clone)]
pub struct WorkflowClock {
    start_ms: u64,
    /// Logical nanoseconds elapsed (advanced only by durable sleeps).
    elapsed_ns: Arc<AtomicU64>,
    /// Arbitrary per-run origin of the monotonic clock.
    monotonic_base: u64,
}

impl WorkflowClock {
    /// A clock for the run `run_id` that started at `start_ms`.
    pub fn new(run_id: &str, start_ms: u64) -> Self {
        let seed = seed_for(run_id, "monotonic");
        // Keep the origin far from overflow but distinct per run.
        let monotonic_base =
            (u64::from_le_bytes(seed[..8].try_into().unwrap_or([0; 8])) >> 4) % (1 << 50);
        WorkflowClock {
            start_ms,
            elapsed_ns: Arc::new(AtomicU64::new(0)),
            monotonic_base,
        }
    }

    /// Current workflow time in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.start_ms + self.elapsed_ns.load(Ordering::Relaxed) / 1_000_000
    }

    /// Advances workflow time (after a durable sleep).
    pub fn advance(&self, by: Duration) {
        let ns = by.as_nanos().min(u64::MAX as u128) as u64;
        self.elapsed_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Moves workflow time to `at_ms` (a workflow task's time) unless it is
    /// already later; it never goes back.
    pub fn observe(&self, at_ms: u64) {
        let ns = at_ms
            .saturating_sub(self.start_ms)
            .saturating_mul(1_000_000);
        self.elapsed_ns.fetch_max(ns, Ordering::Relaxed);
    }
}

impl HostWallClock for WorkflowClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.start_ms)
            + Duration::from_nanos(self.elapsed_ns.load(Ordering::Relaxed))
    }
}

impl HostMonotonicClock for WorkflowClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        self.monotonic_base + self.elapsed_ns.load(Ordering::Relaxed)
    }
}

/// A 32-byte seed derived from the run id and a purpose label.
pub fn seed_for(run_id: &str, purpose: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"toolhost-seed\0");
    h.update(purpose.as_bytes());
    h.update([0]);
    h.update(run_id.as_bytes());
    h.finalize().into()
}

/// A deterministic generator for `purpose` in run `run_id`.
pub fn seeded_rng(run_id: &str, purpose: &str) -> ChaCha12Rng {
    ChaCha12Rng::from_seed(seed_for(run_id, purpose))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn rng_depends_only_on_run_id_and_purpose() {
        let a = seeded_rng("hello-1", "wasi").next_u64();
        assert_eq!(a, seeded_rng("hello-1", "wasi").next_u64());
        assert_ne!(a, seeded_rng("hello-2", "wasi").next_u64());
        assert_ne!(a, seeded_rng("hello-1", "durable").next_u64());
    }

    #[test]
    fn clock_advances_with_sleeps_and_workflow_tasks_only() {
        let c = WorkflowClock::new("r", 1_700_000_000_000);
        assert_eq!(c.now_ms(), 1_700_000_000_000);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.now_ms(), 1_700_000_000_000);
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.now_ms(), 1_700_000_001_500);
        c.observe(1_700_000_005_000);
        assert_eq!(
            c.now_ms(),
            1_700_000_005_000,
            "a later workflow task moves it on"
        );
        c.observe(1_700_000_002_000);
        assert_eq!(
            c.now_ms(),
            1_700_000_005_000,
            "an earlier one does not move it back"
        );
        assert_ne!(
            WorkflowClock::new("a", 0).monotonic_base,
            WorkflowClock::new("b", 0).monotonic_base
        );
    }
}
