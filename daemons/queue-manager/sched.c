/* sched.c - queue-manager's scheduling: which recipient goes to which
 * deliverer when, what a result does to the envelope, and when a message's
 * round is over (DSNs sent, finished messages removed). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "deliver_proto.h"
#include "io.h"
#include "log.h"
#include "qm.h"
#include "queue_path.h"
#include "retry.h"
#include "smtp_addr.h"

/* FNV-1a of the id: a scan of env/ calls qm_find once per file, so a
 * linear search made starting with a large queue O(n^2) */
static size_t id_hash(const char *id)
{
    size_t h = 2166136261u;
    for (; *id; id++) h = (h ^ (unsigned char)*id) * 16777619u;
    return h;
}

/* the key qm_channel.per_key counts recipient addr by on channel ch: the
 * address (local) or its domain (remote), in lower case; FNV-1a, 64 bits,
 * never 0 */
static unsigned long long dest_key(enum qm_chan ch, const char *addr)
{
    unsigned long long h = 14695981039346656037ULL;
    const char *at = ch == QM_REMOTE ? strrchr(addr, '@') : NULL;
    for (addr = at ? at + 1 : addr; *addr; addr++) {
        unsigned char c = (unsigned char)*addr;
        if (c >= 'A' && c <= 'Z') c = (unsigned char)(c - 'A' + 'a');
        h = (h ^ c) * 1099511628211ULL;
    }
    return h ? h : 1;
}

/* 1 if channel ch has per_key messages in flight for key already, m not
 * among them (NULL: any); *joins (if given) 1 if m is */
static int key_saturated(const struct qm *q, enum qm_chan ch, unsigned long long key, const struct qm_msg *m,
                         int *joins)
{
    unsigned n = 0, max = q->chan[ch].per_key;
    if (joins) *joins = 0;
    if (!max) return 0;
    for (const struct qm_job *j = q->jobs; j; j = j->next) {
        if (j->chan != ch || j->key != key) continue;
        if (m && j->m == m) {
            if (joins) *joins = 1;
            return 0;
        }
        n += j->first;
    }
    return n >= max;
}

static int hash_grow(struct qm *q)
{
    size_t n = q->hsize ? q->hsize * 2 : 1024;
    if (n < q->hsize) { errno = ENOMEM; return 0; }
    struct qm_msg **t = calloc(n, sizeof *t);
    if (!t) return 0;
    for (struct qm_msg *m = q->msgs; m; m = m->next) {
        size_t b = id_hash(m->id) & (n - 1);
        m->hnext = t[b];
        t[b] = m;
    }
    free(q->hash);
    q->hash = t;
    q->hsize = n;
    return 1;
}

struct qm_msg *qm_find(struct qm *q, const char *id)
{
    if (!q->hsize) return NULL;
    for (struct qm_msg *m = q->hash[id_hash(id) & (q->hsize - 1)]; m; m = m->hnext)
        if (!strcmp(m->id, id)) return m;
    return NULL;
}

struct qm_msg *qm_add(struct qm *q, const char *id)
{
    if (q->nmsgs >= q->hsize && !hash_grow(q)) return NULL;
    struct qm_msg *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    memcpy(m->id, id, ENV_ID_LEN + 1);
    /* at the tail: qm_dispatch walks from the head, so under a backlog the
     * oldest message goes first (at the head, a steady inflow kept the
     * older ones waiting for seconds) */
    m->prev = q->msgs_tail;
    if (q->msgs_tail) q->msgs_tail->next = m;
    else q->msgs = m;
    q->msgs_tail = m;
    size_t b = id_hash(m->id) & (q->hsize - 1);
    m->hnext = q->hash[b];
    q->hash[b] = m;
    q->nmsgs++;
    return m;
}

static void msg_unload(struct qm_msg *m)
{
    if (!m->loaded) return;
    envelope_free(m->env);
    free(m->env);
    m->env = NULL;
    free(m->busy);
    m->busy = NULL;
    m->loaded = 0;
}

/* the first time this queue-manager loads a message, one line saying
 * where it came from, whom from, how big and for how many (what Postfix's
 * qmgr logs as from=, size=, nrcpt=): mail from sendmail, and the DSNs
 * queue-manager makes, show up in the log here first */
static void announce(struct qm *q, struct qm_msg *m)
{
    char path[QUEUE_PATH_MAX], a[ENV_ADDR_MAX * 4 + 8], c[ENV_FIELD_MAX * 2 + 8];
    struct stat st;
    const struct envelope *e = m->env;
    long long size = queue_path(path, sizeof path, q->root, QUEUE_MESS, m->id) && stat(path, &st) == 0
                     ? (long long)st.st_size : -1;
    log_info(m->id, "event=new from=<%s> size=%lld nrcpt=%zu client=\"%s\"",
             log_safe(a, sizeof a, e->sender, strlen(e->sender)), size, e->nrcpt,
             log_quote(c, sizeof c, e->client, strlen(e->client)));
    m->announced = 1;
}

static int msg_load(struct qm *q, struct qm_msg *m)
{
    if (m->loaded) return 1;
    m->env = malloc(sizeof *m->env);
    if (!m->env) return 0;
    if (!qm_env_load(q, m->id, m->env)) {
        int e = errno;
        free(m->env);
        m->env = NULL;
        errno = e;
        return 0;
    }
    m->busy = calloc(m->env->nrcpt, 1);
    if (!m->busy) {
        envelope_free(m->env);
        free(m->env);
        m->env = NULL;
        errno = ENOMEM;
        return 0;
    }
    m->loaded = 1;
    if (!m->announced) announce(q, m);
    return 1;
}

static void dirty_clear(struct qm *q, struct qm_msg *m);

static void msg_forget(struct qm *q, struct qm_msg *m)
{
    dirty_clear(q, m);
    if (m->prev) m->prev->next = m->next;
    else q->msgs = m->next;
    if (m->next) m->next->prev = m->prev;
    else q->msgs_tail = m->prev;
    for (struct qm_msg **pp = &q->hash[id_hash(m->id) & (q->hsize - 1)]; *pp; pp = &(*pp)->hnext)
        if (*pp == m) { *pp = m->hnext; break; }
    msg_unload(m);
    free(m);
    q->nmsgs--;
}

static enum qm_chan rcpt_chan(const struct qm *q, const char *addr)
{
    const char *at = strrchr(addr, '@');
    if (!at) return QM_LOCAL;
    return config_is_local_domain(&q->cfg, at + 1, strlen(at + 1)) ? QM_LOCAL : QM_REMOTE;
}

static const char *result_name(const struct env_rcpt *r)
{
    if (r->state == ENV_RCPT_DONE || env_rcpt_success_due(r->state)) return "delivered";
    if (r->state == ENV_RCPT_FAILED) return "failed";
    if (r->state == ENV_RCPT_BOUNCED) return "bounced";
    return "deferred";
}

/* the state a delivered recipient is left in: done, or, when its NOTIFY
 * asks for SUCCESS, the state that says which success report is due. None
 * when the deliverer passed NOTIFY on to a next hop that offers DSN (RFC
 * 3461 5.2: that one reports). */
static enum env_rcpt_state delivered_state(const struct env_rcpt *r, const char *action)
{
    if (!(r->notify & SMTP_NOTIFY_SUCCESS)) return ENV_RCPT_DONE;
    if (!action || !action[0]) return ENV_RCPT_DELIVERED;
    if (!strcmp(action, DP_ACTION_RELAYED)) return ENV_RCPT_RELAYED;
    if (!strcmp(action, DP_ACTION_EXPANDED)) return ENV_RCPT_EXPANDED;
    return ENV_RCPT_DONE;
}

/* record one result in memory (the caller saves the envelope); a report
 * it makes due is due in the saved state, so a crash cannot lose it */
static void apply(struct qm *q, struct qm_msg *m, size_t i, enum dp_status st, const char *action,
                  const char *text, time_t now)
{
    struct env_rcpt *r = &m->env->rcpt[i];
    time_t scheduled = r->next_try;
    if (r->attempts < UINT_MAX) r->attempts++;
    char err[ENV_FIELD_MAX + 1];
    snprintf(err, sizeof err, "%s", text);
    envelope_text_clean(err);
    int expired = 0;
    switch (st) {
    case DP_SUCCESS:
        r->state = delivered_state(r, action);
        break;
    case DP_PERMANENT:
        r->state = ENV_RCPT_FAILED;
        break;
    default:
        if (retry_expired(m->env->birth, now, q->cfg.queue_lifetime)) {
            size_t n = strlen(err);
            snprintf(err + n, sizeof err - n, " (gave up: queue lifetime expired)");
            r->state = ENV_RCPT_FAILED;
            expired = 1;
        } else {
            r->next_try = retry_next(m->env->birth, now, q->cfg.queue_lifetime);
            /* a delay report due and not yet queued stays due */
            if ((r->notify & SMTP_NOTIFY_DELAY)
                && retry_delay_due(m->env->birth, scheduled, now, q->cfg.queue_lifetime))
                r->state = ENV_RCPT_DELAYED;
        }
    }
    char a[ENV_ADDR_MAX * 4 + 8], t[ENV_FIELD_MAX * 2 + 8];
    if (!env_rcpt_set_error(r, err))     /* out of memory: the envelope keeps the last text */
        log_error(m->id, "event=last_error error=\"%s\"", strerror(errno));
    log_info(m->id, "rcpt=%s result=%s status=\"%s\" attempts=%u", log_safe(a, sizeof a, r->addr, strlen(r->addr)),
             expired ? "expired" : result_name(r), log_quote(t, sizeof t, err, strlen(err)),
             r->attempts);
}

/* Make the in-memory results durable. If that fails (disk full, EIO) the
 * message stays loaded with its results, so a recipient already delivered
 * is not delivered again from the old envelope on disk; the save is retried
 * at the next round (QM_SAVE_RETRY). Only a crash meanwhile can duplicate. */
#define QM_SAVE_RETRY 30
static void dirty_clear(struct qm *q, struct qm_msg *m)
{
    if (m->dirty_ms) { m->dirty_ms = 0; q->ndirty--; }
}

/* results (or report states) in env not yet written: qm_save_due
 * rewrites the envelope within QM_SAVE_DELAY_MS */
static void mark_dirty(struct qm *q, struct qm_msg *m)
{
    if (m->dirty_ms) return;
    long long t = io_now_ms();
    m->dirty_ms = t > 0 ? t : 1;
    q->ndirty++;
}

static void save(struct qm *q, struct qm_msg *m)
{
    dirty_clear(q, m);
    if (qm_env_save(q, m->env)) { m->unsaved = 0; return; }
    log_error(m->id, "envelope=not-saved error=\"%s\" retry=%ds", strerror(errno), QM_SAVE_RETRY);
    m->unsaved = 1;
}

static void update_wake(struct qm_msg *m, time_t now)
{
    time_t w = 0;
    int any = 0;
    for (size_t i = 0; i < m->env->nrcpt; i++) {
        const struct env_rcpt *r = &m->env->rcpt[i];
        /* a bounce or success report that could not be queued */
        if (r->state == ENV_RCPT_FAILED || env_rcpt_success_due(r->state)) {
            time_t t = now + QM_BOUNCE_RETRY;
            if (!any || t < w) w = t;
            any = 1;
        }
        /* (a delay report that could not be queued is tried again at the
         * recipient's next try) */
        if (!env_rcpt_pending(r->state) || m->busy[i]) continue;
        if (!any || r->next_try < w) w = r->next_try;
        any = 1;
    }
    m->wake = any ? w : now + QM_SCAN_ALL_EVERY;
}

/* every recipient delivered or bounced, and no report due: round_end
 * removes m */
static int all_finished(const struct envelope *e)
{
    for (size_t i = 0; i < e->nrcpt; i++)
        if (e->rcpt[i].state != ENV_RCPT_DONE && e->rcpt[i].state != ENV_RCPT_BOUNCED) return 0;
    return 1;
}

/* a recipient of m waits only for a deliverer's room: its round goes on */
static int due_now(const struct qm_msg *m, time_t now)
{
    for (size_t i = 0; i < m->env->nrcpt; i++) {
        const struct env_rcpt *r = &m->env->rcpt[i];
        if (env_rcpt_pending(r->state) && !m->busy[i] && r->next_try <= now) return 1;
    }
    return 0;
}

/* no job of m is in flight: DSNs, then remove it or put it to sleep.
 * Returns 1 if m is gone (freed). */
static int round_end(struct qm *q, struct qm_msg *m, time_t now)
{
    if (m->delete_req) {
        if (qm_msg_remove(q, m->id)) log_info(m->id, "removed=operator-request");
        else log_error(m->id, "remove=failed error=\"%s\"", strerror(errno));
        msg_forget(q, m);
        return 1;
    }
    /* the results not yet written (job_done) are on disk before any
     * report they make due is queued, and reports are queued before the
     * states that made them due are saved as done: a crash in between
     * sends a report twice (or delivers twice), never not at all. A
     * message left with nothing to do is removed without those saves.
     * No reports while recipients are still due now (a deliverer without
     * room, local_concurrency 1): each such pause sent the failures so
     * far in a report of their own, one a recipient at concurrency 1 */
    if (m->dirty_ms && !all_finished(m->env)) save(q, m);
    int reported = due_now(m, now) ? 0 : qm_notify(q, m, now);
    if (all_finished(m->env)) {
        if (qm_msg_remove(q, m->id)) log_info(m->id, "removed=finished");
        else {
            log_error(m->id, "remove=failed error=\"%s\"", strerror(errno));
            save(q, m);     /* job_done may have left the results to this removal */
            if (m->unsaved) {
                /* neither removed nor its results saved: forgotten, the
                 * next scan of env/ would find the old envelope and
                 * deliver it again, at every scan while the fault lasts.
                 * Kept, finished, and both tried again */
                m->wake = now + QM_SAVE_RETRY;
                return 0;
            }
        }
        msg_forget(q, m);
        return 1;
    }
    if (reported || m->dirty_ms) save(q, m);
    update_wake(m, now);
    if (m->unsaved) {
        if (m->wake > now + QM_SAVE_RETRY || m->wake <= now) m->wake = now + QM_SAVE_RETRY;
        return 0;
    }
    msg_unload(m);
    return 0;
}

static int send_job(struct qm *q, struct qm_msg *m, size_t i, enum qm_chan ch, unsigned long long key,
                    int first)
{
    struct dp_job j;
    struct qm_job *qj;
    char rec[DP_RECORD_MAX];
    size_t len;
    const struct env_rcpt *r = &m->env->rcpt[i];
    memset(&j, 0, sizeof j);
    j.job = ++q->next_job;
    memcpy(j.id, m->id, sizeof j.id);
    snprintf(j.sender, sizeof j.sender, "%s", m->env->sender);
    snprintf(j.rcpt, sizeof j.rcpt, "%s", r->addr);
    j.birth = (long long)m->env->birth;
    snprintf(j.orcpt, sizeof j.orcpt, "%s", env_text(r->orcpt));
    envelope_notify_format(r->notify, j.notify, sizeof j.notify);
    snprintf(j.envid, sizeof j.envid, "%s", m->env->envid);
    snprintf(j.body, sizeof j.body, "%s", m->env->body_8bit ? "8BITMIME" : "7BIT");
    if (m->env->ret_hdrs || m->env->ret_given)      /* DSN RET, passed on by remote-deliverer */
        snprintf(j.ret, sizeof j.ret, "%s", m->env->ret_hdrs ? "HDRS" : "FULL");
    j.smtputf8 = m->env->smtputf8;      /* for remote-deliverer (RFC 6531) */
    if (!dp_job_encode(&j, rec, sizeof rec, &len)) return 0;
    if (!(qj = calloc(1, sizeof *qj))) return 0;
    int fd = qm_msg_open(q, m->id);
    if (fd < 0) { free(qj); return 0; }
    int ok = dp_send(q->chan[ch].sock, rec, len, fd);
    int e = errno;
    close(fd);
    if (!ok) { free(qj); errno = e; return 0; }
    qj->id = j.job;
    qj->m = m;
    qj->rcpt = i;
    qj->chan = ch;
    qj->key = key;
    qj->first = first;
    qj->next = q->jobs;
    q->jobs = qj;
    m->busy[i] = 1;
    m->inflight++;
    q->chan[ch].inflight++;
    return 1;
}

/* Times written by a clock that has since gone back (or by an operator's
 * edit): a birth ahead of now never expired, since the lifetime counts
 * from birth and the age stayed 0 (and one past 9e18 could not even be
 * sent to a deliverer); a next_try further ahead than any retry is
 * scheduled (RETRY_GAP_MAX) stalled its recipient until the clock caught
 * up. Such a birth becomes now (the message lives its lifetime from here),
 * such a next_try now (due; dispatch_msg's loop). Returns 1 if the birth
 * changed. */
#define QM_CLOCK_SLACK 60
static int birth_ahead(struct qm_msg *m, time_t now)
{
    struct envelope *e = m->env;
    if (e->birth <= now + QM_CLOCK_SLACK) return 0;
    log_warn(m->id, "birth=%lld error=\"in the future\" action=\"counted from now\"", (long long)e->birth);
    e->birth = now;
    return 1;
}

static void dispatch_msg(struct qm *q, struct qm_msg *m, time_t now)
{
    int changed = 0, waiting = 0, mixed = 0;
    unsigned long long held = 0;
    if (!msg_load(q, m)) {
        if (errno == ENOENT && !m->inflight) {
            /* removed by hand: envelopes are replaced by rename and
             * unlinked only when finished, so it is gone for good */
            log_warn(m->id, "envelope=gone action=forgotten");
            msg_forget(q, m);
            return;
        }
        log_error(m->id, "envelope=unusable error=\"%s\" retry=600s", strerror(errno));
        m->wake = now + 600;
        /* a flush asked for this one try: left set, qm_dispatch tried it
         * again at once, each turn of the loop, for as long as it stayed
         * unusable (a CPU spun, ~2,000 log lines a second) */
        m->flush = 0;
        m->waiting = 0;
        return;
    }
    if (m->unsaved) save(q, m);
    changed = birth_ahead(m, now);
    for (size_t i = 0; i < m->env->nrcpt; i++) {
        struct env_rcpt *r = &m->env->rcpt[i];
        if (!env_rcpt_pending(r->state) || m->busy[i]) continue;
        if (r->next_try > now + RETRY_GAP_MAX) {     /* see birth_ahead */
            char a[ENV_ADDR_MAX * 4 + 8];
            log_warn(m->id, "rcpt=%s next_try=%lld error=\"further ahead than any retry\" action=\"due now\"",
                     log_safe(a, sizeof a, r->addr, strlen(r->addr)), (long long)r->next_try);
            r->next_try = now;
            changed = 1;
        }
        if (!m->flush && r->next_try > now) continue;
        enum qm_chan ch = rcpt_chan(q, r->addr);
        struct qm_channel *c = &q->chan[ch];
        if (c->sock < 0) {
            apply(q, m, i, DP_TEMPORARY, NULL, ch == QM_REMOTE ? "4.4.1 remote delivery not available"
                                                         : "4.3.0 local delivery not available", now);
            changed = 1;
            continue;
        }
        if (c->inflight >= c->max || c->full) { waiting |= 1 << ch; mixed = 1; continue; }
        unsigned long long key = dest_key(ch, r->addr);
        int joins;
        if (key_saturated(q, ch, key, m, &joins)) {
            /* this user or domain has its share of the deliverer already */
            waiting |= 1 << ch;
            if (held && (held != key || m->held_chan != ch)) mixed = 1;
            held = key;
            m->held_chan = ch;
            continue;
        }
        if (!send_job(q, m, i, ch, key, !joins)) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                /* the deliverer has not read its jobs yet: not an
                 * attempt; sent once a result shows it reads again */
                c->full = 1;
                waiting |= 1 << ch;
                mixed = 1;
                continue;
            }
            if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) {
                /* the deliverer is gone: not an attempt, so no retry delay for
                 * this or any other due message; dispatch stops here and the
                 * poll loop sees its EOF (qm_channel_dead, exit 111) */
                char a[ENV_ADDR_MAX * 4 + 8];
                log_error(m->id, "rcpt=%s job=not-sent deliverer=%s error=\"%s\"",
                          log_safe(a, sizeof a, r->addr, strlen(r->addr)), c->name, strerror(errno));
                q->dead = 1;
                break;
            }
            char a[ENV_ADDR_MAX * 4 + 8];
            log_error(m->id, "rcpt=%s job=not-sent error=\"%s\"", log_safe(a, sizeof a, r->addr, strlen(r->addr)),
                      strerror(errno));
            apply(q, m, i, DP_TEMPORARY, NULL, "4.3.0 cannot hand the message to the deliverer", now);
            changed = 1;
        }
    }
    m->flush = 0;
    if (changed) save(q, m);
    if (!m->inflight && round_end(q, m, now)) return;
    if (m->inflight) update_wake(m, now);
    /* due but blocked: looked at again as soon as a deliverer has room
     * (qm_dispatch), or in a minute at the latest */
    m->waiting = waiting;
    /* waiting for nothing but the jobs of one user or domain to end:
     * qm_dispatch passes it by (without loading it) until one has */
    m->held = waiting && !mixed ? held : 0;
    if (waiting && m->wake <= now) m->wake = now + 60;
}

/* bit c set: deliverer c exists and has room for another job */
static int room(const struct qm *q)
{
    int mask = 0;
    for (int c = 0; c < QM_NCHAN; c++)
        if (q->chan[c].sock >= 0 && q->chan[c].inflight < q->chan[c].max && !q->chan[c].full) mask |= 1 << c;
    return mask;
}

void qm_dispatch(struct qm *q, time_t now)
{
    if (q->stopping || q->dead) return;
    struct qm_msg *next;
    unsigned long long held_key = 0, held_job = 0;
    enum qm_chan held_chan = QM_LOCAL;
    int held_sat = 0;
    for (struct qm_msg *m = q->msgs; m; m = next) {
        next = m->next;          /* dispatch_msg may forget m */
        if (q->dead) return;     /* dispatch_msg found a deliverer gone */
        if (m->delete_req) continue;
        int free_chans = room(q);
        if (!free_chans) return;   /* nothing can be sent: load nothing */
        if (!m->flush && m->wake > now && !(m->waiting & free_chans)) continue;
        if (!m->flush && m->wake > now && m->held && !m->inflight) {
            /* a backlog for one user or domain: its saturation counted
             * once a pass (until a job is sent), not once per message */
            if (m->held != held_key || m->held_chan != held_chan || q->next_job != held_job) {
                held_key = m->held;
                held_chan = m->held_chan;
                held_job = q->next_job;
                held_sat = key_saturated(q, held_chan, held_key, NULL, NULL);
            }
            if (held_sat) continue;
        }
        dispatch_msg(q, m, now);
    }
}

static struct qm_job *job_take(struct qm *q, unsigned long long id, enum qm_chan ch)
{
    for (struct qm_job **pp = &q->jobs; *pp; pp = &(*pp)->next)
        if ((*pp)->id == id && (*pp)->chan == ch) {
            struct qm_job *j = *pp;
            *pp = j->next;
            return j;
        }
    return NULL;
}

static void job_done(struct qm *q, struct qm_job *j, enum dp_status st, const char *action, const char *text,
                     time_t now)
{
    struct qm_msg *m = j->m;
    m->busy[j->rcpt] = 0;
    m->inflight--;
    q->chan[j->chan].inflight--;
    if (!m->delete_req) {
        apply(q, m, j->rcpt, st, action, text, now);
        /* durable before the round ends: while jobs of m are in flight
         * the envelope is rewritten at most QM_SAVE_DELAY_MS after the
         * first result not yet written, once for all of them (here or by
         * qm_save_due; one rewrite a result, of an n-recipient file, made
         * n recipients cost O(n^2)); at the round's end round_end
         * rewrites it, or, when this result finishes the message with
         * nothing left to report, removes it (unlink + fsync env/<h>)
         * without the rewrite. A crash meanwhile delivers those
         * recipients again, never loses them (the qmail trade-off) */
        mark_dirty(q, m);
        if (m->inflight && io_now_ms() - m->dirty_ms >= QM_SAVE_DELAY_MS) save(q, m);
    }
    free(j);
    if (!m->inflight) round_end(q, m, now);
}

void qm_result(struct qm *q, enum qm_chan ch, const char *rec, size_t len, time_t now)
{
    struct dp_result r;
    if (!dp_result_decode(&r, rec, len)) {
        log_error(NULL, "deliverer=%s error=\"answered nonsense\" action=restart", q->chan[ch].name);
        qm_channel_dead(q, ch, now);
        return;
    }
    struct qm_job *j = job_take(q, r.job, ch);
    if (!j) { log_warn(NULL, "deliverer=%s job=%llu error=\"unknown job\" action=ignored", q->chan[ch].name, r.job); return; }
    job_done(q, j, r.status, r.action, r.text, now);
}

void qm_channel_dead(struct qm *q, enum qm_chan ch, time_t now)
{
    struct qm_channel *c = &q->chan[ch];
    if (c->sock >= 0) close(c->sock);
    c->sock = -1;
    q->dead = 1;
    for (;;) {
        struct qm_job *j = NULL;
        for (struct qm_job *k = q->jobs; k; k = k->next)
            if (k->chan == ch) { j = k; break; }
        if (!j) break;
        job_take(q, j->id, ch);
        job_done(q, j, DP_TEMPORARY, NULL, "4.3.0 deliverer died", now);
    }
}

void qm_delete(struct qm *q, const char *id, time_t now)
{
    struct qm_msg *m = qm_find(q, id);
    if (!m) {
        if (qm_msg_remove(q, id)) log_info(id, "removed=operator-request");
        else log_warn(id, "remove=failed error=\"%s\"", strerror(errno));
        return;
    }
    m->delete_req = 1;
    if (!m->inflight) round_end(q, m, now);
    else log_info(id, "remove=after-deliveries-in-flight");
}

void qm_flush(struct qm *q)
{
    for (struct qm_msg *m = q->msgs; m; m = m->next) {
        m->flush = 1;
        m->wake = 0;
    }
}

time_t qm_next_wake(const struct qm *q)
{
    time_t w = (time_t)-1;
    for (const struct qm_msg *m = q->msgs; m; m = m->next) {
        if (m->delete_req) continue;
        time_t t = m->flush ? 0 : m->wake;
        if (w == (time_t)-1 || t < w) w = t;
    }
    return w;
}

long long qm_save_due(struct qm *q, int all)
{
    long long t = io_now_ms(), next = -1;
    if (!q->ndirty) return -1;
    for (struct qm_msg *m = q->msgs; m && q->ndirty; m = m->next) {
        if (!m->dirty_ms) continue;
        long long due = m->dirty_ms + QM_SAVE_DELAY_MS;
        if (all || t >= due) {
            save(q, m);
            if (!m->inflight && !m->unsaved) msg_unload(m);    /* as round_end would have */
        } else if (next < 0 || due < next) next = due;
    }
    return next;
}

unsigned qm_inflight(const struct qm *q)
{
    return q->chan[QM_LOCAL].inflight + q->chan[QM_REMOTE].inflight;
}
