//! The quantization plan: the precision of every op (qtable, chip defaults)
//! and the calibrated range of every float tensor after TPU-MLIR's threshold
//! propagation (spec section 4.2).

use std::collections::HashMap;

use qtune_ir::tpu::{KeepFloat, RangeFlow, TpuChip};
use qtune_ir::{Graph, NodeId, Op, ValueId, families, linear_op};
use qtune_quant::{CalibrationTable, QuantMode};
use qtune_tensor::DType;

use crate::DeployError;
use crate::profile::{Family, Profile};
use crate::weight_only::{self, WeightOnly};

/// The calibrated range of one tensor as the chip sees it. Symmetric (the
/// default): `lo` is `-th` (signed, int8 `th/127`) or `0` (unsigned, uint8
/// `th/255`), `hi` is `th`, zero point 0. Asymmetric (`--asymmetric`): the
/// observed `(min, max)`, 256 levels between them and a zero point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub lo: f64,
    pub hi: f64,
    pub asymmetric: bool,
}

/// Smallest threshold used for a tensor (near-zero tensors, spec 3.3.6).
const MIN_THRESHOLD: f64 = 1e-5;

impl Range {
    /// A symmetric range.
    pub fn symmetric(lo: f64, hi: f64) -> Self {
        Range {
            lo,
            hi,
            asymmetric: false,
        }
    }

    pub fn signed(&self) -> bool {
        self.lo < 0.0
    }

    /// The scale of the 8-bit type: `th/127` int8 when signed, `th/255`
    /// uint8 otherwise; asymmetric `(max - min)/255` (TPU-MLIR's
    /// `getScaleAndZeroPoint`).
    pub fn scale(&self) -> f32 {
        let s = if self.asymmetric {
            (self.hi - self.lo.min(0.0)).max(MIN_THRESHOLD) / 255.0
        } else {
            let th = self.hi.max(MIN_THRESHOLD);
            th / if self.signed() { 127.0 } else { 255.0 }
        };
        #[allow(clippy::cast_possible_truncation)]
        let s = s as f32; // scales are float32 in QDQ models
        s
    }

    /// The zero point of the uint8 storage of this range: 0 (unsigned), 128
    /// (symmetric signed: the int8 codes shifted), or `round(-min/scale)`
    /// (asymmetric; the range always includes 0).
    pub fn zero_point_u8(&self) -> u8 {
        if self.asymmetric {
            let z = (-self.lo.min(0.0) / f64::from(self.scale())).round();
            // Clamped to the type; `as` is exact on the clamped integer.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let z = z.clamp(0.0, 255.0) as u8;
            z
        } else if self.signed() {
            128
        } else {
            0
        }
    }
}

/// Why an op runs in float although the model is quantized to INT8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FloatReason {
    /// Listed in the qtable.
    Qtable,
    /// The processor has no int8 form of it (see the profile table).
    Chip(&'static str),
    /// It computes on non-float data (shapes, indices, masks).
    NotFloatData,
    /// Its output's calibrated range is beyond [`HUGE_THRESHOLD`]: the tensor
    /// carries masking constants (`-FLT_MAX` attention masks) that no 8-bit
    /// scale can hold together with the real values.
    HugeRange,
    /// A Concat whose inputs' ranges differ more than `CONCAT_RANGE_RATIO`
    /// times: one 8-bit scale cannot hold them all (TPU-MLIR would give
    /// every input the output's range and flatten the smaller ones, e.g.
    /// YOLOv8's class scores next to its box coordinates).
    ConcatRanges,
}

/// Largest ratio of Concat input thresholds quantized together (16x costs
/// the smallest input 4 of its 8 bits).
pub const CONCAT_RANGE_RATIO: f64 = 16.0;

/// Thresholds at or above this mark tensors that hold masking constants.
pub const HUGE_THRESHOLD: f64 = 1e30;

/// The precision of every node and the range of every float tensor.
#[derive(Debug, Clone)]
pub struct Plan {
    pub profile: Profile,
    /// By node index.
    pub modes: Vec<QuantMode>,
    /// By node index; set for non-INT8 nodes of an INT8 model.
    pub reasons: Vec<Option<FloatReason>>,
    /// By value index; float tensors with a table row (after propagation).
    pub ranges: Vec<Option<Range>>,
    /// Gemm weights per output channel (see [`PlanRequest`]).
    pub matmul_per_channel: bool,
    /// Group size and symmetry of the weight-only layers.
    pub weight_only: WeightOnly,
}

/// The main precision of a deploy and its overrides.
#[derive(Debug, Clone)]
pub struct PlanRequest<'a> {
    /// `--quantize`: INT8, F16, BF16 or F32.
    pub quantize: QuantMode,
    pub calibration: Option<&'a CalibrationTable>,
    /// `(layer name, mode)` from the qtable.
    pub qtable: &'a [(String, QuantMode)],
    /// The float type of ops kept in float by the chip (`fp_type auto`).
    pub fp_type: QuantMode,
    /// `--asymmetric`: activations use their observed (min, max) with a
    /// zero point instead of the symmetric threshold.
    pub asymmetric: bool,
    /// `--matmul_perchannel`: Gemm weights get one scale per output channel
    /// (per-channel chips only; TPU-MLIR's default is per tensor).
    pub matmul_per_channel: bool,
    /// `--q_group_size` / `--q_symmetric` of the weight-only layers
    /// (`--quantize` or qtable rows W8F16, W8BF16, W4F16, W4BF16; see
    /// [`weight_only`]).
    pub weight_only: WeightOnly,
}

fn is_float_data(graph: &Graph, node: NodeId) -> bool {
    let n = graph.node(node);
    n.outputs
        .iter()
        .all(|&o| graph.value(o).dtype == DType::F32)
        && n.inputs
            .iter()
            .flatten()
            .any(|&i| graph.value(i).dtype == DType::F32 && graph.constant_of(i).is_none())
}

/// The TPU chip family whose lowering rules a profile follows (`None`: the
/// runtime profile).
fn tpu_chip(profile: &Profile) -> Option<TpuChip> {
    match profile.family {
        Family::Bm1684x => Some(TpuChip::Bm1684x),
        Family::Bm1684 => Some(TpuChip::Bm1684),
        Family::Cv18xx => Some(TpuChip::Cv18xx),
        Family::Runtime => None,
    }
}

/// The float type the chip keeps `node` in, when it has no int8 form: the
/// rule of the node's op family (`qtune_ir::families`, `tpu_float`).
fn chip_float(
    graph: &Graph,
    node: NodeId,
    profile: &Profile,
    fp: QuantMode,
) -> Option<(QuantMode, &'static str)> {
    let n = graph.node(node);
    let Some(chip) = tpu_chip(profile) else {
        // TPU-MLIR keeps LayerNorm in float whatever the target; the
        // runtime profile keeps it in the profile's float type too.
        if let Some(why) = n.op.norm().and_then(|s| s.tpu_float) {
            return Some((fp, why));
        }
        return runtime_float(graph, node);
    };
    let (keep, why) = families::of(&n.op).and_then(|f| (f.tpu_float)(graph, node, chip))?;
    Some((
        match keep {
            KeepFloat::Profile => fp,
            KeepFloat::F32 => QuantMode::F32,
        },
        why,
    ))
}

/// The runtime profile (`--processor onnxruntime`): only the ops that ONNX
/// Runtime's QDQ transformers turn into integer kernels are INT8 (their
/// inputs get Q/DQ, their outputs do not); every other op stays F32.
///
/// Conv / ConvTranspose with a constant filter -> QLinearConv (when the
/// next layer's input Q follows) or DQ + Conv; MatMul -> MatMulIntegerToFloat
/// or QLinearMatMul; Gemm -> QGemm (ORT's `qdq_selectors.cc` and
/// `quantization/registry.py`). Relu / Clip(0, max) fused into the layer
/// (`relu`) are part of it. The element-wise and pooling ops ORT can also run
/// in int8 (QLinearAdd, QLinearConcat, QLinearAveragePool, ...) are kept in
/// float: each would add a Q/DQ pair of its own on a tensor (a residual sum,
/// an FFN output) that no weight layer reads on the grid. With this set ONNX
/// Runtime runs all of MiniLM's MatMul/Gemm on integer kernels; on the CNNs
/// the layers whose output feeds a residual Add stay DQ + float Conv.
/// Adding Add/Concat/pooling inputs to the set has not been measured yet
/// (QUALITY.md, "Runtime target").
fn runtime_float(graph: &Graph, node: NodeId) -> Option<(QuantMode, &'static str)> {
    let n = graph.node(node);
    match &n.op {
        // The weighted layers (`qtune_ir::linear`), a convolution only
        // with a constant filter.
        linear_op!() if qtune_ir::linear::has_constant_weight(graph, node) => None,
        _ => Some((
            QuantMode::F32,
            "QDQ runtimes compute it in float (only Conv/ConvTranspose/MatMul/Gemm are int8)",
        )),
    }
}

/// Whether `node` is a Concat whose float inputs' thresholds differ more than
/// [`CONCAT_RANGE_RATIO`] times (an output with a fixed range, Sigmoid's or
/// Softmax's, counts as its bound: 1).
fn concat_ranges_mismatch(graph: &Graph, node: NodeId, thresholds: &HashMap<&str, f64>) -> bool {
    let n = graph.node(node);
    if !matches!(n.op, Op::Concat { .. }) {
        return false;
    }
    let ths: Vec<f64> = n
        .inputs
        .iter()
        .flatten()
        .filter(|&&v| graph.value(v).dtype == DType::F32 && graph.constant_of(v).is_none())
        .filter_map(|&v| {
            let val = graph.value(v);
            match val.producer.and_then(|p| fixed_output_range(graph, p)) {
                Some((lo, hi)) => Some(lo.abs().max(hi.abs())),
                _ => thresholds.get(val.name.as_str()).copied(),
            }
        })
        .filter(|t| *t > 0.0)
        .collect();
    let (lo, hi) = ths
        .iter()
        .fold((f64::INFINITY, 0f64), |(lo, hi), &t| (lo.min(t), hi.max(t)));
    ths.len() >= 2 && hi > lo * CONCAT_RANGE_RATIO
}

/// How calibrated ranges flow through `node` on this profile: the rule of
/// its op family (`qtune_ir::families`, `range_flow`). The runtime profile
/// follows the BM1684X family's.
fn flow(graph: &Graph, node: NodeId, profile: &Profile) -> RangeFlow {
    let chip = tpu_chip(profile).unwrap_or(TpuChip::Bm1684x);
    families::of(&graph.node(node).op)
        .map(|f| (f.range_flow)(graph, node, chip))
        .unwrap_or_default()
}

/// The range an op fixes for its output (Sigmoid's `[0, 1]`, Softmax's),
/// whatever the calibration measured; it does not depend on the chip.
fn fixed_output_range(graph: &Graph, node: NodeId) -> Option<(f64, f64)> {
    families::of(&graph.node(node).op)
        .and_then(|f| (f.range_flow)(graph, node, TpuChip::Bm1684x).fixed)
}

/// The data input of an op with one: the first input, but for a binary op
/// with a constant operand (`MaxConst`), the other.
fn data_input(graph: &Graph, node: NodeId) -> Option<ValueId> {
    let n = graph.node(node);
    let first = n.inputs.first().copied().flatten();
    match first {
        Some(v) if n.op.binary().is_some() && graph.constant_of(v).is_some() => {
            n.inputs.get(1).copied().flatten()
        }
        _ => first,
    }
}

impl Plan {
    /// Builds the plan of `graph` (value names are the table's op names).
    pub fn new(graph: &Graph, profile: Profile, req: &PlanRequest) -> Result<Plan, DeployError> {
        let wo = req.weight_only;
        let qt: HashMap<&str, QuantMode> =
            req.qtable.iter().map(|(n, m)| (n.as_str(), *m)).collect();
        let mut matched = vec![false; req.qtable.len()];
        for m in qt.values() {
            if !matches!(
                m,
                QuantMode::F32 | QuantMode::F16 | QuantMode::BF16 | QuantMode::Int8
            ) && !m.is_weight_only()
            {
                return Err(DeployError::Unsupported(format!(
                    "qtable mode {m}: only INT8, F16, BF16, F32 and weight-only (W8F16, W8BF16, \
                     W4F16, W4BF16) layers are supported"
                )));
            }
        }
        check_weight_only_request(graph, &profile, req, wo)?;
        if req.asymmetric && profile.signed_only {
            return Err(DeployError::Unsupported(format!(
                "--asymmetric: {} quantizes activations symmetrically only",
                profile.processor
            )));
        }
        let thresholds: HashMap<&str, f64> = req
            .calibration
            .map(|t| {
                t.rows
                    .iter()
                    .map(|r| (r.name.as_str(), r.threshold.abs()))
                    .collect()
            })
            .unwrap_or_default();
        let huge: std::collections::HashSet<&str> = req
            .calibration
            .map(|t| {
                t.rows
                    .iter()
                    .filter(|r| r.threshold.is_nan() || r.threshold.abs() >= HUGE_THRESHOLD)
                    .map(|r| r.name.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let mut modes = Vec::with_capacity(graph.node_count());
        let mut reasons = Vec::with_capacity(graph.node_count());
        for (id, n) in graph.nodes() {
            let listed = n
                .outputs
                .iter()
                .find_map(|&o| qt.get(graph.value(o).name.as_str()).copied());
            if listed.is_some() {
                for &o in &n.outputs {
                    let name = graph.value(o).name.as_str();
                    for (i, (l, _)) in req.qtable.iter().enumerate() {
                        if l == name {
                            matched[i] = true;
                        }
                    }
                }
            }
            let (mode, reason) = if !is_float_data(graph, id) {
                (QuantMode::F32, Some(FloatReason::NotFloatData))
            } else if let Some(m) = listed {
                if m.is_weight_only() {
                    weight_only_mode(graph, id, m, &profile, wo, true)?
                } else {
                    (m, (m != QuantMode::Int8).then_some(FloatReason::Qtable))
                }
            } else if req.quantize.is_weight_only() {
                weight_only_mode(graph, id, req.quantize, &profile, wo, false)?
            } else if req.quantize != QuantMode::Int8 {
                (req.quantize, None)
            } else if let Some((m, why)) = chip_float(graph, id, &profile, req.fp_type) {
                (m, Some(FloatReason::Chip(why)))
            } else if n
                .outputs
                .iter()
                .any(|&o| huge.contains(graph.value(o).name.as_str()))
            {
                (req.fp_type, Some(FloatReason::HugeRange))
            } else if concat_ranges_mismatch(graph, id, &thresholds) {
                (req.fp_type, Some(FloatReason::ConcatRanges))
            } else {
                (QuantMode::Int8, None)
            };
            modes.push(mode);
            reasons.push(reason);
        }
        // Graph inputs (`top.Input` ops, which fp_forward may list) have no
        // precision of their own: their readers decide.
        for &i in &graph.inputs {
            let name = graph.value(i).name.as_str();
            for (k, (l, _)) in req.qtable.iter().enumerate() {
                if l == name {
                    matched[k] = true;
                }
            }
        }
        if let Some(i) = matched.iter().position(|m| !m) {
            return Err(DeployError::Input(format!(
                "qtable layer `{}` is not an op of the model",
                req.qtable[i].0
            )));
        }
        let mut plan = Plan {
            profile,
            modes,
            reasons,
            ranges: vec![None; graph.value_count()],
            matmul_per_channel: req.matmul_per_channel,
            weight_only: wo,
        };
        if plan.modes.contains(&QuantMode::Int8) {
            let table = req.calibration.ok_or_else(|| {
                DeployError::Input(
                    "INT8 layers need a calibration table (--calibration_table)".into(),
                )
            })?;
            plan.ranges = initial_ranges(graph, table, &plan.profile, req.asymmetric);
            propagate(graph, &mut plan.ranges, &plan.profile, &plan.modes);
        }
        Ok(plan)
    }

    pub fn mode(&self, node: NodeId) -> QuantMode {
        self.modes[node.index()]
    }

    pub fn range(&self, value: ValueId) -> Option<Range> {
        self.ranges[value.index()]
    }

    /// How many float-data nodes run at each mode, for summaries.
    pub fn counts(&self) -> Vec<(QuantMode, usize)> {
        let mut out: Vec<(QuantMode, usize)> = Vec::new();
        for (m, r) in self.modes.iter().zip(&self.reasons) {
            if *r == Some(FloatReason::NotFloatData) {
                continue;
            }
            match out.iter_mut().find(|(k, _)| k == m) {
                Some((_, c)) => *c += 1,
                None => out.push((*m, 1)),
            }
        }
        out
    }
}

/// Refuses weight-only requests TPU-MLIR does not lower: on chips outside
/// the BM1684X family (only its lowering has `A16MatMul`), and a group size
/// with no weight-only layer to apply it to.
fn check_weight_only_request(
    graph: &Graph,
    profile: &Profile,
    req: &PlanRequest,
    wo: WeightOnly,
) -> Result<(), DeployError> {
    let rows: Vec<&(String, QuantMode)> = req
        .qtable
        .iter()
        .filter(|(_, m)| m.is_weight_only())
        .collect();
    let any = req.quantize.is_weight_only() || !rows.is_empty();
    if any && profile.family != Family::Bm1684x {
        let what = if req.quantize.is_weight_only() {
            format!("--quantize {}", req.quantize)
        } else {
            format!("qtable row `{} {}`", rows[0].0, rows[0].1)
        };
        return Err(DeployError::Unsupported(format!(
            "{what}: weight-only modes are lowered for bm1684x, bm1688, bm1690 and cv186x only \
             (TPU-MLIR's A16MatMul), not for {}",
            profile.processor
        )));
    }
    if !any && (wo.group_size > 0 || wo.symmetric) {
        return Err(DeployError::Input(format!(
            "--q_group_size / --q_symmetric apply to weight-only layers (W8F16, W8BF16, W4F16, \
             W4BF16); this deploy of `{}` has none",
            graph.name
        )));
    }
    Ok(())
}

/// The mode of a float-data node under weight-only mode `m`: `m` for a
/// MatMul/Gemm with a constant 2-D weight (checked against the group
/// size), else the mode's float type. A qtable row (`from_qtable`) naming
/// an op without such a weight is refused: TPU-MLIR would quietly run it
/// in F16/BF16, which is most likely not what the row's author meant.
fn weight_only_mode(
    graph: &Graph,
    id: NodeId,
    m: QuantMode,
    profile: &Profile,
    wo: WeightOnly,
    from_qtable: bool,
) -> Result<(QuantMode, Option<FloatReason>), DeployError> {
    let n = graph.node(id);
    let float = weight_only::float_mode(m);
    let qreason = from_qtable.then_some(FloatReason::Qtable);
    let Some(layer) = weight_only::weight_layer(graph, id) else {
        if from_qtable {
            return Err(DeployError::Input(format!(
                "qtable row `{} {m}`: op `{}` ({}) is not a MatMul/Gemm with a constant 2-D \
                 weight, so it has no weight to quantize; write {float} for it",
                n.outputs
                    .first()
                    .map_or(n.name.as_str(), |&o| graph.value(o).name.as_str()),
                n.name,
                n.op.op_type()
            )));
        }
        return Ok((float, None));
    };
    if wo.group_size > 0 && layer.k % wo.group_size != 0 {
        let w = graph.value(layer.weight);
        return Err(DeployError::Input(format!(
            "--q_group_size {}: does not divide K = {} of {} `{}` (weight `{}`, {} x {} \
             outputs); TPU-MLIR needs every weight-only layer's K to be a multiple of the group \
             size",
            wo.group_size,
            layer.k,
            n.op.op_type(),
            n.name,
            w.name,
            layer.k,
            layer.n
        )));
    }
    // TPU-MLIR's W4A16MatMulPreparePattern: grouped int4 layers need N at
    // least the chip's NPU count (the rest of a larger N is split off in
    // float when building the weight).
    if weight_only::weight_bits(m) == Some(4)
        && wo.group_size > 0
        && layer.n < weight_only::npu_num(profile.processor)
    {
        return Ok((
            float,
            Some(FloatReason::Chip(
                "grouped int4 weights need at least NPU-count output channels",
            )),
        ));
    }
    Ok((m, qreason))
}

/// Step 0: each tensor's range from its table row and its producer
/// (spec 4.2 table).
fn initial_ranges(
    graph: &Graph,
    table: &CalibrationTable,
    profile: &Profile,
    asymmetric: bool,
) -> Vec<Option<Range>> {
    let rows: HashMap<&str, (f64, f64, f64)> = table
        .rows
        .iter()
        .map(|r| (r.name.as_str(), (r.threshold, r.min, r.max)))
        .collect();
    let from_sigmoid_or_relu = |v: Option<ValueId>| {
        v.and_then(|v| graph.value(v).producer).is_some_and(|p| {
            let n = graph.node(p);
            matches!(n.op, Op::Sigmoid | Op::Relu) || n.relu.is_some()
        })
    };
    let mut ranges = vec![None; graph.value_count()];
    for (id, v) in graph.values() {
        if v.dtype != DType::F32 || v.constant.is_some() {
            continue;
        }
        let producer = v.producer.map(|p| graph.node(p));
        let row = rows.get(v.name.as_str()).copied();
        let fixed = v.producer.and_then(|p| fixed_output_range(graph, p));
        let range = match producer.map(|n| &n.op) {
            _ if asymmetric => row.map(|(_, tmin, tmax)| Range {
                lo: tmin.min(0.0),
                hi: tmax.max(0.0),
                asymmetric: true,
            }),
            _ if fixed.is_some() => fixed.map(|(lo, hi)| Range::symmetric(lo, hi)),
            _ => row.map(|(th, tmin, _)| {
                let th = th.abs();
                let signed = match producer.map(|n| (&n.op, n)) {
                    // TPU-MLIR's ops with `do_relu` never output negatives.
                    Some((_, n)) if n.relu.is_some() => false,
                    Some((Op::Abs, _)) => true,
                    Some((Op::Mul, n)) => {
                        let same = n.inputs.len() == 2 && n.inputs[0] == n.inputs[1];
                        let gated = n.inputs.iter().all(|&i| from_sigmoid_or_relu(i));
                        !(same || gated) && tmin < 0.0
                    }
                    Some((Op::Sub, _)) => true,
                    _ => tmin < 0.0,
                };
                Range::symmetric(if signed { -th } else { 0.0 }, th)
            }),
        };
        ranges[id.index()] = range.map(|r| {
            if profile.signed_only {
                Range::symmetric(-r.hi, r.hi)
            } else {
                r
            }
        });
    }
    ranges
}

/// TPU-MLIR's `calibration_process` order (spec 4.2): forward through
/// reshapes, backward into Concat (and Max/Min) inputs, backward through Relu/MaxPool-like
/// ops, forward through every pass-through op.
fn propagate(graph: &Graph, ranges: &mut [Option<Range>], profile: &Profile, modes: &[QuantMode]) {
    let consumers = graph.consumers();
    let node_ids: Vec<NodeId> = graph.nodes().map(|(id, _)| id).collect();
    // 1. Forward Reshape / Transpose (`MoveRange::ForwardsFirst`).
    for &id in &node_ids {
        let n = graph.node(id);
        if flow(graph, id, profile).forwards_first
            && let Some(x) = data_input(graph, id)
            && let Some(r) = ranges[x.index()]
        {
            ranges[n.outputs[0].index()] = Some(r);
        }
    }
    // 3. Backward into the inputs of Concat (`MoveRange::IntoInputs`), and
    // of Max and Min of tensors.
    for &id in node_ids.iter().rev() {
        let n = graph.node(id);
        if flow(graph, id, profile).into_inputs
            && modes[id.index()] == QuantMode::Int8
            && let Some(r) = ranges[n.outputs[0].index()]
        {
            for &i in n.inputs.iter().flatten() {
                if ranges[i.index()].is_some() {
                    ranges[i.index()] = Some(r);
                }
            }
        }
    }
    // 4. Backward through Relu, MaxPool, Depth2Space, Abs (and LeakyRelu):
    // the producer takes the range when this op is its only reader.
    for &id in node_ids.iter().rev() {
        if !flow(graph, id, profile).backwards {
            continue;
        }
        let n = graph.node(id);
        if let Some(x) = data_input(graph, id)
            && graph.value(x).producer.is_some()
            && consumers[x.index()].len() == 1
            && !graph.outputs.contains(&x)
            && let Some(r) = ranges[n.outputs[0].index()]
            && ranges[x.index()].is_some()
        {
            ranges[x.index()] = Some(r);
        }
    }
    // 7. Forward through pass-through ops.
    for &id in &node_ids {
        if !flow(graph, id, profile).forwards {
            continue;
        }
        let n = graph.node(id);
        if let Some(x) = data_input(graph, id)
            && let Some(mut r) = ranges[x.index()]
        {
            // A Relu's output is never negative (TPU-MLIR forces min 0 on
            // ops with do_relu).
            if qtune_ir::activation::is_relu_like(graph, id) && !profile.signed_only {
                r.lo = 0.0;
            }
            for &o in &n.outputs {
                if graph.value(o).dtype == DType::F32 {
                    ranges[o.index()] = Some(r);
                }
            }
        }
    }
}
