//! Resize: everything qtune knows about it, in this file (a family of one
//! op; ONNX's Resize, and TPU-MLIR's `top.Interp` and `top.Upsample`).
//!
//! One section per concern, each called from the other crates through one
//! arm: the ONNX import and export ([`import`], [`export`], through
//! [`crate::onnx_node`]; the opset 10 Resize and Upsample (opsets 7 to 9)
//! are rewritten into this op by the importer, `qtune-onnx/src/ops.rs`), the
//! Top dialect ([`read_top`], [`write_top`]: a nearest resize by one integer
//! factor is TPU-MLIR's `top.Upsample`), shape inference ([`infer`]) and
//! evaluation ([`eval`]), and the TPU lowering's rules ([`tpu_float`]: float
//! but as an upsample on the BM168x families; [`range_flow`]: an upsample
//! forwards its input's range).

use qtune_kernels as k;
use qtune_tensor::{Shape, Tensor};

use crate::eval_cx::{EvalCx, as_4d};
use crate::mlir::reader::{TopIn, f32_of};
use crate::mlir::writer::{Operand, TopOp, TopOut, mk};
use crate::mlir::{MlirAttr, MlirError};
use crate::onnx_node::{ExportInputs, NodeError, OnnxIn, OnnxOut};
use crate::passes::canonical::is_upsample;
use crate::shape_infer::{Ctx, one, usize_of};
use crate::tpu::{KeepFloat, RangeFlow, TpuChip, TpuFloat};
use crate::{CoordMode, InferredOutput, IrError, NearestMode, Op, ResizeAttrs, ResizeMode};
use crate::{Graph, NodeId};

/// Whether `op` is a Resize.
pub fn has(op: &Op) -> bool {
    matches!(op, Op::Resize(_))
}

/// TPU-MLIR's Top ops for it.
pub const TOP_OPS: [&str; 2] = ["top.Interp", "top.Upsample"];

/// The rows of the Top op table.
pub(crate) fn top_rows() -> impl Iterator<Item = [String; 5]> {
    [
        [
            "top.Interp",
            "input, target_shape?",
            "mode, coord_mode, scale_h, scale_w",
            "Resize",
            "",
        ],
        [
            "top.Upsample",
            "input",
            "scale_h, scale_w, do_relu, relu_limit",
            "Resize (nearest, integer factor)",
            "",
        ],
    ]
    .into_iter()
    .map(|r| r.map(String::from))
}

/// The spelling of a coordinate mode, the same in ONNX and in the Top
/// dialect.
pub(crate) fn coord_mode_name(c: CoordMode) -> &'static str {
    match c {
        CoordMode::HalfPixel => "half_pixel",
        CoordMode::PytorchHalfPixel => "pytorch_half_pixel",
        CoordMode::AlignCorners => "align_corners",
        CoordMode::Asymmetric => "asymmetric",
    }
}

/// The spelling of a nearest mode, the same in ONNX and in the Top dialect.
pub(crate) fn nearest_mode_name(n: NearestMode) -> &'static str {
    match n {
        NearestMode::RoundPreferFloor => "round_prefer_floor",
        NearestMode::RoundPreferCeil => "round_prefer_ceil",
        NearestMode::Floor => "floor",
        NearestMode::Ceil => "ceil",
    }
}

fn mode_name(m: ResizeMode) -> &'static str {
    match m {
        ResizeMode::Nearest => "nearest",
        ResizeMode::Linear => "linear",
    }
}

// ---------------------------------------------------------------------------
// ONNX (called from `qtune-onnx`; `crate::onnx_node`).

/// The IR op of an ONNX Resize of opset 11 on (X, roi, scales, sizes).
pub fn import(cx: &mut OnnxIn) -> Result<Op, NodeError> {
    cx.arity(1, 4)?;
    if cx.inputs < 3 {
        return Err(cx.node_err("expected a 'scales' (input 2) or 'sizes' (input 3) input"));
    }
    cx.check_known(RESIZE)?;
    Ok(Op::Resize(resize_attrs(cx)?))
}

const RESIZE: &[&str] = &[
    "antialias",
    "axes",
    "coordinate_transformation_mode",
    "cubic_coeff_a",
    "exclude_outside",
    "extrapolation_value",
    "keep_aspect_ratio_policy",
    "mode",
    "nearest_mode",
];

fn resize_attrs(cx: &OnnxIn) -> Result<ResizeAttrs, NodeError> {
    let mode = match cx.string("mode")?.as_deref().unwrap_or("nearest") {
        "nearest" => ResizeMode::Nearest,
        "linear" => ResizeMode::Linear,
        "cubic" => {
            return Err(cx.attr_err(
                "mode",
                "'cubic' is not supported (supported: nearest, linear)",
            ));
        }
        other => {
            return Err(cx.attr_err(
                "mode",
                format!("unknown mode '{other}' (supported: nearest, linear)"),
            ));
        }
    };
    let coord_mode = match cx
        .string("coordinate_transformation_mode")?
        .as_deref()
        .unwrap_or("half_pixel")
    {
        "half_pixel" => CoordMode::HalfPixel,
        "pytorch_half_pixel" => CoordMode::PytorchHalfPixel,
        "align_corners" => CoordMode::AlignCorners,
        "asymmetric" => CoordMode::Asymmetric,
        other => {
            return Err(cx.attr_err(
                "coordinate_transformation_mode",
                format!(
                    "'{other}' is not supported (supported: half_pixel, pytorch_half_pixel, align_corners, asymmetric)"
                ),
            ));
        }
    };
    let nearest_mode = match cx
        .string("nearest_mode")?
        .as_deref()
        .unwrap_or("round_prefer_floor")
    {
        "round_prefer_floor" => NearestMode::RoundPreferFloor,
        "round_prefer_ceil" => NearestMode::RoundPreferCeil,
        "floor" => NearestMode::Floor,
        "ceil" => NearestMode::Ceil,
        other => {
            return Err(cx.attr_err(
                "nearest_mode",
                format!(
                    "expected round_prefer_floor, round_prefer_ceil, floor or ceil, got '{other}'"
                ),
            ));
        }
    };
    if cx.flag("exclude_outside", false)? {
        return Err(cx.attr_err("exclude_outside", "1 is not supported"));
    }
    if cx.flag("antialias", false)? {
        return Err(cx.attr_err("antialias", "1 is not supported"));
    }
    if let Some(policy) = cx.string("keep_aspect_ratio_policy")?
        && policy != "stretch"
    {
        return Err(cx.attr_err(
            "keep_aspect_ratio_policy",
            format!("'{policy}' is not supported (supported: stretch)"),
        ));
    }
    if let Some(axes) = cx.ints("axes")? {
        return Err(cx.attr_err(
            "axes",
            format!("{axes:?} is not supported; scales or sizes must cover every axis"),
        ));
    }
    // cubic_coeff_a and extrapolation_value only matter for cubic mode and
    // tf_crop_and_resize, both rejected above.
    let _ = cx.float("cubic_coeff_a")?;
    let _ = cx.float("extrapolation_value")?;
    Ok(ResizeAttrs {
        mode,
        coord_mode,
        nearest_mode,
    })
}

/// The ONNX attributes of a Resize.
pub fn export(op: &Op, _inputs: &ExportInputs, out: &mut OnnxOut) -> Result<(), NodeError> {
    let Op::Resize(a) = op else {
        return Err(NodeError::Node {
            message: format!("internal: {} is not a Resize", op.op_type()),
        });
    };
    out.string("mode", mode_name(a.mode));
    out.string(
        "coordinate_transformation_mode",
        coord_mode_name(a.coord_mode),
    );
    out.string("nearest_mode", nearest_mode_name(a.nearest_mode));
    Ok(())
}

// ---------------------------------------------------------------------------
// The Top dialect (called from the `.mlir` reader and writer).

/// The Resize of a `top.Interp` or `top.Upsample`, its inputs set on `r`.
pub(crate) fn read_top(r: &mut TopIn) -> Result<Op, MlirError> {
    let loc = r.loc.clone();
    Ok(match r.op.name.as_str() {
        "top.Interp" | "top.Upsample" => {
            let x = r.req(0)?;
            let upsample = r.op.name == "top.Upsample";
            let mode = match r.a.str("mode") {
                Some("linear") | Some("bilinear") => ResizeMode::Linear,
                Some("nearest") | None => ResizeMode::Nearest,
                Some(m) => {
                    return r.err(format!("`top.Interp` mode `{m}` is not supported"));
                }
            };
            let coord_mode = match r.a.str("coord_mode") {
                Some("pytorch_half_pixel") => CoordMode::PytorchHalfPixel,
                Some("align_corners") => CoordMode::AlignCorners,
                Some("asymmetric") => CoordMode::Asymmetric,
                Some("half_pixel") => CoordMode::HalfPixel,
                None if upsample => CoordMode::Asymmetric,
                None => CoordMode::HalfPixel,
                Some(m) => {
                    return r.err(format!("`top.Interp` coord_mode `{m}` is not supported"));
                }
            };
            let nearest_mode = match r.a.str("nearest_mode") {
                Some("round_prefer_ceil") => NearestMode::RoundPreferCeil,
                Some("floor") => NearestMode::Floor,
                Some("ceil") => NearestMode::Ceil,
                None if upsample => NearestMode::Floor,
                _ => NearestMode::RoundPreferFloor,
            };
            let rank =
                r.b.graph
                    .value(x)
                    .shape
                    .as_ref()
                    .map(Shape::rank)
                    .unwrap_or(4);
            let scales = match (
                r.a.get("scale_h").and_then(MlirAttr::as_f64),
                r.a.get("scale_w").and_then(MlirAttr::as_f64),
            ) {
                (Some(h), Some(w)) if w > 0.0 => Some((f32_of(h), f32_of(w))),
                _ => None,
            };
            r.inputs = vec![Some(x), None];
            match scales {
                Some((h, w)) => {
                    let v = if rank == 4 {
                        vec![1.0, 1.0, h, w]
                    } else {
                        vec![1.0, 1.0, w]
                    };
                    let s = r.b.f32_const(format!("{loc}_scales"), vec![v.len()], v)?;
                    r.inputs.push(Some(s));
                }
                None => {
                    let Some(d) = r.result_dims(0) else {
                        return r.err("`top.Interp` without scales needs a ranked result");
                    };
                    let sizes = d
                        .iter()
                        .map(|&v| i64::try_from(v).unwrap_or(i64::MAX))
                        .collect();
                    let s = r.b.i64_const(format!("{loc}_sizes"), sizes)?;
                    r.inputs.push(None);
                    r.inputs.push(Some(s));
                }
            }
            Op::Resize(ResizeAttrs {
                mode,
                coord_mode,
                nearest_mode,
            })
        }
        other => return r.err(format!("internal: `{other}` is not a resize")),
    })
}

/// The Top op of a Resize.
pub(crate) fn write_top(w: &TopOut) -> Result<TopOp, MlirError> {
    use MlirAttr as A;
    Ok(match &w.node.op {
        Op::Resize(a) => {
            let rank = w.in_rank(0)?;
            let mut attrs = vec![
                (
                    "mode",
                    A::Str(
                        match a.mode {
                            ResizeMode::Nearest => "nearest",
                            ResizeMode::Linear => "linear",
                        }
                        .into(),
                    ),
                ),
                ("coord_mode", A::Str(coord_mode_name(a.coord_mode).into())),
            ];
            if a.mode == ResizeMode::Nearest {
                attrs.push((
                    "nearest_mode",
                    A::Str(nearest_mode_name(a.nearest_mode).into()),
                ));
            }
            // Scales given in the model are kept (the kernel maps coordinates
            // with them); with sizes, the target size is the result type.
            if let Some(s) = w.const_f32(2)?.filter(|s| s.len() == rank && rank >= 3) {
                let sh = if rank == 4 { s[2] } else { 1.0 };
                attrs.push(("scale_h", A::F64(f64::from(sh))));
                attrs.push(("scale_w", A::F64(f64::from(s[rank - 1]))));
            }
            if crate::passes::canonical::is_upsample(w.g, w.id) {
                // Nearest with one integer factor: TPU-MLIR's `top.Upsample`
                // (`InterpToUpsampleMergePattern`).
                let (xd, yd) = (w.dims(w.x(0)?)?, w.out_dims(0)?);
                let f = |i: usize| A::I64(i64::try_from(yd[i] / xd[i].max(1)).unwrap_or(1));
                // `do_relu` is set from the node by the writer.
                return Ok(mk(
                    "top.Upsample",
                    w.values(1)?,
                    vec![
                        ("scale_h", f(rank - 2)),
                        ("scale_w", f(rank - 1)),
                        ("do_relu", A::Bool(false)),
                    ],
                ));
            }
            mk(
                "top.Interp",
                vec![Operand::Value(w.x(0)?), Operand::None],
                attrs,
            )
        }
        other => return Err(w.err(format!("internal: {} is not a Resize", other.op_type()))),
    })
}

// ---------------------------------------------------------------------------
// Shape inference (called from `crate::infer_node`).

/// The output shape of a Resize, from its sizes or its scales.
pub(crate) fn infer(cx: &Ctx) -> Result<Vec<InferredOutput>, IrError> {
    match &cx.node.op {
        Op::Resize(_) => {
            let x = cx.shape(0)?;
            let out = if cx.has_input(3) && !cx.const_ints(3)?.is_empty() {
                let sizes = cx.const_ints(3)?;
                if sizes.len() != x.len() {
                    return Err(cx.err(format!(
                        "'sizes' has {} values for rank {}",
                        sizes.len(),
                        x.len()
                    )));
                }
                sizes
                    .into_iter()
                    .map(|s| {
                        usize_of(s).filter(|&s| s > 0).ok_or_else(|| {
                            cx.err(format!("'sizes' holds {s}; sizes must be positive"))
                        })
                    })
                    .collect::<Result<_, _>>()?
            } else if cx.has_input(2) {
                let scales = cx.const_floats(2)?;
                if scales.len() != x.len() {
                    return Err(cx.err(format!(
                        "'scales' has {} values for rank {}",
                        scales.len(),
                        x.len()
                    )));
                }
                // A scale that is not a positive finite number, or that gives
                // an empty or unrepresentable extent, is an error here rather
                // than a zero-size or saturated dimension downstream.
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss
                )]
                x.iter()
                    .zip(&scales)
                    .map(|(&d, &s)| {
                        if !(s.is_finite() && s > 0.0) {
                            return Err(cx.err(format!(
                                "'scales' holds {s}; scales must be positive and finite"
                            )));
                        }
                        let out = (d as f64 * f64::from(s)).floor();
                        if d > 0 && !(1.0..=(1u64 << 53) as f64).contains(&out) {
                            return Err(cx.err(format!(
                                "scale {s} turns extent {d} into {out}, not a valid extent"
                            )));
                        }
                        Ok(out as usize)
                    })
                    .collect::<Result<_, _>>()?
            } else {
                return Err(cx.err("neither 'scales' nor 'sizes' is given"));
            };
            one(out, cx.dtype(0)?)
        }
        other => Err(cx.err(format!("internal: {} is not a Resize", other.op_type()))),
    }
}

// ---------------------------------------------------------------------------
// Evaluation (called from `qtune-exec`).

/// Evaluates a Resize on the kernels of `qtune-kernels`.
pub fn eval(cx: EvalCx) -> Result<Vec<Tensor>, IrError> {
    match &cx.node.op {
        Op::Resize(a) => {
            let xd = cx.input(0)?.dims().to_vec();
            let od = cx.out_dims(0)?;
            let x4 = as_4d(&xd).ok_or_else(|| cx.err("only 3-D and 4-D inputs are supported"))?;
            let o4 = as_4d(&od).ok_or_else(|| cx.err("only 3-D and 4-D inputs are supported"))?;
            if x4[0] != o4[0] || x4[1] != o4[1] {
                return Err(cx.err("resizing the batch or channel axis is not supported"));
            }
            // ONNX: with 'scales' given, coordinates use those scales; with
            // 'sizes', the scale is output / input.
            let given_scales = match cx.opt_input(2) {
                Some(t) if t.numel() == xd.len() => Some(t.to_f32_vec()),
                _ => None,
            };
            let scales = match (&given_scales, cx.opt_input(3).map(Tensor::numel)) {
                (Some(s), None | Some(0)) => [s[s.len() - 2], s[s.len() - 1]],
                _ => k::resize_scales(x4, [o4[2], o4[3]]),
            };
            let mode = match a.coord_mode {
                CoordMode::HalfPixel => k::CoordinateTransformMode::HalfPixel,
                CoordMode::PytorchHalfPixel => k::CoordinateTransformMode::PytorchHalfPixel,
                CoordMode::AlignCorners => k::CoordinateTransformMode::AlignCorners,
                CoordMode::Asymmetric => k::CoordinateTransformMode::Asymmetric,
            };
            let mut out = k::zeroed(od.iter().product(), cx.par);
            match a.mode {
                ResizeMode::Nearest => {
                    let nearest = match a.nearest_mode {
                        NearestMode::RoundPreferFloor => k::NearestMode::RoundPreferFloor,
                        NearestMode::RoundPreferCeil => k::NearestMode::RoundPreferCeil,
                        NearestMode::Floor => k::NearestMode::Floor,
                        NearestMode::Ceil => k::NearestMode::Ceil,
                    };
                    k::resize_nearest(
                        cx.f32_input(0)?,
                        x4,
                        [o4[2], o4[3]],
                        scales,
                        mode,
                        nearest,
                        &mut out,
                        cx.par,
                    );
                }
                ResizeMode::Linear => {
                    k::resize_linear(
                        cx.f32_input(0)?,
                        x4,
                        [o4[2], o4[3]],
                        scales,
                        mode,
                        &mut out,
                        cx.par,
                    );
                }
            }
            cx.f32_out(od, out)
        }
        other => Err(cx.err(format!("internal: {} is not a Resize", other.op_type()))),
    }
}
// ---------------------------------------------------------------------------
// The TPU profiles' lowering rules (`crate::tpu`, applied by the deploy plan).

/// A Resize other than a nearest one by an integer factor (TPU-MLIR's
/// `top.Upsample`) is float on the BM168x families.
pub fn tpu_float(graph: &Graph, node: NodeId, chip: TpuChip) -> TpuFloat {
    if is_upsample(graph, node) {
        return None;
    }
    let why = "Resize other than integer-scale nearest";
    match chip {
        TpuChip::Bm1684x => Some((KeepFloat::Profile, why)),
        TpuChip::Bm1684 => Some((KeepFloat::F32, why)),
        TpuChip::Cv18xx => None,
    }
}

/// An upsample forwards its input's range.
pub fn range_flow(graph: &Graph, node: NodeId, _chip: TpuChip) -> RangeFlow {
    RangeFlow {
        forwards: is_upsample(graph, node),
        ..RangeFlow::default()
    }
}
