#!/usr/bin/env python3
"""qtune's runtime profile (``--processor onnxruntime``) against NNCF and ORT ``quantize_static``.

    python3 bench/runtime_target.py --qtune minilm_l6_s128=/tmp/rt/minilm_l6_s128_rt.onnx \\
        --models minilm_l6_s128 [--out /tmp/rt/bench] [--no-nncf] [--no-ort] [--speed-rounds 5]

Every export runs in ONNX Runtime (CPU, 2 threads, default graph optimisations), batch 1, on the
validation set; the metrics are ``bench/quality.py``'s (same data, same cache, same code:
``quality.measure``). Calibration data is quality.py's too: images/calib (65 images) or
text/calib (100 sentences), in name order.

* qtune: ``--qtune MODEL=PATH``, the QDQ export of ``model_deploy --processor onnxruntime``.
* NNCF: ``nncf.quantize(onnx_model, nncf.Dataset(calib samples))`` with every option at its
  default (``model_type=nncf.ModelType.TRANSFORMER`` for minilm_l6_s128), all calibration samples
  (``subset_size`` = their count). The quantized model is cached in ``--out``.
* ORT: ``quant_pre_process`` (as quality.py) then ``quantize_static`` QDQ, ``per_channel=True``,
  QInt8 weights, QUInt8 activations (U8S8, ORT's x86 advice), ``--ort-method`` (MinMax by default;
  QUALITY.md's main tables have ORT's best over MinMax / Entropy / Percentile).
* Speed: each int8 export against its float model in the same process, rounds alternating
  (float, int8, float, int8, ...), each round runs every val sample once; the figure is the
  ratio of the medians (int8 / float: below 1 is faster). Load average printed with it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality as q  # noqa: E402


def nncf_quantize(model: str, cfg: dict, calib: dict, out: Path) -> Path:
    dst = out / f"{model}_nncf.onnx"
    if dst.exists():
        return dst
    import nncf
    import onnx

    src = q.WORKLOADS / "models" / cfg["file"]
    m = onnx.load(str(src))
    names = [i.name for i in m.graph.input]
    n = q.n_samples(calib)
    items = [{k: calib[k][i : i + 1] for k in names if k in calib} for i in range(n)]
    kw = {"subset_size": n}
    if q.TASK[model] == "embedding":
        kw["model_type"] = nncf.ModelType.TRANSFORMER
    qm = nncf.quantize(m, nncf.Dataset(items), **kw)
    tmp = dst.with_suffix(".tmp")
    onnx.save(qm, str(tmp))
    os.replace(tmp, dst)
    return dst


def ort_quantize(model: str, cfg: dict, calib: dict, out: Path, method: str) -> Path:
    dst = out / f"{model}_ort_{method}.onnx"
    if dst.exists():
        return dst
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    src = q.WORKLOADS / "models" / cfg["file"]
    qdir = out / f"{model}_ortpre"
    qdir.mkdir(parents=True, exist_ok=True)
    pre, _notes = q.pre_process(model, src, qdir, False)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= q.n_samples(calib):
                return None
            d = {k: v[self.i : self.i + 1] for k, v in calib.items()}
            self.i += 1
            return d

    tmp = dst.with_suffix(".tmp.onnx")
    quantize_static(str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method))
    os.replace(tmp, dst)
    return dst


def time_pair(float_path: Path, int8_path: Path, val: dict, rounds: int) -> dict:
    sessions = [q.make_session(p, True) for p in (float_path, int8_path)]
    metas = [s.get_inputs() for s in sessions]
    n = q.n_samples(val)
    times: list[list[float]] = [[], []]
    for r in range(rounds + 1):
        for k, s in enumerate(sessions):
            t0 = time.perf_counter()
            for i in range(n):
                feed = {m.name: val[m.name][i : i + 1].astype(q.ORT_DTYPE.get(m.type) or val[m.name].dtype,
                                                             copy=False) for m in metas[k]}
                s.run(None, feed)
            if r > 0:  # round 0 warms up
                times[k].append((time.perf_counter() - t0) / n)
    fm, im = statistics.median(times[0]), statistics.median(times[1])
    return {"float_ms": fm * 1e3, "int8_ms": im * 1e3, "ratio": im / fm, "load": os.getloadavg()[0]}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(q.ALL_MODELS))
    ap.add_argument("--qtune", action="append", default=[], metavar="MODEL=PATH")
    ap.add_argument("--out", type=Path, default=Path("/tmp/qtune-quality/runtime-target"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/qtune-quality"))
    ap.add_argument("--no-nncf", action="store_true")
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--ort-method", default="MinMax", choices=["MinMax", "Entropy", "Percentile"])
    ap.add_argument("--speed-rounds", type=int, default=0, help="0: no timing")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    qt = {}
    for s in args.qtune:
        k, _, v = s.partition("=")
        qt[k] = Path(v)
    cfgs = q.load_cfg()
    results = []
    for model in args.models.split(","):
        cfg = cfgs[model]
        src = q.WORKLOADS / "models" / cfg["file"]
        calib = q.build_inputs(model, cfg, "calib", args.cache)
        val = q.build_inputs(model, cfg, "val", args.cache)
        ref = q.run_all(src, val, len(cfg["outputs"]), True)
        variants = []
        if model in qt:
            variants.append(("qtune onnxruntime", lambda m=model: qt[m]))
        if not args.no_nncf:
            variants.append(("NNCF", lambda m=model: nncf_quantize(m, cfg, calib, args.out)))
        if not args.no_ort:
            variants.append((f"ORT {args.ort_method} u8", lambda m=model: ort_quantize(m, cfg, calib, args.out, args.ort_method)))
        for name, make in variants:
            row = {"model": model, "variant": name}
            try:
                path = make()
                got = q.run_all(path, val, len(cfg["outputs"]), True)
                row["metrics"] = {k: q.cell_text(c) for k, c in q.measure(model, cfg, ref, got).items()}
                if args.speed_rounds:
                    row["speed"] = time_pair(src, path, val, args.speed_rounds)
            except Exception as e:  # noqa: BLE001  (recorded, not fatal: this is a benchmark)
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            q.log(json.dumps(row))
            results.append(row)
    print("| model | variant | " + " | ".join(["metric 1", "metric 2", "int8 / float time (2 threads)"]) + " |")
    print("|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['model']} | {r['variant']} | {q.md(r['error'])} | | |")
            continue
        cells = [f"{k}: {v}" for k, v in r["metrics"].items()]
        sp = r.get("speed")
        t = f"{sp['int8_ms']:.2f} / {sp['float_ms']:.2f} ms = {sp['ratio']:.2f}x (load {sp['load']:.1f})" if sp else "-"
        print(f"| {r['model']} | {r['variant']} | " + " | ".join(q.md(c) for c in cells) + f" | {t} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
