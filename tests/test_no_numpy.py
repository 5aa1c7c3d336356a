"""farcall works in a program that cannot import numpy."""

import os
import subprocess
import sys
import textwrap

from farcall_testutil import TESTS_DIR

SCRIPT = r"""
import sys
sys.modules["numpy"] = None  # any "import numpy" now raises ImportError
import datetime
import farcall
from farcall import ProcessSpawner, RPCServer, ObjectProxy, RemoteCallException
from farcall.serializer import MsgpackSerializer, JsonSerializer

p = ProcessSpawner()
try:
    c = p.client
    assert c.ping() == "pong"
    os_ = c._import("os")
    assert os_.getpid() == p.pid
    operator = c._import("operator")
    assert operator.add(1, 2) == 3
    builtins = c._import("builtins")
    values = [None, True, 1, -5, 2**64 - 1, 1.5, "text", b"\x00bytes", [1, [2]],
              (1, (2,)), {"k": {"n": None}}, datetime.datetime(2024, 1, 2, 3, 4, 5, 6),
              datetime.date(2024, 1, 2), b"x" * 100000]
    for v in values:
        back = builtins.list([v])[0]
        assert back == v and type(back) is type(v), (v, back)
    col = c._import("collections")
    d = col.OrderedDict()
    assert isinstance(d, ObjectProxy)
    d["x"] = 1
    assert d["x"] == 1 and len(d) == 1
    f = operator.mul(6, 7, _sync="async")
    assert f.result(timeout=10) == 42
    try:
        operator.truediv(1, 0)
    except RemoteCallException as e:
        assert e.type_str == "ZeroDivisionError"
    else:
        raise AssertionError("no exception")
    assert MsgpackSerializer().loads(MsgpackSerializer().dumps({"a": [1]})) == {"a": [1]}
    assert JsonSerializer().loads(JsonSerializer().dumps({"a": [1]})) == {"a": [1]}
    # The child did not import numpy either.
    assert "numpy" not in c._import("sys").modules
    # In-process server too.
    srv = RPCServer("unix://*")
    srv["v"] = [1, 2]
    assert srv["v"] == [1, 2]
    srv.close()
    assert sys.modules["numpy"] is None
    print("NO-NUMPY-OK")
finally:
    p.stop()
"""


def test_everything_works_without_numpy():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [TESTS_DIR] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "NO-NUMPY-OK" in out.stdout


def test_array_to_a_child_without_numpy_fails_cleanly():
    """A child that cannot import numpy answers an array with an error
    reply instead of crashing."""
    script = r"""
import farcall, numpy as np
p = farcall.ProcessSpawner()
try:
    sys_ = p.client._import("sys")
    # Make numpy unimportable in the child before any array arrives.
    sys_.modules.__setitem__("numpy", None)
    builtins = p.client._import("builtins")
    try:
        builtins.len(np.arange(3))
    except Exception as e:
        print("ERROR", type(e).__name__)
    else:
        print("NO ERROR")
    assert p.client.ping() == "pong"
    assert builtins.len([1, 2, 3]) == 3
    print("ALIVE")
finally:
    p.stop()
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=90
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.split()
    assert "NO" not in lines, out.stdout
    assert "ERROR" in lines, out.stdout
    assert "ALIVE" in lines
