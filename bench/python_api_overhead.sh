#!/usr/bin/env bash
# The Python API's overhead against the same work through the CLI (issue 15):
# efficientnet_lite0, kl calibration with tuning on the 65 photos of images/calib,
# alternating `run_calibration` (the release binary) and `qtune.calibrate` (the release
# wheel, installed into a scratch venv) for ROUNDS rounds; prints each time and the medians,
# and checks that both tables are the same bytes apart from their time line.
#
#   bench/python_api_overhead.sh WHEEL BIN_DIR [ROUNDS]
set -euo pipefail
wheel=$(realpath "$1")
bin=$(realpath "$2")
rounds=${3:-3}
work=$(realpath "$(dirname "$0")/../../shared/workloads")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --disable-pip-version-check numpy "$wheel"
cd "$tmp"
"$bin/model_transform" --model_name e --model_def "$work/models/efficientnet_lite0.onnx" \
    --input_shapes '[[1,3,224,224]]' --resize_dims 224,224 --pixel_format rgb \
    --mean 127,127,127 --scale 0.0078125,0.0078125,0.0078125 --mlir e.mlir >/dev/null
cli=()
api=()
calls=()
for r in $(seq "$rounds"); do
    s=$(date +%s.%N)
    "$bin/run_calibration" e.mlir --dataset "$work/images/calib" --input_num 65 -q -o cli_table
    cli+=("$(awk -v a="$(date +%s.%N)" -v b="$s" 'BEGIN {printf "%.2f", a - b}')")
    s=$(date +%s.%N)
    call=$("$tmp/venv/bin/python" -c "
import time, qtune
t = time.perf_counter()
qtune.calibrate('e.mlir', '$work/images/calib', 'api_table', input_num=65, verbose=False)
print(f'{time.perf_counter() - t:.2f}')")
    api+=("$(awk -v a="$(date +%s.%N)" -v b="$s" 'BEGIN {printf "%.2f", a - b}')")
    calls+=("$call")
    echo "round $r: cli ${cli[-1]} s, api ${api[-1]} s with interpreter start and imports, the call alone $call s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
mc=$(median "${cli[@]}")
ma=$(median "${api[@]}")
mk=$(median "${calls[@]}")
echo "median: cli $mc s; api with interpreter start $ma s (api/cli $(awk -v a="$ma" -v c="$mc" 'BEGIN {printf "%.4f", a / c}')); the call alone $mk s (call/cli $(awk -v a="$mk" -v c="$mc" 'BEGIN {printf "%.4f", a / c}'))"
if cmp -s <(grep -v '^# *gen[a-z]*ated time' cli_table) <(grep -v '^# *gen[a-z]*ated time' api_table); then
    echo "tables: identical (apart from the generated-time line)"
else
    echo "tables: DIFFER" >&2
    diff <(grep -v '^# *gen[a-z]*ated time' cli_table) <(grep -v '^# *gen[a-z]*ated time' api_table) | head >&2
    exit 1
fi
