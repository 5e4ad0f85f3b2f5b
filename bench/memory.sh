#!/usr/bin/env bash
# Peak RSS and wall time of the long commands of issue 16 on the workloads, for one build.
#
#   bench/memory.sh BIN_DIR OUT_DIR [CASE ...]
#
# BIN_DIR holds the release binaries (target/release); each case runs in OUT_DIR/<case>
# and prints `case peak_rss_mb wall_s` from /usr/bin/time. Cases: ppocr_kl, yolox_kl.
# Compare two builds by running this script for each, alternately, in the same period;
# the calibration tables they write are compared byte for byte with cmp.
set -euo pipefail
bin=$(realpath "$1")
out=$2
shift 2
cases=("$@")
[ ${#cases[@]} -eq 0 ] && cases=(ppocr_kl yolox_kl)
work=$(realpath "$(dirname "$0")/../../shared/workloads")
mkdir -p "$out"
run() {
    local name=$1
    shift
    local dir="$out/$name"
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$dir" && /usr/bin/time -f '%M %e' -o time.txt "$@" >stdout.txt 2>stderr.txt) || {
        echo "$name failed: $(tail -1 "$dir/stderr.txt")" >&2
        return 1
    }
    read -r kb secs <"$dir/time.txt"
    echo "$name $((kb / 1024)) $secs"
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
    *) echo "unknown case $c" >&2; exit 2 ;;
    esac
done
