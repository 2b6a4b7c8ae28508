#!/usr/bin/env python3
"""bench_reception.py - SMTP reception rate against the disk's commit limit
(issue 2, item 6).

Workloads (the issue's): N messages of S bytes over C concurrent connections,
  2 KiB at C=1, C=10, C=50 and 100 KiB at C=10,
each message with one local recipient, several messages per connection
(--per-conn). The client is bench/smtp_blast (C, built by `make
bench-reception`; --blast "" uses the same client written in Python, which
costs the 2-core machine ~0.25 ms of CPU per message at one message per
connection): one process with non-blocking sockets and a poll loop, and it
pipelines: after EHLO it sends MAIL, RCPT and DATA in one write, and after
the 354 the body, the final dot and the next MAIL/RCPT/DATA in one write
(RFC 2920 allows the message content as the first command of a group), so
one message costs one round trip plus the server's commit.

The server is a real instance (tests/integration/harness.py: postern-setup,
s6, real privilege separation) running ONLY smtp-listener: no queue-manager,
no deliverer, so the figure is reception alone and messages stay in the
queue. Every "250 ... queued as ID" is then verified: queue/env/<h>/ID and
queue/mess/<h>/ID exist and the message file ends with exactly the bytes
sent (LF line ends, after the Received: line), each message carrying its own
sequence number. A 250 is only given after queue-inject's exit 0, which comes
after its fsyncs (DESIGN.md section 2), so each verified message is durable.

Memory: during each workload every --mem-interval seconds, the sum of VmRSS
and of Pss (smaps_rollup) over the listener and all its descendants
(monitors, sessions, queue-inject); the peak of each sum is reported.

Disk limit: a loop of "durable file commits" on the same filesystem as the
queue (the instance's ROOT), on 1 and 8 threads:
  fsync:  create a new file, write 2 KiB, fsync, close       (1 fsync)
  commit: the same, then rename it into a directory, fsync the directory
  inject: queue-inject's commit without its process: two such files,
          each renamed into its own directory and that fsynced (4 fsyncs)
The last, at 1 thread, bounds C=1; at 8 threads, concurrent reception.

    python3 bench/bench_reception.py --bin bin-x [--messages 1000] [--per-conn 50]
        [--workloads 2048:1,2048:10,2048:50,102400:10] [--disk-seconds 3]

Needs root (the instance drops privileges to the postern-* users).
"""

import argparse
import os
import re
import select
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'integration'))

USER = 'bench'
TICK = os.sysconf('SC_CLK_TCK')
QID = re.compile(rb'^250 2\.0\.0 .*queued as ([0-9A-F]{16})')


def make_body(size, seq, user=USER):
    """(wire bytes, stored bytes): a message of exactly size bytes as stored
    (LF line ends), the wire form with CRLF; no line starts with a dot."""
    head = ('From: sender@example.test\nTo: %s@example.test\nSubject: bench %010d\n\n'
            % (user, seq))
    line = 'The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmn\n'
    n = size - len(head)
    text = head + (line * (n // len(line) + 1))[:n - 1] + '\n'
    assert len(text) == size
    stored = text.encode()
    return stored.replace(b'\n', b'\r\n'), stored


def envelope(user):
    return ('MAIL FROM:<sender@example.test>\r\nRCPT TO:<%s@example.test>\r\nDATA\r\n'
            % user).encode()


class Conn:
    """One pipelining client connection as a small state machine."""

    def __init__(self, port, count, bodies):
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.left = count        # messages still to send on this connection
        self.bodies = bodies     # callable: next (seq, wire bytes, MAIL+RCPT+DATA bytes)
        self.inbuf = b''
        self.out = b''
        self.lines = []          # lines of the reply being read
        self.expect = [('greeting',)]   # replies awaited, in order
        self.body = None         # (seq, wire) of the message whose DATA is pending
        self.results = []        # (seq, qid or None, code)
        self.done = False

    def queue_out(self, data):
        self.out += data
        self.flush()

    def flush(self):
        while self.out:
            try:
                n = self.sock.send(self.out)
            except BlockingIOError:
                return
            self.out = self.out[n:]

    def next_envelope(self):
        if self.left == 0:
            self.expect.append(('quit',))
            return b'QUIT\r\n'
        self.left -= 1
        seq, wire, env = self.bodies()
        self.body = (seq, wire)
        self.expect += [('mail',), ('rcpt',), ('data',)]
        return env

    def on_reply(self, code, lines):
        what = self.expect.pop(0)
        kind = what[0]
        if kind == 'greeting':
            if code != '220':
                raise RuntimeError('greeting: %r' % lines[-1])
            self.expect.append(('ehlo',))
            self.queue_out(b'EHLO bench.test\r\n')
        elif kind == 'ehlo':
            if code != '250' or not any(l[4:].upper() == b'PIPELINING' for l in lines):
                raise RuntimeError('EHLO: no PIPELINING: %r' % lines)
            self.queue_out(self.next_envelope())
        elif kind == 'data':
            seq, wire = self.body
            if code != '354':    # MAIL or RCPT refused: count it, go on
                self.results.append((seq, None, code))
                self.queue_out(self.next_envelope())
                return
            self.expect.append(('queued', seq))
            self.queue_out(wire + b'.\r\n' + self.next_envelope())
        elif kind == 'queued':
            m = QID.match(lines[-1])
            self.results.append((what[1], m.group(1).decode() if m else None, code))
        elif kind == 'quit':
            self.done = True
        # mail, rcpt: a refusal shows up as DATA's 503/554

    def feed(self):
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        if not data:
            raise EOFError('connection closed')
        self.inbuf += data
        while True:
            i = self.inbuf.find(b'\n')
            if i < 0:
                return
            line, self.inbuf = self.inbuf[:i].rstrip(b'\r'), self.inbuf[i + 1:]
            self.lines.append(line)
            if len(line) >= 4 and line[3:4] == b'-':
                continue
            lines, self.lines = self.lines, []
            self.on_reply(line[:3].decode(errors='replace'), lines)


def run_clients(port, conns, total, per_conn, size, users=(USER,)):
    """Send total messages over conns concurrent connections, one recipient
    each (round robin over users); returns (results, seconds, stored bodies
    by seq, connection errors)."""
    stored_by_seq = {}
    seq = [0]
    envs = [envelope(u) for u in users]

    def bodies():
        seq[0] += 1
        s = seq[0]
        u = s % len(users)
        wire, stored = make_body(size, s, users[u])
        stored_by_seq[s] = stored
        return s, wire, envs[u]

    plan = []
    left = total
    while left > 0:
        k = min(per_conn, left)
        plan.append(k)
        left -= k
    active = {}
    results = []
    errors = 0
    t0 = time.monotonic()
    poller = select.poll()
    while plan or active:
        while plan and len(active) < conns:
            c = Conn(port, plan.pop(0), bodies)
            active[c.sock.fileno()] = c
            poller.register(c.sock.fileno(), select.POLLIN)
        for fd, c in active.items():
            poller.modify(fd, select.POLLIN | (select.POLLOUT if c.out else 0))
        for fd, ev in poller.poll(60000):
            c = active.get(fd)
            if c is None:
                continue
            try:
                if ev & select.POLLOUT:
                    c.flush()
                if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    c.feed()
            except (OSError, EOFError, RuntimeError) as e:
                print('bench_reception: connection error: %s' % e, file=sys.stderr)
                errors += 1
                c.done = True
            if c.done:
                results += c.results
                poller.unregister(fd)
                del active[fd]
                c.sock.close()
    return results, time.monotonic() - t0, stored_by_seq, errors


def blast_clients(blast, port, conns, total, per_conn, size, users=(USER,)):
    """run_clients() done by bench/smtp_blast (C; the same messages, the same
    pipelining): returns (results, seconds, stored bodies by seq, connection
    errors, client CPU seconds)."""
    import subprocess
    out = subprocess.run([blast, str(port), str(conns), str(total), str(per_conn), str(size)]
                         + list(users), stdout=subprocess.PIPE, check=True).stdout.decode()
    results, secs, cpu, errors = [], None, 0.0, 0
    for line in out.splitlines():
        f = line.split()
        if f[0] == '#':
            secs, cpu, errors = float(f[2]), float(f[4]), int(f[6])
            continue
        results.append((int(f[0]), None if f[2] == '-' else f[2], f[1]))
    if secs is None:
        raise RuntimeError('smtp_blast: no summary line')
    stored = {seq: make_body(size, seq, users[seq % len(users)])[1] for seq, _, _ in results}
    return results, secs, stored, errors, cpu


def default_blast():
    """bench/smtp_blast as `make` builds it, or None"""
    p = os.path.join(HERE, '..', 'build', 'bench', 'smtp_blast')
    return os.path.abspath(p) if os.access(p, os.X_OK) else None


# ---- the server's processes --------------------------------------------

def proc_tree(root_pid):
    """pids of root_pid and all its descendants, with their comm."""
    parent, comm = {}, {}
    for p in os.listdir('/proc'):
        if not p.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % p) as f:
                st = f.read()
        except OSError:
            continue
        r = st.rindex(')')
        comm[int(p)] = st[st.index('(') + 1:r]
        parent[int(p)] = int(st[r + 2:].split()[1])
    out, todo = [], [root_pid]
    kids = {}
    for p, pp in parent.items():
        kids.setdefault(pp, []).append(p)
    while todo:
        p = todo.pop()
        if p in comm:
            out.append((p, comm[p]))
        todo += kids.get(p, [])
    return out


def mem_of(pid):
    rss = pss = 0
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    rss = int(line.split()[1])
                    break
        with open('/proc/%d/smaps_rollup' % pid) as f:
            for line in f:
                if line.startswith('Pss:'):
                    pss = int(line.split()[1])
                    break
    except (OSError, ValueError, IndexError):
        pass
    return rss, pss


class MemSampler(threading.Thread):
    def __init__(self, pid, interval):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.stop_ev = threading.Event()
        self.peak_rss = self.peak_pss = self.peak_procs = self.samples = 0
        self.peak_inject = 0

    def run(self):
        while not self.stop_ev.is_set():
            rss = pss = inj = 0
            tree = proc_tree(self.pid)
            for pid, comm in tree:
                r, p = mem_of(pid)
                rss += r
                pss += p
                inj += comm == 'queue-inject'
            self.samples += 1
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_procs = max(self.peak_procs, len(tree))
            self.peak_inject = max(self.peak_inject, inj)
            self.stop_ev.wait(self.interval)


def settle(seconds=65):
    """Let the filesystem forget recent deletions before measuring: ext4
    without a journal (this VM's) skips, on every inode allocation, each
    inode of the group freed less than 60 s ago (360 s while its inode
    table block is dirty: `recently_deleted`), scanning from the start of
    the group, so a run started right after another run's `rm -rf` of its
    ROOT (tens of thousands of queue and Maildir files) pays for that
    cleanup on every file it creates. Measured here after 15,000 deletes in
    one directory and a sync: 250 us per create 1 s later, 361 us at 30 s,
    157 us at 65 s, 74-81 us from 95 s (25 us in a fresh group). sync
    writes the dirty blocks; then wait. BENCH_SETTLE=SECONDS overrides."""
    os.sync()
    time.sleep(float(os.environ.get('BENCH_SETTLE', seconds)))


def cpu_ticks(pid):
    """(own, reaped children) CPU ticks of pid and all its live descendants,
    summed: a live process's CPU is in its own times, a dead one's in its
    reaper's children times, so each tick counts once (the listener's
    monitors live across connections: the listener alone would miss them)."""
    own = kids = 0
    for p, _ in proc_tree(pid):
        try:
            with open('/proc/%d/stat' % p) as f:
                st = f.read()
        except OSError:
            continue
        fl = st[st.rindex(')') + 2:].split()
        own += int(fl[11]) + int(fl[12])
        kids += int(fl[13]) + int(fl[14])
    return own, kids


def verify(inst, results, stored_by_seq):
    """count of accepted messages found whole in the queue; problems."""
    q = inst.path('queue')
    where = {}
    for h in os.listdir(os.path.join(q, 'env')):
        try:
            for n in os.listdir(os.path.join(q, 'env', h)):
                where[n] = h
        except OSError:
            pass
    good, problems = 0, []
    for seq, qid, code in results:
        if code != '250':
            continue
        if qid is None or qid not in where:
            problems.append('seq %d: 250 but id %s not in env/' % (seq, qid))
            continue
        try:
            with open(os.path.join(q, 'mess', where[qid], qid), 'rb') as f:
                data = f.read()
        except OSError as e:
            problems.append('seq %d id %s: mess: %s' % (seq, qid, e))
            continue
        if not data.startswith(b'Received:') or not data.endswith(b'\n' + stored_by_seq[seq]):
            problems.append('seq %d id %s: content differs' % (seq, qid))
            continue
        good += 1
    return good, problems


def workload(inst, listener, size, conns, total, per_conn, mem_interval, blast=None):
    mem = MemSampler(listener, mem_interval)
    c0 = cpu_ticks(listener)
    u0 = time.thread_time()
    mem.start()
    if blast:
        results, secs, stored, errors, cli = blast_clients(blast, inst.port('smtp'), conns, total,
                                                           per_conn, size)
    else:
        results, secs, stored, errors = run_clients(inst.port('smtp'), conns, total, per_conn, size)
    mem.stop_ev.set()
    mem.join()
    u1 = time.thread_time()
    c1 = cpu_ticks(listener)
    time.sleep(0.2)
    c2 = cpu_ticks(listener)  # children reaped after the last QUIT
    accepted = sum(1 for r in results if r[2] == '250')
    good, problems = verify(inst, results, stored)
    srv = ((c2[0] - c0[0]) + (c2[1] - c0[1])) / TICK
    if not blast:
        cli = u1 - u0   # the client loop's thread alone, not the memory sampler
    print('bench_reception: %6d B x %5d msgs, C=%-3d (%d per connection): accepted %d, '
          'refused %d, errors %d in %.2f s = %.0f msg/s; verified in queue %d%s'
          % (size, total, conns, per_conn, accepted, len(results) - accepted, errors, secs,
             accepted / secs, good, '' if not problems else ' PROBLEMS: ' + '; '.join(problems[:5])))
    print('bench_reception:          server CPU %.2f s = %.2f ms/msg (listener + all children); '
          'client CPU %.2f s; peak memory (listener + descendants, %d samples): '
          'RSS %.1f MB, PSS %.1f MB, %d processes, %d queue-inject at once'
          % (srv, srv / max(1, accepted) * 1e3, cli, mem.samples, mem.peak_rss / 1024.,
             mem.peak_pss / 1024., mem.peak_procs, mem.peak_inject))
    return accepted / secs


# ---- the disk ----------------------------------------------------------

def disk_loop(d, size, seconds, threads, kind):
    """ops/s of one kind of durable commit, on threads threads:
    fsync   create a new file, write size bytes, fsync, close
    commit  fsync + rename into a directory + fsync that directory
    inject  queue-inject's commit (DESIGN.md section 2): two such files
            (message, envelope) written and fsynced, the message renamed
            into one directory and that fsynced, then the envelope into
            another and that fsynced: 4 fsyncs"""
    data = b'x' * size
    for sub in ('tmp', 'mess', 'env'):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def new_file(name):
        fd = os.open(os.path.join(d, 'tmp', name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)

    def worker(k):
        mfd = os.open(os.path.join(d, 'mess'), os.O_RDONLY | os.O_DIRECTORY)
        efd = os.open(os.path.join(d, 'env'), os.O_RDONLY | os.O_DIRECTORY)
        i = 0
        while time.monotonic() < stop:
            i += 1
            name = 't%d-%d' % (k, i)
            new_file(name + '.m')
            if kind == 'inject':
                new_file(name + '.e')
            if kind in ('commit', 'inject'):
                os.rename(os.path.join(d, 'tmp', name + '.m'), os.path.join(d, 'mess', name))
                os.fsync(mfd)
            if kind == 'inject':
                os.rename(os.path.join(d, 'tmp', name + '.e'), os.path.join(d, 'env', name))
                os.fsync(efd)
            counts[k] += 1
        os.close(mfd)
        os.close(efd)

    t0 = time.monotonic()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    el = time.monotonic() - t0
    for sub in ('tmp', 'mess', 'env'):
        for n in os.listdir(os.path.join(d, sub)):
            os.unlink(os.path.join(d, sub, n))
    return sum(counts) / el


def disk_limit(base, seconds, size):
    d = os.path.join(base, 'disk-bench')
    for threads in (1, 8):
        f = disk_loop(d, size, seconds, threads, 'fsync')
        c = disk_loop(d, size, seconds, threads, 'commit')
        q = disk_loop(d, size, seconds, threads, 'inject')
        print('bench_reception: disk (%s), %d thread%s: new file + %d B + fsync %.0f/s; '
              'that + rename + directory fsync %.0f/s; queue-inject\'s commit (4 fsyncs) '
              '%.0f/s = the limit in msg/s'
              % (base, threads, '' if threads == 1 else 's', size, f, c, q))
    for sub in ('tmp', 'mess', 'env'):
        os.rmdir(os.path.join(d, sub))
    os.rmdir(d)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--bin', default=os.path.join(HERE, '..', 'bin'))
    ap.add_argument('--workloads', default='2048:1,2048:10,2048:50,102400:10',
                    help='SIZE:CONNECTIONS,...')
    ap.add_argument('--messages', type=int, default=1000, help='per workload (2 KiB)')
    ap.add_argument('--big-messages', type=int, default=300, help='per workload of 100 KiB or more')
    ap.add_argument('--per-conn', type=int, default=50,
                    help='messages per connection (fewer when N/C is smaller)')
    ap.add_argument('--mem-interval', type=float, default=0.25)
    ap.add_argument('--disk-seconds', type=float, default=3.0)
    ap.add_argument('--no-disk', action='store_true')
    ap.add_argument('--blast', default=default_blast(),
                    help='the C client (make builds build/bench/smtp_blast); "" for the Python one')
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit('bench_reception: needs root (the instance drops to the postern-* users)')
    os.environ['POSTERN_BIN'] = os.path.abspath(a.bin)
    import harness  # after POSTERN_BIN is set
    settle()
    inst = harness.Instance(users={USER: 'bench-password'}, services=['smtp-listener'],
                            conf_extra={'max_sessions': '200', 'max_sessions_per_client': '200'},
                            bin=os.path.abspath(a.bin))
    inst.start()
    try:
        listener = inst.service_pid('smtp-listener')
        print('bench_reception: instance %s (only smtp-listener runs: no queue-manager), '
              '%d CPUs, load average %s'
              % (inst.root, os.cpu_count(), ' '.join('%.2f' % x for x in os.getloadavg())))
        print('bench_reception: client: %s' % (a.blast or 'Python (bench_reception.run_clients)'))
        run_clients(inst.port('smtp'), 2, 20, 10, 2048)  # warm-up
        for w in a.workloads.split(','):
            size, conns = (int(x) for x in w.split(':'))
            n = a.messages if size < 100 * 1024 else a.big_messages
            # every one of the C connections busy for the whole run
            workload(inst, listener, size, conns, n, max(1, min(a.per_conn, n // conns)),
                     a.mem_interval, a.blast)
        if not a.no_disk:
            disk_limit(inst.root, a.disk_seconds, 2048)
        print('bench_reception: load average after: %s'
              % ' '.join('%.2f' % x for x in os.getloadavg()))
    finally:
        inst.stop()


if __name__ == '__main__':
    main()
