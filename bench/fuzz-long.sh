#!/usr/bin/env bash
# fuzz-long.sh [SECONDS]: the fuzzer of scripts/fuzz.sh for longer (default 600 s).
# Prints executions, coverage and peak RSS; fails on any crash, leak or timeout.
exec bash "$(dirname "$0")/../scripts/fuzz.sh" "${1:-600}"
