//! Bindings of the safety scan: text in, `(kind_code, start, end)` tuples out.
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};
use std::cell::RefCell;
use tiergate_core::memo::{self, TextMemo};
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

thread_local! {
    /// Whether each text seen lately holds any finding (32 KiB): a system prompt or an
    /// earlier turn comes back with every request. Per thread, so no lock.
    static ANY: RefCell<TextMemo<bool>> =
        RefCell::new(TextMemo::keeping(1024, memo::SHORT_BYTES));
}

/// Whether any text of `texts` (`(role, text)` pairs: a plain request's messages) holds
/// a finding, injection markers included: [`scan_text`] of each, the long texts
/// answered from the memo when seen lately.
#[pyfunction]
fn scan_texts_any(texts: &Bound<'_, PyAny>) -> PyResult<bool> {
    ANY.with_borrow_mut(|memo| {
        for pair in texts.try_iter()? {
            let pair = pair?;
            let text = pair.cast::<PyTuple>()?.get_item(1)?;
            let text = text.cast::<PyString>()?.to_str()?;
            if memo.get_or(text, |t| !safety::scan(t, true).is_empty()) {
                return Ok(true);
            }
        }
        Ok(false)
    })
}

/// Whether the output scan's refusal pattern could match `text` (`false` only when it
/// cannot); a text that is not UTF-8 (lone surrogates) could.
#[pyfunction]
fn refusal_possible(text: &Bound<'_, PyString>) -> bool {
    text.to_str().map_or(true, safety::refusal_possible)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(scan_text, m)?)?;
    m.add_function(wrap_pyfunction!(scan_any, m)?)?;
    m.add_function(wrap_pyfunction!(scan_texts_any, m)?)?;
    m.add_function(wrap_pyfunction!(refusal_possible, m)?)?;
    m.add("REFUSAL_WINDOW", safety::REFUSAL_WINDOW)?;
    m.add("SAFETY_KINDS", PyTuple::new(m.py(), safety::KINDS)?)?;
    Ok(())
}
