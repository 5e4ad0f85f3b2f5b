//! Single `.npy` payloads held in memory, for exchanging arrays with another
//! process (the `--post_process` Python child) without touching the disk.
//! The accepted element types are those of [`crate::read_npz`]: float32,
//! float64 (converted to float32), int64, int32, bool, uint8 and int8.

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::{ReadNpyError, ReadNpyExt, WriteNpyExt};

use crate::npz::{arr, to_tensor, try_element_types};
use crate::tensor::{Tensor, TensorData};

/// Why an in-memory `.npy` payload could not be decoded or encoded.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("malformed npy payload: {0}")]
    Malformed(String),
    #[error(
        "unsupported npy element type {descr} (expected float32, float64, int64, int32, bool, uint8 or int8)"
    )]
    UnsupportedType { descr: String },
    #[error("cannot encode npy payload: {0}")]
    Write(String),
}

/// Checks a `.npy` payload's header against the bytes present before any
/// element buffer is allocated: the shape's element count times the element
/// size must not overflow and must equal the data that follows the header
/// (the decoder allocates the count the header states, so a header claiming
/// 2^40 elements over a few bytes would otherwise abort the process).
pub(crate) fn check_npy_header(bytes: &[u8]) -> Result<(), String> {
    let magic = b"\x93NUMPY";
    if bytes.len() < 10 || &bytes[..6] != magic {
        return Err("not an npy payload (no \\x93NUMPY magic)".into());
    }
    let (len, start): (usize, usize) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            usize::try_from(u32::from_le_bytes([
                bytes[8], bytes[9], bytes[10], bytes[11],
            ]))
            .map_err(|e| e.to_string())?,
            12,
        ),
        v => return Err(format!("unsupported npy format version {v}")),
    };
    let end = start
        .checked_add(len)
        .filter(|&e| e <= bytes.len())
        .ok_or("the npy header runs past the end of the payload")?;
    let header = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| "the npy header is not text".to_string())?;
    let shape_at = header
        .find("'shape'")
        .ok_or("the npy header has no 'shape'")?;
    let rest = &header[shape_at..];
    let open = rest.find('(').ok_or("the npy 'shape' is not a tuple")?;
    let close = rest.find(')').ok_or("the npy 'shape' is not a tuple")?;
    if close < open {
        return Err("the npy 'shape' is not a tuple".into());
    }
    let mut dims = Vec::new();
    for d in rest[open + 1..close]
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        let d = d.trim_end_matches('L');
        dims.push(
            d.parse::<usize>()
                .map_err(|_| format!("the npy shape holds `{d}`, not an extent"))?,
        );
    }
    let descr_at = header
        .find("'descr'")
        .ok_or("the npy header has no 'descr'")?;
    let descr = header[descr_at + 7..]
        .split('\'')
        .nth(1)
        .ok_or("the npy 'descr' is not a string")?;
    // '<f4', '|b1', '|u1': the digits after the kind are the element size.
    let item: usize = descr
        .trim_start_matches(['<', '>', '|', '='])
        .get(1..)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("unsupported npy element type {descr}"))?;
    let what = || "npy array".to_string();
    let count = crate::checked_numel(&dims)
        .ok_or_else(|| format!("the element count of shape {dims:?} overflows"))?;
    let need = crate::check_bytes(&what, count, item).map_err(|e| e.to_string())?;
    let have = bytes.len() - end;
    if need != have {
        return Err(format!(
            "shape {dims:?} of {descr} needs {need} data bytes, the payload has {have}"
        ));
    }
    Ok(())
}

/// Decodes one `.npy` payload (header and data, nothing after it). float64
/// arrays become float32, as in [`crate::read_npz`]; Fortran-ordered arrays
/// come back in row-major order. The header is checked against the data
/// present before anything is allocated (`check_npy_header`).
pub fn npy_from_bytes(bytes: &[u8]) -> Result<Tensor, NpyError> {
    check_npy_header(bytes).map_err(NpyError::Malformed)?;
    // Every attempt sees the same stored descriptor; keep it for the error.
    let mut stored_descr: Option<String> = None;
    // ndarray-npy checks the stored descriptor against the requested element
    // type, so try each supported type in turn; only a mismatch moves on.
    macro_rules! attempt {
        ($t:ty, $wrap:expr) => {
            match ArrayD::<$t>::read_npy(bytes) {
                Ok(a) => return Ok(to_tensor(a, $wrap)),
                Err(ReadNpyError::WrongDescriptor(descr)) => {
                    stored_descr.get_or_insert_with(|| descr.to_string());
                }
                Err(e) => return Err(NpyError::Malformed(e.to_string())),
            }
        };
    }
    try_element_types!(attempt);
    Err(NpyError::UnsupportedType {
        descr: stored_descr.unwrap_or_default(),
    })
}

/// Encodes a tensor as one `.npy` payload (format 1.0, little endian,
/// row-major), readable by `numpy.load` / `numpy.lib.format.read_array`.
pub fn npy_to_bytes(tensor: &Tensor) -> Result<Vec<u8>, NpyError> {
    let mut out = Vec::with_capacity(128 + tensor.numel() * 8);
    let shape = IxDyn(tensor.dims());
    let res = match tensor.data() {
        TensorData::F32(v) => arr(shape, v).write_npy(&mut out),
        TensorData::I64(v) => arr(shape, v).write_npy(&mut out),
        TensorData::I32(v) => arr(shape, v).write_npy(&mut out),
        TensorData::Bool(v) => arr(shape, v).write_npy(&mut out),
        TensorData::U8(v) => arr(shape, v).write_npy(&mut out),
        TensorData::I8(v) => arr(shape, v).write_npy(&mut out),
    };
    res.map_err(|e| NpyError::Write(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_type_bit_for_bit() {
        let specials = vec![
            f32::NAN,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE / 2.0,
            1.5,
        ];
        let cases = [
            Tensor::from_f32(vec![2, 3], specials).unwrap(),
            Tensor::from_f32(Vec::<usize>::new(), vec![7.0]).unwrap(),
            Tensor::from_f32(vec![0, 4], vec![]).unwrap(),
            Tensor::from_i64(vec![2], vec![i64::MIN, i64::MAX]).unwrap(),
            Tensor::new(vec![3], TensorData::I32(vec![1, -2, 3].into())).unwrap(),
            Tensor::from_bool(vec![1, 2], vec![true, false]).unwrap(),
            Tensor::new(vec![2], TensorData::U8(vec![0, 255].into())).unwrap(),
            Tensor::new(vec![2], TensorData::I8(vec![-128, 127].into())).unwrap(),
        ];
        let mut failures = Vec::new();
        for (i, t) in cases.iter().enumerate() {
            let back = npy_from_bytes(&npy_to_bytes(t).unwrap()).unwrap();
            let same = back.dims() == t.dims()
                && back.dtype() == t.dtype()
                && match (back.data(), t.data()) {
                    (TensorData::F32(a), TensorData::F32(b)) => a
                        .iter()
                        .zip(b.iter())
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    (a, b) => a == b,
                };
            if !same {
                failures.push(format!("case {i}: {t:?} came back as {back:?}"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn float64_becomes_float32() {
        let a = ndarray::arr1(&[1.0f64, -2.5]).into_dyn();
        let mut bytes = Vec::new();
        a.write_npy(&mut bytes).unwrap();
        let t = npy_from_bytes(&bytes).unwrap();
        assert_eq!(t, Tensor::from_f32(vec![2], vec![1.0, -2.5]).unwrap());
    }

    #[test]
    fn unsupported_and_malformed_payloads_are_errors() {
        let a = ndarray::arr1(&[1u16, 2]).into_dyn();
        let mut bytes = Vec::new();
        a.write_npy(&mut bytes).unwrap();
        let err = npy_from_bytes(&bytes).unwrap_err();
        assert!(err.to_string().contains("<u2"), "{err}");

        let err = npy_from_bytes(b"not an npy file").unwrap_err();
        assert!(matches!(err, NpyError::Malformed(_)), "{err}");
        let mut truncated =
            npy_to_bytes(&Tensor::from_f32(vec![4], vec![1.0; 4]).unwrap()).unwrap();
        truncated.truncate(truncated.len() - 3);
        assert!(matches!(
            npy_from_bytes(&truncated),
            Err(NpyError::Malformed(_))
        ));
    }
}
