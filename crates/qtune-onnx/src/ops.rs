//! ONNX nodes to IR ops, with strict attribute checks.
//!
//! Spec: <https://onnx.ai/onnx/operators/>, default domain, opsets
//! [`MIN_OPSET`](crate::MIN_OPSET) to [`MAX_OPSET`](crate::MAX_OPSET).
//! Each op's mapping is its family's (`qtune_ir::families`: the `import`
//! of the op's module in `qtune-ir`), reached through one arm here that
//! carries the protobuf attributes to it ([`NodeCx`] implements
//! `qtune_ir::onnx_node::OnnxAttrs`) and its constants and errors back. It
//! rejects attributes the op does not define and values qtune cannot run,
//! naming the node and attribute.
//!
//! Rewrites (the only places where the IR differs from the ONNX graph):
//! - `Constant` becomes a constant value, not a node.
//! - `Dropout` becomes `Identity` (inference); its mask output must be unused.
//! - `Upsample` (opset 7 to 9) and `Resize` opset 10 become `Resize` with
//!   `asymmetric` coordinates and `floor` rounding, their scales moved to
//!   input 2. Deviation: onnxruntime rounds nearest-mode *down*-sampling up
//!   in these old ops; qtune floors in both directions.
//! - Legacy attributes that later opsets moved to inputs become constant
//!   inputs: Slice `starts`/`ends`/`axes` (opset < 10), Upsample `scales`
//!   (opset 7). Squeeze/Unsqueeze/Split/Reduce axes and Clip bounds stay in
//!   the attribute structs, which the IR supports directly.
//! - `Softmax` before opset 13 means "flatten to 2-D at `axis`, softmax
//!   over the second dimension, reshape back". When `axis` is the last axis
//!   (known from `axis = -1` or a declared rank) that is the ordinary
//!   per-axis softmax; otherwise it is imported as Flatten -> Softmax ->
//!   Reshape(Shape(x)), which the executor folds and runs exactly.

use qtune_ir::onnx_node::{self, OnnxIn};
use qtune_ir::*;
use qtune_tensor::Tensor;

use crate::OnnxError;
use crate::attrs::NodeCx;
use crate::import::Importer;
use crate::tensor::tensor_from_proto;

/// ONNX op types that are not IR ops but are imported by rewriting.
pub(crate) const REWRITTEN_OPS: &[&str] = &["Dropout", "Upsample"];

/// Which ONNX outputs become IR outputs.
enum Outputs {
    All,
    /// Only the first; the others (described for messages) must be unused.
    First(&'static str),
}

fn arity(cx: &NodeCx<'_>, n: usize, min: usize, max: usize) -> Result<(), OnnxError> {
    match onnx_node::arity_error(n, min, max) {
        None => Ok(()),
        Some(m) => Err(cx.node_err(m)),
    }
}

pub(crate) fn import_node(
    im: &mut Importer<'_>,
    cx: &NodeCx<'_>,
    mut inputs: Vec<Option<ValueId>>,
    outputs: &[String],
) -> Result<(), OnnxError> {
    let n = inputs.len();
    let opset = cx.opset;
    let mut keep = Outputs::All;
    if cx.op_type == "Softmax" && opset < 13 {
        // Softmax before opset 13 over an axis that is not the last:
        // flattened to 2-D around it (the module docs).
        let axis = cx.int_or("axis", 1)?;
        if !is_last_axis(im, cx, inputs[0], axis) {
            arity(cx, n, 1, 1)?;
            cx.check_known(&["axis"])?;
            return softmax_coerced(im, cx, inputs[0], outputs, axis);
        }
    }
    let op = match cx.op_type {
        "Constant" => return constant(im, cx, n, outputs),
        // Every op of an op family (`qtune_ir::families`): the mapping is
        // the family's; this carries the values.
        t if families::importing(t, opset).is_some() => {
            let Some(family) = families::importing(t, opset) else {
                return Err(cx.node_err("internal: the op's family went away"));
            };
            let mut node = OnnxIn {
                op_type: cx.op_type,
                opset,
                inputs: n,
                outputs: outputs.len(),
                attrs: cx,
                appended: Vec::new(),
                first_output_only: None,
            };
            let op = (family.import)(&mut node).map_err(|e| cx.ir_err(e))?;
            for (what, t) in node.appended {
                let id = im.add_generated_constant(format!("{}_{what}", cx.name), t);
                inputs.push(Some(id));
            }
            if let Some(what) = node.first_output_only {
                keep = Outputs::First(what);
            }
            op
        }
        "Resize" | "Upsample" => {
            // Resize-10 takes (X, scales); Upsample-9 (X, scales); Upsample-7
            // has a `scales` attribute. All become Resize(X, -, scales).
            let legacy_scales = cx.op_type == "Upsample" && opset < 9;
            if legacy_scales {
                arity(cx, n, 1, 1)?;
                cx.check_known(&["mode", "scales"])?;
            } else {
                arity(cx, n, 2, 2)?;
                cx.check_known(&["mode"])?;
            }
            let mode = match cx.string("mode")?.as_deref().unwrap_or("nearest") {
                "nearest" => ResizeMode::Nearest,
                "linear" | "bilinear" => ResizeMode::Linear,
                other => {
                    return Err(cx.attr_err(
                        "mode",
                        format!("'{other}' is not supported (supported: nearest, linear)"),
                    ));
                }
            };
            let x = inputs[0];
            let scales = if legacy_scales {
                let s = cx
                    .floats("scales")?
                    .ok_or_else(|| cx.attr_err("scales", "required attribute is missing"))?;
                let t = Tensor::from_f32(vec![s.len()], s)
                    .map_err(|e| cx.attr_err("scales", e.to_string()))?;
                Some(im.add_generated_constant(format!("{}_scales", cx.name), t))
            } else {
                inputs[1]
            };
            inputs = vec![x, None, scales];
            Op::Resize(ResizeAttrs {
                mode,
                coord_mode: CoordMode::Asymmetric,
                nearest_mode: NearestMode::Floor,
            })
        }
        "Dropout" => {
            // Inference: Dropout is the identity. Inputs ratio and
            // training_mode (opset 12+) are ignored, like onnxruntime does
            // when the mask is not requested.
            arity(cx, n, 1, 3)?;
            cx.check_known(&["ratio", "seed"])?;
            inputs.truncate(1);
            keep = Outputs::First("mask output");
            Op::Identity
        }
        other => {
            return Err(OnnxError::UnsupportedOp {
                node: cx.name.to_string(),
                op_type: other.to_string(),
                supported: SUPPORTED_OPS.join(", "),
            });
        }
    };
    emit(im, cx, cx.name.to_string(), op, inputs, outputs, keep)
}

/// Adds the node with its output values.
fn emit(
    im: &mut Importer<'_>,
    cx: &NodeCx<'_>,
    name: String,
    op: Op,
    inputs: Vec<Option<ValueId>>,
    outputs: &[String],
    keep: Outputs,
) -> Result<(), OnnxError> {
    let names: Vec<&String> = match keep {
        Outputs::All => {
            let mut names: Vec<&String> = outputs.iter().collect();
            while names.last().is_some_and(|s| s.is_empty()) {
                names.pop();
            }
            if let Some(i) = names.iter().position(|s| s.is_empty()) {
                return Err(cx.node_err(format!("output {i} has an empty name")));
            }
            names
        }
        Outputs::First(what) => {
            for (i, extra) in outputs.iter().enumerate().skip(1) {
                if !extra.is_empty() && im.is_consumed(extra) {
                    return Err(cx.node_err(format!(
                        "output {i} '{extra}' ({what}) is used, which qtune does not support"
                    )));
                }
            }
            outputs.iter().take(1).filter(|s| !s.is_empty()).collect()
        }
    };
    if names.is_empty() {
        return Err(cx.node_err("the node has no outputs"));
    }
    let ids = names
        .into_iter()
        .map(|o| im.add_output_value(cx, o, &op))
        .collect::<Result<Vec<_>, _>>()?;
    im.graph.add_node(name, op, inputs, ids);
    Ok(())
}

/// `Constant`: the value becomes a constant named after the node's output.
fn constant(
    im: &mut Importer<'_>,
    cx: &NodeCx<'_>,
    n_inputs: usize,
    outputs: &[String],
) -> Result<(), OnnxError> {
    arity(cx, n_inputs, 0, 0)?;
    cx.check_known(&[
        "value",
        "value_float",
        "value_floats",
        "value_int",
        "value_ints",
        "value_string",
        "value_strings",
        "sparse_value",
    ])?;
    let [out] = outputs else {
        return Err(cx.node_err(format!("expected 1 output, got {}", outputs.len())));
    };
    let which = cx.exactly_one(&[
        "value",
        "value_float",
        "value_floats",
        "value_int",
        "value_ints",
        "value_string",
        "value_strings",
        "sparse_value",
    ])?;
    let tensor = match which {
        "value" => {
            let proto = cx
                .tensor("value")?
                .ok_or_else(|| cx.attr_err("value", "the tensor is missing"))?;
            tensor_from_proto(proto, out, &mut im.external)?
        }
        "value_float" => Tensor::scalar_f32(cx.float_or("value_float", 0.0)?),
        "value_floats" => {
            let v = cx.floats("value_floats")?.unwrap_or_default();
            Tensor::from_f32(vec![v.len()], v).map_err(|e| cx.attr_err(which, e.to_string()))?
        }
        "value_int" => Tensor::from_i64(Vec::<usize>::new(), vec![cx.int_or("value_int", 0)?])
            .map_err(|e| cx.attr_err(which, e.to_string()))?,
        "value_ints" => {
            let v = cx.ints("value_ints")?.unwrap_or_default();
            int_tensor(cx, which, v)?
        }
        other => {
            return Err(cx.attr_err(other, "string and sparse constants are not supported"));
        }
    };
    if im.graph.find_value(out).is_some() {
        return Err(cx.node_err(format!("output '{out}' is already defined")));
    }
    im.graph.add_constant(out.clone(), tensor);
    Ok(())
}

fn int_tensor(cx: &NodeCx<'_>, what: &str, values: Vec<i64>) -> Result<Tensor, OnnxError> {
    Tensor::from_i64(vec![values.len()], values).map_err(|e| cx.attr_err(what, e.to_string()))
}

/// Whether `axis` is certainly the last axis of `x`.
fn is_last_axis(im: &Importer<'_>, _cx: &NodeCx<'_>, x: Option<ValueId>, axis: i64) -> bool {
    if axis == -1 {
        return true;
    }
    let Some(x) = x else {
        return false;
    };
    let v = im.graph.value(x);
    let rank = v
        .shape
        .as_ref()
        .map(|s| s.rank())
        .or_else(|| im.value_ranks.get(&v.name).copied());
    rank.is_some_and(|r| normalize_axis(axis, r).is_some_and(|a| a + 1 == r))
}

/// Softmax before opset 13 with an axis that may not be the last one:
/// Flatten(axis) -> Softmax(-1) -> Reshape(Shape(x)).
fn softmax_coerced(
    im: &mut Importer<'_>,
    cx: &NodeCx<'_>,
    x: Option<ValueId>,
    outputs: &[String],
    axis: i64,
) -> Result<(), OnnxError> {
    let [out] = outputs else {
        return Err(cx.node_err(format!("expected 1 output, got {}", outputs.len())));
    };
    let dtype = x.map_or(qtune_tensor::DType::F32, |x| im.graph.value(x).dtype);
    let flat_name = im.fresh_value_name(format!("{}_flat", cx.name));
    let flat = im.graph.add_value(flat_name, dtype, None);
    let node = im.unique_node_name(format!("{}_flatten", cx.name));
    im.graph
        .add_node(node, Op::Flatten { axis }, vec![x], vec![flat]);

    let soft_name = im.fresh_value_name(format!("{}_2d", cx.name));
    let soft = im.graph.add_value(soft_name, dtype, None);
    im.graph.add_node(
        cx.name,
        Op::Softmax { axis: -1 },
        vec![Some(flat)],
        vec![soft],
    );

    let shape_name = im.fresh_value_name(format!("{}_input_shape", cx.name));
    let shape = im
        .graph
        .add_value(shape_name, qtune_tensor::DType::I64, None);
    let node = im.unique_node_name(format!("{}_shape", cx.name));
    im.graph.add_node(
        node,
        Op::Shape {
            start: 0,
            end: None,
        },
        vec![x],
        vec![shape],
    );

    let op = Op::Reshape { allowzero: false };
    let y = im.add_output_value(cx, out, &op)?;
    let node = im.unique_node_name(format!("{}_reshape", cx.name));
    im.graph
        .add_node(node, op, vec![Some(soft), Some(shape)], vec![y]);
    Ok(())
}
