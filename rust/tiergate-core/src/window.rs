//! Sliding-window latency estimator: a ring of time buckets, each holding a sparse
//! log-bucketed histogram (`DDSketch` mapping, relative accuracy [`RELATIVE_ACCURACY`]),
//! plus a dense running total of the live buckets so a quantile is one cumulative walk.
//!
//! # Semantics (the Python reference in `tests/core_reference.py` mirrors them)
//!
//! * Time is seconds on a monotonic clock. Sub-window width `w = window_s / buckets`;
//!   a sample recorded at `now` belongs to epoch `floor(now / w)`. A sample counts while
//!   its epoch is one of the `buckets` most recent epochs, so it lives between
//!   `window_s - w` and `window_s` seconds.
//! * Time never goes backwards: a `now` earlier than the latest seen is treated as the
//!   latest seen.
//! * The quantile `q` of `n` in-window samples is the sample at rank
//!   `floor(q * (n - 1))` (0-based) of the sorted samples. The estimate is within
//!   [`RELATIVE_ACCURACY`] of it for values in `[MIN_VALUE_MS, MAX_VALUE_MS]`; smaller
//!   values land in a zero bin and are reported as `0.0`, larger ones are clamped to
//!   `MAX_VALUE_MS`.
//! * Memory: a dense total of [`BIN_COUNT`] counters plus, per time bucket, one entry per
//!   distinct bin touched — bounded whatever the number of samples.

use crate::error::{CoreError, Result};

/// Relative accuracy of every reported quantile (0.5 %).
pub const RELATIVE_ACCURACY: f64 = 0.005;
/// Smallest value (ms) resolved; anything below lands in the zero bin.
pub const MIN_VALUE_MS: f64 = 0.01;
/// Largest value (ms) resolved (one hour); anything above is clamped here.
pub const MAX_VALUE_MS: f64 = 3_600_000.0;
/// Default window length in seconds.
pub const DEFAULT_WINDOW_S: f64 = 300.0;
/// Default number of time buckets in the window.
pub const DEFAULT_BUCKETS: usize = 30;
/// Most time buckets a window may have.
pub const MAX_BUCKETS: usize = 3600;

const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);
/// `ln(GAMMA)`; `f64::ln` is not const, so the value is spelled out (checked in tests).
const LN_GAMMA: f64 = 0.010_000_083_334_583_179;
/// Bin 0 is the zero bin; bin `k + 1` holds `(MIN·γ^(k-1), MIN·γ^k]`.
pub const BIN_COUNT: usize = 1973;
const GROUP: usize = 64;
const GROUPS: usize = BIN_COUNT.div_ceil(GROUP);

/// The bin of a valid (finite, non-negative) value.
fn bin_of(value: f64) -> usize {
    if value < MIN_VALUE_MS {
        return 0;
    }
    let v = value.min(MAX_VALUE_MS);
    let k = ((v / MIN_VALUE_MS).ln() / LN_GAMMA).ceil().max(0.0) as usize;
    (k + 1).min(BIN_COUNT - 1)
}

/// The value reported for a bin: the point of least relative error in its range.
fn bin_value(bin: usize) -> f64 {
    if bin == 0 {
        return 0.0;
    }
    let k = (bin - 1) as i32;
    (MIN_VALUE_MS * 2.0 * GAMMA.powi(k) / (GAMMA + 1.0)).min(MAX_VALUE_MS)
}

#[derive(Clone, Debug, Default)]
struct Slot {
    /// Sorted by bin.
    bins: Vec<(u16, u32)>,
}

/// A time-bucketed latency window. Mutating even to read (reading advances time).
#[derive(Clone, Debug)]
pub struct LatencyWindow {
    window_s: f64,
    width: f64,
    slots: Vec<Slot>,
    head: Option<i64>,
    last_now: f64,
    total: Vec<u64>,
    groups: Vec<u64>,
    count: u64,
    generation: u64,
}

fn check_now(now: f64) -> Result<()> {
    if now.is_finite() {
        Ok(())
    } else {
        Err(CoreError::invalid(format!(
            "now must be a finite number of seconds, got {now}"
        )))
    }
}

impl LatencyWindow {
    /// `window_s` must be finite and > 0, `buckets` in `1..=MAX_BUCKETS`.
    pub fn new(window_s: f64, buckets: usize) -> Result<Self> {
        if !(window_s.is_finite() && window_s > 0.0) {
            return Err(CoreError::invalid(format!(
                "window_s must be > 0, got {window_s}"
            )));
        }
        if !(1..=MAX_BUCKETS).contains(&buckets) {
            return Err(CoreError::invalid(format!(
                "buckets must be in 1..={MAX_BUCKETS}, got {buckets}"
            )));
        }
        Ok(Self {
            window_s,
            width: window_s / buckets as f64,
            slots: vec![Slot::default(); buckets],
            head: None,
            last_now: f64::NEG_INFINITY,
            total: vec![0; BIN_COUNT],
            groups: vec![0; GROUPS],
            count: 0,
            generation: 0,
        })
    }

    pub fn window_s(&self) -> f64 {
        self.window_s
    }

    pub fn buckets(&self) -> usize {
        self.slots.len()
    }

    /// Changes whenever the in-window contents may have changed (cache key).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn slot_index(&self, epoch: i64) -> usize {
        epoch.rem_euclid(self.slots.len() as i64) as usize
    }

    fn clear_slot(&mut self, i: usize) {
        let bins = std::mem::take(&mut self.slots[i].bins);
        for &(bin, c) in &bins {
            let bin = bin as usize;
            self.total[bin] -= u64::from(c);
            self.groups[bin / GROUP] -= u64::from(c);
            self.count -= u64::from(c);
        }
        // Keep the allocation for the next epoch that lands in this slot.
        let mut bins = bins;
        bins.clear();
        self.slots[i].bins = bins;
    }

    /// Move the head to the epoch of `now`, expiring what fell out of the window.
    pub fn advance(&mut self, now: f64) -> Result<()> {
        check_now(now)?;
        let now = now.max(self.last_now);
        self.last_now = now;
        let epoch = (now / self.width).floor() as i64;
        match self.head {
            None => self.head = Some(epoch),
            Some(h) if epoch <= h => {}
            Some(h) => {
                let b = self.slots.len() as i64;
                if epoch.saturating_sub(h) >= b {
                    for s in &mut self.slots {
                        s.bins.clear();
                    }
                    self.total.fill(0);
                    self.groups.fill(0);
                    self.count = 0;
                } else {
                    for e in h + 1..=epoch {
                        self.clear_slot(self.slot_index(e));
                    }
                }
                self.head = Some(epoch);
                self.generation += 1;
            }
        }
        Ok(())
    }

    /// Add one sample (ms, finite and ≥ 0) at time `now` (s).
    pub fn record(&mut self, value_ms: f64, now: f64) -> Result<()> {
        if !(value_ms.is_finite() && value_ms >= 0.0) {
            return Err(CoreError::invalid(format!(
                "latency must be a finite number of ms >= 0, got {value_ms}"
            )));
        }
        self.advance(now)?;
        let bin = bin_of(value_ms);
        let slot = self.slot_index(self.head.unwrap_or(0));
        let bins = &mut self.slots[slot].bins;
        match bins.binary_search_by_key(&(bin as u16), |&(b, _)| b) {
            Ok(i) => {
                if bins[i].1 == u32::MAX {
                    return Ok(()); // 4 billion samples in one bin of one bucket: saturate.
                }
                bins[i].1 += 1;
            }
            Err(i) => bins.insert(i, (bin as u16, 1)),
        }
        self.total[bin] += 1;
        self.groups[bin / GROUP] += 1;
        self.count += 1;
        self.generation += 1;
        Ok(())
    }

    /// Samples in the window at `now`.
    pub fn count(&mut self, now: f64) -> Result<u64> {
        self.advance(now)?;
        Ok(self.count)
    }

    /// Samples in the window as of the last `advance` (no time movement).
    pub fn count_current(&self) -> u64 {
        self.count
    }

    /// Estimated quantile `q` in `[0, 1]` at `now`; `None` when the window is empty.
    pub fn quantile(&mut self, q: f64, now: f64) -> Result<Option<f64>> {
        if !(0.0..=1.0).contains(&q) {
            return Err(CoreError::invalid(format!(
                "quantile must be in [0, 1], got {q}"
            )));
        }
        self.advance(now)?;
        Ok(self.quantile_current(q))
    }

    /// Quantile as of the last `advance`; `q` must already be in `[0, 1]`.
    pub fn quantile_current(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q * (self.count - 1) as f64).floor() as u64;
        let mut cum = 0u64;
        for (g, &gc) in self.groups.iter().enumerate() {
            if cum + gc > rank {
                let start = g * GROUP;
                let end = (start + GROUP).min(BIN_COUNT);
                for bin in start..end {
                    cum += self.total[bin];
                    if cum > rank {
                        return Some(bin_value(bin));
                    }
                }
            }
            cum += gc;
        }
        None // unreachable while the counters agree
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_agree() {
        assert!((GAMMA.ln() - LN_GAMMA).abs() < 1e-15);
        assert_eq!(bin_of(MAX_VALUE_MS) + 1, BIN_COUNT);
        const { assert!(GROUPS * GROUP >= BIN_COUNT) };
    }

    #[test]
    fn bins_are_accurate_over_range() {
        let mut v = MIN_VALUE_MS;
        while v <= MAX_VALUE_MS {
            let est = bin_value(bin_of(v));
            assert!(
                (est - v).abs() <= v * RELATIVE_ACCURACY * 1.000_001,
                "{v} -> {est}"
            );
            v *= 1.0013;
        }
        assert!(bin_value(bin_of(0.0)).abs() < f64::EPSILON);
        assert!((bin_value(bin_of(1e12)) - MAX_VALUE_MS).abs() < 1e-6);
    }

    #[test]
    fn quantiles_and_expiry() {
        let mut w = LatencyWindow::new(300.0, 30).unwrap();
        assert_eq!(w.quantile(0.5, 0.0).unwrap(), None);
        for i in 1..=100 {
            w.record(f64::from(i), 1.0).unwrap();
        }
        let p50 = w.quantile(0.5, 1.0).unwrap().unwrap();
        assert!((p50 - 50.0).abs() <= 50.0 * RELATIVE_ACCURACY);
        let p100 = w.quantile(1.0, 1.0).unwrap().unwrap();
        assert!((p100 - 100.0).abs() <= 100.0 * RELATIVE_ACCURACY);
        assert_eq!(w.count(299.0).unwrap(), 100);
        assert_eq!(w.count(300.0).unwrap(), 0);
        // time going backwards is treated as the latest time seen
        w.record(5.0, 10.0).unwrap();
        assert_eq!(w.count(300.0).unwrap(), 1);
        assert_eq!(w.count(1e9).unwrap(), 0);
    }

    #[test]
    fn rejects_bad_input() {
        let mut w = LatencyWindow::new(300.0, 30).unwrap();
        assert!(w.record(f64::NAN, 0.0).is_err());
        assert!(w.record(-1.0, 0.0).is_err());
        assert!(w.record(f64::INFINITY, 0.0).is_err());
        assert!(w.record(1.0, f64::NAN).is_err());
        assert!(w.quantile(1.5, 0.0).is_err());
        assert!(w.quantile(f64::NAN, 0.0).is_err());
        assert!(LatencyWindow::new(0.0, 30).is_err());
        assert!(LatencyWindow::new(1.0, 0).is_err());
        // extreme times do not panic
        w.record(1.0, 1e300).unwrap();
        w.record(1.0, -1e300).unwrap();
        assert_eq!(w.count(f64::MAX).unwrap(), 2);
    }
}
