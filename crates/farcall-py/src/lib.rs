//! Python bindings for the farcall engine, built as `farcall._native`.
use pyo3::prelude::*;

/// The `farcall._native` extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", farcall::VERSION)?;
    Ok(())
}
