#!/usr/bin/env bash
# Builds everything and runs every check: formatting, lints, Rust tests,
# the Python type stubs, Python tests, and every fuzz target for a bounded
# time.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo fmt"
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace --exclude farcall-py --quiet
echo "== python package"
bash scripts/setup.sh
echo "== python type stubs"
(cd /tmp && "$OLDPWD/.venv/bin/python" -m mypy.stubtest farcall._native farcall.errors \
    farcall.serializer farcall.log farcall.across farcall.qt --allowlist "$OLDPWD/python/stubtest-allowlist.txt")
echo "== pytest"
.venv/bin/python -m pytest -q tests
echo "== fuzzing (bounded: FUZZ_SECONDS per target)"
FUZZ_SECONDS="${FUZZ_SECONDS:-30}" bash scripts/fuzz.sh
