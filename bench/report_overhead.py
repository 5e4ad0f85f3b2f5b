#!/usr/bin/env python3
"""Time model_deploy on minilm_l6_s128 with and without `--report`, for one or two builds,
alternating the variants in every round (BENCHMARKS.md, "Reports").

    python3 bench/report_overhead.py WORKDIR ROUNDS LABEL=BIN_DIR [LABEL=BIN_DIR ...]

WORKDIR holds minilm.mlir (model_transform with --test_result minilm_top_outputs.npz),
minilm_cali_table, minilm_in_f32.npz (BENCHMARKS.md gives the commands). Prints per variant the
median wall time (time.perf_counter) and CPU time (the children's rusage), and the time the
report adds.
"""

import os
import resource
import statistics
import subprocess
import sys
import time

BASE = ["--mlir", "minilm.mlir", "--quantize", "INT8", "--processor", "bm1684x",
        "--calibration_table", "minilm_cali_table", "--asymmetric", "--matmul_perchannel",
        "--test_input", "minilm_in_f32.npz", "--test_reference", "minilm_top_outputs.npz",
        "--tolerance", "0.5,0.0", "--model", "minilm_int8.onnx", "--quiet"]


def main() -> int:
    work, rounds = sys.argv[1], int(sys.argv[2])
    builds = dict(a.split("=", 1) for a in sys.argv[3:])
    res: dict[str, list[tuple[float, float]]] = {}
    for _ in range(rounds):
        for label, bin_dir in builds.items():
            for report in (False, True):
                cmd = [os.path.join(bin_dir, "model_deploy")] + BASE
                if report:
                    cmd += ["--report", "r.html"]
                u0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                t = time.perf_counter()
                p = subprocess.run(cmd, cwd=work, capture_output=True)
                wall = time.perf_counter() - t
                u1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                if p.returncode != 0:
                    sys.exit(p.stderr.decode())
                cpu = (u1.ru_utime - u0.ru_utime) + (u1.ru_stime - u0.ru_stime)
                res.setdefault(f"{label} {'with' if report else 'without'}", []).append((wall, cpu))
    for k, v in res.items():
        print(f"{k} --report: wall {1000 * statistics.median(w for w, _ in v):.1f} ms, "
              f"CPU {1000 * statistics.median(c for _, c in v):.1f} ms ({len(v)} runs)")
    for label in builds:
        no = statistics.median(w for w, _ in res[f"{label} without"])
        yes = statistics.median(w for w, _ in res[f"{label} with"])
        print(f"{label}: the report adds {1000 * (yes - no):.1f} ms = {100 * (yes - no) / no:.1f} %")
    print("load average", os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
