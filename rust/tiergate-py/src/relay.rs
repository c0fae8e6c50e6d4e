//! Bindings of the `OpenAI` stream relay: body bytes in, the caller's frames out.
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tiergate_core::relay;

use crate::to_py;

/// One relayed stream (see `tiergate_core::relay`). Used from one task at a time.
#[pyclass(module = "tiergate._core", name = "OpenAIRelay")]
struct OpenAiRelay {
    inner: relay::OpenAiRelay,
}

/// `(canonical finish reason, input, output, cached, reasoning tokens, model)`.
type End = (&'static str, i64, i64, i64, i64, String);

#[pymethods]
impl OpenAiRelay {
    #[new]
    fn new(model: &str) -> Self {
        Self {
            inner: relay::OpenAiRelay::new(model),
        }
    }

    /// Parse one piece of the body; the number of deltas waiting to be rendered.
    fn feed(&mut self, chunk: &[u8]) -> usize {
        self.inner.feed(chunk)
    }

    /// The body ended; the number of deltas waiting to be rendered.
    fn finish(&mut self) -> usize {
        self.inner.finish()
    }

    #[getter]
    fn stopped(&self) -> bool {
        self.inner.stopped()
    }

    /// `(RELAY_FAIL_* code, detail)` once the stream failed, else None.
    #[getter]
    fn failure(&self) -> Option<(u32, String)> {
        self.inner.failure().map(|f| (f.code, f.detail.clone()))
    }

    fn begin(&mut self, response_id: &str, model: &str, created: i64, include_usage: bool) {
        self.inner.begin(response_id, model, created, include_usage);
    }

    fn render<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let out = self.inner.render().map_err(to_py)?;
        Ok(PyBytes::new(py, &out))
    }

    #[getter]
    fn ended(&self) -> bool {
        self.inner.ended()
    }

    #[getter]
    fn delivered(&self) -> usize {
        self.inner.delivered()
    }

    #[getter]
    fn text(&self) -> &str {
        self.inner.text()
    }

    /// The end's fields once it was rendered, else None.
    #[getter]
    fn end(&self) -> Option<End> {
        if !self.inner.ended() {
            return None;
        }
        let u = self.inner.usage();
        Some((
            self.inner.finish_reason(),
            u.input_tokens,
            u.output_tokens,
            u.cached_tokens,
            u.reasoning_tokens,
            self.inner.model().to_owned(),
        ))
    }
}

/// The canonical finish reason of any provider's stop reason.
#[pyfunction]
fn finish_reason(raw: &str) -> &'static str {
    relay::finish_reason(raw)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<OpenAiRelay>()?;
    m.add_function(wrap_pyfunction!(finish_reason, m)?)?;
    for (name, value) in [
        ("RELAY_FAIL_NOT_JSON", relay::FAIL_NOT_JSON),
        ("RELAY_FAIL_NOT_OBJECT", relay::FAIL_NOT_OBJECT),
        ("RELAY_FAIL_ERROR_OBJECT", relay::FAIL_ERROR_OBJECT),
        ("RELAY_FAIL_CUT", relay::FAIL_CUT),
        ("RELAY_FAIL_SHAPE", relay::FAIL_SHAPE),
    ] {
        m.add(name, value)?;
    }
    Ok(())
}
