#!/usr/bin/env python3
"""bench_tls.py - TLS cost on a real instance (smtp-listener + tls-proxy +
auth-checker; no queue-manager, so queued messages stay in the queue).

  1. handshakes per second on the smtps port (465-style implicit TLS): each
     connection is accept + fork of monitor and session + a tls-proxy child
     forked by the listener's TLS server (tls-proxy -z; it drops privileges)
     + a full TLS handshake + the 220 greeting + QUIT. Run with --parallel
     clients. Then the same with every connection resuming one session
     (a session ticket: no certificate, no signature).
  2. throughput of one TLS SMTP session: STARTTLS on the submission port,
     AUTH PLAIN, then --messages messages of --size bytes over the one
     connection (Python's smtplib: Nagle on, the body in 16 KB TLS records);
     the same workload over plaintext port 25 for comparison, once as
     smtplib sends it (one write) and once in 4 KB writes.

    python3 bench/bench_tls.py --bin bin [--handshakes 300] [--parallel 4]
                               [--messages 200] [--size 102400]

Needs root (the instance drops privileges to its system users).
"""

import argparse
import os
import smtplib
import socket
import ssl
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'integration'))

from harness import Instance  # noqa: E402

PASSWORD = 'Bench-pass-42'


def ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def one_handshake(port, c, session=None, want=None):
    """connect, TLS (resuming session if given), 220, QUIT: the TLS version,
    or (version, session) with want='session'"""
    s = socket.create_connection(('127.0.0.1', port), timeout=30)
    t = c.wrap_socket(s, server_hostname='mail.example.test', session=session)
    f = t.makefile('rb')
    line = f.readline()
    if not line.startswith(b'220 '):
        raise RuntimeError('no greeting: %r' % line)
    if session is not None and not t.session_reused:
        raise RuntimeError('the session was not resumed')
    t.sendall(b'QUIT\r\n')
    f.readline()
    version = t.version()
    got = t.session
    f.close()
    t.close()
    return (version, got) if want == 'session' else version


def handshakes(port, n, parallel, resume=False):
    c = ctx()
    session = one_handshake(port, c, want='session')[1] if resume else None
    lat = []
    versions = set()
    lock = threading.Lock()
    todo = [n]

    def worker():
        while True:
            with lock:
                if todo[0] == 0:
                    return
                todo[0] -= 1
            t0 = time.monotonic()
            v = one_handshake(port, c, session)
            dt = time.monotonic() - t0
            with lock:
                lat.append(dt)
                versions.add(v)

    one_handshake(port, c, session)      # warm up
    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    lat.sort()
    return n / wall, lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1], wall, versions


def message(size, i):
    head = ('From: alice@example.test\r\nTo: alice@example.test\r\nSubject: bench %d\r\n\r\n' % i).encode()
    line = b'The quick brown fox jumps over the lazy dog. 0123456789 abcdefghijklmnop\r\n'
    body = (line * (size // len(line) + 1))[:max(0, size - len(head) - 2)]
    return head + body + b'\r\n'


def throughput(port, n, size, tls):
    s = smtplib.SMTP('127.0.0.1', port, timeout=120)
    s.ehlo('bench.test')
    if tls:
        s.starttls(context=ctx())
        s.ehlo('bench.test')
        s.login('alice', PASSWORD)
    msgs = [message(size, i) for i in range(n)]
    t0 = time.monotonic()
    for m in msgs:
        refused = s.sendmail('alice@example.test', ['alice@example.test'], m)
        if refused:
            raise RuntimeError('refused: %r' % refused)
    wall = time.monotonic() - t0
    cipher = s.sock.cipher()[0] if tls else '-'
    s.quit()
    total = sum(len(m) for m in msgs)
    return n / wall, total / wall / 1e6, wall, cipher


def throughput_pieces(port, n, size, piece):
    """plaintext, each message body written in piece-byte send()s with
    Nagle's algorithm on (as many clients' libraries write): the server must
    not make such a client wait for its delayed ACKs"""
    s = socket.create_connection(('127.0.0.1', port), timeout=120)
    f = s.makefile('rb')

    def reply():
        while True:
            line = f.readline()
            if not line or line[3:4] != b'-':
                return line

    reply()
    s.sendall(b'EHLO bench.test\r\n')
    reply()
    msgs = [message(size, i).replace(b'\r\n.', b'\r\n..') + b'.\r\n' for i in range(n)]
    t0 = time.monotonic()
    for m in msgs:
        for cmd in (b'MAIL FROM:<alice@example.test>\r\n', b'RCPT TO:<alice@example.test>\r\n', b'DATA\r\n'):
            s.sendall(cmd)
            reply()
        for o in range(0, len(m), piece):
            s.sendall(m[o:o + piece])
        r = reply()
        if not r.startswith(b'250'):
            raise RuntimeError('refused: %r' % r)
    wall = time.monotonic() - t0
    s.sendall(b'QUIT\r\n')
    reply()
    s.close()
    total = sum(len(m) for m in msgs)
    return n / wall, total / wall / 1e6, wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--bin', required=True)
    ap.add_argument('--handshakes', type=int, default=300)
    ap.add_argument('--parallel', type=int, default=4)
    ap.add_argument('--messages', type=int, default=200)
    ap.add_argument('--size', type=int, default=100 * 1024)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit('bench_tls: needs root')
    inst = Instance(bin=os.path.abspath(a.bin), services=['auth-checker', 'smtp-listener'],
                    users={'alice': PASSWORD},
                    conf_extra={'max_sessions_per_client': '100', 'max_sessions': '200'})
    with inst:
        print('bench_tls: instance %s, %d CPUs' % (inst.root, os.cpu_count()))
        rate, p50, p99, wall, versions = handshakes(inst.port('smtps'), a.handshakes, a.parallel)
        print('handshakes: %d connections to the smtps port (%d in parallel), each '
              'connect + TLS handshake (%s, RSA-2048 key) + 220 greeting + QUIT'
              % (a.handshakes, a.parallel, '/'.join(sorted(versions))))
        print('  %.1f handshakes/s  (wall %.2f s, latency p50 %.1f ms, p99 %.1f ms)'
              % (rate, wall, p50 * 1000, p99 * 1000))
        rate, p50, p99, wall, versions = handshakes(inst.port('smtps'), a.handshakes, a.parallel, True)
        print('resumed: the same, each resuming the first connection\'s session (%s session ticket)'
              % '/'.join(sorted(versions)))
        print('  %.1f handshakes/s  (wall %.2f s, latency p50 %.1f ms, p99 %.1f ms)'
              % (rate, wall, p50 * 1000, p99 * 1000))
        for tls, port, what in ((True, inst.port('submission'), 'STARTTLS + AUTH on submission'),
                                (False, inst.port('smtp'), 'plaintext on port 25')):
            mps, mbps, wall, cipher = throughput(port, a.messages, a.size, tls)
            print('session: %d messages of %d bytes over one connection, %s%s'
                  % (a.messages, a.size, what, ' (%s)' % cipher if tls else ''))
            print('  %.1f messages/s, %.1f MB/s  (wall %.2f s)' % (mps, mbps, wall))
        mps, mbps, wall = throughput_pieces(inst.port('smtp'), a.messages, a.size, 4096)
        print('session: %d messages of %d bytes over one connection, plaintext on port 25, '
              'each body written in 4 KB pieces with Nagle on' % (a.messages, a.size))
        print('  %.1f messages/s, %.1f MB/s  (wall %.2f s)' % (mps, mbps, wall))


if __name__ == '__main__':
    main()
