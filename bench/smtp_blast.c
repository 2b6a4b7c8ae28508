/* smtp_blast.c - the benchmarks' SMTP load generator, in C so that on a
 * 2-core machine the client takes little of the CPU the server is measured
 * on (the Python client it replaces spent 0.25 ms per message at one message
 * per connection, a tenth of the machine; Postfix's own figures come from
 * smtp-source, a C program).
 *
 *   smtp_blast PORT CONNECTIONS TOTAL PER_CONN SIZE USER...
 *
 * Sends TOTAL messages to 127.0.0.1:PORT over at most CONNECTIONS
 * concurrent connections, PER_CONN messages per connection, message s
 * (1..TOTAL) to USER[s % nusers]@example.test. It pipelines (RFC 2920):
 * after EHLO it sends MAIL, RCPT and DATA in one write, and after the 354
 * the body, the final dot and the next MAIL/RCPT/DATA (or QUIT) in one
 * write. Message s is, as stored with LF line ends, exactly SIZE bytes:
 *   From: sender@example.test\nTo: USER@example.test\nSubject: bench %010d\n\n
 * then the line "The quick brown fox ... abcdefghijklmn\n" repeated and cut
 * to length, ending in "\n" (bench_reception.make_body builds the same
 * bytes to verify what the queue holds).
 *
 * Prints one line per message, "SEQ CODE QUEUE-ID" ("-" when there is no
 * id), then "# seconds S cpu C errors E" (wall seconds from the first
 * connect to the last reply, this process's CPU seconds, connections that
 * failed). Exit 0, or 1 on bad arguments. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

enum want { W_GREETING, W_EHLO, W_MAIL, W_RCPT, W_DATA, W_QUEUED, W_QUIT };

struct conn {
    int fd;
    int left;                 /* messages still to start on this connection */
    enum want want[8];        /* replies awaited, a ring */
    int wseq[8];
    unsigned whead, wcount;
    int cur_seq;              /* the message whose DATA is pending */
    char in[8192];
    size_t inlen;
    int pipelining;           /* an EHLO line said PIPELINING */
    char *out;
    size_t outlen, outcap, outoff;
    int done, failed;
};

static const char *const *users;
static int nusers, total, size, next_seq;
static const char line_text[] = "The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmn\n";

static void die(const char *what)
{
    fprintf(stderr, "smtp_blast: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void out_add(struct conn *c, const char *p, size_t n)
{
    if (c->outlen + n > c->outcap) {
        size_t cap = c->outcap ? c->outcap : 4096;
        while (cap < c->outlen + n) cap *= 2;
        char *o = realloc(c->out, cap);
        if (!o) die("realloc");
        c->out = o;
        c->outcap = cap;
    }
    memcpy(c->out + c->outlen, p, n);
    c->outlen += n;
}

/* message seq on the wire (CRLF), with the final dot line */
static void out_body(struct conn *c, int seq)
{
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "From: sender@example.test\nTo: %s@example.test\nSubject: bench %010d\n\n",
                      users[seq % nusers], seq);
    if (hl < 0 || hl >= size) { errno = EINVAL; die("size smaller than the header"); }
    size_t ll = sizeof line_text - 1;
    size_t n = (size_t)(size - hl);           /* filler incl. its final "\n" */
    char buf[8192];
    size_t bl = 0;
    for (int i = 0; i < hl; i++) {
        if (head[i] == '\n') buf[bl++] = '\r';
        buf[bl++] = head[i];
    }
    for (size_t i = 0; i < n; i++) {
        char ch = i == n - 1 ? '\n' : line_text[i % ll];
        if (bl + 2 > sizeof buf) { out_add(c, buf, bl); bl = 0; }
        if (ch == '\n') buf[bl++] = '\r';
        buf[bl++] = ch;
    }
    out_add(c, buf, bl);
    out_add(c, ".\r\n", 3);
}

static void expect(struct conn *c, enum want w, int seq)
{
    unsigned i = (c->whead + c->wcount++) % 8;
    c->want[i] = w;
    c->wseq[i] = seq;
}

static void next_envelope(struct conn *c)
{
    if (c->left == 0 || next_seq > total) {
        out_add(c, "QUIT\r\n", 6);
        expect(c, W_QUIT, 0);
        return;
    }
    c->left--;
    c->cur_seq = next_seq++;
    char env[512];
    int n = snprintf(env, sizeof env,
                     "MAIL FROM:<sender@example.test>\r\nRCPT TO:<%s@example.test>\r\nDATA\r\n",
                     users[c->cur_seq % nusers]);
    out_add(c, env, (size_t)n);
    expect(c, W_MAIL, c->cur_seq);
    expect(c, W_RCPT, c->cur_seq);
    expect(c, W_DATA, c->cur_seq);
}

static void result(int seq, const char *code, const char *line)
{
    const char *q = strstr(line, "queued as ");
    char id[64] = "-";
    if (q && strcmp(code, "250") == 0) sscanf(q + 10, "%63[0-9A-Za-z]", id);
    printf("%d %s %s\n", seq, code, id);
}

/* one whole reply: its code and last line */
static void on_reply(struct conn *c, const char *code, const char *last)
{
    if (c->wcount == 0) { c->failed = 1; return; }
    enum want w = c->want[c->whead];
    int seq = c->wseq[c->whead];
    c->whead = (c->whead + 1) % 8;
    c->wcount--;
    switch (w) {
    case W_GREETING:
        if (strcmp(code, "220") != 0) { c->failed = 1; return; }
        out_add(c, "EHLO bench.test\r\n", 17);
        expect(c, W_EHLO, 0);
        break;
    case W_EHLO:
        if (strcmp(code, "250") != 0 || !c->pipelining) { c->failed = 1; return; }
        next_envelope(c);
        break;
    case W_MAIL: case W_RCPT:      /* a refusal shows up as DATA's 503/554 */
        break;
    case W_DATA:
        if (strcmp(code, "354") != 0) { result(seq, code, last); next_envelope(c); break; }
        out_body(c, seq);
        expect(c, W_QUEUED, seq);
        next_envelope(c);
        break;
    case W_QUEUED:
        result(seq, code, last);
        break;
    case W_QUIT:
        c->done = 1;
        break;
    }
}

static void feed(struct conn *c)
{
    ssize_t n = recv(c->fd, c->in + c->inlen, sizeof c->in - c->inlen - 1, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) { c->failed = 1; return; }
    c->inlen += (size_t)n;
    char *p = c->in, *end = c->in + c->inlen, *nl;
    while (!c->failed && (nl = memchr(p, '\n', (size_t)(end - p)))) {
        *nl = 0;
        if (nl > p && nl[-1] == '\r') nl[-1] = 0;
        if (strlen(p) < 3) { c->failed = 1; break; }
        if (strlen(p) >= 4 && strcasecmp(p + 4, "PIPELINING") == 0) c->pipelining = 1;
        if (p[3] != '-') {
            char code[4] = { p[0], p[1], p[2], 0 };
            on_reply(c, code, p);
        }
        p = nl + 1;
    }
    c->inlen = (size_t)(end - p);
    memmove(c->in, p, c->inlen);
    if (c->inlen >= sizeof c->in - 1) c->failed = 1;   /* a line longer than any reply */
}

static void flush(struct conn *c)
{
    while (c->outoff < c->outlen) {
        ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR) c->failed = 1;
            return;
        }
        c->outoff += (size_t)n;
    }
    c->outoff = c->outlen = 0;
}

static int open_conn(struct conn *c, const struct sockaddr_in *sa, int count)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (const struct sockaddr *)sa, sizeof *sa) < 0) {
        fprintf(stderr, "smtp_blast: connect: %s\n", strerror(errno));
        close(c->fd);
        return 0;
    }
    c->left = count;
    expect(c, W_GREETING, 0);
    return 1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: smtp_blast PORT CONNECTIONS TOTAL PER_CONN SIZE USER...\n");
        return 1;
    }
    int port = atoi(argv[1]), conns = atoi(argv[2]), per_conn = atoi(argv[4]);
    total = atoi(argv[3]);
    size = atoi(argv[5]);
    users = (const char *const *)argv + 6;
    nusers = argc - 6;
    if (port <= 0 || port > 65535 || conns <= 0 || conns > 1000 || total <= 0 || per_conn <= 0
        || size < 128) {
        fprintf(stderr, "smtp_blast: bad arguments\n");
        return 1;
    }
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct conn *cs = calloc((size_t)conns, sizeof *cs);
    struct pollfd *pf = calloc((size_t)conns, sizeof *pf);
    if (!cs || !pf) die("calloc");
    for (int i = 0; i < conns; i++) cs[i].fd = -1;
    next_seq = 1;
    int planned = 0, errors = 0, active = 0;
    double t0 = now();
    for (;;) {
        for (int i = 0; i < conns; i++) {
            if (cs[i].fd >= 0 || planned >= total) continue;
            int k = total - planned < per_conn ? total - planned : per_conn;
            if (!open_conn(&cs[i], &sa, k)) { errors++; planned += k; continue; }
            planned += k;
            active++;
        }
        if (active == 0) break;
        for (int i = 0; i < conns; i++) {
            pf[i].fd = cs[i].fd;
            pf[i].events = (short)(cs[i].fd < 0 ? 0 : POLLIN | (cs[i].outlen ? POLLOUT : 0));
            pf[i].revents = 0;
        }
        if (poll(pf, (nfds_t)conns, 60000) <= 0) { fprintf(stderr, "smtp_blast: stalled\n"); break; }
        for (int i = 0; i < conns; i++) {
            struct conn *c = &cs[i];
            if (c->fd < 0 || !pf[i].revents) continue;
            if (pf[i].revents & POLLOUT) flush(c);
            if (pf[i].revents & (POLLIN | POLLHUP | POLLERR)) feed(c);
            if (!c->failed && c->outlen) flush(c);
            if (c->done || c->failed) {
                if (c->failed) { errors++; fprintf(stderr, "smtp_blast: connection failed\n"); }
                close(c->fd);
                c->fd = -1;
                free(c->out);
                c->out = NULL;
                active--;
            }
        }
    }
    double secs = now() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6
               + (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    printf("# seconds %.6f cpu %.6f errors %d\n", secs, cpu, errors);
    return 0;
}
