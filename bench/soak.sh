#!/usr/bin/env bash
# soak.sh: spimfilter serve's memory under steady load.
#
#   bench/soak.sh [DURATION_S]        (default 600)
#
# The default config (only --listen, --next-hop, --db and --rules
# rules/default.rules given), a store trained on the SMS Spam Collection.
# Finds serve's sustained rate with bench's spim_loadgen (rising rates,
# SEARCH_S seconds each, zero loss and no answer after 500 ms, as
# bench/filter-load.sh; skipped when SUSTAINED is set), then runs the
# loadgen at half that rate for DURATION_S seconds while sampling serve's
# VmRSS, RssAnon and RssFile (/proc/PID/status) every SAMPLE_S seconds.
#
# What "grows" means here. RSS is two things: the anonymous part (heap,
# thread arenas), where a leak would show, and the file part, the pages of
# the LMDB map this process has touched: the model it reads, and the
# quarantine pages it touches as it writes, which serve drops from its RSS
# every few seconds (spim_store_release_pages), so that part saws up and
# down. One sample against another measures where on the saw each fell, not
# growth. So after WARMUP_S seconds of load (the model's pages and the
# allocator's arenas are in by then) the script takes:
#   growth  the median of the last WINDOW_S seconds against the median of
#           the first WINDOW_S seconds, in %;
#   trend   a straight line fitted through every sample after the warm-up:
#           its rise over that span, in % of the first median (what a slow
#           leak would show even when the medians are noisy);
# both for RSS and for its anonymous part alone, and the peak: VmHWM, the
# kernel's own high-water mark, which no sampling can miss.
# Targets (issue 4): peak < 100 MB, RSS growth < 5% and trend < 5%, every
# message answered.
#
# Environment:
#   BUILD_DIR   build tree (build/release); NO_BUILD=1 skips the build
#   CORPUS      TSV (../shared/corpora/SMSSpamCollection.tsv)
#   SUSTAINED   the sustained rate, MESSAGE/s (found by a search when unset)
#   RATE        the soak rate (SUSTAINED / 2)
#   SEARCH_RATES, SEARCH_S   the search ("1000 2000 3000 4000 5000 6000 8000
#               10000 12000 14000 16000 18000 20000 25000 30000 35000", 2)
#   SAMPLE_S    seconds between samples (1)
#   WARMUP_S    seconds of load before the first window (60, or DURATION/10 when shorter)
#   WINDOW_S    seconds of the first and the last window (60, or a quarter of
#               what follows the warm-up when shorter)
#   PRINT_S     seconds between the rows printed (DURATION/20, at least SAMPLE_S)
#   QUARANTINE_MB  quarantine_max_mb for serve (unset: the default, 512). At
#               half the sustained rate the default quota fills within a few
#               minutes (the log says "quarantine full"), after which blocked
#               messages are answered but no longer stored; a larger quota
#               keeps the whole run in the storing regime.
#   PORT        base port, 18500: filter +70, sink +80, generator +61, metrics +90
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dur=${1:-${DURATION_S:-600}}
corpus=${CORPUS:-$root/../shared/corpora/SMSSpamCollection.tsv}
base=${PORT:-18500}
fport=$((base + 70)) sport=$((base + 80)) gport=$((base + 61))
search_rates=${SEARCH_RATES:-"1000 2000 3000 4000 5000 6000 8000 10000 12000 14000 16000 18000 20000 25000 30000 35000"}
search_s=${SEARCH_S:-2}

die() {
    echo "soak.sh: $*" >&2
    exit 2
}
[[ $dur =~ ^[0-9]+$ && $dur -ge 10 ]] || die "DURATION_S must be a whole number of seconds >= 10"
[[ -r $corpus ]] || die "cannot read $corpus"
sample=${SAMPLE_S:-1}
warm=${WARMUP_S:-$((dur >= 600 ? 60 : dur / 10))}
window=${WINDOW_S:-60}
[[ $((window * 4)) -le $((dur - warm)) ]] || window=$(((dur - warm) / 4))
[[ $sample =~ ^[0-9]+$ && $sample -ge 1 && $window -ge $sample ]] ||
    die "SAMPLE_S must be a whole number of seconds >= 1, and DURATION_S long enough for it"
print_s=${PRINT_S:-$((dur / 20 > sample ? dur / 20 : sample))}

if [[ -n ${BUILD_DIR:-} ]]; then
    bdir=$BUILD_DIR
    if [[ ${NO_BUILD:-0} != 1 ]]; then
        [[ -f $bdir/CMakeCache.txt ]] ||
            cmake -S "$root" -B "$bdir" -DCMAKE_BUILD_TYPE=Release \
                -DCMAKE_C_FLAGS_RELEASE='-O2 -DNDEBUG' >/dev/null
        cmake --build "$bdir" -j"$(nproc)" >/dev/null || die "build failed in $bdir"
    fi
else
    bdir=$root/build/release
    if [[ ${NO_BUILD:-0} != 1 ]]; then
        (cd "$root" && cmake --preset release >/dev/null && cmake --build --preset release >/dev/null) ||
            die "release build failed"
    fi
fi
bin=$bdir/cli/spimfilter
lg=$bdir/bench/spim_loadgen
[[ -x $bin && -x $lg ]] || die "$bin or $lg not built"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/spim-soak.XXXXXX")
serve_pid="" lg_pid=""
stop_pid() {
    local p=$1
    [[ -n $p ]] && kill -0 "$p" 2>/dev/null || return 0
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
}
cleanup() {
    stop_pid "$lg_pid"
    stop_pid "$serve_pid"
    if [[ ${KEEP:-0} = 1 ]]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The metrics endpoint (when this build has one) on a port of ours, not its default.
mflag=()
if "$bin" serve --help 2>&1 | grep -q -- --metrics-listen; then
    mflag=(--metrics-listen "127.0.0.1:$((base + 90))")
fi
cflag=()
if [[ -n ${QUARANTINE_MB:-} ]]; then
    [[ $QUARANTINE_MB =~ ^[0-9]+$ ]] || die "QUARANTINE_MB must be a number of MB"
    echo "quarantine_max_mb = $QUARANTINE_MB" >"$tmp/serve.conf"
    cflag=(--config "$tmp/serve.conf")
fi
timeout 120 "$bin" train --db "$tmp/db" --tsv "$corpus" >"$tmp/train.log" 2>&1 || die "train failed"
"$bin" serve "${cflag[@]}" --listen "127.0.0.1:$fport" --next-hop "127.0.0.1:$sport" --db "$tmp/db" \
    --rules "$root/rules/default.rules" "${mflag[@]}" </dev/null >"$tmp/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 100); do
    ss -Hlun "sport = :$fport" 2>/dev/null | grep -q . && break
    kill -0 "$serve_pid" 2>/dev/null || die "serve died: $(tail -5 "$tmp/serve.log")"
    sleep 0.1
done

# status_kb FIELD: a field of /proc/PID/status in kB (0 when gone).
status_kb() { awk -v f="$1:" '$1 == f { print $2; found = 1 } END { if (!found) print 0 }' "/proc/$serve_pid/status" 2>/dev/null || echo 0; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
lg_args=(--target "127.0.0.1:$fport" --bind "127.0.0.1:$gport" --sink "127.0.0.1:$sport"
    --corpus "$corpus" --pid "$serve_pid")

idle=$(status_kb VmRSS)
echo "soak: serve pid $serve_pid, default config, $(head -1 "$tmp/train.log")"
echo "  RSS idle (trained store open, no traffic yet): $(mb "$idle") MB"

sustained=${SUSTAINED:-}
if [[ -z $sustained ]]; then
    sustained=0
    for r in $search_rates; do
        res=$(timeout 60 "$lg" "${lg_args[@]}" --rate "$r" --duration "$search_s" --drain 2 2>&1 |
            grep '^RESULT' || echo "RESULT lost=-1 send_rate=0 other=0")
        # as bench/filter-load.sh: no loss, only 200/403, no answer after 500 ms, rate kept
        if [[ $(kv lost "$res") == 0 && $(kv other "$res") == 0 ]] &&
            awk -v s="$(kv send_rate "$res")" -v r="$r" -v m="$(kv max_us "$res")" \
                'BEGIN { exit !(s >= 0.97 * r && m < 500000) }'; then
            sustained=$r
        else
            break
        fi
    done
    echo "  sustained rate (search, $search_s s a step): $sustained MESSAGE/s"
fi
rate=${RATE:-$((sustained / 2))}
[[ $rate -gt 0 ]] || die "no sustained rate found (serve log: $(tail -2 "$tmp/serve.log"))"
sleep 2
before=$(status_kb VmRSS)
echo "  soak: $rate MESSAGE/s for $dur s, RSS sampled every $sample s; warm-up $warm s," \
    "windows of $window s"
echo "  RSS after the search, before the soak: $(mb "$before") MB"

# read_status: VmRSS, RssAnon, RssFile (kB) into rss anon file, without a subprocess.
read_status() {
    local k v u
    rss=0 anon=0 file=0
    while read -r k v u; do
        case $k in
        VmRSS:) rss=$v ;;
        RssAnon:) anon=$v ;;
        RssFile:) file=$v ;;
        esac
    done <"/proc/$serve_pid/status"
}

"$lg" "${lg_args[@]}" --rate "$rate" --duration "$dur" --drain 5 --interval 60 \
    >"$tmp/soak.out" 2>&1 &
lg_pid=$!
t0=${EPOCHREALTIME/[.,]/}
n=0
: >"$tmp/rss.tsv"
printf '%8s %10s %10s %10s\n' t_s rss_mb anon_mb file_mb
# Samples on a fixed schedule (t0 + k * SAMPLE_S), so that they do not drift.
for ((k = 1; k * sample <= dur; k++)); do
    now=${EPOCHREALTIME/[.,]/}
    wait_us=$((t0 + k * sample * 1000000 - now))
    ((wait_us > 0)) && sleep "$((wait_us / 1000000)).$(printf '%06d' $((wait_us % 1000000)))"
    kill -0 "$lg_pid" 2>/dev/null || break
    kill -0 "$serve_pid" 2>/dev/null || die "serve died: $(tail -5 "$tmp/serve.log")"
    read_status
    t=$((k * sample))
    echo "$t $rss $anon $file" >>"$tmp/rss.tsv"
    n=$((n + 1))
    ((t % print_s == 0)) &&
        printf '%8s %10s %10s %10s\n' "$t" "$(mb "$rss")" "$(mb "$anon")" "$(mb "$file")"
done
wait "$lg_pid" || true
lg_pid=""
res=$(grep '^RESULT' "$tmp/soak.out" || echo "RESULT lost=-1")
hwm=$(status_kb VmHWM)
grep -E '^progress' "$tmp/soak.out" | sed 's/^/  loadgen: /'
grep -E '^  (sent|LOST|latency|spimfilter|other processes)' "$tmp/soak.out" | sed 's/^ */  loadgen: /'
# what serve said that was not a verdict: quarantine full, store errors, ...
grep -E ' (warning|error): ' "$tmp/serve.log" | sed 's/^[^ ]* //' | sort | uniq -c | sort -rn |
    head -5 | sed 's/^/  serve log: /' || true
full_at=$(grep -m1 'quarantine full' "$tmp/serve.log" | cut -c1-19 || true)
if [[ -n $full_at ]]; then
    full_s=$(($(date -u -d "${full_at}Z" +%s) - t0 / 1000000))
    echo "  the quarantine reached quarantine_max_mb at t=${full_s} s (a negative t: during the" \
        "search): from then on blocked messages were answered 403 but not stored"
fi

# stats COLUMN: "first_median last_median growth% trend% max" of column 2 (rss) or 3 (anon),
# over the samples after the warm-up.
stats() {
    awk -v c="$1" -v warm="$warm" -v w="$window" -v dur="$dur" '
        function median(a, n,   i, j, t) {
            for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) {
                t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
            }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        $1 > warm {
            v = $c; n++; sx += $1; sy += v; sxx += $1 * $1; sxy += $1 * v
            if (v > max) max = v
            if ($1 <= warm + w) f[++nf] = v
            if ($1 > last_t) last_t = $1
            t[n] = $1; y[n] = v
            if (n == 1) first_t = $1
        }
        END {
            if (n < 2 || nf == 0) { print "0 0 0 0 0"; exit }
            for (i = 1; i <= n; i++) if (t[i] > last_t - w) l[++nl] = y[i]
            fm = median(f, nf); lm = median(l, nl)
            slope = (n * sxy - sx * sy) / (n * sxx - sx * sx)
            g = 0; tr = 0
            if (fm > 0) { g = 100 * (lm - fm) / fm; tr = 100 * slope * (last_t - first_t) / fm }
            printf "%.0f %.0f %.1f %.1f %.0f\n", fm, lm, g, tr, max
        }' "$tmp/rss.tsv"
}
read -r r_first r_last r_growth r_trend r_max <<<"$(stats 2)"
read -r a_first a_last a_growth a_trend a_max <<<"$(stats 3)"
echo "RSS after the $warm s warm-up: first $window s median $(mb "$r_first") MB, last $window s" \
    "median $(mb "$r_last") MB: growth $r_growth%; trend $r_trend% over the run; highest sample" \
    "$(mb "$r_max") MB ($n samples)"
echo "  of which anonymous (heap): first $(mb "$a_first") MB, last $(mb "$a_last") MB: growth" \
    "$a_growth%, trend $a_trend%"
echo "peak RSS (VmHWM): $(mb "$hwm") MB"
ok_mem=no ok_growth=no ok_ans=no
awk -v p="$hwm" 'BEGIN { exit !(p > 0 && p < 100 * 1024) }' && ok_mem=yes
[[ $r_first =~ ^[0-9]+$ && $r_first -gt 0 ]] &&
    awk -v g="$r_growth" -v t="$r_trend" -v n="$n" 'BEGIN { exit !(n >= 2 && g < 5 && t < 5) }' &&
    ok_growth=yes
[[ $(kv lost "$res") == 0 && $(kv other "$res") == 0 ]] && ok_ans=yes
echo "every message answered: $ok_ans (sent $(kv sent "$res"), answered $(kv answered "$res")," \
    "lost $(kv lost "$res")); peak < 100 MB: $ok_mem; growth and trend < 5%: $ok_growth"
[[ $ok_mem == yes && $ok_growth == yes && $ok_ans == yes ]]
