#!/usr/bin/env python3
"""Quantization quality on the validation sets: float vs int8, everything run in ONNX Runtime.

    python3 bench/quality.py                                   # ORT quantize_static only, six models
    python3 bench/quality.py --qtune yolox_det416=out/yolox_int8.onnx --models yolox_det416
    python3 bench/quality.py --qtune efficientnet_lite0=a.onnx --qtune minilm_l6_s128=b.onnx --markdown

This measures, it never fails on a bad result (it exits non-zero only on a usage error or when
the float reference itself cannot run). Failures of one quantization run are recorded in the
table instead.

Method
------
* Data: ``../shared/workloads``. Images: ``images/calib`` (65) for calibration, ``images/val``
  (32) for validation, both in name order, preprocessed once by the workloads' reference
  ``tools/preprocess.py`` with the model's ``models.toml`` table. MiniLM: ``text/calib`` (100)
  and ``text/val`` (60) .npz files (keys = input names). The stacked tensors are cached as
  ``<cache>/<model>/{calib,val}.npz``.
* Float reference: the original ONNX file in ORT (CPU, 2 intra-op threads, default graph
  optimisations), batch 1, each val sample.
* ORT: ``quant_pre_process`` (shape inference + ORT optimisation; if it fails the original file
  is used and the table says so), then ``quantize_static`` with ``QuantFormat.QDQ``,
  ``per_channel=True``, weights QInt8, all other options at their defaults, once per
  ``calibrate_method`` in MinMax, Entropy, Percentile and per activation type: ``s8`` (QInt8
  activations, the S8S8 configuration) and ``u8`` (QUInt8 activations, U8S8, ORT's x86 advice).
  The calibration data reader serves the calib tensors above. Calibration runs once per
  (model, method): ``quantize_static(calibration_cache_path=...)`` saves the tensor ranges and
  the second activation type reuses them. Every (model, method) runs in a child process (a
  crash or MemoryError is recorded, not fatal) under an address-space limit (``--mem-limit-gb``),
  and its wall time and peak RSS are reported.
* Memory: ORT's histogram calibrators (Entropy, Percentile) keep every intermediate tensor of
  every sample in memory before building histograms (about 600 MB per sample for
  ppocr_v4_det640). When the estimate (float tensors of the pre-processed graph, from ONNX
  shape inference, times the number of samples) exceeds ``--calib-mem-gb``, the calibration is
  done in chunks with quantize_static's own ``CalibStridedMinMax`` option (stride = the largest
  divisor of the sample count that fits); the histograms are then merged chunk by chunk, which
  can differ slightly from a single pass. MinMax uses ``CalibMaxIntermediateOutputs`` instead
  (same result as a single pass). The tables mark strided runs.
* qtune: ``--qtune MODEL=PATH`` is qtune's exported QDQ ONNX (``model_deploy``), run in ORT on
  the same val tensors with the same session options.
* Metrics, per val sample against the float output, then aggregated over the val set:
  output cosine (flattened main output, float64; mean and min), and per task
  - classifiers: top-1 agreement (argmax equal), count / total;
  - detectors: boxes decoded and NMS-ed as ``crates/qtune-cli/tests/detect_ref.py`` does
    (conf 0.25, IoU 0.45); a float box is matched when an int8 box of the same class has
    IoU >= 0.5 with it (greedy, one-to-one, float boxes in score order); matched / float boxes,
    and the number of int8 boxes. Boxes are compared in network-input pixels;
  - ppocr_v4_det640: cosine of the probability map only;
  - minilm_l6_s128: cosine of ``sentence_embedding`` and of ``last_hidden_state`` (flattened,
    padding positions included, as the output is).
  "ORT best" is the best value of each row over every ORT variant (method x activation type),
  so it is the bar qtune has to reach on every row.
* Deterministic: sorted file lists, no sampling; ORT calibration has no randomness.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
WORKLOADS = (REPO / ".." / "shared" / "workloads").resolve()
sys.path.insert(0, str(WORKLOADS / "tools"))
sys.path.insert(0, str(REPO / "crates" / "qtune-cli" / "tests"))

ALL_MODELS = [
    "efficientnet_lite0",
    "mobilenetv2_nsfw",
    "yolox_det416",
    "yolov8n_320",
    "ppocr_v4_det640",
    "minilm_l6_s128",
]
TASK = {
    "efficientnet_lite0": "classifier",
    "mobilenetv2_nsfw": "classifier",
    "yolox_det416": "detector",
    "yolov8n_320": "detector",
    "ppocr_v4_det640": "map",
    "minilm_l6_s128": "embedding",
}
METHODS = ["MinMax", "Entropy", "Percentile"]
ACT_TYPES = ["s8", "u8"]
THREADS = 2
CONF, NMS_IOU, MATCH_IOU = 0.25, 0.45, 0.5
RECIPE = 2  # bump when the ORT quantization recipe changes: the cached ORT models are redone


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Data: preprocessed calib / val tensors, stacked on axis 0, cached as npz.
# ---------------------------------------------------------------------------------------------
def load_cfg():
    from preprocess import load_models_toml

    return load_models_toml()


def sample_files(model: str, split: str) -> list[Path]:
    if TASK[model] == "embedding":
        return sorted((WORKLOADS / "text" / split).glob("*.npz"))
    return sorted(p for p in (WORKLOADS / "images" / split).iterdir() if p.is_file())


def build_inputs(model: str, cfg: dict, split: str, cache: Path) -> dict[str, np.ndarray]:
    """{input name: array [N, ...]} for one split; row i is sample i (batch-1 slice [i:i+1])."""
    out = cache / model / f"{split}.npz"
    files = sample_files(model, split)
    if out.exists():
        with np.load(out) as z:
            d = {k: z[k] for k in z.files}
        if all(len(v) == len(files) for v in d.values()):
            return d
    from preprocess import preprocess_image

    names = [i["name"] for i in cfg["inputs"]]
    rows = {n: [] for n in names}
    for f in files:
        if TASK[model] == "embedding":
            with np.load(f) as z:
                for n in names:
                    rows[n].append(z[n])
        else:
            rows[names[0]].append(preprocess_image(str(f), cfg))
    d = {n: np.concatenate(v, axis=0) for n, v in rows.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **d)
    return d


def n_samples(d: dict[str, np.ndarray]) -> int:
    return len(next(iter(d.values())))


# ---------------------------------------------------------------------------------------------
# Running a model in ORT over the val tensors.
# ---------------------------------------------------------------------------------------------
def make_session(path: Path, optimize: bool):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


ORT_DTYPE = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def run_all(path: Path, inputs: dict[str, np.ndarray], n_out: int, optimize: bool) -> list[list[np.ndarray]]:
    """outputs[k][i] = output k of val sample i, in the session's output order.

    Outputs are taken BY POSITION: qtune's exported models keep the original input names but
    name their outputs after TPU-MLIR ops (``logits_Gemm``, ``output_Transpose``,
    ``dense_3_Softmax``, ...); their order is the original model's output order.
    """
    sess = make_session(path, optimize)
    feeds_meta = sess.get_inputs()
    missing = [m.name for m in feeds_meta if m.name not in inputs]
    if missing:
        raise ValueError(f"{path.name}: inputs {missing} not in the val data ({sorted(inputs)})")
    outs = sess.get_outputs()
    if len(outs) < n_out:
        raise ValueError(f"{path.name}: {len(outs)} outputs, the float model has {n_out}")
    res: list[list[np.ndarray]] = [[] for _ in range(n_out)]
    for i in range(n_samples(inputs)):
        feed = {m.name: inputs[m.name][i : i + 1].astype(ORT_DTYPE.get(m.type, None) or inputs[m.name].dtype, copy=False) for m in feeds_meta}
        got = sess.run([o.name for o in outs[:n_out]], feed)
        for k in range(n_out):
            res[k].append(np.asarray(got[k]))
    return res


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0 or not np.isfinite(na * nb):
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def detections(out: np.ndarray, net_h: int, net_w: int) -> list[tuple[int, np.ndarray]]:
    """[(class, box x1y1x2y2 in network pixels)] after threshold + per-class NMS, score order."""
    from detect_ref import decode, nms

    fmt = "yolox" if out.shape[2] < out.shape[1] else "yolov8"
    boxes, scores = decode(out, fmt, net_h, net_w)
    return [(c, boxes[i]) for i, c, _ in nms(boxes, scores, CONF, NMS_IOU)]


def match_boxes(ref, got) -> int:
    """Float boxes (score order) matched one-to-one by an int8 box of the same class, IoU >= 0.5."""
    from detect_ref import iou

    used = [False] * len(got)
    matched = 0
    for c, b in ref:
        best, best_j = MATCH_IOU, -1
        for j, (c2, b2) in enumerate(got):
            if used[j] or c2 != c:
                continue
            v = iou(b, b2)
            if v >= best:
                best, best_j = v, j
        if best_j >= 0:
            used[best_j] = True
            matched += 1
    return matched


def metric_rows(model: str) -> list[str]:
    return {
        "classifier": ["output cosine", "top-1 agreement"],
        "detector": ["output cosine", "boxes matched"],
        "map": ["map cosine", "map cosine, text images"],
        "embedding": ["sentence_embedding cosine", "last_hidden_state cosine"],
    }[TASK[model]]


def measure(model: str, cfg: dict, ref: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> dict:
    """{row: cell} where a cell is {"kind", values..., "text"}; see metric_rows()."""

    def cos_cell(k, keep=None):
        cs = [cosine(r, g.reshape(r.shape) if g.size == r.size else g)
              for i, (r, g) in enumerate(zip(ref[k], got[k])) if keep is None or keep[i]]
        if not cs:
            return None
        c = {"kind": "cos", "mean": float(np.mean(cs)), "min": float(np.min(cs))}
        if keep is not None:
            c["n"] = len(cs)
        return c

    task = TASK[model]
    m = {}
    if task == "embedding":
        names = [o["name"] for o in cfg["outputs"]]
        m["sentence_embedding cosine"] = cos_cell(names.index("sentence_embedding"))
        m["last_hidden_state cosine"] = cos_cell(names.index("last_hidden_state"))
    elif task == "map":
        m["map cosine"] = cos_cell(0)
        # On a photo without text the float map is ~1e-5 everywhere, below one int8 step of
        # a 0..1 output (1/255), so its int8 map is all 0 and the cosine 0: noise, not error.
        # This row keeps the val images where the float map finds text (some pixel > 0.3,
        # PaddleOCR's threshold).
        m["map cosine, text images"] = cos_cell(0, [float(r.max()) > 0.3 for r in ref[0]])
    else:
        m["output cosine"] = cos_cell(0)
    if task == "classifier":
        agree = sum(int(np.argmax(r) == np.argmax(g)) for r, g in zip(ref[0], got[0]))
        m["top-1 agreement"] = {"kind": "count", "n": agree, "total": len(ref[0])}
    elif task == "detector":
        _, _, h, w = cfg["inputs"][0]["shape"]
        n_ref = n_got = n_match = 0
        for r, g in zip(ref[0], got[0]):
            dr, dg = detections(r, h, w), detections(g.reshape(r.shape), h, w)
            n_ref, n_got = n_ref + len(dr), n_got + len(dg)
            n_match += match_boxes(dr, dg)
        m["boxes matched"] = {"kind": "count", "n": n_match, "total": n_ref, "extra": n_got}
    return m


def cell_key(c: dict) -> tuple:
    if c["kind"] == "cos":
        return (c["mean"], c["min"])
    return (c["n"] / c["total"] if c["total"] else 1.0,)


def md(text: str) -> str:
    """Safe inside a Markdown table cell."""
    return text.replace("|", "/").replace("\n", " ")


def cell_text(c: dict | None) -> str:
    if c is None:
        return "-"
    if c["kind"] == "cos":
        return f"{c['mean']:.5f} / {c['min']:.5f}" + (f" ({c['n']} images)" if "n" in c else "")
    pct = 100.0 * c["n"] / c["total"] if c["total"] else 100.0
    s = f"{c['n']}/{c['total']} ({pct:.1f}%)"
    if "extra" in c:
        s += f", {c['extra']} int8 boxes"
    return s


# ---------------------------------------------------------------------------------------------
# ORT quantize_static, in a child process per (model, method).
# ---------------------------------------------------------------------------------------------
class ArrayReader:
    """CalibrationDataReader over stacked arrays; supports set_range for CalibStridedMinMax."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays
        self.n = n_samples(arrays)
        self.set_range(0, self.n)

    def __len__(self):
        return self.n

    def set_range(self, start_index: int, end_index: int):
        self.pos, self.end = start_index, min(end_index, self.n)

    def get_next(self):
        if self.pos >= self.end:
            return None
        i = self.pos
        self.pos += 1
        return {k: v[i : i + 1] for k, v in self.arrays.items()}


def estimate_bytes_per_sample(path: Path) -> int:
    """Sum of the float tensors of the graph (ONNX shape inference): an upper bound of what a
    histogram calibrator keeps per sample."""
    import onnx
    from onnx import shape_inference

    g = shape_inference.infer_shapes(onnx.load(str(path))).graph
    total = 0
    for vi in list(g.value_info) + list(g.output):
        t = vi.type.tensor_type
        if t.elem_type != onnx.TensorProto.FLOAT:
            continue
        dims = [d.dim_value for d in t.shape.dim]
        if dims and all(d > 0 for d in dims):
            total += int(np.prod(dims)) * 4
    return total


def choose_stride(n: int, per_sample: int, budget: int) -> int | None:
    """None: one pass. Else the largest divisor of n whose chunk fits the budget."""
    if per_sample * n <= budget:
        return None
    divs = [d for d in range(1, n) if n % d == 0 and d * per_sample <= budget]
    return max(divs) if divs else 1


def calibrate_entropy_bins(job: dict, arrays: dict[str, np.ndarray], bins: int) -> None:
    """Entropy ranges with `bins` histogram bins, saved where quantize_static reads its cache.

    quantize_static cannot pass ``num_bins`` to the Entropy calibrator (its Calib* extra options
    do not include it), and with the default 128 bins = 128 quantized bins the KL search has a
    single candidate, the full range, so Entropy gives the MinMax ranges. This runs the same
    calibrator, with the same op types as quantize_static, with more bins (TensorRT uses 2048);
    quantize_static then quantizes from the cached ranges.
    """
    import tempfile

    import onnx
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data
    from onnxruntime.quantization.quant_utils import update_opset_version
    from onnxruntime.quantization.quant_utils import QuantType
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    op_types = list(set(QLinearOpsRegistry) | set(QDQRegistry))
    with tempfile.TemporaryDirectory(prefix="qtune-quality.") as tmp:
        model = update_opset_version(onnx.load(job["model_in"]), QuantType.QInt8, QuantType.QInt8)
        path = Path(tmp) / "model.onnx"
        onnx.save(model, str(path))
        cal = create_calibrator(path, op_types, augmented_model_path=str(Path(tmp) / "aug.onnx"),
                                calibrate_method=CalibrationMethod.Entropy,
                                extra_options={"num_bins": bins, "num_quantized_bins": 128})
        reader = ArrayReader(arrays)
        step = job["stride"] or len(reader)
        for start in range(0, len(reader), step):
            reader.set_range(start, start + step)
            cal.collect_data(reader)
        save_tensors_data(cal.compute_data(), Path(job["calib_cache"]))


def ort_child(job: dict) -> None:
    """Calibrate once (cached ranges), quantize for each activation type; print one JSON line."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with np.load(job["calib"]) as z:
        arrays = {k: z[k] for k in z.files}
    method = getattr(CalibrationMethod, job["method"])
    extra = {}
    if job["stride"] and job["method"] != "MinMax":
        extra["CalibStridedMinMax"] = job["stride"]
    bins = job.get("entropy_bins")
    t_bins = 0.0
    if job["method"] == "Entropy" and bins and not Path(job["calib_cache"]).exists():
        t0 = time.perf_counter()
        calibrate_entropy_bins(job, arrays, bins)
        t_bins = time.perf_counter() - t0
    result = {"times": {}}
    for act in job["acts"]:
        t0 = time.perf_counter() - t_bins  # the first type is charged the calibration
        t_bins = 0.0
        quantize_static(
            job["model_in"],
            job["outputs"][act],
            ArrayReader(arrays),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8 if act == "s8" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            extra_options=dict(extra),
            calibration_cache_path=job["calib_cache"],
        )
        result["times"][act] = time.perf_counter() - t0
    print("RESULT " + json.dumps(result), flush=True)


def ort_quantize(model: str, method: str, acts: list[str], model_in: Path, calib_npz: Path,
                 qdir: Path, stride: int | None, mem_limit: int, refresh: bool,
                 entropy_bins: int | None) -> dict:
    """-> {"files": {act: path}, "calib_quant_s", "quant_only_s", "rss_mb", "error", "cached"}."""
    if method == "MinMax":
        stride = None  # its calibrator keeps only ReduceMin/ReduceMax outputs: no memory issue
    if method != "Entropy":
        entropy_bins = None
    tag = method.lower() + (f"-b{entropy_bins}" if entropy_bins else "")
    outputs = {a: qdir / f"{tag}_{a}.onnx" for a in acts}
    meta_path = qdir / f"{tag}.json"
    calib_cache = qdir / f"{tag}_ranges.json"
    todo = [a for a in acts if refresh or not outputs[a].exists()]
    if refresh and calib_cache.exists():
        calib_cache.unlink()
    # Timing figures of an earlier run stay valid only while its calibration ranges are reused.
    meta = json.loads(meta_path.read_text()) if meta_path.exists() and calib_cache.exists() else {}
    if not todo:
        meta["cached"] = True
        meta["files"] = {a: str(p) for a, p in outputs.items()}
        return meta
    job = {
        "model_in": str(model_in), "calib": str(calib_npz), "method": method, "acts": todo,
        "outputs": {a: str(outputs[a]) for a in todo}, "calib_cache": str(calib_cache),
        "stride": stride, "entropy_bins": entropy_bins,
    }

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (mem_limit, mem_limit))

    log(f"  {model}: quantize_static {method} {'/'.join(todo)}"
        + (f" (stride {stride})" if stride else "") + " ...")
    t0 = time.perf_counter()
    with open(qdir / f"{tag}.stdout", "w+") as out, open(qdir / f"{tag}.stderr", "w+") as err_f:
        proc = subprocess.Popen([sys.executable, __file__, "--ort-child", json.dumps(job)],
                                stdout=out, stderr=err_f, text=True, preexec_fn=limit)
        # os.wait4 reaps the child and gives its own peak RSS (KiB on Linux).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        rss_mb = usage.ru_maxrss / 1024.0
        out.seek(0)
        err_f.seek(0)
        stdout, stderr = out.read(), err_f.read()
    res = None
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[7:])
    if proc.returncode != 0 or res is None:
        tail = [l for l in stderr.strip().splitlines() if l.strip()][-1:] or [f"exit {proc.returncode}"]
        err = tail[0].strip()
        if proc.returncode and proc.returncode < 0:
            err = f"killed by signal {-proc.returncode}; " + err
        log(f"  {model}: {method} FAILED after {wall:.0f} s: {err}")
        return {"error": err[:200], "wall_s": wall, "files": {}}
    times = res["times"]
    # The first activation type that ran without a cached range file did the calibration.
    first = todo[0]
    other = [times[a] for a in todo[1:]]
    meta.update({
        "wall_s": meta.get("wall_s", 0.0) + wall,
        "calib_quant_s": meta.get("calib_quant_s", times[first]),
        "quant_only_s": (min(other) if other else meta.get("quant_only_s")),
        "rss_mb": max(meta.get("rss_mb") or 0.0, rss_mb or 0.0),
        "stride": stride,
    })
    meta_path.write_text(json.dumps(meta, indent=1))
    meta["cached"] = False
    meta["files"] = {a: str(p) for a, p in outputs.items() if p.exists()}
    return meta


def pre_process(model: str, src: Path, qdir: Path, refresh: bool) -> tuple[Path, list[str]]:
    """The file quantize_static gets, once per model, and notes for the table.

    * opset < 13 (yolox_det416 is opset 11): converted to opset 13 with onnx.version_converter
      first. quantize_static 1.32 does not bump the opset for per-channel weights and writes a
      DequantizeLinear with ``axis``, which opset 11 rejects (the model then fails to load).
    * quant_pre_process (shape inference + ORT optimisation); on failure the file before it.
    """
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import quant_pre_process

    dst = qdir / "preprocessed.onnx"
    note_path = qdir / "preprocess_notes.json"
    if not refresh and note_path.exists():
        notes = json.loads(note_path.read_text())
        return (dst if dst.exists() else Path(notes["input"])), notes["notes"]
    notes: list[str] = []
    inp = src
    m = onnx.load(str(src))
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        inp = qdir / "opset13.onnx"
        onnx.save(version_converter.convert_version(m, 13), str(inp))
        notes.append(f"opset {opset} converted to 13 before quantization (per-channel QDQ needs it)")
    if dst.exists():
        dst.unlink()
    try:
        quant_pre_process(str(inp), str(dst))
    except Exception as e:  # noqa: BLE001 - any failure: quantize the file before it
        notes.append(f"quant_pre_process failed ({type(e).__name__}: {str(e)[:120]}); skipped")
        log(f"  {model}: {notes[-1]}")
    note_path.write_text(json.dumps({"input": str(inp), "notes": notes}))
    return (dst if dst.exists() else inp), notes


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def evaluate_model(model: str, cfg: dict, args, qtune_path: Path | None) -> dict:
    import onnxruntime as ort

    src = WORKLOADS / "models" / cfg["file"]
    n_out = len(cfg["outputs"])
    t0 = time.perf_counter()
    calib = build_inputs(model, cfg, "calib", args.cache)
    val = build_inputs(model, cfg, "val", args.cache)
    prep_s = time.perf_counter() - t0
    log(f"{model}: {n_samples(calib)} calib, {n_samples(val)} val samples ({prep_s:.1f} s to load)")

    t0 = time.perf_counter()
    ref = run_all(src, val, n_out, args.optimize)
    float_s = time.perf_counter() - t0
    report = {"model": model, "n_val": n_samples(val), "n_calib": n_samples(calib),
              "rows": metric_rows(model), "variants": {}, "notes": [], "float_s": float_s}

    def add_variant(name, path, extra):
        t1 = time.perf_counter()
        try:
            got = run_all(Path(path), val, n_out, args.optimize)
            m = measure(model, cfg, ref, got)
            extra["eval_s"] = time.perf_counter() - t1
            report["variants"][name] = {"metrics": m, **extra}
        except Exception as e:  # noqa: BLE001
            report["variants"][name] = {"error": f"{type(e).__name__}: {str(e)[:200]}", **extra}

    if qtune_path is not None:
        add_variant("qtune", qtune_path, {"file": str(qtune_path)})

    if not args.no_ort:
        qdir = args.ort_cache / model
        qdir.mkdir(parents=True, exist_ok=True)
        ident = f"{sha256(src)} ort {ort.__version__} calib {n_samples(calib)} recipe {RECIPE}"
        ident_path = qdir / "source.txt"
        refresh = args.refresh or not ident_path.exists() or ident_path.read_text() != ident
        model_in, notes = pre_process(model, src, qdir, refresh)
        ident_path.write_text(ident)
        report["notes"].extend(notes)
        per_sample = estimate_bytes_per_sample(model_in)
        stride = choose_stride(n_samples(calib), per_sample, int(args.calib_mem_gb * 2**30))
        report["calib_estimate_mb"] = per_sample * n_samples(calib) / 2**20
        calib_npz = args.cache / model / "calib.npz"
        for method in args.methods:
            q = ort_quantize(model, method, args.acts, model_in, calib_npz, qdir, stride,
                             int(args.mem_limit_gb * 2**30), refresh, args.entropy_bins)
            info = {k: q.get(k) for k in ("wall_s", "calib_quant_s", "quant_only_s", "rss_mb", "stride", "cached")}
            if q.get("error"):
                for act in args.acts:
                    report["variants"][f"ORT {method} {act}"] = {"error": q["error"], **info}
                continue
            for act in args.acts:
                f = q["files"].get(act)
                if f is None:
                    report["variants"][f"ORT {method} {act}"] = {"error": "no output model", **info}
                else:
                    add_variant(f"ORT {method} {act}", f, dict(info))
    return report


def best_of(report: dict, row: str, names: list[str]) -> tuple[dict | None, str | None]:
    best, best_name = None, None
    for n in names:
        v = report["variants"].get(n, {})
        c = v.get("metrics", {}).get(row)
        if c is not None and (best is None or cell_key(c) > cell_key(best)):
            best, best_name = c, n
    return best, best_name


def ort_cell(report: dict, row: str, method: str, acts: list[str]) -> str:
    """Cell of one method column: the s8 (S8S8) variant; u8 shown when it is better."""
    names = [f"ORT {method} {a}" for a in acts]
    c, n = best_of(report, row, names)
    if c is None:
        errs = [report["variants"].get(x, {}).get("error") for x in names]
        errs = [e for e in errs if e]
        return f"failed: {md(errs[0][:80])}" if errs else "-"
    s8 = report["variants"].get(f"ORT {method} s8", {}).get("metrics", {}).get(row)
    if s8 is not None and n.endswith(" u8") and cell_key(c) > cell_key(s8):
        return f"{cell_text(s8)} (u8: {cell_text(c)})"
    suffix = "" if n.endswith(" s8") else " (u8)"
    return cell_text(c) + suffix


def markdown(reports: list[dict], args, argv: list[str]) -> str:
    import onnx
    import onnxruntime as ort

    lines = []
    lines.append("| model | metric | qtune | ORT MinMax | ORT Entropy | ORT Percentile | ORT best |")
    lines.append("|---|---|---|---|---|---|---|")
    for r in reports:
        ort_names = [n for n in r["variants"] if n.startswith("ORT ")]
        for row in r["rows"]:
            q = r["variants"].get("qtune")
            if q is None:
                qt = "-"
            elif "error" in q:
                qt = f"failed: {md(q['error'][:80])}"
            else:
                qt = cell_text(q["metrics"].get(row))
            cols = [ort_cell(r, row, m, args.acts) if m in args.methods else "-" for m in METHODS]
            b, bn = best_of(r, row, ort_names)
            bt = f"{cell_text(b)} ({bn[4:]})" if b else "-"
            if q is not None and "metrics" in q and b is not None:
                qc = q["metrics"].get(row)
                if qc is not None:
                    qt += " ✓" if cell_key(qc) >= cell_key(b) else " ✗"
            lines.append(f"| {r['model']} | {row} | {qt} | " + " | ".join(cols) + f" | {bt} |")
    lines.append("")
    lines.append("Cells: cosine = mean / min over the val samples; counts = agreeing / total; "
                 "boxes = float boxes matched by a same-class int8 box with IoU >= 0.5, and the "
                 "number of int8 boxes. ORT columns are the S8S8 model (QInt8 activations and "
                 "weights); the U8S8 figure follows when it is better. ORT best = best over all "
                 "ORT variants, per row. ✓/✗: qtune at least as good as ORT best (mean cosine, "
                 "then min) or not."
                 + (f" ORT Entropy: calibrated with {args.entropy_bins} histogram bins "
                    "(--entropy-bins), then quantize_static from those ranges."
                    if args.entropy_bins else
                    " ORT Entropy is quantize_static's default (128 bins for 128 quantized "
                    "bins: the KL search has one candidate, so it gives the MinMax ranges)."))
    lines.append("")
    lines.append("ORT runs (per model and method: calibration + quantization of the first "
                 "activation type, quantization only of the second, child-process peak RSS):")
    lines.append("")
    lines.append("| model | method | calib + quantize (s) | quantize only (s) | peak RSS (MB) | chunked | note |")
    lines.append("|---|---|---|---|---|---|---|")
    for r in reports:
        for m in args.methods:
            v = next((r["variants"][f"ORT {m} {a}"] for a in args.acts if f"ORT {m} {a}" in r["variants"]), None)
            if v is None:
                continue
            cq = f"{v['calib_quant_s']:.1f}" if v.get("calib_quant_s") is not None else "-"
            qo = f"{v['quant_only_s']:.1f}" if v.get("quant_only_s") is not None else "-"
            rss = f"{v['rss_mb']:.0f}" if v.get("rss_mb") else "-"
            st = f"stride {v['stride']}" if v.get("stride") else "no"
            note = "failed: " + md(v["error"][:100]) if "error" in v else ("cached" if v.get("cached") else "")
            lines.append(f"| {r['model']} | {m} | {cq} | {qo} | {rss} | {st} | {note} |")
    notes = [(r["model"], n) for r in reports for n in r["notes"]]
    if notes:
        lines.append("")
        for m, n in notes:
            lines.append(f"* {m}: {n}")
    lines.append("")
    lines.append(f"Command: `python3 bench/quality.py {' '.join(shlex.quote(a) for a in argv)}`  ")
    lines.append(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, numpy {np.__version__}, "
                 f"Python {platform.python_version()}, {platform.machine()}, "
                 f"{os.cpu_count()} CPUs; ORT sessions: CPU EP, {THREADS} threads, graph "
                 f"optimisations {'default (ORT_ENABLE_ALL)' if args.optimize else 'disabled'}.")
    return "\n".join(lines)


def summary(r: dict) -> str:
    out = [f"== {r['model']}  ({r['n_calib']} calib, {r['n_val']} val; float run {r['float_s']:.1f} s)"]
    for name, v in r["variants"].items():
        if "error" in v:
            out.append(f"  {name:<22} FAILED: {v['error']}")
            continue
        cells = "; ".join(f"{row}: {cell_text(v['metrics'].get(row))}" for row in r["rows"])
        t = ""
        if name.startswith("ORT"):
            t = f"  [eval {v['eval_s']:.1f} s"
            if name.endswith(" s8") or v.get("quant_only_s") is None:
                if v.get("calib_quant_s") is not None:
                    t += f", calib+quant {v['calib_quant_s']:.1f} s"
            elif v.get("quant_only_s") is not None:
                t += f", quant {v['quant_only_s']:.1f} s"
            if v.get("cached"):
                t += ", cached"
            t += "]"
        out.append(f"  {name:<22} {cells}{t}")
    for n in r["notes"]:
        out.append(f"  note: {n}")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(ALL_MODELS), help="comma-separated model stems")
    ap.add_argument("--qtune", action="append", default=[], metavar="MODEL=PATH",
                    help="qtune's exported QDQ ONNX for MODEL (repeatable)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/qtune-quality"),
                    help="preprocessed inputs cache (default /tmp/qtune-quality)")
    ap.add_argument("--ort-cache", type=Path, default=None,
                    help="ORT quantized models and calibration ranges (default <cache>/ort-<version>)")
    ap.add_argument("--methods", default=",".join(METHODS), help="subset of MinMax,Entropy,Percentile")
    ap.add_argument("--acts", default=",".join(ACT_TYPES), help="ORT activation types: s8,u8")
    ap.add_argument("--entropy-bins", type=int, default=None, metavar="N",
                    help="Entropy calibration with N histogram bins (e.g. 2048) instead of "
                         "quantize_static's fixed 128, which reduces Entropy to MinMax; slow")
    ap.add_argument("--no-ort", action="store_true", help="skip ORT quantize_static (qtune only)")
    ap.add_argument("--refresh", action="store_true", help="redo ORT quantization (ignore its cache)")
    ap.add_argument("--calib-mem-gb", type=float, default=6.0,
                    help="estimated calibration memory above which calibration is chunked (6)")
    ap.add_argument("--mem-limit-gb", type=float, default=12.0,
                    help="address-space limit of each ORT quantization child (12)")
    ap.add_argument("--no-ort-opt", dest="optimize", action="store_false",
                    help="run every model with ORT graph optimisations disabled (QDQ as fake-quant)")
    ap.add_argument("--markdown", action="store_true", help="print the Markdown tables too")
    ap.add_argument("--json", type=Path, help="write the raw results here")
    ap.add_argument("--ort-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.ort_child:
        ort_child(json.loads(args.ort_child))
        return 0

    np.random.seed(0)  # nothing here samples; kept so any future sampling is reproducible
    models = [m for m in args.models.split(",") if m]
    bad = [m for m in models if m not in TASK]
    if bad:
        ap.error(f"unknown models {bad}; known: {ALL_MODELS}")
    args.methods = [m for m in args.methods.split(",") if m]
    if any(m not in METHODS for m in args.methods):
        ap.error(f"--methods: choose from {METHODS}")
    args.acts = [a for a in args.acts.split(",") if a]
    if any(a not in ACT_TYPES for a in args.acts) or not args.acts:
        ap.error(f"--acts: choose from {ACT_TYPES}")
    if "s8" in args.acts:  # s8 first: it is the column value, and it does the calibration
        args.acts = ["s8"] + [a for a in args.acts if a != "s8"]
    qtune = {}
    for q in args.qtune:
        name, _, path = q.partition("=")
        if name not in TASK or not path:
            ap.error(f"--qtune {q!r}: expected MODEL=PATH with MODEL in {ALL_MODELS}")
        if not Path(path).is_file():
            ap.error(f"--qtune {q!r}: no such file")
        qtune[name] = Path(path).resolve()
    args.cache = args.cache.resolve()
    if args.ort_cache is None:
        args.ort_cache = args.cache / f"ort-{ort.__version__}"
    args.ort_cache = args.ort_cache.resolve()

    cfgs = load_cfg()
    reports = []
    t0 = time.perf_counter()
    for m in models:
        r = evaluate_model(m, cfgs[m], args, qtune.get(m))
        reports.append(r)
        print(summary(r), flush=True)
    log(f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1, default=str))
    if args.markdown:
        print()
        print(markdown(reports, args, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
