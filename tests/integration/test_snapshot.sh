#!/usr/bin/env bash
# test_snapshot.sh: one trained model shared by two filter instances
# (docs/scaling.md): `db snapshot` while serve classifies under load, the
# snapshot dropped beside a second instance's store, SIGHUP, and then both
# instances give the same verdicts.
#
#   SIPp UAC -> Kamailio A -> spimfilter A (store A, trained) -> SIPp UAS A
#   SIPp UAC -> Kamailio B -> spimfilter B (store B)          -> SIPp UAS B
#
# Store A is trained on corpora/im.tsv, store B on its ham only, so before
# the swap B lets spam through that A blocks (checked: the test must be
# able to fail). Then:
#   1. a SIPp load of 1500 MESSAGEs runs through A (A classifies and
#      quarantines while it runs); the snapshot is taken during it; the load
#      still finishes cleanly, and the snapshot holds A's token counts;
#   2. the snapshot is renamed to B's DIR/snapshot.mdb and B gets SIGHUP:
#      B logs the swap, the file is consumed into DIR/model.N;
#   3. the same 100 messages go through A and through B: the same texts
#      are delivered, and the same texts are quarantined with the same
#      scores; B's quarantine is B's own (A's load records are not in it).
#   4. a file that is not a store, dropped the same way, is refused and B
#      goes on with the model it has;
#   5. B restarted uses model.1 again and still judges as A.
#
#   SPIMFILTER=build/dev/cli/spimfilter tests/integration/test_snapshot.sh
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
src=$IT_SRC_DIR
bin=${SPIMFILTER:-$src/build/dev/cli/spimfilter}
samples=${SAMPLES_TSV:-$src/corpora/samples.tsv}
KAM_A=20260 FILTER_A=20270 UAS_A=20280 UAC_A=20261
KAM_B=20262 FILTER_B=20271 UAS_B=20281 UAC_B=20263
export UAC_SF=$here/uac_verdict.xml
fails=0

[ -x "$bin" ] || { echo "test_snapshot: no spimfilter binary at $bin" >&2; exit 1; }
it_init || exit 1
dba=$IT_TMP/dba
dbb=$IT_TMP/dbb
"$bin" train --db "$dba" --tsv "$src/corpora/im.tsv" >/dev/null || exit 1
awk -F'\t' 'NR == 1 || $1 == "ham"' "$src/corpora/im.tsv" >"$IT_TMP/ham-only.tsv"
"$bin" train --db "$dbb" --tsv "$IT_TMP/ham-only.tsv" >/dev/null || exit 1

# uac_verdict.xml: field0 the sender's user, field1 the text.
"$here/tsv2inf.sh" "$src/corpora/im.tsv" | sed '1!s/^/alice;/' >"$IT_TMP/load.inf" || exit 1
{
    "$here/tsv2inf.sh" "$samples"
    "$here/tsv2inf.sh" -n 80 "$src/corpora/im.tsv" | tail -n +2
} | sed '1!s/^/alice;/' >"$IT_TMP/compare.inf" || exit 1
ncmp=$(($(wc -l <"$IT_TMP/compare.inf") - 1))

serve_conf() { # NAME LISTEN NEXT DB
    cat >"$IT_TMP/$1.conf" <<CONF
[spimfilter]
listen = 127.0.0.1:$2
next_hop = 127.0.0.1:$3
db = $4
rules = $src/rules/default.rules
workers = 2
metrics_listen =
CONF
}
serve_conf a $FILTER_A $UAS_A "$dba"
serve_conf b $FILTER_B $UAS_B "$dbb"

start_uas $UAS_A || exit 1
UAS_LOG_A=$UAS_LOG
start_uas $UAS_B || exit 1
UAS_LOG_B=$UAS_LOG
it_spawn "$IT_TMP/serve-a.log" "$bin" serve --config "$IT_TMP/a.conf"
serve_a=$IT_LAST_PID
it_spawn "$IT_TMP/serve-b.log" "$bin" serve --config "$IT_TMP/b.conf"
serve_b=$IT_LAST_PID
wait_port $FILTER_A udp 10 "$serve_a" || { it_fail "serve A did not start" "$IT_TMP/serve-a.log"; exit 1; }
wait_port $FILTER_B udp 10 "$serve_b" || { it_fail "serve B did not start" "$IT_TMP/serve-b.log"; exit 1; }
start_kamailio $KAM_A sip:127.0.0.1:$FILTER_A || exit 1
start_kamailio $KAM_B sip:127.0.0.1:$FILTER_B || exit 1

max_id() { # DB: the highest quarantine id (0 when empty)
    "$bin" quarantine list --db "$1" --format jsonl | sed -n 's/^{"id":"\([0-9]*\)".*/\1/p' |
        sort -n | tail -1 | grep . || echo 0
}
# verdicts X DB UASPORT UACPORT UASLOG: the compare set through instance X;
# leaves IT_TMP/X.delivered (sorted texts) and IT_TMP/X.held (sorted
# "score<TAB>text" of the new quarantine records).
verdicts() {
    local x=$1 db=$2 from
    from=$(max_id "$db")
    local before
    before=$(wc -l <"$5")
    local kam=$KAM_B
    [ "$3" = $UAS_A ] && kam=$KAM_A
    UAS_PORT=$3 UAC_PORT=$4 UAC_RATE=100 run_uac "127.0.0.1:$kam" "$IT_TMP/compare.inf" "$ncmp"
    check "$x: the compare set finished cleanly (rc $UAC_RC)" [ "$UAC_RC" = 0 ]
    sleep 0.3
    tail -n +$((before + 1)) "$5" | sed -n 's/^DELIVERED [^ ]* //p' | sort >"$IT_TMP/$x.delivered"
    "$bin" quarantine list --db "$db" --format jsonl |
        awk -v from="$from" -F'"' '$4 + 0 > from + 0' |
        sed -n 's/.*"score":\([-0-9.]*\),.*"text":"\(.*\)"}$/\1\t\2/p' | sort >"$IT_TMP/$x.held"
}

# 0. Before the swap B does not judge as A does.
verdicts a0 "$dba" $UAS_A $UAC_A "$UAS_LOG_A"
verdicts b0 "$dbb" $UAS_B $UAC_B "$UAS_LOG_B"
check "before the swap: B blocks fewer than A ($(wc -l <"$IT_TMP/b0.held") < $(wc -l <"$IT_TMP/a0.held"))" \
    [ "$(wc -l <"$IT_TMP/b0.held")" -lt "$(wc -l <"$IT_TMP/a0.held")" ]

# 1. The snapshot, taken while A classifies (and quarantines) under load.
nload=1500
mkdir -p "$IT_TMP/load"
it_spawn "$IT_TMP/load/sipp.out" env -C "$IT_TMP/load" timeout -k 5 60 "${SIPP:-sipp}" \
    127.0.0.1:$KAM_A -sf "$UAC_SF" -inf "$IT_TMP/load.inf" -key uas_port $UAS_A -s bob \
    -i 127.0.0.1 -p $UAC_A -bind_local -m $nload -r 300 -rp 1000 -l 200 -timeout 40 \
    -timeout_error -nostdin -trace_logs -log_file "$IT_TMP/load/verdicts.log"
load_pid=$IT_LAST_PID
sleep 2
"$bin" db snapshot --db "$dba" --out "$IT_TMP/fleet.mdb" >"$IT_TMP/snapshot.out" 2>&1
snap_rc=$?
cat "$IT_TMP/snapshot.out" >&2
mid=$(grep -c '^VERDICT ' "$IT_TMP/load/verdicts.log")
check "snapshot succeeded (rc $snap_rc)" [ "$snap_rc" = 0 ]
check "it was taken under load (sipp running, $mid of $nload answered)" \
    bash -c "kill -0 $load_pid && [ $mid -gt 0 ] && [ $mid -lt $nload ]"
wait "$load_pid"
load_rc=$?
it_forget "$load_pid"
check "the load finished cleanly (rc $load_rc, $(grep -c '^VERDICT ' "$IT_TMP/load/verdicts.log") verdicts)" \
    [ "$load_rc" = 0 ]
mkdir -p "$IT_TMP/snapdir"
cp "$IT_TMP/fleet.mdb" "$IT_TMP/snapdir/data.mdb"
stats() { "$bin" db stats --db "$1" --format jsonl | sed 's/,"learned".*//'; }
check "the snapshot holds A's counts ($(stats "$IT_TMP/snapdir"))" \
    [ "$(stats "$IT_TMP/snapdir")" = "$(stats "$dba")" ]

# 2. Into B: rename into place, SIGHUP.
cp "$IT_TMP/fleet.mdb" "$dbb/.snapshot.tmp" && mv "$dbb/.snapshot.tmp" "$dbb/snapshot.mdb"
kill -HUP "$serve_b"
for ((i = 0; i < 50; i++)); do
    grep -q 'model: generation 2 is' "$IT_TMP/serve-b.log" && break
    sleep 0.1
done
check "B swapped the model in" grep -q 'model: generation 2 is .*/model.1' "$IT_TMP/serve-b.log"
check "snapshot.mdb was consumed into model.1" \
    bash -c "[ ! -e '$dbb/snapshot.mdb' ] && [ -s '$dbb/model.1/data.mdb' ]"

# 3. The same verdicts.
verdicts a1 "$dba" $UAS_A $UAC_A "$UAS_LOG_A"
verdicts b1 "$dbb" $UAS_B $UAC_B "$UAS_LOG_B"
na=$(wc -l <"$IT_TMP/a1.held")
nd=$(wc -l <"$IT_TMP/a1.delivered")
check "A blocked some of the compare set ($na) and delivered the rest ($nd)" \
    bash -c "[ $na -gt 0 ] && [ $((na + nd)) = $ncmp ]"
check "A and B delivered the same texts" cmp "$IT_TMP/a1.delivered" "$IT_TMP/b1.delivered"
check "A and B quarantined the same texts with the same scores" cmp "$IT_TMP/a1.held" "$IT_TMP/b1.held"
check "B's quarantine is its own: none of A's load records" \
    [ "$("$bin" quarantine list --db "$dbb" --format jsonl | wc -l)" = \
        $(($(wc -l <"$IT_TMP/b0.held") + $(wc -l <"$IT_TMP/b1.held"))) ]

# 4. A file that is not a store: refused, B keeps its model.
head -c 20000 /dev/urandom >"$dbb/snapshot.mdb"
kill -HUP "$serve_b"
for ((i = 0; i < 50; i++)); do
    grep -q 'snapshot refused' "$IT_TMP/serve-b.log" && break
    sleep 0.1
done
check "a bad snapshot is refused" grep -q 'snapshot refused, the running model stays' "$IT_TMP/serve-b.log"
verdicts b2 "$dbb" $UAS_B $UAC_B "$UAS_LOG_B"
check "B still judges with the swapped model" cmp "$IT_TMP/a1.held" "$IT_TMP/b2.held"
check "both instances are still running" kill -0 "$serve_a" "$serve_b"

# 5. A restart of B keeps the fleet's model (the newest DIR/model.N).
rm -f "$dbb/snapshot.mdb"
it_stop "$serve_b"
check "model.1 is kept at shutdown" test -s "$dbb/model.1/data.mdb"
"$bin" serve --config "$IT_TMP/b.conf" --check-config >"$IT_TMP/check-b.txt" 2>&1
check "serve --check-config says B will classify with model.1, not its store" \
    grep -q "^model: $dbb/model.1: serve will classify with its counts" "$IT_TMP/check-b.txt"
it_spawn "$IT_TMP/serve-b2.log" "$bin" serve --config "$IT_TMP/b.conf"
serve_b=$IT_LAST_PID
wait_port $FILTER_B udp 10 "$serve_b" || { it_fail "serve B did not restart" "$IT_TMP/serve-b2.log"; exit 1; }
check "B restarted on model.1" grep -q 'model: generation 2 is .*/model.1' "$IT_TMP/serve-b2.log"
verdicts b3 "$dbb" $UAS_B $UAC_B "$UAS_LOG_B"
check "after the restart B still judges as A" cmp "$IT_TMP/a1.held" "$IT_TMP/b3.held"
# Learning on B itself goes into counts B does not classify with: said.
qid=$("$bin" quarantine list --db "$dbb" --format jsonl --limit 1 | sed -n 's/.*"id":"\([0-9]*\)".*/\1/p')
"$bin" quarantine confirm --db "$dbb" "${qid:-0}" >"$IT_TMP/confirm-b.out" 2>&1
check "quarantine confirm on B (record ${qid:-none}) notes that B classifies with model.1" \
    grep -q "note: serve classifies with $dbb/model.1, a trainer's snapshot" "$IT_TMP/confirm-b.out"

if [ "$fails" != 0 ]; then
    echo "---- serve B log ----" >&2
    tail -n 20 "$IT_TMP/serve-b.log" >&2
    echo "test_snapshot: $fails check(s) failed" >&2
    exit 1
fi
it_log "test_snapshot: all checks passed"
