/* fuzz_smtp_data.c - libFuzzer target: the DATA reader of the SMTP session
 * (end-of-data detection, dot-unstuffing, line ends, long lines) and the
 * envelope records the session hands to queue-inject. The input is the
 * message as the client sends it after "DATA" (a fixed EHLO/MAIL/RCPT/DATA
 * prefix is sent first). The injector keeps the message pipe and the
 * envelope socket in memory (no process, no file): at finish() it reads
 * both, parses the envelope with queue-inject's own reader and answers 0
 * (queued) or 55. Checks: the stored message equals a reference decoding of
 * the input (end at CRLF "." CRLF after a CRLF only, dot-unstuffing, a bare
 * LF a line end, a bare CR refused), the session queues exactly when the
 * data ended cleanly, the
 * envelope is well formed, every reply line is well formed. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
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
                             "RCPT TO:<alice@example.test>\r\nDATA\r\n";
#include "fake_injector.h"

static const struct smtp_injector inj = { &fk, inj_start, inj_finish, inj_trigger };
static struct config cf;
static struct smtp_rcptmap map;
static struct smtp_session s;
/* out holds all the replies: 16384 octets of "EHLO x\n" after the data
 * draw about 260 KB (the fuzz_session socket buffers hold more) */
static char in[sizeof prefix + 16384], out[1 << 19], want[16384 + 3 + REF_MBOX_TAG_LEN];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        fuzz_conf(&cf, &map, "100000");
        init = 1;
    }
    if (size > 16384) return 0;
    const char *d = (const char *)data;

    /* reference: the message as stored, and whether the data ends */
    size_t wl = 0, i = 0;
    int bol = 1, prev_crlf = 1, ended = 0, bare = 0;
    while (i < size) {
        size_t st = i;
        while (i < size && d[i] != '\r' && d[i] != '\n') i++;
        if (i == size) break;                       /* unended last line */
        int crlf = d[i] == '\r' && i + 1 < size && d[i + 1] == '\n', lf = d[i] == '\n';
        if (d[i] == '\r' && i + 1 == size) break;   /* a CR at the very end: the reader waits */
        const char *p = d + st;
        size_t n = i - st;
        if (bol && n && p[0] == '.') {
            if (n == 1 && crlf && prev_crlf) { ended = 1; break; }
            if (n > 1) { p++; n--; }                /* a lone "." next to a bare LF is data */
        }
        memcpy(want + wl, p, n);
        wl += n;
        want[wl++] = '\n';
        if (!crlf && !lf) bare = 1;                 /* a bare CR refuses the message; a bare LF is a line end */
        bol = crlf || lf;
        prev_crlf = crlf;
        i += crlf ? 2 : 1;
    }
    ref_blank_insert(want, &wl);

    memcpy(in, prefix, sizeof prefix - 1);
    memcpy(in + sizeof prefix - 1, data, size);
    size_t inlen = sizeof prefix - 1 + size;
    size_t n = fuzz_session(&s, &cf, &map, &inj, 0, in, inlen, out, sizeof out);

    /* replies: well formed; the 5th reply line is the answer to the data */
    size_t nreply = 0;
    const char *answer = NULL;
    for (size_t k = 0; k < n;) {
        const char *e = memmem(out + k, n - k, "\r\n", 2);
        if (!e) __builtin_trap();
        size_t len = (size_t)(e - (out + k));
        if (len < 4 || len > 510) __builtin_trap();
        for (int q = 0; q < 3; q++) if (out[k + q] < '0' || out[k + q] > '9') __builtin_trap();
        if (out[k + 3] != ' ' && out[k + 3] != '-') __builtin_trap();
        if (out[k + 3] == ' ' && ++nreply == 6) answer = out + k;
        k += len + 2;
    }
    if (nreply < 5 || memcmp(out + 0, "220", 3)) __builtin_trap();
    if (fk.calls < 1) __builtin_trap();                  /* DATA always starts an injection */
    if (ended) {
        if (!answer) __builtin_trap();
        if (fk.msglen != wl || memcmp(fk.msgbuf, want, wl)) __builtin_trap();
        int hops = 0;
        for (size_t k = 0; k + 9 <= wl; k++) if (!strncasecmp(want + k, "received:", 9)) hops = 1;
        if (!bare && !hops && (memcmp(answer, "250 ", 4) || !fk.queued)) __builtin_trap();
        if (bare && !hops && (memcmp(answer, "550 ", 4) || fk.queued)) __builtin_trap();
    } else if (fk.queued) {
        __builtin_trap();
    }
    return 0;
}
