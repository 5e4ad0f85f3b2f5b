#!/usr/bin/env python3
"""Compares `run_calibration --cali_method max` with ONNX Runtime's MinMax calibrator.

Both see the same preprocessed inputs (npz files keyed by input name). ORT's
MinMaxCalibrater gives a (min, max) range per ONNX tensor; qtune's table is
keyed by TPU-MLIR op names, which are the ONNX output name plus `_<OpType>`
(graph inputs keep their names); a fused op's row is the last fused tensor. The threshold of the max method must equal
max(|min|, |max|) of ORT's range within --rtol (the table prints 7 decimals,
so an absolute slack of 5e-8 is allowed too).

Usage: ort_minmax.py --run-calibration BIN --model M.onnx --workdir DIR a.npz b.npz ...
Exit status 0 when every tensor matches, 1 otherwise, 2 on usage errors.
"""

import argparse
import os
import subprocess
import sys

import numpy as np
import onnx
from onnxruntime.quantization.calibrate import (
    CalibrationDataReader,
    CalibrationMethod,
    create_calibrator,
)


class NpzReader(CalibrationDataReader):
    def __init__(self, files):
        self.items = [dict(np.load(f)) for f in files]
        self.pos = 0

    def get_next(self):
        if self.pos >= len(self.items):
            return None
        self.pos += 1
        return self.items[self.pos - 1]


def table_rows(path):
    rows = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, th, mn, mx = line.split(" ")
            rows[name] = (float(th), float(mn), float(mx))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-calibration", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("npz", nargs="+")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)

    # qtune.
    data_list = os.path.join(a.workdir, "ort_minmax_list.txt")
    with open(data_list, "w") as f:
        f.write("".join(os.path.abspath(p) + "\n" for p in a.npz))
    table = os.path.join(a.workdir, "ort_minmax_cali_table")
    cmd = [a.run_calibration, a.model, "--data_list", data_list, "--cali_method", "max",
           "-o", table, "--quiet", "--no_time"]
    subprocess.run(cmd, check=True, cwd=a.workdir)
    rows = table_rows(table)

    # ONNX Runtime, every float tensor.
    calibrator = create_calibrator(
        a.model,
        op_types_to_calibrate=None,
        augmented_model_path=os.path.join(a.workdir, "ort_minmax_augmented.onnx"),
        calibrate_method=CalibrationMethod.MinMax,
    )
    calibrator.collect_data(NpzReader(a.npz))
    ranges = calibrator.compute_data()
    data = ranges.data if hasattr(ranges, "data") else ranges

    # ONNX tensor name -> TPU-MLIR op name. A Conv followed by a
    # BatchNormalization is one Conv in TPU-MLIR's graph (onnx-simplifier
    # folds the BN and the Conv keeps its name): the BN's output is the
    # Conv's row, and the Conv's own output has none.
    model = onnx.load(a.model)
    to_op = {i.name: i.name for i in model.graph.input}
    readers = {}
    for node in model.graph.node:
        for i in node.input:
            readers.setdefault(i, []).append(node)
    for node in model.graph.node:
        for o in node.output:
            to_op[o] = o + "_" + node.op_type
    for node in model.graph.node:
        if node.op_type != "BatchNormalization":
            continue
        prod = next((n for n in model.graph.node if node.input[0] in n.output), None)
        if prod is not None and prod.op_type == "Conv" and len(readers.get(node.input[0], [])) == 1:
            to_op[node.output[0]] = node.input[0] + "_Conv"
            to_op[node.input[0]] = None

    failures, compared = [], 0
    for tensor, value in data.items():
        lo, hi = value.range_value if hasattr(value, "range_value") else value
        name = to_op.get(tensor)
        if name is None or name not in rows:
            continue
        # ORT 1.32 keeps each bound as a 0-d or 1-element array.
        lo = float(np.asarray(lo, dtype=np.float64).ravel()[0])
        hi = float(np.asarray(hi, dtype=np.float64).ravel()[0])
        want = max(abs(lo), abs(hi), 1e-5)
        th = rows[name][0]
        compared += 1
        if abs(th - want) > a.rtol * want + 5e-8:
            failures.append(f"{name}: qtune {th:.7f}, onnxruntime {want:.7f}")
    missing = [n for n in rows if n not in {to_op.get(t) for t in data}]
    print(f"compared {compared} tensors ({len(rows)} table rows, {len(missing)} without an ORT range)")
    for line in failures:
        print("MISMATCH", line)
    if missing:
        print("no ORT range for:", ", ".join(missing[:10]))
    return 0 if not failures and compared > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
