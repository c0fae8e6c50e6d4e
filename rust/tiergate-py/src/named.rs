//! Bindings of `named`: a shape described in Python, JSON arrays in, JSON objects out.
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};
use tiergate_core::named::{Field, Shape};

use crate::to_py;

fn field(item: &Bound<'_, PyAny>) -> PyResult<Field> {
    if let Ok(name) = item.cast::<PyString>() {
        return Ok(Field::Value(name.to_str()?.to_owned()));
    }
    let (name, kind, inner): (String, String, Bound<'_, PyList>) =
        item.extract().map_err(|_| {
            PyTypeError::new_err("a field is a name, or (name, \"object\" | \"objects\", [fields])")
        })?;
    let inner = shape(&inner)?;
    match kind.as_str() {
        "object" => Ok(Field::Object(name, inner)),
        "objects" => Ok(Field::Objects(name, inner)),
        _ => Err(PyTypeError::new_err(format!(
            "field {name:?}: kind must be \"object\" or \"objects\", not {kind:?}"
        ))),
    }
}

fn shape(fields: &Bound<'_, PyList>) -> PyResult<Shape> {
    Ok(Shape::new(
        fields.iter().map(|f| field(&f)).collect::<PyResult<_>>()?,
    ))
}

/// The names of a JSON array's elements (see `tiergate_core::named`).
#[pyclass(frozen, module = "tiergate._core")]
struct JsonShape {
    inner: Shape,
}

#[pymethods]
impl JsonShape {
    #[new]
    fn new(fields: &Bound<'_, PyList>) -> PyResult<Self> {
        Ok(Self {
            inner: shape(fields)?,
        })
    }

    /// `array` (compact JSON, as orjson writes a list) as the object naming its values.
    fn write<'py>(&self, py: Python<'py>, array: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Vec::new();
        self.inner.write(array, &mut out).map_err(to_py)?;
        Ok(PyBytes::new(py, &out))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<JsonShape>()?;
    Ok(())
}
