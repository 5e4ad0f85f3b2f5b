#!/usr/bin/env bash
# Quickstart: build qtune and classify the bundled photos with the bundled
# EfficientNet-Lite0 (ImageNet), preprocessing as TPU-MLIR's model_transform
# flags say. Runs on a fresh machine with only cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin qtune
demo=assets/demo
exec target/release/qtune classify "$demo/efficientnet_lite0.onnx" \
    --dataset "$demo/images" \
    --labels "$demo/imagenet1k_classes.txt" \
    --resize_dims 224,224 --pixel_format rgb \
    --mean 127,127,127 --scale 0.0078125,0.0078125,0.0078125 \
    --top 5 "$@"
