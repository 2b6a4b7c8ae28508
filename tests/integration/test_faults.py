"""test_faults.py - fault injection (issue 8, item 2) on the real daemons.

SIGKILL, ENOSPC and EIO at every syscall step of queue-manager's
bookkeeping (envelope rewrite: open, write, fsync, rename, directory fsync;
message removal: unlink envelope, directory fsync, unlink body) and of
Maildir delivery (local-deliverer's mailbox worker: open, write, fsync,
link, directory fsync), with `strace --inject`.  queue-inject's own commit
steps are covered by test_queue_inject.QueueInjectFaultTest.

Each case: a message is queued (ROOT/bin/queue-inject, exactly as
smtp-listener hands messages over), queue-manager runs with the fault (the
daemon itself under strace, or ROOT/bin/local-deliverer replaced by a
wrapper that runs the real one under `strace -f`), then a clean
queue-manager runs and is flushed.  The oracle:
  - every queued message is delivered at least once, and every copy is
    whole (byte-compared with what was queued);
  - a failed Maildir step (above all a failed fsync) is a temporary (4.x.x)
    result, never a success;
  - the queue ends empty, and duplicates are counted and printed (the
    qmail trade-off: not a failure).
The strace trace (-y) of each faulty run is checked to show the injected
call on the intended path, so each case proves it hit its step.

SmtpQueueFaults: the queue on a size-limited tmpfs: 452 4.3.1, nothing
half-written, and the server keeps serving."""

import email
import email.policy
import os
import re
import shutil
import signal
import subprocess
import time
import unittest

import harness
from harness import Instance, need, need_root, send_mail, smtp_dialogue

PROGRAMS = ('postern-setup', 'postern-user', 'queue-inject', 'queue-manager', 'local-deliverer',
            'postern-queue')
STRACE = shutil.which('strace')
DUPLICATES = {}


def strace_works():
    if not STRACE:
        return False
    r = subprocess.run([STRACE, '-o', '/dev/null', '-e', 'inject=fsync:error=EIO', 'true'],
                       capture_output=True)
    return r.returncode == 0


def inject(inst, sender, rcpts, message, notify=''):
    """ROOT/bin/queue-inject; returns the queue id (the "250")."""
    return harness.queue_inject(inst, sender, rcpts, message, notify)


class FaultBase(harness.InstanceTest):
    """One ROOT (postern-setup, no s6): the daemons are started by hand."""

    @classmethod
    def require(cls):
        need(cls, *PROGRAMS)
        need_root(cls, 'fault injection runs the daemons as root under strace')
        if not strace_works():
            raise unittest.SkipTest('strace cannot inject faults here')

    @classmethod
    def new_instance(cls):
        inst = Instance.by_hand(('alice', 'bob'))
        ld = inst.bin('local-deliverer')
        shutil.copy2(ld, ld + '.real')
        cls.n = 0
        return inst

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        if DUPLICATES.get(cls.__name__):
            print('\n[faults] %s: %d duplicate deliveries (at least once, never lost): %s'
                  % (cls.__name__, len(DUPLICATES[cls.__name__]), ', '.join(DUPLICATES[cls.__name__])))

    def setUp(self):
        super().setUp()
        self.trace = self.inst.path('fault.trace')
        self.log = self.inst.path('qm.log')

    # ---- running the daemons --------------------------------------------
    def set_local_deliverer(self, strace_args=None):
        ld = self.inst.bin('local-deliverer')
        tmp = ld + '.new'
        if strace_args is None:
            shutil.copy2(ld + '.real', tmp)
        else:
            with open(tmp, 'w') as f:
                f.write('#!/bin/sh\nexec %s -f -y -o %s %s %s.real "$@"\n'
                        % (STRACE, self.trace, ' '.join("'%s'" % a for a in strace_args), ld))
            os.chmod(tmp, 0o755)
        os.rename(tmp, ld)

    def start_qm(self, strace_args=None):
        cmd = [self.inst.bin('queue-manager'), self.inst.root]
        if strace_args is not None:
            cmd = [STRACE, '-y', '-o', self.trace] + strace_args + cmd
        self.logf = open(self.log, 'ab')
        start = os.path.getsize(self.log)
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT)
        self.inst.wait_for(lambda: b'event=start messages=' in self.qm_log(start) or p.poll() is not None, 15,
                           what='queue-manager started')
        return p, start

    def qm_log(self, start=0):
        with open(self.log, 'rb') as f:
            f.seek(start)
            return f.read()

    def stop_qm(self, p):
        if p.poll() is None:
            qm = p.pid
            if os.path.basename(p.args[0]) == 'strace':
                kids = harness.children(p.pid)
                qm = kids[0] if kids else p.pid
            try:
                os.kill(qm, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.logf.close()
        # deliverers (and strace) must be gone before the next run
        self.inst.wait_for(lambda: not [x for x in self.inst.processes() if x != os.getpid()
                                       and self._is_daemon(x)], 10, what='daemons gone')

    @staticmethod
    def _is_daemon(pid):
        try:
            with open('/proc/%d/cmdline' % pid, 'rb') as f:
                cmd = f.read()
        except OSError:
            return False
        return b'queue-manager' in cmd or b'local-deliverer' in cmd or b'strace' in cmd

    # ---- one case ---------------------------------------------------------
    def message(self, tag):
        lines = [b'Subject: %s' % tag, b'From: bob@example.test', b'']
        lines += [b'line %04d of %s: dots, tabs\tand \xc3\xa9 bytes' % (i, tag) for i in range(120)]
        lines += [b'.', b'..leading dot', b'no final newline']
        return b'\n'.join(lines)

    def copies(self, user, tag):
        return [data for _, data in self.inst.maildir_messages(user) if b'Subject: %s\n' % tag in data]

    def run_case(self, rcpts, qm_strace=None, ld_strace=None, expect_injected=None, label=''):
        """Queue one message, run the faulty queue-manager until every
        recipient has a result (or it died), then a clean one until the
        queue is empty.  Returns (first run's log, {user: copies})."""
        type(self).n += 1
        tag = b'fault-%d-%d' % (os.getpid(), self.n)
        body = self.message(tag)
        qid = inject(self.inst, 'bob@example.test', ['%s@example.test' % u for u in rcpts], body)
        if os.path.exists(self.trace):
            os.unlink(self.trace)
        self.set_local_deliverer(ld_strace)
        args = None
        if qm_strace is not None:
            args = [a.replace('{ID}', qid).replace('{H}', qid[-1]).replace('{ROOT}', self.inst.root)
                    for a in qm_strace]
        p, start = self.start_qm(args)

        def settled():
            log = self.qm_log(start).decode(errors='replace')
            done = sum(1 for u in rcpts if re.search(r'%s rcpt=%s@example.test result=' % (qid, u), log))
            return p.poll() is not None or (done == len(rcpts) and
                                             ('removed=' in log.split(qid, 1)[-1] or
                                              'result=deferred' in log or 'not-saved' in log or
                                              'remove=failed' in log)) or None
        self.inst.wait_for(settled, 20, what='the faulty run to settle\n' + self.qm_log(start).decode(errors='replace'))
        time.sleep(0.2)
        self.stop_qm(p)
        first = self.qm_log(start).decode(errors='replace')
        trace = ''
        if os.path.exists(self.trace):
            with open(self.trace, errors='replace') as f:
                trace = f.read()
        if expect_injected:
            lines = trace.splitlines()
            hits = [l for l in lines if 'INJECTED' in l]
            last = {}
            for l in lines:       # a KILL: the killed process's last call
                pid = l.split(' ', 1)[0] if l[:1].isdigit() else ''
                if '+++ killed by SIGKILL' in l and pid in last:
                    hits.append(last[pid])
                elif not l[len(pid):].lstrip().startswith(('---', '+++', '<...')):
                    last[pid] = l
            self.assertTrue([l for l in hits if re.search(expect_injected, l)],
                            'the fault did not hit %r:\n%s' % (expect_injected, '\n'.join(hits[-10:])))
        # a clean run, flushed, until the queue is empty
        self.set_local_deliverer(None)
        p, start2 = self.start_qm()
        try:
            subprocess.run([self.inst.bin('postern-queue'), '--root', self.inst.root, 'flush'],
                           capture_output=True, timeout=10)
            self.inst.wait_for(lambda: qid not in self.inst.queue_ids(), 20,
                               what='%s delivered after the fault\n%s' % (qid, self.qm_log(start2).decode(errors='replace')))
        finally:
            self.stop_qm(p)
        got = {}
        for u in rcpts:
            cs = self.copies(u, tag)
            self.assertGreaterEqual(len(cs), 1, 'message %s lost for %s\n%s' % (qid, u, first))
            for c in cs:     # whole: the two lines local-deliverer adds, then exactly what was queued
                self.assertEqual(c, b'Return-Path: <bob@example.test>\nDelivered-To: %s@example.test\n' % u.encode()
                                 + body, 'a partial or altered copy for %s' % u)
            got[u] = len(cs)
            if len(cs) > 1:
                DUPLICATES.setdefault(type(self).__name__, []).append('%s %s x%d' % (label, u, len(cs)))
        # nothing half-written left visible in the queue
        self.assertEqual([n for n in os.listdir(self.inst.path('queue', 'tmp')) if n.startswith('qm.')], [])
        return first, got


class QueueManagerFaults(FaultBase):
    """queue-manager's own bookkeeping.  Two local recipients and
    local_concurrency 1: alice's result is recorded by rewriting the
    envelope (bob is still pending), bob's ends the message (removal)."""
    TMP = '{ROOT}/queue/tmp/qm.{ID}'
    ENVDIR = '{ROOT}/queue/env/{H}'
    STEPS = [
        # (name, syscalls, -P path, when, the traced line that must show the fault)
        ('rewrite-open', 'open,openat', TMP, 1, r'qm\.'),
        ('rewrite-write', 'write', TMP, 1, r'write\(\d+</.*/queue/tmp/qm\.'),
        ('rewrite-fsync', 'fsync,fdatasync', TMP, 1, r'fsync\(\d+</.*/queue/tmp/qm\.'),
        ('rewrite-rename', 'rename,renameat,renameat2', TMP, 1, r'rename'),
        ('rewrite-dir-fsync', 'fsync', ENVDIR, 1, r'fsync\(\d+</.*/queue/env/[0-9A-F]>'),
        ('remove-unlink-envelope', 'unlink,unlinkat', '{ROOT}/queue/env/{H}/{ID}', 1, r'unlink'),
        ('remove-dir-fsync', 'fsync', ENVDIR, 2, r'fsync\(\d+</.*/queue/env/[0-9A-F]>'),
        ('remove-unlink-body', 'unlink,unlinkat', '{ROOT}/queue/mess/{H}/{ID}', 1, r'unlink'),
    ]

    def one(self, step, fault):
        name, calls, path, when, hit = step
        spec = 'inject=%s:%s:when=%d' % (calls, 'signal=KILL' if fault == 'KILL' else 'error=' + fault, when)
        first, got = self.run_case(['alice', 'bob'], qm_strace=['-P', path, '-e', spec],
                                   expect_injected=hit, label='%s/%s' % (name, fault))
        if fault != 'KILL' and name.startswith('rewrite'):
            self.assertIn('envelope=not-saved', first, (name, fault))
        return got

    def test_eio_each_step(self):
        for step in self.STEPS:
            self.one(step, 'EIO')

    def test_enospc_each_step(self):
        for step in self.STEPS:
            if step[0].startswith('rewrite'):      # unlink cannot fail with ENOSPC
                self.one(step, 'ENOSPC')

    def test_sigkill_each_step(self):
        for step in self.STEPS:
            self.one(step, 'KILL')

    def test_finished_but_neither_removed_nor_saved_is_not_delivered_again(self):
        """EIO on every unlink and rename of the envelope: a message whose
        last recipient was delivered can be neither removed nor rewritten.
        queue-manager forgot it all the same, and its next scan of env/
        (every 15 minutes, or a flush) found the old envelope, "pending",
        and delivered it again: a copy every scan for as long as the
        fault lasted. It keeps it, done, and tries the removal again"""
        type(self).n += 1
        tag = b'fault-%d-%d' % (os.getpid(), self.n)
        qid = inject(self.inst, 'bob@example.test', ['alice@example.test'], self.message(tag))
        self.set_local_deliverer(None)
        p, start = self.start_qm(['-P', '%s/queue/env/%s/%s' % (self.inst.root, qid[-1], qid),
                                  '-P', '%s/queue/tmp/qm.%s' % (self.inst.root, qid), '-e', 'inject=unlink,unlinkat,rename,renameat,renameat2:error=EIO'])
        try:
            self.inst.wait_for(lambda: b'%s envelope=not-saved' % qid.encode() in self.qm_log(start), 20,
                               what='the removal and the rewrite failing\n' + self.qm_log(start).decode(errors='replace'))
            self.assertIn(b'%s remove=failed' % qid.encode(), self.qm_log(start))
            subprocess.run([self.inst.bin('postern-queue'), '--root', self.inst.root, 'flush'],
                           capture_output=True, timeout=10)
            self.inst.wait_for(lambda: self.qm_log(start).count(b'%s remove=failed' % qid.encode()) >= 2, 45,
                               what='the removal tried again\n' + self.qm_log(start).decode(errors='replace'))
            log = self.qm_log(start).decode(errors='replace')
            self.assertEqual(log.count('%s rcpt=alice@example.test result=delivered' % qid), 1, log)
            self.assertEqual(len(self.copies('alice', tag)), 1)
        finally:
            self.stop_qm(p)
        # a clean run: the envelope on disk still says pending (no result
        # could be recorded), so it may come once more, never lost
        p, start = self.start_qm()
        try:
            self.inst.wait_for(lambda: qid not in self.inst.queue_ids(), 20, what='the queue emptied')
        finally:
            self.stop_qm(p)
        self.assertGreaterEqual(len(self.copies('alice', tag)), 1)

    def test_many_recipients_rewrite_the_envelope_at_most_every_100ms(self):
        """Each result rewrote (and fsynced) the whole envelope: n
        recipients cost n rewrites of an n-line file, quadratic (3000
        recipients drained in 6.5 s, 12000 in 86 s; the format allows
        100000). While jobs of the message are in flight, results now
        make the envelope due for a rewrite at most 100 ms later, once for
        all of them (and the round's end rewrites it). Counted with
        strace, at the default local_concurrency: rewrites (renames of
        tmp/qm.ID) are at most one per 100 ms of the run, plus two"""
        n = 2000
        qid = inject(self.inst, 'bob@example.test', ['nobody%d@example.test' % i for i in range(n)],
                     b'Subject: many\n\nx\n')
        self.set_local_deliverer(None)
        # the default (the class runs with 1) for the whole run: queue-manager
        # takes a change of postern.conf in within a second
        self.inst.set_conf(local_concurrency='10')
        t0 = time.time()
        try:
            p, start = self.start_qm(['-e', 'trace=rename,renameat,renameat2'])   # queue-manager alone: it does the rewrites
            try:
                self.inst.wait_for(lambda: qid not in self.inst.queue_ids(), 170,
                                   what='the message finished\n' + self.qm_log(start)[-2000:].decode(errors='replace'))
                elapsed = time.time() - t0
            finally:
                self.stop_qm(p)
        finally:
            self.inst.set_conf(local_concurrency='1')
        with open(self.trace, errors='replace') as f:
            rewrites = sum(1 for l in f if 'qm.%s' % qid in l and 'rename' in l)
        log = self.qm_log(start).decode(errors='replace')
        self.assertEqual(log.count('%s rcpt=' % qid), n)
        self.assertIn('%s removed=finished' % qid, log)
        self.assertLessEqual(rewrites, int(elapsed * 10) + 2, 'rewrites %d in %.1f s' % (rewrites, elapsed))


class MaildirFaults(FaultBase):
    """Maildir delivery: local-deliverer's mailbox worker (the per-user
    process that writes the Maildir), under `strace -f`; the root
    local-deliverer makes no write(2) on a delivery's path.  Counters are per
    process, so `when` counts the worker's own calls: its fsyncs are the
    new file, then new/ (the trace check proves which one was hit)."""
    MD = '/mail/alice/Maildir'
    STEPS = [
        # (name, strace args, the traced line that must show the fault)
        ('open', lambda e: ['-P', '{ROOT}%s/tmp' % MaildirFaults.MD, '-e', 'inject=openat:%s:when=1' % e],
         r'openat\(\d+</.*/Maildir/tmp>'),
        ('write', lambda e: ['-e', 'trace=write', '-e', 'inject=write:%s:when=1' % e],
         r'write\(\d+</.*/Maildir/tmp/'),
        ('fsync', lambda e: ['-e', 'trace=fsync', '-e', 'inject=fsync:%s:when=1' % e],
         r'fsync\(\d+</.*/Maildir/tmp/'),
        ('link', lambda e: ['-e', 'trace=linkat,link,rename,renameat2', '-e', 'inject=linkat,link,rename,renameat2:%s:when=1' % e],
         r'(link|rename).*Maildir/new'),
        ('dir-fsync', lambda e: ['-e', 'trace=fsync', '-e', 'inject=fsync:%s:when=2' % e],
         r'fsync\(\d+</.*/Maildir/new>'),
    ]

    def one(self, step, fault):
        name, args, hit = step
        e = 'signal=KILL' if fault == 'KILL' else 'error=' + fault
        a = [x.replace('{ROOT}', self.inst.root) for x in args(e)]
        first, got = self.run_case(['alice'], ld_strace=a, expect_injected=hit, label='%s/%s' % (name, fault))
        # the faulty attempt: a temporary result, never a success
        results = re.findall(r'rcpt=alice@example.test result=(\S+) status="([^"]*)"', first)
        self.assertTrue(results, first)
        self.assertEqual(results[0][0], 'deferred', (name, fault, results))
        self.assertTrue(results[0][1].startswith('4.'), (name, fault, results))
        if fault == 'ENOSPC' and name in ('write', 'fsync', 'dir-fsync'):
            self.assertTrue(results[0][1].startswith('4.3.1') or 'died' in results[0][1], results)
        return got

    def test_eio_each_step(self):
        for step in self.STEPS:
            self.one(step, 'EIO')

    def test_enospc_each_step(self):
        for step in self.STEPS:
            self.one(step, 'ENOSPC')

    def test_sigkill_each_step(self):
        for step in self.STEPS:
            self.one(step, 'KILL')


class ReportFaults(FaultBase):
    """A report the sender asked for (RFC 3461 NOTIFY) is due in the saved
    envelope until it is queued. Before, success and delay reports lived
    only in queue-manager's memory: a report that could not be queued, or a
    crash before it was, lost it, and the message was removed without it."""

    def test_success_report_survives_a_failed_injection_and_a_crash(self):
        body = self.message(b'report-%d' % os.getpid())
        qid = inject(self.inst, 'bob@example.test', ['alice@example.test'], body, notify='SUCCESS')
        self.set_local_deliverer(None)
        # queue-manager runs queue-inject for the report under strace, which
        # kills it at its execve: the report cannot be queued
        p, start = self.start_qm(['-f', '-P', self.inst.bin('queue-inject'),
                                  '-e', 'inject=execve:signal=KILL'])
        self.inst.wait_for(lambda: b'dsn=success' in self.qm_log(start) or p.poll() is not None, 20,
                           what='the report tried\n' + self.qm_log(start).decode(errors='replace'))
        first = self.qm_log(start).decode(errors='replace')
        self.assertIn('%s rcpt=alice@example.test result=delivered' % qid, first)
        self.assertRegex(first, r'%s dsn=success to=bob@example.test error=' % qid)
        self.assertNotIn('%s removed=' % qid, first)
        self.assertEqual(len(self.copies('alice', b'report-%d' % os.getpid())), 1)
        # the state that says so is on disk: the crash (SIGKILL, no SIGTERM)
        # loses nothing
        with open(self.inst.path('queue', 'env', qid[-1], qid)) as f:
            self.assertRegex(f.read(), r'\nrcpt\tdelivered\t1\t')
        listing = subprocess.run([self.inst.bin('postern-queue'), '--root', self.inst.root, 'list'],
                                 capture_output=True, text=True).stdout
        self.assertIn('  delivered 1 <alice@example.test> 2.0.0 ', listing)
        qm = harness.children(p.pid)[0]
        os.kill(qm, signal.SIGKILL)
        self.stop_qm(p)
        # a clean queue-manager queues the report at start, and only then
        # removes the message; alice gets no second copy
        p, start = self.start_qm()
        try:
            self.inst.wait_for(lambda: qid not in self.inst.queue_ids(), 20,
                               what='the report queued\n' + self.qm_log(start).decode(errors='replace'))
            self.inst.wait_for(lambda: self.inst.queue_ids() == [], 20, what='the report delivered')
        finally:
            self.stop_qm(p)
        log = self.qm_log(start).decode(errors='replace')
        self.assertRegex(log, r'%s dsn=success to=bob@example.test queued=' % qid)
        self.assertEqual(len(self.copies('alice', b'report-%d' % os.getpid())), 1)
        reports = [m for _, m in self.inst.maildir_messages('bob') if b'multipart/report' in m]
        self.assertEqual(len(reports), 1)
        msg = email.message_from_bytes(reports[0], policy=email.policy.compat32)
        ds = [x for x in msg.walk() if x.get_content_type() == 'message/delivery-status'][0]
        group = ds.get_payload()[1]
        self.assertEqual(group['Action'], 'delivered')
        self.assertEqual(group['Final-Recipient'], 'rfc822; alice@example.test')


class SmtpQueueFaults(unittest.TestCase):
    """The queue on a 2 MB tmpfs, filled up: SMTP says 452 4.3.1, nothing is
    half-written, and the server keeps serving (and accepts again once there
    is room)."""

    def setUp(self):
        need(self, 'postern-setup', 'smtp-listener', 'queue-inject')
        need_root(self, 'mounts a tmpfs')
        self.inst = Instance(services=('smtp-listener',))
        self.inst.setup()
        with open(self.inst.path('conf', 'recipients'), 'a') as f:
            f.write('alice\n')
        q = self.inst.path('queue')
        st = os.stat(q)
        subprocess.run(['cp', '-a', q, q + '.orig'], check=True)
        r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2m,mode=%o,uid=%d,gid=%d'
                            % (st.st_mode & 0o7777, st.st_uid, st.st_gid), 'tmpfs', q], capture_output=True)
        if r.returncode != 0:
            self.inst.stop()
            self.skipTest('cannot mount a tmpfs here: %s' % r.stderr.decode(errors='replace').strip())
        self.mounted = q
        subprocess.run(['cp', '-a', q + '.orig/.', q + '/'], check=True)
        self.inst.start()

    def tearDown(self):
        inst = getattr(self, 'inst', None)
        if inst and inst.root:
            # detach the tmpfs first (lazily: the daemons may still hold it)
            subprocess.run(['umount', '-l', self.mounted], capture_output=True)
            inst.stop()

    def fill(self, leave):
        v = os.statvfs(self.mounted)
        free = v.f_bavail * v.f_frsize
        with open(os.path.join(self.mounted, 'filler'), 'wb') as f:
            f.write(b'\0' * max(0, free - leave))

    def test_queue_full_452(self):
        port = self.inst.port('smtp')
        self.fill(64 * 1024)
        before = set(self.inst.queue_ids())
        big = 'Subject: big\n\n' + ''.join('line %06d %s\n' % (i, 'z' * 70) for i in range(3000))   # ~240 KB
        with harness.Conn(port) as c:
            r = smtp_dialogue(port, [(None, '220'), ('EHLO x', '250'), ('MAIL FROM:<b@client.test>', '250'),
                                     ('RCPT TO:<alice@example.test>', '250'), ('DATA', '354'),
                                     (''.join(l + '\r\n' for l in big.split('\n')[:-1]) + '.', None)], conn=c)
            reply = c.smtp_reply()
            self.assertTrue(reply.startswith('452 4.3.1'), reply)
            # the same session goes on
            smtp_dialogue(port, [('NOOP', '250'), ('RSET', '250'), ('QUIT', '221')], conn=c)
        q = self.mounted
        self.assertEqual(set(self.inst.queue_ids()), before)
        self.assertEqual(self.inst.queue_tmp_files(q), [])                # nothing half-written
        for h in '0123456789ABCDEF':
            for n in os.listdir(os.path.join(q, 'mess', h)):
                self.assertTrue(os.path.exists(os.path.join(q, 'env', h, n)), 'a body without envelope')
        # a small message still fits; the big one once there is room
        self.assertTrue(send_mail(port, 'b@client.test', ['alice@example.test'], 'Subject: small\n\nok\n').startswith('250'))
        os.unlink(os.path.join(q, 'filler'))
        r = send_mail(port, 'b@client.test', ['alice@example.test'], big)
        self.assertTrue(r.startswith('250'), r)
        qid = re.search(r'queued as ([0-9A-F]{16})', r).group(1)
        with open(os.path.join(q, 'mess', qid[-1], qid), 'rb') as f:
            self.assertTrue(f.read().endswith(big.encode()))

    def restart_listener(self):
        """SIGTERM to smtp-listener itself (strace, the service process,
        would only detach from it), then wait for s6 to start the new run."""
        old = self.inst.service_pid('smtp-listener')
        target = old
        with open('/proc/%d/comm' % old) as f:
            if f.read().strip() == 'strace':
                target = harness.children(old)[0]
        os.kill(target, signal.SIGTERM)
        self.inst.wait_for(lambda: self.inst.service_pid('smtp-listener') not in (None, old), 15,
                           what='smtp-listener restarted')
        self.inst.wait_ready('smtp-listener')
        self.inst.wait_for(lambda: harness.port_open(self.inst.port('smtp')), 10, what='smtp port open')

    def test_queue_inject_fault_is_never_250(self):
        """queue-inject under smtp-listener (run under `strace -f` as root, so
        the setuid exec is kept): EIO at each of its four fsyncs, and SIGKILL
        at the last, answer the client 4xx -- never 250 -- and the listener
        goes on serving."""
        need(self, 'postern-setup', 'smtp-listener', 'queue-inject')
        if not strace_works():
            self.skipTest('strace cannot inject faults here')
        port = self.inst.port('smtp')
        run = self.inst.path('service', 'smtp-listener', 'run')
        with open(run) as f:
            orig = f.read()
        trace = self.inst.path('smtp.trace')
        prog = '%s/bin/smtp-listener' % self.inst.root
        try:
            for when, fault in ((1, 'error=EIO'), (2, 'error=EIO'), (3, 'error=EIO'), (4, 'error=EIO'),
                                (4, 'signal=KILL')):
                with open(run + '.new', 'w') as f:
                    f.write(orig.replace('exec ' + prog, 'exec %s -f -y -o %s -e trace=fsync -e inject=fsync:%s:when=%d %s'
                                         % (STRACE, trace, fault, when, prog)))
                os.chmod(run + '.new', 0o755)
                os.rename(run + '.new', run)
                self.restart_listener()
                before = set(self.inst.queue_ids())
                with harness.Conn(port) as c:
                    smtp_dialogue(port, [(None, '220'), ('EHLO x', '250'), ('MAIL FROM:<b@client.test>', '250'),
                                         ('RCPT TO:<alice@example.test>', '250'), ('DATA', '354'),
                                         ('Subject: fsync %d\r\n\r\nbody\r\n.' % when, None)], conn=c)
                    reply = c.smtp_reply()
                    self.assertTrue(reply.startswith('4'), (when, fault, reply))    # never 250
                    smtp_dialogue(port, [('NOOP', '250'), ('QUIT', '221')], conn=c)
                with open(trace) as f:
                    hit = [l for l in f if ('INJECTED' in l or 'killed' in l) and '/queue/' in l or 'SIGKILL' in l]
                self.assertTrue(hit, (when, fault))
                new = set(self.inst.queue_ids()) - before
                if fault == 'error=EIO':
                    self.assertEqual(new, set(), (when, 'a failed commit left a message'))
                else:
                    self.assertLessEqual(len(new), 1)     # whole but unacknowledged: a duplicate in waiting
                    for qid in new:
                        with open(self.inst.path('queue', 'mess', qid[-1], qid), 'rb') as f:
                            self.assertIn(b'Subject: fsync 4', f.read())
                self.assertEqual(self.inst.queue_tmp_files(), [])
        finally:
            with open(run + '.new', 'w') as f:
                f.write(orig)
            os.chmod(run + '.new', 0o755)
            os.rename(run + '.new', run)
            self.restart_listener()
        self.assertTrue(send_mail(port, 'b@client.test', ['alice@example.test'], 'Subject: after\n\nok\n').startswith('250'))


if __name__ == '__main__':
    unittest.main()
