//! `TensorProto` to [`Tensor`] conversion, including external data.
//!
//! Spec: <https://onnx.ai/onnx/repo-docs/IR.html#tensor-definition>. Stored
//! data may be in the typed fields (`float_data`, `int32_data`, ...) or in
//! `raw_data` (little-endian), or in an external file (`data_location =
//! EXTERNAL`, keys `location`, `offset`, `length`, relative to the model's
//! directory).
//!
//! Deviation: qtune has no f16, bf16 or f64 element type, so FLOAT16,
//! BFLOAT16 and DOUBLE tensors are widened or narrowed to f32 on import.
//! Those types are accepted only for stored tensors (initializers and
//! Constant values), where the conversion is exact (f16, bf16) or as close
//! as f32 allows (f64, rounded to nearest).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use qtune_tensor::{DType, Shape, Tensor, TensorData};

use crate::OnnxError;
use crate::proto::TensorProto;
use crate::proto::tensor_proto::{DataLocation, DataType};

/// The qtune element type of an ONNX element type, for values computed at
/// run time (graph inputs, Cast targets).
pub(crate) fn runtime_dtype(onnx_type: i32) -> Option<DType> {
    qtune_ir::onnx_node::dtype_of_onnx(i64::from(onnx_type))
}

/// The ONNX spelling of an element type, for messages.
pub(crate) fn onnx_type_name(onnx_type: i32) -> String {
    match DataType::try_from(onnx_type) {
        Ok(t) => t.as_str_name().to_string(),
        Err(_) => format!("#{onnx_type}"),
    }
}

/// Reads external data files once each and hands out slices of them.
pub(crate) struct ExternalData<'a> {
    base_dir: Option<&'a Path>,
    files: HashMap<PathBuf, Bytes>,
}

impl<'a> ExternalData<'a> {
    pub(crate) fn new(base_dir: Option<&'a Path>) -> Self {
        ExternalData {
            base_dir,
            files: HashMap::new(),
        }
    }

    fn load(&mut self, tensor: &TensorProto, name: &str) -> Result<Bytes, OnnxError> {
        let mut location = None;
        let mut offset = 0usize;
        let mut length = None;
        for entry in &tensor.external_data {
            let key = entry.key.as_deref().unwrap_or("");
            let value = entry.value.as_deref().unwrap_or("");
            let number = || -> Result<usize, OnnxError> {
                value.parse::<usize>().map_err(|_| OnnxError::Tensor {
                    tensor: name.to_string(),
                    message: format!("external data key '{key}' has value '{value}', expected a non-negative integer"),
                })
            };
            match key {
                "location" => location = Some(value.to_string()),
                "offset" => offset = number()?,
                "length" => length = Some(number()?),
                // "checksum" and unknown keys do not change where the data is.
                _ => {}
            }
        }
        let Some(location) = location else {
            return Err(OnnxError::Tensor {
                tensor: name.to_string(),
                message: "data_location is EXTERNAL but the external_data has no 'location' key"
                    .into(),
            });
        };
        let Some(base_dir) = self.base_dir else {
            return Err(OnnxError::ExternalData {
                tensor: name.to_string(),
                file: PathBuf::from(&location),
                message: "the model was given as bytes without a base directory".into(),
            });
        };
        let file = base_dir.join(&location);
        let data = match self.files.get(&file) {
            Some(d) => d.clone(),
            None => {
                let d = std::fs::read(&file).map_err(|e| OnnxError::ExternalData {
                    tensor: name.to_string(),
                    file: file.clone(),
                    message: format!("cannot read it ({e})"),
                })?;
                let d = Bytes::from(d);
                self.files.insert(file.clone(), d.clone());
                d
            }
        };
        let end = match length {
            Some(len) => offset.checked_add(len),
            None => Some(data.len()),
        };
        match end {
            Some(end) if offset <= end && end <= data.len() => Ok(data.slice(offset..end)),
            _ => Err(OnnxError::ExternalData {
                tensor: name.to_string(),
                file,
                message: format!(
                    "offset {offset} and length {} reach past the end of the file ({} bytes)",
                    length.map_or_else(|| "(rest)".to_string(), |l| l.to_string()),
                    data.len()
                ),
            }),
        }
    }
}

/// Converts a stored tensor. `name` is used in messages (Constant nodes
/// pass their output name, since the embedded tensor's name is often empty).
pub(crate) fn tensor_from_proto(
    proto: &TensorProto,
    name: &str,
    external: &mut ExternalData<'_>,
) -> Result<Tensor, OnnxError> {
    let bad = |message: String| OnnxError::Tensor {
        tensor: name.to_string(),
        message,
    };
    if proto.segment.is_some() {
        return Err(bad("segmented tensors are not supported".into()));
    }
    let dims = proto
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| bad(format!("negative dimension {d} in {:?}", proto.dims)))
        })
        .collect::<Result<Vec<usize>, _>>()?;
    let numel = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("dimensions {:?} overflow", proto.dims)))?;

    let raw = if proto.data_location == Some(DataLocation::External as i32) {
        Some(external.load(proto, name)?)
    } else {
        proto.raw_data.clone()
    };

    let data_type = proto.data_type.unwrap_or(0);
    let unsupported = || OnnxError::UnsupportedDType {
        tensor: name.to_string(),
        dtype: onnx_type_name(data_type),
        context: String::new(),
    };
    let dt = DataType::try_from(data_type).map_err(|_| unsupported())?;

    // Little-endian element decoding from raw bytes, with a length check.
    fn from_raw<const N: usize, T>(
        raw: &[u8],
        numel: usize,
        convert: impl Fn([u8; N]) -> T,
    ) -> Result<Vec<T>, String> {
        if Some(raw.len()) != numel.checked_mul(N) {
            return Err(format!(
                "raw_data has {} bytes, expected {numel} elements of {N} bytes",
                raw.len()
            ));
        }
        Ok(raw
            .chunks_exact(N)
            .map(|c| {
                let mut b = [0u8; N];
                b.copy_from_slice(c);
                convert(b)
            })
            .collect())
    }
    fn typed<T: Clone>(values: &[T], numel: usize, field: &str) -> Result<Vec<T>, String> {
        if values.len() != numel {
            return Err(format!(
                "{field} has {} values, expected {numel}",
                values.len()
            ));
        }
        Ok(values.to_vec())
    }
    fn narrow<T: TryFrom<i32>>(values: &[i32], numel: usize, what: &str) -> Result<Vec<T>, String> {
        if values.len() != numel {
            return Err(format!(
                "int32_data has {} values, expected {numel}",
                values.len()
            ));
        }
        values
            .iter()
            .map(|&v| {
                T::try_from(v).map_err(|_| format!("int32_data value {v} does not fit {what}"))
            })
            .collect()
    }

    let data = match (dt, raw.as_deref()) {
        (DataType::Float, Some(r)) => {
            TensorData::F32(from_raw(r, numel, f32::from_le_bytes).map_err(bad)?.into())
        }
        (DataType::Float, None) => TensorData::F32(
            typed(&proto.float_data, numel, "float_data")
                .map_err(bad)?
                .into(),
        ),
        (DataType::Double, Some(r)) => TensorData::F32(
            from_raw(r, numel, |b| f64_to_f32(f64::from_le_bytes(b)))
                .map_err(bad)?
                .into(),
        ),
        (DataType::Double, None) => TensorData::F32(
            typed(&proto.double_data, numel, "double_data")
                .map_err(bad)?
                .into_iter()
                .map(f64_to_f32)
                .collect::<Vec<_>>()
                .into(),
        ),
        (DataType::Float16, Some(r)) => TensorData::F32(
            from_raw(r, numel, |b| {
                half::f16::from_bits(u16::from_le_bytes(b)).to_f32()
            })
            .map_err(bad)?
            .into(),
        ),
        (DataType::Bfloat16, Some(r)) => TensorData::F32(
            from_raw(r, numel, |b| {
                half::bf16::from_bits(u16::from_le_bytes(b)).to_f32()
            })
            .map_err(bad)?
            .into(),
        ),
        // FLOAT16 and BFLOAT16 in int32_data keep the bit pattern in the low 16 bits.
        (DataType::Float16 | DataType::Bfloat16, None) => {
            let bits: Vec<u16> = typed(&proto.int32_data, numel, "int32_data")
                .map_err(bad)?
                .into_iter()
                .map(|v| u16::try_from(v & 0xffff).unwrap_or(0))
                .collect();
            let f: Vec<f32> = if dt == DataType::Float16 {
                bits.into_iter()
                    .map(|b| half::f16::from_bits(b).to_f32())
                    .collect()
            } else {
                bits.into_iter()
                    .map(|b| half::bf16::from_bits(b).to_f32())
                    .collect()
            };
            TensorData::F32(f.into())
        }
        (DataType::Int64, Some(r)) => {
            TensorData::I64(from_raw(r, numel, i64::from_le_bytes).map_err(bad)?.into())
        }
        (DataType::Int64, None) => TensorData::I64(
            typed(&proto.int64_data, numel, "int64_data")
                .map_err(bad)?
                .into(),
        ),
        (DataType::Int32, Some(r)) => {
            TensorData::I32(from_raw(r, numel, i32::from_le_bytes).map_err(bad)?.into())
        }
        (DataType::Int32, None) => TensorData::I32(
            typed(&proto.int32_data, numel, "int32_data")
                .map_err(bad)?
                .into(),
        ),
        (DataType::Uint8, Some(r)) => {
            TensorData::U8(from_raw(r, numel, u8::from_le_bytes).map_err(bad)?.into())
        }
        (DataType::Uint8, None) => TensorData::U8(
            narrow(&proto.int32_data, numel, "uint8")
                .map_err(bad)?
                .into(),
        ),
        (DataType::Int8, Some(r)) => {
            TensorData::I8(from_raw(r, numel, i8::from_le_bytes).map_err(bad)?.into())
        }
        (DataType::Int8, None) => TensorData::I8(
            narrow(&proto.int32_data, numel, "int8")
                .map_err(bad)?
                .into(),
        ),
        (DataType::Bool, Some(r)) => TensorData::Bool(
            from_raw(r, numel, |[b]: [u8; 1]| b != 0)
                .map_err(bad)?
                .into(),
        ),
        (DataType::Bool, None) => TensorData::Bool(
            typed(&proto.int32_data, numel, "int32_data")
                .map_err(bad)?
                .into_iter()
                .map(|v| v != 0)
                .collect::<Vec<_>>()
                .into(),
        ),
        _ => return Err(unsupported()),
    };
    Tensor::new(Shape(dims), data).map_err(|e| bad(e.to_string()))
}

/// The ONNX element type of a qtune element type.
pub(crate) fn onnx_dtype(dtype: DType) -> DataType {
    let code = qtune_ir::onnx_node::onnx_of_dtype(dtype);
    i32::try_from(code)
        .ok()
        .and_then(|c| DataType::try_from(c).ok())
        .unwrap_or(DataType::Undefined)
}

/// Converts a tensor for export: little-endian `raw_data`, as ONNX Runtime
/// and the `onnx` package write initializers. A `usize` dimension that does
/// not fit `i64` is an error naming the tensor.
pub(crate) fn tensor_to_proto(tensor: &Tensor, name: &str) -> Result<TensorProto, OnnxError> {
    let dims = tensor
        .dims()
        .iter()
        .map(|&d| {
            i64::try_from(d).map_err(|_| OnnxError::Tensor {
                tensor: name.to_string(),
                message: format!("dimension {d} does not fit an ONNX int64"),
            })
        })
        .collect::<Result<Vec<i64>, _>>()?;
    fn le<T: Copy, const N: usize>(v: &[T], bytes: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        v.iter().flat_map(|&x| bytes(x)).collect()
    }
    let raw = match tensor.data() {
        TensorData::F32(v) => le(v, f32::to_le_bytes),
        TensorData::I64(v) => le(v, i64::to_le_bytes),
        TensorData::I32(v) => le(v, i32::to_le_bytes),
        TensorData::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
        TensorData::U8(v) => v.to_vec(),
        TensorData::I8(v) => le(v, i8::to_le_bytes),
    };
    Ok(TensorProto {
        dims,
        data_type: Some(onnx_dtype(tensor.dtype()) as i32),
        name: Some(name.to_string()),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    })
}

/// DOUBLE tensors are stored as f32 (qtune has no f64 type); this narrowing
/// rounds to nearest, and out-of-range values become infinities.
#[allow(clippy::cast_possible_truncation)]
fn f64_to_f32(v: f64) -> f32 {
    v as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(data_type: DataType, dims: Vec<i64>) -> TensorProto {
        TensorProto {
            dims,
            data_type: Some(data_type as i32),
            ..Default::default()
        }
    }

    /// `qtune_ir::onnx_node` keeps ONNX's element type codes without
    /// protobuf; they must be the generated enum's.
    #[test]
    fn element_type_codes_are_onnx_protos() {
        let pairs = [
            (DType::F32, DataType::Float),
            (DType::I64, DataType::Int64),
            (DType::I32, DataType::Int32),
            (DType::Bool, DataType::Bool),
            (DType::U8, DataType::Uint8),
            (DType::I8, DataType::Int8),
        ];
        for (d, proto) in pairs {
            assert_eq!(onnx_dtype(d), proto, "{d}");
            assert_eq!(runtime_dtype(proto as i32), Some(d), "{d}");
        }
        for other in [DataType::Double, DataType::Float16, DataType::String] {
            assert_eq!(runtime_dtype(other as i32), None);
        }
        assert_eq!(
            qtune_ir::onnx_node::ONNX_FLOAT16,
            i64::from(DataType::Float16 as i32)
        );
        assert_eq!(
            qtune_ir::onnx_node::ONNX_BFLOAT16,
            i64::from(DataType::Bfloat16 as i32)
        );
    }

    #[test]
    fn decodes_every_supported_storage() {
        let mut ext = ExternalData::new(None);
        let mut p = proto(DataType::Float, vec![2]);
        p.raw_data = Some(Bytes::from(
            [1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat(),
        ));
        let t = tensor_from_proto(&p, "a", &mut ext).unwrap();
        assert_eq!(t.as_f32().unwrap(), &[1.5, -2.0]);

        let mut p = proto(DataType::Float16, vec![3]);
        // 1.0, -2.0, 65504 (max f16)
        p.raw_data = Some(Bytes::from(vec![0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b]));
        let t = tensor_from_proto(&p, "h", &mut ext).unwrap();
        assert_eq!(t.as_f32().unwrap(), &[1.0, -2.0, 65504.0]);

        let mut p = proto(DataType::Float16, vec![1]);
        p.int32_data = vec![0x3800]; // 0.5
        assert_eq!(
            tensor_from_proto(&p, "h", &mut ext)
                .unwrap()
                .as_f32()
                .unwrap(),
            &[0.5]
        );

        let mut p = proto(DataType::Double, vec![2]);
        p.double_data = vec![0.25, 3.0];
        assert_eq!(
            tensor_from_proto(&p, "d", &mut ext)
                .unwrap()
                .as_f32()
                .unwrap(),
            &[0.25, 3.0]
        );

        let mut p = proto(DataType::Int64, vec![1, 2]);
        p.int64_data = vec![7, -1];
        let t = tensor_from_proto(&p, "i", &mut ext).unwrap();
        assert_eq!(t.as_i64().unwrap(), &[7, -1]);
        assert_eq!(t.dims(), &[1, 2]);

        let mut p = proto(DataType::Bool, vec![3]);
        p.raw_data = Some(Bytes::from(vec![1, 0, 1]));
        assert_eq!(
            tensor_from_proto(&p, "b", &mut ext)
                .unwrap()
                .as_bool()
                .unwrap(),
            &[true, false, true]
        );

        let mut p = proto(DataType::Int8, vec![2]);
        p.int32_data = vec![-128, 127];
        assert_eq!(
            tensor_from_proto(&p, "q", &mut ext).unwrap().dtype(),
            DType::I8
        );

        let p = proto(DataType::Float, vec![0]);
        assert_eq!(tensor_from_proto(&p, "empty", &mut ext).unwrap().numel(), 0);
    }

    #[test]
    fn rejects_bad_tensors() {
        let mut ext = ExternalData::new(None);
        let mut p = proto(DataType::Float, vec![3]);
        p.raw_data = Some(Bytes::from(vec![0u8; 8]));
        let e = tensor_from_proto(&p, "w", &mut ext)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tensor 'w'") && e.contains("8 bytes"), "{e}");

        let mut p = proto(DataType::Uint8, vec![1]);
        p.int32_data = vec![300];
        let e = tensor_from_proto(&p, "u", &mut ext)
            .unwrap_err()
            .to_string();
        assert!(e.contains("300"), "{e}");

        let p = proto(DataType::String, vec![1]);
        let e = tensor_from_proto(&p, "s", &mut ext)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tensor 's'") && e.contains("STRING"), "{e}");
    }
}
