#!/usr/bin/env python3
"""bench_relay.py - outbound mail through the whole path (`make bench-relay`).

Two real instances on loopback (tests/integration/harness.py): A routes
example.net by a static route (conf/routes) either to B, a second postern
(`--to postern`: B's smtp-listener, queue, local-deliverer, bob's Maildir),
or to the recording SMTP sink of remote_helpers.py (`--to sink`). Clients
send N messages of --size bytes to bob@example.net into A's port 25 (loopback
is a relay network on A here, as on a host whose local programs relay),
--clients connections, each reusing its connection for its share.

Prints, per target:
  accepted msg/s   N / (last 250 after the data - first connect), A's SMTP side
  relayed msg/s    N / (the last message at the target - first connect)
  tail             seconds from the last 250 to the last arrival
Each message here has one recipient. A's remote-deliverer uses STARTTLS
when the target offers it (B does, with its self-signed certificate; the
sink does not). Recipients of one message to one destination share a
transaction, and a connection that delivered a message stays open for
remote_reuse_time (--reuse-time, default 2 s; 0: QUIT after every message,
as before 26 Nov 2026) for the next message to that destination
(docs/REMOTE.md), so the TLS handshakes and EHLOs are paid once per
connection, not per message. The sink line shows how many sessions (and
transactions) the messages took.

    python3 bench/bench_relay.py --bin bin-relay [--messages 500] [--clients 4]
        [--size 4096] [--to postern,sink] [--per-domain 10] [--reuse-time 2]

Needs root. Nothing leaves loopback (A's dns_server is a dead loopback port).
"""

import argparse
import os
import smtplib
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'integration'))


def make_body(size, i):
    head = 'From: alice@example.org\r\nTo: bob@example.net\r\nSubject: relay bench %d\r\n\r\n' % i
    line = 'The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmn\r\n'
    n = max(0, size - len(head))
    return (head + (line * (n // len(line) + 1))[:n]).encode()


def send_share(port, first, count, size, errors, done_at):
    try:
        s = smtplib.SMTP('127.0.0.1', port, timeout=60)
        s.ehlo('bench.client')
        for i in range(first, first + count):
            s.sendmail('alice@example.org', ['bob@example.net'], make_body(size, i))
        s.quit()
        done_at.append(time.time())
    except Exception as e:       # noqa: BLE001 - reported below
        errors.append(repr(e))


def run(args, target):
    import harness
    from remote_helpers import SmtpSink, ensure_user
    ensure_user('postern-remote')
    b = sink = None
    if target == 'postern':
        b = harness.Instance(domains=('example.net',), hostname='mx.example.net',
                             users={'bob': 'bench-password'},
                             conf_extra={'dns_server': '127.0.0.1:9',
                                         'max_sessions_per_client': 4 * args.per_domain},
                             bin=args.bin).start()
        dest = b.port('smtp')
    else:
        sink = SmtpSink()
        sink.pipelining = True
        dest = sink.port
    a = harness.Instance(domains=('example.org',), hostname='mail.example.org',
                         conf_extra={'dns_server': '127.0.0.1:9',
                                     'remote_per_domain': args.per_domain,
                                     'remote_reuse_time': args.reuse_time,
                                     'remote_timeout': 30}, bin=args.bin)
    try:
        a.setup()
        with open(a.path('conf', 'routes'), 'w') as f:
            f.write('example.net 127.0.0.1:%d\n' % dest)
        os.chmod(a.path('conf', 'routes'), 0o644)
        a.start()
        n, k = args.messages, args.clients
        errors, done_at = [], []
        arrived = (lambda: len(b.maildir_messages('bob'))) if b else (lambda: len(sink.messages))
        t0 = time.time()
        threads, first = [], 0
        for c in range(k):
            cnt = n // k + (1 if c < n % k else 0)
            t = threading.Thread(target=send_share, args=(a.port('smtp'), first, cnt, args.size,
                                                          errors, done_at))
            first += cnt
            threads.append(t)
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise SystemExit('client errors: %s' % errors[:3])
        accepted = max(done_at)
        deadline = time.time() + 60 + n / 5
        while arrived() < n:
            if time.time() > deadline:
                raise SystemExit('only %d of %d arrived; A queue:\n%s' % (
                    arrived(), n, a.run('postern-queue', 'list', check=False).stdout[-2000:]))
            time.sleep(0.02)
        last = time.time()
        print('%-8s %5d msgs x %5d B, %d clients, per_domain %d, reuse_time %d: accepted %7.1f msg/s, '
              'relayed %7.1f msg/s, tail %.2f s' % (
                  target, n, args.size, k, args.per_domain, args.reuse_time, n / (accepted - t0),
                  n / (last - t0), last - accepted))
        if sink:
            tls = sum(1 for m in sink.messages if m['tls'])
            print('         sink sessions %d, transactions %d, messages with TLS %d, max concurrent %d' % (
                sink.connections, sum(x.get('transactions', 0) for x in sink.sessions), tls,
                sink.max_active))
        else:
            log = open(a.path('log', 'queue-manager', 'current'), errors='replace').read()
            print('         A\'s remote-deliverer: %d messages over a kept connection (event=reuse)'
                  % log.count('event=reuse'))
    finally:
        a.stop()
        if b:
            b.stop()
        if sink:
            sink.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--bin', default=os.path.join(HERE, '..', 'bin'))
    ap.add_argument('--messages', type=int, default=500)
    ap.add_argument('--clients', type=int, default=4)
    ap.add_argument('--size', type=int, default=4096)
    ap.add_argument('--per-domain', type=int, default=10)
    ap.add_argument('--to', default='postern,sink')
    ap.add_argument('--reuse-time', type=int, default=2, help="A's remote_reuse_time (seconds)")
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    os.environ['POSTERN_BIN'] = args.bin
    if os.geteuid() != 0:
        raise SystemExit('bench_relay: needs root (real users, privilege drops)')
    for target in args.to.split(','):
        run(args, target)


if __name__ == '__main__':
    main()
