/* fuzz_conf.c - libFuzzer target: the configuration reader and postern.conf settings. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "conf.h"
#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int apply(void *ctx, const char *key, const char *value, char *why, size_t whylen)
{
    return config_set(ctx, key, value, why, whylen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config c;
    char err[CONF_ERR_MAX];
    config_defaults(&c);
    if (!conf_parse_text("fuzz.conf", (const char *)data, size, apply, &c, err, sizeof err)) {
        if (!memchr(err, 0, sizeof err)) __builtin_trap();
    }
    return 0;
}
