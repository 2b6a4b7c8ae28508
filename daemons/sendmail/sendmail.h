/* sendmail.h - sendmail's work: read the message, fix up its header, run
 * queue-inject with it. */
#ifndef POSTERN_SENDMAIL_H
#define POSTERN_SENDMAIL_H

#include <stddef.h>
#include <stdio.h>

#define SM_EX_USAGE 64
#define SM_EX_DATAERR 65
#define SM_EX_TEMPFAIL 75
#define SM_HEADER_MAX (1u << 20)   /* bytes of header section kept in memory */

struct sm_opts {
    int from_headers;       /* -t */
    int no_dot;             /* -i / -oi: a lone "." is just a line */
    const char *sender;     /* -f / -r */
    const char *fullname;   /* -F */
    const char *root;       /* -C, $POSTERN_ROOT, or our own location */
    char **rcpt;            /* command-line recipients */
    size_t nrcpt;
    /* DSN (RFC 3461), as Postfix's sendmail takes them */
    char notify[40];        /* -N: every recipient's NOTIFY ("" default, "NEVER", ...) */
    const char *ret;        /* -R: "FULL", "HDRS" or NULL */
    char envid[101];        /* -V: ENVID, xtext-encoded ("" none) */
};

/* the whole job; returns the exit code */
int sm_run(const struct sm_opts *o, FILE *in);
/* -bs: an SMTP dialogue on stdin/stdout (bs.c); returns the exit code */
int sm_smtp(const char *root);

#endif
