#!/usr/bin/env bash
# Quickstart, end to end on the bundled demo (EfficientNet-Lite0, 32 photos):
#   1. model_transform: ONNX -> TPU-MLIR Top-dialect .mlir with the preprocessing flags
#   2. run_calibration: int8 thresholds for every tensor (KL, with tuning) -> calibration table
#   3. qtune classify: float top-5 of the photos with the same preprocessing
# Outputs go to ./out/demo. Runs on a fresh machine with only cargo.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release --quiet --bins
bin=$root/target/release
demo=$root/assets/demo
out=$root/out/demo
mkdir -p "$out"
cd "$out"

echo "== model_transform"
"$bin/model_transform" \
    --model_name efficientnet_lite0 \
    --model_def "$demo/efficientnet_lite0.onnx" \
    --input_shapes [[1,3,224,224]] \
    --resize_dims 224,224 --pixel_format rgb \
    --mean 127,127,127 --scale 0.0078125,0.0078125,0.0078125 \
    --test_input "$demo/images/darknet_eagle.jpg" \
    --test_result efficientnet_lite0_top_outputs.npz \
    --mlir efficientnet_lite0.mlir

echo "== run_calibration"
"$bin/run_calibration" efficientnet_lite0.mlir \
    --dataset "$demo/images" --input_num 32 \
    -o efficientnet_lite0_cali_table
head -n 14 efficientnet_lite0_cali_table

echo "== classify (float model, top-5)"
"$bin/qtune" classify efficientnet_lite0.mlir \
    --dataset "$demo/images" \
    --labels "$demo/imagenet1k_classes.txt" \
    --resize_dims 224,224 --pixel_format rgb \
    --mean 127,127,127 --scale 0.0078125,0.0078125,0.0078125 \
    --top 5 "$@"
echo "outputs in $out"
