#!/bin/sh
# run-unit.sh - run each Check unit test binary; print one summary line.
pass=0; fail=0
for t in "$@"; do
    if CK_DEFAULT_TIMEOUT=30 "$t"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "unit: FAILED: $t"; fi
done
echo "unit: $pass passed, $fail failed"
[ "$fail" = 0 ]
