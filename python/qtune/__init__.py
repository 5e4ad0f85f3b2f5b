"""qtune: post-training int8 quantization, as TPU-MLIR's tools do it, from Python.

The package is the Rust toolkit's Python face: the same calibration,
mixed-precision searches and deployment (QDQ ONNX that ONNX Runtime runs) as
the command-line tools, which it also installs (``run_calibration``,
``model_deploy``, ... and their ``.py`` spellings).

Typical use::

    import qtune
    path, summary = qtune.quantize("model.onnx", "images/", "model_int8.onnx",
                                   resize_dims="224,224", mean="127,127,127",
                                   scale="0.0078125,0.0078125,0.0078125", pixel_format="rgb")

Work runs without the GIL; Ctrl-C raises ``KeyboardInterrupt`` at once and stops the work.
Errors are :class:`QtuneError` (base), :class:`InputError` (a bad file,
array or argument) and :class:`UnsupportedError` (an op or model qtune does
not support); a qtune bug is a ``QtuneError``, never a crash.
"""

import os
import shutil
import time
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native
from ._native import InputError, QtuneError, UnsupportedError
from ._tables import CalibrationTable, QuantizeTable, Threshold, loss_table

__version__: str = _native.__version__

__all__ = [
    "CalibrationTable",
    "Comparison",
    "InputError",
    "QtuneError",
    "QuantizeTable",
    "SearchResult",
    "Threshold",
    "UnsupportedError",
    "calibrate",
    "compare",
    "load_npz",
    "quantize",
    "run",
    "run_qtable",
    "save_npz",
    "search_qtable",
    "sensitive_layers",
    "transform",
]

PathLike = Union[str, "os.PathLike[str]"]

# Image preprocessing options (model_transform's flags), taken by the
# functions that read images for an .onnx model.
PREPROCESS_OPTIONS = (
    "resize_dims",
    "keep_aspect_ratio",
    "keep_ratio_mode",
    "mean",
    "scale",
    "pixel_format",
    "channel_format",
    "pad_value",
    "pad_type",
)


def _flag_value(name: str, value: Any) -> Optional[str]:
    """The command-line text of an option value (``None`` for a switch)."""
    if value is True:
        return None
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, (list, tuple)) for v in value):
            # Nested shapes, e.g. input_shapes=[[1, 3, 224, 224]].
            return str([list(v) if isinstance(v, (list, tuple)) else v for v in value]).replace(" ", "")
        return ",".join(_flag_value(name, v) or "" for v in value)
    raise InputError(f"option `{name}`: cannot pass a {type(value).__name__} ({value!r})")


def _flags(options: Mapping[str, Any]) -> List[Tuple[str, Optional[str]]]:
    """Keyword options as the command's flags: ``input_num=10`` is
    ``--input_num 10``, ``we=True`` is ``--we``; ``False`` and ``None`` are
    left out. A name the command does not take is an :class:`InputError`."""
    out: List[Tuple[str, Optional[str]]] = []
    for name, value in options.items():
        if value is None or value is False:
            continue
        out.append((name, _flag_value(name, value)))
    return out


def _quiet(verbose: bool, flag: str = "quiet") -> Dict[str, Any]:
    return {} if verbose else {flag: True}


def load_npz(path: PathLike) -> Dict[str, np.ndarray]:
    """Reads an npz file into a dict of arrays (qtune's npz reader)."""
    return _native.read_npz(os.fspath(path))


def save_npz(path: PathLike, arrays: Mapping[str, Any]) -> None:
    """Writes a dict of arrays as an npz file, atomically."""
    _native.write_npz(os.fspath(path), {k: np.asarray(v) for k, v in arrays.items()})


def run(
    model: PathLike,
    inputs: Mapping[str, Any],
    *,
    input_shapes: Optional[Union[str, Sequence[Sequence[int]]]] = None,
    threads: Optional[int] = None,
) -> Dict[str, np.ndarray]:
    """Runs a float model (``.onnx`` or Top ``.mlir``) with qtune's executor.

    ``inputs`` maps graph input names to arrays (float32, int64, int32, bool,
    uint8 or int8; other dtypes are an :class:`InputError`, as ONNX Runtime
    refuses them). An array may stack several samples on axis 0 (``[k, 3,
    224, 224]`` for a ``[1, 3, 224, 224]`` input): they run as independent
    samples in parallel and the outputs are stacked the same way. Returns
    the graph outputs by name, in graph order.

    The outputs are handed over without a copy; each input is copied once
    into qtune's tensor. Results do not depend on ``threads``.
    """
    arrays = {}
    for name, value in inputs.items():
        arrays[name] = value if isinstance(value, np.ndarray) else np.asarray(value)
    shapes = None if input_shapes is None else _flag_value("input_shapes", input_shapes)
    return _native.run(os.fspath(model), arrays, shapes, threads)


class Comparison(NamedTuple):
    """The similarity of a target array to a reference, as ``npz_tool compare``
    measures it (``qtune compare``)."""

    verdict: str
    """EQUAL, CLOSE, SIMILAR, NOT_SIMILAR or NOT_MATCH (element counts differ)."""
    cosine: Optional[float]
    euclidean: Optional[float]
    sqnr: Optional[float]
    """Signal-to-quantization-noise ratio in dB (inf when equal)."""
    max_abs_diff: Optional[float]

    @property
    def passed(self) -> bool:
        return self.verdict in ("EQUAL", "CLOSE", "SIMILAR")


def _compare_one(a: Any, b: Any, tolerance: Tuple[float, float]) -> Comparison:
    verdict, measures = _native.compare_arrays(np.asarray(a), np.asarray(b), tolerance[0], tolerance[1])
    if measures is None:
        return Comparison(verdict, None, None, None, None)
    return Comparison(verdict, *measures)


def compare(
    a: Union[PathLike, np.ndarray, Mapping[str, Any]],
    b: Union[PathLike, np.ndarray, Mapping[str, Any]],
    *,
    tolerance: Tuple[float, float] = (0.99, 0.99),
) -> Union[Comparison, Dict[str, Comparison]]:
    """Compares a target with a reference as ``qtune compare`` (TPU-MLIR's
    ``npz_tool compare``) does: cosine, euclidean similarity, SQNR and the
    verdict against ``tolerance = (cosine, euclidean)``.

    Two arrays give one :class:`Comparison`; two dicts of arrays (or two npz
    paths) give one per name the two share, in the target's order.
    """
    if isinstance(a, (str, os.PathLike)):
        a = load_npz(a)
    if isinstance(b, (str, os.PathLike)):
        b = load_npz(b)
    if isinstance(a, Mapping) != isinstance(b, Mapping):
        raise InputError("compare: give two arrays, or two dicts of arrays (or npz paths)")
    if isinstance(a, Mapping):
        assert isinstance(b, Mapping)
        shared = [k for k in a if k in b]
        if not shared:
            raise InputError(
                f"compare: no array name in common (target has {', '.join(a) or 'none'}; "
                f"reference has {', '.join(b) or 'none'})"
            )
        return {k: _compare_one(a[k], b[k], tolerance) for k in shared}
    return _compare_one(a, b, tolerance)


def transform(
    model_def: PathLike,
    mlir: PathLike,
    *,
    model_name: Optional[str] = None,
    input_shapes: Optional[Union[str, Sequence[Sequence[int]]]] = None,
    **options: Any,
) -> str:
    """``model_transform``: imports an ONNX model and writes TPU-MLIR's Top
    ``.mlir`` (weights in ``<name>_top_f32_all_weight.npz`` beside it) with
    the preprocessing the calibration will apply to images.

    ``options`` are model_transform's other flags by their names
    (``resize_dims="224,224"``, ``mean=[127, 127, 127]``,
    ``scale=0.0078125``, ``pixel_format="rgb"``, ``test_input=...``,
    ``test_result=...``, ...); a flag model_transform does not take is an
    :class:`InputError`. Returns the ``.mlir`` path.
    """
    opts: Dict[str, Any] = {"model_name": model_name, "input_shapes": input_shapes}
    opts.update(options)
    _native.transform(os.fspath(model_def), os.fspath(mlir), _flags(opts))
    return os.fspath(mlir)


class _Source:
    """The samples of a call: the tool's flag for a folder or data list, or
    the list of dicts of arrays for samples in memory (the library takes
    them as they are, in their order)."""

    def __init__(self, data: Any) -> None:
        self.samples: Optional[List[Dict[str, np.ndarray]]] = None
        if isinstance(data, (str, os.PathLike)):
            path = os.fspath(data)
            if os.path.isdir(path):
                self.flags: Dict[str, Any] = {"dataset": path}
            elif os.path.isfile(path):
                self.flags = {"data_list": path}
            else:
                raise InputError(f"calibration_data `{path}`: no such folder (dataset) or file (data list)")
            return
        samples = []
        for sample in _samples(data):
            if isinstance(sample, Mapping):
                samples.append({str(k): np.asarray(v) for k, v in sample.items()})
            else:
                samples.append({"input": np.asarray(sample)})
        if not samples:
            raise InputError("calibration_data: no samples (the iterable or data reader gave none)")
        self.samples = samples
        self.flags = {}


def _samples(data: Any) -> Iterable[Any]:
    """The samples of in-memory calibration data: an ONNX Runtime
    ``CalibrationDataReader`` (``get_next()`` until ``None``), or any iterable
    of arrays or of dicts of arrays."""
    get_next = getattr(data, "get_next", None)
    if callable(get_next):
        while True:
            item = get_next()
            if item is None:
                return
            yield item
        return
    if isinstance(data, np.ndarray) or isinstance(data, Mapping):
        raise InputError(
            "calibration_data: give a folder, a data list file, an iterable of samples "
            "(arrays or dicts of arrays) or a CalibrationDataReader; a single array or dict is one sample, "
            "wrap it in a list"
        )
    try:
        it = iter(data)
    except TypeError:
        raise InputError(
            f"calibration_data: expected a folder, a data list file, an iterable of samples or a "
            f"CalibrationDataReader, got a {type(data).__name__}"
        ) from None
    yield from it


def _split_preprocess(options: Dict[str, Any]) -> Dict[str, Any]:
    return {k: options.pop(k) for k in list(options) if k in PREPROCESS_OPTIONS}


def calibrate(
    model: PathLike,
    calibration_data: Any,
    output: Optional[PathLike] = None,
    *,
    method: str = "kl",
    input_num: int = 0,
    tune_num: int = 5,
    processor: str = "bm1684x",
    input_shapes: Optional[Union[str, Sequence[Sequence[int]]]] = None,
    threads: Optional[int] = None,
    verbose: bool = True,
    **options: Any,
) -> CalibrationTable:
    """``run_calibration``: the calibration table of a float model.

    ``model`` is a Top ``.mlir`` from :func:`transform` (it carries its image
    preprocessing) or an ``.onnx`` model (give the preprocessing as options:
    ``resize_dims``, ``mean``, ``scale``, ``pixel_format``, ...).
    ``calibration_data`` is a folder of samples (images, npz or npy; shuffled
    as TPU-MLIR does), a data list file, or samples in memory: an iterable
    of arrays (single-input model) or dicts of arrays, or an ONNX Runtime
    ``CalibrationDataReader``. Samples in memory are used in their order,
    as they are (no copy to files).

    ``method`` is kl, mse, max, percentile9999, aciq_gauss or aciq_laplace;
    ``input_num`` the number of samples (0: all); ``tune_num`` the tuning
    samples (0: no tuning). Other ``options`` are run_calibration's flags by
    name (``we=True``, ``bc=True``, ``sq=True``, ``histogram_bin_num=...``,
    ...); a flag it does not take is an :class:`InputError`.

    The table is written to ``output`` (a temporary file when ``None``) and
    returned. ``verbose=False`` silences the progress bar and summary.
    """
    opts: Dict[str, Any] = {
        "cali_method": method,
        "input_num": input_num,
        "tune_num": tune_num,
        "processor": processor,
        "input_shapes": input_shapes,
        "threads": threads,
    }
    opts.update(_quiet(verbose))
    opts.update(options)
    source = _Source(calibration_data)
    opts.update(source.flags)
    return _calibrate_to(model, output, opts, source.samples)


def _calibrate_to(
    model: PathLike,
    output: Optional[PathLike],
    opts: Dict[str, Any],
    samples: Optional[List[Dict[str, np.ndarray]]] = None,
) -> CalibrationTable:
    table, _ = _calibrate_found(model, output, opts, samples)
    return table


def _calibrate_found(
    model: PathLike,
    output: Optional[PathLike],
    opts: Dict[str, Any],
    samples: Optional[List[Dict[str, np.ndarray]]] = None,
) -> Tuple[CalibrationTable, Optional[Dict[str, Any]]]:
    """The table written, and what a search found (``None`` without one)."""
    if output is not None:
        found = _native.calibrate(os.fspath(model), os.fspath(output), _flags(opts), samples)
        return CalibrationTable.load(output), found
    temp = os.fspath(_native.temp_dir("qtune-calibration"))
    try:
        table_path = os.path.join(temp, "cali_table")
        found = _native.calibrate(os.fspath(model), table_path, _flags(opts), samples)
        return CalibrationTable.load(table_path), found
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def quantize(
    model: PathLike,
    calibration_data: Any,
    output: PathLike,
    *,
    processor: str = "bm1684x",
    method: str = "kl",
    quantize: str = "INT8",
    asymmetric: bool = False,
    qtable: Optional[Union[PathLike, QuantizeTable]] = None,
    calibration_table: Optional[Union[PathLike, CalibrationTable]] = None,
    input_num: int = 0,
    tune_num: int = 5,
    input_shapes: Optional[Union[str, Sequence[Sequence[int]]]] = None,
    test_input: Optional[PathLike] = None,
    test_reference: Optional[PathLike] = None,
    threads: Optional[int] = None,
    verbose: bool = True,
    **preprocess: Any,
) -> Tuple[str, Dict[str, Any]]:
    """Calibrates (``run_calibration``) and deploys (``model_deploy``) a float
    model: writes ``output``, a QDQ ONNX model that ONNX Runtime, TensorRT and
    OpenVINO run, with the source model's input and output names.

    ``calibration_data`` is as for :func:`calibrate`. With
    ``calibration_table`` given as a :class:`CalibrationTable`, no calibration
    runs; given as a path, the table is read from it when the file exists,
    else calibrated and written there. ``qtable`` (path or
    :class:`QuantizeTable`) keeps layers at other precisions.
    ``processor`` is the chip profile (bm1684x, bm1684, bm1688, cv18xx, ...,
    or ``onnxruntime`` for QDQ runtimes). ``preprocess`` takes the image
    preprocessing options of an ``.onnx`` model (``resize_dims``, ``mean``,
    ``scale``, ``pixel_format``, ``channel_format``, ``keep_aspect_ratio``,
    ``pad_type``, ``pad_value``, ``keep_ratio_mode``). With ``test_input``
    and ``test_reference`` (npz) the quantized model is checked against the
    reference first (a :class:`QtuneError` below model_deploy's tolerance,
    and nothing is written).

    Returns the output path and a summary dict (the files used, the sample
    count and the time of each step).
    """
    unknown = [k for k in preprocess if k not in PREPROCESS_OPTIONS]
    if unknown:
        raise InputError(
            f"quantize: unknown option(s) {', '.join(unknown)} (preprocessing options are "
            f"{', '.join(PREPROCESS_OPTIONS)})"
        )
    summary: Dict[str, Any] = {"model": os.fspath(model), "output": os.fspath(output), "processor": processor}
    temp = os.fspath(_native.temp_dir("qtune-quantize"))
    try:
        t0 = time.perf_counter()
        if isinstance(calibration_table, CalibrationTable):
            table_path = os.path.join(temp, "cali_table")
            calibration_table.save(table_path)
        elif calibration_table is not None and os.path.exists(os.fspath(calibration_table)):
            table_path = os.fspath(calibration_table)
        elif quantize.upper() in ("INT8", "INT4") or calibration_table is not None:
            table_path = (
                os.fspath(calibration_table) if calibration_table is not None else os.path.join(temp, "cali_table")
            )
            table = calibrate(
                model,
                calibration_data,
                table_path,
                method=method,
                input_num=input_num,
                tune_num=tune_num,
                processor=processor,
                input_shapes=input_shapes,
                threads=threads,
                verbose=verbose,
                **preprocess,
            )
            summary["samples"] = table.sample_number
            summary["calibration_s"] = time.perf_counter() - t0
        else:
            table_path = None
        summary["calibration_table"] = table_path
        qtable_path: Optional[str] = None
        if isinstance(qtable, QuantizeTable):
            qtable_path = os.path.join(temp, "qtable")
            qtable.save(qtable_path)
        elif qtable is not None:
            qtable_path = os.fspath(qtable)
        summary["quantize_table"] = qtable_path
        t1 = time.perf_counter()
        _native.deploy(
            os.fspath(model),
            os.fspath(output),
            quantize=quantize,
            processor=processor,
            calibration_table=table_path,
            quantize_table=qtable_path,
            asymmetric=asymmetric,
            test_input=None if test_input is None else os.fspath(test_input),
            test_reference=None if test_reference is None else os.fspath(test_reference),
            threads=threads,
            verbose=verbose,
        )
        summary["deploy_s"] = time.perf_counter() - t1
        summary["quantize"] = quantize
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    if summary["calibration_table"] is not None and summary["calibration_table"].startswith(temp):
        summary["calibration_table"] = None
    if summary["quantize_table"] is not None and summary["quantize_table"].startswith(temp):
        summary["quantize_table"] = None
    return os.fspath(output), summary


class SearchResult(NamedTuple):
    """What a mixed-precision search found."""

    qtable: QuantizeTable
    """The layers to keep in float (TPU-MLIR's qtable)."""
    calibration_table: Optional[CalibrationTable]
    """The thresholds the search settled on (``None`` when it writes none)."""
    losses: List[Tuple[str, float]]
    """Per layer, what the search measured, as ``(layer, value)`` rows:
    run_qtable the layer's own similarity (its loss table, ascending);
    search_qtable and sensitive_layers the best output loss (1 - mapped
    cos) of the layer alone in int8, in the order the search visited."""
    all_int8_cos: Optional[float] = None
    """The output similarity of the all-int8 model (mapped scale)."""
    final_cos: Optional[float] = None
    """The output similarity with the qtable applied (mapped scale)."""


def search_qtable(
    model: PathLike,
    calibration_data: Any,
    qtable: PathLike,
    calibration_table: PathLike,
    *,
    methods: Sequence[str] = ("MSE",),
    expected_cos: float = 0.99,
    max_float_layers: int = 5,
    inference_num: Optional[int] = None,
    input_num: int = 0,
    processor: str = "bm1684x",
    verbose: bool = True,
    **options: Any,
) -> SearchResult:
    """``run_calibration --search search_qtable``: calibrates with each of
    ``methods`` (KL, MSE, MAX, Percentile9999), finds the fewest sensitive
    layers whose float form reaches ``expected_cos`` (TPU-MLIR's mapped scale
    0.5 + 0.5*cos) and writes the qtable to ``qtable`` and the calibration
    table to ``calibration_table``. ``calibration_data`` is as for
    :func:`calibrate`; ``options`` are run_calibration's other flags by name
    (``resume=True``, ``memory_mb=...``, ``transformer="True"``, ...). The log
    ``Search_Qtable`` and ``new_cali_table.txt`` go to the current folder, as
    with the tool.
    """
    opts: Dict[str, Any] = {
        "search": "search_qtable",
        "quantize_table": qtable,
        "quantize_method_list": ",".join(methods),
        "expected_cos": expected_cos,
        "max_float_layers": max_float_layers,
        "inference_num": inference_num,
        "input_num": input_num,
        "processor": processor,
    }
    opts.update(_quiet(verbose))
    opts.update(options)
    source = _Source(calibration_data)
    opts.update(source.flags)
    table, found = _calibrate_found(model, calibration_table, opts, source.samples)
    return _search_result(qtable, processor, table, found)


def run_qtable(
    model: PathLike,
    calibration_data: Any,
    calibration_table: PathLike,
    qtable: PathLike,
    *,
    processor: str = "bm1684x",
    input_num: int = 10,
    expected_cos: float = 0.99,
    min_layer_cos: float = 0.99,
    loss_table: Optional[PathLike] = None,
    verbose: bool = True,
    **options: Any,
) -> SearchResult:
    """``run_qtable``: walks the ops and keeps in float those whose own
    similarity is below ``min_layer_cos`` while the output improves, until
    ``expected_cos``. Writes the qtable to ``qtable`` and the loss table to
    ``loss_table`` (default ``full_loss_table.txt`` in the current folder,
    as the tool does), and returns both as data."""
    opts: Dict[str, Any] = {
        "calibration_table": calibration_table,
        "processor": processor,
        "input_num": input_num,
        "expected_cos": expected_cos,
        "min_layer_cos": min_layer_cos,
        "loss_table": loss_table,
    }
    opts.update(_quiet(verbose))
    opts.update(options)
    source = _Source(calibration_data)
    opts.update(source.flags)
    found = _native.run_qtable(os.fspath(model), os.fspath(qtable), _flags(opts), source.samples)
    return _search_result(qtable, processor, None, found)


def sensitive_layers(
    model: PathLike,
    calibration_data: Any,
    calibration_table: PathLike,
    qtable: PathLike,
    *,
    processor: str = "bm1684x",
    input_num: int = 10,
    inference_num: int = 10,
    max_float_layers: int = 5,
    verbose: bool = True,
    **options: Any,
) -> SearchResult:
    """``run_sensitive_layer``: per layer the best of MAX / Percentile9999 /
    KL, and the ``max_float_layers`` most sensitive layers in the qtable.
    Writes the qtable to ``qtable``; the best thresholds go to
    ``new_cali_table.txt`` and the log to ``SensitiveLayerSearch`` in the
    current folder, as with the tool; the returned calibration table is
    ``new_cali_table.txt``'s."""
    opts: Dict[str, Any] = {
        "calibration_table": calibration_table,
        "processor": processor,
        "input_num": input_num,
        "inference_num": inference_num,
        "max_float_layers": max_float_layers,
    }
    opts.update(_quiet(verbose))
    opts.update(options)
    source = _Source(calibration_data)
    opts.update(source.flags)
    found = _native.sensitive_layers(os.fspath(model), os.fspath(qtable), _flags(opts), source.samples)
    table = CalibrationTable.load("new_cali_table.txt") if os.path.exists("new_cali_table.txt") else None
    return _search_result(qtable, processor, table, found)


def _search_result(
    qtable: PathLike, processor: str, table: Optional[CalibrationTable], found: Optional[Dict[str, Any]]
) -> SearchResult:
    found = found or {}
    return SearchResult(
        QuantizeTable.load(qtable, chip=processor),
        table,
        [(str(n), float(v)) for n, v in found.get("layer_scores", [])],
        found.get("all_int8_cos"),
        found.get("final_cos"),
    )
