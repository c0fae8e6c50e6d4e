//! Candidate scoring: a [`Router`] is compiled once from the candidate table and asked,
//! per request, for a ranked plan (DESIGN.md §3).
//!
//! # Per candidate
//! * hard constraints (never relaxed): capabilities (`caps & required == required`),
//!   context (`context_window >= prompt_tokens + max_output_tokens`), available (bit
//!   clear in `unavailable_mask`), allowed (bit set in `allowed_mask`);
//! * predicted latency = p95 TTFT + `expected_output_tokens` × p50 time per output
//!   token, each from its window once that window holds `min_samples`, else the prior;
//! * expected cost = `prompt_tokens × price_in / 1e6 + expected_output_tokens ×
//!   price_out / 1e6` (USD; `price_cached` is carried for callers but not used yet);
//! * quality = the per-request override when given, else the prior.
//!
//! # Plan
//! A budget or ceiling that is ≤ 0 or infinite is no constraint; `min_quality ≤ 0` is
//! none. Candidates meeting every constraint come first, by (expected cost, predicted
//! latency, index). Then the fallback chain: the primary's same-tier siblings, then each
//! higher tier in ascending rank, each group filtered by the hard constraints and the
//! quality floor (not by latency or cost) and sorted the same way; no duplicates.
//! When no candidate meets every constraint, latency is relaxed first
//! ([`RELAX_LATENCY`]), then cost ([`RELAX_COST`]), then quality ([`RELAX_QUALITY`]) only
//! when `flags & FLAG_ALLOW_QUALITY_RELAX`; if nothing is left the plan is empty and
//! `relaxed` says what was tried.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::{CoreError, Result};
use crate::window::LatencyWindow;

pub const CAP_TOOLS: u64 = 1;
pub const CAP_JSON_SCHEMA: u64 = 2;
pub const CAP_VISION: u64 = 4;
pub const CAP_STREAMING: u64 = 8;

pub const RELAX_LATENCY: u32 = 1;
pub const RELAX_COST: u32 = 2;
pub const RELAX_QUALITY: u32 = 4;

pub const FLAG_ALLOW_QUALITY_RELAX: u64 = 1;

pub const V_CAPABILITY: u32 = 1;
pub const V_CONTEXT: u32 = 2;
pub const V_UNAVAILABLE: u32 = 4;
pub const V_NOT_ALLOWED: u32 = 8;
pub const V_LATENCY: u32 = 16;
pub const V_COST: u32 = 32;
pub const V_QUALITY: u32 = 64;

/// Most candidates a router holds (masks are `u64`).
pub const MAX_CANDIDATES: usize = 64;
/// Default minimum samples before a window replaces its prior.
pub const DEFAULT_MIN_SAMPLES: u64 = 20;
/// Time buckets per candidate window.
pub const ROUTER_WINDOW_BUCKETS: usize = 30;

/// One deployment as the router sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub name: String,
    /// 0 = smallest tier, ascending.
    pub tier: u32,
    pub price_in_per_mtok: f64,
    pub price_out_per_mtok: f64,
    pub price_cached_per_mtok: f64,
    pub context_window: u64,
    pub caps: u64,
    pub ttft_prior_ms: f64,
    pub tpot_prior_ms: f64,
    pub quality_prior: f64,
}

/// The envelope of one request, as plain numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Request {
    pub required_caps: u64,
    pub prompt_tokens: u64,
    pub max_output_tokens: u64,
    pub expected_output_tokens: u64,
    pub latency_budget_ms: f64,
    pub max_cost_usd: f64,
    pub min_quality: f64,
    pub allowed_mask: u64,
    pub unavailable_mask: u64,
    pub flags: u64,
}

/// One row of [`Router::explain`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    pub idx: usize,
    /// `V_*` bits of the constraints that failed.
    pub failed: u32,
    pub predicted_latency_ms: f64,
    pub expected_cost_usd: f64,
    pub quality: f64,
}

/// A ranked plan: candidate indices, best first, and the `RELAX_*` bits that had to give.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub order: Vec<usize>,
    pub relaxed: u32,
}

/// The latency windows of one candidate, with the last estimate cached until a window
/// changes.
#[derive(Debug)]
pub struct CandidateWindows {
    pub ttft: LatencyWindow,
    pub tpot: LatencyWindow,
    pub total: LatencyWindow,
    cache: Option<(u64, u64, Estimate)>,
}

#[derive(Clone, Copy, Debug)]
struct Estimate {
    ttft_p95: Option<f64>,
    tpot_p50: Option<f64>,
}

impl CandidateWindows {
    pub fn new(window_s: f64) -> Result<Self> {
        Ok(Self {
            ttft: LatencyWindow::new(window_s, ROUTER_WINDOW_BUCKETS)?,
            tpot: LatencyWindow::new(window_s, ROUTER_WINDOW_BUCKETS)?,
            total: LatencyWindow::new(window_s, ROUTER_WINDOW_BUCKETS)?,
            cache: None,
        })
    }

    fn estimate(&mut self, now: f64, min_samples: u64) -> Result<Estimate> {
        self.ttft.advance(now)?;
        self.tpot.advance(now)?;
        let key = (self.ttft.generation(), self.tpot.generation());
        if let Some((a, b, e)) = self.cache {
            if (a, b) == key {
                return Ok(e);
            }
        }
        let pick = |w: &LatencyWindow, q: f64| {
            if w.count_current() >= min_samples.max(1) {
                w.quantile_current(q)
            } else {
                None
            }
        };
        let e = Estimate {
            ttft_p95: pick(&self.ttft, 0.95),
            tpot_p50: pick(&self.tpot, 0.5),
        };
        self.cache = Some((key.0, key.1, e));
        Ok(e)
    }
}

type SharedWindows = Arc<Mutex<CandidateWindows>>;

fn lock(w: &SharedWindows) -> MutexGuard<'_, CandidateWindows> {
    // A panic while holding the lock cannot leave the windows half-updated in a way
    // that matters for routing; keep serving.
    w.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Compiled candidate table plus live per-candidate latency windows.
#[derive(Debug)]
pub struct Router {
    candidates: Vec<Candidate>,
    windows: Vec<SharedWindows>,
    window_s: f64,
    min_samples: u64,
    /// `(tier, mask of its candidates)`, ascending tier.
    tiers: Vec<(u32, u64)>,
}

fn finite_nonneg(x: f64, what: &str, name: &str) -> Result<()> {
    if x.is_finite() && x >= 0.0 {
        Ok(())
    } else {
        Err(CoreError::invalid(format!(
            "candidate {name:?}: {what} must be finite and >= 0, got {x}"
        )))
    }
}

fn active_limit(x: f64, what: &str) -> Result<Option<f64>> {
    if x.is_nan() {
        return Err(CoreError::invalid(format!("{what} must not be NaN")));
    }
    Ok((x > 0.0 && x.is_finite()).then_some(x))
}

struct Scored {
    hard_ok: u64,
    soft_ok: [u64; 3], // latency, cost, quality
    latency: [f64; MAX_CANDIDATES],
    cost: [f64; MAX_CANDIDATES],
}

impl Router {
    /// Compile a router. Windows of candidates whose name is in `previous` (with the
    /// same `window_s`) are shared with it, so a reload keeps what was measured.
    pub fn new(
        candidates: Vec<Candidate>,
        window_s: f64,
        min_samples: u64,
        previous: Option<&Router>,
    ) -> Result<Self> {
        if candidates.len() > MAX_CANDIDATES {
            return Err(CoreError::invalid(format!(
                "at most {MAX_CANDIDATES} candidates, got {}",
                candidates.len()
            )));
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, c) in candidates.iter().enumerate() {
            if names.insert(c.name.as_str(), i).is_some() {
                return Err(CoreError::invalid(format!(
                    "duplicate candidate name {:?}",
                    c.name
                )));
            }
            finite_nonneg(c.price_in_per_mtok, "price_in_per_mtok", &c.name)?;
            finite_nonneg(c.price_out_per_mtok, "price_out_per_mtok", &c.name)?;
            finite_nonneg(c.price_cached_per_mtok, "price_cached_per_mtok", &c.name)?;
            finite_nonneg(c.ttft_prior_ms, "ttft_prior_ms", &c.name)?;
            finite_nonneg(c.tpot_prior_ms, "tpot_prior_ms", &c.name)?;
            finite_nonneg(c.quality_prior, "quality_prior", &c.name)?;
        }
        LatencyWindow::new(window_s, ROUTER_WINDOW_BUCKETS)?;
        let reuse = previous.filter(|p| p.window_s.to_bits() == window_s.to_bits());
        let mut shared = Vec::with_capacity(candidates.len());
        for c in &candidates {
            let old = reuse.and_then(|p| p.index_of(&c.name).map(|i| Arc::clone(&p.windows[i])));
            shared.push(match old {
                Some(w) => w,
                None => Arc::new(Mutex::new(CandidateWindows::new(window_s)?)),
            });
        }
        let mut tiers: Vec<(u32, u64)> = Vec::new();
        for (i, c) in candidates.iter().enumerate() {
            match tiers.iter_mut().find(|(t, _)| *t == c.tier) {
                Some((_, m)) => *m |= 1 << i,
                None => tiers.push((c.tier, 1 << i)),
            }
        }
        tiers.sort_unstable_by_key(|&(t, _)| t);
        Ok(Self {
            candidates,
            windows: shared,
            window_s,
            min_samples,
            tiers,
        })
    }

    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    pub fn window_s(&self) -> f64 {
        self.window_s
    }

    pub fn min_samples(&self) -> u64 {
        self.min_samples
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.candidates.iter().position(|c| c.name == name)
    }

    /// The shared windows of candidate `idx` (for a router that wants them directly).
    pub fn windows(&self, idx: usize) -> Result<&Arc<Mutex<CandidateWindows>>> {
        self.windows.get(idx).ok_or_else(|| self.out_of_range(idx))
    }

    fn out_of_range(&self, idx: usize) -> CoreError {
        CoreError::out_of_range(format!(
            "candidate index {idx} out of range (have {})",
            self.len()
        ))
    }

    /// Record one finished attempt. `ttft_ms` and `total_ms` must be finite and ≥ 0;
    /// a NaN or negative `tpot_ms` means "unknown" and skips that window.
    pub fn record(
        &self,
        idx: usize,
        ttft_ms: f64,
        tpot_ms: f64,
        total_ms: f64,
        now: f64,
    ) -> Result<()> {
        let w = self.windows(idx)?;
        let mut g = lock(w);
        // Validate all before touching any window.
        if !(ttft_ms.is_finite() && ttft_ms >= 0.0 && total_ms.is_finite() && total_ms >= 0.0) {
            return Err(CoreError::invalid(format!(
                "ttft_ms and total_ms must be finite and >= 0, got {ttft_ms} and {total_ms}"
            )));
        }
        if !now.is_finite() {
            return Err(CoreError::invalid(format!("now must be finite, got {now}")));
        }
        g.ttft.record(ttft_ms, now)?;
        g.total.record(total_ms, now)?;
        if tpot_ms.is_finite() && tpot_ms >= 0.0 {
            g.tpot.record(tpot_ms, now)?;
        }
        Ok(())
    }

    /// Predicted latency (ms) of candidate `idx` for `expected_output_tokens`.
    pub fn predicted_latency(
        &self,
        idx: usize,
        expected_output_tokens: u64,
        now: f64,
    ) -> Result<f64> {
        let w = self.windows(idx)?;
        let e = lock(w).estimate(now, self.min_samples)?;
        Ok(self.combine(idx, e, expected_output_tokens))
    }

    fn combine(&self, idx: usize, e: Estimate, expected_output_tokens: u64) -> f64 {
        let c = &self.candidates[idx];
        e.ttft_p95.unwrap_or(c.ttft_prior_ms)
            + expected_output_tokens as f64 * e.tpot_p50.unwrap_or(c.tpot_prior_ms)
    }

    fn cost(&self, idx: usize, req: &Request) -> f64 {
        let c = &self.candidates[idx];
        req.prompt_tokens as f64 * c.price_in_per_mtok / 1e6
            + req.expected_output_tokens as f64 * c.price_out_per_mtok / 1e6
    }

    fn hard_failures(&self, idx: usize, req: &Request) -> u32 {
        let c = &self.candidates[idx];
        let bit = 1u64 << idx;
        let mut failed = 0;
        if c.caps & req.required_caps != req.required_caps {
            failed |= V_CAPABILITY;
        }
        if c.context_window < req.prompt_tokens.saturating_add(req.max_output_tokens) {
            failed |= V_CONTEXT;
        }
        if req.unavailable_mask & bit != 0 {
            failed |= V_UNAVAILABLE;
        }
        if req.allowed_mask & bit == 0 {
            failed |= V_NOT_ALLOWED;
        }
        failed
    }

    fn qualities<'a>(&'a self, qualities: Option<&'a [f64]>) -> Result<QualitySource<'a>> {
        match qualities {
            None => Ok(QualitySource::Prior(&self.candidates)),
            Some(q) if q.len() == self.len() => {
                if let Some(bad) = q.iter().find(|x| x.is_nan()) {
                    return Err(CoreError::invalid(format!(
                        "qualities must not be NaN, got {bad}"
                    )));
                }
                Ok(QualitySource::Given(q))
            }
            Some(q) => Err(CoreError::invalid(format!(
                "qualities has {} entries, the router has {} candidates",
                q.len(),
                self.len()
            ))),
        }
    }

    fn score(
        &self,
        req: &Request,
        qualities: Option<&[f64]>,
        now: f64,
        all: bool,
    ) -> Result<Scored> {
        let budget = active_limit(req.latency_budget_ms, "latency_budget_ms")?;
        let ceiling = active_limit(req.max_cost_usd, "max_cost_usd")?;
        if req.min_quality.is_nan() {
            return Err(CoreError::invalid("min_quality must not be NaN"));
        }
        if !now.is_finite() {
            return Err(CoreError::invalid(format!("now must be finite, got {now}")));
        }
        let quality = self.qualities(qualities)?;
        let mut s = Scored {
            hard_ok: 0,
            soft_ok: [0; 3],
            latency: [0.0; MAX_CANDIDATES],
            cost: [0.0; MAX_CANDIDATES],
        };
        for i in 0..self.len() {
            let hard_ok = self.hard_failures(i, req) == 0;
            if !(hard_ok || all) {
                continue;
            }
            let bit = 1u64 << i;
            if hard_ok {
                s.hard_ok |= bit;
            }
            let e = lock(&self.windows[i]).estimate(now, self.min_samples)?;
            let lat = self.combine(i, e, req.expected_output_tokens);
            let cost = self.cost(i, req);
            s.latency[i] = lat;
            s.cost[i] = cost;
            if budget.is_none_or(|b| lat <= b) {
                s.soft_ok[0] |= bit;
            }
            if ceiling.is_none_or(|c| cost <= c) {
                s.soft_ok[1] |= bit;
            }
            if req.min_quality <= 0.0 || quality.get(i) >= req.min_quality {
                s.soft_ok[2] |= bit;
            }
        }
        Ok(s)
    }

    /// The ranked plan for one request.
    pub fn plan(&self, req: &Request, qualities: Option<&[f64]>, now: f64) -> Result<Plan> {
        let s = self.score(req, qualities, now, false)?;
        let [lat_ok, cost_ok, q_ok] = s.soft_ok;
        let allow_q = req.flags & FLAG_ALLOW_QUALITY_RELAX != 0;
        let steps: [(u32, u64); 4] = [
            (0, lat_ok & cost_ok & q_ok),
            (RELAX_LATENCY, cost_ok & q_ok),
            (RELAX_LATENCY | RELAX_COST, q_ok),
            (RELAX_LATENCY | RELAX_COST | RELAX_QUALITY, u64::MAX),
        ];
        let mut relaxed = 0;
        let mut primary = 0u64;
        for (i, &(bits, soft)) in steps.iter().enumerate() {
            if i == 3 && !allow_q {
                break;
            }
            relaxed = bits;
            primary = s.hard_ok & soft;
            if primary != 0 {
                break;
            }
        }
        let mut plan = Plan {
            order: Vec::with_capacity(self.len()),
            relaxed,
        };
        if primary == 0 {
            return Ok(plan);
        }
        Self::push_sorted(&s, primary, &mut plan.order);
        let first = plan.order[0];
        let floor_ok = if relaxed & RELAX_QUALITY != 0 {
            u64::MAX
        } else {
            q_ok
        };
        let mut pool = s.hard_ok & floor_ok & !primary;
        let tier = self.candidates[first].tier;
        for &(t, mask) in &self.tiers {
            if t == tier {
                Self::push_sorted(&s, pool & mask, &mut plan.order);
                pool &= !mask;
            }
        }
        for &(t, mask) in &self.tiers {
            if t > tier {
                Self::push_sorted(&s, pool & mask, &mut plan.order);
            }
        }
        Ok(plan)
    }

    fn push_sorted(s: &Scored, mut mask: u64, out: &mut Vec<usize>) {
        let start = out.len();
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            out.push(i);
        }
        out[start..].sort_unstable_by(|&a, &b| {
            s.cost[a]
                .total_cmp(&s.cost[b])
                .then(s.latency[a].total_cmp(&s.latency[b]))
                .then(a.cmp(&b))
        });
    }

    /// Every candidate with the constraints it fails (no relaxation applied).
    pub fn explain(
        &self,
        req: &Request,
        qualities: Option<&[f64]>,
        now: f64,
    ) -> Result<Vec<Verdict>> {
        let s = self.score(req, qualities, now, true)?;
        let quality = self.qualities(qualities)?;
        let soft_bits = [V_LATENCY, V_COST, V_QUALITY];
        Ok((0..self.len())
            .map(|i| {
                let mut failed = self.hard_failures(i, req);
                for (mask, bit) in s.soft_ok.iter().zip(soft_bits) {
                    if mask & (1 << i) == 0 {
                        failed |= bit;
                    }
                }
                Verdict {
                    idx: i,
                    failed,
                    predicted_latency_ms: s.latency[i],
                    expected_cost_usd: s.cost[i],
                    quality: quality.get(i),
                }
            })
            .collect())
    }
}

enum QualitySource<'a> {
    Prior(&'a [Candidate]),
    Given(&'a [f64]),
}

impl QualitySource<'_> {
    fn get(&self, i: usize) -> f64 {
        match self {
            Self::Prior(c) => c[i].quality_prior,
            Self::Given(q) => q[i],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(name: &str, tier: u32, price: f64, ttft: f64, quality: f64) -> Candidate {
        Candidate {
            name: name.into(),
            tier,
            price_in_per_mtok: price,
            price_out_per_mtok: price * 4.0,
            price_cached_per_mtok: price / 10.0,
            context_window: 128_000,
            caps: CAP_TOOLS | CAP_STREAMING,
            ttft_prior_ms: ttft,
            tpot_prior_ms: 10.0,
            quality_prior: quality,
        }
    }

    fn table() -> Vec<Candidate> {
        vec![
            cand("small-a", 0, 0.15, 300.0, 0.6),
            cand("small-b", 0, 0.20, 200.0, 0.62),
            cand("mid", 1, 1.0, 400.0, 0.8),
            cand("large", 2, 5.0, 800.0, 0.9),
        ]
    }

    fn req() -> Request {
        Request {
            prompt_tokens: 1000,
            max_output_tokens: 500,
            expected_output_tokens: 100,
            allowed_mask: u64::MAX,
            ..Request::default()
        }
    }

    #[test]
    fn cheapest_first_then_fallbacks() {
        let r = Router::new(table(), 300.0, 20, None).unwrap();
        let p = r.plan(&req(), None, 0.0).unwrap();
        assert_eq!(
            p,
            Plan {
                order: vec![0, 1, 2, 3],
                relaxed: 0
            }
        );
        // a quality floor keeps the small tier out of the chain entirely
        let p = r
            .plan(
                &Request {
                    min_quality: 0.7,
                    ..req()
                },
                None,
                0.0,
            )
            .unwrap();
        assert_eq!(p.order, vec![2, 3]);
        // a latency budget only mid meets: small tier is below it, not a fallback
        let p = r.plan(
            &Request {
                latency_budget_ms: 1500.0,
                min_quality: 0.7,
                ..req()
            },
            None,
            0.0,
        );
        assert_eq!(p.unwrap().order, vec![2, 3]);
    }

    #[test]
    fn relaxes_latency_then_cost_never_quality_silently() {
        let r = Router::new(table(), 300.0, 20, None).unwrap();
        let p = r
            .plan(
                &Request {
                    latency_budget_ms: 1.0,
                    ..req()
                },
                None,
                0.0,
            )
            .unwrap();
        assert_eq!(p.relaxed, RELAX_LATENCY);
        assert_eq!(p.order[0], 0);
        let p = r
            .plan(
                &Request {
                    latency_budget_ms: 1.0,
                    max_cost_usd: 1e-9,
                    ..req()
                },
                None,
                0.0,
            )
            .unwrap();
        assert_eq!(p.relaxed, RELAX_LATENCY | RELAX_COST);
        let q = Request {
            min_quality: 0.99,
            ..req()
        };
        let p = r.plan(&q, None, 0.0).unwrap();
        assert_eq!(
            p,
            Plan {
                order: vec![],
                relaxed: RELAX_LATENCY | RELAX_COST
            }
        );
        let p = r
            .plan(
                &Request {
                    flags: FLAG_ALLOW_QUALITY_RELAX,
                    ..q
                },
                None,
                0.0,
            )
            .unwrap();
        assert_eq!(p.relaxed, 7);
        assert_eq!(p.order, vec![0, 1, 2, 3]);
    }

    #[test]
    fn hard_constraints_and_explain() {
        let r = Router::new(table(), 300.0, 20, None).unwrap();
        let q = Request {
            required_caps: CAP_VISION,
            ..req()
        };
        assert!(r.plan(&q, None, 0.0).unwrap().order.is_empty());
        let q = Request {
            allowed_mask: 0b1100,
            unavailable_mask: 0b0100,
            ..req()
        };
        assert_eq!(r.plan(&q, None, 0.0).unwrap().order, vec![3]);
        let ex = r.explain(&q, None, 0.0).unwrap();
        assert_eq!(ex[0].failed, V_NOT_ALLOWED);
        assert_eq!(ex[2].failed, V_UNAVAILABLE);
        assert_eq!(ex[3].failed, 0);
        assert!((ex[3].predicted_latency_ms - 1800.0).abs() < 1e-9);
        assert!((ex[3].expected_cost_usd - (1000.0 * 5.0 + 100.0 * 20.0) / 1e6).abs() < 1e-12);
    }

    #[test]
    fn windows_replace_priors_and_survive_reload() {
        let r = Router::new(table(), 300.0, 5, None).unwrap();
        for _ in 0..5 {
            r.record(0, 50.0, 1.0, 150.0, 1.0).unwrap();
        }
        let lat = r.predicted_latency(0, 100, 1.0).unwrap();
        assert!((lat - 150.0).abs() < 2.0, "{lat}");
        let mut t = table();
        t.reverse();
        let r2 = Router::new(t, 300.0, 5, Some(&r)).unwrap();
        let lat2 = r2.predicted_latency(3, 100, 1.0).unwrap();
        assert!((lat2 - lat).abs() < 1e-9);
        assert!(r.record(9, 1.0, 1.0, 1.0, 1.0).is_err());
        assert!(r.record(0, f64::NAN, 1.0, 1.0, 1.0).is_err());
        r.record(0, 1.0, f64::NAN, 1.0, 1.0).unwrap();
    }

    #[test]
    fn rejects_too_many_and_bad_qualities() {
        let many: Vec<_> = (0..65)
            .map(|i| cand(&format!("c{i}"), 0, 1.0, 1.0, 1.0))
            .collect();
        assert!(Router::new(many, 300.0, 20, None).is_err());
        let r = Router::new(table(), 300.0, 20, None).unwrap();
        assert!(r.plan(&req(), Some(&[1.0]), 0.0).is_err());
        let p = r.plan(
            &Request {
                min_quality: 0.5,
                ..req()
            },
            Some(&[0.0, 0.0, 0.9, 0.0]),
            0.0,
        );
        assert_eq!(p.unwrap().order, vec![2]);
    }
}
