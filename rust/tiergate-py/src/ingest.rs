//! Binding of the request side's one call into the core: a plain request's body read
//! into its fields, with its idempotency key, token estimate and required capabilities.
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tiergate_core::ingest;

/// `(model, [(role, text)], max_tokens, stream, key, prompt_tokens, required_caps)`.
type Fields<'py> = (
    String,
    Vec<(&'static str, String)>,
    Option<i64>,
    bool,
    Option<Bound<'py, PyBytes>>,
    u64,
    u64,
);

/// The plain request in `body` with what the request side needs of it, or None when
/// the Python parser must read the body. `scope`: the key's scope without its stream
/// mark, or None for no key.
#[pyfunction]
fn ingest_chat_request<'py>(
    py: Python<'py>,
    body: &[u8],
    scope: Option<&str>,
) -> Option<Fields<'py>> {
    let i = ingest::ingest(body, scope)?;
    let r = i.request;
    let messages = r
        .messages
        .into_iter()
        .map(|(role, text)| (role.name(), text))
        .collect();
    let key = i.key.map(|k| PyBytes::new(py, &k));
    Some((
        r.model,
        messages,
        r.max_tokens,
        r.stream,
        key,
        i.prompt_tokens,
        i.required_caps,
    ))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(ingest_chat_request, m)?)?;
    Ok(())
}
