/* postern-user - add, change, remove and list mail users of one instance.
 *
 *   postern-user [--root ROOT] add NAME [--uid N --gid N | --unix-account USER] [--maildir PATH]
 *   postern-user [--root ROOT] passwd NAME
 *   postern-user [--root ROOT] del NAME
 *   postern-user [--root ROOT] list
 *
 * ROOT may come from $POSTERN_ROOT. The password is read from stdin (one
 * line), or prompted for twice without echo when stdin is a terminal.
 * conf/users (0600 user_auth), conf/mailboxes and conf/recipients (0644) are
 * rewritten atomically under conf/.users.lock. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#include <sodium.h>

#include "buf.h"
#include "conf.h"
#include "config.h"
#include "err.h"
#include "log.h"
#include "maildir.h"
#include "privdrop.h"
#include "userdb.h"

struct opts {
    const char *root, *cmd, *name, *unix_account, *maildir;
    long uid, gid;
};

#define USAGE "usage: postern-user [--root ROOT] add NAME [--uid N --gid N | --unix-account USER] " \
              "[--maildir PATH] | passwd NAME | del NAME | list"

static _Noreturn void usage(void)
{
    die_perm(USAGE);
}

static long parse_id_arg(const char *s)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v <= 0 || v >= 0x7fffffffL) die_perm("bad id: %s (a number, not 0)", s);
    return v;
}

static void parse_args(int argc, char **argv, struct opts *o)
{
    memset(o, 0, sizeof *o);
    o->uid = o->gid = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            puts(USAGE "\n"
                 "ROOT is --root ROOT, else $POSTERN_ROOT, else the instance of ROOT/bin/postern-user.\n"
                 "add and passwd read the password from stdin (on a terminal: prompted twice).\n"
                 "list prints \"name uid gid maildir\" lines.\n"
                 "Exit: 0 done, 100 refused or usage error, 111 temporary trouble.");
            exit(fflush(stdout) == 0 ? EXIT_OK : EXIT_TEMP);
        }
        else if (!strcmp(a, "--root")) { if (!v) usage(); o->root = v; i++; }
        else if (!strcmp(a, "--uid")) { if (!v) usage(); o->uid = parse_id_arg(v); i++; }
        else if (!strcmp(a, "--gid")) { if (!v) usage(); o->gid = parse_id_arg(v); i++; }
        else if (!strcmp(a, "--unix-account")) { if (!v) usage(); o->unix_account = v; i++; }
        else if (!strcmp(a, "--maildir")) { if (!v) usage(); o->maildir = v; i++; }
        else if (a[0] == '-' && a[1]) usage();
        else if (!o->cmd) o->cmd = a;
        else if (!o->name) o->name = a;
        else usage();
    }
    if (!o->cmd) usage();
    int needs_name = strcmp(o->cmd, "list") != 0;
    if (needs_name != (o->name != 0)) usage();
    if ((o->uid < 0) != (o->gid < 0)) die_perm("--uid and --gid go together");
    if (o->uid > 0 && o->unix_account) die_perm("give either --uid/--gid or --unix-account");
    static char rootbuf[PATH_MAX];
    o->root = config_root_tool(o->root, rootbuf, sizeof rootbuf);
    if (!o->root) die_perm("no ROOT: give --root DIR, set POSTERN_ROOT, or run ROOT/bin/postern-user");
}

/* read one password: no-echo prompt (twice) on a tty, else one line of stdin */
static size_t read_line_fd(int fd, char *dst, size_t cap)
{
    size_t n = 0;
    for (;;) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0 || c == '\n') break;
        if (n + 1 >= cap) { sodium_memzero(dst, cap); die_perm("password too long (at most %d octets)", USERDB_PASS_MAX); }
        dst[n++] = c;
    }
    if (n && dst[n - 1] == '\r') n--;
    dst[n] = 0;
    return n;
}

static size_t prompt(const char *what, char *dst, size_t cap)
{
    struct termios old, noecho;
    if (fputs(what, stderr) == EOF) {}
    fflush(stderr);
    tcgetattr(0, &old);
    noecho = old;
    noecho.c_lflag &= ~(tcflag_t)ECHO;
    tcsetattr(0, TCSAFLUSH, &noecho);
    size_t n = read_line_fd(0, dst, cap);
    tcsetattr(0, TCSAFLUSH, &old);
    fputs("\n", stderr);
    return n;
}

static void read_password(char *pw, size_t cap, size_t *len)
{
    if (isatty(0)) {
        char again[USERDB_PASS_MAX + 2];
        *len = prompt("Password: ", pw, cap);
        size_t n2 = prompt("Again: ", again, sizeof again);
        int same = n2 == *len && sodium_memcmp(again, pw, n2) == 0;
        sodium_memzero(again, sizeof again);
        if (!same) { sodium_memzero(pw, cap); die_perm("the passwords differ"); }
    } else {
        *len = read_line_fd(0, pw, cap);
    }
    if (*len == 0) die_perm("empty password refused");
    if (memchr(pw, 0, *len)) { sodium_memzero(pw, cap); die_perm("NUL byte in password"); }
}

static void conf_path(char *dst, size_t cap, const char *root, const char *file)
{
    int n = snprintf(dst, cap, "%s/conf/%s", root, file);
    if (n < 0 || (size_t)n >= cap) die_perm("ROOT path too long");
}

static int uid_cmp(const void *a, const void *b)
{
    uid_t x = *(const uid_t *)a, y = *(const uid_t *)b;
    return x < y ? -1 : x > y;
}

/* the owners of ROOT/mail/<entry> and ROOT/mail/<entry>/Maildir, sorted:
 * among them a removed user's mail, kept (cmd_del), whose uid a new user
 * must not get, or the new user would be given the old one's mail */
static size_t kept_mail_uids(const char *root, uid_t **out)
{
    char path[PATH_MAX];
    size_t n = 0, cap = 0;
    *out = NULL;
    int k = snprintf(path, sizeof path, "%s/mail", root);
    DIR *d = k > 0 && (size_t)k < sizeof path ? opendir(path) : NULL;
    if (!d) return 0;
    for (struct dirent *de; (de = readdir(d));) {
        if (de->d_name[0] == '.') continue;
        for (int w = 0; w < 2; w++) {     /* ROOT/mail/<entry>, then its Maildir */
            struct stat st;
            k = snprintf(path, sizeof path, "%s%s", de->d_name, w ? "/Maildir" : "");
            if (k < 0 || (size_t)k >= sizeof path || fstatat(dirfd(d), path, &st, AT_SYMLINK_NOFOLLOW) < 0)
                continue;
            if (n == cap) {
                uid_t *v = realloc(*out, (cap = cap ? 2 * cap : 64) * sizeof *v);
                if (!v) die_temp("out of memory");
                *out = v;
            }
            (*out)[n++] = st.st_uid;
        }
    }
    closedir(d);
    if (n) qsort(*out, n, sizeof **out, uid_cmp);   /* (qsort and bsearch take no NULL, even for 0) */
    return n;
}

/* the lowest uid >= 20000 unused in /etc/passwd, /etc/group (as gid), the
 * db and the mail kept in ROOT/mail */
static uid_t alloc_uid(const struct userdb *db, const char *root)
{
    uid_t *kept;
    size_t nkept = kept_mail_uids(root, &kept);
    for (uid_t u = USERDB_UID_FIRST; u < 60000; u++)
        if (!userdb_uid_used(db, u) && !getpwuid(u) && !getgrgid((gid_t)u)
            && !(nkept && bsearch(&u, kept, nkept, sizeof *kept, uid_cmp))) {
            free(kept);
            return u;
        }
    die_temp("no free uid in 20000..59999");
}

/* mkdir (if absent) one directory owned by uid/gid, mode 0700, not a symlink */
static int mkdir_owned(const char *path, uid_t uid, gid_t gid, mode_t mode)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST) return 0;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return 0;
    int ok = 1;
    if (geteuid() == 0 && fchown(fd, uid, gid) < 0) ok = 0;
    if (ok && fchmod(fd, mode) < 0) ok = 0;
    int e = errno;
    close(fd);
    errno = e;
    return ok;
}

/* The Maildir and tmp/ new/ cur/ lie in a directory its user owns (their
 * home, ROOT/mail/NAME), where they can swap a part for a symlink between
 * two steps: made by root, a swapped path would hand the user a directory
 * of root's (/tmp for ~/Maildir -> /). So they are made by a child running
 * as the user, with maildir_make (no symlink, each part the user's own). */
static void make_maildir_as_user(const struct userdb_entry *e)
{
    if (geteuid() != 0) {
        if (!maildir_make(e->maildir)) die_temp_sys("making the Maildir %s", e->maildir);
        return;
    }
    struct privuser u = { e->uid, e->gid };
    if (!maildir_make_as(e->maildir, &u))
        die_temp_sys("making the Maildir %s as uid %u", e->maildir, (unsigned)e->uid);
}

static void make_maildir(const struct userdb_entry *e, const char *root)
{
    char p[USERDB_PATH_MAX + USERDB_NAME_MAX + 32], mailroot[USERDB_PATH_MAX + 16];
    int n = snprintf(mailroot, sizeof mailroot, "%s/mail", root);
    if (n < 0 || (size_t)n >= sizeof mailroot) die_perm("ROOT path too long");
    /* the default layout ROOT/mail/NAME/Maildir: make the parents */
    size_t ml = strlen(mailroot);
    if (!strncmp(e->maildir, mailroot, ml) && e->maildir[ml] == '/') {
        if (mkdir(mailroot, 0755) < 0 && errno != EEXIST) die_temp_sys("mkdir %s", mailroot);
        n = snprintf(p, sizeof p, "%s/%s", mailroot, e->name);
        if (n < 0 || (size_t)n >= sizeof p) die_perm("maildir path too long");
        if (!strcmp(e->maildir + ml + 1 + strlen(e->name), "/Maildir")) {
            if (!mkdir_owned(p, e->uid, e->gid, 0700)) die_temp_sys("mkdir %s", p);
            /* the home's name: durable before mail goes into it */
            if (!maildir_fsync_dir(mailroot)) die_temp_sys("fsync %s", mailroot);
        }
    }
    make_maildir_as_user(e);
}

static void write_all(const struct userdb *db, const struct config *c, const char *root)
{
    char path[USERDB_PATH_MAX + 64];
    struct buf b = BUF_ZERO;
    uid_t auid = (uid_t)-1;
    gid_t agid = (gid_t)-1;
    struct passwd *pw = geteuid() == 0 ? getpwnam(c->user_auth) : 0;
    if (pw) { auid = pw->pw_uid; agid = pw->pw_gid; }
    else if (geteuid() == 0) log_warn(NULL, "warning=\"no system user %s: conf/users stays root-owned\"", c->user_auth);
    conf_path(path, sizeof path, root, "users");
    if (!userdb_format(db, 1, &b)) die_temp_sys("out of memory");
    if (!userdb_write_file(path, b.s ? b.s : "", b.len, 0600, auid, agid)) die_temp_sys("write %s", path);
    sodium_memzero(b.s, b.cap);
    b.len = 0;
    conf_path(path, sizeof path, root, "mailboxes");
    if (!userdb_format(db, 0, &b)) die_temp_sys("out of memory");
    if (!userdb_write_file(path, b.s ? b.s : "", b.len, 0644, geteuid() == 0 ? 0 : (uid_t)-1, geteuid() == 0 ? 0 : (gid_t)-1))
        die_temp_sys("write %s", path);
    b.len = 0;
    /* recipients: users plus the names of conf/aliases */
    struct buf al = BUF_ZERO;
    char **names = 0;
    size_t nnames = 0;
    conf_path(path, sizeof path, root, "aliases");
    if (userdb_read_file(path, (size_t)16 << 20, &al) && !userdb_alias_names(al.s ? al.s : "", al.len, &names, &nnames))
        die_temp_sys("out of memory");
    if (!userdb_format_recipients(db, (const char *const *)names, nnames, &b)) die_temp_sys("out of memory");
    conf_path(path, sizeof path, root, "recipients");
    if (!userdb_write_file(path, b.s, b.len, 0644, geteuid() == 0 ? 0 : (uid_t)-1, geteuid() == 0 ? 0 : (gid_t)-1))
        die_temp_sys("write %s", path);
    userdb_alias_names_free(names, nnames);
    buf_free(&al);
    buf_free(&b);
}

/* an alias of the same name is looked up first (as in Postfix): the new
 * user's own mailbox gets nothing unless the alias lists the name itself.
 * Said, not refused: the operator may mean it. */
static void warn_if_alias(const char *root, const char *name)
{
    char path[PATH_MAX];
    struct buf al = BUF_ZERO;
    char **names = 0;
    size_t nnames = 0;
    conf_path(path, sizeof path, root, "aliases");
    if (userdb_read_file(path, (size_t)16 << 20, &al) && userdb_alias_names(al.s ? al.s : "", al.len, &names, &nnames))
        for (size_t i = 0; i < nnames; i++)
            if (!strcasecmp(names[i], name))
                fprintf(stderr, "postern-user: warning: %s is also an alias in %s: mail to %s follows the "
                                "alias and reaches this mailbox only if the alias lists %s itself\n",
                        name, path, name, name);
    userdb_alias_names_free(names, nnames);
    buf_free(&al);
}

static void cmd_add(struct userdb *db, const struct opts *o, const char *name, const struct config *c)
{
    struct userdb_entry e;
    memset(&e, 0, sizeof e);
    memcpy(e.name, name, strlen(name) + 1);
    if (userdb_find(db, name)) die_perm("user %s exists already (use passwd to change the password)", name);
    const char *home = 0;
    if (o->unix_account) {
        struct passwd *pw = getpwnam(o->unix_account);
        if (!pw) die_perm("no Unix account %s", o->unix_account);
        if (pw->pw_uid == 0 || pw->pw_gid == 0) die_perm("refusing uid/gid 0 (%s)", o->unix_account);
        e.uid = pw->pw_uid;
        e.gid = pw->pw_gid;
        home = pw->pw_dir;
    } else if (o->uid > 0) {
        e.uid = (uid_t)o->uid;
        e.gid = (gid_t)o->gid;
    } else if (geteuid() != 0) {
        e.uid = getuid();       /* an unprivileged test instance: mail is the caller's */
        e.gid = getgid();
    } else {
        e.uid = alloc_uid(db, o->root);
        e.gid = (gid_t)e.uid;
    }
    int n;
    if (o->maildir) n = snprintf(e.maildir, sizeof e.maildir, "%s", o->maildir);
    else if (home && home[0] == '/' && strcmp(home, "/")) n = snprintf(e.maildir, sizeof e.maildir, "%s/Maildir", home);
    else n = snprintf(e.maildir, sizeof e.maildir, "%s/mail/%s/Maildir", o->root, name);
    if (n < 0 || (size_t)n >= sizeof e.maildir) die_perm("maildir path too long");
    if (e.maildir[0] != '/') die_perm("maildir must be an absolute path: %s", e.maildir);
    if (strchr(e.maildir, ':')) die_perm("maildir path may not contain ':'");
    enum userdb_pwlevel lvl;
    if (!userdb_pwlevel_parse(c->pwhash_level, &lvl))
        die_perm("%s/conf/postern.conf: pwhash_level: not interactive, moderate or sensitive", o->root);
    char pw[USERDB_PASS_MAX + 2];
    size_t pwlen;
    read_password(pw, sizeof pw, &pwlen);
    int ok = userdb_pwhash(e.hash, pw, pwlen, lvl);
    sodium_memzero(pw, sizeof pw);
    if (!ok) die_temp_sys("hashing the password");
    make_maildir(&e, o->root);
    if (!userdb_add(db, &e)) die_temp_sys("adding %s", name);
    write_all(db, c, o->root);
    printf("added %s uid=%u gid=%u maildir=%s\n", name, (unsigned)e.uid, (unsigned)e.gid, e.maildir);
    sodium_memzero(&e, sizeof e);
    warn_if_alias(o->root, name);
}

static void cmd_passwd(struct userdb *db, const char *name, const struct config *c, const char *root)
{
    struct userdb_entry *e = userdb_find(db, name);
    if (!e) die_perm("no user %s", name);
    enum userdb_pwlevel lvl;
    if (!userdb_pwlevel_parse(c->pwhash_level, &lvl))
        die_perm("%s/conf/postern.conf: pwhash_level: not interactive, moderate or sensitive", root);
    char pw[USERDB_PASS_MAX + 2];
    size_t pwlen;
    read_password(pw, sizeof pw, &pwlen);
    int ok = userdb_pwhash(e->hash, pw, pwlen, lvl);
    sodium_memzero(pw, sizeof pw);
    if (!ok) die_temp_sys("hashing the password");
    write_all(db, c, root);
    printf("changed the password of %s\n", name);
}

static void cmd_del(struct userdb *db, const char *name, const struct config *c, const char *root)
{
    struct userdb_entry *e = userdb_find(db, name);
    if (!e) die_perm("no user %s", name);
    char maildir[USERDB_PATH_MAX + 1];
    memcpy(maildir, e->maildir, sizeof maildir);
    if (!userdb_del(db, name)) die_temp_sys("removing %s", name);
    write_all(db, c, root);
    printf("removed %s; the mail in %s was kept (remove it by hand if no longer wanted)\n", name, maildir);
}

int main(int argc, char **argv)
{
    struct opts o;
    struct config c;
    char err[CONF_ERR_MAX + USERDB_PATH_MAX], path[USERDB_PATH_MAX + 64], name[USERDB_NAME_MAX + 1];
    log_init("postern-user");
    signal(SIGCHLD, SIG_DFL);  /* a caller's SIG_IGN would make waitpid fail (sendmail's main) */
    parse_args(argc, argv, &o);
    if (sodium_init() < 0) die_temp("libsodium initialisation failed");
    if (!config_load(&c, o.root, err, sizeof err)) die_perm("%s", err);
    if (o.name) {
        const char *why;
        if (!userdb_name_canon(o.name, strlen(o.name), name, &why)) die_perm("bad user name: %s", why);
    }
    umask(077);
    conf_path(path, sizeof path, o.root, ".users.lock");
    int lock = strcmp(o.cmd, "list") ? open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600) : -1;
    if (strcmp(o.cmd, "list") && (lock < 0 || flock(lock, LOCK_EX) < 0)) die_temp_sys("lock %s", path);
    struct userdb db = USERDB_ZERO;
    conf_path(path, sizeof path, o.root, "users");
    if (!userdb_load(&db, path, 1, 1, err, sizeof err)) {
        if (errno != EACCES || strcmp(o.cmd, "list")) die_perm("%s", err);
        conf_path(path, sizeof path, o.root, "mailboxes");   /* list without the hashes */
        if (!userdb_load(&db, path, 0, 1, err, sizeof err)) die_perm("%s", err);
    }
    if (!strcmp(o.cmd, "add")) cmd_add(&db, &o, name, &c);
    else if (!strcmp(o.cmd, "passwd")) cmd_passwd(&db, name, &c, o.root);
    else if (!strcmp(o.cmd, "del")) cmd_del(&db, name, &c, o.root);
    else if (!strcmp(o.cmd, "list"))
        for (size_t i = 0; i < db.n; i++)
            printf("%s %u %u %s\n", db.v[i].name, (unsigned)db.v[i].uid, (unsigned)db.v[i].gid, db.v[i].maildir);
    else usage();
    userdb_free(&db);
    if (fflush(stdout) != 0) die_temp_sys("write stdout");
    return EXIT_OK;
}
