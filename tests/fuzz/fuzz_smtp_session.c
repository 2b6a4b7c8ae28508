/* fuzz_smtp_session.c - libFuzzer target: the whole SMTP state machine (port
 * 25) from arbitrary client bytes, from 127.0.0.1 (relay_networks) when the
 * input's length is odd and from an outside one (192.0.2.1) when it is even.
 * The injector is the in-memory one of fake_injector.h: it keeps the message
 * and the envelope the session writes and checks the envelope with
 * queue-inject's own reader, so the records made from fuzzed MAIL and RCPT
 * parameters are checked too. Checks: no crash, every injection started is
 * finished, every envelope is well formed, every output line is a
 * well-formed reply ("ddd" then ' ' or '-', ended by CRLF, at most 512
 * octets). */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "log.h"
#include "smtp_session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fake_injector.h"

static const struct smtp_injector inj = { &fk, inj_start, inj_finish, inj_trigger };
static struct config cf;
static struct smtp_rcptmap map;
static struct smtp_session s;
static char out[1 << 20];
static int devnull = -1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        char why[128];
        signal(SIGPIPE, SIG_IGN);
        config_defaults(&cf);
        config_set(&cf, "local_domains", "example.test", why, sizeof why);
        config_set(&cf, "max_message_size", "2000", why, sizeof why);
        config_set(&cf, "max_recipients", "5", why, sizeof why);
        config_set(&cf, "session_timeout", "1", why, sizeof why);
        smtp_rcptmap_init(&map);
        smtp_rcptmap_add(&map, "alice", 5);
        devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
        init = 1;
    }
    if (size > 4096) return 0;
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0) return 0;
    int big = 1 << 20;
    setsockopt(sp[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(sp[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (size && write(sp[0], data, size) != (ssize_t)size) { close(sp[0]); close(sp[1]); return 0; }
    shutdown(sp[0], SHUT_WR);
    struct sockaddr_in peer;
    memset(&peer, 0, sizeof peer);
    peer.sin_family = AF_INET;
    peer.sin_addr.s_addr = htonl(size & 1 ? 0x7f000001 : 0xc0000201);
    int saved = dup(2);                  /* the session logs to stderr: silence it */
    if (devnull >= 0) dup2(devnull, 2);
    fk.msg = fk.env = -1;
    fk.calls = fk.queued = fk.auth_ok = 0;
    smtp_session_init(&s, &cf, &map, &inj, sp[1], (struct sockaddr *)&peer, 0, NULL);
    smtp_session_run(&s);
    smtp_session_free(&s);
    if (saved >= 0) { dup2(saved, 2); close(saved); }
    close(sp[1]);
    if (fk.msg >= 0 || fk.env >= 0) __builtin_trap();   /* started, never finished */
    size_t n = 0;
    for (;;) {
        ssize_t r = read(sp[0], out + n, sizeof out - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(sp[0]);
    for (size_t i = 0; i < n; ) {
        const char *e = memmem(out + i, n - i, "\r\n", 2);
        if (!e) __builtin_trap();
        size_t len = (size_t)(e - (out + i));
        if (len < 4 || len > 510) __builtin_trap();
        for (int k = 0; k < 3; k++) if (out[i + k] < '0' || out[i + k] > '9') __builtin_trap();
        if (out[i + 3] != ' ' && out[i + 3] != '-') __builtin_trap();
        i += len + 2;
    }
    return 0;
}
