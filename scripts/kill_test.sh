#!/usr/bin/env bash
# kill -9 at random moments of every command that writes files, then checks what is left.
#
#   scripts/kill_test.sh [KILLS_PER_COMMAND] [BIN_DIR] [COMMAND ...]
#
# For each command: one uninterrupted run gives the reference outputs and its duration T;
# then KILLS runs (default 20) are each killed with SIGKILL after a random delay in (0, T),
# each in a fresh directory. Every output must then be absent or byte-identical to the
# reference (a "partial" file is one that exists and differs), and no temporary file may be
# left (`.<name>.tmp*`). For the commands with --resume, the last killed run whose journal
# holds records is resumed and its outputs compared with the reference. Prints one line per command and exits 1 if any
# partial file, leftover temporary or resume mismatch was found.
#
# Commands: transform calibrate search_threshold search_qtable fast_search deploy run_qtable
# sensitive fp_forward bc we_bc (default: all). Workload: mobilenetv2_nsfw, small sample counts.
# Choose commands by naming them after the first two arguments, e.g.
#   scripts/kill_test.sh 20 target/debug run_qtable search_threshold bc we_bc
# The resume column says how many journal records the resumed run found (a kill before
# the first record leaves nothing to resume from: the run then starts over).
set -uo pipefail
cd "$(dirname "$0")/.."
kills=${1:-20}
bin=$(realpath "${2:-target/release}")
shift 2 2>/dev/null || shift $#
cmds=("$@")
[ ${#cmds[@]} -eq 0 ] && cmds=(transform calibrate search_threshold search_qtable fast_search deploy run_qtable sensitive fp_forward bc we_bc)
work=$(realpath ../shared/workloads)
root=$(mktemp -d /tmp/qtune-kill.XXXXXX)
calib="$work/images/calib"

# The shared inputs: the .mlir, its table.
base="$root/base"
mkdir -p "$base"
(cd "$base" &&
    "$bin/model_transform" --model_name m --model_def "$work/models/mobilenetv2_nsfw.onnx" \
        --input_shapes '[[1,3,224,224]]' --resize_dims 256,256 --mean 123.675,116.28,103.53 \
        --scale 0.0171,0.0175,0.0174 --pixel_format rgb --mlir m.mlir >/dev/null &&
    "$bin/run_calibration" m.mlir --dataset "$calib" --input_num 20 --no_time -q -o table >/dev/null) ||
    { echo "setup failed" >&2; exit 2; }

# name: outputs checked after each kill | "no", or the outputs also compared after --resume
# | command line. (run_calibration --search writes the shape-ops qtable at start-up, as
# TPU-MLIR does, and its final qtable at the end: a killed search_qtable leaves the
# start-up one, a whole file that is not the result, so its qtable is compared only after
# --resume. The bias corrections write -o once, after the corrected model; --we writes its
# model before.)
spec() {
    case $1 in
    transform) echo "t.mlir t_top_f32_all_weight.npz|no|$bin/model_transform --model_name t --model_def $work/models/mobilenetv2_nsfw.onnx --input_shapes [[1,3,224,224]] --mlir t.mlir" ;;
    calibrate) echo "out_table|no|$bin/run_calibration m.mlir --dataset $calib --input_num 20 --no_time -q -o out_table" ;;
    search_threshold) echo "st st_kl_tune|new_cali_table.txt|$bin/run_calibration m.mlir --dataset $calib --input_num 12 --inference_num 3 --tune_num 2 --search search_threshold --processor bm1684x --no_time -q -o st" ;;
    search_qtable) echo "sq new_cali_table.txt|sq_q|$bin/run_calibration m.mlir --dataset $calib --input_num 12 --inference_num 3 --tune_num 2 --quantize_method_list KL,MSE --search search_qtable --expected_cos 0.9999 --processor bm1684 --no_time -q --quantize_table sq_q -o sq" ;;
    deploy) echo "d.onnx|no|$bin/model_deploy --mlir m.mlir --quantize INT8 --processor bm1684x --calibration_table table --model d.onnx" ;;
    run_qtable) echo "rq full_loss_table.txt|rq|$bin/run_qtable m.mlir --dataset $calib --input_num 4 --calibration_table table --processor bm1684x --expected_cos 0.9999 --min_layer_cos 0.999 --no_time -q -o rq" ;;
    sensitive) echo "sl new_cali_table.txt|sl|$bin/run_sensitive_layer m.mlir --dataset $calib --input_num 8 --inference_num 3 --calibration_table table --processor bm1684 --no_time -q -o sl" ;;
    fast_search) echo "fs|fs_q|$bin/run_calibration m.mlir --dataset $calib --input_num 8 --inference_num 2 --tune_num 2 --search fast_search --expected_cos 0.99999 --processor bm1684x --no_time -q --quantize_table fs_q -o fs" ;;
    bc) echo "bt bt_bc.mlir bt_bc_weight.npz|bt|$bin/run_calibration m.mlir --dataset $calib --input_num 8 --tune_num 2 --bc --bc_inference_num 2 --min_layer_cos 0.9999 --expected_cos 0.99999 --processor bm1684x --no_time -q -o bt" ;;
    we_bc) echo "wt wt_we.mlir wt_we_weight.npz wt_we_bc.mlir wt_we_bc_weight.npz|wt|$bin/run_calibration m.mlir --dataset $calib --input_num 8 --tune_num 2 --we --bc --bc_inference_num 2 --min_layer_cos 0.9999 --expected_cos 0.99999 --processor bm1684x --no_time -q -o wt" ;;
    fp_forward) echo "fq|no|$bin/fp_forward m.mlir --processor bm1684x --no_time --fpfwd_outputs $(awk '!/^#/ && NF == 4 {n++; if (n == 10) print $1}' "$base/table") -o fq" ;;
    esac
}

fresh() {
    rm -rf "$1" && mkdir -p "$1" && cp "$base/m.mlir" "$base/m_top_f32_all_weight.npz" "$base/table" "$1/"
}

status=0
for c in "${cmds[@]}"; do
    IFS='|' read -r outs resumable line <<<"$(spec "$c")"
    ref="$root/$c.ref"
    fresh "$ref"
    t0=$(date +%s.%N)
    (cd "$ref" && $line >/dev/null 2>&1) || { echo "$c: the reference run failed" >&2; status=1; continue; }
    t=$(echo "$(date +%s.%N) - $t0" | bc)
    partial=0 stray=0 complete=0 absent=0 keep="" keep_recs=0
    for k in $(seq 1 "$kills"); do
        d="$root/$c.$k"
        fresh "$d"
        delay=$(python3 -c "import random; print(f'{random.uniform(0, $t):.3f}')")
        (cd "$d" && exec $line >/dev/null 2>&1) &
        pid=$!
        sleep "$delay"
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        for o in $outs; do
            if [ ! -e "$d/$o" ]; then
                absent=$((absent + 1))
            elif cmp -s "$d/$o" "$ref/$o"; then
                complete=$((complete + 1))
            else
                partial=$((partial + 1))
                echo "  $c kill $k after ${delay}s: partial $o" >&2
            fi
        done
        n=$(find "$d" -name '.*.tmp*' | wc -l)
        stray=$((stray + n))
        # The run resumed at the end: the last one whose journal holds records (the last
        # run when none does).
        recs=$(cat "$d"/*.journal 2>/dev/null | grep -vc '^#')
        if [ "$resumable" != no ] && { [ -z "$keep" ] || [ "$recs" -gt 0 ] || [ "$keep_recs" -eq 0 ]; }; then
            [ -n "$keep" ] && rm -rf "$keep"
            keep=$d keep_recs=$recs
        else
            rm -rf "$d"
        fi
    done
    resume="-"
    if [ "$resumable" != no ]; then
        d=$keep recs=$keep_recs
        if (cd "$d" && $line --resume >/dev/null 2>&1); then
            resume="identical (from $recs journal records)"
            for o in $outs $resumable; do
                cmp -s "$d/$o" "$ref/$o" || { resume="DIFFERS ($o)"; status=1; }
            done
        else
            resume=FAILED
            status=1
        fi
    fi
    [ $partial -eq 0 ] && [ "$stray" -eq 0 ] || status=1
    printf '%s: %d kills in (0, %.1f s): %d outputs absent, %d complete, %d partial, %d temporaries left; resume: %s\n' \
        "$c" "$kills" "$t" $absent $complete $partial "$stray" "$resume"
done
rm -rf "$root"
exit $status
