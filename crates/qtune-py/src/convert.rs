//! numpy arrays <-> qtune tensors.
//!
//! Outputs move their buffer into the numpy array (no copy) when the tensor
//! holds the only reference to it, which is the case for a model's outputs.
//! Inputs are copied once: a qtune tensor owns its buffer (reference
//! counted, shared between runs), so it cannot borrow numpy's memory.
//! Arrays of another layout than C-contiguous are gathered in that copy.

use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};
use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use qtune_tensor::{Tensor, TensorData};

use crate::errors::InputError;

/// The elements of a numpy array of element type `T`, copied in C order.
fn elements<T: numpy::Element + Clone>(a: &Bound<'_, PyArrayDyn<T>>) -> PyResult<Vec<T>> {
    let ro = a.try_readonly()?;
    Ok(match ro.as_slice() {
        Ok(s) => s.to_vec(),
        Err(_) => ro.as_array().iter().cloned().collect(),
    })
}

/// The tensor of a numpy array (`name` names it in errors).
pub fn tensor_of(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Tensor> {
    macro_rules! try_dtype {
        ($t:ty, $variant:ident) => {
            if let Ok(a) = obj.cast::<PyArrayDyn<$t>>() {
                let dims = a.shape().to_vec();
                let data = TensorData::$variant(Arc::new(elements(a)?));
                return Tensor::new(dims, data)
                    .map_err(|e| InputError::new_err(format!("array `{name}`: {e}")));
            }
        };
    }
    try_dtype!(f32, F32);
    try_dtype!(i64, I64);
    try_dtype!(i32, I32);
    try_dtype!(bool, Bool);
    try_dtype!(u8, U8);
    try_dtype!(i8, I8);
    let what = match obj.getattr("dtype") {
        Ok(d) => format!(
            "an array of dtype {}",
            d.str().map(|s| s.to_string()).unwrap_or_default()
        ),
        Err(_) => format!(
            "a {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ),
    };
    Err(InputError::new_err(format!(
        "array `{name}`: expected a numpy array of float32, int64, int32, bool, uint8 or int8, \
         got {what}"
    )))
}

/// A buffer out of its `Arc` without a copy when it is the only reference.
fn unshared<T: Clone>(v: Arc<Vec<T>>) -> Vec<T> {
    Arc::try_unwrap(v).unwrap_or_else(|shared| shared.to_vec())
}

fn array_of<'py, T: numpy::Element>(
    py: Python<'py>,
    dims: &[usize],
    data: Vec<T>,
) -> PyResult<Bound<'py, PyAny>> {
    let a = ArrayD::from_shape_vec(IxDyn(dims), data)
        .map_err(|e| crate::errors::QtuneError::new_err(format!("internal error: {e}")))?;
    Ok(PyArrayDyn::from_owned_array(py, a).into_any())
}

/// The numpy array of a tensor (no copy when the buffer is not shared).
pub fn array(py: Python<'_>, t: Tensor) -> PyResult<Bound<'_, PyAny>> {
    let dims = t.dims().to_vec();
    match t.data().clone() {
        TensorData::F32(v) => {
            drop(t);
            array_of(py, &dims, unshared(v))
        }
        TensorData::I64(v) => {
            drop(t);
            array_of(py, &dims, unshared(v))
        }
        TensorData::I32(v) => {
            drop(t);
            array_of(py, &dims, unshared(v))
        }
        TensorData::Bool(v) => {
            drop(t);
            array_of(py, &dims, unshared(v))
        }
        TensorData::U8(v) => {
            drop(t);
            array_of(py, &dims, unshared(v))
        }
        TensorData::I8(v) => {
            drop(t);
            array_of(py, &dims, unshared(v))
        }
    }
}

/// A dict of numpy arrays, in the given order.
pub fn dict_of(py: Python<'_>, arrays: Vec<(String, Tensor)>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    for (name, t) in arrays {
        d.set_item(name, array(py, t)?)?;
    }
    Ok(d)
}
