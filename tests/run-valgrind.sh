#!/bin/sh
# run-valgrind.sh - run each Check unit test binary under valgrind's memcheck
# (Check's default fork mode: valgrind follows each test's child); any
# memory error or definitely lost block fails it. One summary line.
pass=0; fail=0
for t in "$@"; do
    log=$(mktemp)
    if CK_DEFAULT_TIMEOUT=600 valgrind -q --error-exitcode=9 --leak-check=full \
         --errors-for-leak-kinds=definite "$t" >"$log" 2>&1; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "valgrind: FAILED: $t"
        grep -E '^==[0-9]+==|Checks:|:[EF]:' "$log" | head -40
    fi
    rm -f "$log"
done
echo "valgrind: $pass passed, $fail failed"
[ "$fail" = 0 ]
