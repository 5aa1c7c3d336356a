"""farcall.across next to the real across 0.1.0 (PyPI, installed by
scripts/setup.sh): the same scenarios run against a child of each, and
what a user observes (values, exception types and messages) must be the
same, except where docs/across.md says it differs on purpose (the reason
after "aborted due to")."""

import operator
import subprocess
import sys
import threading

import pytest

import across
import across_real_helpers as h
from farcall import across as farcall_across
from across_testing import child_env

pytestmark = pytest.mark.timeout(60)

LIBRARIES = {
    "across": (across, [sys.executable, "-m", "across", "--stdio", "--wait"]),
    "farcall.across": (farcall_across, [sys.executable, "-m", "farcall.across"]),
}


def connect(name):
    lib, command = LIBRARIES[name]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env())
    return lib, lib.Connection.from_process(proc), proc


def outcome(fn):
    """What ``fn()`` does, within a bound: ("ok", value) or ("raise", type
    name, message)."""
    box = []

    def run():
        try:
            box.append(("ok", fn()))
        except BaseException as e:  # noqa: B036 - what the test compares
            box.append(("raise", type(e).__name__, str(e)))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(20)
    assert box, "hung"
    return box[0]


def scenario(name):
    """Every observation of one library, in order."""
    lib, conn, proc = connect(name)
    seen = {}
    try:
        seen["add"] = outcome(lambda: conn.call(operator.add, 2, 3))
        seen["iterate"] = outcome(lambda: list(conn.call_ref(iter, [1, 2, 3])))
        seen["remote exception"] = outcome(lambda: conn.call(h.boom))
        seen["its cause"] = outcome(lambda: _cause_of(lambda: conn.call(h.boom)))
        seen["OperationError raised there"] = outcome(
            lambda: conn.call(h.raise_operation_error, name))
        seen["unpicklable argument"] = outcome(lambda: conn.call(operator.add, threading.Lock(), 1))
        seen["usable after"] = outcome(lambda: conn.call(operator.mul, 6, 7))
        seen["no connection here"] = outcome(lib.get_connection)
    finally:
        conn.close()
        proc.wait(10)
    seen["call after close"] = outcome(lambda: conn.call(operator.add, 1, 1))
    seen["with after close"] = outcome(lambda: conn.__enter__() and None)

    lib, conn, proc = connect(name)
    conn.cancel()
    seen["call after cancel"] = outcome(lambda: conn.call(operator.add, 1, 1))
    proc.kill()
    proc.wait(10)

    lib, conn, proc = connect(name)
    seen["child killed during a call"] = outcome(lambda: conn.call(h.kill_myself))
    seen["call after"] = outcome(lambda: conn.call(operator.add, 1, 1))
    proc.wait(10)
    try:
        conn.close()
    except BaseException:  # noqa: B036 - across re-raises EOFError, farcall DisconnectError (documented)
        pass
    return seen


def _cause_of(fn):
    try:
        fn()
    except BaseException as e:  # noqa: B036
        return (type(e.__cause__).__name__, str(e.__cause__))


def _shape(seen):
    """The observations, with what docs/across.md lists as different cut:
    the reason after "Connection was aborted due to"."""
    out = {}
    for case, got in seen.items():
        if got[0] == "raise":
            message = got[2]
            prefix = "Connection was aborted due to"
            if message.startswith(prefix):
                message = prefix
            # farcall's NoConnectionError is a ValueError, as across's error.
            kind = "ValueError" if got[1] == "NoConnectionError" else got[1]
            got = ("raise", kind, message)
        out[case] = got
    return out


def test_farcall_across_behaves_as_the_real_across():
    real = _shape(scenario("across"))
    ours = _shape(scenario("farcall.across"))
    assert real["add"] == ("ok", 5)  # the scenario itself ran
    for case in real:
        assert ours[case] == real[case], case
