#!/usr/bin/env python3
"""Benchmark: qtune's int8 simulation vs ONNX Runtime on the exported QDQ model, batch 1.

    python3 bench/int8_sim_compare.py                       # the five CNN workloads
    python3 bench/int8_sim_compare.py --models mobilenetv2_nsfw --before /tmp/old/qtune
    python3 bench/int8_sim_compare.py --markdown BENCHMARKS.md

This is a benchmark, not a test: it never fails on a slow result.

Method
------
* For each model (work dir ``--work``, default /tmp/qtune-int8-sim): ``model_transform`` with
  the workload's preprocessing flags, ``run_calibration`` (kl, 65 calibration images) and
  ``model_deploy --quantize INT8 --processor bm1684x`` to ``<model>_int8.onnx``, the QDQ
  model. Existing files are reused (delete the work dir to redo them).
* Both engines run that QDQ file on sample 0 of the golden input, batch 1, 2 threads.
  ONNX Runtime: CPU execution provider, default optimisations (it fuses DQ -> Conv -> Q into
  its integer QLinearConv / QGemm kernels, VNNI on this CPU). qtune: ``qtune bench
  <model>_int8.onnx`` (a QDQ model runs as qtune's integer simulation, the graph
  ``model_deploy`` and the searches run).
* Rounds alternate the engines (order flipped every round) in this one script; with
  ``--before BINARY`` an older qtune build is a third contender in the same rotation. Each
  measurement: warm-up runs, then N timed runs, median; the figure is the median over rounds.
* int8 work: 2 x the multiply-accumulates of the model's int8 Conv / Gemm / MatMul layers
  (those whose weight is an int8 DequantizeLinear), from ONNX shape inference; GOP/s = that
  over qtune's (or ORT's) whole-model time, so it is a lower bound of the kernels' rate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ort_compare import (  # noqa: E402
    REPO,
    OrtRunner,
    auto_iters,
    find_workloads,
    fmt,
    load_inputs,
    qtune_measure,
)

MODELS = ["mobilenetv2_nsfw", "efficientnet_lite0", "yolox_det416", "yolov8n_320", "ppocr_v4_det640"]


def transform_flags(workloads: Path, model: str) -> list[str]:
    m = tomllib.load(open(workloads / "models" / "models.toml", "rb"))["model"][model]
    s = m["preprocess"]["model_transform"] if "preprocess" in m else m["model_transform"]
    return s.split(" (")[0].split()


def deploy(bin_dir: Path, workloads: Path, work: Path, model: str) -> Path:
    d = work / model
    d.mkdir(parents=True, exist_ok=True)
    onnx_path = d / f"{model}_int8.onnx"
    if onnx_path.is_file():
        return onnx_path
    run = lambda *a: subprocess.run([str(x) for x in a], cwd=d, check=True,  # noqa: E731
                                    stdout=subprocess.DEVNULL)
    run(bin_dir / "model_transform", "--model_name", model, "--model_def",
        workloads / "models" / f"{model}.onnx", *transform_flags(workloads, model),
        "--mlir", f"{model}.mlir")
    run(bin_dir / "run_calibration", f"{model}.mlir", "--dataset", workloads / "images" / "calib",
        "--input_num", "65", "-o", f"{model}_cali_table", "--quiet")
    run(bin_dir / "model_deploy", "--mlir", f"{model}.mlir", "--quantize", "INT8", "--processor",
        "bm1684x", "--calibration_table", f"{model}_cali_table", "--model", onnx_path.name,
        "--quiet")
    return onnx_path


def int8_macs(path: Path) -> int:
    """Multiply-accumulates of the Conv/Gemm/MatMul nodes whose weight is an int8 DQ."""
    m = shape_inference.infer_shapes(onnx.load(str(path)))
    g = m.graph
    shapes = {}
    for vi in list(g.value_info) + list(g.output) + list(g.input):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    total = 0
    for n in g.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul") or len(n.input) < 2:
            continue
        dq = producer.get(n.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            continue
        w = numpy_helper.to_array(inits[dq.input[0]])
        if w.dtype != np.int8:
            continue
        out = shapes.get(n.output[0])
        if not out or 0 in out:
            continue
        if n.op_type == "Conv":
            total += int(np.prod(out)) * int(np.prod(w.shape[1:]))
        else:
            trans_b = any(a.name == "transB" and a.i for a in n.attribute)
            k = w.shape[1] if trans_b else w.shape[0]
            total += int(np.prod(out)) * int(k)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads")
    ap.add_argument("--models", nargs="+", choices=MODELS, default=MODELS)
    ap.add_argument("--work", type=Path, default=Path("/tmp/qtune-int8-sim"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=0, help="timed runs per measurement (default: auto)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--round-seconds", type=float, default=1.0)
    ap.add_argument("--qtune", type=Path, default=REPO / "target" / "release" / "qtune")
    ap.add_argument("--before", type=Path, help="an older qtune binary, measured in the same rotation")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--markdown", type=Path, help="also append the table to this file")
    args = ap.parse_args()

    workloads = find_workloads(args.workloads)
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "qtune-cli"], cwd=REPO, check=True)
    bin_dir = args.qtune.parent
    rows = []
    for model in args.models:
        path = deploy(bin_dir, workloads, args.work, model)
        macs = int8_macs(path)
        runner = OrtRunner(path, workloads, model, 1)
        npz = args.work / model / "input_b1.npz"
        np.savez(npz, **load_inputs(workloads, model, 1))
        iters = args.iters or auto_iters(runner, args.round_seconds, args.warmup)
        sides = ["qtune", "ort"] + (["before"] if args.before else [])
        ms: dict[str, list[float]] = {s: [] for s in sides}
        for r in range(args.rounds):
            order = sides if r % 2 == 0 else list(reversed(sides))
            for side in order:
                if side == "ort":
                    ms[side].append(runner.measure(iters, args.warmup))
                else:
                    exe = args.qtune if side == "qtune" else args.before
                    ms[side].append(qtune_measure(exe, path, npz, 1, iters, args.warmup))
        med = {s: statistics.median(v) for s, v in ms.items()}
        gops = {s: 2 * macs / (med[s] * 1e-3) / 1e9 for s in sides}
        rows.append((model, macs, med, gops))
        print(f"{model}: " + ", ".join(f"{s} {fmt(med[s])} ms ({gops[s]:.1f} GOP/s)" for s in sides)
              + f" [{args.rounds} rounds x {iters} iters]", file=sys.stderr, flush=True)

    before = args.before is not None
    head = "| model | int8 GMAC | qtune ms | ORT ms | qtune/ORT | qtune GOP/s | ORT GOP/s |"
    sep = "|---|---:|---:|---:|---:|---:|---:|"
    if before:
        head += " before ms | before/now |"
        sep += "---:|---:|"
    lines = [head, sep]
    for model, macs, med, gops in rows:
        line = (f"| {model} | {macs / 1e9:.3f} | {fmt(med['qtune'])} | {fmt(med['ort'])} | "
                f"{med['qtune'] / med['ort']:.2f} | {gops['qtune']:.1f} | {gops['ort']:.1f} |")
        if before:
            line += f" {fmt(med['before'])} | {med['before'] / med['qtune']:.2f} |"
        lines.append(line)
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        load = os.getloadavg()
        with open(args.markdown, "a") as f:
            f.write(f"\n### {time.strftime('%Y-%m-%d %H:%M')} - int8 simulation vs ONNX Runtime, batch 1, "
                    f"2 threads, {args.rounds} rounds, load {load[0]:.1f}\n\n{table}\n")


if __name__ == "__main__":
    main()
