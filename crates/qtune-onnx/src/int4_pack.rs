//! Packs the 4-bit weight-only layers of an exported model into ONNX
//! Runtime's `com.microsoft.MatMulNBits` (two codes per byte).
//!
//! qtune's QDQ graph gives a weight-only layer its weight as
//! `DequantizeLinear(codes [N K / g, g] uint8, scale, zero point)` ->
//! rounding to F16/BF16 -> Reshape `[N, K]` -> Transpose -> MatMul / Gemm
//! (see `qtune_deploy::weight_only`). ONNX has 4-bit types only from opset
//! 21 and the exporter writes opset 17, so those codes take a byte each.
//! MatMulNBits (contrib opset 1, in ONNX Runtime since 1.17) holds the same
//! codes packed, with one scale and zero point per block of `block_size`
//! values along K, and computes `A (dequantized W)^T + bias` in float32
//! (`accuracy_level` 0). Its contract
//! (<https://github.com/microsoft/onnxruntime/blob/main/docs/ContribOperators.md#com.microsoft.MatMulNBits>):
//! B `[N, K / block, block / 2]` uint8, low nibble first; scales
//! `[N K / block]`; zero points `[N ceil(K / block / 2)]` uint8, low nibble
//! first; `block_size` a power of two >= 16. A group size that is not a
//! power of two is written with blocks of its largest power-of-two divisor
//! (at least 16) and each scale repeated, which is the same weight.
//!
//! What changes against qtune's simulation: MatMulNBits dequantizes in
//! float32, without the rounding of the dequantized weight to F16/BF16 that
//! the chip (and the simulation) applies; the weights differ by at most
//! that one rounding (2^-11 relative for F16). Layers that do not fit (a
//! group size not a multiple of 16, a grouped layer split by the NPU-count
//! rule, a Gemm with alpha/beta or a bias of another shape, a MatMul with
//! qtune's bias input) keep the DequantizeLinear form.

use std::collections::{HashMap, HashSet};

use crate::export::attr_int;
use crate::proto::{ModelProto, NodeProto, OperatorSetIdProto, TensorProto};
use qtune_ir::{Graph, NodeId, Op, ValueId};
use qtune_tensor::TensorData;

/// One 4-bit layer to pack, found on the IR graph.
struct Layer {
    /// ONNX tensor names.
    dq_out: String,
    /// The bias of a MatMul with qtune's bias input (its export's Add).
    matmul_bias: Option<String>,
    chain_end: String,
    codes_name: String,
    scale_name: String,
    zp_name: String,
    b: Vec<u8>,
    scales: Vec<f32>,
    zps: Vec<u8>,
    n: usize,
    k: usize,
    block: usize,
}

fn single_consumer(g: &Graph, consumers: &[Vec<NodeId>], v: ValueId) -> Option<NodeId> {
    match consumers[v.index()].as_slice() {
        [c] if !g.outputs.contains(&v) => Some(*c),
        _ => None,
    }
}

fn find_layer(g: &Graph, consumers: &[Vec<NodeId>], dq: NodeId) -> Option<Layer> {
    let node = g.node(dq);
    if !matches!(node.op, Op::DequantizeLinear { axis: 0 }) {
        return None;
    }
    let codes_v = node.inputs.first().copied().flatten()?;
    let codes_name = g.value(codes_v).name.clone();
    if !codes_name.ends_with("_wo4") {
        return None;
    }
    let codes = g.constant_of(codes_v)?;
    let TensorData::U8(codes_data) = codes.data() else {
        return None;
    };
    let &[rows, group] = codes.dims() else {
        return None;
    };
    let scale_v = node.inputs.get(1).copied().flatten()?;
    let zp_v = node.inputs.get(2).copied().flatten()?;
    let scale = g.constant_of(scale_v)?.to_f32_vec();
    let zp_t = g.constant_of(zp_v)?;
    let TensorData::U8(zp) = zp_t.data() else {
        return None;
    };
    if scale.len() != rows || zp.len() != rows || group % 16 != 0 {
        return None;
    }
    let dq_out = node.outputs[0];
    let round = single_consumer(g, consumers, dq_out)?;
    if !matches!(g.node(round).op, Op::RoundFloat(_)) {
        return None;
    }
    let mut end = g.node(round).outputs[0];
    let mut nk = (rows, group);
    let mut next = single_consumer(g, consumers, end)?;
    if let Op::Reshape { .. } = g.node(next).op {
        let shape = g.value(g.node(next).outputs[0]).shape.clone()?;
        let &[n, k] = shape.0.as_slice() else {
            return None;
        };
        nk = (n, k);
        end = g.node(next).outputs[0];
        next = single_consumer(g, consumers, end)?;
    }
    let (n, k) = nk;
    if n * k != rows * group || k % group != 0 {
        return None;
    }
    let mut kn_layout = false;
    if let Op::Transpose { perm } = &g.node(next).op {
        if perm.as_deref() != Some(&[1, 0]) {
            return None;
        }
        kn_layout = true;
        end = g.node(next).outputs[0];
        next = single_consumer(g, consumers, end)?;
    }
    let c = g.node(next);
    if c.inputs.get(1).copied().flatten() != Some(end) {
        return None;
    }
    let mut matmul_bias = None;
    match &c.op {
        Op::MatMul if kn_layout && c.inputs.iter().skip(3).all(Option::is_none) => {
            // qtune's MatMul bias (exported as MatMul + Add): a constant [N].
            if let Some(bias) = c.inputs.get(2).copied().flatten() {
                if g.constant_of(bias)?.dims() != [n] {
                    return None;
                }
                matmul_bias = Some(g.value(bias).name.clone());
            }
        }
        Op::Gemm(a) if a.alpha == 1.0 && !a.trans_a && a.trans_b != kn_layout => {
            if let Some(bias) = c.inputs.get(2).copied().flatten() {
                let t = g.constant_of(bias)?;
                if a.beta != 1.0 || t.dims() != [n] {
                    return None;
                }
            }
        }
        _ => return None,
    }
    // Blocks: the largest power of two dividing the group (>= 16 as the
    // group is a multiple of 16).
    let block = 1usize << group.trailing_zeros();
    let per_group = group / block;
    let nb = k / block;
    let mut b = vec![0u8; n * k / 2];
    for (i, &code) in codes_data.iter().enumerate() {
        let nib = code & 0x0F;
        b[i / 2] |= if i % 2 == 0 { nib } else { nib << 4 };
    }
    let scales: Vec<f32> = scale
        .iter()
        .flat_map(|&s| std::iter::repeat_n(s, per_group))
        .collect();
    let zp_blocks: Vec<u8> = zp
        .iter()
        .flat_map(|&z| std::iter::repeat_n(z, per_group))
        .collect();
    let zp_row = nb.div_ceil(2);
    let mut zps = vec![0u8; n * zp_row];
    for (i, &z) in zp_blocks.iter().enumerate() {
        let (row, blk) = (i / nb, i % nb);
        let nib = z & 0x0F;
        zps[row * zp_row + blk / 2] |= if blk % 2 == 0 { nib } else { nib << 4 };
    }
    Some(Layer {
        dq_out: g.value(dq_out).name.clone(),
        matmul_bias,
        chain_end: g.value(end).name.clone(),
        codes_name,
        scale_name: g.value(scale_v).name.clone(),
        zp_name: g.value(zp_v).name.clone(),
        b,
        scales,
        zps,
        n,
        k,
        block,
    })
}

fn tensor(name: &str, dims: &[usize], data_type: i32, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: dims
            .iter()
            .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
            .collect(),
        data_type: Some(data_type),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

/// Rewrites the 4-bit weight-only layers of `model` (exported from `qdq`)
/// as MatMulNBits; returns how many it packed.
pub fn pack_int4(qdq: &Graph, model: &mut ModelProto) -> usize {
    let consumers = qdq.consumers();
    let layers: Vec<Layer> = qdq
        .nodes()
        .filter_map(|(id, _)| find_layer(qdq, &consumers, id))
        .collect();
    let Some(graph) = model.graph.as_mut() else {
        return 0;
    };
    let mut packed = 0;
    for l in &layers {
        let Some(ci) = graph
            .node
            .iter()
            .position(|n| n.input.get(1) == Some(&l.chain_end))
        else {
            continue;
        };
        // The chain: every node fed (transitively) by the DequantizeLinear
        // output, up to the layer, and the DequantizeLinear itself.
        let mut dead_values: HashSet<String> = HashSet::from([l.dq_out.clone()]);
        let mut dead_nodes: HashSet<usize> = HashSet::new();
        if let Some(d) = graph.node.iter().position(|n| n.output.contains(&l.dq_out)) {
            dead_nodes.insert(d);
        }
        loop {
            let before = dead_nodes.len();
            for (i, n) in graph.node.iter().enumerate() {
                if i != ci
                    && !dead_nodes.contains(&i)
                    && n.input.iter().any(|v| dead_values.contains(v))
                {
                    dead_nodes.insert(i);
                    dead_values.extend(n.output.iter().cloned());
                }
            }
            if dead_nodes.len() == before {
                break;
            }
        }
        let c = &graph.node[ci];
        let mut inputs = vec![
            c.input[0].clone(),
            l.codes_name.clone(),
            l.scale_name.clone(),
            l.zp_name.clone(),
        ];
        if c.op_type.as_deref() == Some("Gemm")
            && let Some(bias) = c.input.get(2).filter(|b| !b.is_empty())
        {
            inputs.extend([String::new(), bias.clone()]);
        }
        let mut output = c.output.clone();
        if let Some(bias) = &l.matmul_bias {
            // The Add after the MatMul becomes MatMulNBits' bias.
            let Some(ai) = graph.node.iter().position(|n| {
                n.op_type.as_deref() == Some("Add")
                    && n.input.first() == c.output.first()
                    && n.input.get(1) == Some(bias)
            }) else {
                continue;
            };
            output = graph.node[ai].output.clone();
            inputs.extend([String::new(), bias.clone()]);
            dead_nodes.insert(ai);
        }
        let new = NodeProto {
            input: inputs,
            output,
            name: c.name.clone(),
            op_type: Some("MatMulNBits".into()),
            domain: Some("com.microsoft".into()),
            attribute: vec![
                attr_int("K", i64::try_from(l.k).unwrap_or(i64::MAX)),
                attr_int("N", i64::try_from(l.n).unwrap_or(i64::MAX)),
                attr_int("bits", 4),
                attr_int("block_size", i64::try_from(l.block).unwrap_or(i64::MAX)),
                attr_int("accuracy_level", 0),
            ],
            ..Default::default()
        };
        graph.node[ci] = new;
        let mut i = 0;
        graph.node.retain(|_| {
            let keep = !dead_nodes.contains(&i);
            i += 1;
            keep
        });
        let replaced: HashSet<&str> = [
            l.codes_name.as_str(),
            l.scale_name.as_str(),
            l.zp_name.as_str(),
        ]
        .into();
        graph
            .initializer
            .retain(|t| !replaced.contains(t.name.as_deref().unwrap_or("")));
        let nb = l.k / l.block;
        let uint8 = crate::proto::tensor_proto::DataType::Uint8 as i32;
        let float = crate::proto::tensor_proto::DataType::Float as i32;
        graph.initializer.push(tensor(
            &l.codes_name,
            &[l.n, nb, l.block / 2],
            uint8,
            l.b.clone(),
        ));
        graph.initializer.push(tensor(
            &l.scale_name,
            &[l.n * nb],
            float,
            l.scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
        ));
        graph
            .initializer
            .push(tensor(&l.zp_name, &[l.zps.len()], uint8, l.zps.clone()));
        packed += 1;
    }
    if packed > 0 {
        // Initializers no node reads any more (the Reshape shapes).
        let used: HashSet<String> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().cloned())
            .collect();
        let outputs: HashMap<&str, ()> = graph
            .output
            .iter()
            .filter_map(|o| o.name.as_deref().map(|n| (n, ())))
            .collect();
        graph.initializer.retain(|t| {
            let name = t.name.as_deref().unwrap_or("");
            used.contains(name) || outputs.contains_key(name)
        });
        model.opset_import.push(OperatorSetIdProto {
            domain: Some("com.microsoft".into()),
            version: Some(1),
        });
    }
    packed
}
