#!/usr/bin/env bash
# QUALITY.md "Weight-only modes", weight quantizers: model_deploy's --q_method (rtn = TPU-MLIR's
# rule, clip, gptq, gptq_clip; --q_act_order; --q_sequential, --q_float_target, --q_bias_correction; --q_awq, --q_awq_clip) on minilm_l6_s128 (W4F16 g128 and per channel,
# W8F16 per channel) and mobilenetv2_nsfw (W4F16 g128), bm1684x. Each deploy runs under
# /usr/bin/time -v (wall time, peak RSS); each export runs in ONNX Runtime through
# bench/quality.py against the float model on the validation set (text/val 60 sentences,
# images/val 32 images). GPTQ takes the calibration sets (text/calib 100 sentences,
# images/calib 65 images).
#   bench/weight_methods.sh [OUT_DIR] [FILTER]   (default /tmp/qtune-quality/weight-methods;
#                                                 FILTER: only tags matching this regex)
#   QTUNE_BIN=target/release bench/...           use already-built binaries
#   THREADS=N                                    model_deploy --threads (default: all cores)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${WORKLOADS:-$root/../shared/workloads}
out=${1:-/tmp/qtune-quality/weight-methods}
filter=${2:-.}
if [ -z "${QTUNE_BIN:-}" ]; then
    cargo build --release --quiet --bins --manifest-path "$root/Cargo.toml"
    bin=$root/target/release
else
    bin=$(cd "$QTUNE_BIN" && pwd)
fi
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
mkdir -p "$out"
cd "$out"
[ -f minilm_l6_s128.mlir ] || "$bin/model_transform" --model_name minilm_l6_s128 \
    --model_def "$work/models/minilm_l6_s128.onnx" \
    --input_shapes "[[1,128],[1,128],[1,128]]" --mlir minilm_l6_s128.mlir > /dev/null
[ -f mobilenetv2_nsfw.mlir ] || "$bin/model_transform" --model_name mobilenetv2_nsfw \
    --model_def "$work/models/mobilenetv2_nsfw.onnx" \
    --input_shapes "[[1,3,224,224]]" --resize_dims 224,224 --pixel_format rgb --mean 0,0,0 \
    --scale 0.00392156862745098,0.00392156862745098,0.00392156862745098 \
    --mlir mobilenetv2_nsfw.mlir > /dev/null
text="--calibration_data $work/text/calib"
mask="--calibration_mask_input attention_mask"
images="--calibration_data $work/images/calib"
# model | tag | model_deploy flags
configs="
minilm_l6_s128|W4F16_g128_rtn|--quantize W4F16 --q_group_size 128
minilm_l6_s128|W4F16_g128_clip|--quantize W4F16 --q_group_size 128 --q_method clip
minilm_l6_s128|W4F16_g128_gptq|--quantize W4F16 --q_group_size 128 --q_method gptq $text
minilm_l6_s128|W4F16_g128_gptq_mask|--quantize W4F16 --q_group_size 128 --q_method gptq $text $mask
minilm_l6_s128|W4F16_g128_gptq_act|--quantize W4F16 --q_group_size 128 --q_method gptq --q_act_order $text $mask
minilm_l6_s128|W4F16_g128_gptqclip|--quantize W4F16 --q_group_size 128 --q_method gptq_clip $text $mask
minilm_l6_s128|W4F16_g128_gptqclip_act|--quantize W4F16 --q_group_size 128 --q_method gptq_clip --q_act_order $text $mask
minilm_l6_s128|W4F16_g128_gptqclip_act_d0.1|--quantize W4F16 --q_group_size 128 --q_method gptq_clip --q_act_order --q_damp 0.1 $text $mask
minilm_l6_s128|W4F16_g128_gptqclip_act_d0.1_seq|--quantize W4F16 --q_group_size 128 --q_method gptq_clip --q_act_order --q_damp 0.1 --q_sequential $text $mask
minilm_l6_s128|W4F16_g128_gptqclip_act_d0.1_seq_bc|--quantize W4F16 --q_group_size 128 --q_method gptq_clip --q_act_order --q_damp 0.1 --q_sequential --q_bias_correction $text $mask
minilm_l6_s128|W4F16_g128_gptqclip_act_d0.1_seq_target|--quantize W4F16 --q_group_size 128 --q_method gptq_clip --q_act_order --q_damp 0.1 --q_sequential --q_float_target $text $mask
minilm_l6_s128|W4F16_g128_gptqclip_act_d0.1_seq_target_bc|--quantize W4F16 --q_group_size 128 --q_method gptq_clip --q_act_order --q_damp 0.1 --q_sequential --q_float_target --q_bias_correction $text $mask
minilm_l6_s128|W4F16_g128_gptqclip_d0.1_seq_target|--quantize W4F16 --q_group_size 128 --q_method gptq_clip --q_damp 0.1 --q_sequential --q_float_target $text $mask
minilm_l6_s128|W4F16_g128_gptq_act_d0.1_seq_target|--quantize W4F16 --q_group_size 128 --q_method gptq --q_act_order --q_damp 0.1 --q_sequential --q_float_target $text $mask
minilm_l6_s128|W4F16_g128_awq_rtn|--quantize W4F16 --q_group_size 128 --q_awq $text $mask
minilm_l6_s128|W4F16_g128_awq_clip|--quantize W4F16 --q_group_size 128 --q_awq --q_method clip $text $mask
minilm_l6_s128|W4F16_g128_awq_gptqclip_act_d0.1|--quantize W4F16 --q_group_size 128 --q_awq --q_method gptq_clip --q_act_order --q_damp 0.1 $text $mask
minilm_l6_s128|W4F16_g128_awqclip_clip|--quantize W4F16 --q_group_size 128 --q_method clip --q_awq_clip $text $mask
minilm_l6_s128|W4F16_g128_awqclip_gptqclip_act_d0.1|--quantize W4F16 --q_group_size 128 --q_method gptq_clip --q_awq_clip --q_act_order --q_damp 0.1 $text $mask
minilm_l6_s128|W4F16_g128_awq_awqclip_gptqclip_act_d0.1|--quantize W4F16 --q_group_size 128 --q_awq --q_awq_clip --q_method gptq_clip --q_act_order --q_damp 0.1 $text $mask
minilm_l6_s128|W4F16_pc_rtn|--quantize W4F16
minilm_l6_s128|W4F16_pc_clip|--quantize W4F16 --q_method clip
minilm_l6_s128|W4F16_pc_gptq|--quantize W4F16 --q_method gptq $text $mask
minilm_l6_s128|W4F16_pc_gptq_act|--quantize W4F16 --q_method gptq --q_act_order $text $mask
minilm_l6_s128|W4F16_pc_gptqclip_act|--quantize W4F16 --q_method gptq_clip --q_act_order $text $mask
minilm_l6_s128|W4F16_pc_awq_rtn|--quantize W4F16 --q_awq $text $mask
minilm_l6_s128|W4F16_pc_awq_gptqclip_act|--quantize W4F16 --q_awq --q_method gptq_clip --q_act_order $text $mask
minilm_l6_s128|W8F16_pc_rtn|--quantize W8F16
minilm_l6_s128|W8F16_pc_clip|--quantize W8F16 --q_method clip
minilm_l6_s128|W8F16_pc_gptq|--quantize W8F16 --q_method gptq $text $mask
mobilenetv2_nsfw|W4F16_g128_rtn|--quantize W4F16 --q_group_size 128
mobilenetv2_nsfw|W4F16_g128_clip|--quantize W4F16 --q_group_size 128 --q_method clip
mobilenetv2_nsfw|W4F16_g128_gptq|--quantize W4F16 --q_group_size 128 --q_method gptq $images
"
printf '%s\n' "$configs" | while IFS='|' read -r m tag flags; do
    [ -z "$m" ] && continue
    echo "$m $tag" | grep -Eq -- "$filter" || continue
    # shellcheck disable=SC2086
    /usr/bin/time -v "$bin/model_deploy" --mlir "$m.mlir" --processor bm1684x $flags \
        "${threads[@]}" --model "${m}_$tag.onnx" --quiet 2> "${m}_$tag.time"
    wall=$(grep 'Elapsed (wall clock)' "${m}_$tag.time" | awk '{print $NF}')
    rss=$(grep 'Maximum resident set size' "${m}_$tag.time" | awk '{print $NF}')
    line=$(python3 "$root/bench/quality.py" --no-ort --models "$m" --qtune "$m=${m}_$tag.onnx" \
        --cache "$out/cache" 2>&1 | grep '^  qtune')
    printf '%-18s %-34s %8s %5d MB %s\n' "$m" "$tag" "$wall" "$((rss / 1024))" "${line#  qtune}"
done
