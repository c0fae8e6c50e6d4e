//! Bindings of `logline` and `tally`: request records (`tiergate.telemetry.record`) read
//! attribute by attribute, once, into the core's plain [`RequestLine`] (the log line)
//! and [`RequestFacts`] (the metrics), a batch per call; the tally's changed cells handed
//! back at scrape time as Python values.
use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyList, PyString, PyTuple};
use tiergate_core::logline::{write_line, AttemptLine, RequestLine, Value};
use tiergate_core::tally::{self, AttemptFacts, Buckets, RequestFacts, Tally};

/// The attributes `names` of `obj`, in order (each name interned once per process):
/// read from their slots when `obj`'s type allows it (see `slots`), else by `getattr`.
macro_rules! attrs {
    ($py:expr, $obj:expr, [$($name:literal),* $(,)?]) => {{
        const N: usize = [$($name),*].len();
        thread_local! {
            static LAYOUT: crate::slots::Cache<N> = const { crate::slots::Cache::new() };
        }
        let obj: &Bound<'_, PyAny> = &$obj;
        match LAYOUT.with(|c| crate::slots::read(c, obj, || [$(intern!($py, $name).clone()),*])) {
            Some(values) => values,
            None => [$(obj.getattr(intern!($py, $name))?),*],
        }
    }};
}

fn error(field: &str, what: &str) -> PyErr {
    PyTypeError::new_err(format!("request record field {field}: {what}"))
}

/// `obj` as a JSON scalar, as `orjson` would take it; `field` names it in the error.
fn value<'a>(obj: &'a Bound<'_, PyAny>, field: &str) -> PyResult<Value<'a>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::Str(s.to_str()?));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    // Bool before int (a bool is an int), and both before float: their checks read a
    // type flag, while a float check of anything else walks the type's bases.
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
        return Err(error(field, "integer exceeds 64-bit range"));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Value::Float(f.value()));
    }
    Err(error(
        field,
        &format!("{} is not a JSON scalar", obj.get_type().name()?),
    ))
}

fn text<'a>(obj: &'a Bound<'_, PyAny>, field: &str) -> PyResult<&'a str> {
    obj.cast::<PyString>()
        .map_err(|_| error(field, "not a str"))?
        .to_str()
}

fn maybe_text<'a>(obj: &'a Bound<'_, PyAny>, field: &str) -> PyResult<Option<&'a str>> {
    if obj.is_none() {
        Ok(None)
    } else {
        text(obj, field).map(Some)
    }
}

fn int(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<i64> {
    obj.extract()
        .map_err(|_| error(field, "not an int of 64 bits"))
}

fn float(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<f64> {
    obj.extract().map_err(|_| error(field, "not a number"))
}

fn list<'a, 'py>(obj: &'a Bound<'py, PyAny>, field: &str) -> PyResult<&'a Bound<'py, PyList>> {
    obj.cast::<PyList>().map_err(|_| error(field, "not a list"))
}

/// One attempt's attributes: those the tally reads, then (for a log line) the rest.
struct HeldAttempt<'py> {
    tally: [Bound<'py, PyAny>; 4],
    line: Option<[Bound<'py, PyAny>; 10]>,
}

/// What only the log line reads of a request.
struct HeldLine<'py> {
    rest: [Bound<'py, PyAny>; 13],
    relaxed: Vec<Bound<'py, PyAny>>,
    safety: Vec<[Bound<'py, PyAny>; 2]>,
}

/// One record's attributes, each read once and held while the line and the facts
/// borrow their text.
struct Held<'py> {
    tally: [Bound<'py, PyAny>; 17],
    attempts: Vec<HeldAttempt<'py>>,
    line: Option<HeldLine<'py>>,
}

fn hold<'py>(py: Python<'py>, rec: &Bound<'py, PyAny>, line: bool) -> PyResult<Held<'py>> {
    let tally = attrs!(
        py,
        rec,
        [
            "route",
            "deployment",
            "provider",
            "response_model",
            "operation",
            "tenant",
            "idempotency",
            "status",
            "error_type",
            "stream_error",
            "latency_ms",
            "input_tokens",
            "output_tokens",
            "ttft_ms",
            "cost_usd",
            "fallbacks",
            "decision_us",
        ]
    );
    let attempts = list(&rec.getattr(intern!(py, "attempts"))?, "attempts")?
        .iter()
        .map(|a| {
            Ok(HeldAttempt {
                tally: attrs!(py, a, ["deployment", "error_class", "hedge", "cancelled"]),
                line: if line {
                    Some(attrs!(
                        py,
                        a,
                        [
                            "provider",
                            "model",
                            "start_ns",
                            "ms",
                            "status",
                            "ttft_ms",
                            "input_tokens",
                            "output_tokens",
                            "cost_usd",
                            "finish_reason",
                        ]
                    ))
                } else {
                    None
                },
            })
        })
        .collect::<PyResult<_>>()?;
    let line = if line {
        let rest = attrs!(
            py,
            rec,
            [
                "start_ns",
                "request_id",
                "surface",
                "tier",
                "finish_reason",
                "stream",
                "hedged",
                "cached_tokens",
                "reasoning_tokens",
                "predicted_quality",
                "predicted_latency_ms",
                "decision_reason",
                "relaxed",
            ]
        );
        let relaxed = list(&rest[12], "relaxed")?.iter().collect();
        let safety = list(&rec.getattr(intern!(py, "safety"))?, "safety")?
            .iter()
            .map(|f| Ok(attrs!(py, f, ["kind", "action"])))
            .collect::<PyResult<_>>()?;
        Some(HeldLine {
            rest,
            relaxed,
            safety,
        })
    } else {
        None
    };
    Ok(Held {
        tally,
        attempts,
        line,
    })
}

fn facts<'a>(held: &'a Held<'_>) -> PyResult<RequestFacts<'a>> {
    let [route, deployment, provider, response_model, operation, tenant, idempotency, status, error_type, stream_error, latency_ms, input_tokens, output_tokens, ttft_ms, cost_usd, fallbacks, decision_us] =
        &held.tally;
    Ok(RequestFacts {
        route: text(route, "route")?,
        deployment: maybe_text(deployment, "deployment")?,
        provider: maybe_text(provider, "provider")?,
        response_model: maybe_text(response_model, "response_model")?,
        operation: text(operation, "operation")?,
        tenant: text(tenant, "tenant")?,
        idempotency: text(idempotency, "idempotency")?,
        status: int(status, "status")?,
        error_type: maybe_text(error_type, "error_type")?,
        stream_error: maybe_text(stream_error, "stream_error")?,
        latency_ms: float(latency_ms, "latency_ms")?,
        input_tokens: int(input_tokens, "input_tokens")?,
        output_tokens: int(output_tokens, "output_tokens")?,
        ttft_ms: if ttft_ms.is_none() {
            None
        } else {
            Some(float(ttft_ms, "ttft_ms")?)
        },
        cost_usd: float(cost_usd, "cost_usd")?,
        fallbacks: int(fallbacks, "fallbacks")?,
        decision_us: float(decision_us, "decision_us")?,
        attempts: held
            .attempts
            .iter()
            .map(|a| {
                let [deployment, error_class, hedge, cancelled] = &a.tally;
                Ok(AttemptFacts {
                    deployment: text(deployment, "attempts.deployment")?,
                    error_class: maybe_text(error_class, "attempts.error_class")?,
                    hedge: hedge.is_truthy()?,
                    cancelled: cancelled.is_truthy()?,
                })
            })
            .collect::<PyResult<_>>()?,
    })
}

fn attempt_line<'a>(a: &'a HeldAttempt<'_>) -> PyResult<AttemptLine<'a>> {
    let [dep, error_class, hedge, cancelled] = &a.tally;
    let Some([prov, model, start, ms, status, ttft, tin, tout, cost, finish]) = &a.line else {
        return Err(error("attempts", "not read for a line"));
    };
    Ok(AttemptLine {
        deployment: value(dep, "attempts.deployment")?,
        provider: value(prov, "attempts.provider")?,
        model: value(model, "attempts.model")?,
        start_ns: value(start, "attempts.start_ns")?,
        ms: value(ms, "attempts.ms")?,
        status: value(status, "attempts.status")?,
        error_class: value(error_class, "attempts.error_class")?,
        hedge: value(hedge, "attempts.hedge")?,
        cancelled: value(cancelled, "attempts.cancelled")?,
        ttft_ms: value(ttft, "attempts.ttft_ms")?,
        input_tokens: value(tin, "attempts.input_tokens")?,
        output_tokens: value(tout, "attempts.output_tokens")?,
        cost_usd: value(cost, "attempts.cost_usd")?,
        finish_reason: value(finish, "attempts.finish_reason")?,
    })
}

fn line<'a>(held: &'a Held<'_>) -> PyResult<RequestLine<'a>> {
    let [route, deployment, provider, response_model, operation, tenant, idempotency, status, error_type, stream_error, latency_ms, input_tokens, output_tokens, ttft_ms, cost_usd, fallbacks, decision_us] =
        &held.tally;
    let Some(l) = &held.line else {
        return Err(error("request", "not read for a line"));
    };
    let [start_ns, request_id, surface, tier, finish_reason, stream, hedged, cached_tokens, reasoning_tokens, predicted_quality, predicted_latency_ms, decision_reason, _relaxed] =
        &l.rest;
    Ok(RequestLine {
        start_ns: start_ns
            .extract()
            .map_err(|_| error("start_ns", "not an int of 64 bits"))?,
        request_id: value(request_id, "request_id")?,
        tenant: value(tenant, "tenant")?,
        surface: value(surface, "surface")?,
        operation: value(operation, "operation")?,
        route: value(route, "route")?,
        deployment: value(deployment, "deployment")?,
        provider: value(provider, "provider")?,
        tier: value(tier, "tier")?,
        response_model: value(response_model, "response_model")?,
        status: value(status, "status")?,
        error_type: value(error_type, "error_type")?,
        finish_reason: value(finish_reason, "finish_reason")?,
        stream: value(stream, "stream")?,
        stream_error: value(stream_error, "stream_error")?,
        attempts: held
            .attempts
            .iter()
            .map(attempt_line)
            .collect::<PyResult<_>>()?,
        fallbacks: value(fallbacks, "fallbacks")?,
        hedged: value(hedged, "hedged")?,
        idempotency: value(idempotency, "idempotency")?,
        ttft_ms: value(ttft_ms, "ttft_ms")?,
        latency_ms: value(latency_ms, "latency_ms")?,
        input_tokens: value(input_tokens, "input_tokens")?,
        output_tokens: value(output_tokens, "output_tokens")?,
        cached_tokens: value(cached_tokens, "cached_tokens")?,
        reasoning_tokens: value(reasoning_tokens, "reasoning_tokens")?,
        cost_usd: value(cost_usd, "cost_usd")?,
        predicted_quality: value(predicted_quality, "predicted_quality")?,
        predicted_latency_ms: value(predicted_latency_ms, "predicted_latency_ms")?,
        decision_us: value(decision_us, "decision_us")?,
        decision_reason: value(decision_reason, "decision_reason")?,
        relaxed: l
            .relaxed
            .iter()
            .map(|r| value(r, "relaxed"))
            .collect::<PyResult<_>>()?,
        safety: l
            .safety
            .iter()
            .map(|[kind, action]| Ok((text(kind, "safety.kind")?, text(action, "safety.action")?)))
            .collect::<PyResult<_>>()?,
    })
}

fn value_text<'a>(v: Value<'a>, field: &str) -> PyResult<&'a str> {
    match v {
        Value::Str(s) => Ok(s),
        _ => Err(error(field, "not a str")),
    }
}

fn value_maybe_text<'a>(v: Value<'a>, field: &str) -> PyResult<Option<&'a str>> {
    match v {
        Value::Null => Ok(None),
        v => value_text(v, field).map(Some),
    }
}

/// As `int` reads the object the value came from.
fn value_int(v: Value<'_>, field: &str) -> PyResult<i64> {
    match v {
        Value::Bool(b) => Ok(i64::from(b)),
        Value::Int(i) => i64::try_from(i).map_err(|_| error(field, "not an int of 64 bits")),
        _ => Err(error(field, "not an int of 64 bits")),
    }
}

/// As `float` reads the object the value came from.
fn value_float(v: Value<'_>, field: &str) -> PyResult<f64> {
    match v {
        Value::Bool(b) => Ok(f64::from(u8::from(b))),
        Value::Int(i) => Ok(i as f64),
        Value::Float(f) => Ok(f),
        _ => Err(error(field, "not a number")),
    }
}

/// Python's truth of the object the value came from.
fn value_truth(v: Value<'_>) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => b,
        Value::Int(i) => i != 0,
        Value::Float(f) => f != 0.0,
        Value::Str(s) => !s.is_empty(),
    }
}

/// The facts the tally reads, from a line's values: what `facts` reads from the
/// objects, without converting them a second time.
fn line_facts<'a>(l: &RequestLine<'a>) -> PyResult<RequestFacts<'a>> {
    Ok(RequestFacts {
        route: value_text(l.route, "route")?,
        deployment: value_maybe_text(l.deployment, "deployment")?,
        provider: value_maybe_text(l.provider, "provider")?,
        response_model: value_maybe_text(l.response_model, "response_model")?,
        operation: value_text(l.operation, "operation")?,
        tenant: value_text(l.tenant, "tenant")?,
        idempotency: value_text(l.idempotency, "idempotency")?,
        status: value_int(l.status, "status")?,
        error_type: value_maybe_text(l.error_type, "error_type")?,
        stream_error: value_maybe_text(l.stream_error, "stream_error")?,
        latency_ms: value_float(l.latency_ms, "latency_ms")?,
        input_tokens: value_int(l.input_tokens, "input_tokens")?,
        output_tokens: value_int(l.output_tokens, "output_tokens")?,
        ttft_ms: match l.ttft_ms {
            Value::Null => None,
            v => Some(value_float(v, "ttft_ms")?),
        },
        cost_usd: value_float(l.cost_usd, "cost_usd")?,
        fallbacks: value_int(l.fallbacks, "fallbacks")?,
        decision_us: value_float(l.decision_us, "decision_us")?,
        attempts: l
            .attempts
            .iter()
            .map(|a| {
                Ok(AttemptFacts {
                    deployment: value_text(a.deployment, "attempts.deployment")?,
                    error_class: value_maybe_text(a.error_class, "attempts.error_class")?,
                    hedge: value_truth(a.hedge),
                    cancelled: value_truth(a.cancelled),
                })
            })
            .collect::<PyResult<_>>()?,
    })
}

/// The log lines of `records` (`RequestRecord`s), each ending with its newline, and,
/// given a tally, the records counted in it as well (each record read once for both).
/// A record that cannot be written or counted raises `TypeError` naming the field, and
/// then nothing is written or counted.
#[pyfunction]
#[pyo3(signature = (records, tally = None))]
fn request_log_lines<'py>(
    py: Python<'py>,
    records: &Bound<'py, PyList>,
    tally: Option<&Bound<'py, RequestTally>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let held = records
        .iter()
        .map(|r| hold(py, &r, true))
        .collect::<PyResult<Vec<_>>>()?;
    let lines = held.iter().map(line).collect::<PyResult<Vec<_>>>()?;
    if let Some(tally) = tally {
        let facts = lines.iter().map(line_facts).collect::<PyResult<Vec<_>>>()?;
        let mut tally = tally.borrow_mut();
        for f in &facts {
            tally.inner.observe(f);
        }
    }
    let mut out = Vec::with_capacity(1024 * records.len());
    for l in &lines {
        write_line(l, &mut out);
    }
    Ok(PyBytes::new(py, &out))
}

/// The request metrics (see `tiergate_core::tally`).
#[pyclass(module = "tiergate._core")]
struct RequestTally {
    inner: Tally,
}

#[pymethods]
impl RequestTally {
    #[new]
    fn new(
        routes: Vec<String>,
        deployments: Vec<String>,
        tenants: Vec<String>,
        duration_s: Vec<f64>,
        tokens: Vec<f64>,
        ttft_s: Vec<f64>,
        decision_s: Vec<f64>,
    ) -> Self {
        let buckets = Buckets {
            duration_s,
            tokens,
            ttft_s,
            decision_s,
        };
        Self {
            inner: Tally::new(routes, deployments, tenants, buckets),
        }
    }

    /// Count `records`; a record that cannot be read raises `TypeError` naming the
    /// field, and then none of the batch is counted.
    fn observe(&mut self, py: Python<'_>, records: &Bound<'_, PyList>) -> PyResult<()> {
        let held = records
            .iter()
            .map(|r| hold(py, &r, false))
            .collect::<PyResult<Vec<_>>>()?;
        let facts = held.iter().map(facts).collect::<PyResult<Vec<_>>>()?;
        for f in &facts {
            self.inner.observe(f);
        }
        Ok(())
    }

    /// `[(family, labels, values)]` for each cell changed since the last drain.
    fn drain<'py>(&mut self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        self.inner
            .drain()
            .into_iter()
            .map(|(family, at)| {
                let cell = self.inner.cell(family, at);
                let values = PyList::empty(py);
                for &count in &cell.counts {
                    values.append(count)?;
                }
                values.append(cell.total)?;
                (family, PyTuple::new(py, &cell.labels)?, values).into_pyobject(py)
            })
            .collect()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(request_log_lines, m)?)?;
    m.add_class::<RequestTally>()?;
    for (name, value) in [
        ("TALLY_REQUESTS", tally::REQUESTS),
        ("TALLY_DURATION", tally::DURATION),
        ("TALLY_TOKENS", tally::TOKENS),
        ("TALLY_TTFT", tally::TTFT),
        ("TALLY_COST", tally::COST),
        ("TALLY_FALLBACKS", tally::FALLBACKS),
        ("TALLY_ATTEMPTS", tally::ATTEMPTS),
        ("TALLY_HEDGES", tally::HEDGES),
        ("TALLY_IDEMPOTENCY", tally::IDEMPOTENCY),
        ("TALLY_DECISION", tally::DECISION),
    ] {
        m.add(name, value)?;
    }
    Ok(())
}
