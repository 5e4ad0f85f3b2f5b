#!/usr/bin/env python3
"""Benchmark: qtune `run_calibration` vs ONNX Runtime's static-quantization calibration step.

    python3 bench/ort_calibration.py                       # build qtune, 3 rounds, both models
    python3 bench/ort_calibration.py --rounds 1 --markdown bench/calibration.md
    python3 bench/ort_calibration.py --no-big               # skip the 1,000-sample RSS check

This is a benchmark, not a test: it never fails on a slow result (it exits non-zero only when a
run itself fails).

Method
------
* Models: mobilenetv2_nsfw and efficientnet_lite0 (``--models`` to choose) from
  ``../shared/workloads/models``.
* Samples: the first ``--samples`` (64) images of ``../shared/workloads/images/calib`` in name
  order. Each is preprocessed ONCE, by the Python reference
  ``../shared/workloads/tools/preprocess.py`` with the model's ``models.toml`` preprocessing, and
  written as ``<work>/<model>/inputs/NNN.npz`` keyed by the model's input name. Both engines get
  exactly these arrays: qtune through a ``--data_list`` file of the npz paths, ONNX Runtime
  through a ``CalibrationDataReader`` over the same arrays (loaded into memory before timing).
  So preprocessing is identical by construction and its cost (JPEG decode, resize) is left out
  of both figures.
* qtune: ``model_transform`` (flags from ``models.toml``) once, outside timing, then per run
  ``target/release/run_calibration MODEL.mlir --data_list LIST --cali_method kl|max --threads 2
  --no_time -q -o TABLE`` under ``/usr/bin/time -v``: the figure is the whole process wall time
  (startup, model load, npz reads, statistics, thresholds, and for kl the default tuning on 5
  samples, ``--tune_num 5`` as TPU-MLIR), peak RSS is ``Maximum resident set size``.
* ONNX Runtime (the installed ``onnxruntime``, CPU): the calibration part of
  ``quantize_static``: ``create_calibrator(model, None, augmented_model_path=<tmp>,
  calibrate_method=Entropy|MinMax)`` (default options, as ``quantize_static`` passes them:
  every float tensor is calibrated; Entropy with its 128 bins), ``collect_data(reader)``,
  ``compute_data()``. Each ORT run is a fresh child process (``python3 THIS --ort-child ...``)
  whose figure is the time from ``create_calibrator`` to the end of ``compute_data`` (the
  model copy, graph augmentation and session creation are inside, as they are in
  ``quantize_static``; reading the npz files is not), peak RSS from ``os.wait4`` (the child's
  own ``ru_maxrss``). ORT's session uses its default intra-op threads (one per core: 2 here).
* Alternation: per model and per pair (kl vs Entropy, max vs MinMax) the two engines run
  alternately ``--rounds`` times (order flipped every round); kl runs twice per round, with
  the default tuning and with ``--tune_num 0`` (ORT's calibration step does no tuning); the table reports the median time
  and the largest peak RSS over rounds. Ratio = ORT time / qtune time (higher is better for
  qtune). Targets (issue 4): kl >= 10x, max >= 3x, qtune peak RSS < 1 GB with 1,000 samples.
* 1,000-sample check (``--big-samples``): qtune kl on a data list that repeats the 64 npz files
  to 1,000 lines, under ``/usr/bin/time -v``; reports time and peak RSS.
* MinMax agreement (acceptance of issue 4): for the last MinMax and qtune max run of each model,
  ``max(|min|, |max|)`` of every ORT tensor range is compared with the qtune table row of the
  same name; the table reports the tensors matched and the largest relative difference.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKLOADS = (REPO / ".." / "shared" / "workloads").resolve()
DEFAULT_MODELS = ["mobilenetv2_nsfw", "efficientnet_lite0"]
THREADS = 2


# ---------------------------------------------------------------------------------------------
# ORT child: one calibration run, prints "seconds N_tensors" and writes the ranges to a file.
# ---------------------------------------------------------------------------------------------
def ort_child(model: str, method: str, list_file: str, ranges_out: str) -> None:
    import numpy as np
    from onnxruntime.quantization.calibrate import (
        CalibrationDataReader,
        CalibrationMethod,
        create_calibrator,
    )

    files = [line.strip() for line in Path(list_file).read_text().splitlines() if line.strip()]
    feeds = []
    for f in files:
        with np.load(f) as z:
            feeds.append({k: z[k] for k in z.files})

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    cm = {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax}[method]
    with tempfile.TemporaryDirectory(prefix="ortcal") as tmp:
        t0 = time.perf_counter()
        cal = create_calibrator(
            Path(model), None, augmented_model_path=str(Path(tmp) / "augmented_model.onnx"),
            calibrate_method=cm,
        )
        cal.collect_data(Reader())
        ranges = cal.compute_data()
        dt = time.perf_counter() - t0
    items = list(ranges.items())
    with open(ranges_out, "w") as fh:
        for name, rng in items:
            lo, hi = (float(np.asarray(v).reshape(-1)[0]) for v in rng.range_value)
            fh.write(f"{name} {lo!r} {hi!r}\n")
    print(f"{dt:.6f} {len(items)}")


def raise_if(rc: int, cmd, err: str) -> None:
    if rc != 0:
        sys.stderr.write(err)
        raise SystemExit(f"command failed ({rc}): {shlex.join(map(str, cmd))}")


def run_child_with_rusage(cmd: list[str]) -> tuple[str, str, int]:
    """Runs cmd, returns (stdout, stderr, peak RSS KiB of that child alone, via os.wait4)."""
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read().decode(), fe.read().decode()
    raise_if(p.returncode, cmd, err)
    return out, err, ru.ru_maxrss  # Linux: KiB


def ort_run(model: Path, method: str, list_file: Path, ranges_out: Path) -> tuple[float, int]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--ort-child", str(model), method,
           str(list_file), str(ranges_out)]
    out, _, rss = run_child_with_rusage(cmd)
    return float(out.strip().splitlines()[-1].split()[0]), rss


# ---------------------------------------------------------------------------------------------
# qtune
# ---------------------------------------------------------------------------------------------
def qtune_run(mlir: Path, list_file: Path, method: str, table: Path,
              extra: list[str] | None = None, bin_dir: Path | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS KiB) of one run_calibration process under /usr/bin/time -v."""
    bin_dir = bin_dir or REPO / "target" / "release"
    cmd = ["/usr/bin/time", "-v", str(bin_dir / "run_calibration"), str(mlir),
           "--data_list", str(list_file), "--cali_method", method, "--threads", str(THREADS),
           "--no_time", "-q", "-o", str(table)] + (extra or [])
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=mlir.parent)
    dt = time.perf_counter() - t0
    raise_if(p.returncode, cmd, p.stderr)
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    return dt, int(m.group(1)) if m else -1


def read_table(path: Path) -> dict[str, float]:
    rows = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        parts = line.split()
        if len(parts) == 4:
            rows[parts[0]] = float(parts[1])
    return rows


def compare_minmax(onnx_path: Path, table: Path, ranges: Path) -> tuple[int, int, float]:
    """(matched, ORT tensors, max relative diff) of max(|min|,|max|) vs the qtune max table.

    qtune rows are keyed by the .mlir op names, which model_transform builds as
    `<output tensor>_<OpType>` (graph inputs keep their name)."""
    import onnx

    # ONNX tensor -> TPU-MLIR op name (as crates/qtune-cli/tests/ort_minmax.py): a Conv
    # followed by a BatchNormalization is one Conv keeping the Conv's name, whose value is the
    # BatchNormalization's output; the Conv's own output has no row. A fused activation's
    # output is `<its output>_<Relu|Clip>`; the tensor before it has no row.
    model = onnx.load(str(onnx_path), load_external_data=False)
    to_op = {i.name: i.name for i in model.graph.input}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for i in node.input:
            readers[i] = readers.get(i, 0) + 1
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        for o in node.output:
            to_op[o] = f"{o}_{node.op_type}"
    for node in model.graph.node:
        prod = producer.get(node.input[0]) if node.input else None
        if (node.op_type == "BatchNormalization" and prod is not None
                and prod.op_type == "Conv" and readers.get(node.input[0]) == 1):
            to_op[node.output[0]] = f"{node.input[0]}_Conv"
            to_op[node.input[0]] = None
    q = read_table(table)
    matched, total, worst = 0, 0, 0.0
    for line in ranges.read_text().splitlines():
        name, lo, hi = line.split()
        total += 1
        key = name if name in q else to_op.get(name)
        if key not in q:
            continue
        name = key
        ort_th = max(abs(float(lo)), abs(float(hi)))
        matched += 1
        denom = max(abs(ort_th), 1e-30)
        worst = max(worst, abs(q[name] - ort_th) / denom)
    return matched, total, worst


# ---------------------------------------------------------------------------------------------
# setup
# ---------------------------------------------------------------------------------------------
def transform(model: str, cfg: dict, onnx_path: Path, d: Path, bin_dir: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    mlir = d / f"{model}.mlir"
    if not mlir.exists():
        flags = shlex.split(cfg["preprocess"]["model_transform"])
        cmd = [str(bin_dir / "model_transform"), "--model_name", model,
               "--model_def", str(onnx_path), "--mlir", str(mlir)] + flags
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=d)
        raise_if(p.returncode, cmd, p.stderr)
    return mlir


def prepare(model: str, work: Path, samples: int, big: int) -> tuple[Path, Path, Path, Path]:
    """model_transform + preprocessed npz inputs; returns (onnx, mlir, list, big list)."""
    import numpy as np
    sys.path.insert(0, str(WORKLOADS / "tools"))
    from preprocess import load_models_toml, preprocess_image

    cfg = load_models_toml()[model]
    onnx_path = WORKLOADS / "models" / cfg["file"]
    d = work / model
    (d / "inputs").mkdir(parents=True, exist_ok=True)
    mlir = transform(model, cfg, onnx_path, d, REPO / "target" / "release")
    images = sorted(p for p in (WORKLOADS / "images" / "calib").iterdir()
                    if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:samples]
    if len(images) < samples:
        raise SystemExit(f"only {len(images)} calibration images, {samples} asked")
    name = cfg["inputs"][0]["name"]
    files = []
    for i, img in enumerate(images):
        f = d / "inputs" / f"{i:03d}.npz"
        if not f.exists():
            np.savez(f, **{name: preprocess_image(str(img), cfg)})
        files.append(str(f))
    lst = d / "data_list.txt"
    lst.write_text("\n".join(files) + "\n")
    big_lst = d / f"data_list_{big}.txt"
    big_lst.write_text("\n".join(files[i % len(files)] for i in range(big)) + "\n")
    return onnx_path, mlir, lst, big_lst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--big-samples", type=int, default=1000)
    ap.add_argument("--no-big", action="store_true", help="skip the 1,000-sample RSS check")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--baseline", type=Path, default=None, metavar="BIN_DIR",
                    help="also time kl with another build's model_transform + run_calibration "
                         "(e.g. main's target/release), alternating with the others")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temp dir)")
    ap.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    ap.add_argument("--ort-child", nargs=4, metavar=("MODEL", "METHOD", "LIST", "OUT"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ort_child:
        ort_child(*args.ort_child)
        return
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "qtune-cli"], cwd=REPO, check=True)
    import onnxruntime

    work = args.work or Path(tempfile.mkdtemp(prefix="qtune_calbench_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    big_rows = []
    agree = []
    for model in args.models:
        onnx_path, mlir, lst, big_lst = prepare(model, work, args.samples, args.big_samples)
        for q_method, o_method, target in (("kl", "entropy", 10.0), ("max", "minmax", 3.0)):
            # qtune variants: the default run (kl is tuned on 5 samples, as in TPU-MLIR), and
            # for kl also --tune_num 0 (statistics and thresholds only: the same scope as
            # ORT's calibration step, which has no tuning).
            variants = [("", [])] + ([(" --tune_num 0", ["--tune_num", "0"])]
                                     if q_method == "kl" else [])
            if args.baseline and q_method == "kl":
                variants.append((" (baseline build)", []))
                sys.path.insert(0, str(WORKLOADS / "tools"))
                from preprocess import load_models_toml
                base_mlir = transform(model, load_models_toml()[model], onnx_path,
                                      work / model / "baseline", args.baseline)
            qt = {v: [] for v, _ in variants}
            qr = {v: [] for v, _ in variants}
            ot, orr = [], []
            table = work / model / f"qtune_{q_method}.txt"
            ranges = work / model / f"ort_{o_method}.txt"
            for r in range(args.rounds):
                runs = [("q", v, extra) for v, extra in variants] + [("o", "", [])]
                if r % 2 == 1:
                    runs.reverse()
                for who, v, extra in runs:
                    if who == "q" and v == " (baseline build)":
                        t, rss = qtune_run(base_mlir, lst, q_method,
                                           work / model / "baseline" / "table.txt", extra,
                                           args.baseline)
                        qt[v].append(t)
                        qr[v].append(rss)
                        label = f"{q_method}{v}"
                    elif who == "q":
                        t, rss = qtune_run(mlir, lst, q_method, table, extra)
                        qt[v].append(t)
                        qr[v].append(rss)
                        label = f"{q_method}{v}"
                    else:
                        t, rss = ort_run(onnx_path, o_method, lst, ranges)
                        ot.append(t)
                        orr.append(rss)
                        label = o_method
                    print(f"  {model} {label} round {r}: {t:.2f} s", file=sys.stderr)
            o_med = statistics.median(ot)
            for v, _ in variants:
                q_med = statistics.median(qt[v])
                rows.append((model, f"qtune {q_method}{v} vs ORT {o_method.capitalize()}",
                             q_med, o_med, o_med / q_med, target, max(qr[v]) / 1024,
                             max(orr) / 1024))
            if q_method == "max":
                agree.append((model, *compare_minmax(onnx_path, table, ranges)))
        if not args.no_big:
            t, rss = qtune_run(mlir, big_lst, "kl", work / model / "qtune_kl_big.txt")
            big_rows.append((model, args.big_samples, t, rss / 1024))

    lines = [
        f"### {time.strftime('%Y-%m-%d %H:%M')} - {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical CPUs, {THREADS} threads, onnxruntime {onnxruntime.__version__}, "
        f"{args.samples} samples, {args.rounds} rounds (median)",
        "",
        "| model | comparison | qtune s | ORT s | speed-up (ORT/qtune) | target | met | "
        "qtune peak RSS MB | ORT peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for model, what, q, o, ratio, target, qrss, orss in rows:
        met = "yes" if ratio >= target else "no"
        lines.append(f"| {model} | {what} | {q:.2f} | {o:.2f} | {ratio:.1f}x | {target:.0f}x | "
                     f"{met} | {qrss:.0f} | {orss:.0f} |")
    if big_rows:
        lines += ["", "| model | qtune kl, samples | time s | peak RSS MB | < 1 GB |",
                  "|---|---:|---:|---:|---|"]
        for model, n, t, rss in big_rows:
            lines.append(f"| {model} | {n} | {t:.1f} | {rss:.0f} | "
                         f"{'yes' if rss < 1024 else 'no'} |")
    if agree:
        lines += ["", "| model | max vs MinMax: tensors matched / ORT tensors | "
                  "max relative diff of max(abs(min), abs(max)) |", "|---|---:|---:|"]
        for model, matched, total, worst in agree:
            lines.append(f"| {model} | {matched} / {total} | {worst:.2e} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
