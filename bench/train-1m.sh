#!/usr/bin/env bash
# train-1m.sh: train a generated corpus of N messages (default 1,000,000)
# into a fresh store and report the peak RSS, the time and `db stats`.
#
#   bench/train-1m.sh [N] [SEED.tsv]
#
# The corpus is made from SEED (default: the SMS Spam Collection): each
# message is a random seed message of the same label with two of its words
# replaced by random words of the seed vocabulary and every digit redrawn,
# so phone numbers, amounts and word pairs keep changing as in live traffic.
# It is trained in one `spimfilter train --tsv` run, which commits in batches;
# the target is a peak RSS under 200 MB with the map growing by itself from
# the 64 MiB default.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
n=${1:-1000000}
seed=${2:-$root/../shared/corpora/SMSSpamCollection.tsv}
bin=${SPIMFILTER:-$root/build/release/cli/spimfilter}
[[ -x $bin ]] || bin=$root/build/release/spimfilter
if [[ ! -x $bin ]]; then
    echo "train-1m.sh: spimfilter not found (set SPIMFILTER or build the release preset)" >&2
    exit 2
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

awk -F'\t' -v n="$n" 'BEGIN { srand(42) }
    NR == 1 { next }
    {
        lab[NR] = $1; txt[NR] = $2; m = NR
        k = split($2, w, " ")
        for (i = 1; i <= k; i++) vocab[nv++] = w[i]
    }
    END {
        print "label\ttext"
        for (j = 0; j < n; j++) {
            r = 2 + int(rand() * (m - 1))
            k = split(txt[r], w, " ")
            for (c = 0; c < 2 && k > 0; c++) w[1 + int(rand() * k)] = vocab[int(rand() * nv)]
            s = w[1]
            for (i = 2; i <= k; i++) s = s " " w[i]
            out = ""
            while (match(s, /[0-9]/)) {
                out = out substr(s, 1, RSTART - 1) int(rand() * 10)
                s = substr(s, RSTART + 1)
            }
            print lab[r] "\t" out s
        }
    }' "$seed" > "$tmp/corpus.tsv"
echo "corpus: $n generated messages, $(du -m "$tmp/corpus.tsv" | cut -f1) MB"

/usr/bin/time -f "%M %e" -o "$tmp/time" "$bin" train --db "$tmp/db" --tsv "$tmp/corpus.tsv"
read -r rss secs < "$tmp/time"
"$bin" db stats --db "$tmp/db"
awk -v r="$rss" -v s="$secs" -v n="$n" 'BEGIN {
    printf "peak RSS %.1f MB (target < 200 MB), %.1f s, %.0f messages/s\n", r / 1024, s, n / s }'
