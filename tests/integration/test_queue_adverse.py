"""test_queue_adverse.py - queue-manager and postern-queue under adverse
conditions: envelopes whose times a wrong clock (or an operator's edit)
put far in the future, and a queue whose trigger FIFO is not a FIFO.

The envelopes are edited as an operator would (same owner and mode,
written beside and renamed into place) while queue-manager is down; then
it starts and must deliver, retry and expire as if the times were sane.
"""

import os
import stat
import subprocess
import time
import unittest

from harness import HarnessError, need, need_root
import test_delivery
from test_delivery import PROGRAMS, delivery_instance, inject

FAR = 10 * 365 * 86400          # ten years


class QueueAdverseTest(unittest.TestCase):
    def setUp(self):
        need(self, *PROGRAMS)
        self.inst = delivery_instance('postmaster: alice\n')

    tearDown = test_delivery.DeliveryTest.tearDown

    def qm_down(self):
        pid = self.inst.service_pid('queue-manager')
        self.inst.svc('queue-manager', '-d')
        try:
            self.inst.wait_down('queue-manager')
        except HarnessError as e:
            where = ''
            for f in ('status', 'wchan', 'stack', 'syscall'):
                try:
                    with open('/proc/%s/%s' % (pid, f)) as g:
                        where += '--- /proc/%s/%s\n%s\n' % (pid, f, g.read())
                except OSError:
                    pass
            raise HarnessError('%s\n%s\n%s\n--- log:\n%s' % (e, self.inst.svstat('queue-manager'), where,
                                                           self.inst.log('queue-manager')[-3000:]))

    def qm_up(self):
        self.inst.svc('queue-manager', '-u')
        self.inst.wait_for(lambda: self.inst.service_pid('queue-manager'), 15, what='queue-manager up')

    def edit_envelope(self, qid, birth=None, next_try=None):
        """Rewrite env/<h>/ID as an operator would: birth and/or every
        recipient's next_try replaced, owner and mode kept."""
        path = self.inst.path('queue', 'env', qid[-1], qid)
        st = os.stat(path)
        with open(path) as f:
            lines = f.read().splitlines()
        out = []
        for l in lines:
            if l.startswith('birth ') and birth is not None:
                l = 'birth %d' % birth
            elif l.startswith('rcpt\t') and next_try is not None:
                fields = l.split('\t')
                fields[3] = str(next_try)
                l = '\t'.join(fields)
            out.append(l)
        with open(path + '.new', 'w') as f:
            f.write('\n'.join(out) + '\n')
        os.chown(path + '.new', st.st_uid, st.st_gid)
        os.chmod(path + '.new', 0o600)
        os.rename(path + '.new', path)

    # the same waits as test_delivery's (self.inst, the queue-manager log)
    wait_msgs = test_delivery.DeliveryTest.wait_msgs
    wait_queue_empty = test_delivery.DeliveryTest.wait_queue_empty

    def test_birth_past_the_deliverer_protocol_is_delivered(self):
        """An envelope may hold any birth up to 2^63-1, the job record to a
        deliverer only up to 9e18: the deliverer refused such a job without
        answering, and queue-manager waited for that answer for ever (the
        recipient busy, a concurrency slot gone, nothing logged by it)"""
        self.qm_down()
        qid = inject(self.inst, 'bob@example.test', ['alice@example.test'], b'Subject: far\n\nx\n')
        self.edit_envelope(qid, birth=2 ** 63 - 1)
        self.qm_up()
        (_, data), = self.wait_msgs('alice')
        self.assertTrue(data.endswith(b'Subject: far\n\nx\n'))
        self.wait_queue_empty()

    def test_next_try_far_in_the_future_is_not_waited_for(self):
        """No retry is ever scheduled more than 4 hours after the failure
        (lib/retry.h): a next_try further ahead was made by a clock that
        has since gone back (or by an edit); it stalled the recipient until
        the clock caught up, ten years here. It is due now instead"""
        self.qm_down()
        qid = inject(self.inst, 'bob@example.test', ['alice@example.test'], b'Subject: later\n\nx\n')
        self.edit_envelope(qid, next_try=int(time.time()) + FAR)
        self.qm_up()
        (_, data), = self.wait_msgs('alice')
        self.assertTrue(data.endswith(b'Subject: later\n\nx\n'))
        self.wait_queue_empty()
        self.assertIn('%s rcpt=alice@example.test next_try=' % qid, self.inst.log('queue-manager'))

    def test_message_born_in_the_future_still_expires(self):
        """A birth ahead of the clock (the clock went back) never expired:
        the lifetime counts from birth, and the age stayed 0, so a
        recipient that keeps failing was retried every 400 s for ten years.
        It counts from when queue-manager first saw it instead"""
        self.inst.set_conf(queue_lifetime='60s')
        with open(self.inst.path('conf', 'mailboxes'), 'a') as f:
            f.write('stuck:20999:20999:/nonexistent/postern-test/Maildir\n')
        self.qm_down()
        qid = inject(self.inst, 'bob@example.test', ['stuck@example.test'], b'Subject: future\n\nx\n')
        self.edit_envelope(qid, birth=int(time.time()) + FAR)
        self.qm_up()
        self.inst.wait_log('queue-manager', '%s rcpt=stuck@example.test result=deferred' % qid)
        (_, data), = self.wait_msgs('bob', 1, timeout=100)
        self.assertIn(b'Action: failed', data)
        self.assertIn(b'queue lifetime expired', data)
        log = self.inst.log('queue-manager')
        self.assertIn('%s rcpt=stuck@example.test result=expired' % qid, log)
        self.assertIn('%s birth=' % qid, log)
        self.wait_queue_empty()

    def test_unusable_envelope_is_tried_once_per_flush(self):
        """An envelope queue-manager cannot use (an operator's edit left an
        unknown field, a line too long, another version, another id) is
        named in the log and tried again in 10 minutes, or once more on a
        flush. After a flush it was tried again on every turn of the loop,
        as long as it stayed unusable: a CPU spinning and about 2,000 log
        lines a second."""
        edits = {'unknown field': lambda t: t + 'colour blue\n',
                 'line too long': lambda t: t.replace('client ', 'client ' + 'x' * 5000, 1),
                 'not a postern-envelope 1 file': lambda t: t.replace('postern-envelope 1', 'postern-envelope 2'),
                 'id field': lambda t: t.replace('id 6', 'id 7', 1)}
        qids = {why: inject(self.inst, 'bob@example.test', ['dave@far.test'], b'Subject: x\n\nx\n')
                for why in edits}
        for qid in qids.values():
            self.inst.wait_log('queue-manager', '%s rcpt=dave@far.test result=deferred' % qid)
        self.qm_down()
        for why, edit in edits.items():
            path = self.inst.path('queue', 'env', qids[why][-1], qids[why])
            st = os.stat(path)
            with open(path) as f:
                text = f.read()
            with open(path + '.new', 'w') as f:
                f.write(edit(text))
            os.chown(path + '.new', st.st_uid, st.st_gid)
            os.rename(path + '.new', path)
        self.qm_up()
        for why, qid in qids.items():
            self.inst.wait_log('queue-manager', '%s envelope=unreadable why="' % qid)
            line, = [l for l in self.inst.log('queue-manager').splitlines() if qid + ' envelope=unreadable' in l]
            self.assertIn(why, line)
        self.inst.run('postern-queue', 'flush')
        self.inst.wait_log('queue-manager', 'flush=requested')
        # a message queued after the flush, delivered: queue-manager has
        # been round its loop since, many times over
        for i in range(3):
            inject(self.inst, 'bob@example.test', ['alice@example.test'], b'Subject: after %d\n\nx\n' % i)
            self.inst.wait_for(lambda: len(self.inst.maildir_messages('alice')) > i, 15, what='delivery')
            time.sleep(0.2)
        log = self.inst.log('queue-manager')
        for qid in qids.values():
            self.assertEqual(log.count('%s envelope=unusable' % qid), 2, log[-2000:])
        # postern-queue names each on stderr, under its file's id, and lists
        # none (the one with another id inside was listed under that id)
        r = self.inst.run('postern-queue', 'list', check=False)
        self.assertEqual(r.stdout.strip(), '')
        for why, qid in qids.items():
            self.assertIn('postern-queue: %s: ' % qid, r.stderr)
        self.assertIn('postern-queue: %s: id field 7' % qids['id field'], r.stderr)

    def test_misplaced_envelope_is_named(self):
        """An envelope put back by hand into another env/<h> than its id's
        is found by nothing that looks it up by id: queue-manager and
        postern-queue passed over it without a word, a message neither
        delivered nor listed. Both now name it at each look."""
        qid = inject(self.inst, 'bob@example.test', ['dave@far.test'], b'Subject: x\n\nx\n')
        self.inst.wait_log('queue-manager', '%s rcpt=dave@far.test result=deferred' % qid)
        self.qm_down()
        other = '0' if qid[-1] != '0' else '1'
        os.rename(self.inst.path('queue', 'env', qid[-1], qid), self.inst.path('queue', 'env', other, qid))
        self.qm_up()
        self.inst.wait_log('queue-manager', '%s envelope=misplaced dir=env/%s want=env/%s action=skipped'
                           % (qid, other, qid[-1]))
        r = self.inst.run('postern-queue', 'list')
        self.assertNotIn(qid, r.stdout)
        self.assertIn('postern-queue: %s: misplaced in env/%s (belongs in env/%s)' % (qid, other, qid[-1]),
                      r.stderr)

    def test_trigger_not_a_fifo_is_refused(self):
        """lock/trigger replaced by a regular file: queue-manager polled it,
        always readable, in a busy loop that used a whole CPU, and
        postern-queue flush said "flush requested" into a file nobody
        reads. Both now say what is wrong and fail (111); queue-inject, for
        which the trigger is only a hint, no longer writes into it"""
        # the log trails the daemon (s6-log): its start line is there first
        self.inst.wait_log('queue-manager', 'queue-manager: info: - event=start')
        self.qm_down()
        starts = self.inst.log('queue-manager').count('event=start')
        trig = self.inst.path('queue', 'lock', 'trigger')
        st = os.stat(trig)
        self.assertTrue(stat.S_ISFIFO(st.st_mode))
        os.unlink(trig)
        with open(trig, 'w'):
            pass
        os.chown(trig, st.st_uid, st.st_gid)
        os.chmod(trig, 0o600)
        r = subprocess.run([self.inst.bin('postern-queue'), '--root', self.inst.root, 'flush'],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertEqual(r.returncode, 111, r)
        self.assertIn(b'not a FIFO', r.stderr)
        self.assertNotIn(b'flush requested', r.stdout)
        # queue-inject still queues (the trigger is only a hint) but no
        # longer grows the file by a byte a message
        qid = inject(self.inst, 'bob@example.test', ['alice@example.test'], b'Subject: t\n\nx\n')
        self.assertEqual(os.path.getsize(trig), 0)
        self.assertTrue(os.path.exists(self.inst.path('queue', 'env', qid[-1], qid)))
        self.inst.svc('queue-manager', '-u')
        self.inst.wait_log('queue-manager', 'not a FIFO')
        self.assertEqual(self.inst.log('queue-manager').count('event=start'), starts)

    def test_second_queue_manager_refused(self):
        """A second queue-manager on the same queue (an operator starting
        one by hand while s6 runs the other) ran: both dispatched the same
        recipients (twice delivered), both rewrote the envelopes through the
        same tmp/qm.ID (one's O_TRUNC under the other's write) and each
        swept the other's rewrites at start. It refuses, as qmail-send does
        (lock/sendmutex), and the first goes on"""
        first = self.inst.service_pid('queue-manager')
        p = subprocess.Popen([self.inst.bin('queue-manager'), self.inst.root], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            out, _ = p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            p.terminate()
            out, _ = p.communicate(timeout=20)
            self.fail('a second queue-manager ran:\n' + out.decode(errors='replace'))
        self.assertEqual(p.returncode, 111, out)
        self.assertIn(b'another queue-manager', out)
        self.assertNotIn(b'event=start', out)
        self.assertEqual(self.inst.service_pid('queue-manager'), first)
        inject(self.inst, 'bob@example.test', ['alice@example.test'], b'Subject: still\n\nx\n')
        self.wait_msgs('alice')
        self.wait_queue_empty()

    def test_odd_names_in_the_queue_skipped_and_told_truly(self):
        """Dotfiles, names that are not queue ids and subdirectories in
        todo/ and env/<h>/ are skipped, the valid message next to them is
        delivered and postern-queue still lists. A subdirectory with a queue
        id's name in env/<h>/ (no body) was logged removed=envelope-without-
        message although unlink() failed (EISDIR), at every scan: the log
        now says the removal failed, and why"""
        self.qm_down()
        q = self.inst.path('queue')
        qid = inject(self.inst, 'bob@example.test', ['alice@example.test'], b'Subject: among\n\nx\n')
        st = os.stat(os.path.join(q, 'env', qid[-1], qid))
        odd = '0000000000000000'
        for path, isdir in ((os.path.join(q, 'env', '0', odd), True), (os.path.join(q, 'todo', 'sub'), True),
                            (os.path.join(q, 'env', '0', '.hidden'), False),
                            (os.path.join(q, 'env', '0', 'not-an-id'), False),
                            (os.path.join(q, 'todo', '.x'), False)):
            if isdir:
                os.mkdir(path, 0o700)
            else:
                with open(path, 'w') as f:
                    f.write('x\n')
            os.chown(path, st.st_uid, st.st_gid)
        self.qm_up()
        self.wait_msgs('alice')
        log = self.inst.wait_log('queue-manager', '%s remove=failed' % odd)
        self.assertNotIn('%s removed=' % odd, log)
        self.assertIn('Is a directory', log.split('%s remove=failed' % odd, 1)[1].split('\n', 1)[0])
        self.assertTrue(os.path.isdir(os.path.join(q, 'env', '0', odd)))
        r = subprocess.run([self.inst.bin('postern-queue'), '--root', self.inst.root, 'stat'],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertEqual(r.returncode, 0, r)

    def test_message_removed_by_hand_is_forgotten(self):
        """An operator removes a queued message's files by hand (as qmail
        admins do with qmail-remove): queue-manager, which knew it,
        logged envelope=unusable "No such file or directory" every 10
        minutes for ever and kept it. A vanished envelope is a message gone
        (rewrites rename over it, never unlink it first): forgotten, once"""
        need_root(self, 'its stuck mailbox has a uid of its own (20999), which only root can deliver as')
        with open(self.inst.path('conf', 'mailboxes'), 'a') as f:
            f.write('stuck:20999:20999:/nonexistent/postern-test/Maildir\n')
        qid = inject(self.inst, 'bob@example.test', ['stuck@example.test'], b'Subject: rm\n\nx\n')
        self.inst.wait_log('queue-manager', '%s rcpt=stuck@example.test result=deferred' % qid)
        path = self.inst.path('queue', 'env', qid[-1], qid)
        self.inst.wait_for(lambda: '\t4.2.0 ' in open(path).read(), 10, what='the deferral saved')
        os.unlink(path)
        os.unlink(self.inst.path('queue', 'mess', qid[-1], qid))
        self.inst.run('postern-queue', 'flush')
        log = self.inst.wait_log('queue-manager', '%s envelope=gone' % qid)
        self.assertNotIn('%s envelope=unusable' % qid, log)
        self.inst.run('postern-queue', 'flush')
        self.inst.wait_log('queue-manager', 'flush=requested', 10)
        inject(self.inst, 'bob@example.test', ['alice@example.test'], b'Subject: after\n\nx\n')
        self.wait_msgs('alice')
        log = self.inst.log('queue-manager')
        self.assertEqual(log.count('%s envelope=gone' % qid), 1, log)
        self.assertNotIn('%s envelope=unusable' % qid, log)

    def test_one_bounce_for_many_failures_at_concurrency_one(self):
        """A round ended whenever no job of the message was in flight,
        and each round end sent the failures so far: at local_concurrency 1
        every failed recipient got its own report (20 here, thousands for
        a big list), though the rest were due at once. A round now ends
        only when nothing of the message is due either: one report"""
        self.inst.set_conf(local_concurrency='1')
        self.qm_down()
        n = 20
        qid = inject(self.inst, 'bob@example.test', ['nobody%d@example.test' % i for i in range(n)]
                     + ['alice@example.test'], b'Subject: list\n\nx\n')
        self.qm_up()
        self.wait_msgs('alice')
        (_, data), = self.wait_msgs('bob')
        self.wait_queue_empty()
        self.assertEqual(data.count(b'Final-Recipient:'), n)
        log = self.inst.log('queue-manager')
        self.assertEqual(log.count('%s dsn=failure' % qid), 1, log)
        self.assertEqual(len(self.inst.maildir_messages('bob')), 1)

    def test_unreadable_queue_directories_are_named(self):
        """tmp/<h>/ and mess/<h>/ that queue-manager cannot read (a wrong
        owner after a restore) were skipped by its sweep without a word;
        env/<h>/ was named (scan=env/3). Each is named now, and the
        messages elsewhere are delivered"""
        need_root(self, 'gives queue directories to root')
        self.qm_down()
        q = self.inst.path('queue')
        qid = inject(self.inst, 'bob@example.test', ['alice@example.test'], b'Subject: x\n\nx\n')
        for d in ('tmp/3', 'mess/%s' % ('4' if qid[-1] != '4' else '5')):
            os.chown(os.path.join(q, d), 0, 0)
            os.chmod(os.path.join(q, d), 0o700)
        self.qm_up()
        self.wait_msgs('alice')
        log = self.inst.wait_log('queue-manager', 'sweep=tmp/3 error=')
        self.assertIn('sweep=mess/%s error=' % ('4' if qid[-1] != '4' else '5'), log)

    def test_high_concurrency_does_not_deadlock(self):
        """local_concurrency may be up to 1000. queue-manager sent the jobs
        of a pass with blocking writes, reading no result meanwhile;
        local-deliverer, its results unread, blocked writing the next one
        and stopped reading jobs: from about 500 jobs in flight both waited
        for each other for ever (seen here: 600 messages, nothing delivered,
        queue-manager deaf even to SIGTERM). A full socket now ends the
        pass; results are read, and sending goes on"""
        self.inst.set_conf(local_concurrency='1000')
        self.qm_down()
        n = 1000
        inject(self.inst, 'bob@example.test', ['alice+%d@example.test' % i for i in range(n)],
               b'Subject: many\n\nx\n')
        self.qm_up()
        self.wait_msgs('alice', n, timeout=120)
        self.wait_queue_empty()
        # with its 64 workers and 256 children busy, local-deliverer reads
        # no more jobs (queue-manager waits): none deferred for want of a
        # process. It deferred them with 4.3.2 for their retry interval,
        # one run in four here (124 of 1000 once), and this test timed out
        self.assertNotIn('result=deferred', self.inst.log('queue-manager'))
        self.inst.svc('queue-manager', '-d')
        self.inst.wait_down('queue-manager')


if __name__ == '__main__':
    unittest.main()
