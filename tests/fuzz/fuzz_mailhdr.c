/* fuzz_mailhdr.c - libFuzzer target: sendmail's header reading (field
 * names, continuation lines, To/Cc/Bcc address lists). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mailhdr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int each(void *ctx, const char *addr)
{
    size_t *n = ctx;
    size_t l = strlen(addr);
    if (!l || l > MAILHDR_ADDR_MAX) __builtin_trap();
    (*n)++;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    size_t nl = 0, count = 0;
    if (mailhdr_is_field(s, size, &nl)) {
        if (!nl || nl >= size || s[nl] != ':' || memchr(s, ' ', nl)) __builtin_trap();
        (void)mailhdr_name_is(s, nl, "to");
        (void)mailhdr_addresses(s + nl + 1, size - nl - 1, each, &count);
    }
    (void)mailhdr_is_continuation(s, size);
    (void)mailhdr_addresses(s, size, each, &count);
    return 0;
}
