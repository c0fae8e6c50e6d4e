//! Bindings of the safety scan: text in, `(kind_code, start, end)` tuples out.
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use tiergate_core::safety;

/// Every finding in `text`: `(kind code, start, end)` byte offsets into its UTF-8
/// encoding, sorted and disjoint; `SAFETY_KINDS[code]` names the kind.
#[pyfunction]
#[pyo3(signature = (text, injection = true))]
fn scan_text(text: &str, injection: bool) -> Vec<(u8, usize, usize)> {
    safety::scan(text, injection)
        .into_iter()
        .map(|s| (s.kind, s.start, s.end))
        .collect()
}

/// Whether `raw` (a request body, say) holds any finding at all, injection markers
/// included: one pass over the bytes where the texts inside would each take a call.
#[pyfunction]
fn scan_any(raw: &[u8]) -> bool {
    !safety::scan_bytes(raw, true).is_empty()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(scan_text, m)?)?;
    m.add_function(wrap_pyfunction!(scan_any, m)?)?;
    m.add("SAFETY_KINDS", PyTuple::new(m.py(), safety::KINDS)?)?;
    Ok(())
}
