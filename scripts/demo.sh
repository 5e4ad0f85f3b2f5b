#!/usr/bin/env bash
# Quickstart, end to end on the bundled demo (EfficientNet-Lite0, 32 photos):
#   1. model_transform: ONNX -> TPU-MLIR Top-dialect .mlir with the preprocessing flags
#   2. run_calibration: int8 thresholds for every tensor (KL, with tuning) -> calibration table
#   3. model_deploy: the INT8 model for bm1684x, checked against the float reference,
#      written as a QDQ ONNX model (ONNX Runtime, TensorRT, OpenVINO run it)
#   4. qtune classify: top-5 of the photos, float and quantized side by side
# Outputs go to ./out/demo. Runs on a fresh machine with only cargo.
#
#   QTUNE_PROFILE=dev scripts/demo.sh   # the dev-profile binaries (opt-level 2), which
#                                       # `cargo test` has already built: CI uses this
#                                       # instead of a second, release build
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
profile=${QTUNE_PROFILE:-release}
case $profile in
    release) cargo build --release --quiet --bins; bin=$root/target/release ;;
    dev) cargo build --quiet --bins; bin=$root/target/debug ;;
    *) echo "error: QTUNE_PROFILE must be release or dev, not \`$profile'" >&2; exit 2 ;;
esac
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

echo "== model_deploy (INT8, bm1684x, QDQ ONNX)"
"$bin/model_deploy" --mlir efficientnet_lite0.mlir \
    --quantize INT8 --processor bm1684x \
    --calibration_table efficientnet_lite0_cali_table \
    --test_input efficientnet_lite0_in_f32.npz \
    --test_reference efficientnet_lite0_top_outputs.npz \
    --model efficientnet_lite0_int8.onnx

echo "== classify (float model, top-3; the .mlir carries its preprocessing)"
"$bin/qtune" classify efficientnet_lite0.mlir \
    --dataset "$demo/images" \
    --labels "$demo/imagenet1k_classes.txt" \
    --top 3 "$@" > classify_f32.txt
echo "== classify (INT8 QDQ model, top-3; an .onnx takes the preprocessing flags)"
"$bin/qtune" classify efficientnet_lite0_int8.onnx \
    --dataset "$demo/images" \
    --labels "$demo/imagenet1k_classes.txt" \
    --resize_dims 224,224 --pixel_format rgb \
    --mean 127,127,127 --scale 0.0078125,0.0078125,0.0078125 \
    --top 3 "$@" > classify_int8.txt
paste -d '|' classify_f32.txt classify_int8.txt | sed 's/|/   |   /' | awk 'NR <= 40'
top1() { awk '/^[^ ]/ {f=$1} /^  / && !seen[f]++ {print f, $NF}' "$1"; }
agree=$(join <(top1 classify_f32.txt | sort) <(top1 classify_int8.txt | sort) | awk '$2==$3' | wc -l)
echo "top-1 agreement float vs INT8: $agree of $(top1 classify_f32.txt | wc -l) photos"
echo "outputs in $out"
