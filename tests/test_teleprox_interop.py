"""Wire interop with the real teleprox package (PyPI ``teleprox==2.4.0``,
pyacq's maintained successor), in both directions:

(a) a teleprox ``RPCClient`` in this process talks to a farcall
    ``RPCServer(..., auth=False)`` serving from a thread of this process;
(b) a farcall ``RPCClient(..., auth=False)`` talks to a teleprox
    ``RPCServer`` running in a child process (started with subprocess, it
    prints its address; a finalizer kills it).

Each direction is run with both of pyacq's formats, ``msgpack`` and
``json``. teleprox peers cannot authenticate, so farcall opts in with
``auth=False`` on its side.

What teleprox 2.4.0 puts on the wire that plain pyacq did not (read from
its ``serializer.py``, ``server.py`` and ``client.py``):

- its msgpack serializer packs with ``strict_types=True``, so *every*
  tuple goes through ``default=`` and travels as a tagged map
  ``{"___type_name___": "tuple", "data": [...]}``: a call's ``args``, a
  proxy's ``attributes``, an ndarray's ``shape`` (its json serializer
  writes tuples as plain arrays);
- numpy scalars travel as ``np_number`` maps whose ``dtype`` is pickled;
- a proxy's state carries ``rpc_addr`` as str plus ``server_is_lazy`` and
  ``proxy_options``;
- a remote error is a map ``{"type", "traceback", "remote_stack_info",
  "remote_exc_traceback"}``, not pyacq's ``[type_name, lines]`` pair.

farcall decodes the ``tuple`` tag, and its ZeroMQ server answers errors in
the map form to clients whose routing id is teleprox's
(``host.process.thread:ADDRESS``). Every wait is bounded by ``T`` seconds.
"""

import datetime
import gc
import itertools
import os
import select
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import teleprox  # scripts/setup.sh installs teleprox==2.4.0

from farcall import DisconnectError, ObjectProxy, RemoteCallException, RPCClient  # noqa: E402
from farcall import Future as FarcallFuture  # noqa: E402
from farcall_testutil import ThreadServer, wait_until  # noqa: E402

pytestmark = pytest.mark.timeout(60)

#: the bound of every wait in this module, in seconds
T = 3.0

SERIALIZERS = ["msgpack", "json"]

def assert_fails_fast(call):
    """``call()`` raises DisconnectError well within ``T`` seconds."""
    t0 = time.monotonic()
    with pytest.raises(DisconnectError):
        call()
    assert time.monotonic() - t0 < T


# ---- the values both sides carry ---------------------------------------------

#: (value, what the other side gets back, the type name the other side sees)
SCALAR_VALUES = [
    (None, None, "NoneType"),
    (True, True, "bool"),
    (False, False, "bool"),
    (0, 0, "int"),
    (-5, -5, "int"),
    (2**40, 2**40, "int"),
    (-(2**63), -(2**63), "int"),
    (2**64 - 1, 2**64 - 1, "int"),
    (1.5, 1.5, "float"),
    (1e-300, 1e-300, "float"),
    (float("inf"), float("inf"), "float"),
    ("", "", "str"),
    ("héllo ✓ 😀\n\t\"'\\", "héllo ✓ 😀\n\t\"'\\", "str"),
    (b"", b"", "bytes"),
    (b"\x00\x01\xfe\xff", b"\x00\x01\xfe\xff", "bytes"),
    ([], [], "list"),
    ([1, "a", None, 2.5, [b"x"]], [1, "a", None, 2.5, [b"x"]], "list"),
    ({}, {}, "dict"),
    ({"a": 1, "n": {"b": [1, 2], "c": None}}, {"a": 1, "n": {"b": [1, 2], "c": None}}, "dict"),
    (
        datetime.datetime(2024, 1, 2, 3, 4, 5, 6),
        datetime.datetime(2024, 1, 2, 3, 4, 5, 6),
        "datetime",
    ),
    (datetime.date(2024, 1, 2), datetime.date(2024, 1, 2), "date"),
]

ARRAYS = [
    np.arange(6, dtype=np.float64).reshape(2, 3),
    np.arange(10, dtype=np.int16),
    np.array([[True, False], [False, True]]),
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    np.array([1 + 2j, -3.5j], dtype=np.complex128),
    np.arange(5, dtype=">i4"),
    np.zeros((2, 0, 3), dtype=np.float32),
    np.arange(10, dtype=np.int64)[::2],  # not contiguous: sent as a copy
    np.linspace(0, 1, 300_000, dtype=np.float32),  # 1.2 MB
]


def check_values(roundtrip, typename):
    """Sends every value of ``SCALAR_VALUES`` (and a tuple) through
    ``roundtrip`` and ``typename`` (callables into the other side); returns
    the list of mismatches (empty when all is well)."""
    problems = []
    for value, expected, expected_type in SCALAR_VALUES:
        got = roundtrip(value)
        if got != expected or type(got) is not type(expected):
            problems.append(f"{value!r} came back as {got!r}")
        seen = typename(value)
        if seen != expected_type:
            problems.append(f"{value!r} arrived as a {seen}, not a {expected_type}")
    # Tuples are lists in pyacq's formats (teleprox's msgpack tags them).
    got = roundtrip((1, "a"))
    if list(got) != [1, "a"] or not isinstance(got, (list, tuple)):
        problems.append(f"(1, 'a') came back as {got!r}")
    if typename((1, "a")) not in ("list", "tuple"):
        problems.append(f"(1, 'a') arrived as a {typename((1, 'a'))}")
    return problems


def check_arrays(roundtrip, describe):
    """Sends every array of ``ARRAYS`` through ``roundtrip``; ``describe``
    returns ``[str(dtype), list(shape)]`` as the other side sees it."""
    problems = []
    for a in ARRAYS:
        got = roundtrip(a)
        if not isinstance(got, np.ndarray):
            problems.append(f"{a.dtype}{a.shape} came back as {type(got).__name__}")
            continue
        if got.dtype != a.dtype or got.shape != a.shape or not np.array_equal(got, a):
            problems.append(f"{a.dtype}{a.shape} came back as {got.dtype}{got.shape}: {got!r:.80}")
        seen = describe(a)
        if seen != [str(a.dtype), list(a.shape)]:
            problems.append(f"{a.dtype}{a.shape} arrived as {seen}")
    return problems


# ---- objects served on either side --------------------------------------------

# The same classes serve in this process (direction a) and in the teleprox
# child (direction b, through TELEPROX_SERVER_SCRIPT), so both directions
# check the same behaviour.
OBJECTS_SOURCE = '''
import weakref


class Counter:
    """A plain object: travels by proxy."""

    def __init__(self, value=0):
        self.value = value

    def incr(self, n=1):
        self.value += n
        return self.value


class Device:
    """The object a client drives."""

    def __init__(self):
        self.value = 0
        self.made = {}
        self.server = None

    def add(self, a, b):
        return a + b

    def describe(self, *args, **kwargs):
        return [list(args), kwargs]

    def echo(self, x):
        return x

    def typename(self, x):
        return type(x).__name__

    def describe_array(self, a):
        return [str(a.dtype), list(a.shape)]

    def make_array(self, n):
        import numpy
        return numpy.arange(n, dtype=numpy.float32).reshape(n // 2, 2)

    def incr(self, n=1):
        self.value += n
        return self.value

    def get(self):
        return self.value

    def fail(self, message):
        raise ValueError(message)

    def make_counter(self, key, start=0):
        c = Counter(start)
        self.made[key] = weakref.ref(c)
        return c

    def alive(self, key):
        return self.made[key]() is not None

    def read_value(self, counter):
        return [type(counter).__name__, counter.value]

    def published(self, name):
        return self.server[name]
'''

_objects = {"__name__": __name__}
exec(OBJECTS_SOURCE, _objects)
Counter = _objects["Counter"]
Device = _objects["Device"]

TELEPROX_SERVER_SCRIPT = (
    OBJECTS_SOURCE
    + '''
import sys
import teleprox


class TeleproxDevice(Device):
    def clients(self):
        """The ZeroMQ identities this teleprox server has seen."""
        return list(self.server._clients)


server = teleprox.RPCServer(run_thread=False)
device = TeleproxDevice()
device.server = server
server["device"] = device
server["greeting"] = "hello from teleprox"
server["counter"] = Counter(11)
print(server.address.decode(), flush=True)
server.run_forever()
'''
)


# ---- (a) fixtures: a farcall server, teleprox clients -------------------------


def start_farcall_server():
    """A farcall ZeroMQ server (auth=False) serving a Device from a thread."""
    ts = ThreadServer("tcp://127.0.0.1:*", auth=False)
    device = Device()
    device.server = ts.server
    ts["device"] = device
    ts["greeting"] = "hello from farcall"
    ts["counter"] = Counter(11)
    return ts, device


@pytest.fixture(scope="module")
def farcall_server():
    """A farcall server shared by the direction (a) tests that leave it open."""
    ts, device = start_farcall_server()
    yield ts
    ts.close()


@pytest.fixture
def fresh_farcall_server():
    """A farcall server of one test's own (for tests that close it)."""
    started = []

    def make():
        ts, _ = start_farcall_server()
        started.append(ts)
        return ts

    yield make
    for ts in started:
        try:
            ts.close(timeout=T)
        except Exception:
            pass


_client_names = itertools.count()


def teleprox_client(address, ser):
    """A teleprox client whose proxies time out after ``T`` seconds.

    teleprox names a client's ZeroMQ identity after its host, process and
    thread (``host.process.thread:address``), so a second client of one
    thread reuses the first one's identity, and a ROUTER still holding the
    old connection ignores the new one: its first ping (teleprox waits 1 s
    for it) is lost now and then, against a teleprox server as against a
    farcall one. A fresh teleprox thread name gives each client its own.
    """
    teleprox.log.set_thread_name(f"test-client-{next(_client_names)}")
    c = teleprox.RPCClient(address, serializer=ser)
    c.default_proxy_options["timeout"] = T
    return c


@pytest.fixture(params=SERIALIZERS)
def ser(request):
    return request.param


@pytest.fixture
def tp_client(farcall_server, ser):
    """A teleprox client of ``farcall_server`` in this thread."""
    c = teleprox_client(farcall_server.address, ser)
    yield c
    c.close()


def tp_get_item(client, name):
    return client.send("get_item", opts={"name": name}, timeout=T)


# ---- (b) fixtures: a teleprox server in a child, farcall clients --------------


class TeleproxProcess:
    """A teleprox RPCServer in a child process, started from a script."""

    def __init__(self, log_path):
        self.log = open(log_path, "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TELEPROX_SERVER_SCRIPT],
            stdout=subprocess.PIPE,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 10 * T)
        line = self.proc.stdout.readline().strip() if ready else ""
        if not line.startswith("tcp://"):
            self.kill()
            raise RuntimeError(f"the teleprox server did not start: {line!r}\n{self.stderr()}")
        self.address = line

    def stderr(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def wait(self, timeout=T):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(T)
        self.proc.stdout.close()
        self.log.close()


@pytest.fixture(scope="module")
def teleprox_server(tmp_path_factory):
    """A teleprox server shared by the direction (b) tests that leave it open."""
    tp = TeleproxProcess(tmp_path_factory.mktemp("teleprox") / "stderr.txt")
    yield tp
    tp.kill()


@pytest.fixture
def fresh_teleprox_server(tmp_path):
    """A teleprox server of one test's own (for tests that close or kill it)."""
    started = []

    def make():
        tp = TeleproxProcess(tmp_path / f"stderr{len(started)}.txt")
        started.append(tp)
        return tp

    yield make
    for tp in started:
        tp.kill()


def farcall_client(address, ser):
    """A farcall client (auth=False) forced to ``ser``, proxies timing out
    after ``T`` seconds."""
    c = RPCClient(address, serializer=ser, auth=False)
    c.set_proxy_options(timeout=T)
    return c


@pytest.fixture
def fc_client(teleprox_server, ser):
    """A farcall client of ``teleprox_server``."""
    c = farcall_client(teleprox_server.address, ser)
    yield c
    c.close()


def fc_get_item(client, name):
    return client.send("get_item", opts={"name": name}, timeout=T)


# =============================================================================
# (a) a teleprox client, a farcall server
# =============================================================================


@pytest.mark.parametrize("ser", SERIALIZERS, indirect=True)
def test_a_calls_with_kwargs(tp_client):
    """A teleprox client pings a farcall server, gets a published object by
    proxy and calls its methods with positional and keyword arguments."""
    assert tp_client.ping() == "pong"
    device = tp_get_item(tp_client, "device")
    assert isinstance(device, teleprox.ObjectProxy)
    assert device._type_str == f"<class '{__name__}.Device'>"
    assert device.add(1, 2) == 3
    assert device.add(a="x", b="y") == "xy"
    assert device.describe(1, "two", k=3, flag=True, none=None) == [
        [1, "two"],
        {"k": 3, "flag": True, "none": None},
    ]


@pytest.mark.parametrize("ser", SERIALIZERS, indirect=True)
def test_a_value_types(tp_client):
    """Every value type both sides carry (None, bool, int up to 64 bits,
    float, str, bytes, list, tuple, dict, datetime, date) reaches the farcall
    server as that type and comes back to teleprox equal, of the same type."""
    device = tp_get_item(tp_client, "device")
    assert check_values(device.echo, device.typename) == []


@pytest.mark.parametrize("ser", SERIALIZERS, indirect=True)
def test_a_numpy_arrays(tp_client):
    """numpy arrays of several dtypes and shapes (empty, 3-d, big-endian,
    complex, bool, non-contiguous, 1.2 MB) reach the farcall server with
    their dtype and shape and come back equal; a farcall-made array arrives
    in teleprox as an array."""
    device = tp_get_item(tp_client, "device")
    assert check_arrays(device.echo, device.describe_array) == []
    made = device.make_array(6)
    assert isinstance(made, np.ndarray)
    assert made.dtype == np.float32 and made.shape == (3, 2)
    assert np.array_equal(made, np.arange(6, dtype=np.float32).reshape(3, 2))


@pytest.mark.parametrize("ser", SERIALIZERS, indirect=True)
def test_a_teleprox_tags_pass_through(tp_client):
    """A numpy scalar from teleprox travels as teleprox's own 'np_number' map
    (its dtype pickled, which farcall must not unpickle from an
    unauthenticated peer): farcall keeps the unknown tag as a map, and echoing
    it gives teleprox back its numpy scalar."""
    device = tp_get_item(tp_client, "device")
    got = device.echo(np.int32(7))
    assert type(got) is np.int32 and got == 7
    assert device.typename(np.int32(7)) == "dict"


@pytest.mark.parametrize("ser", SERIALIZERS, indirect=True)
def test_a_proxies(tp_client, farcall_server):
    """An object farcall returns by proxy is usable from teleprox: its
    methods are called, an attribute is read (deferred, then fetched), and
    the proxy sent back to the farcall server arrives as the object itself."""
    device = tp_get_item(tp_client, "device")
    counter = device.make_counter(f"proxies-{tp_client.serializer.type}", 3)
    assert isinstance(counter, teleprox.ObjectProxy)
    assert "Counter" in counter._type_str
    assert counter.incr(2) == 5
    assert counter.value._get_value() == 5
    assert device.read_value(counter) == ["Counter", 5]
    # return_type='proxy' keeps even a plain value remote.
    p = device.add(2, 3, _return_type="proxy")
    assert isinstance(p, teleprox.ObjectProxy)
    assert p._type_str == "<class 'int'>"
    assert p._get_value() == 5


@pytest.mark.parametrize("ser", SERIALIZERS, indirect=True)
def test_a_sync_async_off(tp_client, farcall_server):
    """``_sync='async'`` gives a teleprox Future with the farcall server's
    result; ``_sync='off'`` gets no reply but runs (in order, before the next
    call)."""
    device = tp_get_item(tp_client, "device")
    fut = device.add(20, 22, _sync="async")
    assert isinstance(fut, teleprox.Future)
    assert fut.result(timeout=T) == 42
    futs = [device.add(i, i, _sync="async") for i in range(10)]
    assert [f.result(timeout=T) for f in futs] == [2 * i for i in range(10)]
    before = device.get()
    assert device.incr(5, _sync="off") is None
    assert device.get() == before + 5
    assert farcall_server["device"].value == before + 5


@pytest.mark.parametrize(
    "ser", SERIALIZERS, indirect=True
)
def test_a_remote_error(tp_client):
    """A failing call on the farcall server raises teleprox's
    RemoteCallException carrying the exception's type name and a traceback
    with the message and the failing function; async too."""
    device = tp_get_item(tp_client, "device")
    with pytest.raises(teleprox.RemoteCallException) as info:
        device.fail("wire failure from farcall")
    assert info.value.type_str == "ValueError"
    text = "".join(info.value.tb_str)
    assert "wire failure from farcall" in text
    assert "fail" in text
    fut = device.fail("async failure", _sync="async")
    with pytest.raises(teleprox.RemoteCallException) as info:
        fut.result(timeout=T)
    assert info.value.type_str == "ValueError"
    # The server still serves afterwards.
    assert device.add(1, 1) == 2


def test_a_publishing(tp_client, farcall_server):
    """Names published on the farcall server are read by teleprox (values by
    copy, objects by proxy) and ``client['name'] = obj`` from teleprox
    publishes on the farcall server."""
    assert tp_get_item(tp_client, "greeting") == "hello from farcall"
    counter = tp_get_item(tp_client, "counter")
    assert isinstance(counter, teleprox.ObjectProxy)
    assert "Counter" in counter._type_str
    name = f"from_teleprox_{tp_client.serializer.type}"
    value = {"k": [1, 2], "s": "x", "b": b"\x00"}
    tp_client[name] = value
    assert farcall_server[name] == value
    assert tp_get_item(tp_client, name) == value


@pytest.mark.parametrize("ser", SERIALIZERS, indirect=True)
def test_a_delete_releases(tp_client):
    """A teleprox proxy's ``_delete()`` releases the farcall server's
    reference (the object is freed), and so does garbage collection of a
    proxy with teleprox's ``auto_delete=True``."""
    device = tp_get_item(tp_client, "device")
    key = f"delete-{tp_client.serializer.type}"
    counter = device.make_counter(key, 1)
    assert counter.incr() == 2
    assert device.alive(key) is True
    counter._delete()
    gc.collect()
    assert wait_until(lambda: device.alive(key) is False, T)

    key2 = key + "-auto"
    counter = device.make_counter(key2, 1)
    counter._set_proxy_options(auto_delete=True)
    assert device.alive(key2) is True
    del counter
    gc.collect()
    assert wait_until(lambda: device.alive(key2) is False, T)


def _teleprox_client_in_thread(address, ser, started, stop, result):
    """Body of a thread holding a second teleprox client: connects, then
    polls ``disconnected()`` until it turns true or ``stop`` is set."""
    try:
        c = teleprox_client(address, ser)
        try:
            result["ping"] = c.ping()
            started.set()
            deadline = time.monotonic() + 4 * T
            while not stop.is_set() and time.monotonic() < deadline:
                if c.disconnected():
                    result["noticed"] = time.monotonic()
                    break
                time.sleep(0.01)
        finally:
            c.close()
    except BaseException as e:
        result["error"] = e
        started.set()


@pytest.mark.parametrize("ser", SERIALIZERS)
def test_a_close_server_and_disconnect_notice(fresh_farcall_server, ser):
    """``close_server()`` from a teleprox client closes the farcall server
    (its serving thread returns, True comes back) and another teleprox
    client, in another thread, receives the disconnect notice."""
    ts = fresh_farcall_server()
    started, stop, result = threading.Event(), threading.Event(), {}
    other = threading.Thread(
        target=_teleprox_client_in_thread,
        args=(ts.address, ser, started, stop, result),
        daemon=True,
    )
    other.start()
    try:
        assert started.wait(T)
        assert "error" not in result, result.get("error")
        assert result["ping"] == "pong"
        c = teleprox_client(ts.address, ser)
        try:
            assert c.close_server() is True
            assert c.disconnected()
            with pytest.raises(RuntimeError, match="disconnected"):
                c.ping()
        finally:
            c.close()
        other.join(2 * T)
        assert "error" not in result, result.get("error")
        assert "noticed" in result, "the other teleprox client was not told"
        ts.thread.join(T)
        assert not ts.thread.is_alive(), "the farcall server still serves"
        assert not ts.server.running()
    finally:
        stop.set()
        other.join(T)


@pytest.mark.parametrize("ser", SERIALIZERS)
def test_a_farcall_close_notifies_teleprox(fresh_farcall_server, ser):
    """Closing the farcall server from its own side sends teleprox clients
    the disconnect notice: ``disconnected()`` turns true without a call."""
    ts = fresh_farcall_server()
    c = teleprox_client(ts.address, ser)
    try:
        assert c.ping() == "pong"
        assert not c.disconnected()
        ts.close(timeout=T)
        assert wait_until(c.disconnected, T)
    finally:
        c.close()


# =============================================================================
# (b) a farcall client, a teleprox server
# =============================================================================


@pytest.mark.parametrize("ser", SERIALIZERS, indirect=True)
def test_b_calls_with_kwargs(fc_client, teleprox_server, ser):
    """A farcall client pings a teleprox server, gets a published object by
    proxy and calls its methods with positional and keyword arguments."""
    assert fc_client.serializer.type == ser
    assert fc_client.ping() == "pong"
    device = fc_get_item(fc_client, "device")
    assert isinstance(device, ObjectProxy)
    assert device._type_str == "<class '__main__.TeleproxDevice'>"
    assert device._rpc_addr == teleprox_server.address
    assert device.add(1, 2) == 3
    assert device.add(a="x", b="y") == "xy"
    assert device.describe(1, "two", k=3, flag=True, none=None) == [
        [1, "two"],
        {"k": 3, "flag": True, "none": None},
    ]


def test_b_negotiation_falls_back_to_msgpack(teleprox_server):
    """A farcall client without a serializer finds that teleprox is not a
    farcall server and speaks pyacq's msgpack to it."""
    c = RPCClient(teleprox_server.address, auth=False)
    try:
        assert c.serializer.type == "msgpack"
        assert c.ping() == "pong"
        assert fc_get_item(c, "greeting") == "hello from teleprox"
    finally:
        c.close()


@pytest.mark.parametrize("ser", SERIALIZERS, indirect=True)
def test_b_value_types(fc_client):
    """Every value type both sides carry (None, bool, int up to 64 bits,
    float, str, bytes, list, tuple, dict, datetime, date) reaches the
    teleprox server as that type and comes back to farcall equal, of the
    same type."""
    device = fc_get_item(fc_client, "device")
    assert check_values(device.echo, device.typename) == []


@pytest.mark.parametrize("ser", SERIALIZERS, indirect=True)
def test_b_numpy_arrays(fc_client):
    """numpy arrays of several dtypes and shapes reach the teleprox server
    with their dtype and shape and come back equal; a teleprox-made array
    arrives in farcall as an array."""
    device = fc_get_item(fc_client, "device")
    assert check_arrays(device.echo, device.describe_array) == []
    made = device.make_array(6)
    assert isinstance(made, np.ndarray)
    assert made.dtype == np.float32 and made.shape == (3, 2)
    assert np.array_equal(made, np.arange(6, dtype=np.float32).reshape(3, 2))


@pytest.mark.parametrize("ser", SERIALIZERS, indirect=True)
def test_b_teleprox_tags(fc_client):
    """teleprox's own tags as farcall sees them: a numpy scalar from teleprox
    is an 'np_number' map with a pickled dtype, which farcall does not
    unpickle (it stays a map with its plain 'value'); a numpy scalar from
    farcall reaches teleprox as a 0-d array of its dtype."""
    device = fc_get_item(fc_client, "device")
    numpy_ = fc_client._import("numpy")
    got = numpy_.int32(7)
    assert isinstance(got, dict)
    assert got["___type_name___"] == "np_number"
    assert got["value"] == 7
    back = device.echo(np.int32(7))
    assert np.asarray(back).dtype == np.int32 and back == 7
    assert device.typename(np.float64(2.5)) == "ndarray"


@pytest.mark.parametrize("ser", SERIALIZERS, indirect=True)
def test_b_proxies(fc_client):
    """An object teleprox returns by proxy is usable from farcall: its
    methods are called, an attribute is read (deferred, then fetched), and
    the proxy sent back to the teleprox server arrives as the object itself;
    ``_import`` gives a working module proxy."""
    device = fc_get_item(fc_client, "device")
    counter = device.make_counter(f"proxies-{fc_client.serializer.type}", 3)
    assert isinstance(counter, ObjectProxy)
    assert counter._type_str == "<class '__main__.Counter'>"
    assert counter.incr(2) == 5
    assert counter.value._get_value() == 5
    assert device.read_value(counter) == ["Counter", 5]
    p = device.add(2, 3, _return_type="proxy")
    assert isinstance(p, ObjectProxy)
    assert p._type_str == "<class 'int'>"
    assert p._get_value() == 5
    os_ = fc_client._import("os")
    assert os_.getpid() != os.getpid()
    assert os_.path.join("a", "b") == os.path.join("a", "b")


@pytest.mark.parametrize("ser", SERIALIZERS, indirect=True)
def test_b_sync_async_off(fc_client):
    """``_sync='async'`` gives a farcall Future with the teleprox server's
    result; ``_sync='off'`` gets no reply but runs (before the next call)."""
    device = fc_get_item(fc_client, "device")
    fut = device.add(20, 22, _sync="async")
    assert isinstance(fut, FarcallFuture)
    assert fut.result(timeout=T) == 42
    futs = [device.add(i, i, _sync="async") for i in range(10)]
    assert [f.result(timeout=T) for f in futs] == [2 * i for i in range(10)]
    before = device.get()
    assert device.incr(5, _sync="off") is None
    assert device.get() == before + 5


@pytest.mark.parametrize("ser", SERIALIZERS, indirect=True)
def test_b_remote_error(fc_client):
    """A failing call on the teleprox server (whose error reply is a map)
    raises farcall's RemoteCallException with the exception's type name and
    a traceback showing the message and the failing function; async too."""
    device = fc_get_item(fc_client, "device")
    with pytest.raises(RemoteCallException) as info:
        device.fail("wire failure from teleprox")
    assert info.value.type_str == "ValueError"
    assert "ValueError: wire failure from teleprox" in info.value.tb_str
    assert "in fail" in info.value.tb_str
    assert "wire failure from teleprox" in str(info.value)
    fut = device.fail("async failure", _sync="async")
    with pytest.raises(RemoteCallException) as info:
        fut.result(timeout=T)
    assert info.value.type_str == "ValueError"
    assert device.add(1, 1) == 2


@pytest.mark.parametrize("ser", SERIALIZERS, indirect=True)
def test_b_publishing(fc_client):
    """Names published on the teleprox server are read by farcall (values by
    copy, objects by proxy) and ``client['name'] = obj`` from farcall
    publishes on the teleprox server."""
    assert fc_get_item(fc_client, "greeting") == "hello from teleprox"
    counter = fc_get_item(fc_client, "counter")
    assert isinstance(counter, ObjectProxy)
    assert counter._type_str == "<class '__main__.Counter'>"
    name = f"from_farcall_{fc_client.serializer.type}"
    value = {"k": [1, 2], "s": "x", "b": b"\x00"}
    fc_client[name] = value
    assert fc_get_item(fc_client, name) == value
    device = fc_get_item(fc_client, "device")
    assert device.published(name) == value


@pytest.mark.parametrize("ser", SERIALIZERS, indirect=True)
def test_b_delete_releases(fc_client):
    """A farcall proxy's ``_delete()`` releases the teleprox server's
    reference (the object is freed), and so does garbage collection of the
    last proxy (farcall's auto-delete)."""
    device = fc_get_item(fc_client, "device")
    key = f"delete-{fc_client.serializer.type}"
    counter = device.make_counter(key, 1)
    assert counter.incr() == 2
    assert device.alive(key) is True
    counter._delete()
    assert wait_until(lambda: device.alive(key) is False, T)

    key2 = key + "-auto"
    counter = device.make_counter(key2, 1)
    assert counter.incr() == 2
    assert device.alive(key2) is True
    del counter
    gc.collect()
    assert wait_until(lambda: device.alive(key2) is False, T)


@pytest.mark.parametrize("ser", SERIALIZERS)
def test_b_close_server(fresh_teleprox_server, ser):
    """``close_server()`` from farcall closes the teleprox server (its
    process exits) and the client knows: ``disconnected()`` is true and a
    new request fails with DisconnectError at once, not at its timeout."""
    tp = fresh_teleprox_server()
    c = farcall_client(tp.address, ser)
    try:
        assert fc_get_item(c, "greeting") == "hello from teleprox"
        c.close_server()
        assert tp.wait(T) == 0, tp.stderr()
        assert wait_until(c.disconnected, T)
        assert_fails_fast(lambda: c.send("ping", timeout=2 * T))
    finally:
        c.close()


@pytest.mark.parametrize("ser", SERIALIZERS)
def test_b_disconnect_notice(fresh_teleprox_server, ser):
    """When a teleprox client closes the teleprox server (which sends its
    other clients a disconnect notice, then exits), the farcall client
    notices: ``disconnected()`` turns true without a call, and a request
    fails with DisconnectError at once."""
    tp = fresh_teleprox_server()
    c = farcall_client(tp.address, ser)
    try:
        assert c.ping() == "pong"
        assert not c.disconnected()

        def close_from_teleprox():
            other = teleprox_client(tp.address, ser)
            try:
                return other.close_server()
            finally:
                other.close()

        box = {}
        t = threading.Thread(target=lambda: box.update(r=close_from_teleprox()), daemon=True)
        t.start()
        t.join(2 * T)
        assert box.get("r") is True
        assert wait_until(c.disconnected, T)
        assert_fails_fast(lambda: c.send("ping", timeout=2 * T))
        assert tp.wait(T) == 0, tp.stderr()
    finally:
        c.close()


@pytest.mark.parametrize("ser", SERIALIZERS)
def test_b_teleprox_process_dies(fresh_teleprox_server, ser):
    """A teleprox server killed while the farcall client is idle: the next
    request fails with DisconnectError well before its timeout."""
    tp = fresh_teleprox_server()
    c = farcall_client(tp.address, ser)
    try:
        assert c.ping() == "pong"
        tp.proc.kill()
        assert tp.wait(T) is not None
        assert_fails_fast(lambda: c.send("ping", timeout=2 * T))
    finally:
        c.close()


@pytest.mark.parametrize("ser", SERIALIZERS)
def test_b_teleprox_process_dies_mid_call(fresh_teleprox_server, ser):
    """A teleprox server killed in the middle of a call: the pending farcall
    call fails with DisconnectError well before its timeout."""
    tp = fresh_teleprox_server()
    c = farcall_client(tp.address, ser)
    try:
        time_ = c._import("time", timeout=T)
        fut = time_.sleep(30, _sync="async", _timeout=30)
        time.sleep(0.2)
        assert not fut.done()
        tp.proc.kill()
        assert_fails_fast(lambda: fut.result(timeout=2 * T))
    finally:
        c.close()


@pytest.mark.parametrize("ser", SERIALIZERS)
def test_b_identity_is_printable(teleprox_server, ser):
    """The routing identity the teleprox server sees for a farcall client is
    printable UTF-8, as pyacq-family servers expect (they log it and put it
    in error replies; issue 11 item 14)."""
    c = farcall_client(teleprox_server.address, ser)
    try:
        assert c.ping() == "pong"
        # A teleprox client reads the identities (teleprox's own are text).
        tp = teleprox_client(teleprox_server.address, "json")
        try:
            idents = tp_get_item(tp, "device").clients()
        finally:
            tp.close()
        assert len(idents) >= 2
        for ident in idents:
            text = ident.decode("utf-8")  # a binary identity raises here
            assert text.isprintable(), ident
    finally:
        c.close()
