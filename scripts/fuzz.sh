#!/usr/bin/env bash
# Fuzzes every farcall decoder for a bounded time (see docs/fuzzing.md):
# builds all cargo-fuzz targets once, then runs each for FUZZ_SECONDS
# (default 30; spawn_config, a JSON line read by serde_json, gets a third
# of that) from its checked-in corpus (fuzz/corpus/<target>). Exits
# non-zero if any target crashes, hangs or runs out of memory, and says
# where the input that did it was written (fuzz/artifacts/<target>/).
#
#   FUZZ_SECONDS=60 scripts/fuzz.sh               # every target, 60 s each
#   FUZZ_TARGETS="decode_json" scripts/fuzz.sh    # some targets only
#
# Needs a nightly toolchain (libFuzzer's instrumentation); without one it
# falls back to stable with RUSTC_BOOTSTRAP=1. cargo-fuzz is installed into
# ~/.cargo/bin when missing. One fuzzing process at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
ALL_TARGETS="decode_msgpack decode_json decode_farcall native_frames zmq_request handshake spawn_config"
FUZZ_TARGETS=${FUZZ_TARGETS:-$ALL_TARGETS}
CARGO_FUZZ_VERSION=0.13.2

start=$(date +%s)
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

if cargo +nightly --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
else
    echo "== no nightly toolchain: using stable with RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

# Debug assertions and overflow checks on, AddressSanitizer on (the
# defaults); 16 codegen units build much faster on a small machine.
build_flags=(--debug-assertions --codegen-units 16)
echo "== building fuzz targets"
"${fuzz[@]}" build "${build_flags[@]}"
built=$(date +%s)

# New inputs the fuzzer finds go to a scratch corpus (kept between local
# runs, never committed); the checked-in corpus is only read.
work=fuzz/target/corpus
failed=()
for target in $FUZZ_TARGETS; do
    mkdir -p "$work/$target" "fuzz/artifacts/$target"
    log=fuzz/artifacts/$target.log
    seconds=$FUZZ_SECONDS
    if [ "$target" = spawn_config ]; then
        seconds=$(( (FUZZ_SECONDS + 2) / 3 ))
    fi
    echo "== fuzzing $target for ${seconds}s"
    set +e
    "${fuzz[@]}" run "${build_flags[@]}" "$target" "$work/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1
    status=$?
    set -e
    if [ "$status" -eq 0 ]; then
        grep -E '^Done [0-9]+ runs' "$log" || true
        continue
    fi
    failed+=("$target")
    echo "!! $target failed (exit $status); log: $log"
    # A panic: its message and Rust backtrace. Anything else (a sanitizer
    # report, a timeout, running out of memory): libFuzzer's report.
    if grep -q "panicked at" "$log"; then
        awk '/panicked at/ {on = 1} on && !/^ +#[0-9]+ 0x/ && n++ < 45' "$log"
    else
        awk '/ERROR: |ALARM: |out-of-memory/ {on = 1} on && n++ < 45' "$log"
    fi
    unit=$(grep -Eo 'Test unit written to [^ ]+' "$log" | tail -1 | sed 's/Test unit written to //')
    if [ -n "$unit" ]; then
        echo "!! crash input: $unit"
        echo "!! reproduce:   ${fuzz[*]} run $target $unit"
        echo "!! minimize:    ${fuzz[*]} tmin $target $unit"
    fi
done

end=$(date +%s)
echo "== fuzzing done: build $((built - start))s, total $((end - start))s"
if [ ${#failed[@]} -gt 0 ]; then
    echo "!! fuzz targets that failed: ${failed[*]}"
    exit 1
fi
