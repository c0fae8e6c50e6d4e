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
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use tiergate_core::{hash, policy, routes, signals, tokens, window, CoreError, ErrorKind};

mod classifier;
mod ingest;
mod relay;
mod safety;
mod slots;
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

/// Approximate `cl100k_base` prompt tokens of an Anthropic Messages body: those of the
/// chat-completions body the same request would be.
#[pyfunction]
fn estimate_anthropic_tokens(body: &[u8]) -> PyResult<u64> {
    tokens::estimate_anthropic_tokens(body).map_err(to_py)
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

/// `sum(map(len, frames))` plus the lengths of every name and value in `headers` (a
/// tuple of pairs): what a replay record holds beyond its fixed overheads. One call,
/// where Python's `sum(map(len, chain.from_iterable(headers)))` cost about 3k
/// instructions on every answer.
#[pyfunction]
fn held_len(frames: &Bound<'_, PyTuple>, headers: &Bound<'_, PyTuple>) -> PyResult<usize> {
    let mut n = 0;
    for frame in frames.iter_borrowed() {
        n += frame.len()?;
    }
    for pair in headers.iter_borrowed() {
        for item in pair.cast::<PyTuple>()?.iter_borrowed() {
            n += item.len()?;
        }
    }
    Ok(n)
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

/// `(name, allowed mask, first mask, latency budget ms, max cost USD, min quality,
/// pinned candidate)`: a route scope, `None` where the route sets nothing.
type ScopeRow = (
    String,
    u64,
    u64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<usize>,
);

#[pyclass(frozen, module = "tiergate._core")]
struct Router {
    inner: Arc<policy::Router>,
    routes: routes::Routes,
    names: Py<PyTuple>,
}

/// The feature record of one request, as the router planned it.
#[pyclass(frozen, eq, get_all, module = "tiergate._core")]
#[derive(Clone, Copy, PartialEq)]
struct PlanRequest {
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
}

type RequestArgs = (u64, u64, u64, u64, f64, f64, f64, u64, u64, u64);

impl From<policy::Request> for PlanRequest {
    fn from(r: policy::Request) -> Self {
        Self {
            required_caps: r.required_caps,
            prompt_tokens: r.prompt_tokens,
            max_output_tokens: r.max_output_tokens,
            expected_output_tokens: r.expected_output_tokens,
            latency_budget_ms: r.latency_budget_ms,
            max_cost_usd: r.max_cost_usd,
            min_quality: r.min_quality,
            allowed_mask: r.allowed_mask,
            unavailable_mask: r.unavailable_mask,
            flags: r.flags,
        }
    }
}

impl PlanRequest {
    fn core(&self) -> policy::Request {
        request(
            self.required_caps,
            self.prompt_tokens,
            self.max_output_tokens,
            self.expected_output_tokens,
            self.latency_budget_ms,
            self.max_cost_usd,
            self.min_quality,
            self.allowed_mask,
            self.unavailable_mask,
            self.flags,
        )
    }
}

#[pymethods]
impl PlanRequest {
    /// The record as `Router.plan` / `Router.explain` take it positionally.
    fn args(&self) -> RequestArgs {
        (
            self.required_caps,
            self.prompt_tokens,
            self.max_output_tokens,
            self.expected_output_tokens,
            self.latency_budget_ms,
            self.max_cost_usd,
            self.min_quality,
            self.allowed_mask,
            self.unavailable_mask,
            self.flags,
        )
    }

    fn __repr__(&self) -> String {
        format!("PlanRequest{:?}", self.args())
    }
}

/// `(deployment names best first, relaxed labels)` of a plan.
type Named<'py> = (Bound<'py, PyList>, Bound<'py, PyList>);
/// `Named` with the qualities planned with and the record planned.
type Routed<'py> = (
    Bound<'py, PyList>,
    Bound<'py, PyList>,
    Vec<f64>,
    PlanRequest,
);

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
    #[allow(clippy::too_many_arguments)]
    fn plan_indices<'py>(
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

    /// The scoped plan of `req` as names and relaxed labels (interned strings).
    fn named<'py>(
        &self,
        py: Python<'py>,
        scope: usize,
        req: &policy::Request,
        qualities: Option<&[f64]>,
        now: f64,
    ) -> PyResult<Named<'py>> {
        let plan = self
            .routes
            .plan(&self.inner, scope, req, qualities, now)
            .map_err(to_py)?;
        let names = self.names.bind(py);
        let order = PyList::new(
            py,
            plan.order
                .iter()
                .map(|&i| names.get_borrowed_item(i).map(pyo3::Borrowed::to_owned))
                .collect::<PyResult<Vec<_>>>()?,
        )?;
        let mut relaxed = Vec::with_capacity(3);
        for (bit, label) in [
            (policy::RELAX_LATENCY, intern!(py, "latency")),
            (policy::RELAX_COST, intern!(py, "cost")),
            (policy::RELAX_QUALITY, intern!(py, "quality")),
        ] {
            if plan.relaxed & bit != 0 {
                relaxed.push(label.clone());
            }
        }
        Ok((order, PyList::new(py, relaxed)?))
    }

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
    #[pyo3(signature = (candidates, window_s = 300.0, min_samples = 20, previous = None, routes = Vec::new(), flags = 0))]
    fn new(
        py: Python<'_>,
        candidates: Vec<CandidateRow>,
        window_s: f64,
        min_samples: u64,
        previous: Option<PyRef<'_, Router>>,
        routes: Vec<ScopeRow>,
        flags: u64,
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
        let scopes = routes
            .into_iter()
            .map(
                |(name, allowed, first, latency_budget_ms, max_cost_usd, min_quality, pinned)| {
                    routes::Scope {
                        name,
                        allowed,
                        first,
                        latency_budget_ms,
                        max_cost_usd,
                        min_quality,
                        pinned,
                    }
                },
            )
            .collect();
        let routes = routes::Routes::new(
            scopes,
            inner.len(),
            flags,
            previous.as_ref().map(|p| &p.routes),
        )
        .map_err(to_py)?;
        Ok(Self {
            inner: Arc::new(inner),
            routes,
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
        self.plan_indices(
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
            qualities,
            now,
        )
    }

    /// The feature record of one request on route `scope` (`Routes::request`): each
    /// setting is the header's, else the tenant's, else the route's.
    #[pyo3(signature = (scope, required_caps, prompt_tokens, max_tokens, latency_budget_ms, tenant_latency_budget_ms, max_cost_usd, tenant_max_cost_usd, min_quality, tenant_min_quality, allowed_mask, unavailable_mask = 0, now = None))]
    #[allow(clippy::too_many_arguments)]
    fn request(
        &self,
        scope: usize,
        required_caps: u64,
        prompt_tokens: u64,
        max_tokens: Option<u64>,
        latency_budget_ms: Option<f64>,
        tenant_latency_budget_ms: Option<f64>,
        max_cost_usd: Option<f64>,
        tenant_max_cost_usd: Option<f64>,
        min_quality: Option<f64>,
        tenant_min_quality: Option<f64>,
        allowed_mask: u64,
        unavailable_mask: u64,
        now: Option<f64>,
    ) -> PyResult<PlanRequest> {
        let ask = routes::Ask {
            scope,
            required_caps,
            prompt_tokens,
            max_tokens: max_tokens.unwrap_or(0),
            latency_budget_ms: [latency_budget_ms, tenant_latency_budget_ms],
            max_cost_usd: [max_cost_usd, tenant_max_cost_usd],
            min_quality: [min_quality, tenant_min_quality],
            allowed_mask,
            unavailable_mask,
        };
        let req = self
            .routes
            .request(&ask, now_or_monotonic(now))
            .map_err(to_py)?;
        Ok(req.into())
    }

    /// The plan of `request` on route `scope` with `qualities` (the priors when `None`)
    /// and `min_quality` in place of the record's floor when given: `(deployment names
    /// best first, relaxed labels, the record planned)`.
    #[pyo3(signature = (scope, request, qualities = None, min_quality = None, now = None))]
    fn route<'py>(
        &self,
        py: Python<'py>,
        scope: usize,
        request: &PlanRequest,
        qualities: Option<Vec<f64>>,
        min_quality: Option<f64>,
        now: Option<f64>,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>, PlanRequest)> {
        let mut req = request.core();
        if let Some(floor) = min_quality {
            req.min_quality = floor;
        }
        let (names, relaxed) =
            self.named(py, scope, &req, qualities.as_deref(), now_or_monotonic(now))?;
        Ok((names, relaxed, req.into()))
    }

    /// `request` and `route` in one call with the heuristic qualities of `text`, `tools`
    /// and `json_schema` (as `heuristic_qualities`): `(deployment names best first,
    /// relaxed labels, qualities, the record planned)`.
    #[pyo3(signature = (scope, required_caps, prompt_tokens, max_tokens, latency_budget_ms, tenant_latency_budget_ms, max_cost_usd, tenant_max_cost_usd, min_quality, tenant_min_quality, allowed_mask, unavailable_mask, text, tools, json_schema, now = None))]
    #[allow(clippy::too_many_arguments)]
    fn route_heuristic<'py>(
        &self,
        py: Python<'py>,
        scope: usize,
        required_caps: u64,
        prompt_tokens: u64,
        max_tokens: Option<u64>,
        latency_budget_ms: Option<f64>,
        tenant_latency_budget_ms: Option<f64>,
        max_cost_usd: Option<f64>,
        tenant_max_cost_usd: Option<f64>,
        min_quality: Option<f64>,
        tenant_min_quality: Option<f64>,
        allowed_mask: u64,
        unavailable_mask: u64,
        text: Option<&Bound<'_, PyString>>,
        tools: bool,
        json_schema: bool,
        now: Option<f64>,
    ) -> PyResult<Routed<'py>> {
        let now = now_or_monotonic(now);
        let ask = routes::Ask {
            scope,
            required_caps,
            prompt_tokens,
            max_tokens: max_tokens.unwrap_or(0),
            latency_budget_ms: [latency_budget_ms, tenant_latency_budget_ms],
            max_cost_usd: [max_cost_usd, tenant_max_cost_usd],
            min_quality: [min_quality, tenant_min_quality],
            allowed_mask,
            unavailable_mask,
        };
        let req = self.routes.request(&ask, now).map_err(to_py)?;
        let qualities = self.qualities_for(prompt_tokens, text, tools, json_schema);
        let (names, relaxed) = self.named(py, scope, &req, Some(&qualities), now)?;
        Ok((names, relaxed, qualities, req.into()))
    }

    /// Output tokens expected on route `scope`: its rolling mean, capped by
    /// `max_tokens` when given.
    #[pyo3(signature = (scope, max_tokens = None))]
    fn expected_output(&self, scope: usize, max_tokens: Option<u64>) -> PyResult<f64> {
        self.routes
            .expected_output(scope, max_tokens.unwrap_or(0))
            .map_err(to_py)
    }

    /// Hold candidate `idx` out of every plan until `until` (a `time.monotonic()`
    /// time); a later call replaces it.
    fn hold(&self, idx: usize, until: f64) -> PyResult<()> {
        self.routes.hold(idx, until).map_err(to_py)
    }

    /// Candidates held (bit i for candidate i) at `now`.
    #[pyo3(signature = (now = None))]
    fn held_mask(&self, now: Option<f64>) -> u64 {
        self.routes.held_mask(now_or_monotonic(now))
    }

    /// Feed candidate `idx`'s windows and `route`'s output mean after an answer;
    /// `ttft_ms` counts when `streamed`, else it is estimated from the prior.
    #[pyo3(signature = (route, idx, ttft_ms, total_ms, output_tokens, streamed, now = None))]
    #[allow(clippy::too_many_arguments)]
    fn observe(
        &self,
        route: &str,
        idx: usize,
        ttft_ms: Option<f64>,
        total_ms: f64,
        output_tokens: u64,
        streamed: bool,
        now: Option<f64>,
    ) -> PyResult<()> {
        let ttft = if streamed { ttft_ms } else { None };
        self.routes
            .observe(
                &self.inner,
                route,
                idx,
                ttft,
                total_ms,
                output_tokens,
                now_or_monotonic(now),
            )
            .map_err(to_py)
    }

    /// The rolling mean of output tokens on route `scope`.
    fn output_mean(&self, scope: usize) -> PyResult<f64> {
        self.routes.output_mean(scope).map_err(to_py)
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
    m.add_function(wrap_pyfunction!(estimate_anthropic_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(estimate_text_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(text_signals, m)?)?;
    m.add_function(wrap_pyfunction!(_noop, m)?)?;
    m.add_function(wrap_pyfunction!(held_len, m)?)?;
    m.add("SIG_CODE", signals::SIG_CODE)?;
    m.add("SIG_HARD", signals::SIG_HARD)?;
    m.add_class::<LatencyWindow>()?;
    m.add_class::<Router>()?;
    m.add_class::<PlanRequest>()?;
    classifier::register(m)?;
    safety::register(m)?;
    ingest::register(m)?;
    ingest::register_anthropic(m)?;
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
