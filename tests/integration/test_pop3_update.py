"""test_pop3_update.py - POP3 deletions under stops, timeouts and cuts
(RFC 1939 section 6: only the UPDATE state, entered by QUIT from
TRANSACTION, removes messages), on a real instance with raw sockets.

What pop3-listener promises (docs/man/pop3-listener.8, UPDATE):
  - a session that ends any other way (the client cuts it, the session
    times out, the tree's stop signals it while in TRANSACTION) deletes
    nothing: every message is there at the next login;
  - a stop signal (SIGTERM, SIGINT, SIGHUP) that arrives during an UPDATE
    waits until the UPDATE is done and its reply sent: an UPDATE is never
    left half done by a stop, and "+OK" to QUIT means every deletion was
    done (and made durable, test_crashmodel);
  - after any of these, every message is whole under exactly one name
    (new/BASE, or cur/BASE:2,FLAGS), or gone if it was marked deleted;
    the next login works at the first try and lists what is there;
  - the maildrop lock is held through the UPDATE (a second login meanwhile
    gets "-ERR [IN-USE]") and released before the reply to QUIT, so a
    client that got its "+OK" can log in again at once.

The timeout and the signals are made to arrive where they matter: the
timeout by ptrace (the mailbox process's poll() returns 0), a SIGTERM in
the middle of the UPDATE by strace (inject=unlinkat:signal=TERM), slow
UPDATEs and closes by strace's delay injection; and the tree's stop as
systemd sends it, racing a QUIT."""

import ctypes
import os
import platform
import random
import shutil
import signal
import subprocess
import time
import unittest

import harness
from harness import Conn, descendants, pop3_dialogue, running, sandbox_state, signal_all

PROGS = ('postern-setup', 'postern-user', 'auth-checker', 'pop3-listener')
STRACE = shutil.which('strace')
USERS = {'alice': 'secret', 'bob': 'b0b'}


def body(k):
    return ('Subject: message %d\n\n' % k + 'line %d of the body\n' % k * 30).encode()


def procs_rooted_at(path):
    """the mailbox process of that Maildir, still running: chrooted there
    as root, in it (its working directory) as an ordinary user
    (harness.mailbox_processes)"""
    return [p for p in harness.mailbox_processes(path) if running(p)]


# ---- a timeout now: ptrace (x86_64) -------------------------------------
PTRACE_GETREGS, PTRACE_SETREGS, PTRACE_DETACH = 12, 13, 17
PTRACE_SEIZE, PTRACE_INTERRUPT = 0x4206, 0x4207
WALL = 0x40000000
NR_POLL, RAX, ORIG_RAX = 7, 10, 15    # x86_64: poll's number; in user_regs_struct
ERESTART_RESTARTBLOCK = 516


def waiting_in_poll(pid):
    """the process is blocked in poll() (/proc/PID/syscall)"""
    try:
        with open('/proc/%d/syscall' % pid) as f:
            return f.read().split()[0] == str(NR_POLL)
    except (OSError, IndexError):
        return False


def poll_times_out_now(pid):
    """The process, blocked in poll(), returns from it with 0, as at the
    end of its timeout. ptrace: stop it (the wait is interrupted, to be
    restarted), make the interrupted call's result 0 instead of the
    restart, let it go. (strace's retval injection cannot do it: it skips
    a call, which the mailbox process's seccomp filter kills.) x86_64."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]

    def pt(req, data=None):
        if libc.ptrace(req, pid, None, data) < 0:
            raise OSError(ctypes.get_errno(), 'ptrace %#x' % req)
    regs = (ctypes.c_uint64 * 27)()
    pt(PTRACE_SEIZE)
    try:
        pt(PTRACE_INTERRUPT)
        _, st = os.waitpid(pid, WALL)
        assert os.WIFSTOPPED(st), st
        pt(PTRACE_GETREGS, ctypes.addressof(regs))
        assert (regs[ORIG_RAX], ctypes.c_int64(regs[RAX]).value) == (NR_POLL, -ERESTART_RESTARTBLOCK), \
            'not stopped in an interrupted poll: %d %d' % (regs[ORIG_RAX], ctypes.c_int64(regs[RAX]).value)
        regs[RAX] = 0
        pt(PTRACE_SETREGS, ctypes.addressof(regs))
    finally:
        pt(PTRACE_DETACH)


class Pop3UpdateTest(harness.InstanceTest):
    PROGRAMS = PROGS
    INSTANCE = {'services': ['auth-checker', 'pop3-listener'], 'users': USERS}
    PORT = 'pop3'

    def setUp(self):
        super().setUp()
        self.md = os.path.realpath(self.inst.maildir('alice'))
        self.inst.wait_for(lambda: not procs_rooted_at(self.md), what='no mailbox process of alice left')
        self.inst.empty_maildir('alice')

    # ---- the mailbox ----------------------------------------------------
    def fill(self, n):
        """n messages in new/, delivered in order 1..n: {base name: bytes}"""
        st = os.stat(self.md)
        out = {}
        t = 1700000000
        for k in range(1, n + 1):
            name = '%d.M%dP%d.test' % (t + k, k, k)
            path = os.path.join(self.md, 'new', name)
            with open(path, 'wb') as f:
                f.write(body(k))
            os.chown(path, st.st_uid, st.st_gid)
            out[name] = body(k)
        return out

    def files(self):
        """{'new/NAME' or 'cur/NAME': bytes} of what a Maildir reader sees"""
        out = {}
        for sub in ('new', 'cur'):
            for n in os.listdir(os.path.join(self.md, sub)):
                with open(os.path.join(self.md, sub, n), 'rb') as f:
                    out[sub + '/' + n] = f.read()
        return out

    def check_whole(self, before, deleted=(), what=''):
        """Every message is whole under exactly one name (new/BASE, or
        cur/BASE:2,FLAGS), or gone if it was marked deleted; nothing else
        is there. Returns (gone, moved): the base names removed, and those
        now in cur/."""
        seen = {}
        for path, data in self.files().items():
            sub, name = path.split('/', 1)
            base = name.split(':')[0]
            self.assertIn(base, before, '%s: a file no message had: %s' % (what, path))
            self.assertNotIn(base, seen, '%s: %s twice: %s and %s' % (what, base, seen.get(base), path))
            seen[base] = path
            self.assertEqual(data, before[base], '%s: %s is not whole' % (what, path))
            if sub == 'new':
                self.assertEqual(name, base, what)
            else:
                self.assertTrue(name.startswith(base + ':2,'), '%s: %s' % (what, path))
        gone = set(before) - set(seen)
        self.assertLessEqual(gone, set(deleted), '%s: lost messages never marked deleted' % what)
        self.assertEqual(os.listdir(os.path.join(self.md, 'tmp')), [], what)
        return gone, {b for b, p in seen.items() if p.startswith('cur/')}

    # ---- sessions -------------------------------------------------------
    def login(self):
        """a session in TRANSACTION: (Conn, the mailbox process's pid)"""
        c = Conn(self.port, timeout=30)
        pop3_dialogue(self.port, [(None, '+OK'), ('USER alice', '+OK'), ('PASS secret', '+OK')], conn=c)
        pids = procs_rooted_at(self.md)
        self.assertEqual(len(pids), 1, 'one mailbox process')
        return c, pids[0]

    def prelogin(self):
        """a connection before login: (Conn, a function that lists its
        pre-login process once it waits for the client: the sandboxed
        one, not its monitor)"""
        if platform.machine() != 'x86_64':
            self.skipTest('the ptrace helper knows x86_64 registers only')
        top = self.inst.service_pid('pop3-listener')
        before = set(descendants(top))
        c = Conn(self.port, timeout=30)
        self.assertTrue(c.readline().startswith('+OK'))

        def waiting():
            return [p for p in set(descendants(top)) - before
                    if running(p) and sandbox_state(p)[1] == 2 and waiting_in_poll(p)]
        return c, waiting

    def mark(self, c, numbers, cmd='DELE'):
        """send the commands pipelined, then read their replies"""
        c.send(''.join('%s %d\r\n' % (cmd, k) for k in numbers).encode())
        for _ in numbers:
            r = c.pop3_reply(multiline=cmd == 'RETR')
            self.assertTrue(r.startswith('+OK'), r)

    def next_login_sees(self, before):
        """once the session's process is gone, a login works at the first
        try (the lock went with it) and lists what the Maildir holds"""
        self.inst.wait_for(lambda: not procs_rooted_at(self.md), what='the mailbox process gone')
        left = {p.split('/', 1)[1].split(':')[0] for p in self.files()}
        with Conn(self.port) as c:
            r = pop3_dialogue(self.port, [(None, '+OK'), ('USER alice', '+OK'), ('PASS secret', '+OK'),
                                          ('UIDL', '+OK'), ('QUIT', '+OK')], conn=c)
        uidls = [ln.split()[1] for ln in r[3].split('\n')[1:]]
        self.assertEqual(uidls, [b for b in before if b in left])   # in delivery order
        return uidls

    def strace(self, pid, *args):
        """strace attached to pid (returns once it has attached)"""
        if not STRACE:
            self.skipTest('strace is not installed')
        st = subprocess.Popen([STRACE, '-o', '/dev/null', '-p', str(pid)] + list(args),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.addCleanup(lambda: (st.poll() is None and st.terminate(), st.wait(30)))
        line = st.stderr.readline()
        if b'attached' not in line:
            self.skipTest('strace cannot attach here: %r' % line)
        return st

    # ---- 1: only QUIT deletes -----------------------------------------
    def test_cut_without_quit_deletes_nothing(self):
        before = self.fill(20)
        c, _ = self.login()
        self.mark(c, range(1, 21))
        c.close()
        self.check_whole(before)
        self.assertEqual(self.next_login_sees(before), list(before))

    def test_timeout_in_transaction_deletes_nothing(self):
        """the session's timeout (10 minutes at least, RFC 1939) made to
        happen now: the mailbox process's wait for a command, poll(),
        returns 0 (ptrace), as at the end of its timeout. RFC 1939 3: "the
        server should close the TCP connection without removing any
        messages or sending any response to the client" (it said "-ERR
        Timeout, closing connection", which a client that sent a command
        just then takes for that command's reply)"""
        if platform.machine() != 'x86_64':
            self.skipTest('the ptrace helper knows x86_64 registers only')
        before = self.fill(20)
        c, pid = self.login()
        self.mark(c, range(1, 21))
        self.inst.wait_for(lambda: waiting_in_poll(pid), what='the mailbox process waiting for a command')
        poll_times_out_now(pid)
        replies = []
        while True:
            ln = c.readline()
            if ln == '':
                break
            replies.append(ln)
        self.assertEqual(replies, [], c.text())
        c.close()
        self.check_whole(before)
        self.assertEqual(self.next_login_sees(before), list(before))
        self.assertIn('event=drop user=alice update=no error=timeout', self.inst.log('pop3-listener'))

    def test_timeout_before_login_closes_without_a_reply(self):
        """the same in AUTHORIZATION: the pre-login process's wait for a
        command times out (made to happen now): the connection is closed,
        nothing said (RFC 1939 3)"""
        c, prelogin_waiting = self.prelogin()
        self.inst.wait_for(prelogin_waiting, 20, what='the pre-login process waiting for a command')
        waiting = prelogin_waiting()
        self.assertEqual(len(waiting), 1, waiting)
        poll_times_out_now(waiting[0])
        self.assertEqual(c.readline(), '', c.text())     # EOF, no reply
        self.assertEqual(c.buf, b'')
        c.close()

    def stop_tree(self):
        """SIGTERM to every process of pop3-listener's service at once, as
        the unit's stop does (KillMode=control-group; test_restart): the
        listener, the monitors, the sessions, the mailbox processes"""
        top = self.inst.service_pid('pop3-listener')
        pids = descendants(top)
        signal_all(pids, signal.SIGTERM)
        return top

    def wait_restarted(self, old):
        self.inst.wait_for(lambda: self.inst.service_pid('pop3-listener') not in (None, old), 20,
                           what='s6-supervise to start pop3-listener again')
        self.inst.wait_ready('pop3-listener')

    def test_stop_signal_in_transaction_deletes_nothing(self):
        before = self.fill(20)
        c, pid = self.login()
        self.mark(c, range(1, 21))
        old = self.stop_tree()
        self.assertTrue(c.closed(10), 'the session outlived the stop')
        c.close()
        self.check_whole(before)
        self.wait_restarted(old)
        self.assertEqual(self.next_login_sees(before), list(before))

    def test_svc_down_lets_the_session_finish(self):
        """s6-svc -d signals the listener alone: it stops accepting, and a
        session in progress goes on (pop3-listener.8): cut without QUIT it
        deletes nothing, and with QUIT it deletes what it marked"""
        before = self.fill(6)
        c, pid = self.login()
        self.mark(c, (1, 2))
        self.inst.svc('pop3-listener', '-d')
        try:
            self.inst.wait_down('pop3-listener')
            pop3_dialogue(self.port, [('NOOP', '+OK'), ('DELE 3', '+OK')], conn=c)
            c.close()
            self.check_whole(before)
            self.inst.wait_for(lambda: not procs_rooted_at(self.md), what='the mailbox process gone')
        finally:
            self.inst.svc('pop3-listener', '-u')
            self.inst.wait_ready('pop3-listener')
        c, pid = self.login()
        self.mark(c, (1, 2))
        self.inst.svc('pop3-listener', '-d')
        try:
            self.inst.wait_down('pop3-listener')
            pop3_dialogue(self.port, [('QUIT', '+OK')], conn=c)
            c.close()
        finally:
            self.inst.svc('pop3-listener', '-u')
            self.inst.wait_ready('pop3-listener')
        gone, _ = self.check_whole(before, deleted=list(before)[:2])
        self.assertEqual(gone, set(list(before)[:2]))

    # ---- 2: a stop during the UPDATE -----------------------------------
    def update_session(self, n):
        """n messages; a session that RETRs every third, DELEs every even
        one, and is about to QUIT: (before, deleted, conn, pid)"""
        before = self.fill(n)
        names = list(before)
        c, pid = self.login()
        for k in range(1, n + 1, 3):
            self.mark(c, [k], 'RETR')
        dele = range(2, n + 1, 2)
        self.mark(c, dele)
        return before, [names[k - 1] for k in dele], c, pid

    def quit_reply(self, c):
        """the reply to QUIT, or '' if the connection ended without one"""
        try:
            return c.readline()
        except (OSError, harness.HarnessError):
            return ''

    def check_update(self, before, deleted, reply, what):
        gone, moved = self.check_whole(before, deleted, what)
        if reply.startswith('+OK'):
            self.assertEqual(gone, set(deleted), '%s: +OK, yet not every deletion was done' % what)
            self.assertEqual(moved, set(before) - set(deleted), '%s: +OK, not every message in cur/' % what)
        # a stop never leaves an UPDATE half done: all of it, or none
        self.assertTrue(gone in (set(), set(deleted)), '%s: a half-done UPDATE (%d of %d deleted), reply %r'
                        % (what, len(gone), len(deleted), reply))
        if not gone:
            self.assertEqual(moved, set(), '%s: moves without the deletions' % what)
        return gone

    def test_sigterm_in_the_middle_of_the_update(self):
        """SIGTERM delivered to the mailbox process at its 100th unlinkat,
        in the middle of an UPDATE of 250 deletions: the UPDATE finishes,
        its +OK is sent, then the process ends"""
        before, deleted, c, pid = self.update_session(500)
        self.strace(pid, '-e', 'trace=unlinkat', '-e', 'inject=unlinkat:signal=TERM:when=100')
        c.send('QUIT')
        reply = self.quit_reply(c)
        c.close()
        self.inst.wait_for(lambda: not running(pid), what='the mailbox process gone')
        self.check_update(before, deleted, reply, 'SIGTERM at the 100th unlinkat')
        self.assertEqual(reply, '+OK Logging out.')
        self.next_login_sees(before)

    def test_tree_stop_racing_quit(self):
        """the tree's stop (SIGTERM to every process of pop3-listener) sent
        with a QUIT of 250 deletions, a little later each round: each round
        ends with the UPDATE not begun or whole, never half done"""
        rnd = random.Random(1939)
        outcomes = []
        for rnd_no in range(8):
            self.setUp()
            before, deleted, c, pid = self.update_session(500)
            c.send('QUIT')
            time.sleep(rnd.uniform(0, 0.004) if rnd_no else 0)
            old = self.stop_tree()
            reply = self.quit_reply(c)
            c.close()
            self.inst.wait_for(lambda: not running(pid), what='the mailbox process gone')
            gone = self.check_update(before, deleted, reply, 'round %d' % rnd_no)
            outcomes.append((reply[:3] or 'none', len(gone)))
            self.wait_restarted(old)
            self.next_login_sees(before)
        print('\n[pop3 update] stop racing QUIT, (reply, deleted) per round: %s' % outcomes)

    # ---- 4: the lock during the UPDATE ---------------------------------
    def test_second_login_during_update_is_in_use(self):
        """the UPDATE slowed down (each unlinkat delayed 20 ms): logins
        meanwhile get -ERR [IN-USE]; the one after the +OK gets in"""
        before, deleted, c, pid = self.update_session(300)
        self.strace(pid, '-e', 'trace=unlinkat', '-e', 'inject=unlinkat:delay_enter=20000')
        c.send('QUIT')
        time.sleep(0.2)
        replies = []
        for _ in range(2):
            with Conn(self.port) as o:
                r = pop3_dialogue(self.port, [(None, '+OK'), ('USER alice', '+OK'), ('PASS secret', '-ERR')],
                                  conn=o)
                replies.append(r[2])
        self.assertEqual(replies, ['-ERR [IN-USE] Mailbox is locked by another session'] * 2)
        self.assertEqual(c.readline(), '+OK Logging out.')
        self.check_update(before, deleted, '+OK', 'after the slow UPDATE')
        with Conn(self.port) as o:       # at once: the lock was released before the +OK
            pop3_dialogue(self.port, [(None, '+OK'), ('USER alice', '+OK'), ('PASS secret', '+OK'),
                                      ('STAT', '+OK %d ' % (len(before) - len(deleted))), ('QUIT', '+OK')], conn=o)
        c.close()

    def test_lock_released_before_the_reply_to_quit(self):
        """each close() of the mailbox process delayed 2.5 s: a client that
        got "+OK" to QUIT logs in again at once and is not IN-USE"""
        before, deleted, c, pid = self.update_session(30)
        self.strace(pid, '-e', 'trace=close', '-e', 'inject=close:delay_enter=2500000')
        c.send('QUIT')
        self.assertEqual(c.readline(), '+OK Logging out.')
        with Conn(self.port) as o:
            pop3_dialogue(self.port, [(None, '+OK'), ('USER alice', '+OK'), ('PASS secret', '+OK'),
                                      ('STAT', '+OK %d ' % (len(before) - len(deleted))), ('QUIT', '+OK')], conn=o)
        c.close()


    def test_client_that_stops_reading_is_timed_out(self):
        """A client that sends RETR of a large message and then reads
        nothing (a phone gone out of reach, its TCP connection still open):
        the mailbox process's writes wait at most the session's timeout, as
        its reads do, and then it ends and frees the mailbox. Before, it
        wrote to a blocking socket and stayed in write() for good, holding
        the lock: every later login got IN-USE. The timeout (10 minutes at
        least) is made to happen now, as in
        test_timeout_in_transaction_deletes_nothing."""
        if platform.machine() != 'x86_64':
            self.skipTest('the ptrace helper knows x86_64 registers only')
        st = os.stat(self.md)
        name = '1700000001.M1P1.test'
        path = os.path.join(self.md, 'new', name)
        with open(path, 'wb') as f:             # more than both sockets' buffers hold
            f.write(b'Subject: big\n\n' + b'%-75d\n' % 0 * ((24 << 20) // 76))
        os.chown(path, st.st_uid, st.st_gid)
        c, pid = self.login()
        c.send('RETR 1')
        self.inst.wait_for(lambda: waiting_in_poll(pid), 20,
                           what='the mailbox process waiting, with a timeout, for the client to read')
        poll_times_out_now(pid)
        self.inst.wait_for(lambda: not running(pid), 20, what='the mailbox process gone after its timeout')
        c.close()
        self.assertEqual(os.listdir(os.path.join(self.md, 'new')), [name], 'nothing deleted or moved')
        self.assertEqual(self.next_login_sees({name: None}), [name])
        self.assertIn('event=drop user=alice update=no error="Connection timed out"', self.inst.log('pop3-listener'))


    def test_client_that_never_reads_before_login_is_timed_out(self):
        """The same before a login: a client that pipelines CAPA after
        CAPA and reads none of the replies. The pre-login process's writes
        wait at most the timeout (made to happen now); then it ends, and
        the listener serves others as before."""
        c, prelogin_waiting = self.prelogin()
        c.sock.setblocking(False)
        sent, chunk = 0, b'CAPA\r\n' * 4096

        def fill():                          # until the kernel takes no more
            nonlocal sent
            try:
                while True:
                    sent += c.sock.send(chunk)
            except BlockingIOError:
                return False
        self.inst.wait_for(lambda: fill() or sent > (4 << 20) and prelogin_waiting(), 30,
                           what='a pre-login process waiting, with a timeout, for the client to read')
        waiting = prelogin_waiting()
        self.assertEqual(len(waiting), 1, waiting)
        poll_times_out_now(waiting[0])
        self.inst.wait_for(lambda: not running(waiting[0]), 20, what='the pre-login process gone after its timeout')
        c.close()
        pop3_dialogue(self.port, [(None, '+OK'), ('USER bob', '+OK'), ('PASS b0b', '+OK'), ('QUIT', '+OK')])


if __name__ == '__main__':
    unittest.main()
