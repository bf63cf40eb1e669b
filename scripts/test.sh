#!/usr/bin/env bash
# test.sh: install what is missing, build with the asan preset (warnings as
# errors, AddressSanitizer and UBSan), and run every test with ctest: the
# unit tests and the integration tests through real Kamailio and SIPp. Then
# the same tests on the release build (gcc -O2), whose spimfilter is the
# static program that runs the network commands in spimfilter-serve
# (docs/dependencies.md): what scripts/demo.sh and an install use.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset asan
cmake --build --preset asan -j"$(nproc)"
ctest --preset asan -j1 "$@"
cmake --preset release >/dev/null
cmake --build --preset release -j"$(nproc)" >/dev/null
ctest --preset release -j"$(nproc)" "$@"
