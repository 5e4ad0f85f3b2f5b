#!/usr/bin/env python3
"""What AWQ would give on minilm_l6_s128 if the graph could take one inserted Mul per LayerNorm.

QUALITY.md "Weight quantizers beyond TPU-MLIR's rule", AWQ reading. In post-LN BERT the
LayerNorm before Q/K/V (and before FFN-up) also feeds the residual Add, so `model_deploy --q_awq`
cannot fold 1/s into its gamma/beta without changing the residual: it scales only the 6
attention output projections. This experiment does the fold anyway and restores the residual
with a per-channel `Mul(x, s)` inserted before each residual Add (12 Muls, one per LayerNorm
read by projections), so the float model computes the same function; the alpha of each site is
searched as `--q_awq` does (grid 0..1 by 0.05, output error `tr(D^T H D)` with TPU-MLIR's W4
group-128 min/max grid, the scales rounded to F16; H and mean|x| over the unpadded tokens of
text/calib). The written ONNX model then goes through qtune as any model (model_transform,
model_deploy --q_awq ... for the remaining V->O folds and GPTQ).

    python3 bench/awq_inexact.py SRC.onnx CALIB_DIR OUT.onnx
"""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper


def rtn_g128_w4(wt: np.ndarray) -> np.ndarray:
    """TPU-MLIR's W4 asymmetric group-128 rule on [N, K] rows, dequantized (F16 scales)."""
    n, k = wt.shape
    g = wt.reshape(n, k // 128, 128).astype(np.float32)
    lo, hi = g.min(axis=2, keepdims=True), g.max(axis=2, keepdims=True)
    s = (np.maximum(hi - lo, 1e-5) / 15.0).astype(np.float16).astype(np.float32)
    zp = np.clip(-np.round(lo / s), 0, 15)
    q = np.clip(np.round(g / s) + zp, 0, 15)
    return ((q - zp) * s).astype(np.float16).astype(np.float32).reshape(n, k)


def main() -> None:
    src, calib, out = sys.argv[1:4]
    model = onnx.load(src)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list] = {}
    for node in g.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    # Sites: a LayerNorm output (decomposed: .../LayerNorm/Add_1) read by a Reshape feeding
    # Gemms and by the residual Add.
    sites = []
    for node in g.node:
        if not (node.op_type == "Add" and node.name.endswith("LayerNorm/Add_1")):
            continue
        x = node.output[0]
        readers = consumers.get(x, [])
        reshape = [r for r in readers if r.op_type == "Reshape"]
        residual = [r for r in readers if r.op_type == "Add"]
        if len(reshape) != 1 or len(residual) != 1:
            continue
        gemms = [c for c in consumers[reshape[0].output[0]] if c.op_type == "Gemm"]
        mul = next(n for n in g.node if n.output[0] == node.input[0])
        sites.append((node, mul, gemms, residual[0], reshape[0].output[0]))
    # Layer inputs over the calibration set, unpadded tokens only.
    probe = onnx.load(src)
    for _, _, _, _, v in sites:
        probe.graph.output.append(helper.make_tensor_value_info(v, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    stats = {v: [np.zeros((384, 384)), np.zeros(384), 0] for *_, v in sites}
    for f in sorted(os.listdir(calib)):
        feeds = dict(np.load(os.path.join(calib, f)))
        keep = feeds["attention_mask"].reshape(-1) != 0
        res = dict(zip(names, sess.run(None, feeds)))
        for *_, v in sites:
            x = res[v].reshape(-1, 384)[keep].astype(np.float64)
            st = stats[v]
            st[0] += x.T @ x
            st[1] += np.abs(x).sum(axis=0)
            st[2] += x.shape[0]
    for ln_add, mul, gemms, residual, v in sites:
        h, abs_sum, rows = stats[v]
        mean_abs = abs_sum / rows
        ws = []
        for gm in gemms:
            w = numpy_helper.to_array(inits[gm.input[1]])
            trans_b = any(a.name == "transB" and a.i for a in gm.attribute)
            ws.append(w if trans_b else w.T)  # [N, K]
        errors = []
        for i in range(21):
            a = i / 20
            s = np.maximum(mean_abs, 1e-4) ** a
            s = s / np.sqrt(s.max() * s.min())
            e = 0.0
            for wt in ws:
                q = rtn_g128_w4((wt * s).astype(np.float32))
                d = wt - q / s
                e += float(np.einsum("nk,kl,nl->", d, h, d))
            errors.append(e)
        best = int(np.argmin(errors))
        a = best / 20
        s = np.maximum(mean_abs, 1e-4) ** a
        s = (s / np.sqrt(s.max() * s.min())).astype(np.float64)
        print(f"{ln_add.name}: alpha {a:.2f} ({len(gemms)} Gemms), error {errors[best]:.4g} vs {errors[0]:.4g}")
        if best == 0:
            continue
        # 1/s into gamma and beta, s into the Gemm weight rows (input channels).
        for name in (next(i for i in mul.input if i in inits), next(i for i in ln_add.input if i in inits)):
            t = numpy_helper.to_array(inits[name]).astype(np.float64) / s
            inits[name].CopyFrom(numpy_helper.from_array(t.astype(np.float32), name))
        for gm in gemms:
            name = gm.input[1]
            w = numpy_helper.to_array(inits[name]).astype(np.float64)
            trans_b = any(at.name == "transB" and at.i for at in gm.attribute)
            w = w * s[None, :] if trans_b else w * s[:, None]
            inits[name].CopyFrom(numpy_helper.from_array(w.astype(np.float32), name))
        # The residual reads x again: Mul(x / s, s) before it.
        sname = ln_add.name + "_awq_s"
        g.initializer.append(numpy_helper.from_array(s.astype(np.float32), sname))
        restored = ln_add.output[0] + "_awq_restored"
        mnode = helper.make_node("Mul", [ln_add.output[0], sname], [restored], name=ln_add.name + "_awq_mul")
        idx = list(g.node).index(residual)
        g.node.insert(idx, mnode)
        for j, i in enumerate(residual.input):
            if i == ln_add.output[0]:
                residual.input[j] = restored
    onnx.save(model, out)
    # Same float function on a few calibration samples.
    a = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    worst = 0.0
    for f in sorted(os.listdir(calib))[:5]:
        feeds = dict(np.load(os.path.join(calib, f)))
        for x, y in zip(a.run(None, feeds), b.run(None, feeds)):
            worst = max(worst, float(np.abs(x - y).max() / np.abs(x).max()))
    print(f"wrote {out}; float outputs max relative difference {worst:.2e}")


if __name__ == "__main__":
    main()
