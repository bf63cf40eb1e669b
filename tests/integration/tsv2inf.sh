#!/usr/bin/env bash
# tsv2inf.sh: turn a labelled TSV corpus (header line, then label<TAB>text)
# into a SIPp injection file for uac_message.xml.
#
#   tsv2inf.sh [-l ham|spam] [-n MAX] IN.tsv > OUT.inf
#
# Output: first line SEQUENTIAL, then one text a line as field0.
# SIPp injection files cannot escape ';' (the field separator), treat a
# line starting with '#' as a comment and stop at the first empty line, so:
#   - ';' becomes ',' ;
#   - CR is removed (no CR/LF may appear in a field);
#   - a text starting with '#' is prefixed with a space so it is not taken
#     as a comment;
#   - empty texts are dropped (an empty line would end the file).
# -l keeps only rows with that label; -n stops after MAX texts.
# The label column is not written: SIPp does not need it, and the caller
# knows the expected verdicts from the TSV (same order, same filtering).
set -euo pipefail

usage() {
    echo "usage: $0 [-l ham|spam] [-n MAX] IN.tsv > OUT.inf" >&2
    exit 2
}

label=""
max=0
while getopts "l:n:h" opt; do
    case $opt in
    l) label=$OPTARG ;;
    n) max=$OPTARG ;;
    *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || usage
[ -r "$1" ] || { echo "$0: cannot read $1" >&2; exit 1; }
case $max in '' | *[!0-9]*) echo "$0: -n wants a number" >&2; exit 2 ;; esac

echo "SEQUENTIAL"
# LC_ALL=C: work on bytes, UTF-8 passes through untouched.
LC_ALL=C awk -F '\t' -v want="$label" -v max="$max" '
NR == 1 { next }                      # header line
{
    lab = $1
    # text = everything after the first TAB (a stray TAB in a text is kept
    # as a space rather than cutting the text).
    i = index($0, "\t")
    if (i == 0) next
    text = substr($0, i + 1)
    gsub(/\r/, "", text)
    gsub(/\t/, " ", text)
    gsub(/;/, ",", text)
    if (want != "" && lab != want) next
    if (text ~ /^[ ]*$/) {
        # An empty line would end the injection file for SIPp.
        printf "tsv2inf: line %d: empty text dropped\n", NR > "/dev/stderr"
        next
    }
    if (substr(text, 1, 1) == "#") text = " " text
    print text
    n++
    if (max > 0 && n >= max) exit
}' "$1"
