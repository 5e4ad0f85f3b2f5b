#!/usr/bin/env bash
# Fuzzes qtune's file readers with cargo-fuzz (libFuzzer) for a given time per target.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]
#
# Targets: onnx mlir npz npy cali_table qtable image (all by default); 60 s each by default.
#
# Why cargo-fuzz with `--sanitizer none`: this machine has only the stable toolchain, and
# cargo-fuzz's default (AddressSanitizer) needs nightly. The coverage instrumentation
# libFuzzer needs (`-C passes=sancov-module` and LLVM's coverage options) is available on
# stable, so the fuzzing is still coverage-guided; what is lost is ASan's detection of
# memory errors in unsafe code, which in qtune is a few SIMD kernels and the two `unsafe fn`
# helpers (each with a debug assertion, on in this build: cargo-fuzz enables
# debug-assertions). Panics, aborts (allocation failures), timeouts and out-of-memory are all
# reported.
#
# Seeds: the committed regression corpus (crates/qtune-fuzz/corpus/<target>, small inputs)
# plus inputs taken from ../shared/workloads (a model, golden npz inputs, photos, a .mlir,
# a calibration table written by qtune on a workload, a qtable of its ops). libFuzzer's growing
# corpus stays in fuzz/corpus/<target> (not committed). Every crash is copied into the
# regression corpus as crash-<sha1>, which `cargo test -p qtune-fuzz` replays: fix it, then
# commit it.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(onnx mlir npz npy cali_table qtable image)
work=$(realpath ../shared/workloads)

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

seeds=fuzz/seeds
make_seeds() {
    mkdir -p "$seeds"/{onnx,mlir,npz,npy,cali_table,qtable,image}
    [ -f "$work/models/ppocr_v4_det640.onnx" ] && cp "$work/models/ppocr_v4_det640.onnx" "$seeds/onnx/"
    for m in efficientnet_lite0 yolox_det416 minilm_l6_s128; do
        [ -f "$work/golden/$m/input.npz" ] && cp "$work/golden/$m/input.npz" "$seeds/npz/$m.npz"
    done
    python3 - "$seeds" <<'PY'
import sys, zipfile, pathlib
seeds = pathlib.Path(sys.argv[1])
for z in sorted((seeds / "npz").glob("*.npz")):
    with zipfile.ZipFile(z) as f:
        for n in f.namelist()[:2]:
            (seeds / "npy" / f"{z.stem}_{pathlib.Path(n).name}").write_bytes(f.read(n))
PY
    for f in "$work"/images/calib/*.jpg; do cp "$f" "$seeds/image/"; break; done
    python3 - "$seeds" "$work" <<'PY'
import sys, pathlib
from PIL import Image
seeds, work = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
src = sorted((work / "images" / "calib").glob("*.jpg"))[0]
im = Image.open(src).convert("RGB").resize((48, 32))
im.save(seeds / "image" / "small.png")
im.convert("L").save(seeds / "image" / "gray.png")
im.convert("RGBA").save(seeds / "image" / "rgba.png")
im.save(seeds / "image" / "small.bmp")
im.save(seeds / "image" / "small_progressive.jpg", progressive=True, quality=80)
PY
    # A workload .mlir, its calibration table and a qtable, written by qtune itself.
    local tmp
    tmp=$(mktemp -d)
    # QTUNE_BIN: a directory with built qtune binaries (default: a release build here).
    local bin=${QTUNE_BIN:-}
    if [ -z "$bin" ]; then
        cargo build -q --release -p qtune-cli --bins
        bin=target/release
    fi
    bin=$(realpath "$bin")
    (cd "$tmp" &&
        "$bin/model_transform" --model_name m --model_def "$work/models/mobilenetv2_nsfw.onnx" \
            --input_shapes '[[1,3,224,224]]' --mlir m.mlir >/dev/null &&
        "$bin/run_calibration" m.mlir --dataset "$work/images/calib" --input_num 2 \
            --tune_num 0 --no_time -o table.txt >/dev/null) || true
    [ -f "$tmp/m.mlir" ] && cp "$tmp/m.mlir" "$seeds/mlir/mobilenetv2.mlir"
    [ -f "$tmp/table.txt" ] && cp "$tmp/table.txt" "$seeds/cali_table/mobilenetv2.txt"
    # The qtable: every third row of that table's ops, in each mode.
    [ -f "$tmp/table.txt" ] && awk '!/^#/ && NF == 4 && NR % 3 == 0 {
        m = (NR % 2) ? "F16" : "F32"; print $1, m }' "$tmp/table.txt" >"$seeds/qtable/mobilenetv2.txt"
    rm -rf "$tmp"
}
[ -d "$seeds" ] || make_seeds

summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t" "crates/qtune-fuzz/corpus/$t"
    log="fuzz/artifacts/$t.log"
    started=$(date +%s)
    # Fork mode keeps going after a crash (each is saved) until the time is up.
    cargo fuzz run --sanitizer none --fuzz-dir fuzz "$t" \
        "fuzz/corpus/$t" "crates/qtune-fuzz/corpus/$t" "$seeds/$t" -- \
        -max_total_time="$secs" -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
        -rss_limit_mb=2048 -timeout=30 -max_len=8388608 \
        -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1 || true
    execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    crashes=0
    for a in fuzz/artifacts/"$t"/{crash,oom,timeout,leak}-*; do
        [ -f "$a" ] || continue
        crashes=$((crashes + 1))
        cp "$a" "crates/qtune-fuzz/corpus/$t/$(basename "$a")"
    done
    # Fork mode checks the time between jobs: a slow job can run past it.
    summary+=("$t: ${execs:-0} executions in $(($(date +%s) - started)) s, $crashes crash/oom/timeout inputs (log $log)")
done
printf '%s\n' "${summary[@]}"
