#!/usr/bin/env python3
"""Runs ONNX models in ONNX Runtime (CPU) and writes every output to an npz.

Usage: ort_run.py [--opt disable|basic|extended|all] [--check] --run MODEL IN.npz OUT.npz [--run ...]

With --check, each model must first pass `onnx.checker.check_model` with
`full_check=True` (strict type and shape inference over the whole graph).

Inputs are matched to graph inputs by name. When an input array stacks more
samples on axis 0 than the model's static batch dimension takes (the golden
inputs stack two samples for batch-1 models), the samples run one at a time
and the outputs are concatenated on axis 0. Outputs keep their element type.
`--opt disable` (the default) runs the graph as written, on one thread,
which is how the goldens in ../shared/workloads/golden were made; `all` lets ORT fuse
QuantizeLinear/DequantizeLinear pairs into integer kernels, Casts, etc.

Exit status 0 on success; a Python traceback otherwise (onnxruntime missing,
model rejected, ...).
"""

import argparse
import sys

import numpy as np
import onnx
import onnxruntime as ort

LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def run(model, inputs_path, outputs_path, level):
    so = ort.SessionOptions()
    so.graph_optimization_level = LEVELS[level]
    # One thread, as the goldens were made: MLAS splits some sums by thread.
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    data = dict(np.load(inputs_path))
    feeds = {}
    samples = 1
    for i in sess.get_inputs():
        if i.name not in data:
            raise SystemExit(f"{inputs_path} has no array named '{i.name}'")
        a = data[i.name]
        batch = i.shape[0] if i.shape and isinstance(i.shape[0], int) else None
        if batch and a.ndim == len(i.shape) and a.shape[0] > batch and a.shape[0] % batch == 0:
            samples = max(samples, a.shape[0] // batch)
        feeds[i.name] = (a, batch)
    names = [o.name for o in sess.get_outputs()]
    parts = {n: [] for n in names}
    for s in range(samples):
        f = {}
        for name, (a, batch) in feeds.items():
            if samples > 1 and batch and a.shape[0] == samples * batch:
                a = a[s * batch:(s + 1) * batch]
            f[name] = a
        for n, v in zip(names, sess.run(names, f)):
            parts[n].append(v)
    out = {n: (np.concatenate(v, axis=0) if samples > 1 else v[0]) for n, v in parts.items()}
    np.savez(outputs_path, **out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--opt", choices=sorted(LEVELS), default="disable")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--run", nargs=3, action="append", required=True,
                    metavar=("MODEL", "IN", "OUT"))
    a = ap.parse_args()
    for model, inputs_path, outputs_path in a.run:
        if a.check:
            onnx.checker.check_model(model, full_check=True)
        run(model, inputs_path, outputs_path, a.opt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
