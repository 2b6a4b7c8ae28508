/* fuzz_rcptmap.c - libFuzzer target: conf/recipients (the names RCPT
 * accepts). The map must come out sorted, lower case, without duplicates,
 * and find every name it holds. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "smtp_rcptmap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536) return 0;
    struct smtp_rcptmap m;
    char err[256];
    err[0] = 0;
    smtp_rcptmap_init(&m);
    if (smtp_rcptmap_parse(&m, "recipients", (const char *)data, size, err, sizeof err)) {
        for (size_t i = 0; i < m.n; i++) {
            size_t l = strlen(m.name[i]);
            if (!l || l > SMTP_RCPTMAP_NAME_MAX) __builtin_trap();
            for (size_t k = 0; k < l; k++) if (m.name[i][k] >= 'A' && m.name[i][k] <= 'Z') __builtin_trap();
            if (i && strcmp(m.name[i - 1], m.name[i]) >= 0) __builtin_trap();
            if (!smtp_rcptmap_has(&m, m.name[i])) __builtin_trap();
        }
    } else if (!err[0] || !memchr(err, 0, sizeof err)) {
        __builtin_trap();
    }
    smtp_rcptmap_free(&m);
    return 0;
}
