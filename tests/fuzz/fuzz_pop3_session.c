/* fuzz_pop3_session.c - libFuzzer target: the POP3 state machine from
 * arbitrary client bytes, read the way pop3-listener reads them (io_getline
 * with its limits; pop3_line_take skips the rest of an overlong line or
 * of one with a bare CR to LF; closed after too many failed logins).
 * Login: "alice"/"secret" is accepted, user "temp" gets a temporary
 * failure, anything else is refused. An input of odd length
 * gets a session that refuses plaintext logins and offers STLS (a stub:
 * the stream stays plain).
 * After login the session runs over a real Maildir made afresh for every
 * input in a private temporary directory (QUIT's UPDATE changes it).
 * Checks: no crash or leak, output is whole CRLF lines, +OK/-ERR/"+ " first;
 * no login attempt (credentials taken) without TLS when plaintext is refused,
 * STLS only when offered. */
#include <dirent.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pop3_session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char base[64];
static char md_path[96];
static unsigned char out_mem[1 << 16];

static void rm_tree(const char *dir)
{
    static const char *const subs[] = { "tmp", "new", "cur" };
    char p[256];
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, subs[i]);
        DIR *d = opendir(p);
        if (d) {
            struct dirent *e;
            while ((e = readdir(d)))
                if (e->d_name[0] != '.') unlinkat(dirfd(d), e->d_name, 0);
            closedir(d);
        }
        rmdir(p);
    }
    snprintf(p, sizeof p, "%s/%s", dir, MAILDROP_LOCK);
    unlink(p);
    rmdir(dir);
}

static void cleanup(void)
{
    if (!base[0]) return;
    rm_tree(md_path);
    rmdir(base);
}

static void put(const char *sub, const char *name, const char *text)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s/%s", md_path, sub, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) abort();
    close(fd);
}

static int make_maildir(void)
{
    char p[256];
    static const char *const subs[] = { "tmp", "new", "cur" };
    if (mkdir(md_path, 0700) < 0) return -1;
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", md_path, subs[i]);
        if (mkdir(p, 0700) < 0) abort();
    }
    put("new", "1000.M1P1.host", "Subject: one\n\n.dot line\n..two dots\nend\n");
    put("new", "1001.M2P2.host", "");
    put("cur", "999.M0P0.host:2,S", "Subject: three\nX: y\n\nno final newline");
    return open(md_path, O_RDONLY | O_DIRECTORY);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!base[0]) {
        snprintf(base, sizeof base, "/tmp/fuzz_pop3.XXXXXX");
        if (!mkdtemp(base)) abort();
        snprintf(md_path, sizeof md_path, "%s/Maildir", base);
        atexit(cleanup);
    }
    if (size > 8192) return 0;
    int p[2];
    if (pipe(p) < 0) abort();
    if (size && write(p[1], data, size) != (ssize_t)size) abort();
    close(p[1]);
    int o = memfd_create("out", 0);
    if (o < 0) abort();

    static unsigned char inmem[4096], outmem[512];
    static char line[POP3_SASL_LINE_MAX];
    struct io in, out;
    io_init(&in, p[0], inmem, sizeof inmem, 1000);
    io_init(&out, o, outmem, sizeof outmem, 1000);
    struct pop3_session s;
    struct maildrop md;
    int dfd = -1, open_md = 0;
    pop3_init(&s, &out, 5);
    /* odd length: plaintext logins refused, STLS offered (port 110 with
     * pop3_plaintext_auth loopback, from outside); STLS is a stub that
     * keeps the plain stream */
    int plain_ok = !(size & 1), tls = 0;
    pop3_set_security(&s, 0, !plain_ok, plain_ok);
    if (!pop3_greeting(&s, "pop.example.test")) __builtin_trap();
    for (;;) {
        size_t len, max = s.state == POP3_TRANSACTION ? POP3_LINE_MAX + 1 : sizeof line;
        enum io_eol eol;
        enum pop3_action act;
        if (!io_getline(&in, line, max, &len, &eol)) break;
        /* as pop3-listener takes it: EOF inside a short line ends; the
         * rest of a long line or of one with a bare CR is skipped to LF */
        enum pop3_line_end end;
        if (!pop3_line_take(&in, eol, len, max, &end)) break;
        if (!pop3_line(&s, line, len, end, &act)) break;
        if (act == POP3_LOGIN) {
            if (!tls && !plain_ok) __builtin_trap();   /* credentials taken in the clear */
            enum pop3_login r = POP3_LOGIN_BAD;
            if (s.userlen == 5 && !memcmp(s.user, "alice", 5) && s.passlen == 6 && !memcmp(s.pass, "secret", 6))
                r = POP3_LOGIN_OK;
            else if (s.userlen == 4 && !memcmp(s.user, "temp", 4))
                r = POP3_LOGIN_TEMP;
            if (!pop3_login_result(&s, r)) break;
            if (s.state == POP3_DONE) break;   /* too many failed logins: closed */
            if (r == POP3_LOGIN_OK) {
                if (s.pass[0] || s.passlen) __builtin_trap();   /* wiped */
                dfd = make_maildir();
                if (dfd < 0 || !maildrop_open(&md, dfd)) abort();
                open_md = 1;
                if (!io_puts(&out, "+OK Logged in.\r\n")) break;
                pop3_begin_transaction(&s, &md);
            }
        }
        if (act == POP3_STLS) {
            if (tls || plain_ok) __builtin_trap();      /* not offered */
            tls = 1;
            pop3_tls_started(&s);
        }
        if (act == POP3_CLOSE) break;
    }
    if (!io_flush(&out)) __builtin_trap();
    pop3_wipe(&s);
    if (open_md) maildrop_close(&md);
    if (dfd >= 0) { close(dfd); rm_tree(md_path); }
    close(p[0]);

    /* the output: whole CRLF lines */
    size_t n = 0;
    ssize_t r;
    while (n < sizeof out_mem && (r = pread(o, out_mem + n, sizeof out_mem - n, (off_t)n)) > 0) n += (size_t)r;
    close(o);
    if (n < 5 || memcmp(out_mem, "+OK ", 4)) __builtin_trap();
    if (n < sizeof out_mem && memcmp(out_mem + n - 2, "\r\n", 2)) __builtin_trap();
    for (size_t i = 0; i < n; i++)
        if (out_mem[i] == '\n' && (i == 0 || out_mem[i - 1] != '\r')) __builtin_trap();
    return 0;
}
