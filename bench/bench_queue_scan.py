#!/usr/bin/env python3
"""bench_queue_scan.py - queue-manager with a large queue.

Fills ROOT/queue with N deferred messages (envelope + body written here in
the queue's own format, owned by the queue's user: one local recipient,
state pending, next try in 3 days, so none is dispatched), then measures:

  start      s6 start -> queue-manager ready (its start-up sweep and scan of
             every env/<h>/ and todo/ happen before the readiness line), and
             queue-manager's resident memory then
  deliver    with the N messages still queued, --new messages injected one
             at a time (ROOT/bin/queue-inject, as smtp-listener's monitor
             does it) and each waited for in the user's Maildir: p50/max of
             inject-exit -> file in new/ (queue-manager's trigger handling,
             dispatch and local delivery)

    python3 bench/bench_queue_scan.py --bin bin-bench [--sizes 0,5000,20000] [--new 20]

Needs root (the instance drops privileges).
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'integration'))

BODY = b'From: a@example.test\nTo: bench@example.test\nSubject: queued\n\nqueued\n'


def fill(inst, n):
    q = inst.path('queue')
    st = os.stat(q)
    now = int(time.time())
    later = now + 3 * 86400
    rnd = int.from_bytes(os.urandom(4), 'big')
    for i in range(n):
        qid = '%08X%08X' % (now, (rnd + i * 2654435761) & 0xffffffff)
        h = qid[-1]
        env = ('postern-envelope 1\nid %s\nbirth %d\nsender a@example.test\n'
               'client bench\nenvid \nret full\nbody 7bit\nsmtputf8 no\nbounce no\n'
               'rcpt\tpending\t1\t%d\t\t\tbench@example.test\t4.0.0 bench\n' % (qid, now, later))
        for sub, data in (('mess', BODY), ('env', env.encode())):
            p = os.path.join(q, sub, h, qid)
            with open(p, 'wb') as f:
                f.write(data)
            os.chown(p, st.st_uid, st.st_gid)
            os.chmod(p, 0o600)


def inject(inst, n):
    """one message through ROOT/bin/queue-inject; returns its queue id"""
    msg = b'From: b@example.test\nTo: bench@example.test\nSubject: new %d\n\nnew\n' % n
    envl = b'Fb@example.test\0Tbench@example.test\t\t\0\0'
    ours, theirs = socket.socketpair()
    p = subprocess.Popen([inst.bin('queue-inject')], stdin=subprocess.PIPE, stdout=theirs.fileno(),
                         stderr=subprocess.DEVNULL)
    theirs.close()
    p.stdin.write(msg)
    p.stdin.close()
    ours.sendall(envl)
    qid = ours.recv(64)
    ours.close()
    if p.wait() != 0:
        raise RuntimeError('queue-inject exit %d' % p.returncode)
    return qid.strip().decode()


def maildir_count(inst):
    try:
        return len(os.listdir(os.path.join(inst.maildir('bench'), 'new')))
    except OSError:
        return 0


def run(harness, binpath, n, new):
    inst = harness.Instance(users={'bench': 'bench-password'}, services=['auth-checker', 'queue-manager'],
                            bin=binpath, start_timeout=600)
    inst.setup()
    try:
        t = time.monotonic()
        fill(inst, n)
        t_fill = time.monotonic() - t
        t = time.monotonic()
        inst.start()
        t_start = time.monotonic() - t
        m = re.search(r'event=start messages=(\d+)', inst.log('queue-manager'))
        seen = int(m.group(1)) if m else -1
        rss = '?'
        try:
            with open('/proc/%d/status' % inst.service_pid('queue-manager')) as f:
                rss = [l.split(':')[1].strip() for l in f if l.startswith('VmRSS')][0]
        except (OSError, TypeError, IndexError):
            pass
        lat = []
        for i in range(new):
            base = maildir_count(inst)
            inject(inst, i)
            t = time.monotonic()
            while maildir_count(inst) <= base:
                if time.monotonic() - t > 60:
                    raise RuntimeError('not delivered in 60 s')
                time.sleep(0.0005)
            lat.append(time.monotonic() - t)
        lat.sort()
        print('bench_queue_scan: %6d queued (queue-manager saw %d): fill %.1f s; start->ready %.2f s; '
              'queue-manager VmRSS %s; new message inject->Maildir p50 %.1f ms max %.1f ms (%d messages)'
              % (n, seen, t_fill, t_start, rss, lat[len(lat) // 2] * 1e3 if lat else 0,
                 lat[-1] * 1e3 if lat else 0, new))
    finally:
        inst.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--bin', default=os.path.join(HERE, '..', 'bin'))
    ap.add_argument('--sizes', default='0,5000,20000')
    ap.add_argument('--new', type=int, default=20)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit('bench_queue_scan: needs root')
    os.environ['POSTERN_BIN'] = os.path.abspath(a.bin)
    import harness
    print('bench_queue_scan: %d CPUs, load average %s' % (os.cpu_count(), ' '.join('%.2f' % x for x in os.getloadavg())))
    for n in [int(x) for x in a.sizes.split(',')]:
        run(harness, os.path.abspath(a.bin), n, a.new)


if __name__ == '__main__':
    main()
