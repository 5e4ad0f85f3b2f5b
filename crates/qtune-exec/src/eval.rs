//! Evaluation of one node. The weighted layers (Conv, ConvTranspose, Gemm,
//! MatMul) are evaluated here, on weights packed once per model and with the
//! following activation fused; the integer simulation's `IntegerLayer` in
//! `integer.rs`; every other op by its family's `eval`
//! (`qtune_ir::families`), given the node as a `qtune_ir::EvalCx`. Shapes
//! come from the prepared graph (every value has a static shape after
//! `prepare`).

use std::sync::Arc;

use qtune_ir::{
    AutoPad, FusedRelu, GemmAttrs, Graph, Node, NodeId, Op, ValueId, as_4d, pads4, pair,
    resolve_window,
};
use qtune_kernels::{self as k, Parallelism};
use qtune_tensor::{Tensor, TensorData};

use crate::ExecError;

struct Cx<'a> {
    /// An activation fused into a Conv (see `Executor` fusion).
    activation: Option<k::UnaryOp>,
    graph: &'a Graph,
    node: &'a Node,
    inputs: Vec<Option<Tensor>>,
    par: Parallelism,
}

impl Cx<'_> {
    fn err(&self, message: impl Into<String>) -> ExecError {
        ExecError::Node {
            node: self.node.name.clone(),
            op: self.node.op.op_type(),
            message: message.into(),
        }
    }
    fn input(&self, i: usize) -> Result<&Tensor, ExecError> {
        self.inputs
            .get(i)
            .and_then(Option::as_ref)
            .ok_or_else(|| self.err(format!("input {i} is missing")))
    }
    fn opt_input(&self, i: usize) -> Option<&Tensor> {
        self.inputs.get(i).and_then(Option::as_ref)
    }
    fn f32_input(&self, i: usize) -> Result<&[f32], ExecError> {
        let t = self.input(i)?;
        t.as_f32()
            .map_err(|_| self.err(format!("input {i} must be float32, got {}", t.dtype())))
    }
    fn out_value(&self, i: usize) -> ValueId {
        self.node.outputs[i]
    }
    fn out_dims(&self, i: usize) -> Result<Vec<usize>, ExecError> {
        Ok(self.graph.shape_of(self.out_value(i))?.0.clone())
    }
    fn tensor(&self, dims: Vec<usize>, data: TensorData) -> Result<Tensor, ExecError> {
        Tensor::new(dims, data).map_err(|source| ExecError::Tensor {
            node: self.node.name.clone(),
            source,
        })
    }
    fn f32_out(&self, dims: Vec<usize>, data: Vec<f32>) -> Result<Vec<Tensor>, ExecError> {
        Ok(vec![self.tensor(dims, TensorData::F32(Arc::new(data)))?])
    }
}

/// The node as an op family's evaluation sees it (`qtune_ir::EvalCx`), its
/// inputs moved in.
fn family_cx<'a>(cx: &mut Cx<'a>, id: NodeId) -> qtune_ir::EvalCx<'a> {
    qtune_ir::EvalCx {
        graph: cx.graph,
        node: cx.node,
        id,
        inputs: std::mem::take(&mut cx.inputs),
        par: cx.par,
    }
}

/// The kernel form of a Relu fused into an op (TPU-MLIR's `do_relu`): the
/// same `Relu` / `Clip` a separate activation node runs, so a fused op is
/// bit-identical to the op followed by that node.
pub(crate) fn fused_relu_op(relu: FusedRelu) -> k::UnaryOp {
    match relu.limit {
        None => k::UnaryOp::Relu,
        Some(hi) => k::UnaryOp::Clip { lo: 0.0, hi },
    }
}

/// Evaluates one node on its inputs (`None` for omitted optional inputs),
/// its fused Relu included.
pub(crate) fn eval_node(
    graph: &Graph,
    id: NodeId,
    inputs: Vec<Option<Tensor>>,
    par: Parallelism,
) -> Result<Vec<Tensor>, ExecError> {
    let node = graph.node(id);
    let Some(relu) = node.relu else {
        return eval_node_fused(graph, id, inputs, par, None);
    };
    let op = fused_relu_op(relu);
    if matches!(node.op, Op::Conv(_) | Op::IntegerLayer(_)) {
        // The convolution kernels apply it while the tile is in cache; an
        // integer layer applies its own (`integer::eval_integer`).
        return eval_node_fused(graph, id, inputs, par, Some(op));
    }
    let mut outputs = eval_node_fused(graph, id, inputs, par, None)?;
    let Some(first) = outputs.first_mut() else {
        return Ok(outputs);
    };
    let shape = first.shape().clone();
    let mut data = std::mem::replace(first, Tensor::scalar_f32(0.0))
        .into_unshared_f32_vec()
        .or_else(|t| t.as_f32().map(<[f32]>::to_vec))
        .map_err(|e| ExecError::Node {
            node: node.name.clone(),
            op: node.op.op_type(),
            message: format!("a fused Relu needs a float32 output: {e}"),
        })?;
    k::unary(op, &mut data, par);
    *first = Tensor::from_f32(shape, data).map_err(|e| ExecError::Node {
        node: node.name.clone(),
        op: node.op.op_type(),
        message: e.to_string(),
    })?;
    Ok(outputs)
}

/// Evaluates a Conv node with an activation applied to its output inside
/// the kernel; bit-identical to the Conv followed by the activation node.
pub(crate) fn eval_node_fused(
    graph: &Graph,
    id: NodeId,
    inputs: Vec<Option<Tensor>>,
    par: Parallelism,
    activation: Option<k::UnaryOp>,
) -> Result<Vec<Tensor>, ExecError> {
    let node = graph.node(id);
    let mut cx = Cx {
        activation,
        graph,
        node,
        inputs,
        par,
    };
    match &node.op {
        Op::Conv(a) => eval_conv(&cx, a, None),
        Op::ConvTranspose(a) => {
            let x = cx.f32_input(0)?;
            let w = cx.f32_input(1)?;
            let xd = as_4d(cx.input(0)?.dims())
                .ok_or_else(|| cx.err("only 1-D and 2-D transposed convolutions are supported"))?;
            let wd =
                as_4d(cx.input(1)?.dims()).ok_or_else(|| cx.err("weight must have rank 3 or 4"))?;
            if a.conv.auto_pad != AutoPad::NotSet && a.conv.auto_pad != AutoPad::Valid {
                return Err(cx.err("auto_pad SAME_* is not supported for ConvTranspose"));
            }
            let od = cx.out_dims(0)?;
            let r = xd.len() - 2;
            let pads = if a.conv.pads.is_empty() {
                vec![0; 2 * r]
            } else {
                a.conv.pads.clone()
            };
            let mut p = k::ConvTranspose2dParams::default();
            p.strides = pair(&a.conv.strides, 1);
            p.pads = pads4(&pads[..pads.len() / 2], &pads[pads.len() / 2..]);
            p.dilations = pair(&a.conv.dilations, 1);
            p.group = a.conv.group.max(1);
            p.output_padding = pair(&a.output_padding, 0);
            let bias = match cx.opt_input(2) {
                Some(_) => Some(cx.f32_input(2)?),
                None => None,
            };
            let expected = k::conv_transpose2d_out_dims(xd, wd, &p);
            let od4 = as_4d(&od).ok_or_else(|| cx.err("bad output rank"))?;
            if expected != od4 {
                return Err(cx.err(format!(
                    "output_shape {od:?} differs from the computed {expected:?}; explicit output_shape is not supported"
                )));
            }
            let mut out = k::zeroed(od.iter().product(), cx.par);
            k::conv_transpose2d(x, xd, w, wd, bias, &p, &mut out, cx.par);
            cx.f32_out(od, out)
        }
        Op::Gemm(a) => eval_gemm(&cx, a, None),
        Op::MatMul => eval_matmul(&cx, None),
        Op::IntegerLayer(_) => {
            let inputs = std::mem::take(&mut cx.inputs);
            crate::integer::eval_integer(graph, id, inputs, par, None, None)
        }
        // Every other op's evaluation is its family's (`qtune_ir::families`).
        op => match qtune_ir::families::of(op).and_then(|f| f.eval) {
            Some(eval) => Ok(eval(family_cx(&mut cx, id))?),
            None => Err(cx.err("internal: no evaluation for this op")),
        },
    }
}

/// ONNX `MatMul` (and TPU-MLIR's, with its optional bias), with a 2-D constant `B` packed
/// beforehand for the few-row product if given: the same bits ([`k::matmul_uninit`] runs
/// such products on that kernel, packing `B` on every call).
fn eval_matmul(cx: &Cx, packed: Option<&k::FewRowsWeights>) -> Result<Vec<Tensor>, ExecError> {
    let (a, b) = (cx.f32_input(0)?, cx.f32_input(1)?);
    let ad = cx.input(0)?.dims().to_vec();
    let bd = cx.input(1)?.dims().to_vec();
    let od = k::matmul_out_dims(&ad, false, &bd, false).ok_or_else(|| {
        cx.err(format!(
            "inputs {ad:?} and {bd:?} do not multiply (inner dimensions or batch axes differ)"
        ))
    })?;
    let expected = cx.out_dims(0)?;
    if od != expected {
        return Err(cx.err(format!(
            "the product of {ad:?} and {bd:?} is {od:?}, but the output is declared {expected:?}"
        )));
    }
    let few_rows = match (&ad[..], packed) {
        (&[m, _], Some(p)) if bd.len() == 2 && p.dims() == (bd[0], bd[1]) => Some((m, p)),
        _ => None,
    };
    let mut out = match few_rows {
        Some((m, p)) => {
            let mut out = k::zeroed(od.iter().product(), cx.par);
            if !k::gemm_few_rows(m, a, false, p, &mut out, false, cx.par) {
                k::matmul(a, &ad, b, &bd, &mut out, cx.par);
            }
            out
        }
        // SAFETY: `od` is `matmul_out_dims` of the operand dims given to `matmul_uninit`,
        // which writes every element of an output of those dims (it asserts the length).
        None => unsafe {
            written_by(od.iter().product(), |o| {
                k::matmul_uninit(a, &ad, b, &bd, o, cx.par);
            })
        },
    };
    // The optional bias (a fused MatMul + Add): the same per-element add the separate Add
    // node would do, written over the product (`binary_in_place` is bit-identical to
    // `binary`). The bias must broadcast to the product's dims without widening them.
    if let Some(bt) = cx.opt_input(2) {
        let bias = cx.f32_input(2)?;
        let bdims = bt.dims();
        if k::broadcast_shape(&od, bdims).as_deref() != Some(od.as_slice()) {
            return Err(cx.err(format!(
                "the bias {bdims:?} does not broadcast to the product's dims {od:?}"
            )));
        }
        k::binary_in_place(
            k::BinaryOp::Add,
            k::InPlace::Left,
            &mut out,
            &od,
            bias,
            bdims,
            cx.par,
        );
    }
    cx.f32_out(od, out)
}

/// A Conv (with `cx.activation` fused), on weights packed once beforehand if given.
fn eval_conv(
    cx: &Cx,
    a: &qtune_ir::ConvAttrs,
    packed: Option<&k::PackedConvWeights>,
) -> Result<Vec<Tensor>, ExecError> {
    let x = cx.f32_input(0)?;
    let wt = cx.input(1)?;
    let w = cx.f32_input(1)?;
    let xd = as_4d(cx.input(0)?.dims())
        .ok_or_else(|| cx.err("only 1-D and 2-D convolutions are supported"))?;
    let wd = as_4d(wt.dims()).ok_or_else(|| cx.err("weight must have rank 3 or 4"))?;
    let spatial = &cx.input(0)?.dims()[2..];
    let kernel = &wt.dims()[2..];
    let p = conv_params(a, spatial, kernel).map_err(|m| cx.err(m))?;
    let bias = match cx.opt_input(2) {
        Some(_) => Some(cx.f32_input(2)?),
        None => None,
    };
    // Weights packed for other dims (a graph edited after packing) are not used.
    let packed = packed.filter(|pk| pk.w_dims() == wd && pk.group() == p.group);
    let od = cx.out_dims(0)?;
    // SAFETY: `od` is the inferred output shape of this Conv over `xd` and `wd` with `p`,
    // which `conv2d_fused_packed_uninit` writes in full (it asserts the length).
    let out = unsafe {
        written_by(od.iter().product(), |o| {
            k::conv2d_fused_packed_uninit(x, xd, w, wd, packed, bias, &p, cx.activation, o, cx.par);
        })
    };
    cx.f32_out(od, out)
}

/// Evaluates Conv node `id` (with `activation` fused) on weights packed once per model
/// (see `Executor`); the same bits as [`eval_node_fused`].
pub(crate) fn eval_conv_packed(
    graph: &Graph,
    id: NodeId,
    inputs: Vec<Option<Tensor>>,
    par: Parallelism,
    activation: Option<k::UnaryOp>,
    packed: &k::PackedConvWeights,
) -> Result<Vec<Tensor>, ExecError> {
    let node = graph.node(id);
    let cx = Cx {
        activation,
        graph,
        node,
        inputs,
        par,
    };
    let Op::Conv(a) = &node.op else {
        return Err(cx.err("packed weights given for a node that is not a Conv"));
    };
    eval_conv(&cx, a, Some(packed))
}

/// ONNX `Gemm`: `alpha * A' * B' + beta * C`, with `B` packed beforehand for the few-row
/// product if given: the same bits ([`k::gemm`] runs such products on that kernel, packing
/// `B` on every call).
fn eval_gemm(
    cx: &Cx,
    a: &GemmAttrs,
    packed: Option<&k::FewRowsWeights>,
) -> Result<Vec<Tensor>, ExecError> {
    let ad = cx.input(0)?.dims().to_vec();
    let bd = cx.input(1)?.dims().to_vec();
    let (m, kk) = if a.trans_a {
        (ad[1], ad[0])
    } else {
        (ad[0], ad[1])
    };
    let n = if a.trans_b { bd[0] } else { bd[1] };
    let has_c = cx.opt_input(2).is_some() && a.beta != 0.0;
    let mut out = if has_c {
        // out = beta * C broadcast to [m, n]; the product is added on top.
        let c = cx.f32_input(2)?;
        let cd = cx.input(2)?.dims().to_vec();
        let mut out = broadcast_matrix(c, &cd, m, n, cx.par);
        if a.beta != 1.0 {
            out.iter_mut().for_each(|v| *v *= a.beta);
        }
        out
    } else {
        k::zeroed(m * n, cx.par)
    };
    let x = cx.f32_input(0)?;
    let product = |c: &mut [f32], accumulate: bool| -> Result<(), ExecError> {
        if packed.is_some_and(|p| k::gemm_few_rows(m, x, a.trans_a, p, c, accumulate, cx.par)) {
            return Ok(());
        }
        let b = cx.f32_input(1)?;
        k::gemm(m, kk, n, x, a.trans_a, b, a.trans_b, c, accumulate, cx.par);
        Ok(())
    };
    if a.alpha == 1.0 {
        product(&mut out, has_c)?;
    } else {
        let mut prod = k::zeroed(m * n, cx.par);
        product(&mut prod, false)?;
        for (o, p) in out.iter_mut().zip(prod) {
            *o += a.alpha * p;
        }
    }
    cx.f32_out(vec![m, n], out)
}

/// Evaluates Gemm or MatMul node `id` (no fused Relu) with its constant weight packed
/// beforehand for the few-row product (the executor packs it once per model, see
/// [`pack_gemm_weight`]).
pub(crate) fn eval_gemm_packed(
    graph: &Graph,
    id: NodeId,
    inputs: Vec<Option<Tensor>>,
    par: Parallelism,
    packed: &k::FewRowsWeights,
) -> Result<Vec<Tensor>, ExecError> {
    let node = graph.node(id);
    let cx = Cx {
        activation: None,
        graph,
        node,
        inputs,
        par,
    };
    match &node.op {
        Op::Gemm(a) => eval_gemm(&cx, a, Some(packed)),
        Op::MatMul => eval_matmul(&cx, Some(packed)),
        _ => Err(cx.err("packed weights given for a node that is neither Gemm nor MatMul")),
    }
}

/// The constant weight of Gemm or MatMul node `id` (a 2-D left operand) packed for the
/// few-row product, when that kernel runs it here ([`k::gemm_few_rows_applies`]: at most
/// [`k::FEW_ROWS_MAX`] rows, AVX-512) and it has no fused Relu; `None` otherwise.
pub(crate) fn pack_gemm_weight(graph: &Graph, id: NodeId) -> Option<k::FewRowsWeights> {
    let node = graph.node(id);
    let (trans_a, trans_b) = match &node.op {
        Op::Gemm(a) => (a.trans_a, a.trans_b),
        Op::MatMul => (false, false),
        _ => return None,
    };
    if node.relu.is_some() {
        return None;
    }
    let x = (*node.inputs.first()?)?;
    let xd = &graph.shape_of(x).ok()?.0;
    let m = match (&xd[..], trans_a) {
        (&[m, _], false) | (&[_, m], true) => m,
        _ => return None,
    };
    let w = graph.constant_of((*node.inputs.get(1)?)?)?;
    let (kk, n) = match (w.dims(), trans_b) {
        (&[kk, n], false) | (&[n, kk], true) => (kk, n),
        _ => return None,
    };
    // Not on a CPU or a shape the kernel does not take: the pack would never be read.
    if !k::gemm_few_rows_applies(m, kk, n) {
        return None;
    }
    Some(k::FewRowsWeights::new(w.as_f32().ok()?, kk, n, trans_b))
}

/// Packs the constant weights of Conv node `id` for the pointwise or the direct convolution
/// kernel, when its static shapes run on one (see [`k::PackedConvWeights::for_conv`]);
/// `None` otherwise (other shapes, a non-constant weight, or a CPU without the kernels).
pub(crate) fn pack_conv_weights(graph: &Graph, id: NodeId) -> Option<k::PackedConvWeights> {
    let node = graph.node(id);
    let Op::Conv(a) = &node.op else { return None };
    let x = (*node.inputs.first()?)?;
    let wv = (*node.inputs.get(1)?)?;
    let wt = graph.constant_of(wv)?;
    let w = wt.as_f32().ok()?;
    let xdims = &graph.shape_of(x).ok()?.0;
    let xd = as_4d(xdims)?;
    let wd = as_4d(wt.dims())?;
    let p = conv_params(a, &xdims[2..], &wt.dims()[2..]).ok()?;
    let shapes_ok = p.group >= 1
        && xd[1] % p.group == 0
        && wd[0] % p.group == 0
        && wd[1] * p.group == xd[1]
        && w.len() == wd.iter().product::<usize>();
    if !shapes_ok {
        return None;
    }
    k::PackedConvWeights::for_conv(w, xd, wd, &p)
}

/// Evaluates a pointwise Conv `pw` (its inputs in `inputs`) and the depthwise Conv `dw` that
/// reads its output, as one kernel (see the executor's pair fusion); bit-identical to the
/// two nodes run one after the other with the same activations. `output` is the value the
/// pair produces (the depthwise Conv's output, or its activation's).
// The pair's two nodes and activations are plain arguments, like the kernel's.
#[allow(clippy::too_many_arguments)]
pub(crate) fn eval_pointwise_depthwise(
    graph: &Graph,
    pw: NodeId,
    inputs: Vec<Option<Tensor>>,
    par: Parallelism,
    pw_activation: Option<k::UnaryOp>,
    dw: NodeId,
    dw_activation: Option<k::UnaryOp>,
    output: ValueId,
    pw_packed: Option<&k::PackedConvWeights>,
) -> Result<Vec<Tensor>, ExecError> {
    let cx = Cx {
        activation: None,
        graph,
        node: graph.node(pw),
        inputs,
        par,
    };
    let x = cx.f32_input(0)?;
    let xd = as_4d(cx.input(0)?.dims())
        .ok_or_else(|| cx.err("pointwise + depthwise pair needs a 2-D convolution"))?;
    let w1 = cx.f32_input(1)?;
    let b1 = match cx.opt_input(2) {
        Some(_) => Some(cx.f32_input(2)?),
        None => None,
    };
    let dw_node = graph.node(dw);
    let Op::Conv(a) = &dw_node.op else {
        return Err(cx.err(format!("{} is not a Conv", dw_node.name)));
    };
    let constant = |i: usize| -> Result<Option<&Tensor>, ExecError> {
        match dw_node.inputs.get(i).copied().flatten() {
            None => Ok(None),
            Some(v) => graph
                .constant_of(v)
                .map(Some)
                .ok_or_else(|| cx.err(format!("{}: input {i} is not a constant", dw_node.name))),
        }
    };
    let wt = constant(1)?.ok_or_else(|| cx.err(format!("{}: no weight", dw_node.name)))?;
    let w2 = wt
        .as_f32()
        .map_err(|_| cx.err(format!("{}: weight must be float32", dw_node.name)))?;
    let w2d = as_4d(wt.dims()).ok_or_else(|| cx.err("depthwise weight must have rank 4"))?;
    let b2 = match constant(2)? {
        Some(t) => Some(
            t.as_f32()
                .map_err(|_| cx.err(format!("{}: bias must be float32", dw_node.name)))?,
        ),
        None => None,
    };
    let p = conv_params(a, &xd[2..], &wt.dims()[2..]).map_err(|m| cx.err(m))?;
    let od = graph.shape_of(output)?.0.clone();
    // SAFETY: `od` is the inferred shape of the depthwise Conv's output, which the fused
    // kernel writes in full (it asserts the length against its own dims).
    let out = unsafe {
        written_by(od.iter().product(), |o| {
            k::conv2d_pointwise_depthwise_uninit(
                x,
                xd,
                w1,
                pw_packed,
                b1,
                pw_activation,
                w2,
                w2d,
                b2,
                &p,
                dw_activation,
                o,
                par,
            );
        })
    };
    cx.f32_out(od, out)
}

/// The kernel form of an elementwise activation node, when its parameters
/// are known statically (Clip bounds must be attributes or constants).
pub(crate) fn activation_of(graph: &Graph, id: NodeId) -> Option<k::UnaryOp> {
    let node = graph.node(id);
    let constant = |i: usize| -> Option<Option<f32>> {
        match node.inputs.get(i).copied().flatten() {
            None => Some(None),
            Some(v) => graph
                .constant_of(v)
                .and_then(|t| t.to_f32_vec().first().copied())
                .map(Some),
        }
    };
    Some(match &node.op {
        Op::Relu => k::UnaryOp::Relu,
        Op::Sigmoid => k::UnaryOp::Sigmoid,
        Op::HardSwish => k::UnaryOp::HardSwish,
        Op::LeakyRelu { alpha } => k::UnaryOp::LeakyRelu { alpha: *alpha },
        Op::HardSigmoid { alpha, beta } => k::UnaryOp::HardSigmoid {
            alpha: *alpha,
            beta: *beta,
        },
        Op::Clip(a) => {
            let lo = match a.min {
                Some(v) => Some(v),
                None => constant(1)?,
            };
            let hi = match a.max {
                Some(v) => Some(v),
                None => constant(2)?,
            };
            k::UnaryOp::Clip {
                lo: lo.unwrap_or(f32::NEG_INFINITY),
                hi: hi.unwrap_or(f32::INFINITY),
            }
        }
        _ => return None,
    })
}

/// Gemm's `C` (dims `cd`, unidirectionally broadcastable to `[m, n]`) broadcast to a new
/// `[m, n]` buffer. The usual bias shapes (`[n]`, `[1, n]`, a scalar) are copied row by row
/// into an uninitialised buffer, without a zero-fill pass first.
fn broadcast_matrix(c: &[f32], cd: &[usize], m: usize, n: usize, par: Parallelism) -> Vec<f32> {
    let row_vector =
        c.len() == n && cd.last() == Some(&n) && cd.iter().rev().skip(1).all(|&d| d == 1);
    if row_vector && n > 0 {
        // SAFETY: `c` holds `n` values (`row_vector`), so each of the `m` rows of `n`
        // elements is written in full.
        return unsafe {
            written_by(m * n, |o| {
                for row in o.chunks_exact_mut(n) {
                    for (o, &v) in row.iter_mut().zip(c) {
                        o.write(v);
                    }
                }
            })
        };
    }
    let mut out = k::zeroed(m * n, par);
    k::expand(c, cd, &[m, n], &mut out);
    out
}

/// A buffer of `n` elements filled by `write`, a kernel that writes every element of the
/// uninitialised slice it is given (the `*_uninit` kernels): no zero-fill pass first.
///
/// # Safety
/// `write` must initialise all `n` elements of the slice it is given, whatever it
/// returns through, unless it panics (the buffer is then dropped unread). The `*_uninit`
/// kernels promise this when their shape arguments describe exactly `n` output elements
/// (and assert their shapes otherwise); callers pass `n` from the same dims they give the
/// kernel.
unsafe fn written_by(n: usize, write: impl FnOnce(&mut [std::mem::MaybeUninit<f32>])) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(n);
    write(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: the caller's contract: `write` initialised the first `n` elements.
    unsafe { v.set_len(n) };
    v
}

/// Kernel parameters of a Conv over the given spatial input and kernel
/// extents (auto_pad and defaults resolved).
fn conv_params(
    a: &qtune_ir::ConvAttrs,
    spatial: &[usize],
    kernel: &[usize],
) -> Result<k::Conv2dParams, String> {
    let win = resolve_window(
        spatial,
        kernel,
        &a.strides,
        &a.pads,
        &a.dilations,
        a.auto_pad,
        false,
    )?;
    let mut p = k::Conv2dParams::default();
    p.strides = pair(&win.strides, 1);
    p.pads = pads4(&win.pads_begin, &win.pads_end);
    p.dilations = pair(&win.dilations, 1);
    p.group = a.group.max(1);
    Ok(p)
}

/// A QuantizeLinear whose only reader is a DequantizeLinear with the same
/// scale and zero point, run as one fake-quantization pass
/// (`qtune_ir::quantize::fake_quant`).
pub(crate) fn eval_fake_quant(
    graph: &Graph,
    q: NodeId,
    inputs: Vec<Option<Tensor>>,
    output: ValueId,
) -> Result<Vec<Tensor>, ExecError> {
    let out = qtune_ir::quantize::fake_quant(qtune_ir::EvalCx {
        graph,
        node: graph.node(q),
        id: q,
        inputs,
        par: Parallelism::Sequential,
    })?;
    debug_assert_eq!(
        graph.shape_of(output).map(|s| s.0.clone()).ok(),
        out.first().map(|t| t.dims().to_vec())
    );
    Ok(out)
}
