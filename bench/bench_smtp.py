#!/usr/bin/env python3
"""bench_smtp.py - end-to-end SMTP reception and local delivery.

Brings up a real instance (tests/integration/harness.py: postern-setup, s6,
every daemon, real privilege separation) and drives port 25 with N concurrent
clients (separate processes), each sending M messages over persistent
connections (--per-conn messages per connection: MAIL, RCPT, DATA, then the
next MAIL on the same connection) to one local user. Reports, per workload:

  accepted    messages/s that got "250" after the end of data (the commit:
              queue-inject has fsynced the message and its envelope)
  latency     p50/p99 of DATA-to-250 (the DATA command sent -> the final
              250 read, body transfer included) and of end-of-data-to-250
              (the "." line sent -> 250: the commit alone)
  delivered   messages/s into the user's Maildir: from the first connection
              to the moment the last message is in new/
  cpu         CPU seconds used by each program during the workload, read
              from /proc/PID/stat (utime+stime, plus the reaped children's
              cutime+cstime, so per-connection monitors, sessions and
              queue-inject count under smtp-listener, per-delivery children
              under local-deliverer)
  rss         per SMTP session: the sum over the session's two processes
              (monitor + chrooted session) of VmRSS, and of Pss (proportional:
              shared pages divided among the sharers), with --rss-sessions
              connections open and idle after EHLO

No pass/fail thresholds: it prints the workload and the figures.

    python3 bench/bench_smtp.py --bin bin-bench [--clients 1,4,16] [--messages 50]
        [--per-conn 10] [--big-messages 5]

Needs root (the instance drops privileges to the postern-* users).
"""

import argparse
import multiprocessing
import os
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'integration'))

USER = 'bench'
TICK = os.sysconf('SC_CLK_TCK')


def make_body(size):
    """A message of exactly size bytes once stored with LF line ends,
    as CRLF text for the wire (no line starts with a dot)."""
    head = ('From: sender@example.test\nTo: %s@example.test\nSubject: bench %d\n\n'
            % (USER, size))
    line = 'The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmn\n'
    n = size - len(head)
    body = (line * (n // len(line) + 1))[:n - 1] + '\n'
    text = head + body
    assert len(text) == size
    return text.replace('\n', '\r\n').encode()


class Client:
    def __init__(self, port):
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b''

    def reply(self):
        """One whole SMTP reply; returns its code (string)."""
        while True:
            while b'\n' not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError('connection closed')
                self.buf += chunk
            line, self.buf = self.buf.split(b'\n', 1)
            if len(line) < 4 or line[3:4] != b'-':
                return line[:3].decode()

    def cmd(self, text, expect):
        self.sock.sendall(text.encode() + b'\r\n')
        code = self.reply()
        if code != expect:
            raise RuntimeError('%s: got %s, wanted %s' % (text, code, expect))

    def close(self):
        try:
            self.sock.sendall(b'QUIT\r\n')
            self.reply()
        except (OSError, EOFError):
            pass
        self.sock.close()


def client_proc(port, count, per_conn, body, start, out):
    """One client: count messages, per_conn per connection. Puts
    (accepted, failed, [data->250 s], [eod->250 s]) on out."""
    ok = bad = 0
    lat_data, lat_eod = [], []
    start.wait()
    c = None
    try:
        for i in range(count):
            if c is None:
                c = Client(port)
                if c.reply() != '220':
                    raise RuntimeError('no greeting')
                c.cmd('EHLO bench.test', '250')
            c.cmd('MAIL FROM:<sender@example.test>', '250')
            c.cmd('RCPT TO:<%s@example.test>' % USER, '250')
            t0 = time.monotonic()
            c.cmd('DATA', '354')
            c.sock.sendall(body)
            t1 = time.monotonic()
            c.sock.sendall(b'.\r\n')
            code = c.reply()
            t2 = time.monotonic()
            if code == '250':
                ok += 1
                lat_data.append(t2 - t0)
                lat_eod.append(t2 - t1)
            else:
                bad += 1
            if (i + 1) % per_conn == 0:
                c.close()
                c = None
    except Exception as e:  # report, do not hang the parent
        print('bench_smtp: client error: %s' % e, file=sys.stderr)
        bad += count - ok - bad
    finally:
        if c is not None:
            c.close()
    out.put((ok, bad, lat_data, lat_eod))


def pct(values, p):
    if not values:
        return 0.0
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p))]


def proc_times(inst):
    """{pid: (program, self ticks, reaped-children ticks)} for ROOT's processes."""
    out = {}
    for pid in inst.processes():
        try:
            exe = os.path.basename(os.readlink('/proc/%d/exe' % pid))
            with open('/proc/%d/stat' % pid) as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(')') + 2:].split()
        # fields[0] is state (field 3): utime=14 stime=15 cutime=16 cstime=17
        ut, stt, cut, cst = (int(fields[i]) for i in (11, 12, 13, 14))
        out[pid] = (exe, ut + stt, cut + cst)
    return out


def cpu_diff(before, after):
    """CPU seconds per program between two proc_times snapshots."""
    per = {}
    for pid, (exe, own, kids) in after.items():
        b = before.get(pid)
        if b is not None and b[0] == exe:
            own -= b[1]
            kids -= b[2]
        o, k = per.get(exe, (0, 0))
        per[exe] = (o + own, k + kids)
    # a process that was alive before and has exited since (local-deliverer's
    # idle mailbox workers, say) now has all its CPU in its parent's reaped
    # children time: take away the part it had used before, which belongs to
    # earlier runs
    for pid, (exe, own, kids) in before.items():
        if pid not in after:
            o, k = per.get(exe, (0, 0))
            per[exe] = (o, k - own - kids)
    return {exe: (o / TICK, k / TICK) for exe, (o, k) in per.items()}


def maildir_count(inst):
    try:
        return len(os.listdir(os.path.join(inst.maildir(USER), 'new')))
    except OSError:
        return 0


def run_workload(inst, clients, per_client, per_conn, size):
    body = make_body(size)
    total = clients * per_client
    base = maildir_count(inst)
    q = multiprocessing.Queue()
    start = multiprocessing.Event()
    procs = [multiprocessing.Process(target=client_proc,
                                     args=(inst.port('smtp'), per_client, per_conn, body, start, q))
             for _ in range(clients)]
    for p in procs:
        p.start()
    time.sleep(0.2)
    t_cpu0 = proc_times(inst)
    t0 = time.monotonic()
    start.set()
    results = [q.get() for _ in procs]
    t_acc = time.monotonic() - t0
    for p in procs:
        p.join()
    ok = sum(r[0] for r in results)
    deadline = time.monotonic() + 120 + total * 0.05
    while maildir_count(inst) < base + ok and time.monotonic() < deadline:
        time.sleep(0.005)
    t_del = time.monotonic() - t0
    delivered = maildir_count(inst) - base
    time.sleep(0.3)  # let the last deliverer children be reaped
    cpu = cpu_diff(t_cpu0, proc_times(inst))
    return {
        'clients': clients, 'per_client': per_client, 'per_conn': per_conn, 'size': size,
        'accepted': ok, 'failed': sum(r[1] for r in results), 'delivered': delivered,
        't_acc': t_acc, 't_del': t_del,
        'lat_data': [x for r in results for x in r[2]],
        'lat_eod': [x for r in results for x in r[3]],
        'cpu': cpu,
    }


def report(r):
    print('bench_smtp: clients=%d x %d msgs of %d B (%d per connection): '
          'accepted %d failed %d in %.2f s = %.1f msg/s; delivered %d in %.2f s = %.1f msg/s'
          % (r['clients'], r['per_client'], r['size'], r['per_conn'], r['accepted'], r['failed'],
             r['t_acc'], r['accepted'] / r['t_acc'], r['delivered'], r['t_del'],
             r['delivered'] / r['t_del']))
    print('bench_smtp:   DATA->250 p50 %.2f ms p99 %.2f ms;  end-of-data->250 p50 %.2f ms p99 %.2f ms'
          % (pct(r['lat_data'], .5) * 1e3, pct(r['lat_data'], .99) * 1e3,
             pct(r['lat_eod'], .5) * 1e3, pct(r['lat_eod'], .99) * 1e3))
    n = max(1, r['accepted'])
    parts = []
    for exe, (own, kids) in sorted(r['cpu'].items(), key=lambda kv: -sum(kv[1])):
        if own + kids < 0.005:
            continue
        parts.append('%s %.2f+%.2f' % (exe, own, kids))
    tot = sum(o + k for o, k in r['cpu'].values())
    print('bench_smtp:   cpu s (own+reaped children): %s; total %.2f s = %.2f ms/msg'
          % (', '.join(parts), tot, tot / n * 1e3))


def read_mem(pid):
    rss = pss = 0
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    rss = int(line.split()[1])
        with open('/proc/%d/smaps_rollup' % pid) as f:
            for line in f:
                if line.startswith('Pss:'):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def session_memory(inst, n):
    """Open n idle sessions (after EHLO); kB per session (RSS, PSS) of
    smtp-listener processes other than the listener itself."""
    listener = inst.service_pid('smtp-listener')
    conns = []
    try:
        for _ in range(n):
            c = Client(inst.port('smtp'))
            c.reply()
            c.cmd('EHLO bench.test', '250')
            conns.append(c)
        time.sleep(0.3)
        rss = pss = procs = 0
        lr, lp = read_mem(listener)
        for pid in inst.processes():
            try:
                exe = os.path.basename(os.readlink('/proc/%d/exe' % pid))
            except OSError:
                continue
            if exe == 'smtp-listener' and pid != listener:
                r, p = read_mem(pid)
                rss += r
                pss += p
                procs += 1
        return procs, rss / n, pss / n, lr, lp
    finally:
        for c in conns:
            c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--bin', default=os.path.join(HERE, '..', 'bin'))
    ap.add_argument('--clients', default='1,4,16')
    ap.add_argument('--messages', type=int, default=0,
                    help="messages per client (default: 400 / clients, at least 20)")
    ap.add_argument('--per-conn', type=int, default=10)
    ap.add_argument('--size', type=int, default=4096)
    ap.add_argument('--big-size', type=int, default=1 << 20)
    ap.add_argument('--big-messages', type=int, default=5, help='per client, 1 and 4 clients')
    ap.add_argument('--rss-sessions', type=int, default=16)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit('bench_smtp: needs root (the instance drops to the postern-* users)')
    os.environ['POSTERN_BIN'] = os.path.abspath(a.bin)
    import harness  # after POSTERN_BIN is set
    inst = harness.Instance(users={USER: 'bench-password'},
                            conf_extra={'max_sessions': '200', 'max_sessions_per_client': '200'},
                            bin=os.path.abspath(a.bin))
    inst.start()
    try:
        print('bench_smtp: instance %s, %d CPUs, load average %s'
              % (inst.root, os.cpu_count(), ' '.join('%.2f' % x for x in os.getloadavg())))
        print('bench_smtp: workload: each client a separate process on loopback, one recipient '
              '(local user) per message, MAIL/RCPT/DATA without pipelining')
        # warm-up: page cache, first fork of each daemon
        run_workload(inst, 1, 5, 5, a.size)
        for n in [int(x) for x in a.clients.split(',')]:
            m = a.messages or max(20, 400 // n)
            report(run_workload(inst, n, m, min(a.per_conn, m), a.size))
        for n in (1, 4):
            if a.big_messages > 0:
                report(run_workload(inst, n, a.big_messages, a.big_messages, a.big_size))
        procs, rss, pss, lr, lp = session_memory(inst, a.rss_sessions)
        print('bench_smtp: memory: %d idle sessions -> %d processes besides the listener; '
              'per session (monitor+session) RSS %.0f kB, PSS %.0f kB; listener RSS %d kB PSS %d kB'
              % (a.rss_sessions, procs, rss, pss, lr, lp))
        print('bench_smtp: load average after: %s'
              % ' '.join('%.2f' % x for x in os.getloadavg()))
    finally:
        inst.stop()


if __name__ == '__main__':
    main()
