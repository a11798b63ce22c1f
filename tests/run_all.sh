#!/usr/bin/env bash
# tests/run_all.sh: runs every test binary given, prints PASS/FAIL/SKIP per test and a summary.
# Exit status is non-zero if any test failed. Shell tests (tests/*.sh except this one) run too.
set -u
pass=0; fail=0; skip=0; failed=()
run_one() {
    local name=$1; shift
    local t0=$(date +%s.%N)
    "$@" > "tests/out/$name.log" 2>&1
    local rc=$?
    local dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" "BEGIN{print b-a}")
    if [ $rc -eq 0 ]; then pass=$((pass+1)); printf "PASS  %-36s %6.1fs\n" "$name" "$dt"
    elif [ $rc -eq 77 ]; then skip=$((skip+1)); printf "SKIP  %-36s %s\n" "$name" "$(grep -m1 SKIP "tests/out/$name.log" | sed 's/.*SKIP: //')"
    else fail=$((fail+1)); failed+=("$name"); printf "FAIL  %-36s (rc=%d) log: tests/out/%s.log\n" "$name" $rc "$name"; tail -n 15 "tests/out/$name.log" | sed 's/^/      /'
    fi
}
mkdir -p tests/out
for t in "$@"; do run_one "$(basename "$t")" "$t"; done
for s in tests/test_*.sh; do [ -f "$s" ] && run_one "$(basename "$s" .sh)" bash "$s"; done
echo "---- $pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ] || { echo "failed: ${failed[*]}"; exit 1; }
