//! Per-store resource limits. A guest that exceeds one traps with a message
//! that names the limit, instead of failing in some opaque way.

use serde::{Deserialize, Serialize};
use wasmtime::ResourceLimiter;

/// Limits applied to every guest store of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuestLimits {
    /// Linear memory per instance, in MiB.
    pub memory_mib: u64,
    /// Upper bound on any workflow's own timeout, in seconds.
    pub max_timeout_secs: u64,
    /// Fuel per store (instructions, roughly); `None` = unlimited.
    pub fuel: Option<u64>,
    /// Table elements per table.
    pub table_elements: usize,
    /// Instances per store (a component may contain several).
    pub instances: usize,
    /// Tables per store.
    pub tables: usize,
    /// Memories per store.
    pub memories: usize,
    /// Bytes a run may push through findings, progress, log and stdio, in MiB.
    pub output_quota_mib: u64,
    /// Bytes a run may write to its workspace and artifacts, in MiB.
    pub write_quota_mib: u64,
    /// Findings kept per run (after deduplication).
    pub max_findings: usize,
    /// Largest file one `workspace.read` call returns, in MiB.
    pub max_read_mib: u64,
}

impl Default for GuestLimits {
    fn default() -> Self {
        GuestLimits {
            memory_mib: 512,
            max_timeout_secs: 6 * 3600,
            fuel: None,
            table_elements: 100_000,
            instances: 32,
            tables: 32,
            memories: 8,
            output_quota_mib: 64,
            write_quota_mib: 2048,
            max_findings: 10_000,
            max_read_mib: 64,
        }
    }
}

/// Enforces [`GuestLimits`] for one store and remembers which limit was hit.
pub struct Limiter {
    memory_bytes: usize,
    table_elements: usize,
    instances: usize,
    tables: usize,
    memories: usize,
    /// Set when a limit was exceeded; the run's failure reason.
    pub exceeded: Option<String>,
}

impl Limiter {
    /// A limiter for `limits`.
    pub fn new(limits: &GuestLimits) -> Self {
        Limiter {
            memory_bytes: usize::try_from(limits.memory_mib.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX),
            table_elements: limits.table_elements,
            instances: limits.instances,
            tables: limits.tables,
            memories: limits.memories,
            exceeded: None,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            let msg = format!(
                "guest exceeded its memory limit of {} MiB (tried to grow linear memory from {} to {} MiB); raise `limits.memory_mib` in the host config if this workflow needs more",
                self.memory_bytes >> 20,
                current >> 20,
                desired >> 20
            );
            self.exceeded = Some(msg.clone());
            return Err(wasmtime::Error::msg(msg));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            let msg = format!(
                "guest exceeded its table limit of {} elements (wanted {desired})",
                self.table_elements
            );
            self.exceeded = Some(msg.clone());
            return Err(wasmtime::Error::msg(msg));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}
