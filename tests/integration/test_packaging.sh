#!/usr/bin/env bash
# test_packaging.sh: what an operator installs: the systemd unit, the man
# page, the example config, --version and every subcommand's --help.
#
# Asserts: `systemd-analyze verify` accepts packaging/spimfilter.service
# (a temp copy whose ExecStart is the built binary, the man page findable
# for Documentation=) and its offline security review stays at exposure 2.5
# or less; the unit has the hardening it promises; `man -l` renders
# docs/spimfilter.1 without a warning and the page names every subcommand of
# cli/main.c and every key cli/config.c accepts; docs/examples/spimfilter.conf
# has every key too and loads (`serve --check-config`); `spimfilter
# --version` prints the project's version; `<command> --help` works for
# every subcommand; `cmake --install` lays out the binary, page and unit;
# a static spimfilter (the release build) classifies alone as its dynamic
# twin does, runs the network commands in it, and says so when it is missing.
#
#   SPIMFILTER=build/dev/cli/spimfilter SPIM_BUILD_DIR=build/dev tests/integration/test_packaging.sh
set -u
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
bin=${SPIMFILTER:-$src/build/dev/cli/spimfilter}
build=${SPIM_BUILD_DIR:-}
unit=$src/packaging/spimfilter.service
page=$src/docs/spimfilter.1
conf=$src/docs/examples/spimfilter.conf
fails=0
log() {
    printf '[pkg %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}
check() {
    local what=$1
    shift
    if "$@"; then
        log "PASS $what"
    else
        log "FAIL $what"
        fails=$((fails + 1))
    fi
}
ok() {
    eval "$1"
}

[ -x "$bin" ] || { echo "test_packaging: no spimfilter binary at $bin" >&2; exit 1; }
for tool in systemd-analyze man; do
    command -v "$tool" >/dev/null || { echo "test_packaging: $tool is needed (scripts/install-deps.sh)" >&2; exit 1; }
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/spim-pkg.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

# 1. The unit.
check "ExecStart is /usr/local/bin/spimfilter serve" grep -q '^ExecStart=/usr/local/bin/spimfilter serve ' "$unit"
for d in 'DynamicUser=yes' 'StateDirectory=spimfilter' 'ProtectSystem=strict' \
    'ReadWritePaths=/var/lib/spimfilter' 'NoNewPrivileges=yes' 'PrivateTmp=yes' 'ProtectHome=yes' \
    'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' 'CapabilityBoundingSet=' \
    'ExecReload=/bin/kill -HUP $MAINPID' 'StandardError=journal'; do
    check "unit: $d" grep -qxF "$d" "$unit"
done
check "unit: ReadWritePaths names the store only" ok '[ "$(grep -c "^ReadWritePaths=" "$unit")" = 1 ]'
mkdir -p "$tmp/unit" "$tmp/man/man1"
sed "s|^ExecStart=/usr/local/bin/spimfilter |ExecStart=$bin |" "$unit" >"$tmp/unit/spimfilter.service"
cp "$page" "$tmp/man/man1/spimfilter.1"
# Documentation=man:spimfilter(1) is checked with man: let it find the page.
MANPATH=$tmp/man systemd-analyze verify "$tmp/unit/spimfilter.service" >"$tmp/verify.out" 2>&1
verify_rc=$?
check "systemd-analyze verify accepts the unit (rc $verify_rc)" ok '[ "$verify_rc" = 0 ] && [ ! -s "$tmp/verify.out" ]'
[ -s "$tmp/verify.out" ] && cat "$tmp/verify.out" >&2
systemd-analyze security --offline=yes --threshold=25 "$tmp/unit/spimfilter.service" >"$tmp/security.out" 2>&1
security_rc=$?
exposure=$(sed -n 's/.*Overall exposure level for spimfilter.service: \([0-9.]*\).*/\1/p' "$tmp/security.out")
check "systemd-analyze security: exposure ${exposure:-?} <= 2.5" ok '[ "$security_rc" = 0 ] && [ -n "$exposure" ]'
# A unit that breaks is caught: verify must fail on a bad directive.
sed 's/^ProtectSystem=strict/ProtectSystem=sometimes/' "$tmp/unit/spimfilter.service" >"$tmp/unit/bad.service"
MANPATH=$tmp/man systemd-analyze verify "$tmp/unit/bad.service" >"$tmp/bad.out" 2>&1
check "systemd-analyze verify reports a bad directive" grep -q 'bad.service:[0-9]*: ' "$tmp/bad.out"

# 2. The man page.
LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$page" >"$tmp/man.txt" 2>"$tmp/man.err"
man_rc=$?
check "man -l renders the page (rc $man_rc)" ok '[ "$man_rc" = 0 ] && [ -s "$tmp/man.txt" ]'
check "man -l: no warnings" ok '[ ! -s "$tmp/man.err" ]'
[ -s "$tmp/man.err" ] && cat "$tmp/man.err" >&2
cmds=$(grep -oE '\{"[a-z-]+", (NET_CMD\()?spim_cmd_' "$src/cli/main.c" | sed 's/{"\(.*\)".*/\1/' | sort -u)
check "subcommands found in cli/main.c ($(echo $cmds | wc -w))" ok '[ "$(echo $cmds | wc -w)" -ge 8 ]'
keys=$(grep -o 'strcmp(key, "[a-z_]*")' "$src/cli/config.c" | sed 's/.*"\(.*\)".*/\1/' | sort -u)
check "config keys found in cli/config.c ($(echo $keys | wc -w))" ok '[ "$(echo $keys | wc -w)" -ge 40 ]'
for c in $cmds; do
    check "man: a section for '$c'" grep -Eq "^   $c( |$)" "$tmp/man.txt"
done
for k in $keys; do
    check "man: config key $k" grep -Eq "(^|[ ,])$k(,|$| )" "$tmp/man.txt"
    check "example config: key $k" grep -Eq "^(# )?$k =" "$conf"
done

# 3. The example config loads as it is (db and rules pointed at this tree; --check-config
#    wants a store that exists).
"$bin" train --db "$tmp/db" --tsv "$src/corpora/im.tsv" >/dev/null
"$bin" serve --config "$conf" --check-config --db "$tmp/db" --rules "$src/rules/default.rules" \
    >"$tmp/check.out" 2>&1
check "the example config loads (serve --check-config)" grep -q '^config OK' "$tmp/check.out"
grep -q '^config OK' "$tmp/check.out" || cat "$tmp/check.out" >&2

# 4. --version and --help.
want=$(sed -n 's/^project(spimfilter VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
got=$("$bin" --version)
check "--version prints 'spimfilter $want' (got '$got')" ok '[ -n "$want" ] && [ "$got" = "spimfilter $want" ]'
"$bin" --help >"$tmp/help.txt" 2>&1
rc=$?
check "--help exits 0 (rc $rc)" ok '[ "$rc" = 0 ]'
for c in $cmds; do
    check "--help lists '$c'" grep -Eq "^  $c " "$tmp/help.txt"
    "$bin" "$c" --help >"$tmp/help-$c.txt" 2>&1
    rc=$?
    check "'$c --help' exits 0 (rc $rc)" ok '[ "$rc" = 0 ]'
    check "'$c --help' prints its usage" grep -q "^usage: spimfilter $c" "$tmp/help-$c.txt"
    # av-check's first argument may be a path; the others take no bare word first
    if [ "$c" != av-check ]; then
        "$bin" "$c" --no-such-option >/dev/null 2>&1
        rc=$?
        check "'$c --no-such-option' is a usage error, exit 2 (rc $rc)" ok '[ "$rc" = 2 ]'
    fi
done
"$bin" no-such-command >/dev/null 2>&1
rc=$?
check "an unknown command exits 2 (rc $rc)" ok '[ "$rc" = 2 ]'

# 5. The installed layout.
if [ -n "$build" ]; then
    cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.out" 2>&1
    rc=$?
    check "cmake --install succeeds (rc $rc)" ok '[ "$rc" = 0 ]'
    for f in bin/spimfilter share/man/man1/spimfilter.1 lib/systemd/system/spimfilter.service \
        share/doc/spimfilter/examples/spimfilter.conf share/spimfilter/rules/default.rules; do
        check "installed $f" [ -e "$tmp/prefix/$f" ]
    done
    check "the installed unit runs the installed binary (under the install's prefix)" \
        grep -q "^ExecStart=$tmp/prefix/bin/spimfilter serve " "$tmp/prefix/lib/systemd/system/spimfilter.service"
    check "install_manifest.txt lists the unit and the example config, written at install time" \
        ok '[ "$(grep -c -e "^$tmp/prefix/lib/systemd/system/spimfilter.service\$" \
            -e "^$tmp/prefix/share/doc/spimfilter/examples/spimfilter.conf\$" \
            "$build/install_manifest.txt")" = 2 ]'
    check "the installed example config names the installed rules" \
        grep -q "^rules = $tmp/prefix/share/spimfilter/rules/default.rules\$" \
        "$tmp/prefix/share/doc/spimfilter/examples/spimfilter.conf"
    "$tmp/prefix/bin/spimfilter" train --db "$tmp/inst-db" --tsv "$src/corpora/im.tsv" >/dev/null
    "$tmp/prefix/bin/spimfilter" serve --check-config \
        --config "$tmp/prefix/share/doc/spimfilter/examples/spimfilter.conf" \
        --db "$tmp/inst-db" >"$tmp/inst-check.txt" 2>&1
    rc=$?
    check "serve --check-config takes the installed example config, rules and all (rc $rc)" \
        ok '[ "$rc" = 0 ] && grep -q "^config OK: .*, [1-9][0-9]* rules," "$tmp/inst-check.txt"'
    if [ -x "$build/cli/spimfilter-serve" ]; then
        check "installed libexec/spimfilter/spimfilter-serve" \
            [ -x "$tmp/prefix/libexec/spimfilter/spimfilter-serve" ]
        "$tmp/prefix/bin/spimfilter" serve --help >"$tmp/inst-serve.txt" 2>&1
        check "the installed spimfilter runs serve in its installed twin" \
            grep -q '^usage: spimfilter serve' "$tmp/inst-serve.txt"
    fi
else
    log "SKIP install layout: SPIM_BUILD_DIR not set"
fi

# 6. A static spimfilter (SPIM_STATIC_EXE) and its dynamic twin for the network commands.
twin=$(dirname "$bin")/spimfilter-serve
if [ -x "$twin" ]; then
    check "spimfilter is static (no program interpreter)" ok '! readelf -lW "$bin" | grep -q INTERP'
    check "spimfilter-serve is the dynamic build" ok 'readelf -lW "$twin" | grep -q INTERP'
    mkdir -p "$tmp/lone"
    cp "$bin" "$tmp/lone/spimfilter"
    "$tmp/lone/spimfilter" classify --db "$tmp/db" --rules "$src/rules/default.rules" \
        --tsv "$src/corpora/im.tsv" --format jsonl >"$tmp/lone.jsonl" 2>&1
    "$twin" classify --db "$tmp/db" --rules "$src/rules/default.rules" \
        --tsv "$src/corpora/im.tsv" --format jsonl >"$tmp/twin.jsonl" 2>&1
    check "alone, spimfilter classifies as its twin does" \
        ok '[ -s "$tmp/lone.jsonl" ] && cmp -s "$tmp/lone.jsonl" "$tmp/twin.jsonl"'
    # Copied under the twin's name, the static program refuses (it exec'd itself forever).
    cp "$bin" "$tmp/lone/spimfilter-serve"
    timeout 10 "$tmp/lone/spimfilter" serve --help >"$tmp/loop.out" 2>&1
    rc=$?
    check "a static spimfilter as its own twin exits 1 (rc $rc)" ok '[ "$rc" = 1 ]'
    check "... and says it is not the dynamic build" grep -q 'not the dynamic build' "$tmp/loop.out"
    rm -f "$tmp/lone/spimfilter-serve"
    if [ ! -e /usr/local/libexec/spimfilter/spimfilter-serve ]; then
        "$tmp/lone/spimfilter" serve --help >"$tmp/lone.out" 2>&1
        rc=$?
        check "alone, 'spimfilter serve' exits 1 (rc $rc)" ok '[ "$rc" = 1 ]'
        check "... and names spimfilter-serve and where it looked" \
            grep -q 'runs in spimfilter-serve .*libexec/spimfilter/' "$tmp/lone.out"
    fi
else
    log "SKIP static build: no spimfilter-serve beside $bin"
fi

# 7. train from a pipe and a FIFO: learned as they come (read twice, nothing was learned).
"$bin" db stats --db "$tmp/db" >"$tmp/stats-file.txt" 2>&1
cat "$src/corpora/im.tsv" | "$bin" train --db "$tmp/pipedb" --tsv /dev/stdin >/dev/null 2>&1
"$bin" db stats --db "$tmp/pipedb" >"$tmp/stats-pipe.txt" 2>&1
check "train --tsv /dev/stdin from a pipe learns what the file does" \
    ok 'grep "^messages trained" "$tmp/stats-file.txt" >"$tmp/a" && grep "^messages trained" "$tmp/stats-pipe.txt" >"$tmp/b" && cmp -s "$tmp/a" "$tmp/b"'
mkfifo "$tmp/fifo"
cat "$src/corpora/im.tsv" >"$tmp/fifo" &
timeout 20 "$bin" train --db "$tmp/fifodb" --tsv "$tmp/fifo" >/dev/null 2>&1
rc=$?
wait
check "train --tsv FIFO ends (rc $rc)" ok '[ "$rc" = 0 ]'

if [ "$fails" != 0 ]; then
    echo "test_packaging: $fails check(s) failed" >&2
    exit 1
fi
log "test_packaging: all checks passed"
