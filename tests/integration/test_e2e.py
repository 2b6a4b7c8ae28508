"""test_e2e.py - the whole delivery path from the outside: SMTP on the
instance's port 25 (the real smtp-listener, queue-inject, queue-manager,
local-deliverer under s6), then the users' Maildirs.

test_delivery.py drives queue-manager directly through queue-inject; these
tests go in through SMTP and cover what only the whole chain shows: bytes
exact across the wire and three uids, kill -9 of queue-manager and
local-deliverer during a 2,000-message run, an unwritable Maildir deferred
and delivered once fixed, one DSN per failed message (never to <>), and a
deleted message that never comes back.
"""

import email
import email.header
import email.policy
import email.utils
import os
import pwd
import random
import re
import signal
import socket
import subprocess
import threading
import time
import unittest

from harness import Instance, need, need_root

PROGRAMS = ('postern-setup', 'postern-user', 'smtp-listener', 'auth-checker', 'queue-inject',
            'queue-manager', 'local-deliverer', 'postern-queue')
USERS = ('alice', 'bob', 'carol', 'dave')


def wire(message):
    """LF text -> CRLF, dot-stuffed, with the end-of-data line."""
    assert message.endswith(b'\n')
    out = []
    for line in message[:-1].split(b'\n'):
        out.append((b'.' + line if line.startswith(b'.') else line) + b'\r\n')
    return b''.join(out) + b'.\r\n'


def uid_taken(uid):
    """True if /etc/passwd has the uid"""
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False


class Smtp:
    """A minimal SMTP client that reuses its connection."""

    def __init__(self, port):
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b''
        self.expect('220')
        self.cmd('EHLO e2e.test', '250')

    def reply(self):
        while True:
            while b'\n' not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError('connection closed')
                self.buf += chunk
            line, self.buf = self.buf.split(b'\n', 1)
            if len(line) < 4 or line[3:4] != b'-':
                return line.decode(errors='replace').rstrip('\r')

    def expect(self, code):
        r = self.reply()
        if not r.startswith(code):
            raise AssertionError('wanted %s, got %r' % (code, r))
        return r

    def cmd(self, text, code):
        self.sock.sendall(text.encode() + b'\r\n')
        return self.expect(code)

    def send(self, sender, rcpts, message):
        """One transaction; returns the queue id from the final 250."""
        self.cmd('MAIL FROM:<%s>' % sender, '250')
        for r in rcpts:
            self.cmd('RCPT TO:<%s>' % r, '250')
        self.cmd('DATA', '354')
        self.sock.sendall(wire(message))
        r = self.expect('250')
        return r.split()[-1]

    def close(self):
        try:
            self.cmd('QUIT', '221')
        except (OSError, EOFError, AssertionError):
            pass
        self.sock.close()


def split_added(data):
    """(Return-Path, Delivered-To, [Received header lines], rest) of a
    delivered file: the lines postern adds in front of what was sent."""
    lines = data.split(b'\n')
    rp, dt = lines[0], lines[1]
    i = 2
    rcvd = []
    if i < len(lines) and lines[i].startswith(b'Received: '):
        rcvd.append(lines[i])
        i += 1
        while i < len(lines) and lines[i][:1] in (b'\t', b' '):
            rcvd.append(lines[i])
            i += 1
    return rp, dt, rcvd, b'\n'.join(lines[i:])


DS_PER_MESSAGE = {'original-envelope-id', 'reporting-mta', 'dsn-gateway', 'received-from-mta', 'arrival-date'}
DS_PER_RECIPIENT = {'original-recipient', 'final-recipient', 'action', 'status', 'remote-mta',
                    'diagnostic-code', 'last-attempt-date', 'final-log-id', 'will-retry-until'}
DS_ACTION_CLASS = {'failed': '45', 'delayed': '4', 'delivered': '2', 'relayed': '2', 'expanded': '2'}


def ds_blocks(body):
    """The groups of a delivery-status body (RFC 3464 2.1: the per-message
    fields, then each recipient's, separated by blank lines), each a list of
    (name, unfolded value); asserts the field syntax of RFC 5322 2.2."""
    blocks, cur = [], []
    for line in body.replace('\r\n', '\n').split('\n'):
        if line == '':
            if cur:
                blocks.append(cur)
            cur = []
        elif line[0] in ' \t':
            assert cur, 'a continuation line first: %r' % line
            cur[-1] = (cur[-1][0], cur[-1][1] + ' ' + line.strip())
        else:
            m = re.match(r'([\x21-\x39\x3b-\x7e]+):[ \t]*(.*)$', line)
            assert m, 'not a header field: %r' % line
            cur.append((m.group(1), m.group(2).strip()))
    if cur:
        blocks.append(cur)
    return blocks


def check_dsn_grammar(tc, data, utf8=False):
    """data: a DSN as delivered (Return-Path first). Checks it parses without
    defects and that its delivery-status part follows RFC 3464's grammar;
    returns (message, per-message fields, [per-recipient fields]) as dicts
    with lower-case names."""
    tc.assertTrue(data.startswith(b'Return-Path: <>\n'), data[:200])
    m = email.message_from_bytes(data, policy=email.policy.default)
    for part in m.walk():
        tc.assertEqual(part.defects, [], (part.get_content_type(), data[:3000]))
    tc.assertEqual(m.get_content_type(), 'multipart/report')
    # RFC 6522 3: the subtype of the second part
    tc.assertEqual(m.get_param('report-type'), 'global-delivery-status' if utf8 else 'delivery-status')
    tc.assertEqual(str(m['Auto-Submitted']), 'auto-replied')
    tc.assertTrue(str(m['From']).startswith('Mail Delivery System <MAILER-DAEMON@'), m['From'])
    for h in ('To', 'Subject', 'Date', 'Message-ID', 'MIME-Version'):
        tc.assertEqual(len(m.get_all(h) or []), 1, h)
    tc.assertIsNotNone(email.utils.parsedate_to_datetime(str(m['Date'])))
    parts = m.get_payload()
    tc.assertEqual(len(parts), 3)
    tc.assertEqual(parts[0].get_content_type(), 'text/plain')
    tc.assertEqual(parts[1].get_content_type(),
                   'message/global-delivery-status' if utf8 else 'message/delivery-status')
    tc.assertIn(parts[2].get_content_type(), ('message/global', 'message/global-headers') if utf8
                else ('message/rfc822', 'text/rfc822-headers'))
    # the raw text of the second part, as the RFC's grammar sees it
    bnd = m.get_boundary().encode()
    raw = data.split(b'\n--' + bnd + b'\n')[2].split(b'\n--' + bnd)[0]
    body = raw.split(b'\n\n', 1)[1].decode('utf-8' if utf8 else 'ascii')
    blocks = ds_blocks(body)
    tc.assertGreaterEqual(len(blocks), 2, body)
    out = []
    for i, block in enumerate(blocks):
        names = [n.lower() for n, _ in block]
        tc.assertEqual(len(names), len(set(names)), 'a field twice: %s' % block)
        known = DS_PER_MESSAGE if i == 0 else DS_PER_RECIPIENT
        for n in names:
            tc.assertTrue(n in known or n.startswith('x-'), '%s in block %d' % (n, i))
        f = {n.lower(): v for n, v in block}
        for n in ('arrival-date', 'last-attempt-date', 'will-retry-until'):
            if n in f:
                tc.assertIsNotNone(email.utils.parsedate_to_datetime(f[n]), (n, f[n]))
        for n in ('reporting-mta', 'remote-mta', 'diagnostic-code', 'final-recipient', 'original-recipient'):
            if n in f:
                tc.assertRegex(f[n], r'^[A-Za-z0-9-]+;.', (n, f[n]))
        if i == 0:
            tc.assertTrue(f.get('reporting-mta', '').startswith('dns;'), block)
        else:
            for n in ('final-recipient', 'action', 'status'):
                tc.assertIn(n, f, block)
            tc.assertIn(f['action'], DS_ACTION_CLASS, block)
            tc.assertRegex(f['status'], r'^[245]\.\d{1,3}\.\d{1,3}$')
            tc.assertIn(f['status'][0], DS_ACTION_CLASS[f['action']], block)
            if f['action'] != 'delayed':
                tc.assertNotIn('will-retry-until', f)
        out.append(f)
    return m, out[0], out[1:]


def mailbox_ids(inst, name):
    with open(inst.path('conf', 'mailboxes')) as f:
        for line in f:
            fields = line.rstrip('\n').split(':')
            if fields[0] == name:
                return int(fields[1]), int(fields[2])
    raise AssertionError('no mailbox ' + name)


def ppid(pid):
    with open('/proc/%d/stat' % pid) as f:
        st = f.read()
    return int(st[st.rindex(')') + 2:].split()[1])


class E2ETest(unittest.TestCase):
    def setUp(self):
        need(self, *PROGRAMS)
        self.inst = Instance(services=['auth-checker', 'queue-manager', 'smtp-listener'],
                             conf_extra={'max_sessions': '100', 'max_sessions_per_client': '100'})
        self.inst.setup()
        for u in USERS:
            self.inst.add_user(u, 'pw-' + u)
        path = self.inst.path('conf', 'aliases')
        with open(path + '.new', 'w') as f:
            f.write('postmaster: alice\nabuse: alice\nloop1: loop2\nloop2: loop1@example.test\n')
        os.chmod(path + '.new', 0o644)
        os.rename(path + '.new', path)
        self.inst.without_remote().start()
        self.port = self.inst.port('smtp')

    def tearDown(self):
        inst = getattr(self, 'inst', None)
        if getattr(self, 'unwritable', None) and os.path.isdir(self.unwritable):
            # whatever the test did: an ordinary user cannot remove the
            # files of a directory without its write bit
            os.chmod(self.unwritable, 0o700)
        if inst is not None:
            inst.stop()

    def qlog(self):
        return self.inst.log('queue-manager')

    def wait_msgs(self, name, n=1, timeout=30):
        return self.inst.wait_for(
            lambda: len(self.inst.maildir_messages(name)) >= n and self.inst.maildir_messages(name),
            timeout, what=lambda: '%d message(s) for %s\n%s' % (n, name, self.qlog()[-3000:]))

    def wait_queue_empty(self, timeout=30):
        self.inst.wait_for(lambda: not self.inst.queue_ids(), timeout,
                           what=lambda: 'an empty queue\n' + self.qlog()[-3000:])

    def send(self, sender, rcpts, message):
        c = Smtp(self.port)
        try:
            return c.send(sender, rcpts, message)
        finally:
            c.close()

    def make_unwritable(self, name):
        """Deliver one message so the Maildir exists, then take the write
        bit off new/ (chmod 500: still readable, so the test can count
        what is in it as an ordinary user too, when the mail user is that
        user)."""
        self.send('bob@example.test', [name + '@example.test'], b'Subject: first\n\nfirst\n')
        self.wait_msgs(name)
        self.wait_queue_empty()
        new = os.path.join(self.inst.maildir(name), 'new')
        os.chmod(new, 0o500)
        self.unwritable = new        # tearDown gives the write bit back
        return new

    def list_lines(self):
        return self.inst.run('postern-queue', 'list').stdout.splitlines()

    # 1 ------------------------------------------------------------------
    def test_bytes_exact_three_uids(self):
        need_root(self, 'each mail user has a uid of its own, which only root can deliver as')
        samples = {
            'alice': b'From: bob@example.test\nSubject: exact 1\n\nline one\n.\n..two dots\n'
                     b'.leading dot\n\n\ntrailing blanks   \ntab\there\n',
            'bob': b'Subject: eight bit\nContent-Type: text/plain; charset=utf-8\n\n'
                   b'caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7\n' + b'x' * 990 + b'\n',
            'carol': b'Subject: big\n\n' + b''.join(b'%06d ' % i + b'abcdefghij' * 7 + b'\n'
                                                   for i in range(3000)),
        }
        sent = {}
        for u, msg in samples.items():
            sent[u] = self.send('dave@example.test', ['%s@example.test' % u], msg)
        # one message, three recipients, one transaction
        multi = b'Subject: to three\nMessage-ID: <three@e2e.test>\n\n.\nsame body for all\n'
        self.send('dave@example.test', ['alice@example.test', 'Bob@Example.Test',
                                        'carol@example.test'], multi)
        uids = set()
        for u, msg in samples.items():
            got = self.wait_msgs(u, 2)
            uid, gid = mailbox_ids(self.inst, u)
            uids.add(uid)
            self.assertNotEqual(uid, 0)
            bodies = []
            for path, data in got:
                self.assertIn('/new/', path)
                st = os.stat(path)
                self.assertEqual((st.st_uid, st.st_gid), (uid, gid), path)
                self.assertEqual(st.st_mode & 0o777, 0o600)
                rp, dt, rcvd, rest = split_added(data)
                self.assertEqual(rp, b'Return-Path: <dave@example.test>')
                self.assertTrue(dt.lower() == ('delivered-to: %s@example.test' % u).encode(), dt)
                self.assertTrue(rcvd and b'(postern)' in b'\n'.join(rcvd), data[:400])
                bodies.append(rest)
            self.assertEqual(sorted(bodies), sorted([msg, multi]), u)
            # the Maildir itself belongs to the user too
            md = self.inst.maildir(u)
            for sub in ('', 'tmp', 'new', 'cur'):
                st = os.stat(os.path.join(md, sub))
                self.assertEqual(st.st_uid, uid, sub)
            self.assertEqual(os.listdir(os.path.join(md, 'tmp')), [])
        self.assertEqual(len(uids), 3)
        self.wait_queue_empty()
        self.assertEqual(self.inst.maildir_messages('dave'), [])

    # 2 ------------------------------------------------------------------
    def test_one_copy_for_one_mailbox_named_in_several_cases(self):
        """<bob@...>, <BOB@...> and <bob@EXAMPLE.TEST> in one transaction
        are one mailbox: one copy, as Postfix delivers (run side by side:
        one copy there, three here before). A relayed address keeps its
        case; only ours are folded."""
        msg = b'Subject: cases\n\nonce\n'
        self.send('dave@example.test', ['bob@example.test', 'BOB@example.test',
                                        'bob@EXAMPLE.TEST', 'Bob@Example.Test'], msg)
        self.send('dave@example.test', ['alice@example.test'], b'Subject: after\n\nx\n')
        self.wait_msgs('alice')
        self.wait_queue_empty()
        bob = self.inst.maildir_messages('bob')
        self.assertEqual(len(bob), 1, [d[:200] for _, d in bob])
        rp, dt, _, rest = split_added(bob[0][1])
        self.assertEqual(dt, b'Delivered-To: bob@example.test')
        self.assertEqual(rest, msg)

    def test_kill9_during_2000_messages(self):
        n, conns = 2000, 10
        rcpts = ('alice', 'bob', 'carol')

        def message(i):
            return (b'Subject: e2e-kill %d\nMessage-ID: <k%d@e2e.test>\n\n' % (i, i) +
                    b'body of %d\n' % i * 20 + b'END %d\n' % i)

        accepted = {}
        errors = []
        attempted = [0]
        lock = threading.Lock()

        def sender(k):
            # the n messages, and more for as long as fewer than 5 kills have
            # landed (the run takes about a second now, and a kill of
            # queue-manager makes the next wait for s6's restart): at least 5
            # kills must fall while mail is coming in
            c = None
            i = k - conns
            try:
                while True:
                    i += conns
                    if i >= n and (len(kills) >= 5 or time.monotonic() - t0 > 60):
                        break
                    if c is None:
                        c = Smtp(self.port)
                    with lock:
                        attempted[0] += 1
                    try:
                        c.send('dave@example.test', ['%s@example.test' % rcpts[i % 3]], message(i))
                    except AssertionError as e:     # a 4xx: not accepted, fine
                        errors.append('%d: %s' % (i, e))
                        c.close()
                        c = None
                        continue
                    with lock:
                        accepted[i] = rcpts[i % 3]
                    if i % 50 == k:
                        c.close()
                        c = None
            except Exception as e:
                errors.append('sender %d: %r' % (k, e))
            finally:
                if c is not None:
                    c.close()

        done = threading.Event()
        kills = []

        def killer():
            rnd = random.Random()
            # every 0.15-0.6 s: the whole run now takes a few seconds (it
            # took 15 before the performance work), and at least 5 kills
            # must land in it
            while not done.wait(rnd.uniform(0.15, 0.6)):
                qm = self.inst.service_pid('queue-manager')
                if qm is None:
                    continue
                target = rnd.choice(('queue-manager', 'local-deliverer'))
                pid = qm
                if target == 'local-deliverer':
                    pid = None
                    for p in self.inst.processes():
                        try:
                            if (os.path.basename(os.readlink('/proc/%d/exe' % p)) == 'local-deliverer'
                                    and ppid(p) == qm):
                                pid = p
                        except OSError:
                            pass
                    if pid is None:
                        continue
                try:
                    os.kill(pid, signal.SIGKILL)
                    kills.append((round(time.monotonic() - t0, 2), target, pid))
                except ProcessLookupError:
                    pass

        t0 = time.monotonic()
        threads = [threading.Thread(target=sender, args=(k,)) for k in range(conns)]
        kt = threading.Thread(target=killer)
        kt.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        t_sent = time.monotonic() - t0
        # keep killing while the backlog drains, then let it finish
        deadline = time.monotonic() + 120
        while self.inst.queue_ids() and time.monotonic() < deadline and \
                time.monotonic() - t0 < t_sent + 5:
            time.sleep(0.1)
        done.set()
        kt.join()
        # jobs in flight when local-deliverer died were deferred with the
        # normal back-off (a message that kills the deliverer must not make
        # it crash-loop): an operator's flush retries them now
        deadline = time.monotonic() + 120
        flushes = 0
        while self.inst.queue_ids() and time.monotonic() < deadline:
            self.inst.wait_ready('queue-manager', 30)
            if self.inst.run('postern-queue', 'flush', check=False).returncode == 0:
                flushes += 1
            end = time.monotonic() + 5
            while self.inst.queue_ids() and time.monotonic() < end:
                time.sleep(0.1)
        self.wait_queue_empty(1)
        t_all = time.monotonic() - t0

        seen = {}
        where = {}
        partial = []
        for u in rcpts:
            for path, data in self.inst.maildir_messages(u):
                self.assertIn('/new/', path)
                rest = split_added(data)[3]
                i = int(rest.split(b'\n', 1)[0].split()[-1])
                if rest != message(i):
                    partial.append(path)
                    continue
                seen[i] = seen.get(i, 0) + 1
                where[i] = u
        tmp_left = sum(len(os.listdir(os.path.join(self.inst.maildir(u), 'tmp'))) for u in rcpts)
        dups = {i: c for i, c in seen.items() if c > 1}
        print('\n[e2e kill -9] %d messages over %d connections: %d accepted (%d not: %s) in %.1f s, '
              'all delivered at %.1f s; %d kills (%d queue-manager, %d local-deliverer); '
              '%d duplicate deliveries of %d messages%s; %d file(s) left in Maildir tmp/; '
              '%d flush(es) at the end'
              % (attempted[0], conns, len(accepted), attempted[0] - len(accepted), errors[:3], t_sent, t_all,
                 len(kills), sum(1 for k in kills if k[1] == 'queue-manager'),
                 sum(1 for k in kills if k[1] == 'local-deliverer'),
                 sum(c - 1 for c in dups.values()), len(dups),
                 (': ' + ', '.join('#%d x%d' % kv for kv in sorted(dups.items())[:20])) if dups else '',
                 tmp_left, flushes))
        print('[e2e kill -9] kills (s, target, pid): %s' % kills)
        self.assertEqual(partial, [])
        self.assertGreaterEqual(len(kills), 5)
        self.assertGreater(len(accepted), attempted[0] * 0.95, errors[:5])
        missing = sorted(set(accepted) - set(seen))
        self.assertEqual(missing, [], 'accepted but never delivered')
        for i, u in accepted.items():
            self.assertEqual(where[i], u)
        self.assertEqual(self.inst.queue_tmp_files(), [])

    # 3 ------------------------------------------------------------------
    def test_unwritable_maildir_deferred_then_delivered(self):
        new = self.make_unwritable('carol')
        qid = self.send('bob@example.test', ['carol@example.test'], b'Subject: second\n\nsecond\n')
        self.inst.wait_log('queue-manager', '%s rcpt=carol@example.test result=deferred' % qid, 30)
        # queue-manager logs a result as it takes it and saves the envelope
        # (write, fsync, rename) at the end of the round: list may read the
        # envelope of before the attempt for a moment
        def listed():
            lines = self.list_lines()
            rec = [l for l in lines[1:] if '<carol@example.test>' in l]
            return lines if rec and len(rec[0].split()) > 3 else None
        lines = self.inst.wait_for(listed, 10, what='the deferral in postern-queue list')
        self.assertEqual(lines[0].split(' ')[0], qid, lines)
        self.assertEqual(lines[0].split(' ')[3], '<bob@example.test>')
        rec = [l for l in lines[1:] if '<carol@example.test>' in l]
        self.assertEqual(len(rec), 1, lines)
        f = rec[0].split()
        # "  pending ATTEMPTS <rcpt> STATUS reason..."
        self.assertEqual(f[0], 'pending')
        self.assertTrue(f[3].startswith('4.'), rec)
        self.assertGreater(len(f), 4, 'no reason given: %r' % rec)
        print('\n[e2e] deferral shown by postern-queue list: %r' % rec[0])
        self.assertEqual(len(self.inst.maildir_messages('carol')), 1)
        # fixed: a flush retries at once (the next scheduled try is minutes away)
        os.chmod(new, 0o700)
        self.inst.run('postern-queue', 'flush')
        msgs = self.wait_msgs('carol', 2, timeout=20)
        self.wait_queue_empty()
        self.assertEqual(sum(1 for _, d in msgs if d.endswith(b'\n\nsecond\n')), 1)
        # the log trails the delivery (s6-log writes it a moment later)
        self.inst.wait_log('queue-manager', '%s rcpt=carol@example.test result=delivered' % qid)
        self.assertEqual(self.inst.maildir_messages('bob'), [])     # no DELAY/failure report

    # 4 ------------------------------------------------------------------
    def check_report(self, data, rcpts, status):
        for policy in (email.policy.default, email.policy.compat32):
            m = email.message_from_bytes(data, policy=policy)
            self.assertEqual(m.get_content_type(), 'multipart/report')
            self.assertEqual(m.get_param('report-type'), 'delivery-status')
            types = [p.get_content_type() for p in m.get_payload()]
            self.assertIn('message/delivery-status', types)
        self.assertEqual(types[0], 'text/plain')
        ds = m.get_payload()[types.index('message/delivery-status')]
        text = ds.as_string()
        for r in rcpts:
            self.assertIn(r, text)
        self.assertEqual(text.count('Action: failed'), len(rcpts), text)
        self.assertIn('Status: ' + status, text)
        return m

    def test_one_dsn_per_failed_message(self):
        # two recipients of one message fail permanently (5.4.6: the message
        # already carries their Delivered-To): ONE report listing both
        loop = (b'Delivered-To: alice@example.test\nDelivered-To: carol@example.test\n'
                b'Subject: looped\nMessage-ID: <looped@e2e.test>\n\nx\n')
        qid = self.send('bob@example.test', ['alice@example.test', 'carol@example.test'], loop)
        (_, data), = self.wait_msgs('bob')
        self.wait_queue_empty()     # a report is queued before its message is removed
        self.assertEqual(len(self.inst.maildir_messages('bob')), 1)
        m = self.check_report(data, ['alice@example.test', 'carol@example.test'], '5.4.6')
        self.assertEqual(m['To'].strip('<>'), 'bob@example.test')
        self.assertIn(b'Message-ID: <looped@e2e.test>', data)
        self.assertEqual(self.qlog().count('%s dsn=failure' % qid), 1)
        # an alias loop, through SMTP, bounced the same way
        qid2 = self.send('dave@example.test', ['loop1@example.test'], b'Subject: alias loop\n\nx\n')
        (_, data), = self.wait_msgs('dave')
        self.check_report(data, ['loop1@example.test'], '5.4.6')
        self.wait_queue_empty()
        self.assertEqual(self.qlog().count('%s dsn=failure' % qid2), 1)
        # from <>: never a report to <>; the failure goes to postmaster (alice), once
        qid3 = self.send('', ['carol@example.test'],
                         b'Delivered-To: carol@example.test\nSubject: from null\n\nx\n')
        (_, data), = self.wait_msgs('alice')
        self.check_report(data, ['carol@example.test'], '5.4.6')
        self.wait_queue_empty()     # a report is queued before its message is removed
        self.assertEqual(len(self.inst.maildir_messages('alice')), 1)
        log = self.qlog()
        self.assertEqual(log.count('%s dsn=' % qid3), 1, log)
        for line in log.splitlines():
            if ' dsn=' in line and ' to=' in line:
                to = line.split(' to=', 1)[1].split(' ', 1)[0]
                self.assertNotIn(to, ('', '<>'), line)
        # and no report went to <>: every report is from <>, each to a real user
        for u in USERS:
            for _, d in self.inst.maildir_messages(u):
                self.assertTrue(d.startswith(b'Return-Path: <>\n'), d[:200])

    def test_dsn_grammar(self):
        """Every kind of report this host makes, generated through SMTP,
        parsed by Python's email package without defects and checked field
        by field against RFC 3464's grammar"""
        path = self.inst.path('conf', 'aliases')
        with open(path, 'a') as f:
            f.write('team: alice, carol\n')
        loop = b'Delivered-To: alice@example.test\nDelivered-To: carol@example.test\nSubject: x\n\nbody\n'
        c = Smtp(self.port)
        try:
            # a failure: two recipients, ORCPT, ENVID, RET=HDRS
            c.cmd('MAIL FROM:<bob@example.test> RET=HDRS ENVID=E+2B1', '250')
            c.cmd('RCPT TO:<alice@example.test> ORCPT=rfc822;A+2Bx@example.test NOTIFY=FAILURE', '250')
            c.cmd('RCPT TO:<carol@example.test> NOTIFY=SUCCESS,FAILURE', '250')
            c.cmd('DATA', '354')
            c.sock.sendall(wire(loop))
            c.expect('250')
            # successes: a mailbox and an alias
            c.cmd('MAIL FROM:<dave@example.test> ENVID=S1', '250')
            c.cmd('RCPT TO:<carol@example.test> NOTIFY=SUCCESS', '250')
            c.cmd('RCPT TO:<team@example.test> NOTIFY=SUCCESS,FAILURE', '250')
            c.cmd('DATA', '354')
            c.sock.sendall(wire(b'Subject: fine\n\nfine\n'))
            c.expect('250')
        finally:
            c.close()
        (_, fail), = self.wait_msgs('bob')
        m, pm, rc = check_dsn_grammar(self, fail)
        self.assertEqual(pm['original-envelope-id'], 'E+1')
        self.assertEqual([r['action'] for r in rc], ['failed', 'failed'])
        self.assertEqual(rc[0]['original-recipient'], 'rfc822;A+x@example.test')
        self.assertEqual(m.get_payload()[2].get_content_type(), 'text/rfc822-headers')
        (_, ok), = self.wait_msgs('dave')
        m, pm, rc = check_dsn_grammar(self, ok)
        self.assertEqual(pm['original-envelope-id'], 'S1')
        self.assertEqual(sorted((r['final-recipient'], r['action']) for r in rc),
                         [('rfc822; carol@example.test', 'delivered'), ('rfc822; team@example.test', 'expanded')])
        # a double bounce (from <>), and an SMTPUTF8 failure
        self.send('', ['carol@example.test'], loop)
        dbl = self.inst.wait_for(lambda: [d for _, d in self.inst.maildir_messages('alice')
                                          if d.startswith(b'Return-Path: <>')], 30, what='the double bounce')
        self.assertEqual(len(dbl), 1)
        check_dsn_grammar(self, dbl[0])
        c = Smtp(self.port)
        try:
            c.cmd('MAIL FROM:<dave@example.test> SMTPUTF8', '250')
            c.cmd('RCPT TO:<carol+\u00e9@example.test>', '250')
            c.cmd('DATA', '354')
            c.sock.sendall(wire(b'Delivered-To: carol+\xc3\xa9@example.test\nSubject: caf\xc3\xa9\n\nx\n'))
            c.expect('250')
        finally:
            c.close()
        msgs = self.wait_msgs('dave', 2)
        u8 = [d for _, d in msgs if d != ok][0]
        m, pm, rc = check_dsn_grammar(self, u8, utf8=True)
        self.assertEqual(rc[0]['final-recipient'], 'utf-8; carol+\u00e9@example.test')
        self.wait_queue_empty()

    def test_postfix_orcpt_of_a_utf8_address(self):
        """Postfix 3.7's smtp client sends the original recipient of an
        SMTPUTF8 message for a non-ASCII address as an rfc822 ORCPT whose
        xtext is the address's UTF-8 octets ("RCPT TO:<j\u00fcrgen@...>
        ORCPT=rfc822;j+C3+BCrgen@..."), and its smtpd takes that. postern
        answered 501 5.5.4 Bad ORCPT value and Postfix bounced the message.
        It is now taken as the RFC 6533 utf-8 ORCPT it means (a '+' in it
        escaped as \\x{2B}), and the report, a global one, shows that"""
        c = Smtp(self.port)
        try:
            c.cmd('MAIL FROM:<dave@example.test> SIZE=300 BODY=8BITMIME SMTPUTF8', '250')
            c.cmd('RCPT TO:<carol@example.test> ORCPT=rfc822;j+C3+BCrgen+2Bx@example.test NOTIFY=SUCCESS', '250')
            c.cmd('DATA', '354')
            c.sock.sendall(wire('Subject: gr\u00fc\u00dfe\n\nx\n'.encode()))
            c.expect('250')
        finally:
            c.close()
        self.wait_msgs('carol')
        (_, ok), = self.wait_msgs('dave')
        m, pm, rc = check_dsn_grammar(self, ok, utf8=True)
        self.assertEqual([(r['action'], r['original-recipient']) for r in rc],
                         [('delivered', 'utf-8;j\u00fcrgen\\x{2B}x@example.test')])
        self.wait_queue_empty()

    # 5 ------------------------------------------------------------------
    def test_delete_deferred_never_delivered(self):
        new = self.make_unwritable('dave')
        qid = self.send('bob@example.test', ['dave@example.test'], b'Subject: doomed\n\ndoomed\n')
        keep = self.send('bob@example.test', ['alice@example.test'], b'Subject: kept\n\nkept\n')
        self.inst.wait_log('queue-manager', '%s rcpt=dave@example.test result=deferred' % qid, 30)
        self.wait_msgs('alice')
        self.assertIn(qid, self.inst.queue_ids())
        r = self.inst.run('postern-queue', 'delete', qid)
        self.assertIn('deleted', r.stdout)
        self.assertNotIn(qid, self.inst.queue_ids())
        self.assertNotIn(qid, self.inst.run('postern-queue', 'list').stdout)
        # fixed, flushed, restarted: it must not come back
        os.chmod(new, 0o700)
        self.inst.run('postern-queue', 'flush')
        self.inst.wait_log('queue-manager', 'flush=requested')
        self.wait_queue_empty()             # "kept" delivered and removed too
        starts = self.qlog().count('event=start messages=')
        self.inst.svc('queue-manager', '-t')
        self.inst.wait_for(lambda: self.qlog().count('event=start messages=') > starts, 20,
                           what='queue-manager restarted')
        # the restarted queue-manager found nothing to do: the deleted
        # message is not back
        self.assertEqual(re.findall(r'event=start messages=(\d+)', self.qlog())[-1], '0')
        flushes = self.qlog().count('flush=requested')
        self.inst.run('postern-queue', 'flush')
        self.inst.wait_for(lambda: self.qlog().count('flush=requested') > flushes, 10, what='the flush taken')
        self.assertEqual(len(self.inst.maildir_messages('dave')), 1)   # only "first"
        self.assertNotIn('%s rcpt=dave@example.test result=delivered' % qid, self.qlog())
        self.assertEqual(self.inst.queue_ids(), [])
        self.assertEqual(self.inst.maildir_messages('bob'), [])        # and no report
        self.assertIn(keep, self.qlog())

    def test_added_from_encodes_a_non_ascii_full_name(self):
        """sendmail's added From: with a non-ASCII full name (-F, or the
        GECOS field): an RFC 2047 encoded-word, not raw UTF-8 in a quoted
        string, which RFC 6532 allows only in mail sent with SMTPUTF8 (the
        queue does not ask for it here); Postfix encodes it the same way
        (full_name_encoding_charset)"""
        need(self, 'sendmail')
        name = 'J\xfcrgen "Q" M\xfcller ' + '\xe9' * 40
        r = subprocess.run([self.inst.bin('sendmail'), '-F', name, '-t'],
                           input=b'To: alice@example.test\nSubject: sm\n\nbody\n',
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30, cwd='/')
        self.assertEqual(r.returncode, 0, r.stderr)
        (_, data), = self.wait_msgs('alice')
        head = data.split(b'\n\n', 1)[0]
        self.assertTrue(all(b < 0x80 for b in head), head)
        self.assertLessEqual(max(len(l) for l in head.split(b'\n')), 78)
        m = email.message_from_bytes(data, policy=email.policy.default)
        self.assertEqual(m['From'].defects, ())
        (addr,) = m['From'].addresses
        self.assertTrue(addr.addr_spec.endswith('@' + self.inst.hostname), addr.addr_spec)
        # decoded as RFC 2047 6.2 says (white space between encoded-words
        # dropped; policy.default's address parser keeps it)
        raw = email.message_from_bytes(data, policy=email.policy.compat32)['From']
        self.assertEqual(str(email.header.make_header(email.header.decode_header(raw))),
                         '%s <%s>' % (name.replace('"', ''), addr.addr_spec))
        # an ASCII name stays a quoted string
        r = subprocess.run([self.inst.bin('sendmail'), '-F', 'Cron Daemon', '-t'],
                           input=b'To: alice@example.test\nSubject: sm2\n\nbody\n',
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30, cwd='/')
        self.assertEqual(r.returncode, 0, r.stderr)
        data = [d for _, d in self.wait_msgs('alice', 2) if b'Subject: sm2' in d][0]
        self.assertIn(b'\nFrom: "Cron Daemon" <', data)


    def test_sendmail_for_a_user_with_a_non_ascii_login_name(self):
        """The login name goes into sendmail's Received: comment as ASCII
        ('?' for other octets, and for "(", ")", "\\" that would end the
        comment early): it went in raw, queue-inject refused the non-ASCII
        field, and such a user could not send mail at all"""
        need(self, 'sendmail')
        need_root(self, 'it adds a system user with a non-ASCII name')
        name = 'pstrn\u00f6'
        subprocess.run(['userdel', name], stderr=subprocess.DEVNULL)     # left by an interrupted run
        uid = next(u for u in range(20777, 30000) if not uid_taken(u))
        subprocess.run(['useradd', '--badname', '-M', '-N', '-u', str(uid), '-s', '/usr/sbin/nologin', name],
                       check=True)
        self.addCleanup(subprocess.run, ['userdel', name])
        r = subprocess.run([self.inst.bin('sendmail'), '-t', '-f', 'bob@example.test'],
                           input=b'To: alice@example.test\nSubject: sm\n\nbody\n',
                           preexec_fn=lambda: (os.setgid(65534), os.setuid(uid)),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30, cwd='/')
        self.assertEqual(r.returncode, 0, r.stderr)
        (_, data), = self.wait_msgs('alice')
        self.assertIn(b'\nReceived: (from pstrn??, uid %d)\n\tby ' % uid, data)

if __name__ == '__main__':
    unittest.main()

