"""pyacq compatibility: results by proxy are the very objects, lazy
iteration, deferred attributes in comparisons, Future as a
concurrent.futures.Future; on every transport a child can use."""

import asyncio
import concurrent.futures as cf
import gc
import itertools
import subprocess
import threading
import time

import pytest

import farcall
from farcall import ObjectProxy, ProcessSpawner
from farcall_testutil import pid_gone, run_in_thread, stop_quietly, wait_until

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
