"""The floors: what two Python processes get without any RPC library.

- round trips (timed by common.interleaved_round_trips with everything
  else): a raw Unix-socket echo and a raw TCP echo (blocking sockets, a
  64-byte message, sendall + recv ping-pong), and a raw pyzmq
  DEALER/ROUTER echo over tcp://127.0.0.1 (64 bytes);
- a raw Unix-socket stream of N bytes each way (recv_into a preallocated
  buffer, then a one-byte acknowledgement), the ceiling for arrays;
- numpy memcpy of 64 MiB in one process;
- ``python -c pass``, the floor for spawn-to-first-call.

Run as a script (``python floors.py serve KIND ADDRESS``) it is the server.
"""

import os
import socket
import struct
import subprocess
import sys
import tempfile

from common import CONFIG, attempt, exit_with_parent, interleaved_round_trips, median_seconds
from common import serve_ready, spawn_server, stop_child

MSG = b"x" * 64
HEADER = struct.Struct("<cQ")


# ---------------------------------------------------------------- servers


def serve(kind, address):
    exit_with_parent()
    if kind == "zmq":
        return serve_zmq(address)
    if kind in ("unix", "stream"):
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(address)
    else:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        address = "%s:%d" % listener.getsockname()
    listener.listen(1)
    serve_ready(address)
    conn, _ = listener.accept()
    if kind == "tcp":
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if kind == "stream":
        return serve_stream(conn)
    buf = bytearray(65536)
    while True:
        n = conn.recv_into(buf)
        if not n:
            return
        conn.sendall(memoryview(buf)[:n])


def serve_stream(conn):
    """Put: receive N bytes, acknowledge. Get: send N bytes."""
    data = bytearray()
    while True:
        header = recv_exact(conn, bytearray(HEADER.size))
        if header is None:
            return
        op, size = HEADER.unpack(header)
        if len(data) != size:
            data = bytearray(size)
        if op == b"P":
            recv_exact(conn, data)
            conn.sendall(b"k")
        else:
            conn.sendall(data)


def serve_zmq(address):
    import zmq

    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind(address)
    serve_ready(router.getsockopt(zmq.LAST_ENDPOINT).decode())
    while True:
        router.send_multipart(router.recv_multipart(copy=False), copy=False)


def recv_exact(conn, buf):
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = conn.recv_into(view[got:])
        if not n:
            return None
        got += n
    return buf


# ---------------------------------------------------------------- clients


def echo_target(stack, kind):
    """A 64-byte ping over a Unix or TCP socket to an echo server child;
    the child and the socket are closed by ``stack``."""
    tmp = stack.enter_context(tempfile.TemporaryDirectory())
    child, address = spawn_server("floors.py", "serve", kind, os.path.join(tmp, "echo.sock"))
    stack.callback(stop_child, child)
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(address)
    else:
        host, port = address.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stack.callback(sock.close)
    sock.settimeout(10)
    buf = bytearray(len(MSG))

    def ping():
        sock.sendall(MSG)
        recv_exact(sock, buf)

    ping.server_pid = child.pid
    return ping


def zmq_target(stack):
    """A 64-byte ping, pyzmq DEALER -> ROUTER child -> DEALER."""
    import zmq

    child, address = spawn_server("floors.py", "serve", "zmq", "tcp://127.0.0.1:*")
    stack.callback(stop_child, child)
    ctx = zmq.Context()
    stack.callback(ctx.term)
    dealer = ctx.socket(zmq.DEALER)
    stack.callback(dealer.close)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RCVTIMEO, 10000)
    dealer.connect(address)

    def ping():
        dealer.send(MSG)
        dealer.recv()

    ping.server_pid = child.pid
    return ping


def round_trip_targets(stack):
    return [
        ("unix_echo", echo_target(stack, "unix")),
        ("tcp_echo", echo_target(stack, "tcp")),
        ("pyzmq_echo", zmq_target(stack)),
    ]


def stream(sizes):
    """GB/s of a raw Unix-socket transfer of each size, both directions."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "stream.sock")
        child, address = spawn_server("floors.py", "serve", "stream", path)
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(30)
            sock.connect(address)
            ack = bytearray(1)
            for size in sizes:
                data = bytearray(os.urandom(1024)) * (size // 1024)
                sink = bytearray(size)

                def put():
                    sock.sendall(HEADER.pack(b"P", size))
                    sock.sendall(data)
                    recv_exact(sock, ack)

                def get():
                    sock.sendall(HEADER.pack(b"G", size))
                    recv_exact(sock, sink)

                reps = CONFIG["array_reps"][size]
                out[size] = {
                    "to_child_gbps": size / median_seconds(put, reps) / 1e9,
                    "from_child_gbps": size / median_seconds(get, reps) / 1e9,
                }
            sock.close()
        finally:
            stop_child(child)
    return out


def memcpy(size=64 << 20):
    """GB/s of numpy copying ``size`` bytes in this process: into an
    existing array, and into a fresh one (what a receiver by value pays,
    page faults included; numpy asks for huge pages for large arrays)."""
    import numpy

    src = numpy.random.default_rng(0).random(size // 8)
    dst = numpy.empty_like(src)
    return {
        "into_existing_gbps": size / median_seconds(lambda: numpy.copyto(dst, src), 10) / 1e9,
        "into_fresh_gbps": size / median_seconds(lambda: src.copy(), 10) / 1e9,
    }


def python_startup():
    """Median seconds of ``python -c pass`` (this interpreter)."""
    def run():
        subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=30)

    return median_seconds(run, CONFIG["spawns"])


def run_all():
    """Everything but the round trips (see run.py)."""
    sizes = sorted(CONFIG["array_reps"])
    out = {}
    attempt(out, "unix_stream", lambda: {str(k): v for k, v in stream(sizes).items()})
    attempt(out, "numpy_memcpy_64MiB", memcpy)
    attempt(out, "python_c_pass_s", python_startup)
    return out


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    else:
        import contextlib
        import json

        with contextlib.ExitStack() as stack:
            print(json.dumps(interleaved_round_trips(round_trip_targets(stack)), indent=2))
        print(json.dumps(run_all(), indent=2))
