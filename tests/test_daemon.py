"""Daemon processes (teleprox's daemon=True) and exit_on_parent_death: a
daemon runs in a session of its own with its stdio on /dev/null, outlives
the process that started it (normal exit or os._exit alike), is reached
again by address from a new process of the same user (the per-user key),
and leaves no zombie behind; a child started with exit_on_parent_death=False
outlives a crashed parent too. Every wait is bounded."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from farcall import ProcessSpawner, RPCClient

pytestmark = pytest.mark.timeout(120)


def alive(pid):
    """True while ``pid`` runs (a zombie waiting to be reaped has ended)."""
    try:
        os.kill(pid, 0)
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (ProcessLookupError, FileNotFoundError):
        return False
    return state not in ("Z", "X")


def wait_gone(pid, timeout=10):
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not alive(pid)


def start_and_leave(tmp_path, kwargs, leave):
    """Runs a parent that starts a child with ``kwargs`` and leaves as
    ``leave`` says ("exit": normally, atexit hooks and all; "crash":
    os._exit); returns what it printed of the child."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, os, sys
            from farcall import ProcessSpawner
            p = ProcessSpawner(**{kwargs!r})
            os_ = p.client._import("os")
            info = {{"address": p.address, "pid": p.pid, "parent": os.getpid(),
                     "reported": os_.getpid(), "sid": os_.getsid(0)}}
            print(json.dumps(info), flush=True)
            if {leave!r} == "crash":
                os._exit(0)
            """
        )
    )
    # Files, not pipes: a child that outlives the parent keeps the
    # parent's stdout and stderr open.
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        rc = subprocess.run([sys.executable, str(script)], stdout=out, stderr=err, timeout=60)
    assert rc.returncode == 0, err_path.read_text()
    return json.loads(out_path.read_text().strip().splitlines()[-1])


@pytest.mark.parametrize("leave", ["exit", "crash"])
@pytest.mark.parametrize("address", [None, "tcp+native://127.0.0.1:*", "tcp://127.0.0.1:*"])
def test_a_daemon_outlives_its_parent_and_is_reached_by_address(tmp_path, leave, address):
    kwargs = {"name": "dmn", "daemon": True}
    if address:
        kwargs["address"] = address
    info = start_and_leave(tmp_path, kwargs, leave)
    pid = info["pid"]
    try:
        assert info["reported"] == pid
        time.sleep(0.3)  # the parent has gone: the daemon must not follow it
        assert alive(pid)
        assert info["sid"] != os.getsid(0)  # a session of its own
        # A new process of the same user reaches it (the per-user key).
        client = RPCClient(info["address"])
        os_ = client._import("os")
        assert os_.getpid() == pid
        assert os_.getppid() != info["parent"]
        stdio = [os_.readlink("/proc/self/fd/%d" % fd) for fd in (0, 1, 2)]
        assert stdio == ["/dev/null"] * 3
        assert client.close_server() is True
        assert wait_gone(pid), "the daemon did not exit after close_server()"
    finally:
        if alive(pid):
            os.kill(pid, 9)


def test_a_daemon_is_not_this_process_child_and_can_be_stopped_or_killed():
    p = ProcessSpawner(daemon=True)
    q = ProcessSpawner(daemon=True)
    try:
        assert p.daemon and q.daemon
        # Neither the first fork's child nor the daemon is left to reap.
        with pytest.raises(ChildProcessError):
            os.waitpid(-1, os.WNOHANG)
        assert p.client._import("os").getppid() != os.getpid()
        assert p.poll() is None
        p.kill()
        assert not alive(p.pid)
        assert p.poll() == 0  # not our child: its status is not known
        assert q.stop() == 0
        assert wait_gone(q.pid)
    finally:
        for proc in (p, q):
            if alive(proc.pid):
                os.kill(proc.pid, 9)


def test_exit_on_parent_death_false_outlives_a_crashed_parent(tmp_path):
    info = start_and_leave(tmp_path, {"exit_on_parent_death": False}, "crash")
    pid = info["pid"]
    try:
        time.sleep(0.3)
        assert alive(pid)
        client = RPCClient(info["address"])
        assert client._import("os").getpid() == pid
        client.close_server()
        assert wait_gone(pid)
    finally:
        if alive(pid):
            os.kill(pid, 9)


def test_a_child_exits_with_its_crashed_parent_by_default(tmp_path):
    info = start_and_leave(tmp_path, {}, "crash")
    assert wait_gone(info["pid"], timeout=5), "the child outlived its parent"


def test_a_daemon_cannot_exit_on_parent_death():
    with pytest.raises(ValueError, match="daemon"):
        ProcessSpawner(daemon=True, exit_on_parent_death=True)


def test_process_spawner_is_a_context_manager():
    with ProcessSpawner() as p:
        assert p.client._import("os").getpid() == p.pid
    assert p.poll() is not None
    with ProcessSpawner(daemon=True) as d:
        pid = d.pid
    assert wait_gone(pid)
