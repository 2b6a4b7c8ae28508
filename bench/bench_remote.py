#!/usr/bin/env python3
"""bench_remote.py - outbound delivery rate of remote-deliverer.

Drives the real remote-deliverer as queue-manager does (SEQPACKET socketpair,
message fd attached to each job) against a local recording SMTP sink on
loopback (tests/integration/remote_helpers.py) and reports messages per
second and per-job latency. One job per recipient means one SMTP connection
per job (the deliverer does not batch recipients).

    python3 bench/bench_remote.py --bin bin [--jobs 500] [--size 4096] [--concurrency 10]

Needs root (remote-deliverer drops to postern-remote).
"""

import argparse
import os
import sys
import tempfile
import shutil
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'integration'))

import remote_helpers  # noqa: E402


def message(size):
    head = (b'Received: from bench.test by mail.example.test; Thu, 1 Jan 2026 00:00:00 +0000\n'
            b'From: alice@example.test\nTo: bob@example.net\nSubject: bench\n\n')
    line = b'The quick brown fox jumps over the lazy dog. 0123456789 abcdefghij\n'
    body = (line * (size // len(line) + 1))[:max(0, size - len(head) - 1)] + b'\n'
    return head + body


def run(binpath, jobs, size, conc, tls, pipelining, certdir):
    cert = key = None
    if tls:
        cert, key = remote_helpers.make_cert(certdir)
    sink = remote_helpers.SmtpSink(cert=cert, key=key)
    sink.starttls = tls
    sink.pipelining = pipelining
    d = remote_helpers.Deliverer(routes='example.net [127.0.0.1]:%d\n' % sink.port,
                                 conf={'remote_per_domain': str(conc)},
                                 binpath=os.path.join(binpath, 'remote-deliverer'))
    path = d.message_file(message(size))
    d.start()
    try:
        sent = {}
        t0 = time.monotonic()
        for i in range(jobs):
            j = d.submit('user%d@example.net' % i, path=path)
            sent[str(j)] = time.monotonic()
        lat, bad = [], 0
        for _ in range(jobs):
            r = d.result(120)
            lat.append(time.monotonic() - sent[r['J']])
            if r['S'] != 's':
                bad += 1
        elapsed = time.monotonic() - t0
    finally:
        d.stop()
        sink.close()
    lat.sort()
    return {
        'elapsed': elapsed, 'rate': jobs / elapsed, 'failed': bad,
        'received': len(sink.messages), 'max_conc': sink.max_active,
        'p50': lat[len(lat) // 2] * 1000, 'p99': lat[int(len(lat) * 0.99) - 1] * 1000,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--bin', default=os.path.join(HERE, '..', 'bin'))
    ap.add_argument('--jobs', type=int, default=500)
    ap.add_argument('--size', type=int, default=4096)
    ap.add_argument('--concurrency', type=int, default=10)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit('bench_remote: needs root (remote-deliverer drops to postern-remote)')
    remote_helpers.ensure_user('postern-remote')
    certdir = tempfile.mkdtemp(prefix='bench-remote-')
    os.chmod(certdir, 0o755)
    print('bench_remote: workload: %d jobs (one recipient each) of a %d-byte message to one '
          'destination, remote_per_domain=%d, loopback sink in Python (threads), %d CPUs'
          % (a.jobs, a.size, a.concurrency, os.cpu_count()))
    try:
        for tls, pipe in ((False, False), (False, True), (True, True)):
            r = run(os.path.abspath(a.bin), a.jobs, a.size, a.concurrency, tls, pipe, certdir)
            print('bench_remote: %-22s %7.1f msg/s  elapsed %.2f s  latency p50 %.1f ms p99 %.1f ms  '
                  'max sink sessions %d  delivered %d/%d  failed %d'
                  % ('STARTTLS+PIPELINING' if tls else ('plain+PIPELINING' if pipe else 'plain'),
                     r['rate'], r['elapsed'], r['p50'], r['p99'], r['max_conc'],
                     r['received'], a.jobs, r['failed']))
    finally:
        shutil.rmtree(certdir, ignore_errors=True)


if __name__ == '__main__':
    main()
