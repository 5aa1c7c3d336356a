"""pyacq compatibility: results by proxy are the very objects, lazy
iteration, deferred attributes in comparisons, Future as a
concurrent.futures.Future; on every transport a child can use."""

import asyncio
import concurrent.futures as cf
import gc
import itertools
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

import farcall
from farcall import ObjectProxy, ProcessSpawner
from farcall_testutil import import_helpers, pid_gone, run_in_thread, stop_quietly, wait_until

TRANSPORTS = ["unix://*", "tcp+native://127.0.0.1:*", "tcp://127.0.0.1:*"]


@pytest.fixture(scope="module", params=TRANSPORTS)
def proc(request):
    """A child serving on each transport in turn."""
    p = ProcessSpawner(address=request.param, name="compat")
    yield p
    stop_quietly(p)


@pytest.fixture
def remote(proc):
    """Modules of the child, by proxy."""
    c = proc.client
    return type("Remote", (), {m: c._import(m) for m in ("types", "operator", "builtins", "itertools", "numpy", "os", "time")})


# ---- item 1: return_type='proxy' refers to the very object ------------------


def test_a_result_by_proxy_is_the_object_itself(remote):
    ns = remote.types.SimpleNamespace(data=[1, 2])
    ref = remote.operator.attrgetter("data")(ns, _return_type="proxy")
    assert isinstance(ref, ObjectProxy)
    ref.append(3)
    assert ns.data._get_value() == [1, 2, 3]


def test_a_dict_result_by_proxy_is_the_object_itself(remote):
    ns = remote.types.SimpleNamespace(d={"a": 1})
    ref = remote.operator.attrgetter("d")(ns, _return_type="proxy")
    ref["b"] = 2
    assert ns.d._get_value() == {"a": 1, "b": 2}


def test_a_numpy_buffer_by_proxy_shows_remote_changes(remote):
    np = remote.numpy
    holder = remote.types.SimpleNamespace(buf=np.zeros(4))
    buf = remote.operator.attrgetter("buf")(holder, _return_type="proxy")
    np.copyto(buf, np.ones(4))
    assert holder.buf._get_value().tolist() == [1.0, 1.0, 1.0, 1.0]
    # ... and fetching the deferred attribute by proxy is the same object.
    same = holder.buf
    same._set_proxy_options(return_type="proxy")
    np.copyto(same._undefer(), np.full(4, 2.0))
    assert holder.buf._get_value().tolist() == [2.0] * 4


def test_a_deferred_attribute_argument_is_the_object_itself(remote):
    ns = remote.types.SimpleNamespace(data=[1, 2])
    assert remote.operator.is_(ns.data, ns.data) is True
    remote.operator.setitem(ns.data, 0, 9)
    assert ns.data._get_value() == [9, 2]


def test_get_obj_returns_the_value(proc, remote):
    ns = remote.types.SimpleNamespace(data=[1, 2])
    ref = remote.operator.attrgetter("data")(ns, _return_type="proxy")
    assert proc.client.get_obj(ref) == [1, 2]
    assert proc.client.get_obj(ns.data) == [1, 2]


# ---- item 2: iteration is lazy ------------------------------------------------


def test_iterating_a_remote_iterator(remote):
    it = remote.builtins.iter([1, 2, 3], _return_type="proxy")
    assert list(it) == [1, 2, 3]
    it = remote.builtins.iter([1, 2, 3], _return_type="proxy")
    assert next(it) == 1
    assert [x for x in it] == [2, 3]
    with pytest.raises(StopIteration):
        next(it)


def test_iterating_an_endless_generator_fetches_only_what_is_asked(remote):
    counter = remote.itertools.count()
    assert list(itertools.islice(counter, 3)) == [0, 1, 2]
    # Nothing was fetched ahead: the next item is the fourth.
    assert next(counter) == 3


def test_a_for_loop_over_a_remote_list(remote):
    items = remote.builtins.list([0, 1, 2, 3, 4], _return_type="proxy")
    assert [x for x in items] == [0, 1, 2, 3, 4]
    assert list(items) == [0, 1, 2, 3, 4]


def test_iterating_from_several_threads(remote):
    def take(n):
        it = remote.builtins.iter(list(range(n)), _return_type="proxy")
        return list(it)

    with cf.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(take, [10, 20, 30, 40]))
    assert results == [list(range(n)) for n in (10, 20, 30, 40)]


# ---- item 7: deferred attributes in comparisons, explicit __getattr__ ------------


def test_comparing_a_deferred_attribute(remote):
    assert (remote.os.sep == "/") is True
    assert (remote.os.sep != "/") is False


def test_explicit_getattr_is_the_attribute(remote):
    sep = remote.os.__getattr__("sep")
    assert isinstance(sep, ObjectProxy)
    assert tuple(sep._attributes) == ("sep",)
    assert sep._get_value() == "/"


# ---- item 10: Future is a concurrent.futures.Future ------------------------------


def test_future_is_a_concurrent_future(remote):
    f = remote.os.getpid(_sync="async")
    assert isinstance(f, cf.Future)
    assert isinstance(f, farcall.Future)
    done, not_done = cf.wait([f], timeout=10)
    assert done == {f} and not not_done
    assert f.result() == remote.os.getpid()


def test_concurrent_futures_wait_and_as_completed(remote):
    fs = [remote.time.sleep(0.05 * i, _sync="async") for i in range(4)]
    done, _ = cf.wait(fs, timeout=10, return_when=cf.FIRST_COMPLETED)
    assert fs[0] in done
    assert set(cf.as_completed(fs, timeout=10)) == set(fs)
    slow = remote.time.sleep(5, _sync="async")
    done, not_done = cf.wait([slow], timeout=0.05)
    assert not done and not_done == {slow}
    assert slow.cancel() or slow.result(timeout=10) is None


def test_a_failed_future_in_concurrent_wait(remote):
    f = remote.os.no_such_function(_sync="async")
    done, _ = cf.wait([f], timeout=10)
    assert done == {f}
    assert isinstance(f.exception(), farcall.RemoteCallException)


def test_asyncio_wrap_future_and_await(remote):
    async def main():
        a = await asyncio.wrap_future(remote.os.getpid(_sync="async"))
        b = await remote.os.getpid(_sync="async")
        return a, b

    a, b = asyncio.run(main())
    assert a == b == remote.os.getpid()


def test_concurrent_wait_from_several_threads(remote):
    fs = [remote.time.sleep(0.02, _sync="async") for _ in range(8)]

    def wait_all():
        done, not_done = cf.wait(fs, timeout=10)
        return len(done), len(not_done)

    assert run_in_thread(wait_all) == (8, 0)
    results = []
    workers = [threading.Thread(target=lambda: results.append(wait_all())) for _ in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(15)
    assert results == [(8, 0)] * 4


# ---- item 3: default_proxy_options is the live dict ---------------------------------


def test_default_proxy_options_is_live(proc):
    c = proc.client
    options = c.default_proxy_options
    assert options is c.default_proxy_options
    assert options["sync"] == "sync"
    options["sync"] = "async"
    try:
        f = c._import("os").getpid()
        assert isinstance(f, farcall.Future)
        assert f.result(timeout=10) > 0
    finally:
        options["sync"] = "sync"
    assert isinstance(c._import("os").getpid(), int)


def test_default_proxy_options_refuses_a_bad_value_and_can_be_assigned(proc):
    c = proc.client
    before = dict(c.default_proxy_options)
    with pytest.raises(ValueError):
        c.default_proxy_options["sync"] = "sometimes"
    assert dict(c.default_proxy_options) == before
    c.default_proxy_options = {"timeout": 4.0}
    try:
        assert dict(c.default_proxy_options) == {"timeout": 4.0}
        assert c._import("os")._proxy_options["timeout"] == 4.0
    finally:
        c.default_proxy_options = before
    assert dict(c.default_proxy_options) == before


# ---- item 4: one client object ------------------------------------------------------


def test_the_same_client_object(proc):
    assert proc.client is proc.client
    address = proc.client.address
    assert farcall.RPCClient.get_client(address) is farcall.RPCClient.get_client(address)

    def in_a_thread():
        a = farcall.RPCClient.get_client(address)
        return a is farcall.RPCClient.get_client(address) and a._import("os").getpid() > 0

    assert run_in_thread(in_a_thread)


def test_local_client_is_one_object():
    server = farcall.RPCServer()
    server.run_lazy()
    try:
        assert farcall.RPCServer.local_client() is farcall.RPCServer.local_client()
    finally:
        server.close()


# ---- item 5: close_server ---------------------------------------------------------


@pytest.mark.parametrize("address", TRANSPORTS)
def test_close_server_returns_true_and_other_clients_see_the_notice(address):
    p = ProcessSpawner(address=address)
    try:
        watcher = p.client
        assert watcher._import("os").getpid() == p.pid
        # Another client, on a connection of its own, closes the server.
        other = run_in_thread(farcall.RPCClient, p.address, serializer="msgpack")
        assert other.close_server() is True
        deadline = time.monotonic() + 5
        while not watcher.disconnected() and time.monotonic() < deadline:
            time.sleep(0.005)
        # The notice alone turned it: no call was made meanwhile.
        assert watcher.disconnected()
        with pytest.raises(farcall.DisconnectError):
            watcher._import("os")
    finally:
        stop_quietly(p)


# ---- items 8, 9, 13: the child's process -------------------------------------------


def test_kill_reaps_the_child():
    p = ProcessSpawner()
    pid = p.pid
    p.kill()
    assert p.poll() == -9
    assert pid_gone(pid)


def test_a_client_keeps_its_child_running():
    c = ProcessSpawner().client
    gc.collect()
    pid = c._import("os").getpid()
    assert not pid_gone(pid)
    del c
    gc.collect()
    assert wait_until(lambda: pid_gone(pid), timeout=10)


def test_wait_on_a_live_child_raises_a_timeout_error(proc):
    with pytest.raises(TimeoutError) as info:
        proc.wait(0.05)
    assert isinstance(info.value, subprocess.TimeoutExpired)
    assert isinstance(info.value, farcall.ProcessTimeoutError)
    assert proc.poll() is None


# ---- item 16: structured dtypes ------------------------------------------------------


def test_a_structured_array_travels_both_ways(remote):
    import numpy

    a = numpy.zeros(3, dtype=[("x", "<f4"), ("y", "<i2")])
    a["x"] = [1.5, 2.5, 3.5]
    a["y"] = [1, 2, 3]
    back = remote.numpy.asarray(a, _return_type="value")
    assert back.dtype == a.dtype
    assert back.tolist() == a.tolist()
    # The child is still serving.
    assert remote.os.getpid() > 0


# ---- item 18: clear errors, addresses, the command line -------------------------------


def test_a_wrong_key_says_it_does_not_match(proc):
    def connect():
        return farcall.RPCClient(proc.address, key=b"k" * 32)._import("os")

    with pytest.raises(PermissionError, match="does not match"):
        run_in_thread(connect)


def test_localhost_is_accepted_by_zeromq():
    server = farcall.RPCServer("tcp://localhost:*")
    try:
        assert server.address.startswith("tcp://127.0.0.1:")
    finally:
        server.close()


def test_a_relative_unix_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    server = farcall.RPCServer("unix://relative.sock")
    try:
        assert server.address == f"unix://{tmp_path}/relative.sock"
    finally:
        server.close()


def test_an_unknown_log_level_is_refused():
    with pytest.raises(ValueError, match="NOPE"):
        ProcessSpawner(log_level="NOPE")


def test_farcall_version():
    out = subprocess.run(
        [sys.executable, "-m", "farcall", "--version"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0
    assert out.stdout.strip() == f"farcall {farcall.__version__}"


def test_a_key_file_others_can_read_is_refused(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("ab" * 32)
    key_file.chmod(0o644)
    env = dict(os.environ, FARCALL_KEY_FILE=str(key_file))
    env.pop("FARCALL_KEY", None)
    out = subprocess.run(
        [sys.executable, "-c", "import farcall; farcall.RPCServer('unix://*')"],
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert out.returncode != 0
    assert "PermissionError" in out.stderr
    assert str(key_file) in out.stderr and "chmod 600" in out.stderr


def test_a_unix_server_in_a_daemon_thread_leaves_no_socket_file():
    code = (
        "import threading, farcall\n"
        "s = farcall.RPCServer('unix://*')\n"
        "threading.Thread(target=s.run_forever, daemon=True).start()\n"
        "print(s.address)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    path = out.stdout.strip()[len("unix://"):]
    assert path and not os.path.exists(path)


def test_a_second_run_forever_is_refused():
    server = farcall.RPCServer("unix://*")
    thread = threading.Thread(target=server.run_forever, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: thread.is_alive(), timeout=5)
        time.sleep(0.05)
        with pytest.raises(RuntimeError, match="already served"):
            run_in_thread(server.run_forever, timeout=5)
    finally:
        server.close()
        thread.join(10)
    assert not thread.is_alive()


def test_no_proxy_types_copies_or_refuses(proc, remote):
    import collections

    class Opaque:
        pass

    builtins = remote.builtins
    od = collections.OrderedDict(a=1)
    if not proc.address.startswith("tcp://"):
        # By default a dict subclass goes by proxy (over ZeroMQ that takes
        # a server in this thread) ...
        assert builtins.isinstance(od, builtins.dict) is False
    # ... with no_proxy_types it is copied ...
    builtins._set_proxy_options(no_proxy_types=(collections.OrderedDict, Opaque))
    try:
        assert builtins.isinstance(od, builtins.dict) is True
        # ... and one that cannot be copied is refused, naming its type.
        with pytest.raises(TypeError, match="Opaque.*no_proxy_types"):
            builtins.id(Opaque())
    finally:
        builtins._set_proxy_options(no_proxy_types=None)
    assert remote.os.getpid() > 0


# ---- item 17, 20: the engine's records go through Python's logging ------------------------


class Records(logging.Handler):
    """Collects the records that reach it."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def matching(self, text):
        return [r for r in self.records if text in r.getMessage()]


@pytest.fixture
def farcall_records():
    """The records logger 'farcall' receives while the test runs."""
    handler = Records()
    logger = logging.getLogger("farcall")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.mark.parametrize("address", ["unix://*", "tcp://127.0.0.1:*"])
def test_failed_calls_are_logged_through_logging(address, farcall_records):
    server = farcall.RPCServer(address)
    server["boom"] = lambda: 1 / 0
    thread = threading.Thread(target=server.run_forever, daemon=True)
    thread.start()
    try:
        def calls():
            client = farcall.RPCClient(server.address)
            boom = client["boom"]
            boom(_sync="off")
            with pytest.raises(farcall.RemoteCallException):
                boom()
            return True

        assert run_in_thread(calls)
        assert wait_until(lambda: len(farcall_records.matching("ZeroDivisionError")) >= 2, timeout=5)
        one_way = [r for r in farcall_records.matching("one-way") if r.levelno == logging.ERROR]
        assert one_way and "division by zero" in one_way[0].getMessage()
        assert one_way[0].name.startswith("farcall.")
        raised = [r for r in farcall_records.matching("raised") if r.levelno == logging.WARNING]
        assert raised and "ZeroDivisionError" in raised[0].getMessage()
    finally:
        server.close()
        thread.join(10)


def test_a_failing_timer_callback_is_logged_and_keeps_running(farcall_records):
    server = farcall.RPCServer("unix://*")
    ticks = []

    def tick():
        ticks.append(1)
        raise ValueError("tick failed")

    server.start_timer(tick, 0.01)
    thread = threading.Thread(target=server.run_forever, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: len(ticks) >= 3, timeout=5)
        failures = farcall_records.matching("timer callback")
        assert failures and failures[0].levelno == logging.ERROR
        assert failures[0].exc_info and failures[0].exc_info[0] is ValueError
    finally:
        server.close()
        thread.join(10)



# ---- item 6: a release is never overtaken by a later call ----------------------------------


@pytest.mark.parametrize("address", TRANSPORTS)
def test_a_release_reaches_the_server_before_the_next_call(address):
    """After ``del proxy`` the next call on the same link finds the object
    released: the release is written ahead of that call (a release thread
    sent it before, and most next calls overtook it)."""
    proc = ProcessSpawner(address=address)
    try:
        c = proc.client
        weakref = c._import("weakref")
        threading_ = c._import("threading")
        tries, stale = 300, 0
        for _ in range(tries):
            obj = threading_.Event()
            ref = weakref.ref(obj)
            del obj
            # The first call after the del.
            if ref() is not None:
                stale += 1
        assert stale == 0, f"{stale} of {tries} still alive right after del"
    finally:
        stop_quietly(proc)


def test_releases_from_several_threads_arrive_before_each_threads_next_call(proc):
    c = proc.client
    weakref = c._import("weakref")
    threading_ = c._import("threading")

    def churn():
        stale = 0
        for _ in range(100):
            obj = threading_.Event()
            ref = weakref.ref(obj)
            del obj
            if ref() is not None:
                stale += 1
        return stale

    with cf.ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _: churn(), range(4))) == [0, 0, 0, 0]


def test_a_closed_thread_server_serves_this_threads_objects_no_more():
    """A server once registered with this thread (run_lazy) and closed is
    forgotten: a callback sent from here comes back over the link."""
    server = farcall.RPCServer("tcp://127.0.0.1:*")
    server.run_lazy()
    server.close()
    p = ProcessSpawner()
    try:
        operator = p.client._import("operator")
        assert operator.call(lambda: 5) == 5
    finally:
        stop_quietly(p)


# ---- item 6: a proxy passed on by an intermediary has its own reference ---------------------


@pytest.mark.parametrize(
    "home_address, intermediary_address",
    [(t, "unix://*") for t in TRANSPORTS] + [("unix://*", t) for t in TRANSPORTS[1:]],
)
def test_a_proxy_through_an_intermediary_outlives_the_intermediarys_copy(
    home_address, intermediary_address
):
    """C (here) gets, through B, a proxy to an object in A. B drops its
    copy; C's proxy keeps working (B asked A for a reference of C's own),
    and C's release frees the object in A."""
    a = ProcessSpawner(address=home_address, name="home")
    b = ProcessSpawner(address=intermediary_address, name="intermediary")
    try:
        b_helpers = import_helpers(b.client)
        a_client_in_b = b.client._import("farcall").RPCClient.get_client(a.address)
        threading_in_a = b_helpers.call(a_client_in_b._import, "threading")
        event = b_helpers.call(threading_in_a.Event)
        assert event._rpc_addr == a.address
        b.client._import("gc").collect()
        # B's releases travel ahead of its next request to A: once this
        # ping is answered, A has dropped B's references.
        assert a_client_in_b.ping() == "pong"
        # B has dropped everything it returned; C's proxies still work.
        assert event.is_set() is False
        event.set()
        assert threading_in_a.Event().is_set() is False
        alive = a.client._import("weakref").ref(event)
        assert alive() is not None
        del event
        gc.collect()
        assert wait_until(lambda: alive() is None, timeout=5)
    finally:
        stop_quietly(b)
        stop_quietly(a)


# ---- item 16: an added type travels in calls ---------------------------------------------


def test_an_added_type_travels_in_calls(proc):
    from fractions import Fraction

    import farcall_test_helpers

    helpers = import_helpers(proc.client)
    farcall_test_helpers.register_fraction()
    helpers.register_fraction()
    try:
        # Sent as the tagged map and decoded on the other side, both ways.
        assert helpers.type_name(Fraction(1, 3)) == "Fraction"
        assert helpers.echo(Fraction(1, 3)) == Fraction(1, 3)
        assert isinstance(helpers.echo(Fraction(2, 3)), Fraction)
        assert helpers.echo([Fraction(1, 2), {"x": Fraction(3, 4)}]) == [Fraction(1, 2), {"x": Fraction(3, 4)}]
    finally:
        helpers.unregister_fraction()
        farcall_test_helpers.unregister_fraction()
    # Without the type it goes by proxy again (where it can).
    if not proc.address.startswith("tcp://"):
        assert helpers.type_name(Fraction(1, 3)) == "ObjectProxy"


def test_an_object_of_ours_coming_back_through_an_intermediary_is_itself():
    """Our own object, held by a child and returned to us (the child passes
    a proxy to it on, with a reference made for us): it arrives as the
    object itself, every time, and the forwarded reference is dropped here
    (our host holds its own objects without references)."""

    class Thing:
        pass

    p = ProcessSpawner()
    try:
        helpers = import_helpers(p.client)
        thing = Thing()
        holder = helpers.Holder(thing)
        for _ in range(20):
            assert holder.get() is thing
        holder.set(None)
        assert holder.get() is None
        assert p.client.ping() == "pong"
    finally:
        stop_quietly(p)
