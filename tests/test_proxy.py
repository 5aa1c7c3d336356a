"""ObjectProxy: deferred attributes, call options, proxy options, special
methods, identity, and proxies travelling between processes."""

import gc
import os
import sys
import threading
import time
from collections import OrderedDict

import pytest

import farcall
from farcall import ObjectProxy, ProcessSpawner, RemoteCallException, RPCServer
from farcall_testutil import import_helpers, run_in_thread, stop_quietly, wait_until


# ---- the seed example ----------------------------------------------------


def test_seed_example_keeps_the_ordered_dict_remote():
    proc = ProcessSpawner()
    try:
        remote_col = proc.client._import("collections")
        remote_dict = remote_col.OrderedDict()
        assert isinstance(remote_dict, ObjectProxy)
        assert remote_dict._type_str == "<class 'collections.OrderedDict'>"
        remote_dict["x"] = 1
        assert "x" in remote_dict.keys()
        assert remote_dict["x"] == 1
        # The item really went to the remote dict, not to a local copy.
        assert remote_dict._get_value() == {"x": 1}
        assert len(remote_dict) == 1
    finally:
        stop_quietly(proc)


# ---- attributes ------------------------------------------------------------


def test_attributes_of_a_proxy(child, helpers):
    c = helpers.Counter(3)
    assert isinstance(c, ObjectProxy)
    assert c._type_str == "<class 'farcall_test_helpers.Counter'>"
    assert c._rpc_addr == child.address
    assert isinstance(c._obj_id, int)
    assert isinstance(c._ref_id, int)
    assert tuple(c._attributes) == ()
    deferred = c.inner.deeper
    assert tuple(deferred._attributes) == ("inner", "deeper")
    assert deferred._obj_id == c._obj_id
    assert deferred._rpc_addr == child.address
    mod = child.client._import("os")
    assert mod._type_str == "<class 'module'>"


def test_deferred_getattr_makes_no_round_trip(child, helpers):
    c = helpers.Counter()
    # A missing attribute gives a proxy without asking the remote side ...
    missing = c.no_such_attribute
    assert isinstance(missing, ObjectProxy)
    assert tuple(missing._attributes) == ("no_such_attribute",)
    # ... and fails only when used.
    with pytest.raises(RemoteCallException) as info:
        missing()
    assert info.value.type_str == "AttributeError"
    assert "no_such_attribute" in str(info.value)


def test_deferred_getattr_works_on_a_dead_server(fresh_child):
    proc = fresh_child()
    mod = proc.client._import("os")
    proc.kill()
    proc.wait(10)
    # No round trip: building deferred proxies works although nobody answers.
    p = mod.path.join
    assert tuple(p._attributes) == ("path", "join")
    with pytest.raises(farcall.DisconnectError):
        p("a", "b")


def test_undefer_fetches_the_attribute(child, helpers):
    box = helpers.Box()
    x = box.x
    assert isinstance(x, ObjectProxy)
    assert x._undefer() == 1
    inner = box.inner._undefer()
    assert isinstance(inner, ObjectProxy)
    assert inner._type_str == "<class 'farcall_test_helpers.Counter'>"
    assert tuple(inner._attributes) == ()
    assert inner.get() == 10
    # A proxy without deferred attributes is its own undeferred form.
    assert box._undefer() is box
    with pytest.raises(RemoteCallException) as info:
        box.nope._undefer()
    assert info.value.type_str == "AttributeError"


def test_defer_getattr_false_fetches_at_once(child, helpers):
    box = helpers.Box()
    box._set_proxy_options(defer_getattr=False)
    assert box.x == 1
    inner = box.inner
    assert isinstance(inner, ObjectProxy)
    assert tuple(inner._attributes) == ()
    assert inner.get() == 10
    with pytest.raises(AttributeError):
        box.missing_attribute
    assert not hasattr(box, "missing_attribute")
    assert hasattr(box, "x")


def test_setattr_sets_the_remote_attribute(child, helpers):
    c = helpers.Counter()
    c.value = 42
    assert c.get() == 42
    c.new_attribute = [1, 2]
    assert c.new_attribute._undefer() == [1, 2]
    box = helpers.Box()
    box.inner.value = 7  # on a deferred attribute: sets inner.value
    assert box.inner.get() == 7


# ---- call options ------------------------------------------------------------


def test_sync_modes(child, helpers):
    c = helpers.Counter()
    assert c.add(1, 2) == 3
    assert c.add(1, 2, _sync="sync") == 3
    fut = c.add(3, 4, _sync="async")
    assert isinstance(fut, farcall.Future)
    assert fut.result(timeout=10) == 7


def test_sync_off_returns_at_once_and_runs_later(child, helpers):
    c = helpers.Counter()
    t0 = time.monotonic()
    assert c.sleep_then_incr(1.0, 5, _sync="off") is None
    sent_in = time.monotonic() - t0
    assert sent_in < 0.9, "sync='off' waited for the call"
    # Requests run in order: the next sync call sees the side effect.
    assert c.get() == 5
    assert time.monotonic() - t0 >= 0.9


def test_sync_off_as_proxy_option(child, helpers):
    c = helpers.Counter()
    c._set_proxy_options(sync="off")
    assert c.incr(2) is None
    assert c.incr(3) is None
    assert c.get(_sync="sync") == 5


def test_return_type(child, helpers):
    c = helpers.Counter()
    assert c.add(1, 2, _return_type="auto") == 3
    p = c.add(1, 2, _return_type="proxy")
    assert isinstance(p, ObjectProxy)
    assert p._type_str == "<class 'int'>"
    assert p._get_value() == 3
    # By value: the OrderedDict comes back as a copy.
    col = child.client._import("collections")
    d = col.OrderedDict([("a", 1)], _return_type="value")
    assert not isinstance(d, ObjectProxy)
    assert dict(d) == {"a": 1}
    # auto keeps it remote
    assert isinstance(col.OrderedDict(), ObjectProxy)
    # An object that cannot be copied is an error with "value".
    with pytest.raises(Exception):
        helpers.Counter(_return_type="value")
    # As a proxy option
    c._set_proxy_options(return_type="proxy")
    assert isinstance(c.add(2, 2), ObjectProxy)
    assert c.add(2, 2)._get_value() == 4


def test_bad_call_options_are_refused(child, helpers):
    c = helpers.Counter()
    with pytest.raises(ValueError):
        c.add(1, 2, _sync="sometimes")
    with pytest.raises(ValueError):
        c.add(1, 2, _return_type="whatever")


def test_timeout_raises_and_the_client_stays_usable(child, helpers):
    c = helpers.Counter()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        c.sleep(1.5, _timeout=0.2)
    assert time.monotonic() - t0 < 1.4
    # The late reply is discarded; later calls get their own results.
    assert c.add(1, 2) == 3
    assert c.add(5, 5) == 10
    c._set_proxy_options(timeout=0.2)
    with pytest.raises(TimeoutError):
        c.sleep(1.0)
    c._set_proxy_options(timeout=10)
    assert c.add(2, 3) == 5


def test_keyword_arguments_reach_the_remote_call(child, helpers):
    c = helpers.Counter()
    assert c.kwargs(1, "a", x=2, y=[3]) == [[1, "a"], {"x": 2, "y": [3]}]


def test_remote_call_exception(child, helpers):
    c = helpers.Counter()
    with pytest.raises(RemoteCallException) as info:
        c.fail("the message")
    e = info.value
    assert e.type_str == "ValueError"
    text = str(e)
    assert "the message" in text
    assert "Traceback" in text
    assert "def fail" in text or "in fail" in text
    assert "farcall_test_helpers.py" in text
    # The proxy and client still work after a remote exception.
    assert c.add(1, 1) == 2


# ---- proxy options -------------------------------------------------------------


def test_set_proxy_options_and_proxy_options(child, helpers):
    c = helpers.Counter()
    opts = c._proxy_options
    assert set(opts) == {
        "sync",
        "return_type",
        "timeout",
        "defer_getattr",
        "no_proxy_types",
        "auto_delete",
    }
    assert opts["sync"] == "sync"
    assert opts["return_type"] == "auto"
    assert opts["defer_getattr"] is True
    c._set_proxy_options(
        sync="async",
        return_type="proxy",
        timeout=4.5,
        defer_getattr=False,
        no_proxy_types=[OrderedDict],
        auto_delete=False,
    )
    opts = c._proxy_options
    assert opts["sync"] == "async"
    assert opts["return_type"] == "proxy"
    assert opts["timeout"] == pytest.approx(4.5)
    assert opts["defer_getattr"] is False
    assert OrderedDict in tuple(opts["no_proxy_types"])
    assert opts["auto_delete"] is False
    with pytest.raises((KeyError, TypeError, ValueError)):
        c._set_proxy_options(no_such_option=1)
    c._set_proxy_options(timeout=None)
    assert c._proxy_options["timeout"] is None


def test_derived_proxies_inherit_options(child, helpers):
    c = helpers.Counter()
    c._set_proxy_options(timeout=3.0, return_type="proxy")
    m = c.add
    assert m._proxy_options["timeout"] == pytest.approx(3.0)
    assert isinstance(m(1, 2), ObjectProxy)


def test_no_proxy_types_sends_subclasses_by_copy(child, helpers):
    f = helpers.type_name
    f._set_proxy_options(no_proxy_types=[OrderedDict])
    try:
        assert f(OrderedDict(a=1)) == "dict"
        assert helpers.echo._undefer  # the module proxy itself is untouched
    finally:
        # Proxies are shared (one per remote object): leave it as it was.
        f._set_proxy_options(no_proxy_types=None)


def test_subclass_argument_goes_by_proxy_by_default(child):
    """Without no_proxy_types an OrderedDict argument stays here and the
    child gets a proxy (served by this thread's server)."""

    def body():
        srv = RPCServer("unix://*")
        srv.run_lazy()
        try:
            h = import_helpers(child.client)
            local = OrderedDict(a=1)
            assert h.type_name(local) == "ObjectProxy"
            # The child can use it: it calls back into us while we wait.
            assert h.length(local) == 1
            f = h.type_name
            f._set_proxy_options(no_proxy_types=(OrderedDict,))
            assert f(local) == "dict"
        finally:
            srv.close()

    run_in_thread(body, timeout=60)


def test_get_value(child, helpers):
    lst = child.client.transfer([1, (2, 3), {"a": None}])
    assert lst._get_value() == [1, (2, 3), {"a": None}]
    col = child.client._import("collections")
    od = col.OrderedDict([("k", 2)])
    v = od._get_value()
    assert not isinstance(v, ObjectProxy)
    assert dict(v) == {"k": 2}
    with pytest.raises(Exception):
        helpers.Counter()._get_value()


def test_delete_releases_the_remote_object(child, helpers):
    c = helpers.Counter()
    assert c.get() == 0
    c._delete()
    with pytest.raises(RemoteCallException) as info:
        c.get()
    assert info.value.type_str == "KeyError"


def test_auto_delete_on_collection(fresh_child):
    proc = fresh_child()
    h = import_helpers(proc.client)
    server = proc.client["self"]
    gc.collect()
    server.object_count()  # flushes releases queued so far
    before = server.object_count()
    assert isinstance(before, int)
    objs = [h.Counter(i) for i in range(50)]
    assert objs[49].get() == 49
    during = server.object_count()
    assert during >= before + 50
    del objs
    gc.collect()
    after = wait_until(lambda: server.object_count() <= before, timeout=10)
    assert after, f"object count stayed at {server.object_count()} (was {before})"


def test_auto_delete_false_keeps_the_remote_object(fresh_child):
    proc = fresh_child()
    h = import_helpers(proc.client)
    server = proc.client["self"]
    gc.collect()
    server.object_count()
    before = server.object_count()
    objs = [h.Counter(i) for i in range(20)]
    for o in objs:
        o._set_proxy_options(auto_delete=False)
    del objs, o
    gc.collect()
    time.sleep(0.3)
    assert server.object_count() >= before + 20


def test_default_auto_delete_option_is_reported(child, helpers):
    assert helpers.Counter()._proxy_options["auto_delete"] is True


# ---- special methods -----------------------------------------------------------


def test_item_access_on_a_remote_list(child):
    lst = child.client.transfer([1, 2, 3])
    assert isinstance(lst, ObjectProxy)
    assert lst._type_str == "<class 'list'>"
    assert lst[0] == 1
    assert lst[-1] == 3
    lst[1] = 20
    assert lst._get_value() == [1, 20, 3]
    del lst[0]
    assert lst._get_value() == [20, 3]
    assert len(lst) == 2
    assert 3 in lst
    assert 99 not in lst
    assert list(iter(lst)) == [20, 3]
    assert [x for x in lst] == [20, 3]
    assert bool(lst) is True
    with pytest.raises(RemoteCallException) as info:
        lst[10]
    assert info.value.type_str == "IndexError"


def test_item_access_on_a_remote_dict(child):
    d = child.client.transfer({"a": 1})
    d["b"] = [2]
    assert d["b"] == [2]
    assert "b" in d
    del d["a"]
    assert d._get_value() == {"b": [2]}
    assert sorted(d) == ["b"]
    with pytest.raises(RemoteCallException) as info:
        d["missing"]
    assert info.value.type_str == "KeyError"


def test_bool_of_empty_and_full_remote_objects(child):
    assert bool(child.client.transfer([])) is False
    assert bool(child.client.transfer({})) is False
    assert bool(child.client.transfer([0])) is True
    empty = child.client.transfer([])
    if empty:
        pytest.fail("an empty remote list is truthy")


def test_arithmetic_on_a_remote_int(child):
    p = child.client.transfer(7)
    assert isinstance(p, ObjectProxy)
    assert p + 1 == 8
    assert p - 2 == 5
    assert p * 2 == 14
    assert p / 2 == 3.5
    assert p // 2 == 3
    assert p % 4 == 3
    assert p ** 2 == 49
    assert p << 1 == 14
    assert p >> 1 == 3
    assert p & 3 == 3
    assert p | 8 == 15
    assert p ^ 1 == 6
    assert -p == -7
    assert +p == 7
    assert abs(child.client.transfer(-3)) == 3
    assert ~p == -8


def test_reflected_operators(child, helpers):
    p = child.client.transfer(7)
    assert 10 - p == 3
    assert 1 + p == 8
    assert 3 * p == 21
    assert 14 / p == 2.0
    assert 2 ** p == 128
    n = helpers.Number(10)
    # int.__sub__ gives up, so Python asks the proxy's __rsub__, which
    # runs `5 - obj` remotely, which calls Number.__rsub__.
    assert 5 - n == -5
    assert 5 + n == 15
    assert n - 5 == 5
    assert 3 * n == 30
    assert -n == -10


def test_in_place_operators_modify_the_remote_object(child):
    lst = child.client.transfer([1])
    same = lst
    lst += [2]
    assert lst is same
    assert isinstance(lst, ObjectProxy)
    assert lst._get_value() == [1, 2]
    lst *= 2
    assert lst._get_value() == [1, 2, 1, 2]
    d = child.client.transfer({"a": 1})
    d |= {"b": 2}
    assert d._get_value() == {"a": 1, "b": 2}


def test_comparisons(child, helpers):
    p = child.client.transfer(7)
    assert p < 10
    assert p <= 7
    assert p > 3
    assert p >= 7
    assert not (p > 7)
    assert p == 7
    assert p != 8
    n = helpers.Number(3)
    assert n < 4
    assert n == 3
    assert not (n == 4)


def test_eq_and_hash_for_proxies_of_the_same_object(child, helpers):
    c = helpers.Counter()
    child.client["shared_counter"] = c
    a = child.client["shared_counter"]
    b = child.client["shared_counter"]
    assert a is b  # one proxy per remote object while it lives (teleprox)
    assert a == b
    assert not (a != b)
    assert hash(a) == hash(b)
    assert hash(a) == hash(a)
    assert {a: "x"}[b] == "x"
    other = helpers.Counter()
    assert a != other
    assert not (a == other)
    # The hash does not depend on the remote side.
    h = hash(a)
    a.incr()
    assert hash(a) == h


def test_repr_never_calls_the_remote_side(fresh_child):
    proc = fresh_child()
    h = import_helpers(proc.client)
    c = h.Counter()
    deferred = c.add
    proc.kill()
    proc.wait(10)
    text = repr(c)
    assert "Counter" in text
    assert repr(deferred)
    assert str(c)  # str falls back to repr, also without a round trip


def test_proxy_to_callable(child):
    builtins = child.client._import("builtins")
    assert builtins.len([1, 2, 3]) == 3
    assert builtins.sorted([3, 1, 2]) == [1, 2, 3]
    assert builtins.max(1, 5, 3) == 5


# ---- proxies as arguments -----------------------------------------------------------


def test_a_proxy_that_comes_home_is_unwrapped(child):
    builtins = child.client._import("builtins")
    operator = child.client._import("operator")
    obj = builtins.object()
    other = builtins.object()
    assert operator.is_(obj, obj) is True
    assert operator.is_(obj, other) is False


def test_a_proxy_that_comes_home_to_a_thread_server(thread_server):
    class Thing:
        pass

    thing = Thing()
    thread_server["thing"] = thing
    thread_server["is_thing"] = lambda x: x is thing
    client = farcall.RPCClient.get_client(thread_server.address)
    p = client["thing"]
    assert isinstance(p, ObjectProxy)
    assert client["is_thing"](p) is True
    assert client["is_thing"](1) is False


def test_a_proxy_to_a_third_process(child, child2, helpers, helpers2):
    a_counter = helpers.Counter(100)
    a_pid = child.pid
    # Child B receives a proxy to child A's object and calls it: B connects
    # to A itself.
    assert helpers2.call(a_counter.add, 1, 2) == 3
    assert helpers2.call_method(a_counter, "incr", 5) == 105
    assert a_counter.get() == 105
    assert helpers2.type_name(a_counter) == "ObjectProxy"
    a_os = child.client._import("os")
    assert helpers2.call(a_os.getpid) == a_pid
    assert helpers2.getpid() == child2.pid
    a_list = child.client.transfer([1, 2, 3])
    assert helpers2.length(a_list) == 3


def test_proxies_inside_containers_travel(child, child2, helpers, helpers2):
    a = helpers.Counter(1)
    b = helpers.Counter(2)
    assert helpers2.type_names([a, b], {"k": a}) == ["list", "dict"]
    out = helpers2.echo([a, {"k": b}])
    assert out[0] == a
    assert out[1]["k"] == b
    assert out[1]["k"].get() == 2


# ---- threads ------------------------------------------------------------------------


def test_proxies_work_from_several_threads(child, helpers):
    c = helpers.Counter()
    errors = []

    def worker(n):
        try:
            for i in range(20):
                assert c.add(n, i) == n + i
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_gil_is_released_during_a_remote_call(child):
    time_ = child.client._import("time")
    count = [0]
    running = threading.Event()
    stop = threading.Event()

    def counter():
        running.set()
        while not stop.is_set():
            count[0] += 1

    t = threading.Thread(target=counter, daemon=True)
    t.start()
    try:
        assert running.wait(10)
        before = count[0]
        time_.sleep(0.3)
        after = count[0]
    finally:
        stop.set()
        t.join(10)
    assert after - before > 1000, f"the other thread ran {after - before} times"


# ---- Python-level overhead --------------------------------------------------------------


def test_a_sync_call_runs_no_python_function_of_farcall(child, helpers):
    c = helpers.Counter()
    add = c.add
    assert add(1, 2) == 3  # warm up: imports and caches
    package_dir = os.path.dirname(os.path.abspath(farcall.__file__))
    calls = []

    def profiler(frame, event, arg):
        if event == "call":
            filename = os.path.abspath(frame.f_code.co_filename)
            if filename.startswith(package_dir + os.sep):
                calls.append((filename, frame.f_code.co_name))

    sys.setprofile(profiler)
    try:
        result = c.add(1, 2)
    finally:
        sys.setprofile(None)
    assert result == 3
    assert len(calls) <= 1, calls


# ---- more edge cases ----------------------------------------------------------------


def test_delattr_removes_the_remote_attribute(child, helpers):
    c = helpers.Counter()
    c.extra = 1
    assert c.extra._undefer() == 1
    del c.extra
    with pytest.raises(RemoteCallException) as info:
        c.extra._undefer()
    assert info.value.type_str == "AttributeError"


def test_values_that_cannot_travel_are_refused_locally(child, helpers):
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError):
        helpers.echo(loop)
    with pytest.raises(OverflowError):
        helpers.echo(2**64)
    # Nothing broke.
    assert helpers.echo([1]) == [1]


def test_datetimes_travel_by_copy(child, helpers):
    import datetime

    dt = datetime.datetime(2024, 2, 29, 23, 59, 58, 999999)
    d = datetime.date(1, 1, 1)
    assert helpers.echo(dt) == dt and type(helpers.echo(dt)) is datetime.datetime
    assert helpers.echo(d) == d and type(helpers.echo(d)) is datetime.date
    assert helpers.type_names(dt, d) == ["datetime", "date"]


def test_a_proxy_from_a_zmq_child_reaches_a_native_child(fresh_child, child2, helpers2):
    zmq_child = fresh_child(address="tcp://127.0.0.1:*")
    h = import_helpers(zmq_child.client)
    counter = h.Counter(7)
    assert counter._rpc_addr.startswith("tcp://")
    assert helpers2.call(counter.add, 2, 3) == 5
    assert helpers2.call_method(counter, "incr", 1) == 8
    assert counter.get() == 8


def test_proxy_returned_by_a_third_process_is_usable_here(child, child2, helpers, helpers2):
    """B hands back a proxy to A's object that it received: we get a proxy
    to A's object (same identity), not a proxy to a proxy."""
    a_counter = helpers.Counter(3)
    back = helpers2.echo(a_counter)
    assert isinstance(back, ObjectProxy)
    assert back._rpc_addr == child.address
    assert back == a_counter
    assert back.get() == 3


def test_a_proxy_returned_by_a_third_process_keeps_the_original_alive(
    child, child2, helpers, helpers2
):
    """Dropping the proxy that came back through B must not release the
    reference our original proxy holds."""
    a_counter = helpers.Counter(5)
    back = helpers2.echo(a_counter)
    assert back == a_counter
    del back
    gc.collect()
    # Let the release (if any) reach A before using the original again.
    server = child.client["self"]
    sentinel = helpers.Counter()
    count = server.object_count()
    del sentinel
    gc.collect()
    assert wait_until(lambda: server.object_count() < count, timeout=10)
    assert a_counter.get() == 5
    assert a_counter.incr() == 6
