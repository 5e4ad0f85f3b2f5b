#!/usr/bin/env bash
# The test suite, self-setting-up: creates (or reuses) the project-local venv
# .venv with the Python test oracles and the package's test dependencies
# (python/requirements-test.txt), puts it first on PATH so that the Rust
# tests' `python3` oracles use it, runs the Rust tests, builds the Python
# package's wheel, installs it into the venv and runs the pytest suite.
#
#   scripts/test.sh                 # cargo test --workspace, then pytest
#   scripts/test.sh -p qtune-quant  # other `cargo test` arguments (instead of --workspace)
#   QTUNE_SKIP_RUST=1 scripts/test.sh   # the Python part only
#
# Needs cargo and python3 (with venv; Debian: python3-venv) and the
# workloads in ../shared/workloads. Exits non-zero if any part fails; each
# part still runs.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=$root/.venv
requirements=$root/python/requirements-test.txt

# --- the venv ---------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
    echo "== creating $venv"
    python3 -m venv "$venv" || {
        echo "error: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
        exit 2
    }
fi
# Install when the requirements changed since the last install (the stamp
# holds a copy of them).
stamp=$venv/.qtune-requirements
if ! cmp -s "$requirements" "$stamp"; then
    echo "== installing the test dependencies into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" || exit 2
    cp "$requirements" "$stamp"
fi
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV=$venv
hash -r

status=0

# --- Rust -------------------------------------------------------------------
if [ "${QTUNE_SKIP_RUST:-0}" != 1 ]; then
    if [ $# -eq 0 ]; then
        # The kernels are built without debug assertions and overflow
        # checks in the test profile (Cargo.toml); their own tests run
        # again with both on.
        echo "== cargo test --profile checked -p qtune-kernels -p qtune-simd"
        cargo test --profile checked -p qtune-kernels -p qtune-simd || status=1
        set -- --workspace
    fi
    echo "== cargo test $*"
    cargo test "$@" || status=1
fi

# --- the Python package -----------------------------------------------------
# The wheel is built with the `dev` profile (optimised, see Cargo.toml) into
# the same target directory as `cargo test`, so that the workspace crates
# compiled for the tests are reused and only qtune-py and pyo3 are compiled.
echo "== maturin build (dev profile)"
wheels=$root/target/wheels-test
rm -rf "$wheels"
start=$(date +%s)
if maturin build --quiet --profile dev --out "$wheels" --interpreter "$venv/bin/python"; then
    echo "wheel built in $(( $(date +%s) - start )) s: $(ls "$wheels")"
    if "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheels"/qtune-*.whl; then
        echo "== pytest python/tests"
        # From a temporary folder: the searches write their logs to the
        # current folder, and `import qtune` must find the installed package,
        # not python/qtune.
        work=$(mktemp -d)
        (cd "$work" && "$venv/bin/python" -m pytest -p no:cacheprovider --durations=5 "$root/python/tests") || status=1
        rm -rf "$work"
    else
        echo "error: installing the wheel failed" >&2
        status=1
    fi
else
    echo "error: maturin build failed" >&2
    status=1
fi
exit $status
