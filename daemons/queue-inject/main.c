/* queue-inject - add one message to ROOT/queue, crash-safely (docs/QUEUE.md).
 * fd 0: the message; fd 1: NUL-framed envelope records (docs/INTERFACES.md).
 * Exit 0 only once the message is committed; 53 no space, 54 temporary
 * failure, 55 envelope not ended (caller aborted), 31 malformed envelope.
 * Installed setuid postern-queue (4711); ROOT is where this binary lives
 * (ROOT/bin/queue-inject), never the environment. Silent on success. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "privdrop.h"
#include "queue_inject.h"
#include "queue_path.h"

#ifdef __SANITIZE_ADDRESS__
#include <sys/prctl.h>
/* make sanitize: LeakSanitizer's exit-time check needs to ptrace the
 * process, which the kernel forbids once it is setuid or has dropped
 * privileges (not "dumpable"); the failed check would turn every commit into
 * exit 1. Leaks are still checked whenever the process stays dumpable. */
int __lsan_is_turned_off(void);
int __lsan_is_turned_off(void) { return prctl(PR_GET_DUMPABLE) != 1; }
#endif

/* fds 0..2 must be open, else our tmp files could land on them */
static void fds_sane(void)
{
    for (int fd = 0; fd <= 2; fd++)
        if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) != fd) _exit(INJECT_EXIT_TEMP);
}

/* open ROOT/queue; it must belong to our effective uid. When we are root
 * (a copy not installed setuid), become the queue's owner first. */
static int queue_open(const char *root)
{
    char path[QUEUE_PATH_MAX];
    struct stat st;
    if (!queue_dir(path, sizeof path, root, "")) return -1;
    int qfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (qfd < 0 || fstat(qfd, &st) < 0) return -1;
    if (geteuid() == 0 && st.st_uid != 0) {
        struct privuser u = { st.st_uid, st.st_gid };
        if (!privdrop(NULL, &u)) return -1;
    }
    if (st.st_uid != geteuid() || (st.st_mode & 022)) { errno = EPERM; return -1; }
    return qfd;
}

/* The callers whose H field is this host's own trace: root, the queue's
 * owner (queue-manager's reports, local-deliverer's forwards; also any copy
 * that is not setuid) and smtp-listener's monitor, which runs us as
 * postern-smtp. Anyone else is a local user whose line gets ours on top. */
static int caller_trusted(uid_t caller)
{
    if (caller == 0 || caller == geteuid()) return 1;
    struct privuser smtp;   /* from /etc/passwd itself: no NSS in a setuid program */
    return privuser_lookup(INJECT_SMTP_USER, &smtp) && smtp.uid == caller;
}

static struct inject_env ie;
static struct inject_msg m;

static _Noreturn void fail(const char *what, int err, const char *why)
{
    int code = inject_exit_code(err);
    inject_msg_free(&m);      /* removes a spill file */
    inject_env_free(&ie);
    if (code != INJECT_EXIT_UNENDED)
        log_error(NULL, "%s=\"%s\"%s%s%s", what, strerror(err), why && *why ? " why=\"" : "", why && *why ? why : "", why && *why ? "\"" : "");
    exit(code);
}

int main(void)
{
    char root[PATH_MAX], why[256] = "", id[ENV_ID_LEN + 1];
    struct commit_stats st;
    struct stat sb;

    log_init("queue-inject");
    fds_sane();
    signal(SIGPIPE, SIG_IGN);
    umask(077);
    uid_t caller = getuid();
    inject_env_init(&ie, caller);
    inject_msg_init(&m, -1);
    if (!queue_root_from_exe(root, sizeof root)) fail("root", errno ? errno : ENOENT, "no /proc/self/exe");
    int qfd = queue_open(root);
    if (qfd < 0) fail("queue", errno, root);

    m.qfd = qfd;
    if (!inject_msg_read(&m, 0, INJECT_MEM_MAX)) fail("message", errno, NULL);
    if (!inject_env_read(&ie, 1, why, sizeof why)) fail("envelope", errno, why);
    if (!caller_trusted(caller) && !inject_env_local_trace(&ie, time(NULL))) fail("trace", errno, NULL);
    if (!queue_commit(qfd, root, &ie, &m, id, &st)) fail("commit", errno, NULL);
    /* only the spill file (a large message) needs removing; the memory goes
     * with the process. Freeing it would hand musl's pages back one munmap
     * at a time, each a TLB flush on every CPU the process ran on. */
    if (m.spill_fd >= 0) inject_msg_free(&m);
    if (st.todo_failed) log_warn(id, "todo=\"%s\" note=\"queue-manager's scan will find it\"", strerror(st.todo_errno));
    if (fstat(1, &sb) == 0 && S_ISSOCK(sb.st_mode)) {
        id[ENV_ID_LEN] = '\n';
        if (write(1, id, ENV_ID_LEN + 1) < 0) { /* committed anyway: exit 0 */ }
    }
    return INJECT_EXIT_OK;
}
