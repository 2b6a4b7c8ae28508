/* fuzz_smtp_bdat.c - libFuzzer target: BDAT (RFC 3030 CHUNKING) through the
 * SMTP session. The input is a list of chunks, each one header byte h (the
 * chunk is 3*(h & 0x7f) octets long, h & 0x80 = LAST) and its octets; the
 * target sends a fixed EHLO/MAIL/RCPT prefix, then "BDAT n [LAST]" and the
 * octets for each chunk, then QUIT. The injector is the in-memory one of
 * fuzz_smtp_data.c. Checks: every chunk before LAST gets "250", the stored
 * message equals the chunks' concatenation with CRLF, bare CR and bare LF
 * turned into LF (a final LF added), the message is queued exactly when it
 * holds no bare CR (a bare LF is a line end), no Received: and fits
 * max_message_size (3000 here, the chunks' octets: RFC 1870),
 * an injection that was started is always finished, reply lines are well
 * formed. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <signal.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "queue_inject.h"
#include "smtp_session.h"
#include "ref_header.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char prefix[] = "EHLO client.example\r\nMAIL FROM:<a@b.example> BODY=8BITMIME\r\n"
                             "RCPT TO:<alice@example.test>\r\n";
#include "fake_injector.h"

static const struct smtp_injector inj = { &fk, inj_start, inj_finish, inj_trigger };
static struct config cf;
static struct smtp_rcptmap map;
static struct smtp_session s;
/* Inputs up to IN_MAX octets: each can be the header of an empty chunk,
 * i.e. "BDAT 0\r\n" (8 octets) sent and a "250 2.0.0 Ok: 0 octets
 * received\r\n" (34) read back, which must fit in and out (and the
 * socket buffers, as the session's replies are read after it ended). */
#define IN_MAX 4096
static char in[sizeof prefix + 8 * IN_MAX + 32], out[1 << 18], want[IN_MAX + 3 + REF_MBOX_TAG_LEN], raw[IN_MAX];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        fuzz_conf(&cf, &map, "3000");
        init = 1;
    }
    if (size > IN_MAX) return 0;
    const char *d = (const char *)data;

    /* the chunks, the commands, and the reference stored form */
    size_t inlen = sizeof prefix - 1, rawlen = 0, nchunks = 0, i = 0;
    int last = 0;
    memcpy(in, prefix, inlen);
    while (i < size && !last) {
        unsigned h = data[i++];
        size_t len = 3 * (h & 0x7f);
        if (len > size - i) len = size - i;
        last = (h & 0x80) != 0;
        int k = snprintf(in + inlen, sizeof in - inlen, "BDAT %zu%s\r\n", len, last ? " LAST" : "");
        inlen += (size_t)k;
        memcpy(in + inlen, d + i, len);
        inlen += len;
        memcpy(raw + rawlen, d + i, len);
        rawlen += len;
        i += len;
        nchunks++;
    }
    memcpy(in + inlen, "QUIT\r\n", 6);
    inlen += 6;
    size_t wl = 0;
    int bare = 0, line = 0;
    for (size_t k = 0; k < rawlen; k++) {
        if (raw[k] == '\r' && k + 1 < rawlen && raw[k + 1] == '\n') { k++; want[wl++] = '\n'; line = 0; }
        else if (raw[k] == '\r') { bare = 1; want[wl++] = '\n'; line = 0; }
        else if (raw[k] == '\n') { want[wl++] = '\n'; line = 0; }
        else { want[wl++] = raw[k]; line = 1; }
    }
    if (line) want[wl++] = '\n';
    ref_blank_insert(want, &wl);

    size_t n = fuzz_session(&s, &cf, &map, &inj, 0, in, inlen, out, sizeof out);

    /* replies: well formed; 220 250 250 250, then one per chunk */
    size_t nreply = 0, bad250 = 0;
    const char *answer = NULL;
    for (size_t k = 0; k < n;) {
        const char *e = memmem(out + k, n - k, "\r\n", 2);
        if (!e) __builtin_trap();
        size_t len = (size_t)(e - (out + k));
        if (len < 4 || len > 510) __builtin_trap();
        for (int q = 0; q < 3; q++) if (out[k + q] < '0' || out[k + q] > '9') __builtin_trap();
        if (out[k + 3] != ' ' && out[k + 3] != '-') __builtin_trap();
        if (out[k + 3] == ' ') {
            nreply++;
            if (nreply > 4 && nreply < 4 + nchunks && memcmp(out + k, "250 ", 4)) bad250++;
            if (nreply == 4 + nchunks) answer = out + k;
        }
        k += len + 2;
    }
    if (nreply < 4 || memcmp(out, "220", 3)) __builtin_trap();
    if (!nchunks) return 0;
    if (fk.calls < 1) __builtin_trap();                  /* the first BDAT starts an injection */
    int over = rawlen > 3000;   /* then 552, and 503s that may end in 421 (too many errors) */
    if (!over && last && !answer) __builtin_trap();
    if (!over && bad250) __builtin_trap();
    if (!last) {
        if (fk.queued) __builtin_trap();
        return 0;
    }
    int hops = 0;
    for (size_t k = 0; k + 9 <= wl; k++) if (!strncasecmp(want + k, "received:", 9)) hops = 1;
    if (!over && (fk.msglen != wl || memcmp(fk.msgbuf, want, wl))) __builtin_trap();
    if (over && fk.queued) __builtin_trap();
    if (!over && !bare && !hops && (memcmp(answer, "250 ", 4) || !fk.queued)) __builtin_trap();
    if (!over && bare && !hops && (memcmp(answer, "550 ", 4) || fk.queued)) __builtin_trap();
    return 0;
}
