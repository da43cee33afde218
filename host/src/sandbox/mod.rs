//! The native process sandbox: which tools exist (policy) and how a tool
//! process is started, bounded and killed (process). It knows nothing about
//! WebAssembly or runs; capabilities call it with a fully checked request.

pub mod cgroup;
pub mod detect;
pub mod egress;
pub mod exposure;
pub mod policy;
pub mod process;
pub mod supervisor;
