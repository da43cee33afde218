//! Files kept with the run's results (e.g. crashing inputs).

use crate::Error;
use crate::bindings::toolhost::workflow::artifacts as wit;

/// Stores `contents` as artifact `name` (a plain file name).
pub fn put(name: &str, contents: impl AsRef<[u8]>) -> Result<(), Error> {
    wit::put(name, contents.as_ref()).map_err(Error::msg)
}

/// Stores workspace file `path` as artifact `name`.
pub fn put_file(name: &str, path: &str) -> Result<(), Error> {
    wit::put_file(name, path).map_err(Error::msg)
}
