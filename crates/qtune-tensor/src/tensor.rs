use std::fmt;
use std::sync::Arc;

/// Element type of a tensor. These are the types the executor computes with;
/// ONNX types outside this list are rejected at import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    I64,
    I32,
    Bool,
    U8,
    I8,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::Bool => "bool",
            DType::U8 => "uint8",
            DType::I8 => "int8",
        }
    }
    /// Bytes per element as qtune stores it (`bool` takes one byte).
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::I64 => 8,
            DType::Bool | DType::U8 | DType::I8 => 1,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A tensor shape: the extent of each axis, outermost first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    pub fn new(dims: impl Into<Vec<usize>>) -> Self {
        Shape(dims.into())
    }
    pub fn scalar() -> Self {
        Shape(Vec::new())
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    /// Number of elements (1 for a scalar); `usize::MAX` when the product
    /// overflows, so that a wrapped count can never equal a buffer's length
    /// (a shape from a file is checked with [`Shape::checked_numel`] or
    /// [`crate::check_shape`] before anything is allocated for it).
    pub fn numel(&self) -> usize {
        self.checked_numel().unwrap_or(usize::MAX)
    }
    /// Number of elements, or `None` when the product overflows `usize`.
    pub fn checked_numel(&self) -> Option<usize> {
        crate::checked_numel(&self.0)
    }
    /// Row-major strides in elements.
    pub fn strides(&self) -> Vec<usize> {
        let mut strides = vec![1usize; self.0.len()];
        for i in (0..self.0.len().saturating_sub(1)).rev() {
            // Saturating: strides of an overflowing shape are never used to
            // index (its tensor cannot exist), but must not wrap either.
            strides[i] = strides[i + 1].saturating_mul(self.0[i + 1]);
        }
        strides
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Self {
        Shape(v)
    }
}

impl From<&[usize]> for Shape {
    fn from(v: &[usize]) -> Self {
        Shape(v.to_vec())
    }
}

/// The elements of a tensor. Buffers are reference counted so that cached
/// activations and constants can be shared between runs without copying; a
/// `Vec` inside the `Arc` lets a kernel's output buffer become a tensor, and
/// a uniquely held tensor give its buffer back, without a copy.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Arc<Vec<f32>>),
    I64(Arc<Vec<i64>>),
    I32(Arc<Vec<i32>>),
    Bool(Arc<Vec<bool>>),
    U8(Arc<Vec<u8>>),
    I8(Arc<Vec<i8>>),
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::I64(_) => DType::I64,
            TensorData::I32(_) => DType::I32,
            TensorData::Bool(_) => DType::Bool,
            TensorData::U8(_) => DType::U8,
            TensorData::I8(_) => DType::I8,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::Bool(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::I8(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TensorError {
    #[error("shape {shape} holds {expected} elements, but {actual} were given")]
    LengthMismatch {
        shape: Shape,
        expected: usize,
        actual: usize,
    },
    #[error("expected a {expected} tensor, got {actual}")]
    WrongDType { expected: DType, actual: DType },
}

/// A dense row-major tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Shape,
    data: TensorData,
}

impl Tensor {
    pub fn new(shape: impl Into<Shape>, data: TensorData) -> Result<Self, TensorError> {
        let shape = shape.into();
        if shape.numel() != data.len() {
            return Err(TensorError::LengthMismatch {
                expected: shape.numel(),
                actual: data.len(),
                shape,
            });
        }
        Ok(Tensor { shape, data })
    }

    pub fn from_f32(shape: impl Into<Shape>, data: Vec<f32>) -> Result<Self, TensorError> {
        Self::new(shape, TensorData::F32(data.into()))
    }
    pub fn from_i64(shape: impl Into<Shape>, data: Vec<i64>) -> Result<Self, TensorError> {
        Self::new(shape, TensorData::I64(data.into()))
    }
    pub fn from_bool(shape: impl Into<Shape>, data: Vec<bool>) -> Result<Self, TensorError> {
        Self::new(shape, TensorData::Bool(data.into()))
    }
    pub fn scalar_f32(v: f32) -> Self {
        Tensor {
            shape: Shape::scalar(),
            data: TensorData::F32(Arc::new(vec![v])),
        }
    }
    pub fn zeros(dtype: DType, shape: impl Into<Shape>) -> Self {
        let shape = shape.into();
        let n = shape.numel();
        let data = match dtype {
            DType::F32 => TensorData::F32(vec![0.0; n].into()),
            DType::I64 => TensorData::I64(vec![0; n].into()),
            DType::I32 => TensorData::I32(vec![0; n].into()),
            DType::Bool => TensorData::Bool(vec![false; n].into()),
            DType::U8 => TensorData::U8(vec![0; n].into()),
            DType::I8 => TensorData::I8(vec![0; n].into()),
        };
        Tensor { shape, data }
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    pub fn dims(&self) -> &[usize] {
        &self.shape.0
    }
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }
    pub fn data(&self) -> &TensorData {
        &self.data
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The same elements under another shape with the same element count.
    pub fn reshaped(&self, shape: impl Into<Shape>) -> Result<Self, TensorError> {
        Self::new(shape, self.data.clone())
    }

    pub fn as_f32(&self) -> Result<&[f32], TensorError> {
        match &self.data {
            TensorData::F32(v) => Ok(v),
            other => Err(TensorError::WrongDType {
                expected: DType::F32,
                actual: other.dtype(),
            }),
        }
    }
    pub fn as_i64(&self) -> Result<&[i64], TensorError> {
        match &self.data {
            TensorData::I64(v) => Ok(v),
            other => Err(TensorError::WrongDType {
                expected: DType::I64,
                actual: other.dtype(),
            }),
        }
    }
    pub fn as_bool(&self) -> Result<&[bool], TensorError> {
        match &self.data {
            TensorData::Bool(v) => Ok(v),
            other => Err(TensorError::WrongDType {
                expected: DType::Bool,
                actual: other.dtype(),
            }),
        }
    }

    /// The f32 buffer, without a copy when this tensor holds the only
    /// reference to it.
    pub fn into_f32_vec(self) -> Result<Vec<f32>, TensorError> {
        match self.data {
            TensorData::F32(v) => Ok(Arc::try_unwrap(v).unwrap_or_else(|shared| shared.to_vec())),
            other => Err(TensorError::WrongDType {
                expected: DType::F32,
                actual: other.dtype(),
            }),
        }
    }

    /// The f32 buffer when this tensor holds the only reference to it;
    /// otherwise (shared, or not f32) the tensor back, untouched.
    pub fn into_unshared_f32_vec(self) -> Result<Vec<f32>, Tensor> {
        match self.data {
            TensorData::F32(v) => Arc::try_unwrap(v).map_err(|shared| Tensor {
                shape: self.shape,
                data: TensorData::F32(shared),
            }),
            data => Err(Tensor {
                shape: self.shape,
                data,
            }),
        }
    }

    /// Integer view used for shape-like inputs (Reshape shapes, Slice
    /// starts, axes): int64 and int32 tensors are accepted.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>, TensorError> {
        match &self.data {
            TensorData::I64(v) => Ok(v.to_vec()),
            TensorData::I32(v) => Ok(v.iter().map(|&x| i64::from(x)).collect()),
            other => Err(TensorError::WrongDType {
                expected: DType::I64,
                actual: other.dtype(),
            }),
        }
    }

    /// Converts every element to f32 (for comparisons and reporting).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        #[allow(clippy::cast_precision_loss)]
        match &self.data {
            TensorData::F32(v) => v.to_vec(),
            TensorData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
            TensorData::U8(v) => v.iter().map(|&x| f32::from(x)).collect(),
            TensorData::I8(v) => v.iter().map(|&x| f32::from(x)).collect(),
        }
    }

    /// Rows `start..end` of the outermost axis (a batch slice).
    pub fn slice_outer(&self, start: usize, end: usize) -> Result<Self, TensorError> {
        let dims = self.dims();
        let outer = dims.first().copied().unwrap_or(1);
        let inner: usize = dims.iter().skip(1).product();
        let end = end.min(outer);
        let start = start.min(end);
        let (a, b) = (start * inner, end * inner);
        let mut new_dims = dims.to_vec();
        if let Some(first) = new_dims.first_mut() {
            *first = end - start;
        }
        let data = match &self.data {
            TensorData::F32(v) => TensorData::F32(Arc::new(v[a..b].to_vec())),
            TensorData::I64(v) => TensorData::I64(Arc::new(v[a..b].to_vec())),
            TensorData::I32(v) => TensorData::I32(Arc::new(v[a..b].to_vec())),
            TensorData::Bool(v) => TensorData::Bool(Arc::new(v[a..b].to_vec())),
            TensorData::U8(v) => TensorData::U8(Arc::new(v[a..b].to_vec())),
            TensorData::I8(v) => TensorData::I8(Arc::new(v[a..b].to_vec())),
        };
        Self::new(new_dims, data)
    }

    /// Concatenates tensors of equal dtype and inner shape along axis 0.
    pub fn concat_outer(parts: &[Tensor]) -> Result<Self, TensorError> {
        let first = parts.first().ok_or(TensorError::LengthMismatch {
            shape: Shape::scalar(),
            expected: 1,
            actual: 0,
        })?;
        let mut dims = first.dims().to_vec();
        if dims.is_empty() {
            dims.push(1);
        }
        dims[0] = 0;
        for p in parts {
            if p.dtype() != first.dtype() {
                return Err(TensorError::WrongDType {
                    expected: first.dtype(),
                    actual: p.dtype(),
                });
            }
            dims[0] += p.dims().first().copied().unwrap_or(1);
        }
        macro_rules! cat {
            ($variant:ident) => {{
                let mut out = Vec::with_capacity(dims.iter().product());
                for p in parts {
                    if let TensorData::$variant(v) = &p.data {
                        out.extend_from_slice(v);
                    }
                }
                TensorData::$variant(out.into())
            }};
        }
        let data = match first.dtype() {
            DType::F32 => cat!(F32),
            DType::I64 => cat!(I64),
            DType::I32 => cat!(I32),
            DType::Bool => cat!(Bool),
            DType::U8 => cat!(U8),
            DType::I8 => cat!(I8),
        };
        Self::new(dims, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_are_row_major() {
        assert_eq!(Shape::new(vec![2, 3, 4]).strides(), vec![12, 4, 1]);
        assert_eq!(Shape::scalar().strides(), Vec::<usize>::new());
    }

    #[test]
    fn length_must_match_shape() {
        let err = Tensor::from_f32(vec![2, 2], vec![1.0; 3]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "shape [2,2] holds 4 elements, but 3 were given"
        );
    }

    #[test]
    fn slice_and_concat_round_trip() {
        let t = Tensor::from_f32(vec![3, 2], (0..6).map(|x| x as f32).collect()).unwrap();
        let a = t.slice_outer(0, 1).unwrap();
        let b = t.slice_outer(1, 3).unwrap();
        assert_eq!(b.dims(), &[2, 2]);
        assert_eq!(Tensor::concat_outer(&[a, b]).unwrap(), t);
    }
}
