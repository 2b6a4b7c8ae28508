#!/usr/bin/env python3
"""bench_e2e.py - end to end: SMTP in, Maildir out (`make bench-e2e`).

Brings up a real instance (tests/integration/harness.py: postern-setup, s6,
every daemon, real privilege separation) and measures the time from the
first SMTP connection until all N accepted messages are in the recipients'
Maildir/new (several local users, so several uids). N messages of --size
bytes, one recipient per message (round robin over the users), over C
concurrent loopback connections, in two modes:

  reuse       --per-conn messages on each connection (MAIL after MAIL)
  no reuse    one connection per message (connect, EHLO, ..., QUIT)

The client (default --client c) is bench/smtp_blast, a C load generator
like Postfix's smtp-source (`make bench-e2e` builds it; --blast PATH): one
process, non-blocking sockets in one poll loop, PIPELINING (MAIL+RCPT+DATA
in one write, then the body, the dot and the next MAIL+RCPT+DATA in one
write); its CPU is small, so the host under test has the 2 cores.
--client pipelined is the same client in Python (bench_reception.py's; it
costs ~0.25 ms of CPU per message at one message per connection, which the
host then lacks), --client lockstep C Python processes that wait for each
reply (5 round trips a message; their CPU competes with the host's). The
client's own CPU is printed with the figures.

"all in new/" is the change time (ctime) of the newest file in the users'
Maildir/new, read once all N are there (counted every 20 ms, so the
counting costs the host little and adds no error to the time).

For each workload it prints:
  msg/s       N / (last file in new/ - first connect)
  accepted    when the last "250" after the data came back (SMTP side done)
  stages      from the daemons' logs (s6-log ISO timestamps): per message,
              smtp-listener "event=queued" -> queue-manager "result=delivered"
              -> "removed=finished"; p50/p99 and the tail after the last 250
  cpu         CPU seconds per program during the run from /proc/PID/stat
              (utime+stime plus reaped children: queue-inject under
              smtp-listener, per-delivery children under local-deliverer)
with --counts, one more run of each mode under `perf stat -a` (context
switches, page faults, system calls, forks, execs, block requests and
interrupts per message, whole machine), and then one extra run under
`strace -c -f` attached to smtp-listener,
queue-manager and local-deliverer: fsync/fdatasync/rename/fork... counts per
message (strace slows the run; its time is not a figure).

Reference (Postfix 3.7, same machine class): about 570 msg/s end to end,
715 with connection reuse; target >= 1,150. No pass/fail: it prints.

    python3 bench/bench_e2e.py --bin bin-e2e [--messages 2000] [--clients 10]
        [--size 2048] [--per-conn 100] [--users 4] [--no-strace] [--counts]
        [--table-users N]   (N synthetic entries ahead of the real users in
                             conf/mailboxes and conf/recipients)

Needs root.
"""

import argparse
import datetime
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'integration'))

import bench_reception  # noqa: E402  (its pipelining client)
from bench_smtp import Client, cpu_diff, proc_times  # noqa: E402  (the lock-step client; CPU accounting)

BLAST = [None]   # --blast


def make_body(size, tag):
    """size bytes once stored with LF line ends, CRLF on the wire."""
    head = 'From: sender@example.test\nSubject: e2e %s\n\n' % tag
    line = 'The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmn\n'
    n = size - len(head)
    body = (line * (n // len(line) + 1))[:n - 1] + '\n'
    return (head + body).replace('\n', '\r\n').encode()


def client_proc(port, idx, count, per_conn, users, size, start, out):
    ok = bad = 0
    body = make_body(size, 'c%d' % idx)
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
            c.cmd('RCPT TO:<%s@example.test>' % users[(idx + i) % len(users)], '250')
            c.cmd('DATA', '354')
            c.sock.sendall(body + b'.\r\n')
            if c.reply() == '250':
                ok += 1
            else:
                bad += 1
            if (i + 1) % per_conn == 0:
                c.close()
                c = None
    except Exception as e:
        print('bench_e2e: client error: %s' % e, file=sys.stderr)
        bad += count - ok - bad
    finally:
        if c is not None:
            c.close()
    out.put((ok, bad, time.monotonic()))


def new_count(inst, users):
    n = 0
    for u in users:
        try:
            n += len(os.listdir(os.path.join(inst.maildir(u), 'new')))
        except OSError:
            pass
    return n


STAMP = re.compile(r'^(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d\.\d+)\s+(.*)$')


def stamp(s):
    # s6-log T: ISO 8601 with nanoseconds; keep microseconds
    s = s.replace(' ', 'T')
    head, frac = s.split('.')
    return datetime.datetime.strptime(head, '%Y-%m-%dT%H:%M:%S').replace(
        tzinfo=datetime.timezone.utc).timestamp() + float('0.' + frac)


def log_events(inst, service, pattern):
    """{queue id: timestamp} of log lines matching pattern (group 1: the id)."""
    rx = re.compile(pattern)
    out = {}
    d = inst.path('log', service)
    text = ''
    try:     # s6-log rotates at 1 MB: the archived @*.s files, then current
        for f in sorted(n for n in os.listdir(d) if n.startswith('@')) + ['current']:
            with open(os.path.join(d, f), 'rb') as fh:
                text += fh.read().decode(errors='replace')
    except OSError:
        text = inst.log(service)
    for line in text.splitlines():
        m = STAMP.match(line)
        if not m:
            continue
        k = rx.search(m.group(2))
        if k and k.group(1) not in out:
            out[k.group(1)] = stamp(m.group(1))
    return out


def pct(values, p):
    if not values:
        return 0.0
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p))]


def last_new_time(inst, users):
    """wall-clock time of the newest change in the users' Maildir/new"""
    last = 0.0
    for u in users:
        d = os.path.join(inst.maildir(u), 'new')
        try:
            with os.scandir(d) as it:
                for e in it:
                    last = max(last, e.stat(follow_symlinks=False).st_ctime)
        except OSError:
            pass
    return last


def wait_delivered(inst, users, want, deadline):
    while new_count(inst, users) < want and time.monotonic() < deadline:
        time.sleep(0.02)


def send(inst, users, n, clients, per_conn, size, client, started):
    """Send n messages with the chosen client; started() runs just before
    the first connection (the "before" samples). Returns (accepted,
    refused, seconds until the last 250)."""
    if client == 'c':
        started()
        results, t_acc, _, _, cli = bench_reception.blast_clients(BLAST[0], inst.port('smtp'), clients,
                                                                  n, per_conn, size, users)
        ok = sum(1 for r in results if r[2] == '250')
        return ok, n - ok, t_acc, cli
    if client == 'pipelined':
        started()
        u0 = time.thread_time()
        results, t_acc, _, _ = bench_reception.run_clients(inst.port('smtp'), clients, n,
                                                           per_conn, size, users)
        ok = sum(1 for r in results if r[2] == '250')
        return ok, n - ok, t_acc, time.thread_time() - u0
    per = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]
    q = multiprocessing.Queue()
    start = multiprocessing.Event()
    procs = [multiprocessing.Process(target=client_proc,
                                     args=(inst.port('smtp'), i, per[i], per_conn, users, size, start, q))
             for i in range(clients)]
    for p in procs:
        p.start()
    time.sleep(0.3)
    started()
    t0 = time.monotonic()
    start.set()
    res = [q.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(r[0] for r in res), sum(r[1] for r in res), max(r[2] for r in res) - t0, None


def disk_sample(path):
    """(disk counters of the block device holding path, /proc/stat CPU
    counters). Disk: writes completed, flushes completed, ms the device
    was busy (io_ticks); from /proc/diskstats (Documentation/admin-guide/
    iostats.rst). CPU: idle and iowait ticks summed over all CPUs."""
    dev = os.stat(path).st_dev
    maj, mnr = os.major(dev), os.minor(dev)
    disk = None
    with open('/proc/diskstats') as f:
        for line in f:
            v = line.split()
            if int(v[0]) == maj and int(v[1]) == mnr:
                n = [int(x) for x in v[3:]]
                disk = (n[4], n[15] if len(n) > 15 else 0, n[9])
    with open('/proc/stat') as f:
        c = [int(x) for x in f.readline().split()[1:]]
    return disk, (c[3], c[4])


def disk_diff(a, b, seconds, msgs):
    """the text for report(): device writes and flushes per message, how
    busy the device was, and how much of the 2 cores sat idle or waited on
    I/O over the run"""
    tick = os.sysconf('SC_CLK_TCK')
    cpus = os.cpu_count() or 1
    idle = (b[1][0] - a[1][0]) / tick / (cpus * seconds) * 100
    iow = (b[1][1] - a[1][1]) / tick / (cpus * seconds) * 100
    text = 'cpu idle %.0f%% + iowait %.0f%%' % (idle, iow)
    if a[0] and b[0]:
        m = max(1, msgs)
        text = ('disk: %.1f writes and %.1f flushes per message, device busy %.0f%% of the run; %s'
                % ((b[0][0] - a[0][0]) / m, (b[0][1] - a[0][1]) / m,
                   (b[0][2] - a[0][2]) / 10 / seconds, text))
    return text


def run(inst, users, n, clients, per_conn, size, client='pipelined'):
    base = new_count(inst, users)
    before = {}

    def started():
        before['cpu'] = proc_times(inst)
        before['disk'] = disk_sample(inst.root)
        before['wall'] = time.time()

    ok, bad, t_acc, cli = send(inst, users, n, clients, per_conn, size, client, started)
    wait_delivered(inst, users, base + ok, time.monotonic() + 60 + n * 0.05)
    disk = disk_sample(inst.root)
    t_del = last_new_time(inst, users) - before['wall']
    wall = time.time() - before['wall']
    delivered = new_count(inst, users) - base
    time.sleep(0.3)
    cpu = cpu_diff(before['cpu'], proc_times(inst))
    return {'n': n, 'clients': clients, 'per_conn': per_conn, 'size': size,
            'ok': ok, 'bad': bad, 'delivered': delivered,
            't_acc': t_acc, 't_del': t_del, 'cpu': cpu, 'wall0': before['wall'], 'client_cpu': cli,
            'disk': disk_diff(before['disk'], disk, wall, ok)}


def stages(inst, r):
    queued = log_events(inst, 'smtp-listener', r'event=queued id=(\S+)')
    deliv = log_events(inst, 'queue-manager', r'^(?:info: )?(\S+) rcpt=\S+ result=delivered')
    if not deliv:
        deliv = log_events(inst, 'queue-manager', r'(\S+) rcpt=\S+ result=delivered')
    removed = log_events(inst, 'queue-manager', r'(\S+) removed=finished')
    ids = [i for i, t in queued.items() if t >= r['wall0'] - 1 and i in deliv]
    qd = [deliv[i] - queued[i] for i in ids]
    dr = [removed[i] - deliv[i] for i in ids if i in removed]
    last_q = max((queued[i] for i in ids), default=0)
    last_d = max((deliv[i] for i in ids), default=0)
    return ids, qd, dr, last_d - last_q


def report(inst, users, r, label):
    print('bench_e2e: %s: %d x %d B, C=%d, %d msg/connection: accepted %d failed %d, '
          'delivered %d; all 250s at %.2f s (%.0f msg/s), all in new/ at %.2f s '
          '=> %.0f msg/s end to end'
          % (label, r['n'], r['size'], r['clients'], r['per_conn'], r['ok'], r['bad'],
             r['delivered'], r['t_acc'], r['ok'] / r['t_acc'], r['t_del'],
             r['delivered'] / r['t_del']))
    ids, qd, dr, tail = stages(inst, r)
    if ids:
        print('bench_e2e:   stages (%d ids from the logs): queued->delivered p50 %.1f ms '
              'p99 %.1f ms max %.1f ms; delivered->removed p50 %.1f ms p99 %.1f ms; '
              'last delivery %.1f ms after last queued'
              % (len(ids), pct(qd, .5) * 1e3, pct(qd, .99) * 1e3, max(qd) * 1e3,
                 pct(dr, .5) * 1e3, pct(dr, .99) * 1e3, tail * 1e3))
    parts = []
    for exe, (own, kids) in sorted(r['cpu'].items(), key=lambda kv: -sum(kv[1])):
        if own + kids >= 0.005:
            parts.append('%s %.2f+%.2f' % (exe, own, kids))
    tot = sum(o + k for o, k in r['cpu'].values())
    print('bench_e2e:   cpu s (own+reaped children): %s; total %.2f s = %.3f ms/msg '
          '(%.0f%% of 2 cores over the run)'
          % (', '.join(parts), tot, tot / max(1, r['ok']) * 1e3,
             100 * tot / (2 * r['t_del'])))
    if r.get('client_cpu') is not None:
        print('bench_e2e:   client cpu %.2f s = %.3f ms/msg' % (r['client_cpu'], r['client_cpu'] / max(1, r['n']) * 1e3))
    print('bench_e2e:   %s' % r['disk'])


def drain_run(inst, users, n, clients, per_conn, size, client):
    """The two halves apart: queue-manager down while the SMTP side fills
    the queue (accept rate alone), then up: time until all are in new/
    (queue-manager + local-deliverer alone, start-up scan included)."""
    inst.svc('queue-manager', '-d')
    inst.wait_for(lambda: inst.service_pid('queue-manager') is None, 30)
    base = new_count(inst, users)
    r = run_smtp_only(inst, users, n, clients, per_conn, size, client)
    cpu0 = proc_times(inst)
    wall0 = time.time()
    inst.svc('queue-manager', '-u')
    wait_delivered(inst, users, base + r['ok'], time.monotonic() + 60 + n * 0.05)
    t = last_new_time(inst, users) - wall0
    got = new_count(inst, users) - base
    time.sleep(0.3)
    cpu = cpu_diff(cpu0, proc_times(inst))
    print('bench_e2e: halves apart (%d msg/connection): SMTP accept only %d in %.2f s = %.0f msg/s; '
          'then delivery only (queue-manager up -> all in new/) %d in %.2f s = %.0f msg/s'
          % (per_conn, r['ok'], r['t_acc'], r['ok'] / r['t_acc'], got, t, got / t))
    parts = ['%s %.2f+%.2f' % (exe, o, k) for exe, (o, k) in sorted(cpu.items(), key=lambda kv: -sum(kv[1]))
             if o + k >= 0.005]
    tot = sum(o + k for o, k in cpu.values())
    print('bench_e2e:   delivery cpu s: %s; total %.2f s = %.3f ms/msg'
          % (', '.join(parts), tot, tot / max(1, got) * 1e3))


def run_smtp_only(inst, users, n, clients, per_conn, size, client):
    ok, _, t_acc, _ = send(inst, users, n, clients, per_conn, size, client, lambda: None)
    return {'ok': ok, 't_acc': t_acc}


def parse_strace(path):
    calls = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[-1].isidentifier() and parts[3].isdigit():
                calls[parts[-1]] = int(parts[3])
            elif len(parts) >= 4 and parts[-1].isidentifier() and parts[2].isdigit():
                calls[parts[-1]] = int(parts[2])
    return calls


def strace_run(inst, users, n, clients, per_conn, size, client):
    """One strace -c -f per daemon (children included: queue-inject under
    smtp-listener, delivery children under local-deliverer)."""
    targets = [('smtp-listener', [inst.service_pid('smtp-listener')]),
               ('queue-manager', [inst.service_pid('queue-manager')])]
    # local-deliverer is queue-manager's child; its mailbox workers, forked
    # before the run, do the deliveries, and strace -f follows only children
    # forked after it attached: so one strace for the spawner and every
    # worker alive now, summed into one table
    ld = []
    for pid in inst.processes():
        try:
            if os.path.basename(os.readlink('/proc/%d/exe' % pid)) == 'local-deliverer':
                ld.append(pid)
        except OSError:
            pass
    targets.append(('local-deliverer', ld))
    st = []
    for name, pids in targets:
        pids = [p for p in pids if p]
        if not pids:
            continue
        out = os.path.join(inst.root, 'strace.%s' % name)
        cmd = ['strace', '-c', '-f', '-o', out]
        for p in pids:
            cmd += ['-p', str(p)]
        st.append((name, out, subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL)))
    time.sleep(1.0)
    r = run(inst, users, n, clients, per_conn, size, client)
    time.sleep(0.5)
    for _, _, p in st:
        p.send_signal(signal.SIGINT)
    for _, _, p in st:
        p.wait(timeout=30)
    ok = max(1, r['ok'])
    want = ('fsync', 'fdatasync', 'renameat2', 'rename', 'linkat', 'link', 'unlink', 'unlinkat',
            'clone', 'clone3', 'fork', 'execve', 'openat', 'getdents64', 'sendmsg', 'recvmsg',
            'poll', 'ppoll', 'nanosleep', 'clock_nanosleep')
    print('bench_e2e: strace -c -f per daemon, %d msgs C=%d %d/conn, calls per message:'
          % (r['ok'], clients, per_conn))
    for name, out, _ in st:
        calls = parse_strace(out)
        shown = ['%s %.2f' % (k, calls[k] / ok) for k in want if k in calls]
        print('bench_e2e:   %-16s %s' % (name, ', '.join(shown)))


COUNT_EVENTS = ('context-switches', 'page-faults', 'raw_syscalls:sys_enter', 'sched:sched_process_fork',
                'sched:sched_process_exec', 'block:block_rq_issue', 'irq:irq_handler_entry',
                'irq_vectors:reschedule_entry')


def counts_run(inst, users, n, clients, per_conn, size, client):
    """The run under `perf stat -a`: system-wide event counts per message
    (context switches, page faults, system calls, forks, execs, block
    requests, interrupts). Counts, unlike rates, barely move with the
    machine's load; the tracepoints slow every system call, so this run's
    own rate is not a figure. Skipped without perf or its tracepoints."""
    if not shutil.which('perf'):
        print('bench_e2e: counts: no perf, skipped')
        return
    out = os.path.join(inst.root, 'perf.counts')
    p = subprocess.Popen(['perf', 'stat', '-a', '-x,', '-o', out, '-e', ','.join(COUNT_EVENTS)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    if p.poll() is not None:
        print('bench_e2e: counts: perf stat failed: %s' % p.stderr.read().decode(errors='replace').strip())
        return
    r = run(inst, users, n, clients, per_conn, size, client)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=30)
    got = {}
    with open(out) as f:
        for line in f:
            v = line.strip().split(',')
            if len(v) > 2 and v[0].replace('.', '', 1).isdigit():
                got[v[2]] = float(v[0])
    ok = max(1, r['ok'])
    print('bench_e2e: counts per message (perf stat -a, whole machine, %d msgs C=%d %d/conn): %s'
          % (r['ok'], clients, per_conn,
             ', '.join('%s %.1f' % (k.split(':')[-1], got[k] / ok) for k in COUNT_EVENTS if k in got)))


def grow_tables(inst, n):
    """n synthetic users (no Unix accounts, never sent to) ahead of the real
    ones in conf/mailboxes and conf/recipients, each file replaced by rename
    as postern-user does"""
    for name, line in (('mailboxes', 'zz%06d:%d:%d:/nonexistent/zz%06d/Maildir\n'),
                       ('recipients', 'zz%06d\n')):
        path = inst.path('conf', name)
        with open(path) as f:
            old = f.read()
        st = os.stat(path)
        if name == 'mailboxes':
            extra = ''.join(line % (i, 40000 + i, 40000 + i, i) for i in range(n))
        else:
            extra = ''.join(line % i for i in range(n))
        with open(path + '.grow', 'w') as f:
            f.write(extra + old)
        os.chown(path + '.grow', st.st_uid, st.st_gid)
        os.chmod(path + '.grow', st.st_mode & 0o7777)
        os.rename(path + '.grow', path)
    time.sleep(FILESIG_SETTLE)
    print('bench_e2e: %d more entries in conf/mailboxes and conf/recipients (%d bytes)'
          % (n, os.path.getsize(inst.path('conf', 'mailboxes'))))


FILESIG_SETTLE = 2.1   # lib/filesig.h: a file changed just before it was read is read again until then


def workload_args(ap):
    """the workload's options, shared with bench_postfix.py"""
    ap.add_argument('--messages', type=int, default=2000)
    ap.add_argument('--clients', type=int, default=10)
    ap.add_argument('--size', type=int, default=2048)
    ap.add_argument('--per-conn', type=int, default=100)
    ap.add_argument('--users', type=int, default=4)
    ap.add_argument('--repeat', type=int, default=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--bin', default=os.path.join(HERE, '..', 'bin'))
    workload_args(ap)
    ap.add_argument('--table-users', type=int, default=0,
                    help='add this many more (synthetic) entries before the real ones in '
                         'conf/mailboxes and conf/recipients: lookups in a large user table')
    ap.add_argument('--no-strace', action='store_true')
    ap.add_argument('--note', default='', help='printed first: what is special about --bin\'s build')
    ap.add_argument('--counts', action='store_true',
                    help='one more run of each mode under perf stat -a: context switches, page faults, '
                         'system calls, forks, execs, block requests, interrupts per message')
    ap.add_argument('--blast', default=bench_reception.default_blast(),
                    help='bench/smtp_blast, the C client (make builds build/bench/smtp_blast)')
    ap.add_argument('--client', choices=('c', 'pipelined', 'lockstep'), default=None,
                    help='c (the default when --blast exists), pipelined, lockstep')
    a = ap.parse_args()
    if a.client is None:
        a.client = 'c' if a.blast else 'pipelined'
    if a.client == 'c' and not a.blast:
        sys.exit('bench_e2e: --client c needs bench/smtp_blast: make build/bench/smtp_blast, or --blast PATH')
    BLAST[0] = a.blast
    if os.geteuid() != 0:
        sys.exit('bench_e2e: needs root')
    os.environ['POSTERN_BIN'] = os.path.abspath(a.bin)
    import harness
    users = ['e2e%d' % i for i in range(a.users)]
    bench_reception.settle()
    inst = harness.Instance(users={u: 'pw-' + u for u in users},
                            conf_extra={'max_sessions': '200', 'max_sessions_per_client': '200'},
                            bin=os.path.abspath(a.bin))
    inst.start()
    if a.table_users:
        grow_tables(inst, a.table_users)
    try:
        print('bench_e2e: instance %s, %d CPUs, load average %s'
              % (inst.root, os.cpu_count(), ' '.join('%.2f' % x for x in os.getloadavg())))
        print('bench_e2e: client: %s' % a.client)
        if a.note:
            print('bench_e2e: build: %s' % a.note)
        run(inst, users, 20, 2, 10, a.size, a.client)       # warm-up
        for _ in range(a.repeat):
            report(inst, users, run(inst, users, a.messages, a.clients, 1, a.size, a.client),
                   'no reuse')
            report(inst, users, run(inst, users, a.messages, a.clients, a.per_conn, a.size, a.client),
                   'reuse')
        if a.counts:
            counts_run(inst, users, a.messages, a.clients, 1, a.size, a.client)
            counts_run(inst, users, a.messages, a.clients, a.per_conn, a.size, a.client)
        drain_run(inst, users, a.messages, a.clients, a.per_conn, a.size, a.client)
        if not a.no_strace:
            strace_run(inst, users, min(500, a.messages), a.clients, a.per_conn, a.size, a.client)
        print('bench_e2e: load average after: %s' % ' '.join('%.2f' % x for x in os.getloadavg()))
    finally:
        inst.stop()


if __name__ == '__main__':
    main()
