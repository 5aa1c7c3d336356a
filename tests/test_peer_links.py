"""Peer links as a user meets them: callbacks, dead and stopped children,
timeouts nobody waits for, Ctrl-C, many threads through one link, calls
both ways, A -> B -> A. Each on a native link and over ZeroMQ where it
applies."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import farcall
from farcall import DisconnectError, RPCClient
from farcall_test_helpers import Bouncer
from farcall_testutil import TESTS_DIR, SocketChannel, ThreadServer, import_helpers

TRANSPORTS = [None, "tcp://127.0.0.1:*"]
IDS = ["native", "zmq"]


@pytest.fixture(params=TRANSPORTS, ids=IDS)
def counter_child(request, fresh_child):
    """A fresh child on each transport, and a Counter living in it."""
    proc = fresh_child(address=request.param) if request.param else fresh_child()
    helpers = import_helpers(proc.client)
    return proc, helpers, helpers.Counter()


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def test_a_done_callback_may_make_sync_calls_on_the_same_client(counter_child):
    proc, helpers, counter = counter_child
    done = threading.Event()
    seen = {}

    def callback(f):
        t0 = time.monotonic()
        seen["nested"] = counter.add(3, 4)  # a sync call on the same link
        seen["took"] = time.monotonic() - t0
        seen["thread"] = threading.get_ident()
        done.set()

    f = counter.add(1, 2, _sync="async")
    f.add_done_callback(callback)
    t0 = time.monotonic()
    assert counter.add(5, 6) == 11  # meanwhile, on this thread
    assert time.monotonic() - t0 < 1.0
    assert done.wait(3)
    assert seen["nested"] == 7 and seen["took"] < 1.0, seen
    assert seen["thread"] != threading.get_ident()
    assert f.result(timeout=1) == 3


def test_an_async_timeout_is_enforced_when_nobody_waits(counter_child):
    proc, helpers, counter = counter_child
    done = threading.Event()
    f = counter.sleep(3.0, _sync="async", _timeout=0.2)
    t0 = time.monotonic()
    f.add_done_callback(lambda _: done.set())
    assert done.wait(2), "the deadline passed unnoticed"
    assert time.monotonic() - t0 < 1.5
    assert isinstance(f.exception(timeout=0), TimeoutError)
    # A call with no timeout at all is never failed by one.
    g = counter.sleep(0.3, _sync="async", _timeout=None)
    assert g.result(timeout=5) == 0.3


def test_a_killed_child_fails_every_call_at_once(counter_child):
    proc, helpers, counter = counter_child
    pending = [counter.sleep(30, _sync="async") for _ in range(5)]
    outcome = {}

    def sync_call():
        try:
            counter.sleep(30)
        except BaseException as e:
            outcome["error"] = e
            outcome["at"] = time.monotonic()

    t = threading.Thread(target=sync_call, daemon=True)
    t.start()
    time.sleep(0.3)
    proc.kill()
    killed = time.monotonic()
    for f in pending:
        assert isinstance(f.exception(timeout=5), DisconnectError)
    t.join(5)
    assert isinstance(outcome.get("error"), DisconnectError), outcome
    assert outcome["at"] - killed < 1.0
    # Without a call, the client knows; later calls of every kind fail fast.
    assert wait_for(proc.client.disconnected, 2)
    t0 = time.monotonic()
    for sync in ("sync", "async", "off"):
        with pytest.raises(DisconnectError):
            r = counter.add(1, 2, _sync=sync)
            if sync == "async":
                r.result(timeout=5)
    assert time.monotonic() - t0 < 0.5


def test_closing_the_server_from_another_client_is_seen_at_once(counter_child):
    proc, helpers, counter = counter_child
    assert not proc.client.disconnected()
    answers = []

    def close_from_elsewhere():
        other = RPCClient(proc.address, serializer="msgpack")  # a link of its own
        answers.append(other.ping())
        other.close_server()

    t = threading.Thread(target=close_from_elsewhere)
    t.start()
    t.join(10)
    assert answers == ["pong"]
    assert wait_for(proc.client.disconnected, 2), "the disconnect notice was not read"
    t0 = time.monotonic()
    with pytest.raises(DisconnectError):
        counter.add(1, 2)
    assert time.monotonic() - t0 < 0.5


@pytest.mark.parametrize("address", ["unix://*", "tcp://127.0.0.1:*"], ids=IDS)
def test_a_b_a_between_two_servers_in_threads(address):
    servers = [ThreadServer(address) for _ in range(2)]
    try:
        for ts in servers:
            ts["b"] = Bouncer()
        p1 = RPCClient.get_client(servers[0].address)["b"]
        p2 = RPCClient.get_client(servers[1].address)["b"]
        t0 = time.monotonic()
        assert p1.bounce(p2, p1, 5) == 5
        assert time.monotonic() - t0 < 3
    finally:
        for ts in servers:
            ts.close()


@pytest.mark.parametrize("address", TRANSPORTS, ids=IDS)
def test_a_hundred_threads_through_one_link(fresh_child, address):
    proc = fresh_child(address=address) if address else fresh_child()
    counter = import_helpers(proc.client).Counter()
    start = threading.Barrier(100)
    errors = []

    def work():
        try:
            start.wait(10)
            for _ in range(20):
                counter.incr()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert counter.get() == 2000


def test_a_callback_without_a_server_comes_back_over_the_link(fresh_child):
    """This thread has no RPCServer: a local function passed to the child
    is served over the link itself; called during the call, it runs in the
    waiting thread; called later, on farcall's pool."""
    proc = fresh_child()
    helpers = import_helpers(proc.client)
    me = threading.get_ident()
    assert helpers.call(lambda x: (threading.get_ident(), x * 2), 21) == (me, 42)
    later = threading.Event()
    ran_in = []

    def later_callback(x):
        ran_in.append((threading.get_ident(), x))
        later.set()

    helpers.call_later(later_callback, 0.05, "hi")
    assert later.wait(5)
    assert ran_in[0][1] == "hi" and ran_in[0][0] != me


def test_over_zeromq_a_thread_without_a_server_cannot_send_objects(fresh_child):
    proc = fresh_child(address="tcp://127.0.0.1:*")
    helpers = import_helpers(proc.client)
    with pytest.raises(TypeError, match="no server in this thread"):
        helpers.call(lambda: 1)
    assert helpers.echo(3) == 3  # the link is fine


def run_script(body, env=None, timeout=60):
    """Runs a Python script in a fresh interpreter; returns its stdout."""
    script = textwrap.dedent(body)
    full_env = dict(os.environ, PYTHONPATH=TESTS_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    full_env.update(env or {})
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.parametrize("address", ["unix://*", "tcp://127.0.0.1:*"], ids=IDS)
def test_ctrl_c_interrupts_a_sync_call_and_a_future(address):
    out = run_script(
        f"""
        import os, signal, threading, time
        import farcall
        from farcall_testutil import import_helpers

        # Python's own Ctrl-C handler, whatever this process inherited (a
        # shell's background job starts with SIGINT ignored).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        proc = farcall.ProcessSpawner(address={address!r})
        counter = import_helpers(proc.client).Counter()

        def interrupt(after):
            time.sleep(after)
            os.kill(os.getpid(), signal.SIGINT)

        # A sync call waiting without limit behind a busy child.
        busy = counter.sleep(1.0, _sync="async")
        threading.Thread(target=interrupt, args=(0.3,)).start()
        t0 = time.monotonic()
        try:
            counter.incr(_timeout=None)
            print("sync: not interrupted")
        except KeyboardInterrupt:
            print("sync: interrupted after", round(time.monotonic() - t0, 2))
        busy.result(timeout=10)
        # The interrupted call was cancelled before it ran.
        print("count:", counter.get())

        f = counter.sleep(30, _sync="async")
        threading.Thread(target=interrupt, args=(0.3,)).start()
        t0 = time.monotonic()
        try:
            f.result()
            print("future: not interrupted")
        except KeyboardInterrupt:
            print("future: interrupted after", round(time.monotonic() - t0, 2))
        proc.kill()
        """
    )
    lines = dict(line.split(":", 1) for line in out.strip().splitlines())
    assert "interrupted after" in lines["sync"], out
    assert float(lines["sync"].split()[-1]) < 1.0, out
    assert lines["count"].strip() == "0", out
    assert "interrupted after" in lines["future"], out
    assert float(lines["future"].split()[-1]) < 1.0, out


def test_a_stopped_child_is_found_by_the_heartbeat_and_a_long_call_is_not():
    out = run_script(
        """
        import os, signal, time
        import farcall
        from farcall_testutil import import_helpers

        proc = farcall.ProcessSpawner()
        counter = import_helpers(proc.client).Counter()
        # Busy for four heartbeat timeouts: the child's I/O side answers.
        print("long:", counter.sleep(2.5))
        os.kill(proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            counter.add(1, 2, _timeout=30)
            print("stopped: answered")
        except farcall.DisconnectError as e:
            print("stopped:", round(time.monotonic() - t0, 2), "heartbeat" in str(e))
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        """,
        env={"FARCALL_HEARTBEAT": "0.6"},
    )
    lines = dict(line.split(":", 1) for line in out.strip().splitlines())
    assert lines["long"].strip() == "2.5", out
    took, named = lines["stopped"].split()
    assert float(took) < 3 and named == "True", out


def open_pair():
    """Two clients on the two ends of one link over user channel objects."""
    a, b = socket.socketpair()
    ends = {}

    def open_end(name, sock):
        ends[name] = RPCClient.over_channel(SocketChannel(sock))

    t = threading.Thread(target=open_end, args=("b", b))
    t.start()
    open_end("a", a)
    t.join(10)
    return ends["a"], ends["b"], (a, b)


def test_a_link_over_a_users_channel_object_carries_calls_both_ways():
    left, right, _ = open_pair()
    # Each end imports in the other's process (here both are this one):
    # the calls go over the channel object and back.
    assert left._import("math").sqrt(16) == 4.0
    assert right._import("math").sqrt(25) == 5.0
    counter = left._import("farcall_test_helpers").Counter()
    assert counter.incr(2) == 2
    # A callback from the side that waits runs in the waiting thread.
    me = threading.get_ident()
    helpers = right._import("farcall_test_helpers")
    assert helpers.call(lambda: threading.get_ident()) == me
    left.close()
    with pytest.raises(DisconnectError):
        right.ping()


def test_garbage_on_a_users_channel_ends_the_link_with_an_error():
    left, right, (a, b) = open_pair()
    assert left.ping() == "pong"
    b.sendall(b"\xff" * 64)  # not a message: the reader of `a` drops the link
    assert wait_for(left.disconnected, 5)
    with pytest.raises(DisconnectError):
        left.ping()
