//! Why and when a run must stop: cancellation (Ctrl-C, `toolhost cancel`) or
//! its deadline. Every blocking capability and the guest's epoch check watch
//! this one signal, so a stop reaches a running tool and a spinning guest alike.

use std::sync::OnceLock;

use tokio_util::sync::CancellationToken;

/// The reason a run was stopped from outside the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Cancelled by the user or an operator.
    Cancelled,
    /// The workflow's wall-clock budget ran out.
    DeadlineExceeded { timeout_secs: u64 },
}

impl StopReason {
    /// A sentence for the run record and the trap message.
    pub fn message(&self) -> String {
        match self {
            StopReason::Cancelled => "run cancelled".to_string(),
            StopReason::DeadlineExceeded { timeout_secs } => format!(
                "run exceeded its deadline of {timeout_secs} s (the workflow's `timeout-secs`, capped by `limits.max_timeout_secs`)"
            ),
        }
    }
}

/// A one-shot stop signal with its first reason.
#[derive(Debug, Default)]
pub struct StopSignal {
    token: CancellationToken,
    reason: OnceLock<StopReason>,
}

impl StopSignal {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the signal; the first reason wins.
    pub fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// The reason, once fired.
    pub fn reason(&self) -> Option<&StopReason> {
        self.reason.get()
    }

    /// Resolves when the signal fires.
    pub async fn stopped(&self) {
        self.token.cancelled().await
    }

    /// The token (for child tasks).
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}
