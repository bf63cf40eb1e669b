#!/usr/bin/env bash
# sip-load.sh: what spimfilter costs the SIP chain, measured in one run.
#
#   bench/sip-load.sh
#
#   chain A   SIPp UAC -> Kamailio -> SIPp UAS
#   chain B   SIPp UAC -> Kamailio -> spimfilter serve -> SIPp UAS
#
# Both chains use the same Kamailio config (docs/examples/kamailio.cfg,
# -m 512 -M 16, KAM_CHILDREN UDP workers); only the hop Kamailio relays
# MESSAGE to differs (FILTER = the UAS itself in A, spimfilter in B). Each
# chain runs at rising rates for STEP_S seconds (-m rate*STEP_S -r rate
# -rp 1000 -l ... -timeout ... -nostdin). A step passes when SIPp exits 0
# (every MESSAGE got 200 or 403), its stat file shows no failed call and no
# retransmission, and it kept at least 95% of the rate. The first failing
# rate is tried once more (the machine is shared); then that chain stops.
# Prints the highest passing rate of each chain and B/A (target >= 90%).
#
# Environment:
#   BUILD_DIR  build tree with cli/spimfilter (build/release)
#   CORPUS     TSV (../shared/corpora/SMSSpamCollection.tsv); MIX=ham keeps ham only
#   RATES      rising MESSAGE/s ("500 1000 2000 3000 4000 5000 6000 7000 8000")
#   STEP_S     seconds per rate (10)
#   KAM_CHILDREN  Kamailio UDP workers (4)
#   WORKERS    spimfilter serve --workers (unset: one per core)
#   UDP_MAX    spimfilter udp_max (0). The SIPp UAS listens on UDP only, and
#              with the default (1300) spimfilter sends the larger MESSAGEs
#              on to it over TCP, which the UAS refuses (no UDP fallback):
#              those would fail for reasons that are not load.
#   PORT       base port 18600: Kamailio +60, UAC +61, spimfilter +70, UAS +80, metrics +90
# Everything is bounded: SIPp by -timeout and an outer timeout, the helpers
# of tests/integration/lib.sh by IT_WAIT; everything started is stopped by
# pid on exit.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/integration/lib.sh
. "$root/tests/integration/lib.sh"

corpus=${CORPUS:-$root/../shared/corpora/SMSSpamCollection.tsv}
rates=${RATES:-"500 1000 2000 3000 4000 5000 6000 7000 8000"}
step=${STEP_S:-10}
base=${PORT:-18600}
kport=$((base + 60)) uacport=$((base + 61)) fport=$((base + 70)) uasport=$((base + 80))
bdir=${BUILD_DIR:-$root/build/release}
bin=$bdir/cli/spimfilter

die() {
    echo "sip-load.sh: $*" >&2
    exit 2
}
[[ -x $bin ]] || die "$bin not found: cmake --preset release && cmake --build --preset release"
[[ -r $corpus ]] || die "cannot read $corpus"
command -v "${SIPP:-sipp}" >/dev/null || die "sipp not found"
command -v "${KAMAILIO:-kamailio}" >/dev/null || die "kamailio not found"

it_init || exit 2
export UAC_PORT=$uacport KAMAILIO_ARGS="-n ${KAM_CHILDREN:-4}"
inf=$IT_TMP/msgs.inf
if [[ ${MIX:-all} == ham ]]; then
    bash "$root/tests/integration/tsv2inf.sh" -l ham "$corpus" >"$inf" 2>/dev/null
else
    bash "$root/tests/integration/tsv2inf.sh" "$corpus" >"$inf" 2>/dev/null
fi
timeout 120 "$bin" train --db "$IT_TMP/db" --tsv "$corpus" >"$IT_TMP/train.log" 2>&1 ||
    die "train failed"

start_uas "$uasport" >/dev/null 2>&1 || die "UAS did not start"

# stat_col FILE NAME: the last value of column NAME of a SIPp -trace_stat CSV.
stat_col() {
    awk -F';' -v want="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == want) c = i; next }
        c { v = $c } END { print (v == "" ? "?" : v) }' "$1"
}

# one_step RATE: runs the UAC through Kamailio; sets STEP_LINE, returns 0 on pass.
one_step() {
    local r=$1 n=$(($1 * step)) rc failed retr ok elapsed achieved
    UAC_RATE=$r UAC_LIMIT=$((r > 500 ? r : 500)) UAC_TIMEOUT=$((step * 2 + 10)) \
        run_uac "127.0.0.1:$kport" "$inf" "$n" >/dev/null 2>&1
    rc=$UAC_RC
    failed=$(stat_col "$UAC_DIR/stat.csv" 'FailedCall(C)')
    retr=$(stat_col "$UAC_DIR/stat.csv" 'Retransmissions(C)')
    ok=$(stat_col "$UAC_DIR/stat.csv" 'SuccessfulCall(C)')
    # ElapsedTime(C) is HH:MM:SS:uuuuuu (SIPp 3.6)
    elapsed=$(stat_col "$UAC_DIR/stat.csv" 'ElapsedTime(C)' |
        awk -F: 'NF >= 3 { printf "%.2f", $1 * 3600 + $2 * 60 + $3 + ($4 == "" ? 0 : $4 / 1e6) }')
    achieved=$(awk -v n="$n" -v e="${elapsed:-0}" 'BEGIN { printf "%.0f", (e > 0 ? n / e : 0) }')
    STEP_LINE=$(printf '%8s %8s %8s %7s %7s %8s %9s %5s' "$r" "$n" "$ok" "$failed" "$retr" \
        "${elapsed:-?}" "$achieved" "$rc")
    [[ $rc == 0 && $failed == 0 && $retr == 0 && $ok == "$n" ]] &&
        awk -v a="$achieved" -v r="$r" 'BEGIN { exit !(a >= 0.95 * r) }'
}

# run_chain NAME: rising rates; sets BEST.
run_chain() {
    local r again=0
    BEST=0
    printf '%s\n%8s %8s %8s %7s %7s %8s %9s %5s\n' "$1" rate sent ok failed retrans elapsed achieved rc
    for r in $rates; do
        if one_step "$r"; then
            echo "$STEP_LINE"
            BEST=$r again=0
            sleep 2
            continue
        fi
        echo "$STEP_LINE"
        if [[ $again == 0 ]]; then
            again=1
            sleep 3
            if one_step "$r"; then
                echo "$STEP_LINE  (again)"
                BEST=$r again=0
                sleep 2
                continue
            fi
            echo "$STEP_LINE  (again)"
        fi
        break
    done
}

echo "sip-load: $(nproc) cores, $step s per rate, corpus $(basename "$corpus") (${MIX:-all})," \
    "Kamailio -n ${KAM_CHILDREN:-4} -m 512 -M 16, spimfilter workers ${WORKERS:-default}"

# --- chain A: Kamailio relays MESSAGE straight to the UAS ---
start_kamailio "$kport" "sip:127.0.0.1:$uasport" >/dev/null 2>&1 || die "kamailio (A) did not start"
kam_a=$KAM_PID
run_chain "A: SIPp UAC -> Kamailio -> SIPp UAS"
best_a=$BEST
it_stop "$kam_a"
sleep 1

# --- chain B: through spimfilter ---
# The metrics endpoint (when this build has one) on a port of ours, not its default.
mflag=()
if "$bin" serve --help 2>&1 | grep -q -- --metrics-listen; then
    mflag=(--metrics-listen "127.0.0.1:$((base + 90))")
fi
wflag=()
[[ -n ${WORKERS:-} ]] && wflag=(--workers "$WORKERS")
printf 'udp_max = %s\n' "${UDP_MAX:-0}" >"$IT_TMP/serve.conf"
it_spawn "$IT_TMP/serve.log" "$bin" serve --config "$IT_TMP/serve.conf" --listen "127.0.0.1:$fport" \
    --next-hop "127.0.0.1:$uasport" --db "$IT_TMP/db" --rules "$root/rules/default.rules" \
    "${wflag[@]}" "${mflag[@]}"
serve_pid=$IT_LAST_PID
wait_port "$fport" udp 10 "$serve_pid" || die "spimfilter did not start: $(tail -3 "$IT_TMP/serve.log")"
start_kamailio "$kport" "sip:127.0.0.1:$fport" >/dev/null 2>&1 || die "kamailio (B) did not start"
run_chain "B: SIPp UAC -> Kamailio -> spimfilter -> SIPp UAS"
best_b=$BEST

pct=$(awk -v a="$best_a" -v b="$best_b" 'BEGIN { printf "%.0f", (a > 0 ? 100 * b / a : 0) }')
verdict=FAIL
[[ $pct -ge 90 ]] && verdict=PASS
echo "highest rate with no failed message and no retransmission:"
echo "  A (without spimfilter): $best_a MESSAGE/s"
echo "  B (with spimfilter):    $best_b MESSAGE/s"
echo "  B/A = $pct% (target >= 90%): $verdict"
