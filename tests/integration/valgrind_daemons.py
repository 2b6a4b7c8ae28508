"""The daemons under valgrind's memcheck: run by `make valgrind` (not part of
`make check`: not named test_*.py), as

    POSTERN_BIN=$PWD/bin python3 tests/integration/valgrind_daemons.py

pop3-listener, auth-checker and queue-manager run under valgrind with
--trace-children=yes, so their forked and exec'd children are checked too:
POP3 pre-login sessions and mailbox processes, argon2id workers,
local-deliverer and its mailbox workers, remote-deliverer and its
per-job children. The instance receives mail for two users and a
postmaster alias (a bounce to a remote sender: remote-deliverer runs), is
read and changed over POP3, reloaded, stopped; every valgrind log must be
empty (no memory error, no definitely lost block).

Not here: smtp-listener. Under valgrind 3.19 its monitor's per-message
child (vfork, close every descriptor above 2, drop privileges, exec the
setuid queue-inject) exits 111 before queue-inject runs, so every message
gets 451; the sanitizer build covers smtp-listener (`make sanitize`).
queue-inject and tls-proxy are skipped (setuid; exec'd with a clean
environment). VG_WRAP="prog ..." chooses other services by hand."""

import glob
import os
import poplib
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Instance, need, need_root, send_mail

WRAPPED = tuple(os.environ.get('VG_WRAP', 'pop3-listener auth-checker queue-manager').split())


class DaemonsUnderValgrind(unittest.TestCase):
    def setUp(self):
        need(self, 'postern-setup', 'smtp-listener', 'queue-inject', *WRAPPED)
        need_root(self)
        if not shutil.which('valgrind'):
            self.fail('valgrind is not installed (make valgrind installs it)')
        self.logs = tempfile.mkdtemp(prefix='postern-vg.')
        os.chmod(self.logs, 0o1777)          # the daemons drop to their own users
        self.inst = Instance(users={'alice': 'pw-alice', 'bob': 'pw-bob'})
        self.inst.setup()
        vg = ('valgrind -q --vgdb=no --trace-children=yes --trace-children-skip=*/queue-inject,*/tls-proxy '
              '--leak-check=full --errors-for-leak-kinds=definite --log-file=%s/vg-%%p.log ' % self.logs)
        for svc in WRAPPED:
            run = self.inst.path('service', svc, 'run')
            with open(run) as f:
                text = f.read()
            prog = 'exec %s/bin/%s ' % (self.inst.root, svc)
            self.assertIn(prog, text, run)
            with open(run, 'w') as f:
                f.write(text.replace(prog, 'exec ' + vg + prog[len('exec '):]))
        self.inst.start()

    def tearDown(self):
        self.inst.stop()
        shutil.rmtree(self.logs, ignore_errors=True)

    def test_no_memory_errors_or_leaks(self):
        port = self.inst.port('smtp')
        for i in range(10):
            self.assertTrue(send_mail(port, 'x@client.test', ['alice@example.test', 'bob@example.test'],
                                      'Subject: %d\n\nhello\n.dot line\n' % i).startswith('250'))
        self.assertTrue(send_mail(port, 'x@client.test', ['alice@example.test', 'postmaster@example.test'],
                                  'Subject: to postmaster\n\nx\n').startswith('250'))
        self.inst.wait_for(lambda: len(self.inst.maildir_messages('alice')) >= 11
                           and len(self.inst.maildir_messages('bob')) >= 10, 180, what='the deliveries')
        p = poplib.POP3('127.0.0.1', self.inst.port('pop3'), timeout=120)
        p.user('alice')
        p.pass_('pw-alice')
        count, _ = p.stat()
        self.assertEqual(count, 11)
        for k in range(1, count + 1):
            p.retr(k)
        p.uidl()
        p.top(1, 0)
        p.dele(1)
        p.quit()
        p = poplib.POP3('127.0.0.1', self.inst.port('pop3'), timeout=120)
        p.user('bob')
        with self.assertRaises(poplib.error_proto):
            p.pass_('wrong')
        p.quit()
        self.assertEqual(len(self.inst.maildir_messages('alice')), 10)
        for svc in ('queue-manager', 'auth-checker', 'pop3-listener'):
            self.inst.svc(svc, '-h')
        self.inst.stop()
        logs = sorted(glob.glob(os.path.join(self.logs, 'vg-*.log')))
        self.assertGreater(len(logs), 5, 'valgrind wrote no logs: the wrapping did not take')
        findings = []
        for path in logs:
            with open(path) as f:
                text = f.read().strip()
            if text:
                findings.append('%s:\n%s' % (os.path.basename(path), text[:3000]))
        self.assertEqual(findings, [], '\n\n'.join(findings))


if __name__ == '__main__':
    unittest.main()
