#!/usr/bin/env python3
"""Independent facts about a source ONNX model and a run of its canonical
`.mlir`, for the canonical-graph tests.

    canonical_oracle.py MODEL.onnx GOLDEN_OUTPUT.npz RUN.npz
    canonical_oracle.py weights QDQ.onnx

Prints one line: `nodes=N bn=B silu=S min_cos=C`: the source model's node
count, its BatchNormalization nodes, its x*sigmoid(x) pairs (a Mul whose
inputs are a tensor and the Sigmoid of that same tensor), and the lowest
cosine between the golden outputs (ONNX Runtime, keyed by ONNX names) and
the `.mlir` run's outputs (keyed by TPU-MLIR op names `<onnx name>_<OpType>`,
matched by position: both follow the graph's output order).
"""
import sys

import numpy as np
import onnx


def main(model, golden, run):
    m = onnx.load(model, load_external_data=False)
    nodes = m.graph.node
    producer = {o: n for n in nodes for o in n.output}
    bn = sum(1 for n in nodes if n.op_type == "BatchNormalization")
    silu = 0
    for n in nodes:
        if n.op_type != "Mul" or len(n.input) != 2:
            continue
        a, b = n.input
        for x, s in ((a, b), (b, a)):
            p = producer.get(s)
            if p is not None and p.op_type == "Sigmoid" and p.input[0] == x:
                silu += 1
                break
    g = np.load(golden)
    r = np.load(run)
    outs = [o.name for o in m.graph.output]
    if len(r.files) != len(outs):
        raise SystemExit(f"run has {len(r.files)} outputs {r.files}, the model {len(outs)}")
    worst = 2.0
    for name, key in zip(outs, r.files):
        a = g[name].ravel().astype(np.float64)
        b = r[key].ravel().astype(np.float64)
        if a.shape != b.shape:
            raise SystemExit(f"{name} vs {key}: {a.shape} vs {b.shape}")
        c = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        worst = min(worst, c)
    print(f"nodes={len(nodes)} bn={bn} silu={silu} min_cos={worst:.7f}")


def weights(model):
    """One line per Conv/Gemm/MatMul node with a constant weight (input 1):
    `int8 NAME` when the weight is an int8 initializer behind a
    DequantizeLinear, `float NAME` when it is a float initializer."""
    m = onnx.load(model, load_external_data=False)
    init = {i.name: i for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    for n in m.graph.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul") or len(n.input) < 2:
            continue
        w = n.input[1]
        p = producer.get(w)
        if p is not None and p.op_type == "DequantizeLinear" and p.input[0] in init:
            if init[p.input[0]].data_type == onnx.TensorProto.INT8:
                print(f"int8 {n.name}")
        elif w in init and init[w].data_type == onnx.TensorProto.FLOAT:
            print(f"float {n.name}")
        elif p is not None and p.op_type == "Cast":
            # F16/BF16 weights: a float initializer rounded by a Cast pair.
            print(f"float {n.name}")


if __name__ == "__main__":
    if sys.argv[1] == "weights":
        weights(sys.argv[2])
    else:
        main(*sys.argv[1:4])
