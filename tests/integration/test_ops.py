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


if __name__ == '__main__':
    unittest.main()
