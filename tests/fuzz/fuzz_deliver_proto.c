/* fuzz_deliver_proto.c - libFuzzer target: the queue-manager <-> deliverer
 * records (dp_job_decode, dp_result_decode, dp_reload_decode) and
 * local-deliverer's mailbox job (dp_mbox_decode). Every accepted record
 * encodes back to a record that decodes to the same fields; fields stay
 * bounded; the reload record is accepted only as itself. */
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
        if (r.job != r2.job || r.status != r2.status || strcmp(r.text, r2.text) || strcmp(r.action, r2.action))
            __builtin_trap();
    }
    static struct dp_mbox m, m2;
    if (dp_mbox_decode(&m, s, size)) {
        if (strlen(m.id) != DP_ID_LEN || strlen(m.sender) > DP_ADDR_MAX || !m.rcpt[0]
            || strlen(m.rcpt) > DP_ADDR_MAX || !m.maildir[0] || strlen(m.maildir) > DP_PATH_MAX
            || !m.host[0] || strlen(m.host) > DP_HOST_MAX || !m.uid || !m.gid)
            __builtin_trap();
        if (!dp_mbox_encode(&m, rec, sizeof rec, &len)) __builtin_trap();
        if (!dp_mbox_decode(&m2, rec, len)) __builtin_trap();
        if (m.job != m2.job || m.uid != m2.uid || m.gid != m2.gid || m.quota != m2.quota || strcmp(m.id, m2.id)
            || strcmp(m.sender, m2.sender) || strcmp(m.rcpt, m2.rcpt) || strcmp(m.maildir, m2.maildir)
            || strcmp(m.host, m2.host))
            __builtin_trap();
    }
    if (dp_reload_decode(s, size)) {
        if (!dp_reload_encode(rec, sizeof rec, &len) || len != size || memcmp(rec, s, size)) __builtin_trap();
    }
    return 0;
}
