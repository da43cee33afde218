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

/// Reads artifact `name` of this run back, `None` when it was never stored
/// (activity code only). In distributed mode it comes from the blob store,
/// so a retried step can resume from an earlier attempt's checkpoint.
pub fn get(name: &str) -> Result<Option<Vec<u8>>, Error> {
    wit::get(name).map_err(Error::msg)
}
