"""remote_helpers.py - what remote-deliverer's tests and benchmark need
(standard library only):

- DnsServer: a tiny authoritative DNS responder on UDP loopback answering
  MX / A / AAAA from a dict, with NXDOMAIN, SERVFAIL and "drop" names;
- SmtpSink: a recording SMTP server (threads) speaking EHLO, STARTTLS (with a
  self-signed certificate), AUTH PLAIN, MAIL, RCPT, DATA, with knobs for
  replies and hostile behaviour;
- Deliverer: runs the real remote-deliverer binary as queue-manager does
  (a SOCK_SEQPACKET socketpair on fd 0, the message fd attached to each job
  with SCM_RIGHTS) in a throwaway ROOT.
"""

import base64
import os
import pwd
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.abspath(os.environ.get('POSTERN_BIN') or os.path.join(HERE, '..', '..', 'bin'))


# ---------------------------------------------------------------- DNS

T_A, T_MX, T_AAAA = 1, 15, 28
TYPES = {'A': T_A, 'MX': T_MX, 'AAAA': T_AAAA}


def _name_wire(name):
    out = b''
    for label in name.rstrip('.').split('.'):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b'\0'


class DnsServer:
    """zone: {'example.test': {'MX': [(10, 'mx1.example.test')], 'A': ['127.0.0.1'],
    'AAAA': ['::1']}}; names in nxdomain get NXDOMAIN, in servfail SERVFAIL,
    in drop no answer at all; any other unknown name NXDOMAIN."""

    def __init__(self, zone=None, nxdomain=(), servfail=(), drop=()):
        self.zone = {k.lower(): v for k, v in (zone or {}).items()}
        self.nxdomain = {n.lower() for n in nxdomain}
        self.servfail = {n.lower() for n in servfail}
        self.drop = {n.lower() for n in drop}
        self.queries = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(('127.0.0.1', 0))
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self):
        return '127.0.0.1:%d' % self.port

    def _serve(self):
        self.sock.settimeout(0.2)
        while self.running:
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                reply = self.answer(data)
            except Exception:
                continue
            if reply:
                self.sock.sendto(reply, peer)

    def answer(self, q):
        qid, flags, qd = struct.unpack('>HHH', q[:6])
        pos, labels = 12, []
        while q[pos]:
            n = q[pos]
            labels.append(q[pos + 1:pos + 1 + n].decode('ascii', 'replace'))
            pos += 1 + n
        pos += 1
        qtype, qclass = struct.unpack('>HH', q[pos:pos + 4])
        question = q[12:pos + 4]
        name = '.'.join(labels).lower()
        self.queries.append((name, qtype))
        if name in self.drop:
            return None
        rcode, answers = 0, []
        if name in self.servfail:
            rcode = 2
        elif name in self.nxdomain or name not in self.zone:
            rcode = 3
        else:
            rr = self.zone[name]
            for tname, t in TYPES.items():
                if t != qtype:
                    continue
                for v in rr.get(tname, []):
                    if t == T_A:
                        rdata = socket.inet_pton(socket.AF_INET, v)
                    elif t == T_AAAA:
                        rdata = socket.inet_pton(socket.AF_INET6, v)
                    else:
                        rdata = struct.pack('>H', v[0]) + _name_wire(v[1])
                    answers.append(b'\xc0\x0c' + struct.pack('>HHIH', t, 1, 60, len(rdata)) + rdata)
        rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
        head = struct.pack('>HHHHHH', qid, rflags, 1, len(answers), 0, 0)
        return head + question + b''.join(answers)

    def close(self):
        self.running = False
        self.sock.close()
        self.thread.join(2)


# ---------------------------------------------------------------- TLS material

def make_cert(directory, names=('smarthost.test',), ips=('127.0.0.1',)):
    """A self-signed certificate (EC P-256) for names/ips: (cert, key) paths."""
    cert = os.path.join(directory, 'cert.pem')
    key = os.path.join(directory, 'key.pem')
    san = ','.join(['DNS:' + n for n in names] + ['IP:' + i for i in ips])
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                    'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
                    '-subj', '/CN=' + names[0], '-addext', 'subjectAltName=' + san,
                    '-keyout', key, '-out', cert], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.chmod(cert, 0o644)
    return cert, key


# ---------------------------------------------------------------- SMTP sink

class SmtpSink:
    """A recording SMTP server on 127.0.0.1 (port 0 = any free port).

    Knobs (attributes, change them before the delivery):
      starttls, pipelining, dsn, size, auth, smtputf8   what EHLO offers
      greeting           bytes sent first (default 220 ...)
      ehlo_reply         raw bytes replacing the EHLO reply
      mail_reply, rcpt_reply, data_reply, end_reply   reply lines (str)
      rcpt_replies       {address: reply line} overriding rcpt_reply per recipient
      stall_at           'greeting' | 'ehlo' | 'rcpt' | 'end': say nothing there;
                         'data': after the 354, read nothing more either
      close_in_data      close the connection after reading some DATA
      starttls_broken    answer 220 to STARTTLS, then plaintext garbage
      end_delay          seconds to wait before the reply to the end of data
      auth_ok            (user, password) accepted by AUTH PLAIN
      close_after_end    close the connection right after the reply to the end of data
      later_mail_reply   the reply to MAIL in the 2nd and later transactions of a
                         session; one starting "421" is followed by closing it
    Records: self.messages, a list of dicts (helo, mail, rcpt, data, tls, auth,
    lines: every command line received)."""

    def __init__(self, port=0, host='127.0.0.1', cert=None, key=None):
        self.starttls = False
        self.pipelining = False
        self.dsn = False
        self.smtputf8 = False
        self.size = True
        self.auth = False
        self.auth_ok = None
        self.greeting = b'220 sink.test ESMTP ready\r\n'
        self.ehlo_reply = None
        self.mail_reply = '250 2.1.0 ok'
        self.rcpt_reply = '250 2.1.5 ok'
        self.rcpt_replies = {}
        self.data_reply = '354 go ahead'
        self.end_reply = '250 2.0.0 queued as SINK'
        self.stall_at = None
        self.close_in_data = False
        self.starttls_broken = False
        self.end_delay = 0
        self.close_after_end = False
        self.later_mail_reply = None
        self.messages = []
        self.sessions = []
        self.active = 0
        self.max_active = 0
        self.in_end = 0          # sessions between end of data and our reply
        self.max_in_end = 0
        self.connections = 0
        self.lock = threading.Lock()
        self.ctx = None
        if cert:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(cert, key)
        self.sock = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self.running = True
        self.threads = []
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self):
        while self.running:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._session, args=(c,), daemon=True)
            self.threads.append(t)
            t.start()

    def drop_all(self):
        """end every open session abruptly (as a server's idle timeout would)"""
        for rec in self.sessions:
            try:
                rec['sock'].shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.running = False
        self.sock.close()
        self.accepter.join(2)

    # a tiny line reader over a (maybe TLS) socket
    class _Conn:
        def __init__(self, s):
            self.s, self.buf = s, b''

        def line(self):
            while b'\n' not in self.buf:
                d = self.s.recv(65536)
                if not d:
                    raise EOFError
                self.buf += d
            i = self.buf.index(b'\n') + 1
            ln, self.buf = self.buf[:i], self.buf[i:]
            return ln

        def send(self, b):
            self.s.sendall(b if isinstance(b, bytes) else (b + '\r\n').encode())

    def _session(self, s):
        with self.lock:
            self.active += 1
            self.connections += 1
            self.max_active = max(self.max_active, self.active)
        rec = {'helo': None, 'mail': None, 'rcpt': [], 'data': None, 'tls': False,
               'auth': None, 'lines': [], 'sock': s}
        self.sessions.append(rec)
        c = self._Conn(s)
        try:
            s.settimeout(30)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._dialogue(c, s, rec)
        except (EOFError, OSError, ssl.SSLError):
            pass
        finally:
            with self.lock:
                self.active -= 1
            try:
                c.s.close()
            except OSError:
                pass

    def _ehlo_text(self, name):
        if self.ehlo_reply is not None:
            return self.ehlo_reply
        kw = ['sink.test greets ' + name]
        if self.pipelining:
            kw.append('PIPELINING')
        if self.size:
            kw.append('SIZE 10485760')
        kw += ['8BITMIME', 'ENHANCEDSTATUSCODES']
        if self.dsn:
            kw.append('DSN')
        if self.smtputf8:
            kw.append('SMTPUTF8')
        if self.starttls and (self.ctx or self.starttls_broken) and not isinstance(self._cur, ssl.SSLSocket):
            kw.append('STARTTLS')
        if self.auth:
            kw.append('AUTH PLAIN LOGIN')
        return ''.join('250%s%s\r\n' % ('-' if i < len(kw) - 1 else ' ', k)
                       for i, k in enumerate(kw)).encode()

    def _stall(self, c):
        time.sleep(60)
        raise EOFError

    def _dialogue(self, c, s, rec):
        self._cur = s
        if self.stall_at == 'greeting':
            self._stall(c)
        c.send(self.greeting)
        while True:
            raw = c.line()
            rec['lines'].append(raw)
            line = raw.rstrip(b'\r\n').decode('latin-1')
            verb = line.split(' ', 1)[0].upper()
            if verb in ('EHLO', 'HELO'):
                rec['helo'] = line
                if self.stall_at == 'ehlo':
                    self._stall(c)
                c.send(self._ehlo_text(line[5:]) if verb == 'EHLO' else b'250 sink.test\r\n')
            elif verb == 'STARTTLS':
                c.send('220 2.0.0 go ahead')
                if self.starttls_broken:
                    c.send(b'this is not a TLS handshake\r\n' * 20)
                    raise EOFError
                if c.buf:
                    raise EOFError  # injected bytes: refuse
                s = self.ctx.wrap_socket(s, server_side=True)
                self._cur = s
                c.s = s
                rec['tls'] = True
            elif verb == 'AUTH':
                parts = line.split(' ')
                ok = False
                if len(parts) == 3 and parts[1].upper() == 'PLAIN':
                    try:
                        _, u, p = base64.b64decode(parts[2]).split(b'\0')
                        rec['auth'] = (u.decode(), p.decode())
                        ok = self.auth_ok == rec['auth']
                    except Exception:
                        pass
                c.send('235 2.7.0 ok' if ok else '535 5.7.8 bad credentials')
            elif verb == 'MAIL':
                # a new transaction (a kept connection carries several): its own lists
                rec['rcpt'], rec['data'] = [], None
                rec['transactions'] = rec.get('transactions', 0) + 1
                rec['mail'] = line
                rec['after_mail'] = c.buf   # what came in the same write (PIPELINING)
                if rec['transactions'] > 1 and self.later_mail_reply:
                    c.send(self.later_mail_reply)
                    if self.later_mail_reply.startswith('421'):
                        return
                    continue
                c.send(self.mail_reply)
            elif verb == 'RCPT':
                rec['rcpt'].append(line)
                if self.stall_at == 'rcpt':
                    self._stall(c)
                addr = line[line.find('<') + 1:line.find('>')].lower() if '<' in line else ''
                c.send(self.rcpt_replies.get(addr, self.rcpt_reply))
            elif verb == 'DATA':
                c.send(self.data_reply)
                if not self.data_reply.startswith('3'):
                    continue
                if self.stall_at == 'data':
                    self._stall(c)
                data = b''
                while True:
                    ln = c.line()
                    if ln == b'.\r\n':
                        break
                    if ln.startswith(b'.'):
                        ln = ln[1:]
                    data += ln
                    if self.close_in_data and len(data) > 100:
                        raise EOFError
                rec['data'] = data
                if self.stall_at == 'end':
                    self._stall(c)
                with self.lock:
                    self.in_end += 1
                    self.max_in_end = max(self.max_in_end, self.in_end)
                if self.end_delay:
                    time.sleep(self.end_delay)
                with self.lock:
                    self.in_end -= 1
                if self.end_reply.startswith('250'):
                    self.messages.append(rec.copy())
                c.send(self.end_reply)
                if self.close_after_end:
                    return
            elif verb == 'RSET':
                c.send('250 2.0.0 ok')
            elif verb == 'QUIT':
                c.send('221 2.0.0 bye')
                return
            else:
                c.send('502 5.5.2 what')


# ---------------------------------------------------------------- deliverer

def ensure_user(name='postern-remote'):
    """the system user remote-deliverer drops to, made if missing; as an
    ordinary user nothing (a Deliverer runs it as that user)"""
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(['useradd', '--system', '--no-create-home', '--user-group',
                        '--shell', '/usr/sbin/nologin', name], check=True)


def encode_job(job, msgid, sender, rcpt, birth=None, orcpt='', notify='', envid='', body='', ret='',
               smtputf8=False):
    f = [b'J%d' % job, b'M' + msgid.encode(), b'F' + sender.encode(), b'R' + rcpt.encode(),
         b'T%d' % int(birth or time.time())]
    if orcpt:
        f.append(b'O' + orcpt.encode())
    if notify:
        f.append(b'N' + notify.encode())
    if envid:
        f.append(b'V' + envid.encode())
    if body:
        f.append(b'B' + body.encode())
    if ret:
        f.append(b'E' + ret.encode())
    if smtputf8:
        f.append(b'U1')
    return b''.join(x + b'\0' for x in f)


def decode_result(rec):
    out = {}
    for field in rec.split(b'\0')[:-1]:
        out[chr(field[0])] = field[1:].decode('latin-1')
    return out


class Deliverer:
    """A throwaway ROOT with conf/postern.conf (+ routes, relay-auth) and the
    real remote-deliverer running on one end of a SEQPACKET socketpair."""

    def __init__(self, conf=None, routes='', relay_auth=None, binpath=None):
        self.root = tempfile.mkdtemp(prefix='postern-remote-')
        os.chmod(self.root, 0o755)
        for d in ('conf', 'empty', 'msg'):
            os.mkdir(os.path.join(self.root, d))
            os.chmod(os.path.join(self.root, d), 0o755)
        settings = {'hostname': 'mail.example.test', 'local_domains': 'example.test',
                    'remote_timeout': '10', 'remote_connect_timeout': '5'}
        if os.geteuid() != 0:
            # not root: remote-deliverer can only 'drop' to the caller
            settings['user_remote'] = pwd.getpwuid(os.getuid()).pw_name
        settings.update(conf or {})
        self.write('conf/postern.conf', ''.join('%s = %s\n' % kv for kv in settings.items()))
        self.write('conf/routes', routes)
        if relay_auth is not None:
            path = self.write('conf/relay-auth', relay_auth, mode=0o600)
            if os.geteuid() == 0:
                pw = pwd.getpwnam(settings.get('user_remote', 'postern-remote'))
                os.chown(path, pw.pw_uid, pw.pw_gid)
        self.binpath = binpath or os.path.join(BIN, 'remote-deliverer')
        self.proc = None
        self.sock = None
        self.next_job = 1
        self.nmsg = 0

    def write(self, rel, text, mode=0o644):
        path = os.path.join(self.root, rel)
        with open(path, 'w') as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def start(self):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.logf = open(os.path.join(self.root, 'stderr.log'), 'wb')
        self.proc = subprocess.Popen([self.binpath, self.root], stdin=b, stdout=self.logf,
                                     stderr=self.logf, close_fds=True)
        b.close()
        self.sock = a
        return self

    def log(self):
        with open(os.path.join(self.root, 'stderr.log'), 'rb') as f:
            return f.read().decode('latin-1')

    def message_file(self, content):
        self.nmsg += 1
        path = os.path.join(self.root, 'msg', 'm%d' % self.nmsg)
        with open(path, 'wb') as f:
            f.write(content)
        return path

    def submit(self, rcpt, content=None, path=None, sender='alice@example.test', msgid=None, **kw):
        """Send one job (msgid: the queue id, default one per job); returns
        its job number."""
        if path is None:
            path = self.message_file(content)
        job = self.next_job
        self.next_job += 1
        fd = os.open(path, os.O_RDONLY)
        try:
            rec = encode_job(job, msgid or '%016X' % (0x5000000000000000 + job), sender, rcpt, **kw)
            socket.send_fds(self.sock, [rec], [fd])
        finally:
            os.close(fd)
        return job

    def result(self, timeout=30):
        self.sock.settimeout(timeout)
        rec = self.sock.recv(8192)
        if not rec:
            raise EOFError('remote-deliverer closed its socket')
        return decode_result(rec)

    def deliver(self, rcpt, content=b'Subject: t\n\nhello\n', timeout=30, **kw):
        job = self.submit(rcpt, content, **kw)
        r = self.result(timeout)
        assert r['J'] == str(job), r
        return r

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.sock.close()
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        elif self.sock:
            self.sock.close()
        if getattr(self, 'logf', None):
            self.logf.close()
            self.final_log = self.log()
        if not os.environ.get('POSTERN_KEEP'):
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            print('kept ROOT', self.root)
