"""The across family: Connection over a child's pipes, a channel object and
this process's stdio, with a real child serving `python -m farcall.across`.
Every wait is bounded."""

import copy
import itertools
import operator
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

import pytest

import across_helpers as h
from farcall import across
from farcall.across import Connection, DisconnectError, Local, OperationError
from farcall_testutil import SocketChannel
from across_testing import child_env, conn, fresh, serve_command  # noqa: F401 (fixtures)

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
pytestmark = pytest.mark.timeout(60)


def test_call_runs_in_the_child(conn):
    assert conn.call(operator.add, 1, 2) == 3
    assert conn.call(os.getpid) != os.getpid()
    # `func` and `self` are ordinary keyword names.
    assert conn.call(dict, a=1, func=2, self=3) == {"a": 1, "func": 2, "self": 3}


def test_results_and_arguments_travel_by_copy(conn):
    data = {"k": [1, 2, (3, 4)], "b": b"x" * 10000}
    assert conn.call(h.identity, data) == data
    assert conn.execute("x + y", x=2, y=3) == 5
    assert conn.execute("z = 1") is None


def test_create_returns_a_proxy_that_forwards_public_and_container_methods(conn):
    p = conn.create(h.Thing)
    assert isinstance(p, across.Proxy)
    assert across.get_proxy_connection(p) is conn
    assert p.pub() == 42
    assert len(p) == 3 and 2 in p and p[0] == 1
    p[0] = 10
    assert p[0] == 10
    del p[0]
    assert len(p) == 2
    assert p(1, 2) == ("called", (1, 2))
    assert p.me() is p
    with pytest.raises(AttributeError):
        p._priv()
    assert conn.call_ref(h.Thing).pub() == 42


def test_iteration_is_lazy_so_an_infinite_generator_works(conn):
    assert list(conn.create(h.Thing)) == [1, 2, 3]
    counter = conn.create(itertools.count)
    assert list(itertools.islice(counter, 5)) == [0, 1, 2, 3, 4]
    it = iter(conn.create(h.Thing))
    assert next(it) == 1


def test_replicate_deepcopy_and_a_proxy_going_home(conn):
    r = conn.replicate([1, 2])
    r.append(3)
    assert copy.deepcopy(r) == [1, 2, 3]
    # Sent back to its side, a proxy arrives as the object itself.
    assert conn.call(h.is_same, r, r) is True


def test_local_passes_our_object_by_proxy_both_ways(conn):
    mine = []
    assert conn.call(h.append_to, Local(mine), "x") == 1
    assert conn.call(h.append_to, across.ref(mine), "y") == 2
    assert mine == ["x", "y"]
    thing = conn.call(h.make_local_thing)
    assert isinstance(thing, across.Proxy) and thing.pub() == 42


def test_get_connection_in_a_call_and_outside_one(conn):
    chain = conn.call(h.bounce, 3)
    pids = [pid for pid, _ in chain]
    assert pids[0] == pids[2] != os.getpid() and pids[1] == pids[3] == os.getpid()
    # Callbacks into us ran in the thread that waited for them.
    assert {name for pid, name in chain if pid == os.getpid()} == {
        threading.current_thread().name
    }
    with pytest.raises(ValueError) as info:
        across.get_connection()
    assert isinstance(info.value, RuntimeError)


def test_a_remote_exception_keeps_its_type_chain_and_frames(conn):
    with pytest.raises(ValueError) as info:
        conn.call(h.boom)
    e = info.value
    assert str(e) == "outer"
    assert isinstance(e.__cause__, ZeroDivisionError)
    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    assert "across_helpers.py" in text and "in boom" in text
    assert "[Below lines obtained from host" in text
    # The connection goes on.
    assert conn.call(operator.add, 1, 1) == 2


def test_unpicklable_arguments_and_results_fail_the_call_only(conn):
    with pytest.raises(OperationError, match="Pickling failed"):
        conn.call(h.identity, threading.Lock())
    with pytest.raises(OperationError, match="Pickling failed"):
        conn.call(h.unpicklable_result)
    assert conn.call(operator.add, 2, 2) == 4


def test_numpy_arrays_travel_out_of_band_both_ways(conn):
    np = pytest.importorskip("numpy")
    a = np.arange(1 << 20, dtype=np.float64)  # 8 MiB
    pickled, buffers, refs = across._wire.dumps(conn, a)
    assert len(pickled) < 1000 and len(buffers) == 1
    total, shape, writeable = conn.call(h.sum_array, a)
    assert total == float(a.sum()) and shape == a.shape and writeable
    b = conn.call(h.make_array, 1 << 20)
    assert np.array_equal(a, b) and b.flags.writeable


def test_many_threads_run_at_once_on_the_other_side(fresh):
    conn = fresh()
    # One idle pool thread there, then a burst: every request of the burst
    # must get a thread of its own (a burst used to notify that one
    # sleeper four times and run the requests one after the other).
    assert conn.call(operator.add, 1, 1) == 2
    time.sleep(0.05)
    results = []

    def run():
        results.append(conn.call(h.wait_at_barrier))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert len(results) == 4 and len(set(results)) == 4


def test_a_killed_child_fails_pending_and_later_calls_fast(fresh):
    c = fresh()
    pid = c.call(os.getpid)
    errors = []

    def pending():
        try:
            c.call(h.sleep, 30)
        except DisconnectError as e:
            errors.append((time.monotonic(), e))

    t = threading.Thread(target=pending)
    t.start()
    time.sleep(0.2)
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    t.join(5)
    assert errors and errors[0][0] - killed < 1.0
    with pytest.raises(DisconnectError):
        c.call(operator.add, 1, 2)
    assert not c.is_connected()


def test_close_and_its_states(fresh):
    c = fresh()
    assert c.is_connected()
    with c:
        assert c.call(operator.add, 1, 2) == 3
    assert not c.is_connected()
    with pytest.raises(DisconnectError, match="Connection is closed"):
        c.call(operator.add, 1, 2)
    with pytest.raises(ValueError, match="Connection is closed"):
        c.__enter__()
    c.close()  # again: nothing


def test_cancel_ends_the_connection(fresh):
    c = fresh()
    c.cancel()
    with pytest.raises(DisconnectError, match="cancelled"):
        c.call(operator.add, 1, 2)


def test_garbage_from_the_child_fails_the_open_fast():
    garbage = "import sys, time; sys.stdout.buffer.write(b'garbage!' * 64); sys.stdout.flush(); time.sleep(20)"
    started = time.monotonic()
    with pytest.raises((across.ProtocolError, DisconnectError, OSError)):
        Connection.from_command([sys.executable, "-c", garbage])
    assert time.monotonic() - started < 12


def test_from_pipes_and_a_child_that_serves_its_stdio():
    proc = subprocess.Popen(
        serve_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env()
    )
    try:
        with Connection.from_pipes(proc.stdout, proc.stdin) as c:
            assert c.call(operator.mul, 6, 7) == 42
            # A print in the child goes to its stderr, not into the channel.
            c.call(print, "hello from the child")
            assert c.call(operator.add, 1, 1) == 2
    finally:
        proc.wait(10)


def _both_ends(kwargs_a, kwargs_b):
    """Connection(channel) on both ends of a socket pair, each in its own
    thread (each waits for the other's hello): the connections, or the
    exceptions they raised."""
    a, b = socket.socketpair()
    ends = {}

    def open_end(name, sock, kwargs):
        try:
            ends[name] = Connection(SocketChannel(sock), **kwargs)
        except Exception as e:  # noqa: BLE001 - what the test looks at
            ends[name] = e

    threads = [
        threading.Thread(target=open_end, args=("a", a, kwargs_a)),
        threading.Thread(target=open_end, args=("b", b, kwargs_b)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
        assert not t.is_alive(), "the handshake hung"
    return ends["a"], ends["b"]


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"key": "ab" * 32}, {"auth": False}],
    ids=["per-user key", "explicit key", "auth=False"],
)
def test_a_users_channel_object_carries_a_connection(kwargs):
    ca, cb = _both_ends(kwargs, kwargs)
    assert isinstance(ca, Connection) and isinstance(cb, Connection), (ca, cb)
    try:
        assert ca.call(operator.add, 2, 3) == 5
        assert cb.call(operator.add, 4, 5) == 9
        mine = []
        cb.call(h.append_to, Local(mine), 1)
        assert mine == [1]
    finally:
        ca.close()
        cb.close()


def test_a_wrong_key_over_a_channel_is_refused_on_both_sides_at_once():
    started = time.monotonic()
    ca, cb = _both_ends({"key": "ab" * 32}, {"key": "cd" * 32})
    assert isinstance(ca, PermissionError) and isinstance(cb, PermissionError), (ca, cb)
    assert time.monotonic() - started < 3


def test_a_channel_peer_that_skips_the_handshake_is_refused():
    started = time.monotonic()
    ca, cb = _both_ends({}, {"auth": False})
    assert isinstance(ca, PermissionError), ca
    assert "does not authenticate" in str(ca)
    assert isinstance(cb, Exception), cb  # its private hello was answered by a keyed one
    assert time.monotonic() - started < 3


def test_a_channel_that_echoes_our_hello_back_is_refused():
    # A reflector: whatever we send comes back, so the "peer" holds our
    # own nonce and would need our own proof.
    a, b = socket.socketpair()

    def echo():
        while True:
            data = b.recv(65536)
            if not data:
                return
            b.sendall(data)

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    with pytest.raises(across.ProtocolError, match="our own hello"):
        Connection(SocketChannel(a))
    b.close()


@pytest.mark.parametrize(
    "value",
    [None, True, False, 0, -(2**63), 2**63 - 1, 2**63, -(2**80), 1.5, float("inf"), "", "héllo",
     signal.SIGINT, b"bytes", 3 + 4j],
    ids=lambda v: type(v).__name__ + ":" + repr(v)[:12],
)
def test_results_come_back_with_their_own_type_and_value(conn, value):
    # Plain results travel as values, the rest pickled: either way the
    # caller gets the same type and value (an IntEnum stays one, a bool
    # stays a bool, an int past 64 bits is whole).
    got = conn.call(copy.copy, value)
    assert type(got) is type(value) and got == value


def test_functions_and_classes_go_by_name_once_and_the_rest_as_before(conn):
    # By name: a function, a builtin, a class (create), each pickled once
    # for the connection.
    assert conn.call(h.append_to, [1], 2) == 2
    assert conn.call(h.append_to, [], 2) == 1
    assert conn.call(operator.add, 2, 3) == 5
    d = conn.create(dict, a=1)
    assert isinstance(d, across.Proxy) and d["a"] == 1
    assert conn._names[h.append_to] is not None and conn._names[dict] is not None
    # Not by name: a lambda or a local function cannot be pickled at all,
    # as before; the connection goes on.
    for func in (lambda: 1, _local_function()):
        assert conn._names[func] is None
        with pytest.raises(OperationError, match="Pickling failed"):
            conn.call(func)
    assert conn.call(operator.mul, 6, 7) == 42


def _local_function():
    def local():
        return 1

    return local


def test_a_name_the_other_side_cannot_import_fails_as_an_unpickling_error(conn):
    import types as _types

    module = _types.ModuleType("only_in_the_parent")
    exec("def f():\n    return 1\n", module.__dict__)
    sys.modules["only_in_the_parent"] = module
    try:
        with pytest.raises(OperationError, match="Unpickling failed due to ModuleNotFoundError"):
            conn.call(module.f)
        with pytest.raises(OperationError, match="Unpickling failed"):
            conn.create(module.f)
    finally:
        del sys.modules["only_in_the_parent"]
    assert conn.call(operator.add, 1, 1) == 2


def test_the_names_kept_per_connection_are_bounded():
    names = across._wire.Names()
    for i in range(across._wire._NAMES_KEPT + 10):
        names[type("C%d" % i, (), {})]  # local classes: not by name, still kept
    assert len(names) <= across._wire._NAMES_KEPT


def test_the_names_are_importable_from_farcall():
    import farcall

    assert farcall.Connection is Connection and farcall.Local is Local is farcall.ref
    assert farcall.get_connection is across.get_connection
    assert farcall.DisconnectError is DisconnectError
    assert issubclass(DisconnectError, OperationError)


def test_ctrl_c_interrupts_a_waiting_call_and_the_connection_goes_on(fresh):
    c = fresh()
    assert threading.current_thread() is threading.main_thread()
    # Python's own Ctrl-C handler, whatever this process inherited (a
    # shell's background job starts with SIGINT ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        c.call(h.sleep, 30)
    assert time.monotonic() - started < 2
    timer.join()
    signal.signal(signal.SIGINT, previous)
    assert c.call(operator.add, 1, 2) == 3


def test_the_example_of_docs_across_md_runs():
    text = open(os.path.join(TESTS_DIR, "..", "docs", "across.md")).read()
    example = text.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(example, "docs/across.md", "exec"), {})


# ---- sockets: a listener in a child (`farcall serve --across`) -------------


@pytest.fixture(scope="module", params=["tcp", "unix"])
def across_server(request, tmp_path_factory):
    if request.param == "tcp":
        address = "tcp+native://127.0.0.1:*"
    else:
        address = "unix://%s" % (tmp_path_factory.mktemp("across") / "s.sock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "farcall", "serve", "--across", address],
        stdout=subprocess.PIPE,
        env=child_env(),
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("farcall across server at "), line
    yield request.param, line.split(" at ", 1)[1].strip()
    proc.terminate()
    proc.wait(10)


def connect(kind, address, **kwargs):
    if kind == "tcp":
        host, port = address[len("tcp+native://") :].rsplit(":", 1)
        return Connection.from_tcp(host, int(port), **kwargs)
    return Connection.from_unix(address[len("unix://") :], **kwargs)


def test_a_socket_connection_calls_both_ways(across_server):
    kind, address = across_server
    with connect(kind, address) as c:
        assert c.call(operator.add, 1, 2) == 3
        assert c.call(os.getpid) != os.getpid()
        chain = c.call(h.bounce, 2)
        assert [pid == os.getpid() for pid, _ in chain] == [False, True, False]
        mine = []
        c.call(h.append_to, Local(mine), 5)
        assert mine == [5]


def test_a_wrong_key_is_refused_fast_and_the_server_goes_on(across_server):
    kind, address = across_server
    started = time.monotonic()
    with pytest.raises(PermissionError):
        connect(kind, address, key=b"k" * 32)
    assert time.monotonic() - started < 5
    # Garbage instead of a handshake: dropped, the server goes on.
    if kind == "tcp":
        host, port = address[len("tcp+native://") :].rsplit(":", 1)
        raw = socket.create_connection((host, int(port)), timeout=5)
    else:
        raw = socket.socket(socket.AF_UNIX)
        raw.settimeout(5)
        raw.connect(address[len("unix://") :])
    raw.sendall(b"\xff" * 4096)
    raw.close()
    with connect(kind, address) as c:
        assert c.call(operator.mul, 3, 4) == 12


def test_from_socket_runs_the_handshake_over_a_connected_socket(across_server):
    kind, address = across_server
    if kind == "tcp":
        host, port = address[len("tcp+native://") :].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=5)
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(address[len("unix://") :])
    with Connection.from_socket(sock) as c:
        assert c.call(operator.add, 20, 22) == 42


def test_a_listener_in_this_process_serves_its_own_objects():
    from farcall.across import servers

    with servers.Listener("tcp+native://127.0.0.1:*") as listener:
        accepted = []
        t = threading.Thread(target=lambda: accepted.append(listener.accept(10)))
        t.start()
        host, port = listener.address[len("tcp+native://") :].rsplit(":", 1)
        with Connection.from_tcp(host, int(port)) as c:
            t.join(10)
            server_side = accepted[0]
            assert c.call(os.getpid) == os.getpid()
            assert server_side.call(operator.add, 2, 2) == 4
            assert listener.connections() == [server_side]


def test_an_open_listener_is_refused_on_a_public_address():
    from farcall.across import servers

    with pytest.raises(ValueError, match="loopback"):
        servers.Listener("tcp+native://0.0.0.0:*", auth=False)
    with servers.Listener("tcp+native://127.0.0.1:*", auth=False) as listener:
        assert listener.address.startswith("tcp+native://127.0.0.1:")
