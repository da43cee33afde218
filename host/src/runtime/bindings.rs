//! Host bindings generated from `wit/toolhost-workflow@0.1.0`. The one
//! `bindgen!` of this WIT version; conversions to host types live here too.

use crate::manifest;

wasmtime::component::bindgen!({
    path: "../wit/toolhost-workflow@0.1.0",
    world: "workflow",
    imports: { default: async | trappable },
    exports: { default: async },
    anyhow: true,
    with: {
        "toolhost:workflow/tools.process": crate::capabilities::tools::ToolProcess,
    },
});

pub use self::toolhost::workflow::types::{Finding as WitFinding, Level, Severity as WitSeverity};

impl From<WitSeverity> for manifest::Severity {
    fn from(s: WitSeverity) -> Self {
        match s {
            WitSeverity::Info => manifest::Severity::Info,
            WitSeverity::Low => manifest::Severity::Low,
            WitSeverity::Medium => manifest::Severity::Medium,
            WitSeverity::High => manifest::Severity::High,
            WitSeverity::Critical => manifest::Severity::Critical,
        }
    }
}

impl Level {
    /// Lowercase name for the run log.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}
