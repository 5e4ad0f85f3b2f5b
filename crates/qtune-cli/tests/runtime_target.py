#!/usr/bin/env python3
"""Oracle for `model_deploy --processor onnxruntime` (the QDQ-runtime profile).

    runtime_target.py placement MODEL.onnx
        Reads the exported QDQ graph with the onnx package alone and checks
        the profile's placement: every float input of a Conv /
        ConvTranspose / MatMul / Gemm is read through a DequantizeLinear;
        constant weights are int8 behind a per-channel DequantizeLinear
        (one scale per output channel); every QuantizeLinear feeds only
        DequantizeLinears, and every DequantizeLinear feeds only those four
        layer types (no Q/DQ anywhere else). Prints the counts; exits 1 on
        the first violation.

    runtime_target.py kernels MODEL.onnx MIN_FRACTION
        Lets ONNX Runtime optimise MODEL.onnx (ORT_ENABLE_ALL, the CPU
        provider), writes the optimised graph (`optimized_model_filepath`)
        and counts its integer kernels (QLinearConv, QLinearMatMul,
        MatMulIntegerToFloat, MatMulInteger, QGemm, ConvInteger,
        DynamicQuantize*) against the float Conv/MatMul/Gemm (and their
        fused forms) left. Exits 1 unless at least MIN_FRACTION of the
        layers run on integer kernels.
"""
import os
import sys
import tempfile
from collections import Counter

LAYERS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
INTEGER = {"QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat", "MatMulInteger", "QGemm",
           "ConvInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "QAttention"}
FLOAT = {"Conv", "ConvTranspose", "MatMul", "Gemm", "FusedConv", "FusedMatMul", "FusedGemm",
         "NhwcFusedConv"}


def placement(path):
    import onnx
    from onnx import numpy_helper

    m = onnx.load(path)
    g = m.graph
    init = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    errors = []
    layers = 0
    for n in g.node:
        if n.op_type not in LAYERS:
            continue
        layers += 1
        for k, x in enumerate(n.input[:2]):
            if not x:
                continue
            p = producer.get(x)
            if p is None or p.op_type != "DequantizeLinear":
                errors.append(f"{n.op_type} {n.name}: input {k} `{x}` is not read through a DequantizeLinear")
                continue
            q = p.input[0]
            if q in init:
                w = init[q]
                scale = init.get(p.input[1])
                if w.dtype.name != "int8":
                    errors.append(f"{n.name}: weight `{q}` is {w.dtype}, expected int8")
                channels = {"Conv": w.shape[0], "ConvTranspose": w.shape[1] if w.ndim > 1 else 1,
                            "MatMul": w.shape[-1], "Gemm": None}[n.op_type]
                if n.op_type == "Gemm":
                    trans_b = any(a.name == "transB" and a.i == 1 for a in n.attribute)
                    channels = w.shape[0] if trans_b else w.shape[1]
                if scale is None or scale.size != channels:
                    errors.append(f"{n.name}: weight `{q}` has {None if scale is None else scale.size} scales, "
                                  f"expected one per output channel ({channels})")
    for n in g.node:
        if n.op_type == "QuantizeLinear":
            bad = [c.op_type for c in consumers.get(n.output[0], []) if c.op_type != "DequantizeLinear"]
            if bad:
                errors.append(f"QuantizeLinear {n.name} feeds {bad}")
        if n.op_type == "DequantizeLinear":
            # A MatMul's int32 bias is exported as MatMul + Add(DQ(bias)).
            bias = n.input[0] in init and init[n.input[0]].dtype.name == "int32"
            bad = [c.op_type for c in consumers.get(n.output[0], []) if c.op_type not in LAYERS
                   and not (bias and c.op_type == "Add"
                            and any(producer.get(i) is not None and producer[i].op_type == "MatMul"
                                    for i in c.input))]
            if bad:
                errors.append(f"DequantizeLinear {n.name} feeds {bad}: Q/DQ outside Conv/MatMul/Gemm inputs")
    ops = Counter(n.op_type for n in g.node)
    print(f"layers {layers} QuantizeLinear {ops['QuantizeLinear']} DequantizeLinear {ops['DequantizeLinear']}")
    for e in errors[:20]:
        print(e)
    return 1 if errors or layers == 0 else 0


def kernels(path, min_fraction):
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "optimized.onnx")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = out
        so.log_severity_level = 3
        ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        opt = onnx.load(out)
    ops = Counter(n.op_type for n in opt.graph.node)
    src = Counter(n.op_type for n in onnx.load(path).graph.node)
    n_layers = sum(src[t] for t in LAYERS)
    integer = {t: c for t, c in ops.items() if t in INTEGER or t.startswith("DynamicQuantize")}
    flt = {t: c for t, c in ops.items() if t in FLOAT}
    n_int = sum(c for t, c in integer.items() if not t.startswith("DynamicQuantize"))
    print(f"source layers {n_layers}; integer kernels {sorted(integer.items())}; "
          f"float layers left {sorted(flt.items())}; QuantizeLinear {ops['QuantizeLinear']} "
          f"DequantizeLinear {ops['DequantizeLinear']}")
    frac = n_int / n_layers if n_layers else 0.0
    print(f"integer fraction {frac:.3f} ({n_int} of {n_layers})")
    return 0 if frac >= min_fraction and n_int + sum(flt.values()) >= n_layers else 1


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "placement":
        sys.exit(placement(sys.argv[2]))
    if cmd == "kernels":
        sys.exit(kernels(sys.argv[2], float(sys.argv[3])))
    raise SystemExit(f"unknown command {cmd}")
