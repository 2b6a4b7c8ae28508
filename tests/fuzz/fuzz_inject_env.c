/* fuzz_inject_env.c - libFuzzer target: queue-inject's envelope record
 * reader (NUL-framed records on fd 1, read here from a pipe). What it
 * accepts must make a queue envelope that formats and parses again. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "queue_inject.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct inject_env ie;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int p[2];
    if (size > 60000 || pipe(p) < 0) return 0;
    if (size && write(p[1], data, size) != (ssize_t)size) { close(p[0]); close(p[1]); return 0; }
    close(p[1]);
    char why[256];
    why[0] = 0;
    inject_env_init(&ie, 1000);
    if (inject_env_read(&ie, p[0], why, sizeof why)) {
        struct envelope *e = &ie.env;
        memcpy(e->id, "0123456789ABCDEF", ENV_ID_LEN + 1);
        e->birth = 1764139456;
        struct buf b = BUF_ZERO;
        struct envelope e2;
        if (!envelope_format(e, &b)) __builtin_trap();
        if (!envelope_parse(&e2, b.s, b.len, why, sizeof why)) __builtin_trap();
        if (e2.nrcpt != e->nrcpt || strcmp(e2.sender, e->sender)) __builtin_trap();
        if (ie.received.len && (memchr(ie.received.s, '\r', ie.received.len) || memchr(ie.received.s, 0, ie.received.len)))
            __builtin_trap();
        envelope_free(&e2);
        buf_free(&b);
    } else if (errno == EPROTO && (!why[0] || !memchr(why, 0, sizeof why))) {
        __builtin_trap();
    }
    inject_env_free(&ie);
    close(p[0]);
    return 0;
}
