//! The reduction family: one registration per op.
//!
//! Every op of the family (ONNX's `Reduce*`: one data input, the axes as an
//! attribute or, from an opset on, as input 1, `keepdims` and
//! `noop_with_empty_axes`, all in [`ReduceAttrs`]) is one entry of the
//! `reduce_family!` table below, which holds what every
//! crate needs to know about it:
//!
//! - its ONNX op type (the entry's name) and the opset from which ONNX
//!   takes its axes as an input ([`ReduceSpec::axes_input_from`]);
//! - its definition as a fold ([`ReduceSpec::init`], [`ReduceSpec::map`],
//!   [`ReduceSpec::combine`], [`ReduceSpec::finish`]), which the executor
//!   runs when `qtune-kernels` has no kernel for the op, and which the
//!   kernel tests compare the kernels against;
//! - its Top dialect mode (`top.Reduce` with `mode = "ReduceMean"`, ...);
//! - whether a TPU profile lowers it to int8 ([`ReduceSpec::cv18xx_int8`]:
//!   the BM168x families keep every reduction in float).
//!
//! From the table come [`Op::reduce`], [`REDUCE_OPS`], [`by_onnx`],
//! [`by_top_mode`], and the
//! pattern macro [`reduce_op!`](crate::reduce_op).
//!
//! The family's code is in this file too, one section per concern (ONNX
//! import and export, Top reading and writing, shape inference,
//! evaluation, the TPU lowering's rules), registered once in
//! `crate::families`, through which the other crates reach it;
//! `docs/adding-an-op.md` says how to add an op.

use qtune_kernels as k;
use qtune_tensor::Tensor;

use crate::eval_cx::EvalCx;
use crate::mlir::reader::TopIn;
use crate::mlir::writer::{TopOp, TopOut, mk, usizes};
use crate::mlir::{MlirAttr, MlirError};
use crate::onnx_node::{ExportInputs, NodeError, OnnxIn, OnnxOut};
use crate::shape_infer::{Ctx, one};
use crate::tpu::{KeepFloat, RangeFlow, TpuChip, TpuFloat};
use crate::{Graph, InferredOutput, IrError, NodeId, Op, ReduceAttrs};

/// Everything qtune knows about one op of the family.
#[derive(Debug)]
pub struct ReduceSpec {
    /// The IR and ONNX op type, the variant's name.
    pub name: &'static str,
    /// The opset from which ONNX takes `axes` as input 1 instead of an
    /// attribute (13 for ReduceSum, 18 for the others).
    pub axes_input_from: i64,
    /// The `mode` of TPU-MLIR's `top.Reduce` for it.
    pub top_mode: &'static str,
    /// The fold's start value.
    pub init: f64,
    /// Applied to each element before the fold (`|x|` for ReduceL1).
    pub map: fn(f64) -> f64,
    /// The fold.
    pub combine: fn(f64, f64) -> f64,
    /// Applied to the fold's result, given the number of elements reduced
    /// (the mean's division, the L2 norm's square root).
    pub finish: fn(f64, usize) -> f64,
    /// TPU-MLIR's CV18xx lowering has an int8 form of it (the BM168x
    /// families keep every reduction in float: `chip_float` in
    /// `qtune-deploy/src/plan.rs`).
    pub cv18xx_int8: bool,
    /// Notes for the Top op table (`docs/tpu-mlir-top-ops.md`).
    pub top_notes: &'static str,
    /// The op with these attributes.
    pub build: fn(ReduceAttrs) -> Op,
}

impl ReduceSpec {
    /// The definition over `values` (the elements of one output position),
    /// in f64: the reference the kernels are checked against.
    pub fn reference(&self, values: impl IntoIterator<Item = f32>) -> f32 {
        let mut n = 0;
        let acc = values.into_iter().fold(self.init, |acc, x| {
            n += 1;
            (self.combine)(acc, (self.map)(f64::from(x)))
        });
        (self.finish)(acc, n) as f32
    }
}

/// The registration of the op whose ONNX type is `onnx`, if any.
pub fn by_onnx(onnx: &str) -> Option<&'static ReduceSpec> {
    REDUCE_OPS.iter().find(|s| s.name == onnx)
}

/// The registration of `top.Reduce` with mode `mode`, if any.
pub fn by_top_mode(mode: &str) -> Option<&'static ReduceSpec> {
    REDUCE_OPS.iter().find(|s| s.top_mode == mode)
}

/// The `top.Reduce` row of the Top op table (its modes from the registry).
pub(crate) fn top_rows() -> impl Iterator<Item = [String; 5]> {
    let modes: Vec<&str> = REDUCE_OPS.iter().map(|s| s.top_mode).collect();
    let names: Vec<&str> = REDUCE_OPS.iter().map(|s| s.name).collect();
    let notes: Vec<&str> = REDUCE_OPS
        .iter()
        .map(|s| s.top_notes)
        .filter(|n| !n.is_empty())
        .collect();
    std::iter::once([
        "top.Reduce".to_string(),
        "input".to_string(),
        format!(
            "axes, keepdims, noop_with_empty_axes, mode ({})",
            modes.join(", ")
        ),
        names.join(" / "),
        notes.join("; "),
    ])
}

/// The table. Each entry: `Variant => { fields }`, the fields being those of
/// [`ReduceSpec`] but `name` and `build`, which come from the variant.
macro_rules! reduce_family {
    ($(
        $variant:ident => { $($key:ident : $val:expr),* $(,)? }
    ),* $(,)?) => {
        /// Every op of the reduction family.
        pub static REDUCE_OPS: &[ReduceSpec] = &[$(
            ReduceSpec {
                name: stringify!($variant),
                top_mode: stringify!($variant),
                build: Op::$variant,
                $($key: $val),*
            }
        ),*];

        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        enum Ix { $($variant),* }

        impl Op {
            /// This op's registration and attributes, when it belongs to
            /// the reduction family.
            pub fn reduce(&self) -> Option<(&'static ReduceSpec, &ReduceAttrs)> {
                let (ix, a) = match self {
                    $(Op::$variant(a) => (Ix::$variant as usize, a),)*
                    _ => return None,
                };
                Some((&REDUCE_OPS[ix], a))
            }
        }

        /// A pattern matching every [`Op`] of the reduction family
        /// (generated from the registry in `qtune-ir/src/reduce.rs`): a
        /// `match` arm `reduce_op!() => ...` keeps the match exhaustive
        /// whatever the family holds. Handle it through [`Op::reduce`].
        #[macro_export]
        macro_rules! reduce_op {
            () => { $($crate::Op::$variant(_))|* };
        }
    };
}

fn sum(a: f64, b: f64) -> f64 {
    a + b
}

fn same(x: f64) -> f64 {
    x
}

fn done(acc: f64, _: usize) -> f64 {
    acc
}

reduce_family! {
    ReduceMean => {
        axes_input_from: 18, init: 0.0, map: same, combine: sum,
        finish: |acc, n| acc / n as f64,
        cv18xx_int8: true, top_notes: "",
    },
    ReduceSum => {
        axes_input_from: 13, init: 0.0, map: same, combine: sum, finish: done,
        cv18xx_int8: true, top_notes: "",
    },
    ReduceL2 => {
        axes_input_from: 18, init: 0.0, map: |x| x * x, combine: sum,
        finish: |acc, _| acc.sqrt(),
        cv18xx_int8: false, top_notes: "",
    },
    ReduceMax => {
        axes_input_from: 18, init: f64::NEG_INFINITY, map: same,
        combine: |a, b| if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) },
        finish: done,
        cv18xx_int8: true, top_notes: "",
    },
    ReduceMin => {
        axes_input_from: 18, init: f64::INFINITY, map: same,
        combine: |a, b| if a.is_nan() || b.is_nan() { f64::NAN } else { a.min(b) },
        finish: done,
        cv18xx_int8: true, top_notes: "",
    },
    ReduceL1 => {
        axes_input_from: 18, init: 0.0, map: f64::abs, combine: sum, finish: done,
        cv18xx_int8: false, top_notes: "",
    },
    ReduceProd => {
        axes_input_from: 18, init: 1.0, map: same, combine: |a, b| a * b, finish: done,
        cv18xx_int8: false, top_notes: "",
    },
}

// ---------------------------------------------------------------------------
// ONNX (called from `qtune-onnx`; `crate::onnx_node`).

/// The IR op of a reduction ONNX node ([`by_onnx`]): the axes as an
/// attribute, or as input 1 from the op's opset on.
pub fn import(cx: &mut OnnxIn) -> Result<Op, NodeError> {
    let Some(spec) = by_onnx(cx.op_type) else {
        return Err(cx.node_err("internal: not in the reduction registry"));
    };
    cx.check_known(&["axes", "keepdims", "noop_with_empty_axes"])?;
    let axes = cx.ints_moved_to_input(spec.axes_input_from, "axes")?;
    if let Some(a) = &axes {
        cx.check_distinct("axes", a)?;
    }
    let attrs = ReduceAttrs {
        axes,
        keepdims: cx.flag("keepdims", true)?,
        noop_with_empty_axes: cx.flag("noop_with_empty_axes", false)?,
    };
    Ok((spec.build)(attrs))
}

/// The ONNX attributes of a reduction for the exporter's `opset`: the axes
/// as input 1 when that opset takes them so, else as the attribute (a
/// constant axes input is folded into it).
pub fn export(op: &Op, inputs: &ExportInputs, out: &mut OnnxOut) -> Result<(), NodeError> {
    let opset = inputs.opset;
    let node_err = |message: String| NodeError::Node { message };
    let Some((spec, a)) = op.reduce() else {
        return Err(node_err(format!(
            "internal: {} is not a reduction",
            op.op_type()
        )));
    };
    if spec.axes_input_from <= opset {
        out.ints_input(1, "axes", a.axes.as_ref())?;
        out.int("keepdims", i64::from(a.keepdims));
        if a.noop_with_empty_axes {
            out.int("noop_with_empty_axes", 1);
        }
        return Ok(());
    }
    let axes = match (&a.axes, inputs.present(1)) {
        (Some(axes), false) => Some(axes.clone()),
        (None, false) => None,
        (Some(_), true) => {
            return Err(node_err(
                "'axes' is given both as an attribute and as input 1".into(),
            ));
        }
        (None, true) => {
            let axes = inputs.constant_ints(1).ok_or_else(|| {
                node_err(format!(
                    "the axes input is not a constant; opset {opset} needs the axes as an attribute"
                ))
            })?;
            // An empty axes input means "all axes" like an absent one.
            (!axes.is_empty()).then_some(axes)
        }
    };
    out.keep_inputs = Some(1);
    let reduces_nothing = axes.as_ref().is_none_or(|v| v.is_empty());
    if a.noop_with_empty_axes && reduces_nothing {
        return Err(node_err(format!(
            "noop_with_empty_axes=1 with no axes does not exist before opset 18 (export opset {opset})"
        )));
    }
    if let Some(axes) = axes {
        out.ints("axes", axes);
    }
    out.int("keepdims", i64::from(a.keepdims));
    Ok(())
}

// ---------------------------------------------------------------------------
// The Top dialect (called from the `.mlir` reader and writer).

/// The reduction of a `top.Reduce` (its `mode`), its input set on `r`.
pub(crate) fn read_top(r: &mut TopIn) -> Result<Op, MlirError> {
    r.inputs = r.unary()?;
    let attrs = ReduceAttrs {
        axes: Some(r.a.ints("axes").unwrap_or_default()),
        keepdims: r.a.bool_or("keepdims", true),
        noop_with_empty_axes: r.a.bool_or("noop_with_empty_axes", false),
    };
    // The reduction family from its registry (`crate::reduce`).
    match r.a.str("mode").and_then(by_top_mode) {
        Some(spec) => Ok((spec.build)(attrs)),
        None => {
            let m = r.a.str("mode");
            r.err(format!("`top.Reduce` mode {m:?} is not supported"))
        }
    }
}

/// The `top.Reduce` of a reduction node.
pub(crate) fn write_top(w: &TopOut) -> Result<TopOp, MlirError> {
    use MlirAttr as A;
    let (spec, a) = w
        .node
        .op
        .reduce()
        .ok_or_else(|| w.err("internal: not in the reduction registry".into()))?;
    let rank = w.in_rank(0)?;
    let axes = crate::resolve_reduce_axes(w.g, w.id, a, rank).map_err(|e| w.err(e.to_string()))?;
    let mut attrs = vec![
        ("axes", usizes(&axes)),
        ("keepdims", A::Bool(a.keepdims)),
        ("mode", A::Str(spec.top_mode.to_string())),
    ];
    if axes.is_empty() && a.noop_with_empty_axes {
        attrs.push(("noop_with_empty_axes", A::Bool(true)));
    }
    Ok(mk("top.Reduce", w.values(1)?, attrs))
}

// ---------------------------------------------------------------------------
// Shape inference (called from `crate::infer_node`).

fn reduce_axes(cx: &Ctx, a: &ReduceAttrs, rank: usize) -> Result<Vec<usize>, IrError> {
    let axes = match &a.axes {
        Some(v) => v.clone(),
        None if cx.has_input(1) => cx.const_ints(1)?,
        None => Vec::new(),
    };
    if axes.is_empty() {
        return Ok(if a.noop_with_empty_axes {
            Vec::new()
        } else {
            (0..rank).collect()
        });
    }
    axes.into_iter().map(|x| cx.axis(x, rank)).collect()
}

/// Resolved reduction axes of a Reduce* node (sorted, unique).
pub fn resolve_reduce_axes(
    graph: &Graph,
    id: NodeId,
    a: &ReduceAttrs,
    rank: usize,
) -> Result<Vec<usize>, IrError> {
    let cx = Ctx {
        graph,
        node: graph.node(id),
    };
    let mut v = reduce_axes(&cx, a, rank)?;
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// The output shape of a reduction.
pub(crate) fn infer(cx: &Ctx) -> Result<Vec<InferredOutput>, IrError> {
    let Some((_, a)) = cx.node.op.reduce() else {
        return Err(cx.err("internal: not in the reduction registry"));
    };
    let x = cx.shape(0)?;
    let axes = reduce_axes(cx, a, x.len())?;
    let mut out = Vec::new();
    for (i, &d) in x.iter().enumerate() {
        if axes.contains(&i) {
            if a.keepdims {
                out.push(1);
            }
        } else {
            out.push(d);
        }
    }
    one(out, cx.dtype(0)?)
}

// ---------------------------------------------------------------------------
// Evaluation (called from `qtune-exec`).

/// The kernel of a reduction, when `qtune-kernels` has one (a speed-up
/// only: the registry's fold is the reference,
/// `reduce_kernels_match_the_registry`).
pub fn fast_reduce(op: &Op) -> Option<k::ReduceOp> {
    Some(match op {
        Op::ReduceMean(_) => k::ReduceOp::Mean,
        Op::ReduceSum(_) => k::ReduceOp::Sum,
        Op::ReduceL2(_) => k::ReduceOp::L2,
        Op::ReduceMax(_) => k::ReduceOp::Max,
        Op::ReduceMin(_) => k::ReduceOp::Min,
        _ => return None,
    })
}

/// Evaluates a reduction: its kernel, else the registry's fold.
pub fn eval(cx: EvalCx) -> Result<Vec<Tensor>, IrError> {
    let Some((spec, a)) = cx.node.op.reduce() else {
        return Err(cx.err("internal: not in the reduction registry"));
    };
    let dims = cx.input(0)?.dims().to_vec();
    let axes = resolve_reduce_axes(cx.graph, cx.id, a, dims.len())?;
    let od = cx.out_dims(0)?;
    if axes.is_empty() {
        let t = cx.input(0)?.clone();
        return Ok(vec![t]);
    }
    let out = match fast_reduce(&cx.node.op) {
        Some(rop) => {
            let mut out = k::zeroed(od.iter().product(), cx.par);
            k::reduce(rop, cx.f32_input(0)?, &dims, &axes, &mut out);
            out
        }
        None => reduce_by_definition(spec, cx.f32_input(0)?, &dims, &axes),
    };
    cx.f32_out(od, out)
}

/// A reduction over `axes` (sorted, non-empty) by the registry's fold, in
/// f64, one output position at a time in input order.
fn reduce_by_definition(spec: &ReduceSpec, x: &[f32], dims: &[usize], axes: &[usize]) -> Vec<f32> {
    let od = k::reduce_out_dims(dims, axes);
    let n_out: usize = od.iter().product();
    let mut ostride = vec![0usize; dims.len()];
    let mut s = 1;
    for i in (0..dims.len()).rev() {
        if !axes.contains(&i) {
            ostride[i] = s;
        }
        s *= od[i];
    }
    let mut acc = vec![spec.init; n_out];
    let mut idx = vec![0usize; dims.len()];
    for &v in x {
        let o: usize = idx.iter().zip(&ostride).map(|(i, s)| i * s).sum();
        acc[o] = (spec.combine)(acc[o], (spec.map)(f64::from(v)));
        for d in (0..dims.len()).rev() {
            idx[d] += 1;
            if idx[d] < dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    let count: usize = axes.iter().map(|&a| dims[a]).product();
    acc.into_iter()
        .map(|a| (spec.finish)(a, count) as f32)
        .collect()
}

// ---------------------------------------------------------------------------
// The TPU profiles' lowering rules (`crate::tpu`, applied by the deploy plan).

/// The BM168x families keep every reduction in float; CV18xx those without
/// an int8 form ([`ReduceSpec::cv18xx_int8`]).
pub fn tpu_float(graph: &Graph, node: NodeId, chip: TpuChip) -> TpuFloat {
    let spec = graph.node(node).op.reduce().map(|(s, _)| s)?;
    match chip {
        TpuChip::Bm1684x => Some((KeepFloat::Profile, "Reduce has no int8 form")),
        TpuChip::Bm1684 => Some((KeepFloat::F32, "Reduce has no int8 form")),
        TpuChip::Cv18xx => (!spec.cv18xx_int8)
            .then_some((KeepFloat::Profile, "this Reduce has no int8 form on CV18xx")),
    }
}

/// Every reduction keeps its own range.
pub fn range_flow(_graph: &Graph, _node: NodeId, _chip: TpuChip) -> RangeFlow {
    RangeFlow::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reduction kernel computes what the registry defines
    /// (`qtune_ir::reduce`), over inner, outer and several axes; and the
    /// executor's fold by the definition agrees with the reference.
    #[test]
    fn reduce_kernels_match_the_registry() {
        let dims = [3usize, 4, 5];
        let x: Vec<f32> = (0..60)
            .map(|i| ((i * 37) % 60) as f32 / 7.0 - 4.0)
            .collect();
        let mut with_kernel = 0;
        for spec in REDUCE_OPS {
            let op = (spec.build)(Default::default());
            for axes in [vec![2], vec![0], vec![0, 2], vec![0, 1, 2]] {
                let od = k::reduce_out_dims(&dims, &axes);
                // The reference: each output position's elements, in f64.
                let want: Vec<f32> = (0..od.iter().product::<usize>())
                    .map(|o| {
                        let pos = |i: usize| -> usize {
                            let c = [i / 20, i / 5 % 4, i % 5];
                            let mut o = 0;
                            for d in 0..3 {
                                o = o * od[d] + if axes.contains(&d) { 0 } else { c[d] };
                            }
                            o
                        };
                        spec.reference((0..60).filter(|&i| pos(i) == o).map(|i| x[i]))
                    })
                    .collect();
                let slow = reduce_by_definition(spec, &x, &dims, &axes);
                assert_eq!(slow, want, "{} over {axes:?}: the fold", spec.name);
                if let Some(rop) = fast_reduce(&op) {
                    with_kernel += 1;
                    let mut got = vec![0.0; want.len()];
                    k::reduce(rop, &x, &dims, &axes, &mut got);
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                            "{} over {axes:?}: kernel {g}, registry {w}",
                            spec.name
                        );
                    }
                }
            }
        }
        assert_eq!(with_kernel, 20);
    }

    #[test]
    fn every_entry_round_trips_through_its_op() {
        for spec in REDUCE_OPS {
            let attrs = ReduceAttrs {
                axes: Some(vec![1, -1]),
                keepdims: false,
                noop_with_empty_axes: true,
            };
            let op = (spec.build)(attrs.clone());
            let (s, a) = op.reduce().expect("a registered op reduces");
            assert!(std::ptr::eq(s, spec), "{}", spec.name);
            assert_eq!(a, &attrs);
            assert_eq!(op.op_type(), spec.name);
            assert!(matches!(op, reduce_op!()), "{}", spec.name);
            assert!(std::ptr::eq(by_onnx(spec.name).unwrap(), spec));
            assert!(std::ptr::eq(by_top_mode(spec.top_mode).unwrap(), spec));
            assert!(crate::SUPPORTED_OPS.contains(&spec.name), "{}", spec.name);
        }
        assert!(Op::Softmax { axis: 1 }.reduce().is_none());
        assert!(by_onnx("Reduce").is_none());
    }

    /// TPU-MLIR's CV18xx lowering has int8 for these, BF16 for ReduceL2
    /// (`CV18xx/Reduce.cpp`; docs/tpu-mlir-int8-lowering.md).
    #[test]
    fn cv18xx_rules_follow_tpu_mlir() {
        let int8: Vec<&str> = REDUCE_OPS
            .iter()
            .filter(|s| s.cv18xx_int8)
            .map(|s| s.name)
            .collect();
        assert_eq!(int8, ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"]);
    }

    #[test]
    fn definitions_follow_onnx() {
        let r = |name: &str, v: &[f32]| by_onnx(name).unwrap().reference(v.iter().copied());
        let v = [3.0, -4.0, 1.0, 0.0];
        assert_eq!(r("ReduceMean", &v), 0.0);
        assert_eq!(r("ReduceSum", &v), 0.0);
        assert_eq!(r("ReduceL2", &v), 26f32.sqrt());
        assert_eq!(r("ReduceMax", &v), 3.0);
        assert_eq!(r("ReduceMin", &v), -4.0);
        assert!(r("ReduceMax", &[1.0, f32::NAN]).is_nan());
        // ONNX: the max of nothing is -inf (ReduceMax over an empty axis).
        assert_eq!(r("ReduceMax", &[]), f32::NEG_INFINITY);
    }
}
