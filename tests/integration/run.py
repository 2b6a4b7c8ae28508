#!/usr/bin/env python3
"""run.py - run postern's integration tests (tests/integration/test_*.py).

    POSTERN_BIN=$PWD/bin python3 tests/integration/run.py [FILTER...]

A FILTER selects tests whose module name starts with it or whose id
contains it (`run.py test_smtp`, `run.py test_setup.SetupTest.test_idempotent`).
Each test has a time limit (POSTERN_TEST_TIMEOUT seconds, default 180).
The last line is always `integration: N passed, N failed, N skipped`;
the exit status is 1 if any test failed or errored.  Run as an ordinary
user, the line before it counts the tests skipped because they need root
(`integration: not root: N tests that need root skipped ...`).
"""

import os
import signal
import sys
import time
import traceback
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
TIMEOUT = int(os.environ.get('POSTERN_TEST_TIMEOUT', '180'))


class TestTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise TestTimeout('test exceeded %ds (POSTERN_TEST_TIMEOUT)' % TIMEOUT)


class TimedSuite(unittest.TestSuite):
    """A suite whose class and module fixtures (setUpClass...) are under
    the time limit too (unittest runs them before startTest)."""

    def _handleClassSetUp(self, test, result):
        cls = test.__class__
        first = cls != getattr(result, '_previousTestClass', None)
        n = len(result.skipped)
        signal.alarm(TIMEOUT)
        try:
            super()._handleClassSetUp(test, result)
        finally:
            signal.alarm(0)
        # a setUpClass that skips (need_root(cls)...): unittest then runs
        # none of the class's tests and counts one skip for the class; each
        # test is reported and counted as skipped instead, with the reason
        if first and getattr(cls, '_classSetupFailed', False) and len(result.skipped) > n:
            result.class_skipped[cls] = result.skipped.pop(n)[1]
        if cls in result.class_skipped:
            result.startTest(test)
            result.addSkip(test, result.class_skipped[cls])
            result.stopTest(test)

    def _handleModuleFixture(self, test, result):
        signal.alarm(TIMEOUT)
        try:
            super()._handleModuleFixture(test, result)
        finally:
            signal.alarm(0)

    def _tearDownPreviousClass(self, test, result):
        signal.alarm(TIMEOUT)
        try:
            super()._tearDownPreviousClass(test, result)
        finally:
            signal.alarm(0)


def iter_tests(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from iter_tests(t)
        else:
            yield t


class Result(unittest.TestResult):
    def __init__(self):
        super().__init__()
        self.passed = []
        self.started = 0.0
        self.said = True
        self.subtest_failed = set()   # ids of tests with a failed subtest
        self.class_skipped = {}       # class -> why its setUpClass skipped

    def startTest(self, test):
        super().startTest(test)
        self.started = time.time()
        self.said = False
        sys.stdout.write('%s ... ' % test.id())
        sys.stdout.flush()
        signal.alarm(TIMEOUT)

    def stopTest(self, test):
        signal.alarm(0)
        if not self.said:
            self._say('FAIL' if test.id() in self.subtest_failed else 'done')
        super().stopTest(test)

    def _say(self, what):
        self.said = True
        sys.stdout.write('%s (%.1fs)\n' % (what, time.time() - self.started))
        sys.stdout.flush()

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self.subtest_failed.add(test.id())

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed.append(test)
        self._say('ok')

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._say('FAIL')

    def addError(self, test, err):
        super().addError(test, err)
        if not isinstance(test, unittest.TestCase):
            # a fixture (setUpClass, setUpModule...): no startTest before it
            sys.stdout.write('%s ... ERROR\n' % test.id())
            sys.stdout.flush()
            return
        self._say('ERROR')

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        if not isinstance(test, unittest.TestCase):
            sys.stdout.write('%s ... skipped: %s\n' % (test.id(), reason))
            sys.stdout.flush()
            return
        self._say('skipped: ' + reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._say('expected failure')

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._say('UNEXPECTED SUCCESS')


def main(argv):
    filters = argv[1:]
    bindir = os.environ.get('POSTERN_BIN')
    if not bindir:
        bindir = os.path.abspath(os.path.join(HERE, '..', '..', 'bin'))
        os.environ['POSTERN_BIN'] = bindir
    print('integration: programs from %s%s' % (
        bindir, '' if os.geteuid() == 0 else ' (not root: privilege tests will skip)'))
    signal.signal(signal.SIGALRM, _alarm)

    loader = unittest.TestLoader()
    suite = TimedSuite()
    load_errors = []
    for name in sorted(os.listdir(HERE)):
        if not (name.startswith('test_') and name.endswith('.py')):
            continue
        mod = name[:-3]
        try:
            s = loader.loadTestsFromName(mod)
        except Exception:
            load_errors.append((mod, traceback.format_exc()))
            continue
        for t in iter_tests(s):
            tid = t.id()
            if filters and not any(tid.startswith(f) or f in tid for f in filters):
                continue
            suite.addTest(t)

    result = Result()
    suite.run(result)
    try:
        import harness
        leaked = harness.stop_all()
    except Exception:
        leaked = []
    for root in leaked:
        print('warning: an instance was left running by a test (stopped now): %s' % root)

    failed = [(t, tb) for t, tb in result.failures + result.errors]
    # a test counts once, however many of its subtests failed
    failed_ids = set()
    for t, tb in failed:
        tid = getattr(t, 'test_case', t).id()
        failed_ids.add(tid)
    # unittest turns an import failure into a _FailedTest: counted as failed
    for mod, tb in load_errors:
        if not filters or any(mod.startswith(f) or f in mod for f in filters):
            failed.append((mod, tb))
            failed_ids.add(mod)
    failed += [(t, 'unexpected success') for t in result.unexpectedSuccesses]
    failed_ids.update(t.id() for t in result.unexpectedSuccesses)

    for t, tb in failed:
        name = t if isinstance(t, str) else t.id()
        print('\n' + '=' * 70)
        print('FAILED: %s' % name)
        print('-' * 70)
        print(tb.rstrip())
    if result.skipped:
        print('\nskipped:')
        for t, reason in result.skipped:
            print('  %s: %s' % (t.id(), reason))
    passed = len(result.passed) + len(result.expectedFailures)
    skipped = {t.id() for t, _ in result.skipped if getattr(t, 'test_case', t).id() not in failed_ids}
    # the privilege tests an ordinary user cannot run (need_root's reason
    # starts "not root: "): said apart, for make check's summary
    not_root = {t.id() for t, why in result.skipped
                if t.id() in skipped and why.startswith('not root')}
    if not_root:
        print('integration: not root: %d tests that need root skipped (listed above, each with why)'
              % len(not_root))
    print('integration: %d passed, %d failed, %d skipped' % (
        passed, len(failed_ids), len(skipped)))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
