"""test_queue_inject.py - queue-inject and sendmail against a throwaway ROOT.

Runs the real binaries (copied into ROOT/bin so that queue-inject finds
ROOT from its own location) and checks the queue's promise: after exit 0 the
message is there whole; after any failure, abort, fault or kill there is no
message (an envelope in env/<h>/ is what makes a message; leftovers in tmp/
and a message body without envelope are allowed: queue-manager sweeps them,
docs/QUEUE.md).

Faults are injected with strace: fsync -> EIO, write -> ENOSPC, and SIGKILL
at each step of the commit.
"""

import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import unittest

from harness import need_root

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.abspath(os.environ.get('POSTERN_BIN') or os.path.join(HERE, '..', '..', 'bin'))
HEX = '0123456789ABCDEF'
STRACE = shutil.which('strace')

MESSAGE = b'Subject: test\nFrom: a@example.test\n\nhello\nworld\n'
RECEIVED = b'from client.example (client.example [192.0.2.1])\n\tby mx.example.test; Thu, 1 Jan 2026 00:00:00 +0000'
ENVELOPE = (b'Falice@example.test\0H' + RECEIVED + b'\0Csmtp 192.0.2.1\0B8BITMIME\0'
            b'Tbob@example.test\t\t\0Tcarol@example.test\tSUCCESS,FAILURE\trfc822;carol@example.test\0\0')


def make_tree(root):
    """The queue tree of docs/QUEUE.md, made by hand (as postern-setup does)."""
    q = os.path.join(root, 'queue')
    for d in ['', 'tmp', 'mess', 'env', 'todo', 'bounce', 'lock']:
        os.makedirs(os.path.join(q, d), mode=0o750, exist_ok=True)
    for h in HEX:
        os.makedirs(os.path.join(q, 'mess', h), mode=0o750, exist_ok=True)
        os.makedirs(os.path.join(q, 'env', h), mode=0o750, exist_ok=True)
    os.mkfifo(os.path.join(q, 'lock', 'trigger'), 0o600)


def files_under(path):
    out = []
    for dirpath, _, names in os.walk(path):
        out += [os.path.join(dirpath, n) for n in names]
    return sorted(out)


class QueueRoot:
    def __init__(self):
        self.root = tempfile.mkdtemp(prefix='postern-qi.')
        os.chmod(self.root, 0o755)
        os.makedirs(os.path.join(self.root, 'bin'))
        os.makedirs(os.path.join(self.root, 'conf'))
        with open(os.path.join(self.root, 'conf', 'postern.conf'), 'w') as f:
            f.write('hostname = mx.example.test\nlocal_domains = example.test\n')
        for prog in ('queue-inject', 'sendmail', 'postern-queue'):
            src = os.path.join(BIN, prog)
            if os.path.exists(src):
                shutil.copy(src, os.path.join(self.root, 'bin', prog))
        make_tree(self.root)
        self.q = os.path.join(self.root, 'queue')

    def inject(self, message=MESSAGE, envelope=ENVELOPE, use_socket=True, wrap=None, close_env_early=False):
        """Run queue-inject; returns (exit code, bytes it wrote back on fd 1, stderr)."""
        prog = [os.path.join(self.root, 'bin', 'queue-inject')]
        if wrap:
            prog = wrap + prog
        mr, mw = os.pipe()
        if use_socket:
            ours, theirs = socket.socketpair()
            env_fd = theirs.fileno()
        else:
            er, ew = os.pipe()
            env_fd = er
        env = None
        if wrap:   # LeakSanitizer cannot run under ptrace (sanitizer builds)
            env = dict(os.environ, ASAN_OPTIONS='detect_leaks=0')
        p = subprocess.Popen(prog, stdin=mr, stdout=env_fd, stderr=subprocess.PIPE, env=env)
        os.close(mr)
        if use_socket:
            theirs.close()
        else:
            os.close(er)
        try:
            os.write(mw, message) if len(message) < 60000 else self._write_all(mw, message)
        except BrokenPipeError:
            pass
        os.close(mw)
        reply = b''
        try:
            if use_socket:
                ours.sendall(envelope)
                if close_env_early:
                    ours.shutdown(socket.SHUT_WR)
                ours.settimeout(30)
                while True:
                    chunk = ours.recv(100)
                    if not chunk:
                        break
                    reply += chunk
            else:
                os.write(ew, envelope)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            if use_socket:
                ours.close()
            else:
                os.close(ew)
        err = p.stderr.read()
        p.stderr.close()
        return p.wait(timeout=30), reply, err

    @staticmethod
    def _write_all(fd, data):
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]

    def envs(self):
        return files_under(os.path.join(self.q, 'env'))

    def messages(self):
        return files_under(os.path.join(self.q, 'mess'))

    def todos(self):
        return files_under(os.path.join(self.q, 'todo'))

    def tmps(self):
        return files_under(os.path.join(self.q, 'tmp'))

    def read_env(self, qid):
        with open(os.path.join(self.q, 'env', qid[-1], qid), 'rb') as f:
            return f.read().decode()

    def read_mess(self, qid):
        with open(os.path.join(self.q, 'mess', qid[-1], qid), 'rb') as f:
            return f.read()

    def cleanup(self):
        shutil.rmtree(self.root, ignore_errors=True)


def need_bin(test, *progs):
    for p in progs:
        if not os.path.exists(os.path.join(BIN, p)):
            test.skipTest('%s not built in %s' % (p, BIN))


class QueueInjectTest(unittest.TestCase):
    def setUp(self):
        need_bin(self, 'queue-inject')
        self.r = QueueRoot()

    def tearDown(self):
        self.r.cleanup()

    def assert_no_message(self):
        self.assertEqual(self.r.envs(), [], 'an envelope is visible')
        self.assertEqual(self.r.todos(), [], 'a todo marker is visible')

    def assert_whole(self, qid, message=MESSAGE):
        self.assertRegex(qid, r'^[0-9A-F]{16}$')
        body = self.r.read_mess(qid)
        self.assertEqual(body, b'Received: ' + RECEIVED + b'\n' + message)
        env = self.r.read_env(qid)
        lines = env.split('\n')
        self.assertEqual(lines[0], 'postern-envelope 1')
        self.assertIn('id %s' % qid, lines)
        self.assertIn('sender alice@example.test', lines)
        self.assertIn('body 8bitmime', lines)
        self.assertIn('rcpt\tpending\t0\t0\t\t\tbob@example.test\t', lines)
        self.assertIn('rcpt\tpending\t0\t0\tSUCCESS,FAILURE\trfc822;carol@example.test\tcarol@example.test\t', lines)
        self.assertTrue(env.endswith('\n'))
        client = [l for l in lines if l.startswith('client ')]
        self.assertEqual(client, ['client smtp 192.0.2.1 (uid %d)' % os.getuid()])

    def test_commit_whole_message(self):
        rc, reply, err = self.r.inject()
        self.assertEqual(rc, 0, err)
        qid = reply.decode().strip()
        self.assertTrue(reply.endswith(b'\n'))
        self.assert_whole(qid)
        self.assertEqual(self.r.todos(), [os.path.join(self.r.q, 'todo', qid)])
        self.assertEqual(self.r.tmps(), [])
        for path in (self.r.envs()[0], self.r.messages()[0]):
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(err, b'')   # silent on success

    def test_envelope_on_a_pipe(self):
        rc, _, err = self.r.inject(use_socket=False)
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(self.r.envs()), 1)
        qid = os.path.basename(self.r.envs()[0])
        self.assert_whole(qid)

    def test_many_messages_unique(self):
        ids = set()
        for _ in range(20):
            rc, reply, err = self.r.inject()
            self.assertEqual(rc, 0, err)
            ids.add(reply.strip())
        self.assertEqual(len(ids), 20)
        self.assertEqual(len(self.r.envs()), 20)
        self.assertEqual(len(self.r.messages()), 20)

    def test_trigger_pulled(self):
        fifo = os.path.join(self.r.q, 'lock', 'trigger')
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            rc, _, err = self.r.inject()
            self.assertEqual(rc, 0, err)
            self.assertEqual(os.read(fd, 10), b'\0')
        finally:
            os.close(fd)

    def test_unterminated_envelope_leaves_nothing(self):
        for cut in (ENVELOPE[:-1], ENVELOPE[:20], b''):
            rc, reply, err = self.r.inject(envelope=cut, close_env_early=True)
            self.assertEqual(rc, 55, err)
            self.assertEqual(reply, b'')
            self.assert_no_message()
            self.assertEqual(self.r.messages(), [])
            self.assertEqual(self.r.tmps(), [])

    def test_malformed_envelope(self):
        bad = [
            b'Tbob@x\t\t\0Fa@x\0\0',            # F not first
            b'Fa@x\0\0',                         # no recipient
            b'Fa@x\0Tbob@x\0\0',                 # T without its tabs
            b'Fa@x\0Tb\rob@x\t\t\0\0',           # CR
            b'Fa@x\0Hfrom x\nby y\0Tb@x\t\t\0\0',  # LF not folding
            b'Fa@x\0Qwhat\0Tb@x\t\t\0\0',        # unknown record
            b'Fa@x\0C' + b'x' * 2000 + b'\0Tb@x\t\t\0\0',  # record too long
        ]
        for env in bad:
            rc, reply, err = self.r.inject(envelope=env)
            self.assertEqual(rc, 31, (env[:40], err))
            self.assertIn(b'envelope=', err)
            self.assert_no_message()
            self.assertEqual(self.r.messages(), [])
            self.assertEqual(self.r.tmps(), [])

    def test_big_message_spills_and_commits(self):
        big = b'Subject: big\n\n' + (b'x' * 999 + b'\n') * 3000
        rc, reply, err = self.r.inject(message=big)
        self.assertEqual(rc, 0, err)
        self.assert_whole(reply.decode().strip(), message=big)
        self.assertEqual(self.r.tmps(), [])

    def test_root_not_from_environment(self):
        other = QueueRoot()
        self.addCleanup(other.cleanup)
        try:
            os.environ['POSTERN_ROOT'] = other.root
            rc, _, err = self.r.inject()
        finally:
            del os.environ['POSTERN_ROOT']
        self.assertEqual(rc, 0, err)
        self.assertEqual(other.envs(), [])
        self.assertEqual(len(self.r.envs()), 1)

    def test_statically_linked(self):
        exe = os.path.join(BIN, 'queue-inject')
        with open(exe, 'rb') as f:
            if b'__asan_init' in f.read():
                self.skipTest('sanitizer build: linked dynamically on purpose')
        out = subprocess.run(['ldd', exe], capture_output=True, text=True)
        self.assertRegex(out.stdout + out.stderr, r'not a dynamic executable|statically linked')
        with open(exe, 'rb') as f:
            image = f.read()
        for lib in (b'libsodium', b'libssl', b'libcrypto', b'sodium_init', b'SSL_new'):
            self.assertNotIn(lib, image)


@unittest.skipUnless(STRACE, 'strace not installed')
class QueueInjectFaultTest(unittest.TestCase):
    """Faults during the commit: a non-zero exit and no visible message."""

    def setUp(self):
        need_bin(self, 'queue-inject')
        self.r = QueueRoot()
        probe = subprocess.run([STRACE, '-o', '/dev/null', '-e', 'inject=fsync:error=EIO', 'true'],
                               capture_output=True)
        if probe.returncode != 0:
            self.skipTest('strace cannot inject faults here: %r' % probe.stderr[:200])

    def tearDown(self):
        self.r.cleanup()

    def strace(self, spec):
        return [STRACE, '-f', '-o', '/dev/null', '-e', 'trace=%s' % spec.split('=')[1].split(':')[0],
                '-e', spec]

    def assert_nothing_or_whole(self):
        envs = self.r.envs()
        for path in envs:
            qid = os.path.basename(path)
            self.assertEqual(self.r.read_mess(qid), b'Received: ' + RECEIVED + b'\n' + MESSAGE)
            self.assertIn('rcpt\tpending', self.r.read_env(qid))
        for path in self.r.todos():
            qid = os.path.basename(path)
            self.assertIn(os.path.join(self.r.q, 'env', qid[-1], qid), envs)
        return envs

    def test_fsync_eio_each_step(self):
        # fsyncs in order: message file, envelope file, mess/<h>, env/<h>
        for when in (1, 2, 3, 4):
            rc, reply, err = self.r.inject(wrap=self.strace('inject=fsync:error=EIO:when=%d' % when))
            self.assertEqual(rc, 54, (when, err))
            self.assertEqual(reply, b'')
            self.assertEqual(self.r.envs(), [], when)
            self.assertEqual(self.r.messages(), [], when)
            self.assertEqual(self.r.todos(), [], when)
            self.assertEqual(self.r.tmps(), [], when)   # removed on failure
            # EIO's text: glibc says "Input/output error", musl (which
            # queue-inject is linked with where it is installed) "I/O error"
            self.assertRegex(err, rb'commit="(Input/output|I/O) error"')

    def test_write_enospc(self):
        rc, reply, err = self.r.inject(wrap=self.strace('inject=write:error=ENOSPC:when=1'))
        self.assertEqual(rc, 53, err)
        self.assertEqual(self.r.envs(), [])
        self.assertEqual(self.r.messages(), [])
        self.assertEqual(self.r.tmps(), [])
        # the envelope file's write (the second) fails: the same
        rc, reply, err = self.r.inject(wrap=self.strace('inject=write:error=EDQUOT:when=2'))
        self.assertEqual(rc, 53, err)
        self.assertEqual(self.r.envs(), [])
        self.assertEqual(self.r.messages(), [])
        self.assertEqual(self.r.tmps(), [])

    def test_rename_fails(self):
        for when in (1, 2):
            rc, _, err = self.r.inject(wrap=self.strace('inject=renameat2:error=EIO:when=%d' % when))
            self.assertEqual(rc, 54, err)
            self.assertEqual(self.r.envs(), [])
            self.assertEqual(self.r.messages(), [])
            self.assertEqual(self.r.tmps(), [])

    def test_sigkill_at_each_step(self):
        points = ['openat:when=2', 'write:when=1', 'fsync:when=1', 'fsync:when=2',
                  'renameat2:when=1', 'fsync:when=3', 'renameat2:when=2', 'fsync:when=4', 'linkat:when=1']
        committed = 0
        for point in points:
            call, when = point.split(':')
            before = set(self.r.envs())
            rc, reply, err = self.r.inject(wrap=self.strace('inject=%s:signal=KILL:%s' % (call, when)))
            self.assertIn(rc, (-9, 137), (point, err))   # killed, as injected
            self.assertEqual(reply, b'', point)   # never acknowledged
            after = set(self.assert_nothing_or_whole())
            new = after - before
            self.assertLessEqual(len(new), 1)
            if new:
                committed += 1
                # only once the envelope is renamed into place
                self.assertIn(point, ('fsync:when=4', 'linkat:when=1'))
        # the kills after the envelope's rename leave a whole (unacknowledged) message
        self.assertEqual(committed, 2)


class SetuidTest(unittest.TestCase):
    """The installed shape: 4711 postern-queue, run by an ordinary user."""

    def setUp(self):
        need_bin(self, 'queue-inject')
        need_root(self, 'creates postern-queue and installs queue-inject setuid to it')
        try:
            pwd.getpwnam('postern-queue')
        except KeyError:
            subprocess.run(['groupadd', '--system', 'postern-queue'], capture_output=True)
            subprocess.run(['useradd', '--system', '--gid', 'postern-queue', '--no-create-home',
                            '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin',
                            'postern-queue'], check=True)
        self.pq = pwd.getpwnam('postern-queue')
        self.r = QueueRoot()
        for path in [self.r.q] + [os.path.join(dp, n) for dp, ds, fs in os.walk(self.r.q) for n in ds + fs]:
            os.lchown(path, self.pq.pw_uid, self.pq.pw_gid)
        exe = os.path.join(self.r.root, 'bin', 'queue-inject')
        os.chown(exe, self.pq.pw_uid, self.pq.pw_gid)
        os.chmod(exe, 0o4711)

    def tearDown(self):
        self.r.cleanup()

    def run_as(self, uid, gid, exe=None, envelope=b'Fnobody@example.test\0Csmtp 203.0.113.9\0Tbob@example.test\t\t\0\0'):
        exe = exe or os.path.join(self.r.root, 'bin', 'queue-inject')
        ours, theirs = socket.socketpair()
        mr, mw = os.pipe()

        def drop():
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        p = subprocess.Popen([exe], stdin=mr, stdout=theirs.fileno(), stderr=subprocess.PIPE,
                             preexec_fn=drop, env=dict(os.environ, ASAN_OPTIONS='detect_leaks=0'))
        os.close(mr)
        theirs.close()
        reply = b''
        try:
            os.write(mw, MESSAGE)
            os.close(mw)
            mw = None
            ours.sendall(envelope)
            ours.settimeout(30)
            reply = ours.recv(100)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            if mw is not None:
                os.close(mw)
            ours.close()
        err = p.stderr.read()
        p.stderr.close()
        return p.wait(timeout=30), reply, err

    def test_ordinary_user_injects_as_postern_queue(self):
        nobody = pwd.getpwnam('nobody')
        rc, reply, err = self.run_as(nobody.pw_uid, nobody.pw_gid)
        self.assertEqual(rc, 0, err)
        qid = reply.decode().strip()
        for path in (self.r.envs()[0], self.r.messages()[0]):
            st = os.stat(path)
            self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (self.pq.pw_uid, 0o600))
        # the caller's claim stays, with the kernel's word on who called
        self.assertIn('client smtp 203.0.113.9 (uid %d)\n' % nobody.pw_uid, self.r.read_env(qid))

    def test_ordinary_user_cannot_forge_the_top_received_line(self):
        # H is a Received: field the caller writes; any local user can run
        # queue-inject, so an H of an ordinary user must not become the
        # message's topmost trace line as if this host had received it by
        # SMTP (qmail-queue and Postfix's postdrop add "invoked by uid N")
        nobody = pwd.getpwnam('nobody')
        forged = (b'Received: from mx.example.org ([198.51.100.7])\n\tby mx.example.test (postern) '
                  b'with ESMTPSA (authenticated as ceo) id 0; Thu, 1 Jan 2026 00:00:00 +0000')
        rc, reply, err = self.run_as(nobody.pw_uid, nobody.pw_gid,
                                     envelope=b'Fceo@example.test\0H' + forged + b'\0Tbob@example.test\t\t\0\0')
        self.assertEqual(rc, 0, err)
        mess = self.r.read_mess(reply.decode().strip())
        first, rest = mess.split(b'\n\t', 1)
        self.assertEqual(first, b'Received: (postern queue-inject invoked by uid %d);' % nobody.pw_uid, mess)
        date, rest = rest.split(b'\n', 1)
        self.assertRegex(date.decode(), r'^[A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000$')
        # the caller's own line stays, below it, and the message after that
        self.assertEqual(rest, forged + b'\n' + MESSAGE)
        # without H, the line is there all the same
        rc, reply, err = self.run_as(nobody.pw_uid, nobody.pw_gid)
        self.assertEqual(rc, 0, err)
        mess = self.r.read_mess(reply.decode().strip())
        self.assertTrue(mess.startswith(b'Received: (postern queue-inject invoked by uid %d);\n\t' % nobody.pw_uid), mess)
        self.assertTrue(mess.endswith(b'\n' + MESSAGE), mess)

    def test_postern_callers_write_the_top_received_line(self):
        # smtp-listener's monitor runs it as postern-smtp, queue-manager and
        # local-deliverer as the queue's owner, and root: their H is the top line
        callers = [(0, 0), (self.pq.pw_uid, self.pq.pw_gid)]
        try:
            sm = pwd.getpwnam('postern-smtp')
            callers.append((sm.pw_uid, sm.pw_gid))
        except KeyError:
            pass
        for uid, gid in callers:
            with self.subTest(uid=uid):
                rc, reply, err = self.run_as(uid, gid, envelope=b'Fa@example.test\0H' + RECEIVED
                                             + b'\0Tbob@example.test\t\t\0\0')
                self.assertEqual(rc, 0, err)
                self.assertEqual(self.r.read_mess(reply.decode().strip()),
                                 b'Received: ' + RECEIVED + b'\n' + MESSAGE)

    def test_root_runs_the_setuid_binary(self):
        rc, reply, err = self.run_as(0, 0)
        self.assertEqual(rc, 0, err)
        self.assertEqual(os.stat(self.r.envs()[0]).st_uid, self.pq.pw_uid)

    def test_root_runs_a_plain_copy(self):
        # not setuid (a test build): root becomes the queue's owner first
        exe = os.path.join(self.r.root, 'bin', 'queue-inject')
        os.chown(exe, 0, 0)
        os.chmod(exe, 0o755)
        rc, reply, err = self.run_as(0, 0)
        self.assertEqual(rc, 0, err)
        self.assertEqual(os.stat(self.r.envs()[0]).st_uid, self.pq.pw_uid)

    def test_queue_of_someone_else_refused(self):
        # a plain copy run by nobody: the queue is not nobody's, nothing written
        exe = os.path.join(self.r.root, 'bin', 'queue-inject')
        os.chown(exe, 0, 0)
        os.chmod(exe, 0o755)
        nobody = pwd.getpwnam('nobody')
        rc, reply, err = self.run_as(nobody.pw_uid, nobody.pw_gid)
        self.assertNotEqual(rc, 0)
        self.assertEqual(self.r.envs(), [])


class SendmailTest(unittest.TestCase):
    def setUp(self):
        need_bin(self, 'queue-inject', 'sendmail')
        self.r = QueueRoot()
        self.sendmail = os.path.join(self.r.root, 'bin', 'sendmail')

    def tearDown(self):
        self.r.cleanup()

    def run_sendmail(self, args, data, env=None):
        return subprocess.run([self.sendmail] + args, input=data, capture_output=True, timeout=30, env=env)

    def only_message(self):
        envs = self.r.envs()
        self.assertEqual(len(envs), 1)
        qid = os.path.basename(envs[0])
        return self.r.read_env(qid), self.r.read_mess(qid).decode()

    def test_t_reads_recipients_and_removes_bcc(self):
        msg = (b'To: Bob <bob@example.test>, carol\r\nCc: "Doe, J" <jd@example.org>\r\n'
               b'Bcc: secret@example.net\r\nSubject: hi\r\n\r\nline 1\r\n..dots stay\r\n')
        p = self.run_sendmail(['-t', '-i', '-f', 'me@example.test'], msg)
        self.assertEqual(p.returncode, 0, p.stderr)
        env, mess = self.only_message()
        rcpts = re.findall(r'^rcpt\t[^\t]*\t[^\t]*\t[^\t]*\t[^\t]*\t[^\t]*\t([^\t]*)\t', env, re.M)
        self.assertEqual(sorted(rcpts), ['bob@example.test', 'carol@mx.example.test',
                                         'jd@example.org', 'secret@example.net'])
        self.assertIn('sender me@example.test\n', env)
        self.assertIn('client sendmail (uid %d)\n' % os.getuid(), env)
        self.assertNotIn('Bcc', mess)
        self.assertNotIn('secret', mess)
        self.assertNotIn('\r', mess)
        self.assertTrue(mess.startswith('Received: (from '))
        self.assertRegex(mess, r'\nDate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\n')
        self.assertRegex(mess, r'\nMessage-ID: <[^>@]+@mx\.example\.test>\n')
        self.assertIn('\nFrom: ', mess)
        self.assertTrue(mess.endswith('\n\nline 1\n..dots stay\n'))

    def test_local_recipients_lower_cased(self):
        """Recipients in our domains are queued lower-cased, as
        smtp-listener queues them: "BOB@example.test" and
        "bob@Example.Test" are one recipient (one copy); before, two. A
        remote address keeps its case."""
        p = self.run_sendmail(['-i', 'BOB@example.test', 'bob@Example.Test', 'Carol',
                               'Dave@Example.ORG'], b'Subject: s\n\nx\n')
        self.assertEqual(p.returncode, 0, p.stderr)
        env, _ = self.only_message()
        rcpts = re.findall(r'^rcpt\t[^\t]*\t[^\t]*\t[^\t]*\t[^\t]*\t[^\t]*\t([^\t]*)\t', env, re.M)
        self.assertEqual(sorted(rcpts), ['Dave@Example.ORG', 'bob@example.test', 'carol@mx.example.test'])

    def test_max_message_size_applies(self):
        """max_message_size counts as smtp-listener counts it (CRLF line
        ends): a message past it is not queued and sendmail exits 65 saying
        why. Before, local submission had no limit: a runaway program
        could fill the queue's disk with what port 25 refuses."""
        with open(os.path.join(self.r.root, 'conf', 'postern.conf'), 'a') as f:
            f.write('max_message_size = 2000\n')
        line = b'x' * 98 + b'\n'                   # 100 octets with CRLF
        head = b'From: me@example.test\nDate: today\nMessage-ID: <m@x>\nSubject: s\n\n'
        fits = head + line * ((2000 - len(head) - 5) // 100)
        p = self.run_sendmail(['-i', 'bob@example.test'], fits)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(self.r.envs()), 1)
        p = self.run_sendmail(['-i', 'bob@example.test'], fits + line)
        self.assertEqual(p.returncode, 65, p.stderr)
        self.assertEqual(p.stderr, b'sendmail: message not sent: larger than max_message_size (2000 octets)\n')
        self.assertEqual(len(self.r.envs()), 1)       # only the first
        for sub in os.listdir(os.path.join(self.r.root, 'queue', 'tmp')):
            self.assertEqual(os.listdir(os.path.join(self.r.root, 'queue', 'tmp', sub)), [])

    def test_caller_ignoring_sigchld(self):
        """A caller that set SIGCHLD to SIG_IGN (a Perl or Python program
        that reaps no children; swaks --pipe) hands sendmail that disposition
        across exec. sendmail's waitpid for queue-inject then failed with
        ECHILD, so it exited 75 with nothing said, although the message was
        queued: the caller tries again and the mail goes twice."""
        p = subprocess.run([self.sendmail, '-i', 'bob@example.test'], input=b'Subject: x\n\nbody\n',
                           capture_output=True, timeout=30,
                           preexec_fn=lambda: signal.signal(signal.SIGCHLD, signal.SIG_IGN))
        self.assertEqual((p.returncode, p.stderr), (0, b''))
        env, mess = self.only_message()
        self.assertTrue(mess.endswith('\n\nbody\n'), mess)

    def test_caller_closed_stdout_and_stderr(self):
        """GNU mailutils' mail runs "sendmail -oi -f SENDER -t" with
        stdout and stderr closed: the two pipes to queue-inject then took
        fds 1 and 2, and setting up queue-inject's fd 0 and 1 closed the
        envelope pipe again (status 55), so sendmail exited 75 and mail
        said "cannot send message"."""
        def close_out_err():
            os.close(1)
            os.close(2)
        p = subprocess.run([self.sendmail, '-oi', '-f', 'me@example.test', '-t'],
                           input=b'To: bob@example.test\nSubject: x\n\nbody\n',
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30,
                           preexec_fn=close_out_err)
        self.assertEqual(p.returncode, 0)
        env, mess = self.only_message()
        self.assertIn('\tbob@example.test\t', env)
        self.assertTrue(mess.endswith('\n\nbody\n'), mess)

    def test_dot_ends_message_without_i(self):
        p = self.run_sendmail(['bob@example.test'], b'Subject: x\n\nbody\n.\nnot part\n')
        self.assertEqual(p.returncode, 0, p.stderr)
        env, mess = self.only_message()
        self.assertTrue(mess.endswith('\n\nbody\n'), mess)
        self.assertIn('rcpt\tpending\t0\t0\t\t\tbob@example.test\t', env)

    def test_existing_headers_kept_and_body_without_header(self):
        p = self.run_sendmail(['-oi', 'bob'], b'just a body line\nsecond\n')
        self.assertEqual(p.returncode, 0, p.stderr)
        env, mess = self.only_message()
        self.assertIn('\n\njust a body line\nsecond\n', mess)
        self.assertIn('\tbob@mx.example.test\t', env)
        p = self.run_sendmail(['-i', 'bob'], b'From: x@y\nDate: today\nMessage-ID: <a@b>\n\nb\n')
        self.assertEqual(p.returncode, 0, p.stderr)
        mess = [self.r.read_mess(os.path.basename(e)).decode() for e in self.r.envs()]
        m = [x for x in mess if 'Message-ID: <a@b>' in x][0]
        self.assertEqual(m.count('Date:'), 1)
        self.assertEqual(m.count('From:'), 1)
        self.assertEqual(m.count('Message-ID:'), 1)

    def rcpts(self, env):
        return sorted(re.findall(r'^rcpt\t[^\t]*\t[^\t]*\t[^\t]*\t[^\t]*\t[^\t]*\t([^\t]*)\t', env, re.M))

    def test_clustered_flags(self):
        """flags run together as getopt(3) takes them, as Postfix's sendmail
        does: "sendmail -it", "-ti", "-tif sender" (they were exit 64,
        unsupported option, and the script's mail was lost)"""
        msg = b'To: bob@example.test\nSubject: x\n\nb\n.\nstill body\n'
        for args, sender in ((['-ti'], 'root'), (['-it'], 'root'), (['-tifme@example.org'], 'me@example.org'),
                             (['-ti', '-f', 'me@example.org'], 'me@example.org'), (['-toi'], 'root')):
            p = self.run_sendmail(args, msg)
            self.assertEqual(p.returncode, 0, (args, p.stderr))
            env, mess = self.only_message()
            self.assertEqual(self.rcpts(env), ['bob@example.test'], args)
            self.assertTrue(mess.endswith('\nb\n.\nstill body\n'), (args, mess))
            if sender != 'root':
                self.assertIn('sender %s\n' % sender, env)
            os.unlink(self.r.envs()[0])

    def test_t_takes_resent_fields_of_a_resent_message(self):
        """-t on a message with Resent- fields (one being passed on) takes its
        recipients from Resent-To:, Resent-Cc: and Resent-Bcc: only, as
        Postfix's and Sendmail's -t do; it mailed the original To: and Cc:
        again, never the new ones, and left Resent-Bcc: for all to see"""
        msg = (b'From: a@example.org\nTo: orig@example.org\nCc: origcc@example.org\nBcc: origbcc@example.org\n'
               b'Resent-From: me@example.test\nResent-To: new@example.net\nResent-Cc: Ann <ann@example.net>\n'
               b'Resent-Bcc: hidden@example.net\nSubject: fwd\n\nbody\n')
        p = self.run_sendmail(['-t', '-i'], msg)
        self.assertEqual(p.returncode, 0, p.stderr)
        env, mess = self.only_message()
        self.assertEqual(self.rcpts(env), ['ann@example.net', 'hidden@example.net', 'new@example.net'])
        self.assertNotIn('hidden', mess)
        self.assertNotIn('Bcc', mess)
        self.assertIn('\nTo: orig@example.org\nCc: origcc@example.org\n', mess)
        os.unlink(self.r.envs()[0])
        # Resent- fields but no Resent- recipient: none from the header
        p = self.run_sendmail(['-t', '-i'], b'To: orig@example.org\nResent-From: me@example.test\n\nb\n')
        self.assertEqual(p.returncode, 64, p.stderr)
        p = self.run_sendmail(['-t', '-i', 'extra@example.net'], b'To: orig@example.org\nResent-From: x@y\n\nb\n')
        self.assertEqual(p.returncode, 0, p.stderr)
        env, _ = self.only_message()
        self.assertEqual(self.rcpts(env), ['extra@example.net'])

    def test_bcc_removed_without_t(self):
        """Bcc: and Resent-Bcc: never reach the recipients, with or without
        -t, as Postfix's and Sendmail's sendmail do: mutt (write_bcc) and
        other programs give the recipients as arguments and leave the Bcc:
        field for the MTA to remove; postern passed it on to everyone"""
        p = self.run_sendmail(['-i', 'bob@example.test', 'secret@example.net'],
                              b'To: bob@example.test\nBcc: secret@example.net\nResent-Bcc: s2@example.net\n'
                              b'Subject: x\n\nb\n')
        self.assertEqual(p.returncode, 0, p.stderr)
        env, mess = self.only_message()
        self.assertEqual(self.rcpts(env), ['bob@example.test', 'secret@example.net'])
        self.assertNotIn('Bcc', mess)
        self.assertNotIn('s2@', mess)
        self.assertIn('\nTo: bob@example.test\nSubject: x\n', mess)

    def test_leading_mbox_from_lines_dropped(self):
        """a message that starts with mbox "From " (or ">From ") envelope
        lines, as formail -s and procmail's forwarding hand over, is the
        message after them, as Postfix's and Sendmail's sendmail take it;
        postern took the line for the start of a body, so the whole header
        went into the body, and -t found no recipient (64: mail lost)"""
        msg = (b'From someone@example.org Fri Nov 27 01:00:00 2026\r\n>From other@example.org Thu Nov 26 2026\n'
               b'From: s@example.org\nTo: bob@example.test\nSubject: fwd\n\nbody\nFrom here on\n')
        p = self.run_sendmail(['-oi', '-t'], msg)
        self.assertEqual(p.returncode, 0, p.stderr)
        env, mess = self.only_message()
        self.assertEqual(self.rcpts(env), ['bob@example.test'])
        self.assertNotIn('someone', mess)
        self.assertNotIn('other@', mess)
        self.assertIn('\nFrom: s@example.org\nTo: bob@example.test\nSubject: fwd\n', mess)
        self.assertEqual(mess.count('From: '), 1)
        self.assertTrue(mess.endswith('\n\nbody\nFrom here on\n'), mess)

    def test_dsn_options(self):
        """-N dsn, -R ret and -V envid as Postfix's sendmail takes them
        (they were ignored: "sendmail -N never" still got its bounces)"""
        p = self.run_sendmail(['-i', '-N', 'never', '-R', 'hdrs', '-V', 'job 7+1', 'bob@example.test',
                               'carol@example.test'], b'Subject: x\n\nb\n')
        self.assertEqual(p.returncode, 0, p.stderr)
        env, _ = self.only_message()
        self.assertIn('\nret hdrs\n', env)
        self.assertIn('\nenvid job+207+2B1\n', env)
        self.assertIn('rcpt\tpending\t0\t0\tNEVER\t\tbob@example.test\t', env)
        self.assertIn('rcpt\tpending\t0\t0\tNEVER\t\tcarol@example.test\t', env)
        os.unlink(self.r.envs()[0])
        p = self.run_sendmail(['-i', '-Nsuccess,delay,failure', '-RFULL', 'bob@example.test'], b'Subject: x\n\nb\n')
        self.assertEqual(p.returncode, 0, p.stderr)
        env, _ = self.only_message()
        self.assertIn('\nret full\n', env)
        self.assertIn('rcpt\tpending\t0\t0\tSUCCESS,FAILURE,DELAY\t\tbob@example.test\t', env)
        for bad in (['-N', 'never,success'], ['-N', 'sometimes'], ['-R', 'body'], ['-V', 'x' * 101],
                    ['-V', 'tab\there']):
            p = self.run_sendmail(['-i'] + bad + ['bob@example.test'], b'Subject: x\n\nb\n')
            self.assertEqual(p.returncode, 64, (bad, p.stderr))

    def test_usage_errors(self):
        for args, code in ((['-bs', 'bob@example.test'], 64), (['-bd'], 64), (['-q1h'], 64), (['-X'], 64), ([], 64),
                           (['-f'], 64), (['bad address@x'], 65)):
            p = self.run_sendmail(args, b'Subject: x\n\nb\n')
            self.assertEqual(p.returncode, code, (args, p.stderr))
            self.assertTrue(p.stderr.startswith(b'sendmail: '), p.stderr)
        self.assertEqual(self.r.envs(), [])

    def test_queue_modes(self):
        """the modes operators and scripts call sendmail for: -bp (or the
        name mailq) is postern-queue list and -q postern-queue flush, run
        with the caller's own rights; -bi (or the name newaliases) has
        nothing to rebuild and says so; other -b and -q modes stay refused,
        and -bs (an SMTP dialogue, test_ops.SendmailSmtpMode) takes no recipients"""
        need_bin(self, 'postern-queue')
        p = self.run_sendmail(['-i', 'bob@example.test'], b'Subject: x\n\nb\n')
        self.assertEqual(p.returncode, 0, p.stderr)
        pq = os.path.join(self.r.root, 'bin', 'postern-queue')

        def masked(text):   # a message's age may tick between two runs
            return re.sub(r'(?m)^([0-9A-F]{16}) \d+ ', r'\1 AGE ', text)

        direct = subprocess.run([pq, '--root', self.r.root, 'list'], capture_output=True, text=True, timeout=30)
        self.assertEqual(direct.returncode, 0, direct.stderr)
        self.assertIn('<bob@example.test>', direct.stdout)
        for name in ('mailq', 'newaliases'):
            os.symlink('sendmail', os.path.join(self.r.root, 'bin', name))
        for argv in ([self.sendmail, '-bp'], [os.path.join(self.r.root, 'bin', 'mailq')]):
            p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            self.assertEqual((p.returncode, masked(p.stdout)), (0, masked(direct.stdout)), (argv, p.stderr))
        direct = subprocess.run([pq, '--root', self.r.root, 'flush'], capture_output=True, text=True, timeout=30)
        p = subprocess.run([self.sendmail, '-q'], capture_output=True, text=True, timeout=30)
        self.assertEqual((p.returncode, p.stdout, p.stderr), (direct.returncode, direct.stdout, direct.stderr))
        for argv in ([self.sendmail, '-bi'], [self.sendmail, '-I'], [os.path.join(self.r.root, 'bin', 'newaliases')]):
            p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 0, (argv, p.stderr))
            self.assertIn('nothing to rebuild', p.stderr)
        for args in (['-bp', 'bob'], ['-q30m'], ['-qRexample.test'], ['-bs', 'bob']):
            p = self.run_sendmail(args, b'')
            self.assertEqual(p.returncode, 64, (args, p.stderr))
        self.assertEqual(len(self.r.envs()), 1)

    def test_tempfail_when_queue_broken(self):
        os.rename(os.path.join(self.r.q, 'tmp'), os.path.join(self.r.q, 'tmp.away'))
        p = self.run_sendmail(['-i', 'bob@example.test'], b'Subject: x\n\nb\n')
        self.assertEqual(p.returncode, 75, p.stderr)
        self.assertEqual(self.r.envs(), [])

    def test_root_option(self):
        other = QueueRoot()
        try:
            p = subprocess.run([os.path.join(BIN, 'sendmail'), '-C', other.root, '-i', 'bob@example.test'],
                               input=b'Subject: x\n\nb\n', capture_output=True, timeout=30)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(len(other.envs()), 1)
        finally:
            other.cleanup()


if __name__ == '__main__':
    unittest.main()
