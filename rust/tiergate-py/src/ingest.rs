//! Binding of the request side's one call into the core: a plain request's body read
//! into its fields, with its idempotency key, token estimate and required capabilities.
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use std::cell::RefCell;
use tiergate_core::ingest;
use tiergate_core::memo::{self, TextMemo, ValueMemo};
use tiergate_core::request::Role;
use tiergate_core::sampling::Sampling;
use tiergate_core::turn::{self, Span};

thread_local! {
    /// The token estimates of the texts seen lately (32 KiB; long texts and short ones,
    /// see `memo::SHORT_BYTES`): a system prompt or an earlier turn comes back with
    /// every request. Per thread, so no lock; requests run on the event loop's thread.
    static MEMO: RefCell<TextMemo<u64>> =
        RefCell::new(TextMemo::keeping(1024, memo::SHORT_BYTES));
    /// The `tools` arrays seen lately (up to 64 KiB each) with their token counts: an
    /// agent sends the same tools with every turn.
    static TOOLS: RefCell<ValueMemo<Option<u64>>> = RefCell::new(ValueMemo::new(8, 1 << 16));
    /// [`TOOLS`] of the Anthropic surface, whose tools are counted by its own rule.
    static ANTHROPIC_TOOLS: RefCell<ValueMemo<Option<u64>>> =
        RefCell::new(ValueMemo::new(8, 1 << 16));
}

/// A turn's message: `(role, text, [(id, name, arguments)] or None, tool_call_id)`.
type TurnMessage<'py> = (
    Bound<'py, PyString>,
    Option<String>,
    Option<Vec<(String, String, String)>>,
    Option<String>,
);

/// `(messages, tools, tool_choice, parallel_tool_calls, response_format)` of an agent's
/// turn, the members' values as byte ranges of the body.
type TurnFields<'py> = (
    Vec<TurnMessage<'py>>,
    Option<Span>,
    Option<Span>,
    Option<bool>,
    Option<Span>,
);

/// `(temperature, top_p, stop, seed, include_usage)` of a plain body.
type SamplingFields = (Option<f64>, Option<f64>, Vec<String>, Option<i64>, bool);

/// `(model, [(role, text)], max_tokens, stream, key, prompt_tokens, required_caps,
/// turn, sampling)`: for an agent's turn the plain messages are empty and `turn` holds
/// them.
type Fields<'py> = (
    String,
    Vec<(Bound<'py, PyString>, String)>,
    Option<i64>,
    bool,
    Option<Bound<'py, PyBytes>>,
    u64,
    u64,
    Option<TurnFields<'py>>,
    SamplingFields,
);

/// The plain request in `body` (or an agent's turn) with what the request side needs of
/// it, or None when the Python parser must read the body. `scope`: the key's scope
/// without its stream mark, or None for no key.
#[pyfunction]
fn ingest_chat_request<'py>(
    py: Python<'py>,
    body: &[u8],
    scope: Option<&str>,
) -> Option<Fields<'py>> {
    let Some(i) = MEMO.with_borrow_mut(|memo| ingest::ingest_with(body, scope, memo)) else {
        return ingest_turn(py, body, scope);
    };
    let r = i.request;
    let messages = r
        .messages
        .into_iter()
        .map(|(role, text)| (role_name(py, role), text))
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
        None,
        sampling_fields(r.sampling),
    ))
}

fn ingest_turn<'py>(py: Python<'py>, body: &[u8], scope: Option<&str>) -> Option<Fields<'py>> {
    let i = MEMO.with_borrow_mut(|memo| {
        TOOLS.with_borrow_mut(|tools| ingest::ingest_turn_with(body, scope, memo, tools))
    })?;
    let t = i.turn;
    let messages = turn_messages(py, t.messages);
    let key = i.key.map(|k| PyBytes::new(py, &k));
    Some((
        t.model,
        Vec::new(),
        t.max_tokens,
        t.stream,
        key,
        i.prompt_tokens,
        i.required_caps,
        Some((
            messages,
            t.tools,
            t.tool_choice,
            t.parallel_tool_calls,
            t.response_format,
        )),
        sampling_fields(t.sampling),
    ))
}

/// A turn's messages as Python tuples (see [`TurnMessage`]).
fn turn_messages(py: Python<'_>, messages: Vec<turn::TurnMessage>) -> Vec<TurnMessage<'_>> {
    messages
        .into_iter()
        .map(|m| {
            let calls = (!m.calls.is_empty()).then(|| {
                m.calls
                    .into_iter()
                    .map(|c| {
                        let arguments = c.arguments_or_empty_object().to_owned();
                        (c.id, c.name, arguments)
                    })
                    .collect()
            });
            (role_name(py, m.role), m.text, calls, m.call_id)
        })
        .collect()
}

fn sampling_fields(s: Sampling) -> SamplingFields {
    (s.temperature, s.top_p, s.stop, s.seed, s.include_usage)
}

/// The role's canonical name as a Python string made once per process (a `&str` is
/// converted, and interned, on every call).
fn role_name(py: Python<'_>, role: Role) -> Bound<'_, PyString> {
    match role.name() {
        "system" => intern!(py, "system").clone(),
        "user" => intern!(py, "user").clone(),
        "tool" => intern!(py, "tool").clone(),
        _ => intern!(py, "assistant").clone(),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(ingest_chat_request, m)?)?;
    Ok(())
}

/// `(messages, tools, tool_choice)` of an Anthropic agent's turn, the members' values as
/// byte ranges of the body.
type AnthropicTurnFields<'py> = (Vec<TurnMessage<'py>>, Option<Span>, Option<Span>);

/// `(model, [(role, text)], sizes, max_tokens, temperature, top_p, stop, stream, key,
/// prompt_tokens, required_caps, turn)` of an Anthropic body; `sizes`: the number of
/// texts of each message, `None` when each is one. For an agent's turn the texts are
/// empty and `turn` holds the messages.
type AnthropicFields<'py> = (
    String,
    Vec<(Bound<'py, PyString>, String)>,
    Option<Vec<usize>>,
    i64,
    Option<f64>,
    Option<f64>,
    Vec<String>,
    bool,
    Option<Bound<'py, PyBytes>>,
    u64,
    u64,
    Option<AnthropicTurnFields<'py>>,
);

/// The plain Anthropic Messages request in `body` (or an agent's turn) with what the
/// request side needs of it, or None when the Python parser must read the body.
/// `scope`: the key's scope without its stream mark, or None for no key.
#[pyfunction]
fn ingest_anthropic_request<'py>(
    py: Python<'py>,
    body: &[u8],
    scope: Option<&str>,
) -> Option<AnthropicFields<'py>> {
    let Some(i) = MEMO.with_borrow_mut(|memo| {
        tiergate_core::anthropic_request::ingest_anthropic_with(body, scope, memo)
    }) else {
        return ingest_anthropic_turn(py, body, scope);
    };
    let r = i.request;
    let texts = r
        .texts
        .into_iter()
        .map(|(role, text)| (role_name(py, role), text))
        .collect();
    let sizes = (!r.sizes.is_empty()).then_some(r.sizes);
    let key = i.key.map(|k| PyBytes::new(py, &k));
    Some((
        r.model,
        texts,
        sizes,
        r.max_tokens,
        r.temperature,
        r.top_p,
        r.stop,
        r.stream,
        key,
        i.prompt_tokens,
        i.required_caps,
        None,
    ))
}

fn ingest_anthropic_turn<'py>(
    py: Python<'py>,
    body: &[u8],
    scope: Option<&str>,
) -> Option<AnthropicFields<'py>> {
    let i = MEMO.with_borrow_mut(|memo| {
        ANTHROPIC_TOOLS.with_borrow_mut(|tools| {
            tiergate_core::anthropic_turn::ingest_anthropic_turn_with(body, scope, memo, tools)
        })
    })?;
    let t = i.turn;
    let key = i.key.map(|k| PyBytes::new(py, &k));
    Some((
        t.model,
        Vec::new(),
        None,
        t.max_tokens,
        t.temperature,
        t.top_p,
        t.stop,
        t.stream,
        key,
        i.prompt_tokens,
        i.required_caps,
        Some((turn_messages(py, t.messages), t.tools, t.tool_choice)),
    ))
}

/// A token count as `orjson` writes it: an `int` (not a `bool`, which it writes as
/// `true`) within 64 bits; `TypeError` or `OverflowError` otherwise.
fn count(v: &Bound<'_, PyAny>) -> PyResult<i64> {
    if v.is_exact_instance_of::<pyo3::types::PyInt>() {
        v.extract()
    } else {
        Err(pyo3::exceptions::PyTypeError::new_err(
            "token counts must be int",
        ))
    }
}

/// The Anthropic surface's message for a text answer (`render_anthropic_message`'s,
/// written as `orjson` writes it). `TypeError`, `OverflowError` or `ValueError` for
/// values `orjson` would write otherwise or refuse (the caller then renders in Python).
#[pyfunction]
#[allow(clippy::too_many_arguments)] // the answer's fields, as render_openai_completion takes them
fn render_anthropic_message<'py>(
    py: Python<'py>,
    message_id: &str,
    model: &str,
    text: Option<&str>,
    stop_reason: &str,
    input_tokens: &Bound<'py, PyAny>,
    output_tokens: &Bound<'py, PyAny>,
    cached_tokens: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    use tiergate_core::anthropic_message;
    let usage = anthropic_message::Usage {
        input_tokens: count(input_tokens)?,
        output_tokens: count(output_tokens)?,
        cached_tokens: count(cached_tokens)?,
    };
    let body =
        anthropic_message::render_anthropic_message(message_id, model, text, stop_reason, usage);
    Ok(PyBytes::new(py, &body))
}

pub fn register_anthropic(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(ingest_anthropic_request, m)?)?;
    m.add_function(wrap_pyfunction!(render_anthropic_message, m)?)?;
    Ok(())
}
