#!/usr/bin/env bash
# install-deps.sh: every package spimfilter needs to build, test and run
# its demo, from Debian 12's own archive (nothing else is downloaded).
# Why each one is there: docs/dependencies.md. Run as root.
set -euo pipefail

packages=(
    build-essential cmake pkg-config     # the build
    libosip2-dev                         # SIP parsing (filter/)
    libhyperscan-dev                     # multi-pattern rules (classifier/)
    liblmdb-dev lmdb-utils               # the store (store/), mdb_stat for operators
    libutf8proc-dev                      # Unicode NFKC and case folding (classifier/)
    libicu-dev                           # confusables table generated at build time (classifier/)
    libxxhash-dev                        # token hashing (common/)
    libinih-dev                          # the INI config file (cli/)
    libmicrohttpd-dev                    # the Prometheus metrics endpoint of serve (cli/metrics_http.c)
    libcmocka-dev                        # unit tests
    kamailio sip-tester                  # the SIP proxy and SIPp for integration tests and demo
    clamav-daemon clamav                 # clamd and sigtool: antivirus tests (test_clamd.sh); no freshclam run
    iproute2 procps                      # ss and ps, used by the test scripts
    systemd man-db                       # systemd-analyze and man: test_packaging.sh checks the unit and page
    clang libclang-rt-14-dev             # the libFuzzer target (scripts/fuzz.sh)
    clang-format                         # the style check in CI
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#packages[@]} packages already installed"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing ${missing[*]}; run as root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
