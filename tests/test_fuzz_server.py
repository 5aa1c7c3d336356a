"""Fuzzing live servers (issue 5, "Fuzzing"; see docs/fuzzing.md).

Random and near-valid ZeroMQ multipart messages (right action names with
garbage options, valid msgpack of the wrong types, huge declared lengths,
deep nesting) and random native byte streams (random bytes, truncated
headers, valid headers with garbage, half a frame then close or stall) are
thrown at servers running in daemon threads. Afterwards every server must
still answer a proper farcall client, no server thread may have died,
nothing may hang (every receive has a timeout), a ZeroMQ server must have
let go of the connections we closed, and an authenticating server must
not have run anything for us.

The random seed is fixed; set FARCALL_FUZZ_SEED to try another, and
FARCALL_FUZZ_SECONDS to fuzz each server longer. Every failure message
names the seed.
"""

import json
import os
import random
import socket
import struct
import threading
import time

import msgpack
import pytest
import zmq

from farcall import RPCClient
from farcall_testutil import ThreadServer, run_in_thread, wait_until

SEED = int(os.environ.get("FARCALL_FUZZ_SEED", "20260515"))
SECONDS = float(os.environ.get("FARCALL_FUZZ_SECONDS", "1.5"))
RECV_TIMEOUT = 2.0  # seconds, for every receive

MAGIC = b"farcall/1"
KIND_REQUEST, KIND_REPLY, KIND_HELLO = 1, 2, 3
# A native request starts with its call chain (8 bytes, or empty for none).
NO_CHAIN = b""
# "close" is never sent to a server that admits us: it would close it.
ACTIONS = [
    b"call_obj",
    b"get_obj",
    b"get_item",
    b"getitem",
    b"set_item",
    b"setitem",
    b"delete",
    b"import",
    b"ping",
    b"farcall_hello",
    b"farcall_auth",
]
SERIALIZERS = [b"msgpack", b"json", b"farcall"]
RETURN_TYPES = [b"auto", b"proxy", b"value"]
TAGS = ["ndarray", "proxy", "datetime", "date", "bytes", "none", "weird"]


def why(msg):
    return f"{msg} (FARCALL_FUZZ_SEED={SEED})"


# ---- servers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def servers():
    made = {
        # pyacq peers: ZeroMQ, no authentication.
        "zmq_open": ThreadServer("tcp://127.0.0.1:*", auth=False),
        "zmq_auth": ThreadServer("tcp://127.0.0.1:*"),
        "native_auth": ThreadServer("unix://*"),
        # Admits anyone after a hello, so raw requests reach the parser.
        "native_open": ThreadServer("unix://*", auth=False),
    }
    yield made
    for ts in made.values():
        ts.close()


def still_serves(ts, auth):
    """The server thread is alive and a proper client gets its pong."""
    assert ts.thread.is_alive() and ts.error is None, why(f"server thread died: {ts.error!r}")

    def ping():
        client = RPCClient(ts.address, auth=auth)
        try:
            return client.ping()
        finally:
            client.close()

    assert run_in_thread(ping, timeout=15) == "pong", why("no pong")


def socket_fds():
    """Sockets open in this process (ours and the servers')."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def settles(baseline, timeout=10):
    """Waits for the servers to close the connections we closed."""
    count = wait_until(lambda: socket_fds() <= baseline, timeout=timeout)
    assert count, why(f"sockets left open: {socket_fds()} > {baseline} before fuzzing")


# ---- random values and messages ---------------------------------------------


class Gen:
    """Random messages, from one seeded generator."""

    def __init__(self, seed, server_address=""):
        self.rng = random.Random(seed)
        self.address = server_address

    def bytes(self, hi=64):
        return self.rng.randbytes(self.rng.randint(0, hi))

    def text(self, hi=16):
        alphabet = "ab_\u00e9\u20ac\U0001f600\x00\n\"\\"
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(0, hi)))

    def value(self, depth=0):
        r = self.rng
        kinds = ["none", "bool", "int", "bigint", "float", "str", "bytes"]
        if depth < 4:
            kinds += ["list", "dict", "tagged"]
        kind = r.choice(kinds)
        if kind == "none":
            return None
        if kind == "bool":
            return r.random() < 0.5
        if kind == "int":
            return r.choice([0, -1, 1, 127, -33, 2**31, -(2**63), 2**64 - 1, r.randint(-1000, 1000)])
        if kind == "bigint":
            return r.choice([2**64, -(2**63) - 1, 10**30])  # beyond msgpack ints
        if kind == "float":
            return r.choice([0.5, -0.0, float("nan"), float("inf"), 1e308, r.random()])
        if kind == "str":
            return self.text()
        if kind == "bytes":
            return self.bytes()
        if kind == "list":
            return [self.value(depth + 1) for _ in range(r.randint(0, 4))]
        if kind == "dict":
            keys = [self.text(6) if r.random() < 0.8 else r.randint(-5, 5) for _ in range(r.randint(0, 4))]
            return {k: self.value(depth + 1) for k in keys}
        return self.tagged(depth)

    def tagged(self, depth=0):
        """A pyacq tagged map with garbage fields."""
        r = self.rng
        m = {"___type_name___": r.choice(TAGS)}
        for field in ["data", "dtype", "shape", "rpc_addr", "obj_id", "ref_id", "type_str", "attributes"]:
            if r.random() < 0.5:
                m[field] = r.choice(
                    [
                        self.value(depth + 2),
                        r.choice(["float64", "object", "|O", "<U99999999999999999999", "<f8", "weird"]),
                        [r.choice([2, 0, -1, 2**62, 2**64 - 1]) for _ in range(r.randint(0, 3))],
                        self.address.encode(),
                        r.randint(-2, 10**6),
                        "2024-02-30T25:61:00.1234567",
                    ]
                )
        return m

    def near_opts(self):
        """Options with the right keys and the wrong values."""
        r = self.rng
        proxy = {
            "___type_name___": "proxy",
            # This server's own address: the proxy resolves locally.
            "rpc_addr": self.address.encode(),
            "obj_id": r.choice([0, 1, 2, 10**9, -1, 2**64 - 1]),
            "ref_id": r.choice([0, 1, -5, "x"]),
            "type_str": self.text(),
            "attributes": [self.text(8) for _ in range(r.randint(0, 3))],
        }
        return r.choice(
            [
                {"obj": proxy, "args": self.value(), "kwargs": self.value()},
                {"obj": proxy, "args": [self.value() for _ in range(3)], "kwargs": {}},
                {"obj": self.value()},
                {"name": self.value()},
                {"name": "self"},
                {"name": self.text(), "obj": self.value()},
                {"obj_id": self.value(), "ref_id": self.value()},
                {"module": self.text()},
                {"nonce": self.bytes(40)},
                {"proof": self.bytes(40)},
                self.value(),
            ]
        )

    def opts(self, ser):
        """An opts frame for serializer `ser`: valid, near-valid or broken."""
        r = self.rng
        choice = r.randrange(10)
        if choice < 5:
            obj = self.near_opts()
            try:
                if ser == b"json":
                    return json.dumps(obj, default=repr).encode()
                # msgpack (and farcall, which reads plain msgpack too).
                return msgpack.packb(obj, use_bin_type=True, default=repr)
            except (ValueError, TypeError, OverflowError):
                return self.bytes()
        if choice == 5:  # huge declared lengths
            return r.choice(
                [
                    b"\xdd\xff\xff\xff\xff\xc0",  # array32
                    b"\xdf\xff\xff\xff\xff",  # map32
                    b"\xdb\x7f\xff\xff\xffabc",  # str32
                    b"\xc6\xff\xff\xff\xf0\x00",  # bin32
                    b"\xc9\xff\xff\xff\xff\x05\x93",  # ext32, ndarray
                    b"\xc7\x05\x06\xcf\xff\xff\xff\xff",  # a buffer index past the end
                    b'"' + b"a" * 100,
                ]
            )
        if choice == 6:  # deep nesting
            n = r.randint(500, 5000)
            return r.choice([b"\x91" * n + b"\xc0", b"[" * n + b"]" * n, b"\x81\xa1k" * n + b"\xc0"])
        if choice == 7:  # a valid message, cut or mutated
            data = bytearray(msgpack.packb(self.near_opts(), use_bin_type=True, default=repr))
            if data and r.random() < 0.5:
                return bytes(data[: r.randrange(len(data))])
            for _ in range(r.randint(1, 4)):
                if data:
                    data[r.randrange(len(data))] = r.randrange(256)
            return bytes(data)
        if choice == 8:  # farcall ext values with garbage payloads
            payload = self.bytes(12)
            return bytes([0xC7, len(payload), r.randint(0, 9)]) + payload
        return self.bytes(200)

    def request(self, actions=ACTIONS):
        """Request frames: mostly well formed, with garbage inside."""
        r = self.rng
        ser = r.choice(SERIALIZERS + [b"pickle", b""])
        req_ids = [b"1", b"-1", b"7", b" 42 ", b"", b"x", b"99999999999999999999", b"\xff"]
        frames = [
            r.choice(req_ids + [str(r.randint(-(2**63), 2**63 - 1)).encode()]),
            r.choice(actions + [b"bogus", b"", b"ping\x00"]),
            r.choice(RETURN_TYPES + [b"nope"]),
            ser,
            self.opts(ser) if r.random() < 0.9 else b"",
        ]
        if r.random() < 0.2:  # out-of-band buffers
            frames += [self.bytes(100) for _ in range(r.randint(1, 3))]
        if r.random() < 0.1:  # too few frames
            frames = frames[: r.randint(1, 4)]
        return frames

    def multipart(self, actions=ACTIONS):
        r = self.rng
        if r.random() < 0.7:
            return self.request(actions)
        frames = [self.bytes(80) for _ in range(r.randint(1, 9))]
        if r.random() < 0.05:
            frames.append(r.randbytes(200_000))
        return frames


# ---- ZeroMQ ----------------------------------------------------------------------


def dealer(ctx, address):
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(RECV_TIMEOUT * 1000))
    sock.setsockopt(zmq.SNDTIMEO, int(RECV_TIMEOUT * 1000))
    sock.connect(address)
    return sock


def drain(sock):
    """Reads the replies waiting, without blocking."""
    while True:
        try:
            sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return


def probe(sock, req_id):
    """Sends a pyacq ping and returns its reply (skipping other replies)."""
    sock.send_multipart([str(req_id).encode(), b"ping", b"auto", b"msgpack", b""])
    deadline = time.monotonic() + RECV_TIMEOUT * 2
    while time.monotonic() < deadline:
        try:
            frames = sock.recv_multipart()
        except zmq.Again:
            break
        try:
            reply = msgpack.unpackb(frames[0], raw=False)
        except Exception:
            continue
        if isinstance(reply, dict) and reply.get("req_id") == req_id:
            return reply
    pytest.fail(why(f"no answer to ping {req_id}"))


def fuzz_zmq(ts, seed, admitted):
    gen = Gen(seed, ts.address)
    ctx = zmq.Context()
    socks = [dealer(ctx, ts.address) for _ in range(4)]
    # Unauthenticated peers may try to close the server too.
    actions = ACTIONS if admitted else ACTIONS + [b"close"]
    sent = tries = probes = 0
    deadline = time.monotonic() + SECONDS
    try:
        while time.monotonic() < deadline:
            tries += 1
            sock = gen.rng.choice(socks)
            try:
                sock.send_multipart(gen.multipart(actions))
                sent += 1
            except zmq.Again:
                pass  # our queue is full: the server is slower than us
            if tries % 50 == 0:
                for s in socks:
                    drain(s)
            if tries % 200 == 0:
                probes += 1
                reply = probe(sock, 10_000 + probes)
                if admitted:
                    assert reply["rval"] == "pong" and reply["error"] is None, why(reply)
                else:
                    # Refused: the peer has not authenticated.
                    assert reply["error"][0] == "PermissionError", why(reply)
            if gen.rng.random() < 0.01:  # a new peer now and then
                i = gen.rng.randrange(len(socks))
                socks[i].close(0)
                socks[i] = dealer(ctx, ts.address)
    finally:
        for s in socks:
            s.close(0)
        ctx.term()
    assert sent > 100, why(f"only {sent} messages sent")


def test_zmq_open_server_survives_random_messages(servers):
    ts = servers["zmq_open"]
    baseline = socket_fds()
    fuzz_zmq(ts, SEED, admitted=True)
    settles(baseline)
    still_serves(ts, auth=False)


def test_zmq_auth_server_survives_and_refuses_random_messages(servers):
    ts = servers["zmq_auth"]
    baseline = socket_fds()
    gen = Gen(SEED + 1, ts.address)
    ctx = zmq.Context()
    sock = dealer(ctx, ts.address)
    try:
        # An unauthenticated peer cannot publish, call, or close.
        for action, opts in [
            (b"set_item", {"name": "fuzzed", "obj": 1}),
            (b"close", None),
            (b"import", {"module": "os"}),
        ]:
            body = msgpack.packb(opts) if opts is not None else b""
            sock.send_multipart([b"5", action, b"auto", b"msgpack", body])
            reply = msgpack.unpackb(sock.recv_multipart()[0], raw=False)
            assert reply["error"][0] == "PermissionError", why(reply)
        # A hello with a garbage nonce, then a garbage proof.
        for action, opts in [
            (b"farcall_hello", {"nonce": b"short"}),
            (b"farcall_auth", {"proof": bytes(32)}),
        ]:
            sock.send_multipart([b"6", action, b"auto", b"msgpack", msgpack.packb(opts)])
            reply = msgpack.unpackb(sock.recv_multipart()[0], raw=False)
            assert reply["error"] is not None, why(reply)
    finally:
        sock.close(0)
        ctx.term()
    fuzz_zmq(ts, gen.rng.randrange(2**32), admitted=False)
    settles(baseline)
    still_serves(ts, auth=True)
    # Nothing the fuzzing sent was run.
    client = RPCClient(ts.address)
    try:
        with pytest.raises(Exception, match="fuzzed"):
            client["fuzzed"]
    finally:
        client.close()


# ---- native streams ---------------------------------------------------------------


def header(kind, lengths, zeros=b"\x00\x00\x00"):
    table = struct.pack(f"<{len(lengths)}Q", *lengths)
    return bytes([kind]) + zeros + struct.pack("<I", len(lengths)) + table


def message(kind, frames):
    return header(kind, [len(f) for f in frames]) + b"".join(frames)


def connect(ts):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(RECV_TIMEOUT)
    sock.connect(ts.address[len("unix://") :])
    return sock


def send(sock, data):
    """Sends `data`; False when the server has already dropped us."""
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def recv_message(sock):
    """One native message: (kind, frames), or None when the server closed."""
    try:
        head = recv_exactly(sock, 8)
        if head is None:
            return None
        kind, n = head[0], struct.unpack("<I", head[4:])[0]
        raw = recv_exactly(sock, 8 * n)
        if raw is None:
            return None
        frames = []
        for length in struct.unpack(f"<{n}Q", raw):
            frame = recv_exactly(sock, length)
            if frame is None:
                return None
            frames.append(frame)
        return kind, frames
    except ConnectionResetError:
        return None


def closed_by_server(sock):
    """True when the server drops the connection (after a challenge or a
    verdict, perhaps); never a reply to a request."""
    for _ in range(3):
        got = recv_message(sock)
        if got is None:
            return True
        kind, frames = got
        assert kind == KIND_HELLO and frames[1] in (b"challenge", b"denied"), why(f"unexpected {got!r}")
    return False


def hello(gen):
    return message(KIND_HELLO, [MAGIC, b"hello", gen.rng.randbytes(32), gen.rng.randbytes(16)])


def greeted(ts, gen):
    """A connection past the hello (admitted by an open server)."""
    sock = connect(ts)
    sock.sendall(hello(gen))
    got = recv_message(sock)
    assert got is not None and got[0] == KIND_HELLO and got[1][1] == b"challenge", why(got)
    return sock


def bad_stream(gen, ts):
    """Bytes after which the server must drop the connection."""
    r = gen.rng
    return r.choice(
        [
            header(9, [1]) + b"x",  # unknown kind
            header(KIND_HELLO, [1], zeros=b"\x00\x01\x00") + b"x",  # reserved bytes set
            header(KIND_HELLO, [0] * 65_537),  # too many frames
            header(KIND_HELLO, [2**40]),  # over the limit
            header(KIND_HELLO, [2**64 - 1, 2]),  # overflowing total
            header(KIND_REQUEST, [1, 4, 4, 7, 0]) + b"1pingautomsgpack",  # before the hello
            message(KIND_HELLO, [b"farcall/0", b"hello", b"n" * 32, b"c" * 16]),  # not farcall/1
            message(KIND_HELLO, [MAGIC, b"hello", b"short"]),
            message(KIND_HELLO, [MAGIC, b"proof", b"p" * 32]),  # a proof before the hello
        ]
    )


def fuzz_native(ts, seed, open_server):
    gen = Gen(seed, ts.address)
    r = gen.rng
    stalled = []
    cases = 0
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        cases += 1
        case = r.randrange(8)
        sock = connect(ts)
        try:
            if case == 0:  # random bytes, then close
                send(sock, gen.bytes(2000))
            elif case == 1:  # a truncated header, then close
                sock.sendall(hello(gen)[: r.randint(1, 7)])
            elif case == 2:  # a valid header with garbage frames
                lengths = [r.randint(0, 40) for _ in range(r.randint(0, 6))]
                send(sock, header(r.choice([1, 2, 3]), lengths) + r.randbytes(sum(lengths)))
            elif case == 3:  # must be dropped
                if send(sock, bad_stream(gen, ts)):
                    assert closed_by_server(sock), why("a bad stream was not dropped")
            elif case == 4:  # half a frame, then close or stall
                data = hello(gen)
                sock.sendall(data[: r.randint(8, len(data) - 1)])
                if r.random() < 0.3 and len(stalled) < 20:
                    stalled.append(sock)
                    sock = None
            elif case == 5:  # a hello, then a wrong (or, when open, unexpected) proof
                sock.close()
                sock = greeted(ts, gen)
                if send(sock, message(KIND_HELLO, [MAGIC, b"proof", r.randbytes(32)])):
                    assert closed_by_server(sock), why("a wrong proof was not refused")
            elif case == 6 and open_server:  # admitted: garbage requests, then a ping
                sock.close()
                sock = greeted(ts, gen)
                for _ in range(r.randint(1, 20)):
                    chain = r.choice([NO_CHAIN, r.randbytes(8), r.randbytes(r.randint(1, 9))])
                    sock.sendall(message(KIND_REQUEST, [chain] + gen.request()))
                ping = [NO_CHAIN, b"123", b"ping", b"auto", b"msgpack", b""]
                sock.sendall(message(KIND_REQUEST, ping))
                while True:
                    got = recv_message(sock)
                    assert got is not None, why("dropped after well-framed requests")
                    kind, frames = got
                    assert kind == KIND_REPLY, why(got)
                    try:
                        reply = msgpack.unpackb(frames[0], raw=False)
                    except Exception:
                        continue  # a reply in json or farcall
                    if isinstance(reply, dict) and reply.get("req_id") == 123:
                        assert reply["rval"] == "pong", why(reply)
                        break
            elif case == 6:  # a request before the handshake is done
                if send(sock, hello(gen) + message(KIND_REQUEST, [NO_CHAIN] + gen.request())):
                    assert closed_by_server(sock), why("a request before the proof was run")
            else:  # a storm of connections that say nothing
                for _ in range(10):
                    connect(ts).close()
        finally:
            if sock is not None:
                sock.close()
    assert cases > 20, why(f"only {cases} cases")
    return stalled


@pytest.mark.parametrize("which", ["native_auth", "native_open"])
def test_native_server_survives_random_streams(servers, which):
    ts = servers[which]
    auth = which == "native_auth"
    stalled = fuzz_native(ts, SEED + 2 + (not auth), open_server=not auth)
    # Peers stalled in the middle of a frame do not block anyone else.
    still_serves(ts, auth=auth)
    for sock in stalled:
        sock.close()
    still_serves(ts, auth=auth)
    # (No count of open sockets here, unlike over ZeroMQ: see the next test.)


def test_native_peer_gone_mid_message_is_released():
    """An admitted peer that sends half a request, or a one-way request,
    and closes while the server is busy: the server must still notice the
    end of the stream and let go of the connection (and of what the peer
    held)."""

    napping = threading.Event()

    class Slow:
        def nap(self, seconds):
            napping.set()
            time.sleep(seconds)
            return seconds

    ts = ThreadServer("unix://*", auth=False)
    try:
        ts["slow"] = Slow()
        gen = Gen(SEED + 4, ts.address)

        def keep_busy():
            client = RPCClient(ts.address, auth=False)
            try:
                client["slow"].nap(0.5)
            finally:
                client.close()

        baseline = socket_fds()
        for tail in (
            message(KIND_REQUEST, [NO_CHAIN, b"5", b"ping", b"auto", b"msgpack", b""])[:30],
            message(KIND_REQUEST, [NO_CHAIN, b"-1", b"ping", b"auto", b"msgpack", b""]),
        ):
            sock = greeted(ts, gen)
            napping.clear()
            caller = threading.Thread(target=keep_busy, daemon=True)
            caller.start()
            assert napping.wait(10), why("the slow call did not start")
            time.sleep(0.05)
            sock.sendall(tail)  # arrives, with the hang-up, while the server naps
            sock.close()
            caller.join(10)
        settles(baseline, timeout=2)
    finally:
        ts.close()
