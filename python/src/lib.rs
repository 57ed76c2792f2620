//! `cairn._native`: the Rust half of the `cairn` Python package, a thin
//! PyO3 layer over [`cairn_client::Client`]. The Python half
//! (`python/cairn/`) owns the user-facing API: argument handling, file
//! objects, fsspec, datasets, the error classes.
//!
//! What this layer guarantees:
//! - **The GIL is released during every network wait** (`Python::allow_threads`
//!   around `block_on`), so Python threads run while Cairn I/O is in flight.
//! - **Fork safety.** A connection ([`conn::Conn`]: a tokio runtime and a
//!   client) belongs to the process that made it. Every call checks the pid;
//!   a child process (multiprocessing, DataLoader workers) builds its own
//!   runtime and connections on first use and never touches, nor drops, the
//!   parent's: their threads do not exist in the child, so the inherited
//!   copies are leaked on purpose ([`conn::ForkGuard`]).
//! - **Errors keep their kind**: every `cairn_types::Error` becomes the
//!   Python exception `cairn.errors` maps its kind to (`FileNotFoundError`,
//!   `cairn.Unavailable`, ...); nothing on user input panics.
//!
//! Types to read first: [`client::NativeClient`], [`file::NativeReader`],
//! [`file::NativeWriter`].

mod client;
mod conn;
mod convert;
mod errors;
mod file;
mod lock;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::NativeClient>()?;
    m.add_class::<file::NativeReader>()?;
    m.add_class::<file::NativeWriter>()?;
    m.add_class::<lock::NativeLock>()?;
    m.add_function(wrap_pyfunction!(parse_cues, m)?)?;
    Ok(())
}

/// A cue list in its canonical form; raises `cairn.InvalidInput` for an
/// unknown or malformed cue. This module's own parser decides which cues a
/// client can send (`hot=GROUP` needs a Cairn that has groups).
#[pyfunction]
fn parse_cues(py: Python<'_>, list: &str) -> PyResult<String> {
    cairn_types::Cues::parse(list)
        .map(|c| c.to_string())
        .map_err(|e| errors::to_py(py, e))
}
