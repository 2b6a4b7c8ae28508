/* fuzz_smtp_submission.c - libFuzzer target: the SMTP session on the
 * implicit-TLS submission port (465): the input is what tls-proxy's
 * plaintext end delivers, i.e. its "TLS <version> <cipher> <sni>" line and
 * then the client's commands: AUTH PLAIN / LOGIN exchanges, MAIL (sender
 * ownership), RCPT, DATA, BDAT. The injector accepts alice/secret, answers
 * "temporary" for user temp and "bad" otherwise, and keeps messages and
 * envelopes in memory (as in fuzz_smtp_data.c), checking each envelope with
 * queue-inject's reader. Checks: reply lines well formed; "235" only after
 * the checker said yes; no MAIL accepted before a successful AUTH; every
 * injection started is finished. An input of odd length goes to port 587
 * instead, where STARTTLS is not available here (454): no credentials may
 * reach the checker, no 235, no MAIL accepted and no injection started. */
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fake_injector.h"

static int auth_calls;   /* times the checker was asked */

static int inj_auth(void *ctx, const char *user, size_t ulen, const char *pass, size_t plen,
                    char *name, size_t namelen)
{
    struct fake *f = ctx;
    auth_calls++;
    if (!ulen || memchr(user, 0, ulen) || memchr(pass, 0, plen) || namelen < 6) __builtin_trap();
    if (ulen == 5 && !memcmp(user, "alice", 5) && plen == 6 && !memcmp(pass, "secret", 6)) {
        memcpy(name, "alice", 6);
        f->auth_ok++;
        return SMTP_AUTH_OK;
    }
    return ulen == 4 && !memcmp(user, "temp", 4) ? SMTP_AUTH_TEMP : SMTP_AUTH_BAD;
}

static const struct smtp_injector inj = { &fk, inj_start, inj_finish, inj_trigger, NULL, inj_auth };
static struct config cf;
static struct smtp_rcptmap map;
static struct smtp_session s;
static char out[1 << 18];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        fuzz_conf(&cf, &map, "100000");
        init = 1;
    }
    if (size > 16384) return 0;
    const char *d = (const char *)data;

    int port = size & 1 ? SMTP_PORT_SUBMISSION : SMTP_PORT_SMTPS;
    auth_calls = 0;
    size_t n = fuzz_session(&s, &cf, &map, &inj, port, d, size, out, sizeof out);

    /* replies: well formed; 235 only when the checker said yes; no MAIL
     * accepted before it */
    const char *first235 = NULL, *first_mail = NULL;
    for (size_t k = 0; k < n;) {
        const char *e = memmem(out + k, n - k, "\r\n", 2);
        if (!e) __builtin_trap();
        size_t len = (size_t)(e - (out + k));
        if (len < 4 || len > 510) __builtin_trap();
        for (int q = 0; q < 3; q++) if (out[k + q] < '0' || out[k + q] > '9') __builtin_trap();
        if (out[k + 3] != ' ' && out[k + 3] != '-') __builtin_trap();
        if (!first235 && !memcmp(out + k, "235 ", 4)) first235 = out + k;
        if (!first_mail && len >= 9 && !memcmp(out + k, "250 2.1.0", 9)) first_mail = out + k;
        k += len + 2;
    }
    if (first235 && !fk.auth_ok) __builtin_trap();
    if (first_mail && (!first235 || first_mail < first235)) __builtin_trap();
    if (port == SMTP_PORT_SUBMISSION && (auth_calls || first235 || first_mail || fk.calls))
        __builtin_trap();   /* 587 without TLS */
    (void)d;
    return 0;
}
