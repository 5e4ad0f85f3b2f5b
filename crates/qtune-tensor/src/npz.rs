//! npz archives (numpy's `np.savez` / `np.savez_compressed`) as ordered maps
//! from array name to [`Tensor`]. Reading accepts float32, float64 (converted
//! to float32), int64, int32, bool, uint8 and int8 arrays.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::{NpzReader, NpzWriter, ReadNpzError};

use crate::tensor::{Tensor, TensorData};

#[derive(Debug, thiserror::Error)]
pub enum NpzError {
    #[error("cannot read npz file `{path}`: {message}")]
    Read { path: PathBuf, message: String },
    #[error(
        "npz file `{path}`, array `{name}`: unsupported element type (expected float32, float64, int64, int32, bool, uint8 or int8)"
    )]
    UnsupportedType { path: PathBuf, name: String },
    #[error("cannot write npz file `{path}`: {message}")]
    Write { path: PathBuf, message: String },
}

/// The element types the npz and npy readers accept, in the order they are
/// tried, each with how its data becomes [`TensorData`]: `$attempt!(type,
/// wrap)` per type, with the caller's own `attempt` macro. float64 is
/// narrowed to float32 on purpose: qtune computes in float32, and values
/// outside its range become infinities, as numpy's `astype` makes them.
macro_rules! try_element_types {
    ($attempt:ident) => {
        $attempt!(f32, |v| $crate::TensorData::F32(v.into()));
        $attempt!(i64, |v| $crate::TensorData::I64(v.into()));
        $attempt!(f64, |v: Vec<f64>| {
            #[allow(clippy::cast_possible_truncation)]
            let f: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
            $crate::TensorData::F32(f.into())
        });
        $attempt!(i32, |v| $crate::TensorData::I32(v.into()));
        $attempt!(bool, |v| $crate::TensorData::Bool(v.into()));
        $attempt!(u8, |v| $crate::TensorData::U8(v.into()));
        $attempt!(i8, |v| $crate::TensorData::I8(v.into()));
    };
}
pub(crate) use try_element_types;

pub(crate) fn to_tensor<T: Clone>(a: ArrayD<T>, wrap: impl FnOnce(Vec<T>) -> TensorData) -> Tensor {
    let shape = a.shape().to_vec();
    // A C-order array read from a file owns its elements in order from the
    // start of its buffer: take the buffer as it is (no copy). Otherwise
    // (Fortran order) copy in C order.
    let len = a.len();
    let data = if a.is_standard_layout() {
        match a.into_raw_vec_and_offset() {
            (v, Some(0) | None) if v.len() == len => v,
            (v, off) => {
                let off = off.unwrap_or(0);
                v[off..off + len].to_vec()
            }
        }
    } else {
        a.as_standard_layout().iter().cloned().collect::<Vec<T>>()
    };
    // The element count always matches the shape it came from.
    Tensor::new(shape, wrap(data)).unwrap_or_else(|_| unreachable!())
}

fn read_array(
    npz: &mut NpzReader<fs_err::File>,
    name: &str,
    path: &Path,
) -> Result<Tensor, NpzError> {
    // ndarray-npy checks the stored dtype against the requested one, so try
    // each supported type in turn; only a type mismatch moves on.
    macro_rules! attempt {
        ($t:ty, $wrap:expr) => {
            match npz.by_name::<ndarray::OwnedRepr<$t>, IxDyn>(name) {
                Ok(a) => return Ok(to_tensor(a, $wrap)),
                Err(ReadNpzError::Npy(ndarray_npy::ReadNpyError::WrongDescriptor(_))) => {}
                Err(e) => {
                    return Err(NpzError::Read {
                        path: path.to_path_buf(),
                        message: format!("array `{name}`: {e}"),
                    })
                }
            }
        };
    }
    try_element_types!(attempt);
    Err(NpzError::UnsupportedType {
        path: path.to_path_buf(),
        name: name.to_string(),
    })
}

/// Reads every array of an npz file, in archive order. Names lose numpy's
/// `.npy` suffix.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>, NpzError> {
    let read_err = |message: String| NpzError::Read {
        path: path.to_path_buf(),
        message,
    };
    let file = fs_err::File::open(path).map_err(|e| read_err(e.to_string()))?;
    let mut npz = NpzReader::new(file).map_err(|e| read_err(e.to_string()))?;
    let names = npz.names().map_err(|e| read_err(e.to_string()))?;
    let mut out = Vec::with_capacity(names.len());
    for raw in names {
        let name = raw.strip_suffix(".npy").unwrap_or(&raw).to_string();
        let t = read_array(&mut npz, &raw, path)?;
        out.push((name, t));
    }
    Ok(out)
}

/// Writes tensors to an npz file atomically (temporary file, then rename), so
/// a failed run never leaves a half-written archive. The arrays are stored
/// uncompressed, as `numpy.savez` (and TPU-MLIR's weight files) store them:
/// loading a model's weights then needs no inflate pass.
pub fn write_npz(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), NpzError> {
    let write_err = |message: String| NpzError::Write {
        path: path.to_path_buf(),
        message,
    };
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut npz = NpzWriter::new(&mut buf);
        for (name, t) in tensors {
            let shape = IxDyn(t.dims());
            let res = match t.data() {
                TensorData::F32(v) => npz.add_array(name.as_str(), &arr(shape, v)),
                TensorData::I64(v) => npz.add_array(name.as_str(), &arr(shape, v)),
                TensorData::I32(v) => npz.add_array(name.as_str(), &arr(shape, v)),
                TensorData::Bool(v) => npz.add_array(name.as_str(), &arr(shape, v)),
                TensorData::U8(v) => npz.add_array(name.as_str(), &arr(shape, v)),
                TensorData::I8(v) => npz.add_array(name.as_str(), &arr(shape, v)),
            };
            res.map_err(|e| write_err(format!("array `{name}`: {e}")))?;
        }
        npz.finish().map_err(|e| write_err(e.to_string()))?;
    }
    let bytes = buf.into_inner();
    crate::write_atomic(path, |w| std::io::Write::write_all(w, &bytes))
        .map_err(|e| write_err(e.to_string()))
}

pub(crate) fn arr<T: Clone>(shape: IxDyn, v: &[T]) -> ArrayD<T> {
    // The tensor's element count always matches its shape.
    ArrayD::from_shape_vec(shape, v.to_vec()).unwrap_or_else(|_| unreachable!())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_become_c_order_tensors_with_or_without_a_copy() {
        use ndarray::ShapeBuilder;
        let c =
            ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let f = ArrayD::from_shape_vec(IxDyn(&[2, 3]).f(), vec![0.0f32, 3.0, 1.0, 4.0, 2.0, 5.0])
            .unwrap();
        let sliced = c.slice(ndarray::s![1.., ..]).to_owned().into_dyn();
        for (a, want) in [
            (c, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]),
            (f, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]),
            (sliced, vec![3.0, 4.0, 5.0]),
        ] {
            let dims = a.shape().to_vec();
            let t = to_tensor(a, |v| TensorData::F32(v.into()));
            assert_eq!(t.dims(), dims.as_slice());
            assert_eq!(t.as_f32().unwrap(), want.as_slice());
        }
    }

    #[test]
    fn round_trip_keeps_names_types_and_order() {
        let dir = std::env::temp_dir().join(format!("qtune-npz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.npz");
        let tensors = vec![
            (
                "zeta".to_string(),
                Tensor::from_f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5]).unwrap(),
            ),
            (
                "alpha/ids".to_string(),
                Tensor::from_i64(vec![1, 2], vec![7, -9]).unwrap(),
            ),
            (
                "mask".to_string(),
                Tensor::from_bool(vec![3], vec![true, false, true]).unwrap(),
            ),
        ];
        write_npz(&path, &tensors).unwrap();
        let back = read_npz(&path).unwrap();
        assert_eq!(back, tensors);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = read_npz(Path::new("/nonexistent/x.npz")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.npz"), "{err}");
    }
}
