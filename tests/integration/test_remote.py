"""test_remote.py - remote-deliverer driven as queue-manager drives it (a
SOCK_SEQPACKET socketpair on fd 0, the message fd attached to each job)
against a recording SMTP sink and a test DNS responder, all on loopback."""

import os
import pwd
import shutil
import signal
import socket
import tempfile
import threading
import time
import unittest

from harness import Instance, need, need_root, queue_inject, smtp_dialogue
from remote_helpers import Deliverer, DnsServer, SmtpSink, ensure_user, make_cert

MESSAGE = (b'Received: from client.test by mail.example.test; Thu, 1 Jan 2026 00:00:00 +0000\n'
           b'From: alice@example.test\nTo: bob@example.net\nSubject: dots\n\n'
           b'.leading dot\n..two dots\n.\nmiddle\n\n' + b'x' * 990 + b'\nno newline at end')
EXPECTED = MESSAGE.replace(b'\n', b'\r\n') + b'\r\n'

CERTDIR = None
CERT = KEY = None


def setUpModule():
    global CERTDIR, CERT, KEY
    CERTDIR = tempfile.mkdtemp(prefix='postern-remote-cert-')
    os.chmod(CERTDIR, 0o755)
    CERT, KEY = make_cert(CERTDIR, names=('smarthost.test',), ips=('127.0.0.1',))


def tearDownModule():
    shutil.rmtree(CERTDIR, ignore_errors=True)


class RemoteBase(unittest.TestCase):
    def setUp(self):
        need(self, 'remote-deliverer')
        ensure_user('postern-remote')
        self.cleanups = []

    def tearDown(self):
        for fn in reversed(self.cleanups):
            fn()

    def sink(self, **knobs):
        s = SmtpSink(cert=CERT, key=KEY)
        for k, v in knobs.items():
            setattr(s, k, v)
        self.cleanups.append(s.close)
        return s

    def dns(self, zone, **kw):
        d = DnsServer(zone, **kw)
        self.cleanups.append(d.close)
        return d

    def deliverer(self, routes='', conf=None, **kw):
        d = Deliverer(conf=conf, routes=routes, **kw).start()
        self.cleanups.append(lambda: self.stop_clean(d))
        return d

    def stop_clean(self, d):
        d.stop()
        for bad in ('Sanitizer', 'runtime error:', 'delivery process died'):
            self.assertNotIn(bad, d.final_log)

    def routed(self, sink, opts='', conf=None, **kw):
        """a deliverer routing example.net to the sink by address literal"""
        return self.deliverer('example.net [127.0.0.1]:%d %s\n' % (sink.port, opts), conf=conf, **kw)

    def wait_message_end(self, s, n=1, timeout=10):
        """wait until the sink has taken n messages' data (the final dot):
        those deliveries are in flight, held at their end reply"""
        deadline = time.time() + timeout
        while sum(1 for r in s.sessions if r['data'] is not None) < n:
            self.assertLess(time.time(), deadline, 'no message reached the sink')
            time.sleep(0.02)


class DeliveryTest(RemoteBase):
    def test_success_byte_exact_with_dot_stuffing(self):
        s = self.sink()
        d = self.routed(s)
        r = d.deliver('bob@example.net', MESSAGE)
        self.assertEqual(r['S'], 's', r)
        self.assertTrue(r['X'].startswith('2.0.0 host [127.0.0.1]:%d said: 250 2.0.0 queued' % s.port), r)
        self.assertEqual(len(s.messages), 1)
        m = s.messages[0]
        self.assertEqual(m['data'], EXPECTED)
        self.assertEqual(m['helo'], 'EHLO mail.example.test')
        self.assertTrue(m['mail'].startswith('MAIL FROM:<alice@example.test> SIZE='), m['mail'])
        self.assertEqual(m['after_mail'], b'')     # no PIPELINING offered: one command at a time
        self.assertEqual(m['rcpt'], ['RCPT TO:<bob@example.net>'])
        # dot-stuffing on the wire: the raw lines are not in 'lines' (DATA
        # content is read separately), so check the unstuffed result above
        # and that a line "." did not end the message early
        self.assertIn(b'\r\n.\r\nmiddle\r\n', m['data'])

    def test_long_lines_are_broken_for_the_wire(self):
        """RFC 5321 4.5.3.1.6: no line on the wire over 998 octets + CRLF;
        a longer one (smtp-listener accepts them) goes out broken with
        CRLF SPACE, in a header as in the body"""
        s = self.sink()
        d = self.routed(s)
        body = b'Subject: ' + b'h' * 1500 + b'\n\n' + b'b' * 2500 + b'\nshort\n'
        r = d.deliver('bob@example.net', body)
        self.assertEqual(r['S'], 's', r)
        data = s.messages[0]['data']
        lines = data.split(b'\r\n')
        self.assertLessEqual(max(len(l) for l in lines), 998, [len(l) for l in lines])
        self.assertIn(b'Subject: ' + b'h' * 989 + b'\r\n ' + b'h' * 511 + b'\r\n\r\n', data)
        self.assertIn(b'\r\n\r\n' + b'b' * 998 + b'\r\n ' + b'b' * 997 + b'\r\n ' + b'b' * 505
                      + b'\r\nshort\r\n', data)

    def test_null_sender_and_dsn_parameters(self):
        s = self.sink(dsn=True, pipelining=True)
        d = self.routed(s)
        r = d.deliver('bob@example.net', b'Subject: x\n\nbody\n', sender='',
                      notify='SUCCESS,FAILURE', orcpt='rfc822;Bob@example.net',
                      envid='QQ123', body='8BITMIME')
        self.assertEqual(r['S'], 's', r)
        m = s.messages[0]
        self.assertEqual(m['mail'], 'MAIL FROM:<> SIZE=17 BODY=8BITMIME ENVID=QQ123')
        self.assertEqual(m['rcpt'], ['RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob@example.net'])
        self.assertTrue(m['after_mail'].startswith(b'RCPT TO:'), m['after_mail'])   # pipelined

    def test_ret_passed_on(self):
        """RFC 3461 4.3, 5.2: a relay passes RET on to a DSN server, so
        that a sender's RET=HDRS still holds at the next hop (Postfix does);
        without DSN at the next hop there is nothing to pass"""
        s = self.sink(dsn=True)
        d = self.routed(s)
        r = d.deliver('bob@example.net', b'Subject: x\n\nbody\n', envid='E9', ret='HDRS')
        self.assertEqual(r['S'], 's', r)
        self.assertEqual(s.messages[0]['mail'], 'MAIL FROM:<alice@example.test> SIZE=17 RET=HDRS ENVID=E9')
        r = d.deliver('bob@example.net', b'Subject: x\n\nbody\n', ret='FULL')
        self.assertEqual(r['S'], 's', r)
        self.assertEqual(s.messages[1]['mail'], 'MAIL FROM:<alice@example.test> SIZE=17 RET=FULL')
        plain = self.sink()
        d2 = self.routed(plain)
        r = d2.deliver('bob@example.net', b'Subject: x\n\nbody\n', envid='E9', ret='HDRS')
        self.assertEqual(r['S'], 's', r)
        self.assertEqual(plain.messages[0]['mail'], 'MAIL FROM:<alice@example.test> SIZE=17')

    def test_success_action(self):
        """a success says what became of NOTIFY (RFC 3461 5.2): a
        next hop with DSN got it and reports itself ("passed": no success
        report from us); one without gets a "relayed" report from us"""
        s = self.sink(dsn=True)
        r = self.routed(s).deliver('bob@example.net', b'x\n', notify='SUCCESS')
        self.assertEqual((r['S'], r.get('A')), ('s', 'passed'), r)
        plain = self.sink()
        d = self.routed(plain)
        r = d.deliver('bob@example.net', b'x\n', notify='SUCCESS')
        self.assertEqual((r['S'], r.get('A')), ('s', 'relayed'), r)
        plain.rcpt_reply = '550 5.1.1 no'
        r = d.deliver('bob@example.net', b'x\n', notify='SUCCESS')
        self.assertEqual((r['S'], r.get('A')), ('p', None), r)

    def test_orcpt_of_a_utf8_recipient(self):
        """the ORCPT made for a non-ASCII recipient is RFC 6533's utf-8 type:
        "rfc822;j+C3+B6rg..." decodes to octets RFC 3461 4.2 forbids there,
        and a strict next hop (postern itself) refuses the RCPT, 501"""
        s = self.sink()
        s.ehlo_reply = b'250-sink.test\r\n250-DSN\r\n250 SMTPUTF8\r\n'
        d = self.routed(s)
        r = d.deliver('j\u00f6rg+x@example.net', b'hi\n')
        self.assertEqual(r['S'], 's', r)
        want = 'RCPT TO:<j\u00f6rg+x@example.net> ORCPT=utf-8;j\u00f6rg\\x{2B}x@example.net'
        self.assertEqual(s.messages[0]['rcpt'], [want.encode().decode('latin-1')])   # the sink reads latin-1

    def test_orcpt_made_from_recipient_when_absent(self):
        s = self.sink(dsn=True)
        d = self.routed(s)
        r = d.deliver('b+x=y@example.net', b'hi\n')
        self.assertEqual(r['S'], 's', r)
        self.assertEqual(s.messages[0]['rcpt'], ['RCPT TO:<b+x=y@example.net> ORCPT=rfc822;b+2Bx+3Dy@example.net'])

    def test_smtputf8_message(self):
        """RFC 6531 3.4: the sender's SMTPUTF8 (job field U) goes on to a
        server that offers it; to one that does not, a message whose header
        is not ASCII is a permanent 5.6.7 failure and nothing is sent, and
        one whose addresses and header are ASCII goes without SMTPUTF8 (as
        Postfix does)"""
        utf8_header = 'Subject: Grüße\n\nbody\n'.encode()
        utf8_body = 'Subject: plain\n\nGrüße\n'.encode()
        plain = self.sink()
        d = self.routed(plain)
        r = d.deliver('bob@example.net', utf8_header, smtputf8=True)
        self.assertEqual(r['S'], 'p', r)
        self.assertEqual(r['X'], '5.6.7 host [127.0.0.1]:%d does not offer SMTPUTF8, needed for a '
                                 'non-ASCII header' % plain.port)
        self.assertEqual([sess['mail'] for sess in plain.sessions], [None])
        r = d.deliver('bob@example.net', utf8_body, smtputf8=True, body='8BITMIME')
        self.assertEqual(r['S'], 's', r)
        self.assertEqual(plain.messages[0]['mail'],
                         'MAIL FROM:<alice@example.test> SIZE=%d BODY=8BITMIME' % len(utf8_body))
        self.assertEqual(plain.messages[0]['data'], utf8_body.replace(b'\n', b'\r\n'))
        # without the sender's SMTPUTF8 nothing changes
        r = d.deliver('bob@example.net', utf8_header)
        self.assertEqual(r['S'], 's', r)
        eai = self.sink(smtputf8=True)
        d2 = self.routed(eai)
        r = d2.deliver('bob@example.net', utf8_header, smtputf8=True, body='8BITMIME')
        self.assertEqual(r['S'], 's', r)
        self.assertEqual(eai.messages[0]['mail'],
                         'MAIL FROM:<alice@example.test> SIZE=%d BODY=8BITMIME SMTPUTF8' % len(utf8_header))
        self.assertEqual(eai.messages[0]['data'], utf8_header.replace(b'\n', b'\r\n'))

    def test_starttls_used_when_offered(self):
        s = self.sink(starttls=True)
        d = self.routed(s)
        r = d.deliver('bob@example.net', MESSAGE)
        self.assertEqual(r['S'], 's', r)
        self.assertTrue(s.messages[0]['tls'])
        self.assertEqual(s.messages[0]['data'], EXPECTED)
        helos = [l for l in s.messages[0]['lines'] if l.startswith(b'EHLO')]
        self.assertEqual(len(helos), 2)   # EHLO again after TLS

    def test_tls_none_route_stays_plain(self):
        s = self.sink(starttls=True)
        d = self.routed(s, 'tls=none')
        r = d.deliver('bob@example.net')
        self.assertEqual(r['S'], 's', r)
        self.assertFalse(s.messages[0]['tls'])

    def test_rcpt_4xx_is_temporary_with_server_text(self):
        s = self.sink(rcpt_reply='450 4.2.1 mailbox busy, try later')
        d = self.routed(s)
        r = d.deliver('bob@example.net')
        self.assertEqual(r['S'], 't', r)
        self.assertEqual(r['X'], '4.2.1 host [127.0.0.1]:%d said: 450 4.2.1 mailbox busy, try later '
                                 '(in reply to RCPT TO)' % s.port)
        self.assertEqual(s.messages, [])

    def test_rcpt_5xx_is_permanent_with_server_text(self):
        s = self.sink(rcpt_reply='550 5.1.1 no such user')
        d = self.routed(s)
        r = d.deliver('nobody@example.net')
        self.assertEqual(r['S'], 'p', r)
        self.assertIn('5.1.1 host [127.0.0.1]:%d said: 550 5.1.1 no such user' % s.port, r['X'])

    def test_5xx_without_enhanced_code_and_control_bytes(self):
        s = self.sink(end_reply='554 rejected\x01\x7f by policy')
        d = self.routed(s)
        r = d.deliver('bob@example.net')
        self.assertEqual(r['S'], 'p', r)
        self.assertTrue(r['X'].startswith('5.0.0 host '), r)
        self.assertIn('554 rejected?? by policy (in reply to end of data)', r['X'])

    def test_reply_codes_go_by_their_first_digit(self):
        """RFC 5321 4.2.1: a 2yz is a positive completion whatever yz is (and
        a 3yz to DATA an intermediate one), as Postfix's smtp(8) takes them:
        a 251 to the end of data is a delivery, not a temporary failure
        that would send the message again"""
        for knobs in ({'mail_reply': '251 2.1.0 sender ok'},
                      {'rcpt_reply': '252 2.1.5 will try'},
                      {'data_reply': '350 send it'},
                      {'end_reply': '251 2.0.0 taken'}):
            with self.subTest(**knobs):
                s = self.sink(**knobs)
                d = self.routed(s)
                r = d.deliver('bob@example.net', MESSAGE)
                self.assertEqual(r['S'], 's', r)
                self.assertEqual(len(s.sessions), 1)
                self.assertEqual(s.sessions[0]['data'], EXPECTED)

    def test_helo_fallback(self):
        s = self.sink(ehlo_reply=b'502 5.5.1 no ESMTP here\r\n')
        d = self.routed(s)
        r = d.deliver('bob@example.net', MESSAGE)
        self.assertEqual(r['S'], 's', r)
        self.assertTrue(any(l.startswith(b'HELO ') for l in s.messages[0]['lines']))
        self.assertEqual(s.messages[0]['mail'], 'MAIL FROM:<alice@example.test>')

    def test_server_that_is_this_host_is_a_loop(self):
        """An MX or route that leads back here (a server that greets or
        answers EHLO with our own host name, Postfix's "loops back to
        myself"): permanent 5.4.6 at once, no MAIL sent, instead of relaying
        to ourselves until the Received: hop limit"""
        for knobs, how in (({'greeting': b'220 MAIL.example.test ESMTP postern\r\n'}, 'greeted me with'),
                           ({'ehlo_reply': b'250-mail.example.test.\r\n250 PIPELINING\r\n'},
                            'answered EHLO with')):
            s = self.sink(**knobs)
            d = self.routed(s)
            r = d.deliver('bob@example.net', MESSAGE)
            self.assertEqual(r['S'], 'p', r)
            self.assertTrue(r['X'].startswith('5.4.6 mail loops back to myself: host [127.0.0.1]:%d %s '
                                              'my own host name mail.example.test' % (s.port, how)), r)
            self.assertFalse(any(l.startswith(b'MAIL ') for m in s.messages for l in m['lines']), s.messages)
        # a name that merely starts like ours is someone else
        s = self.sink(greeting=b'220 mail.example.test.other ESMTP\r\n')
        r = self.routed(s).deliver('bob@example.net', MESSAGE)
        self.assertEqual(r['S'], 's', r)

    def test_required_tls_missing_is_temporary(self):
        s = self.sink(starttls=False)
        d = self.routed(s, 'tls=require-verify')
        r = d.deliver('bob@example.net')
        self.assertEqual(r['S'], 't', r)
        self.assertTrue(r['X'].startswith('4.7.5 '), r)
        self.assertEqual(s.messages, [])

    def test_require_verify_accepts_good_certificate(self):
        s = self.sink(starttls=True)
        dns = self.dns({'smarthost.test': {'A': ['127.0.0.1']}})
        d = self.deliverer('* smarthost.test:%d tls=require-verify ca=%s\n' % (s.port, CERT),
                           conf={'dns_server': dns.address})
        r = d.deliver('bob@anywhere.example')
        self.assertEqual(r['S'], 's', r)
        self.assertTrue(s.messages[0]['tls'])

    def test_require_verify_refuses_wrong_name(self):
        s = self.sink(starttls=True)
        dns = self.dns({'other.test': {'A': ['127.0.0.1']}})
        d = self.deliverer('* other.test:%d tls=require-verify ca=%s\n' % (s.port, CERT),
                           conf={'dns_server': dns.address})
        r = d.deliver('bob@anywhere.example')
        self.assertEqual(r['S'], 't', r)
        self.assertTrue(r['X'].startswith('4.7.5 '), r)
        self.assertIn('verif', r['X'])
        self.assertEqual(s.messages, [])

    def test_require_verify_follows_a_changed_ca_file(self):
        """remote-deliverer makes each route's TLS context once and its
        delivery children share it; a CA file replaced since is read again
        (without a reload): first a CA that did not sign the sink's
        certificate (refused), then the right one (delivered), then the
        wrong one again (refused)"""
        s = self.sink(starttls=True)
        dns = self.dns({'smarthost.test': {'A': ['127.0.0.1']}})
        other = tempfile.mkdtemp(prefix='postern-ca-', dir=CERTDIR)
        wrong, _ = make_cert(other, names=('someone.else.test',), ips=())
        ca = os.path.join(CERTDIR, 'route-ca.pem')

        def put(src):
            with open(src) as f:
                text = f.read()
            with open(ca + '.new', 'w') as f:
                f.write(text)
            os.chmod(ca + '.new', 0o644)
            os.rename(ca + '.new', ca)

        put(wrong)
        time.sleep(2.5)          # settled (filesig.h): the context is made once and kept
        # each delivery on a connection of its own (no reuse), so each one
        # verifies the sink's certificate
        d = self.deliverer('* smarthost.test:%d tls=require-verify ca=%s\n' % (s.port, ca),
                           conf={'dns_server': dns.address, 'remote_reuse_time': '0'})
        for src, want in ((wrong, 't'), (CERT, 's'), (wrong, 't')):
            put(src)
            r = d.deliver('bob@anywhere.example')
            self.assertEqual(r['S'], want, (src, r))
            if want == 't':
                self.assertIn('verif', r['X'])

    def test_auth_plain_to_smarthost(self):
        s = self.sink(starttls=True, auth=True)
        s.auth_ok = ('relayuser', 'pass word')
        d = self.deliverer('* [127.0.0.1]:%d auth=isp\n' % s.port,
                           relay_auth='isp relayuser pass word\n')
        r = d.deliver('bob@far.example')
        self.assertEqual(r['S'], 's', r)
        self.assertEqual(s.messages[0]['auth'], ('relayuser', 'pass word'))
        self.assertTrue(s.messages[0]['tls'])
        self.assertNotIn('pass word', d.log())

    def test_auth_rejected_is_temporary(self):
        s = self.sink(starttls=True, auth=True)
        s.auth_ok = ('relayuser', 'other')
        d = self.deliverer('* [127.0.0.1]:%d auth=isp\n' % s.port,
                           relay_auth='isp relayuser pass word\n')
        r = d.deliver('bob@far.example')
        self.assertEqual(r['S'], 't', r)
        self.assertIn('535 5.7.8', r['X'])

    def test_connection_refused_is_temporary(self):
        s = self.sink()
        port = s.port
        s.close()
        d = self.deliverer('example.net [127.0.0.1]:%d\n' % port)
        r = d.deliver('bob@example.net')
        self.assertEqual(r['S'], 't', r)
        self.assertTrue(r['X'].startswith('4.4.1 connection to [127.0.0.1]:%d failed' % port), r)

    def test_drops_privileges(self):
        need_root(self, 'checks the uid remote-deliverer drops to')
        s = self.sink(end_delay=1.5)
        d = self.routed(s)
        d.submit('bob@example.net', b'hi\n')
        deadline = time.time() + 5
        while 'event=start' not in d.log() and time.time() < deadline:
            time.sleep(0.05)
        want = pwd.getpwnam('postern-remote').pw_uid
        with open('/proc/%d/status' % d.proc.pid) as f:
            uids = [l for l in f if l.startswith('Uid:')][0].split()[1:]
        self.assertEqual({int(u) for u in uids}, {want})
        self.assertEqual(d.result()['S'], 's')


class HostileServerTest(RemoteBase):
    """Whatever the server does, the result is a temporary failure and the
    deliverer lives on (the next job still works)."""

    def assert_temp_then_alive(self, s, d, what):
        r = d.deliver('bob@example.net', MESSAGE, timeout=30)
        self.assertEqual(r['S'], 't', r)
        self.assertTrue(r['X'].startswith('4.'), r)
        self.assertIn(what, r['X'])
        self.assertIsNone(d.proc.poll())
        return r

    def test_endless_continuation_lines(self):
        s = self.sink(ehlo_reply=b'250-x\r\n' * 100000)
        d = self.routed(s)
        self.assert_temp_then_alive(s, d, '4.4.2 bad reply from server')

    def test_100k_line(self):
        s = self.sink(greeting=b'220 ' + b'A' * 100000 + b'\r\n')
        d = self.routed(s)
        self.assert_temp_then_alive(s, d, '4.4.2 bad reply from server')

    def test_bare_lf_replies(self):
        s = self.sink(greeting=b'220 sink.test ready\n')
        d = self.routed(s)
        self.assert_temp_then_alive(s, d, '4.4.2 bad reply from server')

    def test_garbage_code(self):
        s = self.sink(rcpt_reply='2x0 what')
        d = self.routed(s)
        self.assert_temp_then_alive(s, d, '4.4.2 bad reply from server')

    def test_reply_too_big_in_total(self):
        s = self.sink(ehlo_reply=b''.join(b'250-' + b'k' * 900 + b'\r\n' for _ in range(30)) + b'250 end\r\n')
        d = self.routed(s)
        self.assert_temp_then_alive(s, d, '4.4.2 bad reply from server')

    def test_stalling_server_times_out(self):
        for where in ('greeting', 'rcpt', 'end'):
            with self.subTest(where=where):
                s = self.sink(stall_at=where)
                d = self.routed(s, conf={'remote_timeout': '2'})
                t0 = time.time()
                self.assert_temp_then_alive(s, d, 'timeout')
                self.assertLess(time.time() - t0, 15)

    def test_server_that_stops_reading_mid_data_times_out(self):
        """A server that says 354 and then reads nothing: the message (16
        MB, more than both sockets' buffers hold) cannot all be written, and
        the write meets remote_timeout."""
        s = self.sink(stall_at='data', size=False)   # no SIZE limit offered
        d = self.routed(s, conf={'remote_timeout': '2'})
        body = b'Subject: big\n\n' + (b'x' * 998 + b'\n') * (16 << 10)
        r = d.deliver('bob@example.net', body, timeout=30)
        self.assertEqual(r['S'], 't', r)
        self.assertIn('timeout', r['X'])
        self.assertIsNone(d.proc.poll())

    def test_close_mid_data(self):
        s = self.sink(close_in_data=True)
        d = self.routed(s)
        self.assert_temp_then_alive(s, d, '4.4.2 host')

    def test_reply_out_of_turn_is_not_taken_for_the_next_one(self):
        """A server that sends more replies than it was asked for (one too
        many after the greeting, MAIL, RCPT, or a "250" right behind its 354)
        is out of step: read on, the extra reply would be taken for the next
        command's (a refusal of RCPT taken for DATA's, as permanent; the 250
        taken for the end of data, a delivery, while the server then reads
        the message as commands). The result is a temporary failure and the
        message content is not sent (OpenSMTPD CVE-2020-8794 class)."""
        cases = [({'greeting': b'220 sink.test ready\r\n220 sink.test again\r\n'}, 'EHLO'),
                 ({'mail_reply': '250 2.1.0 ok\r\n250 2.1.0 extra', 'rcpt_reply': '550 5.1.1 no such user'},
                  'RCPT TO'),
                 ({'rcpt_reply': '250 2.1.5 ok\r\n250 2.1.5 extra'}, 'DATA'),
                 ({'rcpt_reply': '250 2.1.5 ok\r\n250 2.1.5 extra', 'pipelining': True}, 'DATA'),
                 ({'rcpt_reply': '250 2.1.5 ok\r\n250 2.1.5 extra', 'starttls': True}, 'DATA'),
                 ({'data_reply': '354 go ahead\r\n250 2.0.0 queued before the data'}, 'message content'),
                 ({'data_reply': '354 go ahead\r\n250 2.0.0 queued before the data', 'starttls': True},
                  'message content')]
        for knobs, before in cases:
            with self.subTest(before=before, **{k: v for k, v in knobs.items() if k != 'greeting'}):
                s = self.sink(**knobs)
                d = self.routed(s)
                self.assert_temp_then_alive(s, d, '(reply out of turn, before %s)' % before)
                self.assertEqual(s.messages, [])
                for rec in s.sessions:
                    self.assertIsNone(rec['data'])
                    self.assertEqual(rec['tls'], bool(knobs.get('starttls')))

    def test_starttls_then_garbage_handshake(self):
        # the server says 220 to STARTTLS and then speaks plaintext: with
        # tls=may the deliverer retries without TLS (and then succeeds)
        s = self.sink(starttls=True, starttls_broken=True)
        d = self.routed(s)
        r = d.deliver('bob@example.net')
        self.assertEqual(r['S'], 's', r)
        self.assertEqual(s.connections, 2)
        self.assertFalse(s.messages[0]['tls'])


class DnsTest(RemoteBase):
    def test_mx_preference_first_down_second_used(self):
        s = self.sink()
        dns = self.dns({
            'mx.example': {'MX': [(20, 'mx2.mx.example'), (10, 'mx1.mx.example')]},
            'mx1.mx.example': {'A': ['127.0.0.2']},       # nothing listens there
            'mx2.mx.example': {'A': ['127.0.0.1']},
        })
        d = self.deliverer(conf={'dns_server': dns.address, 'remote_port': str(s.port)})
        r = d.deliver('bob@mx.example', MESSAGE)
        self.assertEqual(r['S'], 's', r)
        self.assertIn('mx2.mx.example[127.0.0.1]', r['X'])
        self.assertEqual(s.messages[0]['data'], EXPECTED)
        names = [q for q in dns.queries]
        self.assertIn(('mx.example', 15), names)
        # preference order: mx1 looked up before mx2
        self.assertLess(names.index(('mx1.mx.example', 1)), names.index(('mx2.mx.example', 1)))

    def test_421_to_mail_moves_on_to_the_next_mx(self):
        """421 is the server closing the channel (RFC 5321 3.8), wherever it
        comes: nothing was accepted there, so the next MX is tried, as after
        a 421 greeting (Postfix does the same)"""
        s = self.sink()
        first = SmtpSink(port=s.port, host='127.0.0.2', cert=CERT, key=KEY)
        self.cleanups.append(first.close)
        first.mail_reply = '421 4.3.2 shutting down'
        for pipelining in (False, True):
            with self.subTest(pipelining=pipelining):
                first.pipelining = s.pipelining = pipelining
                first.sessions, first.connections = [], 0
                dns = self.dns({
                    'mx.example': {'MX': [(20, 'mx2.mx.example'), (10, 'mx1.mx.example')]},
                    'mx1.mx.example': {'A': ['127.0.0.2']},
                    'mx2.mx.example': {'A': ['127.0.0.1']},
                })
                d = self.deliverer(conf={'dns_server': dns.address, 'remote_port': str(s.port)})
                r = d.deliver('bob@mx.example', MESSAGE)
                self.assertEqual(r['S'], 's', r)
                self.assertIn('mx2.mx.example[127.0.0.1]', r['X'])
                self.assertEqual(first.connections, 1)
                self.assertTrue(first.sessions[0]['mail'].startswith('MAIL FROM:'))
                self.assertEqual(s.messages[-1]['data'], EXPECTED)
                # the last MX saying 421: temporary, with its text
                s.mail_reply = '421 4.3.2 shutting down too'
                r = d.deliver('bob@mx.example', MESSAGE)
                self.assertEqual(r['S'], 't', r)
                self.assertIn('421 4.3.2 shutting down too', r['X'])
                s.mail_reply = '250 2.1.0 ok'

    def test_mx_that_is_this_host_ends_the_list(self):
        """RFC 5321 5.1: once this host is found among the MX hosts, it and
        every MX of the same or a higher preference number are discarded (a
        backup MX would only send the mail back here). The MX greeting with
        our own name ends the list: permanent 5.4.6 if it was the best,
        else the result of the better ones that failed (temporary)"""
        s = self.sink()
        me = SmtpSink(port=s.port, host='127.0.0.2', cert=CERT, key=KEY)
        self.cleanups.append(me.close)
        me.greeting = b'220 mail.example.test ESMTP\r\n'
        dns = self.dns({
            'mx.example': {'MX': [(20, 'backup.mx.example'), (10, 'me.mx.example')]},
            'mx2.example': {'MX': [(20, 'backup.mx.example'), (10, 'me.mx.example'), (5, 'down.mx.example')]},
            'me.mx.example': {'A': ['127.0.0.2']},
            'down.mx.example': {'A': ['127.0.0.3']},     # nothing listens there
            'backup.mx.example': {'A': ['127.0.0.1']},
        })
        d = self.deliverer(conf={'dns_server': dns.address, 'remote_port': str(s.port)})
        r = d.deliver('bob@mx.example', MESSAGE)
        self.assertEqual(r['S'], 'p', r)
        self.assertTrue(r['X'].startswith('5.4.6 mail loops back to myself: host me.mx.example[127.0.0.2]'), r)
        r = d.deliver('bob@mx2.example', MESSAGE)
        self.assertEqual(r['S'], 't', r)
        self.assertTrue(r['X'].startswith('4.4.1 connection to down.mx.example[127.0.0.3]'), r)
        self.assertEqual(me.connections, 2)
        self.assertEqual(s.connections, 0)

    def test_backup_mx_defers_when_the_primary_lookup_fails(self):
        """This host as the backup MX (20) of a domain whose primary's (10)
        address lookup fails for the moment: the loop is found at the first
        address that could be looked up, but a better MX exists and failed,
        temporarily. It bounced with 5.4.6; now it is deferred, as if the
        primary had refused the connection."""
        s = self.sink()
        me = SmtpSink(port=s.port, host='127.0.0.2', cert=CERT, key=KEY)
        self.cleanups.append(me.close)
        me.greeting = b'220 mail.example.test ESMTP\r\n'
        dns = self.dns({'bk.example': {'MX': [(10, 'primary.bk.example'), (20, 'me.bk.example')]},
                        'me.bk.example': {'A': ['127.0.0.2']}}, servfail=['primary.bk.example'])
        d = self.deliverer(conf={'dns_server': dns.address, 'remote_port': str(s.port)})
        r = d.deliver('bob@bk.example', MESSAGE)
        self.assertEqual(r['S'], 't', r)
        self.assertTrue(r['X'].startswith('4.4.3 DNS lookup of a better MX host of bk.example failed'), r)
        # the primary itself as this host, nothing better: still 5.4.6
        dns2 = self.dns({'bk2.example': {'MX': [(10, 'me.bk.example'), (20, 'other.bk.example')]},
                         'me.bk.example': {'A': ['127.0.0.2']}}, servfail=['other.bk.example'])
        d2 = self.deliverer(conf={'dns_server': dns2.address, 'remote_port': str(s.port)})
        r = d2.deliver('bob@bk2.example', MESSAGE)
        self.assertEqual(r['S'], 'p', r)
        self.assertTrue(r['X'].startswith('5.4.6 mail loops back to myself'), r)
        self.assertEqual(s.connections, 0)

    def test_implicit_mx(self):
        s = self.sink()
        dns = self.dns({'plain.example': {'A': ['127.0.0.1']}})
        d = self.deliverer(conf={'dns_server': dns.address, 'remote_port': str(s.port)})
        r = d.deliver('bob@plain.example')
        self.assertEqual(r['S'], 's', r)
        self.assertIn('plain.example[127.0.0.1]', r['X'])

    def test_null_mx_is_permanent(self):
        dns = self.dns({'nomail.example': {'MX': [(0, '.')], 'A': ['127.0.0.1']}})
        d = self.deliverer(conf={'dns_server': dns.address})
        r = d.deliver('bob@nomail.example')
        self.assertEqual(r['S'], 'p', r)
        self.assertTrue(r['X'].startswith('5.1.10 '), r)

    def test_nxdomain_is_permanent(self):
        dns = self.dns({}, nxdomain=['gone.example'])
        d = self.deliverer(conf={'dns_server': dns.address})
        r = d.deliver('bob@gone.example')
        self.assertEqual(r['S'], 'p', r)
        self.assertTrue(r['X'].startswith('5.1.2 '), r)

    def test_servfail_is_temporary(self):
        dns = self.dns({}, servfail=['broken.example'])
        d = self.deliverer(conf={'dns_server': dns.address})
        r = d.deliver('bob@broken.example')
        self.assertEqual(r['S'], 't', r)
        self.assertTrue(r['X'].startswith('4.4.3 '), r)

    def test_dns_timeout_is_temporary(self):
        dns = self.dns({}, drop=['silent.example'])
        d = self.deliverer(conf={'dns_server': dns.address, 'remote_timeout': '1'})
        r = d.deliver('bob@silent.example', timeout=30)
        self.assertEqual(r['S'], 't', r)
        self.assertTrue(r['X'].startswith('4.4.3 '), r)

    def test_address_literal_domain(self):
        s = self.sink()
        d = self.deliverer(conf={'remote_port': str(s.port)})
        r = d.deliver('bob@[127.0.0.1]')
        self.assertEqual(r['S'], 's', r)
        self.assertEqual(s.messages[0]['rcpt'], ['RCPT TO:<bob@[127.0.0.1]>'])


    def test_mx_reached_over_ipv6(self):
        """An MX host whose A address takes no connection is tried at its
        AAAA address next (REMOTE.md: each host's A, then AAAA), and one
        with only an AAAA record is reached over IPv6; so is a domain
        written as an IPv6 address literal."""
        with open('/proc/net/if_inet6') as f:
            if not f.read().strip():
                self.skipTest('this host has no IPv6')
        s = SmtpSink(host='::1', cert=CERT, key=KEY)
        self.cleanups.append(s.close)
        dns = self.dns({
            'both.example': {'MX': [(10, 'mx.both.example')]},
            'mx.both.example': {'A': ['127.0.0.2'], 'AAAA': ['::1']},   # nothing on 127.0.0.2
            'six.example': {'MX': [(10, 'mx.six.example')]},
            'mx.six.example': {'AAAA': ['::1']},
        })
        d = self.deliverer(conf={'dns_server': dns.address, 'remote_port': str(s.port)})
        for rcpt in ('bob@both.example', 'bob@six.example', 'bob@[IPv6:::1]'):
            with self.subTest(rcpt=rcpt):
                r = d.deliver(rcpt, MESSAGE)
                self.assertEqual(r['S'], 's', r)
                self.assertIn('::1', r['X'])
        self.assertEqual([m['rcpt'] for m in s.messages],
                         [['RCPT TO:<bob@both.example>'], ['RCPT TO:<bob@six.example>'],
                          ['RCPT TO:<bob@[IPv6:::1]>']])
        self.assertEqual([m['data'] for m in s.messages], [EXPECTED] * 3)
        self.assertIn(('mx.six.example', 28), dns.queries)


class SchedulingTest(RemoteBase):
    def test_per_domain_limit_and_others_not_blocked(self):
        slow = self.sink(end_delay=1.0)
        fast = self.sink()
        d = self.deliverer('slow.example [127.0.0.1]:%d\nfast.example [127.0.0.1]:%d\n'
                           % (slow.port, fast.port), conf={'remote_per_domain': '2'})
        jobs = [d.submit('u%d@slow.example' % i, b'hi\n') for i in range(6)]
        fastjob = d.submit('x@fast.example', b'hi\n')
        first = d.result(30)
        self.assertEqual(first['J'], str(fastjob), 'the fast destination waited for the slow one')
        results = {first['J']: first}
        while len(results) < 7:
            r = d.result(30)
            results[r['J']] = r
        self.assertTrue(all(r['S'] == 's' for r in results.values()), results)
        self.assertEqual(slow.max_in_end, 2)
        self.assertEqual(len(slow.messages), 6)

    def test_eof_finishes_in_flight_then_exits(self):
        s = self.sink(end_delay=1.0)
        d = self.routed(s)
        job = d.submit('bob@example.net', b'hi\n')
        self.wait_message_end(s)
        d.sock.shutdown(socket.SHUT_WR)
        r = d.result(30)
        self.assertEqual((r['J'], r['S']), (str(job), 's'))
        self.assertEqual(d.proc.wait(10), 0)
        self.assertEqual(len(s.messages), 1)

    def test_sigterm_goes_on_until_eof(self):
        """SIGTERM comes from a stop that signals every process at once
        (systemctl stop), queue-manager too, which stops dispatching, waits
        for the results in flight and exits: remote-deliverer notes it and
        goes on, starting waiting jobs as before, until that exit closes fd
        0; then the jobs still waiting are answered "temporary". (Leaving at
        the SIGTERM answered them at once, and queue-manager deferred them
        for their retry interval, and took the exit for a crash.)"""
        s = self.sink(end_delay=1.0)
        d = self.routed(s, conf={'remote_per_domain': '1'})
        jobs = [d.submit('%s@example.net' % u, b'hi\n') for u in 'abc']
        self.wait_message_end(s)
        d.proc.send_signal(signal.SIGTERM)
        r = d.result(30)
        self.assertEqual((r['J'], r['S']), (str(jobs[0]), 's'))
        # the second, waiting at the SIGTERM, started after it
        deadline = time.time() + 10
        while not s.in_end:
            self.assertLess(time.time(), deadline, 'the second job did not start')
            time.sleep(0.02)
        self.assertIsNone(d.proc.poll())
        d.sock.shutdown(socket.SHUT_WR)
        got = {}
        for _ in range(2):
            r = d.result(30)
            got[r['J']] = r
        self.assertEqual(got[str(jobs[1])]['S'], 's')
        self.assertEqual(got[str(jobs[2])]['S'], 't')
        self.assertIn('stopping', got[str(jobs[2])]['X'])
        self.assertEqual(d.proc.wait(10), 0)
        self.assertEqual(len(s.messages), 2)
        self.assertIn('event=sigterm in_flight=1 waiting=2 action=finish-at-eof', d.log())

    def test_sigterm_grace_time_is_bounded(self):
        """the grace time for jobs in flight counts from the SIGTERM, not
        from queue-manager's exit up to 10 s later: a stop stays within
        systemd's TimeoutStopSec"""
        s = self.sink(stall_at='end')
        d = self.routed(s, conf={'remote_timeout': '3'})
        job = d.submit('a@example.net', MESSAGE)
        self.wait_message_end(s)
        t0 = time.time()
        d.proc.send_signal(signal.SIGTERM)
        time.sleep(3.5)                     # past the grace time: still there
        self.assertIsNone(d.proc.poll())
        d.sock.shutdown(socket.SHUT_WR)
        r = d.result(30)
        self.assertEqual((r['J'], r['S']), (str(job), 't'))
        self.assertIn('stopped during delivery', r['X'])
        self.assertEqual(d.proc.wait(10), 0)
        self.assertLess(time.time() - t0, 6)     # not 3.5 s + another 3

    def test_job_without_fd_and_bad_records(self):
        s = self.sink()
        d = self.routed(s)
        d.sock.send(b'Jxx\0')                      # malformed: logged, ignored
        d.sock.send(b'J7\0M0123456789ABCDEF\0F\0Rbob@example.net\0T1\0')   # no fd
        r = d.result()
        self.assertEqual((r['J'], r['S']), ('7', 't'))
        self.assertEqual(d.deliver('bob@example.net')['S'], 's')
        self.assertIn('malformed', d.log())

    def test_sighup_reloads_routes(self):
        s1, s2 = self.sink(), self.sink()
        d = self.routed(s1)
        self.assertEqual(d.deliver('bob@example.net')['S'], 's')
        d.write('conf/routes', 'example.net [127.0.0.1]:%d\n' % s2.port)
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 5
        while 'event=reload' not in d.log() and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(d.deliver('bob@example.net')['S'], 's')
        self.assertEqual((len(s1.messages), len(s2.messages)), (1, 1))

    def wait_log_count(self, d, text, n, timeout=5):
        deadline = time.time() + timeout
        while d.log().count(text) < n and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(d.log().count(text), n, d.log())

    def test_reload_record_reloads_routes_and_keeps_old_on_error(self):
        # what queue-manager sends after its own SIGHUP reload (INTERFACES.md)
        s1, s2 = self.sink(), self.sink()
        d = self.routed(s1)
        self.assertEqual(d.deliver('bob@example.net')['S'], 's')
        d.write('conf/routes', 'example.net [127.0.0.1]:%d\n' % s2.port)
        d.sock.send(b'H\0')
        self.wait_log_count(d, 'event=reload from=queue-manager routes=1', 1)
        self.assertEqual(d.deliver('bob@example.net')['S'], 's')
        self.assertEqual((len(s1.messages), len(s2.messages)), (1, 1))
        # a bad file: refused with file:line, the routes in use stay
        d.write('conf/routes', 'example.net [127.0.0.1]:%d\nexample.org host tls=sometimes\n' % s1.port)
        d.sock.send(b'H\0')
        self.wait_log_count(d, 'event=reload_refused from=queue-manager keeping=old', 1)
        self.assertIn('conf/routes:2:', d.log())
        self.assertEqual(d.deliver('bob@example.net')['S'], 's')
        self.assertEqual((len(s1.messages), len(s2.messages)), (1, 2))
        self.assertIsNone(d.proc.poll())

    def test_garbled_reload_records_refused(self):
        s1, s2 = self.sink(), self.sink()
        d = self.routed(s1)
        self.wait_log_count(d, 'event=start', 1)      # it has read the routes for s1
        d.write('conf/routes', 'example.net [127.0.0.1]:%d\n' % s2.port)
        for rec in (b'H', b'Hx\0', b'H\0H\0', b'H\0J1\0', b'J1\0H\0', b'h\0', b'H\0\0'):
            d.sock.send(rec)
        with open(d.message_file(b'x'), 'rb') as f:     # a reload record carries no fd
            socket.send_fds(d.sock, [b'H\0'], [f.fileno()])
        self.assertEqual(d.deliver('bob@example.net')['S'], 's')
        self.assertEqual(d.log().count('refused malformed job record'), 8, d.log())
        self.assertNotIn('event=reload', d.log())
        self.assertEqual((len(s1.messages), len(s2.messages)), (1, 0))   # old routes


class BatchTest(RemoteBase):
    """The recipients of one message for one destination: one connection,
    one transaction, one RCPT each, one result record each."""

    def submit_stopped(self, d, jobs):
        """submit every job while the deliverer is stopped, so that all the
        records are waiting on its fd 0 when it looks (as when queue-manager
        dispatches a message's recipients back to back)"""
        os.kill(d.proc.pid, signal.SIGSTOP)
        try:
            return [d.submit(rcpt, **kw) for rcpt, kw in jobs]
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)

    def results(self, d, n):
        out = {}
        while len(out) < n:
            r = d.result(30)
            self.assertNotIn(r['J'], out, 'two results for one job')
            out[r['J']] = r
        return out

    def transactions(self, s):
        return sum(1 for sess in s.sessions for ln in sess['lines'] if ln.upper().startswith(b'MAIL '))

    def four_recipients(self, rcpt_replies, msgid):
        """one message to a, b, c and d@example.net through a sink that
        answers RCPT as rcpt_replies says: (the sink, the results by job,
        the four jobs)"""
        s = self.sink(rcpt_replies=rcpt_replies)
        d = self.routed(s)
        path = d.message_file(b'Subject: t\n\nhello\n')
        kw = dict(path=path, msgid=msgid)
        jobs = self.submit_stopped(d, [('a@example.net', kw), ('b@example.net', kw),
                                       ('c@example.net', kw), ('d@example.net', kw)])
        return s, self.results(d, 4), jobs

    def test_three_recipients_one_connection_one_transaction(self):
        s = self.sink(dsn=True, pipelining=True)
        d = self.routed(s)
        path = d.message_file(b'Subject: t\n\nhello\n')
        kw = dict(path=path, msgid='5A00000000000001', envid='ENV1')
        jobs = self.submit_stopped(d, [('a@example.net', dict(kw, notify='FAILURE')),
                                       ('b@example.net', dict(kw, orcpt='rfc822;orig-b@example.org')),
                                       ('c@example.net', dict(kw, notify='SUCCESS,FAILURE'))])
        res = self.results(d, 3)
        for j in jobs:
            self.assertEqual(res[str(j)]['S'], 's', res)
        self.assertEqual(s.connections, 1)
        self.assertEqual(self.transactions(s), 1)
        self.assertEqual(len(s.messages), 1)
        m = s.messages[0]
        self.assertEqual(m['rcpt'], ['RCPT TO:<a@example.net> NOTIFY=FAILURE ORCPT=rfc822;a@example.net',
                                     'RCPT TO:<b@example.net> ORCPT=rfc822;orig-b@example.org',
                                     'RCPT TO:<c@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@example.net'])
        self.assertIn('ENVID=ENV1', m['mail'])
        self.assertEqual(m['data'], b'Subject: t\r\n\r\nhello\r\n')
        self.assertIn('batch=3', d.log())

    def test_two_domains_two_transactions(self):
        s = self.sink()
        d = self.deliverer('example.net [127.0.0.1]:%d\nexample.org [127.0.0.1]:%d\n' % (s.port, s.port))
        path = d.message_file(b'Subject: t\n\nhello\n')
        kw = dict(path=path, msgid='5A00000000000002')
        self.submit_stopped(d, [('a@example.net', kw), ('x@example.org', kw), ('b@example.net', kw)])
        res = self.results(d, 3)
        self.assertTrue(all(r['S'] == 's' for r in res.values()), res)
        self.assertEqual(self.transactions(s), 2)
        self.assertEqual(sorted(sorted(m['rcpt']) for m in s.messages),
                         [['RCPT TO:<a@example.net>', 'RCPT TO:<b@example.net>'], ['RCPT TO:<x@example.org>']])

    def test_other_messages_and_senders_not_mixed(self):
        s = self.sink()
        d = self.routed(s)
        path = d.message_file(b'Subject: t\n\nhello\n')
        self.submit_stopped(d, [('a@example.net', dict(path=path, msgid='5A00000000000003')),
                                ('b@example.net', dict(path=path, msgid='5A00000000000004')),
                                ('c@example.net', dict(path=path, msgid='5A00000000000003',
                                                       sender='other@example.test'))])
        res = self.results(d, 3)
        self.assertTrue(all(r['S'] == 's' for r in res.values()), res)
        self.assertEqual(self.transactions(s), 3)

    def test_one_refused_others_delivered(self):
        s, res, (ja, jb, jc, jd) = self.four_recipients({'b@example.net': '550 5.1.1 no such user',
                                                         'c@example.net': '452 4.5.3 too many recipients'},
                                                        '5A00000000000005')
        self.assertEqual(res[str(ja)]['S'], 's', res)
        self.assertEqual(res[str(jb)]['S'], 'p', res)
        self.assertIn('said: 550 5.1.1 no such user (in reply to RCPT TO)', res[str(jb)]['X'])
        self.assertEqual(res[str(jc)]['S'], 't', res)
        self.assertIn('452 4.5.3 too many recipients', res[str(jc)]['X'])
        self.assertEqual(res[str(jd)]['S'], 't', res)   # lock-step: not sent after the 452
        self.assertEqual(len(s.messages), 1)
        self.assertEqual(s.messages[0]['rcpt'], ['RCPT TO:<a@example.net>', 'RCPT TO:<b@example.net>',
                                                 'RCPT TO:<c@example.net>'])

    def test_552_too_many_recipients_is_temporary_as_452(self):
        """RFC 5321 4.5.3.1.10: RFC 821 listed "too many recipients" as
        552, and servers still send it; clients SHOULD take a 552 "in this
        case" as the temporary 452 it means, so that the recipients past
        the limit go in a later transaction instead of bouncing. The
        enhanced code (5.5.3) tells that case from a 552 for a full
        mailbox, which stays permanent."""
        s, res, (ja, jb, jc, jd) = self.four_recipients({'b@example.net': '552 5.2.2 mailbox full',
                                                         'c@example.net': '552 5.5.3 too many recipients'},
                                                        '5A00000000000007')
        self.assertEqual(res[str(ja)]['S'], 's', res)
        self.assertEqual(res[str(jb)]['S'], 'p', res)
        self.assertTrue(res[str(jb)]['X'].startswith('5.2.2 host '), res)
        self.assertEqual(res[str(jc)]['S'], 't', res)
        self.assertTrue(res[str(jc)]['X'].startswith('4.5.3 host '), res)
        self.assertIn('said: 552 5.5.3 too many recipients (in reply to RCPT TO)', res[str(jc)]['X'])
        self.assertEqual(res[str(jd)]['S'], 't', res)   # lock-step: not sent after it, as after a 452
        self.assertEqual(s.messages[0]['rcpt'], ['RCPT TO:<a@example.net>', 'RCPT TO:<b@example.net>',
                                                 'RCPT TO:<c@example.net>'])

    def test_all_refused_no_data(self):
        s = self.sink(rcpt_reply='550 5.1.1 no such user', pipelining=True)
        d = self.routed(s)
        path = d.message_file(b'Subject: t\n\nhello\n')
        kw = dict(path=path, msgid='5A00000000000006')
        self.submit_stopped(d, [('a@example.net', kw), ('b@example.net', kw)])
        res = self.results(d, 2)
        self.assertTrue(all(r['S'] == 'p' for r in res.values()), res)
        self.assertEqual(self.transactions(s), 1)
        self.assertFalse(any(ln.upper().startswith(b'DATA') for sess in s.sessions for ln in sess['lines']))


class ReuseTest(RemoteBase):
    """A connection that delivered a message waits remote_reuse_time (2 s by
    default) for the next message to the same destination, which goes out on
    it: no new connect, STARTTLS or AUTH."""

    def wait_closed(self, s, timeout=10):
        deadline = time.time() + timeout
        while s.active and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(s.active, 0)

    def last_command(self, sess):
        return sess['lines'][-1].rstrip(b'\r\n').upper() if sess['lines'] else b''

    def test_next_message_goes_over_the_same_tls_connection(self):
        s = self.sink(starttls=True, pipelining=True, dsn=True)
        d = self.routed(s)
        r1 = d.deliver('bob@example.net', MESSAGE, envid='E1')
        r2 = d.deliver('carol@example.net', b'Subject: two\n\nsecond\n', sender='dave@example.test',
                       notify='NEVER')
        r3 = d.deliver('bob@example.net', b'Subject: three\n\nthird\n', sender='')
        self.assertEqual([r['S'] for r in (r1, r2, r3)], ['s', 's', 's'], (r1, r2, r3))
        self.assertEqual(s.connections, 1)
        self.assertEqual(s.sessions[0]['transactions'], 3)
        self.assertTrue(s.sessions[0]['tls'])
        self.assertEqual(sum(1 for l in s.sessions[0]['lines'] if l.upper().startswith(b'STARTTLS')), 1)
        m1, m2, m3 = s.messages
        self.assertEqual(m1['data'], EXPECTED)
        self.assertIn('ENVID=E1', m1['mail'])
        self.assertTrue(m2['mail'].startswith('MAIL FROM:<dave@example.test>'), m2['mail'])
        self.assertNotIn('ENVID', m2['mail'])
        self.assertEqual(m2['rcpt'], ['RCPT TO:<carol@example.net> NOTIFY=NEVER ORCPT=rfc822;carol@example.net'])
        self.assertEqual(m2['data'], b'Subject: two\r\n\r\nsecond\r\n')
        self.assertTrue(m3['mail'].startswith('MAIL FROM:<>'), m3['mail'])
        self.assertEqual(m3['rcpt'], ['RCPT TO:<bob@example.net> ORCPT=rfc822;bob@example.net'])
        self.assertEqual(m3['data'], b'Subject: three\r\n\r\nthird\r\n')
        self.assertEqual(d.log().count('event=reuse'), 2, d.log())
        # idle past remote_reuse_time: QUIT, and the next message opens a new one
        self.wait_closed(s)
        self.assertEqual(self.last_command(s.sessions[0]), b'QUIT')
        self.assertEqual(d.deliver('bob@example.net')['S'], 's')
        self.assertEqual(s.connections, 2)

    def test_reuse_time_zero_quits_after_each_message(self):
        s = self.sink(pipelining=True)
        d = self.routed(s, conf={'remote_reuse_time': '0'})
        for i in range(3):
            self.assertEqual(d.deliver('bob@example.net')['S'], 's')
        self.wait_closed(s)
        self.assertEqual(s.connections, 3)
        self.assertTrue(all(self.last_command(x) == b'QUIT' for x in s.sessions), s.sessions)
        self.assertNotIn('event=reuse', d.log())

    def two_messages_two_connections(self, pause=0, **knobs):
        """a sink with knobs, then two messages: each delivered once, the
        second on a connection of its own; returns the deliverer"""
        s = self.sink(**knobs)
        d = self.routed(s, conf={'remote_reuse_time': '30'})
        self.assertEqual(d.deliver('bob@example.net')['S'], 's')
        time.sleep(pause)
        r = d.deliver('carol@example.net', b'Subject: two\n\nx\n')
        self.assertEqual(r['S'], 's', r)
        self.assertEqual(s.connections, 2)
        self.assertEqual([m['rcpt'] for m in s.messages],
                         [['RCPT TO:<bob@example.net>'], ['RCPT TO:<carol@example.net>']])
        return d

    def test_server_closing_the_idle_connection_costs_nothing(self):
        self.two_messages_two_connections(pause=0.3, close_after_end=True)

    def test_421_to_mail_on_a_kept_connection_retries_on_a_new_one(self):
        for pipelining in (False, True):
            d = self.two_messages_two_connections(pipelining=pipelining,
                                                  later_mail_reply='421 4.4.2 sink.test idle too long')
            self.assertIn('event=reuse', d.log())

    def test_stray_reply_after_the_data_is_not_taken_for_the_next_mail(self):
        # a server out of step: one reply too many after the end of data
        for starttls in (False, True):
            d = self.two_messages_two_connections(
                starttls=starttls, end_reply='250 2.0.0 queued\r\n250 2.0.0 stray extra reply')
            self.assertNotIn('event=reuse', d.log())

    def test_batch_handed_to_a_child_that_went_goes_to_another(self):
        # the idle child is stopped; meanwhile the server drops the connection
        # and the next batch is handed to it: woken, it sees the server gone
        # and exits without taking the batch ("A"), which then goes to a new
        # child on a new connection, delivered once
        s = self.sink()
        d = self.routed(s, conf={'remote_reuse_time': '30'})
        self.assertEqual(d.deliver('bob@example.net')['S'], 's')
        with open('/proc/%d/task/%d/children' % (d.proc.pid, d.proc.pid)) as f:
            kids = [int(x) for x in f.read().split()]
        self.assertEqual(len(kids), 1, kids)
        os.kill(kids[0], signal.SIGSTOP)
        try:
            s.drop_all()
            self.wait_closed(s, 5)
            job = d.submit('carol@example.net', b'Subject: two\n\nx\n')
            deadline = time.time() + 5
            while 'event=reuse' not in d.log() and time.time() < deadline:
                time.sleep(0.02)
            self.assertIn('event=reuse', d.log())   # handed to the stopped child
        finally:
            os.kill(kids[0], signal.SIGCONT)
        r = d.result(30)
        self.assertEqual((r['J'], r['S']), (str(job), 's'), r)
        self.assertIn('event=reuse_missed', d.log())
        self.assertEqual(s.connections, 2)
        self.assertEqual([m['rcpt'] for m in s.messages],
                         [['RCPT TO:<bob@example.net>'], ['RCPT TO:<carol@example.net>']])

    def test_other_route_entry_to_the_same_host_gets_its_own_connection(self):
        s = self.sink(starttls=True)
        d = self.deliverer('example.net [127.0.0.1]:%d tls=none\nexample.org [127.0.0.1]:%d\n'
                           % (s.port, s.port), conf={'remote_reuse_time': '30'})
        self.assertEqual(d.deliver('bob@example.net')['S'], 's')
        self.assertEqual(d.deliver('bob@example.org')['S'], 's')
        self.assertEqual(s.connections, 2)
        self.assertEqual([x['tls'] for x in s.sessions], [False, True])
        self.assertEqual(self.last_command(s.sessions[0]), b'QUIT')

    def test_reload_and_eof_retire_idle_connections(self):
        s = self.sink()
        d = self.routed(s, conf={'remote_reuse_time': '60'})
        self.assertEqual(d.deliver('bob@example.net')['S'], 's')
        time.sleep(0.3)
        self.assertEqual(s.active, 1)             # kept open, idle
        d.proc.send_signal(signal.SIGHUP)         # opened under the old configuration: goes
        self.wait_closed(s, 5)
        self.assertEqual(self.last_command(s.sessions[0]), b'QUIT')
        self.assertEqual(d.deliver('bob@example.net')['S'], 's')
        time.sleep(0.3)
        self.assertEqual(s.active, 1)
        t0 = time.time()
        d.sock.close()                            # queue-manager gone: QUIT, then exit
        d.proc.wait(10)
        self.assertLess(time.time() - t0, 5)
        self.wait_closed(s, 5)
        self.assertEqual(self.last_command(s.sessions[1]), b'QUIT')

    def test_per_domain_limit_counts_idle_connections(self):
        s = self.sink(end_delay=0.5)
        d = self.routed(s, conf={'remote_per_domain': '2', 'remote_reuse_time': '30'})
        path = d.message_file(b'Subject: t\n\nhello\n')
        jobs = [d.submit('u%d@example.net' % i, path=path) for i in range(6)]
        res = {}
        while len(res) < 6:
            r = d.result(30)
            res[r['J']] = r
        self.assertTrue(all(r['S'] == 's' for r in res.values()), res)
        self.assertLessEqual(s.max_active, 2)
        self.assertLessEqual(s.connections, 2)
        self.assertEqual(len(s.messages), 6)


class EndToEndTest(RemoteBase):
    """SMTP in -> queue -> queue-manager -> remote-deliverer -> the sink."""

    def host_routed_to(self, s, users=None):
        """a whole instance, started, whose conf/routes sends example.net
        to the sink s; stopped at tearDown (before the sink closes)"""
        inst = Instance(conf_extra={'remote_timeout': '10'}, users=users)
        inst.setup()
        self.cleanups.append(inst.stop)
        with open(inst.path('conf', 'routes'), 'w') as f:
            f.write('example.net [127.0.0.1]:%d\n' % s.port)
        os.chmod(inst.path('conf', 'routes'), 0o644)
        return inst.start()

    def test_relay_through_the_whole_host(self):
        need(self, 'postern-setup', 'smtp-listener', 'queue-manager', 'queue-inject', 'local-deliverer')
        s = self.sink(starttls=True, pipelining=True)
        inst = self.host_routed_to(s)
        smtp_dialogue(inst.port('smtp'), [
            (None, '220'),
            ('EHLO client.test', '250'),
            ('MAIL FROM:<alice@example.test>', '250'),
            ('RCPT TO:<bob@example.net>', '250'),
            ('DATA', '354'),
            ('Subject: out\r\n\r\n..dot line\r\nbye\r\n.', '250'),
            ('QUIT', '221'),
        ])
        inst.wait_for(lambda: s.messages, timeout=30, what='message at the sink')
        m = s.messages[0]
        self.assertTrue(m['tls'])
        self.assertEqual(m['rcpt'], ['RCPT TO:<bob@example.net>'])
        self.assertTrue(m['mail'].startswith('MAIL FROM:<alice@example.test>'), m['mail'])
        self.assertIn(b'Received: ', m['data'])
        self.assertTrue(m['data'].endswith(b'Subject: out\r\n\r\n.dot line\r\nbye\r\n'), m['data'])
        inst.wait_for(lambda: not inst.queue_ids(), timeout=15, what='queue empty')

    def test_smtputf8_passed_on(self):
        """a message received with SMTPUTF8 leaves with it: the envelope's
        smtputf8 travels in the job to remote-deliverer"""
        need(self, 'postern-setup', 'smtp-listener', 'queue-manager', 'queue-inject', 'local-deliverer')
        s = self.sink(smtputf8=True)
        inst = self.host_routed_to(s)
        smtp_dialogue(inst.port('smtp'), [
            (None, '220'),
            ('EHLO client.test', '250'),
            ('MAIL FROM:<alice@example.test> SMTPUTF8', '250'),
            ('RCPT TO:<bob@example.net>', '250'),
            ('DATA', '354'),
            ('Subject: out\r\n\r\nbye\r\n.', '250'),
            ('QUIT', '221'),
        ])
        inst.wait_for(lambda: s.messages, timeout=30, what='message at the sink')
        self.assertTrue(s.messages[0]['mail'].startswith('MAIL FROM:<alice@example.test> '), s.messages[0])
        self.assertTrue(s.messages[0]['mail'].endswith(' SMTPUTF8'), s.messages[0])
        inst.wait_for(lambda: not inst.queue_ids(), timeout=15, what='queue empty')

    def test_one_refused_recipient_bounces_alone(self):
        need(self, 'postern-setup', 'smtp-listener', 'queue-manager', 'queue-inject', 'local-deliverer',
             'postern-user')
        s = self.sink(pipelining=True, rcpt_replies={'nobody@example.net': '550 5.1.1 no such user'})
        inst = self.host_routed_to(s, users={'alice': 'pw-alice-1'})
        tag = 'batch-bounce-%d' % time.time()
        smtp_dialogue(inst.port('smtp'), [
            (None, '220'),
            ('EHLO client.test', '250'),
            ('MAIL FROM:<alice@example.test>', '250'),
            ('RCPT TO:<bob@example.net>', '250'),
            ('RCPT TO:<nobody@example.net>', '250'),
            ('RCPT TO:<carol@example.net>', '250'),
            ('DATA', '354'),
            ('Subject: %s\r\n\r\nhi\r\n.' % tag, '250'),
            ('QUIT', '221'),
        ])
        bounce = inst.wait_for(lambda: [m for _, m in inst.maildir_messages('alice') if tag.encode() in m],
                               timeout=30, what='the bounce for nobody@')[0]
        self.assertIn(b'nobody@example.net', bounce)
        self.assertNotIn(b'bob@example.net', bounce.split(b'message/rfc822')[0])
        self.assertNotIn(b'carol@example.net', bounce.split(b'message/rfc822')[0])
        inst.wait_for(lambda: not inst.queue_ids(), timeout=15, what='queue empty')
        # the message reached the sink (with bob and carol accepted), and
        # nobody retried: each RCPT was given exactly once
        self.assertTrue(s.messages)
        rcpts = sorted(ln for sess in s.sessions for ln in sess['lines'] if ln.startswith(b'RCPT'))
        self.assertEqual(rcpts, [b'RCPT TO:<bob@example.net>\r\n', b'RCPT TO:<carol@example.net>\r\n',
                                 b'RCPT TO:<nobody@example.net>\r\n'])
        self.assertEqual(len(inst.maildir_messages('alice')), 1)


class ConfigErrorTest(RemoteBase):
    def test_bad_routes_refuse_to_start(self):
        d = Deliverer(routes='example.net [127.0.0.1]:25\nbad.example host tls=sometimes\n')
        self.cleanups.append(d.stop)
        d.start()
        self.assertEqual(d.proc.wait(10), 100)
        self.assertIn('conf/routes:2: tls= must be', d.log())

    def test_auth_name_must_exist(self):
        d = Deliverer(routes='* [127.0.0.1]:25 auth=nope\n', relay_auth='isp u p\n')
        self.cleanups.append(d.stop)
        d.start()
        self.assertEqual(d.proc.wait(10), 100)
        self.assertIn('conf/routes:1: auth=nope', d.log())

    def test_relay_auth_must_be_private(self):
        d = Deliverer(routes='', relay_auth='isp u p\n')
        os.chmod(os.path.join(d.root, 'conf/relay-auth'), 0o644)
        self.cleanups.append(d.stop)
        d.start()
        self.assertEqual(d.proc.wait(10), 100)
        self.assertIn('relay-auth: readable by group or others', d.log())


class StalledDestinationTest(RemoteBase):
    """queue-manager and remote-deliverer together: a destination that
    accepts connections and then never answers keeps its own deliveries
    waiting (remote_timeout), never everybody else's."""

    def test_stalled_destination_leaves_others_delivered(self):
        need(self, 'queue-manager', 'queue-inject')
        stalled = self.sink(stall_at='greeting')
        good = self.sink()
        inst = Instance(services=['queue-manager'])
        self.cleanups.append(inst.stop)
        inst.setup()
        with open(inst.path('conf', 'routes'), 'w') as f:
            f.write('stalled.example [127.0.0.1]:%d tls=none\ngood.example [127.0.0.1]:%d tls=none\n'
                    % (stalled.port, good.port))
        os.chmod(inst.path('conf', 'routes'), 0o644)
        inst.start()
        for i in range(25):            # each a message of its own; remote_concurrency is 20
            queue_inject(inst, 'a@example.test', ['u%d@stalled.example' % i], b'Subject: s%d\n\nx\n' % i)
        # remote_per_domain (5) connections, each waiting for a greeting
        inst.wait_for(lambda: stalled.connections >= 5, 20, what='the stalled destination connected to')
        queue_inject(inst, 'a@example.test', ['v@good.example'], b'Subject: good\n\nx\n')
        inst.wait_for(lambda: good.messages, 20,
                      what=lambda: 'good.example served past the stalled one\n' + inst.log('queue-manager'))
        self.assertEqual(stalled.connections, 5)


if __name__ == '__main__':
    unittest.main()
