//! What an op family's evaluation sees of a node ([`EvalCx`]): the
//! executor builds it and calls the family's `eval` (`crate::families`).
//! Also the kernel-parameter helpers the families and the executor share.

use std::sync::Arc;

use qtune_kernels::{self as k, Parallelism};
use qtune_tensor::{Tensor, TensorData};

use crate::{Graph, IrError, Node, NodeId};

/// What evaluating a node of an op family sees: the node in its prepared
/// graph (every value has a static shape), its inputs (`None` for omitted
/// optional ones) and the thread policy.
pub struct EvalCx<'a> {
    pub graph: &'a Graph,
    pub node: &'a Node,
    pub id: NodeId,
    pub inputs: Vec<Option<Tensor>>,
    pub par: Parallelism,
}

impl EvalCx<'_> {
    pub(crate) fn err(&self, message: impl Into<String>) -> IrError {
        IrError::BadNode {
            node: self.node.name.clone(),
            op: self.node.op.op_type(),
            message: message.into(),
        }
    }
    pub(crate) fn input(&self, i: usize) -> Result<&Tensor, IrError> {
        self.inputs
            .get(i)
            .and_then(Option::as_ref)
            .ok_or_else(|| self.err(format!("input {i} is missing")))
    }
    pub(crate) fn out_dims(&self, i: usize) -> Result<Vec<usize>, IrError> {
        let v = self
            .node
            .outputs
            .get(i)
            .copied()
            .ok_or_else(|| self.err("has no output"))?;
        Ok(self.graph.shape_of(v)?.0.clone())
    }
    pub(crate) fn tensor(&self, dims: Vec<usize>, data: TensorData) -> Result<Tensor, IrError> {
        Tensor::new(dims, data).map_err(|e| self.err(e.to_string()))
    }
    pub(crate) fn ints(&self, i: usize) -> Result<Vec<i64>, IrError> {
        self.input(i)?
            .to_i64_vec()
            .map_err(|e| self.err(format!("input {i}: {e}")))
    }
    /// Moves input `i` out (see [`Self::take_f32`]).
    pub(crate) fn take(&mut self, i: usize) -> Result<Tensor, IrError> {
        self.inputs
            .get_mut(i)
            .and_then(Option::take)
            .ok_or_else(|| self.err(format!("input {i} is missing")))
    }
    /// Moves input `i` out; the executor passes the only reference when this
    /// node is the value's last reader, so the buffer can be reused in place.
    pub(crate) fn take_f32(&mut self, i: usize) -> Result<Vec<f32>, IrError> {
        let t = self.take(i)?;
        let dtype = t.dtype();
        t.into_f32_vec()
            .map_err(|_| self.err(format!("input {i} must be float32, got {dtype}")))
    }
    pub(crate) fn f32_input(&self, i: usize) -> Result<&[f32], IrError> {
        let t = self.input(i)?;
        t.as_f32()
            .map_err(|_| self.err(format!("input {i} must be float32, got {}", t.dtype())))
    }
    pub(crate) fn opt_input(&self, i: usize) -> Option<&Tensor> {
        self.inputs.get(i).and_then(Option::as_ref)
    }
    /// A float scalar parameter input (Clip's bounds), `None` when absent.
    pub(crate) fn scalar(&self, i: usize) -> Result<Option<f32>, IrError> {
        Ok(match self.opt_input(i) {
            Some(t) => Some(
                *t.to_f32_vec()
                    .first()
                    .ok_or_else(|| self.err(format!("input {i} is empty")))?,
            ),
            None => None,
        })
    }
    /// Applies an elementwise kernel to input 0: in place when this node
    /// holds the only reference to its buffer, else in one pass into a new
    /// buffer.
    pub fn unary(self, op: k::UnaryOp) -> Result<Vec<Tensor>, IrError> {
        let par = self.par;
        self.map_f32(
            |x| k::unary(op, x, par),
            |x| {
                let mut out: Vec<f32> = Vec::with_capacity(x.len());
                k::unary_into(op, x, &mut out.spare_capacity_mut()[..x.len()], par);
                // SAFETY: `unary_into` wrote every one of the `x.len()` elements (it asserts
                // the lengths are equal).
                unsafe { out.set_len(x.len()) };
                out
            },
        )
    }
    /// Input 0 mapped elementwise to the output: `in_place` over its buffer
    /// when this node holds the only reference, else `into` from the shared
    /// buffer to a new one.
    pub(crate) fn map_f32(
        mut self,
        in_place: impl FnOnce(&mut [f32]),
        into: impl FnOnce(&[f32]) -> Vec<f32>,
    ) -> Result<Vec<Tensor>, IrError> {
        let dims = self.input(0)?.dims().to_vec();
        let out = match self.take(0)?.into_unshared_f32_vec() {
            Ok(mut x) => {
                in_place(&mut x);
                x
            }
            Err(t) => {
                let dtype = t.dtype();
                into(
                    t.as_f32()
                        .map_err(|_| self.err(format!("input 0 must be float32, got {dtype}")))?,
                )
            }
        };
        self.f32_out(dims, out)
    }
    pub(crate) fn f32_out(&self, dims: Vec<usize>, data: Vec<f32>) -> Result<Vec<Tensor>, IrError> {
        Ok(vec![self.tensor(dims, TensorData::F32(Arc::new(data)))?])
    }
}

/// 4-D view of an NCHW (or NCW, seen as NC1W) shape.
pub fn as_4d(dims: &[usize]) -> Option<[usize; 4]> {
    match *dims {
        [n, c, h, w] => Some([n, c, h, w]),
        [n, c, w] => Some([n, c, 1, w]),
        _ => None,
    }
}

/// Spatial attributes of rank 1 or 2 as 2-D `[h, w]` pairs.
pub fn pair(v: &[usize], default: usize) -> [usize; 2] {
    match *v {
        [h, w] => [h, w],
        [w] => [default, w],
        _ => [default, default],
    }
}

/// Begin and end pads of rank 1 or 2 as `[top, left, bottom, right]`.
pub fn pads4(begin: &[usize], end: &[usize]) -> [usize; 4] {
    match (begin, end) {
        ([t, l], [b, r]) => [*t, *l, *b, *r],
        ([l], [r]) => [0, *l, 0, *r],
        _ => [0; 4],
    }
}

/// Applies `$body` to the buffer of any dtype, producing a new buffer of the
/// same dtype. `$body` sees `$v: &Vec<T>` and must evaluate to `Vec<T>`.
macro_rules! map_any {
    ($data:expr, |$v:ident| $body:expr) => {
        match $data {
            TensorData::F32($v) => TensorData::F32(Arc::new($body)),
            TensorData::I64($v) => TensorData::I64(Arc::new($body)),
            TensorData::I32($v) => TensorData::I32(Arc::new($body)),
            TensorData::Bool($v) => TensorData::Bool(Arc::new($body)),
            TensorData::U8($v) => TensorData::U8(Arc::new($body)),
            TensorData::I8($v) => TensorData::I8(Arc::new($body)),
        }
    };
}
pub(crate) use map_any;
