"""postern-setup, the s6 tree it makes, the harness itself, and the
privilege invariants of DESIGN.md section 1 checked on a running instance."""

import grp
import hashlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import textwrap
import time
import unittest

import harness
from harness import Instance, IS_ROOT, fd_targets, need, need_root, sandbox_state, smtp_dialogue, Conn

SYSUSERS = ('postern-smtp', 'postern-queue', 'postern-auth', 'postern-pop3',
            'postern-tls', 'postern-remote', 'postern-log')
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
# the s6 service templates (service/ of the source tree) and their modes in ROOT
SERVICE_FILES = (('run', 0o755), ('notification-fd', 0o644), ('log/run', 0o755))


def service_golden(root, prog, as_root=IS_ROOT):
    """What postern-setup has always written into ROOT/service/PROG, byte
    for byte (before the templates, it wrote these texts inline)."""
    drop = 's6-setuidgid postern-log ' if as_root else ''
    return {
        'run': '#!/bin/sh\n# %s: started as root; it drops its own privileges '
               '(docs/ARCHITECTURE.md)\nexec 2>&1\nexec %s/bin/%s -d 3 %s\n' % (prog, root, prog, root),
        'notification-fd': '3\n',
        'log/run': '#!/bin/sh\nexec %ss6-log -p -b n10 s1000000 T %s/log/%s\n' % (drop, root, prog),
    }


def render_templates(tdir, root, prog, as_root=IS_ROOT):
    """The templates of tdir (service/ or PREFIX/share/postern/service)
    filled in as postern-setup does."""
    out = {}
    for f, _ in SERVICE_FILES:
        with open(os.path.join(tdir, f)) as fh:
            text = fh.read()
        out[f] = (text.replace('@PROG@', prog).replace('@ROOT@', root)
                  .replace('@SETUIDGID@', 's6-setuidgid postern-log ' if as_root else ''))
    return out


def service_files(root, prog):
    """{file: (text, mode)} of ROOT/service/PROG."""
    out = {}
    for f, _ in SERVICE_FILES:
        p = os.path.join(root, 'service', prog, f)
        with open(p) as fh:
            out[f] = (fh.read(), stat.S_IMODE(os.lstat(p).st_mode))
    return out


def owner(path):
    st = os.lstat(path)
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)


def sha(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def u(name):
    """The system user name, or oneself when not root (setup maps them so)."""
    return name if IS_ROOT else pwd.getpwuid(os.getuid()).pw_name


def g(name):
    return name if IS_ROOT else grp.getgrgid(os.getgid()).gr_name



def injected_stop(matches):
    """the pid of a process that strace's signal=STOP injection has stopped
    and for which matches(argv, exe) is true, or None. Under strace a
    tracee also shows "t" for a moment at each of its system calls, so a
    stop counts only when the same process is still stopped at the same
    call 200 ms later"""
    def scan():
        for c in os.listdir('/proc'):
            try:
                with open('/proc/%s/stat' % c) as f:
                    state = f.read().rsplit(') ', 1)[1][:1]
                with open('/proc/%s/cmdline' % c, 'rb') as f:
                    argv = f.read().split(b'\0')
                exe = os.readlink('/proc/%s/exe' % c)
                with open('/proc/%s/syscall' % c) as f:
                    where = f.read()
            except (OSError, IndexError):
                continue
            if state in 'tT' and matches(argv, exe):
                return int(c), where
        return None, None
    seen = scan()
    if seen[0] is None:
        return None
    time.sleep(0.2)
    return seen[0] if scan() == seen else None


def cont_until_finished(pid, p, seconds):
    """SIGCONT the stopped pid, again every 2 s, until the Popen p has
    finished (a stop that came after the first SIGCONT is met by the next);
    1, or 0 if it did not finish in time"""
    for _ in range(seconds // 2):
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=2)
            return 1
        except subprocess.TimeoutExpired:
            continue
    return 0

class SetupTree(unittest.TestCase):
    """postern-setup alone (no daemons needed)."""

    def setUp(self):
        need(self, 'postern-setup')
        self.inst = Instance().setup()

    def tearDown(self):
        self.inst.stop()

    def setup_again(self, *extra):
        r = subprocess.run([os.path.join(harness.BIN, 'postern-setup'), '--root', self.inst.root]
                           + list(extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True, timeout=120)
        return r

    def test_users_and_groups(self):
        need_root(self)
        for name in SYSUSERS:
            pw = pwd.getpwnam(name)  # raises KeyError if missing
            self.assertNotEqual(pw.pw_uid, 0, name)
            self.assertEqual(grp.getgrgid(pw.pw_gid).gr_name, name, name + "'s own group")
            self.assertIn(pw.pw_shell, ('/usr/sbin/nologin', '/sbin/nologin', '/bin/false'))
        members = grp.getgrnam('postern').gr_mem
        self.assertIn('postern-smtp', members)
        self.assertIn('postern-pop3', members)
        for name in ('postern-auth', 'postern-queue', 'postern-tls', 'postern-remote'):
            self.assertNotIn(name, members, name + ' must not reach run/auth')

    def test_queue_tmp_spread_on_ext4(self):
        # queue/tmp carries chattr +T (ext4's "top directory" flag) so that
        # its tmp/<h> land in block groups apart (docs/QUEUE.md); where the
        # filesystem is not ext4 the flag is refused and nothing depends on it
        tmp = self.inst.path('queue', 'tmp')
        fstype = subprocess.run(['stat', '-f', '-c', '%T', tmp], capture_output=True, text=True).stdout.strip()
        if fstype not in ('ext2/ext3', 'ext4'):
            self.skipTest('queue on %s, not ext4: no +T flag' % fstype)
        for d in (tmp, self.inst.path('mail')):   # mail/: the homes of users without one
            out = subprocess.run(['lsattr', '-d', d], capture_output=True, text=True)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn('T', out.stdout.split()[0], out.stdout)
        # inode numbers in blocks of 8192 (mkfs.ext4's usual inodes per
        # group; the device itself is not readable here): spread, not all
        # next to tmp/ as without the flag
        groups = set(os.stat(os.path.join(tmp, h)).st_ino // 8192 for h in '0123456789ABCDEF')
        self.assertGreater(len(groups), 4, 'tmp/<h> inode numbers by 8192: %s' % sorted(groups))

    def test_tree_owners_and_modes(self):
        r = self.inst.root
        root, rootg = u('root'), g('root')
        q, gq = u('postern-queue'), g('postern-queue')
        table = [
            ('', root, rootg, 0o755), ('bin', root, rootg, 0o755),
            ('conf', root, rootg, 0o755), ('mail', root, rootg, 0o755),
            ('service', root, rootg, 0o755), ('log', root, rootg, 0o755),
            ('run', root, rootg, 0o755), ('run/auth', root, g('postern'), 0o750),
            ('empty', root, rootg, 0o555),
            ('queue', q, gq, 0o700), ('queue/tmp', q, gq, 0o700), ('queue/todo', q, gq, 0o700),
            ('queue/tmp/0', q, gq, 0o700), ('queue/tmp/F', q, gq, 0o700),
            ('queue/bounce', q, gq, 0o700), ('queue/lock', q, gq, 0o700),
            ('queue/lock/trigger', q, gq, 0o600),
            ('conf/postern.conf', root, rootg, 0o644), ('conf/aliases', root, rootg, 0o644),
            ('conf/recipients', root, rootg, 0o644), ('conf/mailboxes', root, rootg, 0o644),
            ('conf/users', u('postern-auth'), g('postern-auth'), 0o600),
            ('conf/tls/key.pem', u('postern-tls'), g('postern-tls'), 0o600),
            ('conf/tls/cert.pem', root, rootg, 0o644),
        ]
        for h in '0123456789ABCDEF':
            table += [('queue/mess/' + h, q, gq, 0o700), ('queue/env/' + h, q, gq, 0o700)]
        for rel, o, gr, mode in table:
            with self.subTest(path=rel):
                self.assertEqual(owner(os.path.join(r, rel)), (o, gr, mode))
        self.assertTrue(stat.S_ISFIFO(os.lstat(os.path.join(r, 'queue/lock/trigger')).st_mode))
        self.assertEqual(os.listdir(os.path.join(r, 'empty')), [])
        # the certificate is a certificate and the key matches it
        cert = subprocess.run(['openssl', 'x509', '-in', os.path.join(r, 'conf/tls/cert.pem'),
                               '-noout', '-pubkey'], stdout=subprocess.PIPE, check=True).stdout
        key = subprocess.run(['openssl', 'pkey', '-in', os.path.join(r, 'conf/tls/key.pem'),
                              '-pubout'], stdout=subprocess.PIPE, check=True).stdout
        self.assertEqual(cert, key)
        with open(os.path.join(r, 'conf/aliases')) as f:
            aliases = f.read()
        self.assertRegex(aliases, r'(?m)^postmaster:\s*\S')
        self.assertRegex(aliases, r'(?m)^abuse:\s*\S')

    def test_secrets_unreachable_by_network_uids(self):
        """DESIGN.md: no uid that parses network input can read the user
        database or the TLS key, or write the queue (tried for real, as
        each system user)."""
        need_root(self)
        r = self.inst.root
        probe = textwrap.dedent('''
            import os, sys
            def can(f):
                try:
                    f(); return 1
                except OSError:
                    return 0
            r = sys.argv[1]
            print(can(lambda: open(r + "/conf/users").close()),
                  can(lambda: open(r + "/conf/tls/key.pem").close()),
                  can(lambda: os.close(os.open(r + "/queue/tmp/probe", os.O_CREAT | os.O_WRONLY, 0o600))),
                  can(lambda: os.listdir(r + "/queue/todo")),
                  can(lambda: open(r + "/conf/recipients").close()))
        ''')
        def as_user(name):
            pw = pwd.getpwnam(name)
            def drop():
                os.setgroups(os.getgrouplist(name, pw.pw_gid))
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)
            out = subprocess.run(['python3', '-c', probe, r], preexec_fn=drop,
                                 stdout=subprocess.PIPE, check=True, universal_newlines=True).stdout
            return tuple(int(x) for x in out.split())
        #                 users key queue-write queue-read recipients
        want = {'postern-smtp':   (0, 0, 0, 0, 1),
                'postern-pop3':   (0, 0, 0, 0, 1),
                'postern-remote': (0, 0, 0, 0, 1),
                'postern-tls':    (0, 1, 0, 0, 1),
                'postern-auth':   (1, 0, 0, 0, 1),
                'postern-log':    (0, 0, 0, 0, 1),
                'postern-queue':  (0, 0, 1, 1, 1)}
        for name, expect in want.items():
            with self.subTest(user=name):
                self.assertEqual(as_user(name), expect)

    def test_conf_written_from_options(self):
        with open(self.inst.path('conf', 'postern.conf')) as f:
            conf = f.read()
        self.assertIn('hostname = mail.example.test\n', conf)
        self.assertIn('local_domains = example.test localhost\n', conf)
        for name, port in self.inst.ports.items():
            self.assertIn('%s_listen = 127.0.0.1:%d\n' % (name, port), conf)
        if harness.have('postern-confcheck'):
            r = subprocess.run([self.inst.bin('postern-confcheck'), self.inst.root],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            self.assertEqual(r.returncode, 0, r.stdout)

    def test_commented_defaults_are_valid(self):
        """Every '#key = value' line of the written postern.conf, uncommented,
        is accepted by the daemons' parser (the template stays true)."""
        need(self, 'postern-confcheck')
        import re
        path = self.inst.path('conf', 'postern.conf')
        with open(path) as f:
            text = f.read()
        keys = re.findall(r'(?m)^#([a-z0-9_]+) = ', text)
        self.assertGreaterEqual(len(keys), 15)
        with open(path, 'w') as f:
            f.write(re.sub(r'(?m)^#([a-z0-9_]+ = )', r'\1', text))
        r = subprocess.run([self.inst.bin('postern-confcheck'), self.inst.root],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
        self.assertEqual(r.returncode, 0, r.stdout)

    def test_programs_installed(self):
        for name in os.listdir(harness.BIN):
            src = os.path.join(harness.BIN, name)
            if name in ('deps', 'run-demo') or not os.access(src, os.X_OK) or os.path.isdir(src):
                continue
            with self.subTest(program=name):
                dst = self.inst.bin(name)
                self.assertEqual(sha(dst), sha(src))
                if name == 'queue-inject':
                    self.assertEqual(owner(dst)[0], u('postern-queue'))
                    self.assertEqual(owner(dst)[2], 0o4711)
                else:
                    self.assertEqual(owner(dst)[0], u('root'))
                    self.assertEqual(owner(dst)[2], 0o755)
        self.assertFalse(os.path.exists(self.inst.bin('deps')))

    def test_services_written_for_present_daemons(self):
        """ROOT/service/<prog>/{run,notification-fd,log/run}: the source
        tree's service/ templates filled in, byte for byte what setup has
        always written, modes 755/644/755."""
        written = 0
        for s in harness.SERVICES:
            d = self.inst.path('service', s)
            with self.subTest(service=s):
                if not harness.have(s):
                    self.assertFalse(os.path.exists(d), 'no service without its program')
                    continue
                written += 1
                got = service_files(self.inst.root, s)
                self.assertEqual({f: t for f, (t, _) in got.items()},
                                 service_golden(self.inst.root, s))
                self.assertEqual({f: t for f, (t, _) in got.items()},
                                 render_templates(os.path.join(REPO, 'service'), self.inst.root, s))
                self.assertEqual({f: m for f, (_, m) in got.items()}, dict(SERVICE_FILES))
                self.assertEqual(owner(self.inst.path('log', s))[0], u('postern-log'))
        self.assertGreater(written, 0, 'no service program built: nothing was compared')

    def test_service_files_written_only_when_different(self):
        need(self, 'smtp-listener')
        d = self.inst.path('service', 'smtp-listener')
        ino = {f: os.lstat(os.path.join(d, f)).st_ino for f, _ in SERVICE_FILES}
        self.assertEqual(self.setup_again().returncode, 0)
        self.assertEqual({f: os.lstat(os.path.join(d, f)).st_ino for f, _ in SERVICE_FILES}, ino,
                         'an unchanged service file was rewritten')
        # drift: a changed run, a bad mode; setup rewrites the one, repairs the other
        with open(os.path.join(d, 'run'), 'a') as f:
            f.write('# local edit\n')
        os.chmod(os.path.join(d, 'log', 'run'), 0o700)
        os.chmod(os.path.join(d, 'notification-fd'), 0o600)
        self.assertEqual(self.setup_again().returncode, 0)
        got = service_files(self.inst.root, 'smtp-listener')
        self.assertEqual({f: t for f, (t, _) in got.items()}, service_golden(self.inst.root, 'smtp-listener'))
        self.assertEqual({f: m for f, (_, m) in got.items()}, dict(SERVICE_FILES))
        self.assertNotEqual(os.lstat(os.path.join(d, 'run')).st_ino, ino['run'])
        self.assertEqual(os.lstat(os.path.join(d, 'log', 'run')).st_ino, ino['log/run'])
        self.assertFalse([f for f in os.listdir(d) if f.endswith('.new')], 'a .new file left')

    def test_idempotent_keeps_data(self):
        r = self.inst.root
        cert, key = sha(r + '/conf/tls/cert.pem'), sha(r + '/conf/tls/key.pem')
        with open(r + '/conf/postern.conf', 'a') as f:
            f.write('max_recipients = 7\n')
        with open(r + '/conf/users', 'w') as f:
            f.write('someone:20000:20000:/nonexistent/Maildir:$argon2id$x\n')
        with open(r + '/conf/aliases', 'a') as f:
            f.write('sales: someone\n')
        os.chmod(r + '/queue/todo', 0o755)          # drift that setup repairs
        os.chmod(r + '/conf/tls/key.pem', 0o644)
        if IS_ROOT:
            os.chown(r + '/queue/todo', 0, 0)
        out = self.setup_again('--hostname', 'other.test', '--domain', 'other.test')
        self.assertEqual(out.returncode, 0, out.stdout)
        self.assertEqual(sha(r + '/conf/tls/cert.pem'), cert)
        self.assertEqual(sha(r + '/conf/tls/key.pem'), key)
        with open(r + '/conf/postern.conf') as f:
            conf = f.read()
        self.assertIn('max_recipients = 7', conf)
        self.assertIn('hostname = mail.example.test', conf)  # kept, not rewritten
        with open(r + '/conf/users') as f:
            self.assertIn('someone:20000', f.read())
        with open(r + '/conf/aliases') as f:
            self.assertIn('sales: someone', f.read())
        self.assertEqual(owner(r + '/queue/todo'), (u('postern-queue'), g('postern-queue'), 0o700))
        self.assertEqual(owner(r + '/conf/tls/key.pem')[2], 0o600)
        chk = self.setup_again('--check')
        self.assertEqual(chk.returncode, 0, chk.stdout)

    def test_queue_repair_follows_no_swapped_symlink(self):
        # ROOT/queue and what is in it belong to postern-queue: a process
        # that has become postern-queue can make queue/tmp/3 need a repair
        # (chmod) and swap it for a symlink once setup has looked at it;
        # root's repair must not then chown and chmod the link's target
        need_root(self, 'the repair is root\'s')
        if not shutil.which('strace'):
            self.skipTest('needs strace')
        victim = tempfile.mkdtemp(prefix='postern-victim.')
        self.addCleanup(shutil.rmtree, victim, True)
        os.chmod(victim, 0o755)
        q3 = self.inst.path('queue', 'tmp', '3')
        os.chmod(q3, 0o755)
        # stop the `stat` that reads queue/tmp/3's owner and mode, after it did
        p = subprocess.Popen(['strace', '-f', '-o', '/dev/null', '-P', q3, '-e', 'trace=statx',
                              '-e', 'inject=statx:signal=STOP:when=1',
                              os.path.join(harness.BIN, 'postern-setup'), '--root', self.inst.root],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            pid = None
            for _ in range(800):
                pid = injected_stop(lambda argv, exe: q3.encode() in argv and os.path.basename(argv[0]) == b'stat')
                if pid or p.poll() is not None:
                    break
                time.sleep(0.025)
            self.assertIsNotNone(pid, 'postern-setup\'s stat of queue/tmp/3 never stopped')
            os.rename(q3, q3 + '.moved')
            os.symlink(victim, q3)
            self.assertTrue(cont_until_finished(pid, p, 120), 'postern-setup never finished')
            out = p.stdout.read().decode(errors='replace')
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        st = os.stat(victim)
        self.assertEqual((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)), (0, 0, 0o755),
                         'the symlink\'s target was repaired:\n' + out)

    def test_check_reports_problems(self):
        r = self.inst.root
        chk = self.setup_again('--check')
        self.assertEqual(chk.returncode, 0, chk.stdout)
        self.assertIn(': ok', chk.stdout)
        # postmaster -> root, and root is no postern user: a warning, not a problem
        self.assertIn("warning: the postmaster alias points at 'root'", chk.stdout)
        if IS_ROOT:
            os.chown(r + '/queue/todo', 0, 0)
        else:
            os.chmod(r + '/queue/todo', 0o755)
        with open(r + '/conf/aliases', 'a') as f:
            f.write('this line is wrong\n')
        with open(r + '/conf/aliases') as f:
            alias_line = len(f.read().splitlines())
        chk = self.setup_again('--check')
        self.assertEqual(chk.returncode, 1, chk.stdout)
        self.assertIn('queue/todo', chk.stdout)
        self.assertIn('chown %s:%s %s/queue/todo' % (u('postern-queue'), g('postern-queue'), r),
                      chk.stdout)
        self.assertIn('conf/aliases:%d:' % alias_line, chk.stdout)
        # --check changes nothing
        self.assertNotEqual(owner(r + '/queue/todo'), (u('postern-queue'), g('postern-queue'), 0o700))

    def test_check_postmaster_fix_can_be_run(self):
        """The postmaster warning's fix names ROOT/bin/postern-user (no
        postern-user is on PATH) and, for --postmaster you, the user to
        add: "add NAME, then set postmaster: NAME" told an operator who
        had set it already to do it again."""
        r = self.inst.root
        chk = self.setup_again('--check')
        self.assertIn('fix: %s/bin/postern-user --root %s add NAME, then' % (r, r), chk.stdout)
        with open(r + '/conf/aliases') as f:
            text = f.read()
        with open(r + '/conf/aliases', 'w') as f:
            f.write(text.replace('postmaster: root', 'postmaster: you'))
        chk = self.setup_again('--check')
        self.assertIn("warning: the postmaster alias points at 'you'", chk.stdout)
        self.assertIn('fix: %s/bin/postern-user --root %s add you (or point' % (r, r), chk.stdout)

    def test_check_finds_stale_run_script(self):
        need(self, 'smtp-listener')
        run = self.inst.path('service', 'smtp-listener', 'run')
        with open(run) as f:
            text = f.read()
        with open(run, 'w') as f:
            f.write(text.replace(self.inst.root, '/some/old/root'))
        chk = self.setup_again('--check')
        self.assertEqual(chk.returncode, 1, chk.stdout)
        self.assertIn('service/smtp-listener/run does not run', chk.stdout)
        self.assertEqual(self.setup_again().returncode, 0)   # setup rewrites it
        self.assertEqual(self.setup_again('--check').returncode, 0)

    def test_check_finds_unreachable_root(self):
        need_root(self, 'a root-owned 0700 parent only stops other users')
        parent = tempfile.mkdtemp(prefix='postern-parent-')   # mode 0700
        try:
            r = subprocess.run([os.path.join(harness.BIN, 'postern-setup'), '--root', parent + '/x'],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               universal_newlines=True)
            self.assertEqual(r.returncode, 0, r.stdout)
            self.assertIn('warning: %s is not searchable' % parent, r.stdout)
            r = subprocess.run([os.path.join(harness.BIN, 'postern-setup'), '--root', parent + '/x',
                                '--check'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               universal_newlines=True)
            self.assertEqual(r.returncode, 1, r.stdout)
            self.assertIn('chmod o+x ' + parent, r.stdout)
        finally:
            shutil.rmtree(parent)

    def test_check_names_bad_conf_line(self):
        need(self, 'postern-confcheck')
        r = self.inst.root
        with open(r + '/conf/postern.conf', 'a') as f:
            f.write('max_recipients = lots\n')
        with open(r + '/conf/postern.conf') as f:
            line = len(f.read().splitlines())
        chk = self.setup_again('--check')
        self.assertEqual(chk.returncode, 1, chk.stdout)
        self.assertIn('postern.conf:%d:' % line, chk.stdout)
        self.assertIn('max_recipients', chk.stdout)

    def test_check_finds_broken_maildir(self):
        """README's troubleshooting sends a POP3 "Cannot open/lock the
        mailbox" and a deferred "Maildir delivery failed" to --check: it
        names the user's Maildir and a fix that works when run as printed
        (it said "ok" for a Maildir owned by root)."""
        need(self, 'postern-user')
        self.inst.add_user('maud', 'pw')
        md = self.inst.maildir('maud')
        home = os.path.dirname(md)
        uid = os.stat(md).st_uid
        chk = self.setup_again('--check')
        self.assertEqual(chk.returncode, 0, chk.stdout)

        def fix_works(breakage, expect):
            chk = self.setup_again('--check')
            self.assertEqual(chk.returncode, 1, breakage + ':\n' + chk.stdout)
            self.assertIn('the Maildir of user maud', chk.stdout)
            self.assertIn(expect, chk.stdout)
            lines = chk.stdout.splitlines()
            fixes = [l.split('fix: ', 1)[1] for prev, l in zip(lines, lines[1:])
                     if ': problem: ' in prev and l.startswith('    fix: ')]
            self.assertEqual(len(fixes), 1, chk.stdout)
            r = subprocess.run(['sh', '-ec', fixes[0]], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True)
            self.assertEqual(r.returncode, 0, fixes[0] + ': ' + r.stdout)
            chk = self.setup_again('--check')
            self.assertEqual(chk.returncode, 0, 'after ' + fixes[0] + ':\n' + chk.stdout)

        if IS_ROOT:
            os.chown(md + '/new', 0, 0)
            fix_works('new/ owned by root', '%s/new is owned by uid 0, not %d' % (md, uid))
            self.assertEqual(os.stat(md + '/new').st_uid, uid)
        os.chmod(md, 0o707)
        fix_works('Maildir o+w', '%s is writable by others' % md)
        shutil.rmtree(home)
        fix_works('Maildir gone', '%s, is missing' % md)
        for p in (home, md, md + '/new', md + '/cur', md + '/tmp'):
            self.assertEqual(os.stat(p).st_uid, uid, p)
        # uid 0: POP3's "Mailbox misconfigured"
        with open(self.inst.path('conf', 'mailboxes'), 'a') as f:
            f.write('rooty:0:0:%s/mail/rooty/Maildir\n' % self.inst.root)
        chk = self.setup_again('--check')
        self.assertEqual(chk.returncode, 1, chk.stdout)
        self.assertIn('user rooty has uid or gid 0', chk.stdout)
        self.assertIn('postern-user --root %s del rooty' % self.inst.root, chk.stdout)

    def test_check_finds_extra_setuid(self):
        r = self.inst.root
        p = r + '/bin/extra'
        shutil.copy('/bin/true', p)
        os.chmod(p, 0o4755)
        chk = self.setup_again('--check')
        self.assertEqual(chk.returncode, 1, chk.stdout)
        self.assertIn('bin/extra is setuid', chk.stdout)

    def test_refuses_bad_ports(self):
        d = tempfile.mkdtemp(prefix='postern-bad-')
        try:
            r = subprocess.run([os.path.join(harness.BIN, 'postern-setup'), '--root', d + '/x',
                                '--ports', 'smtp=25,imap=143'], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True)
            self.assertEqual(r.returncode, 100)
            self.assertIn('imap', r.stdout)
            self.assertFalse(os.path.exists(d + '/x/conf/postern.conf'))
        finally:
            shutil.rmtree(d)


class ServiceTemplates(unittest.TestCase):
    """Where postern-setup takes the service templates from, and what a ROOT
    path can hold (it is substituted into them)."""

    def setUp(self):
        need(self, 'postern-setup')
        self.tmp = tempfile.mkdtemp(prefix='postern-tpl-')
        os.chmod(self.tmp, 0o755)
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def run_setup(self, setup, root, *extra):
        return subprocess.run([setup, '--root', root, '--hostname', 'tpl.test', '--listen', '127.0.0.1']
                              + list(extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=120)

    def test_listen_addresses(self):
        """Without --listen every address is bound, IPv6's too where the
        host has IPv6 (the README asks for an AAAA record then); --listen
        is repeatable, each address on every port's line; an address in
        brackets or a name is refused before anything is written."""
        setup = os.path.join(harness.BIN, 'postern-setup')

        def listen_lines(root):
            with open(os.path.join(root, 'conf', 'postern.conf')) as f:
                return [l for l in f.read().splitlines() if '_listen =' in l]
        root = os.path.join(self.tmp, 'default')
        r = subprocess.run([setup, '--root', root, '--hostname', 'tpl.test', '--ports', 'smtp=25,pop3s=995'],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                           timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout)
        with open('/proc/net/if_inet6') as f:
            ipv6 = bool(f.read().strip())
        if ipv6:
            want = ['smtp_listen = 0.0.0.0:25 [::]:25', 'pop3s_listen = 0.0.0.0:995 [::]:995']
        else:
            want = ['smtp_listen = 0.0.0.0:25', 'pop3s_listen = 0.0.0.0:995']
        self.assertEqual(listen_lines(root), want)
        root = os.path.join(self.tmp, 'two')
        r = self.run_setup(setup, root, '--listen', '::1', '--ports', 'smtp=2525,submission=2587')
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertEqual(listen_lines(root), ['smtp_listen = 127.0.0.1:2525 [::1]:2525',
                                              'submission_listen = 127.0.0.1:2587 [::1]:2587'])
        conf = subprocess.run([os.path.join(harness.BIN, 'postern-confcheck'), root],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
        self.assertEqual(conf.returncode, 0, conf.stdout)
        for bad in ('[::1]', 'localhost', '127.0.0.1:25'):
            root = os.path.join(self.tmp, 'bad')
            r = subprocess.run([setup, '--root', root, '--listen', bad], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
            self.assertEqual(r.returncode, 100, (bad, r.stdout))
            self.assertIn("--listen '%s'" % bad, r.stdout)
            self.assertFalse(os.path.exists(root), bad)

    def test_names_must_be_domain_names(self):
        """--hostname and --domain end up in postern.conf, whose parser
        refuses a name that is not a domain name; setup refuses them first,
        naming the option, and writes nothing."""
        setup = os.path.join(harness.BIN, 'postern-setup')
        for extra in (('--hostname', 'mail_host.example'), ('--hostname', 'mail.example.'),
                      ('--hostname', 'h' * 244), ('--domain', 'a..b'), ('--domain', '-x.example')):
            root = os.path.join(self.tmp, 'bad')
            r = subprocess.run([setup, '--root', root, '--listen', '127.0.0.1'] + list(extra),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               universal_newlines=True, timeout=120)
            self.assertEqual(r.returncode, 100, (extra, r.stdout))
            self.assertIn("%s '%s' is not a domain name" % extra, r.stdout)
            self.assertFalse(os.path.exists(root), extra)
        good = os.path.join(self.tmp, 'good')
        r = self.run_setup(setup, good, '--domain', 'xn--bcher-kva.example')
        self.assertEqual(r.returncode, 0, r.stdout)
        conf = subprocess.run([os.path.join(harness.BIN, 'postern-confcheck'), good],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
        self.assertEqual(conf.returncode, 0, conf.stdout)
        with open(os.path.join(good, 'conf', 'postern.conf'), 'a') as f:
            f.write('hostname = mail_host.example\n')
        conf = subprocess.run([os.path.join(harness.BIN, 'postern-confcheck'), good],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
        self.assertEqual(conf.returncode, 100, conf.stdout)
        self.assertIn("hostname: not a domain name (character '_'", conf.stdout)

    def fake_bin(self, built_from):
        """tmp/bin with a copy of postern-setup (its BUILT_FROM line kept or
        emptied) and a stand-in smtp-listener."""
        import re
        b = os.path.join(self.tmp, 'bin')
        os.mkdir(b)
        os.chmod(b, 0o755)
        with open(os.path.join(harness.BIN, 'postern-setup')) as f:
            text = f.read()
        self.assertEqual(len(re.findall(r'(?m)^BUILT_FROM="[^"@]*"$', text)), 1,
                         'the built postern-setup has one BUILT_FROM line')
        if not built_from:
            text = re.sub(r'(?m)^BUILT_FROM=".*"$', 'BUILT_FROM=""', text)
        for name, body in (('postern-setup', text), ('smtp-listener', '#!/bin/sh\n')):
            with open(os.path.join(b, name), 'w') as f:
                f.write(body)
            os.chmod(os.path.join(b, name), 0o755)
        return os.path.join(b, 'postern-setup')

    def test_root_with_dots_and_plus(self):
        """. + - _ are allowed in ROOT (and mean something to sed and grep):
        the run scripts carry the path exactly, and --check agrees."""
        need(self, 'smtp-listener')
        root = os.path.join(self.tmp, 'a.b+c', 'r_o.o+t-1')
        os.mkdir(os.path.dirname(root))
        os.chmod(os.path.dirname(root), 0o755)
        r = self.run_setup(os.path.join(harness.BIN, 'postern-setup'), root)
        self.assertEqual(r.returncode, 0, r.stdout)
        got = service_files(root, 'smtp-listener')
        self.assertEqual({f: t for f, (t, _) in got.items()}, service_golden(root, 'smtp-listener'))
        r = self.run_setup(os.path.join(harness.BIN, 'postern-setup'), root, '--check')
        self.assertEqual(r.returncode, 0, r.stdout)

    def test_root_with_other_characters_refused(self):
        """Characters special to sed (& | \\), the shell or a run script are
        refused before anything is made."""
        for ch in ('&', '|', '\\', ' ', '$', '#', "'", '"', ';', '@'):
            with self.subTest(char=ch):
                root = os.path.join(self.tmp, 'r%sx' % ch)
                r = self.run_setup(os.path.join(harness.BIN, 'postern-setup'), root)
                self.assertEqual(r.returncode, 100, r.stdout)
                self.assertIn('use only letters, digits and / . _ + -', r.stdout)
                self.assertFalse(os.path.exists(root))

    def test_templates_of_the_build_tree(self):
        """A copy of bin/postern-setup elsewhere (as make sanitize's
        build-san/bin is) finds the templates of the tree it was built from."""
        setup = self.fake_bin(built_from=True)
        root = os.path.join(self.tmp, 'root')
        r = self.run_setup(setup, root)
        self.assertEqual(r.returncode, 0, r.stdout)
        got = service_files(root, 'smtp-listener')
        self.assertEqual({f: t for f, (t, _) in got.items()}, service_golden(root, 'smtp-listener'))
        self.assertEqual({f: m for f, (_, m) in got.items()}, dict(SERVICE_FILES))

    def test_templates_beside_the_program(self):
        """tmp/bin/postern-setup reads tmp/service/ (as bin/ reads the source
        tree's service/): a change to a template shows in ROOT; without
        templates it refuses before making anything, and --check needs none."""
        setup = self.fake_bin(built_from=False)
        tdir = os.path.join(self.tmp, 'service')
        shutil.copytree(os.path.join(REPO, 'service'), tdir)
        with open(os.path.join(tdir, 'run'), 'a') as f:
            f.write('# @PROG@ from the copy\n')
        root = os.path.join(self.tmp, 'root')
        r = self.run_setup(setup, root)
        self.assertEqual(r.returncode, 0, r.stdout)
        got = service_files(root, 'smtp-listener')
        want = service_golden(root, 'smtp-listener')
        want['run'] += '# smtp-listener from the copy\n'
        self.assertEqual({f: t for f, (t, _) in got.items()}, want)
        self.assertEqual(got, {f: (t, m) for (f, m), t in
                               zip(SERVICE_FILES, [render_templates(tdir, root, 'smtp-listener')[f]
                                                   for f, _ in SERVICE_FILES])})
        # a placeholder setup does not know is an error, not a run script
        with open(os.path.join(tdir, 'log', 'run'), 'a') as f:
            f.write('# @HOST@\n')
        r = self.run_setup(setup, root)
        self.assertEqual(r.returncode, 100, r.stdout)
        self.assertIn('unknown @PLACEHOLDER@', r.stdout)
        with open(os.path.join(root, 'service', 'smtp-listener', 'log', 'run')) as f:
            self.assertEqual(f.read(), want['log/run'])
        # no templates: nothing is made
        shutil.rmtree(tdir)
        r = self.run_setup(setup, os.path.join(self.tmp, 'root2'))
        self.assertEqual(r.returncode, 100, r.stdout)
        self.assertIn('no s6 service templates', r.stdout)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, 'root2')))
        r = self.run_setup(setup, root, '--check')
        self.assertEqual(r.returncode, 0, r.stdout)


FAKE_DAEMON = r'''#!/usr/bin/env python3
# a stand-in daemon for the harness's own test: "PROG [-d FD] ROOT"
import os, signal, socket, sys
a = sys.argv[1:]
fd = None
if a[0] == '-d':
    fd = int(a[1]); a = a[2:]
root = a[0]
addr = None
for line in open(root + '/conf/postern.conf'):
    k, _, v = line.partition('=')
    if k.strip() == 'smtp_listen':
        addr = v.split()[0]
host, port = addr.rsplit(':', 1)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, int(port)))
s.listen(5)
signal.signal(signal.SIGHUP, lambda *x: print('fake: info: - reload', file=sys.stderr, flush=True))
print('fake: info: - ready pid=%d' % os.getpid(), file=sys.stderr, flush=True)
os.write(fd, b'\n'); os.close(fd)
while True:
    c, _ = s.accept()
    f = c.makefile('rwb')
    f.write(b'220 fake ESMTP\r\n'); f.flush()
    for line in f:
        if line.upper().startswith(b'QUIT'):
            f.write(b'221 bye\r\n'); f.flush(); break
        f.write(b'250-fake\r\n250 ok\r\n'); f.flush()
    c.close()
'''


class PosternUserMaildir(unittest.TestCase):
    """postern-user add runs as root but makes the Maildir in a directory
    the mail user owns (their home, ROOT/mail/NAME)."""

    NAME = 'pu-swapper'

    def setUp(self):
        need(self, 'postern-setup', 'postern-user')
        need_root(self, 'needs a Unix account and root to run postern-user for it')
        if not shutil.which('strace'):
            self.skipTest('needs strace')
        subprocess.run(['userdel', self.NAME], capture_output=True)
        self.home = tempfile.mkdtemp(prefix='postern-home.')
        self.target = tempfile.mkdtemp(prefix='postern-target.')
        subprocess.run(['useradd', '-d', self.home, '-M', '-s', '/usr/sbin/nologin', self.NAME], check=True)
        self.pw = pwd.getpwnam(self.NAME)
        os.chmod(self.home, 0o755)
        os.chown(self.home, self.pw.pw_uid, self.pw.pw_gid)
        self.inst = Instance(services=[]).setup()

    def tearDown(self):
        self.inst.stop()
        shutil.rmtree(self.home, ignore_errors=True)
        shutil.rmtree(self.target, ignore_errors=True)
        subprocess.run(['userdel', self.NAME], capture_output=True)

    def test_maildir_swapped_for_a_symlink_while_it_is_made(self):
        # the user's Maildir is a real directory when postern-user opens it
        # and a symlink to a directory of root's (here: target, standing for
        # "/", whose tmp/ stands for /tmp) when the next part is made: as
        # root, postern-user then chowned the user root's directory
        victim = os.path.join(self.target, 'tmp')
        os.mkdir(victim, 0o755)
        md = os.path.join(self.home, 'Maildir')
        os.mkdir(md, 0o700)
        os.chown(md, self.pw.pw_uid, self.pw.pw_gid)
        # stop postern-user (each process of it: its own count) right after
        # its second mkdir, the one of Maildir/tmp
        p = subprocess.Popen(['strace', '-f', '-o', '/dev/null', '-e', 'trace=mkdir,mkdirat',
                              '-e', 'inject=mkdir,mkdirat:signal=STOP:when=2',
                              self.inst.bin('postern-user'), '--root', self.inst.root,
                              'add', 'swapper', '--unix-account', self.NAME],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            p.stdin.write(b'pw-swapper\n')
            p.stdin.close()
            pid = None
            for _ in range(400):
                pid = injected_stop(lambda argv, exe: exe == self.inst.bin('postern-user'))
                if pid or p.poll() is not None:
                    break
                time.sleep(0.025)
            self.assertIsNotNone(pid, 'postern-user never stopped at its second mkdir')
            os.rename(md, md + '.real')
            os.symlink(self.target, md)
            cont_until_finished(pid, p, 60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        st = os.stat(victim)
        self.assertEqual((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)), (0, 0, 0o755),
                         'root\'s directory was handed to the user: ' + p.stderr.read().decode(errors='replace'))
        self.assertEqual(sorted(os.listdir(self.target)), ['tmp'])

    def test_caller_ignoring_sigchld(self):
        """a script that ignores SIGCHLD (exec keeps it) ran postern-user
        add: the wait for the child that makes the Maildir failed with
        ECHILD, and it died (111) with the user not added"""
        r = subprocess.run([self.inst.bin('postern-user'), '--root', self.inst.root, 'add', 'chlduser'],
                           input=b'pw-chld\n', capture_output=True, timeout=60,
                           preexec_fn=lambda: signal.signal(signal.SIGCHLD, signal.SIG_IGN))
        self.assertEqual((r.returncode, r.stderr), (0, b''))
        listed = self.inst.run('postern-user', '--root', self.inst.root, 'list').stdout
        self.assertRegex(listed, r'(?m)^chlduser ')
        self.assertTrue(os.path.isdir(os.path.join(self.inst.maildir('chlduser'), 'new')))

    def test_maildir_in_home_made_by_the_user(self):
        r = self.inst.run('postern-user', '--root', self.inst.root, 'add', 'homeuser',
                          '--unix-account', self.NAME, input='pw-home\n')
        md = os.path.join(self.home, 'Maildir')
        self.assertIn('maildir=' + md, r.stdout)
        for d in ('', 'tmp', 'new', 'cur'):
            st = os.lstat(os.path.join(md, d))
            with self.subTest(part=d or 'Maildir'):
                self.assertTrue(stat.S_ISDIR(st.st_mode))
                self.assertEqual((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)),
                                 (self.pw.pw_uid, self.pw.pw_gid, 0o700))


class HarnessSelfTest(unittest.TestCase):
    """The harness and the s6 tree, with a stand-in smtp-listener, so this
    runs before (and independently of) the real daemons."""

    def setUp(self):
        need(self, 'postern-setup')
        self.bindir = tempfile.mkdtemp(prefix='postern-fakebin-')
        os.chmod(self.bindir, 0o755)
        shutil.copy(os.path.join(harness.BIN, 'postern-setup'), self.bindir)
        with open(os.path.join(self.bindir, 'smtp-listener'), 'w') as f:
            f.write(FAKE_DAEMON)
        os.chmod(os.path.join(self.bindir, 'smtp-listener'), 0o755)

    def tearDown(self):
        shutil.rmtree(self.bindir, ignore_errors=True)

    def test_start_dialogue_restart_stop(self):
        inst = Instance(bin=self.bindir)
        with inst:
            self.assertEqual(inst.services, ['smtp-listener'])
            self.assertFalse(os.path.exists(inst.path('service', 'pop3-listener')))
            self.assertRegex(inst.svstat('smtp-listener'), r'^up .*ready')
            replies = smtp_dialogue(inst.port('smtp'), [
                (None, '220'), ('EHLO x', '250'), ('QUIT', '221')])
            self.assertEqual(replies[1], '250-fake\n250 ok')
            with self.assertRaises(harness.HarnessError) as cm:
                smtp_dialogue(inst.port('smtp'), [(None, '220'), ('NOOP', '500')])
            self.assertIn('C: NOOP', str(cm.exception))
            inst.wait_log('smtp-listener', 'ready pid=')
            # s6-log timestamps each line (T: ISO 8601) in log/<service>/current
            self.assertRegex(inst.log('smtp-listener'), r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+  fake: info:')
            pid = inst.service_pid('smtp-listener')
            inst.reload('smtp-listener')
            inst.wait_log('smtp-listener', 'reload')
            self.assertEqual(inst.service_pid('smtp-listener'), pid)
            inst.svc('smtp-listener', '-r')
            inst.wait_for(lambda: inst.service_pid('smtp-listener') not in (None, pid))
            inst.wait_ready('smtp-listener')
            smtp_dialogue(inst.port('smtp'), [(None, '220'), ('QUIT', '221')])
            root = inst.root
            self.assertTrue(inst.processes())
        self.assertIsNone(inst.root)
        self.assertFalse(os.path.exists(root))
        left = [p for p in os.listdir('/proc') if p.isdigit() and _proc_mentions(p, root)]
        self.assertEqual(left, [], 'processes left behind')

    def test_service_subset_is_down(self):
        with Instance(bin=self.bindir, services=[]) as inst:
            self.assertEqual(inst.services, [])
            inst.wait_for(lambda: os.path.exists(inst.path('service', 'smtp-listener', 'supervise', 'status')))
            self.assertTrue(inst.svstat('smtp-listener').startswith('down'))
            self.assertFalse(harness.port_open(inst.port('smtp')))
            inst.svc('smtp-listener', '-u')
            inst.wait_ready('smtp-listener')
            self.assertTrue(harness.port_open(inst.port('smtp')))


def _proc_mentions(pid, root):
    try:
        with open('/proc/%s/cmdline' % pid, 'rb') as f:
            return root.encode() in f.read()
    except OSError:
        return False


def ppid(pid):
    try:
        with open('/proc/%d/status' % pid) as f:
            return int(next(l for l in f if l.startswith('PPid:')).split()[1])
    except (OSError, StopIteration):
        return 0


def proc_info(pid):
    """(exe basename, cmdline, (ruid, euid, suid), root dir) of a process, or None."""
    try:
        exe = os.readlink('/proc/%d/exe' % pid)
        with open('/proc/%d/status' % pid) as f:
            st = f.read()
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            cmd = f.read().replace(b'\0', b' ').decode(errors='replace').strip()
        rootdir = os.readlink('/proc/%d/root' % pid)
    except OSError:
        return None
    uids = next(l for l in st.splitlines() if l.startswith('Uid:')).split()[1:4]
    return exe, cmd, tuple(int(x) for x in uids), rootdir


def socket_inodes(pid):
    out = set()
    try:
        for fd in os.listdir('/proc/%d/fd' % pid):
            try:
                t = os.readlink('/proc/%d/fd/%s' % (pid, fd))
            except OSError:
                continue
            if t.startswith('socket:['):
                out.add(int(t[8:-1]))
    except OSError:
        pass
    return out


def tcp_sockets():
    """{inode: (local port, state)} from /proc/net/tcp and tcp6."""
    out = {}
    for name in ('/proc/net/tcp', '/proc/net/tcp6'):
        try:
            with open(name) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for l in lines:
            fields = l.split()
            port = int(fields[1].rsplit(':', 1)[1], 16)
            out[int(fields[9])] = (port, fields[3])
    return out


class RunningInstance(unittest.TestCase):
    """The real daemons under s6."""

    def setUp(self):
        present = [s for s in harness.SERVICES if harness.have(s)]
        if not present:
            self.skipTest('no daemon built yet: ' + ', '.join(harness.SERVICES))
        need(self, 'postern-setup')

    def test_services_up_restart_and_sighup(self):
        with Instance() as inst:
            for s in inst.services:
                with self.subTest(service=s):
                    self.assertRegex(inst.svstat(s), r'^up .*ready', s)
            for s in inst.services:
                with self.subTest(service=s, action='SIGHUP'):
                    pid = inst.service_pid(s)
                    inst.reload(s)
                    time.sleep(1.0)
                    self.assertEqual(inst.service_pid(s), pid, '%s died on SIGHUP:\n%s' % (s, inst.log(s)[-2000:]))
                    self.assertRegex(inst.svstat(s), r'^up ')
            for s in inst.services:
                with self.subTest(service=s, action='restart'):
                    pid = inst.service_pid(s)
                    inst.svc(s, '-r')
                    inst.wait_for(lambda: inst.service_pid(s) not in (None, pid), what=s + ' restart')
                    inst.wait_ready(s)
            if 'smtp-listener' in inst.services:
                smtp_dialogue(inst.port('smtp'), [(None, '220'), ('QUIT', '221')])

    def test_serves_ipv4_and_ipv6_alike(self):
        """An instance set up with --listen 127.0.0.1 --listen ::1 takes
        SMTP and POP3 on both, each port once for both families."""
        need(self, 'smtp-listener', 'pop3-listener', 'auth-checker')
        with open('/proc/net/if_inet6') as f:
            if not f.read().strip():
                self.skipTest('this host has no IPv6')
        with Instance(listen=('127.0.0.1', '::1'), users={'alice': 'pw-alice'}) as inst:
            for host in ('127.0.0.1', '::1'):
                with self.subTest(host=host):
                    smtp_dialogue(inst.port('smtp'), [(None, '220'), ('EHLO c.example', '250'),
                                                      ('QUIT', '221')], host=host)
                    harness.pop3_dialogue(inst.port('pop3'), [(None, '+OK'), ('USER alice', '+OK'),
                                                              ('PASS pw-alice', '+OK'),
                                                              ('QUIT', '+OK')], host=host)

    def test_systemd_unit_runs_reloads_and_stops_the_tree(self):
        """ROOT/postern.service, as systemd would use it (there is no
        systemd as PID 1 here, so this does what it does): ExecStart runs
        the tree, each ExecReload has its daemon read postern.conf again,
        and the stop (ExecStop, s6-svscanctl -t; then KillMode=control-group,
        the default: SIGTERM to every process of the unit at once) lets a
        message being received finish with 250, gives an idle session 421,
        ends every process well within TimeoutStopSec, and loses none of the
        daemons' last log lines (the loggers run s6-log -p, which leaves on
        end of input, not SIGTERM). test_restart does it under load."""
        need(self, 'smtp-listener', 'queue-manager', 'pop3-listener', 'auth-checker')
        inst = Instance(users={'alice': 'pw-alice'}).setup()
        self.addCleanup(inst.stop)
        unit = inst.path('postern.service')
        with open(unit) as f:
            text = f.read()
        keys = {}
        for line in text.splitlines():
            if '=' in line and not line.startswith('#'):
                k, v = line.split('=', 1)
                keys.setdefault(k, []).append(v)
        self.assertNotIn('KillMode', keys)            # control-group, as simulated below
        self.assertEqual(keys['ExecStop'], ['%s -t %s' % (shutil.which('s6-svscanctl') or '/usr/bin/s6-svscanctl',
                                                          inst.path('service'))])
        self.assertEqual(keys['WantedBy'], ['multi-user.target'])
        if shutil.which('systemd-analyze'):
            r = subprocess.run(['systemd-analyze', 'verify', unit], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True)
            self.assertEqual(r.returncode, 0, r.stdout)
        start = keys['ExecStart'][0].split()
        self.assertEqual(start[1:], [inst.path('service')])
        inst.svscan = subprocess.Popen(start, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
        for s in inst.services:
            inst.wait_ready(s, 20)
        self.assertEqual(sorted(v.split()[-1] for v in keys['ExecReload']),
                         sorted(inst.path('service', s) for s in inst.services))
        pids = {s: inst.service_pid(s) for s in inst.services}
        for cmd in keys['ExecReload']:
            subprocess.run(cmd.split(), check=True)
        inst.wait_for(lambda: 'event=reload' in inst.log('smtp-listener'), what='smtp-listener reload')
        self.assertEqual({s: inst.service_pid(s) for s in inst.services}, pids)

        def smtp(c, cmd, code):
            if cmd is not None:
                c.send(cmd)
            reply = c.smtp_reply()
            self.assertTrue(reply.startswith(code), c.transcript)

        def pop(c, cmd):
            c.send(cmd)
            self.assertTrue(c.pop3_reply().startswith('+OK'), c.transcript)
        busy = Conn(inst.port('smtp'))
        for cmd, code in ((None, '220'), ('EHLO c.example', '250'), ('MAIL FROM:<a@example.org>', '250'),
                          ('RCPT TO:<alice@example.test>', '250'), ('DATA', '354')):
            smtp(busy, cmd, code)
        busy.send(b'Subject: mid-stop\r\n\r\nfirst half\r\n')
        idle = Conn(inst.port('smtp'))
        smtp(idle, None, '220')
        smtp(idle, 'EHLO c.example', '250')
        p3 = Conn(inst.port('pop3'))
        self.assertTrue(p3.pop3_reply().startswith('+OK'))
        pop(p3, 'USER alice')
        pop(p3, 'PASS pw-alice')

        procs = harness.descendants(inst.svscan.pid)
        self.assertGreater(len(procs), 10, procs)
        t0 = time.time()
        subprocess.run(shlex.split(keys['ExecStop'][0]), check=True, timeout=30)
        harness.signal_all(procs, signal.SIGTERM)
        time.sleep(0.3)
        busy.send(b'second half\r\n.\r\n')
        smtp(busy, None, '250 2.0.0 Ok: queued')
        idle.send('NOOP')
        self.assertRegex(idle.smtp_reply(), r'^421 4\.3\.2 ')

        left, stuck = list(procs), {}
        while time.time() - t0 < 25:
            left = [p for p in procs if harness.running(p)]
            if not left:
                break
            harness.unstick_leak_checks(left, stuck)     # a sanitizer build's (wait_down)
            time.sleep(0.1)
        self.assertEqual(left, [], 'still running %.0f s after the stop: %s'
                         % (time.time() - t0, harness.describe(left)))
        inst.svscan.wait(5)
        self.assertLess(time.time() - t0, 15)
        for s in ('smtp-listener', 'queue-manager', 'pop3-listener', 'auth-checker'):
            with self.subTest(last_log_line_of=s):
                self.assertRegex(inst.log(s), r'event=(stop|exit)')
        self.assertRegex(inst.log('smtp-listener'), r'event=queued ')
        self.assertTrue(inst.queue_ids() or inst.maildir_messages('alice'), 'the 250 message is gone')

    def test_upgrade_while_running_says_what_to_restart(self):
        """Re-running setup on a running instance (the upgrade README
        describes) replaces ROOT/bin, but the daemons keep the programs
        they started with: setup says which and how to restart them (it
        said "start it with: s6-svscan", of an instance already running),
        --check warns, and after the restart nothing is left to do."""
        need(self, 'queue-manager')
        with Instance() as inst:
            def setup(bindir, *extra):
                r = subprocess.run([os.path.join(bindir, 'postern-setup'), '--root', inst.root]
                                   + list(extra), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
                self.assertEqual(r.returncode, 0, r.stdout)
                return r.stdout
            out = setup(harness.BIN)
            self.assertNotIn('start it with', out)
            self.assertIn('nothing to restart', out)
            newbin = tempfile.mkdtemp(prefix='postern-newbin-')
            try:
                for n in os.listdir(harness.BIN):
                    p = os.path.join(harness.BIN, n)
                    if os.path.isfile(p) and os.access(p, os.X_OK):
                        shutil.copy2(p, newbin)
                with open(os.path.join(newbin, 'queue-manager'), 'ab') as f:
                    f.write(b'\0')          # another build of it
                out = setup(newbin)
                self.assertIn('still run the old copy of queue-manager', out)
                self.assertIn('s6-svc -r', out)
                out = setup(newbin, '--check')
                self.assertIn('warning: running processes still run the old copy of queue-manager', out)
                pid = inst.service_pid('queue-manager')
                inst.svc('queue-manager', '-r')
                inst.wait_for(lambda: inst.service_pid('queue-manager') not in (None, pid),
                              what='queue-manager restart')
                inst.wait_ready('queue-manager')
                out = setup(newbin)
                self.assertIn('nothing to restart', out)
                self.assertNotIn('old copy', setup(newbin, '--check'))
            finally:
                shutil.rmtree(newbin)

    def test_user_added_while_running_gets_mail(self):
        need(self, 'smtp-listener', 'queue-inject', 'queue-manager', 'local-deliverer',
             'postern-user', 'pop3-listener', 'auth-checker')
        with Instance() as inst:
            smtp_dialogue(inst.port('smtp'), [
                (None, '220'), ('HELO c.test', '250'), ('MAIL FROM:<a@b.test>', '250'),
                ('RCPT TO:<carol@example.test>', '550 5.1.1'), ('QUIT', '221')])
            inst.add_user('carol', 'pw-carol')      # reloads smtp-listener
            reply = harness.send_mail(inst.port('smtp'), 'a@b.test', ['carol@example.test'],
                                      'Subject: e2e\n\n.leading dot\nbody\n')
            self.assertRegex(reply, r'^250 2\.0\.0 Ok: queued as [0-9A-F]{16}$')
            msgs = inst.wait_for(lambda: inst.maildir_messages('carol'), what='delivery')
            self.assertIn(b'\n.leading dot\nbody\n', msgs[0][1])
            with open(inst.path('conf', 'mailboxes')) as f:
                entry = [l.split(':') for l in f.read().splitlines() if l.startswith('carol:')][0]
            st = os.stat(msgs[0][0])
            self.assertEqual((st.st_uid, st.st_gid), (int(entry[1]), int(entry[2])),
                             'delivered as the user, not as root')
            if IS_ROOT:
                self.assertNotEqual(st.st_uid, 0)
            r = harness.pop3_dialogue(inst.port('pop3'), [
                (None, '+OK'), ('USER carol', '+OK'), ('PASS pw-carol', '+OK'),
                ('STAT', '+OK 1 '), ('RETR 1', '+OK'), ('QUIT', '+OK')])
            self.assertIn('.leading dot', r[4])
            inst.wait_for(lambda: not inst.queue_ids(), what='the queue to empty')

    def test_bad_conf_refuses_to_start(self):
        inst = Instance()
        try:
            inst.setup()
            path = inst.path('conf', 'postern.conf')
            with open(path, 'a') as f:
                f.write('max_recipients = lots\n')
            with open(path) as f:
                line = len(f.read().splitlines())
            inst.services_backup = inst.services
            inst.services = []          # do not wait for readiness
            inst.start()
            for s in inst.services_backup:
                with self.subTest(service=s):
                    log = inst.wait_log(s, 'postern.conf:%d:' % line, timeout=15)
                    self.assertIn('max_recipients', log)
                    # it exits 100 (s6 retries it every second)
                    inst.wait_for(lambda: 'exitcode 100' in inst.svstat(s), what=s + ' exit 100')
        finally:
            inst.stop()

    def test_deliverers_inherit_no_readiness_pipe(self):
        # queue-manager starts local-deliverer (root) and remote-deliverer
        # (which talks to other hosts) before it reports readiness on its -d
        # fd, s6's notification pipe; that write end must not live on in them
        need(self, 'queue-manager', 'local-deliverer', 'remote-deliverer')
        with Instance(services=['queue-manager']) as inst:
            qm = inst.service_pid('queue-manager')
            kids = [p for p in inst.processes() if ppid(p) == qm]
            self.assertEqual(len(kids), 2, 'deliverers of queue-manager %d: %s' % (qm, kids))
            for pid in kids:
                fds = fd_targets(pid)
                targets = list(fds.values())
                # a pipe is its log (1, 2) or a self-pipe whose two ends it holds
                stray = {fd: t for fd, t in fds.items()
                         if t.startswith('pipe:') and fd not in (1, 2) and targets.count(t) < 2}
                with self.subTest(deliverer=proc_info(pid)[1]):
                    self.assertEqual(stray, {}, 'pid %d holds a pipe it did not make' % pid)

    def test_pop3_mailbox_process_holds_only_its_connection(self):
        # the mailbox process runs as the mail user: it keeps its Maildir,
        # the lock, the client's connection and the log, and no socket of
        # its monitor's (the pre-login session's pair)
        need(self, 'pop3-listener', 'auth-checker', 'postern-user')
        need_root(self, 'the mailbox process runs as the user\'s own uid')
        with Instance(services=['auth-checker', 'pop3-listener'], users={'alice': 'pw-alice'}) as inst:
            with open(inst.path('conf', 'mailboxes')) as f:
                uid = next(int(l.split(':')[1]) for l in f if l.startswith('alice:'))
            c = Conn(inst.port('pop3'))
            try:
                self.assertTrue(c.pop3_reply().startswith('+OK'))
                c.send('USER alice')
                self.assertTrue(c.pop3_reply().startswith('+OK'))
                c.send('PASS pw-alice')
                self.assertTrue(c.pop3_reply().startswith('+OK'))
                mbox = [p for p in inst.processes() if (proc_info(p) or (0, 0, (0,)))[2][:1] == (uid,)]
                self.assertEqual(len(mbox), 1, mbox)
                tcp = tcp_sockets()
                fds = {}
                for fd in os.listdir('/proc/%d/fd' % mbox[0]):
                    fds[int(fd)] = os.readlink('/proc/%d/fd/%s' % (mbox[0], fd))
                socks = {fd: t for fd, t in fds.items() if t.startswith('socket:[')}
                self.assertEqual([tcp.get(int(t[8:-1]), (None,))[0] for t in socks.values()],
                                 [inst.port('pop3')], 'sockets of the mailbox process: %s' % fds)
                md = inst.maildir('alice')
                others = sorted(t for fd, t in fds.items() if fd > 2 and fd not in socks)
                self.assertEqual(others, [md, os.path.join(md, '.postern-pop3.lock')])
                c.send('QUIT')
                self.assertTrue(c.pop3_reply().startswith('+OK'))
            finally:
                c.close()

    def test_privilege_invariants(self):
        need_root(self, 'the uid table can only be checked with real system users')
        with Instance() as inst:
            uid = {n: pwd.getpwnam(n).pw_uid for n in SYSUSERS}
            # local-deliverer: the root spawner, and its mailbox workers,
            # each as one mail user's uid (never root, never a system uid)
            with open(inst.path('conf', 'mailboxes')) as f:
                mail_uids = {int(l.split(':')[1]) for l in f if l.count(':') >= 3 and not l.startswith('#')}
            self.assertFalse(mail_uids & (set(uid.values()) | {0}), mail_uids)
            expect = {
                'auth-checker': {uid['postern-auth']},
                'queue-manager': {uid['postern-queue']},
                'local-deliverer': {0} | mail_uids,
                'remote-deliverer': {uid['postern-remote']},
                # root listener + per-connection root monitors never read
                # client bytes (docs/ARCHITECTURE.md); sessions are unprivileged
                'smtp-listener': {0, uid['postern-smtp']},
                'pop3-listener': {0, uid['postern-pop3']},
                # tls-proxy -z, a listener's TLS server (root: it chroots
                # each connection's child), and those children
                'tls-proxy': {0, uid['postern-tls']},
            }
            conns = []
            # every service runs (one missing would drop its checks below unseen)
            self.assertEqual(sorted(inst.services), sorted(harness.SERVICES))
            try:
                c = Conn(inst.port('smtp'))
                self.assertTrue(c.smtp_reply().startswith('220'))
                conns.append((c, inst.port('smtp'), 'smtp-listener', uid['postern-smtp']))
                c = Conn(inst.port('pop3'))
                self.assertTrue(c.pop3_reply().startswith('+OK'))
                conns.append((c, inst.port('pop3'), 'pop3-listener', uid['postern-pop3']))
                tcp = tcp_sockets()
                seen = {}
                for pid in inst.processes():
                    info = proc_info(pid)
                    if info is None:
                        continue
                    exe, cmd, uids, rootdir = info
                    name = os.path.basename(exe)
                    if os.path.dirname(exe) != inst.path('bin'):
                        if name == 's6-log':
                            self.assertEqual(set(uids), {uid['postern-log']}, cmd)
                        continue
                    seen.setdefault(name, []).append((pid, uids, rootdir))
                    with self.subTest(process=name, pid=pid):
                        self.assertIn(name, expect, 'unexpected program running: ' + cmd)
                        self.assertIn(uids[1], expect[name], '%s runs as uid %d' % (name, uids[1]))
                        if uids[1] != 0:
                            self.assertNotIn(0, uids, '%s can regain root (uids %s)' % (name, uids))
                        # a root process may hold only listening sockets of
                        # our ports, or connections it never reads (monitor)
                        if uids[1] == 0 and name in ('auth-checker', 'queue-manager'):
                            self.fail('%s still root' % name)
                        if uids[1] == 0 and name == 'tls-proxy':
                            self.assertIn(' -z ', cmd, 'a tls-proxy as root that is not the TLS server')
                            self.assertIn(ppid(pid), [inst.service_pid(s) for s in inst.services],
                                          'the TLS server is not a listener\'s child')
                for s in inst.services:
                    self.assertIn(s, seen, s + ' has no process')
                # only queue-manager (and queue-inject, setuid) run as the queue's
                # owner; the holders of secrets and of the queue talk no TCP
                for name, procs in seen.items():
                    for pid, uids, rootdir in procs:
                        if uids[1] == uid['postern-queue']:
                            self.assertIn(name, ('queue-manager', 'queue-inject'))
                        if uids[1] in (uid['postern-queue'], uid['postern-auth']):
                            held = [tcp[i] for i in socket_inodes(pid) if i in tcp]
                            self.assertEqual(held, [], '%s (pid %d) holds TCP sockets' % (name, pid))
                # each open connection is served by an unprivileged chrooted session
                for c, port, prog, want_uid in conns:
                    with self.subTest(session=prog):
                        holders = []
                        for pid, uids, rootdir in seen.get(prog, []):
                            for ino in socket_inodes(pid):
                                if tcp.get(ino, (None, None))[0] == port and tcp[ino][1] == '01':
                                    holders.append((pid, uids, rootdir))
                        sessions = [h for h in holders if h[1][1] == want_uid]
                        self.assertTrue(sessions, '%s: no session process as uid %d holds the connection (%s)'
                                        % (prog, want_uid, holders))
                        for pid, uids, rootdir in sessions:
                            self.assertEqual(rootdir, inst.path('empty'), '%s session not chrooted' % prog)
                            # no_new_privs and the seccomp filter (lib/sandbox.h)
                            self.assertEqual(sandbox_state(pid), (1, 2), '%s session %d not sandboxed' % (prog, pid))
                            # nothing shared with its listener: not the TLS
                            # server's request socket, which only monitors keep
                            q = inst.service_pid(prog)
                            self.assertEqual(socket_inodes(pid) & socket_inodes(q), set(),
                                             '%s session %d shares sockets with its listener %d' % (prog, pid, q))
            finally:
                for c, *_ in conns:
                    c.close()
            self.check_starttls_processes(inst, uid)
            # queue-inject is the only setuid program, and it is not root's
            for name in os.listdir(inst.path('bin')):
                st = os.stat(inst.bin(name))
                with self.subTest(program=name):
                    if name == 'queue-inject':
                        self.assertEqual(st.st_uid, uid['postern-queue'])
                        self.assertEqual(stat.S_IMODE(st.st_mode), 0o4711)
                    else:
                        self.assertFalse(st.st_mode & (stat.S_ISUID | stat.S_ISGID), name)
            # secrets: only their one reader's uid can read them
            self.assertEqual(owner(inst.path('conf', 'users')), ('postern-auth', 'postern-auth', 0o600))
            self.assertEqual(owner(inst.path('conf', 'tls', 'key.pem')), ('postern-tls', 'postern-tls', 0o600))


class MakeRun(unittest.TestCase):
    """scripts/run-demo.sh, what `make run` runs: set up, demo user, s6 in
    the foreground, Ctrl-C (SIGINT) stops everything."""

    def test_demo_runs_and_stops_on_sigint(self):
        need(self, 'postern-setup', 'smtp-listener', 'pop3-listener', 'auth-checker',
             'queue-manager', 'queue-inject', 'local-deliverer', 'postern-user')
        busy = [p for p in (2525, 2587, 2465, 2110, 2995) if harness.port_open(p)]
        if busy:
            self.skipTest('demo ports in use (a `make run` is running?): %s' % busy)
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                              'scripts', 'run-demo.sh')
        cwd = tempfile.mkdtemp(prefix='postern-demo-')
        os.chmod(cwd, 0o755)
        root = os.path.join(cwd, 'run')
        p = subprocess.Popen(['sh', script, harness.BIN], cwd=cwd, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
        try:
            for s in ('smtp-listener', 'pop3-listener', 'auth-checker', 'queue-manager'):
                d = os.path.join(root, 'service', s)
                deadline = time.time() + 20
                while not os.path.exists(os.path.join(d, 'supervise', 'status')):
                    self.assertLess(time.time(), deadline, s + ' not supervised')
                    if p.poll() is not None:
                        self.fail('run-demo.sh exited: %s' % p.stdout.read().decode(errors='replace'))
                    time.sleep(0.1)
                r = subprocess.run(['s6-svwait', '-U', '-t', '20000', d])
                self.assertEqual(r.returncode, 0, s + ' not ready')
            reply = harness.send_mail(2525, 'you@example.test', ['demo@example.test'],
                                      'Subject: hello\n\nit works\n')
            self.assertTrue(reply.startswith('250 '), reply)
            deadline = time.time() + 10
            got = []
            while not got and time.time() < deadline:
                got = harness.pop3_dialogue(2110, [(None, '+OK'), ('USER demo', '+OK'),
                                                   ('PASS demo', '+OK'), ('STAT', '+OK'),
                                                   ('QUIT', '+OK')])[3] != '+OK 0 0' or []
                time.sleep(0.2)
            self.assertTrue(got, 'the demo message never reached POP3')
        finally:
            os.killpg(p.pid, signal.SIGINT)      # what Ctrl-C in a terminal does
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        out = p.stdout.read().decode(errors='replace')
        p.stdout.close()
        self.assertIn('telnet 127.0.0.1 2525', out)
        self.assertIn('user demo, password demo', out)
        # the daemons end on their own signal, a moment after s6-svscan
        # (longer on a loaded machine, or in a sanitizer build, where a
        # daemon caught in its exit-time leak check by s6's SIGCONT gets
        # the SIGSTOP it lost once it has been stuck 3 s, as
        # Instance.wait_down does)
        deadline = time.time() + 5
        stuck = {}
        while True:
            left = [pid for pid in os.listdir('/proc') if pid.isdigit() and _proc_mentions(pid, root)]
            if not left or time.time() > deadline:
                break
            if harness.unstick_leak_checks(left, stuck):
                deadline = max(deadline, time.time() + 5)
            time.sleep(0.1)
        named = []
        for pid in left:
            try:
                with open('/proc/%s/comm' % pid) as f:
                    named.append('%s %s' % (pid, f.read().strip()))
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(cwd, ignore_errors=True)
        self.assertEqual(named, [], 'processes left 5 s after Ctrl-C')


def _starttls_check(self, inst, uid):
    """After STARTTLS, TLS is terminated by tls-proxy (postern-tls, the only
    reader of the key) and SMTP is still spoken by the chrooted session."""
    if 'smtp-listener' not in inst.services or not harness.have('tls-proxy'):
        return
    import ssl
    c = Conn(inst.port('smtp'))
    try:
        c.smtp_reply()
        c.send('EHLO client.test')
        if 'STARTTLS' not in c.smtp_reply():
            return          # not offered (yet): nothing to check
        c.send('STARTTLS')
        self.assertTrue(c.smtp_reply().startswith('220'))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        t = ctx.wrap_socket(c.sock, server_hostname='mail.example.test')
        tc = Conn(None, sock=t)
        tc.send('EHLO client.test')
        self.assertTrue(tc.smtp_reply().startswith('250'))
        procs = [(pid, proc_info(pid)) for pid in inst.processes()]
        proxies = [(pid, i) for pid, i in procs if i and os.path.basename(i[0]) == 'tls-proxy'
                   and i[2][1] != 0]
        self.assertTrue(proxies, 'no tls-proxy process after STARTTLS')
        for pid, (exe, cmd, uids, rootdir) in proxies:
            self.assertEqual(set(uids), {uid['postern-tls']}, 'tls-proxy uids')
            self.assertEqual(rootdir, inst.path('empty'), 'tls-proxy not chrooted')
            self.assertEqual(sandbox_state(pid), (1, 2), 'tls-proxy %d not sandboxed' % pid)
        sessions = [i for pid, i in procs if i and os.path.basename(i[0]) == 'smtp-listener'
                    and i[2][1] == uid['postern-smtp']]
        self.assertTrue(sessions, 'no postern-smtp session behind the tls-proxy')
        for exe, cmd, uids, rootdir in sessions:
            self.assertEqual(rootdir, inst.path('empty'))
        # the key is open (if at all) only in tls-proxy
        key = inst.path('conf', 'tls', 'key.pem')
        for pid, i in procs:
            if not i:
                continue
            try:
                fds = os.listdir('/proc/%d/fd' % pid)
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink('/proc/%d/fd/%s' % (pid, fd))
                except OSError:
                    continue
                if target == key:
                    self.assertEqual(os.path.basename(i[0]), 'tls-proxy', 'key.pem open in ' + i[1])
        tc.send('QUIT')
        tc.smtp_reply()
    finally:
        c.close()


RunningInstance.check_starttls_processes = _starttls_check


if __name__ == '__main__':
    unittest.main()
