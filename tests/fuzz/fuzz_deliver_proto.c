/* fuzz_deliver_proto.c - libFuzzer target: the queue-manager <-> deliverer
 * records (dp_job_decode, dp_result_decode). Every accepted record encodes
 * back to a record that decodes to the same fields; fields stay bounded. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "deliver_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char rec[DP_RECORD_MAX];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    size_t len;
    struct dp_job j, j2;
    if (dp_job_decode(&j, s, size)) {
        if (strlen(j.id) != DP_ID_LEN || strlen(j.sender) > DP_ADDR_MAX || !j.rcpt[0]
            || strlen(j.rcpt) > DP_ADDR_MAX || strlen(j.orcpt) > DP_FIELD_MAX
            || strlen(j.envid) > DP_FIELD_MAX || !memchr(j.notify, 0, sizeof j.notify)
            || !memchr(j.body, 0, sizeof j.body))
            __builtin_trap();
        if (!dp_job_encode(&j, rec, sizeof rec, &len)) __builtin_trap();
        if (!dp_job_decode(&j2, rec, len)) __builtin_trap();
        if (j.job != j2.job || j.birth != j2.birth || strcmp(j.id, j2.id) || strcmp(j.sender, j2.sender)
            || strcmp(j.rcpt, j2.rcpt) || strcmp(j.orcpt, j2.orcpt) || strcmp(j.notify, j2.notify)
            || strcmp(j.envid, j2.envid) || strcmp(j.body, j2.body))
            __builtin_trap();
    }
    struct dp_result r, r2;
    if (dp_result_decode(&r, s, size)) {
        if ((r.status != DP_SUCCESS && r.status != DP_TEMPORARY && r.status != DP_PERMANENT)
            || strlen(r.text) > DP_FIELD_MAX)
            __builtin_trap();
        if (!dp_result_encode(&r, rec, sizeof rec, &len)) __builtin_trap();
        if (!dp_result_decode(&r2, rec, len)) __builtin_trap();
        if (r.job != r2.job || r.status != r2.status || strcmp(r.text, r2.text)) __builtin_trap();
    }
    return 0;
}
