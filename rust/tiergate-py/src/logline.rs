//! Binding of `logline`: request records (`tiergate.telemetry.record`) read attribute by
//! attribute into the core's plain [`RequestLine`], their log lines written in one call.
use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyList, PyString};
use tiergate_core::logline::{write_line, AttemptLine, RequestLine, Value};

/// The attributes `names` of `obj`, in order (each name interned once per process).
macro_rules! attrs {
    ($py:expr, $obj:expr, [$($name:literal),* $(,)?]) => {
        [$($obj.getattr(intern!($py, $name))?),*]
    };
}

/// `obj` as a JSON scalar, as `orjson` would take it; `field` names it in the error.
fn value<'a>(obj: &'a Bound<'_, PyAny>, field: &str) -> PyResult<Value<'a>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::Str(s.to_str()?));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Value::Float(f.value()));
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(i) = obj.cast::<PyInt>() {
        if let Ok(v) = i.extract::<i64>() {
            return Ok(Value::Int(v.into()));
        }
        if let Ok(v) = i.extract::<u64>() {
            return Ok(Value::Int(v.into()));
        }
        return Err(PyTypeError::new_err(format!(
            "log line field {field}: integer exceeds 64-bit range"
        )));
    }
    Err(PyTypeError::new_err(format!(
        "log line field {field}: {} is not a JSON scalar",
        obj.get_type().name()?
    )))
}

fn list<'a, 'py>(obj: &'a Bound<'py, PyAny>, field: &str) -> PyResult<&'a Bound<'py, PyList>> {
    obj.cast::<PyList>()
        .map_err(|_| PyTypeError::new_err(format!("log line field {field}: not a list")))
}

fn text<'a>(obj: &'a Bound<'_, PyAny>, field: &str) -> PyResult<&'a str> {
    match obj.cast::<PyString>() {
        Ok(s) => s.to_str(),
        Err(_) => Err(PyTypeError::new_err(format!(
            "log line field {field}: not a str"
        ))),
    }
}

/// One attempt's line from its attributes (in `write_record`'s order).
fn attempt<'a>(attrs: &'a [Bound<'_, PyAny>; 14]) -> PyResult<AttemptLine<'a>> {
    let [dep, prov, model, start, ms, status, error, hedge, cancelled, ttft, tin, tout, cost, finish] =
        attrs;
    Ok(AttemptLine {
        deployment: value(dep, "attempts.deployment")?,
        provider: value(prov, "attempts.provider")?,
        model: value(model, "attempts.model")?,
        start_ns: value(start, "attempts.start_ns")?,
        ms: value(ms, "attempts.ms")?,
        status: value(status, "attempts.status")?,
        error_class: value(error, "attempts.error_class")?,
        hedge: value(hedge, "attempts.hedge")?,
        cancelled: value(cancelled, "attempts.cancelled")?,
        ttft_ms: value(ttft, "attempts.ttft_ms")?,
        input_tokens: value(tin, "attempts.input_tokens")?,
        output_tokens: value(tout, "attempts.output_tokens")?,
        cost_usd: value(cost, "attempts.cost_usd")?,
        finish_reason: value(finish, "attempts.finish_reason")?,
    })
}

/// Append one record's line to `out`.
// A line of reading and one of conversion per field of the record: long, not complex.
#[allow(clippy::too_many_lines)]
fn write_record(py: Python<'_>, rec: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    let [start_ns, request_id, tenant, surface, operation, route, deployment, provider, tier, response_model, status, error_type, finish_reason, stream, stream_error, attempts, fallbacks, hedged, idempotency, ttft_ms, latency_ms, input_tokens, output_tokens, cached_tokens, reasoning_tokens, cost_usd, predicted_quality, predicted_latency_ms, decision_us, decision_reason, relaxed, safety] = attrs!(
        py,
        rec,
        [
            "start_ns",
            "request_id",
            "tenant",
            "surface",
            "operation",
            "route",
            "deployment",
            "provider",
            "tier",
            "response_model",
            "status",
            "error_type",
            "finish_reason",
            "stream",
            "stream_error",
            "attempts",
            "fallbacks",
            "hedged",
            "idempotency",
            "ttft_ms",
            "latency_ms",
            "input_tokens",
            "output_tokens",
            "cached_tokens",
            "reasoning_tokens",
            "cost_usd",
            "predicted_quality",
            "predicted_latency_ms",
            "decision_us",
            "decision_reason",
            "relaxed",
            "safety",
        ]
    );
    // Every attempt's attributes are held here while the line borrows their text.
    let attempt_attrs = list(&attempts, "attempts")?
        .iter()
        .map(|a| {
            Ok(attrs!(
                py,
                a,
                [
                    "deployment",
                    "provider",
                    "model",
                    "start_ns",
                    "ms",
                    "status",
                    "error_class",
                    "hedge",
                    "cancelled",
                    "ttft_ms",
                    "input_tokens",
                    "output_tokens",
                    "cost_usd",
                    "finish_reason",
                ]
            ))
        })
        .collect::<PyResult<Vec<_>>>()?;
    let relaxed: Vec<Bound<'_, PyAny>> = list(&relaxed, "relaxed")?.iter().collect();
    let findings = list(&safety, "safety")?
        .iter()
        .map(|f| Ok(attrs!(py, f, ["kind", "action"])))
        .collect::<PyResult<Vec<_>>>()?;
    let line = RequestLine {
        start_ns: start_ns
            .extract()
            .map_err(|_| PyTypeError::new_err("log line field start_ns: not an int of 64 bits"))?,
        request_id: value(&request_id, "request_id")?,
        tenant: value(&tenant, "tenant")?,
        surface: value(&surface, "surface")?,
        operation: value(&operation, "operation")?,
        route: value(&route, "route")?,
        deployment: value(&deployment, "deployment")?,
        provider: value(&provider, "provider")?,
        tier: value(&tier, "tier")?,
        response_model: value(&response_model, "response_model")?,
        status: value(&status, "status")?,
        error_type: value(&error_type, "error_type")?,
        finish_reason: value(&finish_reason, "finish_reason")?,
        stream: value(&stream, "stream")?,
        stream_error: value(&stream_error, "stream_error")?,
        attempts: attempt_attrs.iter().map(attempt).collect::<PyResult<_>>()?,
        fallbacks: value(&fallbacks, "fallbacks")?,
        hedged: value(&hedged, "hedged")?,
        idempotency: value(&idempotency, "idempotency")?,
        ttft_ms: value(&ttft_ms, "ttft_ms")?,
        latency_ms: value(&latency_ms, "latency_ms")?,
        input_tokens: value(&input_tokens, "input_tokens")?,
        output_tokens: value(&output_tokens, "output_tokens")?,
        cached_tokens: value(&cached_tokens, "cached_tokens")?,
        reasoning_tokens: value(&reasoning_tokens, "reasoning_tokens")?,
        cost_usd: value(&cost_usd, "cost_usd")?,
        predicted_quality: value(&predicted_quality, "predicted_quality")?,
        predicted_latency_ms: value(&predicted_latency_ms, "predicted_latency_ms")?,
        decision_us: value(&decision_us, "decision_us")?,
        decision_reason: value(&decision_reason, "decision_reason")?,
        relaxed: relaxed
            .iter()
            .map(|r| value(r, "relaxed"))
            .collect::<PyResult<_>>()?,
        safety: findings
            .iter()
            .map(|[kind, action]| Ok((text(kind, "safety.kind")?, text(action, "safety.action")?)))
            .collect::<PyResult<_>>()?,
    };
    write_line(&line, out);
    Ok(())
}

/// The log lines of `records` (`RequestRecord`s), each ending with its newline; a record
/// that cannot be written raises `TypeError` naming the field, and nothing is returned.
#[pyfunction]
fn request_log_lines<'py>(
    py: Python<'py>,
    records: &Bound<'py, PyList>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::with_capacity(1024 * records.len());
    for rec in records.iter() {
        write_record(py, &rec, &mut out)?;
    }
    Ok(PyBytes::new(py, &out))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(request_log_lines, m)?)?;
    Ok(())
}
