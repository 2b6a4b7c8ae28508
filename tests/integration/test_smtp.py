"""smtp-listener on a real instance: the operators' guides' SMTP sessions
verbatim, real clients (smtplib, swaks), PIPELINING, SMTP smuggling, the
limits (line length, recipients, SIZE, errors, connections, timeout), HTTP
and TLS on the plaintext port, the privilege separation of the session, and
that a 250 means the message is in the queue.

Only smtp-listener runs (no queue-manager), so accepted messages stay in
queue/ where the tests can see them."""

import email
import os
import pwd
import re
import shutil
import smtplib
import socket
import subprocess
import time
import unittest
from email.message import EmailMessage

from harness import (Instance, InstanceTest, Conn, HarnessError, IS_ROOT, need, need_root, smtp_dialogue,
                     free_ports, fd_targets, final_codes, raw_session)

HOST = 'mail.example.test'


def queued_id(reply):
    m = re.search(r'queued as ([0-9A-F]{16})', reply)
    return m.group(1) if m else None


def in_queue(inst, qid):
    h = qid[-1]
    return (os.path.exists(inst.path('queue', 'env', h, qid)) and
            os.path.exists(inst.path('queue', 'mess', h, qid)))


def read_queue(inst, qid):
    with open(inst.path('queue', 'mess', qid[-1], qid), 'rb') as f:
        mess = f.read()
    with open(inst.path('queue', 'env', qid[-1], qid), 'rb') as f:
        env = f.read()
    return mess, env


def ppid(pid):
    with open('/proc/%d/status' % pid) as f:
        return int(re.search(r'^PPid:\s+(\d+)', f.read(), re.M).group(1))


def make_instance(**conf):
    inst = Instance(services=('smtp-listener',), hostname=HOST)
    inst.setup()
    conf.setdefault('smtp_listen', '127.0.0.1:%d [::1]:%d' % (inst.port('smtp'), inst.port('smtp')))
    with open(inst.path('conf', 'recipients'), 'a') as f:
        f.write('alice\n')
    if conf:
        inst.set_conf(**conf)
    return inst


class SmtpBase(InstanceTest):
    PROGRAMS = ('smtp-listener', 'queue-inject', 'postern-setup')
    PORT = 'smtp'
    conf = {}

    @classmethod
    def new_instance(cls):
        return make_instance(**cls.conf).start()

    def dialogue(self, steps, **kw):
        return smtp_dialogue(self.port, steps, **kw)


class SmtpSeeds(SmtpBase):
    """The SMTP sessions of the operators' guides, as typed there."""

    def test_seed_000(self):
        r = self.dialogue([
            (None, '220 %s ESMTP postern' % HOST),
            ('HELO my.server.com', '250 ' + HOST),
            ('MAIL FROM: <danny@mydomain.com>', '250 2.1.0'),
            ('RCPT TO: <sarah@yourdomain.com>', '250 2.1.5'),
            ('DATA', '354 End data with <CR><LF>.<CR><LF>'),
            ('From: Danny Dolittle <danny@mydomain.com>\r\n'
             'To: Sarah Smith <sarah@yourdomain.com>\r\n'
             'Subject: Email sample\r\n'
             'Mime-Version: 1.0\r\n'
             'Content-Type: text/plain; charset=us-ascii\r\n'
             '\r\n'
             'This is a test email for you to read.\r\n'
             '.', '250 2.0.0 Ok: queued as '),
            ('QUIT', '221 2.0.0 %s closing connection' % HOST),
        ])
        qid = queued_id(r[-2])
        self.assertTrue(qid and in_queue(self.inst, qid), r[-2])
        mess, env = read_queue(self.inst, qid)
        self.assertIn(b'Subject: Email sample\n', mess)
        self.assertIn(b'\nThis is a test email for you to read.\n', mess)
        self.assertTrue(mess.startswith(b'Received: from my.server.com ([127.0.0.1])\n\tby ' + HOST.encode()), mess[:200])
        self.assertIn(b'danny@mydomain.com', env)
        self.assertIn(b'sarah@yourdomain.com', env)

    def test_seed_001_bracketless(self):
        r = self.dialogue([
            (None, '220'),
            ('HELO local.domain.name', '250'),
            ('MAIL FROM: mail@domain.ext', '250 2.1.0'),
            ('RCPT TO: mail@otherdomain.ext', '250 2.1.5'),
            ('DATA', '354'),
            ('Subject: hi\r\n\r\nhello mail@otherdomain.ext from mail@domain.ext\r\n.', '250 2.0.0'),
            ('QUIT', '221'),
        ])
        self.assertTrue(in_queue(self.inst, queued_id(r[-2])))

    def test_dsn_xtext_must_decode_to_printable_ascii(self):
        """RFC 3461 4.2 and 4.4: ENVID and ORCPT, once xtext-decoded, MUST
        be printable US-ASCII (the DSN cannot carry anything else); Postfix
        answers 501 5.5.4 to such an ENVID. postern took them and wrote '?'
        in the report. An rfc822 ORCPT that decodes to UTF-8 is what
        Postfix's client sends for a non-ASCII address (and its smtpd
        takes): it is taken as the utf-8 ORCPT it means (test_e2e
        test_postfix_orcpt_of_a_utf8_address); control characters and
        octets that are no UTF-8 are still refused"""
        self.dialogue([
            (None, '220'),
            ('EHLO client.example.com', '250'),
            ('MAIL FROM:<sender@example.com> ENVID=a+0Ab', '501 5.5.4'),
            ('MAIL FROM:<sender@example.com> ENVID=+C3+A9', '501 5.5.4'),
            ('MAIL FROM:<sender@example.com> ENVID=a+7F', '501 5.5.4'),
            ('MAIL FROM:<sender@example.com> ENVID=a+20b+2B', '250 2.1.0'),
            ('RCPT TO:<alice@example.test> ORCPT=rfc822;a+00b@example.test', '501 5.5.4'),
            ('RCPT TO:<alice@example.test> ORCPT=rfc822;j+C3ran@example.test', '501 5.5.4'),
            ('RCPT TO:<alice@example.test> ORCPT=rfc822;j+FFran@example.test', '501 5.5.4'),
            ('RCPT TO:<alice@example.test> ORCPT=rfc822;j+C3+B6ran+7F@example.test', '501 5.5.4'),
            ('RCPT TO:<alice@example.test> ORCPT=rfc822;j+C3+B6ran@example.test', '250 2.1.5'),
            ('RSET', '250'),
            ('MAIL FROM:<sender@example.com>', '250 2.1.0'),
            ('RCPT TO:<alice@example.test> ORCPT=rfc822;a+2Bb@example.test', '250 2.1.5'),
            ('QUIT', '221'),
        ])

    def test_seed_004_ehlo_notify_and_double_quit(self):
        with Conn(self.port) as c:
            r = self.dialogue([
                (None, '220'),
                ('EHLO client.example.com', '250-' + HOST),
                ('MAIL FROM:<sender@example.com>', '250'),
                ('RCPT TO: <alice@example.test> NOTIFY=success,failure', '250'),
                ('DATA', '354'),
                ('Subject: Test email\r\nBody of the email\r\n.', '250'),
                ('QUIT', '221'),
            ], conn=c)
            ehlo = r[1].split('\n')
            for ext in ('PIPELINING', 'SIZE 26214400', '8BITMIME', 'ENHANCEDSTATUSCODES',
                        'DSN', 'SMTPUTF8', 'CHUNKING', 'HELP'):
                self.assertTrue(any(l[4:] == ext for l in ehlo), (ext, ehlo))
            # port 25: STARTTLS offered (issue 5), AUTH never
            self.assertTrue(any(l[4:] == 'STARTTLS' for l in ehlo), ehlo)
            self.assertFalse(any('AUTH' in l for l in ehlo), ehlo)
            try:
                c.send('QUIT')
            except OSError:
                pass
            self.assertTrue(c.closed())
        qid = queued_id(r[-2])
        mess, env = read_queue(self.inst, qid)
        self.assertIn(b'alice@example.test', env)
        # the guide's "Body of the email" has no blank line before it: it is
        # no header field, so a blank line is put in (as Postfix does) and
        # it arrives as the body, not as a line of the header
        self.assertTrue(mess.endswith(b'\nSubject: Test email\n\nBody of the email\n'), mess)

    def test_seed_000_command_list(self):
        """every SMTP command the guide lists gets a considered answer"""
        r = self.dialogue([
            (None, '220'),
            ('HELP', '214'),
            ('HELO my.server.com', '250'),
            ('VRFY alice', '252 2.5.2 Cannot VRFY user'),
            ('EXPN staff', '502 5.5.1 EXPN not available'),
            ('ETRN relay.example.net', '250 2.0.0 Queuing started'),
            ('ETRN example.test', '459 4.3.0'),     # a local domain: delivered, never held (RFC 1985)
            ('ETRN !bad', '501 5.5.4'),
            ('NOOP', '250'),
            ('RSET', '250'),
            ('ATRN', '502 5.5.1 Command not implemented'),
            ('BURL imap://x', '502 5.5.1'),
            ('ONEX', '502 5.5.1'),
            ('SAML FROM:<a@b>', '502 5.5.1'),
            ('SEND FROM:<a@b>', '502 5.5.1'),
            ('SOML FROM:<a@b>', '502 5.5.1'),
            ('SUBMITTER x', '502 5.5.1'),
            ('TURN', '502 5.5.1'),
            ('VERB', '502 5.5.1'),
            ('STARTTLS now', '501 5.5.4'),
            ('AUTH LOGIN', '503 5.5.1'),
            ('BOGUS', '500 5.5.2'),
            ('QUIT', '221'),
        ])
        self.assertEqual(len(r), 23)


class SmtpClients(SmtpBase):
    def test_smtplib(self):
        msg = EmailMessage()
        msg['From'] = 'bob@client.test'
        msg['To'] = 'alice@example.test'
        msg['Subject'] = 'smtplib'
        msg.set_content('.leading dot\nline two\n')
        with smtplib.SMTP('127.0.0.1', self.port, timeout=10) as s:
            code, _ = s.ehlo('client.test')
            self.assertEqual(code, 250)
            self.assertTrue(s.has_extn('pipelining') and s.has_extn('size'))
            refused = s.send_message(msg)
            self.assertEqual(refused, {})
            code, resp = s.noop()
            self.assertEqual(code, 250)
        with self.assertRaises(smtplib.SMTPRecipientsRefused):
            with smtplib.SMTP('127.0.0.1', self.port, timeout=10) as s:
                s.sendmail('bob@client.test', ['nobody@example.test'], 'Subject: x\r\n\r\nx\r\n')

    def test_swaks(self):
        if not shutil.which('swaks'):
            self.skipTest('swaks not installed')
        before = set(self.inst.queue_ids())
        r = subprocess.run(['swaks', '--server', '127.0.0.1', '--port', str(self.port),
                            '--from', 'bob@client.test', '--to', 'alice@example.test',
                            '--helo', 'client.test', '--pipeline', '--timeout', '10'],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30,
                           universal_newlines=True)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertIn('queued as', r.stdout)
        self.assertEqual(len(set(self.inst.queue_ids()) - before), 1)

    def test_bdat_chunking(self):
        out = raw_session(self.port, b'EHLO x\r\nMAIL FROM:<b@client.test>\r\nRCPT TO:<alice@example.test>\r\n'
                          b'BDAT 21\r\nSubject: chunk\r\n\r\nab\r'
                          b'BDAT 5 LAST\r\n\ncd\r\nQUIT\r\n')
        self.assertEqual(final_codes(out), ['220', '250', '250', '250', '250', '250', '221'], out)
        mess, _ = read_queue(self.inst, queued_id(out))
        self.assertTrue(mess.endswith(b'Subject: chunk\n\nab\ncd\n'), mess)

    def test_pipelining(self):
        out = raw_session(self.port, b'EHLO x\r\nMAIL FROM:<b@client.test>\r\nRCPT TO:<alice@example.test>\r\n'
                          b'RCPT TO:<nobody@example.test>\r\nRCPT TO:<postmaster@example.test>\r\nDATA\r\n'
                          b'Subject: p\r\n\r\n..x\r\n.\r\nRSET\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\n'
                          b'DATA\r\nx\r\n.\r\nQUIT\r\n')
        self.assertEqual(final_codes(out),
                         ['220', '250', '250', '250', '550', '250', '354', '250', '250', '250', '250',
                          '354', '250', '221'], out)
        ids = re.findall(r'queued as ([0-9A-F]{16})', out)
        self.assertEqual(len(ids), 2)
        mess, env = read_queue(self.inst, ids[0])
        self.assertIn(b'\n.x\n', mess)
        self.assertNotIn(b'nobody', env)

    def test_pipelined_replies_go_out_when_the_input_runs_dry(self):
        # RFC 2920 3.2: the server "MUST send all pending responses
        # immediately whenever the local TCP input buffer is emptied",
        # also when what it has read ends inside a command line (a group
        # cut by the network) or inside a BDAT chunk
        for group, rest, codes in ((b'EHLO x\r\nMAIL FROM:<b@client.test>\r\nRCPT TO:<alice@example.test>\r\nNO',
                                    b'OP\r\n', ['250', '250', '250']),
                                   (b'EHLO x\r\nMAIL FROM:<b@client.test>\r\nRCPT TO:<alice@example.test>\r\n'
                                    b'BDAT 17 LAST\r\nSubject: b\r\n', b'\r\nx\r\n', ['250', '250', '250'])):
            with Conn(self.port) as c:
                self.assertTrue(c.smtp_reply().startswith('220'), c.text())
                c.send(group)
                got = [c.smtp_reply()[:3] for _ in codes]   # before the rest is sent
                self.assertEqual(got, codes, c.text())
                c.send(rest)
                self.assertTrue(c.smtp_reply().startswith('250'), c.text())
                c.send('QUIT')
                self.assertTrue(c.smtp_reply().startswith('221'), c.text())

    def test_ipv6(self):
        p6 = self.inst.port('smtp')
        try:
            out = raw_session(p6, b'HELO x\r\nMAIL FROM:<b@client.test>\r\nRCPT TO:<alice@example.test>\r\n'
                              b'DATA\r\nSubject: v6\r\n\r\nx\r\n.\r\nQUIT\r\n', host='::1')
        except OSError as e:
            self.skipTest('no IPv6 loopback: %s' % e)
        self.assertEqual(final_codes(out), ['220', '250', '250', '250', '354', '250', '221'])
        # the client in Received: is an address literal (RFC 5321 4.1.3,
        # 4.4): "[IPv6:::1]", not "[::1]"
        mess, _ = read_queue(self.inst, re.search(r'queued as ([0-9A-F]{16})', out).group(1))
        self.assertTrue(mess.startswith(b'Received: from x ([IPv6:::1])\n'), mess)

    def test_received_from_keeps_brackets_and_colons_for_address_literals(self):
        # RFC 5321 4.4 (Extended-Domain: a Domain or an address literal)
        # and RFC 5322 3.6.7 (received-token): the EHLO name goes into
        # Received: as a token; "[", "]" and ":" belong only to a whole
        # address literal, so a name like "x:y" or "[1.2.3.4" cannot break
        # the field's syntax for the programs that read it
        for helo, want in (('[192.0.2.1]', b'[192.0.2.1]'), ('[IPv6:2001:db8::1]', b'[IPv6:2001:db8::1]'),
                           ('x:y', b'x?y'), ('[1.2.3.4', b'?1.2.3.4'), ('a]b[c', b'a?b?c'),
                           ('[1.2]3]', b'?1.2?3?'), ('host.test', b'host.test')):
            out = raw_session(self.port, b'EHLO %s\r\nMAIL FROM:<b@client.test>\r\nRCPT TO:<alice@example.test>\r\n'
                              b'DATA\r\nSubject: h\r\n\r\nx\r\n.\r\nQUIT\r\n' % helo.encode())
            self.assertEqual(final_codes(out), ['220', '250', '250', '250', '354', '250', '221'], out)
            mess, _ = read_queue(self.inst, queued_id(out))
            self.assertTrue(mess.startswith(b'Received: from %s ([127.0.0.1])\n' % want), (helo, mess[:80]))

    def test_received_from_keeps_a_255_octet_ehlo_name_whole(self):
        # RFC 5321 4.4: the FROM clause carries the name "as presented in
        # the EHLO command", and a domain may be 255 octets (4.5.3.1.2);
        # it was cut at 129 octets, which named another host
        helo = '.'.join(['a' * 63] * 3 + ['b' * 58 + '.test'])
        self.assertEqual(len(helo), 255)
        out = raw_session(self.port, b'EHLO %s\r\nMAIL FROM:<b@client.test>\r\nRCPT TO:<alice@example.test>\r\n'
                          b'DATA\r\nSubject: h\r\n\r\nx\r\n.\r\nQUIT\r\n' % helo.encode())
        self.assertEqual(final_codes(out), ['220', '250', '250', '250', '354', '250', '221'], out)
        mess, _ = read_queue(self.inst, queued_id(out))
        self.assertTrue(mess.startswith(b'Received: from %s ([127.0.0.1])\n' % helo.encode()), mess[:300])
        self.assertLessEqual(max(len(l) for l in mess.split(b'\n')), 998)

    def test_submission_port(self):
        # submission needs TLS and AUTH before MAIL (test_tls.py has the rest)
        out = raw_session(self.inst.port('submission'),
                          b'EHLO x\r\nMAIL FROM:<b@client.test>\r\nRCPT TO:<alice@example.test>\r\nQUIT\r\n')
        self.assertEqual(final_codes(out), ['220', '250', '530', '503', '221'], out)
        self.assertIn('530 5.7.0 Must issue a STARTTLS command first', out)

    def test_data_after_every_rcpt_refused_says_so(self):
        # RFC 5321 4.1.4 (and 2920 3.1, a pipelined DATA): 503 or 554; the
        # text names the cause, not a RCPT the client did send
        out = raw_session(self.port, b'EHLO x\r\nMAIL FROM:<b@client.test>\r\n'
                          b'RCPT TO:<nobody@example.test>\r\nDATA\r\n'
                          b'BDAT 2 LAST\r\nhiRSET\r\nMAIL FROM:<b@client.test>\r\nDATA\r\nQUIT\r\n')
        self.assertEqual(final_codes(out), ['220', '250', '250', '550', '503', '503', '250', '250', '503', '221'], out)
        lines = [l for l in out.split('\r\n') if l.startswith('503')]
        self.assertEqual(lines, ['503 5.5.1 Error: no valid recipients'] * 2 +
                         ['503 5.5.1 Error: need RCPT command'], out)

    def test_vrfy_expn_between_bdat_chunks(self):
        # RFC 5321 4.1.4: NOOP, HELP, EXPN, VRFY and RSET "can be used at any
        # time during a session" and servers SHOULD process them normally,
        # "not return a 503 code"; RFC 3030 takes nothing away between
        # chunks, and the transaction goes on after them
        before = set(self.inst.queue_ids())
        out = raw_session(self.port, b'EHLO x\r\nMAIL FROM:<b@client.test>\r\nRCPT TO:<alice@example.test>\r\n'
                          b'BDAT 14\r\nSubject: v\r\n\r\nVRFY alice\r\nEXPN staff\r\nNOOP\r\nHELP\r\n'
                          b'BDAT 4 LAST\r\nhi\r\nQUIT\r\n')
        self.assertEqual(final_codes(out), ['220', '250', '250', '250', '250', '252', '502', '250', '214', '250', '221'],
                         out)
        self.assertEqual(len(set(self.inst.queue_ids()) - before), 1, out)

    def test_help_names_only_what_the_port_offers(self):
        # as EHLO does: AUTH never on port 25 (503 there), only on submission
        def help_text(port):
            out = raw_session(port, b'HELP\r\nQUIT\r\n')
            self.assertEqual(final_codes(out), ['220', '214', '221'], out)
            return ' '.join(l[4:] for l in out.split('\r\n') if l.startswith('214'))
        on25 = help_text(self.port).split()
        self.assertIn('STARTTLS', on25)
        self.assertNotIn('AUTH', on25)
        for verb in ('HELO', 'EHLO', 'MAIL', 'RCPT', 'DATA', 'BDAT', 'RSET', 'NOOP', 'QUIT', 'VRFY', 'ETRN'):
            self.assertIn(verb, on25)
        on587 = help_text(self.inst.port('submission')).split()
        self.assertIn('STARTTLS', on587)
        self.assertIn('AUTH', on587)


class SmtpDefences(SmtpBase):
    conf = {}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()

    def test_smuggling(self):
        """only CRLF.CRLF ends DATA: nothing smuggled is ever a command"""
        for sep in (b'\n.\n', b'\r.\r', b'\n.\r\n', b'\r\n.\n', b'\r\n.\r', b'\r.\r\n', b'\r\n\x00.\r\n'):
            before = set(self.inst.queue_ids())
            out = raw_session(self.port,
                              b'EHLO x\r\nMAIL FROM:<b@client.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n'
                              b'Subject: one\r\n\r\nbody' + sep +
                              b'MAIL FROM:<evil@client.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n'
                              b'Subject: smuggled\r\n\r\nx\r\n.\r\nQUIT\r\n')
            codes = final_codes(out)
            self.assertEqual(codes[:4], ['220', '250', '250', '250'], (sep, out))
            self.assertEqual(codes[4], '354', (sep, out))
            # exactly one answer to the one message, then QUIT
            self.assertEqual(len(codes), 7, (sep, out))
            self.assertEqual(codes[6], '221', (sep, out))
            new = set(self.inst.queue_ids()) - before
            if re.search(rb'\r(?!\n)', sep):
                # a bare CR: the message is refused as a whole
                self.assertEqual(codes[5], '550', (sep, out))
                self.assertIn('550 5.5.2 Error: bare <CR> in message data', out)
                self.assertEqual(new, set(), sep)
            else:
                # bare LFs are line ends, and the "." next to one is data:
                # one message, holding the smuggled text
                self.assertEqual(codes[5], '250', (sep, out))
                self.assertEqual(len(new), 1)
                mess, _ = read_queue(self.inst, new.pop())
                self.assertIn(b'Subject: smuggled', mess)
                self.assertIn(b'evil@client.test', mess)

    def test_nc_session_with_bare_lf_line_ends(self):
        """the guide's `nc localhost 25` session: every line ends with a
        bare LF, the data too, and its "." line ends the data"""
        before = set(self.inst.queue_ids())
        out = raw_session(self.port, b'EHLO client.example.com\nMAIL FROM:<b@client.test>\n'
                                     b'RCPT TO: <alice@example.test> NOTIFY=success,failure\nDATA\n'
                                     b'Subject: Test email\nBody of the email\n.\nQUIT\n')
        self.assertEqual(final_codes(out), ['220', '250', '250', '250', '354', '250', '221'], out)
        new = set(self.inst.queue_ids()) - before
        self.assertEqual(len(new), 1)
        mess, _ = read_queue(self.inst, new.pop())
        self.assertTrue(mess.endswith(b'Subject: Test email\n\nBody of the email\n'), mess)

    def test_text_without_a_header_is_not_taken_for_one(self):
        """a message whose first line is no header field (plain text, or a
        line starting with white space) gets a blank line in front of it
        (as Postfix's cleanup does): stored as it came, the text would be
        read as lines of the header after postern's Received: field, and
        the indented line as that field's continuation"""
        for data, want in ((b' indented first line\r\nsecond\r\n', b'\n\n indented first line\nsecond\n'),
                           (b'just text\r\nX: y\r\n', b'\n\njust text\nX: y\n')):
            before = set(self.inst.queue_ids())
            out = raw_session(self.port, b'EHLO client.example.com\r\nMAIL FROM:<b@client.test>\r\n'
                                         b'RCPT TO:<alice@example.test>\r\nDATA\r\n' + data +
                                         b'.\r\nQUIT\r\n')
            self.assertEqual(final_codes(out), ['220', '250', '250', '250', '354', '250', '221'], out)
            new = set(self.inst.queue_ids()) - before
            self.assertEqual(len(new), 1)
            mess, _ = read_queue(self.inst, new.pop())
            self.assertTrue(mess.endswith(b' +0000' + want), mess)

    def test_mbox_from_line_first_keeps_the_header(self):
        """a message sent as it was kept in an mbox file starts with a
        "From sender date" line: kept as the field X-Mailbox-Line: (as
        Postfix's cleanup keeps it), so Subject:, From: and the rest stay
        the header. Taken for text, it had a blank line put before it and
        the whole header became body: the recipient saw no Subject, no From"""
        data = (b'From alice@example.org Thu Nov 26 10:00:00 2026\r\nFrom: Alice <alice@example.org>\r\n'
                b'Subject: from an mbox\r\n\r\nbody\r\n')
        before = set(self.inst.queue_ids())
        out = raw_session(self.port, b'EHLO client.example.com\r\nMAIL FROM:<b@client.test>\r\n'
                                     b'RCPT TO:<alice@example.test>\r\nDATA\r\n' + data + b'.\r\nQUIT\r\n')
        self.assertEqual(final_codes(out), ['220', '250', '250', '250', '354', '250', '221'], out)
        new = set(self.inst.queue_ids()) - before
        self.assertEqual(len(new), 1)
        mess, _ = read_queue(self.inst, new.pop())
        self.assertTrue(mess.endswith(b' +0000\nX-Mailbox-Line: From alice@example.org Thu Nov 26 10:00:00 2026\n'
                                      b'From: Alice <alice@example.org>\nSubject: from an mbox\n\nbody\n'), mess)
        m = email.message_from_bytes(mess)
        self.assertEqual(m['Subject'], 'from an mbox')

    def test_line_512_513(self):
        l512 = b'NOOP ' + b'a' * (512 - 7) + b'\r\n'
        l513 = b'NOOP ' + b'a' * (513 - 7) + b'\r\n'
        self.assertEqual((len(l512), len(l513)), (512, 513))
        out = raw_session(self.port, l512 + l513 + b'QUIT\r\n')
        self.assertEqual(final_codes(out), ['220', '250', '500', '221'], out)
        self.assertIn('500 5.5.2 Error: line too long', out)

    def test_101_recipients(self):
        cmds = b'EHLO x\r\nMAIL FROM:<b@client.test>\r\n'
        cmds += b''.join(b'RCPT TO:<u%d@remote.example>\r\n' % i for i in range(101))
        out = raw_session(self.port, cmds + b'QUIT\r\n')
        codes = final_codes(out)
        self.assertEqual(codes.count('250'), 102, out[-300:])
        self.assertEqual(codes[-2:], ['452', '221'])
        self.assertIn('452 4.5.3 Too many recipients', out)

    def test_smtplib_list_past_max_recipients(self):
        # smtplib sends every RCPT and then DATA for those taken; the 250
        # refused with 452 (RFC 5321 4.5.3.1.10: send them later) must not
        # count as errors (max_errors 20) and end the session, though they
        # are more than max_recipients (100) again
        rcpts = ['u%d@remote.example' % i for i in range(350)]
        with smtplib.SMTP('127.0.0.1', self.port, timeout=10) as s:
            refused = s.sendmail('b@client.test', rcpts, 'Subject: list\r\n\r\nx\r\n')
            self.assertEqual(sorted(refused), sorted(rcpts[100:]))
            self.assertTrue(all(code == 452 for code, _ in refused.values()), refused)
            self.assertEqual(s.noop()[0], 250)

    def test_size_values(self):
        r = self.dialogue([
            (None, '220'),
            ('EHLO x', '250'),
            ('MAIL FROM:<b@client.test> SIZE=26214401', '552 5.3.4 Message size exceeds fixed limit'),
            # digits past 64 bits: a size too big, as Postfix answers (RFC 1870: 1*20DIGIT)
            ('MAIL FROM:<b@client.test> SIZE=99999999999999999999999999', '552 5.3.4'),
            ('MAIL FROM:<b@client.test> SIZE=18446744073709551616', '552 5.3.4'),
            ('MAIL FROM:<b@client.test> SIZE=-1', '501 5.5.4'),
            ('MAIL FROM:<b@client.test> SIZE=', '501 5.5.4'),
            ('MAIL FROM:<b@client.test> SIZE=26214400', '250'),
            ('QUIT', '221'),
        ])
        self.assertEqual(len(r), 9)

    def test_relay_and_local_policy(self):
        self.dialogue([
            (None, '220'),
            ('EHLO x', '250'),
            ('MAIL FROM:<b@client.test>', '250'),
            ('RCPT TO:<bob@example.test>', '550 5.1.1 <bob@example.test>: Recipient address rejected: User unknown'),
            ('RCPT TO:<Alice+tag@Example.Test>', '250'),
            ('RCPT TO:<postmaster>', '250'),
            ('RCPT TO:<abuse@localhost>', '250'),
            ('RCPT TO:<"alice"@example.test>', '250'),           # the same mailbox as alice
            ('RCPT TO:<"ali ce"@example.test>', '550 5.1.1'),
            ('RCPT TO:<alice%remote.example@example.test>', '550 5.1.1'),
            ('QUIT', '221'),
        ])

    def test_http_get(self):
        with Conn(self.port) as c:
            self.assertTrue(c.smtp_reply().startswith('220'))
            c.send(b'GET / HTTP/1.1\r\nHost: mail.example.test\r\nUser-Agent: curl\r\n\r\n')
            r = c.smtp_reply()
            self.assertTrue(r.startswith('554 5.7.0'), r)
            self.assertTrue(c.closed())
            self.assertEqual(c.buf, b'')    # nothing after the one line

    def test_header_lines_close(self):
        """a header line sent as a command (a message typed without DATA, a
        proxy's "Host:" line) closes the session; nothing after it runs"""
        for first in (b'Subject: hi', b'From: Danny <danny@mydomain.com>', b'Host: x', b'X-Long-Header-Name-Here: v'):
            out = raw_session(self.port, b'HELO x\r\n' + first + b'\r\nNOOP\r\nQUIT\r\n')
            self.assertEqual(final_codes(out), ['220', '250', '554'], (first, out))
            self.assertIn('554 5.7.0', out)

    def test_tls_client_hello(self):
        hello = bytes.fromhex('160301006e0100006a0303') + os.urandom(32) + b'\x00\x00\x02\x13\x01\x01\x00\x00\x3f'
        out = raw_session(self.port, hello + b'\r\nQUIT\r\n')
        self.assertEqual(final_codes(out), ['220', '554'], out)
        self.assertIn('554 5.7.0', out)

    def test_bare_lf_commands_and_bare_cr(self):
        out = raw_session(self.port, b'HELO x\nNOOP\rQUIT\r\nQUIT\n')
        self.assertEqual(final_codes(out), ['220', '250', '500', '221'], out)

    def test_error_limit(self):
        out = raw_session(self.port, b'XX\r\n' * 25)
        codes = final_codes(out)
        self.assertEqual(codes, ['220'] + ['500'] * 20 + ['421'], out)
        self.assertIn('421 4.7.0', out)

    def test_session_privileges(self):
        """the session runs as postern-smtp chrooted in ROOT/empty, holding
        only its connection and its channel; its monitor as root,
        unchrooted; the listener never as postern-smtp"""
        need_root(self)
        smtp_uid = pwd.getpwnam('postern-smtp').pw_uid
        with Conn(self.port) as c:
            self.assertTrue(c.smtp_reply().startswith('220'))
            sessions, monitors = [], []
            for pid in self.inst.processes():
                try:
                    with open('/proc/%d/status' % pid) as f:
                        st = f.read()
                    uids = re.search(r'^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)', st, re.M).groups()
                    root = os.readlink('/proc/%d/root' % pid)
                    exe = os.readlink('/proc/%d/exe' % pid)
                except (OSError, AttributeError):
                    continue
                if not exe.endswith('smtp-listener'):
                    continue
                if uids == (str(smtp_uid),) * 4:
                    sessions.append((pid, root))
                elif uids == ('0',) * 4:
                    monitors.append((pid, root))
            self.assertEqual(len(sessions), 1, (sessions, monitors))
            self.assertEqual(sessions[0][1], self.inst.path('empty'))
            listener = self.inst.service_pid('smtp-listener')
            monitor = ppid(sessions[0][0])
            self.assertIn((monitor, '/'), monitors)
            self.assertEqual(ppid(monitor), listener)
            self.assertIn((listener, '/'), monitors)
            # each role under its own name in ps and top
            for pid, want in ((sessions[0][0], 'smtp-session'), (monitor, 'smtp-monitor'),
                              (listener, 'smtp-listener')):
                with open('/proc/%d/comm' % pid) as f:
                    self.assertEqual(f.read().strip(), want)
            # the session holds its connection and its channel, and nothing
            # of the listener's or the monitor's (listening sockets, the TLS
            # server's request socket)

            def held(pid):
                return {t for fd, t in fd_targets(pid).items() if fd > 2}
            mine = held(sessions[0][0])
            self.assertEqual(len(mine), 2, mine)
            self.assertFalse(mine & (held(listener) | held(monitor)))
            c.send('QUIT')
            self.assertTrue(c.smtp_reply().startswith('221'))

    def test_reload_recipients(self):
        self.dialogue([(None, '220'), ('HELO x', '250'), ('MAIL FROM:<>', '250'),
                       ('RCPT TO:<carol@example.test>', '550'), ('QUIT', '221')])
        with open(self.inst.path('conf', 'recipients'), 'a') as f:
            f.write('carol\n')
        n = self.inst.log('smtp-listener').count('event=reload status=ok')
        self.inst.reload('smtp-listener')
        self.inst.wait_for(lambda: self.inst.log('smtp-listener').count('event=reload status=ok') > n,
                           what='reload')
        self.dialogue([(None, '220'), ('HELO x', '250'), ('MAIL FROM:<>', '250'),
                       ('RCPT TO:<carol@example.test>', '250'), ('QUIT', '221')])

    def test_log_lines(self):
        self.dialogue([(None, '220'), ('HELO logtest.example', '250'), ('MAIL FROM:<a@b.example>', '250'),
                       ('RCPT TO:<nobody@example.test>', '550'), ('QUIT', '221')])
        log = self.inst.wait_log('smtp-listener', 'helo=logtest.example')
        sid = re.search(r'smtp-listener: info: (\S+) event=helo verb=HELO helo=logtest.example', log).group(1)
        mine = [l for l in log.splitlines() if ' %s event=' % sid in l]
        self.inst.wait_for(lambda: 'event=disconnect' in self.inst.log('smtp-listener').split(sid, 1)[1],
                           what='disconnect line')
        mine = [l for l in self.inst.log('smtp-listener').splitlines() if ' %s event=' % sid in l]
        events = [re.search(r'event=(\S+)', l).group(1) for l in mine]
        self.assertEqual(events, ['connect', 'helo', 'mail', 'reject', 'disconnect'], mine)
        self.assertIn('code=550 status=5.1.1', mine[3])
        self.assertIn('reason=quit', mine[4])


class SmtpMessageSize(SmtpBase):
    """max_message_size is the SIZE advertised in EHLO, and RFC 1870 (4, 5)
    counts a message as it is sent: CRLF line ends, without the DATA
    dot-stuffing. A message past it is refused with 552 whether or not its
    SIZE was declared, by DATA and BDAT alike."""
    LIMIT = 1000
    conf = {'max_message_size': LIMIT}

    @staticmethod
    def message(octets, line=b'..yyy'):
        """a message of exactly this many octets as RFC 1870 counts them:
        short lines (so CRLF is a large share), each starting with a '.'
        that DATA doubles on the wire and that is not counted"""
        head = b'Subject: size\r\n\r\n'
        n, rest = divmod(octets - len(head), len(line) + 2)
        msg = head + (line + b'\r\n') * n + (b'z' * (rest - 2) + b'\r\n' if rest else b'')
        assert len(msg) == octets and rest != 1
        return msg

    def send(self, msg, bdat):
        body = (b'BDAT %d LAST\r\n' % len(msg) + msg if bdat else
                b'DATA\r\n' + msg.replace(b'\r\n.', b'\r\n..') + b'.\r\n')
        out = raw_session(self.port, b'EHLO x\r\nMAIL FROM:<b@client.test>\r\n'
                          b'RCPT TO:<alice@example.test>\r\n' + body + b'QUIT\r\n')
        return out.split('\r\n')[-3]         # the message's reply, before the 221

    def test_limit_counts_crlf_line_ends_rfc1870(self):
        for bdat in (False, True):
            self.assertTrue(self.send(self.message(self.LIMIT), bdat).startswith('250 2.0.0'), bdat)
            # one octet more is over the advertised limit, though its
            # LF-only form (what the queue stores) is far below it
            r = self.send(self.message(self.LIMIT + 1), bdat)
            self.assertEqual(r, '552 5.3.4 Message size exceeds fixed limit', bdat)
            self.assertEqual(self.send(self.message(2 * self.LIMIT - 100), bdat)[:9], '552 5.3.4', bdat)


class SmtpUserMap(unittest.TestCase):
    """the recipient map follows postern-user without a reload (own instance:
    postern-user rewrites conf/recipients from the user database)"""

    def setUp(self):
        need(self, 'smtp-listener', 'queue-inject', 'postern-setup', 'postern-user')
        self.inst = make_instance()
        self.inst.start()

    def tearDown(self):
        self.inst.stop()

    def test_new_user_accepted_without_reload(self):
        """postern-user add is enough: smtp-listener notices the rewritten
        conf/recipients at the next connection (no s6-svc -h needed)."""
        smtp_dialogue(self.inst.port('smtp'), [(None, '220'), ('HELO x', '250'), ('MAIL FROM:<>', '250'),
                       ('RCPT TO:<dora@example.test>', '550'), ('QUIT', '221')])
        marker = 'event=reload what=recipients status=ok'
        n = self.inst.log('smtp-listener').count(marker)
        self.inst.run('postern-user', '--root', self.inst.root, 'add', 'dora', input='pw-dora\n')
        smtp_dialogue(self.inst.port('smtp'), [(None, '220'), ('HELO x', '250'), ('MAIL FROM:<>', '250'),
                       ('RCPT TO:<dora@example.test>', '250'), ('QUIT', '221')])
        self.inst.wait_for(lambda: self.inst.log('smtp-listener').count(marker) > n, what=marker)


class SmtpLimits(unittest.TestCase):
    """connection limits and the idle timeout, on an instance of their own"""

    def setUp(self):
        need(self, 'smtp-listener', 'queue-inject', 'postern-setup')
        # relay_networks are exempt from the per-client limit: none of the
        # loopback addresses used here is in it
        self.inst = make_instance(max_sessions=3, max_sessions_per_client=2, session_timeout=2,
                                  relay_networks='192.0.2.0/24 127.0.0.9/32')
        self.inst.start()

    def tearDown(self):
        self.inst.stop()

    def conn_from(self, src):
        s = socket.socket()
        s.settimeout(10)
        s.bind((src, 0))
        s.connect(('127.0.0.1', self.inst.port('smtp')))
        return Conn(None, sock=s)

    def greeted(self, conns, src):
        """a new connection from src, which gets the greeting"""
        c = self.conn_from(src)
        conns.append(c)
        r = c.smtp_reply()
        self.assertTrue(r.startswith('220 '), r)

    def refused(self, conns, src):
        """a new connection from src, which gets 421 and is closed: the reply"""
        c = self.conn_from(src)
        conns.append(c)
        r = c.smtp_reply()
        self.assertTrue(r.startswith('421 4.7.0'), r)
        self.assertTrue(c.closed())
        return r

    def test_connection_limits(self):
        conns = []
        try:
            for _ in range(2):
                self.greeted(conns, '127.0.0.1')
            self.assertIn('too many connections from 127.0.0.1', self.refused(conns, '127.0.0.1'))
            self.greeted(conns, '127.0.0.2')
            self.refused(conns, '127.0.0.3')
        finally:
            for c in conns:
                c.close()
        # the slots come back once the sessions end
        def fresh():
            c = self.conn_from('127.0.0.1')
            try:
                return c.smtp_reply().startswith('220 ')
            finally:
                c.close()
        self.inst.wait_for(fresh, timeout=10, what='a free session slot')

    def test_relay_networks_exempt_from_the_per_client_limit(self):
        # 127.0.0.9 is in relay_networks: more than max_sessions_per_client
        # (2) sessions from it, up to max_sessions (3), then 421
        conns = []
        try:
            for _ in range(3):
                self.greeted(conns, '127.0.0.9')
            self.refused(conns, '127.0.0.9')
        finally:
            for c in conns:
                c.close()

    def test_idle_timeout(self):
        with Conn(self.inst.port('smtp')) as c:
            self.assertTrue(c.smtp_reply().startswith('220'))
            c.send('HELO x')
            self.assertTrue(c.smtp_reply().startswith('250'))
            t = time.time()
            r = c.smtp_reply()
            self.assertTrue(r.startswith('421 4.4.2'), r)
            self.assertGreaterEqual(time.time() - t, 1.5)
            self.assertTrue(c.closed())

    def test_sigterm_stops_listening(self):
        port = self.inst.port('smtp')
        self.inst.svc('smtp-listener', '-d')
        self.inst.wait_for(lambda: 'event=stop' in self.inst.log('smtp-listener'), what='stop')
        with self.assertRaises(OSError):
            socket.create_connection(('127.0.0.1', port), timeout=2).close()


def read_reply(sock, timeout):
    """the next whole SMTP reply (its lines), or what came before EOF"""
    sock.settimeout(timeout)
    buf = b''
    while not re.search(rb'(^|\r\n)\d{3} [^\r\n]*\r\n$', buf):
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode('latin-1')


class SmtpEndToEnd(unittest.TestCase):
    """SMTP in, queue-manager and local-deliverer out: into alice's Maildir"""

    def setUp(self):
        need(self, 'smtp-listener', 'queue-inject', 'postern-setup', 'postern-user',
             'queue-manager', 'local-deliverer')
        self.inst = Instance(services=('smtp-listener', 'queue-manager'), hostname=HOST)
        self.inst.setup()
        self.inst.add_user('alice', 'pw-alice')
        self.inst.start()

    def tearDown(self):
        self.inst.stop()

    def test_smtp_to_maildir(self):
        with smtplib.SMTP('127.0.0.1', self.inst.port('smtp'), timeout=10) as s:
            s.ehlo('client.test')
            s.sendmail('bob@client.test', ['Alice+list@example.test'],
                       b'Subject: end to end\r\n\r\n.dot line\r\nbody\r\n')
        msgs = self.inst.wait_for(lambda: self.inst.maildir_messages('alice'), timeout=20,
                                  what='delivery\n' + self.inst.log('queue-manager'))
        data = msgs[0][1]
        self.assertIn(b'Received: from client.test ([127.0.0.1])\n\tby ' + HOST.encode(), data)
        # queued for the address lower-cased (ours: its case means nothing)
        self.assertIn(b'\tfor <alice+list@example.test>; ', data)
        self.assertIn(b'Delivered-To: alice+list@example.test\n', data)
        self.assertTrue(data.endswith(b'Subject: end to end\n\n.dot line\nbody\n'), data)

    def test_quoted_and_source_routed_recipients(self):
        """RFC 5321: "alice"@dom is alice@dom (4.1.2), and a source route is
        accepted and ignored (4.1.1.3, C): both reach alice, once each, and
        the envelope carries the plain form. A quoted part that needs its
        quotes is still nobody here (routes to remote mailboxes from a
        non-relay client: test_hostile's relay tricks)"""
        port = self.inst.port('smtp')
        for rcpt in (b'<"alice"@example.test>', b'<"al\\ice"@example.test>',
                     b'<@relay.example,@other.example:alice@example.test>'):
            out = raw_session(port, b'EHLO x\r\nMAIL FROM:<"bob"@client.test>\r\nRCPT TO:' + rcpt +
                      b'\r\nDATA\r\nSubject: ' + rcpt + b'\r\n\r\nbody\r\n.\r\nQUIT\r\n')
            self.assertIn('250 2.0.0 Ok: queued', out, (rcpt, out))
        msgs = self.inst.wait_for(lambda: len(self.inst.maildir_messages('alice')) == 3 and
                                  self.inst.maildir_messages('alice'), timeout=20,
                                  what='3 deliveries\n' + self.inst.log('queue-manager'))
        for _, data in msgs:
            self.assertIn(b'Return-Path: <bob@client.test>\n', data)
            self.assertIn(b'Delivered-To: alice@example.test\n', data)
        out = raw_session(port, b'EHLO x\r\nMAIL FROM:<b@client.test>\r\nRCPT TO:<"ali ce"@example.test>\r\nQUIT\r\n')
        self.assertIn('550 5.1.1 <"ali ce"@example.test>', out)

    def test_repeated_recipient_delivered_once(self):
        """The same RCPT twice (as a client that lists an address in To: and
        Cc: sends it) is accepted both times and delivered once, as Postfix
        does; the same address with another NOTIFY is its own recipient"""
        port = self.inst.port('smtp')
        out = raw_session(port, b'EHLO x\r\nMAIL FROM:<bob@client.test>\r\nRCPT TO:<alice@example.test>\r\n'
                          b'RCPT TO:<alice@example.test>\r\nDATA\r\nSubject: twice\r\n\r\nbody\r\n.\r\nQUIT\r\n')
        self.assertEqual(out.count('250 2.1.5 Ok'), 2, out)
        qid = queued_id(out)
        self.inst.wait_log('queue-manager', '%s removed=finished' % qid, timeout=20)
        msgs = [d for _, d in self.inst.maildir_messages('alice') if b'Subject: twice' in d]
        self.assertEqual(len(msgs), 1, 'delivered %d times' % len(msgs))

    def test_own_address_literal_is_local(self):
        """RFC 1123 5.2.17: mail to this host's own address literal is
        accepted and delivered here (as alice@hostname), not relayed to
        ourselves; an unknown user at it is unknown"""
        port = self.inst.port('smtp')
        out = raw_session(port, b'EHLO x\r\nMAIL FROM:<bob@client.test>\r\nRCPT TO:<nobody@[127.0.0.1]>\r\n'
                          b'RCPT TO:<alice@[127.0.0.1]>\r\nDATA\r\nSubject: literal\r\n\r\nbody\r\n.\r\nQUIT\r\n')
        self.assertIn('550 5.1.1 <nobody@[127.0.0.1]>', out)
        self.assertIn('250 2.0.0 Ok: queued', out)
        msgs = self.inst.wait_for(lambda: self.inst.maildir_messages('alice'), timeout=20,
                                  what='delivery\n' + self.inst.log('queue-manager'))
        self.assertIn(b'Delivered-To: alice@' + HOST.encode() + b'\n', msgs[0][1])
        self.assertTrue(msgs[0][1].endswith(b'Subject: literal\n\nbody\n'))
        # the file is in new/ a moment before queue-manager logs the result
        self.inst.wait_log('queue-manager', 'rcpt=alice@%s result=delivered' % HOST)
        self.assertNotIn(' job=', self.inst.log('queue-manager'))   # no remote-deliverer job: nothing went out

    def test_sigterm_421_after_the_transaction(self):
        """s6-svc -d (SIGTERM to smtp-listener): an idle session is told "421
        4.3.2" at once (RFC 5321 3.8: a server closes a connection only
        after QUIT or with 421); a message whose data is coming in is taken
        and acknowledged first, then 421. The old listener waited 10 s and
        then killed every session without a word, losing that message for
        its client"""
        port = self.inst.port('smtp')
        idle = socket.create_connection(('127.0.0.1', port), timeout=10)
        busy = socket.create_connection(('127.0.0.1', port), timeout=10)
        greeted = socket.create_connection(('127.0.0.1', port), timeout=10)
        try:
            self.assertTrue(read_reply(greeted, 10).startswith('220 '))
            for sock in (idle, busy):
                self.assertTrue(read_reply(sock, 10).startswith('220 '))
                sock.sendall(b'EHLO client.test\r\n')
                self.assertIn('250 ', read_reply(sock, 10))
            for cmd, want in ((b'MAIL FROM:<bob@client.test>', '250 '),
                              (b'RCPT TO:<alice@example.test>', '250 '), (b'DATA', '354 ')):
                busy.sendall(cmd + b'\r\n')
                self.assertTrue(read_reply(busy, 10).startswith(want))
            busy.sendall(b'Subject: stopping\r\n\r\nfirst half\r\n')
            started = time.monotonic()
            self.inst.svc('smtp-listener', '-d')
            self.inst.wait_log('smtp-listener', 'event=stopping sessions=3')
            # the idle sessions (after EHLO; after the greeting only): 421
            # now, then the end of the connection
            for sock in (idle, greeted):
                reply = read_reply(sock, 8)
                self.assertRegex(reply, r'^421 4\.3\.2 ' + re.escape(HOST) + r' .*\r\n$')
                self.assertEqual(sock.recv(100), b'')
            self.assertLess(time.monotonic() - started, 8, 'the 421 came only with the kill')
            # the session in DATA takes the rest of the message, queues it, then says 421
            busy.sendall(b'second half\r\n.\r\n')
            busy.settimeout(8)
            rest = b''
            while True:
                chunk = busy.recv(4096)
                if not chunk:
                    break
                rest += chunk
            self.assertRegex(rest.decode('latin-1'),
                             r'^250 2\.0\.0 Ok: queued as \S+\r\n421 4\.3\.2 [^\r\n]*\r\n$')
        finally:
            for sock in (idle, busy, greeted):
                sock.close()
        self.inst.wait_log('smtp-listener', 'event=stop\n', timeout=15)
        self.assertIn('reason=shutdown', self.inst.log('smtp-listener'))
        msgs = self.inst.wait_for(lambda: self.inst.maildir_messages('alice'), timeout=20,
                                  what='delivery\n' + self.inst.log('queue-manager'))
        self.assertTrue(msgs[0][1].endswith(b'Subject: stopping\n\nfirst half\nsecond half\n'))


if __name__ == '__main__':
    unittest.main()
