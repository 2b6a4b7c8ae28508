#!/usr/bin/env python3
"""bench_inject.py - how many messages per second queue-inject commits.

Workload: a throwaway ROOT (queue tree made here, in --dir, default the
system temp dir), a 4 KB message and a 2-recipient envelope per injection,
fed over a pipe (fd 0) and a socketpair (fd 1) exactly as smtp-listener's
monitor does; N worker processes (N = 1, 4, 8 by default) each inject in a
loop for --seconds. Every injection is a full durable commit (exit 0 only
after the fsyncs), so the figure includes fork+exec of the static binary.
Also prints the fsync count of one injection (strace -c), when strace exists.

    python3 bench/bench_inject.py --bin bin [--seconds 5] [--workers 1,4,8]
"""

import argparse
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HEX = '0123456789ABCDEF'
MESSAGE = (b'Subject: bench\nFrom: a@example.test\nTo: b@example.test\n\n'
           + (b'x' * 63 + b'\n') * 63)
MESSAGE = MESSAGE + b'y' * (4096 - len(MESSAGE) - 1) + b'\n'
ENVELOPE = (b'Fa@example.test\0Hfrom bench (localhost [127.0.0.1])\n\tby bench.test; now\0'
            b'Csmtp 127.0.0.1\0Tb@example.test\t\t\0Tc@example.test\t\t\0\0')


def make_root(base, binary):
    root = tempfile.mkdtemp(prefix='postern-bench.', dir=base)
    os.makedirs(os.path.join(root, 'bin'))
    shutil.copy(binary, os.path.join(root, 'bin', 'queue-inject'))
    q = os.path.join(root, 'queue')
    for d in ['', 'tmp', 'mess', 'env', 'todo', 'bounce', 'lock']:
        os.makedirs(os.path.join(q, d), mode=0o750, exist_ok=True)
    for h in HEX:
        os.makedirs(os.path.join(q, 'mess', h), exist_ok=True)
        os.makedirs(os.path.join(q, 'env', h), exist_ok=True)
    os.mkfifo(os.path.join(q, 'lock', 'trigger'), 0o600)
    return root


def inject_once(exe, wrap=()):
    mr, mw = os.pipe()
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(mr, 0)
            os.dup2(theirs.fileno(), 1)
            argv = list(wrap) + [exe]
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    os.close(mr)
    theirs.close()
    os.write(mw, MESSAGE)
    os.close(mw)
    ours.sendall(ENVELOPE)
    reply = ours.recv(64)
    ours.close()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0 and len(reply) == 17


def worker(exe, seconds, out):
    n = fails = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if inject_once(exe):
            n += 1
        else:
            fails += 1
    out.put((n, fails))


def run(exe, workers, seconds):
    q = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=worker, args=(exe, seconds, q)) for _ in range(workers)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.monotonic() - t0
    n = sum(r[0] for r in results)
    fails = sum(r[1] for r in results)
    return n, fails, elapsed


def fsync_count(exe):
    strace = shutil.which('strace')
    if not strace:
        return None
    fd, out = tempfile.mkstemp()
    os.close(fd)
    try:
        ok = inject_once(exe, wrap=(strace, '-f', '-c', '-o', out, '-e', 'trace=fsync,fdatasync,sync_file_range'))
        with open(out) as f:
            text = f.read()
    finally:
        os.unlink(out)
    counts = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] in ('fsync', 'fdatasync', 'sync_file_range'):
            counts[parts[-1]] = int(parts[3])
    return ok, counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--bin', default=os.path.join(os.path.dirname(__file__), '..', 'bin'))
    ap.add_argument('--seconds', type=float, default=5.0)
    ap.add_argument('--workers', default='1,4,8')
    ap.add_argument('--dir', default=None, help='where the throwaway ROOT goes (its filesystem is measured)')
    a = ap.parse_args()
    binary = os.path.join(os.path.abspath(a.bin), 'queue-inject')
    if not os.path.exists(binary):
        sys.exit('bench_inject: %s not built' % binary)
    root = make_root(a.dir, binary)
    exe = os.path.join(root, 'bin', 'queue-inject')
    try:
        fs = subprocess.run(['df', '-T', root], capture_output=True, text=True).stdout.splitlines()[-1].split()
        print('bench_inject: workload: %d-byte message, 2 recipients, socketpair envelope, '
              'full durable commit per message' % len(MESSAGE))
        print('bench_inject: ROOT %s on %s (%s), %d CPUs, %.0f s per run'
              % (root, fs[-1], fs[1], os.cpu_count(), a.seconds))
        fc = fsync_count(exe)
        if fc:
            print('bench_inject: fsync per message: %s (strace -c; ok=%s)'
                  % (', '.join('%s=%d' % kv for kv in sorted(fc[1].items())) or 'none', fc[0]))
        for w in [int(x) for x in a.workers.split(',')]:
            n, fails, elapsed = run(exe, w, a.seconds)
            print('bench_inject: workers=%d committed=%d failed=%d elapsed=%.2fs rate=%.0f msg/s '
                  'latency=%.2f ms/msg per worker' % (w, n, fails, elapsed, n / elapsed,
                                                      (elapsed * w / n * 1000) if n else 0))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
    main()
