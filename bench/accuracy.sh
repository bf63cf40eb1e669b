#!/usr/bin/env bash
# accuracy.sh: hold-out accuracy of the shipped defaults on a labelled TSV.
#
#   bench/accuracy.sh [CORPUS.tsv] [FOLD|all]
#
# CORPUS is a header line, then lines of `ham|spam<TAB>text` (default: the SMS
# Spam Collection in ../shared/corpora/ beside the repository). Data lines
# (0-based, header not counted) with index % 5 == FOLD are classified, the
# others trained, with build/release/[cli/]spimfilter (or $SPIMFILTER), the default
# thresholds and rules/default.rules. FOLD defaults to 0; `all` runs the five
# folds and their mean. "tagged" counts messages tagged and not blocked.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
corpus=${1:-$root/../shared/corpora/SMSSpamCollection.tsv}
which=${2:-0}
bin=${SPIMFILTER:-$root/build/release/spimfilter}
# The CMake tree puts it under cli/ unless the lead's layout moves it up.
if [[ -z ${SPIMFILTER:-} && ! -x $bin && -x $root/build/release/cli/spimfilter ]]; then
    bin=$root/build/release/cli/spimfilter
fi
rules=${RULES:-$root/rules/default.rules}

if [[ ! -x $bin ]]; then
    echo "accuracy.sh: $bin not found: cmake --preset release && cmake --build --preset release" >&2
    exit 2
fi
if [[ ! -r $corpus ]]; then
    echo "accuracy.sh: cannot read corpus $corpus" >&2
    exit 2
fi
case $which in
all) folds="0 1 2 3 4" ;;
[0-4]) folds=$which ;;
*)
    echo "accuracy.sh: FOLD is 0..4 or all, not '$which'" >&2
    exit 2
    ;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "corpus: $corpus"
echo "rules:  $rules"
sums="0 0 0 0"
for k in $folds; do
    rm -rf "$tmp/db"
    awk -v k="$k" -v tr="$tmp/train.tsv" -v te="$tmp/test.tsv" '
        NR == 1 { print > tr; print > te; next }
        { i = NR - 2; if (i % 5 == k) print > te; else print > tr }' "$corpus"
    "$bin" train --db "$tmp/db" --tsv "$tmp/train.tsv" > /dev/null
    "$bin" classify --db "$tmp/db" --rules "$rules" --tsv "$tmp/test.tsv" --format jsonl \
        > "$tmp/out.jsonl"
    line=$(awk -v k="$k" '
        {
            label = ($0 ~ /"label":"spam"/) ? "spam" : ($0 ~ /"label":"ham"/) ? "ham" : ""
            if (label == "") { bad++; next }
            n[label]++
            if ($0 ~ /"verdict":"block"/) b[label]++
            else if ($0 ~ /"verdict":"tag"/) t[label]++
        }
        END {
            if (bad || !n["spam"] || !n["ham"]) { print "ERROR"; exit 1 }
            sb = 100 * b["spam"] / n["spam"]; st = 100 * t["spam"] / n["spam"]
            hb = 100 * b["ham"] / n["ham"];  ht = 100 * t["ham"] / n["ham"]
            printf "%.2f %.2f %.2f %.2f %d %d\n", sb, st, hb, ht, n["spam"], n["ham"]
        }' "$tmp/out.jsonl")
    read -r sb st hb ht ns nh <<< "$line"
    printf 'fold %d: spam blocked %6.2f%%  spam tagged %5.2f%%  ham blocked %5.2f%%  ham tagged %5.2f%%  (%d spam, %d ham)\n' \
        "$k" "$sb" "$st" "$hb" "$ht" "$ns" "$nh"
    sums=$(awk -v s="$sums" -v a="$sb $st $hb $ht" 'BEGIN {
        split(s, x); split(a, y); printf "%f %f %f %f", x[1]+y[1], x[2]+y[2], x[3]+y[3], x[4]+y[4] }')
done
if [[ $which == all ]]; then
    awk -v s="$sums" 'BEGIN { split(s, x)
        printf "mean:   spam blocked %6.2f%%  spam tagged %5.2f%%  ham blocked %5.2f%%  ham tagged %5.2f%%\n",
            x[1]/5, x[2]/5, x[3]/5, x[4]/5 }'
fi
