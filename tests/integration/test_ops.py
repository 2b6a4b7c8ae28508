"""The operator's seat, as README.md ("Operations") and the man pages
describe it: the tools (postern-queue, postern-confcheck) on an instance
that is not there, a bad argument, --help; and a running instance's logs,
one event a line "program: level: id key=value", no password, no body, one
message followable by its id from connection to delivery."""

import os
import poplib
import pwd
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import unittest

import harness
from harness import Instance, need, send_mail


def run(program, *args, env=None):
    e = {k: v for k, v in os.environ.items() if k != 'POSTERN_ROOT'}
    e.update(env or {})
    return subprocess.run([os.path.join(harness.BIN, program)] + list(args), env=e,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=30)


class NoInstance(unittest.TestCase):
    """A ROOT that holds no instance is an error, never an empty queue."""

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix='postern-ops-')
        self.addCleanup(shutil.rmtree, self.root, True)

    def test_queue_list_and_stat_of_no_queue_fail(self):
        need(self, 'postern-queue')
        for cmd in ('list', 'stat'):
            for where in (self.root, os.path.join(self.root, 'nonexistent')):
                r = run('postern-queue', '--root', where, cmd)
                self.assertEqual((r.returncode, r.stdout), (111, ''), (cmd, where, r.stderr))
                self.assertIn(os.path.join(where, 'queue'), r.stderr)
        # the same through POSTERN_ROOT
        r = run('postern-queue', 'stat', env={'POSTERN_ROOT': self.root})
        self.assertEqual((r.returncode, r.stdout), (111, ''), r.stderr)


class QueueToolErrors(unittest.TestCase):
    """postern-queue's answers when it cannot do what it is asked: a user
    who may not read the queue, queue-manager not running, a bad id."""

    def setUp(self):
        need(self, 'postern-setup', 'postern-queue', 'queue-inject', 'sendmail')
        harness.need_root(self, 'runs postern-queue as another user')
        # no queue-manager: what is queued stays
        self.inst = Instance(services=())
        self.inst.setup()
        self.addCleanup(self.inst.stop)
        self.inst.run('sendmail', '-f', 'bob@client.test', 'alice@example.test', input='Subject: x\n\nx\n')
        self.qid, = self.inst.queue_ids()

    def as_nobody(self, *args):
        return subprocess.run(['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups',
                               self.inst.bin('postern-queue'), '--root', self.inst.root] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=30)

    def test_a_user_who_may_not_read_the_queue(self):
        for args in (['list'], ['stat'], ['show', self.qid], ['delete', self.qid], ['flush']):
            r = self.as_nobody(*args)
            self.assertEqual((r.returncode, r.stdout), (111, ''), (args, r.stderr))
            self.assertIn('Permission denied', r.stderr, args)
            self.assertNotIn('no such message', r.stderr, args)
        self.assertEqual(self.inst.queue_ids(), [self.qid])

    def test_list_fields_hold_no_space(self):
        """postern-queue(8): "Fields never contain spaces except LAST_ERROR",
        even for addresses with a quoted local part (escaped as \\x20)."""
        self.inst.run('sendmail', '-f', '"x y"@client.test', '"a b"@example.test', 'c\\d@example.test',
                      input='Subject: x\n\nx\n')
        lines = self.inst.run('postern-queue', 'list').stdout.splitlines()
        self.assertEqual(len(lines), 5, lines)
        odd = lines[2:] if lines[0].startswith(self.qid) else lines[:3]
        self.assertEqual(len(odd[0].split(' ')), 4, odd[0])
        self.assertEqual(odd[0].split(' ')[3], '<"x\\x20y"@client.test>')
        self.assertEqual(odd[1].split(' ', 4)[:4], ['', '', 'pending', '0'])
        self.assertEqual(sorted(l.split(' ')[4] for l in odd[1:]),
                         ['<"a\\x20b"@example.test>', '<c\\x5cd@example.test>'])

    def test_queue_manager_not_running_and_bad_ids(self):
        r = self.inst.run('postern-queue', 'delete', self.qid, check=False)
        self.assertEqual((r.returncode, r.stdout), (111, ''), r.stderr)
        self.assertIn('queue-manager is not running', r.stderr)
        r = self.inst.run('postern-queue', 'flush', check=False)
        self.assertEqual((r.returncode, r.stdout), (111, ''), r.stderr)
        self.assertEqual(self.inst.queue_ids(), [self.qid])
        for cmd in ('show', 'delete'):
            r = self.inst.run('postern-queue', cmd, '0' * 16, check=False)
            self.assertEqual((r.returncode, r.stdout), (100, ''), cmd)
            self.assertIn('%s: no such message' % ('0' * 16), r.stderr)
            r = self.inst.run('postern-queue', cmd, '../../etc/passwd', check=False)
            self.assertEqual((r.returncode, r.stdout), (100, ''), cmd)
            self.assertIn('not a queue id', r.stderr)
        r = self.inst.run('postern-queue', 'list')
        self.assertEqual(r.stdout.splitlines()[0].split(' ')[0], self.qid)


class ConfcheckOptions(unittest.TestCase):
    """postern-confcheck takes the instance as --root DIR like the other
    tools (README: "--root ROOT may be left out ..."), or as an operand."""

    def setUp(self):
        need(self, 'postern-confcheck')
        self.root = tempfile.mkdtemp(prefix='postern-ops-')
        self.addCleanup(shutil.rmtree, self.root, True)
        os.mkdir(os.path.join(self.root, 'conf'))
        self.conf = os.path.join(self.root, 'conf', 'postern.conf')

    def write(self, text):
        with open(self.conf, 'w') as f:
            f.write(text)

    def test_root_option(self):
        self.write('hostname = mail.example.test\n')
        for args in (['--root', self.root], [self.root]):
            r = run('postern-confcheck', *args)
            self.assertEqual((r.returncode, r.stdout, r.stderr), (0, '', ''), args)
        self.write('hostname = mail.example.test\nmax_recipients = banana\n')
        for args in (['--root', self.root], [self.root]):
            r = run('postern-confcheck', *args)
            self.assertEqual(r.returncode, 100, args)
            self.assertEqual(r.stderr, '%s:2: max_recipients: not a number\n' % self.conf)
        r = run('postern-confcheck', '--root')
        self.assertEqual(r.returncode, 100)
        self.assertIn('usage:', r.stderr)
        r = run('postern-confcheck', '--root', self.root, self.root)
        self.assertEqual(r.returncode, 100)
        self.assertIn('usage:', r.stderr)

    def test_aliases_and_routes_through_their_parsers(self):
        """An edit of conf/aliases or conf/routes is checked by the parser
        the daemons use (local-deliverer and smtp-listener, remote-deliverer),
        before a reload finds it."""
        self.write('hostname = mail.example.test\n')
        aliases = os.path.join(self.root, 'conf', 'aliases')
        routes = os.path.join(self.root, 'conf', 'routes')
        with open(aliases, 'w') as f:
            f.write('postmaster: alice\nsales: alice, bob@far.example\n')
        with open(routes, 'w') as f:
            f.write('far.example [192.0.2.25]:25 tls=none\n')
        r = run('postern-confcheck', self.root)
        self.assertEqual((r.returncode, r.stderr), (0, ''))
        with open(aliases, 'a') as f:
            f.write('# a comment\nlog: /var/log/mail.txt\n')
        r = run('postern-confcheck', self.root)
        self.assertEqual(r.returncode, 100)
        self.assertEqual(r.stderr, '%s:4: file targets are not supported\n' % aliases)
        with open(routes, 'a') as f:
            f.write('bad.example relay.example:25 colour=blue\n')
        r = run('postern-confcheck', self.root)
        self.assertEqual(r.returncode, 100)
        lines = r.stderr.splitlines()
        self.assertEqual(lines[0], '%s:4: file targets are not supported' % aliases)
        self.assertTrue(lines[1].startswith('%s:2: ' % routes), lines)
        self.assertEqual(len(lines), 2, lines)
        # missing aliases and routes files are empty tables, as for the daemons
        os.unlink(aliases)
        os.unlink(routes)
        r = run('postern-confcheck', self.root)
        self.assertEqual((r.returncode, r.stderr), (0, ''))

    def test_help(self):
        for flag in ('-h', '--help'):
            r = run('postern-confcheck', flag)
            self.assertEqual((r.returncode, r.stderr), (0, ''), flag)
            self.assertTrue(r.stdout.startswith('usage: postern-confcheck'), r.stdout)


class ToolHelp(unittest.TestCase):
    """-h and --help print the summary on stdout and exit 0 (the man pages
    say so); a bad usage goes to stderr with exit 100."""

    def test_help_and_usage(self):
        # copies outside any instance: usage comes before looking for ROOT
        d = tempfile.mkdtemp(prefix='postern-ops-')
        self.addCleanup(shutil.rmtree, d, True)
        os.mkdir(os.path.join(d, 'bin'))
        for prog in ('postern-queue', 'postern-user', 'postern-confcheck', 'postern-setup'):
            if not harness.have(prog):
                continue
            shutil.copy(os.path.join(harness.BIN, prog), os.path.join(d, 'bin'))
            for args in (['-h'], ['--help'], ['--bogus-option'], ['frob', 'x', 'y']):
                r = subprocess.run([os.path.join(d, 'bin', prog)] + args, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, universal_newlines=True, timeout=30,
                                   env={k: v for k, v in os.environ.items() if k != 'POSTERN_ROOT'})
                if args[0].startswith('-h') or args[0] == '--help':
                    self.assertEqual((r.returncode, r.stderr), (0, ''), (prog, args))
                    self.assertTrue(r.stdout.startswith('usage: ' + prog), (prog, r.stdout))
                else:
                    self.assertEqual((r.returncode, r.stdout), (100, ''), (prog, args))
                    self.assertIn('usage: ' + prog, r.stderr, args)


class DaemonReadinessFd(unittest.TestCase):
    """-d FD that is not a descriptor number is bad usage, exit 100 (the
    man pages' EXIT STATUS), before the daemon starts; it used to be read
    as 0, so the daemon started and wrote its readiness line to, and
    closed, descriptor 0 (remote-deliverer's job socket)."""

    def refuses_usage(self, prog, args):
        """prog ARGS exits 100 with its usage, instead of starting"""
        p = subprocess.Popen([os.path.join(harness.BIN, prog)] + args, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                             start_new_session=True)
        try:
            _, err = p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            self.fail('%s %r started instead of refusing the usage' % (prog, args))
        self.assertEqual(p.returncode, 100, (prog, args, err))
        self.assertIn('usage: ' + prog, err, (prog, args))

    def test_bad_fd_is_usage_error(self):
        root = tempfile.mkdtemp(prefix='postern-ops-')
        self.addCleanup(shutil.rmtree, root, True)
        os.mkdir(os.path.join(root, 'conf'))
        with open(os.path.join(root, 'conf', 'postern.conf'), 'w') as f:
            f.write('smtp_listen = 127.0.0.1:0\npop3_listen = 127.0.0.1:0\n')
        for prog in ('smtp-listener', 'pop3-listener', 'queue-manager', 'auth-checker',
                     'remote-deliverer'):
            if not harness.have(prog):
                continue
            for fd in ('abc', '3x', '', '-1'):
                self.refuses_usage(prog, ['-d', fd, root])

    def test_local_deliverer_takes_one_root(self):
        """local-deliverer ROOT takes nothing else (queue-manager runs it so):
        extra words, or an option, are bad usage, exit 100; it used to take
        the last word as ROOT and ignore the rest."""
        need(self, 'local-deliverer')
        root = tempfile.mkdtemp(prefix='postern-ops-')
        self.addCleanup(shutil.rmtree, root, True)
        os.mkdir(os.path.join(root, 'conf'))
        open(os.path.join(root, 'conf', 'postern.conf'), 'w').close()
        for args in (['-d', '3', root], ['extra', root], [root, root]):
            self.refuses_usage('local-deliverer', args)

    def test_local_deliverer_stops_when_fd0_is_no_socket(self):
        """local-deliverer on a descriptor 0 that is not a socket logs one
        error and stops, as remote-deliverer does; it used to log
        "refused record" in a busy loop for ever. stderr is not read until
        it exits, so the old loop blocks on the full pipe and never ends."""
        need(self, 'local-deliverer')
        root = tempfile.mkdtemp(prefix='postern-ops-')
        self.addCleanup(shutil.rmtree, root, True)
        os.mkdir(os.path.join(root, 'conf'))
        open(os.path.join(root, 'conf', 'postern.conf'), 'w').close()
        p = subprocess.Popen([os.path.join(harness.BIN, 'local-deliverer'), root],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, universal_newlines=True,
                             start_new_session=True)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            self.fail('local-deliverer kept running on a descriptor 0 that is no socket')
        err = p.stderr.read()
        p.stderr.close()
        self.assertEqual(p.returncode, 0, err)
        self.assertIn('event=stop reason=error error="Socket operation on non-socket"', err)
        self.assertNotIn('refused record', err)

    def test_bad_tls_proxy_timeout_is_usage_error(self):
        """tls-proxy -t SECONDS that is not a number of seconds (1 or more)
        is bad usage, exit 100; it used to be read as 0, which silently
        meant session_timeout."""
        need(self, 'tls-proxy')
        root = tempfile.mkdtemp(prefix='postern-ops-')
        self.addCleanup(shutil.rmtree, root, True)
        os.mkdir(os.path.join(root, 'conf'))
        open(os.path.join(root, 'conf', 'postern.conf'), 'w').close()
        for t in ('abc', '10x', '0', ''):
            r = run('tls-proxy', '-t', t, '-c', root)
            self.assertEqual(r.returncode, 100, (t, r.stderr))
            self.assertIn('usage: tls-proxy', r.stderr, t)


class SetupCheck(unittest.TestCase):
    """postern-aliases(5): while conf/aliases has an error, "postern-setup
    --root ROOT --check names the line" -- any error the daemons would
    refuse, not only a line that does not look like "name: address"."""

    def test_check_names_a_refused_alias_target(self):
        need(self, 'postern-setup', 'postern-confcheck')
        inst = Instance()
        inst.setup()
        self.addCleanup(inst.stop)
        with open(inst.path('conf', 'aliases'), 'a') as f:
            f.write('run: |/usr/bin/true\n')
        with open(inst.path('conf', 'aliases')) as f:
            line = len(f.read().splitlines())
        r = subprocess.run([inst.bin('postern-setup'), '--root', inst.root, '--check'],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                           timeout=120)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn('conf/aliases:%d: program targets are not supported' % line, r.stdout)
        self.assertIn('edit that line of conf/aliases', r.stdout)
        self.assertNotIn('edit conf/postern.conf', r.stdout)

    def test_check_warns_of_a_user_behind_an_alias(self):
        """A user whose name is also an alias gets no mail of its own (the
        alias is looked up first, as in Postfix): --check warns, unless the
        alias lists the name itself (keep a copy). Found by the README
        walkthrough: postern-user add sales, with 'sales: alice' in
        conf/aliases, was accepted and sales never got a message."""
        need(self, 'postern-setup', 'postern-user')
        inst = Instance()
        inst.setup()
        self.addCleanup(inst.stop)
        for name in ('alice', 'sales', 'keep'):
            inst.add_user(name, 'pw-%s-1' % name)
        with open(inst.path('conf', 'aliases'), 'a') as f:
            f.write('Sales: alice,\n  bob@far.test\nkeep: alice, keep\n')
        r = subprocess.run([inst.bin('postern-setup'), '--root', inst.root, '--check'],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                           timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout)          # a warning, not a problem
        self.assertIn("warning: 'sales' is both a postern user and an alias", r.stdout)
        self.assertNotIn("'keep' is both", r.stdout)
        self.assertNotIn("'alice' is both", r.stdout)
        # postern-user add says so too (and adds the user)
        r = inst.run('postern-user', 'add', 'keep2', input='pw-keep2-1\n')
        self.assertEqual(r.stderr, '')
        with open(inst.path('conf', 'aliases'), 'a') as f:
            f.write('team2: alice\n')
        r = inst.run('postern-user', 'add', 'Team2', input='pw-team2-1\n')
        self.assertIn('postern-user: warning: team2 is also an alias in %s' % inst.path('conf', 'aliases'), r.stderr)
        self.assertIn('added team2 ', r.stdout)


# s6-log's timestamp, two spaces, then "program: level: id" and key=value
# fields whose value is a token without spaces or quotes, or a "quoted" text
LOG_LINE = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+  [a-z0-9-]+: (info|warn|error|fatal): \S+'
                      r'( [A-Za-z0-9_.-]+=("([^"\\]|\\.)*"|[^ "]*))*$')


def deferring_server(srv):
    """A next hop that greets and answers every RCPT with a 450 whose text
    holds quotes and a backslash."""
    while True:
        try:
            c, _ = srv.accept()
        except OSError:
            return
        with c:
            f = c.makefile('rb')
            c.sendall(b'220 odd.test ESMTP\r\n')
            for line in f:
                verb = line[:4].upper()
                if verb in (b'EHLO', b'HELO'):
                    c.sendall(b'250 odd.test\r\n')
                elif verb == b'RCPT':
                    c.sendall(b'450 4.2.0 say "hi" \\ then go\r\n')
                elif verb == b'QUIT':
                    c.sendall(b'221 bye\r\n')
                    break
                else:
                    c.sendall(b'250 ok\r\n')


class OperatorLogs(unittest.TestCase):
    PASSWORD = 'Pw-9f3kq-never-logged'
    BODY = 'BODY-7x2m-never-logged'

    def setUp(self):
        need(self, 'postern-setup', 'smtp-listener', 'queue-manager', 'local-deliverer',
             'pop3-listener', 'auth-checker')
        self.inst = Instance(users={'alice': self.PASSWORD})
        self.inst.start()
        self.addCleanup(self.inst.stop)

    def logs(self):
        return {s: self.inst.log(s) for s in os.listdir(self.inst.path('log'))}

    def deliver(self, subject):
        r = send_mail(self.inst.port('smtp'), 'bob@client.test', ['alice@example.test'],
                      'Subject: %s\n\n%s\n' % (subject, self.BODY))
        self.assertTrue(r.startswith('250'), r)
        return re.search(r'queued as ([0-9A-F]{16})', r).group(1)

    def test_message_id_logged(self):
        """An operator looking for a message a user names by its Message-ID
        finds it in the log (as Postfix logs message-id=): the queued line
        carries it, and one without a Message-ID field says nothing."""
        r = send_mail(self.inst.port('smtp'), 'bob@client.test', ['alice@example.test'],
                      'Message-ID:\n <20261127.abc@client.test>\nSubject: m\n\nx\n')
        qid = re.search(r'queued as ([0-9A-F]{16})', r).group(1)
        other = self.deliver('no id')
        log = self.inst.wait_log('smtp-listener', 'event=queued id=%s ' % other)
        self.assertRegex(log, r'event=queued id=%s size=\d+ rcpts=1 msgid=<20261127\.abc@client\.test>\n' % qid)
        self.assertRegex(log, r'event=queued id=%s size=\d+ rcpts=1\n' % other)

    def test_one_event_a_line_no_secret_and_followable(self):
        inst = self.inst
        qid = self.deliver('one')
        inst.wait_log('queue-manager', '%s rcpt=alice@example.test result=delivered' % qid)
        # from the connection to the delivery: the session id the listener
        # logs ties the connection to "queued id=QID"; QID ties the rest
        smtp = inst.log('smtp-listener').splitlines()
        sid = [l.split()[4] for l in smtp if 'event=queued id=%s ' % qid in l]
        self.assertEqual(len(sid), 1, smtp)
        events = [re.search(r' event=(\w+)', l).group(1) for l in smtp if l.split()[4] == sid[0]]
        self.assertEqual(events[0], 'connect')
        self.assertIn('disconnect', events)
        # queue-manager says where each message came from when it takes it
        # in (as Postfix's qmgr logs from=, size=, nrcpt=); mail from
        # sendmail, which no listener logs, shows up there first
        self.assertRegex(inst.log('queue-manager'),
                         r'%s event=new from=<bob@client\.test> size=\d+ nrcpt=1 client="smtp 127\.0\.0\.1 ' % qid)
        inst.run('sendmail', '-f', 'carol@example.test', 'alice@example.test', input='Subject: local\n\nx\n')
        inst.wait_for(lambda: re.search(r'(\w{16}) event=new from=<carol@example\.test> size=\d+ nrcpt=1 '
                                        r'client="sendmail \(uid %d\)"' % os.getuid(), inst.log('queue-manager')),
                      what='the sendmail message announced')
        # a client that goes away mid-session
        with harness.Conn(inst.port('smtp')) as c:
            harness.smtp_dialogue(inst.port('smtp'), [(None, '220'), ('EHLO client.test', '250')], conn=c)
        inst.wait_log('smtp-listener', 'event=disconnect reason=lost')
        # remote destinations (routes taken in by a reload of queue-manager):
        # one refuses the connection (a closed port), the other answers RCPT
        # with a reply that holds quotes and a backslash; a recipient with a
        # quoted local part
        srv = socket.socket()
        srv.bind(('127.0.0.1', 0))
        srv.listen(4)
        self.addCleanup(srv.close)
        threading.Thread(target=deferring_server, args=(srv,), daemon=True).start()
        with open(inst.path('conf', 'routes'), 'w') as f:
            f.write('far.test [127.0.0.1]:%d\n' % harness.free_ports(1)[0])
            f.write('odd.test [127.0.0.1]:%d\n' % srv.getsockname()[1])
        inst.reload_and_wait('queue-manager')
        inst.wait_log('queue-manager', 'event=reload from=queue-manager routes=2')
        r = send_mail(inst.port('smtp'), 'bob@client.test', ['carol@far.test'], 'Subject: far\n\nx\n')
        fqid = re.search(r'queued as ([0-9A-F]{16})', r).group(1)
        inst.wait_log('queue-manager', '%s rcpt=carol@far.test result=deferred' % fqid)
        r = send_mail(inst.port('smtp'), '"x y"@client.test', ['"a b"@odd.test'], 'Subject: odd\n\nx\n')
        oqid = re.search(r'queued as ([0-9A-F]{16})', r).group(1)
        inst.wait_log('queue-manager', '%s rcpt=' % oqid)
        inst.wait_for(lambda: 'result=deferred' in [l for l in inst.log('queue-manager').splitlines()
                                                   if oqid + ' rcpt=' in l][-1], what='the odd deferral')
        # a login, a wrong password; POP3 on loopback may log in without TLS
        p = poplib.POP3('127.0.0.1', inst.port('pop3'), timeout=10)
        p.user('alice')
        p.pass_(self.PASSWORD)
        p.quit()
        p = poplib.POP3('127.0.0.1', inst.port('pop3'), timeout=10)
        p.user('alice')
        with self.assertRaises(poplib.error_proto):
            p.pass_(self.PASSWORD + 'x')
        p.quit()
        inst.wait_log('auth-checker', 'result=bad')
        # reloads: a bad postern.conf is refused (old one kept), then a good one
        conf = inst.path('conf', 'postern.conf')
        with open(conf) as f:
            good = f.read()
        with open(conf, 'a') as f:
            f.write('max_recipients = banana\n')
        for s in inst.services:
            inst.reload(s)
        for s in ('queue-manager', 'smtp-listener', 'pop3-listener', 'auth-checker'):
            inst.wait_log(s, 'max_recipients: not a number')
        self.assertRegex(inst.log('queue-manager'),
                         r'queue-manager: error: - event=reload status=refused error="%s:\d+: max_recipients: not a number" kept=previous'
                         % re.escape(conf))
        # a restart with the bad file: the daemon will not start, says why
        # (file:line: what) and s6 tries again each second
        inst.svc('auth-checker', '-r')
        inst.wait_for(lambda: 'exitcode 100' in inst.svstat('auth-checker'), 15, what='auth-checker exit 100')
        self.assertRegex(inst.log('auth-checker'),
                         r'auth-checker: fatal: - error="%s:\d+: max_recipients: not a number"' % re.escape(conf))
        with open(conf, 'w') as f:
            f.write(good)
        inst.wait_ready('auth-checker', 15)
        for s in inst.services:
            inst.reload_and_wait(s)
        # mail taken in while queue-manager is down is delivered when it is back
        inst.svc('queue-manager', '-d')
        inst.wait_log('queue-manager', 'event=exit code=0')
        qid2 = self.deliver('two')
        inst.svc('queue-manager', '-u')
        inst.wait_log('queue-manager', '%s rcpt=alice@example.test result=delivered' % qid2)
        inst.wait_for(lambda: len(inst.maildir_messages('alice')) == 3, what='all three delivered')
        bad = []
        for service, text in self.logs().items():
            self.assertNotIn(self.PASSWORD, text, service)
            self.assertNotIn(self.BODY, text, service)
            bad += [l for l in text.splitlines() if not LOG_LINE.match(l)]
        self.assertEqual(bad, [])

    def test_tls_line_carries_the_session_id(self):
        """tls-proxy's summary line names the session it served (tls-proxy(8)
        -i): on 465 (TLS from the first byte) as after STARTTLS on 25."""
        need(self, 'tls-proxy')
        inst = self.inst
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP_SSL('127.0.0.1', inst.port('smtps'), timeout=15, context=ctx) as c:
            c.ehlo('client.test')
        with smtplib.SMTP('127.0.0.1', inst.port('smtp'), timeout=15) as c:
            c.starttls(context=ctx)
            c.ehlo('client.test')
        def sessions():
            log = inst.log('smtp-listener').splitlines()
            tls = [l.split()[4] for l in log if ' tls-proxy: info: ' in l and ' proto=' in l]
            conn = [(l.split()[4], re.search(r' tls=(\d)', l).group(1))
                    for l in log if ' event=connect ' in l]
            return tls, conn
        inst.wait_for(lambda: len(sessions()[0]) == 2, what='two tls-proxy summary lines')
        tls, conn = sessions()
        self.assertEqual(len(conn), 2, conn)
        self.assertEqual(sorted(tls), sorted(sid for sid, _ in conn))
        self.assertEqual(sorted(t for _, t in conn), ['0', '1'])

class SendmailSmtpMode(unittest.TestCase):
    """sendmail -bs: an SMTP dialogue on stdin/stdout, what PHP's Symfony
    Mailer and Laravel run by default ("/usr/sbin/sendmail -bs -i"). It was
    refused with 64, so such an application could send no mail at all."""

    def setUp(self):
        need(self, 'postern-setup', 'sendmail', 'queue-inject', 'queue-manager', 'local-deliverer')
        harness.need_root(self, 'runs sendmail as an ordinary user')
        self.inst = Instance(users={'alice': 'pw-alice'}).start()
        self.addCleanup(self.inst.stop)

    def dialogue(self, script, *args, preexec_fn=None):
        """run sendmail -bs as nobody with script on stdin (all at once, as
        a pipelining client may); its output, stderr and exit code"""
        r = subprocess.run(['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups',
                            self.inst.bin('sendmail'), '-bs'] + list(args),
                           input=script.encode(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env={'POSTERN_ROOT': self.inst.root, 'PATH': '/usr/bin:/bin'}, timeout=30,
                           preexec_fn=preexec_fn)
        return r.stdout.decode(), r.stderr.decode(), r.returncode

    def test_dialogue_queues_and_delivers(self):
        out, err, code = self.dialogue(
            'EHLO app.example\r\nMAIL FROM:<web@example.test>\r\nRCPT TO:<alice@example.test>\r\n'
            'RCPT TO:<nobody@example.test>\r\nDATA\r\nSubject: from php\r\n\r\n..dot\r\nbs body\r\n.\r\n'
            'QUIT\r\n', '-i')
        self.assertEqual((code, err), (0, ''))
        codes = [l[:3] for l in out.split('\r\n') if l[3:4] == ' ']
        self.assertEqual(codes, ['220', '250', '250', '250', '550', '354', '250', '221'], out)
        self.assertTrue(out.startswith('220 mail.example.test ESMTP'), out)
        self.assertIn('250-PIPELINING', out)
        self.assertNotIn('STARTTLS', out)
        self.assertNotIn('AUTH', out)
        qid = re.search(r'queued as ([0-9A-F]{16})', out).group(1)

        def delivered():
            return [m for _, m in self.inst.maildir_messages('alice') if b'bs body' in m]
        m = self.inst.wait_for(delivered, 15, what='the -bs message delivered')[0]
        head, body = m.split(b'\n\n', 1)
        self.assertEqual(body, b'.dot\nbs body\n')
        # who sent it is on record: queue-inject's line names nobody's uid
        self.assertIn(b'Received: (postern queue-inject invoked by uid %d)' % pwd.getpwnam('nobody').pw_uid, head)
        # a local submission, like sendmail's: the fields it lacked were added
        self.assertIn(b'\nDate: ', head)
        self.assertIn(b'\nMessage-ID: <', head)
        self.assertIn(b'\nFrom: <web@example.test>', head)
        self.assertRegex(self.inst.log('queue-manager'), r'%s event=new from=<web@example\.test> ' % qid)

    def test_caller_ignoring_sigchld(self):
        """swaks --pipe 'sendmail -bs' (Perl, SIGCHLD set to SIG_IGN, which
        exec keeps): the wait for queue-inject failed with ECHILD and the
        client was told 451 for a message that was queued, and delivered."""
        out, err, code = self.dialogue(
            'EHLO app.example\r\nMAIL FROM:<web@example.test>\r\nRCPT TO:<alice@example.test>\r\n'
            'DATA\r\nSubject: ignored sigchld\r\n\r\nbody\r\n.\r\nQUIT\r\n',
            preexec_fn=lambda: signal.signal(signal.SIGCHLD, signal.SIG_IGN))
        self.assertEqual((code, err), (0, ''))
        codes = [l[:3] for l in out.split('\r\n') if l[3:4] == ' ']
        self.assertEqual(codes, ['220', '250', '250', '250', '354', '250', '221'], out)

        def delivered():
            return [m for _, m in self.inst.maildir_messages('alice') if b'ignored sigchld' in m]
        self.inst.wait_for(delivered, 15, what='the -bs message delivered')

    def test_end_of_input_without_quit_and_recipients_refused(self):
        out, err, code = self.dialogue('HELO app.example\r\nNOOP\r\n')
        self.assertEqual(code, 0, err)
        self.assertEqual([l[:3] for l in out.split('\r\n') if l], ['220', '250', '250'], out)
        out, err, code = self.dialogue('QUIT\r\n', 'alice@example.test')
        self.assertEqual(code, 64)
        self.assertIn('take no recipients', err)



if __name__ == '__main__':
    unittest.main()
