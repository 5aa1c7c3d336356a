"""RPCServer and RPCClient: publishing, reentrancy, the client's methods,
disconnects and errors."""

import gc
import os
import threading
import time

import pytest

import farcall
from farcall import (
    DisconnectError,
    ObjectProxy,
    OperationError,
    ProtocolError,
    RemoteCallException,
    RPCClient,
    RPCServer,
)
from farcall_test_helpers import Counter
from farcall_testutil import import_helpers, run_in_thread, wait_until


# ---- publishing ----------------------------------------------------------------


def test_server_publishes_and_client_reads(thread_server):
    counter = Counter(5)
    thread_server["counter"] = counter
    assert thread_server["counter"] is counter
    client = RPCClient.get_client(thread_server.address)
    p = client["counter"]
    assert isinstance(p, ObjectProxy)
    assert p._type_str == "<class 'farcall_test_helpers.Counter'>"
    assert p._rpc_addr == thread_server.address
    assert p.add(1, 2) == 3
    assert p.incr() == 6
    assert counter.value == 6
    # Plain values are read by copy.
    thread_server["plain"] = {"a": [1, 2]}
    assert client["plain"] == {"a": [1, 2]}
    with pytest.raises(RemoteCallException) as info:
        client["never_published"]
    assert info.value.type_str == "KeyError"
    with pytest.raises(KeyError):
        thread_server["never_published"]


def test_client_publishes_on_the_server(thread_server):
    client = RPCClient.get_client(thread_server.address)
    client["from_client"] = [1, 2, 3]
    assert thread_server["from_client"] == [1, 2, 3]
    assert client["from_client"] == [1, 2, 3]
    # Publishing a proxy of the same server publishes the object itself.
    counter = Counter()
    thread_server["c1"] = counter
    client["c2"] = client["c1"]
    assert thread_server["c2"] is counter


def test_requests_run_in_the_server_thread(thread_server):
    client = RPCClient.get_client(thread_server.address)
    thread_server["ident"] = threading.get_ident
    assert client["ident"]() == thread_server.ident
    assert client["ident"]() != threading.get_ident()


def test_self_is_the_server(thread_server):
    client = RPCClient.get_client(thread_server.address)
    me = client["self"]
    assert isinstance(me, ObjectProxy)
    assert isinstance(me.object_count(), int)


def test_get_proxy_and_unwrap_proxy(thread_server):
    counter = Counter(1)
    p = thread_server.server.get_proxy(counter)
    assert isinstance(p, ObjectProxy)
    assert p._rpc_addr == thread_server.address
    assert p._type_str == "<class 'farcall_test_helpers.Counter'>"
    assert thread_server.server.unwrap_proxy(p) is counter
    # Usable from this thread through the client of the server.
    assert p.incr(2) == 3
    assert counter.value == 3


def test_unwrap_proxy_of_another_server_fails(make_thread_server, child, helpers):
    ts = make_thread_server()
    foreign = helpers.Counter()
    # Make sure this server has an object under the same id as the foreign
    # one: only the address tells them apart.
    mine = [Counter(i) for i in range(foreign._obj_id + 5)]
    local_proxies = [ts.server.get_proxy(o) for o in mine]
    assert foreign._obj_id in {p._obj_id for p in local_proxies}
    with pytest.raises(Exception):
        ts.server.unwrap_proxy(foreign)


def test_get_server_and_local_client(thread_server):
    client = RPCClient.get_client(thread_server.address)
    srv = thread_server.server
    assert RPCServer.get_server() is None  # none in the main thread
    thread_server["is_registered"] = lambda: RPCServer.get_server() is srv
    assert client["is_registered"]() is True
    thread_server["local_address"] = lambda: RPCServer.local_client().address
    assert client["local_address"]() == thread_server.address
    # A request that calls its own server through the local client: the
    # waiting client serves the thread's server meanwhile.
    thread_server["ping_self"] = lambda: RPCServer.local_client().ping()
    assert client["ping_self"]() == "pong"
    with pytest.raises(KeyError):
        RPCServer.local_client()


def test_start_timer_runs_in_the_serving_thread(make_thread_server):
    ts = make_thread_server()
    ticks = []
    enough = threading.Event()

    def tick():
        ticks.append(threading.get_ident())
        if len(ticks) >= 3:
            enough.set()

    ts.server.start_timer(tick, 0.05)
    assert enough.wait(10), f"timer ran {len(ticks)} times"
    assert set(ticks) == {ts.ident}
    # The server still answers requests between ticks.
    client = RPCClient.get_client(ts.address)
    assert client.ping() == "pong"


def test_close_and_running(make_thread_server):
    ts = make_thread_server()
    client = RPCClient.get_client(ts.address)
    assert ts.server.running() is True
    assert client.ping() == "pong"
    ts.server.close()
    ts.thread.join(10)
    assert not ts.thread.is_alive()
    assert ts.server.running() is False
    t0 = time.monotonic()
    with pytest.raises(DisconnectError):
        client.ping()
    assert time.monotonic() - t0 < 2.0
    assert client.disconnected() is True


def test_zmq_server_default_address():
    srv = RPCServer()
    try:
        assert srv.address.startswith("tcp://127.0.0.1:")
        assert int(srv.address.rsplit(":", 1)[1]) > 0
    finally:
        srv.close()


def test_bytes_addresses_are_accepted(make_thread_server):
    srv = RPCServer(b"unix://*")
    assert isinstance(srv.address, str)
    srv.close()
    ts = make_thread_server()

    def body():
        c = RPCClient.get_client(ts.address.encode())
        assert c.address == ts.address
        assert c.ping() == "pong"
        return True

    assert run_in_thread(body)


# ---- run_lazy and reentrancy --------------------------------------------------------


def test_run_lazy_reentrancy(child):
    """A -> B -> A: a local object passed to the child, which calls back into
    it while this thread waits for the child's reply."""

    def body():
        srv = RPCServer("unix://*")
        srv.run_lazy()
        try:
            assert RPCServer.get_server() is srv
            here = threading.get_ident()
            seen = []

            class Local:
                def method(self, x):
                    seen.append(threading.get_ident())
                    return x * 2

            local = Local()
            h = import_helpers(child.client)
            assert h.call_method(local, "method", 21) == 42
            assert seen == [here]
            # Deeper: the child calls back, and our callback calls the child
            # again while the child waits for us (A -> B -> A -> B).
            neg = child.client._import("operator").neg

            def nested(y):
                return h.call(neg, y)

            assert h.call(nested, 5) == -5
            return True
        finally:
            srv.close()
            assert RPCServer.get_server() is None

    assert run_in_thread(body, timeout=60)


# ---- one client per thread and address ---------------------------------------------


def test_second_client_in_one_thread_raises_keyerror(make_thread_server):
    ts = make_thread_server()

    def body():
        first = RPCClient(ts.address)
        with pytest.raises(KeyError):
            RPCClient(ts.address)
        again = RPCClient.get_client(ts.address)
        assert again.ping() == "pong"
        assert again == first
        return True

    assert run_in_thread(body)


def test_each_thread_gets_its_own_client(make_thread_server):
    ts = make_thread_server()
    main = RPCClient.get_client(ts.address)

    def body():
        c = RPCClient(ts.address)  # allowed: another thread
        return c.ping()

    assert run_in_thread(body) == "pong"
    assert main.ping() == "pong"


# ---- client methods --------------------------------------------------------------


def test_send(child, helpers):
    client = child.client
    assert client.send("ping") == "pong"
    os_ = client.send("import", {"module": "os"})
    assert isinstance(os_, ObjectProxy)
    assert os_._type_str == "<class 'module'>"
    fut = client.send("ping", sync="async")
    assert isinstance(fut, farcall.Future)
    assert fut.result(timeout=10) == "pong"
    assert client.send("ping", sync="off") is None
    client["sent_item"] = 5
    assert client.send("get_item", {"name": "sent_item"}) == 5
    p = client.send("get_item", {"name": "sent_item"}, return_type="proxy")
    assert isinstance(p, ObjectProxy)
    assert p._get_value() == 5
    with pytest.raises(ValueError):
        client.send("no_such_action")


def test_call_obj(child, helpers):
    c = helpers.Counter()
    client = child.client
    assert client.call_obj(c.add, [1, 2]) == 3
    assert client.call_obj(c.kwargs, [1], {"k": 2}) == [[1], {"k": 2}]
    fut = client.call_obj(c.add, (2, 2), sync="async")
    assert fut.result(timeout=10) == 4
    p = client.call_obj(c.add, [3, 3], return_type="proxy")
    assert isinstance(p, ObjectProxy)
    assert p._get_value() == 6


def test_get_obj(child):
    client = child.client
    lst = client.transfer([1, 2])
    assert client.get_obj(lst, return_type="value") == [1, 2]
    col = client._import("collections")
    od = col.OrderedDict(a=1)
    assert isinstance(client.get_obj(od), ObjectProxy)
    assert dict(client.get_obj(od, return_type="value")) == {"a": 1}


def test_transfer_makes_a_remote_copy(child):
    client = child.client
    local = [1, 2, 3]
    p = client.transfer(local)
    assert isinstance(p, ObjectProxy)
    assert p._type_str == "<class 'list'>"
    p.append(4)
    assert p._get_value() == [1, 2, 3, 4]
    assert local == [1, 2, 3]
    t = client.transfer((1, 2))
    assert t._type_str == "<class 'tuple'>"


def test_import(child, thread_server):
    assert child.client._import("os").getpid() == child.pid
    client = RPCClient.get_client(thread_server.address)
    assert client._import("os").getpid() == os.getpid()
    with pytest.raises(RemoteCallException) as info:
        child.client._import("no_such_module_xyz")
    assert info.value.type_str in ("ModuleNotFoundError", "ImportError")


def test_client_delete(child, helpers):
    c = helpers.Counter()
    assert c.get() == 0
    child.client.delete(c)
    with pytest.raises(RemoteCallException) as info:
        c.get()
    assert info.value.type_str == "KeyError"


def test_client_delete_then_collect_sends_no_second_release(fresh_child, capfd):
    """After client.delete(proxy) the proxy's own release (auto-delete on
    collection) must not release the reference a second time; the child
    would log the failed one-way delete on its stderr (forwarded here)."""
    proc = fresh_child()
    h = import_helpers(proc.client)
    server = proc.client["self"]
    for _ in range(3):
        c = h.Counter()
        proc.client.delete(c)
        del c
        gc.collect()
    # Releases are sent in order by one queue: once a later one has been
    # served, the earlier ones have been too.
    sentinel = h.Counter()
    count = server.object_count()
    del sentinel
    gc.collect()
    assert wait_until(lambda: server.object_count() < count, timeout=10)
    proc.client.ping()
    proc.stop()
    err = capfd.readouterr().err
    assert "Invalid proxy object ID" not in err, err


def test_ping_and_ensure_connection(child):
    assert child.client.ping() == "pong"
    assert child.client.ensure_connection() is None


def test_ensure_connection_to_a_dead_server_raises(fresh_child):
    proc = fresh_child()
    client = proc.client
    proc.kill()
    proc.wait(10)
    t0 = time.monotonic()
    with pytest.raises(Exception):
        client.ensure_connection(timeout=2.0)
    assert time.monotonic() - t0 < 5


def test_measure_clock_diff(child):
    diff = child.client.measure_clock_diff()
    assert isinstance(diff, float)
    assert abs(diff) < 0.5


def test_default_proxy_options(make_thread_server):
    ts = make_thread_server()
    ts["counter"] = Counter()
    client = RPCClient.get_client(ts.address)
    opts = client.default_proxy_options
    assert opts["sync"] == "sync"
    assert opts["return_type"] == "auto"
    assert opts["defer_getattr"] is True
    assert opts["timeout"] > 0
    client.set_proxy_options(timeout=3.5, return_type="proxy")
    try:
        assert client.default_proxy_options["timeout"] == pytest.approx(3.5)
        p = client["counter"]
        assert p._proxy_options["timeout"] == pytest.approx(3.5)
        assert isinstance(p.add(1, 2), ObjectProxy)
    finally:
        client.set_proxy_options(timeout=10.0, return_type="auto")


def test_address_and_serializer(child, thread_server):
    assert child.client.address == child.address
    from farcall.serializer import all_serializers

    assert child.client.serializer.type in all_serializers
    client = RPCClient.get_client(thread_server.address)
    assert client.address == thread_server.address
    assert client.serializer.type in all_serializers


def test_explicit_serializers_work(make_thread_server):
    ts = make_thread_server()
    ts["counter"] = Counter()
    for name in ("msgpack", "json"):

        def body():
            c = RPCClient(ts.address, serializer=name)
            assert c.serializer.type == name
            assert c.ping() == "pong"
            p = c["counter"]
            assert p.add(1, 2) == 3
            return p.add([1], [2])

        assert run_in_thread(body) == [1, 2]


# ---- closing the server ---------------------------------------------------------------


def test_close_server(fresh_child):
    proc = fresh_child()
    client = proc.client
    assert client.ping() == "pong"
    assert client.disconnected() is False
    client.close_server()
    t0 = time.monotonic()
    with pytest.raises(DisconnectError):
        client.ping()
    assert time.monotonic() - t0 < 1.0
    assert client.disconnected() is True
    assert proc.wait(10) == 0


def test_close_server_fails_pending_calls_of_other_clients(fresh_child):
    """Clients B and C are connected; B keeps the server busy, the main
    client asks it to close, C's call queued behind both fails with
    DisconnectError instead of waiting for its timeout."""
    proc = fresh_child()
    main_client = proc.client
    h = import_helpers(main_client)
    results = {}
    connected = threading.Barrier(3, timeout=10)
    busy_sent = threading.Event()

    def busy():
        c = proc.client  # this thread's client
        sleep = c._import("time").sleep
        connected.wait()
        try:
            f = sleep(1.0, _sync="async")
            busy_sent.set()
            results["busy"] = f.result(timeout=10)
        except BaseException as e:
            results["busy"] = e

    def queued():
        c = proc.client
        getpid = c._import("os").getpid
        connected.wait()
        busy_sent.wait(10)
        time.sleep(0.4)  # after the close request
        t0 = time.monotonic()
        try:
            results["queued"] = getpid()
        except BaseException as e:
            results["queued"] = e
        results["queued_time"] = time.monotonic() - t0

    t1 = threading.Thread(target=busy, daemon=True)
    t2 = threading.Thread(target=queued, daemon=True)
    t1.start()
    t2.start()
    connected.wait()
    assert busy_sent.wait(10)
    time.sleep(0.2)
    main_client.close_server()
    t1.join(15)
    t2.join(15)
    assert not t1.is_alive() and not t2.is_alive()
    assert results["busy"] is None  # time.sleep's result: it finished first
    assert isinstance(results["queued"], DisconnectError), results
    assert results["queued_time"] < 3.0
    with pytest.raises(DisconnectError):
        h.getpid()
    assert proc.wait(10) == 0


def test_connect_while_the_server_closes(fresh_child):
    """A client whose handshake is cut short by the server closing gets a
    DisconnectError, like any other call to a server that is gone."""
    proc = fresh_child()
    c = proc.client
    f = c._import("time").sleep(1.0, _sync="async")  # keeps the server busy
    time.sleep(0.2)
    res = {}

    def connect():
        try:
            # A link of its own (a serializer of its own): the process's
            # link to the child would queue the ping behind the sleep.
            res["client"] = RPCClient(proc.address, serializer="msgpack")
            res["ping"] = res["client"].ping()
        except BaseException as e:
            res["error"] = e

    t = threading.Thread(target=connect, daemon=True)
    t.start()
    time.sleep(0.3)
    c.close_server()
    t.join(15)
    assert not t.is_alive()
    assert f.result(timeout=10) is None
    # Either the hello got through before the close (then the ping fails)
    # or it did not: both are a disconnect.
    assert isinstance(res.get("error"), DisconnectError), res


def test_client_close(make_thread_server):
    ts = make_thread_server()

    def body():
        c = RPCClient(ts.address)
        assert c.ping() == "pong"
        c.close()
        with pytest.raises(DisconnectError):
            c.ping()
        # A new client for the same address can be made after close().
        c2 = RPCClient.get_client(ts.address)
        assert c2.ping() == "pong"
        return True

    assert run_in_thread(body)
    # The server is unaffected.
    assert RPCClient.get_client(ts.address).ping() == "pong"


def test_server_close_tells_clients(make_thread_server):
    ts = make_thread_server()
    ts["counter"] = Counter()
    client = RPCClient.get_client(ts.address)
    p = client["counter"]
    assert p.get() == 0
    ts.close()
    t0 = time.monotonic()
    with pytest.raises(DisconnectError):
        p.get()
    assert time.monotonic() - t0 < 1.0
    assert client.disconnected()


# ---- errors ---------------------------------------------------------------------------


def test_remote_call_exception_has_type_and_traceback(thread_server):
    def failing():
        raise ZeroDivisionError("divided by nothing")

    thread_server["failing"] = failing
    client = RPCClient.get_client(thread_server.address)
    with pytest.raises(RemoteCallException) as info:
        client["failing"]()
    e = info.value
    assert e.type_str == "ZeroDivisionError"
    assert "divided by nothing" in str(e)
    assert "Traceback" in str(e)
    assert "in failing" in str(e)
    assert isinstance(e.tb_str, str)


def test_error_hierarchy():
    assert issubclass(OperationError, RuntimeError)
    assert issubclass(DisconnectError, OperationError)
    assert issubclass(DisconnectError, RuntimeError)
    assert issubclass(ProtocolError, OperationError)
    assert issubclass(RemoteCallException, Exception)
    e = RemoteCallException("KeyError", "Traceback ...\nKeyError: 'x'\n")
    assert e.type_str == "KeyError"
    assert "KeyError: 'x'" in str(e)


def test_remote_call_exception_takes_pyacq_traceback_lines():
    # pyacq's server sends the traceback as a list of lines (issue 11, item 11).
    lines = ["Traceback (most recent call last):\n", "line one\n", "line two\n"]
    e = RemoteCallException("ZeroDivisionError", lines)
    assert e.type_str == "ZeroDivisionError"
    assert e.tb_str == "".join(lines)
    assert str(e).endswith("line one\nline two")
    assert e.args == ("ZeroDivisionError", lines)
    assert "".join(e.tb_str) == "".join(lines)  # pyacq code joins it
    s = RemoteCallException("KeyError", "Traceback ...\nKeyError: 'x'\n")
    assert s.tb_str == "Traceback ...\nKeyError: 'x'\n"


def test_disconnect_is_a_runtime_error_for_pyacq_code(fresh_child):
    proc = fresh_child()
    h = import_helpers(proc.client)
    proc.kill()
    proc.wait(10)
    with pytest.raises(RuntimeError):
        h.getpid()


def test_connecting_to_nothing_fails():
    def body():
        with pytest.raises(Exception):
            RPCClient("unix:///tmp/farcall-no-such-socket-xyz.sock")
        return True

    assert run_in_thread(body)


def test_gil_released_while_a_thread_server_runs(thread_server):
    """The thread server can only answer if waiting releases the GIL."""

    def slow():
        time.sleep(0.2)
        return "slow"

    thread_server["slow"] = slow
    client = RPCClient.get_client(thread_server.address)
    assert client["slow"]() == "slow"
    gc.collect()


def test_send_with_a_timeout(child):
    time_ = child.client._import("time")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        child.client.call_obj(time_.sleep, [1.0], timeout=0.2)
    assert time.monotonic() - t0 < 0.9
    assert child.client.send("ping", timeout=10) == "pong"
    assert child.client.ping() == "pong"


def test_reentrant_argument_is_accepted(make_thread_server):
    ts = make_thread_server()

    def body():
        return RPCClient(ts.address, reentrant=False).ping()

    assert run_in_thread(body) == "pong"


def test_farcall_zmq_server_negotiates_the_farcall_format(make_thread_server):
    ts = make_thread_server("tcp://127.0.0.1:*")
    ts["make_tuple"] = lambda: (1, (2,))

    def body():
        c = RPCClient(ts.address)
        return c.serializer.type, c["make_tuple"]()

    assert run_in_thread(body) == ("farcall", (1, (2,)))


@pytest.mark.parametrize("address", ["unix://*", "tcp+native://127.0.0.1:*", "tcp://127.0.0.1:*"])
def test_server_on_an_asyncio_loop_through_its_descriptor(address):
    # fileno() + serve_ready() let any event loop serve (here asyncio's
    # add_reader, as a QtRPCServer does with a QSocketNotifier).
    import asyncio

    def serve_on_a_loop():
        async def main():
            loop = asyncio.get_running_loop()
            server = RPCServer(address)
            server.run_lazy()
            loop.add_reader(server.fileno(), server.serve_ready)
            server["ident"] = threading.get_ident
            ticks = 0

            def remote_calls():
                client = RPCClient(server.address)
                idents = {client["ident"]() for _ in range(100)}
                futures = [client["ident"](_sync="async") for _ in range(100)]
                idents |= {f.result(timeout=10) for f in futures}
                client.close_server()
                return idents

            calls = loop.run_in_executor(None, remote_calls)
            while not calls.done():
                ticks += 1
                await asyncio.sleep(0.001)
            idents = await calls
            # The close reached the loop through the descriptor too.
            await asyncio.sleep(0.05)
            loop.remove_reader(server.fileno())
            return idents, threading.get_ident(), ticks, server.running()

        return asyncio.run(asyncio.wait_for(main(), 30))

    idents, loop_thread, ticks, running = run_in_thread(serve_on_a_loop, timeout=60)
    assert idents == {loop_thread}  # every call ran on the loop's thread
    assert ticks > 5
    assert running is False
