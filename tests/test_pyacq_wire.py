"""pyacq wire compatibility, spoken with plain pyzmq + msgpack/json.

pyacq peers cannot authenticate, so both sides opt in explicitly:
``RPCServer(address, auth=False)`` and ``RPCClient(address, auth=False)``.

A pyacq client is a DEALER sending ``[req_id, action, return_type,
ser_type, opts]``; the server (a ROUTER) answers one serialized map
``{action: "return", req_id, rval, error}``. Proxies travel as maps tagged
``___type_name___: "proxy"``. See docs/protocol.md and docs/encodings.md.
"""

import base64
import gc
import json
import os
import threading
import time

import msgpack
import pytest
import zmq

from farcall import ObjectProxy, ProtocolError, RemoteCallException, RPCClient
from farcall_test_helpers import Counter
from farcall_testutil import ThreadServer, run_in_thread, wait_until

TIMEOUT_MS = 10_000


# ---- a pyacq client talking to a farcall server --------------------------------


class PyacqClient:
    """What pyacq's RPCClient puts on the wire, written by hand."""

    def __init__(self, address, ser_type="msgpack"):
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(address)
        self.ser_type = ser_type
        self.next_id = 1

    def close(self):
        self.sock.close(0)

    def dumps(self, obj):
        if obj is None:
            return b""
        if self.ser_type == "msgpack":
            return msgpack.packb(obj, use_bin_type=True)
        return json.dumps(obj).encode()

    def loads(self, data):
        if self.ser_type == "msgpack":
            return msgpack.unpackb(data, raw=False)
        return json.loads(data.decode())

    def send(self, action, opts=None, return_type="auto", req_id=None):
        if req_id is None:
            req_id = self.next_id
            self.next_id += 1
        frames = [
            str(req_id).encode(),
            action.encode(),
            return_type.encode(),
            self.ser_type.encode(),
            self.dumps(opts),
        ]
        self.sock.send_multipart(frames)
        return req_id

    def recv(self):
        assert self.sock.poll(TIMEOUT_MS), "no reply from the server"
        frames = self.sock.recv_multipart()
        assert len(frames) == 1, frames
        return self.loads(frames[0])

    def request(self, action, opts=None, return_type="auto"):
        req_id = self.send(action, opts, return_type)
        reply = self.recv()
        assert reply["action"] == "return"
        assert reply["req_id"] == req_id
        assert set(reply) == {"action", "req_id", "rval", "error"}
        return reply


@pytest.fixture(scope="module")
def zmq_server():
    # pyacq peers cannot authenticate: talking to them is an explicit opt-in.
    ts = ThreadServer("tcp://127.0.0.1:*", auth=False)
    assert ts.address.startswith("tcp://127.0.0.1:")
    ts["counter"] = Counter(5)
    ts["plain"] = [1, 2, 3]
    yield ts
    ts.close()


@pytest.fixture(params=["msgpack", "json"])
def pyacq_client(request, zmq_server):
    c = PyacqClient(zmq_server.address, request.param)
    yield c
    c.close()


def rpc_addr_of(proxy_map, ser_type):
    addr = proxy_map["rpc_addr"]
    if ser_type == "json":
        assert addr["___type_name___"] == "bytes"
        return base64.b64decode(addr["data"])
    assert isinstance(addr, bytes)
    return addr


def test_ping(pyacq_client):
    reply = pyacq_client.request("ping")
    assert reply["rval"] == "pong"
    assert reply["error"] is None


def test_import_and_call(pyacq_client, zmq_server):
    reply = pyacq_client.request("import", {"module": "os"})
    assert reply["error"] is None
    proxy = reply["rval"]
    assert proxy["___type_name___"] == "proxy"
    assert list(proxy)[0] == "___type_name___"
    assert rpc_addr_of(proxy, pyacq_client.ser_type) == zmq_server.address.encode()
    assert proxy["type_str"] == "<class 'module'>"
    assert proxy["attributes"] == []
    assert isinstance(proxy["obj_id"], int) and isinstance(proxy["ref_id"], int)
    call = dict(proxy, attributes=["getpid"])
    reply = pyacq_client.request("call_obj", {"obj": call, "args": [], "kwargs": {}})
    assert reply["error"] is None
    assert reply["rval"] == os.getpid()
    join = dict(proxy, attributes=["path", "join"])
    reply = pyacq_client.request(
        "call_obj", {"obj": join, "args": ["a", "b"], "kwargs": {}}
    )
    assert reply["rval"] == os.path.join("a", "b")


def test_get_item_and_calls_on_a_published_object(pyacq_client):
    reply = pyacq_client.request("get_item", {"name": "counter"})
    counter = reply["rval"]
    assert counter["___type_name___"] == "proxy"
    assert counter["type_str"] == "<class 'farcall_test_helpers.Counter'>"
    add = dict(counter, attributes=["add"])
    reply = pyacq_client.request("call_obj", {"obj": add, "args": [1, 2], "kwargs": {}})
    assert reply["rval"] == 3
    kw = dict(counter, attributes=["kwargs"])
    reply = pyacq_client.request(
        "call_obj", {"obj": kw, "args": [[1, 2]], "kwargs": {"a": "b"}}
    )
    # Tuples and lists are both lists in pyacq's formats.
    assert reply["rval"] == [[[1, 2]], {"a": "b"}]
    reply = pyacq_client.request("get_item", {"name": "plain"})
    assert reply["rval"] == [1, 2, 3]


def test_return_types(pyacq_client):
    counter = pyacq_client.request("get_item", {"name": "counter"})["rval"]
    add = dict(counter, attributes=["add"])
    reply = pyacq_client.request(
        "call_obj", {"obj": add, "args": [2, 2], "kwargs": {}}, return_type="proxy"
    )
    p = reply["rval"]
    assert p["___type_name___"] == "proxy"
    assert p["type_str"] == "<class 'int'>"
    reply = pyacq_client.request("get_obj", {"obj": p}, return_type="value")
    assert reply["rval"] == 4


def test_remote_error_reply(pyacq_client):
    counter = pyacq_client.request("get_item", {"name": "counter"})["rval"]
    fail = dict(counter, attributes=["fail"])
    reply = pyacq_client.request(
        "call_obj", {"obj": fail, "args": ["wire failure"], "kwargs": {}}
    )
    assert reply["rval"] is None
    type_name, lines = reply["error"]
    assert type_name == "ValueError"
    assert isinstance(lines, list) and all(isinstance(x, str) for x in lines)
    assert "wire failure" in "".join(lines)


def test_unknown_action_gets_an_error_reply(pyacq_client):
    reply = pyacq_client.request("no_such_action")
    type_name, lines = reply["error"]
    assert type_name == "ValueError"
    assert "no_such_action" in "".join(lines)
    # The server still works afterwards.
    assert pyacq_client.request("ping")["rval"] == "pong"


def test_a_request_with_extra_frames_gets_an_error_reply(pyacq_client):
    # msgpack and json requests have exactly five frames; only farcall's
    # format carries buffers after them.
    frames = [b"7", b"ping", b"auto", pyacq_client.ser_type.encode(), b"", b"extra"]
    pyacq_client.sock.send_multipart(frames)
    reply = pyacq_client.recv()
    assert reply["req_id"] == 7
    assert reply["rval"] is None
    type_name, lines = reply["error"]
    assert "6" in "".join(lines) and "5 frames" in "".join(lines)
    assert pyacq_client.request("ping")["rval"] == "pong"


def test_delete(pyacq_client, zmq_server):
    counter = pyacq_client.request("get_item", {"name": "counter"})["rval"]
    add = dict(counter, attributes=["add"])
    p = pyacq_client.request(
        "call_obj", {"obj": add, "args": [5, 5], "kwargs": {}}, return_type="proxy"
    )["rval"]
    reply = pyacq_client.request("delete", {"obj_id": p["obj_id"], "ref_id": p["ref_id"]})
    assert reply["error"] is None
    assert reply["rval"] is None
    reply = pyacq_client.request("get_obj", {"obj": p}, return_type="value")
    assert reply["error"][0] == "KeyError"


def test_set_item(pyacq_client, zmq_server):
    name = f"set_by_pyacq_{pyacq_client.ser_type}"
    reply = pyacq_client.request("set_item", {"name": name, "obj": {"k": [1, 2]}})
    assert reply["error"] is None
    assert zmq_server[name] == {"k": [1, 2]}


def test_no_reply_for_req_id_minus_one(pyacq_client, zmq_server):
    counter = pyacq_client.request("get_item", {"name": "counter"})["rval"]
    incr = dict(counter, attributes=["incr"])
    before = zmq_server["counter"].value
    pyacq_client.send("call_obj", {"obj": incr, "args": [1], "kwargs": {}}, req_id=-1)
    reply = pyacq_client.request("ping")  # the next reply is the ping's
    assert reply["rval"] == "pong"
    assert zmq_server["counter"].value == before + 1


def test_datetime_and_bytes_on_the_wire(pyacq_client, zmq_server):
    zmq_server["echo"] = lambda x: x
    echo = pyacq_client.request("get_item", {"name": "echo"})["rval"]
    if pyacq_client.ser_type == "msgpack":
        arg = [b"\x00\x01", {"___type_name___": "date", "data": "2024-01-02"}]
        expected = arg
    else:
        arg = [
            {"___type_name___": "bytes", "data": "AAE="},
            {"___type_name___": "datetime", "data": "2024-01-02T03:04:05.000006"},
        ]
        expected = arg
    reply = pyacq_client.request("call_obj", {"obj": echo, "args": [arg], "kwargs": {}})
    assert reply["error"] is None
    assert reply["rval"] == expected


def test_two_pyacq_clients_get_their_own_replies(zmq_server):
    a = PyacqClient(zmq_server.address)
    b = PyacqClient(zmq_server.address, "json")
    try:
        ra = a.send("ping")
        rb = b.send("get_item", {"name": "plain"})
        assert a.recv()["req_id"] == ra
        reply = b.recv()
        assert reply["req_id"] == rb and reply["rval"] == [1, 2, 3]
    finally:
        a.close()
        b.close()


# ---- a farcall client talking to a pyacq server --------------------------------


class FakePyacqServer:
    """A pyacq-style server: ROUTER + msgpack/json, no farcall extensions."""

    def __init__(self):
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{port}"
        self.received = []
        self.identities = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def proxy(self, obj_id, type_str):
        return {
            "___type_name___": "proxy",
            "rpc_addr": self.address.encode(),
            "obj_id": obj_id,
            "ref_id": 1,
            "type_str": type_str,
            "attributes": [],
        }

    @staticmethod
    def to_json(obj):
        if isinstance(obj, bytes):
            return {"___type_name___": "bytes", "data": base64.b64encode(obj).decode()}
        if isinstance(obj, dict):
            return {k: FakePyacqServer.to_json(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [FakePyacqServer.to_json(v) for v in obj]
        return obj

    @staticmethod
    def from_json(obj):
        if isinstance(obj, dict):
            if obj.get("___type_name___") == "bytes":
                return base64.b64decode(obj["data"])
            return {k: FakePyacqServer.from_json(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [FakePyacqServer.from_json(v) for v in obj]
        return obj

    def handle(self, action, opts):
        if action == "ping":
            return "pong"
        if action == "get_item":
            if opts["name"] == "adder":
                return self.proxy(1, "<class 'Adder'>")
            raise KeyError(opts["name"])
        if action == "import":
            return self.proxy(2, "<class 'module'>")
        if action == "call_obj":
            obj = opts["obj"]
            assert obj["obj_id"] == 1
            method = obj["attributes"][-1]
            if method == "add":
                return sum(opts["args"])
            if method == "fail":
                raise ZeroDivisionError("fake pyacq failure")
            if method == "describe":
                return [opts["args"], opts["kwargs"]]
            if method == "broken":
                # An ndarray map farcall cannot read: its shape is a str.
                return {"___type_name___": "ndarray", "dtype": "float64", "shape": "x", "data": ""}
            raise AttributeError(method)
        if action == "delete":
            return None
        if action == "close":
            return True
        raise ValueError(f"Invalid RPC action '{action}'")

    def run(self):
        import traceback

        while not self.stop.is_set():
            if not self.sock.poll(50):
                continue
            ident, req_id, action, return_type, ser_type, opts = self.sock.recv_multipart()
            self.identities.append(ident)
            ser = ser_type.decode()
            if ser == "msgpack":
                decoded = msgpack.unpackb(opts, raw=False) if opts else None
            else:
                decoded = self.from_json(json.loads(opts.decode())) if opts else None
            self.received.append((req_id, action.decode(), return_type.decode(), ser, decoded))
            try:
                rval, error = self.handle(action.decode(), decoded), None
            except Exception as e:
                rval = None
                error = [type(e).__name__, traceback.format_exception(type(e), e, e.__traceback__)]
            req = int(req_id)
            if req < 0:
                continue
            reply = {"action": "return", "req_id": req, "rval": rval, "error": error}
            if ser == "msgpack":
                data = msgpack.packb(reply, use_bin_type=True)
            else:
                data = json.dumps(self.to_json(reply)).encode()
            self.sock.send_multipart([ident, data])

    def close(self):
        self.stop.set()
        self.thread.join(10)
        self.sock.close(0)

    def actions(self):
        return [r[1] for r in self.received]


@pytest.fixture
def fake_server():
    s = FakePyacqServer()
    yield s
    s.close()


def test_farcall_client_falls_back_to_msgpack(fake_server):
    def body():
        c = RPCClient(fake_server.address, auth=False)
        try:
            assert c.serializer.type == "msgpack"
            assert c.ping() == "pong"
            adder = c["adder"]
            assert isinstance(adder, ObjectProxy)
            assert adder._type_str == "<class 'Adder'>"
            assert adder._rpc_addr == fake_server.address
            assert adder.add(1, 2) == 3
            assert adder.add(1, 2, 3, 4) == 10
            assert adder.describe((1, 2), k=(3,)) == [[[1, 2]], {"k": [3]}]
            with pytest.raises(RemoteCallException) as info:
                adder.fail()
            assert info.value.type_str == "ZeroDivisionError"
            assert "fake pyacq failure" in str(info.value)
            return True
        finally:
            c.close()

    assert run_in_thread(body)
    actions = fake_server.actions()
    assert actions[0] == "farcall_hello"
    assert "ping" in actions and "get_item" in actions and "call_obj" in actions
    after_hello = fake_server.received[1:]
    assert {r[3] for r in after_hello} == {"msgpack"}
    for req_id, *_ in after_hello:
        int(req_id.decode())  # ASCII decimal
    call = next(r for r in fake_server.received if r[1] == "call_obj")
    assert call[4]["obj"]["attributes"] == ["add"]
    assert call[4]["args"] == [1, 2]
    assert call[4]["kwargs"] == {}
    assert call[4]["obj"]["rpc_addr"] == fake_server.address.encode()


@pytest.mark.parametrize("serializer", ["msgpack", "json"])
def test_an_unreadable_reply_fails_its_call_at_once(fake_server, serializer):
    """A reply whose value cannot be decoded, but whose req_id can, fails
    its call with ProtocolError at once instead of at the timeout."""
    def body():
        c = RPCClient(fake_server.address, auth=False, serializer=serializer)
        try:
            adder = c["adder"]
            t0 = time.monotonic()
            with pytest.raises(ProtocolError, match="unreadable reply"):
                adder.broken(_timeout=10)
            assert time.monotonic() - t0 < 2
            assert adder.add(1, 2) == 3  # the link still works
            return True
        finally:
            c.close()

    assert run_in_thread(body)


def test_farcall_client_routing_identity_is_printable(fake_server):
    # pyacq's server decodes the routing id as UTF-8 to log each request.
    client = RPCClient(fake_server.address, auth=False)
    try:
        assert client.ping() == "pong"
        assert client.ping() == "pong"
    finally:
        client.close()
    idents = {ident.decode("utf-8") for ident in fake_server.identities}
    assert len(idents) == 1
    ident = idents.pop()
    assert ident.isprintable() and ident[0].isalpha() and len(ident) >= 24


def test_farcall_client_releases_pyacq_proxies(fake_server):
    def body():
        c = RPCClient(fake_server.address, auth=False)
        try:
            adder = c["adder"]
            assert adder.add(2, 2) == 4
            del adder
            gc.collect()
            c.ping()
            return wait_until(lambda: c.ping() == "pong" and "delete" in fake_server.actions(), 5)
        finally:
            c.close()

    assert run_in_thread(body)
    delete = next(r for r in fake_server.received if r[1] == "delete")
    assert delete[4] == {"obj_id": 1, "ref_id": 1}


def test_farcall_client_with_json_to_a_pyacq_server(fake_server):
    def body():
        c = RPCClient(fake_server.address, serializer="json", auth=False)
        try:
            assert c.serializer.type == "json"
            assert c.ping() == "pong"
            adder = c["adder"]
            assert adder.add(4, 5) == 9
            return True
        finally:
            c.close()

    assert run_in_thread(body)
    used = {r[3] for r in fake_server.received if r[1] != "farcall_hello"}
    assert used == {"json"}


def test_farcall_client_to_pyacq_server_timeout(fake_server):
    """A pyacq server that never answers: the call times out, not hangs."""

    def body():
        c = RPCClient(fake_server.address, auth=False)
        try:
            adder = c["adder"]
            fake_server.stop.set()  # stop answering
            fake_server.thread.join(10)
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                adder.add(1, 2, _timeout=0.3)
            return time.monotonic() - t0
        finally:
            c.close()

    assert run_in_thread(body) < 3.0


def test_a_silent_server_does_not_stall_other_releases(fake_server, fresh_child):
    """Dropping a proxy of a server that stopped answering must not hold
    up the release of other servers' proxies (releases are queued and sent
    by the I/O side, with timeouts; one stalled peer must not block the
    rest)."""
    from farcall_testutil import import_helpers

    proc = fresh_child()
    h = import_helpers(proc.client)
    server = proc.client["self"]
    gc.collect()
    server.object_count()
    base = server.object_count()

    def body():
        c = RPCClient(fake_server.address, auth=False)
        adder = c["adder"]
        fake_server.stop.set()  # the pyacq server stops answering
        fake_server.thread.join(10)
        del adder
        gc.collect()
        return True

    assert run_in_thread(body)
    objs = [h.Counter(i) for i in range(10)]
    assert server.object_count() >= base + 10
    del objs
    gc.collect()
    t0 = time.monotonic()
    released = wait_until(lambda: server.object_count() <= base, timeout=15)
    elapsed = time.monotonic() - t0
    assert released
    assert elapsed < 2.0, f"releases to a healthy server waited {elapsed:.1f} s"


def test_a_default_server_refuses_unauthenticated_pyacq_clients(make_thread_server):
    """Without auth=False a server answers a pyacq-format request (which
    cannot authenticate) with a PermissionError reply and runs nothing."""
    ts = make_thread_server("tcp://127.0.0.1:*")
    counter = Counter()
    ts["counter"] = counter
    for ser_type in ("msgpack", "json"):
        c = PyacqClient(ts.address, ser_type)
        try:
            reply = c.request("ping")
            assert reply["rval"] is None
            type_name, lines = reply["error"]
            assert type_name == "PermissionError"
            assert "authentication" in "".join(lines)
            reply = c.request("get_item", {"name": "counter"})
            assert reply["error"][0] == "PermissionError"
            assert reply["rval"] is None
            # Forged proxies do not get a call through either.
            for obj_id in range(10):
                forged = {
                    "___type_name___": "proxy",
                    "rpc_addr": ts.address.encode(),
                    "obj_id": obj_id,
                    "ref_id": 0,
                    "type_str": "",
                    "attributes": ["incr"],
                }
                if ser_type == "json":
                    forged["rpc_addr"] = {
                        "___type_name___": "bytes",
                        "data": base64.b64encode(ts.address.encode()).decode(),
                    }
                reply = c.request("call_obj", {"obj": forged, "args": [], "kwargs": {}})
                assert reply["error"][0] == "PermissionError"
        finally:
            c.close()
    assert counter.value == 0
    # farcall clients (which authenticate) still work.
    assert run_in_thread(lambda: RPCClient(ts.address).ping()) == "pong"
