/* notify.c - the DSNs of one message's round (RFC 3461/3464):
 * - recipients that failed for good get one failure report per message per
 *   round, to the envelope sender, unless their NOTIFY says NEVER or names
 *   other events but not FAILURE; then they are marked bounced;
 * - NOTIFY=SUCCESS recipients that were delivered (or relayed, or were
 *   an alias expanded) get a success report;
 * - NOTIFY=DELAY recipients get one delay report, at the first failure
 *   after RETRY_DELAY_NOTICE (lib/retry.h);
 * - nothing ever goes to the null sender: a failed message from <> (a
 *   bounce) becomes a double bounce to postmaster (dsn_compose addresses it
 *   there), once; a double bounce that fails is dropped with a log line.
 * Reports are injected through queue-inject from <>. Each report due is
 * due in the recipient's saved state (envelope.h: failed, delivered,
 * relayed, expanded, delayed) until the report is queued, so a crash
 * cannot lose one. A failure or success report that cannot be queued is
 * tried again QM_BOUNCE_RETRY seconds later, a delay report at the
 * recipient's next try. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "dsn.h"
#include "inject_client.h"
#include "log.h"
#include "qm.h"
#include "smtp_addr.h"

static const char *kind_name(enum dsn_kind k)
{
    return k == DSN_FAILURE ? "failure" : k == DSN_DELAY ? "delay" : "success";
}

/* "5.1.1 no such user" -> code "5.1.1", text; default code by kind */
static void split_status(const char *text, enum dsn_kind k, char *code, size_t codelen, const char **diag)
{
    size_t n = 0;
    int dots = 0;
    while (text[n] && text[n] != ' ') {
        if (text[n] == '.') dots++;
        else if (text[n] < '0' || text[n] > '9') { dots = -9; }
        n++;
    }
    if (dots == 2 && n >= 5 && n < codelen && (text[0] == '2' || text[0] == '4' || text[0] == '5')) {
        memcpy(code, text, n);
        code[n] = 0;
        if (k == DSN_FAILURE && code[0] == '2') code[0] = '5';
        text += n;
        while (*text == ' ') text++;
    } else {
        snprintf(code, codelen, "%s", k == DSN_FAILURE ? "5.0.0" : k == DSN_DELAY ? "4.0.0" : "2.0.0");
    }
    *diag = text;
}

static int is_double_bounce(const struct envelope *e)
{
    return !strncmp(e->client, QM_DOUBLE_BOUNCE, strlen(QM_DOUBLE_BOUNCE));
}

static int has_8bit(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80) return 1;
    return 0;
}

/* compose and inject one report for idx[0..n) of m; 1 if queued or deliberately dropped */
static int report(struct qm *q, struct qm_msg *m, enum dsn_kind kind, const size_t *idx, size_t n, time_t now)
{
    const struct envelope *e = m->env;
    char to[ENV_ADDR_MAX + CONFIG_NAME_MAX + 16], id[ENV_ID_LEN + 1];
    const char *client = QM_BOUNCE;
    if (!e->sender[0]) {
        if (kind != DSN_FAILURE) return 1;
        if (is_double_bounce(e)) {
            log_warn(m->id, "dsn=double-bounce-failed action=dropped");
            return 1;
        }
        snprintf(to, sizeof to, "postmaster@%s", q->cfg.hostname);
        client = QM_DOUBLE_BOUNCE;
    } else {
        snprintf(to, sizeof to, "%s", e->sender);
    }
    struct dsn_item *items = calloc(n, sizeof *items);
    char (*codes)[16] = calloc(n, sizeof *codes);
    char *msg = NULL;
    size_t msglen = 0, msgsize = 0;
    struct buf out = BUF_ZERO;
    int ok = 0, status = -1;
    if (!items || !codes) goto done;
    for (size_t k = 0; k < n; k++) {
        const struct env_rcpt *r = &e->rcpt[idx[k]];
        items[k].rcpt = r;
        split_status(env_text(r->last_error)[0] ? r->last_error : (kind == DSN_SUCCESS ? "2.0.0 delivered" : ""),
                     kind, codes[k], sizeof codes[k], &items[k].diagnostic);
        items[k].action_status = codes[k];
        if (kind == DSN_DELAY && e->birth > 0 && q->cfg.queue_lifetime < (1ULL << 40))   /* the last try */
            items[k].retry_until = e->birth + (time_t)q->cfg.queue_lifetime;
        items[k].action = r->state == ENV_RCPT_RELAYED ? "relayed"
                          : r->state == ENV_RCPT_EXPANDED ? "expanded" : NULL;
    }
    if (!qm_msg_read(q, m->id, &msg, &msglen, &msgsize)) goto done;
    if (!dsn_compose_sized(kind, e, items, n, msg, msglen, msgsize, QM_DSN_FULL_LIMIT, q->cfg.hostname, now, &out))
        goto done;
    const char *rc[1] = { to };
    struct inject_req req = { .sender = "", .client = client, .body8bit = has_8bit(out.s, out.len), .rcpt = rc,
                              .nrcpt = 1, .msg = out.s, .msglen = out.len, .msgfd = -1 };
    ok = inject_run(q->root, &req, id, &status);
done:
    char a[ENV_ADDR_MAX * 4 + 8];
    log_safe(a, sizeof a, to, strlen(to));
    if (ok) log_info(m->id, "dsn=%s to=%s queued=%s recipients=%zu", kind_name(kind), a, id, n);
    else log_error(m->id, "dsn=%s to=%s error=\"%s\" exit=%d", kind_name(kind), a, strerror(errno), status);
    free(items);
    free(codes);
    free(msg);
    buf_free(&out);
    return ok;
}

static int wants_failure_report(const struct env_rcpt *r)
{
    if (r->notify & SMTP_NOTIFY_NEVER) return 0;
    if (r->notify && !(r->notify & SMTP_NOTIFY_FAILURE)) return 0;
    return 1;
}

int qm_notify(struct qm *q, struct qm_msg *m, time_t now)
{
    struct envelope *e = m->env;
    size_t *idx = calloc(e->nrcpt ? e->nrcpt : 1, sizeof *idx);
    size_t n = 0;
    int changed = 0;
    if (!idx) { log_error(m->id, "dsn=skipped error=\"out of memory\""); return 0; }
    for (size_t i = 0; i < e->nrcpt; i++) {
        struct env_rcpt *r = &e->rcpt[i];
        if (r->state != ENV_RCPT_FAILED) continue;
        if (wants_failure_report(r)) { idx[n++] = i; continue; }
        r->state = ENV_RCPT_BOUNCED;
        changed = 1;
        char a[ENV_ADDR_MAX * 4 + 8];
        log_info(m->id, "rcpt=%s dsn=not-requested", log_safe(a, sizeof a, r->addr, strlen(r->addr)));
    }
    if (n && report(q, m, DSN_FAILURE, idx, n, now)) {
        for (size_t k = 0; k < n; k++) e->rcpt[idx[k]].state = ENV_RCPT_BOUNCED;
        changed = 1;
    }
    /* then one success report and one delay report; a recipient stays in
     * its state (and the report due) until its report is queued */
    for (int delay = 0; delay <= 1; delay++) {
        n = 0;
        for (size_t i = 0; i < e->nrcpt; i++)
            if (delay ? e->rcpt[i].state == ENV_RCPT_DELAYED : env_rcpt_success_due(e->rcpt[i].state))
                idx[n++] = i;
        if (!n || !report(q, m, delay ? DSN_DELAY : DSN_SUCCESS, idx, n, now)) continue;
        for (size_t k = 0; k < n; k++) e->rcpt[idx[k]].state = delay ? ENV_RCPT_PENDING : ENV_RCPT_DONE;
        changed = 1;
    }
    free(idx);
    return changed;
}
