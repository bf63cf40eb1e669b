#!/usr/bin/env bash
# test_contacts.sh: who writes to whom (issue 8) through real Kamailio and
# SIPp, every verdict read off the wire:
#
#   SIPp UAC (uac_conv.xml, -s RECIPIENT) -> Kamailio -> spimfilter serve
#       -> SIPp UAS (uas_contacts.xml: 200 to each MESSAGE, logs the
#          recipient, the sender and the X-SPIM-Verdict header it got)
#
# The UAS's 200 goes back through serve, which counts it as delivered.
#   1. A scripted conversation: alice sends bob a bland text with a link
#      ($LINK): as a stranger's first message it is tagged. bob answers;
#      alice sends the same text again: established, delivered untagged.
#      After a restart of serve (the contacts were written to the store)
#      it is still delivered untagged.
#   2. The recipient policy file: carol takes contacts only (a stranger's
#      bland text is blocked, 403); dave drops spam silently (200 to the
#      sender, nothing delivered, held in quarantine, and `quarantine show`
#      gives the evidence); erin's section is shadow (delivered, the log
#      says what it would have done).
#      The weights `quarantine show` lists add up to the score. SIGHUP
#      reloads the policy file; a bad one is refused and the old one stays.
#      A shadow block-list entry does not block; the log says it would have.
#   3. A shadow rule (in a copy of the rules) matches, changes nothing, and
#      shows in the metrics and `spimfilter stats` as a shadow hit.
#   4. Identity: a bland text from a stranger with verstat failed is tagged
#      (without verstat: delivered); a text a stranger's points make a tag
#      ($NEAR) is delivered with verstat passed, tagged without it.
#   5. Outbound: local_domains = 127.0.0.1, fanout_limit 4: olive writes to
#      six new recipients; serve names her in a warning and the metric.
#
#   SPIMFILTER=build/dev/cli/spimfilter tests/integration/test_contacts.sh
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
src=$IT_SRC_DIR
bin=${SPIMFILTER:-$src/build/dev/cli/spimfilter}
KAM_PORT=22160 FILTER_PORT=22170 UAS_PORT_=22180 METRICS_PORT=22171
export UAC_PORT=22161 UAC_SF=$here/uac_conv.xml
LINK="can you look at this when you have a minute www.example.com/report"
REPLY="sure, send it over"
BLAND="are you free to talk"
NEAR="got your number from the group, hope that is ok"
SPAM="WINNER!! You have won a 1000 cash prize, call 09061701461 to claim now"
NOHDR="No-TN-Validation"
fails=0

[ -x "$bin" ] || { echo "test_contacts: no spimfilter binary at $bin" >&2; exit 1; }
it_init || exit 1
db=$IT_TMP/db
"$bin" train --db "$db" --tsv "$src/corpora/im.tsv" >/dev/null || exit 1
cp "$src/rules/default.rules" "$IT_TMP/rules"
echo 'LUNCH_SHADOW 20 /\blunch\b/i shadow' >>"$IT_TMP/rules"
cat >"$IT_TMP/recipients.ini" <<'INI'
[carol@127.0.0.1]
contacts_only = block

[dave@127.0.0.1]
action = drop

[erin@127.0.0.1]
contacts_only = block
shadow = yes
INI
echo 'uri sip:lister@127.0.0.1 shadow' >"$IT_TMP/block.list"
conf=$IT_TMP/serve.conf
cat >"$conf" <<CONF
[spimfilter]
listen = 127.0.0.1:$FILTER_PORT
next_hop = 127.0.0.1:$UAS_PORT_
db = $db
rules = $IT_TMP/rules
workers = 2
recipient_policy = $IT_TMP/recipients.ini
local_domains = 127.0.0.1
fanout_limit = 4
block_list = $IT_TMP/block.list
metrics_listen = 127.0.0.1:$METRICS_PORT
CONF

start_serve() {
    it_spawn "$IT_TMP/serve$1.log" "$bin" serve --config "$conf" --log-level debug
    serve_pid=$IT_LAST_PID
    wait_port $FILTER_PORT udp 10 "$serve_pid" ||
        { it_fail "serve did not start" "$IT_TMP/serve$1.log"; exit 1; }
}

start_uas $UAS_PORT_ "$here/uas_contacts.xml" || exit 1
start_serve 1
# TRUSTED_UPSTREAM: the UAC plays an SBC that verified its callers (verstat in the PAI)
start_kamailio $KAM_PORT sip:127.0.0.1:$FILTER_PORT -A TRUSTED_UPSTREAM || exit 1

# send RECIPIENT "SENDER;TEXT;VERSTAT"...: one MESSAGE each to RECIPIENT, in order.
# Leaves the UAC's verdicts in $UAC_DIR/verdicts.log.
send() {
    local rcpt=$1 inf=$IT_TMP/$1-$((${IT_UAC_SEQ:-0} + 1)).inf
    shift
    printf 'SEQUENTIAL\n' >"$inf"
    printf '%s\n' "$@" >>"$inf"
    UAC_ARGS="-s $rcpt" UAC_RATE=5 run_uac 127.0.0.1:$KAM_PORT "$inf" $#
    check "to $rcpt: sipp finished cleanly (rc $UAC_RC)" [ "$UAC_RC" = 0 ]
}
# last_delivery RECIPIENT SENDER: the UAS's last log line for that pair.
last_delivery() {
    grep "^DELIVERED .* to={$1} from={sip:$2@" "$UAS_LOG" | tail -n 1
}
deliveries() { grep -c "^DELIVERED .* to={$1} from={sip:$2@" "$UAS_LOG"; }

# --- 1. the conversation -----------------------------------------------------------
send bob "alice;$LINK;$NOHDR"
check "alice -> bob, first message with a link: 200" grep -q '^VERDICT 200 ' "$UAC_DIR/verdicts.log"
check "... delivered tagged (a stranger's first message with a link)" \
    grep -q 'verdict={tag}' <<<"$(last_delivery bob alice)"
send alice "bob;$REPLY;$NOHDR"
check "bob -> alice: delivered" [ "$(deliveries alice bob)" = 1 ]
send bob "alice;$LINK;$NOHDR"
check "alice -> bob again: delivered" [ "$(deliveries bob alice)" = 2 ]
check "... untagged now that the pair is established" \
    grep -q 'verdict={} ' <<<"$(last_delivery bob alice)"

it_stop "$serve_pid"
check "serve stopped cleanly at SIGTERM" grep -q 'stopped' "$IT_TMP/serve1.log"
start_serve 2
send bob "alice;$LINK;$NOHDR"
check "after a restart: alice -> bob still untagged (contacts in the store)" \
    grep -q 'verdict={} ' <<<"$(last_delivery bob alice)"

# --- 2. the recipient policy ----------------------------------------------------------
send carol "alice;$BLAND;$NOHDR"
check "carol (contacts_only = block): a stranger's bland text is refused 403" \
    grep -q '^VERDICT 403 ' "$UAC_DIR/verdicts.log"
check "... and not delivered" [ "$(deliveries carol alice)" = 0 ]
send dave "spammer;$SPAM;$NOHDR"
check "dave (action = drop): the spammer is told 200" grep -q '^VERDICT 200 ' "$UAC_DIR/verdicts.log"
check "... nothing reached dave" [ "$(deliveries dave spammer)" = 0 ]
check "... serve logged the silent drop" grep -q 'dropped (answered 200)' "$IT_TMP/serve2.log"
"$bin" quarantine list --db "$db" --format jsonl >"$IT_TMP/quar.jsonl"
id=$(grep 'spammer@' "$IT_TMP/quar.jsonl" | sed -n 's/.*"id":"\{0,1\}\([0-9]*\).*/\1/p' | head -n 1)
check "... the dropped message is held in quarantine (id ${id:-none})" [ -n "$id" ]
"$bin" quarantine show --db "$db" "${id:-0}" >"$IT_TMP/show.txt" 2>&1
check "quarantine show gives the evidence: bayes" grep -q 'bayes' "$IT_TMP/show.txt"
check "... the relationship" grep -q 'relationship.*stranger' "$IT_TMP/show.txt"
check "... the identity" grep -q 'identity' "$IT_TMP/show.txt"
check "... and its weights add up to its score" awk '
    /^score: / { score = $2 }
    /^ +[-+][0-9]+\.[0-9]+  [a-z]/ { sum += $1 }
    END { d = sum - score; if (d < 0) d = -d; exit !(score != "" && d < 0.02) }' "$IT_TMP/show.txt"
send erin "alice;$BLAND;$NOHDR"
check "erin (shadow contacts_only = block): delivered" [ "$(deliveries erin alice)" = 1 ]
check "... the log says what the shadow section would have done" \
    grep -q 'shadow: would have block .*erin@127.0.0.1.*policy section erin@127.0.0.1' "$IT_TMP/serve2.log"

# --- 2b. SIGHUP reloads the policy file; a bad one is refused, the old one stays ------
sed -i 's/^contacts_only = block$/contacts_only = off/' "$IT_TMP/recipients.ini"
kill -HUP "$serve_pid"
sleep 0.5
send carol "alice;$BLAND;$NOHDR"
check "after SIGHUP carol takes strangers again: delivered" [ "$(deliveries carol alice)" = 1 ]
printf '[dave@127.0.0.1]\naction = maybe\n' >"$IT_TMP/recipients.ini"
kill -HUP "$serve_pid"
sleep 0.5
check "a bad policy file is refused with file:line" \
    grep -q "reload refused.*recipients.ini:2:" "$IT_TMP/serve2.log"
send dave "spammer;$SPAM;$NOHDR"
check "... and the old policy stays (dave still drops: 200, nothing delivered)" \
    [ "$(grep -c '^VERDICT 200 ' "$UAC_DIR/verdicts.log") $(deliveries dave spammer)" = "1 0" ]

# --- 2c. a shadow list entry ----------------------------------------------------------
send bob "lister;$BLAND;$NOHDR"
check "a shadow block-list entry does not block: delivered" [ "$(deliveries bob lister)" = 1 ]
check "... serve logged what it would have done" \
    grep -q 'shadow: list entry block:uri:sip:lister@127.0.0.1 would have blocked' "$IT_TMP/serve2.log"

# --- 3. a shadow rule ---------------------------------------------------------------
send bob "alice;are we still on for lunch;$NOHDR"
check "a shadow rule worth 20 points does not block: delivered" \
    grep -q 'lunch' <<<"$(last_delivery bob alice)"
check "... serve logged that it would have blocked" \
    grep -q 'shadow: would have block .*to=bob@127.0.0.1' "$IT_TMP/serve2.log"
"$bin" stats --metrics 127.0.0.1:$METRICS_PORT --prometheus >"$IT_TMP/metrics.txt"
check "the metrics count the shadow hit" \
    grep -q 'spimfilter_shadow_hits_total{rule="LUNCH_SHADOW"} 1' "$IT_TMP/metrics.txt"
check "... and the would-have-blocked" \
    grep -Eq '^spimfilter_shadow_would_block_total [1-9]' "$IT_TMP/metrics.txt"
"$bin" stats --metrics 127.0.0.1:$METRICS_PORT >"$IT_TMP/stats.txt"
check "spimfilter stats shows LUNCH_SHADOW with its shadow hit" grep -q 'LUNCH_SHADOW' "$IT_TMP/stats.txt"

# --- 4. identity ----------------------------------------------------------------------
send frank "mallory;$BLAND;TN-Validation-Failed"
check "verstat failed: tagged" grep -q 'verdict={tag}' <<<"$(last_delivery frank mallory)"
send frank "oscar;$BLAND;$NOHDR"
check "... the same text without verstat: delivered untagged" \
    grep -q 'verdict={} ' <<<"$(last_delivery frank oscar)"
send gina "trent;$NEAR;TN-Validation-Passed"
check "verstat passed: delivered untagged" grep -q 'verdict={} ' <<<"$(last_delivery gina trent)"
send gina "uma;$NEAR;$NOHDR"
check "... the same text without verstat: tagged (a stranger's point)" \
    grep -q 'verdict={tag}' <<<"$(last_delivery gina uma)"

# --- 5. outbound ----------------------------------------------------------------------
for r in r1 r2 r3 r4 r5 r6; do
    send $r "olive;$BLAND;$NOHDR"
done
check "outbound: serve named the local account that tripped fan-out" \
    grep -q 'outbound: local account olive@127.0.0.1 tripped fanout:5>4' "$IT_TMP/serve2.log"
"$bin" stats --metrics 127.0.0.1:$METRICS_PORT --prometheus >"$IT_TMP/metrics2.txt"
check "... and the metrics count it" \
    grep -Eq 'spimfilter_outbound_flagged_total\{account="olive@127.0.0.1"\} [1-9]' "$IT_TMP/metrics2.txt"
check "serve is still running" kill -0 "$serve_pid"

if [ "$fails" != 0 ]; then
    echo "---- serve log ----" >&2
    tail -n 40 "$IT_TMP/serve2.log" >&2
    echo "test_contacts: $fails check(s) failed" >&2
    exit 1
fi
it_log "test_contacts: all checks passed"
