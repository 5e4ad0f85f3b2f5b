//! The pooling family: one registration per op.
//!
//! Every op of the family (ONNX's `MaxPool`, `AveragePool` with a window
//! in [`PoolAttrs`], and their global forms over the whole spatial map,
//! which have no attributes) is one entry of the `pool_family!` table at
//! the end of this file, which holds what every crate needs to know about
//! it:
//!
//! - its ONNX op type (the entry's name) and the ONNX attributes the
//!   import knows ([`PoolSpec::onnx_attrs`]; any other is an error);
//! - what it computes ([`PoolSpec::kind`], [`PoolSpec::global`]), which
//!   the executor, shape inference and the ONNX export follow;
//! - its Top dialect op ([`PoolSpec::top`]: TPU-MLIR has `top.MaxPool` and
//!   `top.AvgPool` only, the global form being a window over the whole
//!   map) and the notes of the Top op table;
//! - how a TPU profile quantizes it ([`PoolSpec::range`]).
//!
//! From the table come [`Op::pool`], [`POOL_OPS`], [`by_onnx`], [`by_top`],
//! the Top op table's rows and the pattern macro [`pool_op!`](crate::pool_op)
//! (the Top canonicalization's fused-ReLU rule and the QDQ export match
//! the family with it).
//!
//! The family's code is in this file too, one section per concern (ONNX
//! import and export, Top reading and writing, shape inference,
//! evaluation, the TPU lowering's rules), registered once in
//! `crate::families`, through which the other crates reach it;
//! `docs/adding-an-op.md` says how to add an op.

use qtune_kernels as k;
use qtune_tensor::{DType, Shape, Tensor};

use crate::eval_cx::{EvalCx, as_4d, pads4, pair};
use crate::mlir::reader::TopIn;
use crate::mlir::writer::{TopOp, TopOut, mk, usizes};
use crate::mlir::{MlirAttr, MlirError};
use crate::onnx_node::{ExportInputs, NodeError, OnnxIn, OnnxOut};
use crate::shape_infer::{Ctx, one};
use crate::tpu::{RangeFlow, TpuChip, TpuFloat};
use crate::{AutoPad, InferredOutput, IrError, Op, PoolAttrs, Window, resolve_window};
use crate::{Graph, NodeId};

/// What a pooling op takes of its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// The largest value.
    Max,
    /// The mean (`count_include_pad` decides whether padding counts).
    Average,
}

/// How a TPU profile's int8 plan treats the op's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolRange {
    /// The output is one of the inputs: it takes the input's range, forward
    /// and backward (TPU-MLIR's `BackwardCalibration` / `ForwardCalibration`
    /// for MaxPool), and the QDQ export lets one Q/DQ pair through it.
    SharesRange,
    /// The output keeps its own threshold, but for the BM1684 family, whose
    /// int8 AvgPool takes the input's (forward only).
    OwnRangeButBm1684,
}

/// Everything qtune knows about one op of the family.
#[derive(Debug)]
pub struct PoolSpec {
    /// The IR and ONNX op type, the variant's name.
    pub name: &'static str,
    pub kind: PoolKind,
    /// The window is the whole spatial map; the op has no attributes.
    pub global: bool,
    /// The ONNX attributes the import reads (any other is rejected).
    pub onnx_attrs: &'static [&'static str],
    /// TPU-MLIR's Top op for it.
    pub top: &'static str,
    pub range: PoolRange,
    /// Notes for the Top op table (`docs/tpu-mlir-top-ops.md`).
    pub top_notes: &'static str,
    /// The op with these attributes (ignored by the global forms).
    pub build: fn(PoolAttrs) -> Op,
}

/// The registration of the op whose ONNX type is `onnx`, if any.
pub fn by_onnx(onnx: &str) -> Option<&'static PoolSpec> {
    POOL_OPS.iter().find(|s| s.name == onnx)
}

/// The registration for Top op `top`, windowed or `global`, if any.
pub fn by_top(top: &str, global: bool) -> Option<&'static PoolSpec> {
    POOL_OPS.iter().find(|s| s.top == top && s.global == global)
}

/// Whether `top` is the Top op of a registered pooling op.
pub fn is_top(top: &str) -> bool {
    POOL_OPS.iter().any(|s| s.top == top)
}

/// The attributes of the Top pooling ops qtune reads, as TPU-MLIR prints
/// them: `top.MaxPool`'s, and `top.AvgPool`'s (which has
/// `count_include_pad` and `keepdims` too).
const TOP_ATTRS_MAX: &str = "kernel_shape, strides, pads, ceil_mode, auto_pad, do_relu, relu_limit";
const TOP_ATTRS_AVERAGE: &str = "kernel_shape, strides, pads, ceil_mode, count_include_pad, \
     auto_pad, keepdims, do_relu, relu_limit";

/// One row of the Top op table per Top op, naming the IR ops it becomes.
pub(crate) fn top_rows() -> impl Iterator<Item = [String; 5]> {
    let mut tops: Vec<&str> = POOL_OPS.iter().map(|s| s.top).collect();
    tops.sort_unstable();
    tops.dedup();
    tops.into_iter().map(|top| {
        let specs: Vec<&PoolSpec> = POOL_OPS.iter().filter(|s| s.top == top).collect();
        let average = specs.iter().any(|s| s.kind == PoolKind::Average);
        let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
        let notes: Vec<&str> = specs
            .iter()
            .map(|s| s.top_notes)
            .filter(|n| !n.is_empty())
            .collect();
        [
            top.to_string(),
            "input".to_string(),
            if average {
                TOP_ATTRS_AVERAGE
            } else {
                TOP_ATTRS_MAX
            }
            .to_string(),
            names.join(" / "),
            notes.join("; "),
        ]
    })
}

/// The table. Each entry: `Variant(attrs) => { fields }` for an op with a
/// window, `Variant => { fields }` for a global one; the fields are those
/// of [`PoolSpec`] but `name`, `global` and `build`, which come from the
/// variant.
macro_rules! pool_family {
    ($(
        $variant:ident $(($a:ident))? => { $($key:ident : $val:expr),* $(,)? }
    ),* $(,)?) => {
        /// Every op of the pooling family.
        pub static POOL_OPS: &[PoolSpec] = &[$(
            PoolSpec {
                name: stringify!($variant),
                global: pool_family!(@global $($a)?),
                build: pool_family!(@build $variant $($a)?),
                $($key: $val),*
            }
        ),*];

        #[allow(clippy::enum_variant_names)]
        enum Ix { $($variant),* }

        impl Op {
            /// This op's registration and window (`None` for a global
            /// pool), when it belongs to the pooling family.
            pub fn pool(&self) -> Option<(&'static PoolSpec, Option<&PoolAttrs>)> {
                let (ix, a) = match self {
                    $(Op::$variant $(($a))? => (Ix::$variant as usize, pool_family!(@some $($a)?)),)*
                    _ => return None,
                };
                Some((&POOL_OPS[ix], a))
            }
        }

        /// A pattern matching every [`Op`] of the pooling family (generated
        /// from the registry in `qtune-ir/src/pool.rs`): a `match` arm
        /// `pool_op!() => ...` keeps the match exhaustive whatever the
        /// family holds. Handle it through [`Op::pool`].
        #[macro_export]
        macro_rules! pool_op {
            () => { $($crate::Op::$variant { .. })|* };
        }
    };
    (@global $a:ident) => { false };
    (@global) => { true };
    (@build $variant:ident $a:ident) => { Op::$variant };
    (@build $variant:ident) => { |_: PoolAttrs| Op::$variant };
    (@some $a:ident) => { Some($a) };
    (@some) => { None };
}

pool_family! {
    MaxPool(a) => {
        kind: PoolKind::Max,
        onnx_attrs: &[
            "auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order",
            "strides",
        ],
        top: "top.MaxPool", range: PoolRange::SharesRange, top_notes: "",
    },
    AveragePool(a) => {
        kind: PoolKind::Average,
        onnx_attrs: &[
            "auto_pad", "ceil_mode", "count_include_pad", "dilations", "kernel_shape", "pads",
            "strides",
        ],
        top: "top.AvgPool", range: PoolRange::OwnRangeButBm1684,
        top_notes: "a kernel over the whole map (stride 1, no pads) is the global pool",
    },
    GlobalMaxPool => {
        kind: PoolKind::Max, onnx_attrs: &[],
        top: "top.MaxPool", range: PoolRange::SharesRange, top_notes: "",
    },
    GlobalAveragePool => {
        kind: PoolKind::Average, onnx_attrs: &[],
        top: "top.AvgPool", range: PoolRange::OwnRangeButBm1684, top_notes: "",
    },
}

// ---------------------------------------------------------------------------
// ONNX (called from `qtune-onnx`; `crate::onnx_node`).

/// The IR op of a pooling ONNX node ([`by_onnx`]), its attributes checked
/// against its registration.
pub fn import(cx: &mut OnnxIn) -> Result<Op, NodeError> {
    let spec = by_onnx(cx.op_type)
        .ok_or_else(|| cx.node_err(format!("internal: {} is not a pooling op", cx.op_type)))?;
    cx.arity(1, 1)?;
    cx.check_known(spec.onnx_attrs)?;
    if spec.global {
        return Ok((spec.build)(PoolAttrs::default()));
    }
    let max = spec.kind == PoolKind::Max;
    if max {
        // storage_order only affects the Indices output, which must be
        // unused.
        cx.flag("storage_order", false)?;
        cx.first_output_only = Some("Indices output");
    }
    let w = cx.window(true)?;
    Ok((spec.build)(PoolAttrs {
        kernel_shape: w.kernel_shape,
        strides: w.strides,
        pads: w.pads,
        dilations: w.dilations,
        ceil_mode: cx.flag("ceil_mode", false)?,
        count_include_pad: !max && cx.flag("count_include_pad", false)?,
        auto_pad: w.auto_pad,
    }))
}

/// The ONNX attributes of a pooling node (none for the global pools).
pub fn export(op: &Op, _inputs: &ExportInputs, out: &mut OnnxOut) -> Result<(), NodeError> {
    let Some((spec, window)) = op.pool() else {
        return Err(NodeError::Node {
            message: format!("internal: {} is not a pooling op", op.op_type()),
        });
    };
    let Some(a) = window else {
        return Ok(());
    };
    let max = spec.kind == PoolKind::Max;
    if a.kernel_shape.is_empty() {
        return Err(NodeError::Node {
            message: "kernel_shape is empty".into(),
        });
    }
    out.usizes("kernel_shape", &a.kernel_shape)?;
    out.usizes("strides", &a.strides)?;
    out.usizes("pads", &a.pads)?;
    if max {
        out.usizes("dilations", &a.dilations)?;
    } else if a.dilations.iter().any(|&d| d != 1) {
        return Err(NodeError::Node {
            message: format!(
                "dilations {:?}: AveragePool has no dilations before opset 19",
                a.dilations
            ),
        });
    }
    if a.ceil_mode {
        out.int("ceil_mode", 1);
    }
    if !max && a.count_include_pad {
        out.int("count_include_pad", 1);
    }
    out.auto_pad(a.auto_pad);
    Ok(())
}

// ---------------------------------------------------------------------------
// The Top dialect (called from the `.mlir` reader and writer).

/// The IR op of a pooling Top op ([`is_top`]), its inputs set on `r`.
pub(crate) fn read_top(r: &mut TopIn) -> Result<Op, MlirError> {
    let name = r.op.name.as_str();
    r.inputs = r.unary()?;
    r.fuse_relu = r.a.bool_or("do_relu", false);
    let kernel = r.usizes("kernel_shape")?;
    // A kernel over the whole map, stride 1, no padding is the
    // global pool (TPU-MLIR's shape inference fills the empty
    // kernel of a converted GlobalAveragePool this way).
    let in_dims =
        r.b.graph
            .value(r.req(0)?)
            .shape
            .as_ref()
            .map(|s| s.dims().to_vec())
            .unwrap_or_default();
    let whole_map = !kernel.is_empty()
        && in_dims.get(2..) == Some(kernel.as_slice())
        && r.usizes("strides")?.iter().all(|&s| s == 1)
        && r.usizes("pads")?.iter().all(|&p| p == 0)
        && !r.a.bool_or("ceil_mode", false);
    let global = kernel.is_empty() || whole_map;
    let Some(spec) = by_top(name, global) else {
        return r.err(format!("internal: `{name}` left the pooling registry"));
    };
    let p = if global {
        PoolAttrs::default()
    } else {
        PoolAttrs {
            kernel_shape: kernel,
            strides: r.usizes("strides")?,
            pads: r.usizes("pads")?,
            dilations: r.usizes("dilations")?,
            ceil_mode: r.a.bool_or("ceil_mode", false),
            count_include_pad: r.a.bool_or("count_include_pad", false),
            auto_pad: r.auto_pad(),
        }
    };
    Ok((spec.build)(p))
}

/// The Top op of a pooling node.
pub(crate) fn write_top(w: &TopOut) -> Result<TopOp, MlirError> {
    use MlirAttr as A;
    let (spec, window) = w
        .node
        .op
        .pool()
        .ok_or_else(|| w.err("internal: not in the pooling registry".into()))?;
    let attrs = match window {
        // As TPU-MLIR's shape inference leaves a global pool: the
        // kernel is the whole map, strides 1, no padding.
        None => {
            let dims = w.dims(w.x(0)?)?;
            let spatial = dims.get(2..).unwrap_or(&[]);
            vec![
                ("kernel_shape", usizes(spatial)),
                ("strides", usizes(&vec![1; spatial.len()])),
                ("pads", usizes(&vec![0; 2 * spatial.len()])),
                ("count_include_pad", A::Bool(true)),
                ("keepdims", A::Bool(true)),
                ("do_relu", A::Bool(false)),
            ]
        }
        Some(a) => {
            let mut attrs = vec![
                ("kernel_shape", usizes(&a.kernel_shape)),
                ("strides", usizes(&a.strides)),
                ("pads", usizes(&a.pads)),
                ("ceil_mode", A::Bool(a.ceil_mode)),
                ("count_include_pad", A::Bool(a.count_include_pad)),
                ("keepdims", A::Bool(true)),
                ("do_relu", A::Bool(false)),
            ];
            if !a.dilations.is_empty() {
                attrs.push(("dilations", usizes(&a.dilations)));
            }
            if a.auto_pad != AutoPad::NotSet {
                attrs.push(("auto_pad", A::Str(a.auto_pad.name().into())));
            }
            attrs
        }
    };
    Ok(mk(spec.top, w.values(1)?, attrs))
}

// ---------------------------------------------------------------------------
// Shape inference (called from `crate::infer_node`).

/// The resolved window of a pooling op over the spatial extents `spatial`.
fn resolve(a: &PoolAttrs, spatial: &[usize]) -> Result<Window, String> {
    resolve_window(
        spatial,
        &a.kernel_shape,
        &a.strides,
        &a.pads,
        &a.dilations,
        a.auto_pad,
        a.ceil_mode,
    )
}

/// The output shape of a pooling node.
pub(crate) fn infer(cx: &Ctx) -> Result<Vec<InferredOutput>, IrError> {
    let x = cx.shape(0)?;
    let Some((_, window)) = cx.node.op.pool() else {
        return Err(cx.err("internal: not in the pooling registry"));
    };
    let Some(a) = window else {
        if x.len() < 3 {
            return Err(cx.err("global pooling needs an input of rank 3 or more"));
        }
        let mut out = x[..2].to_vec();
        out.extend(std::iter::repeat_n(1, x.len() - 2));
        return one(out, cx.dtype(0)?);
    };
    if x.len() < 3 {
        return Err(cx.err("pooling needs an input of rank 3 or more"));
    }
    let win = resolve(a, &x[2..]).map_err(|m| cx.err(m))?;
    let mut out = vec![x[0], x[1]];
    out.extend(win.out);
    let mut outs = vec![InferredOutput {
        shape: Shape(out.clone()),
        dtype: cx.dtype(0)?,
    }];
    if cx.node.outputs.len() > 1 {
        outs.push(InferredOutput {
            shape: Shape(out),
            dtype: DType::I64,
        });
    }
    Ok(outs)
}

// ---------------------------------------------------------------------------
// Evaluation (called from `qtune-exec`).

/// Evaluates a pooling node on the kernels of `qtune-kernels`.
pub fn eval(cx: EvalCx) -> Result<Vec<Tensor>, IrError> {
    let Some((spec, window)) = cx.node.op.pool() else {
        return Err(cx.err("internal: not in the pooling registry"));
    };
    let max = spec.kind == PoolKind::Max;
    let Some(a) = window else {
        let dims = cx.input(0)?.dims().to_vec();
        let spatial: usize = dims[2..].iter().product();
        let xd = [dims[0], dims[1], 1, spatial];
        let od = cx.out_dims(0)?;
        let mut out = k::zeroed(od.iter().product(), cx.par);
        if max {
            k::global_max_pool(cx.f32_input(0)?, xd, &mut out, cx.par);
        } else {
            k::global_avg_pool(cx.f32_input(0)?, xd, &mut out, cx.par);
        }
        return cx.f32_out(od, out);
    };
    let xd = as_4d(cx.input(0)?.dims())
        .ok_or_else(|| cx.err("only 1-D and 2-D pooling is supported"))?;
    let spatial = &cx.input(0)?.dims()[2..];
    let win = resolve(a, spatial).map_err(|m| cx.err(m))?;
    let mut p = k::Pool2dParams::new([1, 1]);
    p.kernel = pair(&win.kernel, 1);
    p.strides = pair(&win.strides, 1);
    p.pads = pads4(&win.pads_begin, &win.pads_end);
    p.dilations = pair(&win.dilations, 1);
    p.ceil_mode = a.ceil_mode;
    p.count_include_pad = a.count_include_pad;
    let od = cx.out_dims(0)?;
    let mut out = k::zeroed(od.iter().product(), cx.par);
    if max {
        if cx.node.outputs.len() > 1 {
            return Err(cx.err("the Indices output of MaxPool is not supported"));
        }
        k::max_pool2d(cx.f32_input(0)?, xd, &p, &mut out, cx.par);
    } else {
        k::avg_pool2d(cx.f32_input(0)?, xd, &p, &mut out, cx.par);
    }
    cx.f32_out(od, out)
}

// ---------------------------------------------------------------------------
// The TPU profiles' lowering rules (`crate::tpu`, applied by the deploy plan).

/// Whether the op's output is one of its inputs (max pools,
/// [`PoolRange::SharesRange`]).
pub fn shares_range(op: &Op) -> bool {
    op.pool()
        .is_some_and(|(s, _)| s.range == PoolRange::SharesRange)
}

/// No pooling op is kept in float.
pub fn tpu_float(_graph: &Graph, _node: NodeId, _chip: TpuChip) -> TpuFloat {
    None
}

/// Max pools pass ranges both ways; average pools forward them on the
/// BM1684 family only.
pub fn range_flow(graph: &Graph, node: NodeId, chip: TpuChip) -> RangeFlow {
    match graph.node(node).op.pool().map(|(s, _)| s.range) {
        Some(PoolRange::SharesRange) => RangeFlow {
            forwards: true,
            backwards: true,
            ..RangeFlow::default()
        },
        Some(PoolRange::OwnRangeButBm1684) => RangeFlow {
            forwards: chip == TpuChip::Bm1684,
            ..RangeFlow::default()
        },
        None => RangeFlow::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_round_trips_through_its_op() {
        let window = PoolAttrs {
            kernel_shape: vec![3, 3],
            strides: vec![2, 2],
            ..Default::default()
        };
        for spec in POOL_OPS {
            let op = (spec.build)(window.clone());
            let (s, a) = op.pool().expect("a registered op pools");
            assert!(std::ptr::eq(s, spec), "{}", spec.name);
            assert_eq!(a.is_none(), spec.global, "{}", spec.name);
            if let Some(a) = a {
                assert_eq!(a, &window);
            }
            assert_eq!(op.op_type(), spec.name);
            assert!(matches!(op, pool_op!()), "{}", spec.name);
            assert!(std::ptr::eq(by_onnx(spec.name).unwrap(), spec));
            assert!(std::ptr::eq(by_top(spec.top, spec.global).unwrap(), spec));
            assert!(crate::SUPPORTED_OPS.contains(&spec.name), "{}", spec.name);
        }
        assert!(Op::Relu.pool().is_none());
        assert!(!matches!(Op::Relu, pool_op!()));
        assert!(by_onnx("LpPool").is_none());
        assert!(by_top("top.Pool", false).is_none());
    }

    /// Each Top op has its windowed and its global form, and ONNX's names
    /// say which is which.
    #[test]
    fn the_family_pairs_each_kind_with_its_global_form() {
        for kind in [PoolKind::Max, PoolKind::Average] {
            let forms: Vec<&PoolSpec> = POOL_OPS.iter().filter(|s| s.kind == kind).collect();
            assert_eq!(forms.len(), 2, "{kind:?}");
            assert_eq!(forms[0].top, forms[1].top);
            assert_ne!(forms[0].global, forms[1].global);
            for s in forms {
                assert_eq!(s.name.starts_with("Global"), s.global, "{}", s.name);
                assert_eq!(s.onnx_attrs.is_empty(), s.global, "{}", s.name);
            }
        }
        let rows: Vec<[String; 5]> = top_rows().collect();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().any(|r| r[0] == "top.AvgPool"
            && r[2].contains("count_include_pad")
            && r[3] == "AveragePool / GlobalAveragePool"));
        assert!(rows.iter().any(|r| r[0] == "top.MaxPool"
            && !r[2].contains("count_include_pad")
            && r[3] == "MaxPool / GlobalMaxPool"));
    }
}
