"""teleprox's start_process on farcall (its signature, checks, wrappers,
logging options and local_server), and teleprox's proxy identity and
pickling. Real children, real log server; every wait is bounded."""

import logging
import os
import pickle
import stat
import subprocess
import sys
import threading
import time

import pytest

import farcall
from farcall import ProcessSpawner, RPCServer, start_process
from farcall import log as flog
from farcall_testutil import import_helpers, stop_quietly

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"daemon": 1}, TypeError),
        ({"qt": "yes"}, TypeError),
        ({"name": 3}, TypeError),
        ({"address": 5}, TypeError),
        ({"log_level": 1.5}, TypeError),
        ({"log_stdio": "no"}, TypeError),
        ({"exit_on_parent_death": "x"}, TypeError),
        ({"daemon": True, "exit_on_parent_death": True}, ValueError),
        ({"daemon": True, "log_stdio": True}, ValueError),
        ({"daemon": True, "stdout": subprocess.DEVNULL}, ValueError),
        ({"log_stdio": True, "stdout": subprocess.DEVNULL}, ValueError),
        ({"stdin": subprocess.DEVNULL}, ValueError),
        ({"stdout": subprocess.PIPE}, ValueError),
        ({"serializer": "json"}, ValueError),
        ({"local_server": "everywhere"}, ValueError),
        ({"log_level": "loud"}, ValueError),
    ],
)
def test_combinations_that_cannot_work_are_refused(kwargs, error):
    before = set(os.listdir("/proc"))
    with pytest.raises(error):
        start_process(**kwargs)
    # Refused before anything started, or stopped again.
    time.sleep(0.1)
    children = [
        p for p in set(os.listdir("/proc")) - before if p.isdigit() and _parent(p) == os.getpid()
    ]
    assert not children


def _parent(pid):
    try:
        with open("/proc/%s/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_start_process_is_a_process_spawner_and_a_context_manager():
    with start_process(name="tp-child") as proc:
        assert isinstance(proc, ProcessSpawner)
        assert proc.name == "tp-child" and proc.qt is False and proc.daemon is False
        assert proc.client._import("os").getpid() == proc.pid
    assert proc.poll() is not None


def test_stdout_and_stderr_go_where_they_are_told(tmp_path):
    out_path = tmp_path / "out.txt"
    with open(out_path, "w") as out:
        proc = start_process(stdout=out, stderr=subprocess.DEVNULL)
    try:
        child_os = proc.client._import("os")
        child_os.write(1, b"to the file\n")
        child_os.write(2, b"to nowhere\n")
        fds = [child_os.readlink("/proc/self/fd/%d" % fd) for fd in (1, 2)]
    finally:
        proc.stop()
    assert out_path.read_text() == "to the file\n"
    assert fds == [str(out_path), "/dev/null"]


def test_conda_env_and_shell_wrap_the_command(tmp_path, monkeypatch):
    # A stand-in for conda that notes how it was called and runs the rest.
    marker = tmp_path / "conda-called"
    conda = tmp_path / "conda"
    conda.write_text(
        "#!/bin/sh\n"
        'echo "$@" > %s\n'
        '[ "$1 $2 $3" = "run --no-capture-output -n" ] || exit 9\n'
        "env_name=$4; shift 4\n"
        'exec "$@"\n' % marker
    )
    conda.chmod(conda.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", "%s%s%s" % (tmp_path, os.pathsep, os.environ["PATH"]))
    with start_process(conda_env="lab", executable=sys.executable) as proc:
        assert proc.client._import("sys").executable == sys.executable
    assert marker.read_text().split()[:4] == ["run", "--no-capture-output", "-n", "lab"]
    with start_process(shell=True) as proc:
        assert proc.client._import("os").getpid() == proc.pid


def collecting_server():
    logger = logging.getLogger("farcall.test.start_process.%d" % time.monotonic_ns())
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger.addHandler(Keep())
    server = flog.LogServer(logger)
    server.start()
    return server, records


def wait_for(records, predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(predicate(r) for r in records):
            return True
        time.sleep(0.02)
    return False


def test_log_send_level_and_log_stdio():
    server, records = collecting_server()
    try:
        proc = start_process(
            name="leveled", log_addr=server.address, log_level="DEBUG", log_send_level="WARNING"
        )
        try:
            logging_ = proc.client._import("logging")
            assert logging_.getLogger().getEffectiveLevel() == logging.DEBUG
            logging_.getLogger("x").info("not sent")
            logging_.getLogger("x").warning("sent")
            proc.client._import("builtins").print("a printed line")
            assert wait_for(records, lambda r: r.getMessage() == "sent")
            assert wait_for(records, lambda r: "a printed line" in r.getMessage())
            assert not any(r.getMessage() == "not sent" for r in records)
        finally:
            proc.stop()
        quiet = start_process(name="quiet", log_addr=server.address, log_stdio=False)
        try:
            quiet.client._import("logging").getLogger("y").warning("record of quiet")
            quiet.client._import("os").write(1, b"a line not captured\n")
            assert wait_for(records, lambda r: r.getMessage() == "record of quiet")
            fd1 = quiet.client._import("os").readlink("/proc/self/fd/1")
        finally:
            quiet.stop()
        time.sleep(0.3)
        assert not [(r.name, r.levelname, r.getMessage()) for r in records if "not captured" in r.getMessage()]
        assert not fd1.startswith("pipe:")  # fd 1 was left as it was
    finally:
        server.close()


def test_local_server_threaded_serves_callbacks_while_nobody_waits(fresh_child):
    proc = start_process(address="tcp://127.0.0.1:*", local_server="threaded")
    try:
        assert isinstance(proc.client.local_server, RPCServer)
        helpers = import_helpers(proc.client)
        called = threading.Event()
        # A one-way call: this thread does not wait, the local server's own
        # thread serves the callback when the child makes it.
        helpers.call_later(called.set, 0.2, _sync="off")
        assert called.wait(10), "the callback was not served"
    finally:
        stop_quietly(proc)


def test_local_server_lazy_and_a_server_of_ours():
    def body(spec):
        proc = start_process(address="tcp://127.0.0.1:*", local_server=spec)
        try:
            helpers = import_helpers(proc.client)
            seen = []
            helpers.call(seen.append, "called back")
            return seen
        finally:
            stop_quietly(proc)

    from farcall_testutil import run_in_thread

    assert run_in_thread(body, "lazy") == ["called back"]
    ours = RPCServer("tcp://127.0.0.1:*")
    threading.Thread(target=ours.run_forever, daemon=True).start()
    try:
        assert run_in_thread(body, ours) == ["called back"]
    finally:
        ours.close()


@pytest.mark.parametrize("address", [None, "tcp://127.0.0.1:*"])
def test_one_proxy_per_remote_object_while_it_lives(address):
    kwargs = {} if address is None else {"address": address}
    with start_process(**kwargs) as proc:
        client = proc.client
        client["x"] = client._import("collections").OrderedDict(a=1)
        first = client["x"]
        assert client["x"] is first
        assert client["x"] is client["x"]
        assert first._obj_id == client["x"]._obj_id
        del first
        import gc

        gc.collect()
        again = client["x"]
        assert again["a"] == 1
        # A deferred attribute is a proxy of its own.
        assert again.keys is not client["x"].values


@pytest.mark.parametrize("address", [None, "tcp://127.0.0.1:*"])
def test_a_pickled_proxy_refers_to_the_same_object(address, fresh_child):
    kwargs = {} if address is None else {"address": address}
    owner = fresh_child(**kwargs)
    other = fresh_child()
    d = owner.client._import("collections").OrderedDict(a=1)
    data = pickle.dumps(d)
    assert pickle.loads(data) is d  # here: the live proxy itself
    # In another process: a proxy to the same object, usable there.
    assert import_helpers(other.client).unpickle_and_set(data, "b", 2) == "ObjectProxy"
    assert d["b"] == 2
    # In the process that serves it: the object itself.
    assert import_helpers(owner.client).unpickle_and_set(data, "c", 3) == "OrderedDict"
    assert d["c"] == 3
