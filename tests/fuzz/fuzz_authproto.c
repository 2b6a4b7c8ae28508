/* fuzz_authproto.c - libFuzzer target: the auth-checker request and reply
 * records, and the POP3 session->monitor login record. Accepted records
 * re-encode to records that decode to the same fields. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "authproto.h"
#include "pop3_session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char rec[POP3_MON_REC_MAX];
static struct pop3_mon_request m, m2;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    size_t len;
    struct auth_request q, q2;
    if (authproto_request_parse(s, size, &q)) {
        if (q.userlen > AUTH_USER_MAX || q.passlen > AUTH_PASS_MAX || q.user[q.userlen] || q.pass[q.passlen]
            || strlen(q.addr) > AUTH_ADDR_MAX || (q.service != AUTH_SVC_SMTP && q.service != AUTH_SVC_POP3))
            __builtin_trap();
        if (!authproto_request_format(&q, rec, AUTH_RECORD_MAX, &len)) __builtin_trap();
        if (!authproto_request_parse(rec, len, &q2)) __builtin_trap();
        if (q.service != q2.service || q.userlen != q2.userlen || q.passlen != q2.passlen
            || memcmp(q.user, q2.user, q.userlen) || memcmp(q.pass, q2.pass, q.passlen) || strcmp(q.addr, q2.addr))
            __builtin_trap();
        authproto_request_wipe(&q);
        authproto_request_wipe(&q2);
    }
    struct auth_reply r, r2;
    if (authproto_reply_parse(s, size, &r)) {
        if ((r.result != AUTH_OK && r.result != AUTH_BAD && r.result != AUTH_TEMP)
            || strlen(r.name) > AUTH_USER_MAX || strlen(r.maildir) > AUTH_MAILDIR_MAX)
            __builtin_trap();
        if (!authproto_reply_format(&r, rec, AUTH_RECORD_MAX, &len)) __builtin_trap();
        if (!authproto_reply_parse(rec, len, &r2)) __builtin_trap();
        if (r.result != r2.result
            || (r.result == AUTH_OK && (strcmp(r.name, r2.name) || r.uid != r2.uid || r.gid != r2.gid
                                        || strcmp(r.maildir, r2.maildir))))
            __builtin_trap();
    }
    if (pop3_mon_request_parse(s, size, &m)) {
        if (m.userlen > POP3_USER_MAX || m.passlen > POP3_PASS_MAX || m.leftlen > POP3_MON_LEFT_MAX)
            __builtin_trap();
        if (!pop3_mon_request_format(m.user, m.userlen, m.pass, m.passlen, m.left, m.leftlen, rec, sizeof rec, &len))
            __builtin_trap();
        if (len != size || memcmp(rec, s, size)) __builtin_trap();
        if (!pop3_mon_request_parse(rec, len, &m2)) __builtin_trap();
    }
    return 0;
}
