/* deliver_proto.c - queue-manager <-> deliverer records. */
#include "deliver_proto.h"
#include "fdpass.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

struct enc {
    char *out;
    size_t cap, len;
    int err;
};

static void put_field(struct enc *e, char letter, const char *v, size_t vlen)
{
    if (e->err) return;
    if (memchr(v, '\n', vlen) || memchr(v, '\r', vlen) || memchr(v, 0, vlen)) { e->err = EINVAL; return; }
    if (vlen + 2 > e->cap - e->len) { e->err = EMSGSIZE; return; }
    e->out[e->len++] = letter;
    memcpy(e->out + e->len, v, vlen);
    e->len += vlen;
    e->out[e->len++] = 0;
}

static void put_str(struct enc *e, char letter, const char *v, size_t max, int optional)
{
    size_t n = strnlen(v, max + 1);
    if (n > max) { if (!e->err) e->err = EINVAL; return; }
    if (!n && optional) return;
    put_field(e, letter, v, n);
}

static void put_num(struct enc *e, char letter, long long v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", v);
    put_field(e, letter, tmp, (size_t)n);
}

static int enc_done(struct enc *e, size_t *len)
{
    if (e->err) { errno = e->err; return 0; }
    *len = e->len;
    return 1;
}

static int id_valid(const char *s)
{
    size_t i;
    for (i = 0; s[i]; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F'))) return 0;
    return i == DP_ID_LEN;
}

int dp_job_encode(const struct dp_job *j, char *out, size_t cap, size_t *len)
{
    struct enc e = { out, cap > DP_RECORD_MAX ? DP_RECORD_MAX : cap, 0, 0 };
    /* the bounds dp_job_decode checks: a record the deliverer refuses
     * is never answered, and its job would stay in flight for ever */
    if (!id_valid(j->id) || !j->rcpt[0] || j->job > (unsigned long long)9e18 || j->birth < 0
        || (unsigned long long)j->birth > (unsigned long long)9e18) {
        errno = EINVAL;
        return 0;
    }
    put_num(&e, 'J', (long long)j->job);
    put_str(&e, 'M', j->id, DP_ID_LEN, 0);
    put_str(&e, 'F', j->sender, DP_ADDR_MAX, 0);
    put_str(&e, 'R', j->rcpt, DP_ADDR_MAX, 0);
    put_num(&e, 'T', j->birth);
    put_str(&e, 'O', j->orcpt, DP_FIELD_MAX, 1);
    put_str(&e, 'N', j->notify, sizeof j->notify - 1, 1);
    put_str(&e, 'V', j->envid, DP_FIELD_MAX, 1);
    put_str(&e, 'B', j->body, sizeof j->body - 1, 1);
    put_str(&e, 'E', j->ret, sizeof j->ret - 1, 1);
    if (j->smtputf8) put_field(&e, 'U', "1", 1);
    return enc_done(&e, len);
}

int dp_action_valid(const char *a)
{
    return !a[0] || !strcmp(a, DP_ACTION_EXPANDED) || !strcmp(a, DP_ACTION_RELAYED) || !strcmp(a, DP_ACTION_PASSED);
}

int dp_result_encode(const struct dp_result *r, char *out, size_t cap, size_t *len)
{
    struct enc e = { out, cap > DP_RECORD_MAX ? DP_RECORD_MAX : cap, 0, 0 };
    char s[2] = { (char)r->status, 0 };
    if ((r->status != DP_SUCCESS && r->status != DP_TEMPORARY && r->status != DP_PERMANENT) ||
        !r->text[0] || r->job > (unsigned long long)9e18 || strnlen(r->action, sizeof r->action) >= sizeof r->action ||
        !dp_action_valid(r->action) || (r->action[0] && r->status != DP_SUCCESS)) {
        errno = EINVAL;
        return 0;
    }
    put_num(&e, 'J', (long long)r->job);
    put_field(&e, 'S', s, 1);
    put_str(&e, 'X', r->text, DP_FIELD_MAX, 0);
    put_str(&e, 'A', r->action, DP_ACTION_MAX, 1);
    return enc_done(&e, len);
}

/* A decoder: walks the fields of one record, each letter at most once. */
struct field_spec {
    char letter;
    char *dst;        /* string destination or NULL for numbers */
    size_t max;       /* longest value */
    int required;
    int allow_empty;
};

static int parse_u(const char *s, size_t n, unsigned long long max, unsigned long long *out)
{
    unsigned long long v = 0;
    if (!n || n > 19 || (n > 1 && s[0] == '0')) return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > max) return 0;
    *out = v;
    return 1;
}

static int walk(const char *rec, size_t len, struct field_spec *spec, size_t nspec,
                const char **numv, size_t *numl)
{
    unsigned seen = 0;
    size_t off = 0;
    if (!len || len > DP_RECORD_MAX || rec[len - 1] != 0) return 0;
    while (off < len) {
        const char *f = rec + off;
        size_t flen = strlen(f);      /* safe: rec[len-1] == 0 */
        off += flen + 1;
        if (!flen) return 0;          /* empty field: not a record */
        size_t i;
        for (i = 0; i < nspec; i++)
            if (spec[i].letter == f[0]) break;
        if (i == nspec) return 0;     /* unknown letter */
        if (seen & (1u << i)) return 0;
        seen |= 1u << i;
        const char *v = f + 1;
        size_t vlen = flen - 1;
        if (vlen > spec[i].max || (!vlen && !spec[i].allow_empty)) return 0;
        if (memchr(v, '\n', vlen) || memchr(v, '\r', vlen)) return 0;
        if (spec[i].dst) {
            memcpy(spec[i].dst, v, vlen);
            spec[i].dst[vlen] = 0;
        } else {
            numv[i] = v;
            numl[i] = vlen;
        }
    }
    for (size_t i = 0; i < nspec; i++)
        if (spec[i].required && !(seen & (1u << i))) return 0;
    return 1;
}

int dp_job_decode(struct dp_job *j, const char *rec, size_t len)
{
    const char *numv[11] = { 0 };
    size_t numl[11] = { 0 };
    char u[2] = "";
    unsigned long long job, birth;
    memset(j, 0, sizeof *j);
    struct field_spec spec[11] = {
        { 'J', NULL, 20, 1, 0 },
        { 'M', j->id, DP_ID_LEN, 1, 0 },
        { 'F', j->sender, DP_ADDR_MAX, 1, 1 },
        { 'R', j->rcpt, DP_ADDR_MAX, 1, 0 },
        { 'T', NULL, 20, 1, 0 },
        { 'O', j->orcpt, DP_FIELD_MAX, 0, 0 },
        { 'N', j->notify, sizeof j->notify - 1, 0, 0 },
        { 'V', j->envid, DP_FIELD_MAX, 0, 0 },
        { 'B', j->body, sizeof j->body - 1, 0, 0 },
        { 'E', j->ret, sizeof j->ret - 1, 0, 0 },
        { 'U', u, 1, 0, 0 },
    };
    if (!walk(rec, len, spec, 11, numv, numl) || (u[0] && u[0] != '1') ||
        !parse_u(numv[0], numl[0], (unsigned long long)9e18, &job) ||
        !parse_u(numv[4], numl[4], (unsigned long long)9e18, &birth) ||
        !id_valid(j->id)) {
        memset(j, 0, sizeof *j);
        errno = EPROTO;
        return 0;
    }
    j->job = job;
    j->birth = (long long)birth;
    j->smtputf8 = u[0] == '1';
    return 1;
}

int dp_result_decode(struct dp_result *r, const char *rec, size_t len)
{
    const char *numv[4] = { 0 };
    size_t numl[4] = { 0 };
    char st[2];
    unsigned long long job;
    memset(r, 0, sizeof *r);
    struct field_spec spec[4] = {
        { 'J', NULL, 20, 1, 0 },
        { 'S', st, 1, 1, 0 },
        { 'X', r->text, DP_FIELD_MAX, 1, 0 },
        { 'A', r->action, DP_ACTION_MAX, 0, 0 },
    };
    if (!walk(rec, len, spec, 4, numv, numl) ||
        !parse_u(numv[0], numl[0], (unsigned long long)9e18, &job) ||
        (st[0] != DP_SUCCESS && st[0] != DP_TEMPORARY && st[0] != DP_PERMANENT) ||
        !dp_action_valid(r->action) || (r->action[0] && st[0] != DP_SUCCESS)) {
        memset(r, 0, sizeof *r);
        errno = EPROTO;
        return 0;
    }
    r->job = job;
    r->status = (enum dp_status)st[0];
    return 1;
}

int dp_mbox_encode(const struct dp_mbox *m, char *out, size_t cap, size_t *len)
{
    struct enc e = { out, cap > DP_RECORD_MAX ? DP_RECORD_MAX : cap, 0, 0 };
    if (!id_valid(m->id) || !m->rcpt[0] || !m->maildir[0] || !m->host[0] || m->uid == 0 ||
        m->gid == 0 || m->uid == (uid_t)-1 || m->gid == (gid_t)-1 ||
        m->job > (unsigned long long)9e18 || m->quota > (unsigned long long)9e18) {
        errno = EINVAL;
        return 0;
    }
    put_num(&e, 'J', (long long)m->job);
    put_str(&e, 'M', m->id, DP_ID_LEN, 0);
    put_str(&e, 'F', m->sender, DP_ADDR_MAX, 0);
    put_str(&e, 'R', m->rcpt, DP_ADDR_MAX, 0);
    put_num(&e, 'U', (long long)m->uid);
    put_num(&e, 'G', (long long)m->gid);
    put_str(&e, 'D', m->maildir, DP_PATH_MAX, 0);
    put_str(&e, 'L', m->host, DP_HOST_MAX, 0);
    put_num(&e, 'Q', (long long)m->quota);
    return enc_done(&e, len);
}

int dp_mbox_decode(struct dp_mbox *m, const char *rec, size_t len)
{
    const char *numv[9] = { 0 };
    size_t numl[9] = { 0 };
    unsigned long long job, uid, gid, quota;
    memset(m, 0, sizeof *m);
    struct field_spec spec[9] = {
        { 'J', NULL, 20, 1, 0 },
        { 'M', m->id, DP_ID_LEN, 1, 0 },
        { 'F', m->sender, DP_ADDR_MAX, 1, 1 },
        { 'R', m->rcpt, DP_ADDR_MAX, 1, 0 },
        { 'U', NULL, 20, 1, 0 },
        { 'G', NULL, 20, 1, 0 },
        { 'D', m->maildir, DP_PATH_MAX, 1, 0 },
        { 'L', m->host, DP_HOST_MAX, 1, 0 },
        { 'Q', NULL, 20, 1, 0 },
    };
    if (!walk(rec, len, spec, 9, numv, numl) ||
        !parse_u(numv[0], numl[0], (unsigned long long)9e18, &job) ||
        !parse_u(numv[4], numl[4], (uid_t)-1 - 1, &uid) || !uid ||
        !parse_u(numv[5], numl[5], (gid_t)-1 - 1, &gid) || !gid ||
        !parse_u(numv[8], numl[8], (unsigned long long)9e18, &quota) ||
        !id_valid(m->id)) {
        memset(m, 0, sizeof *m);
        errno = EPROTO;
        return 0;
    }
    m->job = job;
    m->uid = (uid_t)uid;
    m->gid = (gid_t)gid;
    m->quota = quota;
    return 1;
}

int dp_reload_encode(char *out, size_t cap, size_t *len)
{
    struct enc e = { out, cap > DP_RECORD_MAX ? DP_RECORD_MAX : cap, 0, 0 };
    put_field(&e, 'H', "", 0);
    return enc_done(&e, len);
}

int dp_reload_decode(const char *rec, size_t len)
{
    char v[1];
    struct field_spec spec[1] = { { 'H', v, 0, 1, 1 } };
    if (!walk(rec, len, spec, 1, NULL, NULL)) { errno = EPROTO; return 0; }
    return 1;
}

int dp_send_result(int sock, unsigned long long job, enum dp_status s, const char *text)
{
    return dp_send_result_action(sock, job, s, NULL, text);
}

int dp_send_result_action(int sock, unsigned long long job, enum dp_status s, const char *action,
                          const char *text)
{
    struct dp_result r;
    char rec[DP_RECORD_MAX];
    size_t len;
    memset(&r, 0, sizeof r);
    r.job = job;
    r.status = s;
    snprintf(r.text, sizeof r.text, "%s", text);
    if (action && snprintf(r.action, sizeof r.action, "%s", action) >= (int)sizeof r.action) {
        errno = EINVAL;
        return 0;
    }
    return dp_result_encode(&r, rec, sizeof rec, &len) && dp_send(sock, rec, len, -1);
}

int dp_send(int sock, const char *rec, size_t len, int fd)
{
    struct iovec iov = { (void *)rec, len };
    size_t sent;
    if (!len || len > DP_RECORD_MAX) { errno = EMSGSIZE; return 0; }
    if (!fdpass_send(sock, &iov, 1, &fd, fd >= 0 ? 1 : 0, &sent)) return 0;
    if (sent != len) { errno = EMSGSIZE; return 0; }
    return 1;
}

int dp_recv(int sock, char *rec, size_t cap, size_t *len, int *fd)
{
    struct fdpass_in in;
    int bad = 0;
    *fd = -1;
    *len = 0;
    if (!fdpass_recv(sock, rec, cap, &in)) return 0;
    if (in.len == 0 && !in.nfd) { errno = EPIPE; return 0; }
    if (in.truncated || in.len > DP_RECORD_MAX) bad = EMSGSIZE;
    else if (in.nfd > 1 || in.too_many) bad = EPROTO;
    if (bad) {
        fdpass_close(&in);
        errno = bad;
        return 0;
    }
    if (in.nfd) *fd = in.fd[0];
    *len = in.len;
    return 1;
}
