//! Bindings of the quality classifier: `features_batch` for training (CSR arrays as
//! little-endian bytes, so numpy reads them without a copy through Python objects) and
//! the `QualityModel` handle for serving. Conversion and error mapping only.
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use tiergate_core::features::{self, Doc, FeatureConfig};
use tiergate_core::quality;

use crate::to_py;

/// A document from `str` (a plain prompt) or `bytes` (a chat-completions body).
fn doc(item: &Bound<'_, PyAny>) -> PyResult<Doc> {
    if let Ok(b) = item.cast::<PyBytes>() {
        return Doc::from_body(b.as_bytes()).map_err(to_py);
    }
    let s: &str = item.extract()?;
    Ok(Doc::from_text(s))
}

fn le_bytes<'py, T: Copy, const N: usize>(
    py: Python<'py>,
    xs: &[T],
    f: impl Fn(T) -> [u8; N],
) -> Bound<'py, PyBytes> {
    let mut out = Vec::with_capacity(xs.len() * N);
    for &x in xs {
        out.extend_from_slice(&f(x));
    }
    PyBytes::new(py, &out)
}

/// `(indices int32, values float32, indptr int64)` as little-endian bytes.
#[pyfunction]
fn features_batch<'py>(
    py: Python<'py>,
    items: &Bound<'py, PyAny>,
    config: &str,
) -> PyResult<Bound<'py, PyTuple>> {
    let cfg = FeatureConfig::from_json(config).map_err(to_py)?;
    let docs = items
        .try_iter()?
        .map(|it| doc(&it?))
        .collect::<PyResult<Vec<_>>>()?;
    let (idx, val, ptr) = features::batch(&cfg, &docs);
    PyTuple::new(
        py,
        [
            le_bytes(py, &idx, i32::to_le_bytes),
            le_bytes(py, &val, f32::to_le_bytes),
            le_bytes(py, &ptr, i64::to_le_bytes),
        ],
    )
}

/// The feature config with every default filled in, as JSON.
#[pyfunction]
#[pyo3(signature = (config = "{}"))]
fn feature_config(config: &str) -> PyResult<String> {
    let cfg = FeatureConfig::from_json(config).map_err(to_py)?;
    Ok(cfg.to_value().to_string())
}

/// The text the classifier reads of a chat-completions body.
#[pyfunction]
fn classifier_text(body: &[u8]) -> PyResult<String> {
    Ok(Doc::from_body(body).map_err(to_py)?.text)
}

#[pyclass(frozen, module = "tiergate._core")]
struct QualityModel {
    inner: Arc<quality::QualityModel>,
    families: Py<PyTuple>,
}

#[pymethods]
impl QualityModel {
    #[staticmethod]
    fn from_json(py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        let inner = quality::QualityModel::from_json(data).map_err(to_py)?;
        let families = PyTuple::new(py, &inner.families)?.unbind();
        Ok(Self {
            inner: Arc::new(inner),
            families,
        })
    }

    #[getter]
    fn families(&self, py: Python<'_>) -> Py<PyTuple> {
        self.families.clone_ref(py)
    }

    #[getter]
    fn feature_config(&self) -> String {
        self.inner.features.to_value().to_string()
    }

    /// `(floor, offset)` (threshold rule) or `(floor, λ)` (utility rule) rows.
    #[getter]
    fn operating_points(&self) -> Vec<(f64, f64)> {
        self.inner
            .operating_points()
            .iter()
            .map(|p| (p.floor, p.value))
            .collect()
    }

    /// `"threshold"` (version-1 files) or `"utility"` (versions 2 to 4).
    #[getter]
    fn rule(&self) -> &'static str {
        match self.inner.rule {
            quality::Rule::Threshold => "threshold",
            quality::Rule::Utility => "utility",
        }
    }

    /// Mean cost per call per family of the utility rule (empty for version 1).
    #[getter]
    fn costs(&self) -> Vec<f64> {
        self.inner.costs().to_vec()
    }

    fn cost_weight(&self, floor: f64) -> PyResult<f64> {
        if floor.is_nan() {
            return Err(PyValueError::new_err("floor must not be NaN"));
        }
        Ok(self.inner.cost_weight(floor))
    }

    fn utility_choice(
        &self,
        floor: f64,
        qualities: Vec<f64>,
        costs: Vec<f64>,
    ) -> PyResult<Option<usize>> {
        self.inner
            .utility_choice(floor, &qualities, &costs)
            .map_err(to_py)
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Calibrated probability per family of one request (`bytes` body or `str` text).
    fn predict<'py>(
        &self,
        py: Python<'py>,
        item: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let p = self.inner.predict(&doc(item)?);
        PyList::new(py, p)
    }

    /// `(probabilities, costs)` per family of one request: the calibrated
    /// probabilities of `predict` and the cost per call the utility rule prices each
    /// family at for it (version 4: predicted for the prompt; versions 2 and 3: the
    /// mean cost; version 1: empty), from one pass.
    fn predict_costs<'py>(
        &self,
        py: Python<'py>,
        item: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
        let (p, c) = self.inner.score(&doc(item)?);
        Ok((PyList::new(py, p)?, PyList::new(py, c)?))
    }

    /// The model file's version (1 to 4).
    #[getter]
    fn version(&self) -> u64 {
        self.inner.version
    }

    /// The latent scores of a version-3 model (the families' logits before).
    fn latent<'py>(
        &self,
        py: Python<'py>,
        item: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let u = self.inner.latent(&doc(item)?);
        PyList::new(py, u)
    }

    /// Uncalibrated scores per family.
    fn logits<'py>(
        &self,
        py: Python<'py>,
        item: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let z = self.inner.logits(&doc(item)?);
        PyList::new(py, z)
    }

    fn offset(&self, floor: f64) -> PyResult<f64> {
        if floor.is_nan() {
            return Err(PyValueError::new_err("floor must not be NaN"));
        }
        Ok(self.inner.offset(floor))
    }

    fn min_quality(&self, floor: f64, best: f64) -> PyResult<f64> {
        self.inner.min_quality(floor, best).map_err(to_py)
    }

    fn __repr__(&self) -> String {
        format!(
            "QualityModel(<{} families>, dim={})",
            self.inner.len(),
            self.inner.features.dim
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(features_batch, m)?)?;
    m.add_function(wrap_pyfunction!(feature_config, m)?)?;
    m.add_function(wrap_pyfunction!(classifier_text, m)?)?;
    m.add_class::<QualityModel>()?;
    m.add(
        "STRUCTURE_FEATURES",
        PyTuple::new(m.py(), features::STRUCTURE)?,
    )?;
    m.add("QUALITY_MODEL_VERSION", quality::VERSION)?;
    Ok(())
}
