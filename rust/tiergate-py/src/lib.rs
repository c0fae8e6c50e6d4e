//! Python bindings for tiergate-core. Conversion and error mapping only: every
//! decision lives in the core crate so it can be tested without Python.
use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", tiergate_core::VERSION)?;
    Ok(())
}
