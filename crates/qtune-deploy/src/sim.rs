//! The simulation form of a QDQ graph: int8 Conv, ConvTranspose, Gemm and
//! MatMul layers compute on the integers, as the chip and ONNX Runtime's
//! integer kernels do, instead of on dequantized floats.
//!
//! `DQ(q_x) * DQ(w_int8) + DQ(b_int32)` becomes `(Cast(q_x) * w + b) * (s_x
//! s_w)`: the products and sums of small integers are exact in f32 (while a
//! partial sum stays below 2^24, which real layers practically always do),
//! so the only rounding left is the final scaling, as in an integer
//! kernel's requantization. Dequantized-float arithmetic instead rounds every
//! product and sum, and those differences flip a few values to the next
//! quantization step in every later layer; on deep models the flips add up
//! (a cosine of 0.998 between two correct runs of EfficientNet-Lite0).
//!
//! Layers with a constant int8 weight (Conv, Gemm, MatMul) become one
//! [`Op::IntegerLayer`] reading the activation codes directly: the
//! executor computes it on integer kernels (VNNI where the CPU has it) with
//! exact int32 accumulation and the same final float operations, and fuses
//! the requantization (the layer's fused Relu, as in the float form, or a
//! `Relu | Clip` node, then the QuantizeLinear) into it. Its
//! results equal the float form above bit for bit whenever that form is
//! exact (every partial sum below 2^24); past that the float form rounds
//! partial sums and the integer layer does not. ConvTranspose and products
//! of two activations keep the float form. [`integer_exact_with`] builds
//! either form, for comparisons.

use std::collections::HashMap;

use qtune_ir::{Graph, IntegerKind, IntegerLayerAttrs, NodeId, Op, ValueId};
use qtune_tensor::{DType, Shape, Tensor, TensorData};

use crate::qdq::unused_name;

/// Quantization parameters of a DequantizeLinear with one zero point (or
/// zero points 0).
struct Dq {
    /// The integer input (QuantizeLinear output or constant).
    int: ValueId,
    scale: Vec<f32>,
    zero_point: f32,
    /// The code type: the zero point's (uint8 without one, as ONNX says).
    code: DType,
}

fn dequantize_of(g: &Graph, v: ValueId) -> Option<Dq> {
    let p = g.value(v).producer?;
    let n = g.node(p);
    let Op::DequantizeLinear { .. } = n.op else {
        return None;
    };
    let int = n.inputs.first().copied().flatten()?;
    let scale = g
        .constant_of(n.inputs.get(1).copied().flatten()?)?
        .to_f32_vec();
    let (zp, code) = match n.inputs.get(2).copied().flatten() {
        None => (vec![0.0], DType::U8),
        Some(z) => {
            let z = g.constant_of(z)?;
            (z.to_f32_vec(), z.dtype())
        }
    };
    let zero_point = match zp.as_slice() {
        [z] => *z,
        many if many.iter().all(|&v| v == 0.0) => 0.0,
        _ => return None,
    };
    Some(Dq {
        int,
        scale,
        zero_point,
        code,
    })
}

/// An integer constant (I8, U8 or I32, checked by `plan_rewrite`) as f32.
fn as_f32_ints(t: &Tensor) -> Tensor {
    let data: Vec<f32> = match t.data() {
        TensorData::I8(v) => v.iter().map(|&x| f32::from(x)).collect(),
        TensorData::U8(v) => v.iter().map(|&x| f32::from(x)).collect(),
        // Biases: exact below 2^24 in magnitude.
        #[allow(clippy::cast_precision_loss)]
        TensorData::I32(v) => v.iter().map(|&x| x as f32).collect(),
        other => unreachable!(
            "plan_rewrite admits integer constants only, got {}",
            other.dtype()
        ),
    };
    Tensor::from_f32(t.shape().clone(), data).expect("same number of elements")
}

/// Copies `node` of `src` into `g` unchanged.
fn copy_node(g: &mut Graph, src: &Graph, map: &mut [Option<ValueId>], id: NodeId) {
    let n = src.node(id);
    let inputs = n
        .inputs
        .iter()
        .map(|i| i.map(|v| copy_value(g, src, map, v)))
        .collect();
    let outputs = n
        .outputs
        .iter()
        .map(|&o| copy_value(g, src, map, o))
        .collect();
    g.add_node_with_relu(n.name.clone(), n.op.clone(), inputs, outputs, n.relu);
}

/// The value of `g` standing for `v` of `src`, added on first use.
fn copy_value(g: &mut Graph, src: &Graph, map: &mut [Option<ValueId>], v: ValueId) -> ValueId {
    if let Some(n) = map[v.index()] {
        return n;
    }
    let val = src.value(v);
    let n = match &val.constant {
        Some(t) => g.add_constant(val.name.clone(), t.clone()),
        None => g.add_value(val.name.clone(), val.dtype, val.shape.clone()),
    };
    map[v.index()] = Some(n);
    n
}

/// What to do with one int8 layer.
struct Rewrite {
    x: ValueId,
    x_zp: f32,
    /// The type of `x`'s codes.
    x_code: DType,
    w: Rewritten,
    bias: Option<ValueId>,
    /// Output scale per channel (or one).
    scale: Vec<f32>,
    /// Rank of a constant weight (a Conv's output has the same rank).
    w_rank: Option<usize>,
}

enum Rewritten {
    /// An int8 constant weight.
    Const(ValueId),
    /// A quantized activation (MatMul of two activations) and its zero point.
    Act(ValueId, f32),
}

fn plan_rewrite(g: &Graph, id: NodeId) -> Option<Rewrite> {
    let n = g.node(id);
    // The weighted layers (`qtune_ir::linear`).
    if n.op.linear().is_none() || n.outputs.len() != 1 {
        return None;
    }
    let x = dequantize_of(g, n.inputs.first().copied().flatten()?)?;
    if x.scale.len() != 1 || g.constant_of(x.int).is_some() {
        return None;
    }
    let w = dequantize_of(g, n.inputs.get(1).copied().flatten()?)?;
    let w_is_const = g.constant_of(w.int).is_some();
    if w_is_const && w.zero_point != 0.0 {
        return None;
    }
    // Constant weights and biases must be integers the rewrite can cast.
    let integer_const = |v: ValueId| {
        g.constant_of(v)
            .is_none_or(|t| matches!(t.dtype(), DType::I8 | DType::U8 | DType::I32))
    };
    if !integer_const(w.int) {
        return None;
    }
    if !w_is_const && w.scale.len() != 1 {
        return None;
    }
    // Per-channel scales run along the weight's output-channel axis
    // (`qtune_ir::linear`'s `out_axis`): every weighted layer may have them
    // but a MatMul of two activations.
    if w.scale.len() != 1 && matches!(n.op, Op::MatMul) && !w_is_const {
        return None;
    }
    let bias = match n.inputs.get(2).copied().flatten() {
        None => None,
        Some(b) => {
            let d = dequantize_of(g, b)?;
            g.constant_of(d.int)?;
            if !integer_const(d.int) {
                return None;
            }
            Some(d.int)
        }
    };
    let scale = w.scale.iter().map(|&s| s * x.scale[0]).collect();
    let w_rank = g.constant_of(w.int).map(|t| t.dims().len());
    Some(Rewrite {
        w_rank,
        x: x.int,
        x_zp: x.zero_point,
        x_code: x.code,
        w: if w_is_const {
            Rewritten::Const(w.int)
        } else {
            Rewritten::Act(w.int, w.zero_point)
        },
        bias,
        scale,
    })
}

/// The [`Op::IntegerLayer`] form of a rewritable layer, when it has one:
/// a constant int8 weight of a Conv (1-D or 2-D), a plain Gemm (alpha and
/// beta 1, A not transposed) or a MatMul with a 2-D weight; activation
/// codes of type uint8 or int8 with an integer zero point of that type; an
/// int32 bias, one value per output channel.
fn integer_form(g: &Graph, id: NodeId, rw: &Rewrite) -> Option<IntegerLayerAttrs> {
    let n = g.node(id);
    let Rewritten::Const(wv) = rw.w else {
        return None;
    };
    let w = g.constant_of(wv)?;
    if w.dtype() != DType::I8 {
        return None;
    }
    let dims = w.dims();
    let (kind, outputs) = match &n.op {
        Op::Conv(a) if matches!(dims.len(), 3 | 4) => (IntegerKind::Conv(a.clone()), dims[0]),
        // Gemm's A is 2-D by definition.
        Op::Gemm(a) if a.alpha == 1.0 && (a.beta == 1.0 || rw.bias.is_none()) && !a.trans_a => {
            let [r0, r1] = *dims else { return None };
            let m = if a.trans_b { r0 } else { r1 };
            (
                IntegerKind::MatMul {
                    transposed: a.trans_b,
                },
                m,
            )
        }
        Op::MatMul if dims.len() == 2 => (IntegerKind::MatMul { transposed: false }, dims[1]),
        _ => return None,
    };
    let zp_range = match rw.x_code {
        DType::U8 => 0.0..=255.0,
        DType::I8 => -128.0..=127.0,
        _ => return None,
    };
    if !zp_range.contains(&rw.x_zp) || rw.x_zp.fract() != 0.0 {
        return None;
    }
    if let Some(b) = rw.bias {
        let b = g.constant_of(b)?;
        if b.dtype() != DType::I32 || b.numel() != outputs {
            return None;
        }
    }
    if rw.scale.len() != 1 && rw.scale.len() != outputs {
        return None;
    }
    // An integer within the code type (checked above).
    #[allow(clippy::cast_possible_truncation)]
    let x_zero_point = rw.x_zp as i32;
    Some(IntegerLayerAttrs { kind, x_zero_point })
}

/// The QuantizeLinear that alone reads `out` (not a graph output) with a
/// per-tensor constant scale, and that scale.
fn requantizer(qdq: &Graph, consumers: &[Vec<NodeId>], out: ValueId) -> Option<(NodeId, f32)> {
    match consumers[out.index()].as_slice() {
        [c] if !qdq.outputs.contains(&out) => {
            let cn = qdq.node(*c);
            let scalar_scale = cn
                .inputs
                .get(1)
                .copied()
                .flatten()
                .and_then(|s| qdq.constant_of(s))
                .filter(|t| t.numel() == 1)
                .map(|t| t.to_f32_vec()[0]);
            match (&cn.op, scalar_scale) {
                (Op::QuantizeLinear { .. }, Some(sy)) if cn.inputs[0] == Some(out) => {
                    Some((*c, sy))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// Options of [`integer_exact_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimOptions {
    /// Build [`Op::IntegerLayer`] nodes where possible (else every layer
    /// takes the float form).
    pub integer_layers: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            integer_layers: true,
        }
    }
}

impl SimOptions {
    /// Every layer in the float form (integer-valued float operands).
    pub fn float_form() -> Self {
        SimOptions {
            integer_layers: false,
        }
    }
}

/// Rewrites the int8 layers of a QDQ graph to integer arithmetic (see the
/// module docs). Values keep their names; new ones get `_int` suffixes.
pub fn integer_exact(qdq: &Graph) -> Graph {
    integer_exact_with(qdq, SimOptions::default())
}

/// [`integer_exact`] with options.
pub fn integer_exact_with(qdq: &Graph, opts: SimOptions) -> Graph {
    let mut g = Graph::new(qdq.name.clone());
    let mut map: Vec<Option<ValueId>> = vec![None; qdq.value_count()];
    let mut casts: HashMap<(ValueId, u32), ValueId> = HashMap::new();
    let mut int_consts: HashMap<ValueId, ValueId> = HashMap::new();
    let fresh = |g: &Graph, base: String| -> String { unused_name(g, qdq, &base) };
    for &i in &qdq.inputs {
        let n = copy_value(&mut g, qdq, &mut map, i);
        g.inputs.push(n);
    }
    let consumers = qdq.consumers();
    // QuantizeLinear nodes that requantize a rewritten layer's accumulator
    // directly: node -> (new input, its scale-1 constant).
    let mut requant: HashMap<NodeId, ValueId> = HashMap::new();
    for (id, n) in qdq.nodes() {
        if let Some(&t) = requant.get(&id) {
            // `q = round(acc * M') + zp` with the layer's combined multiplier
            // already applied: quantize with scale 1.
            let one = g.add_constant(
                fresh(&g, format!("{}_unit_scale", n.name)),
                Tensor::scalar_f32(1.0),
            );
            let zp = n
                .inputs
                .get(2)
                .copied()
                .flatten()
                .map(|z| copy_value(&mut g, qdq, &mut map, z));
            let outputs = n
                .outputs
                .iter()
                .map(|&o| copy_value(&mut g, qdq, &mut map, o))
                .collect();
            g.add_node(
                n.name.clone(),
                n.op.clone(),
                vec![Some(t), Some(one), zp],
                outputs,
            );
            continue;
        }
        let Some(rw) = plan_rewrite(qdq, id) else {
            copy_node(&mut g, qdq, &mut map, id);
            continue;
        };
        // `q - zp` as exact float integers.
        let mut int_input =
            |g: &mut Graph, map: &mut Vec<Option<ValueId>>, q: ValueId, zp: f32| -> ValueId {
                if let Some(&c) = casts.get(&(q, zp.to_bits())) {
                    return c;
                }
                let src = copy_value(g, qdq, map, q);
                let name = fresh(g, format!("{}_int", qdq.value(q).name));
                let shape = qdq.value(q).shape.clone();
                let out = g.add_value(name.clone(), DType::F32, shape.clone());
                g.add_node(
                    name.clone(),
                    Op::Cast { to: DType::F32 },
                    vec![Some(src)],
                    vec![out],
                );
                let out = if zp == 0.0 {
                    out
                } else {
                    let zname = fresh(g, format!("{name}_zero_point"));
                    let z = g.add_constant(zname, Tensor::scalar_f32(zp));
                    let cname = fresh(g, format!("{name}_centred"));
                    let centred = g.add_value(cname.clone(), DType::F32, shape);
                    g.add_node(cname, Op::Sub, vec![Some(out), Some(z)], vec![centred]);
                    centred
                };
                casts.insert((q, zp.to_bits()), out);
                out
            };
        let mut int_const = |g: &mut Graph, c: ValueId| -> ValueId {
            if let Some(&v) = int_consts.get(&c) {
                return v;
            }
            let t = as_f32_ints(qdq.constant_of(c).expect("a constant"));
            let name = fresh(g, format!("{}_f32", qdq.value(c).name));
            let v = g.add_constant(name, t);
            int_consts.insert(c, v);
            v
        };
        if let Some(attrs) = opts
            .integer_layers
            .then(|| integer_form(qdq, id, &rw))
            .flatten()
        {
            let out = n.outputs[0];
            let oval = qdq.value(out);
            // A fused Relu as in the float form below: its limit in the
            // requantized domain when the multiplier is combined.
            let mut relu = n.relu;
            let (multiplier, target) = match requantizer(qdq, &consumers, out) {
                // Requantized by one combined multiplier, as below.
                Some((q, sy)) => {
                    relu = relu.map(|r| qtune_ir::FusedRelu {
                        limit: r.limit.map(|l| l / sy),
                    });
                    let name = fresh(&g, format!("{}_requant", oval.name));
                    let v = g.add_value(name, DType::F32, oval.shape.clone());
                    requant.insert(q, v);
                    (rw.scale.iter().map(|&s| s / sy).collect(), v)
                }
                None => (rw.scale.clone(), copy_value(&mut g, qdq, &mut map, out)),
            };
            let scale = if multiplier.len() == 1 {
                Tensor::scalar_f32(multiplier[0])
            } else {
                Tensor::from_f32(vec![multiplier.len()], multiplier).expect("scale dims")
            };
            let sname = fresh(&g, format!("{}_scale", oval.name));
            let s = g.add_constant(sname, scale);
            let x = copy_value(&mut g, qdq, &mut map, rw.x);
            let Rewritten::Const(wv) = rw.w else {
                unreachable!("integer_form takes constant weights only")
            };
            let w = copy_value(&mut g, qdq, &mut map, wv);
            let b = rw.bias.map(|c| copy_value(&mut g, qdq, &mut map, c));
            g.add_node_with_relu(
                n.name.clone(),
                Op::IntegerLayer(attrs),
                vec![Some(x), Some(w), b, Some(s)],
                vec![target],
                relu,
            );
            continue;
        }
        let x = int_input(&mut g, &mut map, rw.x, rw.x_zp);
        let w = match rw.w {
            Rewritten::Const(c) => int_const(&mut g, c),
            Rewritten::Act(q, zp) => int_input(&mut g, &mut map, q, zp),
        };
        let b = rw.bias.map(|c| int_const(&mut g, c));
        let out = n.outputs[0];
        let oval = qdq.value(out);
        let raw_name = fresh(&g, format!("{}_int", oval.name));
        let raw = g.add_value(raw_name, DType::F32, oval.shape.clone());
        let mut inputs = vec![Some(x), Some(w)];
        if n.inputs.len() > 2 {
            inputs.push(b);
        }
        g.add_node(n.name.clone(), n.op.clone(), inputs, vec![raw]);
        // The scale broadcasts over the output: per channel on axis 1.
        // Conv and ConvTranspose outputs have the weight's rank.
        let rank = oval
            .shape
            .as_ref()
            .map(|s| s.0.len())
            .or(rw.w_rank)
            .unwrap_or(0);
        let scale = if rw.scale.len() == 1 {
            Tensor::scalar_f32(rw.scale[0])
        } else if matches!(n.op, Op::MatMul) {
            // Along the last axis of the output (the weight's last axis).
            Tensor::from_f32(Shape(vec![rw.scale.len()]), rw.scale.clone()).expect("scale dims")
        } else {
            let mut dims = vec![rw.scale.len()];
            dims.extend(std::iter::repeat_n(1, rank.saturating_sub(2)));
            Tensor::from_f32(Shape(dims), rw.scale.clone()).expect("scale dims")
        };
        // When the only reader is a per-tensor QuantizeLinear, requantize
        // the accumulator with one combined multiplier `(s_x s_w) / s_y`, as
        // integer kernels (and the chip's multiplier and shift) do, instead
        // of rescaling to float and dividing again.
        let next_q = requantizer(qdq, &consumers, out);
        // A fused Relu applies to the float value `acc * s`. Quantizing is
        // monotone, so clipping to `[0, limit]` before it equals clipping
        // the requantized value `acc * s / s_y` to `[0, limit / s_y]`, as
        // integer kernels fold the Relu into their output clamp.
        let mut relu = n.relu;
        let (scale, target) = match next_q {
            Some((q, sy)) => {
                relu = relu.map(|r| qtune_ir::FusedRelu {
                    limit: r.limit.map(|l| l / sy),
                });
                let m: Vec<f32> = scale.to_f32_vec().iter().map(|&s| s / sy).collect();
                let t = Tensor::from_f32(scale.shape().clone(), m).expect("same shape");
                let name = fresh(&g, format!("{}_requant", oval.name));
                let v = g.add_value(name, DType::F32, oval.shape.clone());
                requant.insert(q, v);
                (t, v)
            }
            None => (scale, copy_value(&mut g, qdq, &mut map, out)),
        };
        let sname = fresh(&g, format!("{}_scale", oval.name));
        let s = g.add_constant(sname, scale);
        g.add_node_with_relu(
            format!("{}_rescale", n.name),
            Op::Mul,
            vec![Some(raw), Some(s)],
            vec![target],
            relu,
        );
    }
    g.outputs = qdq
        .outputs
        .iter()
        .map(|&o| copy_value(&mut g, qdq, &mut map, o))
        .collect();
    g
}
