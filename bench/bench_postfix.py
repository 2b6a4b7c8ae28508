#!/usr/bin/env python3
"""bench_postfix.py - issue 3's reference on this machine: Postfix end to end
(`make bench-postfix`).

bench_e2e.py measures postern from the first SMTP connection until all N
messages are in the recipients' Maildir/new. Issue 3's reference figures
for Postfix 3.7 (570 msg/s at one message per connection, 715 with reuse)
come from another machine of the same class; this script runs Debian's
Postfix here, on the same disk, with the same client and workload, so that
the two can be compared on one machine (run it and bench_e2e one after the
other, alternately, on a quiet machine).

The Postfix instance is private and thrown away: its own config_directory,
queue_directory and data_directory in a temporary directory beside
postern's test ROOTs (/tmp, the same filesystem), its smtpd on a free
loopback port, local(8) delivering into ~/Maildir/ of --users Unix
accounts made for the run (pfxbench0..; removed at the end). Postfix is
otherwise as Debian installs it (master.cf's process limits, smtpd's
process reuse, cleanup, qmgr, local), except:

  - no chroot (the private queue directory has none of the files a
    chrooted Postfix needs; postern's sessions do chroot);
  - logging to a file through postlogd (maillog_file), as postern logs
    through s6-log, instead of to a syslog daemon this machine lacks;
  - no alias database (postern's alias lookup is a parsed file).

Postfix's durability is its own default: the queue file is fsynced once
(cleanup), the Maildir file once (local), directories never; postern's
commit fsyncs two files and two directories, and its Maildir delivery the
file and new/ (bench/README.md).

For each mode (no reuse: one message per connection; reuse: --per-conn per
connection) it prints msg/s from the first connection until the last file
in new/, when the last 250 came back, and the CPU seconds of Postfix's
processes (master and every descendant, own and reaped children's time).

    python3 bench/bench_postfix.py [--blast build/bench/smtp_blast]
        [--messages 2000] [--clients 10] [--size 2048] [--per-conn 100]
        [--users 4] [--repeat 1]

Needs root and Postfix (`apt-get install postfix`; the system instance need
not run and is not touched).
"""

import argparse
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'integration'))

import bench_reception  # noqa: E402  (smtp_blast's driver, settle, proc_tree)
import bench_e2e  # noqa: E402  (disk_sample, disk_diff)
from bench_smtp import cpu_diff  # noqa: E402  (CPU per program between two snapshots)

POSTFIX = '/usr/sbin/postfix'


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Postfix:
    """a private Postfix instance under a temporary directory"""

    def __init__(self, users, port):
        base = os.environ.get('POSTERN_TEST_TMP') or tempfile.gettempdir()
        self.dir = tempfile.mkdtemp(prefix='pfxbench-', dir=base)
        os.chmod(self.dir, 0o755)
        self.etc = os.path.join(self.dir, 'etc')
        self.spool = os.path.join(self.dir, 'spool')
        self.data = os.path.join(self.dir, 'data')
        self.home = os.path.join(self.dir, 'home')
        self.log = os.path.join(self.dir, 'maillog')
        self.users = users
        self.port = port
        self.made_users = []
        for d in (self.etc, self.spool, self.home):
            os.makedirs(d, mode=0o755)
        os.makedirs(self.data, mode=0o700)
        shutil.chown(self.data, 'postfix', 'postfix')
        for u in users:
            self.add_user(u)
        self.write_conf()

    def add_user(self, name):
        home = os.path.join(self.home, name)
        try:
            pwd.getpwnam(name)
            raise SystemExit('bench_postfix: user %s exists already; remove it first' % name)
        except KeyError:
            pass
        subprocess.run(['useradd', '-M', '-d', home, '-s', '/usr/sbin/nologin', name], check=True)
        self.made_users.append(name)
        os.makedirs(home, mode=0o700)
        shutil.chown(home, name, name)

    def write_conf(self):
        main = {
            'compatibility_level': '3.6',
            'queue_directory': self.spool,
            'data_directory': self.data,
            'mail_owner': 'postfix',
            'setgid_group': 'postdrop',
            'myhostname': 'bench.test',
            'mydomain': 'example.test',
            'myorigin': 'example.test',
            'mydestination': 'example.test',
            'inet_interfaces': '127.0.0.1',
            'inet_protocols': 'ipv4',
            'mynetworks': '127.0.0.0/8',
            'home_mailbox': 'Maildir/',
            'alias_maps': '',
            'alias_database': '',
            'biff': 'no',
            'append_dot_mydomain': 'no',
            'smtpd_banner': '$myhostname ESMTP',
            'maillog_file': self.log,
            'maillog_file_prefixes': self.dir,
        }
        with open(os.path.join(self.etc, 'main.cf'), 'w') as f:
            for k, v in main.items():
                f.write('%s = %s\n' % (k, v))
        # Debian's master.cf: the smtp listener moved to our loopback port,
        # chroot off (column 5)
        out = []
        with open('/etc/postfix/master.cf') as f:
            for line in f:
                fields = line.split()
                if line[:1] in ('#', ' ', '\t', '\n') or len(fields) < 8:
                    out.append(line)
                    continue
                if fields[0] == 'smtp' and fields[1] == 'inet':
                    fields[0] = '127.0.0.1:%d' % self.port
                fields[4] = 'n'
                out.append('  '.join(fields[:8]) + (' ' + ' '.join(fields[8:]) if fields[8:] else '') + '\n')
        with open(os.path.join(self.etc, 'master.cf'), 'w') as f:
            f.writelines(out)

    def postfix(self, *args):
        return subprocess.run([POSTFIX, '-c', self.etc] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def start(self):
        r = self.postfix('start')
        if r.returncode != 0:
            raise SystemExit('bench_postfix: postfix start failed:\n%s' % r.stdout.decode(errors='replace'))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(('127.0.0.1', self.port), timeout=2) as s:
                    if s.recv(512).startswith(b'220'):
                        s.sendall(b'QUIT\r\n')
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit('bench_postfix: no 220 on port %d; %s' % (self.port, self.log))

    def master_pid(self):
        try:
            with open(os.path.join(self.spool, 'pid', 'master.pid')) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def cpu(self):
        """{pid: (comm, own ticks, reaped children's ticks)} of master and
        its descendants, for bench_smtp.cpu_diff (a process that exits has
        its CPU in master's reaped time)"""
        out = {}
        pid = self.master_pid()
        if pid is None:
            return out
        for p, comm in bench_reception.proc_tree(pid):
            try:
                with open('/proc/%d/stat' % p) as f:
                    st = f.read()
            except OSError:
                continue
            v = st[st.rindex(')') + 2:].split()
            out[p] = (comm, int(v[11]) + int(v[12]), int(v[13]) + int(v[14]))
        return out

    def maildir_new(self, user):
        return os.path.join(self.home, user, 'Maildir', 'new')

    def stop(self):
        self.postfix('stop')
        pid = self.master_pid()
        deadline = time.monotonic() + 10
        while pid is not None and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.1)
        for u in self.made_users:
            subprocess.run(['userdel', u], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


def count_new(pfx):
    n = 0
    for u in pfx.users:
        try:
            n += len(os.listdir(pfx.maildir_new(u)))
        except OSError:
            pass
    return n


def last_new_time(pfx):
    last = 0.0
    for u in pfx.users:
        try:
            with os.scandir(pfx.maildir_new(u)) as it:
                for e in it:
                    last = max(last, e.stat(follow_symlinks=False).st_ctime)
        except OSError:
            pass
    return last


def run(pfx, blast, n, clients, per_conn, size):
    base = count_new(pfx)
    cpu0 = pfx.cpu()
    disk0 = bench_e2e.disk_sample(pfx.dir)
    wall0 = time.time()
    results, t_acc, _, errors, cli = bench_reception.blast_clients(blast, pfx.port, clients, n,
                                                                   per_conn, size, pfx.users)
    ok = sum(1 for r in results if r[2] == '250')
    deadline = time.monotonic() + 60 + n * 0.05
    while count_new(pfx) < base + ok and time.monotonic() < deadline:
        time.sleep(0.02)
    disk1 = bench_e2e.disk_sample(pfx.dir)
    wall = time.time() - wall0
    t_del = last_new_time(pfx) - wall0
    delivered = count_new(pfx) - base
    time.sleep(0.3)
    cpu = cpu_diff(cpu0, pfx.cpu())
    return {'n': n, 'clients': clients, 'per_conn': per_conn, 'size': size, 'ok': ok,
            'bad': n - ok, 'errors': errors, 'delivered': delivered, 't_acc': t_acc,
            't_del': t_del, 'cpu': cpu, 'client_cpu': cli,
            'disk': bench_e2e.disk_diff(disk0, disk1, wall, ok)}


def report(r, label):
    print('bench_postfix: %s: %d x %d B, C=%d, %d msg/connection: accepted %d failed %d, '
          'delivered %d; all 250s at %.2f s (%.0f msg/s), all in new/ at %.2f s '
          '=> %.0f msg/s end to end'
          % (label, r['n'], r['size'], r['clients'], r['per_conn'], r['ok'], r['bad'],
             r['delivered'], r['t_acc'], r['ok'] / r['t_acc'], r['t_del'],
             r['delivered'] / max(r['t_del'], 1e-9)))
    parts = ['%s %.2f+%.2f' % (c, o, k)
             for c, (o, k) in sorted(r['cpu'].items(), key=lambda kv: -sum(kv[1])) if o + k >= 0.005]
    tot = sum(o + k for o, k in r['cpu'].values())
    print('bench_postfix:   cpu s (own+reaped children): %s; total %.2f s = %.3f ms/msg '
          '(%.0f%% of 2 cores over the run)'
          % (', '.join(parts), tot, tot / max(1, r['ok']) * 1e3, 100 * tot / (2 * max(r['t_del'], 1e-9))))
    print('bench_postfix:   client cpu %.2f s = %.3f ms/msg' % (r['client_cpu'], r['client_cpu'] / max(1, r['n']) * 1e3))
    print('bench_postfix:   %s' % r['disk'])


def main():
    ap = argparse.ArgumentParser()
    bench_e2e.workload_args(ap)
    ap.add_argument('--blast', default=bench_reception.default_blast(),
                    help='bench/smtp_blast, the C client (make builds build/bench/smtp_blast)')
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit('bench_postfix: needs root')
    if not a.blast:
        sys.exit('bench_postfix: needs bench/smtp_blast: make build/bench/smtp_blast, or --blast PATH')
    if not os.access(POSTFIX, os.X_OK):
        sys.exit('bench_postfix: needs Postfix: apt-get install postfix (the system instance need not run)')
    version = subprocess.run(['/usr/sbin/postconf', '-d', '-h', 'mail_version'],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode().strip()
    bench_reception.settle()
    users = ['pfxbench%d' % i for i in range(a.users)]
    pfx = Postfix(users, free_port())
    try:
        pfx.start()
        print('bench_postfix: Postfix %s, instance %s, port %d, %d CPUs, load average %s'
              % (version, pfx.dir, pfx.port, os.cpu_count(),
                 ' '.join('%.2f' % x for x in os.getloadavg())))
        run(pfx, a.blast, 20, 2, 10, a.size)      # warm-up: smtpd, cleanup, local started
        for _ in range(a.repeat):
            report(run(pfx, a.blast, a.messages, a.clients, 1, a.size), 'no reuse')
            report(run(pfx, a.blast, a.messages, a.clients, a.per_conn, a.size), 'reuse')
        with open(pfx.log, errors='replace') as f:
            trouble = [line.rstrip() for line in f if re.search(r'\b(warning|fatal|panic|error):', line)]
        if trouble:
            print('bench_postfix: %d warning/error lines in Postfix\'s log, the first: %s'
                  % (len(trouble), trouble[0]))
        print('bench_postfix: load average after: %s' % ' '.join('%.2f' % x for x in os.getloadavg()))
    finally:
        pfx.stop()


if __name__ == '__main__':
    main()
