#!/usr/bin/env bash
# test_clamd.sh: antivirus scanning of file payloads by a real clamd, and
# `spimfilter av-check` on the sample clamd.conf files.
#
#   SIPp UAC (policy_uac.xml) -> spimfilter serve (clamd_socket) -> SIPp UAS (policy_uas.xml)
#                                      |
#                                      +-> clamd (Debian clamav-daemon), started here
#
# clamd gets a signature database written here: an MD5 hash signature of a
# test payload (sigtool --md5); nothing is downloaded (no freshclam). Its
# socket is in the test's own directory, so a system clamd (if any) plays
# no part. Ports 17100-17199 on 127.0.0.1.
#
#   test_clamd.sh           both parts
#   test_clamd.sh avcheck   only av-check on the samples (no clamd needed)
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
src=$IT_SRC_DIR
bin=${SPIMFILTER:-$src/build/dev/cli/spimfilter}
SERVE_PORT=17170
UAS_P=17180
export UAC_PORT=${UAC_PORT:-17161}
fails=0
finish() {
    if [ "$fails" != 0 ]; then
        [ -s "$IT_TMP/serve.log" ] && { echo "---- serve log ----" >&2; tail -n 30 "$IT_TMP/serve.log" >&2; }
        echo "test_clamd: $fails check(s) failed" >&2
        exit 1
    fi
    it_log "test_clamd: all checks passed"
    exit 0
}

[ -x "$bin" ] || { echo "test_clamd: no spimfilter binary at $bin" >&2; exit 1; }
it_init || exit 1

# 1. av-check on the three samples.
ex=$src/docs/examples/clamav
avc() { # SAMPLE -> $AVC_RC, $AVC_OUT
    AVC_OUT=$("$bin" av-check --clamd-conf "$ex/$1" --db /var/lib/spimfilter \
        --binary /usr/local/bin/spimfilter --user spimfilter 2>&1)
    AVC_RC=$?
}
avc clamd-excluded.conf
check "av-check: excluded sample exits 0 (rc $AVC_RC)" [ "$AVC_RC" = 0 ]
check "av-check: excluded sample names OnAccessExcludePath" grep -q 'excluded (OnAccessExcludePath /var/lib/spimfilter)' <<<"$AVC_OUT"
check "av-check: excluded sample names ExcludePath" grep -q 'excluded (ExcludePath ^/usr/local/bin/spimfilter\$)' <<<"$AVC_OUT"
avc clamd-not-excluded.conf
check "av-check: not-excluded sample exits 1 (rc $AVC_RC)" [ "$AVC_RC" = 1 ]
check "av-check: not-excluded sample says to add ExcludePath for the store" grep -qx 'ExcludePath \^/var/lib/spimfilter/' <<<"$AVC_OUT"
check "av-check: not-excluded sample says to add ExcludePath for the binary" grep -qx 'ExcludePath \^/usr/local/bin/spimfilter\$' <<<"$AVC_OUT"
check "av-check: not-excluded sample: on-access not watched" grep -q 'not watched (no OnAccessIncludePath)' <<<"$AVC_OUT"
avc clamd-include-only.conf
check "av-check: include-only sample exits 1 (rc $AVC_RC)" [ "$AVC_RC" = 1 ]
check "av-check: include-only sample: on-access scans the store" grep -q 'on-access: *SCANNED' <<<"$AVC_OUT"
check "av-check: include-only sample says OnAccessExcludeUname" grep -qx 'OnAccessExcludeUname spimfilter' <<<"$AVC_OUT"
check "av-check: include-only sample: scheduled scans excluded" bash -c "! grep -q 'scheduled scans: SCANNED' <<<'$AVC_OUT'"
# The same with the user excluded as root: OnAccessExcludeRootUID applies to uid 0 only.
cp "$ex/clamd-include-only.conf" "$IT_TMP/root.conf"
echo "OnAccessExcludeRootUID yes" >>"$IT_TMP/root.conf"
"$bin" av-check --clamd-conf "$IT_TMP/root.conf" --db /var/lib/spimfilter \
    --binary /usr/local/bin/spimfilter --user root >"$IT_TMP/root.out" 2>&1
check "av-check: OnAccessExcludeRootUID covers a filter run as root (rc $?)" grep -q 'OnAccessExcludeRootUID' "$IT_TMP/root.out"
"$bin" av-check --clamd-conf "$IT_TMP/root.conf" --db /var/lib/spimfilter \
    --binary /usr/local/bin/spimfilter --user no-such-user-spim >"$IT_TMP/nouser.out" 2>&1
check "av-check: a user unknown here has no uid (not the caller's), said" \
    grep -q 'serve running as no-such-user-spim (no such user on this host now' "$IT_TMP/nouser.out"
check "... and OnAccessExcludeRootUID does not cover it" \
    grep -qx 'OnAccessExcludeUname no-such-user-spim' "$IT_TMP/nouser.out"
"$bin" av-check --clamd-conf "$IT_TMP/missing.conf" >/dev/null 2>&1
check "av-check: unreadable clamd.conf exits 2" [ $? = 2 ]
[ "${1:-}" = avcheck ] && finish

# 2. A real clamd with our own signature.
command -v clamd >/dev/null || PATH=$PATH:/usr/sbin
for t in clamd sigtool sipp; do
    command -v "$t" >/dev/null || { it_fail "$t not found (scripts/install-deps.sh)"; finish; }
done
av=$IT_TMP/clamav
mkdir -p "$av/db" "$av/tmp"
payload=$IT_TMP/spim-test-payload
printf 'SPIMFILTER-AV-TEST-PAYLOAD-%s-NOT-A-REAL-VIRUS' "$RANDOM$RANDOM" >"$payload"
(cd "$IT_TMP" && sigtool --md5 spim-test-payload) >"$av/db/test.hdb" || { it_fail "sigtool failed"; finish; }
cat >"$av/clamd.conf" <<CONF
LocalSocket $av/clamd.sock
FixStaleSocket yes
Foreground yes
DatabaseDirectory $av/db
TemporaryDirectory $av/tmp
PidFile $av/clamd.pid
LogFile $av/clamd.log
LogTime yes
StreamMaxLength 1M
MaxThreads 2
CONF
it_spawn "$av/clamd.out" clamd --config-file="$av/clamd.conf"
clamd_pid=$IT_LAST_PID
for ((i = 0; i < 600; i++)); do
    [ -S "$av/clamd.sock" ] && break
    kill -0 "$clamd_pid" 2>/dev/null || break
    sleep 0.1
done
[ -S "$av/clamd.sock" ] || { it_fail "clamd did not start in 60 s" "$av/clamd.out"; finish; }
it_log "clamd pid $clamd_pid on $av/clamd.sock"
clamdscan --config-file="$av/clamd.conf" --stream --no-summary "$payload" >"$av/scan.txt" 2>&1
check "clamd itself finds the test payload" grep -q 'spim-test-payload.UNOFFICIAL FOUND' "$av/scan.txt"

db=$IT_TMP/db
"$bin" train --db "$db" --tsv "$src/corpora/im.tsv" >/dev/null || exit 1
write_conf() {
    {
        echo "listen = 127.0.0.1:$SERVE_PORT"
        echo "next_hop = 127.0.0.1:$UAS_P"
        echo "db = $db"
        echo "workers = 2"
        echo "clamd_socket = $av/clamd.sock"
        echo "clamd_timeout_ms = 3000"
        printf '%s\n' "$@"
    } >"$IT_TMP/spimfilter.conf"
}
write_conf "on_error = reject"
start_uas "$UAS_P" "$here/policy_uas.xml" || finish
it_spawn "$IT_TMP/serve.log" "$bin" serve --config "$IT_TMP/spimfilter.conf"
serve_pid=$IT_LAST_PID
wait_port "$SERVE_PORT" udp 10 "$serve_pid" || { it_fail "serve did not start" "$IT_TMP/serve.log"; finish; }

SEQ=0
send() {
    local inf=$1 count=$2 pid
    SEQ=$((SEQ + 1))
    SEND_DIR=$IT_TMP/uac-$SEQ
    mkdir -p "$SEND_DIR"
    it_spawn "$SEND_DIR/sipp.out" env -C "$SEND_DIR" timeout -k 5 40 "${SIPP:-sipp}" \
        "127.0.0.1:$SERVE_PORT" -sf "$here/policy_uac.xml" -inf "$inf" -key uas_port "$UAS_P" \
        -i 127.0.0.1 -p "$UAC_PORT" -bind_local -m "$count" -r 10 -rp 1000 -l 1 \
        -timeout 25 -timeout_error -nostdin \
        -trace_logs -log_file "$SEND_DIR/verdicts.log" -trace_err -error_file "$SEND_DIR/errors.log"
    pid=$IT_LAST_PID
    wait "$pid"
    SEND_RC=$?
    it_forget "$pid"
    [ "$SEND_RC" = 0 ] || tail -n 5 "$SEND_DIR/errors.log" "$SEND_DIR/sipp.out" >&2
}
verdict() {
    awk -v l="$1" '$1 == "VERDICT" && $3 == l { print $2; exit }' "$SEND_DIR/verdicts.log"
}
bad=$(cat "$payload")
{
    echo SEQUENTIAL
    echo "carol@other.example;bob;Plain/1.0;application/octet-stream;attachment, filename=\"data.bin\";$bad;infected"
    echo "carol@other.example;bob;Plain/1.0;application/octet-stream;attachment, filename=\"notes.bin\";CLEAN-BYTES-$RANDOM;clean"
    echo "carol@other.example;bob;Plain/1.0;application/pdf;render;$bad;infected_inline"
} >"$IT_TMP/av.inf"
send "$IT_TMP/av.inf" 3
check "av: sipp finished (rc $SEND_RC)" [ "$SEND_RC" = 0 ]
check "av: infected attachment answered 403 (got $(verdict infected))" [ "$(verdict infected)" = 403 ]
check "av: clean attachment answered 200 (got $(verdict clean))" [ "$(verdict clean)" = 200 ]
check "av: infected body answered 403 (got $(verdict infected_inline))" [ "$(verdict infected_inline)" = 403 ]
check "av: the clean payload reached the UAS" grep -q 'CLEAN-BYTES-' "$UAS_LOG"
check "av: no infected payload reached the UAS" bash -c "! grep -qF '$bad' '$UAS_LOG'"
"$bin" quarantine list --db "$db" --format jsonl >"$IT_TMP/q.jsonl"
n=$(grep -c '"rules":\["av:spim-test-payload.UNOFFICIAL"\]' "$IT_TMP/q.jsonl")
check "av: 2 quarantine records name the signature (got $n)" [ "$n" = 2 ]
check "av: the serve log names the signature" grep -q 'blocked: av:spim-test-payload.UNOFFICIAL' "$IT_TMP/serve.log"

# 3. clamd down: on_error = reject answers 503, on_error = deliver delivers.
it_stop "$clamd_pid"
check "clamd stopped" bash -c "! kill -0 $clamd_pid 2>/dev/null"
{
    echo SEQUENTIAL
    echo "carol@other.example;bob;Plain/1.0;application/octet-stream;attachment, filename=\"x.bin\";UNSCANNED-$RANDOM;down"
} >"$IT_TMP/down.inf"
send "$IT_TMP/down.inf" 1
check "clamd down, on_error = reject: 503 (got $(verdict down))" [ "$(verdict down)" = 503 ]
check "clamd down is logged" grep -q 'clamd .*on_error = reject' "$IT_TMP/serve.log"
write_conf "on_error = deliver"
n0=$(grep -c 'reloaded' "$IT_TMP/serve.log")
kill -HUP "$serve_pid"
for ((i = 0; i < 100; i++)); do
    [ "$(grep -c 'reloaded' "$IT_TMP/serve.log")" -gt "$n0" ] && break
    sleep 0.1
done
send "$IT_TMP/down.inf" 1
check "clamd down, on_error = deliver: 200 (got $(verdict down))" [ "$(verdict down)" = 200 ]
check "the unscanned payload reached the UAS" grep -q 'UNSCANNED-' "$UAS_LOG"
check "serve is still running" kill -0 "$serve_pid"
finish
