#!/usr/bin/env bash
# test_failover.sh: what Kamailio does when spimfilter is down, and the
# dispatcher spreading MESSAGEs over two spimfilter instances, end to end:
#
#   SIPp UAC -> Kamailio (docs/examples/kamailio.cfg) -> spimfilter serve -> SIPp UAS
#
#   A. fail-closed (the default): with the filter up, ham gets 200 and spam
#      403; with it down, the UAC gets 503 and nothing is delivered.
#   B. fail-open (-A FAIL_OPEN): with the filter up spam still gets 403;
#      with it down, spam is delivered unfiltered (200, at the receiver).
#   C. dispatcher (-A WITH_DISPATCHER, a dispatcher.list of two
#      instances, each forwarding to its own receiver so that deliveries
#      show which instance took a message; blocked ones are in each
#      instance's log and quarantine). Eleven senders, 30 MESSAGEs a batch:
#      1. both up: both instances get traffic, each sender's messages all
#         land on one instance, every MESSAGE gets its verdict (200 ham,
#         403 spam, as `spimfilter classify` says);
#      2. instance 2 killed: the same batch, every MESSAGE still gets 200 or
#         403 (the ones hashed to instance 2 fail over to instance 1 after
#         the branch timer), every ham is delivered once, by instance 1;
#         Kamailio reports instance 2 down;
#      3. instance 2 restarted: the OPTIONS probes bring it back (Kamailio
#         logs it up) and the senders go back to the instance they had in 1;
#      4. both instances down: no instance left, fail-closed 503, nothing
#         delivered.
#
# Loopback only, ports 19060 (Kamailio), 19061 (UAC), 19070/19071
# (spimfilter 1/2), 19080/19081 (receivers 1/2). Takes about a minute.
#
#   SPIMFILTER=/tmp/build/cli/spimfilter tests/integration/test_failover.sh
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
src=$IT_SRC_DIR
bin=${SPIMFILTER:-$src/build/dev/cli/spimfilter}
corpus=$src/corpora/im.tsv
KAM=19060
F1=19070
F2=19071
R1=19080
R2=19081
export UAC_PORT=19061
fails=0

# not CMD...: succeed when CMD fails (for check).
not() { ! "$@"; }
# all COND1 -- COND2 ...: each test(1) expression between -- must hold.
all() {
    local a=()
    while [ $# -gt 0 ]; do
        if [ "$1" = -- ]; then
            test "${a[@]}" || return 1
            a=()
        else
            a+=("$1")
        fi
        shift
    done
    [ ${#a[@]} = 0 ] || test "${a[@]}"
}

[ -x "$bin" ] || { echo "test_failover: no spimfilter binary at $bin" >&2; exit 1; }
it_init || exit 1

# start_filter PORT NEXT_HOP_PORT DB LOG: one spimfilter instance; sets FPID.
start_filter() {
    it_port_free "$1" || return 1
    it_spawn "$4" "$bin" serve --listen "127.0.0.1:$1" --next-hop "127.0.0.1:$2" \
        --db "$3" --workers 1 --log-level debug
    FPID=$IT_LAST_PID
    if ! wait_port "$1" udp 10 "$FPID"; then
        it_fail "spimfilter did not start on udp 127.0.0.1:$1" "$4"
        return 1
    fi
    it_log "spimfilter pid $FPID on 127.0.0.1:$1 -> 127.0.0.1:$2 (db $3)"
}

# wait_log FILE REGEX [SECONDS]: wait until FILE has a line matching REGEX.
wait_log() {
    local i
    for ((i = 0; i < ${3:-10} * 10; i++)); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# lines FILE: its number of lines (0 when missing).
lines() {
    if [ -e "$1" ]; then wc -l <"$1"; else echo 0; fi
}

for db in a c1 c2; do
    "$bin" train --db "$IT_TMP/db-$db" --tsv "$corpus" >/dev/null || exit 1
done

# The texts: ham and spam from the training corpus, kept only where the
# classifier gives the verdict of the label (so every expected verdict is
# known exactly).
"$bin" classify --db "$IT_TMP/db-a" --tsv "$corpus" --format jsonl >"$IT_TMP/classify.jsonl" || exit 1
awk -F'\t' 'NR > 1' "$corpus" | paste - "$IT_TMP/classify.jsonl" |
    awk -F'\t' '($1 == "ham" && $3 ~ /"verdict":"deliver"/) ||
                ($1 == "spam" && $3 ~ /"verdict":"block"/) { print $1 "\t" $2 }' \
        >"$IT_TMP/agreed.tsv"
{ printf 'label\ttext\n'; grep -m 24 '^ham' "$IT_TMP/agreed.tsv"; } >"$IT_TMP/ham.tsv"
{ printf 'label\ttext\n'; grep -m 6 '^spam' "$IT_TMP/agreed.tsv"; } >"$IT_TMP/spam.tsv"
"$here/tsv2inf.sh" -n 2 "$IT_TMP/ham.tsv" >"$IT_TMP/ham2.inf" || exit 1
"$here/tsv2inf.sh" -n 2 "$IT_TMP/spam.tsv" >"$IT_TMP/spam2.inf" || exit 1
nham=$(($(wc -l <"$IT_TMP/ham.tsv") - 1))
nspam=$(($(wc -l <"$IT_TMP/spam.tsv") - 1))
check "corpus: 24 ham and 6 spam texts with agreed verdicts (got $nham, $nspam)" \
    all "$nham" = 24 -- "$nspam" = 6

# ---------------------------------------------------------------------
# A. Fail-closed.
it_log "=== A. fail-closed"
start_uas "$R1" || exit 1
start_filter "$F1" "$R1" "$IT_TMP/db-a" "$IT_TMP/serve-a1.log" || exit 1
start_kamailio "$KAM" "sip:127.0.0.1:$F1" || exit 1

run_uac "127.0.0.1:$KAM" "$IT_TMP/ham2.inf" 2
check "A, filter up: 2 ham x 200 (rc $UAC_RC, got $UAC_N200)" all "$UAC_RC" = 0 -- "$UAC_N200" = 2
run_uac "127.0.0.1:$KAM" "$IT_TMP/spam2.inf" 2
check "A, filter up: 2 spam x 403 (rc $UAC_RC, got $UAC_N403)" all "$UAC_RC" = 0 -- "$UAC_N403" = 2
sleep 0.3
check "A, filter up: the 2 ham delivered (got $(grep -c '^DELIVERED ' "$UAS_LOG"))" \
    [ "$(grep -c '^DELIVERED ' "$UAS_LOG")" = 2 ]

it_stop "$FPID"
UAC_TIMEOUT=15 run_uac "127.0.0.1:$KAM" "$IT_TMP/ham2.inf" 2
check "A, filter down: sipp fails (rc $UAC_RC)" [ "$UAC_RC" != 0 ]
check "A, filter down: no 200/403 (got $UAC_N200/$UAC_N403)" [ "$((UAC_N200 + UAC_N403))" = 0 ]
check "A, filter down: the UAC got 503" grep -q 'SIP/2.0 503' "$UAC_DIR/errors.log"
sleep 0.3
check "A, filter down: nothing more delivered" [ "$(grep -c '^DELIVERED ' "$UAS_LOG")" = 2 ]
check "A, filter down: kamailio logged fail-closed" grep -q 'fail-closed: 503' "$KAM_LOG"
IT_FAILED=0 # that sipp failure was expected
it_stop "$KAM_PID"

# ---------------------------------------------------------------------
# B. Fail-open.
it_log "=== B. fail-open"
start_filter "$F1" "$R1" "$IT_TMP/db-a" "$IT_TMP/serve-a2.log" || exit 1
start_kamailio "$KAM" "sip:127.0.0.1:$F1" -A FAIL_OPEN || exit 1
run_uac "127.0.0.1:$KAM" "$IT_TMP/spam2.inf" 2
check "B, filter up: spam still 2 x 403 (rc $UAC_RC, got $UAC_N403)" all "$UAC_RC" = 0 -- "$UAC_N403" = 2
sleep 0.3
check "B, filter up: no spam delivered" [ "$(grep -c '^DELIVERED ' "$UAS_LOG")" = 2 ]

it_stop "$FPID"
UAC_TIMEOUT=15 run_uac "127.0.0.1:$KAM" "$IT_TMP/spam2.inf" 2
check "B, filter down: 2 x 200 (rc $UAC_RC, got $UAC_N200)" all "$UAC_RC" = 0 -- "$UAC_N200" = 2
sleep 0.3
check "B, filter down: the 2 spam delivered unfiltered (got $(($(grep -c '^DELIVERED ' "$UAS_LOG") - 2)))" \
    [ "$(grep -c '^DELIVERED ' "$UAS_LOG")" = 4 ]
tail -n +2 "$IT_TMP/spam2.inf" | sort >"$IT_TMP/spam2.sorted"
sed -n 's/^DELIVERED [^ ]* //p' "$UAS_LOG" | tail -n 2 | sort >"$IT_TMP/open.delivered"
check "B, filter down: what arrived is the spam text" cmp -s "$IT_TMP/spam2.sorted" "$IT_TMP/open.delivered"
check "B, filter down: kamailio logged fail-open" grep -q 'fail-open: relaying unfiltered' "$KAM_LOG"
it_stop "$KAM_PID"
it_stop "$UAS_PID"

# ---------------------------------------------------------------------
# C. Dispatcher over two instances.
it_log "=== C. dispatcher"
list=$IT_TMP/dispatcher.list
{
    echo "# test_failover.sh: two spimfilter instances in set 1"
    echo "1 sip:127.0.0.1:$F1 0 0 duid=spim1"
    echo "1 sip:127.0.0.1:$F2 0 0 duid=spim2"
} >"$list"

# 11 senders: s01..s08 send 3 ham each, x1..x3 2 spam each, interleaved.
# tsv2inf.sh makes the texts safe for an injection file; the sender is
# prepended as field0.
"$here/tsv2inf.sh" "$IT_TMP/ham.tsv" >"$IT_TMP/ham.inf" || exit 1
"$here/tsv2inf.sh" "$IT_TMP/spam.tsv" >"$IT_TMP/spam.inf" || exit 1
{
    echo SEQUENTIAL
    awk '
        NR == FNR { if (FNR > 1) ham[nh++] = $0; next }
        FNR > 1 { spam[ns++] = $0 }
        END {
            h = 0; s = 0
            for (round = 0; round < 3; round++) {
                for (i = 1; i <= 8; i++) printf "s%02d;%s\n", i, ham[h++]
                if (round < 2) for (i = 1; i <= 3; i++) printf "x%d;%s\n", i, spam[s++]
            }
        }' "$IT_TMP/ham.inf" "$IT_TMP/spam.inf"
} >"$IT_TMP/senders.inf"
nmsg=$(($(wc -l <"$IT_TMP/senders.inf") - 1))
check "C: 30 messages from 11 senders (got $nmsg)" [ "$nmsg" = 30 ]
tail -n +2 "$IT_TMP/ham.inf" | sort >"$IT_TMP/c-ham.sorted"

start_uas "$R2" "$here/uas_sender.xml" || exit 1
U2=$UAS_LOG
start_uas "$R1" "$here/uas_sender.xml" || exit 1
U1=$UAS_LOG
start_filter "$F1" "$R1" "$IT_TMP/db-c1" "$IT_TMP/serve-c1.log" || exit 1
P1=$FPID
S1=$IT_TMP/serve-c1.log
start_filter "$F2" "$R2" "$IT_TMP/db-c2" "$IT_TMP/serve-c2.log" || exit 1
P2=$FPID
S2=$IT_TMP/serve-c2.log
start_kamailio "$KAM" "sip:127.0.0.1:$F1" -A WITH_DISPATCHER \
    -A "DS_LIST=\"$list\"" -A DS_PING_INTERVAL=1 || exit 1
# Let the first probes go out and be answered (both instances stay up).
sleep 1.5
check "C: no instance reported down at start" not grep -q 'dispatcher: spimfilter .* down' "$KAM_LOG"

# phase_map TAG U1_FROM U2_FROM S1_LOG S1_FROM S2_LOG S2_FROM: after a
# batch, write $IT_TMP/map-TAG ("INSTANCE SENDER" for every message each
# instance took, from the line numbers given on), and set HAM1 HAM2 (ham
# delivered by each) and SPAM1 SPAM2 (spam blocked by each).
phase_map() {
    local tag=$1 out=$IT_TMP/map-$1
    tail -n +"$(($2 + 1))" "$U1" >"$IT_TMP/u1-$tag"
    tail -n +"$(($3 + 1))" "$U2" >"$IT_TMP/u2-$tag"
    tail -n +"$(($5 + 1))" "$4" | grep 'blocked MESSAGE' >"$IT_TMP/b1-$tag"
    tail -n +"$(($7 + 1))" "$6" | grep 'blocked MESSAGE' >"$IT_TMP/b2-$tag"
    HAM1=$(grep -c '^DELIVERED ' "$IT_TMP/u1-$tag")
    HAM2=$(grep -c '^DELIVERED ' "$IT_TMP/u2-$tag")
    SPAM1=$(sed -n 's/.*call-id=\([^ ]*\).*/\1/p' "$IT_TMP/b1-$tag" | sort -u | wc -l)
    SPAM2=$(sed -n 's/.*call-id=\([^ ]*\).*/\1/p' "$IT_TMP/b2-$tag" | sort -u | wc -l)
    {
        awk '/^DELIVERED / { print "1 " $3 }' "$IT_TMP/u1-$tag"
        awk '/^DELIVERED / { print "2 " $3 }' "$IT_TMP/u2-$tag"
        sed -n 's/.*from=<sip:\([^@]*\)@.*/1 \1/p' "$IT_TMP/b1-$tag"
        sed -n 's/.*from=<sip:\([^@]*\)@.*/2 \1/p' "$IT_TMP/b2-$tag"
    } | sort -u >"$out"
    sed -n 's/^DELIVERED [^ ]* [^ ]* //p' "$IT_TMP/u1-$tag" "$IT_TMP/u2-$tag" |
        sort >"$IT_TMP/ham-$tag.sorted"
    it_log "batch $tag: instance 1 took $HAM1 ham + $SPAM1 spam, instance 2 $HAM2 ham + $SPAM2 spam;" \
        "senders on 1: $(awk '$1 == 1 { printf "%s ", $2 }' "$out")| on 2: $(awk '$1 == 2 { printf "%s ", $2 }' "$out")"
}

# C1. Both instances up.
it_log "--- C1: two instances"
o1=$(lines "$U1") o2=$(lines "$U2") b1=$(lines "$S1") b2=$(lines "$S2")
UAC_SF=$here/uac_sender.xml UAS_PORT=$R1 run_uac "127.0.0.1:$KAM" "$IT_TMP/senders.inf" "$nmsg"
check "C1: sipp finished cleanly (rc $UAC_RC)" [ "$UAC_RC" = 0 ]
check "C1: 24 x 200, 6 x 403 (got $UAC_N200, $UAC_N403)" all "$UAC_N200" = 24 -- "$UAC_N403" = 6
sleep 0.5
phase_map c1 "$o1" "$o2" "$S1" "$b1" "$S2" "$b2"
check "C1: instance 1 got traffic ($HAM1 ham, $SPAM1 spam)" [ "$((HAM1 + SPAM1))" -gt 0 ]
check "C1: instance 2 got traffic ($HAM2 ham, $SPAM2 spam)" [ "$((HAM2 + SPAM2))" -gt 0 ]
check "C1: every ham delivered once ($((HAM1 + HAM2)))" cmp -s "$IT_TMP/ham-c1.sorted" "$IT_TMP/c-ham.sorted"
check "C1: every spam blocked once ($((SPAM1 + SPAM2)))" [ "$((SPAM1 + SPAM2))" = 6 ]
nsend=$(awk '{ print $2 }' "$IT_TMP/map-c1" | sort -u | wc -l)
nsplit=$(awk '{ print $2 }' "$IT_TMP/map-c1" | sort | uniq -d | wc -l)
check "C1: all 11 senders seen (got $nsend)" [ "$nsend" = 11 ]
check "C1: each sender on one instance only ($nsplit split)" [ "$nsplit" = 0 ]
q1=$("$bin" quarantine list --db "$IT_TMP/db-c1" --format jsonl | wc -l)
q2=$("$bin" quarantine list --db "$IT_TMP/db-c2" --format jsonl | wc -l)
check "C1: each instance quarantined the spam it blocked ($q1 = $SPAM1, $q2 = $SPAM2)" \
    all "$q1" = "$SPAM1" -- "$q2" = "$SPAM2"
on2=$(awk '$1 == 2 { printf "%s ", $2 }' "$IT_TMP/map-c1")

# C2. Instance 2 killed: its senders fail over to instance 1.
it_log "--- C2: instance 2 killed"
it_stop "$P2"
o1=$(lines "$U1") o2=$(lines "$U2") b1=$(lines "$S1")
UAC_SF=$here/uac_sender.xml UAS_PORT=$R1 run_uac "127.0.0.1:$KAM" "$IT_TMP/senders.inf" "$nmsg"
check "C2: sipp finished cleanly, no message lost (rc $UAC_RC)" [ "$UAC_RC" = 0 ]
check "C2: 24 x 200, 6 x 403 (got $UAC_N200, $UAC_N403)" all "$UAC_N200" = 24 -- "$UAC_N403" = 6
sleep 0.5
phase_map c2 "$o1" "$o2" "$S1" "$b1" "$S2" "$(lines "$S2")"
check "C2: instance 1 took everything ($HAM1 ham, $SPAM1 spam)" all "$HAM1" = 24 -- "$SPAM1" = 6
check "C2: nothing reached receiver 2 ($HAM2)" [ "$HAM2" = 0 ]
check "C2: every ham delivered exactly once" cmp -s "$IT_TMP/ham-c2.sorted" "$IT_TMP/c-ham.sorted"
check "C2: kamailio took instance 2 down" \
    grep -q "dispatcher: spimfilter sip:127.0.0.1:$F2 down\|filter sip:127.0.0.1:$F2 did not answer" "$KAM_LOG"
nfo=$(grep -c "failing over to filter sip:127.0.0.1:$F1" "$KAM_LOG")
it_log "C2: $nfo MESSAGE(s) failed over after the branch timer, the others went to instance 1 directly"
check "C2: no 503 from kamailio" not grep -q 'fail-closed' "$KAM_LOG"

# C3. Instance 2 back: the probes bring it up, senders return.
it_log "--- C3: instance 2 restarted"
S2=$IT_TMP/serve-c2b.log
start_filter "$F2" "$R2" "$IT_TMP/db-c2" "$S2" || exit 1
P2=$FPID
check "C3: kamailio saw instance 2 up again (OPTIONS probe)" \
    wait_log "$KAM_LOG" "dispatcher: spimfilter sip:127.0.0.1:$F2 up" 10
o1=$(lines "$U1") o2=$(lines "$U2") b1=$(lines "$S1")
UAC_SF=$here/uac_sender.xml UAS_PORT=$R1 run_uac "127.0.0.1:$KAM" "$IT_TMP/senders.inf" "$nmsg"
check "C3: sipp finished cleanly (rc $UAC_RC)" [ "$UAC_RC" = 0 ]
check "C3: 24 x 200, 6 x 403 (got $UAC_N200, $UAC_N403)" all "$UAC_N200" = 24 -- "$UAC_N403" = 6
sleep 0.5
phase_map c3 "$o1" "$o2" "$S1" "$b1" "$S2" 0
check "C3: every sender back on its instance of C1" cmp -s "$IT_TMP/map-c1" "$IT_TMP/map-c3"
check "C3: every ham delivered once" cmp -s "$IT_TMP/ham-c3.sorted" "$IT_TMP/c-ham.sorted"
check "C3: both spimfilter instances still running" kill -0 "$P1" "$P2"
it_log "C: senders of instance 2 were: $on2"

# C4. Both instances down: nothing left to fail over to, so fail-closed.
it_log "--- C4: both instances down"
it_stop "$P2"
it_stop "$P1"
o1=$(lines "$U1") o2=$(lines "$U2")
UAC_SF=$here/uac_sender.xml UAS_PORT=$R1 UAC_TIMEOUT=20 \
    run_uac "127.0.0.1:$KAM" "$IT_TMP/senders.inf" 4
check "C4: no 200/403 (got $UAC_N200/$UAC_N403)" [ "$((UAC_N200 + UAC_N403))" = 0 ]
check "C4: the UAC got 503 for all 4 (got $(grep -c 'SIP/2.0 503' "$UAC_DIR/errors.log"))" \
    [ "$(grep -c 'SIP/2.0 503' "$UAC_DIR/errors.log")" = 4 ]
sleep 0.3
check "C4: nothing delivered" all "$(lines "$U1")" = "$o1" -- "$(lines "$U2")" = "$o2"
check "C4: kamailio logged fail-closed" grep -q 'fail-closed: 503' "$KAM_LOG"
IT_FAILED=0 # that sipp failure was expected

if [ "$fails" != 0 ]; then
    echo "---- kamailio log ----" >&2
    grep -v '^ *$' "$KAM_LOG" | tail -n 30 >&2
    echo "test_failover: $fails check(s) failed" >&2
    exit 1
fi
it_log "test_failover: all checks passed"
