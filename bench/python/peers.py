"""The Python peers, each with a child process hosting ``bench_objects.Adder``:

- multiprocessing.managers: a BaseManager with Adder registered, on its
  default address (a Unix socket on Linux);
- rpyc: a ThreadedServer with a service exposing ``add`` on 127.0.0.1;
- Pyro5: a daemon on 127.0.0.1 with an exposed Adder, called through a
  proxy with the msgpack serializer (Pyro5's fastest here; the default,
  serpent, is measured too for the batches); pipelined through
  ``Pyro5.api.BatchProxy`` with 256-call batches.

Run as a script (``python peers.py serve rpyc|pyro``) it is the server.
"""

import multiprocessing
import sys
import time
from multiprocessing.managers import BaseManager

from bench_objects import Adder
from common import CONFIG, add_call, attempt, count_python_calls, exit_with_parent, interleaved_round_trips
from common import calls_per_second, median_seconds, serve_ready, spawn_server, stop_child

PYRO_BATCH = 256


class BenchManager(BaseManager):
    pass


BenchManager.register("Adder", Adder)


def spawn_median(start_and_call):
    """Median seconds of ``start_and_call()``, which starts a server
    process, makes its first call and returns a function that stops it."""
    times = []
    for _ in range(CONFIG["spawns"]):
        t0 = time.perf_counter_ns()
        stop = start_and_call()
        times.append(time.perf_counter_ns() - t0)
        stop()
    times.sort()
    return times[len(times) // 2] / 1e9


def arrays(obj):
    """The same by-value array measurement as farcall_bench.arrays."""
    import numpy

    out = {}
    for size, reps in sorted(CONFIG["array_reps"].items()):
        arr = numpy.random.default_rng(1).random(size // 8)
        assert obj.take(arr)[0] == size
        to_child = median_seconds(lambda: obj.take(arr), reps)
        obj.prepare(size)
        assert obj.give().nbytes == size
        from_child = median_seconds(lambda: obj.give(), reps)
        obj.prepare(0)
        out[str(size)] = {
            "to_child_gbps": size / to_child / 1e9,
            "from_child_gbps": size / from_child / 1e9,
        }
    return out


# ------------------------------------------------- multiprocessing.managers


def managers_target(stack):
    manager = BenchManager()
    manager.start()
    stack.callback(manager.shutdown)
    call = add_call(manager.Adder())
    call.server_pid = manager._process.pid
    return call


def managers():
    out = {}
    manager = BenchManager()
    manager.start()
    try:
        adder = manager.Adder()
        out["python_calls"] = count_python_calls(add_call(adder))
        out["arrays"] = arrays(adder)
    finally:
        manager.shutdown()

    for method in ("fork", "spawn"):
        ctx = multiprocessing.get_context(method)

        def start_and_call():
            m = BenchManager(ctx=ctx)
            m.start()
            try:
                assert m.Adder().add(1, 2) == 3
            except BaseException:
                m.shutdown()
                raise
            return m.shutdown

        out[f"spawn_to_first_call_{method}_s"] = spawn_median(start_and_call)
    return out


# ---------------------------------------------------------------- rpyc


def serve_rpyc():
    import rpyc
    from rpyc.utils.server import ThreadedServer

    adder = Adder()

    class AdderService(rpyc.Service):
        def exposed_add(self, a, b):
            return adder.add(a, b)

    server = ThreadedServer(AdderService, hostname="127.0.0.1", port=0)
    server._listen()  # start() would listen later; the parent connects now
    serve_ready(server.port)
    server.start()


def rpyc_connect(port):
    import rpyc

    return rpyc.connect("127.0.0.1", int(port), config={"sync_request_timeout": 30})


def rpyc_targets(stack):
    child, port = spawn_server("peers.py", "serve", "rpyc")
    stack.callback(stop_child, child)
    conn = rpyc_connect(port)
    stack.callback(conn.close)
    root = conn.root
    # rpyc fetches `root.add` remotely on every access; with the method
    # looked up once, a call is one round trip:
    add = root.add
    natural, cached = add_call(root), lambda: add(1, 2)
    natural.server_pid = cached.server_pid = child.pid
    return [("rpyc", natural), ("rpyc_method_cached", cached)]


def rpyc_bench():
    import rpyc

    out = {}
    child, port = spawn_server("peers.py", "serve", "rpyc")
    try:
        conn = rpyc_connect(port)
        try:
            root = conn.root
            out["python_calls"] = count_python_calls(add_call(root))
            out["pipelined"] = pipelined_rpyc(rpyc.async_(root.add))
        finally:
            conn.close()
    finally:
        stop_child(child)

    def start_and_call():
        child, port = spawn_server("peers.py", "serve", "rpyc")
        try:
            conn = rpyc_connect(port)
            assert conn.root.add(1, 2) == 3
        except BaseException:
            stop_child(child)
            raise

        def stop():
            conn.close()
            stop_child(child)

        return stop

    out["spawn_to_first_call_s"] = spawn_median(start_and_call)
    return out


def pipelined_rpyc(async_add):
    window = CONFIG["window"]

    def batch():
        results = [async_add(i, 1) for i in range(window)]
        for i, r in enumerate(results):
            r.set_expiry(30)
            if r.value != i + 1:
                raise AssertionError("wrong result")
        return window

    return calls_per_second(batch)


# ---------------------------------------------------------------- Pyro5


def serve_pyro():
    import Pyro5.api

    daemon = Pyro5.api.Daemon(host="127.0.0.1")
    uri = daemon.register(Pyro5.api.expose(Adder)(), "adder")
    serve_ready(uri)
    daemon.requestLoop()


def pyro_proxy(uri, serializer="msgpack"):
    import Pyro5.api

    proxy = Pyro5.api.Proxy(uri)
    proxy._pyroTimeout = 30
    proxy._pyroSerializer = serializer
    return proxy


def pyro_target(stack):
    child, uri = spawn_server("peers.py", "serve", "pyro")
    stack.callback(stop_child, child)
    proxy = stack.enter_context(pyro_proxy(uri))
    call = add_call(proxy)
    call.server_pid = child.pid
    return call


def round_trip_targets(stack):
    """The peers' servers, stopped by ``stack``; (key, call) pairs for
    common.interleaved_round_trips."""
    return [("managers", managers_target(stack)), *rpyc_targets(stack), ("pyro5", pyro_target(stack))]


def pyro_bench():
    out = {}
    child, uri = spawn_server("peers.py", "serve", "pyro")
    try:
        with pyro_proxy(uri) as proxy:
            out["python_calls"] = count_python_calls(add_call(proxy))
            out["pipelined"] = pipelined_pyro(proxy)
        with pyro_proxy(uri, "serpent") as proxy:
            out["pipelined_serpent"] = pipelined_pyro(proxy)
    finally:
        stop_child(child)

    def start_and_call():
        child, uri = spawn_server("peers.py", "serve", "pyro")
        try:
            proxy = pyro_proxy(uri)
            assert proxy.add(1, 2) == 3
        except BaseException:
            stop_child(child)
            raise

        def stop():
            proxy._pyroRelease()
            stop_child(child)

        return stop

    out["spawn_to_first_call_s"] = spawn_median(start_and_call)
    return out


def pipelined_pyro(proxy):
    """Pyro5's batch feature: PYRO_BATCH calls per request."""
    import Pyro5.api

    def batch():
        calls = Pyro5.api.BatchProxy(proxy)
        for i in range(PYRO_BATCH):
            calls.add(i, 1)
        for i, r in enumerate(calls()):
            if r != i + 1:
                raise AssertionError("wrong result")
        return PYRO_BATCH

    return {**calls_per_second(batch), "batch": PYRO_BATCH}


def run_all():
    """Everything but the round trips (see run.py)."""
    import Pyro5
    import rpyc

    out = {"versions": {"rpyc": rpyc.__version__, "Pyro5": Pyro5.__version__}}
    attempt(out, "managers", managers)
    attempt(out, "rpyc", rpyc_bench)
    attempt(out, "pyro5", pyro_bench)
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        exit_with_parent()
        {"rpyc": serve_rpyc, "pyro": serve_pyro}[sys.argv[2]]()
    else:
        import contextlib
        import json

        with contextlib.ExitStack() as stack:
            print(json.dumps(interleaved_round_trips(round_trip_targets(stack)), indent=2))
        print(json.dumps(run_all(), indent=2))
