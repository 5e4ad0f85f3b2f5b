#!/usr/bin/env bash
# Peak RSS and wall time of the long commands of issue 16 on the workloads, for one build.
#
#   bench/memory.sh BIN_DIR OUT_DIR [CASE ...]
#
# BIN_DIR holds the release binaries (target/release); each case runs in OUT_DIR/<case>
# (the workloads: $QTUNE_WORKLOADS, ./workloads or ../shared/workloads)
# and prints `case peak_rss_mb wall_s` from /usr/bin/time. Cases (issue 16 item 3, the
# seed's commands on the workloads, 65 photos of images/calib):
#   ppocr_kl, yolox_kl            run_calibration (kl, tuning on 5 samples)
#   search_qtable_mobilenet       the seed's search_qtable (--input_num 100 --inference_num 30
#   search_qtable_yolox             --expected_cos 0.99 --quantize_method_list KL,MSE, bm1684)
#   run_qtable_yolox              the seed's run_qtable (bm1684x, --min_layer_cos 0.999
#                                   --expected_cos 0.9999)
#   sensitive_mobilenet           the seed's run_sensitive_layer (bm1684, 100/30)
#   bc_efficientnet               the seed's case 4: --we --bc --search search_threshold
#                                   (bm1684, --inference_num 30 --bc_inference_num 100)
# The models are transformed (and, for run_qtable and run_sensitive_layer, calibrated) in
# OUT_DIR/setup first; that is not measured. Default: every case.
# MEMORY_MB=N adds `--memory_mb N` to every measured command (e.g. 100000: no budget, to
# measure what the budget costs in time with the same build).
# Compare two builds by running this script for each, alternately, in the same period;
# the calibration tables they write are compared byte for byte with cmp.
set -euo pipefail
bin=$(realpath "$1")
out=$2
shift 2
cases=("$@")
[ ${#cases[@]} -eq 0 ] && cases=(ppocr_kl yolox_kl search_qtable_mobilenet search_qtable_yolox \
    run_qtable_yolox sensitive_mobilenet bc_efficientnet)
# The workloads: $QTUNE_WORKLOADS, else ./workloads, else ../shared/workloads beside the
# repository (as bench/ort_compare.py looks for them).
repo=$(realpath "$(dirname "$0")/..")
work=""
for cand in "${QTUNE_WORKLOADS:-}" "$repo/workloads" "$repo/../shared/workloads"; do
    if [ -n "$cand" ] && [ -f "$cand/models/models.toml" ]; then
        work=$(realpath "$cand")
        break
    fi
done
if [ -z "$work" ]; then
    echo "workloads/ not found: set QTUNE_WORKLOADS (scripts/fetch-workloads.sh can rebuild it)" >&2
    exit 2
fi
mkdir -p "$out"
run() {
    local name=$1
    shift
    local dir="$out/$name"
    rm -rf "$dir" && mkdir -p "$dir"
    local extra=()
    [ -n "${MEMORY_MB:-}" ] && extra=(--memory_mb "$MEMORY_MB")
    (cd "$dir" && /usr/bin/time -f '%M %e' -o time.txt "$@" "${extra[@]}" >stdout.txt 2>stderr.txt) || {
        echo "$name failed: $(tail -1 "$dir/stderr.txt")" >&2
        return 1
    }
    read -r kb secs <"$dir/time.txt"
    echo "$name $((kb / 1024)) $secs"
}
calib=$work/images/calib
setup=$(realpath "$out")/setup
mkdir -p "$setup"
# The .mlir of a workload (model_transform with models.toml's preprocessing), once.
mlir() {
    local m=$1
    if [ ! -f "$setup/$m.mlir" ]; then
        local flags
        flags=$(python3 - "$work/models/models.toml" "$m" <<'PY'
import sys, tomllib
m = tomllib.load(open(sys.argv[1], "rb"))["model"][sys.argv[2]]
s = m["preprocess"]["model_transform"] if "preprocess" in m else m["model_transform"]
print(s.split(" (")[0])
PY
        )
        # shellcheck disable=SC2086
        (cd "$setup" && "$bin/model_transform" --model_name "$m" --model_def "$work/models/$m.onnx" \
            $flags --mlir "$m.mlir" >/dev/null)
    fi
    echo "$setup/$m.mlir"
}
# Its kl calibration table (65 photos), once.
table() {
    local m=$1
    if [ ! -f "$setup/${m}_cali_table" ]; then
        "$bin/run_calibration" "$(mlir "$m")" --dataset "$calib" --input_num 65 --no_time -q \
            -o "$setup/${m}_cali_table"
    fi
    echo "$setup/${m}_cali_table"
}
for c in "${cases[@]}"; do
    case $c in
    ppocr_kl)
        run ppocr_kl "$bin/run_calibration" "$work/models/ppocr_v4_det640.onnx" \
            --dataset "$work/images/calib" --input_num 65 --no_time -q \
            --resize_dims 640,640 --pixel_format bgr --mean 123.675,116.28,103.53 \
            --scale 0.017124753831663668,0.01750700280112045,0.017429193899782137 -o table
        ;;
    yolox_kl)
        run yolox_kl "$bin/run_calibration" "$work/models/yolox_det416.onnx" \
            --dataset "$work/images/calib" --input_num 65 --no_time -q \
            --resize_dims 416,416 --keep_aspect_ratio --pad_type normal --pad_value 114 \
            --pixel_format bgr --mean 0,0,0 --scale 1,1,1 -o table
        ;;
    search_qtable_mobilenet | search_qtable_yolox)
        m=$([ "$c" = search_qtable_yolox ] && echo yolox_det416 || echo mobilenetv2_nsfw)
        model=$(mlir "$m")
        run "$c" "$bin/run_calibration" "$model" --dataset "$calib" --input_num 100 \
            --inference_num 30 --expected_cos 0.99 --quantize_method_list KL,MSE \
            --search search_qtable --transformer False --processor bm1684 --no_time -q \
            --quantize_table qtable --calibration_table cali_table
        ;;
    run_qtable_yolox)
        model=$(mlir yolox_det416)
        t=$(table yolox_det416)
        run "$c" "$bin/run_qtable" "$model" --dataset "$calib" --calibration_table "$t" \
            --processor bm1684x --min_layer_cos 0.999 --expected_cos 0.9999 --no_time -q -o qtable
        ;;
    sensitive_mobilenet)
        model=$(mlir mobilenetv2_nsfw)
        t=$(table mobilenetv2_nsfw)
        run "$c" "$bin/run_sensitive_layer" "$model" --dataset "$calib" --input_num 100 \
            --inference_num 30 --calibration_table "$t" --processor bm1684 --no_time -q -o qtable
        ;;
    bc_efficientnet)
        model=$(mlir efficientnet_lite0)
        # (--we and --bc write their models beside -o, in the case's folder)
        run "$c" "$bin/run_calibration" "$model" --we --bc --dataset "$calib" --input_num 100 \
            --processor bm1684 --search search_threshold --inference_num 30 \
            --bc_inference_num 100 --no_time -q -o cali_table
        ;;
    *) echo "unknown case $c" >&2; exit 2 ;;
    esac
done
