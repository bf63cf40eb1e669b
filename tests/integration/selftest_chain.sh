#!/usr/bin/env bash
# selftest_chain.sh: check the test chain itself, WITHOUT spimfilter:
# docs/examples/kamailio.cfg, the SIPp scenarios, tsv2inf.sh and lib.sh.
# A SIPp UAS stands where the filter would be (FILTER = its port).
#
#   1. UAS answering 200 as "filter": 20 MESSAGEs all get 200, 20 delivered
#      with the bodies intact (UTF-8, ';' replaced).
#   2. UAS answering 403 as "filter": 20 MESSAGEs counted as 403, sipp exit 0.
#   3. No filter listening, fail-closed (default): 503, sipp exit non-zero,
#      nothing delivered.
#   4. No filter listening, -A FAIL_OPEN: MESSAGE goes to its R-URI (a UAS
#      on another port) unfiltered, 200.
#
# Loopback only; ports 15060 (Kamailio), 15070 (filter slot), 15080 (R-URI
# receiver), 15061 (UAC). Takes about 20 s. Exit 0 when all pass.
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

fails=0

it_init || exit 1

tsv=$IT_TMP/chain.tsv
printf 'label\ttext\n' >"$tsv"
printf 'ham\tlunch at 12:30? 🍕 ça va, bis später\n' >>"$tsv"
printf 'spam\tWIN a fr33 prize; reply YES to 80888 now\n' >>"$tsv"
"$here/tsv2inf.sh" "$tsv" >"$IT_TMP/chain.inf" || exit 1

# 1. "filter" answers 200.
start_uas 15070 || exit 1
start_kamailio 15060 sip:127.0.0.1:15070 || exit 1
run_uac 127.0.0.1:15060 "$IT_TMP/chain.inf" 20
check "200 via kamailio: sipp rc 0 (got $UAC_RC)" [ "$UAC_RC" = 0 ]
check "200 via kamailio: 20 x 200 (got $UAC_N200)" [ "$UAC_N200" = 20 ]
sleep 0.3
n=$(grep -c '^DELIVERED ' "$UAS_LOG")
check "200 via kamailio: 20 delivered (got $n)" [ "$n" = 20 ]
check "bodies intact (UTF-8, ';' -> ',')" \
    grep -q 'DELIVERED [^ ]* WIN a fr33 prize, reply YES to 80888 now$' "$UAS_LOG"
check "UTF-8 body intact" grep -q ' lunch at 12:30? 🍕 ça va, bis später$' "$UAS_LOG"
it_stop "$UAS_PID"

# 2. "filter" answers 403.
start_uas 15070 "$here/uas_reject.xml" || exit 1
run_uac 127.0.0.1:15060 "$IT_TMP/chain.inf" 20
check "403 via kamailio: sipp rc 0 (got $UAC_RC)" [ "$UAC_RC" = 0 ]
check "403 via kamailio: 20 x 403 (got $UAC_N403)" [ "$UAC_N403" = 20 ]
it_stop "$UAS_PID"

# 3. Nothing on the filter port, fail-closed: 503 after the 2 s fr timer.
start_uas 15080 || exit 1
UAC_TIMEOUT=15 run_uac 127.0.0.1:15060 "$IT_TMP/chain.inf" 2
check "filter down, fail-closed: sipp rc non-zero (got $UAC_RC)" [ "$UAC_RC" != 0 ]
check "filter down, fail-closed: no 200/403" [ "$((UAC_N200 + UAC_N403))" = 0 ]
check "filter down, fail-closed: 503 seen" \
    grep -q 'SIP/2.0 503' "$UAC_DIR/errors.log"
check "filter down, fail-closed: nothing delivered" [ ! -s "$UAS_LOG" ]
check "kamailio logged fail-closed" grep -q 'fail-closed' "$KAM_LOG"
IT_FAILED=0 # that sipp failure was expected
it_stop "$KAM_PID"

# 4. Same, fail-open: delivered unfiltered to the R-URI (the UAS on 15080).
KAMAILIO_ARGS="-A FAIL_OPEN" start_kamailio 15060 sip:127.0.0.1:15070 || exit 1
UAC_TIMEOUT=15 run_uac 127.0.0.1:15060 "$IT_TMP/chain.inf" 2
check "filter down, fail-open: sipp rc 0 (got $UAC_RC)" [ "$UAC_RC" = 0 ]
check "filter down, fail-open: 2 x 200 (got $UAC_N200)" [ "$UAC_N200" = 2 ]
sleep 0.3
n=$(grep -c '^DELIVERED ' "$UAS_LOG")
check "filter down, fail-open: 2 delivered to R-URI (got $n)" [ "$n" = 2 ]

if [ "$fails" = 0 ]; then
    it_log "all chain checks passed"
    exit 0
fi
it_log "$fails chain check(s) failed"
exit 1
