"""Quantize the bundled demo model from Python and run it with ONNX Runtime.

    pip install .              # at the repository root
    pip install onnxruntime    # only to run the result here
    python examples/quantize_demo.py [OUT_DIR]

Imports EfficientNet-Lite0 with its preprocessing (model_transform),
calibrates it on the 32 bundled photos (KL with tuning, as run_calibration
does) and writes the INT8 model for bm1684x as QDQ ONNX (model_deploy),
checked against the float outputs; then runs the float model (qtune.run) and
the INT8 model (ONNX Runtime) on a photo and prints both top-3.
"""

import os
import pathlib
import sys
import time

import numpy as np

import qtune

root = pathlib.Path(__file__).resolve().parents[1]
demo = root / "assets" / "demo"
out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else root / "out" / "python-demo").resolve()
out.mkdir(parents=True, exist_ok=True)
os.chdir(out)  # model_transform writes <name>_in_f32.npz here, as the tool does

# 1. model_transform: the .mlir carries the preprocessing from here on. It
#    also writes the preprocessed photo (efficientnet_lite0_in_f32.npz) and
#    the float outputs on it (--test_result).
t = time.perf_counter()
mlir = qtune.transform(
    demo / "efficientnet_lite0.onnx", "efficientnet_lite0.mlir",
    model_name="efficientnet_lite0", input_shapes=[[1, 3, 224, 224]],
    resize_dims="224,224", pixel_format="rgb", mean="127,127,127", scale="0.0078125,0.0078125,0.0078125",
    test_input=demo / "images" / "darknet_eagle.jpg", test_result="top_outputs.npz",
)
print(f"transform: {time.perf_counter() - t:.1f} s")

# 2 + 3. run_calibration and model_deploy in one call; the INT8 model is
#    checked against the float outputs before it is written.
t = time.perf_counter()
path, summary = qtune.quantize(
    mlir, demo / "images", "efficientnet_lite0_int8.onnx",
    processor="bm1684x", method="kl", calibration_table="efficientnet_lite0_cali_table",
    test_input="efficientnet_lite0_in_f32.npz", test_reference="top_outputs.npz",
)
print(f"quantize: {time.perf_counter() - t:.1f} s -> {path}")
print(summary)

table = qtune.CalibrationTable.load("efficientnet_lite0_cali_table")
print(f"{len(table)} thresholds; the input's: {table['input']}")

# 4. The float model (qtune's executor) and the INT8 model (ONNX Runtime) on the photo.
try:
    import onnxruntime as ort  # noqa: E402
except ImportError:
    sys.exit("step 4 runs the INT8 model in ONNX Runtime: pip install onnxruntime")

x = qtune.load_npz("efficientnet_lite0_in_f32.npz")["input"]
float_logits = qtune.run(demo / "efficientnet_lite0.onnx", {"input": x})["logits"][0]
session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
int8_logits = session.run(None, {"input": x})[0][0]
labels = (demo / "imagenet1k_classes.txt").read_text().splitlines()
for name, logits in [("float", float_logits), ("INT8 ", int8_logits)]:
    top = np.argsort(-logits)[:3]
    print(name, ", ".join(f"{labels[i]} {logits[i]:.2f}" for i in top))
print("float vs INT8:", qtune.compare(int8_logits, float_logits))
