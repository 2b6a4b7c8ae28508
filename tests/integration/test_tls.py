"""TLS and submission on a real instance (issue 5): STARTTLS on 25 and 587,
implicit TLS on 465, SMTP AUTH PLAIN/LOGIN through auth-checker, the
STARTTLS injection defence, and that only tls-proxy ever holds the private
key. Real clients: openssl s_client, smtplib, swaks, curl.

The tests make their own throwaway CA and a server certificate for
mail.example.test (and IP 127.0.0.1) signed by it, install it in conf/tls,
and make every client verify the server against that CA."""

import base64
import email
import email.policy
import email.utils
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
import time
import unittest

from harness import (Instance, Conn, HarnessError, IS_ROOT, need, need_root, smtp_dialogue,
                     fd_targets, memory_holding, pop3_dialogue, send_mail)

HOST = 'mail.example.test'
PASSWORD = 'Correct-Horse-7'
CA = {}


def openssl_in(d):
    """run openssl with these arguments in directory d"""
    return lambda *a: subprocess.run(['openssl'] + list(a), check=True, capture_output=True, cwd=d)


def make_root(run, cn, key, pem):
    """a self-signed CA (P-256), valid two days"""
    run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-days', '2', '-subj', '/CN=' + cn, '-keyout', key, '-out', pem,
        '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign')


def make_leaf(run, d, ca_pem, ca_key, key, pem):
    """an RSA server certificate for HOST and 127.0.0.1 that ca signed"""
    run('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=' + HOST, '-keyout', key, '-out', pem + '.csr')
    with open(os.path.join(d, pem + '.cnf'), 'w') as f:
        f.write('subjectAltName=DNS:%s,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' % HOST)
    run('x509', '-req', '-in', pem + '.csr', '-CA', ca_pem, '-CAkey', ca_key,
        '-CAcreateserial', '-days', '2', '-extfile', pem + '.cnf', '-out', pem)


def make_ca(d):
    """A throwaway CA and a server certificate it signed: paths."""
    run = openssl_in(d)
    make_root(run, 'postern test CA', 'ca.key', 'ca.pem')
    make_leaf(run, d, 'ca.pem', 'ca.key', 'key.pem', 'cert.pem')
    return {k: os.path.join(d, k + '.pem') for k in ('ca', 'cert', 'key')}


def setUpModule():
    CA['dir'] = tempfile.mkdtemp(prefix='postern-ca-')
    CA.update(make_ca(CA['dir']))


def tearDownModule():
    shutil.rmtree(CA.get('dir', '/nonexistent'), ignore_errors=True)


def client_ctx():
    ctx = ssl.create_default_context(cafile=CA['ca'])
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def secrets_held(inst, secrets):
    """'comm[pid]: secret, ...' for each process of inst whose memory holds
    one of secrets (bytes)"""
    out = []
    for pid in inst.processes():
        got = memory_holding(pid, secrets)
        if got:
            try:
                with open('/proc/%d/comm' % pid) as f:
                    comm = f.read().strip()
            except OSError:
                comm = '?'
            out.append('%s[%d]: %s' % (comm, pid, ', '.join(sorted(g.decode() for g in got))))
    return out


def tls_owns(path):
    """give path (a key) to tls-proxy's user: postern-tls as root; as an
    ordinary user every part runs as that user, who owns it already"""
    if IS_ROOT:
        tu = pwd.getpwnam('postern-tls')
        os.chown(path, tu.pw_uid, tu.pw_gid)


def install_cert(inst, cert, key):
    """copy the files cert and key into inst's conf/tls, as an operator would"""
    tls = inst.path('conf', 'tls')
    shutil.copy(cert, os.path.join(tls, 'cert.pem'))
    shutil.copy(key, os.path.join(tls, 'key.pem'))
    tls_owns(os.path.join(tls, 'key.pem'))
    os.chmod(os.path.join(tls, 'key.pem'), 0o600)
    os.chmod(os.path.join(tls, 'cert.pem'), 0o644)


def start_instance(cls, cert=None, key=None, **kw):
    """an instance serving the test CA's certificate (or cert, key); as an
    ordinary user too (no privilege separation: the tests of which uid
    holds what call need_root themselves)"""
    inst = Instance(users={'alice': PASSWORD, 'bob': PASSWORD}, **kw)
    inst.setup()
    install_cert(inst, cert or CA['cert'], key or CA['key'])
    try:
        inst.start()
    except Exception:
        inst.stop()
        raise
    return inst


class TlsConn(Conn):
    """A Conn that can switch to TLS (STARTTLS / STLS) on its socket."""

    def __init__(self, port, implicit=False, timeout=10):
        sock = socket.create_connection(('127.0.0.1', port), timeout=timeout)
        if implicit:
            sock = client_ctx().wrap_socket(sock, server_hostname=HOST)
        super().__init__(port, sock=sock, timeout=timeout)

    def starttls(self):
        assert not self.buf, self.buf
        self.sock = client_ctx().wrap_socket(self.sock, server_hostname=HOST)
        self.transcript.append('-- TLS %s %s' % (self.sock.version(), self.sock.cipher()[0]))


def half_close(c):
    """end the client's side of c's TCP connection (FIN) without a TLS
    close_notify, as a client that shutdown(SHUT_WR)s its socket does, and
    read what still comes: (bytes, the TLS error that ended it or None)"""
    s = socket.socket(fileno=os.dup(c.sock.fileno()))
    s.shutdown(socket.SHUT_WR)
    s.close()
    c.sock.settimeout(20)
    got, err = c.buf, None
    try:
        while True:
            chunk = c.sock.recv(65536)
            if not chunk:
                break
            got += chunk
    except (ssl.SSLError, OSError) as e:
        err = e
    return got, err


def unasked(c):
    """what the server sends on c within 1.5 s unasked (None: nothing)"""
    c.sock.settimeout(1.5)
    try:
        return c.sock.recv(100)
    except socket.timeout:
        return None
    finally:
        c.sock.settimeout(10)


def smtp_steps(c, steps):
    return smtp_dialogue(None, steps, conn=c)


class SmtpTls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        need(cls, 'smtp-listener', 'tls-proxy', 'auth-checker', 'postern-user', 'queue-manager')
        cls.inst = start_instance(cls, conf_extra={'dns_server': '127.0.0.1:9'})
        cls.sub = cls.inst.port('submission')
        cls.smtps = cls.inst.port('smtps')
        cls.mx = cls.inst.port('smtp')

    @classmethod
    def tearDownClass(cls):
        cls.inst.stop()

    def wait_message(self, user, text):
        def found():
            return [m for _, m in self.inst.maildir_messages(user) if text.encode() in m]
        return self.inst.wait_for(found, 15, what='a message with %r for %s' % (text, user))[0]

    def test_auth_in_flight_holds_up_no_one(self):
        """an AUTH that auth-checker does not answer (stopped) waits alone,
        while other sessions start TLS and have their mail queued; it is
        answered once auth-checker answers"""
        ac = self.inst.service_pid('auth-checker')
        result = {}

        def login():
            try:
                with smtplib.SMTP_SSL('127.0.0.1', self.smtps, timeout=30, context=client_ctx()) as s:
                    result['code'] = s.login('alice', PASSWORD)[0]
                    result['at'] = time.monotonic()
            except Exception as e:       # the assertion below shows it
                result['error'] = repr(e)

        os.kill(ac, signal.SIGSTOP)
        try:
            t = threading.Thread(target=login)
            t.start()
            time.sleep(1.0)
            self.assertNotIn('code', result, result)
            t0 = time.monotonic()
            with smtplib.SMTP('127.0.0.1', self.sub, timeout=10) as s:
                s.ehlo('client.test')
                s.starttls(context=client_ctx())
                s.ehlo('client.test')
                self.assertEqual(s.noop()[0], 250)
            with smtplib.SMTP('127.0.0.1', self.mx, timeout=10) as s:
                s.sendmail('carol@example.org', ['bob@example.test'],
                           'Subject: while AUTH waits\r\n\r\nnot held up\r\n')
            self.assertLess(time.monotonic() - t0, 5)
            self.assertNotIn('code', result, result)
        finally:
            os.kill(ac, signal.SIGCONT)
        t.join(30)
        self.assertEqual(result.get('code'), 235, result)
        self.wait_message('bob', 'not held up')

    def test_auth_holds_no_auth_checker_connection(self):
        """after AUTH the session's monitor closes its connection to
        auth-checker, so idle sessions that once tried AUTH cannot take all
        of auth-checker's client places"""
        need_root(self)
        ac = self.inst.service_pid('auth-checker')

        def sockets():
            return sum(t.startswith('socket:') for t in fd_targets(ac).values())
        before = sockets()
        with smtplib.SMTP_SSL('127.0.0.1', self.smtps, timeout=30, context=client_ctx()) as s:
            self.assertEqual(s.login('alice', PASSWORD)[0], 235)
            self.inst.wait_for(lambda: sockets() == before, 5,
                               what='auth-checker back to %d sockets (has %d)' % (before, sockets()))
            self.assertEqual(s.noop()[0], 250)

    # ---- real clients -------------------------------------------------

    def s_client(self, port, args, data):
        r = subprocess.run(['openssl', 's_client', '-connect', '127.0.0.1:%d' % port,
                            '-CAfile', CA['ca'], '-verify_return_error', '-verify_hostname', HOST,
                            '-servername', HOST, '-crlf', '-ign_eof'] + args,
                           input=data, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30, universal_newlines=True)
        self.assertIn('Verify return code: 0 (ok)', r.stdout)
        return r.stdout

    def test_openssl_starttls_smtp_587_and_25(self):
        out = self.s_client(self.sub, ['-starttls', 'smtp'], 'EHLO client.test\nQUIT\n')
        self.assertRegex(out, r'Protocol *: TLSv1\.[23]')
        self.assertIn('250-AUTH PLAIN LOGIN', out)
        self.assertNotIn('250-STARTTLS', out)
        self.assertIn('221 2.0.0', out)
        out = self.s_client(self.mx, ['-starttls', 'smtp'], 'EHLO client.test\nQUIT\n')
        self.assertIn('250 HELP', out)
        self.assertNotIn('AUTH', out)              # never on port 25
        self.assertIn('221 2.0.0', out)

    def test_openssl_implicit_465(self):
        out = self.s_client(self.smtps, [], 'EHLO client.test\nQUIT\n')
        self.assertIn('220 %s ESMTP' % HOST, out)
        self.assertIn('250-AUTH PLAIN LOGIN', out)
        self.assertNotIn('STARTTLS', out.split('220 %s ESMTP' % HOST, 1)[1])
        self.assertIn('221 2.0.0', out)

    def test_smtplib_starttls_login(self):
        with smtplib.SMTP('127.0.0.1', self.sub, timeout=15) as s:
            s.ehlo('client.test')
            self.assertTrue(s.has_extn('starttls'))
            self.assertFalse(s.has_extn('auth'))
            s.starttls(context=client_ctx())
            s.ehlo('client.test')
            self.assertEqual(s.esmtp_features.get('auth', '').split(), ['PLAIN', 'LOGIN'])
            code, _ = s.login('alice', PASSWORD)
            self.assertEqual(code, 235)
            s.sendmail('alice@example.test', ['bob@example.test'],
                       'Subject: smtplib starttls\r\n\r\nhello over 587\r\n')
        m = self.wait_message('bob', 'hello over 587')
        self.assertRegex(m, rb'\(using TLSv1\.[23] with cipher [A-Z0-9_-]+\)')
        self.assertIn(b'with ESMTPSA id', m)

    def test_auth_secrets_wiped_from_memory(self):
        """Once AUTH has succeeded, no process of the host keeps the
        password or the client's base64 of it, while the connection is
        still open: not the session (its command line and input buffer),
        not its root monitor (the request record it forwards), not
        tls-proxy (OpenSSL's record buffer and its relay buffer), not
        auth-checker. Read from /proc/PID/mem: PLAIN with an initial
        response on 587 after STARTTLS, LOGIN on 465, and AUTH PLAIN
        lines refused (530 on 587 before STARTTLS, 503 inside a
        transaction on 25)."""
        secrets = [PASSWORD.encode(), base64.b64encode(b'\0alice\0' + PASSWORD.encode()),
                   base64.b64encode(PASSWORD.encode())]
        with smtplib.SMTP('127.0.0.1', self.sub, timeout=15) as s:
            s.starttls(context=client_ctx())
            s.ehlo('client.test')
            s.user, s.password = 'alice', PASSWORD
            code, resp = s.auth('PLAIN', s.auth_plain)     # AUTH PLAIN <initial response>
            self.assertEqual(code, 235, resp)
            self.assertEqual(s.noop()[0], 250)
            self.assertEqual(secrets_held(self.inst, secrets), [])
        with smtplib.SMTP_SSL('127.0.0.1', self.smtps, timeout=15, context=client_ctx()) as s:
            s.ehlo('client.test')
            s.user, s.password = 'alice', PASSWORD
            code, resp = s.auth('LOGIN', s.auth_login)
            self.assertEqual(code, 235, resp)
            self.assertEqual(s.noop()[0], 250)
            self.assertEqual(secrets_held(self.inst, secrets), [])
        # refused, the credentials sent all the same: wiped too (before
        # STARTTLS on 587; inside a transaction on 25, refused before
        # AUTH's action runs)
        with smtplib.SMTP('127.0.0.1', self.sub, timeout=15) as s:
            s.ehlo('client.test')
            code, resp = s.docmd('AUTH', 'PLAIN ' + secrets[1].decode())
            self.assertEqual(code, 530, resp)
            self.assertEqual(s.noop()[0], 250)
            self.assertEqual(secrets_held(self.inst, secrets), [])
        with smtplib.SMTP('127.0.0.1', self.mx, timeout=15) as s:
            s.ehlo('client.test')
            self.assertEqual(s.mail('carol@client.test')[0], 250)
            code, resp = s.docmd('AUTH', 'PLAIN ' + secrets[1].decode())
            self.assertEqual(code, 503, resp)
            self.assertEqual(s.noop()[0], 250)
            self.assertEqual(secrets_held(self.inst, secrets), [])

    def test_smtplib_ssl_465_login_mechanism(self):
        with smtplib.SMTP_SSL('127.0.0.1', self.smtps, timeout=15, context=client_ctx()) as s:
            s.ehlo('client.test')
            s.user, s.password = 'alice@example.test', PASSWORD
            code, resp = s.auth('LOGIN', s.auth_login)
            self.assertEqual(code, 235, resp)
            s.sendmail('alice+lists@example.test', ['bob@example.test'],
                       'Subject: smtps\r\n\r\nhello over 465\r\n')
        m = self.wait_message('bob', 'hello over 465')
        self.assertIn(b'with ESMTPSA id', m)

    def test_submission_gets_missing_date_message_id_and_from(self):
        """An MSA may add Date:, Message-ID: and From: (RFC 6409 8); large
        receivers refuse or junk mail without them, and scripts (smtplib
        with a plain string, as here) often send none. An authenticated
        submission gets those it lacks; fields it has are kept; port 25
        (RFC 5321 6.4) is left as it came."""
        with smtplib.SMTP('127.0.0.1', self.sub, timeout=15) as s:
            s.starttls(context=client_ctx())
            s.login('alice', PASSWORD)
            s.sendmail('alice@example.test', ['bob@example.test'], 'Subject: bare script\r\n\r\nno fields\r\n')
            s.sendmail('alice@example.test', ['bob@example.test'],
                       'Date: Mon, 2 Nov 2026 10:00:00 +0100\r\nmessage-id: <mine@client.test>\r\n'
                       'From: Alice <alice@example.test>\r\nSubject: whole\r\n\r\nall there\r\n')
        with smtplib.SMTP('127.0.0.1', self.mx, timeout=15) as s:
            s.sendmail('carol@client.test', ['bob@example.test'], 'Subject: port 25\r\n\r\nas it came\r\n')
        bare = email.message_from_bytes(self.wait_message('bob', 'no fields'), policy=email.policy.compat32)
        received_id = re.search(r'with ESMTPSA id (\S+)', bare['Received']).group(1).rstrip(';')
        self.assertEqual(bare['Message-ID'], '<%s@%s>' % (received_id, HOST))
        self.assertLess(abs(email.utils.parsedate_to_datetime(bare['Date']).timestamp() - time.time()), 300)
        self.assertEqual(bare['From'], '<alice@example.test>')
        self.assertEqual(bare.get_payload(), 'no fields\n')
        # in the header section, before the blank line
        head = self.wait_message('bob', 'no fields').split(b'\n\n', 1)[0]
        self.assertIn(b'\nSubject: bare script\nDate: ', head)
        whole = self.wait_message('bob', 'all there')
        self.assertIn(b'\nDate: Mon, 2 Nov 2026 10:00:00 +0100\nmessage-id: <mine@client.test>\n'
                      b'From: Alice <alice@example.test>\nSubject: whole\n\nall there\n', whole)
        for name in (b'Date', b'Message-ID', b'From'):
            self.assertEqual(whole.lower().count(b'\n' + name.lower() + b':'), 1, name)
        mx = self.wait_message('bob', 'as it came')
        self.assertTrue(mx.endswith(b'; ' + mx.split(b'; ')[-1].split(b'\n')[0] + b'\nSubject: port 25\n\nas it came\n'), mx)
        for name in (b'date:', b'message-id:', b'from:'):
            self.assertNotIn(b'\n' + name, mx.lower())

    def test_swaks(self):
        if not shutil.which('swaks'):
            self.skipTest('swaks not installed')
        for mech, port, tls in (('PLAIN', self.sub, '--tls'), ('LOGIN', self.sub, '--tls'),
                                ('PLAIN', self.smtps, '--tls-on-connect')):
            tag = 'swaks-%s-%d' % (mech, port)
            r = subprocess.run(['swaks', '--server', '127.0.0.1', '--port', str(port), tls,
                                '--tls-verify', '--tls-ca-path', CA['ca'],
                                '--auth', mech, '--auth-user', 'alice', '--auth-password', PASSWORD,
                                '--from', 'alice@example.test', '--to', 'bob@example.test',
                                '--helo', 'client.test', '--header', 'Subject: ' + tag,
                                '--body', 'body of ' + tag, '--timeout', '15'],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                               universal_newlines=True)
            self.assertEqual(r.returncode, 0, r.stdout)
            self.assertIn('235 2.7.0 Authentication successful', r.stdout)
            self.assertIn('queued as', r.stdout)
            self.wait_message('bob', 'body of ' + tag)
        # a wrong password: swaks exits non-zero with the 535
        r = subprocess.run(['swaks', '--server', '127.0.0.1', '--port', str(self.sub), '--tls',
                            '--tls-verify', '--tls-ca-path', CA['ca'], '--auth', 'LOGIN',
                            '--auth-user', 'alice', '--auth-password', 'wrong',
                            '--from', 'alice@example.test', '--to', 'bob@example.test', '--timeout', '15'],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                           universal_newlines=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('535 5.7.8 Error: authentication failed', r.stdout)

    def test_curl(self):
        if not shutil.which('curl'):
            self.skipTest('curl not installed')
        with tempfile.NamedTemporaryFile('w', suffix='.eml', delete=False) as f:
            f.write('Subject: curl\r\n\r\nsent by curl %s\r\n')
            path = f.name
        try:
            for url, tag in (('smtp://127.0.0.1:%d' % self.sub, 'starttls'),
                             ('smtps://127.0.0.1:%d' % self.smtps, 'implicit')):
                with open(path, 'w') as f:
                    f.write('Subject: curl\r\n\r\nsent by curl %s\r\n' % tag)
                r = subprocess.run(['curl', '-sS', '--ssl-reqd', '--cacert', CA['ca'], url,
                                    '--user', 'alice:' + PASSWORD, '--mail-from', 'alice@example.test',
                                    '--mail-rcpt', 'bob@example.test', '-T', path, '--max-time', '30'],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                                   universal_newlines=True)
                self.assertEqual(r.returncode, 0, r.stdout)
                self.wait_message('bob', 'sent by curl ' + tag)
        finally:
            os.unlink(path)

    # ---- the protocol in detail -----------------------------------------

    def test_starttls_injection_is_discarded(self):
        """'STARTTLS\\r\\nNOOP\\r\\n' in one packet: no reply to NOOP inside TLS"""
        for port in (self.mx, self.sub):
            c = TlsConn(port)
            try:
                smtp_steps(c, [(None, '220'), ('EHLO client.test', '250')])
                c.send(b'STARTTLS\r\nNOOP\r\n')
                self.assertTrue(c.smtp_reply().startswith('220 2.0.0 Ready to start TLS'))
                try:
                    c.starttls()
                except (ssl.SSLError, OSError):
                    continue            # the NOOP spoilt the handshake: also safe
                extra = unasked(c)
                self.assertIsNone(extra, 'a reply to the injected NOOP: %r' % extra)
                # and the state was reset: EHLO is required again
                smtp_steps(c, [('MAIL FROM:<alice@example.test>', '503 5.5.1'),
                               ('EHLO client.test', '250'), ('QUIT', '221')])
            finally:
                c.close()
        self.assertIn('event=tls version=TLSv1.', self.inst.log('smtp-listener'))

    def test_starttls_injection_in_a_later_packet(self):
        """the NOOP sent on its own after the 220, before the ClientHello:
        it is in front of the handshake, which fails; never answered in
        plaintext or inside TLS"""
        for port in (self.mx, self.sub):
            with TlsConn(port) as c:
                smtp_steps(c, [(None, '220'), ('EHLO client.test', '250'),
                               ('STARTTLS', '220 2.0.0 Ready to start TLS')])
                c.send(b'NOOP\r\n')
                time.sleep(0.3)         # its own segment, read before the ClientHello
                with self.assertRaises((ssl.SSLError, OSError)):
                    c.starttls()
                self.assertNotIn(b'250', c.buf)

    def test_starttls_rules(self):
        with TlsConn(self.sub) as c:
            smtp_steps(c, [(None, '220'), ('EHLO client.test', '250'),
                           ('AUTH PLAIN ' + b64('\0alice\0' + PASSWORD), '530 5.7.0 Must issue a STARTTLS command first'),
                           ('MAIL FROM:<alice@example.test>', '530 5.7.0 Must issue a STARTTLS command first'),
                           ('STARTTLS now', '501 5.5.4 Syntax error (no parameters allowed)'),
                           ('STARTTLS', '220 2.0.0 Ready to start TLS')])
            c.starttls()
            smtp_steps(c, [('EHLO client.test', '250'),
                           ('STARTTLS', '554 5.5.1 Error: TLS already active'),
                           ('MAIL FROM:<alice@example.test>', '530 5.7.0 Authentication required'),
                           ('QUIT', '221')])

    def test_auth_rules(self):
        with TlsConn(self.smtps, implicit=True) as c:
            smtp_steps(c, [(None, '220'),
                           ('AUTH PLAIN ' + b64('\0alice\0' + PASSWORD), '503 5.5.1'),   # EHLO first
                           ('EHLO client.test', '250'),
                           ('AUTH PLAIN !!!notbase64', '501 5.5.2'),
                           ('AUTH PLAIN ' + b64('bob\0alice\0' + PASSWORD), '535 5.7.8'),
                           ('AUTH PLAIN ' + b64('\0alice\0wrong-password'), '535 5.7.8 Error: authentication failed'),
                           ('AUTH LOGIN', '334 VXNlcm5hbWU6'), ('*', '501 5.0.0'),
                           ('AUTH LOGIN', '334 VXNlcm5hbWU6'), (b64('alice'), '334 UGFzc3dvcmQ6'),
                           ('x' * 3000, '500 5.5.6'),
                           ('AUTH DIGEST-MD5', '504 5.5.4'),
                           ('AUTH PLAIN', '334'), (b64('\0alice\0' + PASSWORD), '235 2.7.0 Authentication successful'),
                           ('AUTH LOGIN', '503 5.5.1'),
                           ('MAIL FROM:<bob@example.test>', '553 5.7.1'),
                           ('MAIL FROM:<alice@elsewhere.example>', '553 5.7.1'),
                           ('MAIL FROM:<alice+tag@localhost>', '250'),
                           ('AUTH PLAIN ' + b64('\0alice\0' + PASSWORD), '503 5.5.1'),   # in a transaction
                           ('RCPT TO:<someone@remote.example>', '250'),                  # may relay
                           ('RSET', '250'), ('QUIT', '221')])
        self.assertIn('not owned by user alice', c.text())
        # the session logs after it replies: wait for its lines to reach s6-log
        self.inst.wait_log('smtp-listener', 'event=auth status=ok mech=PLAIN user=alice')
        log = self.inst.wait_log('smtp-listener', 'event=auth status=bad')
        self.assertNotIn(PASSWORD, log)
        self.assertNotIn(PASSWORD, self.inst.log('auth-checker'))

    def test_certificate_replaced_without_restart(self):
        """a new certificate is used from the next connection on, with no
        reload (the TLS server sees the files change); a session in progress
        keeps going (every connection has its own tls-proxy child)"""
        d = tempfile.mkdtemp(prefix='postern-cert2-', dir=CA['dir'])
        make_leaf(openssl_in(d), d, CA['ca'], os.path.join(CA['dir'], 'ca.key'), 'key.pem', 'cert.pem')
        der = lambda path: ssl.PEM_cert_to_DER_cert(open(path).read())
        tls = self.inst.path('conf', 'tls')
        old = TlsConn(self.smtps, implicit=True)
        try:
            smtp_steps(old, [(None, '220'), ('EHLO client.test', '250')])
            self.assertEqual(old.sock.getpeercert(binary_form=True), der(CA['cert']))
            for name in ('key.pem', 'cert.pem'):        # the key first: never a mismatched pair for long
                shutil.copy(os.path.join(d, name), os.path.join(tls, name + '.new'))
            tls_owns(os.path.join(tls, 'key.pem.new'))
            os.chmod(os.path.join(tls, 'key.pem.new'), 0o600)
            os.chmod(os.path.join(tls, 'cert.pem.new'), 0o644)
            os.rename(os.path.join(tls, 'key.pem.new'), os.path.join(tls, 'key.pem'))
            os.rename(os.path.join(tls, 'cert.pem.new'), os.path.join(tls, 'cert.pem'))
            with TlsConn(self.smtps, implicit=True) as new:
                smtp_steps(new, [(None, '220'), ('QUIT', '221')])
                self.assertEqual(new.sock.getpeercert(binary_form=True), der(os.path.join(d, 'cert.pem')))
            smtp_steps(old, [('NOOP', '250'), ('QUIT', '221')])     # the old one still works
        finally:
            old.close()
            for name in ('key.pem', 'cert.pem'):
                shutil.copy(CA['key' if name == 'key.pem' else 'cert'], os.path.join(tls, name))
            tls_owns(os.path.join(tls, 'key.pem'))
            os.chmod(os.path.join(tls, 'key.pem'), 0o600)

    def test_throttled_after_failures(self):
        """auth-checker's per-name window: from the 3rd failure on, each
        attempt waits before it is verified (auth-checker(8))"""
        with TlsConn(self.smtps, implicit=True) as c:
            smtp_steps(c, [(None, '220'), ('EHLO client.test', '250')])
            bad = 'AUTH PLAIN ' + b64('\0bob\0not-the-password')
            for _ in range(3):
                smtp_steps(c, [(bad, '535 5.7.8')])
            t0 = time.monotonic()
            smtp_steps(c, [(bad, '535 5.7.8')])
            self.assertGreaterEqual(time.monotonic() - t0, 0.9)
            smtp_steps(c, [('AUTH PLAIN ' + b64('\0bob\0' + PASSWORD), '235'), ('QUIT', '221')])

    def test_long_password_initial_response(self):
        """AUTH PLAIN with an initial response (smtplib, Thunderbird, swaks
        send it whatever its length) for a password as long as postern-user
        takes (1024 octets): the AUTH line was held to 512 octets and got
        500 5.5.2 line too long. It may now carry as much as a response
        line (2048 octets of base64); a password past 1024 octets gets
        500 5.5.6 (RFC 4954), a longer line 500 5.5.2"""
        pw = 'L' * 1024
        self.inst.add_user('longpw', pw)
        s = smtplib.SMTP_SSL('127.0.0.1', self.smtps, context=client_ctx(), timeout=30)
        try:
            s.ehlo('client.test')
            s.user, s.password = 'longpw', pw
            self.assertEqual(s.auth('PLAIN', s.auth_plain), (235, b'2.7.0 Authentication successful'))
        finally:
            s.quit()
        with TlsConn(self.smtps, implicit=True) as c:
            smtp_steps(c, [(None, '220'), ('EHLO client.test', '250'),
                           ('AUTH PLAIN ' + b64('\0longpw\0' + 'p' * 1030), '500 5.5.6'),
                           ('AUTH PLAIN ' + 'A' * 2052, '500 5.5.2 Error: line too long'),
                           ('NOOP ' + 'x' * 600, '500 5.5.2 Error: line too long'),
                           ('AUTH LOGIN ' + b64('longpw'), '334 UGFzc3dvcmQ6'), (b64(pw), '235 2.7.0'),
                           ('QUIT', '221')])

    def test_no_auth_on_port_25(self):
        with TlsConn(self.mx) as c:
            smtp_steps(c, [(None, '220'), ('EHLO client.test', '250'), ('STARTTLS', '220')])
            c.starttls()
            r = smtp_steps(c, [('EHLO client.test', '250'),
                               ('AUTH PLAIN ' + b64('\0alice\0' + PASSWORD), '503 5.5.1'),
                               ('MAIL FROM:<x@client.test>', '250'),
                               ('RCPT TO:<bob@example.test>', '250'),
                               ('RSET', '250'), ('QUIT', '221')])
            self.assertNotIn('AUTH', r[0])

    def test_failed_handshake(self):
        for port in (self.smtps, self.sub):
            with Conn(port) as c:
                if port == self.sub:
                    smtp_steps(c, [(None, '220'), ('EHLO x', '250'), ('STARTTLS', '220')])
                c.send(b'\x16\x03\x01\x00\x05hello, not a ClientHello\r\n')
                self.assertTrue(c.closed(10))
                self.assertNotIn(b'220 ', c.buf)
        self.inst.wait_log('smtp-listener', 'event=tls status=failed')
        # a client gone during the handshake: said so, not "unknown error"
        with Conn(self.smtps) as c:
            c.send(b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03')
        self.inst.wait_log('smtp-listener', 'why="handshake: connection closed"')
        self.assertNotIn('unknown error', self.inst.log('smtp-listener'))

    def test_replies_reach_a_client_that_half_closes(self):
        """A client that sends its last commands and then ends its side of
        the TCP connection without a TLS close_notify (shutdown(SHUT_WR),
        as scripts and some MUAs do) still gets the replies to what it
        sent, as over plaintext and from Postfix: tls-proxy took that end
        of the client's stream for the end of the connection, sent a
        decode_error alert and dropped the session's replies, here the 250
        of a queued message (a client that never sees it sends the
        message again) and the 221. TLS 1.3 and 1.2."""
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            tag = 'half-closed %s' % version.name
            with TlsConn(self.smtps) as c:
                ctx = client_ctx()
                ctx.maximum_version = version
                c.sock = ctx.wrap_socket(c.sock, server_hostname=HOST)
                smtp_steps(c, [(None, '220'), ('EHLO client.test', '250'),
                               ('AUTH PLAIN ' + b64('\0alice\0' + PASSWORD), '235'),
                               ('MAIL FROM:<alice@example.test>', '250'), ('RCPT TO:<bob@example.test>', '250'),
                               ('DATA', '354')])
                c.send(('Subject: %s\r\n\r\nbody\r\n.\r\nQUIT\r\n' % tag).encode())
                got, err = half_close(c)
                self.assertRegex(got, rb'^250 2\.0\.0 Ok: queued as \S+\r\n221 2\.0\.0 ', (version, got, err))
                self.assertIsNone(err, version)
            self.wait_message('bob', tag)
        self.inst.wait_log('smtp-listener', ' end=eof')     # not end=close_notify: none came

    # ---- the TLS server (tls-proxy -z) -----------------------------------

    def tls_server(self):
        """pid of smtp-listener's TLS server, waiting for it to be up"""
        listener = self.inst.service_pid('smtp-listener')

        def find():
            for pid in self.inst.processes():
                try:
                    with open('/proc/%d/cmdline' % pid, 'rb') as f:
                        cmd = f.read().split(b'\0')
                    with open('/proc/%d/status' % pid) as f:
                        ppid = int(re.search(r'^PPid:\s+(\d+)', f.read(), re.M).group(1))
                except OSError:
                    continue
                if cmd[:2] == [b'tls-server', b'-z'] and ppid == listener:
                    return pid
            return None
        if find() is None:
            self.greeted_over_tls()      # a listener starts its server for a connection
        return self.inst.wait_for(find, 10, what='the TLS server')

    def greeted_over_tls(self):
        with TlsConn(self.smtps, implicit=True) as c:
            smtp_steps(c, [(None, '220'), ('EHLO x', '250'), ('QUIT', '221')])

    def test_tls_server_killed_is_replaced(self):
        """a TLS server that is killed costs no connection: the next one is
        served (by a new server, or an exec'd tls-proxy meanwhile)"""
        old = self.tls_server()
        time.sleep(1.1)        # it ran a second: replaced at once, not 10 s later
        os.kill(old, signal.SIGKILL)
        self.inst.wait_log('smtp-listener', 'event=tls_server_ended status=-9')
        self.greeted_over_tls()
        new = self.tls_server()
        self.assertNotEqual(new, old)
        self.greeted_over_tls()

    def test_crash_of_a_connection_restarts_the_tls_server(self):
        """a tls-proxy child dying of a signal (a crash) ends its server, so
        the next connections get a fresh address space, not the one the crash
        may have probed"""
        server = self.tls_server()
        time.sleep(1.1)
        with TlsConn(self.smtps, implicit=True) as c:
            smtp_steps(c, [(None, '220'), ('EHLO x', '250')])
            # (the server's children: as root, those running as postern-tls)
            kids = self.session_pids('postern-tls') if IS_ROOT else self.inst.processes()
            children = [p for p in kids if self.parent(p) == server]
            self.assertEqual(len(children), 1, children)
            os.kill(children[0], signal.SIGSEGV)
            self.assertTrue(c.closed(10))
        # signal=11, or status=1 where a sanitizer catches the SIGSEGV and exits
        self.inst.wait_log('smtp-listener', 'event=child_crashed pid=%d ' % children[0])
        self.inst.wait_for(lambda: not os.path.exists('/proc/%d' % server) or
                           self.parent(server) != self.inst.service_pid('smtp-listener'),
                           10, what='the old TLS server to end')
        self.greeted_over_tls()
        self.assertNotEqual(self.tls_server(), server)

    def test_session_resumption(self):
        """the children of one TLS server share its session ticket key, so a
        client that comes back resumes its TLS session (RFC 8446 2.2, RFC
        5077): no certificate, no signature. TLS 1.3 and 1.2."""
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            ctx = client_ctx()
            ctx.maximum_version = version

            def session(sess=None):
                raw = socket.create_connection(('127.0.0.1', self.smtps), timeout=10)
                t = ctx.wrap_socket(raw, server_hostname=HOST, session=sess)
                c = Conn(None, sock=t)
                try:
                    smtp_steps(c, [(None, '220'), ('QUIT', '221')])   # TLS 1.3: the tickets came
                    return t.session, t.session_reused
                finally:
                    c.close()
            ended = self.inst.log('smtp-listener').count('event=tls_server_ended')
            first, reused = session()
            self.assertFalse(reused)
            self.assertTrue(first.has_ticket, version)
            again, reused = session(first)
            self.assertTrue(reused, version)
            # a ticket from before a restart of the server is not accepted:
            # the keys were its own
            server = self.tls_server()
            time.sleep(1.1)         # it ran a second: replaced at once, not 10 s later
            os.kill(server, signal.SIGTERM)
            self.inst.wait_for(lambda: not os.path.exists('/proc/%d' % server), 10, what='the server to end')
            self.inst.wait_for(lambda: self.inst.log('smtp-listener').count('event=tls_server_ended') >
                               ended, 10, what='the listener to see it end')
            session()                       # starts the new server
            _, reused = session(again)
            self.assertFalse(reused, version)

    @staticmethod
    def parent(pid):
        try:
            with open('/proc/%d/status' % pid) as f:
                return int(re.search(r'^PPid:\s+(\d+)', f.read(), re.M).group(1))
        except OSError:
            return 0

    # ---- the key stays in tls-proxy ---------------------------------------

    def session_pids(self, user):
        uid = pwd.getpwnam(user).pw_uid
        out = []
        for pid in self.inst.processes():
            try:
                with open('/proc/%d/status' % pid) as f:
                    st = f.read()
            except OSError:
                continue
            if int(re.search(r'^Uid:\s+(\d+)', st, re.M).group(1)) == uid:
                out.append(pid)
        return out

    def assert_no_key(self, pid):
        key = self.inst.path('conf', 'tls', 'key.pem')
        self.assertTrue(os.path.exists('/proc/%d' % pid))
        with open('/proc/%d/maps' % pid) as f:
            maps = f.read()
        self.assertNotIn('key.pem', maps)
        self.assertNotIn('/conf/tls', maps)
        for fd in os.listdir('/proc/%d/fd' % pid):
            try:
                target = os.readlink('/proc/%d/fd/%s' % (pid, fd))
            except OSError:
                continue
            self.assertNotEqual(target, key)
            self.assertNotIn('/conf/tls', target)

    def test_sessions_never_hold_the_key(self):
        need_root(self, 'sessions and tls-proxy are told apart by their uids')
        key = self.inst.path('conf', 'tls', 'key.pem')
        conns = []
        try:
            c = TlsConn(self.sub)
            conns.append(c)
            smtp_steps(c, [(None, '220'), ('EHLO x', '250'), ('STARTTLS', '220')])
            c.starttls()
            smtp_steps(c, [('EHLO x', '250'), ('AUTH PLAIN ' + b64('\0alice\0' + PASSWORD), '235')])
            c = TlsConn(self.smtps, implicit=True)
            conns.append(c)
            smtp_steps(c, [(None, '220'), ('EHLO x', '250')])
            sessions = self.session_pids('postern-smtp')
            proxies = self.session_pids('postern-tls')
            self.assertGreaterEqual(len(sessions), 2, sessions)
            self.assertGreaterEqual(len(proxies), 2, proxies)
            for pid in sessions + proxies:
                self.assert_no_key(pid)
            for pid in sessions:
                # chrooted in ROOT/empty: the key's path does not even exist there
                self.assertEqual(os.readlink('/proc/%d/root' % pid), self.inst.path('empty'))
            # and the session's user cannot read the key file at all
            r = subprocess.run(['setpriv', '--reuid=postern-smtp', '--regid=postern-smtp', '--init-groups',
                                'cat', key], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn(b'Permission denied', r.stderr)
            st = os.stat(key)
            self.assertEqual(st.st_mode & 0o777, 0o600)
            self.assertEqual(st.st_uid, pwd.getpwnam('postern-tls').pw_uid)
        finally:
            for c in conns:
                c.close()


def pop3_steps(c, steps):
    return pop3_dialogue(None, steps, conn=c)


def uid_of(pid):
    with open('/proc/%d/status' % pid) as f:
        return int(re.search(r'^Uid:\s+(\d+)', f.read(), re.M).group(1))


class Pop3Tls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        need(cls, 'pop3-listener', 'smtp-listener', 'tls-proxy', 'auth-checker', 'postern-user', 'queue-manager')
        cls.inst = start_instance(cls)
        cls.pop3 = cls.inst.port('pop3')
        cls.pop3s = cls.inst.port('pop3s')
        send_mail(cls.inst.port('smtp'), 'carol@client.test', ['alice@example.test'],
                  'Subject: for pop3\n\nread me over TLS\n')
        cls.inst.wait_for(lambda: cls.inst.maildir_messages('alice'), 15, what="alice's message")

    @classmethod
    def tearDownClass(cls):
        cls.inst.stop()

    def s_client(self, args, data):
        r = subprocess.run(['openssl', 's_client', '-CAfile', CA['ca'], '-verify_return_error',
                            '-verify_hostname', HOST, '-servername', HOST, '-crlf', '-ign_eof'] + args,
                           input=data, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30, universal_newlines=True)
        self.assertIn('Verify return code: 0 (ok)', r.stdout)
        return r.stdout

    def test_openssl_starttls_pop3(self):
        out = self.s_client(['-connect', '127.0.0.1:%d' % self.pop3, '-starttls', 'pop3'],
                            'CAPA\nUSER alice\nPASS %s\nSTAT\nQUIT\n' % PASSWORD)
        self.assertRegex(out, r'Protocol *: TLSv1\.[23]')
        capa = out.split('+OK Capability list follows', 1)[1].split('\n.')[0]
        self.assertNotIn('STLS', capa)
        self.assertIn('USER', capa)
        self.assertIn('+OK Logged in.', out)
        self.assertRegex(out, r'\+OK 1 \d+')
        self.assertIn('+OK Logging out.', out)

    def test_openssl_pop3s(self):
        out = self.s_client(['-connect', '127.0.0.1:%d' % self.pop3s],
                            'CAPA\nUSER alice\nPASS %s\nSTAT\nQUIT\n' % PASSWORD)
        self.assertIn('+OK POP3 server ready', out)
        self.assertNotIn('STLS', out)
        self.assertIn('+OK Logged in.', out)
        self.assertIn('+OK Logging out.', out)

    def test_capa_after_login_as_before_it_under_tls(self):
        """RFC 2449 5: what CAPA listed in AUTHORIZATION it lists after
        login too; under TLS (STLS done, or pop3s) that is USER and SASL
        PLAIN and no STLS (RFC 2595 4: the list may change at STLS, not at
        login). After login it had lost USER and SASL"""
        for tls in ('stls', 'pop3s'):
            if tls == 'stls':
                p = poplib.POP3('127.0.0.1', self.pop3, timeout=15)
                p.stls(context=client_ctx())
            else:
                p = poplib.POP3_SSL('127.0.0.1', self.pop3s, timeout=15, context=client_ctx())
            try:
                before = p.capa()
                p.user('alice')
                p.pass_(PASSWORD)
                after = p.capa()
            finally:
                p.quit()
            self.assertIn('USER', before, tls)
            self.assertNotIn('STLS', before, tls)
            self.assertEqual(before, after, tls)

    def test_poplib_stls_and_ssl(self):
        p = poplib.POP3('127.0.0.1', self.pop3, timeout=15)
        try:
            self.assertIn('STLS', p.capa())
            p.stls(context=client_ctx())
            self.assertNotIn('STLS', p.capa())
            p.user('alice')
            p.pass_(PASSWORD)
            self.assertEqual(p.stat()[0], 1)
        finally:
            p.quit()
        p = poplib.POP3_SSL('127.0.0.1', self.pop3s, timeout=15, context=client_ctx())
        try:
            self.assertNotIn('STLS', p.capa())
            p.user('alice@example.test')
            p.pass_(PASSWORD)
            lines = p.retr(1)[1]
            self.assertIn(b'read me over TLS', lines)
        finally:
            p.quit()

    def test_login_secrets_wiped_from_memory(self):
        """After a login, no process of the host keeps the password (USER
        and PASS after STLS) or the base64 of AUTH PLAIN (on 995): not the
        mailbox process, not the pre-login process and its monitor, not
        tls-proxy, not auth-checker. Read from /proc/PID/mem while the
        session is open."""
        secrets = [PASSWORD.encode(), base64.b64encode(b'\0alice\0' + PASSWORD.encode())]
        p = poplib.POP3('127.0.0.1', self.pop3, timeout=15)
        try:
            p.stls(context=client_ctx())
            p.user('alice')
            p.pass_(PASSWORD)
            self.assertEqual(p.stat()[0], 1)
            self.assertEqual(secrets_held(self.inst, secrets), [])
        finally:
            p.quit()
        p = poplib.POP3_SSL('127.0.0.1', self.pop3s, timeout=15, context=client_ctx())
        try:
            resp = p._shortcmd('AUTH PLAIN ' + base64.b64encode(b'\0alice\0' + PASSWORD.encode()).decode())
            self.assertTrue(resp.startswith(b'+OK'), resp)
            self.assertEqual(p.stat()[0], 1)
            self.assertEqual(secrets_held(self.inst, secrets), [])
        finally:
            p.quit()

    def test_curl(self):
        if not shutil.which('curl'):
            self.skipTest('curl not installed')
        for url in ('pop3s://127.0.0.1:%d/1' % self.pop3s, 'pop3://127.0.0.1:%d/1' % self.pop3):
            r = subprocess.run(['curl', '-sS', '--ssl-reqd', '--cacert', CA['ca'], '--user', 'alice:' + PASSWORD,
                                url, '--max-time', '30'],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                               universal_newlines=True)
            self.assertEqual(r.returncode, 0, r.stdout)
            self.assertIn('read me over TLS', r.stdout)

    def test_stls_injection_is_discarded(self):
        """'STLS\\r\\nCAPA\\r\\n' in one packet: no reply to CAPA inside TLS"""
        c = TlsConn(self.pop3)
        try:
            pop3_steps(c, [(None, '+OK')])
            c.send(b'STLS\r\nCAPA\r\n')
            self.assertEqual(c.pop3_reply(), '+OK Begin TLS negotiation')
            try:
                c.starttls()
            except (ssl.SSLError, OSError):
                return                  # the CAPA spoilt the handshake: also safe
            extra = unasked(c)
            self.assertIsNone(extra, 'a reply to the injected CAPA: %r' % extra)
            pop3_steps(c, [('STLS', '-ERR'), ('USER alice', '+OK'), ('PASS ' + PASSWORD, '+OK'), ('QUIT', '+OK')])
        finally:
            c.close()

    def test_stls_injection_in_a_later_packet(self):
        """as SmtpTls's: a CAPA on its own after the +OK, before the
        ClientHello, fails the handshake and is never answered"""
        with TlsConn(self.pop3) as c:
            pop3_steps(c, [(None, '+OK'), ('STLS', '+OK Begin TLS negotiation')])
            c.send(b'CAPA\r\n')
            time.sleep(0.3)
            with self.assertRaises((ssl.SSLError, OSError)):
                c.starttls()
            self.assertNotIn(b'+OK', c.buf)

    def test_plaintext_auth_policy(self):
        with Conn(self.pop3) as c:     # loopback: allowed by default
            pop3_steps(c, [(None, '+OK'), ('USER alice', '+OK'), ('QUIT', '+OK')])
        self.inst.set_conf(pop3_plaintext_auth='never')
        self.inst.reload_and_wait('pop3-listener')
        try:
            with Conn(self.pop3) as c:
                r = pop3_steps(c, [(None, '+OK'), ('CAPA', '+OK'),
                                   ('USER alice', '-ERR [AUTH] Plaintext authentication disallowed without TLS'),
                                   ('PASS ' + PASSWORD, '-ERR [AUTH] Plaintext authentication disallowed'),
                                   ('AUTH PLAIN ' + b64('\0alice\0' + PASSWORD), '-ERR [AUTH] Plaintext'),
                                   ('QUIT', '+OK')])
                self.assertNotIn('USER', r[1].split('\n'))
                self.assertNotIn('SASL PLAIN', r[1])
                self.assertIn('STLS', r[1].split('\n'))
            with TlsConn(self.pop3) as c:
                pop3_steps(c, [(None, '+OK'), ('STLS', '+OK')])
                c.starttls()
                pop3_steps(c, [('USER alice', '+OK'), ('PASS ' + PASSWORD, '+OK Logged in.'), ('QUIT', '+OK')])
            with TlsConn(self.pop3s, implicit=True) as c:
                pop3_steps(c, [(None, '+OK'), ('AUTH PLAIN ' + b64('\0alice\0' + PASSWORD), '+OK'), ('QUIT', '+OK')])
        finally:
            self.inst.set_conf(pop3_plaintext_auth='loopback')
            self.inst.reload_and_wait('pop3-listener')

    def test_failed_handshake(self):
        with Conn(self.pop3s) as c:
            c.send(b'\x16\x03\x01\x00\x05hello, not a ClientHello\r\n')
            self.assertTrue(c.closed(10))
            self.assertNotIn(b'+OK', c.buf)
        self.inst.wait_log('pop3-listener', 'event=tls status=failed')

    def test_large_message_through_tls_byte_exact(self):
        """6 MB of base64 with lines that need dot-stuffing, submitted over
        465 and read back over 995: every octet of the body comes through
        both relays (partial TLS writes, full socket buffers) unchanged"""
        lines = base64.encodebytes(os.urandom(6 << 20)).decode().splitlines()
        for i in range(0, len(lines), 997):
            lines[i] = '.' + lines[i]
        lines += ['.', '..', '. x']
        body = '\r\n'.join(lines) + '\r\n'
        with smtplib.SMTP_SSL('127.0.0.1', self.inst.port('smtps'), context=client_ctx(), timeout=60) as s:
            s.login('bob', PASSWORD)
            s.sendmail('bob@example.test', ['bob@example.test'],
                       'Subject: large over TLS\r\nMessage-ID: <large@client.test>\r\n\r\n' + body)
        self.inst.wait_for(lambda: any(b'<large@client.test>' in m for _, m in self.inst.maildir_messages('bob')),
                           30, what="bob's large message")
        p = poplib.POP3_SSL('127.0.0.1', self.pop3s, timeout=60, context=client_ctx())
        try:
            p.user('bob')
            p.pass_(PASSWORD)
            n = p.stat()[0]
            got = b'\r\n'.join(p.retr(n)[1]).decode()     # poplib removes the dot-stuffing
            self.assertIn('Message-ID: <large@client.test>', got)
            self.assertTrue(got.split('\r\n\r\n', 1)[1] + '\r\n' == body, 'the body differs')
            p.dele(n)
        finally:
            p.quit()

    def test_replies_reach_a_client_that_half_closes(self):
        """as SmtpTls's: a login, STAT and QUIT pipelined, then the client's
        FIN without close_notify; the replies still come"""
        with TlsConn(self.pop3s, implicit=True) as c:
            pop3_steps(c, [(None, '+OK')])
            c.send(('USER alice\r\nPASS %s\r\nSTAT\r\nQUIT\r\n' % PASSWORD).encode())
            got, err = half_close(c)
            self.assertRegex(got, rb'^\+OK\r\n\+OK Logged in\.\r\n\+OK 1 \d+\r\n\+OK ', (got, err))
            self.assertIsNone(err)

    def test_sessions_never_hold_the_key(self):
        need_root(self, 'sessions and tls-proxy are told apart by their uids')
        key = self.inst.path('conf', 'tls', 'key.pem')
        root_uid, tls_uid = 0, pwd.getpwnam('postern-tls').pw_uid
        pre = TlsConn(self.pop3)                 # a pre-login session after STLS
        box = TlsConn(self.pop3s, implicit=True)  # a mailbox process on pop3s
        try:
            pop3_steps(pre, [(None, '+OK'), ('STLS', '+OK')])
            pre.starttls()
            pop3_steps(pre, [('CAPA', '+OK')])
            pop3_steps(box, [(None, '+OK'), ('USER alice', '+OK'), ('PASS ' + PASSWORD, '+OK Logged in.'),
                             ('STAT', '+OK')])
            pids = self.inst.processes()
            uids = {pid: uid_of(pid) for pid in pids if os.path.exists('/proc/%d' % pid)}
            sessions = [p for p, u in uids.items() if u not in (root_uid, tls_uid)]
            pop3_uid = pwd.getpwnam('postern-pop3').pw_uid
            alice_uid = os.stat(self.inst.maildir('alice')).st_uid
            self.assertIn(pop3_uid, [uids[p] for p in sessions], uids)
            self.assertIn(alice_uid, [uids[p] for p in sessions], uids)
            checker = SmtpTls.assert_no_key
            for pid in sessions + [p for p, u in uids.items() if u == tls_uid]:
                checker(self, pid)
            for uid in (pop3_uid, alice_uid):
                r = subprocess.run(['setpriv', '--reuid=%d' % uid, '--regid=%d' % uid, '--clear-groups',
                                    'cat', key], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn(b'Permission denied', r.stderr)
        finally:
            pre.close()
            box.close()


def make_chain(d):
    """A root CA, an intermediate it signed and a leaf the intermediate
    signed: paths of the root, of the cert file (leaf then intermediate, as
    an operator's CA hands it out) and of the leaf's key."""
    run = openssl_in(d)
    make_root(run, 'postern test root', 'root.key', 'root.pem')
    run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-subj', '/CN=postern test intermediate', '-keyout', 'int.key', '-out', 'int.csr')
    with open(os.path.join(d, 'int.cnf'), 'w') as f:
        f.write('basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign\n')
    run('x509', '-req', '-in', 'int.csr', '-CA', 'root.pem', '-CAkey', 'root.key',
        '-CAcreateserial', '-days', '2', '-extfile', 'int.cnf', '-out', 'int.pem')
    make_leaf(run, d, 'int.pem', 'int.key', 'leaf.key', 'leaf.pem')
    with open(os.path.join(d, 'chain.pem'), 'w') as f:
        for name in ('leaf.pem', 'int.pem'):
            with open(os.path.join(d, name)) as g:
                f.write(g.read())
    return {'root': os.path.join(d, 'root.pem'), 'cert': os.path.join(d, 'chain.pem'),
            'key': os.path.join(d, 'leaf.key')}


class TlsUnusable(unittest.TestCase):
    """A key that does not match the certificate: tls-proxy's server exits
    100 at once. Sessions then offer no STARTTLS and answer it 454 4.7.0
    (RFC 3207: TLS not available due to temporary reason), so that a sender
    goes on in plaintext, as Postfix does with unusable TLS files; POP3's
    CAPA lists no STLS, which is refused with [SYS/TEMP]. They advertised
    STARTTLS and STLS, said yes and dropped the handshake, so senders that
    insist on a working handshake could deliver nothing. Once the files are
    right again and the listener reloaded, STARTTLS and STLS are back."""

    @classmethod
    def setUpClass(cls):
        need(cls, 'smtp-listener', 'pop3-listener', 'auth-checker', 'tls-proxy', 'queue-manager')
        cls.inst = start_instance(cls, key=os.path.join(CA['dir'], 'ca.key'))

    @classmethod
    def tearDownClass(cls):
        cls.inst.stop()

    def test_starttls_withdrawn_while_the_key_is_unusable(self):
        inst = self.inst
        inst.wait_log('smtp-listener', 'event=tls_server_ended status=100')
        port = inst.port('smtp')
        r = smtp_dialogue(port, [(None, '220'), ('EHLO x', '250'), ('STARTTLS', '454'),
                                 ('MAIL FROM:<x@client.test>', '250'), ('RCPT TO:<alice@example.test>', '250'),
                                 ('DATA', '354'), ('Subject: plain\r\n\r\nin the clear\r\n.', '250'),
                                 ('QUIT', '221')])
        self.assertNotIn('STARTTLS', r[1])
        self.assertEqual(r[2], '454 4.7.0 TLS not available due to local problem')
        inst.wait_for(lambda: inst.maildir_messages('alice'), 15, what="alice's message")
        self.assertIn('event=tls_unusable starttls=off', inst.log('smtp-listener'))
        inst.wait_log('pop3-listener', 'event=tls_server_ended status=100')
        r = pop3_dialogue(inst.port('pop3'), [(None, '+OK'), ('CAPA', '+OK'), ('STLS', '-ERR'), ('QUIT', '+OK')])
        self.assertNotIn('STLS', r[1])
        self.assertEqual(r[2], '-ERR [SYS/TEMP] TLS not available due to local problem')
        # the right key, a reload: a server that lasts gives STARTTLS back
        tls = inst.path('conf', 'tls')
        shutil.copy(CA['key'], os.path.join(tls, 'key.pem.new'))
        tls_owns(os.path.join(tls, 'key.pem.new'))
        os.chmod(os.path.join(tls, 'key.pem.new'), 0o600)
        os.rename(os.path.join(tls, 'key.pem.new'), os.path.join(tls, 'key.pem'))
        reloads = inst.log('smtp-listener').count('event=reload status=ok')
        pop3_reloads = inst.log('pop3-listener').count('event=reload')
        inst.svc('smtp-listener', '-h')
        inst.svc('pop3-listener', '-h')
        inst.wait_for(lambda: inst.log('smtp-listener').count('event=reload status=ok') > reloads and
                      inst.log('pop3-listener').count('event=reload') > pop3_reloads, 10, what='the reloads')
        time.sleep(2.2)          # the new server has lasted two seconds
        with TlsConn(port) as c:
            r = smtp_steps(c, [(None, '220'), ('EHLO x', '250'), ('STARTTLS', '220')])
            self.assertIn('STARTTLS', r[1])
            c.starttls()
            smtp_steps(c, [('EHLO x', '250'), ('QUIT', '221')])
        self.assertIn('event=tls_usable starttls=on', inst.log('smtp-listener'))
        with TlsConn(inst.port('pop3')) as c:
            r = pop3_dialogue(None, [(None, '+OK'), ('CAPA', '+OK'), ('STLS', '+OK')], conn=c)
            self.assertIn('STLS', r[1])
            c.starttls()
            pop3_dialogue(None, [('CAPA', '+OK'), ('QUIT', '+OK')], conn=c)
        self.assertIn('event=tls_usable starttls=on', inst.log('pop3-listener'))


class TlsTimeouts(unittest.TestCase):
    """tls-proxy's bounds against the sessions' own, with session_timeout
    at 2 s: a POP3 client idles over TLS (995 and STLS) as long as in
    plaintext, at least RFC 1939's 10 minutes (tls-proxy cut it after
    session_timeout, 5 minutes by default); and a client that never
    finishes its handshake on 465 is let go when the session stops
    waiting for it, not a minute later (tls-proxy held the connection,
    past the session and its monitor, so outside max_sessions)."""

    @classmethod
    def setUpClass(cls):
        need(cls, 'smtp-listener', 'pop3-listener', 'tls-proxy', 'auth-checker', 'postern-user',
             'queue-manager')
        cls.inst = start_instance(cls, conf_extra={'session_timeout': '2'})

    @classmethod
    def tearDownClass(cls):
        cls.inst.stop()

    def test_pop3_over_tls_idles_as_long_as_plaintext(self):
        for port, implicit in ((self.inst.port('pop3s'), True), (self.inst.port('pop3'), False),
                               (self.inst.port('pop3'), None)):
            with TlsConn(port, implicit=bool(implicit)) as c:
                pop3_steps(c, [(None, '+OK')])
                if implicit is False:
                    pop3_steps(c, [('STLS', '+OK')])
                    c.starttls()
                pop3_steps(c, [('USER alice', '+OK'), ('PASS ' + PASSWORD, '+OK Logged in.')])
                time.sleep(4)           # twice session_timeout, idle
                pop3_steps(c, [('STAT', '+OK'), ('QUIT', '+OK')])

    def test_stalled_clients_leave_the_tls_server_serving(self):
        """The TLS server (tls-proxy -z, one per listener) serves every
        TLS connection: a client stopped in the middle of its ClientHello,
        and one that reads nothing after its handshake, each hold only their
        own forked child, and the next client is served at once."""
        port = self.inst.port('smtps')
        half = socket.create_connection(('127.0.0.1', port), timeout=10)
        half.sendall(b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03' + b'\x00' * 20)   # 512 promised
        mute = client_ctx().wrap_socket(socket.create_connection(('127.0.0.1', port), timeout=10),
                                        server_hostname='mail.example.test')   # then reads nothing
        try:
            with smtplib.SMTP_SSL('127.0.0.1', port, context=client_ctx(), timeout=10) as s:
                self.assertEqual(s.ehlo()[0], 250)
                self.assertEqual(s.noop()[0], 250)
            # served while the first still waits for the rest of its hello
            # (2 s, session_timeout), not after it was let go
            half.setblocking(False)
            with self.assertRaises(BlockingIOError):
                half.recv(1)
        finally:
            half.close()
            mute.close()

    def test_silent_client_on_465_let_go_with_its_session(self):
        with Conn(self.inst.port('smtps')) as c:
            self.assertTrue(c.closed(30), 'still open after 30 s')     # 2 s now, 60 s before
            self.assertEqual(c.buf, b'')
        self.inst.wait_log('smtp-listener', 'result=handshake_failed why="handshake: timeout"')


class TlsPolicy(unittest.TestCase):
    """What an operator's scanner (testssl.sh, sslyze, a PCI scan) checks,
    from the outside with openssl s_client and python's ssl, on every TLS
    port: the whole chain of the cert file is sent (clients know only the
    root), and on submission and POP3 BCP 195 holds: no TLS below 1.2 (RFC
    8996), only forward-secret AEAD suites in TLS 1.2 (RFC 9325 4.1-4.2),
    no client-initiated renegotiation. The client offers everything it has
    (@SECLEVEL=0), so a server that accepted less would be seen: Postfix
    3.7 with its defaults accepts each of these on the same client."""

    @classmethod
    def setUpClass(cls):
        need(cls, 'smtp-listener', 'pop3-listener', 'tls-proxy', 'auth-checker', 'postern-user',
             'queue-manager')
        cls.dir = tempfile.mkdtemp(prefix='postern-chain-')
        cls.chain = make_chain(cls.dir)
        try:
            cls.inst = start_instance(cls, cert=cls.chain['cert'], key=cls.chain['key'])
        except BaseException:
            shutil.rmtree(cls.dir, ignore_errors=True)
            raise
        # (port, s_client arguments that get to the handshake)
        cls.ports = {
            'smtp': (cls.inst.port('smtp'), ['-starttls', 'smtp']),
            'submission': (cls.inst.port('submission'), ['-starttls', 'smtp']),
            'smtps': (cls.inst.port('smtps'), []),
            'pop3': (cls.inst.port('pop3'), ['-starttls', 'pop3']),
            'pop3s': (cls.inst.port('pop3s'), []),
        }

    @classmethod
    def tearDownClass(cls):
        cls.inst.stop()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def s_client(self, name, args, data=''):
        port, start = self.ports[name]
        r = subprocess.run(['openssl', 's_client', '-connect', '127.0.0.1:%d' % port,
                            '-CAfile', self.chain['root'], '-servername', HOST, '-crlf'] + start + args,
                           input=data, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30, universal_newlines=True)
        return r.stdout

    def test_whole_chain_is_sent(self):
        for name in self.ports:
            out = self.s_client(name, ['-verify_return_error', '-verify_hostname', HOST], 'QUIT\n')
            self.assertIn('Verify return code: 0 (ok)', out, name)
            self.assertRegex(out, r'\n *1 s: ?CN ?= ?postern test intermediate', name)
        ctx = ssl.create_default_context(cafile=self.chain['root'])
        for name in ('smtps', 'pop3s'):
            port = self.ports[name][0]
            with socket.create_connection(('127.0.0.1', port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname=HOST) as t:
                    self.assertRegex(t.recv(100), b'^(220 |\\+OK )', name)
                    t.sendall(b'QUIT\r\n')

    def assert_refused(self, name, args):
        out = self.s_client(name, args, 'QUIT\n')
        # "Cipher is (NONE)", "Cipher : 0000": nothing was negotiated
        self.assertRegex(out, r'Cipher is \(NONE\)|Cipher *: 0000', '%s %s:\n%s' % (name, args, out))
        self.assertNotRegex(out, r'\n(220|250|\+OK)[ -]', name)

    def test_no_tls_below_1_2(self):
        for name in ('submission', 'smtps', 'pop3', 'pop3s'):
            for version in ('-tls1', '-tls1_1'):
                self.assert_refused(name, [version, '-cipher', 'ALL:@SECLEVEL=0'])

    def test_tls12_forward_secret_aead_only(self):
        for name in ('submission', 'smtps', 'pop3', 'pop3s'):
            # plain RSA key exchange, DHE, anonymous, NULL: no ECDHE
            self.assert_refused(name, ['-tls1_2', '-cipher', 'ALL:eNULL:!ECDHE:@SECLEVEL=0'])
            # CBC (and whatever else is not GCM or ChaCha20-Poly1305)
            self.assert_refused(name, ['-tls1_2', '-cipher', 'ALL:!AESGCM:!CHACHA20:@SECLEVEL=0'])
            out = self.s_client(name, ['-tls1_2'], 'QUIT\n')
            self.assertRegex(out, r'Cipher is ECDHE-(RSA|ECDSA)-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305)', name)

    def test_no_client_renegotiation(self):
        for name in ('submission', 'smtps', 'pop3', 'pop3s'):
            port, start = self.ports[name]
            p = subprocess.Popen(['openssl', 's_client', '-connect', '127.0.0.1:%d' % port, '-CAfile',
                                  self.chain['root'], '-servername', HOST, '-crlf', '-tls1_2'] + start,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 universal_newlines=True)
            try:
                # a command answered first: no data of the session is in
                # flight when the client starts its new handshake ("R")
                cmd, last = ('NOOP', '250 2.0.0') if name in ('submission', 'smtps') else ('CAPA', '.')
                p.stdin.write(cmd + '\n')
                p.stdin.flush()
                seen = []
                for line in p.stdout:
                    seen.append(line)
                    if line.rstrip('\r\n') == last or (last != '.' and line.startswith(last)):
                        break
                p.stdin.write('R\nQUIT\n')
                p.stdin.close()
                out = ''.join(seen) + p.stdout.read()
                p.wait(30)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                p.stdout.close()
            self.assertIn('Secure Renegotiation IS supported', out, name)
            self.assertIn('RENEGOTIATING', out, name)
            self.assertIn('no renegotiation', out, '%s:\n%s' % (name, out))
            self.assertNotRegex(out.split('RENEGOTIATING', 1)[1], r'\n(221|\+OK)', name)


def make_dated(d, start, end):
    """a self-signed P-256 certificate for HOST valid from start to end
    (openssl ca's YYYYMMDDHHMMSSZ): paths of cert and key"""
    run = openssl_in(d)
    run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=' + HOST,
        '-keyout', 'dated.key', '-out', 'dated.csr')
    os.makedirs(os.path.join(d, 'db'), exist_ok=True)
    open(os.path.join(d, 'db', 'index'), 'w').close()
    with open(os.path.join(d, 'db', 'serial'), 'w') as f:
        f.write('01\n')
    with open(os.path.join(d, 'ca.cnf'), 'w') as f:
        f.write('[ca]\ndefault_ca = d\n[d]\ndatabase = db/index\nnew_certs_dir = db\nserial = db/serial\n'
                'default_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n')
    run('ca', '-batch', '-config', 'ca.cnf', '-selfsign', '-keyfile', 'dated.key', '-in', 'dated.csr',
        '-startdate', start, '-enddate', end, '-out', 'dated.pem')
    return os.path.join(d, 'dated.pem'), os.path.join(d, 'dated.key')


class TlsCheck(unittest.TestCase):
    """`tls-proxy -c` loads the certificate and key as tls-proxy's server
    does and says what is wrong, so that `postern-setup --check` finds a
    key that does not match its certificate, and a certificate that has
    expired or expires within 14 days, before senders and users do; the
    running server logs the same about the certificate it uses. Before,
    --check only saw whether cert.pem was a PEM certificate."""

    @classmethod
    def setUpClass(cls):
        need(cls, 'smtp-listener', 'tls-proxy', 'postern-setup', 'auth-checker', 'queue-manager')
        cls.dir = tempfile.mkdtemp(prefix='postern-dated-')
        run = openssl_in(cls.dir)
        # valid for 30 days: no warning
        run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '30',
            '-subj', '/CN=' + HOST, '-keyout', 'good.key', '-out', 'good.pem')
        cls.good = (os.path.join(cls.dir, 'good.pem'), os.path.join(cls.dir, 'good.key'))
        cls.expired = make_dated(cls.dir, '20200101000000Z', '20210101000000Z')
        try:
            cls.inst = start_instance(cls, cert=cls.good[0], key=cls.good[1])
        except BaseException:
            shutil.rmtree(cls.dir, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.inst.stop()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def install(self, cert, key):
        tls = self.inst.path('conf', 'tls')
        for src, name, mode in ((key, 'key.pem', 0o600), (cert, 'cert.pem', 0o644)):
            shutil.copy(src, os.path.join(tls, name + '.new'))
            if name == 'key.pem':
                tls_owns(os.path.join(tls, name + '.new'))
            os.chmod(os.path.join(tls, name + '.new'), mode)
            os.rename(os.path.join(tls, name + '.new'), os.path.join(tls, name))

    def check(self):
        r = self.inst.run('tls-proxy', '-c', self.inst.root, check=False)
        s = self.inst.run('postern-setup', '--check', self.inst.root, check=False)
        return r, s

    def tearDown(self):
        self.install(*self.good)

    def test_good_pair_passes(self):
        r, s = self.check()
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, '', ''))
        self.assertEqual(s.returncode, 0, s.stdout)
        self.assertNotIn('conf/tls', s.stdout)

    def test_key_of_another_certificate(self):
        self.install(self.good[0], CA['key'])
        r, s = self.check()
        key, cert = self.inst.path('conf', 'tls', 'key.pem'), self.inst.path('conf', 'tls', 'cert.pem')
        self.assertEqual(r.returncode, 100)
        self.assertEqual(r.stdout, '%s: the private key does not match the certificate in %s\n' % (key, cert))
        self.assertEqual(s.returncode, 1, s.stdout)
        self.assertIn('postern-setup: problem: %s: the private key does not match' % key, s.stdout)

    def test_expired_certificate(self):
        self.install(*self.expired)
        r, s = self.check()
        cert = self.inst.path('conf', 'tls', 'cert.pem')
        self.assertEqual(r.returncode, 100)
        self.assertEqual(r.stdout, '%s: the certificate expired on 2021-01-01 00:00:00 UTC\n' % cert)
        self.assertEqual(s.returncode, 1, s.stdout)
        self.assertIn('postern-setup: problem: %s: the certificate expired on 2021-01-01' % cert, s.stdout)
        # the running server takes the new files at its next connection,
        # and says what it now serves
        smtp_dialogue(self.inst.port('submission'), [(None, '220'), ('EHLO x', '250'), ('STARTTLS', '220')])
        self.inst.wait_log('smtp-listener', 'event=certificate file=%s problem=expired '
                           'date="2021-01-01 00:00:00 UTC"' % cert)

    def test_certificate_expiring_within_14_days(self):
        self.install(CA['cert'], CA['key'])      # the test CA's leaf: two days
        r, s = self.check()
        cert = self.inst.path('conf', 'tls', 'cert.pem')
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r'^%s: warning: the certificate expires on \d{4}-\d\d-\d\d '
                         r'\d\d:\d\d:\d\d UTC, in [12] days?\n$' % re.escape(cert))
        self.assertEqual(s.returncode, 0, s.stdout)
        self.assertIn('postern-setup: warning: %s: the certificate expires on' % cert, s.stdout)


if __name__ == '__main__':
    unittest.main()
