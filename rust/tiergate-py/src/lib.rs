//! Python bindings for tiergate-core. Conversion and error mapping only: every
//! decision lives in the core crate so it can be tested without Python.
//!
//! Calls here take microseconds, so none releases the GIL (the release would cost more
//! than the work). `now=None` reads `CLOCK_MONOTONIC` in Rust, anchored at import to
//! Python's `time.monotonic()` (see `now_or_monotonic`), so explicit and implicit times
//! are on one clock.
// PyO3 hands `#[pymethods]` their arguments by value (extracted from Python objects).
#![allow(clippy::needless_pass_by_value)]
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use tiergate_core::{hash, policy, signals, tokens, window, CoreError, ErrorKind};

mod classifier;
mod ingest;
mod relay;
mod safety;
mod telemetry;

fn to_py(e: CoreError) -> PyErr {
    match e.kind {
        ErrorKind::InvalidInput => PyValueError::new_err(e.message),
        ErrorKind::OutOfRange => PyIndexError::new_err(e.message),
    }
}

/// `time.monotonic()` read in Rust. On Linux both Python's `time.monotonic()` and
/// `std::time::Instant` read `CLOCK_MONOTONIC`, so one anchor pair taken at import
/// (`ANCHOR`: the two read back to back) puts Rust's reads on Python's clock for good,
/// within the ~100 ns between the two reads; a call saves the Python-level lookup and
/// call of `time.monotonic` (about a microsecond under load).
static ANCHOR: OnceLock<(Instant, f64)> = OnceLock::new();

fn anchor_clock(py: Python<'_>) -> PyResult<()> {
    let t: f64 = py
        .import("time")?
        .getattr("monotonic")?
        .call0()?
        .extract()?;
    let _ = ANCHOR.set((Instant::now(), t));
    Ok(())
}

fn now_or_monotonic(now: Option<f64>) -> f64 {
    now.unwrap_or_else(|| {
        let (at, t) = ANCHOR.get_or_init(|| (Instant::now(), 0.0));
        t + at.elapsed().as_secs_f64()
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// xxh3-128 of the canonical form of a chat-completions body, tenant length-prefixed.
#[pyfunction]
#[pyo3(signature = (body, tenant = ""))]
fn request_key<'py>(py: Python<'py>, body: &[u8], tenant: &str) -> PyResult<Bound<'py, PyBytes>> {
    let key = hash::request_key(body, tenant).map_err(to_py)?;
    Ok(PyBytes::new(py, &key))
}

/// The canonical bytes `request_key` hashes (for debugging and tests).
#[pyfunction]
fn canonical_request<'py>(py: Python<'py>, body: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let c = hash::canonical_request(body).map_err(to_py)?;
    Ok(PyBytes::new(py, &c))
}

/// Approximate `cl100k_base` prompt tokens of a chat-completions body.
#[pyfunction]
fn estimate_tokens(body: &[u8]) -> PyResult<u64> {
    tokens::estimate_tokens(body).map_err(to_py)
}

/// Approximate tokens of one text, without message overhead.
#[pyfunction]
fn estimate_text_tokens(text: &str) -> u64 {
    tokens::estimate_text_tokens(text)
}

/// Difficulty signals of one prompt text: `SIG_CODE` | `SIG_HARD` bits. A lone
/// surrogate (no UTF-8 form) is read as U+FFFD: a signal is a hint, not an offset.
#[pyfunction]
fn text_signals(text: &Bound<'_, PyString>) -> u32 {
    signals::text_signals(&text.to_string_lossy())
}

/// Does nothing: the baseline of the boundary benchmark.
#[pyfunction]
fn _noop() {}

#[pyclass(frozen, module = "tiergate._core")]
struct LatencyWindow {
    inner: Mutex<window::LatencyWindow>,
}

#[pymethods]
impl LatencyWindow {
    #[new]
    #[pyo3(signature = (window_s = 300.0, buckets = 30))]
    fn new(window_s: f64, buckets: usize) -> PyResult<Self> {
        let w = window::LatencyWindow::new(window_s, buckets).map_err(to_py)?;
        Ok(Self {
            inner: Mutex::new(w),
        })
    }

    #[pyo3(signature = (value_ms, now = None))]
    fn record(&self, value_ms: f64, now: Option<f64>) -> PyResult<()> {
        let now = now_or_monotonic(now);
        lock(&self.inner).record(value_ms, now).map_err(to_py)
    }

    #[pyo3(signature = (q, now = None))]
    fn quantile(&self, q: f64, now: Option<f64>) -> PyResult<Option<f64>> {
        let now = now_or_monotonic(now);
        lock(&self.inner).quantile(q, now).map_err(to_py)
    }

    #[pyo3(signature = (now = None))]
    fn count(&self, now: Option<f64>) -> PyResult<u64> {
        let now = now_or_monotonic(now);
        lock(&self.inner).count(now).map_err(to_py)
    }

    #[getter]
    fn window_s(&self) -> f64 {
        lock(&self.inner).window_s()
    }

    #[getter]
    fn buckets(&self) -> usize {
        lock(&self.inner).buckets()
    }
}

type CandidateRow = (String, u32, f64, f64, f64, u64, u64, f64, f64, f64);
/// `(idx, failed V_* bits, predicted latency ms, expected cost USD, quality)`.
type VerdictRow = (usize, u32, f64, f64, f64);

#[pyclass(frozen, module = "tiergate._core")]
struct Router {
    inner: Arc<policy::Router>,
    names: Py<PyTuple>,
}

#[allow(clippy::too_many_arguments)]
fn request(
    required_caps: u64,
    prompt_tokens: u64,
    max_output_tokens: u64,
    expected_output_tokens: u64,
    latency_budget_ms: f64,
    max_cost_usd: f64,
    min_quality: f64,
    allowed_mask: u64,
    unavailable_mask: u64,
    flags: u64,
) -> policy::Request {
    policy::Request {
        required_caps,
        prompt_tokens,
        max_output_tokens,
        expected_output_tokens,
        latency_budget_ms,
        max_cost_usd,
        min_quality,
        allowed_mask,
        unavailable_mask,
        flags,
    }
}

impl Router {
    fn qualities_for(
        &self,
        prompt_tokens: u64,
        text: Option<&Bound<'_, PyString>>,
        tools: bool,
        json_schema: bool,
    ) -> Vec<f64> {
        let sig = text.map_or(0, |t| signals::text_signals(&t.to_string_lossy()));
        let d = signals::difficulty(prompt_tokens, sig, tools, json_schema);
        signals::heuristic_qualities(self.inner.candidates().iter().map(|c| c.quality_prior), d)
    }
}

#[pymethods]
impl Router {
    #[new]
    #[pyo3(signature = (candidates, window_s = 300.0, min_samples = 20, previous = None))]
    fn new(
        py: Python<'_>,
        candidates: Vec<CandidateRow>,
        window_s: f64,
        min_samples: u64,
        previous: Option<PyRef<'_, Router>>,
    ) -> PyResult<Self> {
        let table: Vec<policy::Candidate> = candidates
            .into_iter()
            .map(
                |(name, tier, pi, po, pc, ctx, caps, ttft, tpot, q)| policy::Candidate {
                    name,
                    tier,
                    price_in_per_mtok: pi,
                    price_out_per_mtok: po,
                    price_cached_per_mtok: pc,
                    context_window: ctx,
                    caps,
                    ttft_prior_ms: ttft,
                    tpot_prior_ms: tpot,
                    quality_prior: q,
                },
            )
            .collect();
        let prev = previous.as_ref().map(|p| Arc::clone(&p.inner));
        let inner =
            policy::Router::new(table, window_s, min_samples, prev.as_deref()).map_err(to_py)?;
        let names = PyTuple::new(py, inner.candidates().iter().map(|c| c.name.as_str()))?.unbind();
        Ok(Self {
            inner: Arc::new(inner),
            names,
        })
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    #[getter]
    fn names(&self, py: Python<'_>) -> Py<PyTuple> {
        self.names.clone_ref(py)
    }

    #[getter]
    fn window_s(&self) -> f64 {
        self.inner.window_s()
    }

    #[getter]
    fn min_samples(&self) -> u64 {
        self.inner.min_samples()
    }

    #[pyo3(signature = (idx, ttft_ms, tpot_ms, total_ms, now = None))]
    fn record(
        &self,
        idx: usize,
        ttft_ms: f64,
        tpot_ms: f64,
        total_ms: f64,
        now: Option<f64>,
    ) -> PyResult<()> {
        let now = now_or_monotonic(now);
        self.inner
            .record(idx, ttft_ms, tpot_ms, total_ms, now)
            .map_err(to_py)
    }

    #[pyo3(signature = (idx, expected_output_tokens = 0, now = None))]
    fn predicted_latency(
        &self,
        idx: usize,
        expected_output_tokens: u64,
        now: Option<f64>,
    ) -> PyResult<f64> {
        let now = now_or_monotonic(now);
        self.inner
            .predicted_latency(idx, expected_output_tokens, now)
            .map_err(to_py)
    }

    /// Each candidate's prior lowered by the request's difficulty (`signals::difficulty`
    /// of the last message's `text`, `None` for none); a lone surrogate reads as U+FFFD.
    fn heuristic_qualities(
        &self,
        prompt_tokens: u64,
        text: Option<&Bound<'_, PyString>>,
        tools: bool,
        json_schema: bool,
    ) -> Vec<f64> {
        self.qualities_for(prompt_tokens, text, tools, json_schema)
    }

    /// `plan` with `qualities` from `heuristic_qualities`, which it also returns.
    #[pyo3(signature = (required_caps, prompt_tokens, max_output_tokens, expected_output_tokens, latency_budget_ms, max_cost_usd, min_quality, allowed_mask, unavailable_mask, flags, text, tools, json_schema, now = None))]
    #[allow(clippy::too_many_arguments)]
    fn plan_heuristic<'py>(
        &self,
        py: Python<'py>,
        required_caps: u64,
        prompt_tokens: u64,
        max_output_tokens: u64,
        expected_output_tokens: u64,
        latency_budget_ms: f64,
        max_cost_usd: f64,
        min_quality: f64,
        allowed_mask: u64,
        unavailable_mask: u64,
        flags: u64,
        text: Option<&Bound<'_, PyString>>,
        tools: bool,
        json_schema: bool,
        now: Option<f64>,
    ) -> PyResult<(Bound<'py, PyTuple>, u32, Vec<f64>)> {
        let qualities = self.qualities_for(prompt_tokens, text, tools, json_schema);
        let (order, relaxed) = self.plan(
            py,
            required_caps,
            prompt_tokens,
            max_output_tokens,
            expected_output_tokens,
            latency_budget_ms,
            max_cost_usd,
            min_quality,
            allowed_mask,
            unavailable_mask,
            flags,
            Some(qualities.clone()),
            now,
        )?;
        Ok((order, relaxed, qualities))
    }

    #[pyo3(signature = (required_caps, prompt_tokens, max_output_tokens, expected_output_tokens, latency_budget_ms, max_cost_usd, min_quality, allowed_mask, unavailable_mask, flags = 0, qualities = None, now = None))]
    #[allow(clippy::too_many_arguments)]
    fn plan<'py>(
        &self,
        py: Python<'py>,
        required_caps: u64,
        prompt_tokens: u64,
        max_output_tokens: u64,
        expected_output_tokens: u64,
        latency_budget_ms: f64,
        max_cost_usd: f64,
        min_quality: f64,
        allowed_mask: u64,
        unavailable_mask: u64,
        flags: u64,
        qualities: Option<Vec<f64>>,
        now: Option<f64>,
    ) -> PyResult<(Bound<'py, PyTuple>, u32)> {
        let now = now_or_monotonic(now);
        let req = request(
            required_caps,
            prompt_tokens,
            max_output_tokens,
            expected_output_tokens,
            latency_budget_ms,
            max_cost_usd,
            min_quality,
            allowed_mask,
            unavailable_mask,
            flags,
        );
        let plan = self
            .inner
            .plan(&req, qualities.as_deref(), now)
            .map_err(to_py)?;
        Ok((PyTuple::new(py, plan.order)?, plan.relaxed))
    }

    #[pyo3(signature = (required_caps, prompt_tokens, max_output_tokens, expected_output_tokens, latency_budget_ms, max_cost_usd, min_quality, allowed_mask, unavailable_mask, flags = 0, qualities = None, now = None))]
    #[allow(clippy::too_many_arguments)]
    fn explain(
        &self,
        required_caps: u64,
        prompt_tokens: u64,
        max_output_tokens: u64,
        expected_output_tokens: u64,
        latency_budget_ms: f64,
        max_cost_usd: f64,
        min_quality: f64,
        allowed_mask: u64,
        unavailable_mask: u64,
        flags: u64,
        qualities: Option<Vec<f64>>,
        now: Option<f64>,
    ) -> PyResult<Vec<VerdictRow>> {
        let now = now_or_monotonic(now);
        let req = request(
            required_caps,
            prompt_tokens,
            max_output_tokens,
            expected_output_tokens,
            latency_budget_ms,
            max_cost_usd,
            min_quality,
            allowed_mask,
            unavailable_mask,
            flags,
        );
        let rows = self
            .inner
            .explain(&req, qualities.as_deref(), now)
            .map_err(to_py)?;
        Ok(rows
            .into_iter()
            .map(|v| {
                (
                    v.idx,
                    v.failed,
                    v.predicted_latency_ms,
                    v.expected_cost_usd,
                    v.quality,
                )
            })
            .collect())
    }

    fn __repr__(&self) -> String {
        format!(
            "Router(<{} candidates>, window_s={})",
            self.inner.len(),
            self.inner.window_s()
        )
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    anchor_clock(m.py())?;
    m.add("__version__", tiergate_core::VERSION)?;
    m.add_function(wrap_pyfunction!(request_key, m)?)?;
    m.add_function(wrap_pyfunction!(canonical_request, m)?)?;
    m.add_function(wrap_pyfunction!(estimate_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(estimate_text_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(text_signals, m)?)?;
    m.add_function(wrap_pyfunction!(_noop, m)?)?;
    m.add("SIG_CODE", signals::SIG_CODE)?;
    m.add("SIG_HARD", signals::SIG_HARD)?;
    m.add_class::<LatencyWindow>()?;
    m.add_class::<Router>()?;
    classifier::register(m)?;
    safety::register(m)?;
    ingest::register(m)?;
    relay::register(m)?;
    telemetry::register(m)?;
    m.add(
        "TRANSPORT_FIELDS",
        PyTuple::new(m.py(), hash::TRANSPORT_FIELDS)?,
    )?;
    for (name, value) in [
        ("CAP_TOOLS", policy::CAP_TOOLS),
        ("CAP_JSON_SCHEMA", policy::CAP_JSON_SCHEMA),
        ("CAP_VISION", policy::CAP_VISION),
        ("CAP_STREAMING", policy::CAP_STREAMING),
        ("FLAG_ALLOW_QUALITY_RELAX", policy::FLAG_ALLOW_QUALITY_RELAX),
    ] {
        m.add(name, value)?;
    }
    for (name, value) in [
        ("RELAX_LATENCY", policy::RELAX_LATENCY),
        ("RELAX_COST", policy::RELAX_COST),
        ("RELAX_QUALITY", policy::RELAX_QUALITY),
        ("V_CAPABILITY", policy::V_CAPABILITY),
        ("V_CONTEXT", policy::V_CONTEXT),
        ("V_UNAVAILABLE", policy::V_UNAVAILABLE),
        ("V_NOT_ALLOWED", policy::V_NOT_ALLOWED),
        ("V_LATENCY", policy::V_LATENCY),
        ("V_COST", policy::V_COST),
        ("V_QUALITY", policy::V_QUALITY),
    ] {
        m.add(name, value)?;
    }
    m.add("MAX_CANDIDATES", policy::MAX_CANDIDATES)?;
    m.add("WINDOW_RELATIVE_ACCURACY", window::RELATIVE_ACCURACY)?;
    m.add("WINDOW_MIN_VALUE_MS", window::MIN_VALUE_MS)?;
    m.add("WINDOW_MAX_VALUE_MS", window::MAX_VALUE_MS)?;
    Ok(())
}
