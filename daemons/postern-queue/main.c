/* postern-queue - the operator's view of the queue (like mailq, qmail-qread,
 * postqueue). Reads ROOT/queue directly (run it as root or as the queue's
 * owner: the queue is 0700); changes go through queue-manager, which alone writes
 * the queue: "flush" and "delete" write a request into the trigger FIFO
 * ("F", "D<ID>\n"), which only root and the queue's owner may open.
 *
 *   postern-queue [--root DIR] list | stat | show ID | flush | delete ID... | delete - | delete ALL
 *
 * Output formats are stable (see usage text and docs/man/postern-queue.8). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "envelope.h"
#include "err.h"
#include "io.h"
#include "log.h"
#include "queue_path.h"

static const char usage[] =
    "usage: postern-queue [--root DIR] list | stat | show ID | flush | delete ID... | - | ALL\n"
    "ROOT is DIR, else $POSTERN_ROOT, else the instance of ROOT/bin/postern-queue.\n"
    "list    one line per message:  ID AGE SIZE <sender>\n"
    "        (AGE in seconds since queued, SIZE in bytes), then one line per recipient:\n"
    "          STATE ATTEMPTS <address> LAST_ERROR\n"
    "        (two spaces first; STATE is pending, done, failed or bounced, or,\n"
    "        with a report still to send, delayed, delivered, relayed or expanded;\n"
    "        LAST_ERROR is the rest of the line, possibly empty; a space in an\n"
    "        address is written \\x20, a backslash \\x5c)\n"
    "stat    lines \"KEY VALUE\": messages, recipients, pending, done, failed, bounced,\n"
    "        bytes, oldest (age in seconds, 0 if empty); pending counts delayed,\n"
    "        done counts delivered, relayed and expanded\n"
    "show ID the envelope file, a line \"--\", then the message's header section\n"
    "flush   ask queue-manager to try every pending recipient now\n"
    "delete ID...  ask queue-manager to remove the messages (no bounce is sent);\n"
    "        \"-\" reads the IDs from stdin, one a line; \"ALL\" is every message.\n"
    "        Prints \"ID deleted\" for each as it goes; gives up after 10 seconds\n"
    "        in which none went\n"
    "Exit: 0 done, 100 usage error or no such message, 111 temporary trouble.\n";

/* stat's four counts: delayed is pending, a success report due is done */
static enum env_rcpt_state stat_state(enum env_rcpt_state s)
{
    if (env_rcpt_pending(s)) return ENV_RCPT_PENDING;
    if (env_rcpt_success_due(s)) return ENV_RCPT_DONE;
    return s;
}

static int slurp(const char *path, struct buf *b, size_t max)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return 0;
    for (;;) {
        if (b->len >= max) break;
        if (!buf_reserve(b, 65536)) { close(fd); return 0; }
        size_t room = b->cap - b->len - 1;
        if (room > max - b->len) room = max - b->len;
        ssize_t n = read(fd, b->s + b->len, room);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { int e = errno; close(fd); errno = e; return 0; }
        if (!n) break;
        b->len += (size_t)n;
    }
    close(fd);
    if (!buf_reserve(b, 0)) return 0;
    b->s[b->len] = 0;
    return 1;
}

static int load(const char *root, const char *id, struct envelope *e, long long *size)
{
    char path[QUEUE_PATH_MAX], why[256];
    struct buf b = BUF_ZERO;
    struct stat st;
    if (!queue_path(path, sizeof path, root, QUEUE_ENV, id) || !slurp(path, &b, 64u << 20)) {
        buf_free(&b);
        return 0;
    }
    int ok = envelope_parse(e, b.s, b.len, why, sizeof why);
    buf_free(&b);
    if (!ok) { fprintf(stderr, "postern-queue: %s: %s\n", id, why); return 0; }
    if (strcmp(e->id, id)) {
        /* queue-manager will not use it either (envelope=unreadable): listed
         * under the id inside, it could be neither shown nor deleted by it */
        fprintf(stderr, "postern-queue: %s: id field %s\n", id, e->id);
        envelope_free(e);
        return 0;
    }
    *size = 0;
    if (queue_path(path, sizeof path, root, QUEUE_MESS, id) && stat(path, &st) == 0) *size = st.st_size;
    return 1;
}

static int id_cmp(const void *a, const void *b) { return strcmp(a, b); }

/* <addr> with no space in it: a quoted local part may hold one, so space
 * and backslash are written \x20 and \x5c (the envelope holds no control
 * character); one field for a script that splits the line at spaces */
static void put_addr(const char *a)
{
    putchar('<');
    for (; *a; a++) {
        if (*a == ' ') fputs("\\x20", stdout);
        else if (*a == '\\') fputs("\\x5c", stdout);
        else putchar(*a);
    }
    putchar('>');
}

/* every message id in env/, sorted (by birth: the id starts with it) */
static char (*ids_all(const char *root, size_t *n))[ENV_ID_LEN + 1]
{
    char (*v)[ENV_ID_LEN + 1] = NULL;
    size_t cap = 0;
    *n = 0;
    for (int h = 0; h < 16; h++) {
        char dir[QUEUE_PATH_MAX], sub[16];
        snprintf(sub, sizeof sub, "env/%X", h);
        if (!queue_dir(dir, sizeof dir, root, sub)) continue;
        DIR *d = opendir(dir);
        if (!d) { if (errno != ENOENT) die_temp_sys("%s", dir); continue; }
        struct dirent *de;
        while ((de = readdir(d))) {
            if (!envelope_id_valid(de->d_name)) continue;
            if (envelope_id_hash(de->d_name) != sub[4]) {   /* queue-manager skips it too */
                fprintf(stderr, "postern-queue: %s: misplaced in %s (belongs in env/%c)\n", de->d_name, sub,
                        envelope_id_hash(de->d_name));
                continue;
            }
            if (*n == cap) {
                cap = cap ? cap * 2 : 64;
                void *nv = realloc(v, cap * sizeof *v);
                if (!nv) die_temp("out of memory");
                v = nv;
            }
            memcpy(v[(*n)++], de->d_name, ENV_ID_LEN + 1);
        }
        closedir(d);
    }
    if (*n) qsort(v, *n, sizeof *v, id_cmp);
    return v;
}

static int cmd_list(const char *root, int stat_only)
{
    char env[QUEUE_PATH_MAX];
    size_t n;
    /* env/ itself must be there: a ROOT without a queue is not an empty
     * queue (a mistyped --root would report "nothing queued") */
    if (!queue_dir(env, sizeof env, root, "env")) die_temp("%s/queue: path too long", root);
    if (access(env, X_OK) < 0) die_temp_sys("%s", env);
    char (*ids)[ENV_ID_LEN + 1] = ids_all(root, &n);
    unsigned long long count[4] = { 0 }, rcpts = 0, bytes = 0, msgs = 0;
    long long oldest = 0;
    time_t now = time(NULL);
    for (size_t i = 0; i < n; i++) {
        struct envelope e;
        long long size;
        envelope_init(&e);
        if (!load(root, ids[i], &e, &size)) continue;   /* gone meanwhile */
        long long age = now > e.birth ? (long long)(now - e.birth) : 0;
        msgs++;
        bytes += (unsigned long long)size;
        if (age > oldest) oldest = age;
        if (!stat_only) {
            printf("%s %lld %lld ", e.id, age, size);
            put_addr(e.sender);
            putchar('\n');
        }
        for (size_t k = 0; k < e.nrcpt; k++) {
            const struct env_rcpt *r = &e.rcpt[k];
            rcpts++;
            if ((unsigned)stat_state(r->state) < 4) count[stat_state(r->state)]++;
            if (!stat_only) {
                printf("  %s %u ", envelope_state_name(r->state), r->attempts);
                put_addr(r->addr);
                printf(" %s\n", env_text(r->last_error));
            }
        }
        envelope_free(&e);
    }
    if (stat_only)
        printf("messages %llu\nrecipients %llu\npending %llu\ndone %llu\nfailed %llu\nbounced %llu\n"
               "bytes %llu\noldest %lld\n", msgs, rcpts, count[0], count[1], count[2], count[3], bytes, oldest);
    free(ids);
    return fflush(stdout) == 0 ? EXIT_OK : EXIT_TEMP;
}

static int cmd_show(const char *root, const char *id)
{
    char path[QUEUE_PATH_MAX];
    struct buf b = BUF_ZERO;
    if (!envelope_id_valid(id)) die_perm("%s: not a queue id", id);
    if (!queue_path(path, sizeof path, root, QUEUE_ENV, id) || !slurp(path, &b, 64u << 20)) {
        if (errno == ENOENT) die_perm("%s: no such message", id);
        die_temp_sys("%s", path);
    }
    fwrite(b.s, 1, b.len, stdout);
    fputs("--\n", stdout);
    b.len = 0;
    if (!queue_path(path, sizeof path, root, QUEUE_MESS, id) || !slurp(path, &b, 1u << 20))
        die_temp_sys("%s", path);
    char *end = memmem(b.s, b.len, "\n\n", 2);
    fwrite(b.s, 1, end ? (size_t)(end - b.s) + 1 : b.len, stdout);
    buf_free(&b);
    return fflush(stdout) == 0 ? EXIT_OK : EXIT_TEMP;
}

/* the trigger FIFO, open for writing; dies saying why not */
static int trigger_open(const char *root, char *path, size_t pathlen)
{
    int fd = queue_trigger_open(root, path, pathlen);
    if (fd < 0 && !path[0]) die_temp_sys("trigger");
    if (fd < 0 && errno == ENXIO) die_temp("queue-manager is not running (nobody reads %s)", path);
    if (fd < 0 && errno == EINVAL) die_temp("%s: not a FIFO (queue-manager does not start with it)", path);
    if (fd < 0) die_temp_sys("%s", path);
    return fd;
}

static void trigger_write(const char *root, const char *what, size_t len)
{
    char path[QUEUE_PATH_MAX] = "";
    int fd = trigger_open(root, path, sizeof path);
    if (write(fd, what, len) != (ssize_t)len) die_temp_sys("%s", path);
    close(fd);
}

/* whether env/<h>/ID is there: 1, 0 gone; dies if it cannot tell */
static int present(const char *root, const char *id)
{
    char path[QUEUE_PATH_MAX];
    if (!queue_path(path, sizeof path, root, QUEUE_ENV, id)) die_temp_sys("path");
    if (access(path, F_OK) == 0) return 1;
    if (errno == ENOENT) return 0;
    die_temp_sys("%s", path);     /* EACCES: not root, not the queue's owner */
}

/* the IDs to delete: the arguments; "-": one a line on stdin (blank lines
 * skipped, as postsuper -d - reads them); "ALL": every message. A word
 * that is not a queue id stops it before anything is asked. */
static char (*delete_ids(const char *root, char **args, size_t nargs, size_t *n))[ENV_ID_LEN + 1]
{
    if (nargs == 1 && !strcmp(args[0], "ALL")) return ids_all(root, n);
    char (*ids)[ENV_ID_LEN + 1] = NULL;
    size_t cap = 0;
    char *line = NULL;
    size_t linecap = 0;
    *n = 0;
    for (size_t a = 0; a < nargs; a++) {
        int from_stdin = !strcmp(args[a], "-");
        for (;;) {
            const char *w = args[a];
            if (from_stdin) {
                ssize_t l = getline(&line, &linecap, stdin);
                if (l < 0) break;
                line[strcspn(line, "\r\n")] = 0;
                if (!line[0]) continue;
                w = line;
            }
            if (!envelope_id_valid(w)) die_perm("%s: not a queue id", w);
            if (*n == cap) {
                cap = cap ? cap * 2 : 16;
                void *nv = realloc(ids, cap * sizeof *ids);
                if (!nv) die_temp_sys("memory");
                ids = nv;
            }
            memcpy(ids[(*n)++], w, ENV_ID_LEN + 1);
            if (!from_stdin) break;
        }
    }
    free(line);
    return ids;
}

/* delete ID... | - | ALL: a request for each message there, then wait
 * until they are gone (10 seconds without one going is too long) */
static int cmd_delete(const char *root, char **args, size_t nargs)
{
    size_t n, left = 0;
    char (*ids)[ENV_ID_LEN + 1] = delete_ids(root, args, nargs, &n);
    int missing = 0;
    if (n > 1) {                 /* each message once, however often it was named */
        qsort(ids, n, sizeof *ids, id_cmp);
        size_t u = 1;
        for (size_t i = 1; i < n; i++)
            if (strcmp(ids[i], ids[u - 1])) memcpy(ids[u++], ids[i], sizeof *ids);
        n = u;
    }
    char *asked = calloc(n ? n : 1, 1);
    if (!asked) die_temp_sys("memory");
    int fd = -1;
    for (size_t i = 0; i < n; i++) {
        if (!present(root, ids[i])) {
            fprintf(stderr, "postern-queue: %s: no such message\n", ids[i]);
            missing = 1;
            continue;
        }
        if (fd < 0) {
            char path[QUEUE_PATH_MAX] = "";
            if ((fd = trigger_open(root, path, sizeof path)) < 0) die_temp_sys("%s", path);
        }
        char rec[ENV_ID_LEN + 3];
        snprintf(rec, sizeof rec, "D%s\n", ids[i]);
        if (!fd_write_all(fd, rec, strlen(rec), 10000)) die_temp_sys("trigger");
        asked[i] = 1;
        left++;
    }
    if (fd >= 0) close(fd);
    for (int idle = 0; left && idle < 100; idle++) {
        for (size_t i = 0; i < n; i++)
            if (asked[i] && !present(root, ids[i])) {
                printf("%s deleted\n", ids[i]);
                asked[i] = 0;
                left--;
                idle = -1;
            }
        if (left) usleep(100000);
    }
    for (size_t i = 0; i < n; i++)
        if (asked[i])
            fprintf(stderr, "postern-queue: %s: delete requested, but the message is still there "
                            "(deliveries in flight?)\n", ids[i]);
    free(asked);
    free(ids);
    if (fflush(stdout) != 0 || left) return EXIT_TEMP;
    return missing ? EXIT_PERM : EXIT_OK;
}

int main(int argc, char **argv)
{
    const char *rootarg = NULL;
    int i = 1;
    log_init("postern-queue");
    if (i < argc && (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))) { fputs(usage, stdout); return EXIT_OK; }
    if (i + 1 < argc && !strcmp(argv[i], "--root")) { rootarg = argv[i + 1]; i += 2; }
    if (i >= argc) { fputs(usage, stderr); return EXIT_PERM; }
    const char *cmd = argv[i++];
    int nargs = argc - i;
    int known = (!nargs && (!strcmp(cmd, "list") || !strcmp(cmd, "stat") || !strcmp(cmd, "flush"))) ||
                (nargs == 1 && !strcmp(cmd, "show")) || (nargs >= 1 && !strcmp(cmd, "delete"));
    if (!known) { fputs(usage, stderr); return EXIT_PERM; }
    char rootbuf[PATH_MAX];
    const char *root = config_root_tool(rootarg, rootbuf, sizeof rootbuf);
    if (!root) {
        fputs("postern-queue: no ROOT: give --root DIR, set POSTERN_ROOT, or run ROOT/bin/postern-queue\n", stderr);
        return EXIT_PERM;
    }
    if (!strcmp(cmd, "list") && !nargs) return cmd_list(root, 0);
    if (!strcmp(cmd, "stat") && !nargs) return cmd_list(root, 1);
    if (!strcmp(cmd, "show") && nargs == 1) return cmd_show(root, argv[i]);
    if (!strcmp(cmd, "delete") && nargs >= 1) return cmd_delete(root, argv + i, (size_t)nargs);
    if (!strcmp(cmd, "flush") && !nargs) { trigger_write(root, "F", 1); puts("flush requested"); return EXIT_OK; }
    fputs(usage, stderr);
    return EXIT_PERM;
}
