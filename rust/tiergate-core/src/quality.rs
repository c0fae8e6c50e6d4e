//! The learned quality model (issue 6): one calibrated probability of a correct answer
//! per model family, from the features of [`crate::features`].
//!
//! # Model file (JSON, `format = "tiergate.quality_model"`, `version` 1 to 4)
//! ```text
//! features         the FeatureConfig (dim, seed, word_ngrams, char_min, char_max,
//!                  char_window, structure names)
//! families         [name, ...]                          k families
//! intercepts       [b_f; k]
//! weights          {"rows": [i, ...], "values": [w; rows × k]}   row-major: the k
//!                  weights of feature i are values[r*k .. r*k+k]; absent rows are 0
//! calibration      {"method": "platt", "a": [k], "b": [k]}  p = σ(a·z + b)
//! operating_points version 1: {"table": [{"floor": F, "offset": o, ...}, ...], ...}
//!                  versions 2, 3: {"rule": "utility", "cost_usd": [c_f; k],
//!                              "table": [{"floor": F, "lambda": λ, ...}, ...], ...}
//! ```
//! Version 3 replaces `intercepts` and `weights` by a latent layer and a gated head:
//! ```text
//! latent           {"names": [name; h], "intercepts": [b_j; h],
//!                   "weights": {"rows": [i, ...], "values": [w; rows × h]}}
//! head             {"gate": [j, ...] (g latent indices, may be empty),
//!                   "inputs": [j, ...] (m latent indices),
//!                   "bias": [β; k × G], "coef": [γ; k × G × m]}   G = max(g, 1),
//!                   row-major (family, then cluster, then input)
//! ```
//! Version 4 is version 3 with the cost the utility rule prices a family at predicted
//! per prompt:
//! ```text
//! operating_points.cost_model  {"intercepts": [A; G × k] (row-major: cluster, then
//!                               family), "per_kchar": [s_f; k], ...}
//! ```
//! Other keys (training summary, mean costs, reference) are carried for Python and
//! ignored here.
//!
//! # Scoring
//! Versions 1 and 2: `z_f = b_f + Σ_i x_i · w_{i,f}`, then `p_f = σ(a_f · z_f + c_f)`:
//! one pass over the document's n-grams accumulates all families at once.
//!
//! Version 3: the same pass accumulates the `h` latent scores
//! `u_j = b_j + Σ_i x_i · w_{i,j}` (on the `RouterBench` data: one logit per task
//! cluster, and one difficulty score per cluster); the gate is `π = softmax(u_gate)` (`π = [1]` without a gate) and
//! `z_f = Σ_c π_c · (β_{f,c} + Σ_m γ_{f,c,m} · u_{inputs[m]})`, calibrated as above.
//! With few latent scores the weight table is small (4 or 8 lanes a row, see
//! `features::row_lanes`), so it stays in cache.
//!
//! # Decision rules
//! Versions 2 to 4 (`rule = "utility"`): a request with floor `F` is served by the
//! candidate maximising `q_f − λ(F) · c_f`, `λ(F)` the table's cost weight, linearly
//! interpolated by floor and clamped at the ends; `F ≤ 0` is no floor (cheapest).
//! `c_f` (what [`QualityModel::score`] returns beside the probabilities): versions 2
//! and 3, the family's mean cost per call in the training data (`cost_usd`); version
//! 4, the family's predicted cost per call for this prompt,
//! `c_f = max(Σ_c π_c · A_{c,f} + s_f · chars / 1000, 0)` — `π` the head's gate (the
//! prompt's task), `chars` the Unicode scalar values of the document's text (a price
//! per input token shows as a slope in the prompt's length). [`QualityModel::
//! utility_choice`] applies the rule; the planner turns the winner into a threshold
//! (its own `q`), so the core's "cheapest feasible" serves it.
//!
//! Version 1 (`offset` rows, the threshold rule): a request with accuracy floor `F` (route, tenant or `x-tiergate-min-quality`) keeps
//! the candidates whose predicted quality `q ≥ F · q_best − offset(F)`, where `q_best` is
//! the best prediction among the candidates it may use and `offset(F)` is the model's
//! operating point, linearly interpolated in the table by floor (clamped at its ends).
//! The threshold never exceeds `q_best`, so the best candidate is always kept; `F ≤ 0`
//! is no floor.

use serde_json::Value;

use crate::error::{CoreError, Result};
use crate::features::{accumulate, Doc, FeatureConfig, Table, MAX_ACC_FAMILIES};

/// Model file format name and the version this core reads.
pub const FORMAT: &str = "tiergate.quality_model";
pub const VERSION: u64 = 4;
/// Most families a model may hold.
pub const MAX_FAMILIES: usize = MAX_ACC_FAMILIES;

/// One row of the operating-point table: `value` is the offset (threshold rule,
/// version 1) or the cost weight λ (utility rule, version 2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OperatingPoint {
    pub floor: f64,
    pub value: f64,
}

/// How a floor becomes a decision (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Version 1: `q ≥ clamp(F · q_best − offset(F), 0, q_best)`, cheapest feasible.
    Threshold,
    /// Version 2: argmax of `q_f − λ(F) · c_f`.
    Utility,
}

/// The gated head of a version-3 model (see the module docs).
#[derive(Debug)]
struct Head {
    gate: Vec<usize>,
    inputs: Vec<usize>,
    /// `k × G`
    bias: Vec<f64>,
    /// `k × G × m`
    coef: Vec<f64>,
}

impl Head {
    /// Clusters `G = max(g, 1)`: the length of the gate `π`.
    fn clusters(&self) -> usize {
        self.gate.len().max(1)
    }

    /// `π = softmax(u_gate)` in the first `G` slots (`[1]` without a gate).
    fn gate(&self, latent: &[f64]) -> [f64; MAX_ACC_FAMILIES] {
        let mut out = [1.0f64; MAX_ACC_FAMILIES];
        let gate = &mut out[..self.clusters()];
        if !self.gate.is_empty() {
            let top = self
                .gate
                .iter()
                .map(|&j| latent[j])
                .fold(f64::NEG_INFINITY, f64::max);
            let mut total = 0.0;
            for (p, &j) in gate.iter_mut().zip(&self.gate) {
                *p = (latent[j] - top).exp();
                total += *p;
            }
            for p in gate.iter_mut() {
                *p /= total;
            }
        }
        out
    }

    /// `z_f` for every family from the latent scores and their gate.
    fn apply(&self, latent: &[f64], gate: &[f64], families: usize) -> Vec<f64> {
        let clusters = self.clusters();
        let gate = &gate[..clusters];
        let inputs = self.inputs.len();
        (0..families)
            .map(|f| {
                let mut logit = 0.0;
                for (c, &share) in gate.iter().enumerate() {
                    let at = f * clusters + c;
                    let coef = &self.coef[at * inputs..(at + 1) * inputs];
                    let expert = self
                        .inputs
                        .iter()
                        .zip(coef)
                        .fold(self.bias[at], |acc, (&j, &w)| acc + w * latent[j]);
                    logit += share * expert;
                }
                logit
            })
            .collect()
    }
}

/// The per-prompt cost of a version-4 model (see the module docs): per family
/// `c_f = max(Σ_c π_c · intercepts[c][f] + per_kchar[f] · chars / 1000, 0)`.
#[derive(Debug)]
struct CostModel {
    /// `G × k`, row-major (cluster, then family).
    intercepts: Vec<f64>,
    /// `k`: USD per 1,000 characters of the classifier text.
    per_kchar: Vec<f64>,
}

impl CostModel {
    fn parse(v: Option<&Value>, clusters: usize, k: usize) -> Result<Self> {
        let v = v.ok_or_else(|| bad("`operating_points.cost_model` is missing"))?;
        let intercepts = floats(
            v.get("intercepts"),
            "operating_points.cost_model.intercepts",
            clusters * k,
        )?;
        let per_kchar = floats(
            v.get("per_kchar"),
            "operating_points.cost_model.per_kchar",
            k,
        )?;
        Ok(Self {
            intercepts,
            per_kchar,
        })
    }

    /// The predicted cost per family for a gate `π` (`G` shares) and a text of `chars`
    /// characters.
    fn costs(&self, gate: &[f64], chars: usize) -> Vec<f64> {
        let k = self.per_kchar.len();
        #[allow(clippy::cast_precision_loss)] // a text's length is far below 2^52
        let kchars = chars as f64 / 1000.0;
        (0..k)
            .map(|f| {
                let base = gate
                    .iter()
                    .enumerate()
                    .fold(0.0, |acc, (c, &p)| acc + p * self.intercepts[c * k + f]);
                (base + self.per_kchar[f] * kchars).max(0.0)
            })
            .collect()
    }
}

/// A loaded model: immutable, shared behind an `Arc` by the bindings.
#[derive(Debug)]
pub struct QualityModel {
    /// The model file's version (1 to [`VERSION`]).
    pub version: u64,
    pub features: FeatureConfig,
    pub families: Vec<String>,
    /// The scores the n-gram pass accumulates: the families' logits (versions 1, 2)
    /// or the latent scores (version 3).
    intercepts: Vec<f64>,
    /// `width` rows of `intercepts.len()` outputs.
    weights: Table,
    head: Option<Head>,
    platt_a: Vec<f64>,
    platt_b: Vec<f64>,
    /// Sorted by floor, floors unique.
    points: Vec<OperatingPoint>,
    pub rule: Rule,
    /// Mean cost per call per family (utility rule; empty for version 1).
    costs: Vec<f64>,
    /// Version 4: the predicted cost per call of a prompt.
    cost_model: Option<CostModel>,
}

fn bad(msg: impl Into<String>) -> CoreError {
    CoreError::invalid(format!("quality model: {}", msg.into()))
}

fn floats(v: Option<&Value>, what: &str, len: usize) -> Result<Vec<f64>> {
    let arr = v
        .and_then(Value::as_array)
        .ok_or_else(|| bad(format!("`{what}` must be an array of numbers")))?;
    if arr.len() != len {
        return Err(bad(format!(
            "`{what}` has {} numbers, expected {len}",
            arr.len()
        )));
    }
    arr.iter()
        .map(|x| {
            x.as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| bad(format!("`{what}` holds a non-finite or non-number value")))
        })
        .collect()
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The rule, the utility rule's costs and the sorted table of `operating_points`.
fn operating_points(
    ops: Option<&Value>,
    version: u64,
    k: usize,
) -> Result<(Rule, Vec<f64>, Vec<OperatingPoint>)> {
    let (rule, key) = if version == 1 {
        (Rule::Threshold, "offset")
    } else {
        (Rule::Utility, "lambda")
    };
    let costs = if rule == Rule::Utility {
        let c = floats(
            ops.and_then(|o| o.get("cost_usd")),
            "operating_points.cost_usd",
            k,
        )?;
        if c.iter().any(|&x| x < 0.0) {
            return Err(bad("`operating_points.cost_usd` must not be negative"));
        }
        c
    } else {
        Vec::new()
    };
    let mut points = Vec::new();
    if let Some(table) = ops.and_then(|o| o.get("table")) {
        let table = table
            .as_array()
            .ok_or_else(|| bad("`operating_points.table` must be an array"))?;
        for (i, row) in table.iter().enumerate() {
            let num = |key: &str| {
                row.get(key)
                    .and_then(Value::as_f64)
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| {
                        bad(format!(
                            "`operating_points.table[{i}].{key}` must be a number"
                        ))
                    })
            };
            let value = num(key)?;
            if rule == Rule::Utility && value < 0.0 {
                return Err(bad(format!(
                    "`operating_points.table[{i}].lambda` must be >= 0"
                )));
            }
            points.push(OperatingPoint {
                floor: num("floor")?,
                value,
            });
        }
    }
    points.sort_by(|a, b| a.floor.total_cmp(&b.floor));
    if points
        .windows(2)
        .any(|w| w[0].floor.total_cmp(&w[1].floor).is_eq())
    {
        return Err(bad("`operating_points.table` has a floor twice"));
    }
    Ok((rule, costs, points))
}

/// The packed table of a `{"rows": [...], "values": [...]}` object with `h` outputs.
fn weight_rows(w: Option<&Value>, what: &str, features: &FeatureConfig, h: usize) -> Result<Table> {
    let w = w.ok_or_else(|| bad(format!("`{what}` is missing")))?;
    let rows = w
        .get("rows")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(format!("`{what}.rows` must be an array of feature indices")))?;
    let values = floats(w.get("values"), &format!("{what}.values"), rows.len() * h)?;
    let width = features.width();
    let mut flat = vec![0f32; width * h];
    for (r, idx) in rows.iter().enumerate() {
        let i = idx
            .as_u64()
            .filter(|&i| (i as usize) < width)
            .ok_or_else(|| bad(format!("`{what}.rows[{r}]` is not an index below {width}")))?
            as usize;
        for f in 0..h {
            flat[i * h + f] = values[r * h + f] as f32;
        }
    }
    Ok(Table::pack(&flat, h))
}

/// Latent indices of `head.{key}`, each below `h`.
fn indices(head: &Value, key: &str, h: usize) -> Result<Vec<usize>> {
    head.get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| bad(format!("`head.{key}` must be an array of latent indices")))?
        .iter()
        .map(|x| {
            x.as_u64()
                .filter(|&j| (j as usize) < h)
                .map(|j| j as usize)
                .ok_or_else(|| bad(format!("`head.{key}` holds an index not below {h}")))
        })
        .collect()
}

fn head(v: Option<&Value>, h: usize, k: usize) -> Result<Head> {
    let v = v.ok_or_else(|| bad("`head` is missing"))?;
    let gate = indices(v, "gate", h)?;
    let inputs = indices(v, "inputs", h)?;
    if gate.len() > MAX_ACC_FAMILIES {
        return Err(bad("`head.gate` is too long"));
    }
    let g = gate.len().max(1);
    let bias = floats(v.get("bias"), "head.bias", k * g)?;
    let coef = floats(v.get("coef"), "head.coef", k * g * inputs.len())?;
    Ok(Head {
        gate,
        inputs,
        bias,
        coef,
    })
}

impl QualityModel {
    /// Parse and check a model file. Every error names the field at fault.
    pub fn from_json(data: &[u8]) -> Result<Self> {
        let v: Value =
            serde_json::from_slice(data).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        if v.get("format").and_then(Value::as_str) != Some(FORMAT) {
            return Err(bad(format!("`format` must be {FORMAT:?}")));
        }
        let version = match v.get("version").and_then(Value::as_u64) {
            Some(x @ 1..=VERSION) => x,
            other => {
                return Err(bad(format!(
                    "unsupported `version` {other:?}; this core reads versions 1 to {VERSION}"
                )))
            }
        };
        let features = FeatureConfig::from_value(
            v.get("features")
                .ok_or_else(|| bad("`features` is missing"))?,
        )?;
        let families: Vec<String> = v
            .get("families")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("`families` must be an array of names"))?
            .iter()
            .map(|x| x.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("`families` must hold strings"))?;
        let k = families.len();
        if k == 0 || k > MAX_FAMILIES {
            return Err(bad(format!(
                "`families` must hold 1..={MAX_FAMILIES} names"
            )));
        }
        let (intercepts, weights, head) = if version >= 3 {
            let latent = v.get("latent").ok_or_else(|| bad("`latent` is missing"))?;
            let h = latent
                .get("names")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            if h == 0 || h > MAX_ACC_FAMILIES {
                return Err(bad(format!(
                    "`latent.names` must hold 1..={MAX_ACC_FAMILIES} names"
                )));
            }
            let intercepts = floats(latent.get("intercepts"), "latent.intercepts", h)?;
            let weights = weight_rows(latent.get("weights"), "latent.weights", &features, h)?;
            let head = head(v.get("head"), h, k)?;
            (intercepts, weights, Some(head))
        } else {
            let intercepts = floats(v.get("intercepts"), "intercepts", k)?;
            let weights = weight_rows(v.get("weights"), "weights", &features, k)?;
            (intercepts, weights, None)
        };
        let cal = v
            .get("calibration")
            .ok_or_else(|| bad("`calibration` is missing"))?;
        if cal.get("method").and_then(Value::as_str) != Some("platt") {
            return Err(bad("`calibration.method` must be \"platt\""));
        }
        let platt_a = floats(cal.get("a"), "calibration.a", k)?;
        let platt_b = floats(cal.get("b"), "calibration.b", k)?;
        let (rule, costs, points) = operating_points(v.get("operating_points"), version, k)?;
        let cost_model = match (&head, version) {
            (Some(head), 4..) => Some(CostModel::parse(
                v.get("operating_points").and_then(|o| o.get("cost_model")),
                head.clusters(),
                k,
            )?),
            _ => None,
        };
        Ok(Self {
            version,
            features,
            families,
            intercepts,
            weights,
            head,
            platt_a,
            platt_b,
            points,
            rule,
            costs,
            cost_model,
        })
    }

    pub fn len(&self) -> usize {
        self.families.len()
    }

    pub fn is_empty(&self) -> bool {
        self.families.is_empty()
    }

    pub fn operating_points(&self) -> &[OperatingPoint] {
        &self.points
    }

    /// Raw (uncalibrated) scores `z_f`, one per family.
    pub fn logits(&self, doc: &Doc) -> Vec<f64> {
        let mut u = self.intercepts.clone();
        accumulate(&self.features, doc, &self.weights, u.len(), &mut u);
        match &self.head {
            None => u,
            Some(head) => head.apply(&u, &head.gate(&u), self.len()),
        }
    }

    /// Calibrated probabilities and the cost per call the utility rule prices each
    /// family at for this prompt, in one pass: version 4's predicted cost (the gate
    /// of the head and the text's length, see [`CostModel`]), versions 2 and 3's mean
    /// cost per call, none for version 1.
    pub fn score(&self, doc: &Doc) -> (Vec<f64>, Vec<f64>) {
        let mut u = self.intercepts.clone();
        accumulate(&self.features, doc, &self.weights, u.len(), &mut u);
        let (mut z, costs) = match (&self.head, &self.cost_model) {
            (Some(head), cost_model) => {
                let gate = head.gate(&u);
                let z = head.apply(&u, &gate, self.len());
                let costs = match cost_model {
                    Some(m) => m.costs(&gate[..head.clusters()], doc.text.chars().count()),
                    None => self.costs.clone(),
                };
                (z, costs)
            }
            (None, _) => (u, self.costs.clone()),
        };
        self.calibrate(&mut z);
        (z, costs)
    }

    fn calibrate(&self, z: &mut [f64]) {
        for (f, zf) in z.iter_mut().enumerate() {
            *zf = sigmoid(self.platt_a[f] * *zf + self.platt_b[f]);
        }
    }

    /// [`QualityModel::score`] of a chat-completions body.
    pub fn score_body(&self, body: &[u8]) -> Result<(Vec<f64>, Vec<f64>)> {
        Ok(self.score(&Doc::from_body(body)?))
    }

    /// The latent scores `u_j` of a version-3 model (the families' logits before).
    pub fn latent(&self, doc: &Doc) -> Vec<f64> {
        let mut u = self.intercepts.clone();
        accumulate(&self.features, doc, &self.weights, u.len(), &mut u);
        u
    }

    /// Calibrated probability of a correct answer, one per family.
    pub fn predict(&self, doc: &Doc) -> Vec<f64> {
        let mut z = self.logits(doc);
        self.calibrate(&mut z);
        z
    }

    pub fn predict_text(&self, text: &str) -> Vec<f64> {
        self.predict(&Doc::from_text(text))
    }

    pub fn predict_body(&self, body: &[u8]) -> Result<Vec<f64>> {
        Ok(self.predict(&Doc::from_body(body)?))
    }

    /// The table's value at `floor`: linear interpolation, clamped at its ends; 0 when
    /// the table is empty.
    fn interpolate(&self, floor: f64) -> f64 {
        let pts = &self.points;
        match pts.len() {
            0 => 0.0,
            _ if floor <= pts[0].floor => pts[0].value,
            len if floor >= pts[len - 1].floor => pts[len - 1].value,
            _ => {
                let hi = pts.partition_point(|x| x.floor <= floor);
                let (lo, up) = (pts[hi - 1], pts[hi]);
                let share = (floor - lo.floor) / (up.floor - lo.floor);
                lo.value + share * (up.value - lo.value)
            }
        }
    }

    /// `offset(F)` of the threshold rule (version 1): linear interpolation in the
    /// table, clamped at its ends; 0 when the table is empty (the uncalibrated rule
    /// `q ≥ F · q_best`) or the model uses the utility rule.
    pub fn offset(&self, floor: f64) -> f64 {
        match self.rule {
            Rule::Threshold => self.interpolate(floor),
            Rule::Utility => 0.0,
        }
    }

    /// `λ(F)` of the utility rule (version 2), interpolated like `offset`; 0 (the best
    /// prediction wins) for an empty table or a version-1 model.
    pub fn cost_weight(&self, floor: f64) -> f64 {
        match self.rule {
            Rule::Utility => self.interpolate(floor),
            Rule::Threshold => 0.0,
        }
    }

    /// Mean cost per call per family (utility rule; empty for version 1).
    pub fn costs(&self) -> &[f64] {
        &self.costs
    }

    /// The utility rule's choice among `qualities[i]` with costs `costs[i]` (the
    /// candidates' own, in the units λ was calibrated in): the index maximising
    /// `q − λ(F) · c` (first on ties); with `floor <= 0` the cheapest. `None` when
    /// there is no candidate. `ValueError` for NaN or mismatched lengths.
    pub fn utility_choice(
        &self,
        floor: f64,
        qualities: &[f64],
        costs: &[f64],
    ) -> Result<Option<usize>> {
        if floor.is_nan() || qualities.iter().chain(costs).any(|x| x.is_nan()) {
            return Err(CoreError::invalid(
                "floor, qualities and costs must not be NaN",
            ));
        }
        if qualities.len() != costs.len() {
            return Err(CoreError::invalid(
                "qualities and costs must have the same length",
            ));
        }
        let lambda = self.cost_weight(floor);
        let mut best: Option<(usize, f64, f64)> = None;
        for (i, (&q, &c)) in qualities.iter().zip(costs).enumerate() {
            // No floor: cheapest first, then the better prediction.
            let (key, tie) = if floor <= 0.0 {
                (-c, q)
            } else {
                (q - lambda * c, -c)
            };
            let better = best.is_none_or(|(_, k, t)| match key.total_cmp(&k) {
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Equal => tie > t,
                std::cmp::Ordering::Less => false,
            });
            if better {
                best = Some((i, key, tie));
            }
        }
        Ok(best.map(|b| b.0))
    }

    /// Threshold rule (version 1): the absolute quality threshold for a request with
    /// floor `floor` whose best usable candidate predicts `best`: `clamp(F · best − offset(F), 0, best)`;
    /// 0 (no constraint) when `floor <= 0`. `ValueError` for NaN.
    pub fn min_quality(&self, floor: f64, best: f64) -> Result<f64> {
        if floor.is_nan() || best.is_nan() {
            return Err(CoreError::invalid("floor and best must not be NaN"));
        }
        if floor <= 0.0 || best <= 0.0 {
            return Ok(0.0);
        }
        Ok((floor * best - self.offset(floor)).clamp(0.0, best))
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // exact values by construction
mod tests {
    use super::*;
    use crate::features::sparse;

    fn model_json(table: &str) -> String {
        format!(
            r#"{{"format":"tiergate.quality_model","version":1,
            "features":{{"dim":64,"seed":7,"word_ngrams":2,"char_min":3,"char_max":4,"char_window":0}},
            "families":["small","large"],
            "intercepts":[0.5,-0.25],
            "weights":{{"rows":[1,5,64],"values":[0.1,0.2,-0.3,0.4,1.0,-1.0]}},
            "calibration":{{"method":"platt","a":[1.0,2.0],"b":[0.0,0.1]}},
            "operating_points":{{"table":{table}}}}}"#
        )
    }

    #[test]
    fn predicts_calibrated_logistic() {
        let m = QualityModel::from_json(model_json("[]").as_bytes()).unwrap();
        let doc = Doc::from_text("Prove that 2+2=4. Why?");
        let mut z = [0.5, -0.25];
        let w = |i: u32, f: usize| -> f64 {
            match (i, f) {
                (1, 0) => 0.1,
                (1, 1) => 0.2,
                (5, 0) => -0.3,
                (5, 1) => 0.4,
                (64, 0) => 1.0,
                (64, 1) => -1.0,
                _ => 0.0,
            }
        };
        for (i, v) in sparse(&m.features, &doc) {
            for (f, zf) in z.iter_mut().enumerate() {
                *zf += f64::from(v) * w(i, f);
            }
        }
        let got = m.predict(&doc);
        let want = [sigmoid(z[0]), sigmoid(2.0 * z[1] + 0.1)];
        for f in 0..2 {
            assert!((got[f] - want[f]).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    fn v3_json(head: &str) -> String {
        format!(
            r#"{{"format":"tiergate.quality_model","version":3,
            "features":{{"dim":64,"seed":7,"word_ngrams":2,"char_min":3,"char_max":4,"char_window":0}},
            "families":["small","large"],
            "latent":{{"names":["t0","t1","d0","d1","x"],"intercepts":[0.1,-0.1,0.2,0.0,0.5],
              "weights":{{"rows":[1,5,64],"values":[0.1,0.2,-0.3,0.4,0.0, 1.0,-1.0,0.5,0.25,0.0, 0.3,0.0,-0.2,0.1,0.0]}}}},
            "head":{head},
            "calibration":{{"method":"platt","a":[1.0,2.0],"b":[0.0,0.1]}},
            "operating_points":{{"rule":"utility","cost_usd":[0.001,0.01],"table":[]}}}}"#
        )
    }

    #[test]
    fn version_3_gated_head() {
        let head = r#"{"gate":[0,1],"inputs":[2,3],
            "bias":[0.5,-0.5, 1.0,0.0],
            "coef":[2.0,0.0, 0.0,-1.0, 0.5,0.0, 0.0,3.0]}"#;
        let m = QualityModel::from_json(v3_json(head).as_bytes()).unwrap();
        assert_eq!(m.rule, Rule::Utility);
        let doc = Doc::from_text("Prove that 2+2=4. Why?");
        // latent by the sparse features
        let w = [
            (1u32, [0.1, 0.2, -0.3, 0.4, 0.0]),
            (5, [1.0, -1.0, 0.5, 0.25, 0.0]),
            (64, [0.3, 0.0, -0.2, 0.1, 0.0]),
        ];
        let mut u = [0.1, -0.1, 0.2, 0.0, 0.5];
        for (i, v) in sparse(&m.features, &doc) {
            for (r, row) in &w {
                if *r == i {
                    for (uj, wj) in u.iter_mut().zip(row) {
                        *uj += f64::from(v) * wj;
                    }
                }
            }
        }
        let got_u = m.latent(&doc);
        for j in 0..5 {
            assert!((got_u[j] - u[j]).abs() < 1e-5, "{got_u:?} vs {u:?}");
        }
        let e0 = u[0].exp();
        let e1 = u[1].exp();
        let (p0, p1) = (e0 / (e0 + e1), e1 / (e0 + e1));
        let z_small = p0 * (0.5 + 2.0 * u[2]) + p1 * (-0.5 - u[3]);
        let z_large = p0 * (1.0 + 0.5 * u[2]) + p1 * (0.0 + 3.0 * u[3]);
        let got = m.predict(&doc);
        assert!((got[0] - sigmoid(z_small)).abs() < 1e-5, "{got:?}");
        assert!(
            (got[1] - sigmoid(2.0 * z_large + 0.1)).abs() < 1e-5,
            "{got:?}"
        );
        // no gate: one cluster
        let flat = r#"{"gate":[],"inputs":[4],"bias":[0.25,-0.25],"coef":[1.0,2.0]}"#;
        let m = QualityModel::from_json(v3_json(flat).as_bytes()).unwrap();
        let z = m.logits(&doc);
        assert!((z[0] - (0.25 + u[4])).abs() < 1e-5 && (z[1] - (-0.25 + 2.0 * u[4])).abs() < 1e-5);
        // malformed heads
        for bad in [
            r#"{"gate":[0,9],"inputs":[2],"bias":[0,0,0,0],"coef":[0,0,0,0]}"#,
            r#"{"gate":[0,1],"inputs":[2],"bias":[0,0,0],"coef":[0,0,0,0]}"#,
            r#"{"gate":[0,1],"inputs":[2],"bias":[0,0,0,0],"coef":[0,0,0]}"#,
            r#"{"inputs":[2],"bias":[0,0],"coef":[0,0]}"#,
        ] {
            assert!(
                QualityModel::from_json(v3_json(bad).as_bytes()).is_err(),
                "{bad}"
            );
        }
        assert!(QualityModel::from_json(
            v3_json(flat)
                .replace("\"latent\"", "\"latent0\"")
                .as_bytes()
        )
        .is_err());
    }

    #[test]
    fn version_4_prices_each_prompt() {
        let head = r#"{"gate":[0,1],"inputs":[2,3],
            "bias":[0.5,-0.5, 1.0,0.0],
            "coef":[2.0,0.0, 0.0,-1.0, 0.5,0.0, 0.0,3.0]}"#;
        let v3 = v3_json(head);
        let cost_model =
            r#""cost_model":{"intercepts":[0.001,0.02, 0.003,0.01],"per_kchar":[0.0005,-5.0]},"#;
        let v4 = v3.replace("\"version\":3", "\"version\":4").replace(
            "\"operating_points\":{",
            &format!("\"operating_points\":{{{cost_model}"),
        );
        let m3 = QualityModel::from_json(v3.as_bytes()).unwrap();
        let m4 = QualityModel::from_json(v4.as_bytes()).unwrap();
        assert_eq!((m3.version, m4.version), (3, 4));
        let text = "Prove that 2+2=4. Why? é";
        let doc = Doc::from_text(text);
        let chars = text.chars().count();
        assert_eq!(chars, text.len() - 1); // "é" is one character, two bytes
        let u = m4.latent(&doc);
        let e0 = u[0].exp();
        let e1 = u[1].exp();
        let (p0, p1) = (e0 / (e0 + e1), e1 / (e0 + e1));
        let (probs, costs) = m4.score(&doc);
        assert_eq!(probs, m4.predict(&doc));
        assert_eq!(probs, m3.predict(&doc));
        let kchars = chars as f64 / 1000.0;
        let want_small = p0 * 0.001 + p1 * 0.003 + 0.0005 * kchars;
        assert!((costs[0] - want_small).abs() < 1e-12, "{costs:?}");
        // a negative prediction is priced at 0
        let large = p0 * 0.02 + p1 * 0.01 - 5.0 * kchars;
        assert!(large < 0.0 && costs[1] == 0.0, "{costs:?}");
        // versions 2 and 3 price at the mean cost
        assert_eq!(m3.score(&doc).1, vec![0.001, 0.01]);
        let body = br#"{"messages":[{"role":"user","content":"Prove that 2+2=4. Why? \u00e9"}]}"#;
        assert_eq!(m4.score_body(body).unwrap(), (probs, costs));
        // version 4 needs a cost model with G × k intercepts and k slopes
        assert!(
            QualityModel::from_json(v3.replace("\"version\":3", "\"version\":4").as_bytes())
                .is_err()
        );
        for (from, to) in [
            ("[0.001,0.02, 0.003,0.01]", "[0.001,0.02, 0.003]"),
            ("[0.0005,-5.0]", "[0.0005]"),
            ("\"per_kchar\"", "\"slope\""),
        ] {
            assert!(
                QualityModel::from_json(v4.replace(from, to).as_bytes()).is_err(),
                "{from} -> {to}"
            );
        }
        // no gate: one cluster of intercepts
        let flat = r#"{"gate":[],"inputs":[4],"bias":[0.25,-0.25],"coef":[1.0,2.0]}"#;
        let one = v3_json(flat).replace("\"version\":3", "\"version\":4").replace(
            "\"operating_points\":{",
            r#""operating_points":{"cost_model":{"intercepts":[0.002,0.004],"per_kchar":[0.0,0.0]},"#,
        );
        let m = QualityModel::from_json(one.as_bytes()).unwrap();
        assert_eq!(m.score(&doc).1, vec![0.002, 0.004]);
    }

    #[test]
    fn offsets_interpolate_and_clamp() {
        let m = QualityModel::from_json(
            model_json(r#"[{"floor":0.9,"offset":0.02},{"floor":0.8,"offset":0.1}]"#).as_bytes(),
        )
        .unwrap();
        assert!((m.offset(0.85) - 0.06).abs() < 1e-12);
        assert!((m.offset(0.5) - 0.1).abs() < 1e-12);
        assert!((m.offset(0.99) - 0.02).abs() < 1e-12);
        assert!((m.min_quality(0.9, 0.8).unwrap() - (0.72 - 0.02)).abs() < 1e-12);
        assert_eq!(m.min_quality(0.0, 0.8).unwrap(), 0.0);
        // never above the best candidate's own prediction
        let strict =
            QualityModel::from_json(model_json(r#"[{"floor":0.9,"offset":-0.5}]"#).as_bytes())
                .unwrap();
        assert_eq!(strict.min_quality(0.9, 0.8).unwrap(), 0.8);
        assert!(m.min_quality(f64::NAN, 0.5).is_err());
    }

    #[test]
    fn utility_rule_picks_the_best_trade_off() {
        let v2 = model_json(r#"[{"floor":0.9,"lambda":100},{"floor":0.95,"lambda":10}]"#)
            .replace("\"version\":1", "\"version\":2")
            .replace(
                "\"operating_points\":{",
                "\"operating_points\":{\"rule\":\"utility\",\"cost_usd\":[0.001,0.01],",
            );
        let m = QualityModel::from_json(v2.as_bytes()).unwrap();
        assert_eq!(m.rule, Rule::Utility);
        assert_eq!(m.costs(), &[0.001, 0.01]);
        assert!((m.cost_weight(0.925) - 55.0).abs() < 1e-9);
        assert_eq!(m.cost_weight(0.99), 10.0);
        assert_eq!(m.offset(0.9), 0.0);
        let (q, c) = ([0.7, 0.9], [0.001, 0.01]);
        // λ=100: 0.7-0.1 vs 0.9-1.0 → cheap; λ=10: 0.69 vs 0.8 → dear
        assert_eq!(m.utility_choice(0.9, &q, &c).unwrap(), Some(0));
        assert_eq!(m.utility_choice(0.95, &q, &c).unwrap(), Some(1));
        assert_eq!(m.utility_choice(0.0, &q, &c).unwrap(), Some(0));
        assert_eq!(m.utility_choice(0.95, &[], &[]).unwrap(), None);
        assert!(m.utility_choice(0.95, &q, &c[..1]).is_err());
        let neg = v2.replace("\"lambda\":10", "\"lambda\":-1");
        assert!(QualityModel::from_json(neg.as_bytes()).is_err());
        let v1 = QualityModel::from_json(model_json("[]").as_bytes()).unwrap();
        assert_eq!((v1.rule, v1.cost_weight(0.9)), (Rule::Threshold, 0.0));
    }

    #[test]
    fn rejects_malformed_files() {
        let good = model_json("[]");
        for (from, to) in [
            ("\"version\":1", "\"version\":5"),
            ("\"version\":1", "\"version\":3"), // version 3 needs latent and head
            ("\"version\":1", "\"version\":4"), // version 4 too, and a cost model
            ("\"version\":1", "\"version\":2"), // version 2 needs cost_usd
            ("tiergate.quality_model", "other"),
            ("[0.5,-0.25]", "[0.5]"),
            ("[1,5,64]", "[1,5,99]"),
            ("\"platt\"", "\"isotonic\""),
            ("\"families\":[\"small\",\"large\"]", "\"families\":[]"),
        ] {
            let bad = good.replace(from, to);
            assert!(
                QualityModel::from_json(bad.as_bytes()).is_err(),
                "{from} -> {to}"
            );
        }
        assert!(QualityModel::from_json(b"{").is_err());
        let dup = model_json(r#"[{"floor":0.9,"offset":0},{"floor":0.9,"offset":1}]"#);
        assert!(QualityModel::from_json(dup.as_bytes()).is_err());
    }
}
