#!/usr/bin/env bash
# test_policy.sh: exclusion and block lists, the file-transfer policy,
# SIGHUP reload of lists, fan-out and bulk, through spimfilter serve with
# real SIP on loopback:
#
#   SIPp UAC (policy_uac.xml, policy_invite.xml) -> spimfilter serve -> SIPp UAS (policy_uas.xml)
#
# Ports 17060-17099 on 127.0.0.1. Asserts the SIP answer of every call, what
# reached the UAS, the entry that decided (serve log, X-SPIM-Rules, the
# quarantine) and that serve is still running at the end.
#
#   SPIMFILTER=build/dev/cli/spimfilter tests/integration/test_policy.sh
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
src=$IT_SRC_DIR
bin=${SPIMFILTER:-$src/build/dev/cli/spimfilter}
SERVE_PORT=17070
UAS_P=17080
export UAC_PORT=${UAC_PORT:-17061}
fails=0

[ -x "$bin" ] || { echo "test_policy: no spimfilter binary at $bin" >&2; exit 1; }
it_init || exit 1
db=$IT_TMP/db
"$bin" train --db "$db" --tsv "$src/corpora/im.tsv" >/dev/null || exit 1

# send SCENARIO INF COUNT: run a SIPp UAC at serve (one call at a time, in
# order), bounded by -timeout; leaves one "VERDICT code label call-id" a
# call in $SEND_DIR/verdicts.log.
SEQ=0
send() {
    local sf=$1 inf=$2 count=$3 pid
    SEQ=$((SEQ + 1))
    SEND_DIR=$IT_TMP/uac-$SEQ
    mkdir -p "$SEND_DIR"
    it_spawn "$SEND_DIR/sipp.out" env -C "$SEND_DIR" timeout -k 5 40 "${SIPP:-sipp}" \
        "127.0.0.1:$SERVE_PORT" -sf "$here/$sf" -inf "$inf" -key uas_port "$UAS_P" \
        -i 127.0.0.1 -p "$UAC_PORT" -bind_local -m "$count" -r "${RATE:-25}" -rp 1000 -l 1 \
        -timeout 25 -timeout_error -nostdin \
        -trace_logs -log_file "$SEND_DIR/verdicts.log" -trace_err -error_file "$SEND_DIR/errors.log"
    pid=$IT_LAST_PID
    wait "$pid"
    SEND_RC=$?
    it_forget "$pid"
    [ "$SEND_RC" = 0 ] || tail -n 5 "$SEND_DIR/errors.log" "$SEND_DIR/sipp.out" >&2
}
# hup PATTERN: SIGHUP serve and wait (bounded) for one more log line matching PATTERN.
hup() {
    local n0 i
    n0=$(grep -c -- "$1" "$IT_TMP/serve.log")
    kill -HUP "$serve_pid"
    for ((i = 0; i < 100; i++)); do
        [ "$(grep -c -- "$1" "$IT_TMP/serve.log")" -gt "$n0" ] && return 0
        sleep 0.1
    done
    return 1
}
# verdict LABEL: the code the call labelled LABEL got in the last send.
verdict() {
    awk -v l="$1" '$1 == "VERDICT" && $3 == l { print $2; exit }' "$SEND_DIR/verdicts.log"
}

cat >"$IT_TMP/allow.list" <<'LIST'
# trusted senders and clients
uri *@trusted.example
ua  TrustedClient/*
LIST
cat >"$IT_TMP/block.list" <<'LIST'
uri    sip:spammer@evil.example
domain bad.example
LIST
write_conf() { # extra lines appended
    {
        echo "[spimfilter]"
        echo "listen = 127.0.0.1:$SERVE_PORT"
        echo "next_hop = 127.0.0.1:$UAS_P"
        echo "db = $db"
        echo "rules = $src/rules/default.rules"
        echo "workers = 2"
        echo "log_level = debug"
        echo "allow_list = $IT_TMP/allow.list"
        echo "block_list = $IT_TMP/block.list"
        echo "fanout_window = 10"
        echo "fanout_limit = 20"
        echo "fanout_score = 20"
        echo "bulk_window = 10"
        echo "bulk_limit = 20"
        echo "bulk_score = 20"
        printf '%s\n' "$@"
    } >"$IT_TMP/spimfilter.conf"
}
write_conf

check "serve --check-config accepts the lists" \
    "$bin" serve --config "$IT_TMP/spimfilter.conf" --check-config
printf 'uri sip:ok@x.example\nnet 10.0.0.0/40\n' >"$IT_TMP/bad.list"
sed "s|^block_list = .*|block_list = $IT_TMP/bad.list|" "$IT_TMP/spimfilter.conf" >"$IT_TMP/bad.conf"
out=$("$bin" serve --config "$IT_TMP/bad.conf" --check-config 2>&1)
check "a bad list line is refused with file:line ($out)" grep -q "bad.list:2:" <<<"$out"

start_uas "$UAS_P" "$here/policy_uas.xml" || exit 1
it_port_free "$SERVE_PORT" || exit 1
it_spawn "$IT_TMP/serve.log" "$bin" serve --config "$IT_TMP/spimfilter.conf"
serve_pid=$IT_LAST_PID
wait_port "$SERVE_PORT" udp 10 "$serve_pid" || { it_fail "serve did not start" "$IT_TMP/serve.log"; exit 1; }

spam="Congratulations! You have WON a 1000 cash prize. Call 09061 701 461 now to claim"
bland="see you at the cafe near the office after lunch then"
T="text/plain,charset=UTF-8"
# 1. Lists and files, one call each.
{
    echo SEQUENTIAL
    echo "boss@trusted.example;bob;Plain/1.0;$T;render;$spam;allow_uri"
    echo "eve@other.example;bob;TrustedClient/2.3 (linux);$T;render;$spam;allow_ua"
    echo "spammer@evil.example;bob;Plain/1.0;$T;render;$bland;block_uri"
    echo "x@mail.bad.example;bob;Plain/1.0;$T;render;$bland;block_domain"
    echo "carol@other.example;bob;Plain/1.0;$T;render;$spam;spam"
    echo "carol@other.example;bob;Plain/1.0;$T;render;$bland;ham"
    echo "carol@other.example;bob;Plain/1.0;application/octet-stream;attachment, filename=\"setup.exe\";MZ-not-really-a-program;file_exe"
    echo "carol@other.example;bob;Plain/1.0;application/x-msdownload;render;MZ-payload-bytes;file_type"
    echo "carol@other.example;bob;Plain/1.0;application/pdf;attachment, filename=\"report.pdf\";PDF-1.4-tiny;file_pdf"
    echo "boss@trusted.example;bob;Plain/1.0;application/octet-stream;attachment, filename=\"tool.exe\";MZ-from-trusted;allow_file"
} >"$IT_TMP/lists.inf"
send policy_uac.xml "$IT_TMP/lists.inf" 10
check "lists: sipp finished (rc $SEND_RC)" [ "$SEND_RC" = 0 ]
for e in allow_uri:200 allow_ua:200 block_uri:403 block_domain:403 spam:403 ham:200 \
    file_exe:403 file_type:403 file_pdf:200 allow_file:200; do
    l=${e%%:*} want=${e##*:} got=$(verdict "${e%%:*}")
    check "lists: $l answered $want (got ${got:-none})" [ "$got" = "$want" ]
done
sleep 0.3
log=$IT_TMP/serve.log
check "allow by uri named in the log" grep -q 'delivered unchecked: allow:uri:\*@trusted.example' "$log"
check "allow by ua named in the log" grep -q 'delivered unchecked: allow:ua:TrustedClient/\*' "$log"
check "block by uri named in the log" grep -q 'blocked: block:uri:sip:spammer@evil.example' "$log"
check "block by domain named in the log" grep -q 'blocked: block:domain:bad.example' "$log"
check "exe by name named in the log" grep -q 'blocked: file:ext:exe' "$log"
check "exe by type named in the log" grep -q 'blocked: file:type:application/x-msdownload' "$log"
"$bin" quarantine list --db "$db" --format jsonl >"$IT_TMP/q1.jsonl"
check "quarantine: 5 held (got $(wc -l <"$IT_TMP/q1.jsonl"))" [ "$(wc -l <"$IT_TMP/q1.jsonl")" = 5 ]
for r in 'block:uri:sip:spammer@evil.example' 'block:domain:bad.example' 'file:ext:exe' \
    'file:type:application/x-msdownload'; do
    check "quarantine record names $r" grep -qF "\"rules\":[\"$r\"]" "$IT_TMP/q1.jsonl"
done
check "the trusted spam reached the UAS" grep -q "rules= Congratulations" "$UAS_LOG"
check "the pdf reached the UAS" grep -q 'PDF-1.4-tiny' "$UAS_LOG"
check "the trusted exe reached the UAS unchecked" grep -q 'MZ-from-trusted' "$UAS_LOG"
check "no blocked payload reached the UAS" bash -c "! grep -q 'MZ-not-really\|MZ-payload\|$bland.*$bland' '$UAS_LOG'"

# 2. INVITE file offers: exe -> 488 (default invite_block_code), pdf passes, size limit.
{
    echo SEQUENTIAL
    echo "carol@other.example;tool.exe;application/octet-stream;1234;inv_exe"
    echo "carol@other.example;notes.pdf;application/pdf;2048;inv_pdf"
    echo "carol@other.example;huge.iso;application/octet-stream;20000000;inv_big"
} >"$IT_TMP/invite.inf"
send policy_invite.xml "$IT_TMP/invite.inf" 3
check "invite: sipp finished (rc $SEND_RC)" [ "$SEND_RC" = 0 ]
check "invite exe answered 488 (got $(verdict inv_exe))" [ "$(verdict inv_exe)" = 488 ]
check "invite pdf answered 200 by the UAS (got $(verdict inv_pdf))" [ "$(verdict inv_pdf)" = 200 ]
check "invite over file_max_size answered 488 (got $(verdict inv_big))" [ "$(verdict inv_big)" = 488 ]
check "blocked INVITE logged with its entry" grep -q 'INVITE .* answered 488: file:ext:exe' "$log"
check "the pdf offer reached the UAS" grep -q '^INVITED ' "$UAS_LOG"

# 3. SIGHUP: a network entry added to the block list, INVITEs answered 403.
echo "net 127.0.0.0/8" >>"$IT_TMP/block.list"
write_conf "invite_block_code = 403"
check "SIGHUP reloaded" hup 'reloaded' 
{
    echo SEQUENTIAL
    echo "dave@other.example;bob;Plain/1.0;$T;render;$bland;net"
} >"$IT_TMP/net.inf"
send policy_uac.xml "$IT_TMP/net.inf" 1
check "after reload: blocked by net (got $(verdict net))" [ "$(verdict net)" = 403 ]
check "after reload: the net entry named" grep -q 'blocked: block:net:127.0.0.0/8' "$log"
send policy_invite.xml "$IT_TMP/invite.inf" 1
check "after reload: INVITE exe answered 403 (got $(verdict inv_exe))" [ "$(verdict inv_exe)" = 403 ]
# A broken list on reload keeps the running one.
echo "net nonsense" >>"$IT_TMP/block.list"
hup 'reload refused'
check "a bad list on reload is refused with file:line" grep -q 'reload refused.*block.list:4:' "$log"
send policy_uac.xml "$IT_TMP/net.inf" 1
check "the old lists stay (got $(verdict net))" [ "$(verdict net)" = 403 ]
# Back to the first lists for the rate tests.
printf 'uri sip:spammer@evil.example\n' >"$IT_TMP/block.list"
write_conf
check "reloaded for the rate tests" hup 'reloaded'

# 4. Fan-out: one sender, 50 recipients within 10 s, bland distinct texts.
words=(apple brick cedar delta ember fable grape honey ivory jolly kayak lemon mango noble olive
    pearl quilt raven sugar tiger umber velvet willow xenon yellow zebra amber bloom coral dune
    eagle frost glade hazel iris jade kelp lilac maple nectar orchid pine quartz reed sage thyme
    tulip violet wheat yarrow)
{
    echo SEQUENTIAL
    for i in $(seq 1 50); do
        echo "fan@other.example;rcpt$i;Plain/1.0;$T;render;see you at the cafe near the office, bring the ${words[$((i - 1))]};fan$i"
    done
} >"$IT_TMP/fanout.inf"
send policy_uac.xml "$IT_TMP/fanout.inf" 50
check "fan-out: sipp finished (rc $SEND_RC)" [ "$SEND_RC" = 0 ]
ok=$(awk '$1 == "VERDICT" && $2 == 200' "$SEND_DIR/verdicts.log" | wc -l)
no=$(awk '$1 == "VERDICT" && $2 == 403' "$SEND_DIR/verdicts.log" | wc -l)
check "fan-out: the first 20 delivered (got $ok x 200)" [ "$ok" = 20 ]
check "fan-out: the 30 after the limit blocked (got $no x 403)" [ "$no" = 30 ]
check "fan-out: call 21 is the first blocked" [ "$(verdict fan21)" = 403 ] 
check "fan-out: call 20 delivered" [ "$(verdict fan20)" = 200 ]
check "fan-out: named in the verdict" grep -q 'rules=.*fanout:21>20' "$log"
check "fan-out: not bulk" bash -c "! grep 'from=.*fan@other' '$log' | grep -q 'bulk:'"

# 5. Bulk: 50 senders, one recipient each, the same bland text.
{
    echo SEQUENTIAL
    for i in $(seq 1 50); do
        echo "user$i@other.example;friend$i;Plain/1.0;$T;render;the printer on the second floor works again;bulk$i"
    done
} >"$IT_TMP/bulk.inf"
send policy_uac.xml "$IT_TMP/bulk.inf" 50
check "bulk: sipp finished (rc $SEND_RC)" [ "$SEND_RC" = 0 ]
ok=$(awk '$1 == "VERDICT" && $2 == 200' "$SEND_DIR/verdicts.log" | wc -l)
no=$(awk '$1 == "VERDICT" && $2 == 403' "$SEND_DIR/verdicts.log" | wc -l)
check "bulk: the first 20 delivered (got $ok x 200)" [ "$ok" = 20 ]
check "bulk: the 30 after the limit blocked (got $no x 403)" [ "$no" = 30 ]
"$bin" quarantine list --db "$db" --format jsonl >"$IT_TMP/q2.jsonl"
nb=$(grep -c '"rules":\[[^]]*bulk:' "$IT_TMP/q2.jsonl")
nbf=$(grep '"rules":\[[^]]*bulk:' "$IT_TMP/q2.jsonl" | grep -c 'fanout:')
check "bulk: 30 records name bulk (got $nb)" [ "$nb" = 30 ]
check "bulk: none names fan-out (got $nbf)" [ "$nbf" = 0 ]
check "serve is still running" kill -0 "$serve_pid"

if [ "$fails" != 0 ]; then
    echo "---- serve log ----" >&2
    tail -n 40 "$IT_TMP/serve.log" >&2
    echo "test_policy: $fails check(s) failed" >&2
    exit 1
fi
it_log "test_policy: all checks passed"
