/* envelope.c - the queue's envelope file as text: format, parse, validate.
 * The format is in docs/QUEUE.md; in short:
 *
 *   postern-envelope 1
 *   id 6926A1C0F00DBA5E
 *   birth 1764120000
 *   sender alice@example.test        ("sender <>" for the null path)
 *   client smtp 192.0.2.1 (uid 105)  (optional)
 *   envid abc                        (optional)
 *   ret full|hdrs                    (optional: only if the sender gave RET)
 *   body 7bit|8bitmime
 *   smtputf8 no|yes
 *   bounce no|yes
 *   rcpt<TAB>state<TAB>attempts<TAB>next_try<TAB>notify<TAB>orcpt<TAB>addr<TAB>last_error
 *
 * state: pending, done, failed, bounced, delayed, delivered, relayed or
 * expanded (envelope.h says what each means).
 *
 * No field may hold a control character (so no CR, LF, NUL or TAB). */
#include "envelope.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "err.h"
#include "smtp_addr.h"

#define ENV_VERSION_LINE "postern-envelope 1"

static const char *const state_names[ENV_RCPT_NSTATES] = {
    "pending", "done", "failed", "bounced", "delayed", "delivered", "relayed", "expanded"
};

const char *envelope_state_name(enum env_rcpt_state s)
{
    return (unsigned)s < ENV_RCPT_NSTATES ? state_names[s] : "?";
}

int env_rcpt_pending(enum env_rcpt_state s)
{
    return s == ENV_RCPT_PENDING || s == ENV_RCPT_DELAYED;
}

int env_rcpt_success_due(enum env_rcpt_state s)
{
    return s == ENV_RCPT_DELIVERED || s == ENV_RCPT_RELAYED || s == ENV_RCPT_EXPANDED;
}

void envelope_init(struct envelope *e)
{
    memset(e, 0, sizeof *e);
}

void envelope_free(struct envelope *e)
{
    for (size_t i = 0; e->rcpt && i < e->nrcpt; i++) {
        free(e->rcpt[i].orcpt);
        free(e->rcpt[i].last_error);
    }
    free(e->rcpt);
    e->rcpt = NULL;
    e->nrcpt = 0;
    e->rcpt_cap = 0;
}

const char *env_text(const char *s)
{
    return s ? s : "";
}

/* a malloc'd copy of s[0..n), NULL for n == 0; 0 with ENOMEM */
static int text_dup(char **dst, const char *s, size_t n)
{
    *dst = NULL;
    if (!n) return 1;
    if (!(*dst = malloc(n + 1))) { errno = ENOMEM; return 0; }
    memcpy(*dst, s, n);
    (*dst)[n] = 0;
    return 1;
}

int env_rcpt_set_error(struct env_rcpt *r, const char *text)
{
    char *t;
    if (!text_dup(&t, env_text(text), strnlen(env_text(text), ENV_FIELD_MAX))) return 0;
    if (t) envelope_text_clean(t);
    free(r->last_error);
    r->last_error = t;
    return 1;
}

int envelope_bytes_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) return 0;
    }
    return 1;
}

int envelope_text_ok(const char *s, size_t max)
{
    size_t n = strnlen(s, max + 1);
    return n <= max && envelope_bytes_ok(s, n);
}

void envelope_text_clean(char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f) *s = '?';
    }
}

int envelope_add_rcpt(struct envelope *e, const char *addr, unsigned notify, const char *orcpt)
{
    if (!orcpt) orcpt = "";
    if (!*addr || !envelope_text_ok(addr, ENV_ADDR_MAX) || !envelope_text_ok(orcpt, ENV_FIELD_MAX)
        || notify > 15u) {
        errno = EINVAL;
        return 0;
    }
    if (e->nrcpt >= ENV_RCPT_MAX) { errno = E2BIG; return 0; }
    /* grow geometrically; a caller-built array (rcpt_cap 0 or stale) is
     * treated as full, so it is realloc'd before we write past nrcpt */
    size_t n = e->nrcpt, bytes;
    if (n >= e->rcpt_cap) {
        size_t cap = n < 4 ? 8 : n * 2;
        if (cap > ENV_RCPT_MAX) cap = ENV_RCPT_MAX;
        if (!size_mul(cap, sizeof *e->rcpt, &bytes)) return 0;
        struct env_rcpt *grown = realloc(e->rcpt, bytes);
        if (!grown) { errno = ENOMEM; return 0; }
        e->rcpt = grown;
        e->rcpt_cap = cap;
    }
    struct env_rcpt *r = &e->rcpt[n];
    memset(r, 0, sizeof *r);
    if (!text_dup(&r->orcpt, orcpt, strlen(orcpt))) return 0;
    r->state = ENV_RCPT_PENDING;
    r->notify = notify;
    memcpy(r->addr, addr, strlen(addr) + 1);
    e->nrcpt = n + 1;
    return 1;
}

int envelope_notify_format(unsigned notify, char *dst, size_t dstlen)
{
    static const struct { unsigned bit; const char *name; } names[] = {
        { SMTP_NOTIFY_SUCCESS, "SUCCESS" }, { SMTP_NOTIFY_FAILURE, "FAILURE" },
        { SMTP_NOTIFY_DELAY, "DELAY" }, { SMTP_NOTIFY_NEVER, "NEVER" },
    };
    size_t used = 0;
    if (dstlen == 0) { errno = ENOSPC; return 0; }
    dst[0] = 0;
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        if (!(notify & names[i].bit)) continue;
        size_t l = strlen(names[i].name) + (used ? 1 : 0);
        if (used + l + 1 > dstlen) { errno = ENOSPC; return 0; }
        if (used) dst[used++] = ',';
        memcpy(dst + used, names[i].name, strlen(names[i].name) + 1);
        used += strlen(names[i].name);
    }
    return 1;
}

int envelope_notify_parse(const char *s, size_t len, unsigned *notify)
{
    unsigned bits = 0;
    size_t i = 0;
    if (len == 0) { *notify = 0; return 1; }
    while (i <= len) {
        size_t j = i;
        while (j < len && s[j] != ',') j++;
        size_t n = j - i;
        unsigned bit;
        if (n == 7 && !strncasecmp(s + i, "SUCCESS", 7)) bit = SMTP_NOTIFY_SUCCESS;
        else if (n == 7 && !strncasecmp(s + i, "FAILURE", 7)) bit = SMTP_NOTIFY_FAILURE;
        else if (n == 5 && !strncasecmp(s + i, "DELAY", 5)) bit = SMTP_NOTIFY_DELAY;
        else if (n == 5 && !strncasecmp(s + i, "NEVER", 5)) bit = SMTP_NOTIFY_NEVER;
        else { errno = EINVAL; return 0; }
        if (bits & bit) { errno = EINVAL; return 0; }
        bits |= bit;
        i = j + 1;
    }
    /* NEVER excludes the others (RFC 3461 4.1) */
    if ((bits & SMTP_NOTIFY_NEVER) && bits != SMTP_NOTIFY_NEVER) { errno = EINVAL; return 0; }
    *notify = bits;
    return 1;
}

int envelope_format(const struct envelope *e, struct buf *out)
{
    char notify[40];
    if (!envelope_id_valid(e->id) || !envelope_text_ok(e->sender, ENV_ADDR_MAX)
        || !strcmp(e->sender, "<>")
        || !envelope_text_ok(e->client, ENV_FIELD_MAX) || !envelope_text_ok(e->envid, ENV_FIELD_MAX)
        || e->nrcpt == 0 || e->nrcpt > ENV_RCPT_MAX || e->birth < 0) {
        errno = EINVAL;
        return 0;
    }
    for (size_t i = 0; i < e->nrcpt; i++) {
        const struct env_rcpt *r = &e->rcpt[i];
        if (!r->addr[0] || !envelope_text_ok(r->addr, ENV_ADDR_MAX)
            || !envelope_text_ok(env_text(r->orcpt), ENV_FIELD_MAX)
            || !envelope_text_ok(env_text(r->last_error), ENV_FIELD_MAX)
            || (unsigned)r->state >= ENV_RCPT_NSTATES || r->next_try < 0
            || !envelope_notify_format(r->notify, notify, sizeof notify)) {
            errno = EINVAL;
            return 0;
        }
    }
    if (!buf_appendf(out, "%s\nid %s\nbirth %lld\nsender %s\n", ENV_VERSION_LINE, e->id,
                     (long long)e->birth, e->sender[0] ? e->sender : "<>"))
        return 0;
    if (e->client[0] && !buf_appendf(out, "client %s\n", e->client)) return 0;
    if (e->envid[0] && !buf_appendf(out, "envid %s\n", e->envid)) return 0;
    if ((e->ret_given || e->ret_hdrs) && !buf_appendf(out, "ret %s\n", e->ret_hdrs ? "hdrs" : "full")) return 0;
    if (!buf_appendf(out, "body %s\nsmtputf8 %s\nbounce %s\n", e->body_8bit ? "8bitmime" : "7bit",
                     e->smtputf8 ? "yes" : "no", e->is_bounce ? "yes" : "no"))
        return 0;
    for (size_t i = 0; i < e->nrcpt; i++) {
        const struct env_rcpt *r = &e->rcpt[i];
        envelope_notify_format(r->notify, notify, sizeof notify);
        if (!buf_appendf(out, "rcpt\t%s\t%u\t%lld\t%s\t%s\t%s\t%s\n", state_names[r->state],
                         r->attempts, (long long)r->next_try, notify, env_text(r->orcpt), r->addr,
                         env_text(r->last_error)))
            return 0;
    }
    return 1;
}

/* ---- parsing ---- */

static int why_set(char *why, size_t whylen, size_t line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int why_set(char *why, size_t whylen, size_t line, const char *fmt, ...)
{
    if (why && whylen) {
        int n = snprintf(why, whylen, "line %zu: ", line);
        if (n >= 0 && (size_t)n < whylen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(why + n, whylen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    errno = EINVAL;
    return 0;
}

/* copy s[0..n) into dst[max+1] */
static int field_copy(char *dst, size_t max, const char *s, size_t n)
{
    if (n > max || !envelope_bytes_ok(s, n)) return 0;
    memcpy(dst, s, n);
    dst[n] = 0;
    return 1;
}

/* unsigned decimal, no sign, no leading junk, <= max */
static int parse_num(const char *s, size_t n, unsigned long long max, unsigned long long *out)
{
    unsigned long long v = 0;
    if (n == 0 || n > 20) return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (max - d) / 10) return 0;
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

static int parse_yesno(const char *v, size_t n, const char *yes, const char *no, int *out)
{
    if (n == strlen(yes) && !memcmp(v, yes, n)) { *out = 1; return 1; }
    if (n == strlen(no) && !memcmp(v, no, n)) { *out = 0; return 1; }
    return 0;
}

/* one "rcpt" line: fields after "rcpt\t" */
static int parse_rcpt(struct envelope *e, const char *s, size_t n, size_t lineno, char *why,
                      size_t whylen)
{
    const char *f[7];
    size_t fl[7], k = 0, start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '\t') {
            if (k == 7) return why_set(why, whylen, lineno, "rcpt: too many fields");
            f[k] = s + start;
            fl[k] = i - start;
            k++;
            start = i + 1;
        }
    }
    if (k != 7) return why_set(why, whylen, lineno, "rcpt: %zu fields, want 7", k);
    if (e->nrcpt >= ENV_RCPT_MAX)
        return why_set(why, whylen, lineno, "more than %d recipients", ENV_RCPT_MAX);
    unsigned state = ENV_RCPT_NSTATES;
    for (unsigned i = 0; i < ENV_RCPT_NSTATES; i++)
        if (fl[0] == strlen(state_names[i]) && !memcmp(f[0], state_names[i], fl[0])) state = i;
    if (state == ENV_RCPT_NSTATES) return why_set(why, whylen, lineno, "rcpt: bad state");
    unsigned long long attempts, next;
    if (!parse_num(f[1], fl[1], UINT_MAX, &attempts))
        return why_set(why, whylen, lineno, "rcpt: bad attempts");
    if (!parse_num(f[2], fl[2], (unsigned long long)LLONG_MAX, &next))
        return why_set(why, whylen, lineno, "rcpt: bad next_try");
    unsigned notify;
    if (!envelope_notify_parse(f[3], fl[3], &notify))
        return why_set(why, whylen, lineno, "rcpt: bad notify");
    char orcpt[ENV_FIELD_MAX + 1], addr[ENV_ADDR_MAX + 1];
    if (!field_copy(orcpt, ENV_FIELD_MAX, f[4], fl[4]))
        return why_set(why, whylen, lineno, "rcpt: bad orcpt");
    if (fl[5] == 0 || !field_copy(addr, ENV_ADDR_MAX, f[5], fl[5]))
        return why_set(why, whylen, lineno, "rcpt: bad address");
    if (!envelope_add_rcpt(e, addr, notify, orcpt))
        return errno == ENOMEM ? 0 : why_set(why, whylen, lineno, "rcpt: refused");
    struct env_rcpt *r = &e->rcpt[e->nrcpt - 1];
    char last_error[ENV_FIELD_MAX + 1];
    if (!field_copy(last_error, ENV_FIELD_MAX, f[6], fl[6])) {
        free(r->orcpt);
        e->nrcpt--;
        return why_set(why, whylen, lineno, "rcpt: bad last_error");
    }
    if (!text_dup(&r->last_error, last_error, fl[6])) {
        free(r->orcpt);
        e->nrcpt--;
        return 0;
    }
    r->state = (enum env_rcpt_state)state;
    r->attempts = (unsigned)attempts;
    r->next_try = (time_t)next;
    return 1;
}

enum { SEEN_ID = 1, SEEN_BIRTH = 2, SEEN_SENDER = 4, SEEN_CLIENT = 8, SEEN_ENVID = 16,
       SEEN_RET = 32, SEEN_BODY = 64, SEEN_UTF8 = 128, SEEN_BOUNCE = 256 };

static int parse_field(struct envelope *e, const char *key, size_t kl, const char *v, size_t vl,
                       unsigned *seen, size_t lineno, char *why, size_t whylen)
{
    static const struct { const char *name; unsigned bit; } keys[] = {
        { "id", SEEN_ID }, { "birth", SEEN_BIRTH }, { "sender", SEEN_SENDER },
        { "client", SEEN_CLIENT }, { "envid", SEEN_ENVID }, { "ret", SEEN_RET },
        { "body", SEEN_BODY }, { "smtputf8", SEEN_UTF8 }, { "bounce", SEEN_BOUNCE },
    };
    unsigned bit = 0;
    for (size_t i = 0; i < ARRAY_LEN(keys); i++)
        if (kl == strlen(keys[i].name) && !memcmp(key, keys[i].name, kl)) bit = keys[i].bit;
    if (!bit) return why_set(why, whylen, lineno, "unknown field");
    if (*seen & bit) return why_set(why, whylen, lineno, "duplicate field");
    *seen |= bit;
    unsigned long long n;
    int ok = 1;
    switch (bit) {
    case SEEN_ID:
        ok = vl == ENV_ID_LEN && field_copy(e->id, ENV_ID_LEN, v, vl) && envelope_id_valid(e->id);
        break;
    case SEEN_BIRTH:
        ok = parse_num(v, vl, (unsigned long long)LLONG_MAX, &n);
        if (ok) e->birth = (time_t)n;
        break;
    case SEEN_SENDER:
        if (vl == 2 && !memcmp(v, "<>", 2)) e->sender[0] = 0;
        else ok = vl > 0 && field_copy(e->sender, ENV_ADDR_MAX, v, vl);
        break;
    case SEEN_CLIENT: ok = field_copy(e->client, ENV_FIELD_MAX, v, vl); break;
    case SEEN_ENVID: ok = field_copy(e->envid, ENV_FIELD_MAX, v, vl); break;
    case SEEN_RET: ok = parse_yesno(v, vl, "hdrs", "full", &e->ret_hdrs); e->ret_given = ok; break;
    case SEEN_BODY: ok = parse_yesno(v, vl, "8bitmime", "7bit", &e->body_8bit); break;
    case SEEN_UTF8: ok = parse_yesno(v, vl, "yes", "no", &e->smtputf8); break;
    case SEEN_BOUNCE: ok = parse_yesno(v, vl, "yes", "no", &e->is_bounce); break;
    }
    if (!ok) return why_set(why, whylen, lineno, "bad value for %.*s", (int)kl, key);
    return 1;
}

int envelope_parse(struct envelope *e, const char *text, size_t len, char *why, size_t whylen)
{
    unsigned seen = 0;
    size_t pos = 0, lineno = 0;
    envelope_init(e);
    if (why && whylen) why[0] = 0;
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        lineno++;
        if (!nl) { why_set(why, whylen, lineno, "no final newline"); goto fail; }
        const char *s = text + pos;
        size_t n = (size_t)(nl - s);
        pos += n + 1;
        if (lineno == 1) {
            if (n != strlen(ENV_VERSION_LINE) || memcmp(s, ENV_VERSION_LINE, n)) {
                why_set(why, whylen, lineno, "not a postern-envelope 1 file");
                goto fail;
            }
            continue;
        }
        if (n > 5 + ENV_FIELD_MAX * 3 + ENV_ADDR_MAX + 64) {
            why_set(why, whylen, lineno, "line too long");
            goto fail;
        }
        if (n >= 5 && !memcmp(s, "rcpt\t", 5)) {
            if (!parse_rcpt(e, s + 5, n - 5, lineno, why, whylen)) goto fail;
            continue;
        }
        const char *sp = memchr(s, ' ', n);
        if (!sp) { why_set(why, whylen, lineno, "no value"); goto fail; }
        if (!parse_field(e, s, (size_t)(sp - s), sp + 1, n - (size_t)(sp - s) - 1, &seen, lineno,
                         why, whylen))
            goto fail;
    }
    if (lineno == 0) { why_set(why, whylen, 1, "empty file"); goto fail; }
    const char *missing = !(seen & SEEN_ID) ? "id" : !(seen & SEEN_BIRTH) ? "birth"
                        : !(seen & SEEN_SENDER) ? "sender" : e->nrcpt == 0 ? "rcpt" : NULL;
    if (missing) { why_set(why, whylen, lineno, "missing %s", missing); goto fail; }
    return 1;
fail:
    {
        int saved = errno;
        envelope_free(e);
        errno = saved;
    }
    return 0;
}

int envelope_id_valid(const char *id)
{
    for (size_t i = 0; i < ENV_ID_LEN; i++) {
        char c = id[i];
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'))) return 0;
    }
    return id[ENV_ID_LEN] == 0;
}

char envelope_id_hash(const char *id)
{
    return id[ENV_ID_LEN - 1];
}
