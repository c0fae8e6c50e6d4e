//! Binding of `tally`: request records (`tiergate.telemetry.record`) read attribute by
//! attribute into the core's plain [`RequestFacts`], counted in one call per batch; the
//! cells that changed handed back at scrape time as Python values.
use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};
use tiergate_core::tally::{AttemptFacts, Buckets, RequestFacts, Tally};

/// The attributes `names` of `obj`, in order (each name interned once per process).
macro_rules! attrs {
    ($py:expr, $obj:expr, [$($name:literal),* $(,)?]) => {
        [$($obj.getattr(intern!($py, $name))?),*]
    };
}

fn error(field: &str, what: &str) -> PyErr {
    PyTypeError::new_err(format!("request record field {field}: {what}"))
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

/// One record's attributes, held while its facts borrow their text.
struct Held<'py> {
    rec: [Bound<'py, PyAny>; 17],
    attempts: Vec<[Bound<'py, PyAny>; 4]>,
}

fn hold<'py>(py: Python<'py>, rec: &Bound<'py, PyAny>) -> PyResult<Held<'py>> {
    let attrs = attrs!(
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
    let attempts = rec
        .getattr(intern!(py, "attempts"))?
        .cast::<PyList>()
        .map_err(|_| error("attempts", "not a list"))?
        .iter()
        .map(|a| {
            Ok(attrs!(
                py,
                a,
                ["deployment", "error_class", "hedge", "cancelled"]
            ))
        })
        .collect::<PyResult<_>>()?;
    Ok(Held {
        rec: attrs,
        attempts,
    })
}

fn facts<'a>(held: &'a Held<'_>) -> PyResult<RequestFacts<'a>> {
    let [route, deployment, provider, response_model, operation, tenant, idempotency, status, error_type, stream_error, latency_ms, input_tokens, output_tokens, ttft_ms, cost_usd, fallbacks, decision_us] =
        &held.rec;
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
            .map(|[deployment, error_class, hedge, cancelled]| {
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
            .map(|r| hold(py, &r))
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
    m.add_class::<RequestTally>()?;
    for (name, value) in [
        ("TALLY_REQUESTS", tiergate_core::tally::REQUESTS),
        ("TALLY_DURATION", tiergate_core::tally::DURATION),
        ("TALLY_TOKENS", tiergate_core::tally::TOKENS),
        ("TALLY_TTFT", tiergate_core::tally::TTFT),
        ("TALLY_COST", tiergate_core::tally::COST),
        ("TALLY_FALLBACKS", tiergate_core::tally::FALLBACKS),
        ("TALLY_ATTEMPTS", tiergate_core::tally::ATTEMPTS),
        ("TALLY_HEDGES", tiergate_core::tally::HEDGES),
        ("TALLY_IDEMPOTENCY", tiergate_core::tally::IDEMPOTENCY),
        ("TALLY_DECISION", tiergate_core::tally::DECISION),
    ] {
        m.add(name, value)?;
    }
    Ok(())
}
