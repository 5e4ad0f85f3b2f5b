#!/usr/bin/env python3
"""NNCF 3.4 on minilm_l6_s128 with one stage changed at a time (QUALITY.md, "What NNCF's
MiniLM figure is made of"). Same data and metrics as bench/quality.py; needs `pip install nncf`.

    python3 bench/nncf_ablation.py [default] [no_sq] [minmax] [no_bc] [sq05] [--out DIR]

Each variant is `nncf.quantize(model, Dataset(100 calib sentences), subset_size=100,
model_type=TRANSFORMER, ...)`, cached in --out, run in ONNX Runtime on the 60 val sentences
against the float model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality as q  # noqa: E402


def variants():
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters as AQP
    from nncf.quantization.advanced_parameters import AdvancedSmoothQuantParameters as SQP
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet as R

    return {
        "default": {},
        "no_sq": dict(advanced_parameters=AQP(smooth_quant_alphas=SQP(matmul=-1))),
        "minmax": dict(advanced_parameters=AQP(activations_range_estimator_params=R.MINMAX)),
        "no_bc": dict(advanced_parameters=AQP(disable_bias_correction=True)),
        "sq05": dict(advanced_parameters=AQP(smooth_quant_alphas=SQP(matmul=0.5))),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*", default=["default", "no_sq", "minmax", "no_bc", "sq05"])
    ap.add_argument("--out", type=Path, default=Path("/tmp/qtune-quality/nncf-ablation"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/qtune-quality"))
    args = ap.parse_args()
    import nncf
    import onnx

    model = "minilm_l6_s128"
    cfg = q.load_cfg()[model]
    calib = q.build_inputs(model, cfg, "calib", args.cache)
    val = q.build_inputs(model, cfg, "val", args.cache)
    src = q.WORKLOADS / "models" / cfg["file"]
    m = onnx.load(str(src))
    names = [i.name for i in m.graph.input]
    n = q.n_samples(calib)
    items = [{k: calib[k][i : i + 1] for k in names} for i in range(n)]
    n_out = len(cfg["outputs"])
    ref = q.run_all(src, val, n_out, True)
    table = variants()
    args.out.mkdir(parents=True, exist_ok=True)
    for v in args.names:
        dst = args.out / f"{v}.onnx"
        if not dst.exists():
            t = time.time()
            qm = nncf.quantize(m, nncf.Dataset(items), subset_size=n,
                               model_type=nncf.ModelType.TRANSFORMER, **table[v])
            onnx.save(qm, str(dst))
            q.log(f"{v}: quantized in {time.time() - t:.1f} s")
        r = q.measure(model, cfg, ref, q.run_all(dst, val, n_out, True))
        cells = "; ".join(f"{k}: {c['mean']:.5f} / {c['min']:.5f}" for k, c in r.items())
        print(f"NNCF {v}: {cells}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
