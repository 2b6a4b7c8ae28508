"""test_acceptance.py - the acceptance items of issues 4 and 6 that the
other integration tests do not cover:

  issue 4  curl pop3:// and mpop (a real POP3 client that delivers into a
           Maildir) retrieve every message byte-exact;
  issue 6  kill -9 of each daemon in turn under a steady SMTP load (s6
           restarts it, no accepted message is lost); sendmail -t delivers
           to a local user through a running instance; a SIGHUP after a
           conf change takes effect (smtp-listener, pop3-listener); a broken
           conf is refused on SIGHUP by every daemon, which keeps running on
           the old conf and logs the file and line.
"""

import os
import pwd
import re
import shutil
import signal
import subprocess
import threading
import time
import unittest

import harness
from harness import (Instance, IS_ROOT, HarnessError, need, need_root, pop3_dialogue,
                     smtp_dialogue)

PASSWORD = 'acc-Secret 1'


def crlf(data):
    """the octets RETR sends for a stored message (LF -> CRLF, a final CRLF)"""
    out = data.replace(b'\r\n', b'\n').replace(b'\n', b'\r\n')
    return out if out.endswith(b'\r\n') or not out else out + b'\r\n'


def put_message(inst, user, name, data):
    md = inst.maildir(user)
    path = os.path.join(md, 'new', name)
    with open(path, 'wb') as f:
        f.write(data)
    st = os.stat(md)
    os.chown(path, st.st_uid, st.st_gid)


def corpus():
    """messages meant to trip a client: dot lines, a lone dot, 8-bit, long
    lines, an empty body, a big one (LF line ends, as stored)"""
    msgs = [
        b'Subject: plain\nFrom: a@example.test\n\nhello\n',
        b'Subject: dots\n\n.\n..\n.leading dot\n...three\nend\n',
        b'Subject: 8bit\nContent-Type: text/plain; charset=utf-8\n\n\xc3\xa9t\xc3\xa9 \xe2\x82\xac\n',
        b'Subject: long line\n\n' + b'x' * 990 + b'\n' + b'y' * 5000 + b'\n',
        b'Subject: empty body\n\n',
        b'Subject: From quoting\n\nFrom the start of a line\n>From already quoted\n',
        b'Subject: big\n\n' + b''.join(b'line %06d .dot and text\n' % i + (b'.\n' if i % 97 == 0 else b'')
                                       for i in range(40000)),
    ]
    return msgs


class Pop3Clients(harness.InstanceTest):
    """issue 4: curl pop3:// and mpop retrieve everything byte-exact"""
    PROGRAMS = ('postern-setup', 'postern-user', 'auth-checker', 'pop3-listener')
    INSTANCE = {'services': ['auth-checker', 'pop3-listener'],
                'users': {'alice': PASSWORD, 'bob': PASSWORD}}
    PORT = 'pop3'

    def fill(self, user):
        msgs = corpus()
        md = self.inst.maildir(user)
        for sub in ('new', 'cur'):
            for n in os.listdir(os.path.join(md, sub)):
                os.unlink(os.path.join(md, sub, n))
        for i, m in enumerate(msgs):
            put_message(self.inst, user, '%d.M%dP%d.acc' % (1600000000 + i, i, i), m)
        # the order POP3 numbers them in: ask the server
        r = pop3_dialogue(self.port, [(None, '+OK'), ('USER ' + user, '+OK'), ('PASS ' + PASSWORD, '+OK'),
                                      ('UIDL', '+OK'), ('QUIT', '+OK')])
        order = []
        for line in r[3].split('\n')[1:]:
            n, uid = line.split(' ', 1)
            order.append(uid)
        self.assertEqual(len(order), len(msgs))
        by_uid = {}
        for sub in ('new', 'cur'):
            for n in os.listdir(os.path.join(md, sub)):
                with open(os.path.join(md, sub, n), 'rb') as f:
                    by_uid[n.split(':')[0]] = f.read()
        # UIDLs are derived from the file names; match by content otherwise
        out = []
        for uid in order:
            out.append(by_uid.get(uid))
        if None in out:
            out = None
        return msgs, out

    def test_curl_pop3_every_message_byte_exact(self):
        if not shutil.which('curl'):
            self.skipTest('curl not installed')
        msgs, ordered = self.fill('alice')
        got = []
        for n in range(1, len(msgs) + 1):
            r = subprocess.run(['curl', '-sS', '--max-time', '30',
                                'pop3://alice:%s@127.0.0.1:%d/%d' % (PASSWORD.replace(' ', '%20'), self.port, n)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            got.append(r.stdout)
        want = sorted(crlf(m) for m in msgs)
        self.assertEqual(sorted(got), want, 'curl got different octets')
        if ordered:
            self.assertEqual(got, [crlf(m) for m in ordered])
        # LIST sizes equal what curl received
        r = subprocess.run(['curl', '-sS', '--max-time', '30',
                            'pop3://alice:%s@127.0.0.1:%d/' % (PASSWORD.replace(' ', '%20'), self.port)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        sizes = [int(l.split()[1]) for l in r.stdout.decode().splitlines() if l.strip()]
        self.assertEqual(sizes, [len(g) for g in got])
        # nothing was deleted
        self.assertEqual(len(self.inst.maildir_messages('alice')), len(msgs))

    def mpop_conf(self, tag, port, tls):
        work = self.inst.path('acc-mpop-' + tag)
        os.makedirs(work)
        out = os.path.join(work, 'Maildir')
        for sub in ('new', 'cur', 'tmp'):
            os.makedirs(os.path.join(out, sub))
        pwfile = os.path.join(work, 'pw')
        with open(pwfile, 'w') as f:
            f.write(PASSWORD + '\n')
        conf = os.path.join(work, 'mpoprc')
        with open(conf, 'w') as f:
            f.write('account acc\nhost 127.0.0.1\nport %d\nuser bob\npasswordeval cat %s\n'
                    'auth user\ndelivery maildir %s\nuidls_file %s\nkeep on\nonly_new off\n'
                    'received_header off\ntimeout 30\n'
                    % (port, pwfile, out, os.path.join(work, 'uidls')))
            if tls:     # implicit TLS (995), the instance's self-signed certificate as the trust anchor
                f.write('tls on\ntls_starttls off\ntls_trust_file %s\ntls_host_override %s\n'
                        % (self.inst.path('conf', 'tls', 'cert.pem'), self.inst.hostname))
            else:
                f.write('tls off\n')
        os.chmod(conf, 0o600)
        return conf, out

    def mpop(self, conf, *extra):
        r = subprocess.run(['mpop', '-C', conf, '--half-quiet'] + list(extra) + ['acc'],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
                           universal_newlines=True)
        self.assertEqual(r.returncode, 0, r.stdout)
        return r.stdout

    def fetched(self, out):
        got = []
        for n in os.listdir(os.path.join(out, 'new')):
            with open(os.path.join(out, 'new', n), 'rb') as f:
                got.append(f.read())
        return got

    def test_mpop_into_maildir_byte_exact(self):
        if not shutil.which('mpop'):
            self.skipTest('mpop not installed (scripts/deps.sh installs it)')
        msgs, _ = self.fill('bob')
        conf, out = self.mpop_conf('plain', self.port, False)
        self.mpop(conf)
        # mpop stores LF line ends: the messages as the server holds them
        self.assertEqual(sorted(self.fetched(out)), sorted(msgs), 'mpop stored different octets')
        self.assertEqual(len(self.inst.maildir_messages('bob')), len(msgs), '--keep: nothing deleted')
        # a second run with the UIDL list fetches nothing new, and with
        # --keep=off (DELE + QUIT) empties the mailbox on the server
        self.mpop(conf, '--only-new=on', '--keep=off')
        self.assertEqual(len(os.listdir(os.path.join(out, 'new'))), len(msgs), 'UIDLs stable')
        self.assertEqual(self.inst.maildir_messages('bob'), [])

    def test_mpop_pop3s_instance_certificate(self):
        if not shutil.which('mpop'):
            self.skipTest('mpop not installed (scripts/deps.sh installs it)')
        need(self, 'tls-proxy')
        msgs, _ = self.fill('bob')
        conf, out = self.mpop_conf('tls', self.inst.port('pop3s'), True)
        self.mpop(conf)
        self.assertEqual(sorted(self.fetched(out)), sorted(msgs), 'mpop over TLS stored different octets')


def send_one(port, i, rcpt='alice@example.test', timeout=10):
    """one SMTP transaction; returns the queue id, or None if not accepted"""
    body = 'Subject: acc %d\r\nX-Acc-Seq: %d\r\n\r\nsteady load message %d\r\n.' % (i, i, i)
    try:
        r = smtp_dialogue(port, [(None, '220'), ('EHLO load.test', '250'),
                                 ('MAIL FROM:<load@client.test>', '250'),
                                 ('RCPT TO:<%s>' % rcpt, '250'), ('DATA', '354'),
                                 (body, '250'), ('QUIT', None)], timeout=timeout)
    except (HarnessError, OSError):
        return None
    m = re.search(r'queued as ([0-9A-F]+)', r[-1])
    return m.group(1) if m else r[-1]


def seqs_in_maildir(inst, user):
    seen = {}
    for _, data in inst.maildir_messages(user):
        m = re.search(rb'X-Acc-Seq: (\d+)', data)
        if m:
            k = int(m.group(1))
            seen[k] = seen.get(k, 0) + 1
    return seen


def flush_until_empty(inst, timeout=120):
    """deferred jobs (a deliverer killed mid-job backs off) are retried now"""
    deadline = time.monotonic() + timeout
    while inst.queue_ids() and time.monotonic() < deadline:
        inst.wait_ready('queue-manager', 30)
        inst.run('postern-queue', 'flush', check=False)
        end = time.monotonic() + 3
        while inst.queue_ids() and time.monotonic() < end:
            time.sleep(0.1)
    return not inst.queue_ids()


ALL = ('postern-setup', 'postern-user', 'auth-checker', 'pop3-listener', 'smtp-listener',
       'queue-manager', 'queue-inject', 'local-deliverer', 'postern-queue')


class Kill9UnderLoad(unittest.TestCase):
    """issue 6: kill -9 each daemon in turn under a steady SMTP load"""

    def setUp(self):
        need(self, *ALL)

    def children(self, inst, ppid_, name):
        out = []
        for p in inst.processes():
            try:
                if os.path.basename(os.readlink('/proc/%d/exe' % p)) != name:
                    continue
                with open('/proc/%d/stat' % p) as f:
                    st = f.read()
                if int(st[st.rindex(')') + 2:].split()[1]) == ppid_:
                    out.append(p)
            except (OSError, ValueError):
                pass
        return out

    def test_kill9_each_daemon_in_turn(self):
        with Instance(users={'alice': PASSWORD}) as inst:
            port = inst.port('smtp')
            accepted = {}       # seq -> queue id
            refused = []
            stop = threading.Event()

            def load(i, step):
                while not stop.is_set():
                    qid = send_one(port, i, timeout=5)
                    if qid:
                        accepted[i] = qid
                    else:
                        refused.append(i)
                        time.sleep(0.05)
                    i += step
                    time.sleep(0.01)

            senders = [threading.Thread(target=load, args=(k, 2)) for k in range(2)]
            for t in senders:
                t.start()
            kills = []
            try:
                time.sleep(1.5)
                for s in ('smtp-listener', 'queue-manager', 'auth-checker', 'pop3-listener'):
                    pid = inst.service_pid(s)
                    self.assertIsNotNone(pid, s)
                    extra = self.children(inst, pid, 'local-deliverer') if s == 'queue-manager' else []
                    before = len(accepted)
                    for p in [pid] + extra:
                        try:
                            os.kill(p, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    kills.append((s, pid, len(extra)))
                    inst.wait_for(lambda: inst.service_pid(s) not in (None, pid), 20,
                                  what='s6 to restart ' + s)
                    inst.wait_ready(s, 20)
                    if s == 'auth-checker' or s == 'pop3-listener':
                        pop3_dialogue(inst.port('pop3'), [(None, '+OK'), ('USER alice', '+OK'),
                                                          ('PASS ' + PASSWORD, '+OK'), ('QUIT', '+OK')])
                    # the load goes on: more messages accepted after the restart
                    inst.wait_for(lambda: len(accepted) > before + 5, 30,
                                  what='SMTP load after restarting ' + s)
                time.sleep(1.0)
            finally:
                stop.set()
                for t in senders:
                    t.join()
            self.assertTrue(flush_until_empty(inst), 'queue did not empty: %s' % inst.queue_ids()[:10])
            seen = inst.wait_for(lambda: (lambda s: s if set(accepted) <= set(s) else None)(
                seqs_in_maildir(inst, 'alice')), 30, what='every accepted message in the Maildir')
            dups = {k: c for k, c in seen.items() if c > 1}
            print('\n[acceptance kill -9] 2 senders: %d accepted, %d refused/failed during restarts, kills %s; '
                  '%d duplicate deliveries%s'
                  % (len(accepted), len(refused), kills, sum(c - 1 for c in dups.values()),
                     (': ' + ', '.join('seq %d (queue id %s) x%d' % (k, accepted.get(k), c)
                                       for k, c in sorted(dups.items()))) if dups else ''))
            self.assertEqual(sorted(set(accepted) - set(seen)), [], 'accepted but lost')
            self.assertGreater(len(accepted), 50)


class RunningHost(harness.InstanceTest):
    """issue 6: sendmail -t, SIGHUP with a changed conf, a broken conf"""
    PROGRAMS = ALL
    INSTANCE = {'users': {'alice': PASSWORD}}

    def setUp(self):
        super().setUp()
        need(self, 'sendmail')
        self.conf = self.inst.path('conf', 'postern.conf')
        with open(self.conf) as f:
            self.saved = f.read()

    def tearDown(self):
        with open(self.conf) as f:
            now = f.read()
        if now != self.saved:
            with open(self.conf, 'w') as f:
                f.write(self.saved)
            for s in self.inst.services:
                self.inst.reload(s)
            time.sleep(0.5)

    def test_sendmail_t_delivers_to_local_user(self):
        before = len(self.inst.maildir_messages('alice'))
        msg = (b'To: Alice <alice@example.test>\nBcc: alice@localhost\nSubject: via sendmail -t\n\n'
               b'.a line with a dot\nfrom cron\n')
        kw = {}
        if IS_ROOT:       # an ordinary local user: sendmail reaches the queue through setuid queue-inject
            kw['preexec_fn'] = lambda: (os.setgid(65534), os.setuid(65534))
        r = subprocess.run([self.inst.bin('sendmail'), '-t', '-i'], input=msg, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30, cwd='/', **kw)
        self.assertEqual(r.returncode, 0, r.stderr)
        msgs = self.inst.wait_for(lambda: (lambda m: m if len(m) >= before + 2 else None)(
            self.inst.maildir_messages('alice')), 20, what='two deliveries (To and Bcc)')
        new = [d for _, d in msgs if b'Subject: via sendmail -t' in d]
        self.assertEqual(len(new), 2, 'one per recipient')
        for d in new:
            self.assertIn(b'\n.a line with a dot\nfrom cron\n', d)
            self.assertNotIn(b'\nBcc:', d)
        # and the user reads them over POP3
        r = pop3_dialogue(self.inst.port('pop3'), [(None, '+OK'), ('USER alice', '+OK'),
                                                   ('PASS ' + PASSWORD, '+OK'), ('STAT', '+OK'), ('QUIT', '+OK')])
        self.assertGreaterEqual(int(r[3].split()[1]), before + 2)

    def test_sendmail_as_cron_and_mailx_call_it(self):
        """The options real callers pass: Debian's cron runs
        "sendmail -FCronDaemon -i -B8BITMIME -oem USER", mailx "-oi -oem --
        USER", PHP "-t -i"; each message is queued and delivered. A mode
        postern does not have (-bd, -q1h) is refused with 64 (-bs is
        test_ops.SendmailSmtpMode)"""
        before = len(self.inst.maildir_messages('alice'))
        calls = (['-FCronDaemon', '-i', '-B8BITMIME', '-oem', 'alice'],
                 ['-oi', '-oem', '-odi', '-N', 'never', '-U', '--', 'alice'],
                 ['-t', '-i', '-B', '7BIT', '-V', 'env1', '-R', 'hdrs', '-h', '3'])
        for n, args in enumerate(calls):
            msg = b'To: alice@example.test\nSubject: caller %d\n\nout\n' % n
            r = subprocess.run([self.inst.bin('sendmail')] + args, input=msg, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=30)
            self.assertEqual(r.returncode, 0, (args, r.stderr))
        msgs = self.inst.wait_for(lambda: (lambda m: m if len(m) >= before + 3 else None)(
            self.inst.maildir_messages('alice')), 20, what='three deliveries')
        subjects = sorted(re.search(rb'Subject: (caller \d)', d).group(1) for _, d in msgs
                          if b'Subject: caller' in d)
        self.assertEqual(subjects, [b'caller 0', b'caller 1', b'caller 2'])
        cron = [d for _, d in msgs if b'Subject: caller 0' in d][0]
        # the caller's login name (root as root)
        self.assertIn(b'\nFrom: "CronDaemon" <%s@' % pwd.getpwuid(os.getuid()).pw_name.encode(), cron)
        for args in (['-bd'], ['-q1h'], ['-B', 'BINARYMIME', 'alice'], ['-X']):
            r = subprocess.run([self.inst.bin('sendmail')] + args, input=b'x\n', stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=30)
            self.assertEqual(r.returncode, 64, (args, r.stderr))

    def test_sighup_max_recipients_smtp(self):
        steps = [(None, '220'), ('EHLO c.test', '250'), ('MAIL FROM:<a@client.test>', '250'),
                 ('RCPT TO:<alice@example.test>', '250'), ('RCPT TO:<alice@localhost>', '250'),
                 ('RCPT TO:<alice@example.test>', None), ('QUIT', None)]
        c = harness.Conn(self.inst.port('smtp'))
        try:
            smtp_dialogue(None, steps, conn=c)
            self.assertTrue(c.smtp_reply().startswith('250'), c.text())
        finally:
            c.close()
        pid = self.inst.service_pid('smtp-listener')
        self.inst.set_conf(max_recipients='2')
        self.inst.reload_and_wait('smtp-listener')
        self.assertEqual(self.inst.service_pid('smtp-listener'), pid)
        smtp_dialogue(self.inst.port('smtp'), steps[:5] + [
            ('RCPT TO:<alice@example.test>', '452'), ('QUIT', '221')])

    def test_sighup_plaintext_policy_pop3(self):
        login = [(None, '+OK'), ('USER alice', '+OK'), ('PASS ' + PASSWORD, '+OK'), ('QUIT', '+OK')]
        pop3_dialogue(self.inst.port('pop3'), login)
        pid = self.inst.service_pid('pop3-listener')
        self.inst.set_conf(pop3_plaintext_auth='never')
        self.inst.reload_and_wait('pop3-listener')
        self.assertEqual(self.inst.service_pid('pop3-listener'), pid)
        pop3_dialogue(self.inst.port('pop3'), [(None, '+OK'), ('USER alice', '-ERR [AUTH]'), ('QUIT', '+OK')])

    def test_broken_conf_refused_on_sighup(self):
        with open(self.conf, 'a') as f:
            f.write('max_recipients = lots\n')
        with open(self.conf) as f:
            line = len(f.read().splitlines())
        where = 'postern.conf:%d:' % line
        for s in self.inst.services:
            with self.subTest(service=s):
                pid = self.inst.service_pid(s)
                n = self.inst.log(s).count(where)
                self.inst.reload(s)
                try:
                    self.inst.wait_for(lambda: self.inst.log(s).count(where) > n, 10,
                                       what='%s to log %s' % (s, where))
                except HarnessError as e:
                    self.fail('%s\n--- log:\n%s' % (e, self.inst.log(s)[-1500:]))
                last = [l for l in self.inst.log(s).splitlines() if where in l][-1]
                self.assertIn('max_recipients', last)
                time.sleep(0.3)
                self.assertEqual(self.inst.service_pid(s), pid, '%s died' % s)
        # each keeps running on the old conf: mail still flows in and out
        reply = harness.send_mail(self.inst.port('smtp'), 'a@client.test', ['alice@example.test'],
                                  'Subject: after broken conf\n\nstill up\n')
        self.assertTrue(reply.startswith('250'), reply)
        self.inst.wait_for(lambda: any(b'after broken conf' in d for _, d in self.inst.maildir_messages('alice')),
                           20, what='delivery on the old conf')
        pop3_dialogue(self.inst.port('pop3'), [(None, '+OK'), ('USER alice', '+OK'),
                                               ('PASS ' + PASSWORD, '+OK'), ('QUIT', '+OK')])


if __name__ == '__main__':
    unittest.main()
