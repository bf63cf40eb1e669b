#!/usr/bin/env bash
# lists.sh: cost per message of the policy lists: 100,000 entries against none.
#
#   bench/lists.sh [BUILD_DIR] [N]
#
# Writes an allow list and a block list of 50,000 entries each (a quarter
# each of exact URIs, *@domain and domains, CIDR networks, User-Agent
# prefixes "Name/*"), then runs spim_lists_bench (bench/lists_bench.c) over N
# (default 1,000,000) senders that match nothing, the worst case: every
# structure is probed. Prints load time and ns per message side by side,
# best of 3 runs each. Use a release build (cmake --preset release).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build/release}
n=${2:-1000000}
b=$build/bench/spim_lists_bench
[ -x "$b" ] || { echo "lists.sh: $b not found: cmake --preset release && cmake --build --preset release" >&2; exit 2; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/spim-lists.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
gen() { # PREFIX COUNT
    awk -v p="$1" -v n="$2" 'BEGIN {
        for (i = 0; i < n; i++) {
            k = i % 4
            if (k == 0) printf "uri sip:%suser%d@corp%d.example\n", p, i, i % 500
            else if (k == 1) printf "%s %s%d.example\n", (i % 8 == 1) ? "domain" : "uri *@", p, i
            else if (k == 2) printf "net %d.%d.%d.0/24\n", (p == "a" ? 10 : 20) + int(i / 65536), int(i / 256) % 256, i % 256
            else printf "ua %sClient%d/*\n", p, i
        }
    }' | sed 's/^uri \*@ /uri *@/'
}
gen a 50000 >"$tmp/allow.list"
gen b 50000 >"$tmp/block.list"
best() { # ALLOW BLOCK -> "entries load_ms ns_per_msg"
    local r best_ns="" line out=""
    for r in 1 2 3; do
        line=$("$b" "$1" "$2" "$n")
        set -- "$1" "$2"
        ns=$(echo "$line" | awk '{print $3}')
        if [ -z "$best_ns" ] || [ "$ns" -lt "$best_ns" ]; then best_ns=$ns; out=$line; fi
    done
    echo "$out"
}
none=$(best - -)
full=$(best "$tmp/allow.list" "$tmp/block.list")
printf '%-28s %12s %12s\n' "" "no lists" "100k entries"
printf '%-28s %12s %12s\n' "entries" "$(echo "$none" | awk '{print $1}')" "$(echo "$full" | awk '{print $1}')"
printf '%-28s %12s %12s\n' "load time (ms)" "$(echo "$none" | awk '{print $2}')" "$(echo "$full" | awk '{print $2}')"
printf '%-28s %12s %12s\n' "lookup per message (ns)" "$(echo "$none" | awk '{print $3}')" "$(echo "$full" | awk '{print $3}')"
printf '%-28s %12s %12s\n' "messages that matched" "$(echo "$none" | awk '{print $4}')" "$(echo "$full" | awk '{print $4}')"
echo "($n messages each, best of 3; a message's classification costs tens of microseconds)"
