/* fuzz_envelope.c - libFuzzer target: the queue envelope reader. Whatever it
 * accepts must format back to text that parses to the same envelope (format
 * of the re-parse equals the first format); a refusal must say why. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "buf.h"
#include "envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct envelope e, e2;
    char why[256];
    why[0] = 0;
    if (!envelope_parse(&e, (const char *)data, size, why, sizeof why)) {
        if (!why[0] || !memchr(why, 0, sizeof why)) __builtin_trap();
        return 0;
    }
    if (strlen(e.sender) > ENV_ADDR_MAX || strlen(e.client) > ENV_FIELD_MAX || !e.nrcpt
        || e.nrcpt > ENV_RCPT_MAX || !envelope_id_valid(e.id))
        __builtin_trap();
    for (size_t i = 0; i < e.nrcpt; i++)
        if (!e.rcpt[i].addr[0] || !envelope_text_ok(e.rcpt[i].addr, ENV_ADDR_MAX)
            || !envelope_text_ok(env_text(e.rcpt[i].orcpt), ENV_FIELD_MAX)
            || !envelope_text_ok(env_text(e.rcpt[i].last_error), ENV_FIELD_MAX))
            __builtin_trap();
    struct buf a = BUF_ZERO, b = BUF_ZERO;
    if (!envelope_format(&e, &a)) __builtin_trap();
    if (!envelope_parse(&e2, a.s, a.len, why, sizeof why)) __builtin_trap();
    if (!envelope_format(&e2, &b)) __builtin_trap();
    if (a.len != b.len || memcmp(a.s, b.s, a.len)) __builtin_trap();
    buf_free(&a);
    buf_free(&b);
    envelope_free(&e);
    envelope_free(&e2);
    return 0;
}
