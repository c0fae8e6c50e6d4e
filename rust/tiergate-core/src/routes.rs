//! The planner's per-request work around a [`Router`]: a request's feature record from
//! its route's settings, its tenant's and its envelope's, the route's rolling mean of
//! output tokens, which deployments are held out (ejected or cooling down), and the plan
//! ordered by the route's scope (DESIGN.md §3).
//!
//! # Per request ([`Routes::request`])
//! * budget, ceiling, floor: the header's value, else the tenant's, else the route's;
//!   none is an infinite budget or ceiling and a floor of 0;
//! * expected output tokens: the route's mean, capped by `max_tokens` when given (> 0);
//!   the record carries it rounded up, and `max_output_tokens` is `max_tokens` or that;
//! * allowed: the route's mask and the tenant's; unavailable: the deployments held until
//!   after `now` plus what the caller adds (rate limits near).
//!
//! # Plan ([`Routes::plan`])
//! The router's plan with the route's own tier (or pinned deployment) first and wider
//! tiers after, each part in the router's order; a pinned deployment the plan left out
//! leads it when it is not held (the caller named it: it serves outside the envelope).
//!
//! # After an answer ([`Routes::observe`])
//! The deployment's latency windows and the route's mean (weight [`OUTPUT_EWMA_ALPHA`]).
//! A whole answer's time to first token is estimated as `total − output × prior time per
//! token`, at least a tenth of the total.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{CoreError, Result};
use crate::policy::{Plan, Request, Router};

/// Output tokens a route is expected to produce before any answer was seen.
pub const INITIAL_OUTPUT_TOKENS: f64 = 256.0;
/// Weight of the newest answer in a route's rolling mean of output tokens.
pub const OUTPUT_EWMA_ALPHA: f64 = 0.05;

/// A route as the planner reads it: the candidates it may use, those that lead its plan,
/// its settings (`None`: not set) and its pinned deployment.
#[derive(Clone, Debug, PartialEq)]
pub struct Scope {
    pub name: String,
    pub allowed: u64,
    pub first: u64,
    pub latency_budget_ms: Option<f64>,
    pub max_cost_usd: Option<f64>,
    pub min_quality: Option<f64>,
    pub pinned: Option<usize>,
}

/// What one request asks before its route's settings apply. Each pair of settings is
/// `[the envelope's (header), the tenant's]`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ask {
    pub scope: usize,
    pub required_caps: u64,
    pub prompt_tokens: u64,
    /// 0: the caller set none.
    pub max_tokens: u64,
    pub latency_budget_ms: [Option<f64>; 2],
    pub max_cost_usd: [Option<f64>; 2],
    pub min_quality: [Option<f64>; 2],
    /// The tenant's allow-list.
    pub allowed_mask: u64,
    /// Unavailable for reasons the router does not hold (rate limits near).
    pub unavailable_mask: u64,
}

/// The route scopes of one config, with the state that outlives a request: the routes'
/// output means and each candidate's held-until time. `f64`s live in atomics as bits so
/// a shared `&Routes` can update them (the GIL orders the Python callers).
#[derive(Debug)]
pub struct Routes {
    scopes: Vec<Scope>,
    by_name: HashMap<String, usize>,
    means: Vec<AtomicU64>,
    /// Means of routes a previous config had and this one does not: kept for a later
    /// config that has them again.
    carried: HashMap<String, f64>,
    held: Vec<AtomicU64>,
    flags: u64,
}

fn load(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

fn store(a: &AtomicU64, x: f64) {
    a.store(x.to_bits(), Ordering::Relaxed);
}

impl Routes {
    /// Scopes over `candidates` candidates; `flags` are the router's `FLAG_*` for every
    /// request. Means are taken by route name from `previous`.
    pub fn new(
        scopes: Vec<Scope>,
        candidates: usize,
        flags: u64,
        previous: Option<&Routes>,
    ) -> Result<Self> {
        let all = if candidates >= 64 {
            u64::MAX
        } else {
            (1u64 << candidates) - 1
        };
        let mut by_name = HashMap::with_capacity(scopes.len());
        for (i, s) in scopes.iter().enumerate() {
            if by_name.insert(s.name.clone(), i).is_some() {
                return Err(CoreError::invalid(format!("duplicate route {:?}", s.name)));
            }
            if s.allowed & !all != 0 || s.first & !all != 0 {
                return Err(CoreError::invalid(format!(
                    "route {:?}: masks name candidates beyond the {candidates} there are",
                    s.name
                )));
            }
            if s.pinned.is_some_and(|p| p >= candidates) {
                return Err(CoreError::out_of_range(format!(
                    "route {:?}: pinned candidate out of range (have {candidates})",
                    s.name
                )));
            }
            for (what, x) in [
                ("latency_budget_ms", s.latency_budget_ms),
                ("max_cost_usd", s.max_cost_usd),
                ("min_quality", s.min_quality),
            ] {
                if x.is_some_and(f64::is_nan) {
                    return Err(CoreError::invalid(format!(
                        "route {:?}: {what} must not be NaN",
                        s.name
                    )));
                }
            }
        }
        let mut carried = HashMap::new();
        if let Some(p) = previous {
            carried.clone_from(&p.carried);
            for (s, m) in p.scopes.iter().zip(&p.means) {
                carried.insert(s.name.clone(), load(m));
            }
        }
        let means = scopes
            .iter()
            .map(|s| {
                let m = carried.remove(&s.name).unwrap_or(INITIAL_OUTPUT_TOKENS);
                AtomicU64::new(m.to_bits())
            })
            .collect();
        Ok(Self {
            scopes,
            by_name,
            means,
            carried,
            held: (0..candidates).map(|_| AtomicU64::new(0)).collect(),
            flags,
        })
    }

    pub fn scopes(&self) -> &[Scope] {
        &self.scopes
    }

    pub fn scope_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    fn scope(&self, idx: usize) -> Result<&Scope> {
        self.scopes.get(idx).ok_or_else(|| {
            CoreError::out_of_range(format!(
                "route index {idx} out of range (have {})",
                self.scopes.len()
            ))
        })
    }

    /// The route's rolling mean of output tokens.
    pub fn output_mean(&self, scope: usize) -> Result<f64> {
        self.scope(scope)?;
        Ok(load(&self.means[scope]))
    }

    /// Output tokens expected of one request: the route's mean, capped by `max_tokens`
    /// when given (> 0).
    pub fn expected_output(&self, scope: usize, max_tokens: u64) -> Result<f64> {
        let mean = self.output_mean(scope)?;
        // An integer beyond 2^53 is no smaller than any mean: the conversion's rounding
        // cannot change the minimum.
        #[allow(clippy::cast_precision_loss)]
        Ok(if max_tokens > 0 {
            mean.min(max_tokens as f64)
        } else {
            mean
        })
    }

    /// Hold candidate `idx` out of every plan until `until` (seconds on the router's
    /// clock); a later call replaces the time.
    pub fn hold(&self, idx: usize, until: f64) -> Result<()> {
        let slot = self.held.get(idx).ok_or_else(|| {
            CoreError::out_of_range(format!(
                "candidate index {idx} out of range (have {})",
                self.held.len()
            ))
        })?;
        if until.is_nan() {
            return Err(CoreError::invalid("until must not be NaN"));
        }
        store(slot, until);
        Ok(())
    }

    /// Bit i set when candidate i is held after `now`.
    pub fn held_mask(&self, now: f64) -> u64 {
        let mut mask = 0;
        for (i, h) in self.held.iter().enumerate() {
            if load(h) > now {
                mask |= 1 << i;
            }
        }
        mask
    }

    /// The feature record of one request (see the module's summary).
    pub fn request(&self, ask: &Ask, now: f64) -> Result<Request> {
        let s = self.scope(ask.scope)?;
        let expected = self.expected_output(ask.scope, ask.max_tokens)?;
        // The mean is a weighted mean of token counts (≥ 0, far below 2^53) or a cap:
        // its ceiling is a whole, non-negative u64.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let expected_tokens = expected.ceil() as u64;
        let pick = |pair: [Option<f64>; 2], route: Option<f64>| pair[0].or(pair[1]).or(route);
        Ok(Request {
            required_caps: ask.required_caps,
            prompt_tokens: ask.prompt_tokens,
            max_output_tokens: if ask.max_tokens > 0 {
                ask.max_tokens
            } else {
                expected_tokens
            },
            expected_output_tokens: expected_tokens,
            latency_budget_ms: pick(ask.latency_budget_ms, s.latency_budget_ms)
                .unwrap_or(f64::INFINITY),
            max_cost_usd: pick(ask.max_cost_usd, s.max_cost_usd).unwrap_or(f64::INFINITY),
            min_quality: pick(ask.min_quality, s.min_quality).unwrap_or(0.0),
            allowed_mask: s.allowed & ask.allowed_mask,
            unavailable_mask: self.held_mask(now) | ask.unavailable_mask,
            flags: self.flags,
        })
    }

    /// The router's plan for `req` ordered by the route's scope, a pinned deployment
    /// leading when the plan left it out and it is not held.
    pub fn plan(
        &self,
        router: &Router,
        scope: usize,
        req: &Request,
        qualities: Option<&[f64]>,
        now: f64,
    ) -> Result<Plan> {
        let s = self.scope(scope)?;
        let mut plan = router.plan(req, qualities, now)?;
        let all = self.held.len();
        if s.first.count_ones() as usize != all {
            let (mut lead, rest): (Vec<usize>, Vec<usize>) =
                plan.order.iter().partition(|&&i| s.first >> i & 1 == 1);
            lead.extend(rest);
            plan.order = lead;
        }
        if let Some(p) = s.pinned {
            if !plan.order.contains(&p) && load(&self.held[p]) <= now {
                plan.order.insert(0, p);
            }
        }
        Ok(plan)
    }

    /// Feed candidate `idx`'s windows and route `route`'s output mean after an answer;
    /// `ttft_ms` is the measured time to first token of a stream, `None` for a whole
    /// answer (estimated from the candidate's prior time per token).
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &self,
        router: &Router,
        route: &str,
        idx: usize,
        ttft_ms: Option<f64>,
        total_ms: f64,
        output_tokens: u64,
        now: f64,
    ) -> Result<()> {
        let scope = self
            .scope_of(route)
            .ok_or_else(|| CoreError::invalid(format!("unknown route {route:?}")))?;
        let c = router.candidates().get(idx).ok_or_else(|| {
            CoreError::out_of_range(format!(
                "candidate index {idx} out of range (have {})",
                router.len()
            ))
        })?;
        // Token counts are far below 2^53.
        #[allow(clippy::cast_precision_loss)]
        let out = output_tokens as f64;
        if let Some(ttft) = ttft_ms {
            let tpot = if output_tokens > 1 {
                (total_ms - ttft) / (out - 1.0)
            } else {
                f64::NAN
            };
            router.record(idx, ttft, tpot, total_ms, now)?;
        } else {
            let ttft = (total_ms - out * c.tpot_prior_ms).max(total_ms * 0.1);
            router.record(idx, ttft, f64::NAN, total_ms, now)?;
        }
        let m = &self.means[scope];
        let mean = load(m);
        store(m, mean + OUTPUT_EWMA_ALPHA * (out - mean));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Candidate, CAP_STREAMING, FLAG_ALLOW_QUALITY_RELAX};

    fn cand(name: &str, tier: u32, price: f64) -> Candidate {
        Candidate {
            name: name.into(),
            tier,
            price_in_per_mtok: price,
            price_out_per_mtok: price,
            price_cached_per_mtok: price,
            context_window: 10_000,
            caps: CAP_STREAMING,
            ttft_prior_ms: 100.0,
            tpot_prior_ms: 2.0,
            quality_prior: 0.5 + f64::from(tier) / 10.0,
        }
    }

    fn router() -> Router {
        let t = vec![cand("s", 0, 0.1), cand("m", 1, 1.0), cand("l", 2, 5.0)];
        Router::new(t, 300.0, 20, None).unwrap()
    }

    fn scope(name: &str, allowed: u64, first: u64, pinned: Option<usize>) -> Scope {
        Scope {
            name: name.into(),
            allowed,
            first,
            latency_budget_ms: None,
            max_cost_usd: None,
            min_quality: None,
            pinned,
        }
    }

    fn routes(previous: Option<&Routes>) -> Routes {
        let scopes = vec![
            scope("auto", 0b111, 0b111, None),
            scope("m", 0b110, 0b010, None),
            scope("l-pinned", 0b100, 0b100, Some(2)),
            Scope {
                latency_budget_ms: Some(500.0),
                max_cost_usd: Some(1.0),
                min_quality: Some(0.55),
                ..scope("strict", 0b111, 0b111, None)
            },
        ];
        Routes::new(scopes, 3, FLAG_ALLOW_QUALITY_RELAX, previous).unwrap()
    }

    #[test]
    fn settings_resolve_header_then_tenant_then_route() {
        let r = routes(None);
        let ask = Ask {
            scope: 3,
            allowed_mask: 0b011,
            ..Ask::default()
        };
        let q = r.request(&ask, 0.0).unwrap();
        assert_eq!(
            (q.latency_budget_ms, q.max_cost_usd, q.min_quality),
            (500.0, 1.0, 0.55)
        );
        assert_eq!((q.allowed_mask, q.flags), (0b011, FLAG_ALLOW_QUALITY_RELAX));
        let ask = Ask {
            latency_budget_ms: [None, Some(7.0)],
            max_cost_usd: [Some(2.0), Some(3.0)],
            min_quality: [Some(0.1), None],
            ..ask
        };
        let q = r.request(&ask, 0.0).unwrap();
        assert_eq!(
            (q.latency_budget_ms, q.max_cost_usd, q.min_quality),
            (7.0, 2.0, 0.1)
        );
        let q = r.request(&Ask::default(), 0.0).unwrap();
        assert_eq!(
            (q.latency_budget_ms, q.max_cost_usd, q.min_quality),
            (f64::INFINITY, f64::INFINITY, 0.0)
        );
        assert!(r.request(&Ask { scope: 4, ..ask }, 0.0).is_err());
    }

    #[test]
    fn output_mean_caps_and_moves_with_answers() {
        let router = router();
        let r = routes(None);
        let q = r.request(&Ask::default(), 0.0).unwrap();
        assert_eq!((q.expected_output_tokens, q.max_output_tokens), (256, 256));
        let capped = Ask {
            max_tokens: 100,
            ..Ask::default()
        };
        let q = r.request(&capped, 0.0).unwrap();
        assert_eq!((q.expected_output_tokens, q.max_output_tokens), (100, 100));
        r.observe(&router, "auto", 0, None, 50.0, 56, 1.0).unwrap();
        assert!((r.output_mean(0).unwrap() - 246.0).abs() < 1e-12);
        assert_eq!(
            r.request(&Ask::default(), 1.0)
                .unwrap()
                .expected_output_tokens,
            246
        );
        assert!((r.output_mean(1).unwrap() - 256.0).abs() < 1e-12); // per route
        assert!(r.observe(&router, "nope", 0, None, 1.0, 1, 1.0).is_err());
        assert!(r.observe(&router, "auto", 3, None, 1.0, 1, 1.0).is_err());
        assert!(r
            .observe(&router, "auto", 0, None, f64::NAN, 1, 1.0)
            .is_err());
        // a reload keeps the means by name, also across a config without the route
        let narrow = Routes::new(vec![scope("m", 0b110, 0b010, None)], 3, 0, Some(&r)).unwrap();
        let again = routes(Some(&narrow));
        assert!((again.output_mean(0).unwrap() - 246.0).abs() < 1e-12);
    }

    #[test]
    fn a_whole_answer_estimates_its_first_token() {
        let router = Router::new(vec![cand("s", 0, 0.1)], 300.0, 1, None).unwrap();
        let r = Routes::new(vec![scope("auto", 1, 1, None)], 1, 0, None).unwrap();
        r.observe(&router, "auto", 0, None, 100.0, 20, 1.0).unwrap();
        // 100 − 20 × 2 = 60 ms to the first token, no time per token measured
        let lat = router.predicted_latency(0, 10, 1.0).unwrap();
        assert!((lat - (60.0 + 10.0 * 2.0)).abs() < 1.0, "{lat}");
        let r2 = Routes::new(vec![scope("auto", 1, 1, None)], 1, 0, None).unwrap();
        let router2 = Router::new(vec![cand("s", 0, 0.1)], 300.0, 1, None).unwrap();
        r2.observe(&router2, "auto", 0, Some(10.0), 100.0, 10, 1.0)
            .unwrap();
        let lat = router2.predicted_latency(0, 10, 1.0).unwrap();
        assert!((lat - (10.0 + 10.0 * 10.0)).abs() < 1.0, "{lat}");
        // at least a tenth of the total
        r.observe(&router, "auto", 0, None, 100.0, 1000, 2.0)
            .unwrap();
    }

    #[test]
    fn plans_follow_the_scope_and_the_pinned_deployment() {
        let router = router();
        let r = routes(None);
        let plan = |scope: usize, now: f64| {
            let q = r
                .request(
                    &Ask {
                        scope,
                        allowed_mask: u64::MAX,
                        ..Ask::default()
                    },
                    now,
                )
                .unwrap();
            r.plan(&router, scope, &q, None, now).unwrap().order
        };
        assert_eq!(plan(0, 0.0), vec![0, 1, 2]);
        assert_eq!(plan(1, 0.0), vec![1, 2]);
        assert_eq!(plan(2, 0.0), vec![2]);
        r.hold(2, 10.0).unwrap();
        assert_eq!(r.held_mask(5.0), 0b100);
        assert_eq!(plan(0, 5.0), vec![0, 1]);
        assert_eq!(plan(2, 5.0), Vec::<usize>::new()); // held: not served even pinned
        assert_eq!(plan(2, 10.0), vec![2]);
        assert!(r.hold(3, 1.0).is_err() && r.hold(0, f64::NAN).is_err());
        // pinned outside the envelope: it leads anyway
        let q = Request {
            required_caps: crate::policy::CAP_VISION,
            ..r.request(
                &Ask {
                    scope: 2,
                    allowed_mask: u64::MAX,
                    ..Ask::default()
                },
                20.0,
            )
            .unwrap()
        };
        assert_eq!(r.plan(&router, 2, &q, None, 20.0).unwrap().order, vec![2]);
    }

    #[test]
    fn rejects_bad_scopes() {
        let bad = |s: Scope| Routes::new(vec![s], 3, 0, None).is_err();
        assert!(bad(scope("a", 0b1000, 0b1, None)));
        assert!(bad(scope("a", 0b1, 0b1000, None)));
        assert!(bad(scope("a", 0b1, 0b1, Some(3))));
        assert!(bad(Scope {
            min_quality: Some(f64::NAN),
            ..scope("a", 1, 1, None)
        }));
        let twice = vec![scope("a", 1, 1, None), scope("a", 1, 1, None)];
        assert!(Routes::new(twice, 3, 0, None).is_err());
    }
}
