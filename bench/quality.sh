#!/usr/bin/env bash
# QUALITY.md, reproduced: for each workload, model_transform + run_calibration (kl, and
# percentile9999 and max, on the calibration set) + model_deploy (bm1684x, INT8) in five
# configurations, then
# bench/quality.py compares each against the float model and ONNX Runtime's quantize_static.
#   bench/quality.sh [OUT_DIR]      (default /tmp/qtune-quality/qtune)
#   NO_ORT=1 bench/quality.sh       qtune's columns only (ONNX Runtime's do not depend on qtune)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${WORKLOADS:-$root/../shared/workloads}
out=${1:-/tmp/qtune-quality/qtune}
cargo build --release --quiet --bins --manifest-path "$root/Cargo.toml"
bin=$root/target/release
mkdir -p "$out"
cd "$out"
models="efficientnet_lite0 mobilenetv2_nsfw yolox_det416 yolov8n_320 ppocr_v4_det640 minilm_l6_s128"
flags() {
    python3 - "$work/models/models.toml" "$1" <<'PY'
import sys, tomllib
m = tomllib.load(open(sys.argv[1], "rb"))["model"][sys.argv[2]]
s = m["preprocess"]["model_transform"] if "preprocess" in m else m["model_transform"]
print(s.split(" (")[0])
PY
}
for m in $models; do
    echo "== $m"
    # shellcheck disable=SC2046
    "$bin/model_transform" --model_name "$m" --model_def "$work/models/$m.onnx" $(flags "$m") \
        --mlir "$m.mlir" > /dev/null
    if [ "$m" = minilm_l6_s128 ]; then data=$work/text/calib; num=100; else data=$work/images/calib; num=65; fi
    "$bin/run_calibration" "$m.mlir" --dataset "$data" --input_num $num -o "${m}_cali_table" 2>&1 | tail -n 2
    for meth in percentile9999 max; do
        "$bin/run_calibration" "$m.mlir" --dataset "$data" --input_num $num --cali_method $meth \
            -o "${m}_$meth" > /dev/null 2>&1
    done
    common=(--mlir "$m.mlir" --quantize INT8 --processor bm1684x --quiet)
    "$bin/model_deploy" "${common[@]}" --calibration_table "${m}_cali_table" --model "${m}_sym.onnx"
    "$bin/model_deploy" "${common[@]}" --calibration_table "${m}_cali_table" --matmul_perchannel \
        --model "${m}_sympc.onnx"
    "$bin/model_deploy" "${common[@]}" --calibration_table "${m}_cali_table" --asymmetric \
        --matmul_perchannel --model "${m}_asympc.onnx"
    "$bin/model_deploy" "${common[@]}" --calibration_table "${m}_percentile9999" --asymmetric \
        --matmul_perchannel --model "${m}_pctasympc.onnx"
    "$bin/model_deploy" "${common[@]}" --calibration_table "${m}_max" --matmul_perchannel \
        --model "${m}_maxsympc.onnx"
done
for v in sym sympc asympc pctasympc maxsympc; do
    args=()
    for m in $models; do args+=(--qtune "$m=$out/${m}_$v.onnx"); done
    ort=()
    [ -n "${NO_ORT:-}" ] && ort=(--no-ort)
    python3 "$root/bench/quality.py" --markdown "${ort[@]}" "${args[@]}" > "quality_$v.md"
    echo "wrote $out/quality_$v.md"
done
