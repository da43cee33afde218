//! Toolhost: a host for sandboxed, hot-loaded WebAssembly workflows that
//! drive native security toolchains.
//!
//! Dependencies point one way: `cli` -> `engine` -> `toolbox` -> `runtime`
//! and `capabilities` (which together make a guest store: the runtime owns
//! stores and limits, capabilities own policy) -> `sandbox`/`storage`;
//! `manifest`, `report`, `text` and `util` are shared data, rendering and
//! helpers.
//! `distributed` is the Temporal engine beside `engine`'s embedded one;
//! `serve` is the authenticated HTTP API in front of the engine.

pub mod capabilities;
pub mod cli;
pub mod config;
pub mod distributed;
pub mod engine;
pub mod manifest;
pub mod report;
pub mod runtime;
pub mod sandbox;
pub mod serve;
pub mod storage;
pub mod text;
pub mod toolbox;
pub mod util;
