/* sendmail.c - read the message from stdin, complete its header, and run
 * ROOT/bin/queue-inject with the message on its fd 0 and the envelope
 * records on its fd 1 (docs/INTERFACES.md). */
#include "sendmail.h"

#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "envelope.h"
#include "mailhdr.h"
#include "smtp_addr.h"
#include "smtp_client.h"
#include "utf8.h"

struct sm {
    const struct sm_opts *o;
    FILE *in;
    char host[CONFIG_NAME_MAX];
    char user[64];
    char gecos[128];
    struct buf hdr;         /* the header section as read, LF line ends */
    struct buf rcpts;       /* "T<addr>\t<notify>\t\0" records */
    size_t nrcpt;
    struct buf hrcpts[2];   /* -t: records from To/Cc/Bcc [0] and Resent-To/Cc/Bcc [1] */
    size_t hn[2];
    struct buf *into;       /* where add_rcpt puts them: rcpts or an hrcpts */
    size_t *into_n;
    int resent;             /* a Resent- field seen: hrcpts[1] are the recipients */
    int has_date, has_msgid, has_from;
    struct buf first_body;  /* a body line that ended the header without a blank line */
    int have_first_body, eom;
    char *line;
    size_t linecap;
    const char *sender;     /* envelope sender: -f, else user@host */
    int eightbit;           /* a byte >= 0x80 seen: B8BITMIME */
    unsigned long long max_size;    /* max_message_size (0: none) */
    int too_big;            /* the message passed it: not queued */
    struct config cf;       /* postern.conf (defaults if it did not load) */
};

/* next input line without its LF (and without a CR before it): 1, 0 at the
 * end of the message (EOF or a lone "."), -1 on a read error */
static int next_line(struct sm *s, size_t *len)
{
    if (s->eom) return 0;
    errno = 0;
    ssize_t n = getline(&s->line, &s->linecap, s->in);
    if (n < 0) {
        s->eom = 1;
        return ferror(s->in) ? -1 : 0;
    }
    size_t l = (size_t)n;
    if (l && s->line[l - 1] == '\n') l--;
    if (l && s->line[l - 1] == '\r') l--;
    s->line[l] = 0;
    if (!s->o->no_dot && l == 1 && s->line[0] == '.') { s->eom = 1; return 0; }
    *len = l;
    return 1;
}

/* local part only: add @host; then check what queue-inject would refuse */
static int qualify(const struct sm *s, const char *a, char *out, size_t outlen)
{
    char bare[ENV_ADDR_MAX + 1];
    size_t al = strlen(a);
    if (al >= 2 && a[0] == '<' && a[al - 1] == '>') {   /* "<a@b>" as typed */
        if (al - 2 > ENV_ADDR_MAX) return 0;
        memcpy(bare, a + 1, al - 2);
        bare[al - 2] = 0;
        a = bare;
    }
    int n = strchr(a, '@') ? snprintf(out, outlen, "%s", a) : snprintf(out, outlen, "%s@%s", a, s->host);
    if (n < 0 || (size_t)n >= outlen || (size_t)n > ENV_ADDR_MAX) return 0;
    if (!envelope_text_ok(out, ENV_ADDR_MAX) || out[0] == '@' || out[n - 1] == '@') return 0;
    int quoted = 0;
    for (const char *p = out; *p; p++) {
        if (*p == '"') quoted = !quoted;
        else if (*p == ' ' && !quoted) return 0;
    }
    return !quoted;
}

static int add_rcpt(void *ctx, const char *addr)
{
    struct sm *s = ctx;
    char q[ENV_ADDR_MAX + 1];
    if (!qualify(s, addr, q, sizeof q)) {
        fprintf(stderr, "sendmail: bad recipient address: %.300s\n", addr);
        errno = EINVAL;
        return 0;
    }
    if (s->nrcpt + s->hn[0] + s->hn[1] >= ENV_RCPT_MAX) {
        fprintf(stderr, "sendmail: too many recipients\n");
        errno = E2BIG;
        return 0;
    }
    /* ours: queued lower-cased, as smtp-listener queues it, so that "bob"
     * and "Bob" are one recipient and one copy */
    const char *at = strrchr(q, '@');
    if (at && config_is_local_domain(&s->cf, at + 1, strlen(at + 1)))
        smtp_lower(q);
    ++*s->into_n;
    return buf_appendc(s->into, 'T') && buf_appends(s->into, q) && buf_appendc(s->into, '\t')
           && buf_appends(s->into, s->o->notify) && buf_append(s->into, "\t", 2);
}

/* one complete header field (continuations included) at f[0..n). With -t
 * the recipients of To:, Cc: and Bcc: are kept apart from those of
 * Resent-To:, Resent-Cc: and Resent-Bcc:; a message with any Resent- field
 * is being passed on and goes to the latter (take_header_rcpts). Bcc: and
 * Resent-Bcc: are removed, with or without -t, as Postfix and Sendmail do. */
static int header_done(struct sm *s, size_t start)
{
    const char *f = s->hdr.s + start;
    size_t n = s->hdr.len - start, nl;
    if (!mailhdr_is_field(f, n, &nl)) return 1;
    if (mailhdr_name_is(f, nl, "date")) s->has_date = 1;
    if (mailhdr_name_is(f, nl, "message-id")) s->has_msgid = 1;
    if (mailhdr_name_is(f, nl, "from")) s->has_from = 1;
    int resent = nl > 7 && !strncasecmp(f, "resent-", 7);
    const char *name = resent ? f + 7 : f;
    size_t namelen = resent ? nl - 7 : nl;
    s->resent |= resent;
    int to = mailhdr_name_is(name, namelen, "to"), cc = mailhdr_name_is(name, namelen, "cc"),
        bcc = mailhdr_name_is(name, namelen, "bcc");
    if (s->o->from_headers && (to || cc || bcc)) {
        s->into = &s->hrcpts[resent];
        s->into_n = &s->hn[resent];
        int ok = mailhdr_addresses(f + nl + 1, n - nl - 1, add_rcpt, s);
        s->into = &s->rcpts;
        s->into_n = &s->nrcpt;
        if (!ok) {
            if (errno == EINVAL) fprintf(stderr, "sendmail: cannot parse %.*s: header\n", (int)nl, f);
            return 0;
        }
    }
    if (bcc) s->hdr.len = start;
    return 1;
}

/* read the header section; returns an exit code or 0 */
static int read_header(struct sm *s)
{
    size_t len, start = 0;
    int have = 0, r, first = 1;
    while ((r = next_line(s, &len)) > 0) {
        const char *l = s->line;
        /* mbox envelope lines before the header (formail -s, procmail's
         * forwarding) are not part of the message, as Postfix skips them */
        if (first && ((len >= 5 && !memcmp(l, "From ", 5)) || (len >= 6 && !memcmp(l, ">From ", 6))))
            continue;
        first = 0;
        if (have && mailhdr_is_continuation(l, len)) {
            if (!buf_append(&s->hdr, l, len) || !buf_appendc(&s->hdr, '\n')) return SM_EX_TEMPFAIL;
        } else {
            if (have && !header_done(s, start)) return errno == ENOMEM ? SM_EX_TEMPFAIL : SM_EX_DATAERR;
            have = 0;
            size_t nl;
            if (len == 0) return 0;   /* the blank line: body follows */
            if (!mailhdr_is_field(l, len, &nl)) {   /* a body without a header */
                s->have_first_body = 1;
                return buf_append(&s->first_body, l, len) ? 0 : SM_EX_TEMPFAIL;
            }
            start = s->hdr.len;
            have = 1;
            if (!buf_append(&s->hdr, l, len) || !buf_appendc(&s->hdr, '\n')) return SM_EX_TEMPFAIL;
        }
        if (s->hdr.len > SM_HEADER_MAX) { fprintf(stderr, "sendmail: header too big\n"); return SM_EX_DATAERR; }
    }
    if (r < 0) { perror("sendmail: reading the message"); return SM_EX_TEMPFAIL; }
    if (have && !header_done(s, start)) return errno == ENOMEM ? SM_EX_TEMPFAIL : SM_EX_DATAERR;
    return 0;
}

/* -t: after the command line's, the recipients of Resent-To/Cc/Bcc if the
 * message has a Resent- field, else those of To/Cc/Bcc */
static int take_header_rcpts(struct sm *s)
{
    const struct buf *b = &s->hrcpts[s->resent ? 1 : 0];
    if (b->len && !buf_append(&s->rcpts, b->s, b->len)) return SM_EX_TEMPFAIL;
    s->nrcpt += s->hn[s->resent ? 1 : 0];
    return 0;
}

static void who_am_i(struct sm *s)
{
    struct config *c = &s->cf;
    char err[256];
    int loaded = config_load(c, s->o->root, err, sizeof err);
    if (!loaded) config_defaults(c);     /* a failed load may have set some */
    s->max_size = c->max_message_size;
    if (loaded && c->hostname[0])
        snprintf(s->host, sizeof s->host, "%s", c->hostname);
    else if (gethostname(s->host, sizeof s->host - 1) < 0 || !s->host[0])
        snprintf(s->host, sizeof s->host, "localhost");
    s->host[sizeof s->host - 1] = 0;
    struct passwd *pw = getpwuid(getuid());
    snprintf(s->user, sizeof s->user, "%s", pw ? pw->pw_name : "nobody");
    if (pw && pw->pw_gecos) {
        snprintf(s->gecos, sizeof s->gecos, "%s", pw->pw_gecos);
        s->gecos[strcspn(s->gecos, ",")] = 0;
    }
    envelope_text_clean(s->user);
    envelope_text_clean(s->gecos);
}

/* name (printable, no '"' or '\\') as the phrase of an added From:: a
 * quoted string if ASCII; else RFC 2047 "B" encoded-words of at most 75
 * characters (45 octets, whole UTF-8 characters), one a line, for raw
 * UTF-8 belongs only in SMTPUTF8 mail (RFC 6532 3); a name that is not
 * UTF-8 has its other octets shown as '?' */
static int append_phrase(struct buf *b, const char *name)
{
    size_t n = strlen(name);
    int ascii = 1;
    for (size_t i = 0; i < n; i++) if ((unsigned char)name[i] >= 0x80) ascii = 0;
    if (ascii) return buf_appendf(b, "\"%s\"", name);
    if (!utf8_valid(name, n)) {
        char q[256];
        size_t k = 0;
        for (size_t i = 0; i < n && k + 1 < sizeof q; i++)
            q[k++] = (unsigned char)name[i] >= 0x80 ? '?' : name[i];
        q[k] = 0;
        return buf_appendf(b, "\"%s\"", q);
    }
    for (size_t i = 0; i < n;) {
        size_t take = 0;
        while (i + take < n) {
            unsigned char c = (unsigned char)name[i + take];
            size_t w = c < 0x80 ? 1 : utf8_char((const unsigned char *)name + i + take, n - i - take);
            if (!w || take + w > 45) break;
            take += w;
        }
        char enc[64];   /* base64 of 45 octets: 60 characters */
        if (!take || !smtp_base64((const unsigned char *)name + i, take, enc, sizeof enc)) return 0;
        if (!buf_appendf(b, "%s=?UTF-8?B?%s?=", i ? "\n " : "", enc)) return 0;
        i += take;
    }
    return buf_appends(b, "\n");
}

/* the header fields we add (missing Date/Message-ID/From) */
static int added_fields(struct sm *s, struct buf *b, const char *date)
{
    if (!s->has_date && !buf_appendf(b, "Date: %s\n", date)) return 0;
    if (!s->has_msgid) {
        unsigned r = 0;
        if (getentropy(&r, sizeof r) < 0) r = (unsigned)getpid();
        if (!buf_appendf(b, "Message-ID: <%lld.%ld.%08x@%s>\n", (long long)time(NULL), (long)getpid(),
                         r, s->host))
            return 0;
    }
    if (!s->has_from) {
        char self[ENV_ADDR_MAX + CONFIG_NAME_MAX + 66];
        const char *addr = s->sender;
        if (!addr[0]) {   /* null sender: the From: is still the user */
            snprintf(self, sizeof self, "%s@%s", s->user, s->host);
            addr = self;
        }
        const char *name = s->o->fullname ? s->o->fullname : s->gecos;
        char clean[256];
        size_t n = 0;
        for (const char *p = name; *p && n + 2 < sizeof clean; p++)  /* quoted-string safe */
            if ((unsigned char)*p >= 0x20 && *p != 0x7f && *p != '"' && *p != '\\') clean[n++] = *p;
        clean[n] = 0;
        if (n ? !buf_appends(b, "From: ") || !append_phrase(b, clean) || !buf_appendf(b, " <%s>\n", addr)
              : !buf_appendf(b, "From: %s\n", addr))
            return 0;
    }
    return 1;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) { if (errno == EINTR) continue; return 0; }
        p += w;
        n -= (size_t)w;
    }
    return 1;
}

/* the message to fd: header, added fields, blank line, body. Past
 * max_message_size, counted as over SMTP (RFC 1870: CRLF line ends), it
 * stops with s->too_big set, so that a runaway program cannot fill the
 * queue's disk through sendmail when smtp-listener would refuse the same. */
static int send_message(struct sm *s, int fd, const char *date)
{
    struct buf b = BUF_ZERO;
    size_t len;
    unsigned long long octets = 0;
    int r = 0, ok = buf_append(&b, s->hdr.s ? s->hdr.s : "", s->hdr.len) && added_fields(s, &b, date)
                    && buf_appendc(&b, '\n');
    if (ok && s->have_first_body) ok = buf_append(&b, s->first_body.s, s->first_body.len) && buf_appendc(&b, '\n');
    for (size_t i = 0; i < b.len; i++) {
        s->eightbit |= (unsigned char)b.s[i] >= 0x80;
        octets += b.s[i] == '\n' ? 2 : 1;
    }
    if (s->max_size && octets > s->max_size) {
        s->too_big = 1;
        ok = 0;
    }
    ok = ok && write_all(fd, b.s, b.len);
    buf_free(&b);
    while (ok && (r = next_line(s, &len)) > 0) {
        octets += len + 2;
        if (s->max_size && octets > s->max_size) { s->too_big = 1; ok = 0; break; }
        for (size_t i = 0; i < len && !s->eightbit; i++) s->eightbit = (unsigned char)s->line[i] >= 0x80;
        s->line[len] = '\n';
        ok = write_all(fd, s->line, len + 1);
    }
    if (ok && r < 0) { perror("sendmail: reading the message"); ok = 0; }
    return ok;
}

static int send_envelope(struct sm *s, int fd, const char *sender, const char *date)
{
    struct buf b = BUF_ZERO;
    /* the login name in a comment (RFC 5322 3.2.2): printable ASCII but
     * "(", ")" and "\\", each other octet '?' (queue-inject takes only
     * ASCII in H, so a name such as "jörg" made sendmail fail) */
    char from[sizeof s->user + 40];
    size_t k = 0;
    for (const char *p = s->user; *p && k + 1 < sizeof s->user; p++) {
        unsigned char c = (unsigned char)*p;
        from[k++] = c < 0x20 || c > 0x7e || c == '(' || c == ')' || c == '\\' ? '?' : (char)c;
    }
    snprintf(from + k, sizeof from - k, ", uid %lu", (unsigned long)getuid());
    int ok = buf_appendf(&b, "F%s%c", sender, 0)
             && buf_appendf(&b, "HReceived: (from %s)\n\tby %s (postern sendmail); %s%c", from, s->host, date, 0)
             && buf_appendf(&b, "Csendmail%c", 0)
             && (!s->eightbit || buf_appendf(&b, "B8BITMIME%c", 0))
             && (!s->o->envid[0] || buf_appendf(&b, "E%s%c", s->o->envid, 0))
             && (!s->o->ret || buf_appendf(&b, "N%s%c", s->o->ret, 0))
             && buf_append(&b, s->rcpts.s, s->rcpts.len) && buf_appendc(&b, 0)
             && write_all(fd, b.s, b.len);
    buf_free(&b);
    return ok;
}

static int inject(struct sm *s, const char *sender)
{
    char prog[4096], date[64];
    int mp[2], ep[2], status;
    time_t now = time(NULL);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", localtime(&now));
    if (snprintf(prog, sizeof prog, "%s/bin/queue-inject", s->o->root) >= (int)sizeof prog) return SM_EX_USAGE;
    if (pipe(mp) < 0) return SM_EX_TEMPFAIL;
    if (pipe(ep) < 0) { close(mp[0]); close(mp[1]); return SM_EX_TEMPFAIL; }
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) { perror("sendmail: fork"); return SM_EX_TEMPFAIL; }
    if (pid == 0) {
        if (dup2(mp[0], 0) < 0 || dup2(ep[0], 1) < 0) _exit(111);
        close(mp[0]); close(mp[1]); close(ep[0]); close(ep[1]);
        execl(prog, "queue-inject", (char *)NULL);
        fprintf(stderr, "sendmail: cannot run %s: %s\n", prog, strerror(errno));
        _exit(111);
    }
    close(mp[0]);
    close(ep[0]);
    int ok = send_message(s, mp[1], date);
    close(mp[1]);
    ok = ok && send_envelope(s, ep[1], sender, date);  /* not sent = not ended = aborted */
    close(ep[1]);
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return SM_EX_TEMPFAIL;
    if (s->too_big) {
        fprintf(stderr, "sendmail: message not sent: larger than max_message_size (%llu octets)\n", s->max_size);
        return SM_EX_DATAERR;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return ok ? 0 : SM_EX_TEMPFAIL;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (code == 31) { fprintf(stderr, "sendmail: queue-inject refused the envelope\n"); return SM_EX_DATAERR; }
    if (code == 53) fprintf(stderr, "sendmail: queue is out of disk space; try again later\n");
    else if (code != 55 || ok) fprintf(stderr, "sendmail: queueing failed (status %d); try again later\n", code);
    return SM_EX_TEMPFAIL;
}

int sm_run(const struct sm_opts *o, FILE *in)
{
    struct sm s;
    char sender[ENV_ADDR_MAX + 1] = "";
    memset(&s, 0, sizeof s);
    s.o = o;
    s.in = in;
    s.into = &s.rcpts;
    s.into_n = &s.nrcpt;
    who_am_i(&s);
    int code = 0;
    for (size_t i = 0; i < o->nrcpt && !code; i++)
        if (!add_rcpt(&s, o->rcpt[i])) code = errno == EINVAL ? SM_EX_DATAERR : SM_EX_TEMPFAIL;
    if (!code && o->sender && strcmp(o->sender, "<>") && o->sender[0] && !qualify(&s, o->sender, sender, sizeof sender)) {
        fprintf(stderr, "sendmail: bad sender address: %.300s\n", o->sender);
        code = SM_EX_DATAERR;
    }
    if (!code && !o->sender && !qualify(&s, s.user, sender, sizeof sender)) code = SM_EX_DATAERR;
    if (!code) code = read_header(&s);
    if (!code) code = take_header_rcpts(&s);
    if (!code && s.nrcpt == 0) {
        fprintf(stderr, "sendmail: no recipients\n");
        code = SM_EX_USAGE;
    }
    s.sender = sender;
    if (!code) code = inject(&s, sender);
    buf_free(&s.hdr);
    buf_free(&s.rcpts);
    buf_free(&s.hrcpts[0]);
    buf_free(&s.hrcpts[1]);
    buf_free(&s.first_body);
    free(s.line);
    return code;
}
