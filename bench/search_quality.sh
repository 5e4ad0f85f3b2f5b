#!/usr/bin/env bash
# QUALITY.md "Mixed precision" table, reproduced: for the four image workloads, all-int8
# (kl) vs the search_qtable mixed model vs the run_qtable mixed model, bm1684x, each deployed
# with model_deploy and compared with the float model on images/val by bench/quality.py.
# The searches see only the calibration photos; the figures are on the held-out val photos.
#   bench/search_quality.sh [OUT_DIR]      (default /tmp/qtune-quality/search)
#   MODELS="yolov8n_320" bench/search_quality.sh   redoes one model, then the tables
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${WORKLOADS:-$root/../shared/workloads}
out=${1:-/tmp/qtune-quality/search}
cargo build --release --quiet --bins --manifest-path "$root/Cargo.toml"
bin=$root/target/release
mkdir -p "$out"
cd "$out"
models=${MODELS:-"mobilenetv2_nsfw efficientnet_lite0 yolox_det416 yolov8n_320"}
flags() {
    python3 - "$work/models/models.toml" "$1" <<'PY'
import sys, tomllib
m = tomllib.load(open(sys.argv[1], "rb"))["model"][sys.argv[2]]
s = m["preprocess"]["model_transform"] if "preprocess" in m else m["model_transform"]
print(s.split(" (")[0])
PY
}
data=$work/images/calib
for m in $models; do
    echo "== $m"
    mkdir -p "$m" && cd "$m"
    # shellcheck disable=SC2046
    "$bin/model_transform" --model_name "$m" --model_def "$work/models/$m.onnx" $(flags "$m") \
        --mlir "$m.mlir" > /dev/null
    "$bin/run_calibration" "$m.mlir" --dataset "$data" --input_num 65 -o "${m}_cali_table" \
        --quiet
    rm -f "${m}_search_cali_table"*
    /usr/bin/time -f "search_qtable: %e s, %M KB" "$bin/run_calibration" "$m.mlir" \
        --dataset "$data" --input_num 65 --inference_num 30 --expected_cos 0.999 \
        --quantize_method_list KL,MSE --search search_qtable --processor bm1684x \
        --quantize_table "${m}_search_qtable" --calibration_table "${m}_search_cali_table" \
        | grep -E "outputs_cos|float layer number|^time:" || true
    # (all-int8 meeting --expected_cos leaves no new table and no float layer)
    if [ -f new_cali_table.txt ]; then mv new_cali_table.txt "${m}_search_new_cali_table"; fi
    /usr/bin/time -f "run_qtable: %e s, %M KB" "$bin/run_qtable" "$m.mlir" --dataset "$data" \
        --calibration_table "${m}_cali_table" --processor bm1684x --min_layer_cos 0.999 \
        --expected_cos 0.9999 -o "${m}_run_qtable" | grep -E "outputs_cos|float layer" || true
    common=(--mlir "$m.mlir" --quantize INT8 --processor bm1684x --quiet)
    "$bin/model_deploy" "${common[@]}" --calibration_table "${m}_cali_table" \
        --model "../${m}_int8.onnx"
    if [ -f "${m}_search_new_cali_table" ]; then
        "$bin/model_deploy" "${common[@]}" --calibration_table "${m}_search_new_cali_table" \
            --quantize_table "${m}_search_qtable" --model "../${m}_search.onnx"
    else
        # all-int8 met --expected_cos: the search keeps the all-int8 model
        cp "../${m}_int8.onnx" "../${m}_search.onnx"
    fi
    "$bin/model_deploy" "${common[@]}" --calibration_table "${m}_cali_table" \
        --quantize_table "${m}_run_qtable" --model "../${m}_run_qtable.onnx"
    echo "float layers: search_qtable $(grep -vc '^#' "${m}_search_qtable" || true)," \
        "run_qtable $(grep -vc '^#' "${m}_run_qtable" || true)"
    cd ..
done
all_models="mobilenetv2_nsfw efficientnet_lite0 yolox_det416 yolov8n_320"
for v in int8 search run_qtable; do
    args=()
    for m in $all_models; do
        [ -f "${m}_$v.onnx" ] && args+=(--qtune "$m=$out/${m}_$v.onnx")
    done
    python3 "$root/bench/quality.py" --no-ort --markdown "${args[@]}" > "quality_$v.md"
    echo "wrote $out/quality_$v.md"
done
