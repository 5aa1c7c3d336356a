#!/usr/bin/env bash
# The Python benchmark suite, side by side in one run: farcall (release
# build) next to the raw socket floors and the Python RPC peers (rpyc,
# Pyro5, multiprocessing.managers). See bench/README.md.
#
#   bench/run_python.sh                  # set up .venv-bench, build, run
#   BENCH_REF=HEAD bench/run_python.sh   # build a clean export of a commit
#                                        # instead of the working tree
#   SKIP_BUILD=1 bench/run_python.sh     # reuse the installed wheel
#
# Extra arguments go to bench/python/run.py: --quick (a smoke test),
# --only floors,farcall,peers, --no-save. With `across` first, the
# farcall.across benchmark runs instead (bench/python/across_run.py, next
# to the real across from PyPI): bench/run_python.sh across [--quick].
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="$root/.venv-bench"
py="$venv/bin/python"

if [ ! -x "$py" ]; then
    python3 -m venv "$venv"
fi
"$py" -m pip install --quiet --upgrade pip
"$py" -m pip install --quiet "maturin>=1.5,<2" numpy pyzmq msgpack rpyc Pyro5 "across==0.1.0"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    # A release wheel, installed into the bench venv. Not `maturin develop`:
    # that would overwrite the debug build that the test venv loads from
    # python/farcall/.
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    src="$root"
    if [ -n "${BENCH_REF:-}" ]; then
        src="$tmp/src"
        mkdir "$src"
        git archive "$BENCH_REF" | tar -x -C "$src"
        # its own target dir, kept between runs so that rebuilds are quick
        export CARGO_TARGET_DIR="$root/target/bench-ref"
        echo "building farcall from $(git rev-parse --short "$BENCH_REF")" >&2
        echo "$(git rev-parse --short "$BENCH_REF")" >"$venv/farcall-source"
    else
        status=""
        git diff --quiet HEAD -- crates python Cargo.toml Cargo.lock pyproject.toml || status=" + uncommitted changes"
        echo "working tree at $(git rev-parse --short HEAD)$status" >"$venv/farcall-source"
    fi
    (cd "$src" && "$venv/bin/maturin" build --release --quiet -i "$py" -o "$tmp/wheels")
    "$py" -m pip install --quiet --force-reinstall --no-deps "$tmp"/wheels/farcall-*.whl
fi

# Run from bench/python so that `import farcall` finds the installed wheel,
# never the source tree (run.py checks); children find bench_objects
# through PYTHONPATH.
cd "$root/bench/python"
export PYTHONPATH="$root/bench/python"
export FARCALL_BENCH_SOURCE="$(cat "$venv/farcall-source" 2>/dev/null || echo unknown)"
if [ "${1:-}" = across ]; then
    shift
    exec "$py" across_run.py "$@"
fi
exec "$py" run.py "$@"
