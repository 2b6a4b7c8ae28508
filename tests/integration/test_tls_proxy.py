"""tls-proxy on its own: a real OpenSSL handshake from real clients
(openssl s_client, Python ssl), relayed to a plaintext "session" played by
this test over a socketpair, exactly as a listener's monitor wires it."""
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

from harness import IS_ROOT, need_root

BIN = os.environ.get("POSTERN_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "bin"))
PROXY = os.path.join(BIN, "tls-proxy")
# the user tls-proxy drops to: as an ordinary user, that user (no privilege
# to drop; tls-proxy then runs as its caller, unchrooted)
TLS_USER = "postern-tls" if IS_ROOT else pwd.getpwuid(os.getuid()).pw_name


def make_root(tls_user):
    root = tempfile.mkdtemp(prefix="postern-tls-")
    os.chmod(root, 0o755)
    for d in ("conf", "conf/tls", "empty"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.chmod(os.path.join(root, "empty"), 0o555)
    with open(os.path.join(root, "conf", "postern.conf"), "w") as f:
        f.write("hostname = mail.example.test\n")
        f.write("user_tls = %s\n" % tls_user)
        f.write("session_timeout = 20\n")
    return root


def make_cert(path_dir, cn, key_type="rsa:2048"):
    subprocess.run(["openssl", "req", "-x509", "-newkey", key_type, "-nodes", "-days", "2",
                    "-subj", "/CN=" + cn, "-keyout", os.path.join(path_dir, "key.pem"),
                    "-out", os.path.join(path_dir, "cert.pem")],
                   check=True, capture_output=True)


class ProxyServer:
    """Accepts one TCP connection, starts tls-proxy on it (fd 0 = socket,
    fd 1 = our end of a socketpair) and plays a tiny line session."""

    def __init__(self, root):
        self.root = root
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.port = self.lsock.getsockname()[1]
        self.hello = None
        self.received = []
        self.proc = None
        self.stderr = b""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        conn, _ = self.lsock.accept()
        mine, theirs = socket.socketpair()
        self.proc = subprocess.Popen([PROXY, "-i", "test", self.root], stdin=conn.fileno(),
                                     stdout=theirs.fileno(), stderr=subprocess.PIPE)
        conn.close()
        theirs.close()
        f = mine.makefile("rwb", buffering=0)
        self.hello = f.readline()
        if not self.hello:
            f.close()
            mine.close()
            self.stderr = self.proc.stderr.read()
            self.proc.wait()
            return
        mine.sendall(b"220 ready\r\n")
        while True:
            line = f.readline()
            if not line:
                break
            self.received.append(line)
            if line.strip().upper() == b"QUIT":
                mine.sendall(b"221 bye\r\n")
                break
            if line.strip().upper() == b"BIG":
                mine.sendall(b"x" * 1000000 + b"\r\n")
                continue
            mine.sendall(b"250 " + line.strip().upper() + b"\r\n")
        f.close()
        mine.close()
        self.stderr = self.proc.stderr.read()
        self.proc.stderr.close()
        self.proc.wait()

    def join(self):
        self.thread.join(20)
        self.lsock.close()


@unittest.skipUnless(os.path.exists(PROXY), "tls-proxy not built")
class TlsProxyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if IS_ROOT:
            subprocess.run(["sh", "-c", "getent passwd postern-tls >/dev/null || "
                            "useradd --system --no-create-home --shell /usr/sbin/nologin postern-tls"],
                           check=True)
        cls.root = make_root(TLS_USER)
        make_cert(os.path.join(cls.root, "conf", "tls"), "mail.example.test")
        sni = os.path.join(cls.root, "conf", "tls", "sni", "other.example.test")
        os.makedirs(sni)
        make_cert(sni, "other.example.test")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)

    def client(self, port, **kw):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        for k, v in kw.items():
            setattr(ctx, k, v)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        return ctx, raw

    def test_python_client_relay_and_close_notify(self):
        srv = ProxyServer(self.root)
        ctx, raw = self.client(srv.port)
        s = ctx.wrap_socket(raw, server_hostname="mail.example.test")
        f = s.makefile("rwb", buffering=0)
        self.assertEqual(f.readline(), b"220 ready\r\n")
        s.sendall(b"hello there\r\n")
        self.assertEqual(f.readline(), b"250 HELLO THERE\r\n")
        s.sendall(b"BIG\r\n")
        got = f.readline()
        self.assertEqual(len(got), 1000002)
        s.sendall(b"QUIT\r\n")
        self.assertEqual(f.readline(), b"221 bye\r\n")
        # the proxy ends TLS properly: we get close_notify, i.e. a clean EOF
        self.assertEqual(f.read(), b"")
        s.close()
        srv.join()
        self.assertTrue(srv.hello.startswith(b"TLS TLSv1.3 "), srv.hello)
        self.assertEqual(srv.proc.returncode, 0, srv.stderr)
        self.assertIn(b"end=", srv.stderr)

    def test_client_gone_without_close_notify_is_eof(self):
        """A client that closes its socket without close_notify, as most
        do right after QUIT (Python's poplib and smtplib, getmail, swaks),
        ended as end=eof, as the man page says: OpenSSL 3 reports that
        EOF as an SSL error (unexpected eof while reading), and tls-proxy
        logged end=error after sessions that went well. A client that
        breaks the TLS stream itself is still end=error."""
        srv = ProxyServer(self.root)
        ctx, raw = self.client(srv.port)
        s = ctx.wrap_socket(raw, server_hostname="mail.example.test")
        f = s.makefile("rwb", buffering=0)
        self.assertEqual(f.readline(), b"220 ready\r\n")
        s.sendall(b"hello\r\n")
        self.assertEqual(f.readline(), b"250 HELLO\r\n")
        f.close()
        s.close()          # no close_notify: Python sends none on close()
        srv.join()
        self.assertEqual(srv.proc.returncode, 0, srv.stderr)
        self.assertIn(b" end=eof", srv.stderr)

        srv = ProxyServer(self.root)
        ctx, raw = self.client(srv.port)
        s = ctx.wrap_socket(raw, server_hostname="mail.example.test")
        f = s.makefile("rwb", buffering=0)
        self.assertEqual(f.readline(), b"220 ready\r\n")
        raw2 = socket.socket(fileno=os.dup(s.fileno()))
        raw2.sendall(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)   # a record that does not decrypt
        raw2.close()
        f.close()
        s.close()
        srv.join()
        self.assertIn(b" end=error", srv.stderr)

        # and one that says close_notify is end=close_notify (since
        # SSL_OP_IGNORE_UNEXPECTED_EOF, OpenSSL reports both ends alike)
        srv = ProxyServer(self.root)
        ctx, raw = self.client(srv.port)
        s = ctx.wrap_socket(raw, server_hostname="mail.example.test")
        f = s.makefile("rwb", buffering=0)
        self.assertEqual(f.readline(), b"220 ready\r\n")
        f.close()
        s.unwrap().close()
        srv.join()
        self.assertEqual(srv.proc.returncode, 0, srv.stderr)
        self.assertIn(b" end=close_notify", srv.stderr)

    def test_tls12_allowed_tls11_refused(self):
        srv = ProxyServer(self.root)
        ctx, raw = self.client(srv.port, maximum_version=ssl.TLSVersion.TLSv1_2)
        s = ctx.wrap_socket(raw)
        self.assertEqual(s.version(), "TLSv1.2")
        self.assertTrue("GCM" in s.cipher()[0] or "CHACHA20" in s.cipher()[0], s.cipher())
        s.sendall(b"QUIT\r\n")
        s.makefile("rb").readline()
        s.close()
        srv.join()
        srv2 = ProxyServer(self.root)
        out = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv2.port,
                              "-tls1_1", "-brief"], input=b"", capture_output=True, timeout=20)
        self.assertNotEqual(out.returncode, 0)
        srv2.join()
        self.assertIsNone(srv2.hello or None)
        self.assertIn(b"handshake_failed", srv2.stderr)

    def test_sni_selects_certificate(self):
        for name, want in (("other.example.test", "other.example.test"),
                           ("unknown.example.test", "mail.example.test")):
            srv = ProxyServer(self.root)
            out = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.port,
                                  "-servername", name, "-brief"],
                                 input=b"QUIT\r\n", capture_output=True, timeout=20)
            srv.join()
            text = (out.stdout + out.stderr).decode(errors="replace")
            self.assertIn("CN = " + want, text.replace("CN=", "CN = "))
            self.assertIn(name.encode(), srv.hello)

    def test_plaintext_garbage_is_not_relayed(self):
        """A client that speaks plaintext (or injects bytes before a
        handshake) never gets its bytes to the session."""
        srv = ProxyServer(self.root)
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        raw.sendall(b"NOOP\r\nQUIT\r\n")
        raw.settimeout(10)
        try:
            data = raw.recv(100)
        except ConnectionResetError:
            data = b""
        raw.close()
        srv.join()
        self.assertEqual(srv.received, [])
        self.assertFalse(srv.hello)
        self.assertNotIn(b"NOOP", data)

    def test_runs_as_postern_tls_chrooted(self):
        need_root(self, "tls-proxy drops to postern-tls")
        srv = ProxyServer(self.root)
        ctx, raw = self.client(srv.port)
        s = ctx.wrap_socket(raw)
        f = s.makefile("rwb", buffering=0)
        f.readline()
        pid = srv.proc.pid
        with open("/proc/%d/status" % pid) as st:
            uids = [l for l in st if l.startswith("Uid:")][0].split()[1:]
        tls_uid = pwd.getpwnam("postern-tls").pw_uid
        self.assertEqual(set(int(u) for u in uids), {tls_uid})
        self.assertEqual(os.readlink("/proc/%d/root" % pid), os.path.join(self.root, "empty"))
        s.sendall(b"QUIT\r\n")
        f.readline()
        s.close()
        srv.join()

    def test_idle_client_times_out(self):
        root = make_root(TLS_USER)
        try:
            shutil.copytree(os.path.join(self.root, "conf", "tls"), os.path.join(root, "conf", "tls"),
                            dirs_exist_ok=True)
            with open(os.path.join(root, "conf", "postern.conf"), "a") as f:
                f.write("session_timeout = 1\n")
            srv = ProxyServer(root)
            ctx, raw = self.client(srv.port)
            s = ctx.wrap_socket(raw)
            t0 = time.time()
            f = s.makefile("rb")
            f.readline()
            self.assertEqual(f.read(), b"")   # closed by the proxy after 1 s idle
            self.assertLess(time.time() - t0, 15)
            srv.join()
            self.assertIn(b"end=timeout", srv.stderr)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def test_bad_key_refuses_to_start(self):
        root = make_root(TLS_USER)
        try:
            with open(os.path.join(root, "conf", "tls", "cert.pem"), "w") as f:
                f.write("not a certificate\n")
            r = subprocess.run([PROXY, root], stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
            self.assertEqual(r.returncode, 100)
            self.assertIn(b"cert.pem", r.stderr)
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
