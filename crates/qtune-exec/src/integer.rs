//! Evaluation of [`Op::IntegerLayer`] (the int8 layers of the quantized
//! simulation) on the integer kernels of `qtune_kernels::int8`, and the
//! executor's fusion of such a layer with the requantization that follows
//! it: `IntegerLayer -> [Relu | Clip] -> QuantizeLinear`, or on the
//! canonical graph an `IntegerLayer` with a fused Relu (`do_relu`, its
//! limit in the requantized domain) `-> QuantizeLinear`, runs as one kernel
//! writing the codes, bit-identical to the separate nodes (the kernel
//! finishes each accumulator with the same float operations and clamp, see
//! the kernels' docs).
//!
//! Weights are packed once per executor, on the layer's first run.

use std::sync::{Arc, OnceLock};

use qtune_ir::{Graph, IntegerKind, NodeId, Op, ValueId, resolve_window};
use qtune_kernels::int8::{
    ConvGeometry, Int8In, Int8Out, Int8Path, MatrixLayout, OutputStage, PackedInt8, QuantTail,
    conv2d_int8, matmul_int8,
};
use qtune_kernels::{Parallelism, QRange, UnaryOp};
use qtune_tensor::{DType, Tensor, TensorData};

use crate::ExecError;
use crate::eval::{activation_of, fused_relu_op};

/// A requantization absorbed into an integer layer (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct IntegerTail {
    pub quant: QuantTail,
    pub dtype: DType,
    /// The Relu/Clip (if any) and the QuantizeLinear.
    pub absorbed: Vec<NodeId>,
    /// The layer's float output and the activation's output.
    pub intermediates: Vec<ValueId>,
    /// The QuantizeLinear's output.
    pub output: ValueId,
}

/// Per integer layer: its packed weight (on first use) and its fusable
/// requantization.
#[derive(Debug, Clone, Default)]
pub(crate) struct IntegerPrep {
    packed: OnceLock<Arc<PackedInt8>>,
    pub tail: Option<IntegerTail>,
}

/// The integer layers of `graph`, by node index.
pub(crate) fn find_integer_layers(
    graph: &Graph,
    consumers: &[Vec<NodeId>],
) -> Vec<Option<IntegerPrep>> {
    graph
        .nodes()
        .map(|(id, n)| {
            matches!(n.op, Op::IntegerLayer(_)).then(|| IntegerPrep {
                packed: OnceLock::new(),
                tail: find_tail(graph, consumers, id),
            })
        })
        .collect()
}

/// The only reader of `v` (reading it once), unless `v` is a graph output:
/// the condition for fusing `v`'s producer with that reader.
pub(crate) fn single_reader(
    graph: &Graph,
    consumers: &[Vec<NodeId>],
    v: ValueId,
) -> Option<NodeId> {
    let list = &consumers[v.index()];
    let reads = list
        .iter()
        .map(|&c| {
            graph
                .node(c)
                .inputs
                .iter()
                .filter(|&&i| i == Some(v))
                .count()
        })
        .sum::<usize>();
    (list.len() == 1 && reads == 1 && !graph.outputs.contains(&v)).then(|| list[0])
}

fn find_tail(graph: &Graph, consumers: &[Vec<NodeId>], id: NodeId) -> Option<IntegerTail> {
    let node = graph.node(id);
    let v = *node.outputs.first()?;
    let mut reader = single_reader(graph, consumers, v)?;
    let mut absorbed = Vec::new();
    let mut intermediates = vec![v];
    // A Relu fused into the layer (the canonical graph's `do_relu`, its
    // limit already in the requantized domain when `integer_exact`
    // combined the multiplier) is the same clamp as a Relu / Clip node
    // would be. A second activation node after it is not absorbed: two
    // clamps are not always one.
    let clamp = match node.relu {
        Some(relu) => Some((0.0, relu.upper())),
        None => match activation_of(graph, reader) {
            Some(UnaryOp::Relu) if graph.node(reader).relu.is_none() => Some((0.0, f32::INFINITY)),
            Some(UnaryOp::Clip { lo, hi }) if graph.node(reader).relu.is_none() => Some((lo, hi)),
            _ => None,
        },
    };
    if node.relu.is_none() && clamp.is_some() {
        let r = *graph.node(reader).outputs.first()?;
        absorbed.push(reader);
        intermediates.push(r);
        reader = single_reader(graph, consumers, r)?;
    }
    let q = graph.node(reader);
    let Op::QuantizeLinear { .. } = q.op else {
        return None;
    };
    if q.inputs.first().copied().flatten() != intermediates.last().copied() {
        return None;
    }
    let scale = graph.constant_of(q.inputs.get(1).copied().flatten()?)?;
    let scale = match (scale.numel(), scale.as_f32()) {
        (1, Ok(s)) => s[0],
        _ => return None,
    };
    let (zero_point, range, dtype) = match q.inputs.get(2).copied().flatten() {
        None => (0, QRange::U8, DType::U8),
        Some(z) => match graph.constant_of(z)?.data() {
            TensorData::U8(z) if z.len() == 1 => (i32::from(z[0]), QRange::U8, DType::U8),
            TensorData::I8(z) if z.len() == 1 => (i32::from(z[0]), QRange::I8, DType::I8),
            _ => return None,
        },
    };
    absorbed.push(reader);
    Some(IntegerTail {
        quant: QuantTail {
            clamp,
            scale,
            zero_point,
            range,
        },
        dtype,
        absorbed,
        intermediates,
        output: *q.outputs.first()?,
    })
}

fn node_err(graph: &Graph, id: NodeId, message: impl Into<String>) -> ExecError {
    let n = graph.node(id);
    ExecError::Node {
        node: n.name.clone(),
        op: n.op.op_type(),
        message: message.into(),
    }
}

/// Packs the layer's weight (input 1).
fn pack(graph: &Graph, id: NodeId, w: &Tensor) -> Result<PackedInt8, ExecError> {
    let Op::IntegerLayer(a) = &graph.node(id).op else {
        unreachable!("pack of a {}", graph.node(id).op.op_type())
    };
    let TensorData::I8(data) = w.data() else {
        return Err(node_err(
            graph,
            id,
            format!("the weight must be int8, got {}", w.dtype()),
        ));
    };
    let dims = w.dims();
    match &a.kind {
        IntegerKind::Conv(c) => {
            let d = match *dims {
                [m, cg, kh, kw] => [m, cg, kh, kw],
                [m, cg, kw] => [m, cg, 1, kw],
                _ => return Err(node_err(graph, id, "the weight must have rank 3 or 4")),
            };
            let group = c.group.max(1);
            if !d[0].is_multiple_of(group) {
                return Err(node_err(
                    graph,
                    id,
                    format!("{} output channels in {group} groups", d[0]),
                ));
            }
            Ok(PackedInt8::conv(data, d, group))
        }
        IntegerKind::MatMul { transposed } => {
            let (m, k, layout) = match (dims, transposed) {
                ([m, k], true) => (*m, *k, MatrixLayout::OutputsByReduction),
                ([k, m], false) => (*m, *k, MatrixLayout::ReductionByOutputs),
                _ => return Err(node_err(graph, id, "the weight must be 2-D")),
            };
            Ok(PackedInt8::matrix(data, m, k, layout))
        }
    }
}

fn pair(v: &[usize]) -> [usize; 2] {
    match *v {
        [h, w] => [h, w],
        [w] => [1, w],
        _ => [1, 1],
    }
}

/// Evaluates an integer layer; with `tail`, writes the requantized codes of
/// the tail's output instead of the float output (the tail's clamp holds
/// the layer's fused Relu). Without a tail the layer's fused Relu, if any,
/// is applied to the float output by the same kernel as a Relu / Clip
/// node. `prep` holds the packed weight of an executor (packing on the
/// first run); without it the weight is packed for this call (constant
/// folding).
pub(crate) fn eval_integer(
    graph: &Graph,
    id: NodeId,
    inputs: Vec<Option<Tensor>>,
    par: Parallelism,
    prep: Option<&IntegerPrep>,
    tail: Option<&IntegerTail>,
) -> Result<Vec<Tensor>, ExecError> {
    let node = graph.node(id);
    let activation = match tail {
        Some(_) => None,
        None => node.relu.map(fused_relu_op),
    };
    let Op::IntegerLayer(a) = &node.op else {
        unreachable!("eval_integer of a {}", node.op.op_type())
    };
    let err = |m: String| node_err(graph, id, m);
    let input = |i: usize| {
        inputs
            .get(i)
            .and_then(Option::as_ref)
            .ok_or_else(|| err(format!("input {i} is missing")))
    };
    let x = input(0)?;
    let codes = match x.data() {
        TensorData::U8(v) => Int8In::U8(v),
        TensorData::I8(v) => Int8In::I8(v),
        other => {
            return Err(err(format!(
                "input 0 must be uint8 or int8 codes, got {}",
                other.dtype()
            )));
        }
    };
    let zp_ok = match codes {
        Int8In::U8(_) => (0..=255).contains(&a.x_zero_point),
        Int8In::I8(_) => (-128..=127).contains(&a.x_zero_point),
    };
    if !zp_ok {
        return Err(err(format!(
            "zero point {} is outside the input type {}",
            a.x_zero_point,
            x.dtype()
        )));
    }
    let w = input(1)?;
    let owned;
    let packed: &PackedInt8 = match prep.and_then(|p| p.packed.get()) {
        Some(p) => p,
        None => {
            let p = pack(graph, id, w)?;
            match prep {
                Some(prep) => prep.packed.get_or_init(|| Arc::new(p)),
                None => {
                    owned = p;
                    &owned
                }
            }
        }
    };
    let m = packed.outputs();
    let bias = match inputs.get(2).and_then(Option::as_ref) {
        None => None,
        Some(b) => match b.data() {
            TensorData::I32(v) if v.len() == m => Some(&v[..]),
            _ => {
                return Err(err(format!(
                    "the bias must be {m} int32 values, got {} {}",
                    b.numel(),
                    b.dtype()
                )));
            }
        },
    };
    let scale_t = input(3)?;
    let scale = scale_t.as_f32().map_err(|_| {
        err(format!(
            "the scale must be float32, got {}",
            scale_t.dtype()
        ))
    })?;
    if scale.len() != 1 && scale.len() != m {
        return Err(err(format!(
            "{} scales for {m} output channels",
            scale.len()
        )));
    }
    let stage = OutputStage {
        bias,
        scale,
        tail: tail.map(|t| t.quant),
    };
    let out_value = tail.map_or(node.outputs[0], |t| t.output);
    let od = graph.shape_of(out_value)?.0.clone();
    let numel: usize = od.iter().product();
    let mut out = match tail.map(|t| t.dtype) {
        None => TensorData::F32(Arc::new(vec![0f32; numel])),
        Some(DType::I8) => TensorData::I8(Arc::new(vec![0i8; numel])),
        Some(_) => TensorData::U8(Arc::new(vec![0u8; numel])),
    };
    let buffer = match &mut out {
        TensorData::F32(v) => Int8Out::F32(Arc::make_mut(v).as_mut_slice()),
        TensorData::U8(v) => Int8Out::U8(Arc::make_mut(v).as_mut_slice()),
        TensorData::I8(v) => Int8Out::I8(Arc::make_mut(v).as_mut_slice()),
        _ => unreachable!("allocated above"),
    };
    match &a.kind {
        IntegerKind::Conv(c) => {
            let xd = x.dims();
            let input4 = match *xd {
                [n, c, h, w] => [n, c, h, w],
                [n, c, w] => [n, c, 1, w],
                _ => return Err(err("only 1-D and 2-D convolutions are supported".into())),
            };
            let wd = w.dims();
            let win = resolve_window(
                &xd[2..],
                &wd[2..],
                &c.strides,
                &c.pads,
                &c.dilations,
                c.auto_pad,
                false,
            )
            .map_err(err)?;
            let [pt, pl] = match (win.pads_begin.as_slice(), win.pads_end.as_slice()) {
                ([t, l], _) => [*t, *l],
                ([l], _) => [0, *l],
                _ => [0, 0],
            };
            let [pb, pr] = match win.pads_end.as_slice() {
                [b, r] => [*b, *r],
                [r] => [0, *r],
                _ => [0, 0],
            };
            let kernel = pair(&wd[2..]);
            let geom = ConvGeometry {
                input: input4,
                weight: [wd[0], wd[1], kernel[0], kernel[1]],
                strides: pair(&win.strides),
                pads: [pt, pl, pb, pr],
                dilations: pair(&win.dilations),
                group: c.group.max(1),
            };
            if input4[1] != geom.weight[1] * geom.group {
                return Err(err(format!(
                    "input has {} channels, the weight expects {} x group {}",
                    input4[1], geom.weight[1], geom.group
                )));
            }
            if geom.output().iter().product::<usize>() != numel {
                return Err(err(format!(
                    "output shape {od:?} differs from the convolution's {:?}",
                    geom.output()
                )));
            }
            conv2d_int8(
                codes,
                a.x_zero_point,
                &geom,
                packed,
                &stage,
                buffer,
                par,
                Int8Path::Auto,
            );
        }
        IntegerKind::MatMul { .. } => {
            let k = packed.reduction();
            if x.dims().last() != Some(&k) {
                return Err(err(format!(
                    "input {:?} does not end in the reduction length {k}",
                    x.dims()
                )));
            }
            let rows = x.numel() / k.max(1);
            if rows * m != numel {
                return Err(err(format!(
                    "output shape {od:?} does not hold {rows} x {m}"
                )));
            }
            matmul_int8(
                codes,
                a.x_zero_point,
                rows,
                packed,
                &stage,
                buffer,
                par,
                Int8Path::Auto,
            );
        }
    }
    if let (Some(op), TensorData::F32(v)) = (activation, &mut out) {
        qtune_kernels::unary(op, Arc::make_mut(v).as_mut_slice(), par);
    }
    Ok(vec![Tensor::new(od, out).map_err(|source| {
        ExecError::Tensor {
            node: node.name.clone(),
            source,
        }
    })?])
}
