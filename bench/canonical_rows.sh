#!/usr/bin/env bash
# Calibration-table rows and Top op counts of each workload, for two builds
# (e.g. before and after the canonical Top graph):
#   bench/canonical_rows.sh OLD_BIN_DIR NEW_BIN_DIR
# Each build runs its own model_transform, then run_calibration with
# --cali_method max on 2 samples (the rows do not depend on the method).
set -euo pipefail
old=$1; new=$2
w=$(cd "$(dirname "$0")/../../shared/workloads" && pwd)
tmp=$(mktemp -d)
flags() {
    case $1 in
    efficientnet_lite0) echo "--input_shapes [[1,3,224,224]] --resize_dims 224,224 --pixel_format rgb --mean 127,127,127 --scale 0.0078125,0.0078125,0.0078125" ;;
    mobilenetv2_nsfw) echo "--input_shapes [[1,3,224,224]] --resize_dims 224,224 --pixel_format rgb --mean 0,0,0 --scale 0.00392156862745098,0.00392156862745098,0.00392156862745098" ;;
    yolox_det416) echo "--input_shapes [[1,3,416,416]] --resize_dims 416,416 --keep_aspect_ratio --pad_type normal --pad_value 114 --pixel_format bgr --mean 0,0,0 --scale 1,1,1" ;;
    yolov8n_320) echo "--input_shapes [[1,3,320,320]] --resize_dims 320,320 --keep_aspect_ratio --pad_type normal --pad_value 0 --pixel_format rgb --mean 0,0,0 --scale 0.00392156862745098,0.00392156862745098,0.00392156862745098" ;;
    ppocr_v4_det640) echo "--input_shapes [[1,3,640,640]] --resize_dims 640,640 --pixel_format bgr --mean 123.675,116.28,103.53 --scale 0.017124753831663668,0.01750700280112045,0.017429193899782137" ;;
    minilm_l6_s128) echo "--input_shapes [[1,128],[1,128],[1,128]]" ;;
    esac
}
echo "| workload | ONNX nodes | Top ops before | Top ops after | table rows before | table rows after |"
echo "|---|---:|---:|---:|---:|---:|"
for m in efficientnet_lite0 mobilenetv2_nsfw yolox_det416 yolov8n_320 ppocr_v4_det640 minilm_l6_s128; do
    data=$w/images/calib
    [ "$m" = minilm_l6_s128 ] && data=$w/text/calib
    nodes=$(python3 -c "import onnx,sys; print(len(onnx.load(sys.argv[1], load_external_data=False).graph.node))" "$w/models/$m.onnx")
    row="| $m | $nodes"
    for b in "$old" "$new"; do
        d=$tmp/$(basename "$(dirname "$(dirname "$b")")")_$m
        mkdir -p "$d"
        # shellcheck disable=SC2046
        (cd "$d" && "$b/model_transform" --model_name m --model_def "$w/models/$m.onnx" $(flags $m) --mlir m.mlir >/dev/null 2>&1)
        ops=$(grep -c ' = "top\.' "$d/m.mlir" || true)
        weights=$(grep -c ' = "top\.Weight\|= "top\.None\|= "top\.Input' "$d/m.mlir" || true)
        (cd "$d" && "$b/run_calibration" m.mlir --dataset "$data" --input_num 2 --cali_method max -q -o table >/dev/null 2>&1)
        rows=$(grep -vc '^#' "$d/table" || true)
        eval "ops_$([ "$b" = "$old" ] && echo o || echo n)=$((ops - weights))"
        eval "rows_$([ "$b" = "$old" ] && echo o || echo n)=$rows"
    done
    echo "$row | $ops_o | $ops_n | $rows_o | $rows_n |"
done
rm -rf "$tmp"
