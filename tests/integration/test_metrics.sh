#!/usr/bin/env bash
# test_metrics.sh: the Prometheus endpoint of serve against what SIPp counted.
#
#   SIPp UAC -> Kamailio (docs/examples/kamailio.cfg) -> spimfilter serve -> SIPp UAS
#                                                         `-- metrics_listen 127.0.0.1:21464
#
# Trains a store on corpora/im.tsv, starts serve with metrics_listen from a
# config file, scrapes it with `spimfilter stats` (the scraper is the
# product's own client) before, during and after a SIPp run of ham then
# spam, and asserts: counters start at 0; a garbage datagram is one parse
# error; scrapes taken during the run grow and see the run in progress;
# after it, MESSAGE requests = what SIPp sent, delivered + tagged = SIPp's
# 200s, blocked = SIPp's 403s, relayed 2xx = the 200s, the quarantine gauge =
# the 403s, the histogram counts every verdict; the endpoint listens on
# loopback only, answers 404 elsewhere; `stats` says clearly when it cannot
# reach serve or when metrics are off.
#
#   SPIMFILTER=build/dev/cli/spimfilter tests/integration/test_metrics.sh
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
src=$IT_SRC_DIR
bin=${SPIMFILTER:-$src/build/dev/cli/spimfilter}
samples=${SAMPLES_TSV:-$src/corpora/samples.tsv}
KAM_PORT=21060 FILTER_PORT=21070 UAS_SIP_PORT=21080 METRICS=127.0.0.1:21464
export UAC_PORT=21061 UAC_RATE=10
N=30 # MESSAGEs per run: 3 s at 10/s, long enough to scrape in the middle
fails=0
# ok 'CONDITION': a shell condition, for checks of more than one test.
ok() {
    eval "$1"
}
not() {
    ! "$@"
}
# metric FILE SAMPLE: the value of one sample line of a scrape (empty if absent).
metric() {
    awk -v k="$2" '$1 == k { print $2; exit }' "$1"
}
scrape() {
    "$bin" stats --metrics "$METRICS" --prometheus >"$1"
}

[ -x "$bin" ] || { echo "test_metrics: no spimfilter binary at $bin" >&2; exit 1; }
it_init || exit 1
db=$IT_TMP/db

"$bin" train --db "$db" --tsv "$src/corpora/im.tsv" >/dev/null || exit 1
"$here/tsv2inf.sh" -l ham "$samples" >"$IT_TMP/ham.inf" || exit 1
"$here/tsv2inf.sh" -l spam "$samples" >"$IT_TMP/spam.inf" || exit 1

# 1. serve, with the endpoint set by the config file (flags for the rest).
cat >"$IT_TMP/spimfilter.conf" <<EOF
[spimfilter]
metrics_listen = $METRICS
EOF
start_uas "$UAS_SIP_PORT" || exit 1
it_port_free "$FILTER_PORT" || exit 1
it_spawn "$IT_TMP/serve.log" "$bin" serve --config "$IT_TMP/spimfilter.conf" \
    --listen "127.0.0.1:$FILTER_PORT" --next-hop "127.0.0.1:$UAS_SIP_PORT" \
    --db "$db" --rules "$src/rules/default.rules" --workers 2
serve_pid=$IT_LAST_PID
wait_port "$FILTER_PORT" udp 20 "$serve_pid" || { it_fail "serve did not start" "$IT_TMP/serve.log"; exit 1; }
wait_port "${METRICS##*:}" tcp 10 "$serve_pid" || {
    it_fail "no metrics endpoint on $METRICS" "$IT_TMP/serve.log"
    exit 1
}
listen_addr=$(ss -Hltn "sport = :${METRICS##*:}" | awk '{ print $4 }')
check "the endpoint listens on $METRICS only (ss: $listen_addr)" [ "$listen_addr" = "$METRICS" ]

# 2. Before any traffic: every counter at 0.
scrape "$IT_TMP/s0.prom" || { it_fail "stats could not scrape $METRICS" "$IT_TMP/serve.log"; exit 1; }
check "the scrape is Prometheus text" grep -q '^# TYPE spimfilter_requests_total counter$' "$IT_TMP/s0.prom"
check "version in build_info" grep -q "^spimfilter_build_info{version=\"$("$bin" --version | awk '{ print $2 }')\"} 1$" "$IT_TMP/s0.prom"
check "MESSAGE requests start at 0" [ "$(metric "$IT_TMP/s0.prom" 'spimfilter_requests_total{method="MESSAGE"}')" = 0 ]
check "verdicts start at 0" [ "$(metric "$IT_TMP/s0.prom" spimfilter_verdict_seconds_count)" = 0 ]

# 3. One datagram that is not SIP: one parse error, nothing else.
printf 'this is not SIP\r\n\r\n' >"/dev/udp/127.0.0.1/$FILTER_PORT"
sleep 0.3
scrape "$IT_TMP/s1.prom" || exit 1
check "one parse error" [ "$(metric "$IT_TMP/s1.prom" spimfilter_parse_errors_total)" = 1 ]

# 4. The SIPp run, scraped every 0.2 s while it goes on.
start_kamailio "$KAM_PORT" "sip:127.0.0.1:$FILTER_PORT" || exit 1
touch "$IT_TMP/scraping"
it_spawn "$IT_TMP/scraper.log" bash -c '
    i=0
    while [ -e "$1/scraping" ] && [ $i -lt 400 ]; do
        i=$((i + 1))
        "$2" stats --metrics "$3" --prometheus >"$1/during.$(printf %03d $i).prom" || exit 1
        sleep 0.2
    done' scraper "$IT_TMP" "$bin" "$METRICS"
scraper_pid=$IT_LAST_PID
run_uac "127.0.0.1:$KAM_PORT" "$IT_TMP/ham.inf" "$N"
ham_rc=$UAC_RC ham200=$UAC_N200 ham403=$UAC_N403
run_uac "127.0.0.1:$KAM_PORT" "$IT_TMP/spam.inf" "$N"
spam_rc=$UAC_RC spam200=$UAC_N200 spam403=$UAC_N403
rm -f "$IT_TMP/scraping"
wait "$scraper_pid"
scraper_rc=$?
it_forget "$scraper_pid"
check "sipp runs finished cleanly (rc $ham_rc, $spam_rc)" ok '[ "$ham_rc" = 0 ] && [ "$spam_rc" = 0 ]'
check "the scraper ran without error (rc $scraper_rc)" [ "$scraper_rc" = 0 ]
n200=$((ham200 + spam200)) n403=$((ham403 + spam403))
it_log "SIPp counted: $((2 * N)) MESSAGEs sent, $n200 x 200, $n403 x 403"
check "SIPp: every MESSAGE answered ($n200 + $n403 = $((2 * N)))" [ $((n200 + n403)) = $((2 * N)) ]
check "SIPp: the spam was blocked ($spam403 of $N)" [ "$spam403" = "$N" ]

# 5. Scrapes during the run: growing, and at least one in the middle of it.
prev=-1 mono=1 middle=0 nscr=0
for f in "$IT_TMP"/during.*.prom; do
    [ -e "$f" ] || continue
    nscr=$((nscr + 1))
    v=$(metric "$f" 'spimfilter_requests_total{method="MESSAGE"}')
    [ -n "$v" ] || { mono=0; continue; }
    [ "$v" -ge "$prev" ] || mono=0
    [ "$v" -gt 0 ] && [ "$v" -lt $((2 * N)) ] && middle=$((middle + 1))
    prev=$v
done
check "$nscr scrapes during the run, the MESSAGE count never went down" \
    ok '[ "$nscr" -gt 5 ] && [ "$mono" = 1 ]'
check "$middle scrapes saw the run in progress" [ "$middle" -gt 0 ]

# 6. After the run: the counters against SIPp's.
sleep 0.5
scrape "$IT_TMP/s2.prom" || exit 1
p=$IT_TMP/s2.prom
msg=$(metric "$p" 'spimfilter_requests_total{method="MESSAGE"}')
delivered=$(metric "$p" 'spimfilter_messages_total{verdict="delivered"}')
tagged=$(metric "$p" 'spimfilter_messages_total{verdict="tagged"}')
blocked=$(metric "$p" 'spimfilter_messages_total{verdict="blocked"}')
ok2xx=$(metric "$p" 'spimfilter_responses_total{class="2xx"}')
held=$(metric "$p" spimfilter_quarantine_records)
hcount=$(metric "$p" spimfilter_verdict_seconds_count)
hinf=$(metric "$p" 'spimfilter_verdict_seconds_bucket{le="+Inf"}')
hsum=$(metric "$p" spimfilter_verdict_seconds_sum)
rules=$(awk '/^spimfilter_rule_hits_total\{/ { s += $2 } END { print s + 0 }' "$p")
check "MESSAGE requests = SIPp's sent ($msg = $((2 * N)))" [ "$msg" = $((2 * N)) ]
check "delivered + tagged = SIPp's 200s ($delivered + $tagged = $n200)" [ $((delivered + tagged)) = "$n200" ]
check "blocked = SIPp's 403s ($blocked = $n403)" [ "$blocked" = "$n403" ]
check "relayed 2xx = SIPp's 200s ($ok2xx = $n200)" [ "$ok2xx" = "$n200" ]
check "quarantine gauge = SIPp's 403s ($held = $n403)" [ "$held" = "$n403" ]
check "histogram counts every verdict ($hcount = $((2 * N)), +Inf $hinf)" \
    ok '[ "$hcount" = $((2 * N)) ] && [ "$hinf" = "$hcount" ]'
check "histogram sum is positive ($hsum s)" awk -v s="$hsum" 'BEGIN { exit !(s > 0) }'
check "rule hits were counted ($rules)" [ "$rules" -gt 0 ]
check "no store or verdict errors" ok '[ "$(metric "$p" spimfilter_store_errors_total)" = 0 ] &&
    [ "$(metric "$p" spimfilter_verdict_errors_total)" = 0 ]'
check "still one parse error" [ "$(metric "$p" spimfilter_parse_errors_total)" = 1 ]

# 7. The summary of `stats`, via the config file's metrics_listen.
"$bin" stats --config "$IT_TMP/spimfilter.conf" >"$IT_TMP/summary.txt" 2>&1
check "stats summary exits 0" [ $? = 0 ]
check "summary: messages line" grep -Eq "^messages +(delivered $delivered )?.*blocked $blocked" "$IT_TMP/summary.txt"
check "summary: verdict time line" grep -q "^verdict time *count $hcount, mean" "$IT_TMP/summary.txt"

# 8. Other paths get 404.
status=none
if exec 3<>"/dev/tcp/127.0.0.1/${METRICS##*:}"; then
    printf 'GET /other HTTP/1.0\r\n\r\n' >&3
    status=$(head -n 1 <&3 | tr -d '\r')
    exec 3<&-
fi
check "GET /other: 404 ($status)" ok '[ "${status#HTTP/1.? }" != "$status" ] && [ "${status#* }" = "404 Not Found" ]'
check "serve is still running" kill -0 "$serve_pid"

# 9. Without serve: a clear error, exit 1. Metrics off: said so.
it_stop "$serve_pid"
"$bin" stats --metrics "$METRICS" >"$IT_TMP/down.txt" 2>&1
down_rc=$?
check "stats without serve exits 1 ($down_rc)" [ "$down_rc" = 1 ]
check "stats without serve says it cannot reach it" grep -q "cannot reach the metrics endpoint of serve at $METRICS" "$IT_TMP/down.txt"
printf 'metrics_listen =\n' >"$IT_TMP/off.conf"
"$bin" stats --config "$IT_TMP/off.conf" >"$IT_TMP/off.txt" 2>&1
off_rc=$?
check "stats with metrics off exits 1 and says so" \
    ok '[ "$off_rc" = 1 ] && grep -q "metrics are off" "$IT_TMP/off.txt"'
check "the serve log has no error line" not grep -q ' error: ' "$IT_TMP/serve.log"
check "serve stopped cleanly, no sanitizer report" ok 'grep -q "info: stopped" "$IT_TMP/serve.log" &&
    ! grep -qi sanitizer "$IT_TMP/serve.log"'

if [ "$fails" != 0 ]; then
    echo "---- serve log ----" >&2
    tail -n 30 "$IT_TMP/serve.log" >&2
    echo "---- last scrape ----" >&2
    grep -v '^#' "$IT_TMP/s2.prom" >&2
    echo "test_metrics: $fails check(s) failed" >&2
    exit 1
fi
it_log "test_metrics: all checks passed"
