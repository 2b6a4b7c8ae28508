"""The operator's tools as README.md and their man pages describe them, run
the way an operator runs them: postern-queue, postern-confcheck and
postern-user on an instance that is not there, a bad argument, --help."""

import os
import shutil
import subprocess
import tempfile
import unittest

import harness
from harness import need


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

    def test_help(self):
        for flag in ('-h', '--help'):
            r = run('postern-confcheck', flag)
            self.assertEqual((r.returncode, r.stderr), (0, ''), flag)
            self.assertTrue(r.stdout.startswith('usage: postern-confcheck'), r.stdout)


if __name__ == '__main__':
    unittest.main()
