#!/usr/bin/env bash
# test_chain.sh: spimfilter inline behind a real Kamailio, end to end.
#
#   SIPp UAC -> Kamailio (docs/examples/kamailio.cfg) -> spimfilter serve -> SIPp UAS
#
# Trains a fresh store on corpora/im.tsv (and the SMS Spam Collection when
# ../shared has it), then sends the held-out ham of corpora/samples.tsv and
# then its spam as SIP MESSAGEs. Asserts: every ham got 200 and reached the
# UAS with its text intact; every spam got 403 and is in the quarantine;
# `quarantine list` holds exactly the spam texts, once each (SIPp's
# retransmissions add no record); the filter's verdicts agree with
# `spimfilter classify` on the same texts; the filter is still running.
#
#   SPIMFILTER=build/dev/cli/spimfilter tests/integration/test_chain.sh
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
src=$IT_SRC_DIR
bin=${SPIMFILTER:-$src/build/dev/cli/spimfilter}
sms=${SMS_TSV:-$src/../shared/corpora/SMSSpamCollection.tsv}
samples=${SAMPLES_TSV:-$src/corpora/samples.tsv}
fails=0

[ -x "$bin" ] || { echo "test_chain: no spimfilter binary at $bin" >&2; exit 1; }
it_init || exit 1
db=$IT_TMP/db

# 1. Train.
if [ -r "$sms" ]; then
    "$bin" train --db "$db" --tsv "$src/corpora/im.tsv" --tsv "$sms" || exit 1
else
    "$bin" train --db "$db" --tsv "$src/corpora/im.tsv" || exit 1
fi

# 2. What the classifier says of each sample: the filter must do the same.
"$bin" classify --db "$db" --rules "$src/rules/default.rules" --tsv "$samples" \
    --format jsonl >"$IT_TMP/classify.jsonl" || exit 1
awk -F'\t' 'NR > 1 && $1 == "ham"  { print $2 }' "$samples" >"$IT_TMP/ham.txt"
awk -F'\t' 'NR > 1 && $1 == "spam" { print $2 }' "$samples" >"$IT_TMP/spam.txt"
nham=$(wc -l <"$IT_TMP/ham.txt")
nspam=$(wc -l <"$IT_TMP/spam.txt")
ham_blocked=$(grep '"label":"ham"' "$IT_TMP/classify.jsonl" | grep -c '"verdict":"block"')
spam_blocked=$(grep '"label":"spam"' "$IT_TMP/classify.jsonl" | grep -c '"verdict":"block"')
check "classify: no sample ham blocked (got $ham_blocked)" [ "$ham_blocked" = 0 ]
check "classify: all $nspam sample spam blocked (got $spam_blocked)" [ "$spam_blocked" = "$nspam" ]
"$here/tsv2inf.sh" -l ham "$samples" >"$IT_TMP/ham.inf" || exit 1
"$here/tsv2inf.sh" -l spam "$samples" >"$IT_TMP/spam.inf" || exit 1

# 3. The chain.
start_uas 15080 || exit 1
it_port_free 15070 || exit 1
it_spawn "$IT_TMP/serve.log" "$bin" serve --listen 127.0.0.1:15070 --next-hop 127.0.0.1:15080 \
    --db "$db" --rules "$src/rules/default.rules" --workers 2
serve_pid=$IT_LAST_PID
wait_port 15070 udp 10 "$serve_pid" || { it_fail "serve did not start" "$IT_TMP/serve.log"; exit 1; }
start_kamailio 15060 sip:127.0.0.1:15070 || exit 1

run_uac 127.0.0.1:15060 "$IT_TMP/ham.inf" "$nham"
check "ham: sipp finished cleanly (rc $UAC_RC)" [ "$UAC_RC" = 0 ]
check "ham: $nham x 200 (got $UAC_N200)" [ "$UAC_N200" = "$nham" ]
check "ham: 0 x 403 (got $UAC_N403)" [ "$UAC_N403" = 0 ]
run_uac 127.0.0.1:15060 "$IT_TMP/spam.inf" "$nspam"
check "spam: sipp finished cleanly (rc $UAC_RC)" [ "$UAC_RC" = 0 ]
check "spam: $nspam x 403 (got $UAC_N403)" [ "$UAC_N403" = "$nspam" ]
check "spam: 0 x 200 (got $UAC_N200)" [ "$UAC_N200" = 0 ]
sleep 0.5

# 4. What arrived, what was held.
delivered=$(grep -c '^DELIVERED ' "$UAS_LOG")
check "UAS received exactly the $nham ham (got $delivered)" [ "$delivered" = "$nham" ]
sed -n 's/^DELIVERED [^ ]* //p' "$UAS_LOG" | sort >"$IT_TMP/delivered.txt"
tr ';' ',' <"$IT_TMP/ham.txt" | sort >"$IT_TMP/ham.sorted"
check "the delivered texts are the ham texts, intact" cmp -s "$IT_TMP/delivered.txt" "$IT_TMP/ham.sorted"

"$bin" quarantine list --db "$db" --format jsonl >"$IT_TMP/quarantine.jsonl"
held=$(wc -l <"$IT_TMP/quarantine.jsonl")
check "quarantine holds exactly $nspam records (got $held)" [ "$held" = "$nspam" ]
sed -n 's/.*"text":"\(.*\)"}$/\1/p' "$IT_TMP/quarantine.jsonl" | sort >"$IT_TMP/held.txt"
tr ';' ',' <"$IT_TMP/spam.txt" | sed 's/\\/\\\\/g; s/"/\\"/g' | sort >"$IT_TMP/spam.sorted"
check "the quarantined texts are the spam texts" cmp -s "$IT_TMP/held.txt" "$IT_TMP/spam.sorted"
check "every record has an id" [ "$(grep -c '"id":"[0-9]*"' "$IT_TMP/quarantine.jsonl")" = "$nspam" ]
blocked_lines=$(grep -c 'blocked MESSAGE' "$IT_TMP/serve.log")
check "one log line per blocked message ($blocked_lines >= $nspam)" [ "$blocked_lines" -ge "$nspam" ]
check "serve is still running" kill -0 "$serve_pid"

if [ "$fails" != 0 ]; then
    echo "---- serve log ----" >&2
    tail -n 30 "$IT_TMP/serve.log" >&2
    echo "test_chain: $fails check(s) failed" >&2
    exit 1
fi
it_log "test_chain: all checks passed"
