#!/usr/bin/env bash
# demo.sh: the main job, end to end, on loopback.
#   installs what is missing, builds (release preset), trains a store on
#   corpora/im.tsv (and the SMS Spam Collection when ../shared has it),
#   starts a SIPp receiver, spimfilter and Kamailio in front of it, sends
#   the sample messages of corpora/samples.tsv through Kamailio as SIP
#   MESSAGE, and prints what was delivered and what was quarantined.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j"$(nproc)" >/dev/null
bin=$root/build/release/cli/spimfilter

# shellcheck source=../tests/integration/lib.sh
. "$root/tests/integration/lib.sh"
IT_KEEP=${IT_KEEP:-0}
it_init
db=$IT_TMP/db
sms=$root/../shared/corpora/SMSSpamCollection.tsv

echo "== training"
if [ -r "$sms" ]; then
    "$bin" train --db "$db" --tsv corpora/im.tsv --tsv "$sms"
else
    "$bin" train --db "$db" --tsv corpora/im.tsv
fi

echo "== starting the receiver (SIPp, :15080), spimfilter (:15070) and Kamailio (:15060)"
start_uas 15080
it_spawn "$IT_TMP/serve.log" "$bin" serve --listen 127.0.0.1:15070 \
    --next-hop 127.0.0.1:15080 --db "$db" --rules rules/default.rules
wait_port 15070 udp 10 "$IT_LAST_PID" || { it_fail "spimfilter did not start" "$IT_TMP/serve.log"; exit 1; }
start_kamailio 15060 sip:127.0.0.1:15070

n=$(($(wc -l <corpora/samples.tsv) - 1))
echo "== sending $n sample MESSAGEs through Kamailio"
tests/integration/tsv2inf.sh corpora/samples.tsv >"$IT_TMP/samples.inf"
run_uac 127.0.0.1:15060 "$IT_TMP/samples.inf" "$n" || true
sleep 0.5

echo
echo "== delivered to the receiver ($(grep -c '^DELIVERED ' "$UAS_LOG"))"
sed -n 's/^DELIVERED [^ ]* /  /p' "$UAS_LOG"
echo
echo "== quarantined by spimfilter (spimfilter quarantine list)"
"$bin" quarantine list --db "$db"
echo
echo "== sender's view: $UAC_N200 answered 200 (delivered), $UAC_N403 answered 403 (blocked)"
