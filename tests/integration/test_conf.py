"""conf/: the example configuration of the source tree (installed to
PREFIX/share/postern) is accepted by the daemons' own parsers: postern.conf
by postern-confcheck (its commented settings too, uncommented), routes by
the real remote-deliverer.  conf/aliases and conf/routes also go through
their parsers in the unit tests (check_aliases.c and check_routes.c,
test_example_file), which need no root."""

import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

import harness
from harness import need

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
CONF = os.path.join(REPO, 'conf')


def read(name):
    with open(os.path.join(CONF, name)) as f:
        return f.read()


class ExampleConf(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix='postern-conf-')
        self.addCleanup(shutil.rmtree, self.root, True)
        os.mkdir(os.path.join(self.root, 'conf'))

    def confcheck(self, text):
        with open(os.path.join(self.root, 'conf', 'postern.conf'), 'w') as f:
            f.write(text)
        return subprocess.run([os.path.join(harness.BIN, 'postern-confcheck'), self.root],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=30)

    def test_the_files_are_there(self):
        self.assertEqual(sorted(os.listdir(CONF)), ['aliases', 'postern.conf', 'routes'])

    def test_postern_conf_accepted(self):
        need(self, 'postern-confcheck')
        r = self.confcheck(read('postern.conf'))
        self.assertEqual((r.returncode, r.stdout), (0, ''))

    def test_postern_conf_commented_settings_accepted(self):
        """Every '#key = value' line, uncommented, is a valid setting."""
        need(self, 'postern-confcheck')
        text = read('postern.conf')
        keys = re.findall(r'(?m)^#([a-z0-9_]+) = ', text)
        self.assertGreaterEqual(len(keys), 5)
        r = self.confcheck(re.sub(r'(?m)^#([a-z0-9_]+ = )', r'\1', text))
        self.assertEqual((r.returncode, r.stdout), (0, ''))

    def test_postern_conf_error_is_caught(self):
        """The check can fail: a bad line added to the example is named."""
        need(self, 'postern-confcheck')
        text = read('postern.conf')
        line = len(text.splitlines()) + 1
        r = self.confcheck(text + 'max_recipients = lots\n')
        self.assertEqual(r.returncode, 100, r.stdout)
        self.assertIn('postern.conf:%d:' % line, r.stdout)

    def test_postern_conf_word_settings_checked(self):
        """pwhash_level, pop3_plaintext_auth and dns_server take only the
        values the daemons start with (auth-checker, pop3-listener and
        remote-deliverer refuse the others at start), so postern-confcheck
        refuses the others too, naming the line."""
        need(self, 'postern-confcheck')
        for line in ('pwhash_level = bogus', 'pop3_plaintext_auth = nevr',
                     'dns_server = resolver.example', 'dns_server = 127.0.0.1:0',
                     'dns_server = 127.0.0.1:65536', 'dns_server = ::1'):
            r = self.confcheck('hostname = mail.example.test\n' + line + '\n')
            self.assertEqual(r.returncode, 100, line + ': ' + r.stdout)
            self.assertIn('postern.conf:2: ' + line.split()[0] + ': ', r.stdout)
        for line in ('pwhash_level = interactive', 'pwhash_level = moderate',
                     'pwhash_level = sensitive', 'pop3_plaintext_auth = loopback',
                     'pop3_plaintext_auth = always', 'pop3_plaintext_auth = never',
                     'dns_server = 127.0.0.1', 'dns_server = 127.0.0.1:5353'):
            r = self.confcheck(line + '\n')
            self.assertEqual((r.returncode, r.stdout), (0, ''), line)

    def test_max_message_size_zero_refused(self):
        """max_message_size = 0 would make smtp-listener advertise SIZE 0
        (RFC 1870: no limit) and then refuse every message, while sendmail
        took 0 as no limit: the parser refuses it (1 octet to 1T)."""
        need(self, 'postern-confcheck')
        r = self.confcheck('max_message_size = 0\n')
        self.assertEqual(r.returncode, 100, r.stdout)
        self.assertIn('postern.conf:1: max_message_size: ', r.stdout)
        for ok in ('1', '1024G'):
            r = self.confcheck('max_message_size = %s\n' % ok)
            self.assertEqual((r.returncode, r.stdout), (0, ''), ok)

    def test_routes_accepted_by_remote_deliverer(self):
        need(self, 'remote-deliverer')
        from remote_helpers import Deliverer, ensure_user
        ensure_user('postern-remote')
        text = read('routes')
        n = len([l for l in text.splitlines() if l.strip() and not l.lstrip().startswith('#')])
        self.assertGreater(n, 0)
        d = Deliverer(routes=text).start()
        try:
            deadline = time.time() + 10
            while 'event=start' not in d.log() and time.time() < deadline and d.proc.poll() is None:
                time.sleep(0.05)
            self.assertIsNone(d.proc.poll(), d.log())
            self.assertIn('routes=%d ' % n, d.log())
        finally:
            d.stop()
        # and a bad line is refused with its place
        d = Deliverer(routes=text + 'example.com host tls=sometimes\n').start()
        try:
            self.assertEqual(d.proc.wait(10), 100)
            self.assertIn('conf/routes:%d:' % (len(text.splitlines()) + 1), d.log())
        finally:
            d.stop()


if __name__ == '__main__':
    unittest.main()
