# lib.sh: bash helpers for spimfilter's integration tests (source it).
#
# The chain under test, loopback only:
#   SIPp UAC --> Kamailio (docs/examples/kamailio.cfg) --> FILTER --> SIPp UAS
#
#   . tests/integration/lib.sh
#   it_init                                  # temp dir + cleanup trap
#   start_uas 15080                          # receiver, logs delivered bodies
#   start_kamailio 15060 sip:127.0.0.1:15070 # FILTER = the hop for MESSAGE
#   run_uac 127.0.0.1:15060 msgs.inf 20      # -> $UAC_RC, $UAC_N200, $UAC_N403
#   grep -c '^DELIVERED' "$UAS_LOG"
#
# Everything a helper starts is recorded by pid in IT_PIDS; it_cleanup (the
# EXIT/INT/TERM trap set by it_init) sends SIGTERM to each, waits a bounded
# time, then SIGKILLs it and any descendant left (Kamailio's workers).
# Nothing is ever killed by name.
#
# Every wait is bounded (IT_WAIT seconds, default 10). A helper that fails
# prints what failed and the tail of the relevant log on stderr and returns
# non-zero; with `set -e` in the caller that stops the test.
#
# Tunables (environment, read when a helper runs):
#   IT_WAIT       seconds to wait for a port or a process          (10)
#   IT_KEEP=1     keep the temp dir after cleanup (else kept only on failure)
#   KAMAILIO      kamailio binary                                  (kamailio)
#   SIPP          sipp binary                                      (sipp)
#   KAMAILIO_CFG  config                  (docs/examples/kamailio.cfg)
#   KAMAILIO_ARGS extra arguments for kamailio, e.g. "-A FAIL_OPEN" (split
#                 on blanks; for a value with quotes or blanks give it as
#                 an argument of start_kamailio instead)
#   UAS_PORT      the R-URI port run_uac addresses (last start_uas port)
#   UAC_PORT      UAC local port                                   (15061)
#   UAC_RATE, UAC_LIMIT, UAC_TIMEOUT  sipp -r, -l, -timeout        (10, 50, 30)
#   UAC_ARGS      extra arguments for the UAC sipp
#   UAC_SF        the UAC scenario                       (uac_message.xml)
#
# shellcheck shell=bash

IT_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
IT_SRC_DIR=$(cd "$IT_LIB_DIR/../.." && pwd)
IT_PIDS=()
IT_TMP=""
IT_FAILED=0

# check DESCRIPTION CMD...: run CMD; log PASS or FAIL; a failure counts in $fails
# (the caller ends with a non-zero exit when fails is not 0) and keeps the temp dir.
fails=${fails:-0}
check() {
    local what=$1
    shift
    if "$@"; then
        it_log "PASS $what"
    else
        it_log "FAIL $what"
        fails=$((fails + 1))
        IT_FAILED=1
    fi
}

it_log() {
    printf '[it %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

# it_fail MSG [LOGFILE]: report a failure with the tail of LOGFILE.
it_fail() {
    IT_FAILED=1
    it_log "ERROR: $1"
    if [ -n "${2:-}" ] && [ -s "$2" ]; then
        echo "---- last lines of $2 ----" >&2
        tail -n 25 "$2" >&2
        echo "----" >&2
    fi
    return 1
}

# it_init: create the private temp dir ($IT_TMP) and install the cleanup
# trap. Call once per test script, before any start_*.
it_init() {
    command -v ss >/dev/null || { it_fail "ss (iproute2) is needed"; return 1; }
    IT_TMP=$(mktemp -d "${TMPDIR:-/tmp}/spim-it.XXXXXX") || {
        it_fail "mktemp failed"
        return 1
    }
    trap it_cleanup EXIT
    trap 'it_cleanup; exit 130' INT
    trap 'it_cleanup; exit 143' TERM
    it_log "work dir $IT_TMP"
}

# it_spawn LOGFILE CMD...: start CMD in the background, stdin from
# /dev/null, stdout+stderr to LOGFILE, and record its pid in IT_PIDS.
# Sets IT_LAST_PID. (No setsid: under job control a background job is
# already a group leader, setsid would fork and $! would be the wrong pid.)
it_spawn() {
    local log=$1
    shift
    "$@" </dev/null >"$log" 2>&1 &
    IT_LAST_PID=$!
    IT_PIDS+=("$IT_LAST_PID")
}

# it_forget PID: drop PID from IT_PIDS (it has been waited for).
it_forget() {
    local p keep=()
    for p in "${IT_PIDS[@]}"; do
        [ "$p" = "$1" ] || keep+=("$p")
    done
    IT_PIDS=("${keep[@]}")
}

# it_descendants PID: print the pids of PID's children, grandchildren...
it_descendants() {
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        echo "$c"
        it_descendants "$c"
    done
}

# it_stop PID: SIGTERM PID (one of ours, from it_spawn), wait up to IT_WAIT
# seconds, then SIGKILL it; then SIGKILL whatever of its descendants (taken
# before the TERM: Kamailio's workers) is still alive.
it_stop() {
    local pid=$1 i kids
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null
        it_forget "$pid"
        return 0
    fi
    kids=$(it_descendants "$pid")
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < ${IT_WAIT:-10} * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        it_log "pid $pid ignored SIGTERM for ${IT_WAIT:-10}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    it_forget "$pid"
    for i in $kids; do
        kill -0 "$i" 2>/dev/null && kill -KILL "$i" 2>/dev/null
    done
    return 0
}

# it_cleanup: stop everything started, newest first; remove the temp dir
# unless IT_KEEP=1 or a helper failed. Safe to call twice.
it_cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#IT_PIDS[@]} - 1; i >= 0; i--)); do
        it_stop "${IT_PIDS[$i]}"
    done
    IT_PIDS=()
    if [ -n "$IT_TMP" ] && [ -d "$IT_TMP" ]; then
        if [ "${IT_KEEP:-0}" = 1 ] || [ "$IT_FAILED" = 1 ] || [ "$rc" != 0 ]; then
            it_log "kept $IT_TMP"
        else
            rm -rf "$IT_TMP"
        fi
    fi
    return "$rc"
}

# wait_port PORT [PROTO [TIMEOUT [PID]]]: wait until something listens on
# 127.0.0.1:PORT (PROTO udp or tcp, default udp). Gives up after TIMEOUT
# seconds (default IT_WAIT), or at once if PID is given and has died.
wait_port() {
    local port=$1 proto=${2:-udp} timeout=${3:-${IT_WAIT:-10}} pid=${4:-} i flag
    case $proto in
    udp) flag=-Hlun ;;
    tcp) flag=-Hltn ;;
    *) it_fail "wait_port: bad protocol $proto"; return 1 ;;
    esac
    for ((i = 0; i < timeout * 10; i++)); do
        if ss $flag "sport = :$port" 2>/dev/null | grep -q .; then
            return 0
        fi
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        sleep 0.1
    done
    return 1
}

# it_port_free PORT: fail if something already listens on PORT (udp).
it_port_free() {
    if ss -Hlun "sport = :$1" 2>/dev/null | grep -q .; then
        it_fail "udp port $1 is already in use: $(ss -Hlunp "sport = :$1" 2>/dev/null | head -1)"
        return 1
    fi
}

# start_kamailio PORT FILTER_URI [ARG...]: run Kamailio with KAMAILIO_CFG
# on udp:127.0.0.1:PORT, relaying MESSAGE to FILTER_URI (e.g.
# sip:127.0.0.1:15070, quotes added here). Each ARG is passed to kamailio
# as it is, after KAMAILIO_ARGS, e.g.
#   start_kamailio 15060 sip:127.0.0.1:15070 -A WITH_DISPATCHER \
#       -A "DS_LIST=\"$IT_TMP/dispatcher.list\""
# Private run dir and pid file under $IT_TMP; log in $KAM_LOG. Sets KAM_PID.
start_kamailio() {
    local port=${1:-} filter=${2:-} dir
    shift 2 2>/dev/null || shift $#
    [ -n "$IT_TMP" ] || { it_fail "start_kamailio: call it_init first"; return 1; }
    if [ -z "$port" ] || [ -z "$filter" ]; then
        it_fail "usage: start_kamailio PORT FILTER_URI"
        return 1
    fi
    it_port_free "$port" || return 1
    local cfg=${KAMAILIO_CFG:-$IT_SRC_DIR/docs/examples/kamailio.cfg}
    dir=$IT_TMP/kamailio-$port
    mkdir -p "$dir"
    KAM_LOG=$dir/kamailio.log
    # The define is substituted as text: a string value needs its quotes.
    # shellcheck disable=SC2086
    it_spawn "$KAM_LOG" "${KAMAILIO:-kamailio}" -DD -E -f "$cfg" \
        -Y "$dir" -P "$dir/kamailio.pid" -m "${KAM_SHM:-512}" -M "${KAM_PKG:-16}" \
        -A "LISTEN=udp:127.0.0.1:$port" -A "FILTER=\"$filter\"" ${KAMAILIO_ARGS:-} "$@"
    KAM_PID=$IT_LAST_PID
    if ! wait_port "$port" udp "${IT_WAIT:-10}" "$KAM_PID"; then
        it_fail "kamailio did not start on udp 127.0.0.1:$port (cfg $cfg)" "$KAM_LOG"
        return 1
    fi
    it_log "kamailio pid $KAM_PID on 127.0.0.1:$port, MESSAGE -> $filter"
}

# start_uas PORT [SCENARIO]: run a SIPp UAS (default uas_message.xml,
# answers 200) on 127.0.0.1:PORT. Delivered bodies are logged to $UAS_LOG,
# one "DELIVERED <Call-ID> <body>" line each. Sets UAS_PID and UAS_PORT
# (the port run_uac puts in the Request-URI).
start_uas() {
    local port=${1:-} sf=${2:-$IT_LIB_DIR/uas_message.xml} dir
    [ -n "$IT_TMP" ] || { it_fail "start_uas: call it_init first"; return 1; }
    [ -n "$port" ] || { it_fail "usage: start_uas PORT [SCENARIO]"; return 1; }
    it_port_free "$port" || return 1
    dir=$IT_TMP/uas-$port
    mkdir -p "$dir"
    UAS_LOG=$dir/delivered.log
    : >"$UAS_LOG"
    # env -C: SIPp writes its own files into the current directory.
    it_spawn "$dir/sipp.out" env -C "$dir" "${SIPP:-sipp}" -sf "$sf" \
        -i 127.0.0.1 -p "$port" -aa -nostdin -bind_local \
        -trace_logs -log_file "$UAS_LOG" -trace_err -error_file "$dir/errors.log"
    UAS_PID=$IT_LAST_PID
    if ! wait_port "$port" udp "${IT_WAIT:-10}" "$UAS_PID"; then
        it_fail "sipp UAS did not start on udp 127.0.0.1:$port" "$dir/sipp.out"
        return 1
    fi
    UAS_PORT=$port
    it_log "sipp UAS pid $UAS_PID on 127.0.0.1:$port ($(basename "$sf")), log $UAS_LOG"
}

# run_uac TARGET INF_FILE COUNT: send COUNT MESSAGEs (bodies from INF_FILE,
# see tsv2inf.sh) to TARGET (host:port of Kamailio), R-URI
# sip:bob@127.0.0.1:$UAS_PORT. Waits for sipp to finish (bounded by its
# -timeout) and returns its exit status: 0 = every MESSAGE got 200 or 403.
# Leaves in $UAC_DIR: stat.csv (-trace_stat), counts.csv (-trace_counts,
# per-row counts), verdicts.log (one "VERDICT 200|403 <call-id>" a call),
# errors.log, sipp.out. Sets UAC_RC, UAC_N200, UAC_N403, UAC_DIR.
run_uac() {
    local target=$1 inf=$2 count=$3 n
    [ -n "$IT_TMP" ] || { it_fail "run_uac: call it_init first"; return 1; }
    [ $# -ge 3 ] || { it_fail "usage: run_uac TARGET INF_FILE COUNT"; return 1; }
    [ -r "$inf" ] || { it_fail "run_uac: cannot read $inf"; return 1; }
    inf=$(cd "$(dirname "$inf")" && pwd)/$(basename "$inf")
    IT_UAC_SEQ=$((${IT_UAC_SEQ:-0} + 1))
    UAC_DIR=$IT_TMP/uac-$IT_UAC_SEQ
    mkdir -p "$UAC_DIR"
    local timeout=${UAC_TIMEOUT:-30} sf=${UAC_SF:-$IT_LIB_DIR/uac_message.xml}
    # sipp runs in the background and is waited for, so that a TERM/INT
    # trap in the caller runs at once and cleans it up. -timeout bounds the
    # run; the outer bound (timeout + 15 s) only guards against a hung sipp.
    # shellcheck disable=SC2086
    it_spawn "$UAC_DIR/sipp.out" env -C "$UAC_DIR" \
        timeout -k 5 $((timeout + 15)) "${SIPP:-sipp}" "$target" \
        -sf "$sf" -inf "$inf" -key uas_port "${UAS_PORT:-5080}" -s bob \
        -i 127.0.0.1 -p "${UAC_PORT:-15061}" -bind_local \
        -m "$count" -r "${UAC_RATE:-10}" -rp 1000 -l "${UAC_LIMIT:-50}" \
        -timeout "$timeout" -timeout_error -nostdin \
        -trace_stat -stf "$UAC_DIR/stat.csv" -fd 1 \
        -trace_counts \
        -trace_logs -log_file "$UAC_DIR/verdicts.log" \
        -trace_err -error_file "$UAC_DIR/errors.log" \
        ${UAC_ARGS:-}
    local pid=$IT_LAST_PID
    wait "$pid"
    UAC_RC=$?
    # Done: forget the pid so cleanup does not signal a recycled one.
    it_forget "$pid"
    # -trace_counts has no file option: uac_message_<pid>_counts.csv.
    for n in "$UAC_DIR"/uac_message_*_counts.csv; do
        [ -e "$n" ] && mv "$n" "$UAC_DIR/counts.csv"
    done
    UAC_N200=$(grep -c '^VERDICT 200 ' "$UAC_DIR/verdicts.log" 2>/dev/null)
    UAC_N403=$(grep -c '^VERDICT 403 ' "$UAC_DIR/verdicts.log" 2>/dev/null)
    UAC_N200=${UAC_N200:-0}
    UAC_N403=${UAC_N403:-0}
    it_log "uac -> $target: $count sent, rc=$UAC_RC, 200=$UAC_N200, 403=$UAC_N403 ($UAC_DIR)"
    if [ "$UAC_RC" != 0 ]; then
        IT_FAILED=1
        [ -s "$UAC_DIR/errors.log" ] && tail -n 10 "$UAC_DIR/errors.log" >&2
        tail -n 15 "$UAC_DIR/sipp.out" >&2
    fi
    return "$UAC_RC"
}
