#!/usr/bin/env python3
"""Benchmark: qtune float inference vs ONNX Runtime (CPU), per image.

    python3 bench/ort_compare.py                      # build qtune, compare on the 3 default models
    python3 bench/ort_compare.py --all --markdown bench/results.md
    python3 bench/ort_compare.py --ort-only           # ONNX Runtime figures only (no qtune needed)

This is a benchmark, not a test: it never fails on a slow result.

Method
------
* Models: mobilenetv2_nsfw, efficientnet_lite0, yolox_det416 by default (``--all``: all six
  workload models, ``--models`` to choose). Input: sample 0 of the model's golden
  ``golden/<model>/input.npz``, repeated along axis 0 to the batch size.
* Threads: 2 for both (``--threads`` to change). ORT: ``intra_op_num_threads=2``, ``inter_op_num_threads=1``, sequential
  execution, default graph optimisations (``ORT_ENABLE_ALL``), CPU execution provider.
  qtune: ``--threads 2``.
* Batch 8 on ORT: the workload models have a static batch of 1, so the script makes an
  in-memory batch-8 copy of the graph (input/output dim 0 set to 8, stale ``value_info``
  dropped, and every Reshape target shape whose first element is 1 rewritten to -1, or to 8
  when the shape already has a -1). This is what a batch-8 export would give and lets ORT use batched
  kernels, which is the fair comparison with qtune running a batch of 8. The copy is checked
  before timing: each of its 8 output rows must match the batch-1 output (tolerance 1e-3
  relative to the output's max magnitude). If the rewrite fails or does not match (graphs with
  other batch-1 constants, e.g. Expand/Slice shapes), ORT falls back to 8 sequential batch-1
  runs per "batch" and the table marks that row with ``(8x b1)``.
* qtune: ``target/release/qtune bench MODEL --input IN.npz --batch B --threads 2 --iters N
  --warmup W``, which prints one JSON line with ``ms_per_batch_median`` and
  ``ms_per_image_median``. IN.npz holds exactly B rows (sample 0 repeated), same keys as the
  golden file. The script builds it first with ``cargo build --release -p qtune-cli``.
* Rounds: for every (model, batch) the two engines are measured alternately, ``--rounds``
  times (default 5), in the same process run; the order flips every round (qtune, ORT; ORT,
  qtune; ...) so neither side always runs on a warmer/cooler machine. Each measurement =
  W warm-up runs then N timed runs, median of the N. The reported figure is the median over
  rounds. ORT sessions are created once per (model, batch), outside the timing; qtune is a
  fresh process per round (its own warm-up covers that; only its printed figure is used).
* Load: the 1-minute load average when each row finishes is printed with it (the machine is
  shared; ratios measured at a load above the CPU count say little).
* Settling: before the first measurement both engines run untimed, alternately, for
  ``--settle`` seconds (default 10). On this project's VM the first seconds of a run after
  an idle spell are slower for whichever engine runs first: without it, the first model's
  first qtune round measured 3.96 ms against 2.06-2.16 ms in the next two rounds (ORT
  2.79 against 1.73-1.80), and the median of that row was the slow figure.
* N: ``--iters`` (default: auto, so that one ORT measurement takes about ``--round-seconds``,
  at least 5 runs); the same N and W are passed to qtune.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = ["mobilenetv2_nsfw", "efficientnet_lite0", "yolox_det416"]
ALL_MODELS = DEFAULT_MODELS + ["yolov8n_320", "ppocr_v4_det640", "minilm_l6_s128"]
THREADS = 2


def find_workloads(arg: str | None) -> Path:
    cands = [arg] if arg else [os.environ.get("QTUNE_WORKLOADS"), REPO / "workloads", REPO.parent / "shared" / "workloads"]
    for c in cands:
        if c and (Path(c) / "models" / "models.toml").is_file():
            return Path(c)
    sys.exit("workloads/ not found: pass --workloads or set QTUNE_WORKLOADS "
             "(scripts/fetch-workloads.sh can rebuild it)")


def load_inputs(workloads: Path, model: str, batch: int) -> dict[str, np.ndarray]:
    with np.load(workloads / "golden" / model / "input.npz") as z:
        return {k: np.ascontiguousarray(np.repeat(z[k][0:1], batch, axis=0)) for k in z.files}


# ---------------------------------------------------------------- ONNX Runtime side

def session_options() -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # graph_optimization_level left at its default (ORT_ENABLE_ALL)
    return so


def make_session(model_bytes: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model_bytes, sess_options=session_options(),
                                providers=["CPUExecutionProvider"])


def _shape_tensors(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """name -> TensorProto for initializers and Constant node outputs."""
    out = {t.name: t for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    out[n.output[0]] = a.t
    return out


def rebatch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    init_names = {t.name for t in g.initializer}
    for vi in list(g.input) + list(g.output):
        if vi.name in init_names:
            continue
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = batch
    del g.value_info[:]
    consts = _shape_tensors(g)
    rewritten: set[str] = set()
    for n in g.node:
        if n.op_type != "Reshape" or len(n.input) < 2 or n.input[1] in rewritten:
            continue
        t = consts.get(n.input[1])
        if t is None:
            continue
        shape = onnx.numpy_helper.to_array(t).copy()
        if shape.ndim == 1 and shape.size > 0 and shape[0] == 1:
            # -1 = infer (the batch; also right for a constant reshaped to [1, C, 1, 1]);
            # if another dim is already -1, write the batch size itself.
            shape[0] = batch if (shape[1:] == -1).any() else -1
            t.CopyFrom(onnx.numpy_helper.from_array(shape.astype(np.int64), t.name))
            rewritten.add(n.input[1])
    return m


def check_rebatched(sess_b: ort.InferenceSession, sess_1: ort.InferenceSession,
                    feeds_1: dict, feeds_b: dict, batch: int) -> str | None:
    try:
        outs_b = sess_b.run(None, feeds_b)
    except Exception as e:  # noqa: BLE001 - any ORT failure means "fall back"
        return f"batch-{batch} copy fails to run: {str(e).splitlines()[0][:200]}"
    outs_1 = sess_1.run(None, feeds_1)
    for ob, o1 in zip(outs_b, outs_1):
        if ob.shape[0] != batch or ob.shape[1:] != o1.shape[1:]:
            return f"output shape {ob.shape} vs batch-1 {o1.shape}"
        tol = 1e-3 * max(1.0, float(np.abs(o1).max()))
        diff = float(np.abs(ob.astype(np.float64) - o1.astype(np.float64)).max())
        if diff > tol:
            return f"batch-{batch} rows differ from batch 1 by {diff:.3g}"
    return None


class OrtRunner:
    """One (model, batch) on ORT: a batched session, or batch-1 runs repeated `batch` times."""

    def __init__(self, model_path: Path, workloads: Path, model: str, batch: int):
        self.batch = batch
        base = onnx.load(str(model_path))
        self.sess_1 = make_session(base.SerializeToString())
        self.feeds_1 = load_inputs(workloads, model, 1)
        self.mode = "batched"
        self.note = ""
        if batch == 1:
            self.sess, self.feeds = self.sess_1, self.feeds_1
            return
        feeds_b = load_inputs(workloads, model, batch)
        try:
            sess_b = make_session(rebatch(base, batch).SerializeToString())
            why = check_rebatched(sess_b, self.sess_1, self.feeds_1, feeds_b, batch)
        except Exception as e:  # noqa: BLE001
            why = f"batch-{batch} copy rejected by ORT: {str(e).splitlines()[0][:200]}"
        if why is None:
            self.sess, self.feeds = sess_b, feeds_b
        else:
            self.mode = "loop"
            self.note = why
            self.sess, self.feeds = self.sess_1, self.feeds_1

    def run_once(self) -> None:
        if self.mode == "loop":
            for _ in range(self.batch):
                self.sess.run(None, self.feeds)
        else:
            self.sess.run(None, self.feeds)

    def measure(self, iters: int, warmup: int) -> float:
        """Median ms per batch."""
        for _ in range(warmup):
            self.run_once()
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            self.run_once()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


# ---------------------------------------------------------------- qtune side

def build_qtune() -> None:
    print("building: cargo build --release -p qtune-cli", file=sys.stderr, flush=True)
    subprocess.run(["cargo", "build", "--release", "-p", "qtune-cli"], cwd=REPO, check=True)


def qtune_measure(qtune: Path, model_path: Path, npz: Path, batch: int, iters: int, warmup: int) -> float:
    cmd = [str(qtune), "bench", str(model_path), "--input", str(npz), "--batch", str(batch),
           "--threads", str(THREADS), "--iters", str(iters), "--warmup", str(warmup)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr.strip()}")
    for line in reversed(res.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            rec = json.loads(line)
            if rec.get("batch", batch) != batch:
                raise RuntimeError(f"qtune reported batch {rec.get('batch')} for --batch {batch}")
            return float(rec["ms_per_batch_median"])
    raise RuntimeError(f"no JSON line in qtune output:\n{res.stdout}")


# ---------------------------------------------------------------- driver

def auto_iters(runner: OrtRunner, round_seconds: float, warmup: int) -> int:
    for _ in range(max(1, warmup)):
        runner.run_once()
    t0 = time.perf_counter()
    runner.run_once()
    one = time.perf_counter() - t0
    return max(5, min(500, int(round_seconds / max(one, 1e-6))))


def fmt(x: float | None) -> str:
    return "-" if x is None else (f"{x:.2f}" if x >= 1 else f"{x:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", help="workloads/ tree (default: $QTUNE_WORKLOADS, ./workloads, ../shared/workloads)")
    sel = ap.add_mutually_exclusive_group()
    sel.add_argument("--models", nargs="+", choices=ALL_MODELS, help=f"default: {' '.join(DEFAULT_MODELS)}")
    sel.add_argument("--all", action="store_true", help="all six workload models")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--rounds", type=int, default=5, help="alternating (qtune, ORT) rounds (default 5)")
    ap.add_argument("--iters", type=int, default=0, help="timed runs per measurement (default: auto)")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up runs per measurement (default 3)")
    ap.add_argument("--threads", type=int, default=2,
                    help="threads of both engines (default 2; 1 measures the kernels alone, without "
                         "the second vCPU, whose speed on this project's shared VM varies from "
                         "minute to minute)")
    ap.add_argument("--settle", type=float, default=10.0,
                    help="seconds both engines run untimed before the first measurement (default 10)")
    ap.add_argument("--round-seconds", type=float, default=1.0,
                    help="target duration of one ORT measurement when --iters is auto (default 1.0)")
    ap.add_argument("--ort-only", action="store_true", help="measure ONNX Runtime only (no qtune build or run)")
    ap.add_argument("--qtune", type=Path, default=REPO / "target" / "release" / "qtune", help="qtune binary")
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build first")
    ap.add_argument("--markdown", type=Path, help="also append the table (with a header) to this file")
    args = ap.parse_args()
    global THREADS
    THREADS = args.threads

    workloads = find_workloads(args.workloads)
    models = ALL_MODELS if args.all else (args.models or DEFAULT_MODELS)
    if not args.ort_only:
        if not args.no_build:
            build_qtune()
        if not args.qtune.is_file():
            sys.exit(f"{args.qtune} not found")

    rows = []
    notes = []
    with tempfile.TemporaryDirectory(prefix="ort_compare_") as tmp:
        for model in models:
            model_path = workloads / "models" / f"{model}.onnx"
            for batch in args.batches:
                runner = OrtRunner(model_path, workloads, model, batch)
                if runner.note:
                    notes.append(f"{model} batch {batch}: ORT runs {batch} x batch 1 ({runner.note})")
                npz = Path(tmp) / f"{model}_b{batch}.npz"
                np.savez(npz, **load_inputs(workloads, model, batch))
                iters = args.iters or auto_iters(runner, args.round_seconds, args.warmup)
                if not rows and not args.ort_only:
                    settle_until = time.perf_counter() + args.settle
                    while time.perf_counter() < settle_until:
                        runner.measure(iters, args.warmup)
                        qtune_measure(args.qtune, model_path, npz, batch, iters, args.warmup)
                q_ms, o_ms = [], []
                for r in range(args.rounds):
                    order = ("qtune", "ort") if r % 2 == 0 else ("ort", "qtune")
                    for side in order:
                        if side == "ort":
                            o_ms.append(runner.measure(iters, args.warmup))
                        elif not args.ort_only:
                            q_ms.append(qtune_measure(args.qtune, model_path, npz, batch, iters, args.warmup))
                o_img = statistics.median(o_ms) / batch
                q_img = statistics.median(q_ms) / batch if q_ms else None
                row = {"model": model, "batch": batch, "qtune": q_img, "ort": o_img,
                       "ratio": (q_img / o_img) if q_img is not None else None,
                       "ort_mode": runner.mode, "iters": iters,
                       "ort_spread": (min(o_ms) / batch, max(o_ms) / batch)}
                row["load"] = os.getloadavg()[0]
                rows.append(row)
                print(f"{model} b{batch}: ORT {fmt(o_img)} ms/img"
                      + (f", qtune {fmt(q_img)} ms/img" if q_img is not None else "")
                      + f" ({args.rounds} rounds x {iters} iters, load average {row['load']:.1f})",
                      file=sys.stderr, flush=True)

    lines = ["| model | batch | qtune ms/img | ORT ms/img | ratio (qtune/ORT) | load avg |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        b = f"{r['batch']}" + (" (8x b1)" if r["ort_mode"] == "loop" else "")
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"| {r['model']} | {b} | {fmt(r['qtune'])} | {fmt(r['ort'])} | {ratio} "
                     f"| {r['load']:.1f} |")
    table = "\n".join(lines)
    print(table)
    for n in notes:
        print(f"\nnote: {n}")

    if args.markdown:
        cpu = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        head = (f"\n### {time.strftime('%Y-%m-%d %H:%M')} - {cpu}, {os.cpu_count()} logical CPUs, "
                f"{THREADS} threads, onnxruntime {ort.__version__}, {args.rounds} rounds"
                + (", ORT only" if args.ort_only else "") + "\n\n")
        tail = "".join(f"\n* {n}" for n in notes)
        with open(args.markdown, "a") as f:
            f.write(head + table + "\n" + (tail + "\n" if tail else ""))


if __name__ == "__main__":
    main()
