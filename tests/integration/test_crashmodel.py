"""test_crashmodel.py - the durability promises under a power-loss model.

kill -9 (test_faults, test_delivery) never loses the page cache, so it
cannot tell whether the fsyncs are in the right places.  This module does
it the ALICE way (Pillai et al., "All File Systems Are Not Created Equal",
OSDI 2014), with the real programs:

1. Record: the real programs run under `strace -f -yy` (queue-inject
   itself; sendmail, plain and -bs, as a local user, with the
   queue-inject it runs; queue-manager with local-deliverer and its
   mailbox workers, remote-deliverer (relaying to a loopback SMTP sink,
   whose side is not modelled), and the queue-inject they run for a
   report or an alias's expansion; postern-user add, which makes a home
   and Maildir; pop3-listener with its mailbox process, through a POP3
   session's UPDATE).
2. Replay: the recorded file and descriptor calls, in order, through a
   small file-system model that keeps two states: what the processes see,
   and what a power cut may leave on the disk.
3. At every prefix of the trace (every possible crash point) the promises
   below are asserted of every tree a power cut may leave.

The model's rules (pessimistic: nothing else is assumed; no ext4 ordering,
no journal, no "a new file's fsync also writes its directory"):
  - a file's data and size are sure to survive only as of its last fsync
    or fdatasync (before its first one: empty);
  - a name created (open O_CREAT, mkdir, link), renamed in, or removed
    (unlink, rmdir, renamed out) in a directory is sure to survive only
    once that directory is fsynced; a rename is two directory changes: the
    new name needs the target directory's fsync, the old name's removal
    the source's, and either may reach the disk without the other (a
    rename within one directory is one change of it: the old name or the
    new survives, never neither, as rename(2) promises the processes); an
    fsync of a directory makes its current names durable and nothing of
    the directories below it or above it;
  - what is not yet sure may or may not have reached the disk (the kernel
    writes dirty blocks back when it likes): each directory and each file
    is, independently of the others, in any one of the states it had since
    its last fsync.  So an unsynced rename may be kept while an earlier
    unsynced one is lost, and an unsynced name may point to a file whose
    data was never fsynced (a write is one step: no torn writes);
  - sync() and syncfs() make everything durable;
  - what existed before the recording started is durable (each recording
    starts after os.sync()).
Any other call on a path the model covers (symlink, fallocate,
sync_file_range, RENAME_EXCHANGE, a relative path it cannot place ...)
makes the test fail: the model must be extended, not silently bypassed.

The promises checked at every crash point (docs/QUEUE.md, DESIGN.md 2):
  - every injection acknowledged (queue-inject or sendmail exited 0
    before that point, or sendmail -bs wrote its 250) survives whole:
    mess/<h>/ID and env/<h>/ID under their final names,
    each with all it was written;
  - every delivery acknowledged (the mailbox worker sent its "2.0.0
    delivered to maildir as NAME" result) survives whole in Maildir/new;
  - nothing half-written is visible under a final name: every
    mess/<h>/ID, env/<h>/ID and Maildir/new file a power cut may leave has
    its full length (and its exact bytes where the trace shows them);
  - an envelope never survives without its whole message (a power cut that
    may leave env/<h>/ID surely leaves a whole mess/<h>/ID);
  - queue-manager's bookkeeping never loses a recipient: each recipient of
    each queued message is surely either delivered (a whole copy in its
    Maildir/new survives; for one on another host: remote-deliverer has
    sent its success, the next hop's 250) or still to do (a whole
    envelope that says pending or delayed for it survives, with its whole
    message).  It may
    be delivered twice (the qmail trade-off); the crash points where it
    may be are counted and printed, not failed;
  - nor a report or an alias's expansion: a recipient that failed for
    good, or is due a delay report (NOTIFY=DELAY), or is an alias of
    several targets, is surely either still to do (a whole envelope that
    says failed, or delayed, or pending, so that queue-manager makes the
    report or local-deliverer the expansion again), or handed on: the
    message made for it (the RFC 3464 report queue-manager queued through
    queue-inject; the new message to the alias's targets local-deliverer
    queued) surely survives whole and each of its recipients keeps the
    promise above (a failure report that fails in its turn: its double
    bounce to postmaster; a double bounce that fails owes nothing more).
    A report or an expansion may be made twice; the crash points where it
    may be are counted and printed, not failed;
  - a recipient that owes two things has surely done both or is surely
    still to do: NOTIFY=SUCCESS, its delivery (or relay, or expansion)
    and its success report (still due in a whole envelope saying
    delivered, relayed or expanded, or queued whole); an alias that keeps
    a copy ("ivan: ivan, ivan@elsewhere.example"), the copy and the
    forward.  So a power cut never leaves a recipient done whose report
    or forward is lost;
  - at the end of a recording, every message the processes no longer see
    surely stays gone: its removal was made durable (a finished delivery,
    local or remote, is recorded for good);
  - nor a POP3 UPDATE (Pop3UpdateCrashTest): a message the session did
    not delete surely survives whole in new/ or cur/, and once "+OK" to
    QUIT was written every deletion and move is durable.

CrashModelSelfTest feeds the model hand-written traces of broken commit
protocols and checks that it reports each of them, so a model that
accepted everything would fail here too."""

import copy
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import unittest

import harness
from harness import Instance, need, need_root
from remote_helpers import SmtpSink

STRACE = shutil.which('strace')
PROGRAMS = ('postern-setup', 'postern-user', 'queue-inject', 'queue-manager', 'local-deliverer')
# every call that can change a file, a directory or their durability,
# plus sendmsg (the mailbox worker's result) and exit_group
TRACED = ('open,openat,creat,write,pwrite64,writev,pwritev,pwritev2,copy_file_range,sendfile,'
          'splice,ftruncate,truncate,fallocate,fsync,fdatasync,sync,syncfs,sync_file_range,'
          'rename,renameat,renameat2,link,linkat,symlink,symlinkat,unlink,unlinkat,mkdir,mkdirat,'
          'rmdir,mknod,mknodat,sendmsg,exit_group')
# A sanitizer build's LeakSanitizer cannot work under ptrace: at exit it
# fails ("does not work under ptrace") and the program exits 1, so what
# strace runs gets detect_leaks=0 (nothing else changes in other builds)
STRACE_ARGS = ['-f', '-yy', '-tt', '-s', '4096', '-e', 'trace=' + TRACED,
               '-E', 'ASAN_OPTIONS=' + ':'.join(filter(None, [os.environ.get('ASAN_OPTIONS', ''),
                                                              'detect_leaks=0']))]
SUMMARY = []


def strace_works():
    if not STRACE:
        return False
    r = subprocess.run([STRACE, '-o', '/dev/null'] + STRACE_ARGS + ['true'], capture_output=True)
    return r.returncode == 0


class ModelError(AssertionError):
    """The trace holds something the model does not understand."""


# ---- reading strace output ------------------------------------------------

LINE = re.compile(r'^(\d+)\s+\d\d:\d\d:\d\d\.\d+\s+(.*)$')
CALL = re.compile(r'^([a-z0-9_]+)\((.*)\)\s+=\s+(-?\d+|\?)(?:<([^<>]*)(?:<[^<>]*>)?>)?(?:\s+(E[A-Z0-9]+).*)?$')


def split_args(s):
    """Top-level comma-separated arguments of an strace call."""
    out, cur, depth, i, n = [], [], 0, 0, len(s)
    while i < n:
        c = s[i]
        if c == '"':
            j = i + 1
            while j < n and s[j] != '"':
                j += 2 if s[j] == '\\' else 1
            cur.append(s[i:j + 1])
            i = j + 1
            continue
        if c == '-' and i + 1 < n and s[i + 1] == '>':
            cur.append('->')
            i += 2
            continue
        if c in '([{<':
            depth += 1
        elif c in ')]}>':
            depth -= 1
        elif c == ',' and depth == 0:
            out.append(''.join(cur).strip())
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    if cur:
        out.append(''.join(cur).strip())
    return out


ESC = {'n': b'\n', 't': b'\t', 'r': b'\r', 'v': b'\v', 'f': b'\f', '\\': b'\\', '"': b'"', "'": b"'"}


def c_string(arg):
    """(bytes, complete) of an strace string argument "..." (complete is
    False when strace cut it short: a trailing ...)."""
    m = re.match(r'^"((?:[^"\\]|\\.)*)"(\.\.\.)?$', arg, re.S)
    if not m:
        return None, False
    s, out, i = m.group(1), bytearray(), 0
    while i < len(s):
        c = s[i]
        if c != '\\':
            out += c.encode('latin-1')
            i += 1
            continue
        e = s[i + 1]
        if e == 'x':
            out.append(int(s[i + 2:i + 4], 16))
            i += 4
        elif e in '01234567':
            j = i + 1
            while j < len(s) and j < i + 4 and s[j] in '01234567':
                j += 1
            out.append(int(s[i + 1:j], 8))
            i = j
        else:
            out += ESC[e]
            i += 2
    return bytes(out), m.group(2) is None


def fd_path(arg):
    """The path strace -yy printed for a descriptor argument, or None."""
    m = re.match(r'^(?:-?\d+|AT_FDCWD)<(.*)>$', arg, re.S)
    if not m:
        return None
    p = m.group(1)
    return None if '<' in p or not p.startswith('/') else p


def parse_trace(text):
    """[(pid, name, args, ret, retpath)] of completed calls, in the order they
    completed, and ('+++exit', pid, status) for process exits."""
    events, pending = [], {}
    for raw in text.splitlines():
        m = LINE.match(raw)
        if not m:
            continue
        pid, rest = int(m.group(1)), m.group(2)
        if rest.startswith('+++ exited with '):
            events.append((pid, '+++exit', int(rest.split()[3]), None, None))
            continue
        if rest.startswith(('+++', '---')):
            continue
        if rest.endswith('<unfinished ...>'):
            pending[pid] = rest[:-len('<unfinished ...>')].rstrip()
            continue
        if rest.startswith('<... '):
            head = pending.pop(pid, None)
            if head is None:
                raise ModelError('resumed call without its start: %s' % raw)
            rest = head + rest.split('resumed>', 1)[1]
        cm = CALL.match(rest)
        if not cm:
            if rest.startswith('exit_group('):
                continue
            raise ModelError('cannot read trace line: %s' % raw)
        name, args, ret, retpath = cm.group(1), cm.group(2), cm.group(3), cm.group(4)
        events.append((pid, name, split_args(args), None if ret == '?' else int(ret), retpath))
    return events


# ---- the file-system model -------------------------------------------------

class Node:
    """A file or a directory.  `hist` is what may be on the disk: every
    state it had since its last fsync, the first of them the fsynced one
    (the only one sure to be there).  A directory's state is its
    {name: Node}, a file's (size, bytes or None when unknown)."""

    def __init__(self, serial, is_dir, data=b'', size=None):
        self.serial = serial            # the same in every replay of one trace
        self.is_dir = is_dir
        self.entries = {}
        self.data = data
        self.size = len(data) if size is None else size
        self.hist = [self.state()]      # before its first fsync: as made (empty)

    def state(self):
        return dict(self.entries) if self.is_dir else (self.size, self.data)

    def changed(self):
        self.hist.append(self.state())

    def fsync(self):
        self.hist = [self.state()]


class FsModel:
    """A directory tree under `root` (only the top-level names in `scope`
    are modelled): what the processes see (Node.entries, .size, .data) and
    what a power cut may leave (Node.hist)."""

    def __init__(self, root, scope):
        self.root = os.path.normpath(root)
        self.scope = tuple(scope)
        self.nodes = {}                 # serial -> every node ever made
        self.top = self.node(True)
        self.inodes = {}
        for name in self.scope:
            p = os.path.join(self.root, name)
            if os.path.isdir(p):
                self.top.entries[name] = self._load(p)
        self.sync_all()

    def node(self, is_dir, data=b'', size=None):
        n = Node(len(self.nodes) + 1, is_dir, data, size)
        self.nodes[n.serial] = n
        return n

    def _load(self, path):
        st = os.lstat(path)
        key = (st.st_dev, st.st_ino)
        if key in self.inodes:
            return self.inodes[key]
        if stat.S_ISDIR(st.st_mode):
            n = self.node(True)
            for name in os.listdir(path):
                n.entries[name] = self._load(os.path.join(path, name))
        elif not stat.S_ISREG(st.st_mode):
            n = self.node(False)        # the trigger FIFO
        elif st.st_size <= 1 << 20:
            with open(path, 'rb') as f:
                n = self.node(False, f.read())
        else:
            n = self.node(False, None, st.st_size)
        self.inodes[key] = n
        return n

    def sync_all(self):
        for n in self.nodes.values():
            n.fsync()

    # paths
    def rel(self, path):
        """The components of an absolute path under root and in scope, or None."""
        if path is None:
            return None
        p = os.path.normpath(path)
        if p.endswith(' (deleted)'):
            return None
        if not p.startswith(self.root + '/'):
            return None
        parts = p[len(self.root) + 1:].split('/')
        return parts if parts[0] in self.scope else None

    def lookup(self, parts):
        """The node the processes see at parts, or None."""
        n = self.top
        for c in parts:
            if n is None or not n.is_dir:
                return None
            n = n.entries.get(c)
        return n

    def possible(self, parts):
        """Every node a power cut may leave at parts."""
        cur = {self.top}
        for c in parts:
            cur = {st[c] for n in cur if n.is_dir for st in n.hist if c in st}
        return cur

    def certain(self, parts):
        """The nodes a power cut may leave at parts if it surely leaves one
        there (the name is in every state the directories on the way may
        be in), else an empty set."""
        cur, always = {self.top}, True
        for c in parts:
            nxt = set()
            for n in cur:
                for st in (n.hist if n.is_dir else [{}]):
                    if c in st:
                        nxt.add(st[c])
                    else:
                        always = False
            cur = nxt
        return cur if always else set()

    def names(self, parts):
        """Every name a power cut may leave in the directory at parts."""
        return sorted({name for d in self.possible(parts) if d.is_dir for st in d.hist for name in st})

    def parent(self, parts):
        d = self.lookup(parts[:-1])
        if d is None or not d.is_dir:
            raise ModelError('no directory %s in the model' % '/'.join(parts[:-1]))
        return d, parts[-1]

    # operations
    def create(self, parts, is_dir):
        d, name = self.parent(parts)
        if name in d.entries:
            raise ModelError('%s exists already' % '/'.join(parts))
        d.entries[name] = self.node(is_dir)
        d.changed()
        return d.entries[name]

    def remove(self, parts):
        d, name = self.parent(parts)
        if name not in d.entries:
            raise ModelError('unlink of %s, not in the model' % '/'.join(parts))
        del d.entries[name]
        d.changed()

    def rename(self, src, dst):
        sd, sn = self.parent(src)
        dd, dn = self.parent(dst)
        if sn not in sd.entries:
            raise ModelError('rename of %s, not in the model' % '/'.join(src))
        node = sd.entries.pop(sn)
        if sd is not dd:
            sd.changed()
        dd.entries[dn] = node
        dd.changed()

    def link(self, src, dst):
        sd, sn = self.parent(src)
        dd, dn = self.parent(dst)
        if dn in dd.entries or sn not in sd.entries:
            raise ModelError('link %s -> %s: not as the model has it' % ('/'.join(src), '/'.join(dst)))
        dd.entries[dn] = sd.entries[sn]
        dd.changed()

    def write(self, node, data, count, offset=None):
        end = node.size + count if offset is None else max(node.size, offset + count)
        if node.data is not None and data is not None and (offset is None or offset == node.size):
            node.data = node.data + data
        else:
            node.data = None
        node.size = end
        node.changed()

    def truncate(self, node, size):
        node.data = None if node.data is None or size > node.size else node.data[:size]
        node.size = size
        node.changed()


def resolve(dirarg, patharg):
    """An absolute path from a (dirfd, "path") pair, or None if unknown."""
    p, _ = c_string(patharg)
    if p is None:
        return None
    p = p.decode('latin-1')
    if p.startswith('/'):
        return p
    d = fd_path(dirarg) if dirarg is not None else None
    if d is None:
        raise ModelError('a relative path without its directory: %s, %s' % (dirarg, patharg))
    return os.path.join(d, p)


def replay(model, events, on_event):
    """Apply events to model; after each, call on_event(index, event)."""
    on_event(-1, None)
    for i, ev in enumerate(events):
        apply_event(model, ev)
        on_event(i, ev)


def apply_event(model, ev):
    pid, name, args, ret, retpath = ev
    if name == '+++exit' or ret is None or ret < 0:
        return
    if name in ('open', 'openat', 'creat'):
        path = resolve(None, args[0]) if name != 'openat' else resolve(args[0], args[1])
        flags = 'O_CREAT|O_TRUNC' if name == 'creat' else (args[1] if name == 'open' else args[2])
        parts = model.rel(retpath) or model.rel(path)
        if parts is None:
            return
        node = model.lookup(parts)
        if node is None:
            if 'O_CREAT' not in flags:
                raise ModelError('open of %s, not in the model' % '/'.join(parts))
            node = model.create(parts, False)
        if 'O_TRUNC' in flags and not node.is_dir:
            model.truncate(node, 0)
        return
    if name in ('write', 'pwrite64', 'writev', 'pwritev', 'pwritev2', 'ftruncate', 'fallocate',
                'fsync', 'fdatasync', 'sync_file_range', 'syncfs'):
        parts = model.rel(fd_path(args[0]))
        if parts is None:
            if name == 'syncfs' and fd_path(args[0]) and fd_path(args[0]).startswith(model.root):
                model.sync_all()
            return
        node = model.lookup(parts)
        if node is None:
            raise ModelError('%s on %s, not in the model' % (name, '/'.join(parts)))
        if name in ('fsync', 'fdatasync'):
            node.fsync()
        elif name == 'syncfs':
            model.sync_all()
        elif name == 'write':
            data, whole = c_string(args[1])
            model.write(node, data if whole and len(data) == ret else None, ret)
        elif name == 'pwrite64':
            data, whole = c_string(args[1])
            model.write(node, data if whole and len(data) == ret else None, ret, int(args[3]))
        elif name == 'writev':
            model.write(node, None, ret)
        elif name == 'ftruncate':
            model.truncate(node, int(args[1]))
        else:
            raise ModelError('%s on %s: not modelled' % (name, '/'.join(parts)))
        return
    if name == 'copy_file_range':
        parts = model.rel(fd_path(args[2]))
        if parts is not None:
            model.write(model.lookup(parts), None, ret)
        return
    if name in ('sendfile', 'splice'):
        parts = model.rel(fd_path(args[0] if name == 'sendfile' else args[2]))
        if parts is not None:
            model.write(model.lookup(parts), None, ret)
        return
    if name == 'sync':
        model.sync_all()
        return
    if name in ('rename', 'renameat', 'renameat2', 'link', 'linkat'):
        if name in ('rename', 'link'):
            src, dst = resolve(None, args[0]), resolve(None, args[1])
        else:
            src, dst = resolve(args[0], args[1]), resolve(args[2], args[3])
        if name == 'renameat2' and 'RENAME_EXCHANGE' in args[4]:
            raise ModelError('RENAME_EXCHANGE is not modelled')
        if name == 'linkat' and 'AT_EMPTY_PATH' in args[4]:
            raise ModelError('linkat AT_EMPTY_PATH is not modelled')
        s, d = model.rel(src), model.rel(dst)
        if s is None and d is None:
            return
        if s is None or d is None:
            raise ModelError('%s across the model\'s edge: %s -> %s' % (name, src, dst))
        (model.link if name.startswith('link') else model.rename)(s, d)
        return
    if name in ('unlink', 'unlinkat', 'rmdir'):
        path = resolve(None, args[0]) if name != 'unlinkat' else resolve(args[0], args[1])
        parts = model.rel(path)
        if parts is not None:
            model.remove(parts)
        return
    if name in ('mkdir', 'mkdirat'):
        path = resolve(None, args[0]) if name == 'mkdir' else resolve(args[0], args[1])
        parts = model.rel(path)
        if parts is not None:
            model.create(parts, True)
        return
    if name in ('truncate', 'symlink', 'symlinkat', 'mknod', 'mknodat'):
        paths = [resolve(None, a) for a in args if a.startswith('"')]
        paths += [resolve(args[i], args[i + 1]) for i in range(len(args) - 1) if fd_path(args[i])]
        if any(model.rel(p) for p in paths):
            raise ModelError('%s in the model\'s tree: not modelled' % name)
        return
    # sendmsg, exit_group: markers only


# ---- what must hold at each crash point ------------------------------------

def crash_points(snapshot, events, check):
    """Replay events on copies of snapshot: once to learn what each file
    ends with, then again calling check(model, whole, i, ev) after every
    event (i = -1: before the first).  Returns the number of crash points
    checked."""
    m = copy.deepcopy(snapshot)
    replay(m, events, lambda i, ev: None)
    final = {s: (n.size, n.data) for s, n in m.nodes.items()}
    m = copy.deepcopy(snapshot)

    def whole(node):
        """a file that, whatever a power cut leaves of it, holds all it was
        ever written (its exact bytes where the trace shows them)"""
        if node is None or node.is_dir:
            return False
        size, data = final[node.serial]
        return all(sz == size and (data is None or d is None or d == data) for sz, d in node.hist)

    count = [0]

    def step(i, ev):
        count[0] += 1
        check(m, whole, i, ev)
    replay(m, events, step)
    return count[0]


def show(ev):
    if ev is None:
        return 'before the first call'
    pid, name, args, ret, _ = ev
    if name == '+++exit':
        return '%d exited with %d' % (pid, args)
    return '%d %s(%s) = %s' % (pid, name, ', '.join(a if len(a) < 120 else a[:117] + '...' for a in args), ret)


def surely_whole(m, whole, parts):
    """A power cut surely leaves a file at parts, and it is whole."""
    nodes = m.certain(parts)
    return bool(nodes) and all(whole(n) for n in nodes)


def shortest(nodes):
    return min(sz for n in nodes for sz, _ in n.hist)


def acked_problems(m, whole, acked):
    """An acknowledged injection whose message or envelope a power cut may
    lose or cut."""
    problems = []
    for qid in sorted(acked):
        for kind in ('mess', 'env'):
            if not surely_whole(m, whole, ['queue', kind, qid[-1], qid]):
                problems.append('acknowledged %s may be lost or cut: %s/%s/%s' % (qid, kind, qid[-1], qid))
    return problems


def queue_problems(m, whole):
    """What a power cut may leave in the queue that it must not:
    half-written files under final names, an envelope without its whole
    message."""
    bad = []
    for kind in ('mess', 'env'):
        for h in m.names(['queue', kind]):
            for qid in m.names(['queue', kind, h]):
                nodes = m.possible(['queue', kind, h, qid])
                if not all(whole(n) for n in nodes):
                    bad.append('%s/%s/%s may survive half-written (%d bytes)' % (kind, h, qid, shortest(nodes)))
                if kind == 'env' and not surely_whole(m, whole, ['queue', 'mess', h, qid]):
                    bad.append('env/%s/%s may survive without its whole message' % (h, qid))
    return bad


def maildir_problems(m, whole):
    """Half-written files a power cut may leave in any ROOT/mail/USER/Maildir/new."""
    bad = []
    for user in m.names(['mail']):
        for name in m.names(['mail', user, 'Maildir', 'new']):
            nodes = m.possible(['mail', user, 'Maildir', 'new', name])
            if not all(whole(n) for n in nodes if not n.is_dir):
                bad.append('mail/%s/Maildir/new/%s may survive half-written (%d bytes)'
                           % (user, name, shortest(nodes)))
    return bad


def copies_of(m, whole, user, rcpt, certain, needle=b''):
    """The whole copies for rcpt in user's Maildir/new (holding needle)
    that a power cut surely leaves (certain) or may leave."""
    out = []
    tag = b'Delivered-To: %s\n' % rcpt.encode()
    for name in m.names(['mail', user, 'Maildir', 'new']):
        path = ['mail', user, 'Maildir', 'new', name]
        nodes = m.certain(path) if certain else m.possible(path)
        if nodes and all(whole(n) and all(d is not None and tag in d and needle in d for _, d in n.hist)
                         for n in nodes):
            out.append(name)
    return out


def rcpt_fields(data):
    """{address: [rcpt, state, attempts, next_try, notify, orcpt, addr,
    last_error]} of an envelope's text (docs/QUEUE.md)."""
    out = {}
    for line in data.decode('utf-8', 'replace').split('\n'):
        if line.startswith('rcpt\t'):
            f = line.split('\t')
            out[f[6]] = f
    return out


def rcpt_states(data):
    """{address: state} of an envelope's text."""
    return {a: f[1] for a, f in rcpt_fields(data).items()}


def to_do(fields):
    """The default of still_to_do: queue-manager still has work for the
    recipient: deliver it (pending), or queue the report due (delayed: a
    delay report; failed: a failure report)."""
    return fields[1] in ('pending', 'delayed', 'failed')


def still_to_do(m, whole, qid, rcpt, certain, due=to_do):
    """A power cut surely (certain) or maybe leaves a whole envelope that
    says rcpt is still to do (due(its fields)), with its whole message."""
    env = ['queue', 'env', qid[-1], qid]
    if not surely_whole(m, whole, ['queue', 'mess', qid[-1], qid]):
        return False
    nodes = m.certain(env) if certain else m.possible(env)
    says = []
    for n in nodes:
        if not whole(n):
            says.append(False)
            continue
        for _, d in n.hist:
            if d is None:
                raise ModelError('the text of envelope %s is not in the trace' % qid)
            f = rcpt_fields(d).get(rcpt)
            says.append(f is not None and due(f))
    return bool(says) and (all(says) if certain else any(says))


# ---- recording -------------------------------------------------------------

def inject_traced(inst, trace, sender, rcpts, message, received=None):
    """ROOT/bin/queue-inject under strace; returns the queue id."""
    return harness.queue_inject(inst, sender, rcpts, message, received=received,
                                prefix=[STRACE, '-o', trace] + STRACE_ARGS)


class CrashModelTest(harness.InstanceTest):
    @classmethod
    def require(cls):
        need(cls, *PROGRAMS)
        need_root(cls, 'the deliveries run as the mailbox users, under strace as root')
        if not strace_works():
            raise unittest.SkipTest('strace cannot trace here')

    @classmethod
    def new_instance(cls):
        inst = Instance.by_hand(('alice', 'bob', 'carol', 'dave', 'frank', 'grace', 'heidi', 'ivan', 'judy'))
        with open(inst.path('conf', 'aliases'), 'a') as f:
            f.write('team: grace, heidi\n'
                    'ivan: ivan, ivan@elsewhere.example\n'     # keeps a copy and forwards one
                    'judy: judy@elsewhere.example\n')          # forwards all her mail
        with open(inst.path('conf', 'mailboxes'), 'a') as f:     # a mailbox that defers (test_delivery)
            f.write('stuck:20999:20999:/nonexistent/postern-test/Maildir\n')
        return inst

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        if SUMMARY:
            print('\n' + '\n'.join('[crashmodel] ' + line for line in SUMMARY))
        del SUMMARY[:]

    def fail_at(self, problems, i, ev, events):
        if problems:
            lo = max(0, i - 8)
            ctx = '\n'.join('   %s' % show(e) for e in events[lo:i + 1])
            self.fail('power loss after call %d (%s) would leave:\n  %s\nthe calls up to it:\n%s'
                      % (i + 1, show(ev), '\n  '.join(problems), ctx))

    def test_queue_inject_power_loss(self):
        """Three injections, each recorded: a short message; one with a
        Received: field (several writes into the message file) and three
        recipients; one of 1.5 MB (spilled to tmp/<h>/ID.s while read, then
        copied into the message file).  At every crash point of the
        concatenated traces each acknowledged message survives whole."""
        inst = self.inst
        os.sync()
        model_root = inst.root
        ids = []
        big = b'Subject: big\n\n' + b''.join(b'line %06d of a long message\n' % i for i in range(52000))
        runs = [
            ('bob@example.test', ['alice@example.test'], b'Subject: short\n\nhello\n', None),
            ('bob@example.test', ['alice@example.test', 'bob@example.test', 'carol@example.test'],
             b'Subject: three\n\n' + b'x' * 5000 + b'\n',
             b'from client.example (client.example [192.0.2.1])\n\tby mx.example.test; Thu, 1 Jan 2026 00:00:00 +0000'),
            ('bob@example.test', ['carol@example.test'], big, None),
        ]
        self.assertGreater(len(big), 1 << 20)
        before = FsModel(model_root, ('queue',))      # the starting tree, taken before the runs
        events = []
        for n, (sender, rcpts, msg, rcv) in enumerate(runs):
            t = inst.path('inject-%d.trace' % n)
            qid = inject_traced(inst, t, sender, rcpts, msg, rcv)
            with open(t, errors='replace') as f:
                evs = parse_trace(f.read())
            top = evs[0][0]
            events += evs
            ids.append((qid, top))
        for qid, _ in ids:      # the next test starts from an empty queue
            for d in ('todo', 'env/' + qid[-1], 'mess/' + qid[-1]):
                os.unlink(inst.path('queue', d, qid))
        acked = set()
        exits = {top: qid for qid, top in ids}
        seen = {'spill': 0, 'copy': 0, 'writes': 0}

        def check(m, whole, i, ev):
            if ev and ev[1] == '+++exit' and ev[0] in exits and ev[2] == 0:
                acked.add(exits[ev[0]])
            if ev and ev[1] == 'openat' and '.s"' in ev[2][1]:
                seen['spill'] += 1
            if ev and ev[1] == 'copy_file_range':
                seen['copy'] += 1
            if ev and ev[1] == 'write' and '.m>' in ev[2][0]:
                seen['writes'] += 1
            problems = queue_problems(m, whole)
            problems += acked_problems(m, whole, acked)
            self.fail_at(problems, i, ev, events)

        points = crash_points(before, events, check)
        self.assertEqual(acked, {qid for qid, _ in ids}, 'every run was acknowledged')
        self.assertEqual(seen['spill'], 1, 'the big message was spilled')
        self.assertGreaterEqual(seen['copy'], 1, 'the spill was copied into the message file')
        self.assertGreaterEqual(seen['writes'], 3, 'the Received: field, its LF, the message')
        SUMMARY.append('queue-inject: injections %d, calls %d, crash points checked %d' % (len(ids), len(events), points))

    def test_sendmail_power_loss(self):
        """ROOT/bin/sendmail as a local user (nobody) under strace -f, with
        the queue-inject it runs: once the plain way (-f, recipients as
        arguments, the message on stdin: acknowledged by its exit 0), once
        as sendmail -bs (an SMTP dialogue on stdin: acknowledged by its
        "250 2.0.0 Ok: queued as ID" reply, written only after
        queue-inject's exit 0).  At every crash point of the concatenated
        traces each acknowledged message survives whole; whatever sendmail
        writes itself goes through the model too."""
        inst = self.inst
        need(self, 'sendmail')
        os.sync()
        before = FsModel(inst.root, ('queue',))
        old = set(inst.queue_ids())
        events, acked_at, seen = [], {}, {'plain': None, 'bs': []}
        # the plain way
        t = inst.path('sendmail.trace')
        r = subprocess.run([STRACE, '-o', t, '-u', 'nobody'] + STRACE_ARGS
                           + [inst.bin('sendmail'), '-f', 'frank@example.test', 'alice@example.test',
                              'bob@example.test'],
                           input=b'Subject: crashmodel sendmail\n\n' + b'a line\n' * 300, capture_output=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(t, errors='replace') as f:
            evs = parse_trace(f.read())
        new = sorted(set(inst.queue_ids()) - old)
        self.assertEqual(len(new), 1, 'sendmail queued one message')
        top = evs[0][0]
        acked_at[len(events) + [n for n, e in enumerate(evs) if e[:3] == (top, '+++exit', 0)][0]] = new[0]
        seen['plain'] = new[0]
        events += evs
        old |= set(new)
        # sendmail -bs, two messages in one dialogue
        dialogue = b''.join(b'MAIL FROM:<frank@example.test>\r\nRCPT TO:<carol@example.test>\r\nDATA\r\n'
                            b'Subject: crashmodel bs %d\r\n\r\nhello\r\n.\r\n' % n for n in (1, 2))
        t = inst.path('sendmail-bs.trace')
        r = subprocess.run([STRACE, '-o', t, '-u', 'nobody'] + STRACE_ARGS + [inst.bin('sendmail'), '-bs'],
                           input=b'HELO me\r\n' + dialogue + b'QUIT\r\n', capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        replies = re.findall(rb'250 2\.0\.0 Ok: queued as ([0-9A-F]{16})', r.stdout)
        self.assertEqual(len(replies), 2, r.stdout)
        with open(t, errors='replace') as f:
            evs = parse_trace(f.read())
        for n, e in enumerate(evs):
            mm = e[1] in ('write', 'sendto', 'sendmsg') and re.search(r'250 2\.0\.0 Ok: queued as ([0-9A-F]{16})',
                                                                       ' '.join(e[2]))
            if mm and mm.group(1) not in seen['bs']:       # the session's reply; the relay copies it to stdout later
                acked_at[len(events) + n] = mm.group(1)
                seen['bs'].append(mm.group(1))
        self.assertEqual(seen['bs'], [q.decode() for q in replies], 'each reply found in the trace')
        events += evs
        new = sorted(set(inst.queue_ids()) - old)
        self.assertEqual(sorted(new), sorted(seen['bs']))
        for qid in [seen['plain']] + seen['bs']:       # the next test starts from an empty queue
            for d in ('todo', 'env/' + qid[-1], 'mess/' + qid[-1]):
                os.unlink(inst.path('queue', d, qid))
        acked = set()

        def check(m, whole, i, ev):
            if i in acked_at:
                acked.add(acked_at[i])
            problems = queue_problems(m, whole)
            problems += acked_problems(m, whole, acked)
            self.fail_at(problems, i, ev, events)

        points = crash_points(before, events, check)
        self.assertEqual(len(acked), 3, 'every message was acknowledged')
        SUMMARY.append('sendmail: messages 3 (1 plain, 2 by -bs), calls %d, crash points checked %d'
                       % (len(events), points))

    def record_deliveries(self, label, batches, prelude=None, sender='x@example.test', notify='', edit=None,
                          settled=None, reports=None, due=None, deliveries=None, removals=None, mailbox=None,
                          needs=None, dropped=()):
        """Queue one message per batch ([user or address, ...], subject, and
        optionally its own NOTIFY) from sender, with NOTIFY notify, and
        edit(qid) each if given; then, from a tree on disk (os.sync):
        prelude() if given (it returns the events of its own recording),
        and queue-manager, local-deliverer and its mailbox workers (and
        remote-deliverer, if ROOT/bin has it) recorded together (strace -f;
        the queue-inject they run to queue a report or an alias's expansion
        too) until settled() (by default: until the queue is empty).
        Checks every crash point; returns what the trace showed, and leaves
        the results the deliverers sent in self.results ({(queue id,
        recipient): 's', 't' or 'p'}).

        A recipient's promise: at every crash point it is surely
        delivered (a whole copy of its message in its Maildir/new, the
        Maildir of mailbox[address] or of its local part; for an address
        outside the local domains: remote-deliverer has sent its success,
        the next hop's 250 to the end of the data, as what the other side
        keeps is not postern's promise), or surely still to do (a whole
        envelope, with its whole message, whose line for it satisfies
        due[address], to_do by default: pending, delayed, failed), or
        surely handed on: each message made for it (its report, of the kind
        reports[address] names; its alias's expansion) survives whole and
        each of that one's recipients keeps the same promise.  A recipient
        that owes more than one thing, needs[address] naming them ('copy':
        delivered as above; 'expansion': its alias's new message handed on;
        'report': its success report surely still due, due[address], or
        handed on), is surely still to do (to_do), or has surely done each:
        a copy kept and a forward made (an alias that keeps a copy), a
        delivery and its success report (NOTIFY=SUCCESS).  One in dropped
        (a double bounce's postmaster) owes nothing more once its deliverer
        has answered with a permanent failure.  At the last crash point
        each message the processes no longer see (finished and removed)
        must surely be gone: its removal was made durable."""
        inst = self.inst
        msgs, needle = {}, {}
        reports, due, mailbox = reports or {}, due or {}, mailbox or {}
        needs = needs or {}
        for users, subject, *its_notify in batches:
            body = b'Subject: crashmodel %s\n\n' % subject + b'body line\n' * 40
            rcpts = [u if '@' in u else '%s@example.test' % u for u in users]
            qid = harness.queue_inject(inst, sender, rcpts, body, notify=its_notify[0] if its_notify else notify)
            msgs[qid] = rcpts
            needle[qid] = b'Subject: crashmodel %s\n' % subject     # in its copies and its reports
            if edit:
                edit(qid)
        os.sync()
        before = FsModel(inst.root, ('queue', 'mail'))
        events = prelude() if prelude else []
        trace = inst.path('qm.trace')
        with open(inst.path('qm.log'), 'wb') as log:
            p = subprocess.Popen([STRACE, '-o', trace] + STRACE_ARGS + [inst.bin('queue-manager'), inst.root],
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            try:
                def done():
                    return not inst.queue_ids() and not [n for h in '0123456789ABCDEF'
                                                         for n in os.listdir(inst.path('queue', 'mess', h))]
                inst.wait_for(settled or done, 30, what='the queue delivered and emptied')
            finally:
                kids = harness.children(p.pid)
                if kids:
                    os.kill(kids[0], signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        with open(trace, errors='replace') as f:
            events += parse_trace(f.read())
        with open(inst.path('qm.log'), errors='replace') as f:
            qmlog = f.read()
        # the messages made on the way (queue-inject run by queue-manager or
        # local-deliverer), each with the envelope it wrote into tmp/<h>/ID.e
        envs = {}
        for ev in events:
            if ev[1] == 'write':
                mm = re.search(r'/queue/tmp/[0-9A-F]/([0-9A-F]{16})\.e$', fd_path(ev[2][0]) or '')
                data, complete = c_string(ev[2][1])
                if mm and mm.group(1) not in envs:
                    self.assertTrue(complete, 'the envelope of %s is in the trace' % mm.group(1))
                    envs[mm.group(1)] = rcpt_fields(data)
        # which recipient each is for: succ[(id, address)] = [the ids made
        # for it]; a report by queue-manager's log line, an alias's
        # expansion by its recipients' ORCPT (local-deliverer gives them the
        # alias address)
        succ, made_for = {}, {}
        rcpts_of = {new: sorted(fields) for new, fields in envs.items()}
        for mm in re.finditer(r'([0-9A-F]{16}) dsn=(\w+) to=\S+ queued=([0-9A-F]{16})', qmlog):
            qid, kind, new = mm.groups()
            if qid in needle:       # a report of a queued message, or of one made on the way (a double bounce)
                for r in [r for r in msgs.get(qid, rcpts_of.get(qid, ())) if reports.get(r) == kind]:
                    succ.setdefault((qid, r), []).append(new)
                needle[new] = needle[qid]
                made_for[new] = (qid, kind)
        for new, fields in sorted(envs.items()):
            for qid, rcpts in sorted(msgs.items()):
                for r in rcpts:
                    if new not in made_for and all(f[5] == 'rfc822;' + r for f in fields.values()):
                        succ.setdefault((qid, r), []).append(new)
                        needle[new] = needle[qid]
                        made_for[new] = (qid, 'expansion')
        self.assertEqual(sorted(envs), sorted(made_for), 'each message made on the way is placed')
        # the jobs queue-manager sent (job id -> (queue id, recipient)), to
        # read the results the deliverers sent back
        jobs = {}
        for ev in events:
            if ev[1] == 'sendmsg':
                mm = re.search(r'"J(\d+)\\0M([0-9A-F]{16})\\0F[^"]*?\\0R([^"\\]+)\\0', ' '.join(ev[2]))
                if mm:
                    jobs[mm.group(1)] = (mm.group(2), mm.group(3))
        local = set(inst.domains) | {inst.hostname}

        def is_remote(r):
            return r.rsplit('@', 1)[-1] not in local
        results = {}        # (queue id, recipient) -> the last result sent for it: s, t or p
        gone_at_end = [q for q in list(msgs) + list(made_for)
                       if not os.path.exists(inst.path('queue', 'env', q[-1], q))]
        placed = {}         # Maildir/new names -> their path, from the links into new/
        acked = {}          # the ones a worker reported delivered
        twice = set()       # (crash point, recipient) that may be delivered again
        again = set()       # (crash point, recipient) whose report or expansion may be made again
        made = set()        # directories made
        seen = {'rewrite': 0, 'removal': 0}

        def check(m, whole, i, ev):
            if ev and ev[1] in ('link', 'linkat', 'rename', 'renameat', 'renameat2'):
                dst = m.rel(resolve(*ev[2][2:4]) if ev[1].endswith('at') or ev[1] == 'renameat2'
                            else resolve(None, ev[2][1]))
                if dst and len(dst) == 5 and dst[0] == 'mail' and dst[2:4] == ['Maildir', 'new']:
                    placed[dst[4]] = dst
            if ev and ev[1] in ('mkdir', 'mkdirat'):
                made.add(tuple(m.rel(resolve(None, ev[2][0]) if ev[1] == 'mkdir' else resolve(*ev[2][:2])) or ()))
            if ev and ev[1] == 'sendmsg':
                mm = re.search(r'2\.0\.0 delivered to maildir as ([^"\\ ]+)', ' '.join(ev[2]))
                if mm:
                    acked[mm.group(1)] = placed[mm.group(1)]
                mm = re.search(r'"J(\d+)\\0S([stp])\\0X', ' '.join(ev[2]))
                if mm and mm.group(1) in jobs:
                    results[jobs[mm.group(1)]] = mm.group(2)
            if ev and ev[1] == 'rename' and '/queue/env/' in ev[2][1]:
                seen['rewrite'] += 1
            if ev and ev[1] == 'unlink' and '/queue/env/' in ev[2][0]:
                seen['removal'] += 1
            problems = queue_problems(m, whole) + maildir_problems(m, whole)
            for name, path in sorted(acked.items()):
                if not surely_whole(m, whole, path):
                    problems.append('acknowledged delivery %s may be lost' % '/'.join(path))

            def ways(qid, r, certain):
                """[delivered, still to do, handed on] for r of qid"""
                return [bool(copies_of(m, whole, mailbox.get(r, r.split('@')[0]), r, certain, needle[qid]))
                        or (is_remote(r) and results.get((qid, r)) == 's'),
                        still_to_do(m, whole, qid, r, certain, due.get(r, to_do) if qid in msgs else to_do),
                        any(all(kept(s, r2, certain) for r2 in rcpts_of[s]) for s in succ.get((qid, r), ()))]

            def kept(qid, r, certain):
                if r in dropped and results.get((qid, r)) == 'p':
                    return True
                w = ways(qid, r, certain)
                if r in needs and qid in msgs:
                    def handed(kinds):
                        return any(all(kept(s, r2, certain) for r2 in rcpts_of[s])
                                   for s in succ.get((qid, r), ()) if made_for[s][1] in kinds)
                    done = {'copy': w[0], 'expansion': handed(('expansion',)),
                            'report': w[1] or handed(('success',))}
                    return still_to_do(m, whole, qid, r, certain) or all(done[n] for n in needs[r])
                return any(w)
            for qid, rcpts in sorted(msgs.items()):
                for r in rcpts:
                    if not kept(qid, r, True):
                        problems.append('%s for %s may be neither delivered, nor still to do, nor handed on '
                                        'to a whole message%s' % (qid, r, ''.join(
                                            ' (%s %s)' % (made_for[s][1], s) for s in succ.get((qid, r), ()))))
                    w = ways(qid, r, False)
                    if w[2] and (w[0] or w[1]):
                        again.add((i, r))
                    elif sum(w) > 1:
                        twice.add((i, r))
            if i == len(events) - 1:
                for qid in gone_at_end:
                    if m.possible(['queue', 'env', qid[-1], qid]):
                        problems.append('%s, finished and removed, may come back' % qid)
            self.fail_at(problems, i, ev, events)

        points = crash_points(before, events, check)
        self.assertEqual(len(acked), sum(len(r) for r in msgs.values()) if deliveries is None else deliveries,
                         'every delivery acknowledged by a worker')
        self.assertEqual(seen['removal'], len(msgs) if removals is None else removals, 'a removal for each message')
        SUMMARY.append('%s: messages %d, calls %d, crash points checked %d, '
                       'at %d of them a recipient may be delivered twice (allowed)'
                       % (label, len(msgs), len(events), points, len({i for i, _ in twice}))
                       + (', messages made on the way %d (%s), at %d crash points one may be made again (allowed)'
                          % (len(made_for), ', '.join(sorted(k for _, k in made_for.values())),
                             len({i for i, _ in again})) if made_for else ''))
        self.results = results
        return seen, made, made_for

    def test_alias_expansion_power_loss(self):
        """A message to team (conf/aliases: "team: grace, heidi") and to
        frank.  local-deliverer queues team's expansion, one new message to
        grace and heidi, through queue-inject and answers "2.0.0 alias
        expanded ... queued as ID" only after its exit 0; then
        queue-manager records team done (an envelope rewrite: with
        local_concurrency 1 frank is still to do), and removes the message
        once frank is delivered.  At every crash point team is surely still
        to do, or its expansion survives whole (queued, or delivered to
        both)."""
        inst = self.inst

        def settled():      # the queue empty, and grace and heidi have their copies
            return not inst.queue_ids() and all(
                [1 for _, d in inst.maildir_messages(u) if b'Subject: crashmodel alias\n' in d] for u in ('grace', 'heidi'))
        _, _, made = self.record_deliveries('an alias expanded', [(['team', 'frank'], b'alias')], settled=settled,
                                            deliveries=3, removals=2)
        self.assertEqual([k for _, k in made.values()], ['expansion'], 'one expansion made')

    def test_delivery_and_bookkeeping_power_loss(self):
        """A message to alice and bob (local_concurrency 1: alice's result is
        recorded by rewriting the envelope, bob's ends the message: a
        removal), one to carol (a removal).  At every crash point each
        recipient is surely delivered or surely still to do, every
        acknowledged delivery survives whole, nothing half-written
        survives, and no envelope survives without its message."""
        for u in ('alice', 'bob', 'carol'):
            for sub in ('new', 'cur'):
                self.assertEqual(os.listdir(self.inst.path('mail', u, 'Maildir', sub)), [], 'fresh mailboxes')
        seen, _, _ = self.record_deliveries('deliveries', [(['alice', 'bob'], b'ab'), (['carol'], b'c')])
        self.assertGreaterEqual(seen['rewrite'], 1, 'an envelope rewrite was recorded')

    def test_failure_report_power_loss(self):
        """A message from frank to grace and to ghost, who has no mailbox
        (local_concurrency 1: grace's result is an envelope rewrite, then
        ghost fails for good).  queue-manager saves ghost as failed, queues
        the failure report (RFC 3464) through queue-inject, then marks him
        bounced, and removes the message; the report goes to frank.  At
        every crash point ghost's report is surely either still due (a
        whole envelope saying failed, or pending) or queued whole (or
        delivered whole to frank)."""
        _, _, made = self.record_deliveries('a failure report', [(['grace', 'ghost'], b'bounce')],
                                            sender='frank@example.test', reports={'ghost@example.test': 'failure'},
                                            deliveries=2, removals=2)
        self.assertEqual([k for _, k in made.values()], ['failure'], 'one failure report made')

    def test_delay_report_power_loss(self):
        """A message from frank to stuck (a mailbox that defers) with
        NOTIFY=DELAY,FAILURE, made five hours old first, its next try the
        one the schedule makes at four hours (the envelope edited as
        test_delivery's delay test does).  The try fails: queue-manager
        saves stuck as delayed, queues the delay report (RFC 3464) through
        queue-inject, then saves him pending again with his next try.  At
        every crash point the report is surely either still due (a whole
        envelope saying delayed, or pending with the old next try, which
        fails again and makes it due again) or queued whole (or delivered
        whole to frank)."""
        inst = self.inst
        birth = int(time.time()) - 5 * 3600
        qids = []

        def edit(qid):      # as an operator could: owner and mode kept
            path = inst.path('queue', 'env', qid[-1], qid)
            st = os.stat(path)
            with open(path) as f:
                lines = f.read().splitlines()
            for n, l in enumerate(lines):
                if l.startswith('birth '):
                    lines[n] = 'birth %d' % birth
                elif l.startswith('rcpt\t'):
                    fields = l.split('\t')
                    fields[3] = str(birth + 4 * 3600)
                    lines[n] = '\t'.join(fields)
            with open(path + '.new', 'w') as f:
                f.write('\n'.join(lines) + '\n')
            os.chown(path + '.new', st.st_uid, st.st_gid)
            os.chmod(path + '.new', 0o600)
            os.rename(path + '.new', path)
            qids.append(qid)
            self.addCleanup(drop, qid)

        def drop(qid):      # the next test starts from an empty queue
            for d in ('todo', 'env/' + qid[-1], 'mess/' + qid[-1]):
                try:
                    os.unlink(inst.path('queue', d, qid))
                except FileNotFoundError:
                    pass

        def settled():      # the report delivered, stuck saved pending with a new next try
            if inst.queue_ids() != qids or not [1 for _, d in inst.maildir_messages('frank')
                                                if b'Subject: crashmodel delay\n' in d]:
                return False
            with open(inst.path('queue', 'env', qids[0][-1], qids[0]), 'rb') as f:
                state = rcpt_fields(f.read()).get('stuck@example.test')
            return state[1] == 'pending' and state[3] != str(birth + 4 * 3600)

        def report_due(f):
            return f[1] == 'delayed' or (f[1] == 'pending' and f[3] == str(birth + 4 * 3600))
        _, _, made = self.record_deliveries('a delay report', [(['stuck'], b'delay')], sender='frank@example.test',
                                            notify='DELAY,FAILURE', edit=edit, settled=settled,
                                            reports={'stuck@example.test': 'delay'},
                                            due={'stuck@example.test': report_due}, deliveries=1, removals=1)
        self.assertEqual([k for _, k in made.values()], ['delay'], 'one delay report made')

    def test_first_delivery_into_a_home_the_deliverer_makes(self):
        """dave's home (ROOT/mail/dave) is gone: local-deliverer makes it
        (make_home, as root), his worker the Maildir (maildir_make), then
        delivers.  The acknowledged delivery survives only if the names of
        the home and of the Maildir are durable too."""
        shutil.rmtree(self.inst.path('mail', 'dave'))
        _, made, _ = self.record_deliveries('a home the deliverer makes', [(['dave'], b'd')])
        self.assertTrue(made >= {('mail', 'dave'), ('mail', 'dave', 'Maildir')}, 'dave\'s home and Maildir were made')

    def test_first_delivery_to_a_user_just_added(self):
        """erin is added (postern-user add, recorded: it makes her home and
        Maildir) after her message was queued, then it is delivered.  The
        acknowledged delivery survives only if postern-user made the names
        of her home and Maildir durable."""
        inst = self.inst

        def add_erin():
            t = inst.path('user.trace')
            r = subprocess.run([STRACE, '-o', t] + STRACE_ARGS
                               + [inst.bin('postern-user'), '--root', inst.root, 'add', 'erin'],
                               input=b'pw-erin\n', capture_output=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(t, errors='replace') as f:
                return parse_trace(f.read())
        _, made, _ = self.record_deliveries('a user just added', [(['erin'], b'e')], add_erin)
        self.assertTrue(made >= {('mail', 'erin'), ('mail', 'erin', 'Maildir')}, 'erin\'s home and Maildir were made')


    def test_success_report_power_loss(self):
        """Two messages from frank with NOTIFY=SUCCESS: one to alice, one to
        team (the alias of grace and heidi).  alice's worker delivers;
        queue-manager saves her delivered (a success report due), queues
        the report (RFC 3464, to frank) through queue-inject, and only then
        counts her done (here: removes the message).  team's job queues its
        expansion (NOTIFY without SUCCESS, RFC 3461 6.2), and team is saved
        expanded until its report (action expanded) is queued.  At every
        crash point each is surely still pending, or has surely done both:
        alice's copy (team's expansion) survives whole, and the report is
        surely still due (a whole envelope saying delivered, or expanded)
        or queued whole (or delivered whole to frank): a power cut never
        leaves a recipient done with no report."""
        alice, team = 'alice@example.test', 'team@example.test'
        _, _, made = self.record_deliveries('success reports', [(['alice'], b'success'), (['team'], b'success-team')],
                                            sender='frank@example.test', notify='SUCCESS',
                                            reports={alice: 'success', team: 'success'},
                                            due={alice: lambda f: f[1] in ('pending', 'delivered'),
                                                 team: lambda f: f[1] in ('pending', 'expanded')},
                                            needs={alice: ('copy', 'report'), team: ('expansion', 'report')},
                                            deliveries=5, removals=5)
        self.assertEqual(sorted(k for _, k in made.values()), ['expansion', 'success', 'success'],
                         'two success reports, one expansion')
        reports = [d for _, d in self.inst.maildir_messages('frank') if b'Subject: crashmodel success' in d]
        self.assertEqual(sorted(re.findall(rb'(?m)^Action: (\w+)', b''.join(reports))), [b'delivered', b'expanded'])

    def remote_to_sink(self, *domains, **knobs):
        """A recording SMTP sink on loopback (SmtpSink, with knobs), and
        remote-deliverer back in ROOT/bin (Instance.by_hand takes it away)
        with conf/routes sending domains to the sink, until the test ends.
        What the sink keeps is not modelled: only the files under ROOT."""
        need(self, 'remote-deliverer')
        sink = SmtpSink()
        for k, v in knobs.items():
            setattr(sink, k, v)
        self.addCleanup(sink.close)
        inst = self.inst
        routes, prog = inst.path('conf', 'routes'), inst.bin('remote-deliverer')
        with open(routes, 'w') as f:
            f.write(''.join('%s [127.0.0.1]:%d tls=none\n' % (d, sink.port) for d in domains))
        os.chmod(routes, 0o644)
        shutil.copyfile(os.path.join(inst.bindir, 'remote-deliverer'), prog)
        os.chmod(prog, 0o755)

        def undo():
            for path in (routes, prog):
                os.unlink(path)
        self.addCleanup(undo)
        return sink

    def test_remote_delivery_power_loss(self):
        """A message from frank to alice and to rob@example.net, which
        conf/routes sends to a loopback SMTP sink; remote-deliverer relays
        it and sends its success, queue-manager records it (one result is
        an envelope rewrite, the other ends the message: its removal).  And
        one to rex@example.net with NOTIFY=SUCCESS: the sink offers no DSN,
        so rex is saved relayed until his success report (action relayed)
        is queued.  At every crash point rob is surely still to do until
        remote-deliverer's success (then he may be relayed twice: allowed);
        rex is surely still pending, or relayed with his report surely
        still due or queued whole; and at the end each removal is durable:
        the relays recorded, no message comes back."""
        sink = self.remote_to_sink('example.net')
        rex = 'rex@example.net'
        self.record_deliveries('remote deliveries', [(['alice', 'rob@example.net'], b'remote'),
                                                     ([rex], b'relayed', 'SUCCESS')],
                               sender='frank@example.test', reports={rex: 'success'},
                               due={rex: lambda f: f[1] in ('pending', 'relayed')}, needs={rex: ('copy', 'report')},
                               deliveries=2, removals=3)
        self.assertEqual(sorted((r, st) for (_, r), st in self.results.items()),
                         [('alice@example.test', 's'), ('frank@example.test', 's'), ('rex@example.net', 's'),
                          ('rob@example.net', 's')], 'alice and frank delivered, rob and rex relayed')
        self.assertEqual(sorted(m['rcpt'] for m in sink.messages),
                         [['RCPT TO:<rex@example.net>'], ['RCPT TO:<rob@example.net>']], 'the sink has them')
        reports = [d for _, d in self.inst.maildir_messages('frank') if b'Subject: crashmodel relayed' in d]
        self.assertEqual(re.findall(rb'(?m)^Action: (\w+)', b''.join(reports)), [b'relayed'])

    def test_remote_permanent_failure_power_loss(self):
        """A message from frank to nope@example.net, whom the sink refuses
        with 550 5.1.1: remote-deliverer answers permanent, queue-manager
        saves nope as failed, queues the failure report (to frank) through
        queue-inject, and only then counts him bounced.  At every crash
        point the report is surely still due or queued whole (or delivered
        whole to frank)."""
        sink = self.remote_to_sink('example.net', rcpt_replies={'nope@example.net': '550 5.1.1 no such user'})
        _, _, made = self.record_deliveries('a remote permanent failure', [(['nope@example.net'], b'refused')],
                                            sender='frank@example.test', reports={'nope@example.net': 'failure'},
                                            deliveries=1, removals=2)
        self.assertEqual([k for _, k in made.values()], ['failure'], 'one failure report made')
        self.assertEqual(list(self.results.values()).count('p'), 1, 'the refusal came back as permanent')
        self.assertEqual(sink.messages, [], 'nothing was accepted')

    def test_alias_keeping_a_copy_and_a_forward_power_loss(self):
        """A message to ivan (conf/aliases "ivan: ivan, ivan@elsewhere.example":
        keeps a copy and forwards one, the man page's way of a per-user
        forward) and to judy ("judy: judy@elsewhere.example": forwards all
        her mail); elsewhere.example goes to a loopback sink.  local-deliverer
        delivers ivan's copy in ivan's own job, then queues the forward
        through queue-inject, and answers only after both; judy's job queues
        hers.  At every crash point ivan is surely still to do, or his copy
        surely survives whole AND his forward is surely queued whole (or
        relayed); judy is surely still to do or her forward queued whole
        (or relayed)."""
        sink = self.remote_to_sink('elsewhere.example')
        _, _, made = self.record_deliveries('an alias keeping a copy, a forward',
                                            [(['ivan', 'judy'], b'forward')], sender='frank@example.test',
                                            needs={'ivan@example.test': ('copy', 'expansion')},
                                            deliveries=1, removals=3)
        self.assertEqual([k for _, k in made.values()], ['expansion', 'expansion'], 'two forwards made')
        self.assertEqual(sorted(m['rcpt'][0] for m in sink.messages),
                         ['RCPT TO:<ivan@elsewhere.example>', 'RCPT TO:<judy@elsewhere.example>'], 'both relayed')
        self.assertEqual([1 for _, d in self.inst.maildir_messages('judy') if b'crashmodel forward' in d], [],
                         'judy keeps no copy')

    def postmaster(self, name):
        """conf/aliases' postmaster line says name, until the test ends"""
        path = self.inst.path('conf', 'aliases')
        with open(path) as f:
            old = f.read()
        self.assertRegex(old, r'(?m)^postmaster:', 'conf/aliases has a postmaster line')
        new = re.sub(r'(?m)^postmaster:.*$', 'postmaster: ' + name, old)

        def write(text):
            with open(path + '.new', 'w') as f:
                f.write(text)
            os.chmod(path + '.new', 0o644)
            os.rename(path + '.new', path)
        write(new)
        self.addCleanup(write, old)

    def test_double_bounce_power_loss(self):
        """A message from phantom (no mailbox) to ghost (no mailbox either).
        ghost fails for good: queue-manager queues the failure report to
        phantom, from <>; it fails for good too, and queue-manager queues
        the double bounce to postmaster (conf/aliases: heidi here), once,
        then counts the report's recipient bounced.  At every crash point
        ghost's report is surely still due or queued whole, and the report's
        own failure surely still due (a whole envelope saying failed, or
        pending) or its double bounce queued whole (or delivered whole to
        heidi): the report is never lost between its failure and
        postmaster's copy.  And it stops there: two messages made, the queue
        empty."""
        self.postmaster('heidi')
        pm = 'postmaster@' + self.inst.hostname
        _, _, made = self.record_deliveries('a double bounce', [(['ghost'], b'double')], sender='phantom@example.test',
                                            reports={'ghost@example.test': 'failure',
                                                     'phantom@example.test': 'failure'},
                                            mailbox={pm: 'heidi'}, deliveries=1, removals=3)
        self.assertEqual(sorted(k for _, k in made.values()), ['failure', 'failure'], 'a report and its double bounce')
        self.assertEqual(self.results, {**{k: 'p' for k in self.results if k[1] != pm},
                                        **{k: 's' for k in self.results if k[1] == pm}}, 'ghost and phantom failed, '
                         'postmaster got the double bounce')
        self.assertEqual(sorted(r for _, r in self.results), sorted(['ghost@example.test', 'phantom@example.test', pm]))

    def test_double_bounce_that_fails_is_dropped(self):
        """As above, with postmaster the default "root", which is no postern
        user: the double bounce fails for good too, and queue-manager drops
        it (logged) instead of reporting on it.  The chain keeps its
        promise up to postmaster's answer, and ends there: two messages
        made, no third, every one removed for good."""
        self.postmaster('root')
        pm = 'postmaster@' + self.inst.hostname
        _, _, made = self.record_deliveries('a double bounce dropped', [(['ghost'], b'dropped')],
                                            sender='phantom@example.test',
                                            reports={'ghost@example.test': 'failure',
                                                     'phantom@example.test': 'failure'},
                                            dropped={pm}, deliveries=0, removals=3)
        self.assertEqual(sorted(k for _, k in made.values()), ['failure', 'failure'], 'a report and its double bounce')
        self.assertEqual(sorted((r, s) for (_, r), s in self.results.items()),
                         [('ghost@example.test', 'p'), ('phantom@example.test', 'p'), (pm, 'p')])
        with open(self.inst.path('qm.log'), errors='replace') as f:
            self.assertEqual(f.read().count('dsn=double-bounce-failed action=dropped'), 1, 'dropped once')


class Pop3UpdateCrashTest(unittest.TestCase):
    """A POP3 session's UPDATE under the power-loss model: pop3-listener
    (the listener, and the monitor, pre-login and mailbox processes it
    forks) recorded with strace -f -p while one session RETRs some
    messages, DELEs others and QUITs. The promise (docs/man/pop3-listener.8,
    UPDATE), at every crash point of the UPDATE:
      - a message not marked deleted is never lost: a power cut surely
        leaves it, whole, under new/BASE or cur/BASE:2,FLAGS;
      - after "+OK" to QUIT was written, every deletion and every move is
        durable: no name of a deleted message may survive, and each kept
        one surely survives in cur/ only.
    Before the +OK a deleted message may come back (RFC 1939: nothing is
    promised until the reply; the next login offers it again), and a kept
    one may be left under two names (new/BASE and cur/BASE:2,, one file,
    which the next login makes one again): the crash points where either
    may happen are counted and printed, not failed."""

    def test_pop3_update_power_loss(self):
        need(self, 'postern-setup', 'postern-user', 'auth-checker', 'pop3-listener')
        need_root(self, 'the mailbox process runs as the user, under strace as root')
        if not strace_works():
            self.skipTest('strace cannot trace here')
        inst = Instance(services=['auth-checker', 'pop3-listener'], users={'alice': 'secret'}).start()
        self.addCleanup(inst.stop)
        md = inst.maildir('alice')
        st = os.stat(md)
        base, texts = [], {}
        for k in range(16):
            sub, name = ('new', '%d.M%dP1.test' % (1700000000 + k, k)) if k < 12 else \
                        ('cur', '%d.M%dP1.test:2,%s' % (1700000000 + k, k, 'F' if k % 2 else ''))
            path = os.path.join(md, sub, name)
            with open(path, 'wb') as f:
                f.write(b'Subject: pop3 crash %d\n\n' % k + b'line\n' * 50)
            os.chown(path, st.st_uid, st.st_gid)
            base.append(name.split(':')[0])
        # DELE: 2 in new/ and 2 in cur/; RETR (seen): 3 in new/, 2 in cur/
        dele, retr = (2, 5, 13, 16), (1, 3, 4, 14, 15)
        deleted = {base[k - 1] for k in dele}
        kept = [b for b in base if b not in deleted]
        os.sync()
        before = FsModel(inst.root, ('mail',))
        trace = inst.path('pop3.trace')
        tracer = subprocess.Popen([STRACE, '-o', trace] + STRACE_ARGS + ['-p', str(inst.service_pid('pop3-listener'))],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            self.assertIn(b'attached', tracer.stderr.readline())
            steps = [(None, '+OK'), ('USER alice', '+OK'), ('PASS secret', '+OK')]
            steps += [('RETR %d' % k, '+OK') for k in retr] + [('DELE %d' % k, '+OK') for k in dele]
            steps += [('QUIT', '+OK Logging out.')]
            harness.pop3_dialogue(inst.port('pop3'), steps)
            inst.wait_for(lambda: 'event=logout user=alice' in inst.log('pop3-listener'), 10)
            time.sleep(0.5)         # the mailbox process's last calls
        finally:
            tracer.terminate()
            tracer.wait(30)
        with open(trace, errors='replace') as f:
            events = parse_trace(f.read())
        names = {b: [] for b in base}
        for path, _ in inst.maildir_messages('alice'):
            names[os.path.basename(path).split(':')[0]].append(path)
        self.assertEqual({b for b, p in names.items() if p}, set(kept), 'the UPDATE deleted what was marked')
        acked, updating = [False], [False]
        counts = {'back': set(), 'twice': set()}

        def states(m, sub):
            return [st for d in m.possible(['mail', 'alice', 'Maildir', sub]) if d.is_dir for st in d.hist]

        def check(m, whole, i, ev):
            if ev and ev[1] == 'write' and '+OK Logging out.' in ev[2][1]:
                acked[0] = True
            if ev and ev[1] in ('linkat', 'unlinkat', 'renameat2') and '/Maildir/' in ev[2][0]:
                updating[0] = True       # the crash points counted: from the UPDATE's first change on
            new, cur = states(m, 'new'), states(m, 'cur')
            problems = []
            for b in base:
                in_new = [b in s for s in new]
                in_cur = [any(n.split(':')[0] == b for n in s) for s in cur]
                files = [s[n] for s in new + cur for n in s if n.split(':')[0] == b]
                if not all(whole(f) for f in files):
                    problems.append('%s may survive half-written' % b)
                if b in deleted:
                    if acked[0] and (any(in_new) or any(in_cur)):
                        problems.append('%s, deleted and acknowledged, may come back' % b)
                    elif updating[0] and (any(in_new) or any(in_cur)):
                        counts['back'].add(i)
                    continue
                if not (all(in_new) or all(in_cur)):
                    problems.append('%s (not deleted) may be lost: in neither new/ nor cur/' % b)
                if acked[0] and (any(in_new) or not all(in_cur)):
                    problems.append('%s: acknowledged, yet may not be (only) in cur/' % b)
                if any(in_new) and any(in_cur):
                    counts['twice'].add(i)
            if problems:
                lo = max(0, i - 8)
                self.fail('power loss after call %d (%s) would leave:\n  %s\nthe calls up to it:\n%s'
                          % (i + 1, show(ev), '\n  '.join(problems),
                             '\n'.join('   %s' % show(e) for e in events[lo:i + 1])))

        points = crash_points(before, events, check)
        self.assertTrue(acked[0], 'the +OK to QUIT is in the trace')
        SUMMARY.append('pop3 UPDATE: messages %d (%d deleted, %d seen), calls %d, crash points checked %d; '
                       'in the UPDATE, at %d a deleted message may come back, at %d a kept one may be under '
                       'two names (both allowed before the +OK)'
                       % (len(base), len(deleted), len(retr), len(events), points, len(counts['back']),
                          len(counts['twice'])))
        print('\n[crashmodel] ' + SUMMARY.pop())


class CrashModelSelfTest(unittest.TestCase):
    """The model on hand-written traces (strace -f -yy -tt lines) of a
    queue commit: the right one passes, each broken one is reported.
    Needs neither root nor strace."""

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix='postern-crashmodel.')
        for d in ('tmp/0', 'mess/0', 'env/0', 'todo'):
            os.makedirs(os.path.join(self.root, 'queue', d))

    def tearDown(self):
        shutil.rmtree(self.root)

    def problems(self, calls):
        q = self.root + '/queue'
        lines = []
        for n, c in enumerate(calls):
            lines.append('100 12:00:%02d.000000 ' % n + c.replace('Q/', q + '/').replace('"Q', '"' + q).replace('<Q>', '<%s>' % q))
        events = parse_trace('\n'.join(lines))
        found = []

        def check(m, whole, i, ev):
            found.extend(queue_problems(m, whole))
            if i == len(events) - 1 and not surely_whole(m, whole, ['queue', 'env', '0', 'ID']):
                found.append('acknowledged and lost')
        crash_points(FsModel(self.root, ('queue',)), events, check)
        return sorted(set(found))

    MESS = ['openat(AT_FDCWD</>, "Q/tmp/0/ID.m", O_RDWR|O_CREAT|O_EXCL, 0600) = 4<Q/tmp/0/ID.m>',
            'write(4<Q/tmp/0/ID.m>, "Subject: x\\n\\nhello\\n", 18) = 18',
            'fsync(4<Q/tmp/0/ID.m>) = 0']
    ENV = ['openat(AT_FDCWD</>, "Q/tmp/0/ID.e", O_RDWR|O_CREAT|O_EXCL, 0600) = 5<Q/tmp/0/ID.e>',
           'write(5<Q/tmp/0/ID.e>, "postern-envelope 1\\n", 19) = 19',
           'fsync(5<Q/tmp/0/ID.e>) = 0']
    MESS_IN = ['rename("Q/tmp/0/ID.m", "Q/mess/0/ID") = 0', 'openat(AT_FDCWD</>, "Q/mess/0", O_RDONLY|O_DIRECTORY) = 6<Q/mess/0>',
               'fsync(6<Q/mess/0>) = 0']
    ENV_IN = ['renameat2(3<Q>, "tmp/0/ID.e", 3<Q>, "env/0/ID", RENAME_NOREPLACE) = 0',
              'openat(AT_FDCWD</>, "Q/env/0", O_RDONLY|O_DIRECTORY) = 6<Q/env/0>', 'fsync(6<Q/env/0>) = 0']

    def test_the_commit_protocol_passes(self):
        self.assertEqual(self.problems(self.MESS + self.ENV + self.MESS_IN + self.ENV_IN), [])

    def test_envelope_before_message_is_durable(self):
        self.assertEqual(self.problems(self.MESS + self.ENV + self.MESS_IN[:1] + self.ENV_IN + self.MESS_IN[1:]),
                         ['env/0/ID may survive without its whole message'])

    def test_no_fsync_of_the_envelope_file(self):
        self.assertEqual(self.problems(self.MESS + self.ENV[:2] + self.MESS_IN + self.ENV_IN),
                         ['acknowledged and lost', 'env/0/ID may survive half-written (0 bytes)'])

    def test_no_fsync_of_the_envelope_directory(self):
        self.assertEqual(self.problems(self.MESS + self.ENV + self.MESS_IN + self.ENV_IN[:2]),
                         ['acknowledged and lost'])

    def test_unfinished_and_resumed_calls(self):
        q = self.root + '/queue'
        ev = parse_trace('7 12:00:00.000001 fsync(6<%s/env/0> <unfinished ...>\n'
                         '8 12:00:00.000002 +++ exited with 0 +++\n'
                         '7 12:00:00.000003 <... fsync resumed>) = 0\n' % q)
        self.assertEqual([(e[0], e[1]) for e in ev], [(8, '+++exit'), (7, 'fsync')])
        self.assertEqual(fd_path(ev[1][2][0]), q + '/env/0')

    def lost(self, calls):
        """the crash points (indexes) where a durable file queue/env/0/ID,
        renamed by calls, may be under none of its names"""
        with open(os.path.join(self.root, 'queue', 'env', '0', 'ID'), 'w') as f:
            f.write('x')
        q = self.root + '/queue'
        events = parse_trace('\n'.join('100 12:00:%02d.000000 ' % n + c.replace('Q/', q + '/')
                                       for n, c in enumerate(calls)))
        out = []

        def check(m, whole, i, ev):
            names = [p for p in (['env', '0', 'ID'], ['env', '0', 'ID2'], ['todo', 'ID']) if m.possible(['queue'] + p)]
            in_env = [any(n in st for n in ('ID', 'ID2')) for d in m.possible(['queue', 'env', '0']) for st in d.hist]
            in_todo = [('ID' in st) for d in m.possible(['queue', 'todo']) for st in d.hist]
            if names and not (all(in_env) or all(in_todo)):
                out.append(i)
        crash_points(FsModel(self.root, ('queue',)), events, check)
        return out

    def test_rename_within_a_directory_is_one_change(self):
        self.assertEqual(self.lost(['rename("Q/env/0/ID", "Q/env/0/ID2") = 0']), [])

    def test_rename_across_directories_may_lose_the_file(self):
        """each directory may reach the disk without the other: a move
        from one to another is safe only as link, fsync, unlink"""
        self.assertEqual(self.lost(['rename("Q/env/0/ID", "Q/todo/ID") = 0']), [0])
        self.assertEqual(self.lost(['link("Q/env/0/ID", "Q/todo/ID") = 0', 'openat(AT_FDCWD</>, "Q/todo", '
                                    'O_RDONLY|O_DIRECTORY) = 6<Q/todo>', 'fsync(6<Q/todo>) = 0',
                                    'unlink("Q/env/0/ID") = 0']), [])

    def test_unmodelled_calls_fail(self):
        with self.assertRaises(ModelError):
            self.problems(['symlink("x", "Q/env/0/ID") = 0'])
