#!/bin/sh
# run.sh SECONDS TARGET... - run each libFuzzer target for SECONDS from its
# seeds (tests/fuzz/corpus/<name>, committed, only read) and the inputs it
# found before (build-fuzz/work-<name>, where libFuzzer writes new ones: the
# first corpus directory given), one target at a time, and report executions
# per target; any crash, leak or undefined behaviour fails the run and leaves
# the input in build-fuzz/crash-<name>-* (see docs/FUZZING.md). The targets'
# own stderr (log lines) is closed: libFuzzer and sanitizer reports still show.
secs=$1; shift
fail=0
for t in "$@"; do
    name=$(basename "$t" | sed 's/^fuzz_//')
    corpus=tests/fuzz/corpus/$name
    mkdir -p "$corpus" build-fuzz/work-$name
    log=build-fuzz/$name.log
    dict=
    case $name in     # protocol words help the state machines along
    smtp_session|smtp_data|smtp_bdat|smtp_submission) dict=-dict=tests/fuzz/smtp.dict ;;
    pop3_session) dict=-dict=tests/fuzz/pop3.dict ;;
    smtp_client) dict=-dict=tests/fuzz/smtp_client.dict ;;
    esac
    if "$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -close_fd_mask=2 $dict \
         -artifact_prefix=build-fuzz/crash-$name- build-fuzz/work-$name "$corpus" >"$log" 2>&1; then
        execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
        echo "fuzz: $name ok executions=${execs:-?} seconds=$secs"
    else
        echo "fuzz: $name FAILED (see $log)"; tail -n 30 "$log"; fail=$((fail + 1))
    fi
done
echo "fuzz: $(( $# - fail )) passed, $fail failed"
[ "$fail" = 0 ]
