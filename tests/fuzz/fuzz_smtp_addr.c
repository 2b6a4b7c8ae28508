/* fuzz_smtp_addr.c - libFuzzer target: MAIL/RCPT paths and their ESMTP parameters. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "smtp_addr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* a reply must be one whole line "NNN X.Y.Z text" */
static void check_reply(const char *r)
{
    if (!r || strlen(r) < 10 || (r[0] != '5' && r[0] != '4') || r[3] != ' ' || r[5] != '.')
        __builtin_trap();
    if (strchr(r, '\r') || strchr(r, '\n')) __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    for (int is_rcpt = 0; is_rcpt < 2; is_rcpt++) {
        struct smtp_path p;
        size_t used = 0;
        const char *reply = NULL;
        if (!smtp_path_parse(s, size, is_rcpt, &p, &used, &reply)) {
            check_reply(reply);
            continue;
        }
        /* what the parser hands out is bounded, consistent and NUL-terminated */
        if (used > size || p.local_len > SMTP_LOCAL_MAX || p.domain_len > SMTP_DOMAIN_MAX
            || p.addr_len > SMTP_PATH_MAX - 2 || strlen(p.addr) != p.addr_len
            || strlen(p.local) != p.local_len || strlen(p.domain) != p.domain_len
            || (p.is_null && is_rcpt) || memchr(p.addr, '\r', p.addr_len) || memchr(p.addr, '\n', p.addr_len)
            || memchr(p.addr, ' ', p.addr_len && !p.quoted ? p.addr_len : 0))
            __builtin_trap();
        char user[SMTP_LOCAL_MAX + 1];
        if (smtp_path_local_user(&p, user, sizeof user) && (!user[0] || strchr(user, '+')))
            __builtin_trap();
        if (is_rcpt) {
            struct smtp_rcpt_params rp;
            if (!smtp_rcpt_params_parse(s + used, size - used, &rp, &reply)) check_reply(reply);
            else if (strlen(rp.orcpt) > SMTP_ORCPT_MAX
                     || ((rp.notify & SMTP_NOTIFY_NEVER) && rp.notify != SMTP_NOTIFY_NEVER))
                __builtin_trap();
        } else {
            struct smtp_mail_params mp;
            if (!smtp_mail_params_parse(s + used, size - used, &mp, &reply)) check_reply(reply);
            else if (strlen(mp.envid) > SMTP_XTEXT_MAX) __builtin_trap();
        }
    }
    /* the parameter parsers on the raw input as well */
    struct smtp_mail_params mp2;
    struct smtp_rcpt_params rp2;
    const char *r2 = NULL;
    if (!smtp_mail_params_parse(s, size, &mp2, &r2)) check_reply(r2);
    if (!smtp_rcpt_params_parse(s, size, &rp2, &r2)) check_reply(r2);
    unsigned long long v;
    (void)smtp_parse_ull(s, size, ~0ULL, &v);
    return 0;
}
