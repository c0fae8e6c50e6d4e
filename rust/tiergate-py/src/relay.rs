//! Bindings of the `OpenAI` relays: a stream's body bytes in, the caller's frames out;
//! a completion's body read into canonical fields, and those written as the caller's body.
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBytes, PyInt};
use tiergate_core::{chatbody, completion, relay};

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

    /// `created=None` is now (`int(time.time())`, read here).
    fn begin(&mut self, response_id: &str, model: &str, created: Option<i64>, include_usage: bool) {
        let created = created.unwrap_or_else(unix_seconds);
        self.inner.begin(response_id, model, created, include_usage);
    }

    /// Name the caller's stream as a caller of the Anthropic surface: the frames are
    /// Anthropic Messages stream events (instead of `begin`'s chunks).
    fn begin_anthropic(&mut self, message_id: &str, model: &str) {
        self.inner.begin_anthropic(message_id, model);
    }

    /// `_item` is not read: the server's stream loop renders a relay's items (the relay
    /// itself) and canonical events with one call, `framer.render(item)`.
    #[pyo3(signature = (_item=None, /))]
    fn render<'py>(
        &mut self,
        py: Python<'py>,
        _item: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
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
    m.add_function(wrap_pyfunction!(render_openai_completion, m)?)?;
    m.add_function(wrap_pyfunction!(openai_chat_body, m)?)?;
    m.add_function(wrap_pyfunction!(openai_turn_body, m)?)?;
    m.add_function(wrap_pyfunction!(read_openai_completion, m)?)?;
    m.add_function(wrap_pyfunction!(openai_completion_with_head, m)?)?;
    for (name, value) in [
        ("RELAY_FAIL_NOT_JSON", relay::FAIL_NOT_JSON),
        ("RELAY_FAIL_NOT_OBJECT", relay::FAIL_NOT_OBJECT),
        ("RELAY_FAIL_ERROR_OBJECT", relay::FAIL_ERROR_OBJECT),
        ("RELAY_FAIL_CUT", relay::FAIL_CUT),
        ("RELAY_FAIL_SHAPE", relay::FAIL_SHAPE),
        ("RELAY_FAIL_TOO_LARGE", relay::FAIL_TOO_LARGE),
    ] {
        m.add(name, value)?;
    }
    m.add("RELAY_MAX_EVENT_BYTES", relay::MAX_EVENT_BYTES)?;
    Ok(())
}

/// `(text, canonical finish reason, input, output, cached, reasoning tokens, model,
/// tool calls, refusal, id)` of an `OpenAI` chat-completion body, then the `OpenAI`
/// surface's body for them from `,"model":` on (None when the core refuses to write it:
/// a total past 64 bits).
type CompletionRead<'py> = (
    Option<String>,
    String,
    i64,
    i64,
    i64,
    i64,
    String,
    Vec<completion::ToolCall>,
    Option<String>,
    String,
    Option<Bound<'py, PyBytes>>,
);

/// The fields of an `OpenAI` chat-completion body with the caller's body written from
/// them but for its head, or None when the Python parser decides.
#[pyfunction]
fn read_openai_completion<'py>(py: Python<'py>, body: &[u8]) -> Option<CompletionRead<'py>> {
    let c = completion::parse_openai_completion(body)?;
    let tail = completion::render_openai_completion_tail(&c, &c.model)
        .ok()
        .map(|t| PyBytes::new(py, &t));
    let u = c.usage;
    Some((
        c.text,
        c.finish_reason,
        u.input_tokens,
        u.output_tokens,
        u.cached_tokens,
        u.reasoning_tokens,
        c.model,
        c.tool_calls,
        c.refusal,
        c.id,
        tail,
    ))
}

/// The whole `OpenAI` surface body: its head, then `tail` from `read_openai_completion`.
/// `created=None` is now, `int(time.time())` read here (a Python call costs more than
/// the whole write).
#[pyfunction]
#[pyo3(signature = (response_id, created, tail))]
fn openai_completion_with_head<'py>(
    py: Python<'py>,
    response_id: &str,
    created: Option<i64>,
    tail: &[u8],
) -> Bound<'py, PyBytes> {
    let created = created.unwrap_or_else(unix_seconds);
    PyBytes::new(
        py,
        &completion::with_completion_head(response_id, created, tail),
    )
}

/// `int(time.time())`: whole seconds since the epoch, toward zero.
fn unix_seconds() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Before 1970: int() truncates toward zero.
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// A Python `int` that is not a `bool` (which `orjson` would write as `true`/`false`).
fn exact_int(v: &Bound<'_, PyAny>) -> PyResult<i64> {
    if v.is_exact_instance_of::<PyInt>() {
        v.extract()
    } else {
        Err(PyTypeError::new_err("token counts must be int"))
    }
}

/// The `OpenAI` surface's chat-completion body. `TypeError`, `OverflowError` or
/// `ValueError` for values `orjson` would write differently or refuse (the caller then
/// renders in Python).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (response_id, model, created, text, refusal, tool_calls, finish_reason, input_tokens, output_tokens, cached_tokens, reasoning_tokens))]
fn render_openai_completion<'py>(
    py: Python<'py>,
    response_id: &str,
    model: &str,
    created: i64,
    text: Option<String>,
    refusal: Option<String>,
    tool_calls: Vec<completion::ToolCall>,
    finish_reason: &str,
    input_tokens: &Bound<'py, PyAny>,
    output_tokens: &Bound<'py, PyAny>,
    cached_tokens: &Bound<'py, PyAny>,
    reasoning_tokens: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let c = completion::Completion {
        text,
        finish_reason: finish_reason.to_owned(),
        usage: relay::Usage {
            input_tokens: exact_int(input_tokens)?,
            output_tokens: exact_int(output_tokens)?,
            cached_tokens: exact_int(cached_tokens)?,
            reasoning_tokens: exact_int(reasoning_tokens)?,
        },
        tool_calls,
        refusal,
        ..Default::default()
    };
    let body =
        completion::render_openai_completion(&c, response_id, model, created).map_err(to_py)?;
    Ok(PyBytes::new(py, &body))
}

/// The chat body a provider is sent for plain-text `messages` (`(role, text)` pairs),
/// `rest` the JSON object of the members after the output bound. `ValueError` for a
/// `rest` that is not an object; `OverflowError` for a bound outside 64 bits.
#[pyfunction]
fn openai_chat_body<'py>(
    py: Python<'py>,
    model: &str,
    messages: Vec<(PyBackedStr, PyBackedStr)>,
    limit_key: &str,
    limit: i64,
    rest: Option<&[u8]>,
) -> PyResult<Bound<'py, PyBytes>> {
    let pairs: Vec<(&str, &str)> = messages.iter().map(|(r, t)| (&**r, &**t)).collect();
    let body =
        chatbody::write_openai_chat_body(model, &pairs, limit_key, limit, rest).map_err(to_py)?;
    Ok(PyBytes::new(py, &body))
}

/// A turn's message as `ingest_chat_request` gives it: `(role, text, calls, call_id)`.
type TurnMessage = (
    PyBackedStr,
    Option<PyBackedStr>,
    Option<Vec<(PyBackedStr, PyBackedStr, PyBackedStr)>>,
    Option<PyBackedStr>,
);

/// [`openai_chat_body`] of an agent's turn, its messages as `ingest_chat_request` read
/// them.
#[pyfunction]
fn openai_turn_body<'py>(
    py: Python<'py>,
    model: &str,
    messages: Vec<TurnMessage>,
    limit_key: &str,
    limit: i64,
    rest: Option<&[u8]>,
) -> PyResult<Bound<'py, PyBytes>> {
    let refs: Vec<chatbody::TurnMessageRef<'_>> = messages
        .iter()
        .map(|(role, text, calls, call_id)| chatbody::TurnMessageRef {
            role,
            text: text.as_deref(),
            calls: calls.as_ref().map_or_else(Vec::new, |calls| {
                calls.iter().map(|(i, n, a)| (&**i, &**n, &**a)).collect()
            }),
            call_id: call_id.as_deref(),
        })
        .collect();
    let body =
        chatbody::write_openai_turn_body(model, &refs, limit_key, limit, rest).map_err(to_py)?;
    Ok(PyBytes::new(py, &body))
}
