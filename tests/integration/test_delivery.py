"""test_delivery.py - queue-manager, local-deliverer and postern-queue on a
throwaway instance (harness.Instance, only the queue-manager service).

Messages enter through the real ROOT/bin/queue-inject (fd 0 message, fd 1
NUL-framed envelope on a socket), exactly as smtp-listener and sendmail hand
them over; they must come out in the real users' Maildirs, owned by the
users, with Return-Path and Delivered-To prepended and the body unchanged.
"""

import email
import email.policy
import email.utils
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from harness import Instance, need, need_root, proc_status

PROGRAMS = ('postern-setup', 'postern-user', 'queue-inject', 'queue-manager',
            'local-deliverer', 'postern-queue')


def inject(inst, sender, rcpts, message, extra=()):
    """Run queue-inject; return the new queue id."""
    recs = [b'F' + sender.encode()] + [r.encode() for r in extra]
    recs += [b'T' + r.encode() + b'\t\t' for r in rcpts]
    return inject_records(inst, b''.join(r + b'\0' for r in recs) + b'\0', message)


def inject_records(inst, records, message):
    """Run queue-inject with these raw envelope records (NUL-framed, ending
    in the empty record); return the new queue id."""
    a, b = socket.socketpair()
    p = subprocess.Popen([inst.bin('queue-inject')], stdin=subprocess.PIPE, stdout=b,
                         stderr=subprocess.PIPE)
    b.close()
    p.stdin.write(message)
    p.stdin.close()
    a.sendall(records)
    a.shutdown(socket.SHUT_WR)
    out = a.makefile('rb').read().decode().strip()
    a.close()
    err = p.stderr.read().decode(errors='replace')
    if p.wait() != 0:
        raise AssertionError('queue-inject exit %d: %s' % (p.returncode, err))
    return out


def mailbox_ids(inst, name):
    with open(inst.path('conf', 'mailboxes')) as f:
        for line in f:
            fields = line.rstrip('\n').split(':')
            if fields[0] == name:
                return int(fields[1]), int(fields[2])
    raise AssertionError('no mailbox ' + name)


def write_conf(inst, name, text):
    """replace conf/<name> atomically (0644), as an operator's editor would"""
    path = inst.path('conf', name)
    with open(path + '.new', 'w') as f:
        f.write(text)
    os.chmod(path + '.new', 0o644)
    os.rename(path + '.new', path)


def write_aliases(inst, text):
    write_conf(inst, 'aliases', text)


def write_mailboxes(inst, lines):
    write_conf(inst, 'mailboxes', ''.join(lines))


def maildir_pid(path):
    """The pid in a Maildir file name "<sec>.M<usec>P<pid>R<hex>.<host>...":
    the process that wrote the file."""
    m = re.search(r'\.M\d+P(\d+)R[0-9a-fA-F]+\.', os.path.basename(path))
    if not m:
        raise AssertionError('no pid in the Maildir name ' + path)
    return int(m.group(1))


def is_local_deliverer(pid):
    try:
        return os.path.basename(os.readlink('/proc/%d/exe' % pid)) == 'local-deliverer'
    except OSError:
        return False


def ld_children(inst):
    """{pid: status} of the children of the root local-deliverer"""
    out = {}
    for p in inst.processes():
        try:
            if not is_local_deliverer(p):
                continue
            st = proc_status(p)
            parent = int(st['PPid'][0])
            if is_local_deliverer(parent) and proc_status(parent)['Uid'][0] == '0':
                out[p] = st
        except (OSError, KeyError, ValueError, IndexError):
            pass
    return out


def workers(inst, uid=None):
    """{pid: status} of local-deliverer's mailbox workers (children of the
    root local-deliverer that run as a mail user), of uid if given"""
    return {p: st for p, st in ld_children(inst).items()
            if st['Uid'][0] != '0' and (uid is None or int(st['Uid'][0]) == uid)}


def worker_ids(inst, pid):
    """(uid, gid) of local-deliverer's mailbox worker pid: from /proc while
    it lives, else from its "event=worker_retired" log line; None if pid
    was no worker"""
    st = workers(inst).get(pid)
    if st:
        return int(st['Uid'][0]), int(st['Gid'][0])
    m = re.search(r'event=worker_retired pid=%d uid=(\d+) gid=(\d+) ' % pid, inst.log('queue-manager'))
    return (int(m.group(1)), int(m.group(2))) if m else None


def delivery_instance(aliases):
    """queue-manager and local-deliverer, users alice and bob, the given
    aliases file, started; no remote deliveries (nothing leaves loopback):
    non-local recipients stay queued with 4.4.1"""
    inst = Instance(services=['queue-manager'])
    inst.setup()
    for u in ('alice', 'bob'):
        inst.add_user(u, 'pw-' + u)
    write_aliases(inst, aliases)
    return inst.without_remote().start()


class DeliveryTest(unittest.TestCase):
    def setUp(self):
        need(self, *PROGRAMS)
        # as an ordinary user too: every mail user is that user; the tests
        # of uids, and those with a mailbox of another uid, need_root
        self.inst = delivery_instance('postmaster: alice\nabuse: alice\n'
                                      'loop1: loop2\nloop2: loop1@example.test\n'
                                      'team: alice, bob@example.test\n'
                                      'fwd: alice, dave@far.test\n')

    def tearDown(self):
        inst = getattr(self, 'inst', None)
        if inst is not None:
            inst.stop()

    def wait_msgs(self, name, n=1, timeout=20):
        return self.inst.wait_for(lambda: len(self.inst.maildir_messages(name)) >= n and
                                  self.inst.maildir_messages(name), timeout,
                                  what=lambda: '%d message(s) for %s\n%s' % (n, name, self.inst.log('queue-manager')))

    def wait_queue_empty(self, timeout=20):
        self.inst.wait_for(lambda: not self.inst.queue_ids(), timeout,
                           what=lambda: 'an empty queue\n' + self.inst.log('queue-manager'))

    def test_local_delivery_exact(self):
        body = (b'Subject: exact\nFrom: bob@example.test\n\nline one\n.\n..dots\n'
                b'tab\there \xc3\xa9\nno final newline')
        qid = inject(self.inst, 'bob@example.test', ['Alice@Example.Test'], body)
        (path, data), = self.wait_msgs('alice')
        self.assertIn('/new/', path)
        want = b'Return-Path: <bob@example.test>\nDelivered-To: Alice@Example.Test\n' + body
        self.assertEqual(data, want)
        st = os.stat(path)
        uid, gid = mailbox_ids(self.inst, 'alice')
        self.assertEqual((st.st_uid, st.st_gid), (uid, gid))
        self.assertEqual(st.st_mode & 0o777, 0o600)
        self.wait_queue_empty()
        log = self.inst.log('queue-manager')
        self.assertIn('%s rcpt=Alice@Example.Test result=delivered' % qid, log)

    def test_finished_bodies_removed_after_the_batched_fsync(self):
        # queue-manager unlinks a finished message's envelope at once and its
        # body after the batch's env/<h> fsync (at most 100 ms later): the
        # queue ends with neither, and the log names every removal
        q = self.inst.path('queue')
        ids = [inject(self.inst, 'bob@example.test', ['alice@example.test'], b'Subject: %d\n\nx\n' % i)
               for i in range(30)]
        self.wait_msgs('alice', 30)
        self.wait_queue_empty()
        bodies = lambda: [n for h in '0123456789ABCDEF' for n in os.listdir(os.path.join(q, 'mess', h))]
        self.inst.wait_for(lambda: not bodies(), 5, what='no bodies left in mess/: %s' % bodies())
        log = self.inst.log('queue-manager')
        for qid in ids:
            self.assertIn('%s removed=finished' % qid, log)
        self.assertNotIn('bodies=kept', log)

    def test_plus_detail_and_team_alias(self):
        inject(self.inst, 'carol@far.test', ['bob+lists@example.test', 'team@example.test'],
               b'Subject: t\n\nx\n')
        self.wait_msgs('alice', 1)
        self.wait_msgs('bob', 2)
        self.wait_queue_empty()
        bob = [d for _, d in self.inst.maildir_messages('bob')]
        self.assertTrue(any(b'Delivered-To: bob+lists@example.test\n' in d for d in bob))
        self.assertTrue(any(b'Delivered-To: team@example.test\n' in d for d in bob))

    def test_alias_member_deferred_gives_the_others_no_duplicates(self):
        """An alias of several members goes on as one new message to all of
        them, each then retried alone. Delivered in the alias's own job, a
        member whose Maildir could not be written deferred the job, and
        every retry gave the other members the message again (seen here:
        alice got it once per attempt)."""
        inject(self.inst, 'carol@far.test', ['bob@example.test'], b'Subject: first\n\nx\n')
        self.wait_msgs('bob')
        self.wait_queue_empty()
        new = os.path.join(self.inst.maildir('bob'), 'new')
        os.chmod(new, 0)
        try:
            qid = inject(self.inst, 'carol@far.test', ['team@example.test'], b'Subject: team\n\nonce\n')
            self.wait_msgs('alice')
            log = lambda: self.inst.log('queue-manager')
            self.inst.wait_for(lambda: 'rcpt=bob@example.test result=deferred' in log(), 15,
                               what='bob deferred\n' + log())
            self.assertIn('%s rcpt=team@example.test result=delivered' % qid, log())   # expanded at once
            for n in (2, 3):                        # two more attempts for bob
                self.inst.run('postern-queue', 'flush')
                self.inst.wait_for(lambda: log().count('rcpt=bob@example.test result=deferred') >= n, 15,
                                   what='attempt %d for bob\n%s' % (n, log()))
            self.assertEqual(len(self.inst.maildir_messages('alice')), 1)
        finally:
            os.chmod(new, 0o700)
        self.inst.run('postern-queue', 'flush')
        bob = self.wait_msgs('bob', 2)
        self.wait_queue_empty()
        self.assertEqual(sum(1 for _, d in bob if d.endswith(b'\n\nonce\n')), 1)
        (_, a), = self.inst.maildir_messages('alice')
        self.assertIn(b'Delivered-To: alice@example.test\nDelivered-To: team@example.test\n', a)

    def test_alias_keeping_a_copy_is_no_loop(self):
        """"bob: bob, alice, dave@far.test" keeps a copy in bob's own mailbox
        (postern-aliases(5)): bob is delivered in the alias's job, the
        others get one new message; put in that message, bob would have
        been the alias again, and a Delivered-To loop"""
        write_aliases(self.inst, 'postmaster: alice\nbob: bob, alice, dave@far.test\n')
        qid = inject(self.inst, 'carol@far.test', ['bob@example.test'], b'Subject: keep\n\nkept\n')
        (_, b), = self.wait_msgs('bob')
        (_, a), = self.wait_msgs('alice')
        self.assertTrue(b.startswith(b'Return-Path: <carol@far.test>\nDelivered-To: bob@example.test\nSubj'), b)
        self.assertIn(b'Delivered-To: alice@example.test\nDelivered-To: bob@example.test\n', a)
        log = self.inst.wait_log('queue-manager', '%s rcpt=bob@example.test result=delivered' % qid)
        self.assertNotIn('loop', log)
        self.assertIn('rcpt=dave@far.test result=deferred', self.inst.wait_log('queue-manager', 'dave@far.test'))
        self.inst.run('postern-queue', 'delete', 'ALL')

    def test_alias_name_with_plus(self):
        """postern-aliases(5) allows '+' in an alias name; such an alias is
        found as a whole before the "+detail" is dropped (as Postfix looks
        up "list+x" before "list"), for a recipient and for an alias's
        target. It used to be dead: list+x went to list's mailbox"""
        write_aliases(self.inst, 'postmaster: alice\nbob+lists: alice\nall: Bob+Lists\n')
        inject(self.inst, 'carol@far.test', ['BOB+lists@example.test'], b'Subject: one\n\nx\n')
        inject(self.inst, 'carol@far.test', ['all@example.test'], b'Subject: two\n\nx\n')
        inject(self.inst, 'carol@far.test', ['bob+other@example.test'], b'Subject: three\n\nx\n')
        self.wait_queue_empty()
        alice = sorted(d.split(b'Subject: ')[1] for _, d in self.inst.maildir_messages('alice'))
        bob = [d.split(b'Subject: ')[1] for _, d in self.inst.maildir_messages('bob')]
        self.assertEqual(alice, [b'one\n\nx\n', b'two\n\nx\n'])
        self.assertEqual(bob, [b'three\n\nx\n'])

    def test_alias_expanding_past_the_limit_bounces_5_2_4(self):
        """An alias that expands to more than 1000 addresses bounces with
        RFC 3463's X.2.4 (mailing list expansion problem). It said 5.3.4,
        "message too big for system", which is about the message's size"""
        write_aliases(self.inst, 'postmaster: alice\n' +
                      'big1: %s\n' % ', '.join('u%d' % i for i in range(600)) +
                      'big2: %s\n' % ', '.join('v%d' % i for i in range(600)) +
                      'all: big1, big2\n')
        qid = inject(self.inst, 'bob@example.test', ['all@example.test'], b'Subject: many\n\nx\n')
        (_, data), = self.wait_msgs('bob')
        self.check_report(data, '5.2.4', 'all@example.test')
        self.assertIn('%s rcpt=all@example.test result=failed status="5.2.4 ' % qid,
                      self.inst.log('queue-manager'))
        self.wait_queue_empty()

    def test_alias_member_without_a_mailbox_bounces_naming_it(self):
        """A member of an alias that has no mailbox fails the alias's
        delivery for good, so that the sender gets a report naming it, as
        Postfix's local(8) bounces such a member, while the other members
        keep their copy. It was only logged: the sender heard nothing"""
        write_aliases(self.inst, 'postmaster: alice\nhalf: alice, ghost\nsolo: ghost\n')
        q1 = inject(self.inst, 'bob@example.test', ['half@example.test'], b'Subject: half\n\nx\n')
        (_, data), = self.wait_msgs('alice')
        self.assertIn(b'Delivered-To: half@example.test\n', data)
        (_, data), = self.wait_msgs('bob')
        self.check_report(data, '5.1.1', 'half@example.test')
        self.assertIn(b'Diagnostic-Code: X-Postern; ghost (expanded from half@example.test): no such user\n',
                      data)
        self.wait_queue_empty()
        q2 = inject(self.inst, 'bob@example.test', ['solo@example.test'], b'Subject: solo\n\nx\n')
        self.wait_msgs('bob', 2)
        self.wait_queue_empty()
        self.assertEqual(len(self.inst.maildir_messages('bob')), 2)     # one report each
        self.assertEqual(len(self.inst.maildir_messages('alice')), 1)
        log = self.inst.log('queue-manager')
        self.assertIn('%s rcpt=half@example.test result=failed status="5.1.1 ghost (expanded from '
                      'half@example.test): no such user"' % q1, log)
        self.assertIn('%s rcpt=solo@example.test result=failed status="5.1.1 ghost (expanded from '
                      'solo@example.test): no such user"' % q2, log)

    def test_delivered_to_on_the_last_line_of_a_header_only_message(self):
        """A message that ends in its header without a line end (RFC 5322
        allows a message of header fields alone) still has its last
        Delivered-To: looked at: it was skipped as a cut line, and the loop
        went round once more"""
        qid = inject(self.inst, 'bob@example.test', ['alice@example.test'],
                     b'Subject: header only\nDelivered-To: alice@example.test')
        (_, data), = self.wait_msgs('bob')
        self.check_report(data, '5.4.6', 'alice@example.test')
        self.assertIn('%s rcpt=alice@example.test result=failed status="5.4.6 mail forwarding loop"' % qid,
                      self.inst.log('queue-manager'))
        self.assertEqual(self.inst.maildir_messages('alice'), [])

    def test_comment_line_inside_an_alias_entry(self):
        """postern-aliases(5): blank lines and lines starting with '#' are
        ignored, so a member commented out at the start of its line (as
        one does in a Postfix aliases file) leaves the entry going on. It
        ended the entry, the next continuation line made the whole file
        unusable, and every local delivery was deferred with 4.3.5"""
        write_aliases(self.inst, 'postmaster: alice\nstaff: alice,\n# bob left\n\n    bob@example.test\n')
        qid = inject(self.inst, 'carol@far.test', ['staff@example.test'], b'Subject: staff\n\nx\n')
        self.wait_msgs('alice')
        self.wait_msgs('bob')
        self.wait_queue_empty()
        self.assertIn('%s rcpt=staff@example.test result=delivered' % qid, self.inst.log('queue-manager'))

    def check_report(self, data, status, rcpt):
        self.assertTrue(data.startswith(b'Return-Path: <>\n'), data[:200])
        m = email.message_from_bytes(data, policy=email.policy.compat32)
        self.assertEqual(m.get_content_type(), 'multipart/report')
        self.assertEqual(m.get_param('report-type'), 'delivery-status')
        parts = m.get_payload()
        self.assertGreaterEqual(len(parts), 2)
        self.assertEqual(parts[0].get_content_type(), 'text/plain')
        self.assertEqual(parts[1].get_content_type(), 'message/delivery-status')
        ds = parts[1].as_string()
        self.assertIn('Action: failed', ds)
        self.assertIn('Status: ' + status, ds)
        self.assertIn(rcpt, ds)
        return m

    def test_unknown_user_bounces(self):
        qid = inject(self.inst, 'bob@example.test', ['nobody@example.test', 'alice@example.test'],
                     b'Subject: to nobody\nMessage-ID: <x1@example.test>\n\nhello\n')
        self.wait_msgs('alice')
        (path, data), = self.wait_msgs('bob')
        m = self.check_report(data, '5.1.1', 'nobody@example.test')
        self.assertEqual(m['To'].strip('<>'), 'bob@example.test')
        self.assertIn(b'Message-ID: <x1@example.test>', data)   # the original is returned
        self.wait_queue_empty()
        log = self.inst.log('queue-manager')
        self.assertIn('%s rcpt=nobody@example.test result=failed status="5.1.1' % qid, log)
        self.assertIn('%s dsn=failure to=bob@example.test' % qid, log)

    def test_bounce_of_a_huge_message_returns_its_header(self):
        """A failed message too big to return (over 1 MiB) comes back as its
        header in text/rfc822-headers, saying how big it was. Over 4 MiB,
        what queue-manager reads of it, the header alone went out as
        message/rfc822, as if it were the whole message"""
        sizes = {}
        for size in (2 << 20, 5 << 20):
            body = (b'y' * 999 + b'\n') * (size // 1000)
            msg = b'Subject: huge\nMessage-ID: <huge%d@example.test>\n\n' % size + body
            sizes[size] = len(msg)
            qid = inject(self.inst, 'bob@example.test', ['nobody@example.test'], msg)
            self.inst.wait_log('queue-manager', '%s removed=finished' % qid)
        msgs = self.wait_msgs('bob', 2)
        for _, data in msgs:
            m = self.check_report(data, '5.1.1', 'nobody@example.test')
            parts = m.get_payload()
            self.assertEqual(parts[2].get_content_type(), 'text/rfc822-headers', data[:3000])
            self.assertIn('Subject: huge', parts[2].get_payload())
            self.assertNotIn('yyyy', parts[2].get_payload())
            mid = re.search(r'Message-ID: <huge(\d+)@', parts[2].get_payload()).group(1)
            text = parts[0].get_payload()
            self.assertIn('larger than 1048576 octets', text)
            had = int(re.search(r'\(it had (\d+)\)', text).group(1))
            self.assertEqual(had, sizes[int(mid)])      # the whole message's size

    def test_no_bounce_to_null_sender_double_bounce_to_postmaster(self):
        # a message from <> that fails: no bounce to <>, one report to postmaster
        inject(self.inst, '', ['nobody@example.test'], b'Subject: a bounce\n\nx\n')
        (path, data), = self.wait_msgs('alice')          # postmaster -> alice
        self.check_report(data, '5.1.1', 'nobody@example.test')
        self.wait_queue_empty()
        # a bounce to a sender that does not exist either: double bounce, once
        inject(self.inst, 'ghost@example.test', ['nobody@example.test'], b'Subject: y\n\ny\n')
        self.wait_msgs('alice', 2)
        self.wait_queue_empty()     # a report is queued before its message is removed
        self.assertEqual(len(self.inst.maildir_messages('alice')), 2)
        # NOTIFY=NEVER: no report at all
        extra = ()
        a, b = socket.socketpair()
        p = subprocess.Popen([self.inst.bin('queue-inject')], stdin=subprocess.PIPE, stdout=b)
        b.close()
        p.stdin.write(b'Subject: never\n\nx\n')
        p.stdin.close()
        a.sendall(b'Fbob@example.test\0Tnobody@example.test\tNEVER\t\0\0')
        a.shutdown(socket.SHUT_WR)
        a.makefile('rb').read()
        a.close()
        self.assertEqual(p.wait(), 0)
        del extra
        self.inst.wait_log('queue-manager', 'rcpt=nobody@example.test dsn=not-requested')
        self.wait_queue_empty()
        self.assertEqual(len(self.inst.maildir_messages('bob')), 0)

    def test_postmaster_alias(self):
        inject(self.inst, 'carol@far.test', ['postmaster@example.test'], b'Subject: pm\n\nhi\n')
        (path, data), = self.wait_msgs('alice')
        self.assertIn(b'Delivered-To: postmaster@example.test\n', data)
        self.assertTrue(data.endswith(b'Subject: pm\n\nhi\n'))
        self.wait_queue_empty()

    def test_alias_loop_and_delivered_to_loop(self):
        inject(self.inst, 'bob@example.test', ['loop1@example.test'], b'Subject: loop\n\nx\n')
        (path, data), = self.wait_msgs('bob')
        self.check_report(data, '5.4.6', 'loop1@example.test')
        # a message that already went through alice's delivery once
        inject(self.inst, 'bob@example.test', ['alice@example.test'],
               b'Delivered-To: alice@example.test\nSubject: again\n\nx\n')
        msgs = self.wait_msgs('bob', 2)
        self.check_report(msgs[-1][1] if b'again' in msgs[-1][1] else msgs[0][1], '5.4.6',
                          'alice@example.test')
        self.wait_queue_empty()
        self.assertEqual(self.inst.maildir_messages('alice'), [])

    def test_delivered_to_loop_folded_or_case_changed(self):
        """A Delivered-To: line another host refolded (the value on a
        continuation line), or wrote with white space before the colon and
        in other case, still marks the message as already delivered to
        alice: a loop (5.4.6), not one more copy each round. Before, only
        an unfolded "Delivered-To: alice@..." on one line was seen."""
        for hdr in (b'Delivered-To:\n alice@example.test\n',
                    b'DELIVERED-TO :\r\n\t<ALICE@Example.Test>\r\n'):
            with self.subTest(hdr=hdr):
                inject(self.inst, 'bob@example.test', ['alice@example.test'],
                       hdr + b'Subject: round again\n\nx\n')
        msgs = self.wait_msgs('bob', 2)
        for _, data in msgs:
            self.check_report(data, '5.4.6', 'alice@example.test')
        self.wait_queue_empty()
        self.assertEqual(self.inst.maildir_messages('alice'), [])

    def test_forward_and_success_notice(self):
        a, b = socket.socketpair()
        p = subprocess.Popen([self.inst.bin('queue-inject')], stdin=subprocess.PIPE, stdout=b)
        b.close()
        p.stdin.write(b'Subject: fwd\n\nforward me\n')
        p.stdin.close()
        a.sendall(b'Fbob@example.test\0Tfwd@example.test\tSUCCESS\t\0\0')
        a.shutdown(socket.SHUT_WR)
        qid = a.makefile('rb').read().decode().strip()
        a.close()
        self.assertEqual(p.wait(), 0)
        (_, data), = self.wait_msgs('alice')
        self.assertIn(b'Delivered-To: fwd@example.test\n', data)
        # the success report (NOTIFY=SUCCESS) to bob: the alias was expanded
        # (a mailbox and a forward), RFC 3464 2.3.3
        (_, rep), = self.wait_msgs('bob')
        self.assertIn(b'Action: expanded', rep)
        self.assertIn(b'fwd@example.test', rep)
        # the forwarded copy: a new message from the original sender, queued
        # for the remote address (no remote-deliverer here: it stays, 4.4.1)
        def forwarded():
            out = self.inst.run('postern-queue', 'list').stdout.splitlines()
            return [l for l in out if '<dave@far.test> 4.4.1 remote delivery not available' in l] and out
        out = self.inst.wait_for(forwarded, 15, what='the forwarded copy in the queue')
        self.assertEqual(out[0].split(' ')[3], '<bob@example.test>')
        fid = out[0].split(' ')[0]
        self.assertNotEqual(fid, qid)
        show = self.inst.run('postern-queue', 'show', fid).stdout
        self.assertIn('Delivered-To: fwd@example.test', show)

    def test_utf8_subaddress_delivered(self):
        """smtp-listener takes RCPT TO:<alice+\u00e9@...> under SMTPUTF8 (the user
        is alice, the detail is dropped); local-deliverer then refused the
        whole local part for its non-ASCII detail, "5.1.1 not a local
        mailbox address": accepted, then bounced"""
        qid = inject_records(self.inst, b'Fbob@example.test\0U\0Talice+\xc3\xa9t\xc3\xa9@example.test\t\t\0\0',
                             b'Subject: detail\n\nx\n')
        (_, data), = self.wait_msgs('alice')
        self.assertIn(b'Delivered-To: alice+\xc3\xa9t\xc3\xa9@example.test\n', data)
        self.wait_queue_empty()
        self.assertEqual(self.inst.maildir_messages('bob'), [])
        self.assertIn('%s rcpt=alice+' % qid, self.inst.log('queue-manager'))

    def test_success_report_actions(self):
        """NOTIFY=SUCCESS: a mailbox is "delivered"; an alias that expands
        to several addresses is "expanded" (RFC 3464 2.3.3, RFC 3461
        on aliases; Postfix says "expanded" / "alias expanded"), not
        "delivered" with one member's Maildir file name as its diagnostic"""
        qid = inject_records(self.inst, b'Fcarol@far.test\0Talice@example.test\tSUCCESS\t\0'
                                        b'Tteam@example.test\tSUCCESS,FAILURE\t\0\0', b'Subject: s\n\nx\n')
        self.inst.wait_log('queue-manager', '%s removed=finished' % qid)
        # carol is remote and there is no remote-deliverer: the report stays
        # in the queue, read it there
        ids = self.inst.queue_ids()
        self.assertEqual(len(ids), 1, ids)
        with open(self.inst.path('queue', 'mess', ids[0][-1], ids[0]), 'rb') as f:
            m = email.message_from_bytes(f.read(), policy=email.policy.compat32)
        ds = [p for p in m.walk() if p.get_content_type() == 'message/delivery-status'][0]
        groups = {g['Final-Recipient'].split(';')[1].strip(): g for g in ds.get_payload()[1:]}
        self.assertEqual(groups['alice@example.test']['Action'], 'delivered')
        self.assertEqual(groups['team@example.test']['Action'], 'expanded')
        self.assertEqual(groups['team@example.test']['Status'], '2.0.0')
        self.assertNotIn('maildir', str(groups['team@example.test']))

    def test_reports_follow_rfc_3464_and_3461(self):
        """The fields RFC 3464 asks for, end to end, as the DSN parameters
        RFC 3461 defines came: ENVID echoed (xtext decoded) as
        Original-Envelope-Id, each ORCPT as Original-Recipient, Reporting-MTA
        and Arrival-Date per message, Final-Recipient, Action, Status (of
        the class the action has, RFC 3463) and Last-Attempt-Date per
        recipient, Will-Retry-Until in no report but a delay; NOTIFY=SUCCESS
        and NOTIFY=FAILURE each get their report; RET=HDRS returns the
        header alone (text/rfc822-headers); the report goes from <> to the
        envelope sender, a multipart/report at the top level (RFC 6522)"""
        inject_records(self.inst, b'Fbob@example.test\0Eenv+2Bid-7\0NHDRS\0'
                                  b'Tnobody@example.test\tFAILURE\trfc822;Nobody+40Example.test\0'
                                  b'Talice@example.test\tSUCCESS\trfc822;Alice+40example.test\0\0',
                       b'Subject: dsn fields\nMessage-ID: <f1@example.test>\n\nthe body text\n')
        self.wait_msgs('alice')
        reports = {}
        for _, data in self.wait_msgs('bob', 2):
            self.assertTrue(data.startswith(b'Return-Path: <>\n'), data[:200])
            m = email.message_from_bytes(data, policy=email.policy.compat32)
            self.assertEqual(m.get_content_type(), 'multipart/report')
            self.assertEqual(m.get_param('report-type'), 'delivery-status')
            self.assertEqual(m['To'], '<bob@example.test>')
            parts = m.get_payload()
            self.assertEqual([p.get_content_type() for p in parts],
                             ['text/plain', 'message/delivery-status', 'text/rfc822-headers'])
            self.assertIn('Message-ID: <f1@example.test>', parts[2].get_payload())
            self.assertNotIn('the body text', parts[2].get_payload())
            per_msg, *per_rcpt = parts[1].get_payload()
            self.assertEqual(per_msg['Original-Envelope-Id'], 'env+id-7')
            self.assertEqual(per_msg['Reporting-MTA'], 'dns; ' + self.inst.hostname)
            self.assertIsNotNone(email.utils.parsedate_to_datetime(per_msg['Arrival-Date']))
            self.assertEqual(len(per_rcpt), 1)
            r = per_rcpt[0]
            self.assertIsNotNone(email.utils.parsedate_to_datetime(r['Last-Attempt-Date']))
            self.assertIsNone(r['Will-Retry-Until'])
            reports[r['Action']] = r
        self.assertEqual(sorted(reports), ['delivered', 'failed'])
        failed, delivered = reports['failed'], reports['delivered']
        self.assertEqual(failed['Original-Recipient'], 'rfc822;Nobody@Example.test')
        self.assertEqual(failed['Final-Recipient'], 'rfc822; nobody@example.test')
        self.assertEqual(failed['Status'], '5.1.1')
        self.assertEqual(delivered['Original-Recipient'], 'rfc822;Alice@example.test')
        self.assertEqual(delivered['Final-Recipient'], 'rfc822; alice@example.test')
        self.assertTrue(delivered['Status'].startswith('2.'), delivered['Status'])

    def test_report_in_reply_to_only_a_valid_msg_id(self):
        """The report's In-Reply-To and References (RFC 5322 3.6.4) carry
        the original's Message-ID only when it is a msg-id: "<" id-left "@"
        id-right ">"; "<no-at-sign>" or "<a@b@c>" made the report's own
        header malformed"""
        for mid, kept in ((b'<no-at-sign>', False), (b'<a@b@c.test>', False), (b'<a..b@c.test>', False),
                          (b'<"q"@c.test>', False), (b'<a.b@[c d]>', False), (b'<a@>', False),
                          (b'<a.b-c@host.test>', True), (b'<a$b@[192.0.2.1]>', True)):
            self.inst.empty_maildir('bob')
            inject(self.inst, 'bob@example.test', ['nobody@example.test'],
                   b'Subject: mid\nMessage-ID: ' + mid + b'\n\nx\n')
            (_, data), = self.wait_msgs('bob')
            m = email.message_from_bytes(data, policy=email.policy.default)
            if kept:
                self.assertEqual((m['In-Reply-To'], m['References']), (mid.decode(), mid.decode()), mid)
                self.assertEqual(m['In-Reply-To'].defects, (), mid)
            else:
                self.assertEqual((m['In-Reply-To'], m['References']), (None, None), mid)

    def forwarded_envelope(self, envelope_records):
        """inject bob's message with these records (F is added), wait for
        the forwarded copy fwd@ makes for alice and dave@far.test, return its
        envelope file as {key: value} with 'rcpt' the list of dave's
        recipient fields; alice's, the same but for the address, is checked"""
        qid = inject_records(self.inst, b'Fbob@example.test\0' + envelope_records, b'Subject: fwd\n\nx\n')

        def forwarded():
            for i in self.inst.queue_ids():
                if i == qid:
                    continue
                for h in os.listdir(self.inst.path('queue', 'env')):
                    path = self.inst.path('queue', 'env', h, i)
                    if os.path.exists(path):
                        with open(path) as f:
                            return f.read()
            return None
        text = self.inst.wait_for(forwarded, 15, what='the forwarded copy\n' + self.inst.log('queue-manager'))
        env = {'rcpt': []}
        rcpts = []
        for line in text.splitlines()[1:]:
            if line.startswith('rcpt\t'):
                rcpts.append(line.split('\t')[1:])
            else:
                k, _, v = line.partition(' ')
                env[k] = v
        # one message to both members (local ones are not delivered apart),
        # each with the same DSN parameters
        self.assertEqual(sorted(r[5] for r in rcpts), ['alice@example.test', 'dave@far.test'])
        self.assertEqual(rcpts[0][3:5], rcpts[1][3:5])
        env['rcpt'] = [r for r in rcpts if r[5] == 'dave@far.test']
        self.inst.run('postern-queue', 'delete', [i for i in self.inst.queue_ids() if i != qid][0])
        self.wait_queue_empty()
        return env

    def test_forward_keeps_dsn_parameters(self):
        """A forwarded copy (an alias with a remote member) is the sender's
        message: it keeps ENVID, RET and the original recipient (as ORCPT),
        and NOTIFY without SUCCESS (RFC 3461 on aliases; what Postfix's local(8)
        does). It lost all of them: a NOTIFY=NEVER sender got bounces from
        the forward, RET=HDRS senders their whole message back"""
        env = self.forwarded_envelope(b'EQ+2B7\0NHDRS\0Tfwd@example.test\tNEVER\t\0\0')
        self.assertEqual(env['envid'], 'Q+2B7')
        self.assertEqual(env['ret'], 'hdrs')
        # state attempts next_try notify orcpt addr last_error
        (r,) = env['rcpt']
        self.assertEqual(r[3:6], ['NEVER', 'rfc822;fwd@example.test', 'dave@far.test'])
        # SUCCESS is answered here (the alias was reached); the rest goes on,
        # and an ORCPT the client gave is kept as it was
        env = self.forwarded_envelope(b'Tfwd@example.test\tSUCCESS,FAILURE\trfc822;Orig+2B1@example.test\0\0')
        self.assertNotIn('envid', env)
        self.assertNotIn('ret', env)        # none was given
        (r,) = env['rcpt']
        self.assertEqual(r[3:6], ['FAILURE', 'rfc822;Orig+2B1@example.test', 'dave@far.test'])
        env = self.forwarded_envelope(b'NFULL\0Tfwd@example.test\t\t\0\0')
        self.assertEqual(env['ret'], 'full')
        env = self.forwarded_envelope(b'Tfwd@example.test\tSUCCESS\t\0\0')
        self.assertEqual(env['rcpt'][0][3], 'NEVER')
        self.assertEqual(env['smtputf8'], 'no')
        # a message that needed SMTPUTF8 still does when forwarded (it was
        # lost: the copy went out without it, UTF-8 header and all)
        env = self.forwarded_envelope(b'U\0Tfwd@example.test\t\t\0\0')
        self.assertEqual(env['smtputf8'], 'yes')
        env = self.forwarded_envelope(b'Tfwd@example.test\t\t\0\0')
        self.assertEqual(env['rcpt'][0][3:5], ['', 'rfc822;fwd@example.test'])
        # a non-ASCII address is no rfc822 ORCPT (RFC 3461 4.2): none is made
        env = self.forwarded_envelope(b'U\0Tfwd+\xc3\xa9@example.test\t\t\0\0')
        self.assertEqual(env['rcpt'][0][3:6], ['', '', 'dave@far.test'])

    def test_expiry_turns_temporary_into_bounce(self):
        need_root(self, 'its stuck mailbox has a uid of its own (20999), which only root can deliver as')
        self.inst.set_conf(queue_lifetime='60s')
        self.inst.reload('queue-manager')
        self.inst.wait_log('queue-manager', 'event=reload status=ok')
        with open(self.inst.path('conf', 'mailboxes'), 'a') as f:
            f.write('stuck:20999:20999:/nonexistent/postern-test/Maildir\n')
        qid = inject(self.inst, 'bob@example.test', ['stuck@example.test'], b'Subject: old\n\nx\n')
        self.inst.wait_log('queue-manager', '%s rcpt=stuck@example.test result=deferred' % qid)
        # the last try is scheduled at birth + lifetime; then it bounces
        (_, data), = self.wait_msgs('bob', 1, timeout=100)
        self.check_report(data, '4.2.0', 'stuck@example.test')
        self.assertIn(b'queue lifetime expired', data)
        self.assertIn('%s rcpt=stuck@example.test result=expired' % qid, self.inst.log('queue-manager'))
        self.wait_queue_empty()

    def test_delay_report_once_with_will_retry_until(self):
        """NOTIFY=DELAY: one "delayed" report at the first failure 4 hours
        or more after arrival, not one per retry, and with Will-Retry-Until
        (RFC 3464 2.3.9: when the MTA gives up; Postfix and sendmail give
        arrival + the queue lifetime)"""
        need_root(self, 'its stuck mailbox has a uid of its own (20999), which only root can deliver as')
        with open(self.inst.path('conf', 'mailboxes'), 'a') as f:
            f.write('stuck:20999:20999:/nonexistent/postern-test/Maildir\n')
        qid = inject_records(self.inst, b'Fbob@example.test\0Tstuck@example.test\tDELAY,FAILURE\t\0\0',
                             b'Subject: slow\n\nx\n')
        self.inst.wait_log('queue-manager', '%s rcpt=stuck@example.test result=deferred' % qid)
        # make it five hours old, its next try the one the schedule makes at
        # 4 hours (birth + 120^2, set by a failure before then), which the
        # old test "scheduled before 4 h" never counted: the envelope as an
        # operator could edit it (same owner and mode), then a flush
        path = self.inst.path('queue', 'env', qid[-1], qid)

        def saved():        # the log line comes before the envelope is rewritten
            with open(path) as f:
                return '\t4.2.0 ' in f.read()
        self.inst.wait_for(saved, 10, what='the deferral in the envelope')
        st = os.stat(path)
        with open(path) as f:
            lines = f.read().splitlines()
        birth = int([l for l in lines if l.startswith('birth ')][0].split()[1]) - 5 * 3600
        out = []
        for l in lines:
            if l.startswith('birth '):
                l = 'birth %d' % birth
            elif l.startswith('rcpt\t'):
                fields = l.split('\t')
                fields[3] = str(birth + 4 * 3600)
                l = '\t'.join(fields)
            out.append(l)
        with open(path + '.new', 'w') as f:
            f.write('\n'.join(out) + '\n')
        os.chown(path + '.new', st.st_uid, st.st_gid)
        os.chmod(path + '.new', 0o600)
        os.rename(path + '.new', path)
        self.inst.run('postern-queue', 'flush')
        (_, data), = self.wait_msgs('bob')
        m = email.message_from_bytes(data, policy=email.policy.compat32)
        self.assertEqual(m['Subject'], 'Delayed Mail (still being retried)')
        ds = [p for p in m.walk() if p.get_content_type() == 'message/delivery-status'][0]
        rcpt = ds.get_payload()[1]
        self.assertEqual(rcpt['Action'], 'delayed')
        self.assertTrue(rcpt['Status'].startswith('4.'), rcpt['Status'])
        until = rcpt['Will-Retry-Until']
        self.assertIsNotNone(until, str(rcpt))
        self.assertEqual(email.utils.parsedate_to_datetime(until).timestamp(), birth + 5 * 86400)
        # another failed try: no second report
        n = self.inst.log('queue-manager').count('%s rcpt=stuck@example.test result=deferred' % qid)
        self.inst.run('postern-queue', 'flush')
        self.inst.wait_for(lambda: self.inst.log('queue-manager').count(
            '%s rcpt=stuck@example.test result=deferred' % qid) > n, 15, what='another try')
        time.sleep(1)
        self.assertEqual(len(self.inst.maildir_messages('bob')), 1)
        self.assertEqual(self.inst.log('queue-manager').count('%s dsn=delay' % qid), 1)

    def test_quota_defers(self):
        self.inst.set_conf(mailbox_quota='200')
        self.inst.reload('queue-manager')
        self.inst.wait_log('queue-manager', 'event=reload status=ok')
        inject(self.inst, 'bob@example.test', ['alice@example.test'], b'Subject: small\n\nx\n')
        self.wait_msgs('alice')
        qid = inject(self.inst, 'bob@example.test', ['alice@example.test'],
                     b'Subject: big\n\n' + b'y' * 300 + b'\n')
        self.inst.wait_log('queue-manager', '%s rcpt=alice@example.test result=deferred '
                                            'status="4.2.2 mailbox full"' % qid)
        self.assertEqual(len(self.inst.maildir_messages('alice')), 1)
        self.assertEqual(self.inst.queue_ids(), [qid])

    def test_quota_at_the_limit_and_sizes_past_2_64(self):
        """A message that fills the quota to the octet is delivered, one
        octet more is not. Maildir++ sizes in the names (the mailbox
        owner's to choose) that add up to 2^64 + 100 count as a full
        mailbox: the sum wrapped to 100 and let mail past the quota."""
        self.inst.set_conf(mailbox_quota='1000')
        self.inst.reload('queue-manager')
        self.inst.wait_log('queue-manager', 'event=reload status=ok')
        pre = b'Return-Path: <bob@example.test>\nDelivered-To: alice@example.test\n'
        head = b'Subject: fills it\n\n'
        inject(self.inst, 'bob@example.test', ['alice@example.test'],
               head + b'y' * (1000 - len(pre) - len(head) - 1) + b'\n')
        (path, data), = self.wait_msgs('alice')
        self.assertEqual(len(data), 1000)
        qid = inject(self.inst, 'bob@example.test', ['alice@example.test'], b'')
        self.inst.wait_log('queue-manager', '%s rcpt=alice@example.test result=deferred '
                                            'status="4.2.2 mailbox full"' % qid)
        self.inst.run('postern-queue', 'delete', qid)
        self.wait_queue_empty()
        os.unlink(path)
        cur = os.path.join(self.inst.maildir('alice'), 'cur')
        v = 10 ** 16 - 1
        k, r = divmod(2 ** 64 + 100, v)
        for i in range(k):
            open(os.path.join(cur, '%d.h,S=%d:2,' % (i, v)), 'w').close()
        open(os.path.join(cur, 'last.h,S=%d:2,' % r), 'w').close()
        qid = inject(self.inst, 'bob@example.test', ['alice@example.test'], b'Subject: small\n\nx\n')
        self.inst.wait_log('queue-manager', '%s rcpt=alice@example.test result=deferred '
                                            'status="4.2.2 mailbox full"' % qid)
        self.assertEqual(os.listdir(os.path.join(self.inst.maildir('alice'), 'new')), [])

    def test_maildir_of_another_owner_or_world_writable_refused(self):
        need_root(self, 'gives the Maildir to another owner')
        # a Maildir (or tmp/ new/ cur/) that another user owns, or anyone
        # may write, is not the recipient's: its owner could delete the
        # mail, or plant messages the recipient then reads over POP3
        other = 65534  # nobody
        uid, gid = mailbox_ids(self.inst, 'alice')
        md = self.inst.maildir('alice')
        os.chmod(os.path.dirname(md), 0o711)
        # each writable by alice: through her group, or by everyone
        cases = [('', other, 0o770), ('new', other, 0o770), ('tmp', other, 0o770),
                 ('', uid, 0o777), ('new', uid, 0o703)]
        for part, owner, mode in cases:
            with self.subTest(part=part or 'Maildir', owner=owner, mode=oct(mode)):
                path = os.path.join(md, part) if part else md
                os.chown(path, owner, gid)
                os.chmod(path, mode)
                qid = inject(self.inst, 'bob@example.test', ['alice@example.test'], b'Subject: x\n\nx\n')
                self.inst.wait_log('queue-manager', '%s rcpt=alice@example.test result=deferred '
                                                    'status="4.2.0 Maildir or a part of it is not the mailbox '
                                                    'user\'s own, or others may write it: refused"' % qid)
                os.chown(path, uid, gid)
                os.chmod(path, 0o700)
                self.assertEqual(self.inst.maildir_messages('alice'), [])
                self.inst.run('postern-queue', 'flush')
                self.wait_msgs('alice')
                self.wait_queue_empty()
                for f in os.listdir(os.path.join(md, 'new')):
                    os.unlink(os.path.join(md, 'new', f))

    def test_reload(self):
        # local-deliverer has read postern.conf (queue-manager is ready once
        # it has started it, not once it has read its files): otherwise the
        # broken file below is what it starts with, and it exits (seen under
        # make sanitize)
        inject(self.inst, 'bob@example.test', ['alice@example.test'], b'Subject: up\n\nx\n')
        self.wait_msgs('alice')
        sent = self.inst.log('queue-manager').count('deliverer=local-deliverer reload=sent')
        acks = self.inst.log('queue-manager').count('local-deliverer: info: - event=reload from=queue-manager')
        with open(self.inst.path('conf', 'postern.conf'), 'a') as f:
            f.write('no_such_key = 1\n')
        self.inst.reload('queue-manager')
        self.inst.wait_log('queue-manager', 'event=reload status=refused')
        # a refused reload is not passed on to the deliverers
        self.assertEqual(self.inst.log('queue-manager').count('deliverer=local-deliverer reload=sent'), sent)
        conf = self.inst.path('conf', 'postern.conf')
        with open(conf) as f:
            lines = [l for l in f if not l.startswith('no_such_key')]
        with open(conf, 'w') as f:
            f.writelines(lines)
        self.inst.reload('queue-manager')
        try:
            self.inst.wait_log('queue-manager', 'event=reload status=ok')
        except Exception:
            print(self.inst.log('queue-manager'))
            print(self.inst.svstat('queue-manager'))
            raise
        # a good one is: local-deliverer acknowledges the reload record
        self.inst.wait_for(lambda: self.inst.log('queue-manager').count(
            'local-deliverer: info: - event=reload from=queue-manager files=on-change') > acks, 10,
            what='local-deliverer acknowledging the reload')
        # queue-manager logs reload=sent after the record is written, so the
        # deliverer's acknowledgement can be in the log before it
        self.inst.wait_for(lambda: self.inst.log('queue-manager').count(
            'deliverer=local-deliverer reload=sent') > sent, 10, what='queue-manager logging reload=sent')
        inject(self.inst, 'bob@example.test', ['alice@example.test'], b'Subject: after\n\nx\n')
        self.wait_msgs('alice')

    def test_crash_loses_nothing(self):
        self.inst.svc('queue-manager', '-d')
        self.inst.wait_down('queue-manager')
        # two deliveries at a time, so the kill lands mid-run (and the
        # scheduler must keep feeding the busy deliverer)
        self.inst.set_conf(local_concurrency='2')
        n = 30
        for i in range(n):
            inject(self.inst, 'bob@example.test', ['alice@example.test'],
                   b'Subject: crash %d\n\nbody %d\n' % (i, i))
        self.inst.svc('queue-manager', '-u')
        pid = self.inst.wait_for(lambda: self.inst.service_pid('queue-manager'), 15)
        self.inst.wait_for(lambda: self.inst.maildir_messages('alice'), 20)
        os.kill(pid, signal.SIGKILL)           # mid-run
        self.inst.wait_for(lambda: (self.inst.service_pid('queue-manager') or pid) != pid, 20,
                           what='s6 restarting queue-manager')
        self.wait_queue_empty(60)
        got = set()
        for _, data in self.inst.maildir_messages('alice'):
            for line in data.split(b'\n'):
                if line.startswith(b'Subject: crash '):
                    got.add(int(line.split()[-1]))
        self.assertEqual(got, set(range(n)))    # every one at least once
        # the restarted queue-manager may find the queue empty already (the
        # run can end before the kill): wait for its start line, not just s6
        def starts():
            s = [l for l in self.inst.log('queue-manager').splitlines() if 'event=start messages=' in l]
            return s if len(s) >= 3 else None
        starts = self.inst.wait_for(starts, 15, what='three queue-manager start lines')
        self.assertEqual(len(starts), 3, starts)   # first start, after -u, after the kill
        self.assertEqual(self.inst.queue_tmp_files(), [])

    # ---- local-deliverer's mailbox workers (daemons/local-deliverer/pool.c)

    def test_worker_serves_many_jobs_and_holds_nothing_else(self):
        need_root(self, 'finds the mailbox workers as the children of a root local-deliverer')
        uid, gid = mailbox_ids(self.inst, 'alice')
        for i in range(3):
            inject(self.inst, 'bob@example.test', ['alice@example.test'], b'Subject: w%d\n\nx\n' % i)
            self.wait_msgs('alice', i + 1)
        msgs = self.inst.maildir_messages('alice')
        pids = {maildir_pid(p) for p, _ in msgs}
        self.assertEqual(len(pids), 1, pids)       # one process wrote all three: no fork per delivery
        pid, = pids
        for p, _ in msgs:
            st = os.stat(p)
            self.assertEqual((st.st_uid, st.st_gid), (uid, gid))
        # it is still there, idle: the user's ids only, no capability, no
        # supplementary group, and no descriptor but its socket, stderr and /dev/null
        # (the third message is in new/ a moment before the worker has
        # closed that job's descriptors and answered: wait for it to be idle)
        self.assertIn(pid, workers(self.inst, uid))
        self.inst.wait_for(lambda: len(os.listdir('/proc/%d/fd' % pid)) <= 4, 10,
                           what='the worker done with its job: %s' % os.listdir('/proc/%d/fd' % pid))
        st = proc_status(pid)
        self.assertEqual(st['Uid'], [str(uid)] * 4)
        self.assertEqual(st['Gid'], [str(gid)] * 4)
        self.assertLessEqual(set(st.get('Groups', [])), {str(gid)}, st.get('Groups'))
        self.assertEqual(int(st['CapEff'][0], 16), 0)
        self.assertEqual(int(st['CapPrm'][0], 16), 0)
        parent = int(st['PPid'][0])
        self.assertTrue(is_local_deliverer(parent))
        fds = {int(n): os.readlink('/proc/%d/fd/%s' % (pid, n)) for n in os.listdir('/proc/%d/fd' % pid)}
        self.assertEqual(sorted(fds), [0, 1, 2, 3], fds)
        self.assertEqual((fds[0], fds[1]), ('/dev/null', '/dev/null'))
        self.assertTrue(fds[3].startswith('socket:'), fds)
        parent_fds = {os.readlink('/proc/%d/fd/%s' % (parent, n)) for n in os.listdir('/proc/%d/fd' % parent)}
        self.assertEqual(fds[2], os.readlink('/proc/%d/fd/2' % parent))
        self.assertNotIn(fds[3], parent_fds)     # its own end, not the job socket nor another's
        self.assertEqual(worker_ids(self.inst, pid), (uid, gid))
        # idle workers go away by themselves
        self.inst.wait_for(lambda: not os.path.exists('/proc/%d' % pid), 15, what='the idle worker to exit')
        self.assertIn('event=worker_retired pid=%d uid=%d gid=%d jobs=3 why=idle' % (pid, uid, gid),
                      self.inst.log('queue-manager'))

    def test_interleaved_users_each_delivered_by_their_own_uid(self):
        need_root(self, 'each mail user has a uid of its own, which only root can deliver as')
        ids = {u: mailbox_ids(self.inst, u) for u in ('alice', 'bob')}
        self.assertNotEqual(ids['alice'], ids['bob'])
        want = {'alice': 0, 'bob': 0}
        for i in range(16):
            rcpts = ['alice'] if i % 2 else ['bob']
            if i % 4 == 3:
                rcpts = ['alice', 'bob']           # two jobs at once, for two uids
            for r in rcpts:
                want[r] += 1
            inject(self.inst, 'carol@far.test', [r + '@example.test' for r in rcpts],
                   b'Subject: mix %d\n\nx\n' % i)
        for u in want:
            self.wait_msgs(u, want[u])
        self.wait_queue_empty()
        for u, n in want.items():
            msgs = self.inst.maildir_messages(u)
            self.assertEqual(len(msgs), n)
            for path, _ in msgs:
                st = os.stat(path)
                self.assertEqual((st.st_uid, st.st_gid), ids[u], path)
                # written by a worker running as this user's ids
                self.assertEqual(worker_ids(self.inst, maildir_pid(path)), ids[u], path)

    def test_mailboxes_change_and_reload_use_the_new_uid(self):
        need_root(self, 'each mail user has a uid of its own, which only root can deliver as')
        self.inst.add_user('carol', 'pw-carol')
        alice_md = self.inst.maildir('alice')
        carol_md = self.inst.maildir('carol')
        ua, uc = mailbox_ids(self.inst, 'alice'), mailbox_ids(self.inst, 'carol')
        inject(self.inst, 'bob@example.test', ['alice@example.test'], b'Subject: before\n\nx\n')
        (p, _), = self.wait_msgs('alice')
        old = maildir_pid(p)
        self.assertIn(old, workers(self.inst, ua[0]))      # alice's worker, idle
        # "alice" now means carol's uid and Maildir
        with open(self.inst.path('conf', 'mailboxes')) as f:
            lines = [('alice:%d:%d:%s\n' % (uc[0], uc[1], carol_md)) if l.startswith('alice:') else l for l in f]
        write_mailboxes(self.inst, lines)
        acks = self.inst.log('queue-manager').count('event=reload from=queue-manager')
        self.inst.reload('queue-manager')
        self.inst.wait_for(lambda: self.inst.log('queue-manager').count('event=reload from=queue-manager') > acks,
                           10, what='local-deliverer acknowledging the reload')
        log = self.inst.log('queue-manager')
        self.assertRegex(log, r'event=reload from=queue-manager files=on-change workers_retired=[1-9]')
        # the idle worker is retired at once, not after its idle time
        self.inst.wait_for(lambda: not os.path.exists('/proc/%d' % old), 3, what='alice\'s worker retired')
        self.assertIn('event=worker_retired pid=%d uid=%d gid=%d jobs=1 why=reload' % (old, ua[0], ua[1]), log)
        inject(self.inst, 'bob@example.test', ['alice@example.test'], b'Subject: after\n\nx\n')
        got = self.inst.wait_for(lambda: [n for n in os.listdir(os.path.join(carol_md, 'new'))], 20,
                                 what='the message in carol\'s Maildir')
        path = os.path.join(carol_md, 'new', got[0])
        st = os.stat(path)
        self.assertEqual((st.st_uid, st.st_gid), uc)
        pid = maildir_pid(path)
        self.assertNotEqual(pid, old)
        self.assertEqual(worker_ids(self.inst, pid), uc)
        with open(path, 'rb') as f:
            self.assertIn(b'Delivered-To: alice@example.test\nSubject: after', f.read())
        self.assertEqual(len(os.listdir(os.path.join(alice_md, 'new'))), 1)

    def test_mailboxes_edited_in_place_apply_to_the_next_job(self):
        # local-deliverer keeps conf/mailboxes parsed and stat()s it before
        # each job. An edit in place that keeps the size, right after a
        # delivery (within one tick of the file system's clock, perhaps),
        # must still apply to the very next job, with no reload.
        ua = mailbox_ids(self.inst, 'alice')
        alice_md = self.inst.maildir('alice')
        other = alice_md.replace('/alice/', '/alicx/')
        self.assertEqual(len(other), len(alice_md))
        os.makedirs(os.path.dirname(other))
        os.chown(os.path.dirname(other), *ua)
        inject(self.inst, 'bob@example.test', ['alice@example.test'], b'Subject: one\n\nx\n')
        self.wait_msgs('alice')
        path = self.inst.path('conf', 'mailboxes')
        with open(path, 'rb') as f:
            text = f.read()
        edited = text.replace(alice_md.encode(), other.encode())
        self.assertNotEqual(edited, text)
        fd = os.open(path, os.O_WRONLY)       # same inode, same size
        os.write(fd, edited)
        os.close(fd)
        inject(self.inst, 'bob@example.test', ['alice@example.test'], b'Subject: two\n\nx\n')
        got = self.inst.wait_for(lambda: os.path.isdir(os.path.join(other, 'new')) and
                                 os.listdir(os.path.join(other, 'new')), 20,
                                 what='the second message in the edited Maildir\n' + self.inst.log('queue-manager'))
        self.assertEqual(len(got), 1)
        self.assertEqual(len(self.inst.maildir_messages('alice')), 1)
        st = os.stat(os.path.join(other, 'new', got[0]))
        self.assertEqual((st.st_uid, st.st_gid), ua)

    def test_malformed_mailboxes_line_defers_only_its_name(self):
        # a broken line (even the first) defers deliveries to its own name,
        # with file:line in the log, and nobody else's
        with open(self.inst.path('conf', 'mailboxes')) as f:
            lines = f.readlines()
        write_mailboxes(self.inst, ['broken:20990:x:/nowhere\n'] + lines)
        qb = inject(self.inst, 'bob@example.test', ['broken@example.test'], b'Subject: b\n\nx\n')
        inject(self.inst, 'bob@example.test', ['alice@example.test'], b'Subject: a\n\nx\n')
        self.wait_msgs('alice')
        log = self.inst.wait_for(lambda: re.search(r'%s rcpt=broken@example.test result=deferred' % qb,
                                                   self.inst.log('queue-manager')) and self.inst.log('queue-manager'),
                                 20, what='the deferral\n' + self.inst.log('queue-manager'))
        self.assertIn('4.3.0 mailbox table unreadable', log)
        self.assertRegex(log, r'mailboxes: \S*conf/mailboxes:1: expected name:uid:gid:/maildir')
        self.assertIn(qb, self.inst.queue_ids())

    def test_never_a_worker_as_root(self):
        md = self.inst.path('mail', 'rootbox', 'Maildir')
        with open(self.inst.path('conf', 'mailboxes'), 'a') as f:
            f.write('rootbox:0:0:%s\nrootgrp:20998:0:%s\n' % (md, md))
        qid = inject(self.inst, 'bob@example.test', ['rootbox@example.test', 'rootgrp@example.test'],
                     b'Subject: root\n\nx\n')
        for r in ('rootbox', 'rootgrp'):
            self.inst.wait_log('queue-manager', '%s rcpt=%s@example.test result=deferred '
                                                'status="4.3.0 refusing to deliver as root"' % (qid, r))
        self.assertEqual([p for p, st in ld_children(self.inst).items() if '0' in st['Uid'] + st['Gid']], [])
        self.assertFalse(os.path.exists(md))
        self.assertEqual(self.inst.queue_ids(), [qid])

    def test_mailbox_with_ids_from_2_to_the_31_up(self):
        need_root(self, 'delivers as uid 3000000000')
        # postern-user writes whatever ids an account has (--unix-account),
        # up to (uid_t)-1 - 1, and auth-checker takes them: local-deliverer
        # read such a line as malformed and deferred every message to it
        uid, gid = 3000000000, 4294967294
        md = self.inst.path('mail', 'big', 'Maildir')
        with open(self.inst.path('conf', 'mailboxes'), 'a') as f:
            f.write('big:%d:%d:%s\n' % (uid, gid, md))
        qid = inject(self.inst, 'bob@example.test', ['big@example.test'], b'Subject: big\n\nx\n')
        got = self.inst.wait_for(lambda: os.path.isdir(os.path.join(md, 'new')) and os.listdir(os.path.join(md, 'new')),
                                 20, what='the message in big\'s Maildir\n' + self.inst.log('queue-manager'))
        path = os.path.join(md, 'new', got[0])
        self.assertEqual((os.stat(path).st_uid, os.stat(path).st_gid), (uid, gid))
        self.assertEqual(worker_ids(self.inst, maildir_pid(path)), (uid, gid))
        self.assertNotIn('mailbox table unreadable', self.inst.log('queue-manager'))
        self.inst.wait_for(lambda: qid not in self.inst.queue_ids(), 10, what='the message leaving the queue')

    def test_worker_killed_mid_job_loses_nothing(self):
        need_root(self, 'finds the mailbox workers as the children of a root local-deliverer')
        uid, _ = mailbox_ids(self.inst, 'alice')
        n = 30
        body = b'z' * 200000 + b'\n'
        killed = []
        stop = threading.Event()

        def killer():
            # a worker in the middle of a job holds more than its four
            # descriptors (the message, the file in tmp/): kill it then
            while not stop.is_set() and len(killed) < 3:
                for p in workers(self.inst, uid):
                    for _ in range(300):
                        try:
                            busy = len(os.listdir('/proc/%d/fd' % p)) > 4
                        except OSError:
                            break
                        if busy:
                            try:
                                os.kill(p, signal.SIGKILL)
                                killed.append(p)
                            except ProcessLookupError:
                                pass
                            break
                        time.sleep(0.0005)
                time.sleep(0.005)

        t = threading.Thread(target=killer)
        t.start()
        try:
            for i in range(n):
                inject(self.inst, 'bob@example.test', ['alice@example.test'],
                       b'Subject: kill %d\n\n' % i + body)
            self.inst.wait_for(lambda: killed or (not self.inst.queue_ids() and 'none'), 60,
                               what='a worker killed mid-job')
        finally:
            stop.set()
            t.join()
        self.assertTrue(killed, 'the run ended before any worker could be caught mid-job')
        self.inst.wait_log('queue-manager', 'status="4.3.0 delivery process died"', 20)
        # the deferred jobs are tried again (an operator's flush: now)
        deadline = time.time() + 60
        while self.inst.queue_ids() and time.time() < deadline:
            self.inst.run('postern-queue', 'flush')
            time.sleep(1)
        self.wait_queue_empty(5)
        got = set()
        for _, data in self.inst.maildir_messages('alice'):
            m = re.search(rb'Subject: kill (\d+)\n', data)
            self.assertTrue(m)
            self.assertTrue(data.endswith(body))
            got.add(int(m.group(1)))
        self.assertEqual(got, set(range(n)))     # every one at least once

    def test_postern_queue_tool(self):
        need_root(self, 'its stuck mailbox has a uid of its own (20999), which only root can deliver as')
        # a mailbox that cannot be made: delivery fails temporarily, the message stays
        with open(self.inst.path('conf', 'mailboxes'), 'a') as f:
            f.write('stuck:20999:20999:/nonexistent/postern-test/Maildir\n')
        qid = inject(self.inst, 'bob@example.test', ['stuck@example.test'],
                     b'Subject: stuck\nX-Test: 1\n\nbody\n')
        self.inst.wait_log('queue-manager', '%s rcpt=stuck@example.test result=deferred' % qid)
        # the log line comes when the result is known; the envelope that
        # postern-queue reads is rewritten up to QM_SAVE_DELAY_MS later
        self.inst.wait_for(lambda: '  pending 1 ' in self.inst.run('postern-queue', 'list').stdout,
                           15, what='the first attempt recorded in the envelope')
        r = self.inst.run('postern-queue', 'list')
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 2, r.stdout)
        f = lines[0].split(' ')
        self.assertEqual(f[0], qid)
        self.assertTrue(f[1].isdigit() and f[2].isdigit())
        self.assertEqual(f[3], '<bob@example.test>')
        self.assertTrue(lines[1].startswith('  pending 1 <stuck@example.test> 4.2.0 '), lines[1])
        r = self.inst.run('postern-queue', '--root', self.inst.root, 'stat')
        stat = dict(l.split(' ') for l in r.stdout.splitlines())
        self.assertEqual((stat['messages'], stat['pending']), ('1', '1'))
        # run as ROOT/bin/postern-queue, with neither --root nor POSTERN_ROOT,
        # it works on its own instance (as mailq needs no arguments)
        bare = {k: v for k, v in os.environ.items() if k != 'POSTERN_ROOT'}
        r = subprocess.run([self.inst.bin('postern-queue'), 'list'], env=bare,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        self.assertEqual((r.returncode, r.stdout.split(' ')[0]), (0, qid), r.stderr)
        r = subprocess.run([self.inst.bin('postern-confcheck')], env=bare, stderr=subprocess.PIPE)
        self.assertEqual(r.returncode, 0, r.stderr)
        # a copy outside any instance says what it needs instead of guessing
        with tempfile.TemporaryDirectory() as d:
            os.mkdir(os.path.join(d, 'bin'))
            shutil.copy(self.inst.bin('postern-queue'), os.path.join(d, 'bin'))
            r = subprocess.run([os.path.join(d, 'bin', 'postern-queue'), 'list'], env=bare,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
            self.assertEqual(r.returncode, 100)
            self.assertIn('no ROOT: give --root DIR, set POSTERN_ROOT', r.stderr)
        r = self.inst.run('postern-queue', 'show', qid)
        env, _, head = r.stdout.partition('--\n')
        self.assertIn('id ' + qid, env)
        self.assertIn('X-Test: 1', head)
        self.assertNotIn('body', head)
        # flush: tried again now although the next try is minutes away
        self.inst.run('postern-queue', 'flush')
        self.inst.wait_for(lambda: '  pending 2 ' in self.inst.run('postern-queue', 'list').stdout,
                           15, what='a second attempt after flush')
        r = self.inst.run('postern-queue', 'delete', qid)
        self.assertIn('deleted', r.stdout)
        self.assertEqual(self.inst.queue_ids(), [])
        self.assertEqual(self.inst.run('postern-queue', 'list').stdout, '')
        r = self.inst.run('postern-queue', 'show', qid, check=False)
        self.assertEqual(r.returncode, 100)
        r = self.inst.run('postern-queue', 'bogus', check=False)
        self.assertEqual(r.returncode, 100)
        # delete sends no bounce: queue-manager would have queued it before
        # removing the message (the queue is empty, so none is on its way)
        log = self.inst.wait_log('queue-manager', '%s removed=operator-request' % qid)
        self.assertNotIn('%s dsn=' % qid, log)
        self.assertEqual(self.inst.maildir_messages('bob'), [])

    def test_postern_conf_change_taken_without_a_signal(self):
        """queue-manager looks at postern.conf once a second and takes a
        change in as a SIGHUP would: an operator who added a domain to
        local_domains and reloaded only smtp-listener (which then took mail
        for it) had queue-manager send that mail to the domain's MX, where
        it bounced"""
        qid = inject(self.inst, 'bob@example.test', ['alice@new.test'], b'Subject: new\n\nx\n')
        self.inst.wait_log('queue-manager', '%s rcpt=alice@new.test result=deferred status="4.4.1' % qid)
        self.inst.set_conf(local_domains='example.test localhost new.test')
        self.inst.wait_log('queue-manager', 'event=reload status=ok trigger=file_changed')
        self.inst.run('postern-queue', 'flush')
        (_, data), = self.wait_msgs('alice')
        self.assertIn(b'Delivered-To: alice@new.test\n', data)
        self.wait_queue_empty()
        # a broken file is refused and the settings in use are kept
        self.inst.set_conf(local_concurrency='many')
        self.inst.wait_log('queue-manager', 'event=reload status=refused')
        inject(self.inst, 'bob@example.test', ['alice@new.test'], b'Subject: again\n\nx\n')
        self.wait_msgs('alice', 2)

    def test_postern_queue_deletes_many(self):
        """delete ID..., delete - (IDs on stdin, one a line, as postsuper -d -
        reads them) and delete ALL (postsuper -d ALL): an operator purging a
        queue of deferred mail had to run one delete per message"""
        with open(self.inst.path('conf', 'mailboxes'), 'a') as f:
            f.write('stuck:20999:20999:/nonexistent/postern-test/Maildir\n')
        ids = [inject(self.inst, 'bob@example.test', ['stuck@example.test'], b'Subject: %d\n\nx\n' % i)
               for i in range(7)]
        for qid in ids:
            self.inst.wait_log('queue-manager', '%s rcpt=stuck@example.test result=deferred' % qid)
        r = self.inst.run('postern-queue', 'delete', ids[0], ids[1], '0' * 16, check=False)
        self.assertEqual(r.returncode, 100, r.stderr)
        self.assertEqual(sorted(r.stdout.splitlines()), sorted('%s deleted' % i for i in ids[:2]))
        self.assertIn('%s: no such message' % ('0' * 16), r.stderr)
        r = self.inst.run('postern-queue', 'delete', '-', input='%s\n\n%s\n%s\n' % (ids[2], ids[3], ids[2]))
        self.assertEqual(sorted(r.stdout.splitlines()), sorted('%s deleted' % i for i in ids[2:4]))
        r = self.inst.run('postern-queue', 'delete', '-', input='%s\nnot-an-id\n' % ids[4], check=False)
        self.assertEqual((r.returncode, r.stdout), (100, ''), r.stderr)    # nothing asked
        self.assertIn('not-an-id: not a queue id', r.stderr)
        self.assertEqual(sorted(self.inst.queue_ids()), sorted(ids[4:]))
        r = self.inst.run('postern-queue', 'delete', 'ALL')
        self.assertEqual(sorted(r.stdout.splitlines()), sorted('%s deleted' % i for i in ids[4:]))
        self.assertEqual(self.inst.queue_ids(), [])
        r = self.inst.run('postern-queue', 'delete', 'ALL')        # nothing left: nothing to do
        self.assertEqual((r.returncode, r.stdout), (0, ''))
        # no bounces: queue-manager queues one before it removes a message
        log = self.inst.log('queue-manager')
        for qid in ids:
            self.assertIn('%s removed=operator-request' % qid, log)
            self.assertNotIn('%s dsn=' % qid, log)
        self.assertEqual(self.inst.maildir_messages('bob'), [])


# A FUSE mount that nobody serves: every access below it waits, as on an
# NFS server that stopped answering (hard mount), until the process is
# killed or the connection aborted (the holder exits).
HUNG_MOUNT = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open('/dev/fuse', os.O_RDWR)
opts = 'fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other' % fd
if libc.mount(b'hung', sys.argv[1].encode(), b'fuse', 0, opts.encode()) != 0:
    sys.exit('mount: ' + os.strerror(ctypes.get_errno()))
print('mounted', flush=True)
sys.stdin.read()            # until the test closes our stdin
"""


def hang_below(test, path):
    """mount HUNG_MOUNT's file system on path until test.release_hung()
    (its tearDown calls it before it stops the instance, whose removal
    would wait on the mount), or skip test if that cannot be done"""
    if not os.path.exists('/dev/fuse'):
        test.skipTest('no /dev/fuse to make a hung file system with')
    holder = subprocess.Popen([sys.executable, '-c', HUNG_MOUNT, path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def release():
        holder.stdin.close()       # the connection ends: every wait on it fails
        holder.wait(timeout=10)
        subprocess.run(['umount', '-l', path], stderr=subprocess.DEVNULL)
    test.release_hung = release
    if holder.stdout.readline() != b'mounted\n':
        test.skipTest('cannot mount FUSE: %s' % holder.stderr.read().decode(errors='replace'))


class HungMailboxTest(unittest.TestCase):
    """One user's Maildir on a filesystem that stops answering must not
    stall the deliveries to everybody else."""

    def setUp(self):
        need(self, *PROGRAMS)
        need_root(self)
        self.inst = delivery_instance('')
        self.inst.add_user('carol', 'pw-carol')
        hang_below(self, self.inst.maildir('carol'))

    def tearDown(self):
        getattr(self, 'release_hung', lambda: None)()
        inst = getattr(self, 'inst', None)
        if inst is not None:
            inst.stop()

    def hung_share(self, share):
        """12 messages to carol (more than local_concurrency, 10): share of
        them hang in her mailbox workers, no more; alice's gets past"""
        carol = mailbox_ids(self.inst, 'carol')[0]
        for i in range(12):
            inject(self.inst, 'bob@example.test', ['carol@example.test'], b'Subject: c%d\n\nx\n' % i)
        # carol's deliveries are under way, and waiting on the hung mount
        self.inst.wait_for(lambda: len(workers(self.inst, carol)) >= share, 20,
                           what=lambda: "carol's mailbox workers\n" + self.inst.log('queue-manager'))
        inject(self.inst, 'bob@example.test', ['alice@example.test'], b'Subject: a\n\nx\n')
        self.inst.wait_for(lambda: self.inst.maildir_messages('alice'), 20,
                           what=lambda: "alice's message past carol's hung ones\n" + self.inst.log('queue-manager'))
        # no more of carol's than local_per_recipient at a time
        self.assertEqual(len(workers(self.inst, carol)), share)

    def test_hung_mailbox_leaves_others_delivered(self):
        self.hung_share(2)                # local_per_recipient's default

    def test_local_per_recipient_sets_the_share(self):
        self.inst.set_conf(local_per_recipient=3)
        self.inst.reload_and_wait('queue-manager')
        self.hung_share(3)


class HungMailRootTest(unittest.TestCase):
    """ROOT/mail itself on a file system that stops answering, after a
    delivery into it: local-deliverer's root process, which made each
    ROOT/mail user's home (mkdir as root) before every delivery, waited
    there for good, and nobody got local mail, not even users whose Maildir
    is elsewhere."""

    def setUp(self):
        need(self, *PROGRAMS)
        need_root(self)
        self.inst = delivery_instance('')
        self.inst.add_user('carol', 'pw-carol')
        self.elsewhere = tempfile.mkdtemp(prefix='postern-home-')
        self.addCleanup(shutil.rmtree, self.elsewhere, True)
        os.chmod(self.elsewhere, 0o755)
        home = os.path.join(self.elsewhere, 'dora')
        os.mkdir(home, 0o700)
        os.chown(home, 20555, 20555)
        self.inst.run('postern-user', '--root', self.inst.root, 'add', 'dora', '--uid', '20555', '--gid', '20555',
                      '--maildir', os.path.join(home, 'Maildir'), input='pw-dora\n')

    def tearDown(self):
        getattr(self, 'release_hung', lambda: None)()
        inst = getattr(self, 'inst', None)
        if inst is not None:
            inst.stop()

    def test_hung_mail_root_leaves_others_delivered(self):
        carol = mailbox_ids(self.inst, 'carol')[0]
        inject(self.inst, 'bob@example.test', ['carol@example.test'], b'Subject: before\n\nx\n')
        self.inst.wait_for(lambda: self.inst.maildir_messages('carol'), 20, what="carol's first message")
        hang_below(self, self.inst.path('mail'))
        for i in range(3):
            inject(self.inst, 'bob@example.test', ['carol@example.test'], b'Subject: c%d\n\nx\n' % i)
        self.inst.wait_for(lambda: workers(self.inst, carol), 20,
                           what=lambda: "carol's mailbox worker\n" + self.inst.log('queue-manager'))
        inject(self.inst, 'bob@example.test', ['dora@example.test'], b'Subject: d\n\nx\n')
        self.inst.wait_for(lambda: self.inst.maildir_messages('dora'), 20,
                           what=lambda: "dora's message past carol's hung ones\n" + self.inst.log('queue-manager'))


    def test_hung_mail_root_at_a_reload(self):
        """after a reload every home is looked at afresh: carol's, under
        the hung ROOT/mail, is made in a child that local-deliverer waits
        for at most 5 s, then her mail is deferred (its reason in the
        queue) and dora's is delivered; the old code did the mkdir itself
        and waited for good"""
        inject(self.inst, 'bob@example.test', ['carol@example.test'], b'Subject: before\n\nx\n')
        self.inst.wait_for(lambda: self.inst.maildir_messages('carol'), 20, what="carol's first message")
        hang_below(self, self.inst.path('mail'))
        acks = self.inst.log('queue-manager').count('event=reload from=queue-manager')
        self.inst.reload('queue-manager')
        self.inst.wait_for(lambda: self.inst.log('queue-manager').count('event=reload from=queue-manager') > acks,
                           10, what='local-deliverer reloaded')
        inject(self.inst, 'bob@example.test', ['carol@example.test'], b'Subject: c\n\nx\n')
        inject(self.inst, 'bob@example.test', ['dora@example.test'], b'Subject: d\n\nx\n')
        self.inst.wait_for(lambda: self.inst.maildir_messages('dora'), 20,
                           what=lambda: "dora's message past carol's hung home\n" + self.inst.log('queue-manager'))
        self.inst.wait_for(lambda: 'does not answer' in self.inst.run('postern-queue', 'list').stdout, 20,
                           what=lambda: "carol's deferral in the queue\n" + self.inst.log('queue-manager'))
        self.assertIn('not answering after 5000 ms', self.inst.log('queue-manager'))

if __name__ == '__main__':
    unittest.main()
