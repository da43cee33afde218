//! The run log: `toolhost_sdk::log::info!("scanned {} files", n)`.

use crate::bindings::toolhost::workflow::log as wit;
use crate::bindings::toolhost::workflow::types::Level;

pub use crate::{debug, error, info, trace, warn};

#[doc(hidden)]
pub fn __emit(level: u8, message: &str) {
    let level = match level {
        0 => Level::Trace,
        1 => Level::Debug,
        2 => Level::Info,
        3 => Level::Warn,
        _ => Level::Error,
    };
    wit::emit(level, message);
}

/// Logs at trace level, `format!`-style.
#[macro_export]
macro_rules! trace { ($($arg:tt)*) => { $crate::log::__emit(0, &::std::format!($($arg)*)) }; }
/// Logs at debug level, `format!`-style.
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log::__emit(1, &::std::format!($($arg)*)) }; }
/// Logs at info level, `format!`-style.
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log::__emit(2, &::std::format!($($arg)*)) }; }
/// Logs at warn level, `format!`-style.
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log::__emit(3, &::std::format!($($arg)*)) }; }
/// Logs at error level, `format!`-style.
#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log::__emit(4, &::std::format!($($arg)*)) }; }
