/* deliver_proto.h - the framed records between queue-manager and its
 * deliverers (docs/INTERFACES.md "queue-manager and its deliverers"): one
 * SOCK_SEQPACKET datagram per record, at most DP_RECORD_MAX bytes, made of
 * NUL-terminated fields "<letter><value>\0". A job carries the message file's
 * fd by SCM_RIGHTS. The decoder checks it got exactly one whole record, refuses
 * unknown or repeated letters, and bounds every field. */
#ifndef POSTERN_DELIVER_PROTO_H
#define POSTERN_DELIVER_PROTO_H

#include <stddef.h>
#include <sys/types.h>

#define DP_RECORD_MAX 8192
#define DP_ADDR_MAX 256      /* sender / recipient */
#define DP_FIELD_MAX 1024    /* orcpt, envid, status text */
#define DP_ID_LEN 16         /* queue id: 16 upper-case hex digits */

struct dp_job {
    unsigned long long job;          /* J */
    char id[DP_ID_LEN + 1];          /* M */
    char sender[DP_ADDR_MAX + 1];    /* F, "" for <> */
    char rcpt[DP_ADDR_MAX + 1];      /* R */
    long long birth;                 /* T */
    char orcpt[DP_FIELD_MAX + 1];    /* O, optional */
    char notify[64];                 /* N, optional */
    char envid[DP_FIELD_MAX + 1];    /* V, optional */
    char body[16];                   /* B, optional: 7BIT / 8BITMIME */
    char ret[8];                     /* E, optional: DSN RET, FULL / HDRS */
    int smtputf8;                    /* U1, optional: the sender gave SMTPUTF8 (RFC 6531) */
};

enum dp_status { DP_SUCCESS = 's', DP_TEMPORARY = 't', DP_PERMANENT = 'p' };

/* What a success was, for the DSN a NOTIFY=SUCCESS recipient gets (RFC
 * 3464 2.3.3; RFC 3461 5.2 on relaying and on aliases): A absent = delivered to a mailbox. */
#define DP_ACTION_EXPANDED "expanded"   /* an alias: several mailboxes and forwards */
#define DP_ACTION_RELAYED "relayed"     /* to a next hop without DSN */
#define DP_ACTION_PASSED "passed"       /* to a next hop with DSN, NOTIFY passed on: no report from us */
#define DP_ACTION_MAX 15

struct dp_result {
    unsigned long long job;          /* J */
    enum dp_status status;           /* S */
    char text[DP_FIELD_MAX + 1];     /* X: "5.1.1 no such user" */
    char action[DP_ACTION_MAX + 1];  /* A, optional, only with S s: one of DP_ACTION_* */
};

/* Encode into out[0..cap): 1 and *len, or 0 with errno EINVAL (a field holds
 * CR/LF, is empty where required or too long) or EMSGSIZE (record too big). */
int dp_job_encode(const struct dp_job *j, char *out, size_t cap, size_t *len);
int dp_result_encode(const struct dp_result *r, char *out, size_t cap, size_t *len);

/* Decode exactly one record rec[0..len): 1, or 0 with errno EPROTO. */
int dp_job_decode(struct dp_job *j, const char *rec, size_t len);
int dp_result_decode(struct dp_result *r, const char *rec, size_t len);

/* The reload record (queue-manager -> deliverer, after queue-manager's own
 * successful SIGHUP reload): exactly one field, the letter H with an empty
 * value ("H\0", 2 bytes), no fd. Jobs never use H. encode: 1 and *len, or 0
 * with errno EMSGSIZE (cap < 2). decode: 1 if rec[0..len) is exactly that
 * record, else 0 with errno EPROTO (a value, another field, a repeat...). */
#define DP_RELOAD_LEN 2
int dp_reload_encode(char *out, size_t cap, size_t *len);
int dp_reload_decode(const char *rec, size_t len);

/* The mailbox job (local-deliverer's root process -> one of its mailbox
 * workers, a child running as uid:gid; docs/ARCHITECTURE.md): what one
 * Maildir delivery needs, the message fd attached by SCM_RIGHTS. The worker
 * answers with a result record (dp_send_result) carrying the same J. Fields:
 * J M F R as in a job, U<uid> G<gid> (never 0), D<maildir> L<hostname for
 * the file name> Q<quota bytes, 0 = none>, all required (F may be empty). */
#define DP_PATH_MAX 4095     /* a Maildir path */
#define DP_HOST_MAX 255      /* hostname */

struct dp_mbox {
    unsigned long long job;          /* J */
    char id[DP_ID_LEN + 1];          /* M */
    char sender[DP_ADDR_MAX + 1];    /* F, "" for <> */
    char rcpt[DP_ADDR_MAX + 1];      /* R */
    uid_t uid;                       /* U */
    gid_t gid;                       /* G */
    char maildir[DP_PATH_MAX + 1];   /* D */
    char host[DP_HOST_MAX + 1];      /* L */
    unsigned long long quota;        /* Q */
};

/* as dp_job_encode/decode; uid or gid 0 is refused both ways */
int dp_mbox_encode(const struct dp_mbox *m, char *out, size_t cap, size_t *len);
int dp_mbox_decode(struct dp_mbox *m, const char *rec, size_t len);

/* A deliverer's answer: encode a result (text cut to DP_FIELD_MAX) and send
 * it. 1, or 0 with errno. */
int dp_send_result(int sock, unsigned long long job, enum dp_status s, const char *text);
/* the same with a success's action (NULL or "" for none) */
int dp_send_result_action(int sock, unsigned long long job, enum dp_status s, const char *action,
                          const char *text);
/* 1 if a is "" or one of DP_ACTION_* */
int dp_action_valid(const char *a);

/* Send one record, with fd attached when fd >= 0. 1, or 0 with errno. */
int dp_send(int sock, const char *rec, size_t len, int fd);
/* Receive one record into rec (cap >= DP_RECORD_MAX). *fd gets an attached
 * descriptor (close-on-exec) or -1. 0 with errno EPIPE at end of stream,
 * EMSGSIZE for a record over DP_RECORD_MAX (or truncated), EPROTO if more
 * than one descriptor came (all are closed); EAGAIN/EINTR passed through. */
int dp_recv(int sock, char *rec, size_t cap, size_t *len, int *fd);

#endif
