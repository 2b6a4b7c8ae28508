"""`make install`: programs, man pages, the example conf (conf/) and the s6
service templates (service/) under DESTDIR/PREFIX, queue-inject the only
setuid file; every man page lints clean (mandoc) and every program has one;
postern-setup run from the installed copy makes a working ROOT/bin and its
service tree from the installed templates."""

import glob
import re
import os
import shutil
import stat
import subprocess
import tempfile
import unittest

from harness import BIN, IS_ROOT, SERVICES, need, need_root
from test_setup import SERVICE_FILES, render_templates, service_files, service_golden

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
MAN = os.path.join(REPO, 'docs', 'man')
PROGS = sorted(os.listdir(os.path.join(REPO, 'daemons')))
# the operator tools among scripts/ (deps.sh and run-demo.sh are build helpers)
SCRIPTS = ['postern-setup']


def make_env():
    env = {k: v for k, v in os.environ.items()
           if k not in ('MAKEFLAGS', 'MFLAGS', 'MAKELEVEL', 'MAKEOVERRIDES')}
    return env


def install(destdir, prefix='/usr'):
    """Run the Makefile's install recipe on the programs already built in
    BIN (-o all: never rebuild them here)."""
    return subprocess.run(
        ['make', '--no-print-directory', '-C', REPO, '-o', 'all', 'install',
         'BIN=' + BIN, 'DESTDIR=' + destdir, 'PREFIX=' + prefix],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=make_env(), timeout=120)


def read(path):
    with open(path) as f:
        return f.read()


def setuid_files(top):
    found = []
    for d, _, files in os.walk(top):
        for f in files:
            p = os.path.join(d, f)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                found.append(p)
    return sorted(found)


def queue_user_exists():
    import grp
    import pwd
    try:
        pwd.getpwnam('postern-queue')
        grp.getgrnam('postern-queue')
        return True
    except KeyError:
        return False


class ManPages(unittest.TestCase):
    def test_every_program_has_a_page(self):
        pages = {os.path.basename(p) for p in glob.glob(os.path.join(MAN, '*.[58]'))}
        missing = [p for p in PROGS + SCRIPTS if p + '.8' not in pages]
        self.assertEqual(missing, [], 'programs without a man page in docs/man')
        for conf in ('postern.conf.5', 'postern-aliases.5', 'postern-users.5', 'postern-routes.5'):
            self.assertIn(conf, pages)

    def test_pages_are_mdoc_and_lint_clean(self):
        if not shutil.which('mandoc'):
            self.skipTest('mandoc is not installed (make deps installs it)')
        pages = sorted(glob.glob(os.path.join(MAN, '*.[58]')))
        self.assertTrue(pages)
        for p in pages:
            with open(p) as f:
                text = f.read()
            self.assertTrue(text.startswith('.Dd '), '%s: not mdoc (no .Dd first)' % p)
            self.assertNotIn('\n.TH ', text, p)
            self.assertNotIn('\n.SH ', text, p)
            # style messages too (what a bare `mandoc -Tlint` prints), but
            # for the two about this host's manual database, not the page:
            # the other postern pages are not installed here, and mandoc.db
            # may be stale
            r = subprocess.run(['mandoc', '-T', 'lint', '-W', 'style', p],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
            lint = [l for l in r.stdout.decode().splitlines()
                    if 'referenced manual not found' not in l and 'mandoc.db' not in l]
            self.assertEqual(lint, [], p)
            # and it renders, naming the program in NAME
            r = subprocess.run(['mandoc', '-T', 'ascii', p], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=30)
            self.assertEqual(r.returncode, 0, p)
            plain = re.sub('.\x08', '', r.stdout.decode())
            self.assertIn('\nNAME\n', plain, p)


class Install(unittest.TestCase):
    def setUp(self):
        need(self, *PROGS, *SCRIPTS)
        self.tmp = tempfile.mkdtemp(prefix='postern-install-')
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_install_layout_and_one_setuid_file(self):
        dest = os.path.join(self.tmp, 'dest')
        r = install(dest)
        self.assertEqual(r.returncode, 0, r.stdout.decode(errors='replace'))
        libbin = os.path.join(dest, 'usr', 'lib', 'postern', 'bin')
        self.assertEqual(sorted(os.listdir(libbin)), sorted(PROGS + SCRIPTS),
                         'installed programs (no deps, run-demo)')
        for p in os.listdir(libbin):
            self.assertTrue(os.access(os.path.join(libbin, p), os.X_OK), p)
        pages = sorted(os.path.basename(p) for p in glob.glob(os.path.join(MAN, '*.[58]')))
        got = sorted(os.listdir(os.path.join(dest, 'usr/share/man/man5')) +
                     os.listdir(os.path.join(dest, 'usr/share/man/man8')))
        self.assertEqual(got, pages)
        for p in glob.glob(os.path.join(dest, 'usr/share/man/man*/*')):
            self.assertEqual(stat.S_IMODE(os.stat(p).st_mode), 0o644, p)
        share = os.path.join(dest, 'usr/share/postern')
        self.assertEqual(sorted(os.listdir(share)),
                         sorted(os.listdir(os.path.join(REPO, 'conf')) + ['service']))
        for f in os.listdir(os.path.join(REPO, 'conf')):
            self.assertEqual(read(os.path.join(share, f)), read(os.path.join(REPO, 'conf', f)), f)
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(share, f)).st_mode), 0o644, f)
        for f, _ in SERVICE_FILES:
            p = os.path.join(share, 'service', f)
            self.assertEqual(read(p), read(os.path.join(REPO, 'service', f)), f)
            self.assertEqual(stat.S_IMODE(os.stat(p).st_mode), 0o644, f)
        # the installed postern-setup never looks into the build tree
        self.assertEqual(re.findall(r'(?m)^BUILT_FROM=.*$', read(os.path.join(libbin, 'postern-setup'))),
                         ['BUILT_FROM=""'])

        qi = os.path.join(libbin, 'queue-inject')
        if IS_ROOT and queue_user_exists():
            self.assertEqual(setuid_files(dest), [qi])
            st = os.stat(qi)
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o4711)
            import pwd
            self.assertEqual(pwd.getpwuid(st.st_uid).pw_name, 'postern-queue')
        else:
            self.assertEqual(setuid_files(dest), [], 'without postern-queue nothing is setuid')
            self.assertEqual(stat.S_IMODE(os.stat(qi).st_mode), 0o755)

        # uninstall removes what install put there
        r = subprocess.run(['make', '--no-print-directory', '-C', REPO, 'uninstall',
                            'BIN=' + BIN, 'DESTDIR=' + dest, 'PREFIX=/usr'],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env=make_env(), timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout.decode(errors='replace'))
        left = [os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs]
        self.assertEqual(left, [])

    def test_setup_from_the_installed_copy(self):
        """The installed postern-setup copies the programs beside it into
        ROOT/bin; ROOT/bin/queue-inject is the one setuid program there."""
        need_root(self)
        dest = os.path.join(self.tmp, 'dest')
        r = install(dest)
        self.assertEqual(r.returncode, 0, r.stdout.decode(errors='replace'))
        os.chmod(self.tmp, 0o755)
        root = os.path.join(self.tmp, 'root')
        setup = os.path.join(dest, 'usr', 'lib', 'postern', 'bin', 'postern-setup')
        r = subprocess.run([setup, '--root', root, '--listen', '127.0.0.1', '--hostname',
                            'install.test'],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout.decode(errors='replace'))
        self.assertEqual(sorted(os.listdir(os.path.join(root, 'bin'))), sorted(PROGS + SCRIPTS))
        qi = os.path.join(root, 'bin', 'queue-inject')
        self.assertEqual(setuid_files(os.path.join(root, 'bin')), [qi])
        self.assertEqual(stat.S_IMODE(os.stat(qi).st_mode), 0o4711)
        r = subprocess.run([setup, '--root', root, '--check'],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout.decode(errors='replace'))
        # the copy in ROOT/bin repairs the instance too (--check's advice
        # names it): it finds the installed templates, and rewrites a
        # damaged run script from them
        share = os.path.join(dest, 'usr', 'share', 'postern')
        with open(os.path.join(root, 'bin', 'postern-setup')) as f:
            self.assertIn('\nBUILT_FROM="%s"\n' % share, f.read())
        run = os.path.join(root, 'service', 'smtp-listener', 'run')
        with open(run) as f:
            good = f.read()
        with open(run, 'w') as f:
            f.write('#!/bin/sh\nexec false\n')
        r = subprocess.run([os.path.join(root, 'bin', 'postern-setup'), '--root', root],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout.decode(errors='replace'))
        with open(run) as f:
            self.assertEqual(f.read(), good)

    def test_installed_setup_uses_the_installed_templates(self):
        """make install DESTDIR=... PREFIX=/usr/local: the installed
        postern-setup writes ROOT/service from PREFIX/share/postern/service
        (the same files as from the source tree); an edit there shows in
        ROOT; without them it refuses (it never falls back to the build tree)."""
        dest = os.path.join(self.tmp, 'dest')
        r = install(dest, prefix='/usr/local')
        self.assertEqual(r.returncode, 0, r.stdout.decode(errors='replace'))
        os.chmod(self.tmp, 0o755)
        setup = os.path.join(dest, 'usr', 'local', 'lib', 'postern', 'bin', 'postern-setup')
        tdir = os.path.join(dest, 'usr', 'local', 'share', 'postern', 'service')
        root = os.path.join(self.tmp, 'root')

        def run(*extra, at=root):
            r = subprocess.run([setup, '--root', at, '--listen', '127.0.0.1', '--hostname',
                                'install.test'] + list(extra), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
            return r

        r = run()
        self.assertEqual(r.returncode, 0, r.stdout)
        services = [s for s in SERVICES if s in PROGS]
        self.assertTrue(services)
        self.assertEqual(sorted(os.listdir(os.path.join(root, 'service'))), sorted(services))
        for s in services:
            with self.subTest(service=s):
                got = service_files(root, s)
                self.assertEqual({f: t for f, (t, _) in got.items()}, service_golden(root, s))
                self.assertEqual({f: m for f, (_, m) in got.items()}, dict(SERVICE_FILES))
        r = run('--check')
        self.assertEqual(r.returncode, 0, r.stdout)
        # the installed templates are the ones read
        with open(os.path.join(tdir, 'log', 'run'), 'a') as f:
            f.write('# installed template of @PROG@\n')
        r = run()
        self.assertEqual(r.returncode, 0, r.stdout)
        for s in services:
            self.assertEqual(read(os.path.join(root, 'service', s, 'log', 'run')),
                             render_templates(tdir, root, s)['log/run'])
            self.assertTrue(read(os.path.join(root, 'service', s, 'log', 'run')).endswith(
                '# installed template of %s\n' % s))
        # without them: refused, nothing made
        shutil.rmtree(tdir)
        r = run(at=os.path.join(self.tmp, 'root2'))
        self.assertEqual(r.returncode, 100, r.stdout)
        self.assertIn('no s6 service templates', r.stdout)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, 'root2')))


if __name__ == '__main__':
    unittest.main()


class Deps(unittest.TestCase):
    """scripts/deps.sh (`make deps`, run first by `make check`) as an
    ordinary user without sudo: nothing missing is silence and success;
    a package missing fails at once, saying which and what to run as root,
    never "installing". Run with a PATH of stand-ins (id says uid 1000,
    dpkg-query says every package but one is installed, no sudo, no
    apt-get), so it installs nothing whoever runs the test."""

    def deps(self, absent):
        d = tempfile.mkdtemp(prefix='postern-deps-')
        self.addCleanup(shutil.rmtree, d, ignore_errors=True)
        with open(os.path.join(d, 'id'), 'w') as f:
            f.write('#!/bin/sh\necho 1000\n')
        with open(os.path.join(d, 'dpkg-query'), 'w') as f:
            # deps.sh asks: dpkg-query -W -f='${Status}' PACKAGE
            f.write('#!/bin/sh\n[ "$3" = "%s" ] && exit 1\nprintf "install ok installed"\n' % absent)
        for n in ('id', 'dpkg-query'):
            os.chmod(os.path.join(d, n), 0o755)
        os.symlink(shutil.which('grep'), os.path.join(d, 'grep'))
        return subprocess.run(['/bin/sh', os.path.join(REPO, 'scripts', 'deps.sh')],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={'PATH': d}, timeout=30)

    def test_nothing_missing_is_quiet_success(self):
        r = self.deps('')
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, b'', b''))

    def test_missing_package_named_with_the_command_for_root(self):
        r = self.deps('swaks')
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, b'', 'nothing said to be installing')
        err = r.stderr.decode()
        self.assertIn('deps: missing packages: swaks\n', err)
        self.assertIn('as root, run apt-get install swaks', err)
