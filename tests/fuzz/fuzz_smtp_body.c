/* fuzz_smtp_body.c - libFuzzer target: the message body writer behind DATA
 * and BDAT (smtp_body). The stored form must be the input with CRLF, bare
 * CR and bare LF each turned into one LF (and a final LF added), cut where
 * the client's octets (CRLF two, the added LF none: RFC 1870) pass max_size,
 * with a blank line (costing nothing) before a header line that is not a
 * field, and the mbox tag before a first "From " line (ref_header.h);
 * BDAT must give the same result however the octets are chunked;
 * the bare-CR, bare-LF and hop counters must agree between both feeds. Output goes to
 * an anonymous memory file. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "smtp_body.h"
#include "ref_header.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct smtp_msgbody b1, b2;
static unsigned char got[1 << 17];

static size_t collect(int fd)
{
    size_t n = 0;
    ssize_t r;
    while (n < sizeof got && (r = pread(fd, got + n, sizeof got - n, (off_t)n)) > 0) n += (size_t)r;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 60000) return 0;
    unsigned long long max = data[0] == 0xff ? ~0ULL : (unsigned long long)data[0] * 16;
    unsigned step = data[1] ? data[1] : 1;
    const char *p = (const char *)data + 2;
    size_t n = size - 2;

    /* the expected stored form, and how much of it is written: each stored
     * octet costs the client's octets it came from, and writing stops at
     * the first that takes their count past max */
    unsigned char *want = malloc(n + 3);
    size_t wl = 0, keep = 0;
    unsigned long long sent = 0;
    int bare_cr = 0, bare_lf = 0, line = 0, over = 0;
    /* first the stored form alone, for where its header section ends */
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') i++;
        want[wl++] = p[i] == '\r' ? '\n' : (unsigned char)p[i];
    }
    if (wl && want[wl - 1] != '\n') want[wl++] = '\n';
    int mbox;
    long blank = ref_blank_at((const char *)want, wl, &mbox);
    free(want);
    want = malloc(n + 3 + REF_MBOX_TAG_LEN);
    wl = 0;
#define STORE(c, cost) do { if ((long)wl == blank) { blank = -1; STORE1('\n', 0); } \
                            STORE1(c, cost); } while (0)
#define STORE1(c, cost) do { want[wl++] = (unsigned char)(c); sent += (cost); \
                             if (sent > max) over = 1; if (!over) keep = wl; } while (0)
    if (mbox) {
        for (size_t i = 0; i < REF_MBOX_TAG_LEN; i++) STORE1(SMTP_BODY_MBOX_TAG[i], 0);
        if (blank >= 0) blank += (long)REF_MBOX_TAG_LEN;
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r') {
            int crlf = i + 1 < n && p[i + 1] == '\n';
            if (crlf) i++;
            else bare_cr = 1;
            STORE('\n', crlf ? 2 : 1);
            line = 0;
        } else if (p[i] == '\n') {
            bare_lf = 1;
            STORE('\n', 1);
            line = 0;
        } else {
            STORE(p[i], 1);
            line = 1;
        }
    }
    if (line) STORE('\n', 0);

    int fd1 = memfd_create("fuzz1", 0), fd2 = memfd_create("fuzz2", 0);
    if (fd1 < 0 || fd2 < 0) abort();
    /* BDAT: all at once, and in chunks of step octets */
    smtp_body_init(&b1, fd1, max, 1000);
    smtp_body_octets(&b1, p, n);
    if (!smtp_body_finish(&b1)) __builtin_trap();
    smtp_body_init(&b2, fd2, max, 1000);
    for (size_t i = 0; i < n; i += step) smtp_body_octets(&b2, p + i, n - i < step ? n - i : step);
    if (!smtp_body_finish(&b2)) __builtin_trap();
    if (b1.size != wl || b2.size != wl || b1.bare_cr != bare_cr || b2.bare_cr != bare_cr ||
        b1.bare_lf != bare_lf || b2.bare_lf != bare_lf || b1.hops != b2.hops
        || b1.too_big != over || b2.too_big != b1.too_big)
        __builtin_trap();
    if (collect(fd1) != keep || memcmp(got, want, keep)) __builtin_trap();
    if (collect(fd2) != keep || memcmp(got, want, keep)) __builtin_trap();
    close(fd1);
    close(fd2);

    /* DATA: lines as a line reader hands them out (CRLF, bare LF, bare CR) */
    fd1 = memfd_create("fuzz3", 0);
    if (fd1 < 0) abort();
    smtp_body_init(&b1, fd1, max, 1000);
    size_t s = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\r' && p[i] != '\n') continue;
        enum io_eol eol = p[i] == '\n' ? IO_EOL_LF : (i + 1 < n && p[i + 1] == '\n') ? IO_EOL_CRLF : IO_EOL_CR;
        smtp_body_line(&b1, p + s, i - s, eol);
        if (eol == IO_EOL_CRLF) i++;
        s = i + 1;
    }
    if (s < n) smtp_body_line(&b1, p + s, n - s, IO_EOL_NONE);
    if (!smtp_body_finish(&b1)) __builtin_trap();
    if (b1.size != wl || b1.bare_cr != bare_cr || b1.bare_lf != bare_lf || b1.hops != b2.hops ||
        b1.too_big != over)
        __builtin_trap();
    if (collect(fd1) != keep || memcmp(got, want, keep)) __builtin_trap();
    close(fd1);
    free(want);
    return 0;
}
