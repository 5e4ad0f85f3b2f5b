//! The quantized model as a QDQ graph: the float graph with
//! QuantizeLinear/DequantizeLinear pairs on int8 tensors, int8 weights and
//! int32 biases behind DequantizeLinear, and float16/bfloat16 rounding
//! (`RoundFloat`) around F16/BF16 layers. The same graph is run by qtune's
//! executor (fake quantization) and written as a QDQ ONNX model, so the two
//! agree by construction up to kernel arithmetic.
//!
//! Tensor names: a quantized tensor `t` is read through
//! `t_QuantizeLinear` -> `t_DequantizeLinear`; a rounded one through
//! `t_F16` / `t_BF16`; int8 weights are `w_int8` with `w_scale`, biases
//! `b_int32`; weight-only codes are `w_wo8` / `w_wo4` with `w_scale` and
//! `w_zero_point` (see [`crate::weight_only`]). Graph outputs keep their names (the float value before the
//! last Q/DQ or rounding is renamed `t_raw`).

use std::collections::HashMap;

use qtune_ir::linear::TpuWeights;
use qtune_ir::{FloatFormat, Graph, NodeId, Op, ValueId};
use qtune_quant::QuantMode;
use qtune_tensor::{DType, Shape, Tensor, TensorData};

use crate::DeployError;
use crate::plan::{Plan, Range};
use crate::profile::{Family, Profile, WeightScheme};
use qtune_ir::activation::is_relu_like;

/// What the QDQ graph contains, for summaries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QdqReport {
    /// Activation tensors quantized (one Q/DQ pair each).
    pub quantized_tensors: usize,
    /// Weights stored as int8.
    pub int8_weights: usize,
    /// Biases stored as int32.
    pub int32_biases: usize,
    /// Tensors rounded to F16 or BF16.
    pub rounded_tensors: usize,
    /// INT8 layers that had to run in F32 (BM1684: negative weight shift).
    pub f32_fallbacks: Vec<String>,
    /// Weights stored as 8- or 4-bit integers by weight-only layers.
    pub weight_only_weights: usize,
}

/// The int32 bias of an int8 layer: its value, scale per channel (or one)
/// and the saturation bound of the chip's bias type.
struct BiasQ {
    value: ValueId,
    scale: Vec<f32>,
    limit: f64,
}

/// Weight quantization of one Conv/Gemm/MatMul.
struct WeightQ {
    q: Vec<i8>,
    /// One per channel along `axis`, or one.
    scale: Vec<f32>,
    axis: usize,
}

/// Symmetric int8, rounding half away from zero (TPU-MLIR's weight
/// rounding): `s = max(max|w|/127, 1e-5)` per block.
fn quantize_weight(w: &[f32], dims: &[usize], axis: Option<usize>) -> WeightQ {
    let (channels, inner, ax) = match axis {
        Some(a) if a < dims.len() => (dims[a], dims[a + 1..].iter().product::<usize>(), a),
        _ => (1, w.len(), 0),
    };
    let inner = inner.max(1);
    let mut absmax = vec![0f32; channels];
    for (i, block) in w.chunks(inner).enumerate() {
        let m = &mut absmax[i % channels];
        for &v in block {
            *m = m.max(v.abs());
        }
    }
    let scale: Vec<f32> = absmax.iter().map(|&m| (m / 127.0).max(1e-5)).collect();
    let mut q = Vec::with_capacity(w.len());
    for (i, block) in w.chunks(inner).enumerate() {
        let s = scale[i % channels];
        for &v in block {
            // In [-127, 127] by construction; `as` saturates NaN to 0.
            #[allow(clippy::cast_possible_truncation)]
            q.push((v / s).round().clamp(-128.0, 127.0) as i8);
        }
    }
    WeightQ {
        q,
        scale,
        axis: if channels == 1 { 0 } else { ax },
    }
}

/// BM1684's per-tensor power-of-two scheme (spec 4.3): the shift `r` with
/// `max|W| 2^r s_in / s_out <= 127`, lowered while more than 3% of the
/// int16 biases overflow. `None` when `r` would be negative (the layer runs
/// in F32 on the chip).
fn pow2_shift(w_absmax: f32, bias: Option<&[f32]>, s_in: f32, s_out: f32) -> Option<i32> {
    let m = f64::from(w_absmax) * f64::from(s_in) / f64::from(s_out);
    let mut r = if m > 0.0 {
        // Bounded by the clamp; the float-to-int cast is exact here.
        #[allow(clippy::cast_possible_truncation)]
        let r = (127.0 / m).log2().floor().clamp(-64.0, 31.0) as i32;
        r
    } else {
        31
    };
    if r < 0 {
        return None;
    }
    if let Some(b) = bias {
        let overflow = |r: i32| {
            b.iter()
                .filter(|&&v| {
                    (f64::from(v) * 2f64.powi(r) / f64::from(s_out))
                        .round()
                        .abs()
                        > 32767.0
                })
                .count()
        };
        while r > 0 && overflow(r) * 100 > b.len() * 3 {
            r -= 1;
        }
    }
    Some(r)
}

/// The output-channel axis of the weight (`dims`) of an int8 layer, or
/// `None` for per-tensor weights: per output channel for every layer on the
/// runtime profile (ONNX Runtime's `per_channel=True`); on the TPU profiles
/// as its registry entry says ([`TpuWeights`]: Conv and ConvTranspose per
/// channel, Gemm and MatMul with `--matmul_perchannel`, TPU-MLIR's flag,
/// which covers every MatMul with a constant right operand), and per tensor
/// on BM1684's power-of-two scheme. The axis is the entry's `out_axis` (a
/// grouped ConvTranspose has none).
fn weight_axis(
    op: &Op,
    profile: &Profile,
    scheme: WeightScheme,
    matmul_per_channel: bool,
    dims: &[usize],
) -> Option<usize> {
    let spec = op.linear()?;
    let per_channel = profile.family == Family::Runtime
        || match (scheme, spec.tpu_weights) {
            (WeightScheme::PerTensorPow2, _) => false,
            (WeightScheme::PerChannel, TpuWeights::PerChannel) => true,
            (WeightScheme::PerChannel, TpuWeights::PerTensorUnlessMatmulPerChannel) => {
                matmul_per_channel
            }
        };
    if !per_channel {
        return None;
    }
    (spec.out_axis)(op, dims.len())
}

/// A weighted layer (`qtune_ir::linear`): input 1 is its weight.
fn has_weight(op: &Op) -> bool {
    op.linear().is_some()
}

/// `base`, or `base_1`, `base_2`, ...: the first name neither the graph
/// being built nor its source uses.
pub(crate) fn unused_name(building: &Graph, source: &Graph, base: &str) -> String {
    let free = |n: &str| building.find_value(n).is_none() && source.find_value(n).is_none();
    if free(base) {
        return base.to_string();
    }
    (1..)
        .map(|i| format!("{base}_{i}"))
        .find(|n| free(n))
        .unwrap_or_else(|| base.to_string())
}

struct Builder<'a> {
    src: &'a Graph,
    plan: &'a Plan,
    g: Graph,
    /// The value consumers read for each source value (after the
    /// producer-side Q/DQ or rounding).
    cur: Vec<Option<ValueId>>,
    /// Consumer-side views: (source value, range bits) -> DQ output.
    qviews: HashMap<(ValueId, u64, u64), ValueId>,
    rviews: HashMap<(ValueId, FloatFormat), ValueId>,
    rconsts: HashMap<(ValueId, FloatFormat), ValueId>,
    report: QdqReport,
    /// Input Hessians of the weight-only layers (GPTQ), by weight name.
    hessians: Option<&'a crate::gptq::Hessians>,
}

fn format_of(mode: QuantMode) -> Option<FloatFormat> {
    match crate::weight_only::float_mode(mode) {
        QuantMode::F16 => Some(FloatFormat::F16),
        QuantMode::BF16 => Some(FloatFormat::BF16),
        _ => None,
    }
}

impl Builder<'_> {
    fn fresh_name(&self, base: &str) -> String {
        unused_name(&self.g, self.src, base)
    }

    fn value_like(&mut self, base: &str, dtype: DType, shape: Option<Shape>) -> ValueId {
        let name = self.fresh_name(base);
        self.g.add_value(name, dtype, shape)
    }

    fn constant(&mut self, base: &str, t: Tensor) -> ValueId {
        let name = self.fresh_name(base);
        self.g.add_constant(name, t)
    }

    fn shape(&self, v: ValueId) -> Option<Shape> {
        self.src.value(v).shape.clone()
    }

    /// Q/DQ of `x` (a value of the new graph) with `range`; the DQ output is
    /// named `out_name` when given.
    fn add_qdq(
        &mut self,
        base: &str,
        x: ValueId,
        shape: Option<Shape>,
        range: Range,
        out_name: Option<String>,
    ) -> ValueId {
        let scale = self.constant(&format!("{base}_scale"), Tensor::scalar_f32(range.scale()));
        // Signed tensors are stored as uint8 with zero point 128: the same
        // 256 values as int8 with zero point 0 (`q - 128` is the int8 code),
        // and one activation type in the whole model lets runtimes use their
        // integer kernels for every layer (ONNX Runtime's QLinearConv needs
        // its input and output of one type). Asymmetric ranges carry their
        // own zero point.
        let zp = range.zero_point_u8();
        let (zp, qtype) = (
            Tensor::new(Vec::<usize>::new(), TensorData::U8(vec![zp].into())),
            DType::U8,
        );
        let zp = self.constant(
            &format!("{base}_zero_point"),
            zp.expect("a scalar zero point"),
        );
        let q = self.value_like(&format!("{base}_QuantizeLinear"), qtype, shape.clone());
        let dq = match out_name {
            Some(n) => self.g.add_value(n, DType::F32, shape),
            None => self.value_like(&format!("{base}_DequantizeLinear"), DType::F32, shape),
        };
        self.g.add_node(
            format!("{base}_QuantizeLinear"),
            Op::QuantizeLinear { axis: 1 },
            vec![Some(x), Some(scale), Some(zp)],
            vec![q],
        );
        self.g.add_node(
            format!("{base}_DequantizeLinear"),
            Op::DequantizeLinear { axis: 1 },
            vec![Some(q), Some(scale), Some(zp)],
            vec![dq],
        );
        self.report.quantized_tensors += 1;
        dq
    }

    fn add_round(
        &mut self,
        base: &str,
        x: ValueId,
        shape: Option<Shape>,
        format: FloatFormat,
        out_name: Option<String>,
    ) -> ValueId {
        let y = match out_name {
            Some(n) => self.g.add_value(n, DType::F32, shape),
            None => self.value_like(&format!("{base}_{}", format.name()), DType::F32, shape),
        };
        self.g.add_node(
            format!("{base}_{}", format.name()),
            Op::RoundFloat(format),
            vec![Some(x)],
            vec![y],
        );
        y
    }

    /// [`Self::add_round`] of a tensor of the model (counted in the report).
    fn add_round_tensor(
        &mut self,
        base: &str,
        x: ValueId,
        shape: Option<Shape>,
        format: FloatFormat,
        out_name: Option<String>,
    ) -> ValueId {
        self.report.rounded_tensors += 1;
        self.add_round(base, x, shape, format, out_name)
    }

    /// Dequantized int8 weight (`DequantizeLinear(w_int8, w_scale)`).
    fn add_weight(&mut self, base: &str, dims: &[usize], wq: WeightQ) -> ValueId {
        let q = Tensor::new(dims.to_vec(), TensorData::I8(wq.q.into())).expect("weight dims");
        let q = self.constant(&format!("{base}_int8"), q);
        let n = wq.scale.len();
        let scale = if n == 1 {
            Tensor::scalar_f32(wq.scale[0])
        } else {
            Tensor::from_f32(vec![n], wq.scale).expect("scale dims")
        };
        let zp = if n == 1 {
            Tensor::new(Vec::<usize>::new(), TensorData::I8(vec![0].into()))
        } else {
            Tensor::new(vec![n], TensorData::I8(vec![0; n].into()))
        }
        .expect("zero point dims");
        let scale = self.constant(&format!("{base}_scale"), scale);
        let zp = self.constant(&format!("{base}_zero_point"), zp);
        let out = self.value_like(
            &format!("{base}_DequantizeLinear"),
            DType::F32,
            Some(Shape(dims.to_vec())),
        );
        self.g.add_node(
            format!("{base}_DequantizeLinear"),
            Op::DequantizeLinear {
                axis: i64::try_from(wq.axis).unwrap_or(0),
            },
            vec![Some(q), Some(scale), Some(zp)],
            vec![out],
        );
        self.report.int8_weights += 1;
        out
    }

    /// Dequantized int32 bias with scale `s_w * s_in` per channel (or one).
    fn add_bias(&mut self, base: &str, b: &Tensor, scale: &[f32], limit: f64) -> ValueId {
        let data = b.to_f32_vec();
        let n = scale.len();
        let q: Vec<i32> = data
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let s = if n == 1 { scale[0] } else { scale[i % n] };
                // Saturated to the bias type's range first.
                #[allow(clippy::cast_possible_truncation)]
                let q = (f64::from(v) / f64::from(s))
                    .round()
                    .clamp(-limit - 1.0, limit) as i32;
                q
            })
            .collect();
        let qt = Tensor::new(b.dims().to_vec(), TensorData::I32(q.into())).expect("bias dims");
        let qv = self.constant(&format!("{base}_int32"), qt);
        let (st, zt) = if n == 1 {
            (
                Tensor::scalar_f32(scale[0]),
                Tensor::new(Vec::<usize>::new(), TensorData::I32(vec![0].into())),
            )
        } else {
            (
                Tensor::from_f32(vec![n], scale.to_vec()).expect("scale dims"),
                Tensor::new(vec![n], TensorData::I32(vec![0; n].into())),
            )
        };
        let sv = self.constant(&format!("{base}_int32_scale"), st);
        let zv = self.constant(
            &format!("{base}_int32_zero_point"),
            zt.expect("zero point dims"),
        );
        let out = self.value_like(
            &format!("{base}_DequantizeLinear"),
            DType::F32,
            Some(b.shape().clone()),
        );
        self.g.add_node(
            format!("{base}_DequantizeLinear"),
            Op::DequantizeLinear { axis: 0 },
            vec![Some(qv), Some(sv), Some(zv)],
            vec![out],
        );
        self.report.int32_biases += 1;
        out
    }

    /// The dequantized weight of weight-only layer `id` (see
    /// [`crate::weight_only`]): DequantizeLinear of the codes as `[N K / g,
    /// g]` -> rounding to the float type -> Reshape `[N, K]` (with the
    /// float rows of a split grouped int4 layer concatenated) -> Transpose
    /// to `[K, N]` unless the layer reads `[N, K]`.
    fn weight_only(&mut self, id: NodeId, mode: QuantMode) -> Result<ValueId, DeployError> {
        let base = self
            .src
            .value(
                crate::weight_only::weight_layer(self.src, id)
                    .map(|l| l.weight)
                    .ok_or_else(|| {
                        let n = self.src.node(id);
                        DeployError::Input(format!(
                            "op `{}` ({}) is planned weight-only but has no constant 2-D weight",
                            n.name,
                            n.op.op_type()
                        ))
                    })?,
            )
            .name
            .clone();
        let hessian = self
            .hessians
            .and_then(|h| h.get(&base))
            .map(std::sync::Arc::as_ref);
        let lw = crate::weight_only::quantize_node(self.src, self.plan, id, mode, hessian)?;
        let crate::weight_only::LayerWeights {
            layer,
            wt,
            n0,
            q,
            bits,
            format,
        } = lw;
        let (k, nn) = (layer.k, layer.n);
        let rows = q.scale.len();
        let g = q.group;
        let code_name = format!("{base}_wo{bits}");
        let codes = match q.codes {
            crate::weight_only::Codes::I8(c) => {
                Tensor::new(vec![rows, g], TensorData::I8(c.into()))
            }
            crate::weight_only::Codes::U8(c) => {
                Tensor::new(vec![rows, g], TensorData::U8(c.into()))
            }
        }
        .map_err(|e| DeployError::Input(format!("weight `{base}`: {e}")))?;
        let signed = codes.dtype() == DType::I8;
        let codes = self.constant(&code_name, codes);
        let scale = Tensor::from_f32(vec![rows], q.scale).expect("scale dims");
        let zp = if signed {
            #[allow(clippy::cast_possible_wrap)]
            let z: Vec<i8> = q.zero_point.iter().map(|&z| z as i8).collect();
            Tensor::new(vec![rows], TensorData::I8(z.into()))
        } else {
            Tensor::new(vec![rows], TensorData::U8(q.zero_point.into()))
        }
        .expect("zero point dims");
        let scale = self.constant(&format!("{base}_scale"), scale);
        let zp = self.constant(&format!("{base}_zero_point"), zp);
        let dq = self.value_like(
            &format!("{base}_DequantizeLinear"),
            DType::F32,
            Some(Shape(vec![rows, g])),
        );
        self.g.add_node(
            format!("{base}_DequantizeLinear"),
            Op::DequantizeLinear { axis: 0 },
            vec![Some(codes), Some(scale), Some(zp)],
            vec![dq],
        );
        // The chip dequantizes into the float type.
        let mut cur = self.add_round(&base, dq, Some(Shape(vec![rows, g])), format, None);
        if g != k {
            let dim = |d: usize| i64::try_from(d).unwrap_or(i64::MAX);
            let shape = Tensor::from_i64(vec![2], vec![dim(n0), dim(k)]).expect("shape dims");
            let shape = self.constant(&format!("{base}_shape"), shape);
            let out = self.value_like(
                &format!("{base}_grouped"),
                DType::F32,
                Some(Shape(vec![n0, k])),
            );
            self.g.add_node(
                format!("{base}_Reshape"),
                Op::Reshape { allowzero: false },
                vec![Some(cur), Some(shape)],
                vec![out],
            );
            cur = out;
        }
        if n0 < nn {
            let mut rest = wt[n0 * k..].to_vec();
            crate::weight_only::round_to(&mut rest, format);
            let rest = Tensor::from_f32(vec![nn - n0, k], rest).expect("rest dims");
            let rest = self.constant(&format!("{base}_float_rows"), rest);
            let out = self.value_like(
                &format!("{base}_joined"),
                DType::F32,
                Some(Shape(vec![nn, k])),
            );
            self.g.add_node(
                format!("{base}_Concat"),
                Op::Concat { axis: 0 },
                vec![Some(cur), Some(rest)],
                vec![out],
            );
            cur = out;
        }
        if !layer.stored_nk {
            let out = self.value_like(&format!("{base}_KN"), DType::F32, Some(Shape(vec![k, nn])));
            self.g.add_node(
                format!("{base}_Transpose"),
                Op::Transpose {
                    perm: Some(vec![1, 0]),
                },
                vec![Some(cur)],
                vec![out],
            );
            cur = out;
        }
        self.report.weight_only_weights += 1;
        Ok(cur)
    }

    fn range_of(&self, v: ValueId, reader: NodeId) -> Result<Range, DeployError> {
        self.plan.range(v).ok_or_else(|| {
            DeployError::Input(format!(
                "the calibration table has no row for tensor `{}` (read by INT8 op `{}`)",
                self.src.value(v).name,
                self.src.node(reader).name
            ))
        })
    }

    /// The int8 view of source activation `v` for an INT8 reader.
    fn int8_view(&mut self, v: ValueId, reader: NodeId) -> Result<ValueId, DeployError> {
        let cur = self.cur[v.index()].expect("values are produced before use");
        let produced_int8 = self
            .src
            .value(v)
            .producer
            .is_some_and(|p| self.plan.mode(p) == QuantMode::Int8);
        let on_dq = self
            .g
            .value(cur)
            .producer
            .is_some_and(|p| matches!(self.g.node(p).op, Op::DequantizeLinear { .. }));
        // A weight layer reads its input through a DequantizeLinear even when
        // the value is already on the grid (the output of an int8 Relu,
        // MaxPool, Concat, ...): the pair is then exact, and it is what lets
        // runtimes run the layer on integers (QLinearConv, QGemm).
        // The runtime profile quantizes layer inputs only: nothing upstream
        // is on the grid, every int8 reader gets its own (shared) Q/DQ view.
        let inputs_only = self.plan.profile.family == Family::Runtime;
        if !inputs_only && produced_int8 && (on_dq || !has_weight(&self.src.node(reader).op)) {
            return Ok(cur);
        }
        let r = self.range_of(v, reader)?;
        let key = (v, r.lo.to_bits(), r.hi.to_bits());
        if let Some(&dq) = self.qviews.get(&key) {
            return Ok(dq);
        }
        let name = self.src.value(v).name.clone();
        let dq = self.add_qdq(&name, cur, self.shape(v), r, None);
        self.qviews.insert(key, dq);
        Ok(dq)
    }

    fn round_view(&mut self, v: ValueId, format: FloatFormat) -> ValueId {
        let cur = self.cur[v.index()].expect("values are produced before use");
        let produced_same = self
            .src
            .value(v)
            .producer
            .is_some_and(|p| format_of(self.plan.mode(p)) == Some(format));
        if produced_same {
            return cur;
        }
        if let Some(&r) = self.rviews.get(&(v, format)) {
            return r;
        }
        let name = self.src.value(v).name.clone();
        let r = self.add_round_tensor(&name, cur, self.shape(v), format, None);
        self.rviews.insert((v, format), r);
        r
    }

    fn rounded_const(&mut self, v: ValueId, format: FloatFormat) -> ValueId {
        if let Some(&c) = self.rconsts.get(&(v, format)) {
            return c;
        }
        let t = self.src.constant_of(v).expect("a constant");
        let mut data = t.to_f32_vec();
        crate::weight_only::round_to(&mut data, format);
        let rt = Tensor::from_f32(t.shape().clone(), data).expect("same shape");
        let name = format!("{}_{}", self.src.value(v).name, format.name());
        let c = self.constant(&name, rt);
        self.rconsts.insert((v, format), c);
        c
    }

    fn copy_const(&mut self, v: ValueId) -> ValueId {
        if let Some(c) = self.cur[v.index()] {
            return c;
        }
        let t = self.src.constant_of(v).expect("a constant").clone();
        let c = self.g.add_constant(self.src.value(v).name.clone(), t);
        self.cur[v.index()] = Some(c);
        c
    }

    fn is_activation(&self, v: ValueId) -> bool {
        let val = self.src.value(v);
        val.dtype == DType::F32 && val.constant.is_none()
    }

    fn node(&mut self, id: NodeId) -> Result<(), DeployError> {
        let n = self.src.node(id);
        let mut mode = self.plan.mode(id);
        let scheme = self.plan.profile.weights;
        // INT8 weights and bias of Conv / Gemm / MatMul with a constant B.
        let mut weight_q: Option<(ValueId, Option<BiasQ>)> = None;
        if mode.is_weight_only() {
            // The bias (no BiasQ) is read as any constant of the layer:
            // rounded to the float type, as TPU-MLIR clones it.
            weight_q = Some((self.weight_only(id, mode)?, None));
        }
        if mode == QuantMode::Int8 && has_weight(&n.op) {
            let x = n.inputs.first().copied().flatten();
            let w = n.inputs.get(1).copied().flatten();
            if let (Some(x), Some(w)) = (x, w)
                && self.is_activation(x)
                && let Some(wt) = self.src.constant_of(w)
                && wt.dtype() == DType::F32
            {
                let s_in = self.range_of(x, id)?.scale();
                let bias = n.inputs.get(2).copied().flatten().filter(|&b| {
                    self.src
                        .constant_of(b)
                        .is_some_and(|t| t.dtype() == DType::F32)
                });
                let wdata = wt.to_f32_vec();
                let wname = self.src.value(w).name.clone();
                let built = match scheme {
                    WeightScheme::PerChannel => {
                        let wq = quantize_weight(
                            &wdata,
                            wt.dims(),
                            weight_axis(
                                &n.op,
                                &self.plan.profile,
                                scheme,
                                self.plan.matmul_per_channel,
                                wt.dims(),
                            ),
                        );
                        let bias_scale: Vec<f32> = wq.scale.iter().map(|&s| s * s_in).collect();
                        let wv = self.add_weight(&wname, wt.dims(), wq);
                        Some((
                            wv,
                            bias.map(|value| BiasQ {
                                value,
                                scale: bias_scale,
                                limit: f64::from(i32::MAX),
                            }),
                        ))
                    }
                    WeightScheme::PerTensorPow2 => {
                        let s_out = self.range_of(n.outputs[0], id)?.scale();
                        let absmax = wdata.iter().fold(0f32, |m, v| m.max(v.abs()));
                        let bdata = bias
                            .and_then(|b| self.src.constant_of(b))
                            .map(Tensor::to_f32_vec);
                        match pow2_shift(absmax, bdata.as_deref(), s_in, s_out) {
                            Some(r) => {
                                let s_w = s_out / (2f32.powi(r) * s_in);
                                let q: Vec<i8> = wdata
                                    .iter()
                                    .map(|&v| {
                                        #[allow(clippy::cast_possible_truncation)]
                                        let q = (v / s_w).round().clamp(-128.0, 127.0) as i8;
                                        q
                                    })
                                    .collect();
                                let wq = WeightQ {
                                    q,
                                    scale: vec![s_w],
                                    axis: 0,
                                };
                                let wv = self.add_weight(&wname, wt.dims(), wq);
                                Some((
                                    wv,
                                    bias.map(|value| BiasQ {
                                        value,
                                        scale: vec![s_w * s_in],
                                        limit: 32767.0,
                                    }),
                                ))
                            }
                            None => {
                                self.report.f32_fallbacks.push(n.name.clone());
                                mode = QuantMode::F32;
                                None
                            }
                        }
                    }
                };
                if let Some((wv, b)) = built {
                    weight_q = Some((wv, b));
                }
            }
        }
        let format = format_of(mode);
        let mut inputs = Vec::with_capacity(n.inputs.len());
        for (i, input) in n.inputs.iter().enumerate() {
            let Some(v) = *input else {
                inputs.push(None);
                continue;
            };
            if let Some((wv, bias)) = &weight_q {
                if i == 1 {
                    inputs.push(Some(*wv));
                    continue;
                }
                if i == 2
                    && let Some(bq) = bias
                {
                    let (b, scale, limit) = (bq.value, bq.scale.clone(), bq.limit);
                    let bt = self.src.constant_of(b).expect("a constant").clone();
                    let name = self.src.value(b).name.clone();
                    let bv = self.add_bias(&name, &bt, &scale, limit);
                    inputs.push(Some(bv));
                    continue;
                }
            }
            let val = self.src.value(v);
            let view = if val.constant.is_some() {
                match format {
                    Some(f) if val.dtype == DType::F32 => self.rounded_const(v, f),
                    _ => self.copy_const(v),
                }
            } else if !self.is_activation(v) {
                self.cur[v.index()].expect("values are produced before use")
            } else {
                match (mode, format) {
                    (QuantMode::Int8, _) => self.int8_view(v, id)?,
                    (_, Some(f)) => self.round_view(v, f),
                    _ => self.cur[v.index()].expect("values are produced before use"),
                }
            };
            inputs.push(Some(view));
        }
        // Outputs: raw values, then the producer-side view.
        let mut outs = Vec::with_capacity(n.outputs.len());
        let mut post: Vec<(ValueId, ValueId)> = Vec::new();
        for &o in &n.outputs {
            let val = self.src.value(o);
            let float = val.dtype == DType::F32;
            let view = float
                && match mode {
                    QuantMode::Int8 if self.plan.profile.family == Family::Runtime => false,
                    QuantMode::Int8 => !self.output_on_input_grid(id, o),
                    m => format_of(m).is_some(),
                };
            let is_output = self.src.outputs.contains(&o);
            let raw_name = if view && is_output {
                self.fresh_name(&format!("{}_raw", val.name))
            } else {
                val.name.clone()
            };
            let raw = self.g.add_value(raw_name, val.dtype, val.shape.clone());
            outs.push(raw);
            if view {
                post.push((o, raw));
            } else {
                self.cur[o.index()] = Some(raw);
            }
        }
        self.g
            .add_node_with_relu(n.name.clone(), n.op.clone(), inputs, outs, n.relu);
        for (o, raw) in post {
            let name = self.src.value(o).name.clone();
            let out_name = self.src.outputs.contains(&o).then(|| name.clone());
            let shape = self.shape(o);
            let v = match format {
                Some(f) => self.add_round_tensor(&name, raw, shape, f, out_name),
                None => {
                    let r = self.range_of(o, id)?;
                    self.add_qdq(&name, raw, shape, r, out_name)
                }
            };
            self.cur[o.index()] = Some(v);
        }
        Ok(())
    }

    /// An INT8 pass-through op (reshape, slice, max pool, concat, ...) whose
    /// inputs are all read on the output's grid: its output needs no Q/DQ.
    fn output_on_input_grid(&self, id: NodeId, o: ValueId) -> bool {
        let n = self.src.node(id);
        let passthrough = match &n.op {
            op if op.movement().is_some_and(|s| s.range.shares_range()) => true,
            op if qtune_ir::pool::shares_range(op) => true,
            Op::Relu | Op::Clip(_) => is_relu_like(self.src, id),
            _ => false,
        };
        if !passthrough {
            return false;
        }
        let Some(out) = self.plan.range(o) else {
            return false;
        };
        n.inputs
            .iter()
            .flatten()
            .filter(|&&v| self.is_activation(v))
            .all(|&v| self.plan.range(v) == Some(out))
    }
}

/// Builds the QDQ graph of `graph` (a prepared graph whose value names are
/// the calibration table's op names) under `plan`.
pub fn build_qdq(graph: &Graph, plan: &Plan) -> Result<(Graph, QdqReport), DeployError> {
    build_qdq_with(graph, plan, None)
}

/// [`build_qdq`] with the input Hessians the GPTQ weight-only methods need
/// (`--q_method gptq`; see [`crate::gptq`]).
pub fn build_qdq_with(
    graph: &Graph,
    plan: &Plan,
    hessians: Option<&crate::gptq::Hessians>,
) -> Result<(Graph, QdqReport), DeployError> {
    let mut b = Builder {
        hessians,
        src: graph,
        plan,
        g: Graph::new(graph.name.clone()),
        cur: vec![None; graph.value_count()],
        qviews: HashMap::new(),
        rviews: HashMap::new(),
        rconsts: HashMap::new(),
        report: QdqReport::default(),
    };
    for &i in &graph.inputs {
        let v = graph.value(i);
        let id = b.g.add_value(v.name.clone(), v.dtype, v.shape.clone());
        b.g.inputs.push(id);
        b.cur[i.index()] = Some(id);
    }
    let ids: Vec<NodeId> = graph.nodes().map(|(id, _)| id).collect();
    for id in ids {
        b.node(id)?;
    }
    let mut outputs = Vec::with_capacity(graph.outputs.len());
    for &o in &graph.outputs {
        let v = match b.cur[o.index()] {
            Some(v) => v,
            // A constant graph output.
            None => b.copy_const(o),
        };
        outputs.push(v);
    }
    b.g.outputs = outputs;
    Ok((b.g, b.report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dequantized(w: &WeightQ, inner: usize) -> Vec<f32> {
        let n = w.scale.len();
        w.q.iter()
            .enumerate()
            .map(|(i, &q)| f32::from(q) * w.scale[if n == 1 { 0 } else { (i / inner) % n }])
            .collect()
    }

    #[test]
    fn per_channel_error_is_not_above_per_tensor_error() {
        // 8 output channels of 3x3x4 weights whose ranges differ by up to 64x.
        let (out, inner) = (8usize, 36usize);
        let w: Vec<f32> = (0..out * inner)
            .map(|i| {
                let c = i / inner;
                let u = ((i * 2_654_435_761) % 1000) as f32 / 1000.0 - 0.5;
                u * (1u32 << (c % 7)) as f32 / 8.0
            })
            .collect();
        let dims = [out, 4, 3, 3];
        let err = |q: &WeightQ| -> f64 {
            dequantized(q, inner)
                .iter()
                .zip(&w)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum()
        };
        let per_channel = quantize_weight(&w, &dims, Some(0));
        let per_tensor = quantize_weight(&w, &dims, None);
        assert_eq!(per_channel.scale.len(), out);
        assert_eq!(per_tensor.scale.len(), 1);
        let (pc, pt) = (err(&per_channel), err(&per_tensor));
        assert!(pc <= pt, "per-channel {pc} > per-tensor {pt}");
        assert!(
            pc < pt / 4.0,
            "ranges differ 64x: per-channel should be far better"
        );
        // Every channel's largest weight maps to +-127.
        for c in 0..out {
            let m = per_channel.q[c * inner..(c + 1) * inner]
                .iter()
                .map(|q| q.unsigned_abs())
                .max();
            assert_eq!(m, Some(127));
        }
    }

    #[test]
    fn weights_round_half_away_from_zero() {
        // max 127 -> scale 1: 2.5 -> 3, -2.5 -> -3 (half to even would give 2).
        let w = quantize_weight(&[127.0, 2.5, -2.5, 0.4], &[1, 4], Some(0));
        assert_eq!(w.q, vec![127, 3, -3, 0]);
    }

    #[test]
    fn pow2_shift_follows_the_bm1684_rule() {
        // max|W| s_in / s_out = 0.5 -> 2^r <= 254 -> r = 7.
        assert_eq!(pow2_shift(1.0, None, 0.5, 1.0), Some(7));
        // Too large a product: the shift would be negative.
        assert_eq!(pow2_shift(1000.0, None, 1.0, 1.0), None);
        // A bias that overflows int16 at r = 7 lowers the shift.
        let bias = [300.0f32];
        let r = pow2_shift(1.0, Some(&bias), 0.5, 1.0).unwrap();
        assert!(300.0 * 2f64.powi(r) <= 32767.0, "r = {r}");
    }
}
