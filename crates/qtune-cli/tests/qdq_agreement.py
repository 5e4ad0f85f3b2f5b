#!/usr/bin/env python3
"""Oracle for the QDQ export: ONNX Runtime running model_deploy's QDQ ONNX
model must agree with qtune's own simulation of the quantized model.

    qdq_agreement.py inputs  WORKLOADS MODEL OUT.npz
        Stacks the model's validation inputs (images/val through
        tools/preprocess.py, or text/val for MiniLM) into one npz keyed by
        input name, axis 0 = sample, in file-name order.

    qdq_agreement.py compare MODEL.onnx INPUTS.npz SIM.npz MIN_COS
        Runs MODEL.onnx in ONNX Runtime on every sample of INPUTS.npz and
        compares each output with the same sample of SIM.npz (qtune's
        outputs, keyed by TPU-MLIR op names: the QDQ model's output `o` is
        SIM's `o`, or its one key `o_<OpType>`) by cosine similarity. Prints the minimum per
        output and `min_cos <value> over <n> samples`; exits 1 if any sample
        is below MIN_COS.
"""
import os
import sys

import numpy as np


def inputs(workloads, model, out):
    sys.path.insert(0, os.path.join(workloads, "tools"))
    from preprocess import load_models_toml, preprocess_image

    if model == "minilm_l6_s128":
        folder = os.path.join(workloads, "text", "val")
        files = sorted(f for f in os.listdir(folder) if f.endswith(".npz"))
        arrays = {}
        for f in files:
            d = np.load(os.path.join(folder, f))
            for k in d.files:
                arrays.setdefault(k, []).append(d[k])
        stacked = {k: np.concatenate(v, axis=0) for k, v in arrays.items()}
    else:
        cfg = load_models_toml()[model]
        folder = os.path.join(workloads, "images", "val")
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith((".jpg", ".jpeg", ".png")))
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


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "inputs":
        inputs(*sys.argv[2:])
        sys.exit(0)
    if len(sys.argv) in (6, 7) and sys.argv[1] == "compare":
        min_mean = float(sys.argv[6]) if len(sys.argv) == 7 else None
        sys.exit(compare(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), min_mean))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
