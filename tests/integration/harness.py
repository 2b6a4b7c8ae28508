"""harness.py - throwaway postern instances for the integration tests.

    from harness import Instance, need, smtp_dialogue, pop3_dialogue

    with Instance(users={'alice': 'secret'}) as inst:      # setup + s6-svscan
        smtp_dialogue(inst.port('smtp'), [
            (None, '220'),                      # the greeting
            ('EHLO client.test', '250'),
            ('MAIL FROM:<bob@example.test>', '250'),
            ('RCPT TO:<alice@example.test>', '250'),
            ('DATA', '354'),
            ('Subject: hi\r\n\r\nhello\r\n.', '250'),
            ('QUIT', '221'),
        ])
        inst.wait_for(lambda: inst.maildir_messages('alice'))

An Instance is a ROOT made by $POSTERN_BIN/postern-setup in a temporary
directory, with free loopback ports, run under a real `s6-svscan ROOT/service`.
Services whose program is not in $POSTERN_BIN are not created (postern-setup
only makes services for programs it installed), so tests can run while the
programs land one by one: a test calls need(self, 'smtp-listener', ...) to
skip, naming what is missing.

Environment: POSTERN_BIN (the built programs; default ../../bin),
POSTERN_KEEP=1 keeps each ROOT after the test (its path is printed),
POSTERN_TEST_TMP the directory for ROOTs (default /tmp; it must not be
mounted nosuid, queue-inject is setuid).
"""

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.abspath(os.environ.get('POSTERN_BIN') or
                      os.path.join(HERE, '..', '..', 'bin'))
SERVICES = ('auth-checker', 'queue-manager', 'smtp-listener', 'pop3-listener')
PORT_NAMES = ('smtp', 'submission', 'smtps', 'pop3', 'pop3s')
IS_ROOT = os.geteuid() == 0


def have(*programs):
    """True if every program is built in POSTERN_BIN."""
    return all(os.access(os.path.join(BIN, p), os.X_OK) for p in programs)


def missing(*programs):
    return [p for p in programs if not os.access(os.path.join(BIN, p), os.X_OK)]


# need() and need_root() raise SkipTest themselves rather than call
# test.skipTest(), so they work from setUpClass too (test is then the class,
# whose skipTest is an unbound method); run.py reports each test of a class
# skipped that way, with the reason.
def need(test, *programs):
    """Skip test (a TestCase, or a class in setUpClass) unless every
    program exists in POSTERN_BIN."""
    m = missing(*programs)
    if m:
        raise unittest.SkipTest('not built yet: ' + ', '.join(m))


def need_root(test, why='needs root to create system users and drop privileges'):
    """Skip test (a TestCase, or a class in setUpClass) unless root; the
    reason always starts with "not root: ", which make check counts."""
    if not IS_ROOT:
        raise unittest.SkipTest('not root: ' + why)


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (bound to port 0, then closed)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(('127.0.0.1', 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def port_open(port, host='127.0.0.1'):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class HarnessError(AssertionError):
    pass


LIVE = []   # instances set up and not stopped yet (see stop_all)


def mailbox_processes(maildir):
    """pids of the POP3 mailbox processes serving maildir: as root, those
    chrooted in it (/proc/PID/root); as an ordinary user, who cannot
    chroot, those whose working directory it is (lib/privdrop.c chdirs
    there instead)"""
    maildir = os.path.realpath(maildir)
    link = 'root' if IS_ROOT else 'cwd'
    out = []
    for p in os.listdir('/proc'):
        if not p.isdigit():
            continue
        try:
            if os.readlink('/proc/%s/%s' % (p, link)) == maildir:
                out.append(int(p))
        except OSError:
            pass
    return out


def fd_targets(pid):
    """{fd: what it is} for the open descriptors of pid (readlink of
    /proc/PID/fd/N: 'socket:[123]', 'pipe:[45]', a path); one closed while
    it is read is left out"""
    out = {}
    for n in os.listdir('/proc/%d/fd' % pid):
        try:
            out[int(n)] = os.readlink('/proc/%d/fd/%s' % (pid, n))
        except OSError:
            pass
    return out


def proc_status(pid):
    """/proc/PID/status as {key: [fields]} (e.g. st['Uid'] == ['0', '0', '0', '0'])"""
    out = {}
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            k, _, v = line.partition(':')
            out[k] = v.split()
    return out


def sandbox_state(pid):
    """(NoNewPrivs, Seccomp) of a process: a sandboxed session
    (lib/sandbox.h) shows (1, 2), a seccomp filter"""
    st = proc_status(pid)
    return int(st['NoNewPrivs'][0]), int(st['Seccomp'][0])


def memory_holding(pid, needles):
    """Which of needles (bytes) appear in the readable memory of process
    pid (/proc/PID/mem, as root): the test that a secret was wiped. A
    process gone meanwhile holds nothing. Read 1 MiB at a time; mappings
    of 1 GiB or more are skipped: no postern process has data that large,
    and a sanitizer build's shadow memory is terabytes of reserved space."""
    found = set()
    chunk, overlap = 1 << 20, max(len(n) for n in needles)
    try:
        with open('/proc/%d/maps' % pid) as f:
            maps = f.read().splitlines()
        with open('/proc/%d/mem' % pid, 'rb', 0) as mem:
            for m in maps:
                f = m.split()
                if 'r' not in f[1] or (len(f) > 5 and f[5] in ('[vvar]', '[vvar_vclock]', '[vsyscall]')):
                    continue
                lo, hi = (int(x, 16) for x in f[0].split('-'))
                if hi - lo >= 1 << 30:
                    continue
                at = lo
                while at < hi:
                    try:
                        mem.seek(at)
                        data = mem.read(min(chunk + overlap, hi - at))
                    except (OSError, OverflowError, ValueError):
                        break
                    found.update(n for n in needles if n in data)
                    at += chunk
    except (FileNotFoundError, ProcessLookupError):
        pass
    return found


def leak_check_tracer(pid):
    """Whether pid is being traced by a child of its own: a sanitizer
    build's LeakSanitizer, at exit, clones a tracer that stops the process
    (ptrace) while the process spins until the tracer is done. That takes
    milliseconds. But s6-svc -d sends SIGTERM and then SIGCONT, and a
    SIGCONT that arrives after the tracer's attach queued its SIGSTOP
    discards it: the process never stops, the tracer waits for ever and the
    process spins (seen twice in `make sanitize`: queue-manager had logged
    event=exit and was still running 15 s later, TracerPid set)."""
    try:
        with open('/proc/%d/status' % pid) as f:
            tracer = [l.split()[1] for l in f if l.startswith('TracerPid:')]
        if not tracer or tracer[0] == '0':
            return False
        with open('/proc/%s/status' % tracer[0]) as f:
            return any(l.startswith('PPid:') and l.split()[1] == str(pid) for l in f)
    except (OSError, IndexError):
        return False


def unstick_leak_checks(pids, stuck, after=3):
    """Give each of pids that has been caught in its leak check
    (leak_check_tracer) for more than `after` seconds the SIGSTOP it lost,
    once, so that the check runs and the process ends. stuck is the
    caller's dict, kept from one call to the next (when each was first
    seen caught). True if a SIGSTOP was sent."""
    sent, now = False, time.monotonic()
    for p in map(int, pids):
        if not leak_check_tracer(p):
            stuck.pop(p, None)
        elif now - stuck.setdefault(p, now) > after:
            stuck[p] = float('inf')
            try:
                os.kill(p, signal.SIGSTOP)
                sent = True
            except ProcessLookupError:
                pass
    return sent


def describe(pids):
    """'PID command line' of each of pids still there, for a failure
    message; '(leak check)' after one caught in it (leak_check_tracer)"""
    out = []
    for p in sorted(map(int, pids)):
        try:
            with open('/proc/%d/cmdline' % p, 'rb') as f:
                cmd = f.read().replace(b'\0', b' ').decode(errors='replace').strip()
        except OSError:
            continue
        out.append('%d %s%s' % (p, cmd, ' (leak check)' if leak_check_tracer(p) else ''))
    return out


def children(pid):
    """The pids of pid's children (from /proc), [] if it is gone."""
    try:
        with open('/proc/%d/task/%d/children' % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def signal_all(pids, sig):
    """Send sig to each of pids; one already gone is skipped."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def running(pid):
    """pid exists and is not a zombie."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return False


def descendants(pid):
    """pid and every process below it (from /proc, one pass)."""
    kids = {}
    for d in os.listdir('/proc'):
        if d.isdigit():
            try:
                with open('/proc/%s/stat' % d) as f:
                    st = f.read()
                kids.setdefault(int(st[st.rindex(')') + 2:].split()[1]), []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def queue_inject(inst, sender, rcpts, message, notify='', received=None, prefix=()):
    """Run ROOT/bin/queue-inject (after the command words of prefix, such
    as an strace) with message on fd 0 and the envelope records on fd 1
    (docs/INTERFACES.md: F, an optional H, one T a recipient); returns the
    queue id it wrote, asserting exit 0."""
    a, b = socket.socketpair()
    p = subprocess.Popen(list(prefix) + [inst.bin('queue-inject')], stdin=subprocess.PIPE, stdout=b,
                         stderr=subprocess.PIPE)
    b.close()
    p.stdin.write(message)
    p.stdin.close()
    recs = [b'F' + sender.encode()]
    if received:
        recs.append(b'H' + received)
    recs += [b'T' + r.encode() + b'\t' + notify.encode() + b'\t' for r in rcpts]
    a.sendall(b''.join(r + b'\0' for r in recs) + b'\0')
    a.shutdown(socket.SHUT_WR)
    out = a.makefile('rb').read().decode().strip()
    a.close()
    err = p.stderr.read().decode(errors='replace')
    assert p.wait() == 0, err
    assert re.match(r'^[0-9A-F]{16}$', out), out
    return out


def stop_all():
    """Stop every instance a test forgot to stop; returns their ROOTs."""
    roots = []
    for inst in list(LIVE):
        roots.append(inst.root)
        inst.stop()
    return roots


atexit.register(stop_all)


class Instance:
    def __init__(self, domains=('example.test', 'localhost'),
                 hostname='mail.example.test', conf_extra=None, services=None,
                 users=None, start_timeout=20, bin=None, listen=('127.0.0.1',)):
        self.bindir = bin or BIN
        self.listen = tuple(listen)
        self.domains = tuple(domains)
        self.hostname = hostname
        self.conf_extra = dict(conf_extra or {})
        self.services_wanted = services  # None: every service that exists
        self.initial_users = dict(users or {})
        self.start_timeout = start_timeout
        self.root = None
        self.ports = {}
        self.services = []
        self.svscan = None
        self.setup_output = ''

    # ---- lifecycle ---------------------------------------------------
    def setup(self):
        """postern-setup only (no s6): for tests of the tree itself."""
        if not os.access(os.path.join(self.bindir, 'postern-setup'), os.X_OK):
            raise HarnessError('postern-setup is not in ' + self.bindir)
        base = os.environ.get('POSTERN_TEST_TMP') or tempfile.gettempdir()
        self.root = tempfile.mkdtemp(prefix='postern-', dir=base)
        LIVE.append(self)
        os.chmod(self.root, 0o755)
        self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES))))
        args = [os.path.join(self.bindir, 'postern-setup'), '--root', self.root,
                '--hostname', self.hostname,
                '--ports', ','.join('%s=%d' % kv for kv in self.ports.items())]
        for a in self.listen:
            args += ['--listen', a]
        for d in self.domains:
            args += ['--domain', d]
        r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=120)
        self.setup_output = r.stdout.decode(errors='replace')
        if r.returncode != 0:
            raise HarnessError('postern-setup failed (%d):\n%s' % (r.returncode, self.setup_output))
        if self.conf_extra:
            self.set_conf(**self.conf_extra)
        present = [s for s in SERVICES
                   if os.path.isdir(os.path.join(self.root, 'service', s))]
        if self.services_wanted is None:
            self.services = present
        else:
            self.services = [s for s in self.services_wanted if s in present]
            for s in present:
                if s not in self.services:
                    # keep the directory; s6-svc -u starts it later if wanted
                    open(os.path.join(self.root, 'service', s, 'down'), 'w').close()
        for name, pw in self.initial_users.items():
            self.add_user(name, pw)
        return self

    def without_remote(self):
        """Remove ROOT/bin/remote-deliverer: nothing leaves loopback, and
        non-local recipients stay queued (4.4.1). Before start()."""
        try:
            os.unlink(self.bin('remote-deliverer'))
        except FileNotFoundError:
            pass
        return self

    @classmethod
    def by_hand(cls, users):
        """postern-setup only, for tests that run the queue's daemons by
        hand (under strace): local_concurrency 1, the users (password
        pw-NAME), no remote-deliverer."""
        inst = cls(services=[]).setup()
        inst.set_conf(local_concurrency='1')
        for u in users:
            inst.add_user(u, 'pw-' + u)
        return inst.without_remote()

    def set_conf(self, **settings):
        """Set keys in conf/postern.conf (replacing an existing line)."""
        path = os.path.join(self.root, 'conf', 'postern.conf')
        with open(path) as f:
            lines = f.read().splitlines()
        for k, v in settings.items():
            line = '%s = %s' % (k, v)
            for i, old in enumerate(lines):
                if old.split('=', 1)[0].strip() == k:
                    lines[i] = line
                    break
            else:
                lines.append(line)
        with open(path + '.new', 'w') as f:
            f.write('\n'.join(lines) + '\n')
        os.chmod(path + '.new', 0o644)
        os.rename(path + '.new', path)

    def start(self):
        if self.root is None:
            self.setup()
        self.svscan = subprocess.Popen(
            ['s6-svscan', os.path.join(self.root, 'service')],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            for s in self.services:
                self.wait_ready(s, self.start_timeout)
        except Exception:
            self.stop()
            raise
        return self

    def wait_ready(self, service, timeout=10):
        """Wait until service is up and has signalled readiness."""
        d = os.path.join(self.root, 'service', service)
        deadline = time.time() + timeout
        # s6-svwait needs the supervisor and its status file to exist first
        while not (os.path.exists(os.path.join(d, 'supervise', 'control')) and
                   os.path.exists(os.path.join(d, 'supervise', 'status'))):
            if time.time() > deadline:
                raise HarnessError('%s: s6-supervise did not start' % service)
            if self.svscan is not None and self.svscan.poll() is not None:
                raise HarnessError('s6-svscan exited (%s)' % self.svscan.returncode)
            time.sleep(0.05)
        while True:
            left = max(1, int((deadline - time.time()) * 1000))
            r = subprocess.run(['s6-svwait', '-U', '-t', str(left), d],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            # a status file being rewritten can be missing for an instant
            if r.returncode == 0 or b's6_svstatus_read' not in r.stdout or time.time() > deadline:
                break
            time.sleep(0.05)
        if r.returncode != 0:
            raise HarnessError('%s did not become ready within %ss: %s\n%s\n--- log:\n%s' % (
                service, timeout, r.stdout.decode(errors='replace').strip(),
                self.svstat(service), self.log(service)[-3000:]))

    def stop(self):
        """Bring everything down; never leave a process behind."""
        if self.root is None:
            return
        if self.svscan is not None:
            if self.svscan.poll() is None:
                subprocess.run(['s6-svscanctl', '-t', os.path.join(self.root, 'service')],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    self.svscan.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(self.svscan.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    self.svscan.wait(timeout=5)
            self.svscan = None
        self._kill_leftovers()
        if os.environ.get('POSTERN_KEEP'):
            print('\n[harness] kept ROOT %s' % self.root)
        else:
            shutil.rmtree(self.root, ignore_errors=True)
        self.root = None
        if self in LIVE:
            LIVE.remove(self)

    def _kill_leftovers(self):
        """SIGKILL every process running a program from ROOT or in ROOT."""
        for _ in range(3):
            pids = self.processes()
            if not pids:
                return
            signal_all(pids, signal.SIGKILL)
            time.sleep(0.1)

    def processes(self):
        """pids of processes whose executable, cwd or command line is in ROOT."""
        out = []
        if self.root is None:
            return out
        me = os.getpid()
        prefix = self.root + '/'
        for p in os.listdir('/proc'):
            if not p.isdigit() or int(p) == me:
                continue
            try:
                with open('/proc/%s/cmdline' % p, 'rb') as f:
                    cmd = f.read().decode(errors='replace')
                hit = prefix in cmd or cmd.replace('\0', ' ').strip().endswith(self.root)
                if not hit:
                    for link in ('exe', 'cwd'):
                        try:
                            t = os.readlink('/proc/%s/%s' % (p, link))
                        except OSError:
                            continue
                        if t == self.root or t.startswith(prefix):
                            hit = True
                if hit:
                    out.append(int(p))
            except (OSError, ValueError):
                continue
        return out

    def __enter__(self):
        try:
            return self.start()
        except Exception:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()
        return False

    # ---- helpers -----------------------------------------------------
    def port(self, name):
        return self.ports[name]

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def bin(self, program):
        return os.path.join(self.root, 'bin', program)

    def run(self, program, *args, input=None, check=True, timeout=60, env=None):
        """Run ROOT/bin/program; returns CompletedProcess (text mode)."""
        e = dict(os.environ)
        e['POSTERN_ROOT'] = self.root
        if env:
            e.update(env)
        r = subprocess.run([self.bin(program)] + list(args), input=input,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout, env=e, universal_newlines=True)
        if check and r.returncode != 0:
            raise HarnessError('%s %s: exit %d\nstdout: %s\nstderr: %s' % (
                program, ' '.join(args), r.returncode, r.stdout, r.stderr))
        return r

    def add_user(self, name, password):
        """postern-user --root ROOT add NAME, the password on stdin."""
        if not os.access(self.bin('postern-user'), os.X_OK):
            raise HarnessError('postern-user is not built')
        # smtp-listener notices the rewritten conf/recipients by itself at
        # its next connection (test_smtp.test_new_user_accepted_without_reload)
        return self.run('postern-user', '--root', self.root, 'add', name,
                        input=password + '\n')

    def reload_and_wait(self, service, timeout=10):
        """s6-svc -h, then wait for the daemon's "event=reload" log line."""
        before = self.log(service).count('event=reload')
        self.reload(service)
        self.wait_for(lambda: self.log(service).count('event=reload') > before,
                      timeout, what=service + ' event=reload in its log')

    def maildir(self, name):
        """The user's Maildir (from conf/mailboxes, else ROOT/mail/NAME/Maildir)."""
        try:
            with open(self.path('conf', 'mailboxes')) as f:
                for line in f:
                    fields = line.rstrip('\n').split(':')
                    if len(fields) >= 4 and fields[0] == name:
                        return fields[3]
        except OSError:
            pass
        return self.path('mail', name, 'Maildir')

    def empty_maildir(self, name):
        """remove every file from the user's Maildir new/, cur/ and tmp/"""
        md = self.maildir(name)
        for sub in ('new', 'cur', 'tmp'):
            for n in os.listdir(os.path.join(md, sub)):
                os.unlink(os.path.join(md, sub, n))

    def maildir_messages(self, name):
        """[(path, bytes)] of the messages in the user's Maildir new/ and cur/."""
        out = []
        md = self.maildir(name)
        for sub in ('new', 'cur'):
            d = os.path.join(md, sub)
            try:
                names = sorted(os.listdir(d))
            except OSError:
                continue
            for n in names:
                if n.startswith('.'):
                    continue
                p = os.path.join(d, n)
                try:
                    with open(p, 'rb') as f:
                        out.append((p, f.read()))
                except OSError:
                    continue
        return out

    def queue_tmp_files(self, queue=None):
        """Files (not directories) under queue/tmp/ and its tmp/<h>/, relative
        to tmp/: injections in progress and queue-manager's rewrites."""
        top = os.path.join(queue or self.path('queue'), 'tmp')
        out = []
        for dirpath, _, names in os.walk(top):
            out += [os.path.relpath(os.path.join(dirpath, n), top) for n in names]
        return sorted(out)

    def queue_ids(self):
        """Sorted ids of the messages in the queue (env/*/ID and todo/ID)."""
        ids = set()
        q = self.path('queue')
        try:
            ids.update(n for n in os.listdir(os.path.join(q, 'todo')) if not n.startswith('.'))
        except OSError:
            pass
        for h in '0123456789ABCDEF':
            try:
                ids.update(n for n in os.listdir(os.path.join(q, 'env', h)) if not n.startswith('.'))
            except OSError:
                pass
        return sorted(ids)

    def log(self, service):
        """The text of the service's current s6-log file ('' if none)."""
        try:
            with open(self.path('log', service, 'current'), 'rb') as f:
                return f.read().decode(errors='replace')
        except OSError:
            return ''

    def wait_for(self, fn, timeout=10, interval=0.05, what=None):
        """Poll fn() until it returns something true; return that, or raise.
        what may be a callable, called only at the timeout, so that a log
        it shows is the one at the end of the wait, not at its start."""
        deadline = time.time() + timeout
        while True:
            v = fn()
            if v:
                return v
            if time.time() > deadline:
                if callable(what):
                    what = what()
                raise HarnessError('timed out after %ss waiting for %s' % (
                    timeout, what or getattr(fn, '__name__', 'a condition')))
            time.sleep(interval)

    def wait_log(self, service, text, timeout=10):
        """Wait until the service's log contains text; return the log."""
        return self.wait_for(lambda: text in self.log(service) and self.log(service),
                             timeout, what='%r in log/%s' % (text, service))

    def svc(self, service, *flags):
        """s6-svc FLAGS ROOT/service/SERVICE (e.g. svc('smtp-listener', '-r'))."""
        subprocess.run(['s6-svc'] + list(flags) + [self.path('service', service)], check=True)

    def wait_down(self, service, timeout=15):
        """Wait until service's process is gone (after svc(service, '-d')).
        A sanitizer build's process caught in its leak check by s6's
        SIGCONT (leak_check_tracer) gets the SIGSTOP it lost, once it has
        been stuck 3 s, so its leak check runs and reports."""
        pid = self.service_pid(service)
        stuck = {}

        def down():
            if self.service_pid(service) is None:
                return True
            if pid:
                unstick_leak_checks([pid], stuck)
            return False
        return self.wait_for(down, timeout, what='%s down' % service)

    def reload(self, service):
        self.svc(service, '-h')

    def svstat(self, service):
        r = subprocess.run(['s6-svstat', self.path('service', service)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        return r.stdout.decode(errors='replace').strip()

    def service_pid(self, service):
        """The pid of the running service's process, or None."""
        r = subprocess.run(['s6-svstat', '-p', self.path('service', service)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            pid = int(r.stdout.decode().strip())
        except ValueError:
            return None
        return pid if pid > 0 else None


class InstanceTest(unittest.TestCase):
    """A TestCase whose tests share one Instance, cls.inst: setUpClass
    starts it when the tests can run here (require() raises no SkipTest),
    tearDownClass stops it, and setUp calls require() again, so each test
    is skipped with the reason when they cannot.  A class names what its
    tests need in PROGRAMS, its Instance's options in INSTANCE (or
    overrides new_instance()), and in PORT the port it keeps as cls.port."""
    PROGRAMS = ()
    INSTANCE = {}
    PORT = None
    inst = None

    @classmethod
    def require(cls):
        """Raise SkipTest unless the tests can run here."""
        need(cls, *cls.PROGRAMS)

    @classmethod
    def new_instance(cls):
        """The started Instance the tests share."""
        return Instance(**cls.INSTANCE).start()

    @classmethod
    def setUpClass(cls):
        cls.inst = None
        try:
            cls.require()
        except unittest.SkipTest:
            return
        cls.inst = cls.new_instance()
        if cls.PORT:
            cls.port = cls.inst.port(cls.PORT)

    @classmethod
    def tearDownClass(cls):
        if cls.inst:
            cls.inst.stop()

    def setUp(self):
        self.require()


# ---- "send this / expect that" dialogues over raw sockets ---------------

class Conn:
    """A raw line-oriented client connection with a transcript."""

    def __init__(self, port, host='127.0.0.1', timeout=10, sock=None):
        self.sock = sock or socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b''
        self.transcript = []

    def send(self, data):
        """str: sent with CRLF appended; bytes: sent exactly."""
        if isinstance(data, str):
            self.transcript.append('C: ' + data)
            data = data.encode() + b'\r\n'
        else:
            self.transcript.append('C: %r' % data)
        self.sock.sendall(data)

    def readline(self):
        """One line without its line end; '' at EOF."""
        while b'\n' not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise HarnessError('timeout waiting for a reply\n' + self.text())
            if not chunk:
                line, self.buf = self.buf, b''
                return line.decode(errors='replace')
            self.buf += chunk
        line, self.buf = self.buf.split(b'\n', 1)
        return line.rstrip(b'\r').decode(errors='replace')

    def smtp_reply(self):
        """A whole (multi-line) SMTP reply as text, lines joined by \\n."""
        lines = []
        while True:
            line = self.readline()
            self.transcript.append('S: ' + line)
            if line == '':
                if not lines:
                    raise HarnessError('connection closed, no reply\n' + self.text())
                break
            lines.append(line)
            if len(line) < 4 or line[3] != '-':
                break
        return '\n'.join(lines)

    def pop3_reply(self, multiline=False):
        """A POP3 status line; with multiline, the lines up to '.' as well
        (dot-unstuffed), joined by \\n after the status line."""
        line = self.readline()
        self.transcript.append('S: ' + line)
        if line == '' :
            raise HarnessError('connection closed, no reply\n' + self.text())
        if not (multiline and line.startswith('+OK')):
            return line
        lines = [line]
        while True:
            l = self.readline()
            if l == '' and not self.buf:
                raise HarnessError('connection closed inside a multi-line reply\n' + self.text())
            if l == '.':
                self.transcript.append('S: .')
                break
            if len(lines) <= 40:
                self.transcript.append('S: ' + l)
            elif len(lines) == 41:
                self.transcript.append('S: ...')
            if l.startswith('..'):
                l = l[1:]
            lines.append(l)
        return '\n'.join(lines)

    def closed(self, timeout=5):
        """True if the server closes the connection (EOF) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    def text(self):
        return '\n'.join(self.transcript)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def raw_session(port, data, timeout=10, host='127.0.0.1', src=None):
    """Send bytes, half-close, return everything the server says until EOF
    (src: the source address to connect from)."""
    with socket.create_connection((host, port), timeout=timeout,
                                  source_address=(src, 0) if src else None) as s:
        s.sendall(data)
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        out = b''
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
    return out.decode(errors='replace')


def final_codes(text):
    """the code of the final line of every SMTP reply, in order"""
    return [l[:3] for l in text.split('\r\n') if len(l) >= 4 and l[3] == ' ']


def _check(conn, reply, expect, step):
    if expect is not None and not reply.startswith(expect):
        raise HarnessError('step %d: expected a reply starting %r, got %r\n--- transcript:\n%s'
                           % (step, expect, reply, conn.text()))


def smtp_dialogue(port, steps, host='127.0.0.1', timeout=10, conn=None):
    """Run [(send, expect), ...] on an SMTP port.  send None: only read a
    reply (the greeting); expect None: send without reading a reply
    (pipelining: read later with a (None, code) step).  Returns the list of
    replies read.  Raises HarnessError with the transcript on a mismatch."""
    return _dialogue(port, steps, host, timeout, conn, lambda c, send: c.smtp_reply())


def _dialogue(port, steps, host, timeout, conn, reply):
    """smtp_dialogue and pop3_dialogue: reply(conn, send) reads one reply."""
    c = conn or Conn(port, host, timeout)
    replies = []
    try:
        for i, (send, expect) in enumerate(steps):
            if send is not None:
                c.send(send)
            if expect is None:
                continue
            r = reply(c, send)
            replies.append(r)
            _check(c, r, expect, i)
    finally:
        if conn is None:
            c.close()
    return replies


POP3_MULTI = ('CAPA', 'RETR', 'TOP')
POP3_MULTI_NOARG = ('LIST', 'UIDL')


def pop3_multiline(cmd):
    if not isinstance(cmd, str):
        return False
    parts = cmd.split()
    if not parts:
        return False
    verb = parts[0].upper()
    return verb in POP3_MULTI or (verb in POP3_MULTI_NOARG and len(parts) == 1)


def pop3_dialogue(port, steps, host='127.0.0.1', timeout=10, conn=None):
    """Like smtp_dialogue for POP3: expect is '+OK', '-ERR' or '+ ' (a SASL
    continuation).  Multi-line replies (CAPA, RETR, TOP, LIST and UIDL
    without an argument) are read to their '.' line and returned whole."""
    return _dialogue(port, steps, host, timeout, conn,
                     lambda c, send: c.pop3_reply(multiline=pop3_multiline(send)))


def send_mail(port, sender, recipients, body, helo='client.test', host='127.0.0.1'):
    """One whole SMTP transaction; body is the message text (LF or CRLF).
    Returns the final reply to the data (e.g. '250 2.0.0 Ok: queued as ...')."""
    text = body.replace('\r\n', '\n').split('\n')
    if text and text[-1] == '':
        text.pop()
    data = ''.join(('.' + l if l.startswith('.') else l) + '\r\n' for l in text) + '.'
    steps = [(None, '220'), ('EHLO ' + helo, '250'), ('MAIL FROM:<%s>' % sender, '250')]
    steps += [('RCPT TO:<%s>' % r, '250') for r in recipients]
    steps += [('DATA', '354'), (data, '250'), ('QUIT', '221')]
    return smtp_dialogue(port, steps, host)[-2]
