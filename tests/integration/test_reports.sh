#!/usr/bin/env bash
# test_reports.sh: 607 Unwanted (RFC 8197) from recipients becomes spam
# reports, through a real Kamailio, and `reports learn` trains only what
# enough distinct recipients refused.
#
#   SIPp UAC (uac_verdict.xml, -s RECIPIENT) -> Kamailio -> spimfilter serve
#       -> SIPp UAS (uas_607.xml: every MESSAGE refused with 607 Unwanted)
#
# serve runs in mode = tag (everything delivered, so everything can be
# refused) with an allow list holding sip:friend@127.0.0.1. Texts and who
# refuses them:
#   T1 (alice): bob, carol            -> 2 reporters
#   T2 (alice): bob, carol, dave      -> 3 reporters
#   T3 (alice): bob twice             -> 1 reporter (one per recipient)
#   T4 (friend, excluded): bob, carol, dave -> no report at all
# Asserts: every UAC got "607 Unwanted" back; `reports list` holds exactly
# T1..T3 with those counts and the sender; `reports learn` (threshold 3 by
# default) trains T2 only (spam_msgs + 1) and marks it; a second run trains
# nothing; once erin refuses T1 too, learn trains T1; --dry-run with
# --min-reporters 1 would train T3 and changes nothing.
#
#   SPIMFILTER=build/dev/cli/spimfilter tests/integration/test_reports.sh
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
src=$IT_SRC_DIR
bin=${SPIMFILTER:-$src/build/dev/cli/spimfilter}
KAM_PORT=20160 FILTER_PORT=20170 UAS_PORT_=20180
export UAC_PORT=20161 UAC_SF=$here/uac_verdict.xml
T1="meet lonely singles in your area tonight no signup needed"
T2="exclusive deal just for you reply YES now to claim the reward"
T3="your parcel is waiting at the depot confirm the delivery slot"
T4="cheap flights to lisbon this weekend only book with me"
fails=0

[ -x "$bin" ] || { echo "test_reports: no spimfilter binary at $bin" >&2; exit 1; }
it_init || exit 1
db=$IT_TMP/db
"$bin" train --db "$db" --tsv "$src/corpora/im.tsv" >/dev/null || exit 1
echo "uri sip:friend@127.0.0.1" >"$IT_TMP/allow.list"
conf=$IT_TMP/serve.conf
cat >"$conf" <<CONF
[spimfilter]
listen = 127.0.0.1:$FILTER_PORT
next_hop = 127.0.0.1:$UAS_PORT_
db = $db
rules = $src/rules/default.rules
workers = 2
mode = tag
allow_list = $IT_TMP/allow.list
metrics_listen =
CONF

start_uas $UAS_PORT_ "$here/uas_607.xml" || exit 1
it_spawn "$IT_TMP/serve.log" "$bin" serve --config "$conf" --log-level debug
serve_pid=$IT_LAST_PID
wait_port $FILTER_PORT udp 10 "$serve_pid" || { it_fail "serve did not start" "$IT_TMP/serve.log"; exit 1; }
start_kamailio $KAM_PORT sip:127.0.0.1:$FILTER_PORT || exit 1

# refuse RECIPIENT SENDER;TEXT...: one MESSAGE each to RECIPIENT, all refused.
refuse() {
    local rcpt=$1 inf=$IT_TMP/$1-$((${IT_UAC_SEQ:-0} + 1)).inf n
    shift
    printf 'SEQUENTIAL\n' >"$inf"
    printf '%s\n' "$@" >>"$inf"
    n=$#
    UAC_ARGS="-s $rcpt" run_uac 127.0.0.1:$KAM_PORT "$inf" "$n"
    check "$rcpt: sipp finished cleanly (rc $UAC_RC)" [ "$UAC_RC" = 0 ]
    check "$rcpt: $n x '607 Unwanted' came back" \
        [ "$(grep -c '^VERDICT 607 .* reason={Unwanted} ' "$UAC_DIR/verdicts.log")" = "$n" ]
}

refuse bob "alice;$T1" "alice;$T2" "alice;$T3" "alice;$T3" "friend;$T4"
refuse carol "alice;$T1" "alice;$T2" "friend;$T4"
refuse dave "alice;$T2" "friend;$T4"
sleep 0.3
check "the UAS refused all 10 MESSAGEs" [ "$(grep -c '^REFUSED ' "$UAS_LOG")" = 10 ]

# reporters TEXT: the reporters count of TEXT in `reports list`, or "none".
reporters() {
    local line
    line=$(grep -F "\"text\":\"$1\"" "$IT_TMP/reports.jsonl")
    if [ -z "$line" ]; then echo none; return; fi
    sed -n 's/.*"reporters":\([0-9]*\).*/\1/p' <<<"$line"
}
learned() {
    grep -F "\"text\":\"$1\"" "$IT_TMP/reports.jsonl" | sed -n 's/.*"learned":\([a-z]*\).*/\1/p'
}
spam_msgs() {
    "$bin" db stats --db "$db" --format jsonl | sed -n 's/.*"spam_msgs":\([0-9]*\).*/\1/p'
}

"$bin" reports list --db "$db" --format jsonl >"$IT_TMP/reports.jsonl"
check "reports list: 3 messages reported (got $(wc -l <"$IT_TMP/reports.jsonl"))" \
    [ "$(wc -l <"$IT_TMP/reports.jsonl")" = 3 ]
check "T1: 2 reporters (got $(reporters "$T1"))" [ "$(reporters "$T1")" = 2 ]
check "T2: 3 reporters (got $(reporters "$T2"))" [ "$(reporters "$T2")" = 3 ]
check "T3: bob twice counts once (got $(reporters "$T3"))" [ "$(reporters "$T3")" = 1 ]
check "T4: the excluded sender is never reported (got $(reporters "$T4"))" [ "$(reporters "$T4")" = none ]
check "the sender is recorded" \
    [ "$(grep -c "\"sender\":\"sip:alice@127.0.0.1:$UAC_PORT\"" "$IT_TMP/reports.jsonl")" = 3 ]
check "serve logged the exclusion" grep -q "607 report by .* ignored: sender friend@127.0.0.1 is excluded" "$IT_TMP/serve.log"
"$bin" reports list --db "$db" >"$IT_TMP/reports.txt"
check "reports list (text) shows the three" [ "$(($(wc -l <"$IT_TMP/reports.txt") - 1))" = 3 ]

spam0=$(spam_msgs)
"$bin" reports learn --db "$db" --min-reporters 1 --dry-run >"$IT_TMP/dry.txt"
check "learn --dry-run --min-reporters 1 would learn 3" [ "$(grep -c '^would learn ' "$IT_TMP/dry.txt")" = 3 ]
check "... and says so in its last line" grep -q '^dry run: would learn 3 reports as spam' "$IT_TMP/dry.txt"
check "--dry-run trained nothing" [ "$(spam_msgs)" = "$spam0" ]

# Default threshold 3 (report_min_reporters), via the serve config (its allow list too).
"$bin" reports learn --config "$conf" >"$IT_TMP/learn1.txt" || it_fail "reports learn failed"
cat "$IT_TMP/learn1.txt" >&2
"$bin" reports list --db "$db" --format jsonl >"$IT_TMP/reports.jsonl"
check "learn: only T2 was trained" [ "$(grep -c '^learned [0-9a-f]* as spam' "$IT_TMP/learn1.txt")" = 1 ]
check "learn: T2 is marked learned" [ "$(learned "$T2")" = true ]
check "learn: T1 and T3 are not" [ "$(learned "$T1") $(learned "$T3")" = "false false" ]
check "learn: spam_msgs grew by 1 ($spam0 -> $(spam_msgs))" [ "$(spam_msgs)" = $((spam0 + 1)) ]

"$bin" reports learn --config "$conf" >"$IT_TMP/learn2.txt"
check "a second learn trains nothing" grep -q '^learned 0 reports' "$IT_TMP/learn2.txt"
check "spam_msgs unchanged" [ "$(spam_msgs)" = $((spam0 + 1)) ]

refuse erin "alice;$T1"
"$bin" reports list --db "$db" --format jsonl >"$IT_TMP/reports.jsonl"
check "T1: erin makes 3 reporters (got $(reporters "$T1"))" [ "$(reporters "$T1")" = 3 ]
"$bin" reports learn --db "$db" --min-reporters 3 >"$IT_TMP/learn3.txt"
"$bin" reports list --db "$db" --format jsonl >"$IT_TMP/reports.jsonl"
check "learn: T1 trained now" [ "$(learned "$T1")" = true ]
check "learn: T3 still not" [ "$(learned "$T3")" = false ]
check "spam_msgs grew by 2 in all" [ "$(spam_msgs)" = $((spam0 + 2)) ]
check "serve is still running" kill -0 "$serve_pid"

if [ "$fails" != 0 ]; then
    echo "---- serve log ----" >&2
    grep -i '607\|report' "$IT_TMP/serve.log" | tail -n 30 >&2
    echo "test_reports: $fails check(s) failed" >&2
    exit 1
fi
it_log "test_reports: all checks passed"
