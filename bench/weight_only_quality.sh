#!/usr/bin/env bash
# QUALITY.md "Weight-only modes", reproduced: model_deploy W8F16 / W8BF16 / W4F16 / W4BF16
# (bm1684x; per channel and --q_group_size variants) of minilm_l6_s128 and mobilenetv2_nsfw,
# each export run in ONNX Runtime by bench/quality.py against the float model on the
# validation set (text/val 60 sentences, images/val 32 images), and the file sizes.
#   bench/weight_only_quality.sh [OUT_DIR]      (default /tmp/qtune-quality/weight-only)
#   QTUNE_BIN=target/debug bench/...             use already-built binaries (the exports do
#                                                not depend on the build profile)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${WORKLOADS:-$root/../shared/workloads}
out=${1:-/tmp/qtune-quality/weight-only}
if [ -z "${QTUNE_BIN:-}" ]; then
    cargo build --release --quiet --bins --manifest-path "$root/Cargo.toml"
    bin=$root/target/release
else
    bin=$(cd "$QTUNE_BIN" && pwd)
fi
mkdir -p "$out"
cd "$out"
"$bin/model_transform" --model_name minilm_l6_s128 --model_def "$work/models/minilm_l6_s128.onnx" \
    --input_shapes "[[1,128],[1,128],[1,128]]" --mlir minilm_l6_s128.mlir > /dev/null
"$bin/model_transform" --model_name mobilenetv2_nsfw --model_def "$work/models/mobilenetv2_nsfw.onnx" \
    --input_shapes "[[1,3,224,224]]" --resize_dims 224,224 --pixel_format rgb --mean 0,0,0 \
    --scale 0.00392156862745098,0.00392156862745098,0.00392156862745098 \
    --mlir mobilenetv2_nsfw.mlir > /dev/null
# model | tag | model_deploy flags
configs="
minilm_l6_s128|F16|--quantize F16
minilm_l6_s128|W8F16|--quantize W8F16
minilm_l6_s128|W8BF16|--quantize W8BF16
minilm_l6_s128|W8F16_g128|--quantize W8F16 --q_group_size 128
minilm_l6_s128|W4F16|--quantize W4F16
minilm_l6_s128|W4F16_g128|--quantize W4F16 --q_group_size 128
minilm_l6_s128|W4F16_g128_sym|--quantize W4F16 --q_group_size 128 --q_symmetric
minilm_l6_s128|W4F16_g64|--quantize W4F16 --q_group_size 64
minilm_l6_s128|W4F16_g32|--quantize W4F16 --q_group_size 32
minilm_l6_s128|W4BF16_g128|--quantize W4BF16 --q_group_size 128
mobilenetv2_nsfw|F16|--quantize F16
mobilenetv2_nsfw|W8F16|--quantize W8F16
mobilenetv2_nsfw|W4F16_g128|--quantize W4F16 --q_group_size 128
"
printf '%s\n' "$configs" | while IFS='|' read -r m tag flags; do
    [ -z "$m" ] && continue
    # shellcheck disable=SC2086
    "$bin/model_deploy" --mlir "$m.mlir" --processor bm1684x $flags --model "${m}_$tag.onnx" --quiet
    size=$(stat -c %s "${m}_$tag.onnx")
    float=$(stat -c %s "$work/models/$m.onnx")
    line=$(python3 "$root/bench/quality.py" --no-ort --models "$m" --qtune "$m=${m}_$tag.onnx" \
        --cache "$out/cache" 2>&1 | grep '^  qtune')
    printf '%-18s %-16s %6.1f MB (%.2fx float) %s\n' "$m" "$tag" \
        "$(echo "$size / 1000000" | bc -l)" "$(echo "$size / $float" | bc -l)" "${line#  qtune}"
done
