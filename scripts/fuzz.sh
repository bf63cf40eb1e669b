#!/usr/bin/env bash
# fuzz.sh [SECONDS]: build the libFuzzer target (clang, ASan, UBSan) and fuzz
# the filter's whole per-message path for SECONDS (default 60), starting from
# the SIP inputs under tests/inputs/. A crash fails the run; its input is
# kept under build/fuzz/crashes/ - add it to tests/inputs/sip/ as a
# regression input (test_sip runs every file there through the filter).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
CC=clang cmake -S . -B build/fuzz -DSPIM_FUZZ=ON -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build/fuzz --target fuzz_filter -j"$(nproc)" >/dev/null
corpus=$(mktemp -d /tmp/spim-fuzz-corpus.XXXXXX)
trap 'rm -rf "$corpus" /tmp/spim-fuzz-??????' EXIT
cp tests/inputs/sip/* "$corpus/"
mkdir -p build/fuzz/crashes
echo "fuzz: ${secs}s over $(ls "$corpus" | wc -l) seed inputs"
build/fuzz/tests/fuzz/fuzz_filter -max_total_time="$secs" -max_len=8192 -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=build/fuzz/crashes/ \
    "$corpus" 2>&1 | grep -E '^(#[0-9]+.*(DONE|pulse)|stat::number_of_executed_units|stat::peak_rss|==[0-9]+==|SUMMARY|artifact)' || true
if [ -n "$(find build/fuzz/crashes -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' | head -1)" ]; then
    echo "fuzz: FAILED, inputs in build/fuzz/crashes/" >&2
    exit 1
fi
echo "fuzz: no crash in ${secs}s"
