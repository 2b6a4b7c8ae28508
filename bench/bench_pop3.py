#!/usr/bin/env python3
"""bench_pop3.py - POP3 logins per second and RETR throughput.

Brings up a real instance (tests/integration/harness.py: postern-setup, s6,
auth-checker, pop3-listener with its real privilege separation) and measures,
first, the figures issue 4 asks for (--issue-only: only those):

  issue 4     one session each (best of --issue-runs): 2,000 messages of
              2 KiB RETR'd one at a time and with 16 commands in flight,
              500 of 100 KiB both ways; msg/s and MB/s (10^6 octets on the
              wire), read by a raw socket client that only counts octets and
              CRLF "." CRLF (recv_into, no line splitting), with the CPU the
              mailbox process and the client each used, to show which one
              bounds the figure. Login latency (connect .. "+OK Logged in.")
              split into the argon2id verification alone (libsodium's
              crypto_pwhash_str_verify on the user's hash from conf/users,
              the call auth-checker makes, interleaved with the logins so
              both see the same load) and our own overhead. Dovecot 2.3's
              figures (plaintext passwords) are printed next to ours.

then:

  logins      USER/PASS + QUIT against an empty mailbox, by 1 and by 4
              concurrent clients (separate processes, each its own user: one
              mailbox admits one session at a time), for --login-seconds.
              Every login is one argon2id verification in auth-checker
              (pwhash_level, libsodium "interactive" by default: 64 MiB), at
              most auth_concurrency (2) at once, so the rate is bounded by
              argon2id: the figure printed next to it is auth-checker's CPU
              time per login, read from /proc.
  RETR large  one --big-size (10 MB) message, RETR'd --big-runs times in
              one session: MB/s of the message as stored (LF), the reply
              being larger by the CR of every line; the mailbox process's
              CPU time and its peak RSS (VmHWM).
  RETR small  --small-count (1000) messages of 4 KB: login time (the
              maildrop scan), then RETR 1..N one at a time (each RETR waits
              for its reply) and again with all RETRs pipelined; messages/s,
              MB/s, and the mailbox process's RSS.
  login scan  --scan-count (100) messages of --scan-size (1 MB): login time
              and the mailbox process's CPU time at login, with file names
              without sizes (every message is read to count its CRLF size)
              and with Maildir++ ",S=<octets>,W=<CRLF octets>" names (what
              local-deliverer writes; nothing is read).

Messages are placed into the Maildir by hand (owned by the user, as
local-deliverer leaves them). No pass/fail thresholds.

    python3 bench/bench_pop3.py --bin bin-bench [--login-seconds 5]

Needs root (the instance drops privileges).
"""

import argparse
import multiprocessing
import os
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'integration'))

TICK = os.sysconf('SC_CLK_TCK')
PASSWORD = 'bench-password'


class Pop:
    """A POP3 client that parses in place (an offset into its buffer), so
    that pipelined replies do not make the client the bottleneck."""

    def __init__(self, port):
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0

    def _more(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError('connection closed')
        self.buf += chunk

    def line(self):
        if self.pos > (1 << 20):     # between replies: drop what was read
            del self.buf[:self.pos]
            self.pos = 0
        while True:
            i = self.buf.find(b'\n', self.pos)
            if i >= 0:
                line = bytes(self.buf[self.pos:i])
                self.pos = i + 1
                return line
            self._more()

    def cmd(self, text):
        self.sock.sendall(text.encode() + b'\r\n')
        line = self.line()
        if not line.startswith(b'+OK'):
            raise RuntimeError('%s: %r' % (text.split()[0], line))
        return line

    def multiline_end(self):
        """Read up to the terminating CRLF "." CRLF (the status line already
        read ended in CRLF, so a body-less reply is "." CRLF at once);
        returns the octets of the reply body and terminator."""
        start = self.pos
        if self.buf[start:start + 3] == b'.\r\n':
            self.pos += 3
            return 3
        search = start
        while True:
            i = self.buf.find(b'\r\n.\r\n', search)
            if i >= 0:
                self.pos = i + 5
                return self.pos - start
            search = max(start, len(self.buf) - 4)
            self._more()

    def login(self, user):
        if not self.line().startswith(b'+OK'):
            raise RuntimeError('no greeting')
        self.cmd('USER ' + user)
        self.cmd('PASS ' + PASSWORD)

    def close(self):
        try:
            self.cmd('QUIT')
        except (OSError, EOFError, RuntimeError):
            pass
        self.sock.close()


def proc_cpu(pid):
    """(own, reaped children) CPU seconds of pid"""
    with open('/proc/%d/stat' % pid) as f:
        st = f.read()
    fields = st[st.rindex(')') + 2:].split()
    return ((int(fields[11]) + int(fields[12])) / TICK,
            (int(fields[13]) + int(fields[14])) / TICK)


def proc_status(pid):
    out = {}
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                k, _, v = line.partition(':')
                out[k] = v.strip()
    except OSError:
        pass
    return out


def mailbox_pid(inst, user):
    """the post-login process: a pop3-listener running as the user's uid"""
    uid = os.stat(inst.maildir(user)).st_uid
    for pid in inst.processes():
        try:
            if os.path.basename(os.readlink('/proc/%d/exe' % pid)) != 'pop3-listener':
                continue
        except OSError:
            continue
        st = proc_status(pid)
        if st.get('Uid', '').split()[:1] == [str(uid)]:
            return pid
    return None


def put(inst, user, name, data):
    md = inst.maildir(user)
    path = os.path.join(md, 'new', name)
    with open(path, 'wb') as f:
        f.write(data)
    st = os.stat(md)
    os.chown(path, st.st_uid, st.st_gid)


def message(size, tag):
    head = ('From: a@example.test\nTo: b@example.test\nSubject: %s\n\n' % tag).encode()
    line = b'The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmn\n'
    # every 50th line starts with a dot, so dot-stuffing is exercised
    block = line * 49 + b'.' + line[1:]
    n = size - len(head)
    body = (block * (n // len(block) + 1))[:n - 1] + b'\n'
    return head + body


def login_worker(port, user, seconds, start, out):
    n = bad = 0
    start.wait()
    end = time.monotonic() + seconds
    lat = []
    while time.monotonic() < end:
        t = time.monotonic()
        try:
            p = Pop(port)
            p.login(user)
            p.close()
            n += 1
            lat.append(time.monotonic() - t)
        except (OSError, EOFError, RuntimeError) as e:
            if not bad:
                print('bench_pop3: login failed: %r' % e, file=sys.stderr)
            bad += 1
    out.put((n, bad, lat))


def bench_logins(inst, clients, seconds):
    auth = inst.service_pid('auth-checker')
    q = multiprocessing.Queue()
    start = multiprocessing.Event()
    procs = [multiprocessing.Process(target=login_worker,
                                     args=(inst.port('pop3'), 'empty%d' % i, seconds, start, q))
             for i in range(clients)]
    for p in procs:
        p.start()
    time.sleep(0.2)
    c0 = sum(proc_cpu(auth))
    t0 = time.monotonic()
    start.set()
    res = [q.get() for _ in procs]
    el = time.monotonic() - t0
    for p in procs:
        p.join()
    cpu = sum(proc_cpu(auth)) - c0
    n = sum(r[0] for r in res)
    lat = sorted(x for r in res for x in r[2])
    print('bench_pop3: logins, %d client(s): %d ok, %d failed in %.1f s = %.1f logins/s; '
          'latency p50 %.0f ms; auth-checker CPU %.1f ms per login (argon2id-bound)'
          % (clients, n, sum(r[1] for r in res), el, n / el,
             lat[len(lat) // 2] * 1e3 if lat else 0, cpu / max(1, n) * 1e3))


def bench_big(inst, size, runs):
    put(inst, 'big', 'big.msg', message(size, 'big'))
    p = Pop(inst.port('pop3'))
    p.login('big')
    pid = mailbox_pid(inst, 'big')
    c0 = proc_cpu(pid)[0] if pid else 0
    times = []
    octets = 0
    for _ in range(runs):
        t = time.monotonic()
        p.sock.sendall(b'RETR 1\r\n')
        if not p.line().startswith(b'+OK'):
            raise RuntimeError('RETR refused')
        octets = p.multiline_end()
        times.append(time.monotonic() - t)
    cpu = (proc_cpu(pid)[0] - c0) if pid else 0
    st = proc_status(pid) if pid else {}
    p.close()
    best = min(times)
    print('bench_pop3: RETR of a %d-byte message (%d octets on the wire) x %d: best %.1f ms = %.0f MB/s, '
          'median %.1f ms; mailbox process CPU %.1f ms per RETR, VmRSS %s, VmHWM %s'
          % (size, octets, runs, best * 1e3, size / best / 1e6, sorted(times)[len(times) // 2] * 1e3,
             cpu / runs * 1e3, st.get('VmRSS', '?'), st.get('VmHWM', '?')))


def bench_small(inst, count, size):
    for i in range(count):
        put(inst, 'small', '%d.M%dP1.bench' % (1700000000 + i, i), message(size, 'small %d' % i))
    t = time.monotonic()
    p = Pop(inst.port('pop3'))
    p.login('small')
    t_login = time.monotonic() - t
    pid = mailbox_pid(inst, 'small')
    st = p.cmd('STAT')
    c0 = proc_cpu(pid)[0] if pid else 0
    seqs, pipes, total = [], [], 0
    for _ in range(3):
        t = time.monotonic()
        total = 0
        for i in range(1, count + 1):
            p.sock.sendall(b'RETR %d\r\n' % i)
            if not p.line().startswith(b'+OK'):
                raise RuntimeError('RETR %d refused' % i)
            total += p.multiline_end()
        seqs.append(time.monotonic() - t)
        t = time.monotonic()
        p.sock.sendall(b''.join(b'RETR %d\r\n' % i for i in range(1, count + 1)))
        for i in range(1, count + 1):
            if not p.line().startswith(b'+OK'):
                raise RuntimeError('pipelined RETR %d refused' % i)
            p.multiline_end()
        pipes.append(time.monotonic() - t)
    cpu = (proc_cpu(pid)[0] - c0) if pid else 0
    ms = proc_status(pid) if pid else {}
    p.close()
    seq, pipe = sorted(seqs)[1], sorted(pipes)[1]
    print('bench_pop3: %d messages of %d bytes (%s): login+scan %.1f ms; RETR 1..%d one at a time '
          '(median of 3) %.3f s = %.0f msg/s (%.1f MB/s), best %.0f msg/s; pipelined %.3f s = %.0f msg/s, '
          'best %.0f msg/s; mailbox CPU %.1f ms per pass; VmRSS %s, VmHWM %s'
          % (count, size, st.decode().strip(), t_login * 1e3, count, seq, count / seq, total / seq / 1e6,
             count / min(seqs), pipe, count / pipe, count / min(pipes), cpu * 1e3 / 6,
             ms.get('VmRSS', '?'), ms.get('VmHWM', '?')))


def crlf_size(data):
    n = len(data) + data.count(b'\n') - data.count(b'\r\n')
    return n + 2 if data and not data.endswith(b'\n') else n


def login_cost(inst, user):
    """(wall ms of greeting+USER+PASS, mailbox process CPU ms once logged in)"""
    t = time.monotonic()
    p = Pop(inst.port('pop3'))
    p.login(user)
    wall = time.monotonic() - t
    pid = mailbox_pid(inst, user)
    cpu = proc_cpu(pid)[0] if pid else 0
    p.close()
    time.sleep(0.2)  # the lock goes with the process
    return wall * 1e3, cpu * 1e3


def bench_scan(inst, count, size, runs=3):
    """login cost of a mailbox of count messages of size bytes, named
    without sizes (the mailbox process reads every message to learn its
    POP3 size) and with Maildir++ ",S=,W=" (as local-deliverer names them)"""
    md = inst.maildir('scan')
    names = []
    for i in range(count):
        data = message(size, 'scan %d' % i)
        name = '%d.M%dP2.bench' % (1700000000 + i, i)
        put(inst, 'scan', name, data)
        names.append((name, '%s,S=%d,W=%d' % (name, len(data), crlf_size(data))))
    out = []
    for kind in ('plain names', 'names with ,S=,W='):
        res = sorted(login_cost(inst, 'scan') for _ in range(runs))
        out.append('%s: login %.0f ms, mailbox process CPU %.0f ms' % (kind, res[runs // 2][0], res[runs // 2][1]))
        if len(out) == 1:   # the session may have moved them to cur/ (with ":2,")
            rename = dict(names)
            for sub in ('new', 'cur'):
                for f in os.listdir(os.path.join(md, sub)):
                    base, colon, flags = f.partition(':')
                    if base in rename:
                        os.rename(os.path.join(md, sub, f), os.path.join(md, sub, rename[base] + colon + flags))
    print('bench_pop3: mailbox of %d x %d bytes (median of %d logins; login includes argon2id): %s'
          % (count, size, runs, '; '.join(out)))


# ---- the figures issue 4 asks for ----------------------------------------

class Counter:
    """A raw socket reader that only counts: octets received and complete
    RETR replies (each ends in CRLF "." CRLF, which dot-stuffing keeps out
    of message bodies; the status line's CRLF makes an empty body end the
    same way). It never splits lines, so it outruns the server."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray(1 << 20)     # recv_into: no allocation per read
        self.tail = b''
        self.octets = 0
        self.replies = 0
        self.err = False

    def recv(self):
        n = self.sock.recv_into(self.buf)
        if not n:
            raise EOFError('connection closed')
        b = self.buf
        self.octets += n
        head = self.tail + bytes(b[:4])   # a terminator across two reads
        self.replies += head.count(b'\r\n.\r\n') + b.count(b'\r\n.\r\n', 0, n)
        if b'\n-ERR' in head or b.find(b'\n-ERR', 0, n) >= 0 or (self.octets == n and b.startswith(b'-ERR')):
            self.err = True
        self.tail = bytes(b[max(0, n - 4):n])


def retr_all(p, count, window):
    """RETR 1..count with at most window commands in flight (1: each waits
    for its reply); returns (seconds, octets on the wire)"""
    c = Counter(p.sock)
    # the replies before ours were read by Pop.line(); nothing is pending
    t = time.monotonic()
    sent = 0
    while c.replies < count:
        k = min(count, c.replies + window) - sent
        if k > 0:
            p.sock.sendall(b''.join(b'RETR %d\r\n' % i for i in range(sent + 1, sent + k + 1)))
            sent += k
        c.recv()
    el = time.monotonic() - t
    if c.err or c.replies != count:
        raise RuntimeError('RETR: %d replies, -ERR seen: %s' % (c.replies, c.err))
    return el, c.octets


def sodium_verify_ms(inst, user, runs):
    """argon2id verification alone: libsodium's crypto_pwhash_str_verify on
    the user's hash from conf/users, the call auth-checker makes per login"""
    import ctypes
    import ctypes.util
    lib = ctypes.CDLL(ctypes.util.find_library('sodium') or 'libsodium.so.23')
    if lib.sodium_init() < 0:
        raise RuntimeError('sodium_init')
    with open(inst.path('conf', 'users')) as f:
        h = [l.rstrip('\n').split(':', 4)[4] for l in f if l.split(':', 1)[0] == user][0]
    pw = PASSWORD.encode()
    out = []
    for _ in range(runs):
        t = time.monotonic()
        r = lib.crypto_pwhash_str_verify(h.encode(), pw, ctypes.c_ulonglong(len(pw)))
        out.append((time.monotonic() - t) * 1e3)
        if r != 0:
            raise RuntimeError('the hash does not verify')
    return sorted(out)


def login_split(inst, user, runs):
    """runs logins (USER/PASS on an empty mailbox, one client at a time),
    each followed by one argon2id verification alone (interleaved, so both
    see the same machine load): sorted lists of login ms (connect ..
    "+OK Logged in."), verification ms, and the greeting and USER parts"""
    logins, verifies, greets, users = [], [], [], []
    for _ in range(runs):
        t0 = time.monotonic()
        p = Pop(inst.port('pop3'))
        if not p.line().startswith(b'+OK'):
            raise RuntimeError('no greeting')
        t1 = time.monotonic()
        p.cmd('USER ' + user)
        t2 = time.monotonic()
        p.cmd('PASS ' + PASSWORD)
        t3 = time.monotonic()
        p.close()
        logins.append((t3 - t0) * 1e3)
        greets.append((t1 - t0) * 1e3)
        users.append((t2 - t1) * 1e3)
        verifies += sodium_verify_ms(inst, user, 1)
        time.sleep(0.05)
    return [sorted(x) for x in (logins, verifies, greets, users)]


def put_named(inst, user, i, data):
    """as local-deliverer names them: Maildir++ ,S= and ,W= (CRLF octets)"""
    put(inst, user, '%d.M%dP3.bench,S=%d,W=%d' % (1700000000 + i, i, len(data), crlf_size(data)), data)


def bench_issue(inst, small_n, small_size, big_n, big_size, window, runs):
    ref = {'seq': 5600, 'pipe': 25000, 'mbs': 228, 'login': 17}
    for i in range(small_n):
        put_named(inst, 'i2k', i, message(small_size, 'i2k %d' % i))
    for i in range(big_n):
        put_named(inst, 'i100k', i, message(big_size, 'i100k %d' % i))
    rows = []

    def session(user, n, win):
        """best of runs: (seconds, octets, mailbox process CPU s, client CPU s)"""
        best = None
        for _ in range(runs):
            p = Pop(inst.port('pop3'))
            p.login(user)
            pid = mailbox_pid(inst, user)
            c0, pc0 = proc_cpu(pid)[0] if pid else 0, time.process_time()
            el, octets = retr_all(p, n, win)
            cpu, pcpu = (proc_cpu(pid)[0] - c0) if pid else 0, time.process_time() - pc0
            p.close()
            time.sleep(0.2)     # the lock goes with the process
            if best is None or el < best[0]:
                best = (el, octets, cpu, pcpu)
        return best

    def row(name, n, best, ref_text, ahead):
        el, octets, cpu, pcpu = best
        rows.append((name, n / el, octets / el / 1e6, ref_text, ahead, cpu / el * 100, pcpu / el * 100))

    b = session('i2k', small_n, 1)
    row('%d x %d B, unpipelined' % (small_n, small_size), small_n, b, '%d msg/s' % ref['seq'],
        small_n / b[0] > ref['seq'])
    b = session('i2k', small_n, window)
    row('%d x %d B, %d in flight' % (small_n, small_size, window), small_n, b, '%d msg/s' % ref['pipe'],
        small_n / b[0] > ref['pipe'])
    for win in (1, window):
        b = session('i100k', big_n, win)
        row('%d x %d B, %s' % (big_n, big_size, 'unpipelined' if win == 1 else '%d in flight' % win),
            big_n, b, '%d MB/s' % ref['mbs'], b[1] / b[0] / 1e6 > ref['mbs'])
    print('bench_pop3: issue 4 figures (one session each, best of %d; a raw socket client counting '
          'octets and ".\\r\\n"; MB = 10^6 octets on the wire):' % runs)
    for name, mps, mbs, r, ahead, scpu, ccpu in rows:
        print('bench_pop3:   %-30s %8.0f msg/s %8.1f MB/s   (Dovecot 2.3: %s; %s)  CPU busy: mailbox process %3.0f%%, client %3.0f%%'
              % (name, mps, mbs, r, 'ahead' if ahead else 'BEHIND', scpu, ccpu))
    n = max(5, runs * 7)
    lat, ver, greet, usr = login_split(inst, 'ilogin', n)

    def med(x):
        return x[len(x) // 2]
    print('bench_pop3:   login (connect .. "+OK Logged in.", USER/PASS, empty mailbox, median of %d): %.1f ms '
          '= argon2id verification %.1f ms (libsodium crypto_pwhash_str_verify alone on the user\'s hash, '
          'interleaved with the logins, median; min %.1f) + our own %.1f ms (target <= 5 ms; of which '
          'connect+greeting %.1f ms, USER %.1f ms); Dovecot 2.3 with plaintext passwords: %d ms'
          % (n, med(lat), med(ver), ver[0], med(lat) - med(ver), med(greet), med(usr), ref['login']))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--bin', default=os.path.join(HERE, '..', 'bin'))
    ap.add_argument('--login-seconds', type=float, default=5.0)
    ap.add_argument('--login-clients', default='1,4', help='at most 8')
    ap.add_argument('--big-size', type=int, default=10 << 20)
    ap.add_argument('--big-runs', type=int, default=5)
    ap.add_argument('--small-count', type=int, default=1000)
    ap.add_argument('--small-size', type=int, default=4096)
    ap.add_argument('--scan-count', type=int, default=100)
    ap.add_argument('--scan-size', type=int, default=1 << 20)
    ap.add_argument('--issue-only', action='store_true', help='only the figures issue 4 asks for')
    ap.add_argument('--issue-runs', type=int, default=3)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit('bench_pop3: needs root (the instance drops to the postern-* users)')
    os.environ['POSTERN_BIN'] = os.path.abspath(a.bin)
    import harness
    inst = harness.Instance(users=dict([('empty%d' % i, PASSWORD) for i in range(8)] + [(u, PASSWORD) for u in ('big', 'small', 'scan', 'i2k', 'i100k', 'ilogin')]),
                            services=['auth-checker', 'pop3-listener'],
                            conf_extra={'max_sessions_per_client': '100'},
                            bin=os.path.abspath(a.bin))
    inst.start()
    try:
        with open(inst.path('conf', 'postern.conf')) as f:
            level = [l.split('=', 1)[1].strip() for l in f if l.split('=', 1)[0].strip() == 'pwhash_level']
        print('bench_pop3: instance %s, %d CPUs, load average %s, pwhash_level %s'
              % (inst.root, os.cpu_count(), ' '.join('%.2f' % x for x in os.getloadavg()),
                 level[0] if level else 'default (interactive)'))
        bench_issue(inst, 2000, 2048, 500, 100 << 10, 16, a.issue_runs)
        if a.issue_only:
            return
        for n in [int(x) for x in a.login_clients.split(',')]:
            bench_logins(inst, n, a.login_seconds)
        bench_big(inst, a.big_size, a.big_runs)
        bench_small(inst, a.small_count, a.small_size)
        if a.scan_count:
            bench_scan(inst, a.scan_count, a.scan_size)
        print('bench_pop3: load average after: %s' % ' '.join('%.2f' % x for x in os.getloadavg()))
    finally:
        inst.stop()


if __name__ == '__main__':
    main()
