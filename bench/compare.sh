#!/usr/bin/env bash
# compare.sh: spimfilter against bogofilter on the same K folds, side by side.
#
#   bench/compare.sh [CORPUS.tsv] [K]
#
# CORPUS is a header line, then `ham|spam<TAB>text` lines (default: the SMS
# Spam Collection in ../shared/corpora/); data line i (0-based) is in fold
# i % K (K defaults to 5). For each fold both filters get a fresh store,
# are trained on the other folds and classify the fold:
#   spimfilter: `train --tsv` and `classify --tsv --format jsonl` with the
#               default config and rules/default.rules ("block" is the spam
#               decision, "tag" counts as tagged);
#   bogofilter: one message per file (an empty header, then the text),
#               registered with `-s -B` / `-n -B`, classified in bulk with
#               `-t -b` (file names on stdin), default cutoffs: S is
#               blocked, U (unsure) is tagged.
# Every command runs pinned to one core: the script pins itself to core 0
# (taskset -p) before it starts any, and each inherits that. Rates are
# messages per second of wall time of the whole commands (start-up
# included), pooled over the folds. Starting each command through taskset
# instead (PIN=each, as this script did before) also times taskset's own
# start, about 0.85 ms here: a seventh of a spimfilter fold (6 ms), a
# fiftieth of a bogofilter one (40 ms), which is the harness, not a filter.
# Each timed step runs RUNS times (default 7) for both filters alike, each
# training into a fresh store, the two filters taking turns, and the median
# time counts: the machine may be shared, and one slow run (or a slow few
# seconds) should not decide.
# bogofilter is installed with apt-get when missing (Debian package
# bogofilter).
#
#   RUNS=1 bench/compare.sh       # one run of each step, as before
#   PIN=each bench/compare.sh     # each command started through taskset -c 0
set -euo pipefail
if [[ -z ${EPOCHREALTIME:-} ]]; then
    echo "compare.sh: needs bash 5 (EPOCHREALTIME)" >&2
    exit 2
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
corpus=${1:-$root/../shared/corpora/SMSSpamCollection.tsv}
folds=${2:-5}
bin=${SPIMFILTER:-$root/build/release/cli/spimfilter}
[[ -x $bin ]] || bin=$root/build/release/spimfilter
rules=${RULES:-$root/rules/default.rules}
runs=${RUNS:-7}
[[ $runs =~ ^[1-9][0-9]?$ ]] || {
    echo "compare.sh: RUNS must be 1..99" >&2
    exit 2
}

if [[ ! -x $bin ]]; then
    echo "compare.sh: spimfilter not found (set SPIMFILTER or build the release preset)" >&2
    exit 2
fi
if ! command -v bogofilter > /dev/null; then
    echo "compare.sh: installing bogofilter" >&2
    if [[ $(id -u) != 0 ]]; then
        echo "compare.sh: bogofilter missing; run as root or apt-get install bogofilter" >&2
        exit 2
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bogofilter >&2
fi
pin=()
pinned="not pinned (no taskset)"
if command -v taskset > /dev/null; then
    case ${PIN:-self} in
    self)
        if ! taskset -pc 0 $$ > /dev/null; then
            echo "compare.sh: cannot pin this shell to core 0 (taskset -pc 0 $$)" >&2
            exit 2
        fi
        pinned="pinned to core 0"
        ;;
    each)
        pin=(taskset -c 0)
        pinned="each command started through taskset -c 0"
        ;;
    *)
        echo "compare.sh: PIN must be self or each" >&2
        exit 2
        ;;
    esac
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# pair PREP_A RUN_A PREP_B RUN_B: runs the two steps RUNS times each,
# alternating (A then B, then B then A, ...), each RUN after its PREP
# (untimed: a fresh store, the last run's output removed, so that no run
# pays for truncating another's file); prints the median wall time of RUN_A
# and of RUN_B in ns. Alternating them makes the ratio of the two robust to
# the machine's speed changing during the run (a shared host can run a
# third slower for seconds at a time). The clock is bash's own
# $EPOCHREALTIME (microseconds): reading it starts no process, so the time
# is that of the step's processes alone (`date` would add its own start-up).
pair() {
    local prep_a=$1 run_a=$2 prep_b=$3 run_b=$4 t0 t1 i
    local -a ta=() tb=()
    for ((i = 0; i < runs; i++)); do
        if ((i % 2 == 0)); then
            $prep_a; t0=${EPOCHREALTIME/[.,]/}; $run_a; t1=${EPOCHREALTIME/[.,]/}
            ta+=($(((t1 - t0) * 1000)))
            $prep_b; t0=${EPOCHREALTIME/[.,]/}; $run_b; t1=${EPOCHREALTIME/[.,]/}
            tb+=($(((t1 - t0) * 1000)))
        else
            $prep_b; t0=${EPOCHREALTIME/[.,]/}; $run_b; t1=${EPOCHREALTIME/[.,]/}
            tb+=($(((t1 - t0) * 1000)))
            $prep_a; t0=${EPOCHREALTIME/[.,]/}; $run_a; t1=${EPOCHREALTIME/[.,]/}
            ta+=($(((t1 - t0) * 1000)))
        fi
    done
    echo "$(median "${ta[@]}") $(median "${tb[@]}")"
}
median() {
    printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# The four timed steps and what each needs first; $f is the fold's directory.
s_train_prep() { rm -rf "$f/sdb"; }
s_train() { "${pin[@]}" "$bin" train --db "$f/sdb" --tsv "$f/train.tsv" > /dev/null; }
s_class_prep() { rm -f "$f/s.jsonl"; }
s_class() {
    "${pin[@]}" "$bin" classify --db "$f/sdb" --rules "$rules" --tsv "$f/test.tsv" --format jsonl \
        > "$f/s.jsonl"
}
b_train_prep() {
    rm -rf "$f/bdb"
    mkdir -p "$f/bdb"
}
b_train() { bogo_register "$f"; }
b_class_prep() { rm -f "$f/b.out"; }
b_class() { bogo_classify "$f"; }

bogo_register() {
    "${pin[@]}" bogofilter -d "$1/bdb" -s -B "$1/spam"
    "${pin[@]}" bogofilter -d "$1/bdb" -n -B "$1/ham"
}
bogo_classify() {
    "${pin[@]}" bogofilter -d "$1/bdb" -t -b < "$1/list" > "$1/b.out" || true
}

echo "corpus: $corpus, $folds folds, one core ($pinned), median of $runs runs per step"
# Pooled: spam block tag, ham block tag, counts, train msgs, train ns, test msgs, classify ns
s_acc="0 0 0 0 0 0 0 0 0 0"
b_acc="0 0 0 0 0 0 0 0 0 0"
for ((k = 0; k < folds; k++)); do
    f=$tmp/f$k
    mkdir -p "$f/spam" "$f/ham" "$f/test"
    awk -F'\t' -v k="$k" -v K="$folds" -v d="$f" '
        NR == 1 { print > (d "/train.tsv"); print > (d "/test.tsv"); next }
        {
            i = NR - 2
            if (i % K == k) {
                print > (d "/test.tsv")
                fn = sprintf("%s/test/%07d", d, i)
                print fn > (d "/list"); print $1 > (d "/labels")
            } else {
                print > (d "/train.tsv")
                fn = sprintf("%s/%s/%07d", d, $1, i)
            }
            t = $0; sub(/^[^\t]*\t/, "", t)
            printf "\n%s\n", t > fn; close(fn)
        }' "$corpus"
    ntrain=$(($(wc -l < "$f/train.tsv") - 1))
    ntest=$(wc -l < "$f/list")

    # Both filters' training, then both classifications, alternating (see pair);
    # the last training of each is the store its classifications read.
    read -r st bt < <(pair s_train_prep s_train b_train_prep b_train)
    read -r sc bc < <(pair s_class_prep s_class b_class_prep b_class)

    # spimfilter
    s=$(awk '
        { l = ($0 ~ /"label":"spam"/) ? "spam" : "ham"; n[l]++
          if ($0 ~ /"verdict":"block"/) b[l]++; else if ($0 ~ /"verdict":"tag"/) t[l]++ }
        END { printf "%d %d %d %d %d %d", b["spam"], t["spam"], b["ham"], t["ham"], n["spam"], n["ham"] }' \
        "$f/s.jsonl")
    s_acc=$(awk -v a="$s_acc" -v s="$s $ntrain $st $ntest $sc" 'BEGIN {
        split(a, x); split(s, y); for (i = 1; i <= 10; i++) printf "%.0f ", x[i] + y[i] }')

    # bogofilter: registration is its two commands, timed together
    b=$(paste -d' ' "$f/labels" "$f/b.out" | awk '
        { l = $1; n[l]++; if ($2 == "S") b[l]++; else if ($2 == "U") t[l]++ }
        END { printf "%d %d %d %d %d %d", b["spam"], t["spam"], b["ham"], t["ham"], n["spam"], n["ham"] }')
    b_acc=$(awk -v a="$b_acc" -v s="$b $ntrain $bt $ntest $bc" 'BEGIN {
        split(a, x); split(s, y); for (i = 1; i <= 10; i++) printf "%.0f ", x[i] + y[i] }')
    rm -rf "$f"
done

row() {
    awk -v name="$1" -v a="$2" 'BEGIN {
        split(a, x); sb = x[1]; st = x[2]; hb = x[3]; ht = x[4]; ns = x[5]; nh = x[6]
        tp = sb; fn = ns - sb; fp = hb; tn = nh - hb
        d = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
        mcc = d > 0 ? (tp * tn - fp * fn) / sqrt(d) : 0
        prec = (tp + fp) ? tp / (tp + fp) : 0
        printf "%-11s spam blocked %6.2f%%  spam tagged %5.2f%%  caught %6.2f%%  ham blocked %5.2f%% (%d)  ham tagged %5.2f%%  precision %.4f  MCC %.4f  train %6.0f/s  classify %6.0f/s\n",
            name, 100 * sb / ns, 100 * st / ns, 100 * (sb + st) / ns, 100 * hb / nh, hb, 100 * ht / nh,
            prec, mcc, x[7] / (x[8] / 1e9), x[9] / (x[10] / 1e9)
    }'
}
row spimfilter "$s_acc"
row bogofilter "$b_acc"
awk -v s="$s_acc" -v b="$b_acc" 'BEGIN {
    split(s, x); split(b, y)
    tr = (x[7] / x[8]) / (y[7] / y[8]); cr = (x[9] / x[10]) / (y[9] / y[10])
    printf "ratio train    spimfilter/bogofilter %5.2fx  (target >= 2x: %s)\n", tr, (tr >= 2 ? "met" : "NOT met")
    printf "ratio classify spimfilter/bogofilter %5.2fx  (target >= 5x: %s)\n", cr, (cr >= 5 ? "met" : "NOT met") }'
