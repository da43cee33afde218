//! The `log` interface: guest log lines into the run log (charged to the
//! output quota).

use crate::runtime::GuestState;
use crate::runtime::bindings::Level;
use crate::runtime::bindings::toolhost::workflow::log::Host;

const MAX_LINE: usize = 64 * 1024;

impl Host for GuestState {
    async fn emit(&mut self, level: Level, message: String) -> anyhow::Result<()> {
        let message = crate::text::clip_bytes(message, MAX_LINE);
        self.run
            .journal
            .guest_log(level.as_str(), "guest", &message)?;
        Ok(())
    }
}
