/* sendmail - the interface local programs use to send mail:
 *   sendmail [-t] [-i] [-oi] [-f sender] [-F name] [-C ROOT] [-N dsn] [-R ret]
 *            [-V envid] [--] [rcpt ...]
 * (flags may run together: -ti, -tif sender; and, ignored: -oX, -B 7BIT|8BITMIME, -h, -U, -n, -m, -bm, -v)
 * reads the message on stdin (a lone "." line ends it unless -i/-oi),
 * converts CRLF to LF, adds Date:/Message-ID:/From: if missing, with -t
 * takes recipients from To:/Cc:/Bcc: and removes Bcc:, and hands it all to
 * ROOT/bin/queue-inject. Exit 0 once committed, 75 temporary failure,
 * 64 usage, 65 bad data (addresses). ROOT: -C, else $POSTERN_ROOT, else
 * dirname(dirname(this program)).
 * The queue modes operators and scripts call sendmail for run
 * ROOT/bin/postern-queue, with the caller's own rights: -bp (or the name
 * mailq) lists the queue, -q flushes it; -bi or -I (or the name newaliases) has
 * nothing to rebuild (conf/aliases is read as it is) and says so. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum sm_mode { SM_QUEUE_MAIL, SM_LIST, SM_FLUSH, SM_NEWALIASES, SM_SMTP };

#include "envelope.h"
#include "sendmail.h"
#include "queue_path.h"
#include "smtp_addr.h"

static _Noreturn void usage(const char *why)
{
    fprintf(stderr, "sendmail: %s\nusage: sendmail [-t] [-i] [-oi] [-f sender] [-F name] "
                    "[-C ROOT] [--] [recipient ...]\n", why);
    exit(SM_EX_USAGE);
}

/* the value of option letter a[1]: the rest of a, else the next argument */
static const char *value(int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    const char *v = a[2] ? a + 2 : (*i + 1 < argc ? argv[++*i] : NULL);
    if (!v) usage("option needs a value");
    return v;
}

/* -N never, or a list of success, delay and failure (any case) */
static void dsn_notify(const char *v, struct sm_opts *o)
{
    unsigned bits;
    if (!*v || !envelope_notify_parse(v, strlen(v), &bits) || !envelope_notify_format(bits, o->notify, sizeof o->notify))
        usage("-N takes never, or a list of success, delay and failure");
}

/* -V: printable ASCII (RFC 3461 4.4), kept as the xtext ENVID= carries */
static void dsn_envid(const char *v, struct sm_opts *o)
{
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e) usage("-V takes printable ASCII");
    if (!*v || !smtp_xtext(v, o->envid, sizeof o->envid)) usage("-V: at most 100 octets as xtext");
}

/* option letters: what callers such as cron ("-FCronDaemon -i -B8BITMIME
 * -oem root"), mailx and PHP pass is understood or harmlessly ignored; the
 * modes we do not implement are refused, clearly */
static void parse_args(int argc, char **argv, struct sm_opts *o, enum sm_mode *mode)
{
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) { i++; break; }
        if (a[1] && a[2] && strchr("tivUnmG", a[1])) {   /* flags run together, as getopt(3) takes them: -it, -tif sender */
            if (a[1] == 't') o->from_headers = 1;
            if (a[1] == 'i') o->no_dot = 1;
            argv[i]++;
            argv[i][0] = '-';   /* the rest, an option of its own */
            i--;
            continue;
        }
        if (!strcmp(a, "-t")) o->from_headers = 1;
        else if (!strcmp(a, "-i") || !strcmp(a, "-oi")) o->no_dot = 1;
        else if (!strcmp(a, "-bm") || !strcmp(a, "-v") || !strcmp(a, "-U") || !strcmp(a, "-n")
                 || !strcmp(a, "-m") || !strcmp(a, "-G") || !strcmp(a, "-Am") || !strcmp(a, "-Ac")
                 || (a[1] == 'o' && a[2]))
            continue;     /* delivery, error and other -o modes; submission, gateway and config flags */
        else if (a[1] == 'L' || a[1] == 'O' || a[1] == 'X')
            (void)value(argc, argv, &i);   /* a log tag, a sendmail.cf option, a traffic log: ignored */
        else if (a[1] == 'f' || a[1] == 'r') o->sender = value(argc, argv, &i);
        else if (a[1] == 'F') o->fullname = value(argc, argv, &i);
        else if (a[1] == 'C') o->root = value(argc, argv, &i);
        else if (a[1] == 'B') {
            const char *v = value(argc, argv, &i);
            if (strcasecmp(v, "7BIT") && strcasecmp(v, "8BITMIME")) usage("-B takes 7BIT or 8BITMIME");
        } else if (a[1] == 'N') {
            dsn_notify(value(argc, argv, &i), o);
        } else if (a[1] == 'R') {
            const char *v = value(argc, argv, &i);
            if (!strcasecmp(v, "full")) o->ret = "FULL";
            else if (!strcasecmp(v, "hdrs")) o->ret = "HDRS";
            else usage("-R takes full or hdrs");
        } else if (a[1] == 'V') {
            dsn_envid(value(argc, argv, &i), o);
        } else if (a[1] == 'h') {
            (void)value(argc, argv, &i);   /* hop count: not kept */
        } else if (!strcmp(a, "-bp")) {
            *mode = SM_LIST;
        } else if (!strcmp(a, "-q")) {
            *mode = SM_FLUSH;
        } else if (!strcmp(a, "-bi") || !strcmp(a, "-I")) {
            *mode = SM_NEWALIASES;
        } else if (!strcmp(a, "-bs")) {
            *mode = SM_SMTP;
        } else if (!strncmp(a, "-b", 2) || !strncmp(a, "-q", 2)) {
            fprintf(stderr, "sendmail: %s: not supported: postern's sendmail queues mail, from its "
                            "input or an SMTP dialogue (-bs); the daemon is smtp-listener, the queue "
                            "postern-queue\n", a);
            exit(SM_EX_USAGE);
        } else {
            fprintf(stderr, "sendmail: unsupported option %s\n", a);
            exit(SM_EX_USAGE);
        }
    }
    o->rcpt = argv + i;
    o->nrcpt = (size_t)(argc - i);
}

/* -bp / -q: postern-queue list / flush, as the caller */
static _Noreturn void run_queue_tool(const char *root, const char *cmd)
{
    char prog[PATH_MAX];
    if (snprintf(prog, sizeof prog, "%s/bin/postern-queue", root) >= (int)sizeof prog) {
        fprintf(stderr, "sendmail: ROOT too long\n");
        exit(SM_EX_USAGE);
    }
    char *const args[] = { (char *)"postern-queue", (char *)"--root", (char *)root, (char *)cmd, NULL };
    execv(prog, args);
    fprintf(stderr, "sendmail: cannot run %s: %s\n", prog, strerror(errno));
    exit(SM_EX_TEMPFAIL);
}

/* fds 0..2 must be open: a caller may close stdout and stderr (GNU
 * mailutils' mail does), and then the pipes to queue-inject take fds 1 and
 * 2, where setting up its fd 0 and 1 would close one of them again */
static void fds_sane(void)
{
    for (int fd = 0; fd <= 2; fd++)
        if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) != fd) exit(SM_EX_TEMPFAIL);
}

int main(int argc, char **argv)
{
    struct sm_opts o = { 0 };
    char root[PATH_MAX];
    enum sm_mode mode = SM_QUEUE_MAIL;

    fds_sane();
    signal(SIGPIPE, SIG_IGN);
    /* a caller that ignores SIGCHLD (a Perl or Python program that reaps
     * no children; swaks --pipe) hands that over through exec, and then
     * waitpid for queue-inject fails with ECHILD: a queued message would be
     * reported as a temporary failure, and sent again */
    signal(SIGCHLD, SIG_DFL);
    const char *name = argc > 0 ? strrchr(argv[0], '/') : NULL;
    name = name ? name + 1 : argc > 0 ? argv[0] : "";
    if (!strcmp(name, "mailq")) mode = SM_LIST;
    if (!strcmp(name, "newaliases")) mode = SM_NEWALIASES;
    parse_args(argc, argv, &o, &mode);
    if (mode == SM_NEWALIASES) {
        fprintf(stderr, "sendmail: nothing to rebuild: postern reads ROOT/conf/aliases as it is "
                        "at each delivery\n");
        return 0;
    }
    if (mode != SM_QUEUE_MAIL && o.nrcpt) usage("-bp, -bs and -q take no recipients");
    if (!o.root) o.root = getenv("POSTERN_ROOT");
    if (!o.root || !*o.root) {
        if (!queue_root_from_exe(root, sizeof root)) {
            fprintf(stderr, "sendmail: cannot find ROOT (use -C ROOT)\n");
            return SM_EX_TEMPFAIL;
        }
        o.root = root;
    }
    if (mode == SM_LIST) run_queue_tool(o.root, "list");
    if (mode == SM_FLUSH) run_queue_tool(o.root, "flush");
    if (mode == SM_SMTP) return sm_smtp(o.root);
    return sm_run(&o, stdin);
}
