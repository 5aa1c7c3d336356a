"""ProcessSpawner: the child's handle, stopping and killing, start errors,
ZeroMQ children, and children never outliving their parent."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import farcall
from farcall import DisconnectError, ProcessSpawner, RPCClient
from farcall_testutil import TESTS_DIR, import_helpers, pid_gone, wait_until


def test_handle_attributes(fresh_child):
    proc = fresh_child(name="worker-1")
    assert proc.name == "worker-1"
    assert isinstance(proc.address, str) and proc.address
    assert isinstance(proc.pid, int) and proc.pid != os.getpid()
    assert not pid_gone(proc.pid)
    assert proc.poll() is None
    assert proc.proc.pid == proc.pid
    assert proc.proc.poll() is None
    assert isinstance(proc.client, RPCClient)
    assert proc.client.address == proc.address
    assert proc.client._import("os").getpid() == proc.pid
    assert proc.client._import("os").getppid() == os.getpid()
    assert "worker-1" in repr(proc)


def test_unnamed_child(fresh_child):
    proc = fresh_child()
    assert proc.name is None
    assert proc.client.ping() == "pong"


def test_wait_honours_its_timeout(fresh_child):
    proc = fresh_child()
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(0.5)
    elapsed = time.monotonic() - t0
    assert 0.4 <= elapsed < 3.0
    assert proc.poll() is None
    assert proc.client.ping() == "pong"
    with pytest.raises(subprocess.TimeoutExpired):
        proc.proc.wait(timeout=0.1)


def test_process_timeout_error_is_both_timeout_expired_and_timeout_error():
    # What ProcessSpawner.wait raises on a live child (issue 11, item 13).
    from farcall import errors

    assert "ProcessTimeoutError" in errors.__all__
    cls = errors.ProcessTimeoutError
    assert issubclass(cls, subprocess.TimeoutExpired)
    assert issubclass(cls, TimeoutError)
    assert cls.__doc__ and "ProcessSpawner.wait" in cls.__doc__
    e = cls("farcall child 123", 0.5)
    assert (e.cmd, e.timeout) == ("farcall child 123", 0.5)
    assert "timed out after 0.5 seconds" in str(e)
    for kind in (subprocess.TimeoutExpired, TimeoutError):
        with pytest.raises(kind):
            raise e
    import pickle

    back = pickle.loads(pickle.dumps(e))
    assert type(back) is cls and (back.cmd, back.timeout) == (e.cmd, e.timeout)


def test_stop(fresh_child):
    proc = fresh_child()
    pid = proc.pid
    assert proc.stop() == 0
    assert proc.poll() == 0
    assert proc.wait(1) == 0
    assert wait_until(lambda: pid_gone(pid), timeout=5)
    with pytest.raises(DisconnectError):
        proc.client.ping()


def test_kill(fresh_child):
    proc = fresh_child()
    pid = proc.pid
    proc.kill()
    assert proc.wait(10) == -signal.SIGKILL
    assert proc.poll() == -signal.SIGKILL
    assert wait_until(lambda: pid_gone(pid), timeout=5)


def test_sigkill_fails_pending_and_new_calls_at_once(fresh_child):
    proc = fresh_child()
    client = proc.client
    time_ = client._import("time")
    os_ = client._import("os")
    assert os_.getpid() == proc.pid
    # A second pending call, made by another thread (its own client)
    # waiting synchronously.
    out = {}
    ready = threading.Event()
    go = threading.Event()

    def sleeper():
        c = proc.client
        sleep = c._import("time").sleep
        ready.set()
        go.wait(10)
        try:
            sleep(5)
            out["result"] = "returned"
        except BaseException as e:
            out["error"] = e
        out["at"] = time.monotonic()

    t = threading.Thread(target=sleeper, daemon=True)
    t.start()
    assert ready.wait(10)
    pending = time_.sleep(5, _sync="async")
    go.set()
    time.sleep(0.3)
    killed_at = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    with pytest.raises(DisconnectError):
        pending.result(timeout=10)
    assert time.monotonic() - killed_at < 1.0
    t.join(10)
    assert not t.is_alive()
    assert isinstance(out.get("error"), DisconnectError), out
    assert out["at"] - killed_at < 1.0
    t0 = time.monotonic()
    with pytest.raises(DisconnectError):
        os_.getpid()
    assert time.monotonic() - t0 < 1.0
    assert client.disconnected() is True
    assert proc.wait(10) == -signal.SIGKILL


def test_kill_method_fails_pending_calls(fresh_child):
    proc = fresh_child()
    pending = proc.client._import("time").sleep(5, _sync="async")
    time.sleep(0.2)
    t0 = time.monotonic()
    proc.kill()
    with pytest.raises(DisconnectError):
        pending.result(timeout=10)
    assert time.monotonic() - t0 < 1.0


def test_nonexistent_executable(fresh_child):
    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        fresh_child(executable="/nonexistent")
    assert "/nonexistent" in str(info.value)
    assert time.monotonic() - t0 < 5.0


def test_bootstrap_failure_reports_the_childs_message(fresh_child):
    with pytest.raises(Exception) as info:
        fresh_child(address="bogus://x")
    text = str(info.value)
    assert "bogus://x" in text, text


def test_child_that_exits_before_answering(fresh_child, tmp_path):
    script = tmp_path / "fake_python"
    script.write_text("#!/bin/sh\necho 'fake child failing on purpose' >&2\nexit 3\n")
    script.chmod(0o755)
    with pytest.raises(DisconnectError) as info:
        fresh_child(executable=str(script))
    text = str(info.value)
    assert "fake child failing on purpose" in text  # the tail of its stderr
    assert "3" in text  # its exit status


def test_zmq_child(fresh_child):
    proc = fresh_child(address="tcp://127.0.0.1:*")
    assert proc.address.startswith("tcp://127.0.0.1:")
    assert not proc.address.endswith("*")
    assert proc.client.ping() == "pong"
    assert proc.client._import("os").getpid() == proc.pid
    h = import_helpers(proc.client)
    c = h.Counter()
    assert c.add(1, 2) == 3
    assert h.make_tuple() == (1, (2, 3), [4, (5,)])
    assert proc.stop() == 0


def test_bytes_address_for_a_child(fresh_child):
    proc = fresh_child(address=b"tcp://127.0.0.1:*")
    assert proc.client.ping() == "pong"


def test_child_imports_no_numpy_until_needed(fresh_child):
    proc = fresh_child()
    sys_ = proc.client._import("sys")
    assert "numpy" not in sys_.modules
    assert "farcall" in sys_.modules


def test_several_children(fresh_child):
    procs = [fresh_child(name=f"c{i}") for i in range(3)]
    pids = {p.client._import("os").getpid() for p in procs}
    assert pids == {p.pid for p in procs}
    assert len({p.address for p in procs}) == 3


def _run_script(source, timeout=60):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [TESTS_DIR] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_children_are_stopped_at_interpreter_exit():
    out = _run_script(
        """
        import farcall
        p = farcall.ProcessSpawner()
        assert p.client.ping() == "pong"
        print(p.pid, flush=True)
        # exits without stop()
        """
    )
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split()[0])
    assert wait_until(lambda: pid_gone(pid), timeout=5), f"child {pid} still runs"


def test_child_exits_when_its_parent_dies():
    out = _run_script(
        """
        import os, signal, farcall
        p = farcall.ProcessSpawner()
        assert p.client.ping() == "pong"
        print(p.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no cleanup
        """
    )
    assert out.returncode == -signal.SIGKILL
    pid = int(out.stdout.split()[0])
    assert wait_until(lambda: pid_gone(pid), timeout=5), f"child {pid} outlived its parent"


def test_stop_on_an_already_dead_child(fresh_child):
    proc = fresh_child()
    proc.kill()
    proc.wait(10)
    # stop() after the child died does not hang and reports the status.
    t0 = time.monotonic()
    try:
        code = proc.stop()
    except farcall.OperationError:
        code = proc.poll()
    assert code == -signal.SIGKILL
    assert time.monotonic() - t0 < 5.0
