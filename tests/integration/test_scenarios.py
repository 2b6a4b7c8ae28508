"""Scenarios: one directory per case under tests/scenarios/, each with a
`dialogue` written as "send this / expect that" (the format is in
tests/scenarios/README.md), and optionally `conf` (postern.conf lines),
`users` (NAME PASSWORD lines; default alice and bob) and `aliases` (lines
added to conf/aliases). Each scenario runs against a whole instance of its
own (every service, real privilege separation) over loopback; a failure
prints the scenario's file and line and the transcript so far."""

import os
import re
import socket
import ssl
import time
import unittest

from harness import Instance, Conn, HarnessError, need

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = os.path.join(os.path.dirname(HERE), 'scenarios')
DEFAULT_USERS = {'alice': 'alice-pw', 'bob': 'bob-pw'}
TLS_PORTS = ('smtps', 'pop3s')


class ScenarioError(AssertionError):
    pass


def unescape(text):
    """\\r \\n \\t \\\\ and \\xHH in a `>>` line, to bytes"""
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c != '\\':
            out += c.encode()
            i += 1
            continue
        nxt = text[i + 1:i + 2]
        if nxt in ('r', 'n', 't', '\\'):
            out += {'r': b'\r', 'n': b'\n', 't': b'\t', '\\': b'\\'}[nxt]
            i += 2
        elif nxt == 'x' and re.fullmatch(r'[0-9A-Fa-f]{2}', text[i + 2:i + 4]):
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            raise ValueError('bad escape at %r' % text[i:i + 4])
    return bytes(out)


def read_lines(path):
    with open(path) as f:
        return f.read().split('\n')


class Runner:
    """Runs one dialogue against inst; each step is (line number, verb, argument)."""

    def __init__(self, inst, path):
        self.inst = inst
        self.path = path
        self.conns = {}
        self.cur = None
        self.vars = {}
        self.log_timeout = 10

    def fail(self, lineno, msg):
        text = self.conns[self.cur].text() if self.cur in self.conns else ''
        raise ScenarioError('%s:%d: %s\n--- transcript (%s) ---\n%s'
                            % (os.path.relpath(self.path), lineno, msg, self.cur, text))

    def conn(self, lineno):
        if self.cur not in self.conns:
            self.fail(lineno, 'no connection: "connect PORT" first')
        return self.conns[self.cur]

    def line(self, lineno):
        """the next line the server sends"""
        c = self.conn(lineno)
        try:
            line = c.readline()
        except HarnessError as e:
            self.fail(lineno, str(e).split('\n')[0])
        if line == '' and not c.buf and self._eof(c):
            self.fail(lineno, 'the server closed the connection')
        c.transcript.append('S: ' + line)
        return line

    @staticmethod
    def _eof(c):
        """after an empty line: was it the end of the connection? (what
        more arrives within 0.2 s stays in the buffer)"""
        c.sock.settimeout(0.2)
        try:
            more = c.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return False
        except OSError:
            return True
        finally:
            c.sock.settimeout(10)
        c.buf += more
        return more == b''

    def run(self):
        try:
            for lineno, raw in enumerate(read_lines(self.path), 1):
                stripped = raw.strip()
                if not stripped or stripped.startswith('#'):
                    continue
                verb, _, arg = raw.partition(' ')
                step = getattr(self, 'do_' + {'>': 'send', '>>': 'raw', '<': 'expect', '<=': 'exact',
                                              '<...': 'skip', '<~': 'match'}.get(verb, verb.replace('-', '_')),
                               None)
                if step is None:
                    self.fail(lineno, 'unknown step %r' % verb)
                if verb != '<~':
                    arg = self.subst(lineno, arg)
                step(lineno, arg)
        finally:
            for c in self.conns.values():
                c.close()

    def subst(self, lineno, arg):
        """${NAME}: a value an earlier `<~` captured"""
        def value(m):
            if m.group(1) not in self.vars:
                self.fail(lineno, '${%s} was not captured' % m.group(1))
            return self.vars[m.group(1)]
        return re.sub(r'\$\{(\w+)\}', value, arg)

    # ---- steps ----------------------------------------------------------
    def do_connect(self, lineno, arg):
        """connect PORT [NAME]: a new connection, now the current one"""
        words = arg.split()
        if not words or words[0] not in self.inst.ports:
            self.fail(lineno, 'connect: want one of %s' % ' '.join(self.inst.ports))
        name = words[1] if len(words) > 1 else 'c'
        if name in self.conns:
            self.conns[name].close()
        c = Conn(self.inst.port(words[0]))
        if words[0] in TLS_PORTS:
            c.sock = self._tls(c.sock)
        self.conns[name] = c
        self.cur = name

    def do_on(self, lineno, arg):
        """on NAME: go on with an open connection"""
        if arg.strip() not in self.conns:
            self.fail(lineno, 'on: no connection named %r' % arg.strip())
        self.cur = arg.strip()

    @staticmethod
    def _tls(sock):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(sock)
        s.settimeout(10)
        return s

    def do_starttls(self, lineno, arg):
        c = self.conn(lineno)
        if c.buf:
            self.fail(lineno, 'starttls: the server sent more than its reply: %r' % c.buf)
        try:
            c.sock = self._tls(c.sock)
        except (ssl.SSLError, OSError) as e:
            self.fail(lineno, 'TLS handshake failed: %s' % e)
        c.transcript.append('-- TLS %s --' % c.sock.version())

    def do_send(self, lineno, arg):
        try:
            self.conn(lineno).send(arg)
        except OSError as e:
            self.fail(lineno, 'send: %s' % e)

    def do_raw(self, lineno, arg):
        try:
            self.conn(lineno).send(unescape(arg))
        except OSError as e:
            self.fail(lineno, 'send: %s' % e)

    def do_expect(self, lineno, arg):
        line = self.line(lineno)
        if not line.startswith(arg) or (arg == '' and line != ''):
            self.fail(lineno, 'expected a line starting %r, got %r' % (arg, line))

    def do_exact(self, lineno, arg):
        line = self.line(lineno)
        if line != arg:
            self.fail(lineno, 'expected exactly %r, got %r' % (arg, line))

    def do_match(self, lineno, arg):
        """<~ REGEX: the next line matches REGEX whole; its named groups
        (?P<NAME>...) are kept as ${NAME}"""
        line = self.line(lineno)
        m = re.fullmatch(arg, line)
        if not m:
            self.fail(lineno, 'expected a line matching %r, got %r' % (arg, line))
        self.vars.update(m.groupdict())

    def do_skip(self, lineno, arg):
        for _ in range(100000):
            if self.line(lineno).startswith(arg):
                return
        self.fail(lineno, 'no line starting %r' % arg)

    def do_closed(self, lineno, arg):
        c = self.conn(lineno)
        if not c.closed():
            self.fail(lineno, 'the server did not close the connection')
        if c.buf:
            self.fail(lineno, 'the server sent more before closing: %r' % c.buf)
        c.transcript.append('-- closed by the server --')

    def do_close(self, lineno, arg):
        """close: the client drops the connection"""
        self.conn(lineno).close()
        del self.conns[self.cur]
        self.cur = None

    def do_sleep(self, lineno, arg):
        time.sleep(float(arg))

    def do_delivered(self, lineno, arg):
        """delivered USER N: wait (10 s at most) until USER's Maildir holds N messages"""
        user, n = arg.split()
        try:
            self.inst.wait_for(lambda: len(self.inst.maildir_messages(user)) >= int(n), 10,
                               what='%s messages for %s' % (n, user))
        except HarnessError as e:
            self.fail(lineno, str(e))
        got = len(self.inst.maildir_messages(user))
        if got != int(n):
            self.fail(lineno, '%s has %d messages, not %s' % (user, got, n))

    def do_queue_empty(self, lineno, arg):
        """queue-empty [SECONDS]: wait (SECONDS, default 10) until the queue holds no message:
        everything accepted so far, and every bounce of it, is delivered or
        dropped, so a check that nothing (more) arrived may follow"""
        try:
            self.inst.wait_for(lambda: not self.inst.queue_ids() and not self.inst.queue_tmp_files(),
                               float(arg) if arg.strip() else 10,
                               what='an empty queue')
        except HarnessError as e:
            self.fail(lineno, str(e))

    def do_log(self, lineno, arg):
        """log SERVICE TEXT: wait (10 s at most) until SERVICE's log holds a
        line containing TEXT"""
        service, _, text = arg.partition(' ')
        if not os.path.isdir(self.inst.path('service', service)):
            self.fail(lineno, 'log: no service %r' % service)
        try:
            self.inst.wait_log(service, text, self.log_timeout)
        except HarnessError as e:
            self.fail(lineno, str(e).split('\n')[0])

    def do_mailbox_has(self, lineno, arg):
        """mailbox-has USER TEXT: one of USER's messages contains TEXT (with \\n etc.)"""
        user, _, text = arg.partition(' ')
        want = unescape(text)
        if not any(want in body for _, body in self.inst.maildir_messages(user)):
            self.fail(lineno, 'no message of %s contains %r' % (user, want))

    def do_mailbox_lacks(self, lineno, arg):
        """mailbox-lacks USER TEXT: none of USER's messages contains TEXT"""
        user, _, text = arg.partition(' ')
        want = unescape(text)
        if any(want in body for _, body in self.inst.maildir_messages(user)):
            self.fail(lineno, 'a message of %s contains %r' % (user, want))


def scenario_dirs():
    try:
        names = sorted(os.listdir(SCENARIOS))
    except OSError:
        return []
    return [n for n in names if os.path.isfile(os.path.join(SCENARIOS, n, 'dialogue'))]


def instance_for(d):
    users = dict(DEFAULT_USERS)
    if os.path.exists(os.path.join(d, 'users')):
        users = dict(l.split(None, 1) for l in read_lines(os.path.join(d, 'users'))
                     if l.strip() and not l.startswith('#'))
    conf = {}
    if os.path.exists(os.path.join(d, 'conf')):
        for l in read_lines(os.path.join(d, 'conf')):
            if l.strip() and not l.startswith('#'):
                k, _, v = l.partition('=')
                conf[k.strip()] = v.strip()
    inst = Instance(users=users, conf_extra=conf)
    inst.setup()
    if os.path.exists(os.path.join(d, 'aliases')):
        with open(os.path.join(d, 'aliases')) as src, open(inst.path('conf', 'aliases'), 'a') as dst:
            dst.write(src.read())
    return inst


class Scenarios(unittest.TestCase):
    """Filled in below: one test_<directory> per scenario."""

    def run_scenario(self, name):
        need(self, 'postern-setup', 'smtp-listener', 'pop3-listener', 'queue-manager')
        d = os.path.join(SCENARIOS, name)
        inst = instance_for(d)
        try:
            inst.start()
            Runner(inst, os.path.join(d, 'dialogue')).run()
        finally:
            inst.stop()


def _add(name):
    def test(self):
        self.run_scenario(name)
    test.__doc__ = 'tests/scenarios/%s' % name
    setattr(Scenarios, 'test_' + re.sub(r'\W', '_', name), test)


for _name in scenario_dirs():
    _add(_name)


class ScenarioFormat(unittest.TestCase):
    """The runner itself: a wrong expectation fails, naming the line."""

    def test_a_wrong_reply_fails_with_its_line(self):
        need(self, 'postern-setup', 'smtp-listener')
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'dialogue')
            with open(path, 'w') as f:
                f.write('# a wrong expectation on line 5\nconnect smtp\n< 220 \n> NOOP\n< 251\n')
            inst = Instance(services=('smtp-listener',))
            try:
                inst.start()
                with self.assertRaises(ScenarioError) as cm:
                    Runner(inst, path).run()
            finally:
                inst.stop()
            self.assertIn('dialogue:5: expected a line starting \'251\', got \'250 2.0.0 Ok\'',
                          str(cm.exception))

    def test_queue_empty_waits_for_the_queue(self):
        """queue-empty fails while a message is still queued (here: no
        queue-manager to take it), so the checks after it are not run on a
        queue that is still at work"""
        need(self, 'postern-setup', 'smtp-listener', 'queue-inject')
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'dialogue')
            with open(path, 'w') as f:
                f.write('connect smtp\n< 220\n> HELO c.example\n< 250\n> MAIL FROM:<s@example.org>\n< 250\n'
                        '> RCPT TO:<alice@example.test>\n< 250\n> DATA\n< 354\n> x\n> .\n< 250 2.0.0\n'
                        'queue-empty 1\n')
            inst = Instance(services=('smtp-listener',), users=dict(DEFAULT_USERS))
            try:
                inst.start()
                with self.assertRaises(ScenarioError) as cm:
                    Runner(inst, path).run()
                self.assertEqual(len(inst.queue_ids()), 1, str(cm.exception))
            finally:
                inst.stop()
            self.assertIn('dialogue:14: timed out after 1.0s waiting for an empty queue', str(cm.exception))

    def test_log_waits_for_the_line(self):
        """log SERVICE TEXT passes on a line the service wrote (here with a
        captured value) and fails, naming its line, on one it never writes"""
        need(self, 'postern-setup', 'smtp-listener')
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'dialogue')
            with open(path, 'w') as f:
                f.write('connect smtp\n<~ 220 (?P<host>\\S+) .*\n> HELO c.example\n< 250\n'
                        'log smtp-listener event=helo verb=HELO helo=c.example\n'
                        '> QUIT\n< 221 2.0.0 ${host}\n'
                        'log smtp-listener event=helo verb=EHLO\n')
            inst = Instance(services=('smtp-listener',))
            try:
                inst.start()
                runner = Runner(inst, path)
                runner.log_timeout = 1
                with self.assertRaises(ScenarioError) as cm:
                    runner.run()
            finally:
                inst.stop()
            self.assertIn('dialogue:8: ', str(cm.exception))
            self.assertIn('event=helo verb=EHLO', str(cm.exception))

    def test_capture(self):
        r = Runner(None, 'dialogue')
        r.vars['uid'] = 'abc'
        self.assertEqual(r.subst(1, '+OK 1 ${uid}'), '+OK 1 abc')
        with self.assertRaises(ScenarioError):
            r.subst(2, '${nope}')

    def test_unescape(self):
        self.assertEqual(unescape(r'a\r\n.\x00\\'), b'a\r\n.\x00\\')
        with self.assertRaises(ValueError):
            unescape(r'\q')


if __name__ == '__main__':
    unittest.main()
