#!/usr/bin/env bash
# test_rejection.sh: how spimfilter refuses SPIM, as the UAC sees it on the
# wire through a real Kamailio (RFC 8688 608 Rejected, or 403).
#
#   SIPp UAC (uac_verdict.xml) -> Kamailio -> spimfilter serve -> SIPp UAS
#
# Three runs of the same ham and spam of corpora/samples.tsv, serve
# restarted between them with another config:
#   1. the defaults: spam gets "403 Forbidden" and no Call-Info;
#   2. block_code = 608, block_call_info = URI: spam gets "608 Rejected"
#      with exactly "Call-Info: <URI>;purpose=jwscard", ham still 200;
#   3. block_code = 608 without a URI: "608 Rejected" and no Call-Info.
# Each time the blocked messages are in the quarantine, once each.
#
#   SPIMFILTER=build/dev/cli/spimfilter tests/integration/test_rejection.sh
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
src=$IT_SRC_DIR
bin=${SPIMFILTER:-$src/build/dev/cli/spimfilter}
samples=${SAMPLES_TSV:-$src/corpora/samples.tsv}
KAM_PORT=20060 FILTER_PORT=20070 UAS_PORT_=20080
export UAC_PORT=20061 UAC_SF=$here/uac_verdict.xml
redress="https://redress.example.net/spim?case=42"
fails=0

[ -x "$bin" ] || { echo "test_rejection: no spimfilter binary at $bin" >&2; exit 1; }
it_init || exit 1
db=$IT_TMP/db
"$bin" train --db "$db" --tsv "$src/corpora/im.tsv" >/dev/null || exit 1
# uac_verdict.xml: field0 the sender's user, field1 the text.
"$here/tsv2inf.sh" -l ham "$samples" | sed '1!s/^/alice;/' >"$IT_TMP/ham.inf" || exit 1
"$here/tsv2inf.sh" -l spam "$samples" | sed '1!s/^/alice;/' >"$IT_TMP/spam.inf" || exit 1
nham=$(($(wc -l <"$IT_TMP/ham.inf") - 1))
nspam=$(($(wc -l <"$IT_TMP/spam.inf") - 1))

start_uas $UAS_PORT_ || exit 1
start_kamailio $KAM_PORT sip:127.0.0.1:$FILTER_PORT || exit 1

# run_case NAME CONFIG-LINES...: serve with those keys, ham then spam.
run_case() {
    local name=$1 conf=$IT_TMP/$1.conf
    shift
    {
        echo "[spimfilter]"
        echo "listen = 127.0.0.1:$FILTER_PORT"
        echo "next_hop = 127.0.0.1:$UAS_PORT_"
        echo "db = $db"
        echo "rules = $src/rules/default.rules"
        echo "workers = 2"
        echo "metrics_listen ="
        printf '%s\n' "$@"
    } >"$conf"
    it_port_free $FILTER_PORT || return 1
    it_spawn "$IT_TMP/serve-$name.log" "$bin" serve --config "$conf"
    serve_pid=$IT_LAST_PID
    wait_port $FILTER_PORT udp 10 "$serve_pid" ||
        { it_fail "$name: serve did not start" "$IT_TMP/serve-$name.log"; return 1; }
    "$bin" quarantine list --db "$db" --format jsonl >"$IT_TMP/q-before-$name.jsonl"
    run_uac 127.0.0.1:$KAM_PORT "$IT_TMP/ham.inf" "$nham"
    check "$name: ham, sipp finished cleanly (rc $UAC_RC)" [ "$UAC_RC" = 0 ]
    HAM_LOG=$UAC_DIR/verdicts.log
    run_uac 127.0.0.1:$KAM_PORT "$IT_TMP/spam.inf" "$nspam"
    check "$name: spam, sipp finished cleanly (rc $UAC_RC)" [ "$UAC_RC" = 0 ]
    SPAM_LOG=$UAC_DIR/verdicts.log
    check "$name: every ham got 200 ($(grep -c '^VERDICT 200 ' "$HAM_LOG") of $nham)" \
        [ "$(grep -c '^VERDICT 200 ' "$HAM_LOG")" = "$nham" ]
    check "$name: no Call-Info on a 200" \
        [ "$(grep -c 'callinfo={}' "$HAM_LOG")" = "$nham" ]
    "$bin" quarantine list --db "$db" --format jsonl >"$IT_TMP/q-after-$name.jsonl"
    local held=$(($(wc -l <"$IT_TMP/q-after-$name.jsonl") - $(wc -l <"$IT_TMP/q-before-$name.jsonl")))
    check "$name: $nspam new quarantine records (got $held)" [ "$held" = "$nspam" ]
    it_stop "$serve_pid"
}

# 1. Default: 403 Forbidden, no Call-Info.
run_case default
check "default: every spam got '403 Forbidden' without Call-Info" \
    [ "$(grep -c '^VERDICT 403 .* reason={Forbidden} callinfo={} SIP/2.0 403 Forbidden$' "$SPAM_LOG")" = "$nspam" ]
check "default: no 608" [ "$(grep -c '^VERDICT 608 ' "$SPAM_LOG")" = 0 ]

# 2. 608 with the redress URI.
run_case rfc8688 "block_code = 608" "block_call_info = $redress"
want="callinfo={<$redress>;purpose=jwscard}"
check "608: every spam got '608 Rejected' ($(grep -c '^VERDICT 608 .* reason={Rejected} ' "$SPAM_LOG") of $nspam)" \
    [ "$(grep -c '^VERDICT 608 .* reason={Rejected} ' "$SPAM_LOG")" = "$nspam" ]
check "608: each with Call-Info: <$redress>;purpose=jwscard" \
    [ "$(grep -cF " $want " "$SPAM_LOG")" = "$nspam" ]
check "608: no 403" [ "$(grep -c '^VERDICT 403 ' "$SPAM_LOG")" = 0 ]

# 3. 608 without a URI: no Call-Info at all.
run_case rfc8688-bare "block_code = 608"
check "608 bare: every spam got '608 Rejected' without Call-Info" \
    [ "$(grep -c '^VERDICT 608 .* reason={Rejected} callinfo={} ' "$SPAM_LOG")" = "$nspam" ]

# 4. A bad value is refused at start.
printf '[spimfilter]\nblock_code = 607\n' >"$IT_TMP/bad.conf"
check "block_code = 607 is refused by --check-config" \
    bash -c "! '$bin' serve --config '$IT_TMP/bad.conf' --check-config >/dev/null 2>&1"

if [ "$fails" != 0 ]; then
    echo "test_rejection: $fails check(s) failed" >&2
    exit 1
fi
it_log "test_rejection: all checks passed"
