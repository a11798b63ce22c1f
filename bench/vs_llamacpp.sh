#!/usr/bin/env bash
# bench/vs_llamacpp.sh: this engine against llama.cpp's llama-bench on the same machine, run by run.
#
# A shared VM's memory bandwidth can swing 2x within seconds, so two tables taken minutes apart
# compare the weather, not the engines. This script alternates the two tools run by run (the order
# flips every round), one short test each, and reports the median, range and who won each round.
# llama.cpp is not part of this project: build llama-bench yourself (docs/BENCH.md shows how) and
# pass its path.
#
#   bench/vs_llamacpp.sh --llama-bench PATH [-t N] [-n N | -p N] [-r ROUNDS] OURS=THEIRS ...
#
# OURS is any model ./llm-bench loads (e.g. a ./quantize'd model.bin), THEIRS a GGUF for llama-bench.
# Output: one markdown table on stdout; progress on stderr. Exit 1 on bad arguments or a failed run.
set -u
cd "$(dirname "$0")/.." || exit 1

usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 1
}
die() { echo "vs_llamacpp: $*" >&2; exit 1; }

LB="" T=2 N=32 P=0 R=6 pairs=()
while [ $# -gt 0 ]; do
    case $1 in
    --llama-bench) [ $# -ge 2 ] || die "--llama-bench needs a path"; LB=$2; shift 2 ;;
    -t) [ $# -ge 2 ] || die "-t needs a value"; T=$2; shift 2 ;;
    -n) [ $# -ge 2 ] || die "-n needs a value"; N=$2; P=0; shift 2 ;;
    -p) [ $# -ge 2 ] || die "-p needs a value"; P=$2; N=0; shift 2 ;;
    -r) [ $# -ge 2 ] || die "-r needs a value"; R=$2; shift 2 ;;
    -h|--help) usage ;;
    -*) die "unknown argument '$1' (--help)" ;;
    *=*) pairs+=("$1"); shift ;;
    *) die "'$1' is not OURS=THEIRS" ;;
    esac
done
[ -n "$LB" ] || die "--llama-bench PATH is required (llama.cpp's llama-bench; docs/BENCH.md)"
[ -x "$LB" ] || die "$LB: not an executable"
[ -x ./llm-bench ] || die "./llm-bench not built (make llm-bench)"
for v in "$T" "$N" "$P" "$R"; do
    [[ $v =~ ^[0-9]+$ ]] || die "'$v' is not a non-negative integer"
done
[ "$R" -ge 1 ] && [ "$R" -le 100 ] || die "-r must be 1..100"
[ "$T" -ge 1 ] || die "-t must be >= 1"
[ $((N + P)) -gt 0 ] || die "-n or -p must be > 0"
[ ${#pairs[@]} -gt 0 ] || die "no OURS=THEIRS pair given"
if [ "$N" -gt 0 ]; then test="tg$N"; else test="pp$P"; fi

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

# column $2 of the CSV on stdin (by header name), first data row
csv_col() { awk -F, -v c="$1" 'NR==1{for(i=1;i<=NF;i++){h=$i; gsub(/"/,"",h); if(h==c) k=i}; next}
                                k{v=$k; gsub(/"/,"",v); print v; exit}'; }

theirs_run() {   # t/s of one llama-bench run
    "$LB" -m "$1" -t "$T" -p "$P" -n "$N" -r 1 -o csv 2>"$tmp/err" | csv_col avg_ts
}
ours_run() {
    ./llm-bench -m "$1" -t "$T" -p "$P" -n "$N" -r 1 -o csv 2>"$tmp/err" | csv_col tps_mean
}
stats() {   # median min max of the numbers on stdin
    sort -g | awk '{a[NR]=$1} END{m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.2f %.2f %.2f\n", m, a[1], a[NR]}'
}

for pr in "${pairs[@]}"; do
    ours=${pr%%=*} theirs=${pr#*=}
    [ -f "$ours" ] || [ -d "$ours" ] || die "$ours: no such model"
    [ -f "$theirs" ] || die "$theirs: no such file"
done
echo "| ours | llama.cpp | test | ours t/s median (range) | llama.cpp t/s median (range) | ours / llama.cpp | ours faster in |"
echo "|---|---|---|---:|---:|---:|---:|"
for pr in "${pairs[@]}"; do
    ours=${pr%%=*} theirs=${pr#*=}
    : > "$tmp/a"; : > "$tmp/b"; wins=0
    for ((i = 1; i <= R; i++)); do
        for side in $( ((i % 2)) && echo "theirs ours" || echo "ours theirs"); do
            if [ "$side" = theirs ]; then b=$(theirs_run "$theirs"); else a=$(ours_run "$ours"); fi
            v=$([ "$side" = theirs ] && echo "${b:-}" || echo "${a:-}")
            [[ $v =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "$side run on $([ "$side" = theirs ] && echo "$theirs" || echo "$ours") gave no t/s: $(tail -2 "$tmp/err")"
        done
        echo "$a" >> "$tmp/a"; echo "$b" >> "$tmp/b"
        awk -v a="$a" -v b="$b" 'BEGIN{exit !(a > b)}' && wins=$((wins + 1))
        echo "vs_llamacpp: $(basename "$ours") vs $(basename "$theirs") round $i/$R: ours $a, llama.cpp $b t/s" >&2
    done
    read -r am amin amax < <(stats < "$tmp/a")
    read -r bm bmin bmax < <(stats < "$tmp/b")
    ratio=$(awk -v a="$am" -v b="$bm" 'BEGIN{printf "%.2f", (b > 0 ? a / b : 0)}')
    echo "| $(basename "$ours") | $(basename "$theirs") | $test | $am ($amin-$amax) | $bm ($bmin-$bmax) | $ratio | $wins of $R |"
done
