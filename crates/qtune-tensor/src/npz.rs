//! npz archives (numpy's `np.savez` / `np.savez_compressed`) as ordered maps
//! from array name to [`Tensor`]. Reading accepts float32, float64 (converted
//! to float32), int64, int32, bool, uint8 and int8 arrays.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::NpzWriter;

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

/// Reads every array of an npz file, in archive order. Names lose numpy's
/// `.npy` suffix. Each member is read whole (its declared size checked
/// against the machine's memory, and the bytes actually present against
/// the size) and its npy header checked against its data before the array
/// is decoded: sizes in a file are never trusted for an allocation.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>, NpzError> {
    let read_err = |message: String| NpzError::Read {
        path: path.to_path_buf(),
        message,
    };
    let file = fs_err::File::open(path).map_err(|e| read_err(e.to_string()))?;
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    let mut zip = zip::ZipArchive::new(file).map_err(|e| read_err(e.to_string()))?;
    let mut out = Vec::with_capacity(zip.len().min(1 << 16));
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| read_err(e.to_string()))?;
        let raw = entry.name().to_string();
        let name = raw.strip_suffix(".npy").unwrap_or(&raw).to_string();
        let member_err = |message: String| read_err(format!("array `{name}`: {message}"));
        let declared = entry.size();
        let what = || format!("array `{name}`");
        // A stored member cannot be larger than the file; a deflated one is
        // bounded by the machine's memory (and the bytes read are checked
        // against the declared size below).
        if entry.compression() == zip::CompressionMethod::Stored && declared > file_len {
            return Err(member_err(format!(
                "declares {declared} bytes, the file has {file_len}"
            )));
        }
        let cap = usize::try_from(declared).unwrap_or(usize::MAX);
        crate::check_bytes(&what, cap, 1).map_err(|e| read_err(e.to_string()))?;
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(cap)
            .map_err(|e| member_err(e.to_string()))?;
        std::io::Read::read_to_end(
            &mut std::io::Read::take(&mut entry, declared.saturating_add(1)),
            &mut bytes,
        )
        .map_err(|e| member_err(e.to_string()))?;
        if u64::try_from(bytes.len()).ok() != Some(declared) {
            return Err(member_err(format!(
                "declares {declared} bytes, holds {}",
                bytes.len()
            )));
        }
        let t = match crate::npy_from_bytes(&bytes) {
            Ok(t) => t,
            Err(crate::NpyError::UnsupportedType { .. }) => {
                return Err(NpzError::UnsupportedType {
                    path: path.to_path_buf(),
                    name,
                });
            }
            Err(e) => return Err(member_err(e.to_string())),
        };
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
