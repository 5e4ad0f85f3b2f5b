#!/usr/bin/env python3
"""Oracle for the QDQ export: ONNX Runtime running model_deploy's QDQ ONNX
model must agree with qtune's own simulation of the quantized model.

    qdq_agreement.py inputs  WORKLOADS MODEL OUT.npz [LIMIT]
        Stacks the model's validation inputs (images/val through
        tools/preprocess.py, or text/val for MiniLM) into one npz keyed by
        input name, axis 0 = sample, in file-name order. With LIMIT, at most
        LIMIT of them, spread evenly over the file list (every k-th).

    qdq_agreement.py compare MODEL.onnx INPUTS.npz SIM.npz MIN_COS
        Runs MODEL.onnx in ONNX Runtime on every sample of INPUTS.npz and
        compares each output with the same sample of SIM.npz (qtune's
        outputs, keyed by TPU-MLIR op names: the QDQ model's output `o` is
        SIM's `o`, or its one key `o_<OpType>`) by cosine similarity. Prints the minimum per
        output and `min_cos <value> over <n> samples`; exits 1 if any sample
        is below MIN_COS.

    qdq_agreement.py codes QTUNE MLIR TABLE MODEL.onnx INPUTS.npz MAX_FRACTION
        Code by code, sample by sample: ONNX Runtime runs MODEL.onnx with
        every quantized tensor of the .mlir's ops exposed, `QTUNE run MLIR
        --dump_all` runs the simulation, and the int8 codes are compared in
        the ONNX graph's order. Up to the first tensor with a differing code
        every tensor must agree exactly; that first tensor may differ in at
        most MAX_FRACTION of its codes, by one step each (a float rounding
        at a grid boundary). What follows it is downstream of the flip and
        is not compared. Exits 1 otherwise.
"""
import os
import re
import subprocess
import sys
import tempfile

import numpy as np


def spread(files, limit):
    if limit is None or len(files) <= limit:
        return files
    step = -(-len(files) // limit)
    return files[::step][:limit]


def inputs(workloads, model, out, limit=None):
    sys.path.insert(0, os.path.join(workloads, "tools"))
    from preprocess import load_models_toml, preprocess_image

    if model == "minilm_l6_s128":
        folder = os.path.join(workloads, "text", "val")
        files = spread(sorted(f for f in os.listdir(folder) if f.endswith(".npz")), limit)
        arrays = {}
        for f in files:
            d = np.load(os.path.join(folder, f))
            for k in d.files:
                arrays.setdefault(k, []).append(d[k])
        stacked = {k: np.concatenate(v, axis=0) for k, v in arrays.items()}
    else:
        cfg = load_models_toml()[model]
        folder = os.path.join(workloads, "images", "val")
        files = spread(sorted(f for f in os.listdir(folder) if f.lower().endswith((".jpg", ".jpeg", ".png"))), limit)
        name = cfg["inputs"][0]["name"]
        stacked = {name: np.concatenate([preprocess_image(os.path.join(folder, f), cfg) for f in files])}
    np.savez(out, **stacked)
    print(f"{len(files)} samples")


def cosine(a, b):
    a = a.ravel().astype(np.float64)
    b = b.ravel().astype(np.float64)
    if np.array_equal(a, b):
        return 1.0
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(a @ b / (na * nb))


def compare(model, inputs_npz, sim_npz, min_cos, min_mean=None):
    import onnxruntime as ort

    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    feeds = np.load(inputs_npz)
    sim = np.load(sim_npz)
    n = feeds[sess.get_inputs()[0].name].shape[0]
    worst = {o.name: (2.0, -1) for o in sess.get_outputs()}
    # The per-sample cosine of the least similar output.
    per_sample = []

    def sim_key(name):
        if name in sim.files:
            return name
        keys = [k for k in sim.files if k.startswith(name + "_")]
        if len(keys) != 1:
            raise SystemExit(f"output {name}: no single simulated tensor {name}_<OpType> in {sim.files}")
        return keys[0]

    keys = {o.name: sim_key(o.name) for o in sess.get_outputs()}
    for i in range(n):
        feed = {x.name: feeds[x.name][i : i + 1] for x in sess.get_inputs()}
        outs = sess.run(None, feed)
        sample = 2.0
        for o, v in zip(sess.get_outputs(), outs):
            c = cosine(v, sim[keys[o.name]][i : i + 1])
            sample = min(sample, c)
            if c < worst[o.name][0]:
                worst[o.name] = (c, i)
        per_sample.append(sample)
    for name, (c, i) in worst.items():
        print(f"{name}: min cos {c:.6f} (sample {i})")
    overall = min(c for c, _ in worst.values())
    mean = float(np.mean(per_sample))
    below = sum(1 for c in per_sample if c < 0.999)
    print(f"min_cos {overall:.6f} mean_cos {mean:.6f} over {n} samples ({below} below 0.999)")
    ok = overall >= min_cos and (min_mean is None or mean >= min_mean)
    return 0 if ok else 1


def codes(qtune, mlir, table, model, inputs_npz, max_fraction):
    import onnx
    import onnxruntime as ort

    ops = set(re.findall(r'loc\("([^"]+)"\)', open(mlir).read()))
    m = onnx.load(model)
    init = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    # The DequantizeLinear of each op's quantized output, in graph order.
    watched = []
    for n in m.graph.node:
        if n.op_type == "DequantizeLinear" and n.output[0].endswith("_DequantizeLinear"):
            base = n.output[0][: -len("_DequantizeLinear")]
            if base in ops and n.input[1] in init:
                watched.append((base, n.output[0], float(np.max(init[n.input[1]]))))
    have = {o.name for o in m.graph.output}
    for _, out, _ in watched:
        if out not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = np.load(inputs_npz)
    names = [x.name for x in sess.get_inputs()]
    n = feeds[names[0]].shape[0]
    failures, exact = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            one = {k: feeds[k][i : i + 1] for k in names}
            x = os.path.join(tmp, "x.npz")
            y = os.path.join(tmp, "y.npz")
            np.savez(x, **one)
            subprocess.run([qtune, "run", mlir, "--input", x, "-o", y, "--dump_all",
                            "--calibration_table", table, "--processor", "bm1684x"],
                           check=True, capture_output=True)
            sim = np.load(y)
            res = sess.run([out for _, out, _ in watched], one)
            first = None
            for (base, out, step), r in zip(watched, res):
                if out not in sim.files:
                    # A weight's DequantizeLinear: a constant, not an activation.
                    continue
                d = np.rint(np.abs(r.astype(np.float64) - sim[out].astype(np.float64)) / step)
                if d.max() > 0:
                    first = (base, int((d > 0).sum()), d.size, int(d.max()))
                    break
            if first is None:
                exact += 1
                continue
            base, bad, size, worst = first
            line = f"sample {i}: first flip in {base}: {bad}/{size} codes, up to {worst} step(s)"
            print(line)
            if worst > 1 or bad > max_fraction * size:
                failures.append(line)
    print(f"{exact} of {n} samples agree code for code on all {len(watched)} quantized tensors")
    for f in failures:
        print("FAIL", f)
    return 0 if not failures and watched else 1


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "codes":
        sys.exit(codes(*sys.argv[2:7], float(sys.argv[7])))
    if len(sys.argv) in (5, 6) and sys.argv[1] == "inputs":
        inputs(*sys.argv[2:5], int(sys.argv[5]) if len(sys.argv) == 6 else None)
        sys.exit(0)
    if len(sys.argv) in (6, 7) and sys.argv[1] == "compare":
        min_mean = float(sys.argv[6]) if len(sys.argv) == 7 else None
        sys.exit(compare(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), min_mean))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
