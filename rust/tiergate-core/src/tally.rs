//! The metrics a finished request feeds (requests, duration, tokens, time to first
//! chunk, cost, fallbacks, attempts, hedges won and lost, idempotency, decision time),
//! tallied per series, and handed out at scrape time as the cells that changed.
//!
//! Label values are bounded as the Prometheus side wants them: routes, deployments and
//! tenants not in the config are `other`, no deployment or provider is `none`, no
//! tenant is `default`. Every cell holds its running totals (not deltas), so a cell's
//! float sum is the same sum, added in the same order, as one kept in Python.
//!
//! One kind of request (same route, deployment, provider, response model, operation,
//! tenant, idempotency outcome and status class) is a *series*: its labels are worked
//! out once and its cells found with one lookup.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher, RandomState};

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// A tally's instruments, in [`Tally::family`]'s numbering.
pub const REQUESTS: usize = 0;
pub const DURATION: usize = 1;
pub const TOKENS: usize = 2;
pub const TTFT: usize = 3;
pub const COST: usize = 4;
pub const FALLBACKS: usize = 5;
pub const ATTEMPTS: usize = 6;
pub const HEDGES: usize = 7;
pub const IDEMPOTENCY: usize = 8;
pub const DECISION: usize = 9;
const FAMILIES: usize = 10;

/// Kinds of request (and of attempt) whose cells are remembered; past this the memory
/// is forgotten, not the cells (labels are bounded, but response models and the raw
/// values a series is keyed by may not be).
const SERIES_CACHE: usize = 4096;

/// One upstream attempt, as the tally reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptFacts<'a> {
    pub deployment: &'a str,
    /// `None` (or empty) when the attempt succeeded.
    pub error_class: Option<&'a str>,
    pub hedge: bool,
    pub cancelled: bool,
}

/// What the tally reads of one finished request. Empty strings count as absent where
/// the record's Python reading does (`x or "none"`).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestFacts<'a> {
    pub route: &'a str,
    pub deployment: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub response_model: Option<&'a str>,
    pub operation: &'a str,
    pub tenant: &'a str,
    pub idempotency: &'a str,
    pub status: i64,
    pub error_type: Option<&'a str>,
    pub stream_error: Option<&'a str>,
    pub latency_ms: f64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub ttft_ms: Option<f64>,
    pub cost_usd: f64,
    pub fallbacks: i64,
    pub decision_us: f64,
    pub attempts: Vec<AttemptFacts<'a>>,
}

/// One label set's running values: a counter's total, or a histogram's count per
/// bucket (the last is +Inf) and its sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub labels: Vec<String>,
    /// Empty for a counter.
    pub counts: Vec<u64>,
    pub total: f64,
    dirty: bool,
}

#[derive(Debug, Clone)]
struct Family {
    /// Upper bounds of a histogram's buckets; `None` for a counter.
    bounds: Option<Vec<f64>>,
    index: KeyMap,
    cells: Vec<Cell>,
}

impl Family {
    fn new(bounds: Option<Vec<f64>>) -> Self {
        Self {
            bounds,
            index: KeyMap::with_hasher(KeyHash::new()),
            cells: Vec::new(),
        }
    }

    /// The index of the cell of `labels`, created (empty) on first use.
    fn cell(&mut self, labels: &[&str], scratch: &mut Vec<u8>) -> usize {
        key(scratch, labels.iter().map(|l| Some(*l)));
        if let Some(&i) = self.index.get(scratch.as_slice()) {
            return i;
        }
        let i = self.cells.len();
        self.cells.push(Cell {
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            counts: self
                .bounds
                .as_ref()
                .map_or_else(Vec::new, |b| vec![0; b.len() + 1]),
            total: 0.0,
            dirty: false,
        });
        self.index.insert(scratch.as_slice().into(), i);
        i
    }
}

/// The hash of a lookup key: xxh3 of its bytes under a seed drawn per tally (a key
/// holds caller-chosen text, the tenant, so its hash must not be guessable), at a
/// fraction of `SipHash`'s cost for keys this long.
#[derive(Debug, Clone, Copy)]
struct KeyHash(u64);

impl KeyHash {
    fn new() -> Self {
        Self(RandomState::new().hash_one(0x7469_6572_6761_7465_u64))
    }
}

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher {
            seed: self.0,
            hash: 0,
        }
    }
}

struct KeyHasher {
    seed: u64,
    hash: u64,
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.hash ^= xxh3_64_with_seed(bytes, self.seed);
    }

    /// The slice's length, which `Hash` writes first (a key's bytes hold it already).
    fn write_usize(&mut self, n: usize) {
        self.hash = self.hash.rotate_left(17) ^ n as u64;
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

type KeyMap = HashMap<Box<[u8]>, usize, KeyHash>;

/// `parts` as one lookup key: each part's presence, length and bytes.
fn key<'a>(out: &mut Vec<u8>, parts: impl IntoIterator<Item = Option<&'a str>>) {
    out.clear();
    for part in parts {
        match part {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                out.extend_from_slice(&(s.len() as u64).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
}

/// Every family's cells, and which changed since the last drain.
#[derive(Debug, Clone)]
struct Cells {
    families: [Family; FAMILIES],
    /// Cells changed since the last drain, each once, in the order they first changed.
    dirty: Vec<(usize, usize)>,
    scratch: Vec<u8>,
}

impl Cells {
    fn cell(&mut self, family: usize, labels: &[&str]) -> usize {
        self.families[family].cell(labels, &mut self.scratch)
    }

    fn touch(&mut self, family: usize, cell: usize) -> &mut Cell {
        let c = &mut self.families[family].cells[cell];
        if !c.dirty {
            c.dirty = true;
            self.dirty.push((family, cell));
        }
        c
    }

    fn add(&mut self, family: usize, cell: usize, amount: f64) {
        self.touch(family, cell).total += amount;
    }

    /// One histogram observation: the first bucket whose bound is not below `value`
    /// (Python's `bisect_left`; NaN counts in the first), and the sum.
    fn observe(&mut self, family: usize, cell: usize, value: f64) {
        let bucket = self.families[family]
            .bounds
            .as_ref()
            .map_or(0, |b| b.partition_point(|&bound| bound < value));
        let c = self.touch(family, cell);
        c.counts[bucket] += 1;
        c.total += value;
    }

    /// The cell of a `GenAI` histogram for a series' labels (and a token type), kept in
    /// `slot` once found.
    fn gen(
        &mut self,
        slot: &mut Option<usize>,
        family: usize,
        gen: &[String; 5],
        token_type: Option<&str>,
    ) -> usize {
        if let Some(cell) = *slot {
            return cell;
        }
        let mut labels: Vec<&str> = gen.iter().map(String::as_str).collect();
        labels.extend(token_type);
        let cell = self.cell(family, &labels);
        *slot = Some(cell);
        cell
    }
}

/// The routes, deployments and tenants the config names: what a label may say.
#[derive(Debug, Clone)]
struct Known {
    routes: HashSet<String>,
    deployments: HashSet<String>,
    tenants: HashSet<String>,
}

impl Known {
    fn route<'a>(&self, name: &'a str) -> &'a str {
        if self.routes.contains(name) {
            name
        } else {
            "other"
        }
    }

    fn deployment<'a>(&self, name: Option<&'a str>) -> &'a str {
        match name {
            None => "none",
            Some(n) if self.deployments.contains(n) => n,
            Some(_) => "other",
        }
    }

    fn tenant<'a>(&self, name: &'a str) -> &'a str {
        if name.is_empty() {
            "default"
        } else if self.tenants.contains(name) {
            name
        } else {
            "other"
        }
    }
}

/// The cells one kind of request updates (the optional ones found on first use).
#[derive(Debug, Clone)]
struct Series {
    route: String,
    /// operation, provider, route, deployment, response model: the `GenAI` labels.
    gen: [String; 5],
    cost_labels: [String; 3],
    requests: usize,
    duration: usize,
    tokens_in: Option<usize>,
    tokens_out: Option<usize>,
    ttft: Option<usize>,
    cost: Option<usize>,
    fallbacks: Option<usize>,
    idempotency: Option<usize>,
}

/// Histogram bucket bounds of the tally's histograms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets {
    pub duration_s: Vec<f64>,
    pub tokens: Vec<f64>,
    pub ttft_s: Vec<f64>,
    pub decision_s: Vec<f64>,
}

/// The request metrics of one process: fed finished requests, drained of the cells
/// that changed when scraped.
#[derive(Debug, Clone)]
pub struct Tally {
    known: Known,
    cells: Cells,
    /// Series by their key (see [`Tally::observe`]), as indices into `series`.
    index: KeyMap,
    series: Vec<Series>,
    /// Attempt cells by deployment, error class and cancellation.
    attempts: KeyMap,
    key: Vec<u8>,
}

impl Tally {
    /// A tally whose routes, deployments and tenants are those named (the config's).
    pub fn new(
        routes: Vec<String>,
        deployments: Vec<String>,
        tenants: Vec<String>,
        buckets: Buckets,
    ) -> Self {
        let mut bounds: [Option<Vec<f64>>; FAMILIES] = Default::default();
        bounds[DURATION] = Some(buckets.duration_s);
        bounds[TOKENS] = Some(buckets.tokens);
        bounds[TTFT] = Some(buckets.ttft_s);
        bounds[DECISION] = Some(buckets.decision_s);
        let families = bounds.map(Family::new);
        Self {
            known: Known {
                routes: routes.into_iter().collect(),
                deployments: deployments.into_iter().collect(),
                tenants: tenants.into_iter().collect(),
            },
            cells: Cells {
                families,
                dirty: Vec::new(),
                scratch: Vec::new(),
            },
            index: KeyMap::with_hasher(KeyHash::new()),
            series: Vec::new(),
            attempts: KeyMap::with_hasher(KeyHash::new()),
            key: Vec::new(),
        }
    }

    /// Count one finished request.
    pub fn observe(&mut self, r: &RequestFacts<'_>) {
        let (outcome, error_type) = outcome(r);
        key(
            &mut self.key,
            [
                Some(r.route),
                r.deployment,
                r.provider,
                r.response_model,
                Some(r.operation),
                Some(r.tenant),
                Some(r.idempotency),
                Some(outcome),
                Some(&error_type),
            ],
        );
        let at = if let Some(&at) = self.index.get(self.key.as_slice()) {
            at
        } else {
            if self.series.len() >= SERIES_CACHE {
                self.index.clear();
                self.series.clear();
            }
            let s = new_series(&self.known, &mut self.cells, r, outcome, &error_type);
            self.series.push(s);
            self.index
                .insert(self.key.as_slice().into(), self.series.len() - 1);
            self.series.len() - 1
        };
        let (s, cells) = (&mut self.series[at], &mut self.cells);
        cells.add(REQUESTS, s.requests, 1.0);
        cells.observe(DURATION, s.duration, r.latency_ms / 1000.0);
        if r.input_tokens != 0 {
            let cell = cells.gen(&mut s.tokens_in, TOKENS, &s.gen, Some("input"));
            cells.observe(TOKENS, cell, r.input_tokens as f64);
        }
        if r.output_tokens != 0 {
            let cell = cells.gen(&mut s.tokens_out, TOKENS, &s.gen, Some("output"));
            cells.observe(TOKENS, cell, r.output_tokens as f64);
        }
        if let Some(ttft_ms) = r.ttft_ms {
            let cell = cells.gen(&mut s.ttft, TTFT, &s.gen, None);
            cells.observe(TTFT, cell, ttft_ms / 1000.0);
        }
        if r.cost_usd != 0.0 {
            let [route, dep, tenant] = &s.cost_labels;
            let cell = *s
                .cost
                .get_or_insert_with(|| cells.cell(COST, &[route, dep, tenant]));
            cells.add(COST, cell, r.cost_usd);
        }
        if r.fallbacks != 0 {
            let route = &s.route;
            let cell = *s
                .fallbacks
                .get_or_insert_with(|| cells.cell(FALLBACKS, &[route]));
            cells.add(FALLBACKS, cell, r.fallbacks as f64);
        }
        for a in &r.attempts {
            attempt(&self.known, cells, &mut self.attempts, &s.route, a);
        }
        if let Some(cell) = s.idempotency {
            cells.add(IDEMPOTENCY, cell, 1.0);
        }
        if r.decision_us != 0.0 {
            let cell = cells.cell(DECISION, &[]);
            cells.observe(DECISION, cell, r.decision_us / 1e6);
        }
    }

    /// The cells that changed since the last drain, as `(family, cell)`, each once, in
    /// the order they first changed (so new cells come in the order they were made).
    pub fn drain(&mut self) -> Vec<(usize, usize)> {
        let dirty = std::mem::take(&mut self.cells.dirty);
        for &(family, cell) in &dirty {
            self.cells.families[family].cells[cell].dirty = false;
        }
        dirty
    }

    /// One cell of one family (`family` from [`REQUESTS`] to [`DECISION`]).
    pub fn cell(&self, family: usize, cell: usize) -> &Cell {
        &self.cells.families[family].cells[cell]
    }
}

fn new_series(
    known: &Known,
    cells: &mut Cells,
    r: &RequestFacts<'_>,
    outcome: &str,
    error_type: &str,
) -> Series {
    let route = known.route(r.route);
    let dep = known.deployment(r.deployment);
    let model = if r.deployment.is_some() && dep == "other" {
        "other"
    } else {
        r.response_model.filter(|m| !m.is_empty()).unwrap_or("none")
    };
    let provider = r.provider.filter(|p| !p.is_empty()).unwrap_or("none");
    let requests = cells.cell(REQUESTS, &[route, dep, outcome]);
    let duration = cells.cell(
        DURATION,
        &[r.operation, provider, route, dep, model, error_type],
    );
    let idempotency = (r.idempotency != "none").then(|| cells.cell(IDEMPOTENCY, &[r.idempotency]));
    Series {
        route: route.to_owned(),
        gen: [r.operation, provider, route, dep, model].map(str::to_owned),
        cost_labels: [route, dep, known.tenant(r.tenant)].map(str::to_owned),
        requests,
        duration,
        tokens_in: None,
        tokens_out: None,
        ttft: None,
        cost: None,
        fallbacks: None,
        idempotency,
    }
}

/// Count one attempt (and, if it was a hedge, whether it won) of a request on `route`.
fn attempt(
    known: &Known,
    cells: &mut Cells,
    remembered: &mut KeyMap,
    route: &str,
    a: &AttemptFacts<'_>,
) {
    let error_class = a.error_class.filter(|e| !e.is_empty());
    let cancelled = if a.cancelled { "1" } else { "0" };
    key(
        &mut cells.scratch,
        [Some(a.deployment), error_class, Some(cancelled)],
    );
    let cell = if let Some(&cell) = remembered.get(cells.scratch.as_slice()) {
        cell
    } else {
        if remembered.len() >= SERIES_CACHE {
            remembered.clear();
        }
        let k: Box<[u8]> = cells.scratch.as_slice().into();
        let dep = known.deployment(Some(a.deployment));
        let outcome = error_class.unwrap_or(if a.cancelled { "cancelled" } else { "ok" });
        let cell = cells.cell(ATTEMPTS, &[dep, outcome]);
        remembered.insert(k, cell);
        cell
    };
    cells.add(ATTEMPTS, cell, 1.0);
    if a.hedge {
        let dep = known.deployment(Some(a.deployment));
        let won = if a.cancelled { "lost" } else { "won" };
        let cell = cells.cell(HEDGES, &[route, dep, won]);
        cells.add(HEDGES, cell, 1.0);
    }
}

/// The request's outcome (`ok`, `client_error`, `error`) and error type (empty when
/// ok; else the error type, `stream_error`, or the status).
fn outcome<'a>(r: &RequestFacts<'a>) -> (&'static str, Cow<'a, str>) {
    if r.status < 400 && r.stream_error.is_none() {
        return ("ok", Cow::Borrowed(""));
    }
    let outcome = if r.status < 500 {
        "client_error"
    } else {
        "error"
    };
    let error_type = match (r.error_type, r.stream_error) {
        (Some(e), _) if !e.is_empty() => Cow::Borrowed(e),
        (_, Some(s)) if !s.is_empty() => Cow::Borrowed("stream_error"),
        _ => Cow::Owned(r.status.to_string()),
    };
    (outcome, error_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally() -> Tally {
        Tally::new(
            vec!["chat".into()],
            vec!["small".into(), "large".into()],
            vec!["acme".into()],
            Buckets {
                duration_s: vec![0.1, 1.0],
                tokens: vec![10.0, 100.0],
                ttft_s: vec![0.1],
                decision_s: vec![1e-5],
            },
        )
    }

    fn ok<'a>() -> RequestFacts<'a> {
        RequestFacts {
            route: "chat",
            deployment: Some("small"),
            provider: Some("openai"),
            response_model: Some("m"),
            operation: "chat",
            tenant: "acme",
            idempotency: "none",
            status: 200,
            error_type: None,
            stream_error: None,
            latency_ms: 420.0,
            input_tokens: 120,
            output_tokens: 0,
            ttft_ms: None,
            cost_usd: 0.0,
            fallbacks: 0,
            decision_us: 0.0,
            attempts: vec![],
        }
    }

    /// Every changed cell as `(family, labels, counts, total)`.
    fn drained(t: &mut Tally) -> Vec<(usize, Vec<String>, Vec<u64>, f64)> {
        t.drain()
            .into_iter()
            .map(|(f, c)| {
                let cell = t.cell(f, c);
                (f, cell.labels.clone(), cell.counts.clone(), cell.total)
            })
            .collect()
    }

    fn labels(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_request_fills_its_series_cells_once_each() {
        let mut t = tally();
        t.observe(&ok());
        t.observe(&ok());
        let cells = drained(&mut t);
        assert_eq!(
            cells,
            vec![
                (REQUESTS, labels(&["chat", "small", "ok"]), vec![], 2.0),
                (
                    DURATION,
                    labels(&["chat", "openai", "chat", "small", "m", ""]),
                    vec![0, 2, 0],
                    0.84
                ),
                (
                    TOKENS,
                    labels(&["chat", "openai", "chat", "small", "m", "input"]),
                    vec![0, 0, 2],
                    240.0
                ),
            ]
        );
        assert!(t.drain().is_empty(), "nothing changed since");
        t.observe(&ok());
        assert_eq!(drained(&mut t).len(), 3);
    }

    #[test]
    fn labels_outside_the_config_are_bounded() {
        let mut t = tally();
        let r = RequestFacts {
            route: "nope",
            deployment: Some("gone"),
            provider: None,
            response_model: Some("m"),
            tenant: "stranger",
            input_tokens: 0,
            cost_usd: 0.5,
            status: 503,
            stream_error: Some(""),
            ..ok()
        };
        t.observe(&r);
        let cells = drained(&mut t);
        assert_eq!(cells[0].1, labels(&["other", "other", "error"]));
        assert_eq!(
            cells[1].1,
            labels(&["chat", "none", "other", "other", "other", "503"])
        );
        assert_eq!(
            cells[2],
            (COST, labels(&["other", "other", "other"]), vec![], 0.5)
        );
        let none = RequestFacts {
            deployment: None,
            response_model: Some(""),
            tenant: "",
            status: 429,
            error_type: Some("rate_limited"),
            cost_usd: 1.0,
            ..ok()
        };
        t.observe(&none);
        let cells = drained(&mut t);
        assert_eq!(cells[0].1, labels(&["chat", "none", "client_error"]));
        assert_eq!(cells[1].1[4..], labels(&["none", "rate_limited"]));
        assert_eq!(cells[3].1, labels(&["chat", "none", "default"]));
    }

    #[test]
    fn attempts_and_hedges_count_by_outcome() {
        let mut t = tally();
        let hedge = |deployment, error_class, cancelled| AttemptFacts {
            deployment,
            error_class,
            hedge: true,
            cancelled,
        };
        let r = RequestFacts {
            attempts: vec![
                hedge("small", None, false),
                hedge("large", Some(""), true),
                AttemptFacts {
                    deployment: "gone",
                    error_class: Some("timeout"),
                    hedge: false,
                    cancelled: false,
                },
            ],
            fallbacks: 2,
            ..ok()
        };
        t.observe(&r);
        t.observe(&r);
        let cells: Vec<_> = drained(&mut t)
            .into_iter()
            .filter(|c| [ATTEMPTS, HEDGES, FALLBACKS].contains(&c.0))
            .map(|(f, l, _, total)| (f, l, total))
            .collect();
        assert_eq!(
            cells,
            vec![
                (FALLBACKS, labels(&["chat"]), 4.0),
                (ATTEMPTS, labels(&["small", "ok"]), 2.0),
                (HEDGES, labels(&["chat", "small", "won"]), 2.0),
                (ATTEMPTS, labels(&["large", "cancelled"]), 2.0),
                (HEDGES, labels(&["chat", "large", "lost"]), 2.0),
                (ATTEMPTS, labels(&["other", "timeout"]), 2.0),
            ]
        );
    }

    #[test]
    fn sums_are_added_in_arrival_order_and_nan_counts_in_the_first_bucket() {
        let mut t = tally();
        let values = [0.1, 0.2, 0.3, 1e-17, 7.0];
        let mut want = 0.0;
        for v in values {
            t.observe(&RequestFacts {
                ttft_ms: Some(v * 1000.0),
                ..ok()
            });
            want += v * 1000.0 / 1000.0;
        }
        t.observe(&RequestFacts {
            decision_us: f64::NAN,
            ..ok()
        });
        let cells = drained(&mut t);
        let ttft = cells.iter().find(|c| c.0 == TTFT).unwrap();
        assert_eq!(ttft.3.to_bits(), want.to_bits());
        let decision = cells.iter().find(|c| c.0 == DECISION).unwrap();
        assert_eq!(decision.2, vec![1, 0]);
        assert!(decision.3.is_nan());
    }

    #[test]
    fn forgetting_series_keeps_their_cells() {
        let mut t = tally();
        let tenants: Vec<String> = (0..SERIES_CACHE + 10).map(|i| format!("t{i}")).collect();
        for tenant in &tenants {
            t.observe(&RequestFacts {
                tenant,
                cost_usd: 1.0,
                ..ok()
            });
        }
        let cells = drained(&mut t);
        let cost: Vec<_> = cells.iter().filter(|c| c.0 == COST).collect();
        assert_eq!(cost.len(), 1);
        assert_eq!(cost[0].3.to_bits(), ((SERIES_CACHE + 10) as f64).to_bits());
        assert!(t.series.len() <= SERIES_CACHE);
    }
}
