"""A soak of a whole instance for leaks of descriptors, processes and
memory: run by `make soak` (not part of `make check`: not named
test_*.py, and it takes minutes), as

    POSTERN_BIN=$PWD/bin python3 tests/integration/soak_daemons.py [ROUNDS [SCALE]]

(default 4 rounds at scale 1, about 15 s a round, most of it the wait for
idle sessions to time out; SCALE multiplies the traffic). Each round
drives, at once: plain SMTP messages, pipelined clients, STARTTLS on 25
and 465 with AUTH, AUTH on 587 with good passwords and bad ones (each bad
one with another name and loopback address, so that auth-checker's
throttling does not slow the round), AUTH before TLS, POP3 (USER/PASS,
STLS, 995; STAT, RETR, DELE, UIDL, QUIT; bad passwords), remote
recipients whose route refuses them (a DSN), whose route is down
(retried, then deleted with postern-queue) and whose domain does not
exist (a DSN), an alias that delivers to alice and forwards to a remote
address (local-deliverer injects the copy), and hostile clients: connections dropped in DATA, in a TLS
handshake on 465, 995, after STARTTLS and STLS, in AUTH; garbage, HTTP
requests, unknown recipients, relaying refused; sessions past
max_sessions_per_client; sessions left idle in every state until
session_timeout ends them. Every daemon gets a SIGHUP during the round,
then postern-queue flush.

After each round, once every per-connection process has gone, it records
for each long-lived process (smtp-listener, pop3-listener, their
tls-servers, queue-manager, local-deliverer, remote-deliverer,
auth-checker, the s6-logs) its descriptors and VmRSS, and checks: no
process of the instance left but those (no session, monitor, tls-proxy,
queue-inject, mailbox process or worker; none reparented to init either);
no zombie; each long-lived process holds as many descriptors as before
the first round (within 15 s: a daemon may be between an open and its
close); queue/tmp and the Maildirs' tmp/ are empty. At the end every
accepted message must be in its Maildir or at the sink exactly once (or
its DSN in alice's), and no client may have met an error it did not ask
for. It prints a table of descriptors/RSS (KiB) by round. RSS is only
reported: allocators grow a little at first, and auth-checker's grows by
each new name and address that failed (its throttling table, a fixed
4096 entries); look for a figure that goes on growing otherwise. Exit 0
if every check held, 1 otherwise."""

import base64
import collections
import os
import poplib
import re
import smtplib
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Instance                        # noqa: E402
from remote_helpers import DnsServer, SmtpSink      # noqa: E402

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 4
SCALE = int(sys.argv[2]) if len(sys.argv) > 2 else 1
TIMEOUT = 10                  # session_timeout: above auth-checker's longest delay (8 s)
USERS = {'alice': 'pw-alice', 'bob': 'pw-bob', 'carol': 'pw-carol'}
DECOYS = ['eve%d' % i for i in range(20)]      # bad passwords are tried on these
LONG = ('smtp-listener', 'pop3-listener', 'queue-manager', 'local-deliverer', 'remote-deliverer',
        'auth-checker', 'tls-server', 's6-log', 's6-supervise')
CTX = ssl.create_default_context()
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE
HELLO = bytes.fromhex('16030100c8010000c40303') + bytes(range(32))   # a ClientHello, cut short

lock = threading.Lock()
expect = {}                   # token -> 'alice' | 'bob' | 'sink' | 'fwd' (alice and sink) | 'dsn' | 'queued'
client_errors = []
counter = [0, 0]
P = {}


def token():
    with lock:
        counter[0] += 1
        return 'soak-%06d' % counter[0]


def accepted(tok, where):
    with lock:
        expect[tok] = where


def failed(what, e):
    with lock:
        client_errors.append('%s: %r' % (what, e))


def decoy():
    """a name and a loopback source address for one bad password: each
    decoy user once, then names of no one, each once (auth-checker delays a
    name's 3rd failure and an address's 10th: they would only slow us)"""
    with lock:
        counter[1] += 1
        k = counter[1]
    who = DECOYS[k - 1] if k <= len(DECOYS) else 'nobody%d' % k
    return who, '127.0.%d.%d' % (1 + k // 250 % 250, 1 + k % 250)


class POP3From(poplib.POP3):
    def __init__(self, port, src):
        self.src = src
        poplib.POP3.__init__(self, '127.0.0.1', port, timeout=30)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.src, 0))


# ---- traffic ---------------------------------------------------------------
def send(label, where, sender, rcpt, port='smtp', tls=None, login=None):
    """one message with a fresh token, on port (tls: None, 'starttls' or
    'implicit'; login: a user of USERS), expected at where"""
    t = token()
    try:
        if tls == 'implicit':
            s = smtplib.SMTP_SSL('127.0.0.1', P[port], timeout=30, context=CTX)
        else:
            s = smtplib.SMTP('127.0.0.1', P[port], timeout=30)
        with s:
            if tls == 'starttls':
                s.starttls(context=CTX)
            if login:
                s.login(login, USERS[login])
            s.sendmail(sender, [rcpt], 'Subject: %s\r\n\r\n%s\r\n' % (t, t))
        accepted(t, where)
    except Exception as e:
        failed(label, e)


def plain(n, rcpt):
    for _ in range(n):
        send('plain', rcpt, 'x@sender.test', '%s@example.test' % rcpt)


def pipelined(n):
    for _ in range(n):
        t = token()
        try:
            with socket.create_connection(('127.0.0.1', P['smtp']), timeout=30) as c:
                f = c.makefile('rb')
                f.readline()
                c.sendall(b'EHLO p.test\r\nMAIL FROM:<p@sender.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n')
                while not f.readline().startswith(b'354'):
                    pass
                c.sendall(('Subject: %s\r\n\r\n%s\r\n.\r\nQUIT\r\n' % (t, t)).encode())
                if f.readline().startswith(b'250'):
                    accepted(t, 'bob')
        except Exception as e:
            failed('pipelined', e)


def tls(n):
    for _ in range(n):
        send('starttls', 'alice', 'x@sender.test', 'alice@example.test', tls='starttls')
        send('smtps', 'bob', 'alice@example.test', 'bob@example.test', port='smtps', tls='implicit',
             login='alice')


def submission(n):
    for _ in range(n):
        send('submission', 'sink', 'bob@example.test', 'u1@example.net', port='submission',
             tls='starttls', login='bob')
        who, src = decoy()
        try:
            with smtplib.SMTP('127.0.0.1', P['submission'], timeout=30, source_address=(src, 0)) as s:
                s.starttls(context=CTX)
                s.ehlo()
                code, _ = s.docmd('AUTH', 'PLAIN ' + base64.b64encode(b'\0%s\0wrong' % who.encode()).decode())
                if code != 535:
                    failed('bad password', code)
        except Exception as e:
            failed('bad password', e)
        try:
            with smtplib.SMTP('127.0.0.1', P['submission'], timeout=30) as s:
                s.ehlo()
                code, _ = s.docmd('AUTH', 'PLAIN ' + base64.b64encode(b'\0bob\0pw-bob').decode())
                if code != 530:
                    failed('auth before tls', code)
        except Exception as e:
            failed('auth before tls', e)


def remote(n):
    for _ in range(n):
        for dom, where in (('refuse.example', 'dsn'), ('down.example', 'queued'), ('nx.example', 'dsn')):
            send('remote ' + dom, where, 'alice@example.test', 'x@' + dom, port='submission',
                 tls='starttls', login='alice')


def pop3(n):
    for _ in range(n):
        for how in ('plain', 'stls', 'pop3s'):
            try:
                if how == 'pop3s':
                    p = poplib.POP3_SSL('127.0.0.1', P['pop3s'], timeout=30, context=CTX)
                else:
                    p = poplib.POP3('127.0.0.1', P['pop3'], timeout=30)
                    if how == 'stls':
                        p.stls(context=CTX)
                p.user('carol')
                p.pass_(USERS['carol'])
                count, _ = p.stat()
                p.uidl()
                for i in range(1, min(count, 3) + 1):
                    p.retr(i)
                    p.dele(i)
                p.quit()
            except Exception as e:
                failed('pop3 ' + how, e)
        who, src = decoy()
        p = None
        try:
            p = POP3From(P['pop3'], src)
            p.user(who)
            p.pass_('wrong')
            failed('pop3 bad password', 'accepted')
        except poplib.error_proto:
            pass
        except Exception as e:
            failed('pop3 bad password', e)
        if p:
            p.close()


def opened(port, parts, greeting, wrap, src=None, pause=0.0):
    """a connection to port (from src), through TLS if wrap, its greeting
    read if greeting, parts sent (pause seconds after each)"""
    c = socket.create_connection(('127.0.0.1', port), timeout=30,
                                 source_address=(src, 0) if src else None)
    if wrap:
        c = CTX.wrap_socket(c)
    if greeting:
        c.recv(1000)
    for d in parts:
        c.sendall(d)
        time.sleep(pause)
    return c


def raw(port, parts, greeting=True, wrap=False, linger=0.0):
    try:
        c = opened(port, parts, greeting, wrap, pause=0.02)
        time.sleep(linger)
        c.close()
    except Exception as e:
        failed('raw %d' % port, e)


def hostile(n):
    for _ in range(n):
        raw(P['smtp'], [b'EHLO h\r\nMAIL FROM:<h@sender.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n',
                        b'Subject: dropped\r\n\r\nhalf a message'])
        raw(P['smtps'], [HELLO], greeting=False)
        raw(P['pop3s'], [HELLO], greeting=False)
        raw(P['smtp'], [b'EHLO h\r\n', b'STARTTLS\r\n', HELLO])
        raw(P['pop3'], [b'STLS\r\n', HELLO])
        raw(P['smtps'], [b'EHLO h\r\n', b'AUTH LOGIN\r\n', base64.b64encode(b'alice') + b'\r\n'], wrap=True)
        raw(P['pop3'], [b'AUTH PLAIN\r\n'])
        raw(P['smtp'], [b'GET / HTTP/1.1\r\nHost: x\r\n\r\n'], linger=0.2)
        raw(P['pop3'], [b'POST / HTTP/1.0\r\n\r\n'], linger=0.2)
        raw(P['smtp'], [bytes(range(1, 256)) * 2 + b'\r\n'] * 5, linger=0.2)
        raw(P['submission'], [b'\x00\xff' * 400 + b'\r\n'], linger=0.2)
        raw(P['smtp'], [b'EHLO h\r\n', b'MAIL FROM:<h@sender.test>\r\n', b'RCPT TO:<nobody@example.test>\r\n',
                        b'RCPT TO:<x@elsewhere.test>\r\n', b'QUIT\r\n'], linger=0.2)


def over_limit():
    """6 sessions at once from 127.0.0.2 (max_sessions_per_client 4), on 25 and 110"""
    for port in (P['smtp'], P['pop3']):
        socks = []
        for _ in range(6):
            try:
                c = socket.socket()
                c.settimeout(30)
                c.bind(('127.0.0.2', 0))
                c.connect(('127.0.0.1', port))
                socks.append(c)
            except Exception as e:
                failed('over limit', e)
        time.sleep(0.5)
        for c in socks:
            c.close()


def idle():
    """sessions left idle: after the greeting, in DATA, after STARTTLS, before
    and after a TLS handshake, in a POP3 login; session_timeout ends them"""
    socks = []
    for i, (port, parts, greeting, wrap) in enumerate((
            (P['smtp'], [], True, False),
            (P['smtp'], [b'EHLO i\r\nMAIL FROM:<i@sender.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n'
                         b'Subject: idle\r\n'], True, False),
            (P['smtp'], [b'EHLO i\r\nSTARTTLS\r\n'], True, False),
            (P['smtps'], [], False, False),
            (P['smtps'], [], True, True),
            (P['pop3s'], [HELLO[:20]], False, False),
            (P['pop3'], [b'USER carol\r\n'], True, False))):
        try:      # each from an address of its own: POP3 limits 127.0.0.1 too
            socks.append(opened(port, parts, greeting, wrap, src='127.0.4.%d' % (i + 1)))
        except Exception as e:
            failed('idle', e)
    time.sleep(TIMEOUT + 3)
    for c in socks:
        c.close()


# ---- the instance's processes ------------------------------------------------
def proc_table():
    """{pid: (ppid, state, name)} of every process"""
    out = {}
    for p in os.listdir('/proc'):
        if not p.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % p) as f:
                rest = f.read().rsplit(')', 1)[1].split()
            with open('/proc/%s/cmdline' % p, 'rb') as f:
                argv0 = f.read().split(b'\0')[0].decode(errors='replace')
        except OSError:
            continue
        out[int(p)] = (int(rest[1]), rest[0], os.path.basename(argv0))
    return out


def descendants(inst):
    """{pid: (ppid, state, name)} of s6-svscan's descendants"""
    t = proc_table()
    below, todo = {}, [inst.svscan.pid]
    while todo:
        x = todo.pop()
        for pid, (pp, st, name) in t.items():
            if pp == x:
                below[pid] = (pp, st, name)
                todo.append(pid)
    return below


def roles(inst):
    """{pid: (role, state)} of s6-svscan's descendants but s6-supervise;
    roles of the long-lived ones say whose they are:
    tls-server(smtp-listener), s6-log(queue-manager)"""
    below = descendants(inst)
    out = {}
    for pid, (pp, st, name) in below.items():
        if name == 's6-supervise':
            continue
        parent = below.get(pp, (0, '', ''))[2]
        if name == 'tls-server' and parent == 'tls-server':
            name = 'child of tls-server'        # its tls-proxy for one connection
        elif name == 'tls-server' and parent in ('smtp-listener', 'pop3-listener'):
            name = 'tls-server(%s)' % parent
        elif name == 's6-log':
            with open('/proc/%d/cmdline' % pid, 'rb') as f:
                name = 's6-log(%s)' % os.path.basename(f.read().rstrip(b'\0').split(b'\0')[-1].decode())
        elif name in ('smtp-listener', 'pop3-listener', 'queue-manager', 'auth-checker',
                      'local-deliverer', 'remote-deliverer') and parent == name:
            name = 'child of ' + name          # a session, monitor, worker...
        out[pid] = (name, st)
    return out


def fds(pid):
    try:
        return len(os.listdir('/proc/%d/fd' % pid))
    except OSError:
        return -1


def fd_targets(pid):
    out = []
    try:
        for n in sorted(os.listdir('/proc/%d/fd' % pid), key=int):
            try:
                out.append('%s:%s' % (n, os.readlink('/proc/%d/fd/%s' % (pid, n))))
            except OSError:
                pass
    except OSError:
        pass
    return out


def rss(pid):
    try:
        with open('/proc/%d/status' % pid) as f:
            return int([l for l in f if l.startswith('VmRSS')][0].split()[1])
    except (OSError, IndexError):
        return -1


def files(inst, *parts):
    return sum(len(fs) for _, _, fs in os.walk(inst.path(*parts)))


def settle(inst, timeout=60):
    """wait until only the long-lived processes run; what else runs"""
    deadline = time.time() + timeout
    while True:
        r = roles(inst)
        extra = sorted('%s[%d]' % (n, pid) for pid, (n, st) in r.items() if n.split('(')[0] not in LONG)
        orphans = sorted(set(inst.processes()) - set(descendants(inst)) - {inst.svscan.pid})
        if (not extra and not orphans) or time.time() > deadline:
            return extra, orphans
        time.sleep(0.5)


def state(inst):
    """{role: (fds, rss)} of the long-lived processes, and the problems seen"""
    extra, orphans = settle(inst)
    problems = []
    if extra:
        problems.append('still running: %s' % extra)
    if orphans:
        problems.append('outside the supervision tree: %s' % orphans)
    r = roles(inst)
    zombies = [n for n, st in r.values() if st == 'Z']
    if zombies:
        problems.append('zombies: %s' % zombies)
    for what in (('queue', 'tmp'),) + tuple(('mail', u, 'Maildir', 'tmp') for u in USERS):
        if os.path.isdir(inst.path(*what)) and files(inst, *what):
            problems.append('%d files in %s' % (files(inst, *what), '/'.join(what)))
    seen = {}
    for pid, (n, st) in r.items():
        if n.split('(')[0] in LONG:
            seen[n] = (fds(pid), rss(pid), fd_targets(pid))
    return seen, problems


# ---- the run -----------------------------------------------------------------
def main():
    sink = SmtpSink()
    sink.pipelining = True
    refuser = SmtpSink()
    refuser.rcpt_reply = '550 5.1.1 no such user here'
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    dead = s.getsockname()[1]
    s.close()
    dns = DnsServer(zone={}, nxdomain=('nx.example',))
    inst = Instance(users=dict(USERS, **{d: 'pw-' + d for d in DECOYS}), conf_extra={
        'session_timeout': '%ds' % TIMEOUT, 'max_sessions_per_client': '4', 'relay_networks': '127.0.0.1/32',
        'remote_timeout': '5', 'remote_connect_timeout': '3', 'dns_server': dns.address})
    inst.setup()
    with open(inst.path('conf', 'routes'), 'w') as f:
        f.write('example.net [127.0.0.1]:%d\nrefuse.example [127.0.0.1]:%d\ndown.example [127.0.0.1]:%d\n'
                % (sink.port, refuser.port, dead))
    os.chmod(inst.path('conf', 'routes'), 0o644)
    with open(inst.path('conf', 'aliases'), 'a') as f:      # local-deliverer forwards through queue-inject
        f.write('fwd: alice, fwd@example.net\n')
    problems = []
    try:
        inst.start()
        P.update(inst.ports)
        print('soak: ROOT %s, %d rounds at scale %d' % (inst.root, ROUNDS, SCALE), flush=True)
        time.sleep(2)
        base, p0 = state(inst)
        problems += ['before: ' + p for p in p0]
        table = {'base': base}
        for rnd in range(1, ROUNDS + 1):
            t0 = time.time()
            work = [threading.Thread(target=f, args=a) for f, a in (
                (plain, (8 * SCALE, 'alice')), (plain, (6 * SCALE, 'carol')), (plain, (3 * SCALE, 'fwd')),
                (pipelined, (6 * SCALE,)),
                (tls, (3 * SCALE,)), (submission, (3 * SCALE,)), (remote, (2 * SCALE,)),
                (pop3, (3 * SCALE,)), (hostile, (3 * SCALE,)))]
            for w in work:
                w.start()
            time.sleep(2)
            for svc in ('smtp-listener', 'pop3-listener', 'queue-manager', 'auth-checker'):
                inst.reload(svc)
            for pid, (n, st) in roles(inst).items():
                if n in ('local-deliverer', 'remote-deliverer'):
                    os.kill(pid, 1)
            over_limit()
            idle()
            for w in work:
                w.join()
            inst.run('postern-queue', '--root', inst.root, 'flush', check=False)
            listing = inst.run('postern-queue', '--root', inst.root, 'list', check=False).stdout
            down = [l.split()[0] for l in re.split(r'\n(?=\S)', listing) if 'down.example' in l]
            if down:      # retried once (the flush), then given up: the queue ends each round empty
                inst.run('postern-queue', '--root', inst.root, 'delete', *down, check=False)
            # a daemon may be between an open and its close (a retry of
            # down.example, a directory fsync): a count must come back
            deadline = time.time() + 15
            while True:
                seen, pr = state(inst)
                grown = [role for role, (nfd, _, _) in seen.items() if role in base and nfd != base[role][0]]
                if not grown or time.time() > deadline:
                    break
                time.sleep(0.5)
            table['r%d' % rnd] = seen
            for role in grown:
                pr.append('%s: %d descriptors, %d before the first round: %s, before: %s' % (
                    role, seen[role][0], base[role][0], ' '.join(seen[role][2]), ' '.join(base[role][2])))
            problems += ['round %d: %s' % (rnd, p) for p in pr]
            print('soak: round %d: %.0f s, %d messages so far, %s' % (
                rnd, time.time() - t0, len(expect), '; '.join(pr) or 'ok'), flush=True)
        # every accepted message arrived once
        inst.wait_for(lambda: not inst.queue_ids(), timeout=120, interval=1, what='an empty queue')
        time.sleep(2)
        found = collections.Counter()
        for user in USERS:
            for _, data in inst.maildir_messages(user):
                for w in set(re.findall(rb'soak-\d{6}', data)):
                    found[(w.decode(), user)] += 1
        for m in sink.messages:
            for w in set(re.findall(rb'soak-\d{6}', m['data'])):
                found[(w.decode(), 'sink')] += 1
        for tok, where in sorted(expect.items()):
            for place in {'fwd': ('alice', 'sink')}.get(where, (where,) if where in ('alice', 'bob', 'sink') else ()):
                if found[(tok, place)] != 1:
                    problems.append('%s (to %s) arrived at %s %d times' % (tok, where, place, found[(tok, place)]))
            if where == 'dsn' and found[(tok, 'alice')] != 1:
                problems.append('%s: %d DSNs in alice\'s Maildir' % (tok, found[(tok, 'alice')]))
        # the table
        labels = list(table)
        print('\n%-28s' % 'descriptors/RSS KiB' + ''.join('%13s' % l for l in labels))
        for role in sorted(set().union(*table.values())):
            print('%-28s' % role + ''.join('%13s' % ('%d/%d' % table[l][role][:2] if role in table[l] else '-')
                                          for l in labels))
        print('\nsoak: %d messages accepted; %d client errors' % (len(expect), len(client_errors)))
        for e, n in collections.Counter(re.sub(r'\d+', 'N', e) for e in client_errors).most_common(8):
            problems.append('%d clients: %s' % (n, e))
    finally:
        inst.stop()
        for x in (sink, refuser, dns):
            x.close()
    for p in problems:
        print('soak: FAILED: ' + p)
    print('soak: %s' % ('FAILED' if problems else 'ok'))
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
