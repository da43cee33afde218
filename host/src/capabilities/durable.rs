//! The `durable` interface: workflow time, seeded randomness and timers for
//! workflow code; real time and randomness for activity code.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;

use crate::runtime::GuestState;
use crate::runtime::bindings::toolhost::workflow::durable::Host;

impl Host for GuestState {
    async fn now_ms(&mut self) -> anyhow::Result<u64> {
        Ok(match self.durable_rng {
            Some(_) => self.run.clock.now_ms(),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        })
    }

    async fn random_u64(&mut self) -> anyhow::Result<u64> {
        Ok(match self.durable_rng.as_mut() {
            Some(rng) => rng.next_u64(),
            None => rand::rng().next_u64(),
        })
    }

    async fn sleep_ms(&mut self, ms: u64) -> anyhow::Result<()> {
        let duration = Duration::from_millis(ms);
        if let Some(steps) = self.run.steps_for(self.kind) {
            // Workflow time is now the time of the task in which the timer
            // fired (the driver observed it from history).
            steps.sleep(duration).await?;
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = self.run.stop.stopped() => {}
        }
        if self.durable_rng.is_some() {
            self.run.clock.advance(duration);
        }
        Ok(())
    }
}
