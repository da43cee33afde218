//! The WebAssembly runtime: one shared wasmtime `Config`, the engine with its
//! epoch ticker, the linker with every host capability, and the per-store
//! limits. It owns how guests are compiled, linked and bounded; it must never
//! decide policy (which tools, which paths): that is `capabilities`' job.

pub mod bindings;
pub mod cache;
pub mod clocks;
pub mod limits;
pub mod state;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, OptLevel};

pub use bindings::{Workflow as WorkflowBindings, WorkflowPre};
pub use state::GuestState;

/// How often the epoch advances; the granularity of deadlines and cancellation.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Knobs of the shared engine configuration.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Count fuel so a per-run budget can be enforced.
    pub consume_fuel: bool,
    /// Try the pooling instance allocator (falls back to on-demand when the
    /// address space for the pool cannot be reserved).
    pub pooling: Option<PoolSizing>,
    /// Directory of the compile cache; `None` disables it. It must be
    /// writable by the host user only, or the cache is disabled.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Size cap of the compile cache in bytes (least recently used entries
    /// go first); `None`: unbounded.
    pub cache_max_bytes: Option<u64>,
}

/// Sizing of the pooling allocator (see docs/PERFORMANCE.md).
#[derive(Debug, Clone, Copy)]
pub struct PoolSizing {
    /// Concurrent component instances (runs + activities + describes).
    pub instances: u32,
    /// Largest linear memory, in MiB (the guest memory limit).
    pub memory_mib: u64,
    /// Elements per table (the guest table limit).
    pub table_elements: usize,
    /// Memories per component instance.
    pub memories_per_component: u32,
}

impl EngineOptions {
    /// Options for a host with `config`: pooling sized from its limits,
    /// compile cache under its data directory.
    pub fn for_host(config: &crate::config::HostConfig) -> Self {
        EngineOptions {
            consume_fuel: config.limits.fuel.is_some(),
            pooling: Some(PoolSizing {
                instances: 256,
                memory_mib: config.limits.memory_mib,
                table_elements: config.limits.table_elements,
                memories_per_component: u32::try_from(config.limits.memories).unwrap_or(u32::MAX),
            }),
            cache_dir: Some(config.data_dir.join("cache").join("components")),
            cache_max_bytes: Some(config.storage.compile_cache_mib.saturating_mul(1 << 20)),
        }
    }
}

/// Builds the one wasmtime `Config` every engine of this host uses (runs,
/// validation, benchmarks and cached artifacts must agree on it).
pub fn engine_config(opts: &EngineOptions) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.consume_fuel(opts.consume_fuel);
    config.cranelift_opt_level(OptLevel::Speed);
    // Guests run on fibers: a deep recursion must trap inside the guest's
    // own stack, long before the fiber stack runs out.
    config.max_wasm_stack(1 << 20);
    config.async_stack_size(2 << 20);
    // `perf record` can name guest functions when asked for (development).
    if std::env::var_os("TOOLHOST_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

/// The engine, its linker and the epoch ticker that drives deadlines.
pub struct Runtime {
    engine: Engine,
    linker: Linker<GuestState>,
    ticker_stop: Arc<AtomicBool>,
    cache: Option<cache::CompileCache>,
    pooling: bool,
}

fn pooled_config(opts: &EngineOptions, sizing: PoolSizing) -> Config {
    use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig};
    let mut pool = PoolingAllocationConfig::default();
    let memories = sizing.instances.saturating_mul(2);
    pool.total_component_instances(sizing.instances)
        .total_core_instances(sizing.instances.saturating_mul(8))
        .total_memories(memories)
        .total_tables(sizing.instances.saturating_mul(8))
        .total_stacks(sizing.instances)
        .max_memories_per_component(sizing.memories_per_component)
        .max_memory_size(usize::try_from(sizing.memory_mib << 20).unwrap_or(usize::MAX))
        .table_elements(sizing.table_elements);
    let mut config = engine_config(opts);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

impl Runtime {
    /// Creates the engine and linker and starts the epoch ticker thread.
    pub fn new(opts: &EngineOptions) -> Result<Arc<Self>> {
        let pooled = opts.pooling.and_then(|sizing| {
            match Engine::new(&pooled_config(opts, sizing)) {
                Ok(engine) => Some(engine),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reserve the instance pool; using on-demand allocation");
                    None
                }
            }
        });
        let pooling = pooled.is_some();
        let engine = match pooled {
            Some(engine) => engine,
            None => Engine::new(&engine_config(opts))
                .map_err(anyhow::Error::from)
                .context("cannot create the wasmtime engine")?,
        };
        let cache = opts.cache_dir.as_ref().and_then(|dir| {
            // Entries are native code this process runs: a directory anyone
            // else could write is not used at all.
            match crate::util::private_dir::ensure(dir) {
                Ok(dir) => Some(cache::CompileCache::new(dir, &engine, opts.cache_max_bytes)),
                Err(e) => {
                    tracing::warn!("compile cache disabled: {e}");
                    None
                }
            }
        });
        let mut linker = Linker::<GuestState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("cannot link WASI")?;
        WorkflowBindings::add_to_linker::<GuestState, wasmtime::component::HasSelf<GuestState>>(
            &mut linker,
            |s| s,
        )
        .map_err(anyhow::Error::from)
        .context("cannot link the toolhost:workflow imports")?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let stop = ticker_stop.clone();
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("toolhost-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .context("cannot start the epoch ticker thread")?;
        Ok(Arc::new(Runtime {
            engine,
            linker,
            ticker_stop,
            cache,
            pooling,
        }))
    }

    /// Whether compiled components are cached on disk (the cache directory
    /// is set and only the host user may write it).
    pub fn has_cache(&self) -> bool {
        self.cache.is_some()
    }

    /// True when the pooling allocator is in use.
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// Compiles `bytes` (sha256 `digest`), or loads it from the compile cache.
    pub fn load(&self, digest: &str, bytes: &[u8]) -> Result<(Component, cache::CacheOutcome)> {
        match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, digest, bytes, |b| self.compile(b)),
            None => Ok((self.compile(bytes)?, cache::CacheOutcome::Disabled)),
        }
    }

    /// The shared engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles a component from its bytes (CPU-heavy: call off the async executor).
    pub fn compile(&self, bytes: &[u8]) -> Result<Component> {
        Component::new(&self.engine, bytes).map_err(|e| {
            let text = format!("{e:#}");
            if text.contains("parse a wasm module with a component parser")
                || text.contains("expected a component")
                || text.contains("core module")
            {
                anyhow::anyhow!(
                    "this is a core WebAssembly module, not a component: build the plugin with `cargo component build` or `cargo build --target wasm32-wasip2`"
                )
            } else {
                anyhow::anyhow!("not a valid WebAssembly component: {text}")
            }
        })
    }

    /// Links `component` against this host's imports once, so each run
    /// only instantiates.
    pub fn prepare(&self, component: &Component) -> Result<WorkflowPre<GuestState>> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| describe_link_error(&format!("{e:#}")))?;
        WorkflowPre::new(pre).map_err(|e| {
            anyhow::anyhow!(
                "the component does not export the toolhost:workflow@0.1.0 world ({e:#}); build it against the `wit/` of this host with toolhost-sdk"
            )
        })
    }
}

fn describe_link_error(text: &str) -> anyhow::Error {
    let named = text
        .split("imports instance `")
        .nth(1)
        .or_else(|| text.split("import `").nth(1));
    if let Some(rest) = named {
        let name = rest.split('`').next().unwrap_or(rest);
        return anyhow::anyhow!(
            "the component imports `{name}`, which this host does not provide; it may target another WIT version (this host speaks toolhost:workflow@0.1.0 and WASI 0.2)"
        );
    }
    anyhow::anyhow!("the component cannot be linked against this host: {text}")
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
