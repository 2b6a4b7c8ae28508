"""README.md's telnet tour, replayed against a real instance, so the README
stays true to the code: every `C:` line is sent, every `S:` line must come
back (reply codes exactly, the text with queue ids, unique ids and numbers
normalised; a `S: (...)` line stands for any number of lines)."""

import os
import re
import unittest

import harness
from harness import Instance, Conn, need

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'README.md')
DEMO_PORTS = {2525: 'smtp', 2587: 'submission', 2110: 'pop3'}


def tour_blocks():
    """[(port name, [('C'|'S', text), ...])] for each `$ telnet 127.0.0.1 PORT` block."""
    with open(README) as f:
        lines = f.read().splitlines()
    blocks, cur = [], None
    for line in lines:
        m = re.match(r'^    \$ telnet 127\.0\.0\.1 (\d+)$', line)
        if m:
            cur = (DEMO_PORTS[int(m.group(1))], [])
            blocks.append(cur)
            continue
        if cur is None:
            continue
        m = re.match(r'^    ([CS]):(?: (.*))?$', line)
        if m:
            cur[1].append((m.group(1), m.group(2) or ''))
        else:
            cur = None
    return blocks


def norm(line):
    # "+OK 1 <unique id>" (UIDL): any id will do
    line = re.sub(r'^(\s*\d+ )\S+$', r'\1UID', line)
    line = re.sub(r'\b[0-9A-F]{16}\b', 'QUEUEID', line)
    line = re.sub(r'\S+\.mail\.example\.test\b', 'UID', line)
    line = re.sub(r'\bh[0-9a-f]{16}\b', 'UID', line)
    return re.sub(r'\d+', 'N', line)


def same(expected, got, pop3):
    if expected == got:
        return True
    head = 4 if pop3 else 3      # "+OK " / "-ERR" or the SMTP code must match exactly
    if pop3:
        head = 3 if expected.startswith('+OK') else 4 if expected.startswith('-ERR') else 0
    return expected[:head] == got[:head] and norm(expected[head:]) == norm(got[head:])


def match(expected, got, pop3):
    """expected lines (with '(...)' wildcards) against got lines."""
    i = j = 0
    while i < len(expected):
        e = expected[i]
        if e.startswith('(') and e.endswith(')'):
            nxt = expected[i + 1] if i + 1 < len(expected) else None
            while j < len(got) and (nxt is None or not same(nxt, got[j], pop3)):
                j += 1
            i += 1
            continue
        if j >= len(got) or not same(e, got[j], pop3):
            return False
        i += 1
        j += 1
    return j == len(got)


class ReadmeTour(unittest.TestCase):
    def test_tour(self):
        need(self, 'smtp-listener', 'queue-inject', 'queue-manager', 'local-deliverer',
             'pop3-listener', 'auth-checker', 'postern-user')
        blocks = tour_blocks()
        self.assertEqual([b[0] for b in blocks], ['smtp', 'pop3'], 'the README tour changed shape')
        with Instance(users={'demo': 'demo'}) as inst:
            for name, steps in blocks:
                pop3 = name.startswith('pop3')
                c = Conn(inst.port(name))
                try:
                    k = 0
                    while k < len(steps):
                        if steps[k][0] == 'C':
                            c.send(steps[k][1])
                            k += 1
                            if k < len(steps) and steps[k][0] == 'C':
                                continue        # DATA lines: no reply each
                        expected = []
                        while k < len(steps) and steps[k][0] == 'S':
                            expected.append(steps[k][1])
                            k += 1
                        if not expected:
                            continue
                        if pop3:
                            cmd = c.transcript[-1][3:] if c.transcript else ''
                            multi = harness.pop3_multiline(cmd) and expected[0].startswith('+OK')
                            got = c.pop3_reply(multiline=multi).split('\n')
                            if multi:
                                got.append('.')
                        else:
                            got = c.smtp_reply().split('\n')
                        self.assertTrue(match(expected, got, pop3),
                                        'README says:\n  %s\npostern says:\n  %s\n--- transcript:\n%s'
                                        % ('\n  '.join(expected), '\n  '.join(got), c.text()))
                finally:
                    c.close()
                if name == 'smtp':
                    inst.wait_for(lambda: inst.maildir_messages('demo'), what='the tour message')


if __name__ == '__main__':
    unittest.main()
