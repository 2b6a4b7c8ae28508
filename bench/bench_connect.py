#!/usr/bin/env python3
"""bench_connect.py - what one SMTP connection costs the host, without mail.

N connections (default 5,000), C at a time (default 10), each: read the
banner, EHLO, QUIT, read the 221, close. The instance (tests/integration/
harness.py: postern-setup, s6, real privilege separation) runs only
smtp-listener. Prints connections/s and the CPU of the listener and all its
descendants (the per-connection monitor and session) per connection, from
/proc (own + reaped children), for --repeat rounds.

This is the part of the "no reuse" figures that reuse does not pay: the
listener's fork of a monitor, the monitor's fork of the chrooted session,
their exits, the TCP set-up and tear-down and two log lines.

    python3 bench/bench_connect.py --bin bin [-n 5000] [-c 10] [--repeat 3]

Needs root.
"""
import argparse
import os
import selectors
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'integration'))


def run(port, n, c):
    """n connections, c at a time, each banner / EHLO / QUIT; returns the
    number whose dialogue went as expected"""
    sel = selectors.DefaultSelector()
    started = done = good = 0

    def start():
        nonlocal started
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(('127.0.0.1', port))
        except BlockingIOError:
            pass
        sel.register(s, selectors.EVENT_READ, [0, b''])
        started += 1

    for _ in range(min(c, n)):
        start()
    while done < n:
        ready = sel.select(30)
        if not ready:
            raise RuntimeError('bench_connect: stalled')
        for key, _ in ready:
            s, st = key.fileobj, key.data
            try:
                d = s.recv(4096)
            except ConnectionError:
                d = b''
            st[1] += d
            if d and not st[1].endswith(b'\r\n'):
                continue
            last = st[1].split(b'\r\n')[-2] if d else b''
            if d and last[3:4] == b'-':
                continue
            if st[0] == 0 and last.startswith(b'220 '):
                s.send(b'EHLO bench.test\r\n')
                st[0], st[1] = 1, b''
            elif st[0] == 1 and last.startswith(b'250 '):
                s.send(b'QUIT\r\n')
                st[0], st[1] = 2, b''
            elif st[0] == 2 and last.startswith(b'221 '):
                st[0], st[1] = 3, b''
            elif not d:
                good += st[0] == 3
                sel.unregister(s)
                s.close()
                done += 1
                if started < n:
                    start()
    return good


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--bin', default=os.path.join(HERE, '..', 'bin'))
    ap.add_argument('-n', type=int, default=5000)
    ap.add_argument('-c', type=int, default=10)
    ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--table-users', type=int, default=0,
                    help='this many more (synthetic) recipients in conf/recipients '
                         '(bench_e2e.grow_tables): a large map in the listener that forks')
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit('bench_connect: needs root')
    os.environ['POSTERN_BIN'] = os.path.abspath(a.bin)
    import harness
    import bench_reception as br
    br.settle()
    inst = harness.Instance(users={'bench': 'bench-password'}, services=['smtp-listener'],
                            conf_extra={'max_sessions': '200', 'max_sessions_per_client': '200'},
                            bin=os.path.abspath(a.bin))
    inst.start()
    if a.table_users:
        from bench_e2e import grow_tables
        grow_tables(inst, a.table_users)
    try:
        port = inst.port('smtp')
        lp = inst.service_pid('smtp-listener')
        print('bench_connect: instance %s (only smtp-listener), %d CPUs, load average %s'
              % (inst.root, os.cpu_count(), ' '.join('%.2f' % x for x in os.getloadavg())))
        run(port, 200, 5)   # warm-up
        for _ in range(a.repeat):
            time.sleep(1)
            c0 = br.cpu_ticks(lp)
            t0 = time.monotonic()
            good = run(port, a.n, a.c)
            t1 = time.monotonic()
            time.sleep(0.5)   # the last monitors reaped
            c1 = br.cpu_ticks(lp)
            own, kids = (c1[0] - c0[0]) / br.TICK, (c1[1] - c0[1]) / br.TICK
            print('bench_connect: %d connections (%d complete), C=%d, in %.2f s = %.0f/s; '
                  'server CPU listener %.2f s + monitors and sessions %.2f s = %.3f ms per connection'
                  % (a.n, good, a.c, t1 - t0, a.n / (t1 - t0), own, kids, (own + kids) / a.n * 1e3))
    finally:
        inst.stop()


if __name__ == '__main__':
    main()
