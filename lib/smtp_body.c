/* smtp_body.c - stream a message body to queue-inject, CRLF -> LF. */
#include "smtp_body.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <strings.h>

void smtp_body_init(struct smtp_msgbody *b, int fd, unsigned long long max_size, int timeout_ms)
{
    memset(b, 0, sizeof *b);
    b->fd = fd;
    b->max_size = max_size;
    b->timeout_ms = timeout_ms;
    b->in_headers = 1;
}

static void body_flush(struct smtp_msgbody *b)
{
    if (b->len && b->fd >= 0 && !b->write_failed &&
        !fd_write_all(b->fd, b->buf, b->len, b->timeout_ms))
        b->write_failed = 1;
    b->len = 0;
}

/* n more of the client's octets, as RFC 1870 counts them */
static void body_count(struct smtp_msgbody *b, unsigned long long n)
{
    b->octets = n > ULLONG_MAX - b->octets ? ULLONG_MAX : b->octets + n;
    if (b->octets > b->max_size) b->too_big = 1;
}

/* while a header line may still turn out not to be a field, its octets
 * stay in buf (from line_start), so that the blank line can go before it */
static int holding(const struct smtp_msgbody *b)
{
    return b->in_headers && (b->line_kind == 0 || b->line_kind == 3);
}

/* room for n more octets in buf: flush it, all but the line if hold */
static void body_room(struct smtp_msgbody *b, size_t n, int hold)
{
    if (b->len + n <= sizeof b->buf) return;
    if (!hold) { body_flush(b); return; }
    size_t held = b->len - b->line_start;
    b->len = b->line_start;
    body_flush(b);
    memmove(b->buf, b->buf + b->line_start, held);
    b->line_start = 0;
    b->len = held;
}

static void body_put(struct smtp_msgbody *b, unsigned char c)
{
    b->size++;
    if (b->too_big) return;
    body_room(b, 1, holding(b));
    b->buf[b->len++] = c;
}

int smtp_body_add_missing(struct smtp_msgbody *b, const char *date, const char *msgid, const char *from)
{
    const char *v[SMTP_BODY_NADD] = { date, msgid, from };
    for (int i = 0; i < SMTP_BODY_NADD; i++) {
        size_t n = v[i] ? strlen(v[i]) : 0;
        if (n >= sizeof b->add[i]) { errno = EINVAL; return 0; }
        for (size_t k = 0; k < n; k++)
            if ((unsigned char)v[i][k] < 0x20 && v[i][k] != '\t') { errno = EINVAL; return 0; }
    }
    for (int i = 0; i < SMTP_BODY_NADD; i++) {
        size_t n = v[i] ? strlen(v[i]) : 0;
        memcpy(b->add[i], v[i] ? v[i] : "", n);
        b->add[i][n] = 0;
    }
    return 1;
}

/* the field name so far (prefix) is a whole name we look for */
static void note_field(struct smtp_msgbody *b)
{
    static const struct { const char *name; int add; } names[] = {
        { "received:", -1 }, { "date:", SMTP_BODY_DATE }, { "message-id:", SMTP_BODY_MSGID },
        { "from:", SMTP_BODY_FROM },
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strlen(names[i].name) != b->prefix_len || strncasecmp(b->prefix, names[i].name, b->prefix_len))
            continue;
        if (names[i].add < 0) b->hops++;
        else b->add[names[i].add][0] = 0;    /* present: nothing to add */
        if (names[i].add == SMTP_BODY_MSGID && b->msgid_state == 0) b->msgid_state = 1;
    }
}

/* header section: what the line is, from its first octets: a field
 * ("name:", the name printable ASCII, white space before the colon allowed
 * as RFC 5322's obsolete syntax has it, the colon among the first
 * SMTP_BODY_NAME_MAX octets), a continuation (starts with white space,
 * after a field), or neither. line_kind 0: in the name, 3: white space
 * after the name, 1: a field or continuation, 2: neither */
static void note_kind(struct smtp_msgbody *b, unsigned char c)
{
    if (b->line_kind == 1 || b->line_kind == 2) return;
    if (b->line_len == 0 && (c == ' ' || c == '\t')) b->line_kind = b->fields ? 1 : 2;
    else if (c == ':') b->line_kind = b->line_len ? 1 : 2;
    else if (b->line_len + 1 >= SMTP_BODY_NAME_MAX) b->line_kind = 2;
    else if ((c == ' ' || c == '\t') && b->line_len) b->line_kind = 3;
    else if (c <= ' ' || c >= 0x7f || b->line_kind == 3) b->line_kind = 2;
    if (b->line_kind == 1 && c == ':') b->fields = 1;
}

/* the missing fields, each with its line end, into out (room for
 * SMTP_BODY_NADD * SMTP_BODY_ADD_MAX); none are missing afterwards */
static size_t render_missing(struct smtp_msgbody *b, char *out)
{
    size_t n = 0;
    for (int i = 0; i < SMTP_BODY_NADD; i++) {
        size_t k = strlen(b->add[i]);
        if (!k) continue;
        memcpy(out + n, b->add[i], k);
        n += k;
        out[n++] = '\n';
        b->add[i][0] = 0;
    }
    return n;
}

/* ins[0..n) in front of the header line held in buf (from line_start);
 * not the client's octets. A line that started past max_size is not
 * stored, and neither is what goes before it. */
static void insert_before_line(struct smtp_msgbody *b, const char *ins, size_t n)
{
    b->size += n;
    if (b->line_cut) return;
    body_room(b, n, 1);
    memmove(b->buf + b->line_start + n, b->buf + b->line_start, b->len - b->line_start);
    memcpy(b->buf + b->line_start, ins, n);
    b->len += n;
}

/* a header line that is not a field ends the header section: the missing
 * fields and a blank line go before it, as Postfix's cleanup puts a blank
 * line there, so that the line and the rest are read as the body and not
 * as part of the header (nor as a continuation of the Received: field in
 * front of a message that starts with white space). */
static void header_ends(struct smtp_msgbody *b)
{
    char ins[SMTP_BODY_NADD * SMTP_BODY_ADD_MAX + 1];
    size_t n = render_missing(b, ins);
    ins[n++] = '\n';
    b->in_headers = 0;
    insert_before_line(b, ins, n);
}

/* A message whose first line is an mbox "From " line (a message taken
 * from an mbox file and sent as it was) keeps that line as the field
 * "X-Mailbox-Line: From ...", as Postfix's cleanup does: taken for the
 * first line of the body, it made every field after it body text, and the
 * recipient saw a message without Subject or From. */
static void mbox_line(struct smtp_msgbody *b)
{
    static const char tag[] = SMTP_BODY_MBOX_TAG;
    b->line_kind = 1;
    b->fields = 1;
    insert_before_line(b, tag, sizeof tag - 1);
}

/* a header line turned out not to be a field: the first line, if it is an
 * mbox "From " line, becomes one; any other ends the header section */
static void not_a_field(struct smtp_msgbody *b)
{
    if (!b->fields && b->prefix_len >= 5 && !memcmp(b->prefix, "From ", 5)) mbox_line(b);
    else header_ends(b);
}

/* the Message-ID field's value, octet by octet: its first line after the
 * name, then its continuation lines */
static void note_msgid(struct smtp_msgbody *b, unsigned char c, int is_name)
{
    if (b->msgid_state == 2)
        b->msgid_state = b->line_len == 0 && (c == ' ' || c == '\t') ? 1 : 3;
    if (b->msgid_state != 1 || is_name) return;
    if (c > ' ' && c < 0x7f && c != '"' && c != '\\' && b->msgid_len < SMTP_BODY_MSGID_MAX)
        b->msgid[b->msgid_len++] = (char)c;
}

/* octets of one line (no line end) */
static void body_text(struct smtp_msgbody *b, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (b->in_headers) {
            int is_name = b->line_kind != 1;    /* not yet past the name's colon */
            note_kind(b, (unsigned char)p[i]);
            if (b->line_kind == 2) {
                not_a_field(b);
            } else if (b->prefix_len < sizeof b->prefix) {
                b->prefix[b->prefix_len++] = p[i];
                note_field(b);
            }
            if (b->in_headers) note_msgid(b, (unsigned char)p[i], is_name);
        }
        body_count(b, 1);
        body_put(b, (unsigned char)p[i]);
        b->line_len++;
    }
}

/* the fields still missing, each with its line end; they are not the
 * client's octets, so they do not count against max_size (body_count) */
static void add_missing(struct smtp_msgbody *b)
{
    char out[SMTP_BODY_NADD * SMTP_BODY_ADD_MAX];
    size_t n = render_missing(b, out);
    for (size_t i = 0; i < n; i++) {
        if (b->len == sizeof b->buf) body_flush(b);
        b->buf[b->len++] = (unsigned char)out[i];
        b->size++;
    }
}

/* a line end, which took sent octets (2 for CRLF) of the client's; stored as LF */
static void body_eol(struct smtp_msgbody *b, unsigned sent)
{
    body_count(b, sent);
    if (b->in_headers) {
        if (b->line_len == 0) {          /* the blank line: the header section ends */
            add_missing(b);
            b->in_headers = 0;
        } else if (b->line_kind != 1) {  /* a line that is not a field */
            not_a_field(b);
        }
    }
    body_put(b, '\n');
    if (b->msgid_state == 1) b->msgid_state = 2;
    b->line_len = 0;
    b->prefix_len = 0;
    b->line_kind = 0;
    b->line_start = b->len;
    b->line_cut = b->too_big;
}

void smtp_body_line(struct smtp_msgbody *b, const char *p, size_t n, enum io_eol eol)
{
    body_text(b, p, n);
    if (eol == IO_EOL_NONE) return;
    if (eol == IO_EOL_LF) b->bare_lf = 1;
    else if (eol == IO_EOL_CR) b->bare_cr = 1;
    body_eol(b, eol == IO_EOL_CRLF ? 2 : 1);
}

void smtp_body_octets(struct smtp_msgbody *b, const char *p, size_t n)
{
    size_t i = 0;
    if (b->pending_cr && n) {
        b->pending_cr = 0;
        if (p[0] == '\n') { body_eol(b, 2); i = 1; }
        else { b->bare_cr = 1; body_eol(b, 1); }
    }
    while (i < n) {
        size_t s = i;
        while (i < n && p[i] != '\r' && p[i] != '\n') i++;
        body_text(b, p + s, i - s);
        if (i == n) break;
        if (p[i] == '\n') { b->bare_lf = 1; body_eol(b, 1); i++; continue; }
        /* CR: a line end only with LF right after it */
        if (i + 1 == n) { b->pending_cr = 1; i++; break; }
        if (p[i + 1] == '\n') { body_eol(b, 2); i += 2; }
        else { b->bare_cr = 1; body_eol(b, 1); i++; }
    }
}

int smtp_body_finish(struct smtp_msgbody *b)
{
    if (b->pending_cr) { b->pending_cr = 0; b->bare_cr = 1; body_eol(b, 1); }
    if (b->line_len) body_eol(b, 0);     /* the LF it lacked: not the client's */
    if (b->in_headers && !b->too_big) add_missing(b);     /* a message that is all header */
    body_flush(b);
    return !b->write_failed;
}
