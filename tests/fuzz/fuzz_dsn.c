/* fuzz_dsn.c - libFuzzer target: delivery status notifications built from
 * a hostile envelope. The input is an envelope file (parsed with
 * envelope_parse); every recipient gets an item whose diagnostic is its
 * last_error. The original message is a fixed, clean one, so any defect in
 * the output comes from envelope values. Checks: no CR, NUL or other
 * control character but LF and TAB, no line over 998 octets, the header
 * section ends before the first blank line with well-formed fields. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "dsn.h"
#include "mailhdr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char msg[] = "From: a@b.example\nTo: c@d.example\nSubject: hi\n\nbody line\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 100000) return 0;
    struct envelope e;
    char why[256];
    if (!envelope_parse(&e, (const char *)data + 1, size - 1, why, sizeof why)) return 0;
    size_t n = e.nrcpt < 20 ? e.nrcpt : 20;
    struct dsn_item *items = calloc(n, sizeof *items);
    if (!items) abort();
    for (size_t i = 0; i < n; i++) {
        items[i].rcpt = &e.rcpt[i];
        items[i].action_status = (data[0] & 4) ? "4.4.1" : "5.1.1";
        items[i].diagnostic = env_text(e.rcpt[i].last_error);
    }
    enum dsn_kind kind = (enum dsn_kind)(data[0] % 3);
    struct buf out = BUF_ZERO;
    if (dsn_compose(kind, &e, items, n, msg, sizeof msg - 1, (data[0] & 8) ? 10 : 1 << 20,
                    "mx.example.test", 1764139456, &out)) {
        size_t line = 0, hdr_end = 0;
        for (size_t i = 0; i < out.len; i++) {
            unsigned char c = (unsigned char)out.s[i];
            if (c == '\n') {
                if (!line && !hdr_end) hdr_end = i + 1;
                line = 0;
                continue;
            }
            if (c == '\r' || c == 0 || (c < 0x20 && c != '\t') || c == 0x7f) __builtin_trap();
            if (++line > 998) __builtin_trap();
        }
        if (!hdr_end) __builtin_trap();
        /* top-level header: fields and continuations only */
        for (size_t i = 0; i + 1 < hdr_end;) {
            const char *l = out.s + i, *nl = memchr(l, '\n', hdr_end - i);
            size_t ll = (size_t)(nl - l), nlen;
            if (!mailhdr_is_field(l, ll, &nlen) && !mailhdr_is_continuation(l, ll)) __builtin_trap();
            i += ll + 1;
        }
    }
    buf_free(&out);
    free(items);
    envelope_free(&e);
    return 0;
}
