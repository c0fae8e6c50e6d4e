//! The learned quality model (issue 6): one calibrated probability of a correct answer
//! per model family, from the features of [`crate::features`].
//!
//! # Model file (JSON, `format = "tiergate.quality_model"`, `version = 1`)
//! ```text
//! features         the FeatureConfig (dim, seed, word_ngrams, char_min, char_max,
//!                  char_window, structure names)
//! families         [name, ...]                          k families
//! intercepts       [b_f; k]
//! weights          {"rows": [i, ...], "values": [w; rows × k]}   row-major: the k
//!                  weights of feature i are values[r*k .. r*k+k]; absent rows are 0
//! calibration      {"method": "platt", "a": [k], "b": [k]}  p = σ(a·z + b)
//! operating_points {"table": [{"floor": F, "offset": o, ...}, ...], ...}
//! ```
//! Other keys (training summary, mean costs, reference) are carried for Python and
//! ignored here.
//!
//! # Scoring
//! `z_f = b_f + Σ_i x_i · w_{i,f}`, then `p_f = σ(a_f · z_f + c_f)`: one pass over the
//! document's n-grams accumulates all families at once.
//!
//! # Floor rule
//! A request with accuracy floor `F` (route, tenant or `x-tiergate-min-quality`) keeps
//! the candidates whose predicted quality `q ≥ F · q_best − offset(F)`, where `q_best` is
//! the best prediction among the candidates it may use and `offset(F)` is the model's
//! operating point, linearly interpolated in the table by floor (clamped at its ends).
//! The threshold never exceeds `q_best`, so the best candidate is always kept; `F ≤ 0`
//! is no floor.

use serde_json::Value;

use crate::error::{CoreError, Result};
use crate::features::{accumulate, Doc, FeatureConfig};

/// Model file format name and the version this core reads.
pub const FORMAT: &str = "tiergate.quality_model";
pub const VERSION: u64 = 1;
/// Most families a model may hold.
pub const MAX_FAMILIES: usize = 64;

/// One row of the operating-point table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OperatingPoint {
    pub floor: f64,
    pub offset: f64,
}

/// A loaded model: immutable, shared behind an `Arc` by the bindings.
#[derive(Debug)]
pub struct QualityModel {
    pub features: FeatureConfig,
    pub families: Vec<String>,
    intercepts: Vec<f64>,
    /// `width × k`, row-major.
    weights: Vec<f32>,
    platt_a: Vec<f64>,
    platt_b: Vec<f64>,
    /// Sorted by floor, floors unique.
    points: Vec<OperatingPoint>,
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

impl QualityModel {
    /// Parse and check a model file. Every error names the field at fault.
    pub fn from_json(data: &[u8]) -> Result<Self> {
        let v: Value =
            serde_json::from_slice(data).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        if v.get("format").and_then(Value::as_str) != Some(FORMAT) {
            return Err(bad(format!("`format` must be {FORMAT:?}")));
        }
        match v.get("version").and_then(Value::as_u64) {
            Some(VERSION) => {}
            other => {
                return Err(bad(format!(
                    "unsupported `version` {other:?}; this core reads version {VERSION}"
                )))
            }
        }
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
        let intercepts = floats(v.get("intercepts"), "intercepts", k)?;
        let w = v
            .get("weights")
            .ok_or_else(|| bad("`weights` is missing"))?;
        let rows = w
            .get("rows")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("`weights.rows` must be an array of feature indices"))?;
        let values = floats(w.get("values"), "weights.values", rows.len() * k)?;
        let width = features.width();
        let mut weights = vec![0f32; width * k];
        for (r, idx) in rows.iter().enumerate() {
            let i = idx
                .as_u64()
                .filter(|&i| (i as usize) < width)
                .ok_or_else(|| bad(format!("`weights.rows[{r}]` is not an index below {width}")))?
                as usize;
            for f in 0..k {
                weights[i * k + f] = values[r * k + f] as f32;
            }
        }
        let cal = v
            .get("calibration")
            .ok_or_else(|| bad("`calibration` is missing"))?;
        if cal.get("method").and_then(Value::as_str) != Some("platt") {
            return Err(bad("`calibration.method` must be \"platt\""));
        }
        let platt_a = floats(cal.get("a"), "calibration.a", k)?;
        let platt_b = floats(cal.get("b"), "calibration.b", k)?;
        let mut points = Vec::new();
        if let Some(table) = v.get("operating_points").and_then(|o| o.get("table")) {
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
                points.push(OperatingPoint {
                    floor: num("floor")?,
                    offset: num("offset")?,
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
        Ok(Self {
            features,
            families,
            intercepts,
            weights,
            platt_a,
            platt_b,
            points,
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
        let mut z = self.intercepts.clone();
        accumulate(&self.features, doc, &self.weights, self.len(), &mut z);
        z
    }

    /// Calibrated probability of a correct answer, one per family.
    pub fn predict(&self, doc: &Doc) -> Vec<f64> {
        let mut z = self.logits(doc);
        for (f, zf) in z.iter_mut().enumerate() {
            *zf = sigmoid(self.platt_a[f] * *zf + self.platt_b[f]);
        }
        z
    }

    pub fn predict_text(&self, text: &str) -> Vec<f64> {
        self.predict(&Doc::from_text(text))
    }

    pub fn predict_body(&self, body: &[u8]) -> Result<Vec<f64>> {
        Ok(self.predict(&Doc::from_body(body)?))
    }

    /// `offset(F)`: linear interpolation in the table, clamped at its ends; 0 when the
    /// table is empty (the uncalibrated rule `q ≥ F · q_best`).
    pub fn offset(&self, floor: f64) -> f64 {
        let pts = &self.points;
        match pts.len() {
            0 => 0.0,
            _ if floor <= pts[0].floor => pts[0].offset,
            len if floor >= pts[len - 1].floor => pts[len - 1].offset,
            _ => {
                let hi = pts.partition_point(|x| x.floor <= floor);
                let (lo, up) = (pts[hi - 1], pts[hi]);
                let share = (floor - lo.floor) / (up.floor - lo.floor);
                lo.offset + share * (up.offset - lo.offset)
            }
        }
    }

    /// The absolute quality threshold for a request with floor `floor` whose best
    /// usable candidate predicts `best`: `clamp(F · best − offset(F), 0, best)`;
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
    fn rejects_malformed_files() {
        let good = model_json("[]");
        for (from, to) in [
            ("\"version\":1", "\"version\":2"),
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
