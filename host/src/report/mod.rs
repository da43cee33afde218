//! Turns the findings of a finished run into reports: a SARIF 2.1.0 log for
//! code-scanning tools ([`sarif`]) and short human summaries for a terminal
//! ([`summary`]).
//!
//! This module owns only the rendering. It never opens files, reads the
//! environment or the clock, or prints on its own: the only I/O it does is
//! writing to a `&mut impl Write` (or `impl Write`) its caller gives it, so
//! the same findings always render to the same bytes.

pub mod sarif;
pub mod summary;
