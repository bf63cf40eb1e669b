#!/usr/bin/env bash
# test_explain.sh: `spimfilter classify --explain` on a really trained store.
#
# Trains a store on the SMS Spam Collection (../shared/corpora/, else
# corpora/im.tsv), then classifies one spam and one ham message with
# rules/default.rules and --explain, in text and in jsonl, and asserts:
#   - the printed weights of the evidence add up to the printed score (text:
#     to the rounding of two decimals; jsonl: to 1e-9), and the line
#     "sum of weights = X (score X)" says the same number twice;
#   - there is one bayes item, and a rule item for each matched rule;
#   - with a copy of the rules where one rule that matched the spam is marked
#     `shadow`, that rule shows as shadow with what it would add, the score
#     is the old one less the rule's score, and shadow_score is that score;
#     one rules cache file serves both files (the mark is not compiled in);
#   - a rules file with another word after the flags is refused with file:line.
# No network: only the binary, the store and the files in a temp dir.
#
#   SPIMFILTER=build/dev/cli/spimfilter tests/integration/test_explain.sh
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
src=$IT_SRC_DIR
bin=${SPIMFILTER:-$src/build/dev/cli/spimfilter}
corpus=$src/../shared/corpora/SMSSpamCollection.tsv
[ -r "$corpus" ] || corpus=$src/corpora/im.tsv
rules=$src/rules/default.rules
fails=0

[ -x "$bin" ] || { echo "test_explain: no spimfilter binary at $bin" >&2; exit 1; }
it_init || exit 1
export SPIM_RULES_CACHE=$IT_TMP/cache
mkdir -p "$SPIM_RULES_CACHE"
db=$IT_TMP/db
"$bin" train --db "$db" --tsv "$corpus" >"$IT_TMP/train.log" 2>&1 ||
    { it_fail "train on $corpus failed" "$IT_TMP/train.log"; exit 1; }
it_log "trained on $corpus"

printf '%s\n' 'URGENT! You have WON a guaranteed £1000 cash prize. Call 09061701461 to claim now. T&C PO Box 1234 150p/min' >"$IT_TMP/spam.txt"
printf '%s\n' "haha ok i'll be home by 7, see you at dinner :)" >"$IT_TMP/ham.txt"

# explain_text RULES FILE OUT: the text output of --explain.
explain_text() {
    "$bin" classify --db "$db" --rules "$1" --explain "$2" >"$3" 2>"$3.err"
}
explain_json() {
    "$bin" classify --db "$db" --rules "$1" --explain --format jsonl "$2" >"$3" 2>"$3.err"
}
# text_sum_ok OUT: the evidence lines' weights add up to the verdict's score,
# to the rounding of the printed values (0.005 each), and the sum line agrees.
text_sum_ok() {
    awk '
        NR == 1 { if (match($0, /score= *[-0-9.]+/)) score = substr($0, RSTART + 6, RLENGTH - 6) + 0
                  next }
        /^ +[+-][0-9]+\.[0-9][0-9]  / { sum += $1; n++; next }
        /^  sum of weights = / { line_sum = $5; line_score = $7; sub(/\)/, "", line_score); sub(/,/, "", line_score) }
        END {
            d = sum - score; if (d < 0) d = -d
            e = line_sum - line_score; if (e < 0) e = -e
            printf "items %d, printed sum %.4f, score %.4f, sum line %s = %s\n", n, sum, score, line_sum, line_score > "/dev/stderr"
            exit !(n >= 1 && d <= 0.005 * n + 0.006 && e < 0.00005 && line_sum != "")
        }' "$1"
}
# not_in_rules RULE OUT: RULE is not in the verdict's "rules" of the jsonl OUT.
not_in_rules() {
    ! grep -o '"rules":\[[^]]*\]' "$2" | grep -q "\"$1\""
}
# json_num OUT KEY: the first number after "KEY": in OUT.
json_num() {
    grep -o "\"$2\":[-+0-9.eE]*" "$1" | head -1 | cut -d: -f2
}
# json_sum_ok OUT: the "weight" values add up to score_exact within 1e-9.
json_sum_ok() {
    local sum score
    sum=$(grep -o '"weight":[-+0-9.eE]*' "$1" | cut -d: -f2 | awk '{ s += $1 } END { printf "%.17g", s }')
    score=$(json_num "$1" score_exact)
    it_log "jsonl: sum of weights $sum, score_exact $score"
    awk -v a="$sum" -v b="$score" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(b != "" && d < 1e-9) }'
}

# 1. Spam and ham, text and jsonl.
for m in spam ham; do
    explain_text "$rules" "$IT_TMP/$m.txt" "$IT_TMP/$m.out" ||
        { it_fail "classify --explain $m failed" "$IT_TMP/$m.out.err"; exit 1; }
    explain_json "$rules" "$IT_TMP/$m.txt" "$IT_TMP/$m.jsonl" ||
        { it_fail "classify --explain --format jsonl $m failed" "$IT_TMP/$m.jsonl.err"; exit 1; }
    sed 's/^/    /' "$IT_TMP/$m.out" >&2
    check "$m: printed weights add up to the printed score" text_sum_ok "$IT_TMP/$m.out"
    check "$m: jsonl weights add up to score_exact" json_sum_ok "$IT_TMP/$m.jsonl"
    n=$(grep -c '^ *[+-][0-9.]*  bayes ' "$IT_TMP/$m.out")
    check "$m: one bayes item (got $n)" [ "$n" = 1 ]
    nr=$(grep -o '"rules":\[[^]]*\]' "$IT_TMP/$m.jsonl" | grep -o '"[A-Za-z0-9_]*"' | grep -vc '"rules"')
    ni=$(grep -c '^ *[+-][0-9.]*  rule ' "$IT_TMP/$m.out")
    check "$m: a rule item per matched rule ($ni items, $nr rules)" [ "$ni" = "$nr" ]
    check "$m: jsonl has the evidence and the strongest tokens" \
        grep -q '"evidence":\[{"kind":"bayes".*"strongest_tokens":\[{"text":' "$IT_TMP/$m.jsonl"
done
check "spam is blocked" grep -q '^block ' "$IT_TMP/spam.out"
check "ham is delivered" grep -q '^deliver ' "$IT_TMP/ham.out"

# 2. One rule that matched the spam, marked shadow in a copy of the rules.
rule=$(awk '/^ *\+[0-9.]*  rule / { print $3; exit }' "$IT_TMP/spam.out")
[ -n "$rule" ] || { it_fail "no enforced rule with a positive score matched the spam" "$IT_TMP/spam.out"; exit 1; }
rscore=$(awk -v r="$rule" '$1 == r { print $2; exit }' "$rules")
sed -E "s/^($rule[[:space:]].*[^[:space:]])[[:space:]]*\$/\\1 shadow/" "$rules" >"$IT_TMP/shadow.rules"
check "the copy marks $rule shadow" grep -qE "^$rule[[:space:]].* shadow\$" "$IT_TMP/shadow.rules"
it_log "rule $rule (score $rscore) marked shadow"
explain_text "$IT_TMP/shadow.rules" "$IT_TMP/spam.txt" "$IT_TMP/shadow.out" ||
    { it_fail "classify with the shadow rules failed" "$IT_TMP/shadow.out.err"; exit 1; }
explain_json "$IT_TMP/shadow.rules" "$IT_TMP/spam.txt" "$IT_TMP/shadow.jsonl" ||
    { it_fail "classify --format jsonl with the shadow rules failed" "$IT_TMP/shadow.jsonl.err"; exit 1; }
sed 's/^/    /' "$IT_TMP/shadow.out" >&2
check "shadow: $rule shows as shadow with what it would add" \
    grep -qE "^ *\\+0\\.00  rule +$rule  \\(shadow, would add \\+" "$IT_TMP/shadow.out"
check "shadow: $rule is not in the verdict's rules" \
    not_in_rules "$rule" "$IT_TMP/shadow.jsonl"
check "shadow: printed weights add up to the printed score" text_sum_ok "$IT_TMP/shadow.out"
check "shadow: jsonl weights add up to score_exact" json_sum_ok "$IT_TMP/shadow.jsonl"
before=$(json_num "$IT_TMP/spam.jsonl" score_exact)
after=$(json_num "$IT_TMP/shadow.jsonl" score_exact)
shadow=$(json_num "$IT_TMP/shadow.jsonl" shadow_score)
it_log "score $before with $rule enforced, $after with it in shadow (shadow_score $shadow)"
check "shadow: the score is the old one less $rule's $rscore" \
    awk -v a="$before" -v b="$after" -v r="$rscore" 'BEGIN { d = a - r - b; if (d < 0) d = -d; exit !(d < 1e-9) }'
check "shadow: shadow_score is $rule's $rscore" \
    awk -v s="$shadow" -v r="$rscore" 'BEGIN { d = s - r; if (d < 0) d = -d; exit !(d < 1e-9) }'
n=$(find "$SPIM_RULES_CACHE" -name 'rules-*.hsdb' | wc -l)
check "one rules cache file for both files ($n)" [ "$n" = 1 ]

# 3. Another word after the flags: refused, naming the file and line.
printf 'GOOD 1 /fine/i\nBAD 2 /x/i enforce\n' >"$IT_TMP/bad.rules"
"$bin" classify --db "$db" --rules "$IT_TMP/bad.rules" "$IT_TMP/ham.txt" >"$IT_TMP/bad.out" 2>&1
rc=$?
check "bad trailing word: exit 1 (got $rc)" [ "$rc" = 1 ]
check "bad trailing word: file:line and the word" \
    grep -q "$IT_TMP/bad.rules:2: rule BAD: unexpected 'enforce'" "$IT_TMP/bad.out"

if [ "$fails" != 0 ]; then
    it_log "$fails check(s) failed"
    exit 1
fi
it_log "all checks passed"
