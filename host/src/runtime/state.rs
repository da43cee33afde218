//! The data of one guest store (`Store<GuestState>`) and how stores are made:
//! WASI virtualised for workflow code or activity code, limits, fuel and the
//! epoch callback that enforces deadlines and cancellation.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rand::rngs::ChaCha12Rng;
use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::clocks::seeded_rng;
use super::limits::Limiter;
use crate::capabilities::RunContext;
use crate::capabilities::journal::RunJournal;

/// Which export a store runs: it decides what the guest may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeKind {
    /// `describe` at load time: nothing at all.
    Describe,
    /// `run`: deterministic, no filesystem.
    Workflow,
    /// `activity`: workspace at `/workspace`, real clocks.
    Activity,
}

/// Per-store data.
pub struct GuestState {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: Limiter,
    /// The run this store belongs to.
    pub run: Arc<RunContext>,
    /// What the store runs.
    pub kind: CodeKind,
    /// `durable.random-u64` generator (workflow code only).
    pub(crate) durable_rng: Option<ChaCha12Rng>,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Creates a store for `kind` code of `run`, limits and deadline armed.
pub fn new_store(run: Arc<RunContext>, kind: CodeKind) -> anyhow::Result<Store<GuestState>> {
    let mut b = WasiCtxBuilder::new();
    b.stdout(LogStream::new(run.journal.clone(), "stdout"))
        .stderr(LogStream::new(run.journal.clone(), "stderr"))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    let mut durable_rng = None;
    match kind {
        CodeKind::Describe | CodeKind::Workflow => {
            let id = run.run_id.as_str();
            b.wall_clock(run.clock.clone())
                .monotonic_clock(run.clock.clone())
                .secure_random(seeded_rng(id, "wasi-secure"))
                .insecure_random(seeded_rng(id, "wasi-insecure"))
                .insecure_random_seed(u128::from_le_bytes(
                    super::clocks::seed_for(id, "wasi-seed")[..16]
                        .try_into()
                        .unwrap_or([0; 16]),
                ));
            durable_rng = Some(seeded_rng(id, "durable"));
        }
        CodeKind::Activity => {
            b.preopened_dir(run.workspace.root(), "/workspace", FsPerms::ReadWrite)
                .map_err(|e| anyhow::anyhow!("cannot preopen the workspace: {e:#}"))?;
            b.initial_cwd("/workspace");
            // File operations run on the guest's own thread instead of a
            // round trip through tokio's blocking pool each (a third of a
            // file-walking activity's time). Safe only while nothing in the
            // workspace can block on open: the copy and the unpacking make
            // regular files, directories and symlinks only, and landlock
            // keeps tools from making FIFOs, sockets or devices there.
            b.allow_blocking_current_thread(run.sandbox.workspace_files_only());
        }
    }
    let state = GuestState {
        wasi: b.build(),
        table: ResourceTable::new(),
        limiter: Limiter::new(&run.limits),
        run: run.clone(),
        kind,
        durable_rng,
    };
    let mut store = Store::new(run.runtime.engine(), state);
    store.limiter(|s| &mut s.limiter);
    if let Some(fuel) = run.limits.fuel {
        store
            .set_fuel(fuel)
            .map_err(|e| anyhow::anyhow!("fuel is not enabled in the engine: {e:#}"))?;
    }
    // Check deadline and cancellation on every epoch tick, yielding to the
    // executor so one spinning guest never starves the host.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|ctx| {
        let run = &ctx.data().run;
        if let Some(reason) = run.stop.reason() {
            return Err(wasmtime::Error::msg(reason.message()));
        }
        Ok(UpdateDeadline::Yield(1))
    });
    Ok(store)
}

/// Guest stdout/stderr, line-buffered into the run log.
struct LogStream {
    journal: Arc<RunJournal>,
    source: &'static str,
}

impl LogStream {
    fn new(journal: Arc<RunJournal>, source: &'static str) -> Self {
        LogStream { journal, source }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            journal: self.journal.clone(),
            source: self.source,
            buf: Vec::new(),
            over_quota: false,
        })
    }
}

const MAX_LINE: usize = 16 * 1024;

struct LineWriter {
    journal: Arc<RunJournal>,
    source: &'static str,
    buf: Vec<u8>,
    over_quota: bool,
}

impl LineWriter {
    fn emit(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.over_quota {
            return Err(std::io::Error::other("run output quota exceeded"));
        }
        let text = String::from_utf8_lossy(line);
        let level = if self.source == "stderr" {
            "warn"
        } else {
            "info"
        };
        if let Err(e) = self
            .journal
            .guest_log(level, self.source, text.trim_end_matches('\r'))
        {
            self.over_quota = true;
            return Err(std::io::Error::other(e.to_string()));
        }
        Ok(())
    }

    fn flush_lines(&mut self, all: bool) -> std::io::Result<()> {
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            self.emit(&line[..line.len() - 1])?;
        }
        while self.buf.len() >= MAX_LINE {
            // A long line is split, never inside a UTF-8 sequence.
            let n = crate::text::utf8_prefix_len(&self.buf, MAX_LINE).max(1);
            let piece: Vec<u8> = self.buf.drain(..n).collect();
            self.emit(&piece)?;
        }
        if all && !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.emit(&line)?;
        }
        Ok(())
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.buf.extend_from_slice(data);
        Poll::Ready(self.flush_lines(false).map(|()| data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.flush_lines(true))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let _ = self.flush_lines(true);
    }
}
