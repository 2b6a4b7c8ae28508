/* fuzz_aliases.c - libFuzzer target: conf/aliases parsing, alias expansion
 * (loops, depth, duplicates) and the local name of an address. Every alias
 * name of an accepted file must go into smtp-listener's recipient map
 * (smtp_rcptmap_load adds them: one it refused would fail the whole map). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "aliases.h"
#include "smtp_rcptmap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int is_local(void *ctx, const char *d, size_t len)
{
    (void)ctx;
    return len == 12 && !strncasecmp(d, "example.test", 12);
}

static void check_expansion(const struct alias_expansion *x)
{
    if (x->nlocal + x->nremote > ALIAS_TARGETS_MAX) __builtin_trap();
    for (size_t i = 0; i < x->nlocal; i++) {
        if (!x->local[i][0] || strlen(x->local[i]) > ALIAS_NAME_MAX) __builtin_trap();
        for (size_t j = 0; j < i; j++) if (!strcmp(x->local[i], x->local[j])) __builtin_trap();
    }
    for (size_t i = 0; i < x->nremote; i++) {
        if (!strchr(x->remote[i], '@') || strlen(x->remote[i]) > ALIAS_TARGET_MAX) __builtin_trap();
        for (size_t j = 0; j < i; j++) if (!strcmp(x->remote[i], x->remote[j])) __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536) return 0;
    const char *s = (const char *)data;
    struct aliases a;
    char err[256];
    err[0] = 0;
    aliases_init(&a);
    if (aliases_parse(&a, "aliases", s, size, err, sizeof err)) {
        struct smtp_rcptmap m;
        smtp_rcptmap_init(&m);
        for (size_t i = 0; i < a.n; i++)
            if (!smtp_rcptmap_add(&m, a.v[i].name, strlen(a.v[i].name)) || !smtp_rcptmap_has(&m, a.v[i].name))
                __builtin_trap();
        smtp_rcptmap_free(&m);
        for (size_t i = 0; i < a.n && i < 50; i++) {
            struct alias_expansion x;
            memset(&x, 0, sizeof x);
            if (aliases_find(&a, a.v[i].name) != &a.v[i]) __builtin_trap();
            if (aliases_expand(&a, a.v[i].name, is_local, NULL, &x)) check_expansion(&x);
            alias_expansion_free(&x);
        }
    } else if (!err[0] || !memchr(err, 0, sizeof err)) {
        __builtin_trap();
    }
    /* the first line as an address */
    char addr[512], dst[ALIAS_NAME_MAX + 1];
    size_t l = 0;
    while (l < size && l < sizeof addr - 1 && data[l] != '\n' && data[l]) { addr[l] = (char)data[l]; l++; }
    addr[l] = 0;
    int r = alias_local_name(addr, is_local, NULL, dst, sizeof dst);
    if (r == 1) {
        if (!dst[0] || strlen(dst) > ALIAS_NAME_MAX) __builtin_trap();
        struct alias_expansion x;
        memset(&x, 0, sizeof x);
        if (aliases_expand(&a, dst, is_local, NULL, &x)) check_expansion(&x);
        alias_expansion_free(&x);
    } else if (r != 0 && r != -1) {
        __builtin_trap();
    }
    aliases_free(&a);
    return 0;
}
