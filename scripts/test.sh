#!/usr/bin/env bash
# test.sh: install what is missing, build with the asan preset (warnings as
# errors, AddressSanitizer and UBSan), and run every test with ctest: the
# unit tests and the integration tests through real Kamailio and SIPp.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset asan
cmake --build --preset asan -j"$(nproc)"
ctest --preset asan -j1 "$@"
