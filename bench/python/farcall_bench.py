"""farcall, Python client to a spawned Python process hosting
``bench_objects.Adder``: round trips (on the default transport, native
tcp+native:// and ZeroMQ tcp://), pipelined async calls, numpy arrays
by value both ways, spawn-to-first-call, and the Python-level function
calls our own package makes per sync call on the client.
"""

import os
import time

import farcall
from farcall import ProcessSpawner

from common import CONFIG, add_call, attempt, calls_per_second, count_python_calls, interleaved_round_trips
from common import median_seconds

DEFAULT = None  # ProcessSpawner's default: the native Unix-socket transport
TRANSPORTS = {
    "default": DEFAULT,
    "tcp+native": "tcp+native://127.0.0.1:*",
    "zmq_tcp": "tcp://127.0.0.1:*",
}
RESULT_TIMEOUT = 30.0  # seconds for any one future


class Child:
    """A spawned child hosting an Adder; stopped on exit."""

    def __init__(self, address=DEFAULT):
        self.proc = ProcessSpawner(address=address)
        try:
            self.adder = self.proc.client._import("bench_objects").Adder()
        except BaseException:
            self.proc.stop()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.stop()


def round_trip_targets(stack):
    """One child per transport, stopped by ``stack``; (key, call) pairs
    for common.interleaved_round_trips."""
    targets = []
    for name, address in TRANSPORTS.items():
        child = stack.enter_context(Child(address))
        call = add_call(child.adder)
        call.server_pid = child.proc.pid
        targets.append((f"farcall_{name}", call))
    return targets


def pipelined(obj, window=None):
    """Async calls per second: batches of ``window`` (CONFIG['window'])
    calls issued back to back, then all their results awaited."""
    window = window or CONFIG["window"]

    def batch():
        futures = [obj.add(i, 1, _sync="async") for i in range(window)]
        for i, f in enumerate(futures):
            try:
                result = f.result(RESULT_TIMEOUT)
            except TimeoutError:
                finished = sum(f.done() for f in futures)
                raise TimeoutError(
                    f"future {i} of a batch of {window}: no result in {RESULT_TIMEOUT} s; "
                    f"{finished} of the batch done"
                ) from None
            if result != i + 1:
                raise AssertionError("wrong result")
        return window

    return {**calls_per_second(batch), "window": window}


def arrays(obj):
    """GB/s for float64 arrays by value, parent -> child and child -> parent,
    from the median of several repetitions."""
    import numpy

    out = {}
    for size, reps in sorted(CONFIG["array_reps"].items()):
        arr = numpy.random.default_rng(1).random(size // 8)
        expect = float(arr[0] + arr[-1] + arr[len(arr) // 2])
        nbytes, check = obj.take(arr)
        if nbytes != size or check != expect:
            raise AssertionError(f"take: {nbytes}, {check} != {size}, {expect}")
        to_child = median_seconds(lambda: obj.take(arr), reps)

        obj.prepare(size)
        got = obj.give()
        if not isinstance(got, numpy.ndarray) or got.nbytes != size or got[-1] != size // 8 - 1:
            raise AssertionError(f"give returned {type(got)}")
        del got
        from_child = median_seconds(lambda: obj.give(), reps)
        obj.prepare(0)
        out[str(size)] = {
            "to_child_gbps": size / to_child / 1e9,
            "from_child_gbps": size / from_child / 1e9,
        }
    return out


def spawn_to_first_call(address=DEFAULT):
    """Median seconds from ProcessSpawner() to the first result of
    ``_import('bench_objects').Adder().add(1, 2)`` in the new child; also
    whether a fresh child has numpy loaded."""
    times = []
    numpy_loaded = None
    for _ in range(CONFIG["spawns"]):
        t0 = time.perf_counter_ns()
        proc = ProcessSpawner(address=address)
        try:
            result = proc.client._import("bench_objects").Adder().add(1, 2)
            times.append(time.perf_counter_ns() - t0)
            assert result == 3
            if numpy_loaded is None:
                numpy_loaded = "numpy" in proc.client._import("sys").modules
        finally:
            proc.stop()
    times.sort()
    return {"median_s": times[len(times) // 2] / 1e9, "child_has_numpy": numpy_loaded}


def python_calls(obj, n=1000):
    """Python-level 'call' events (sys.setprofile) per sync ``obj.add(1, 2)``
    on the client: all functions, and those defined in the farcall package."""
    package = os.path.dirname(os.path.abspath(farcall.__file__))
    calls = count_python_calls(lambda: obj.add(1, 2), n, package)
    calls["farcall_per_call"] = calls.pop("package_per_call")
    return calls


def run_all():
    """Everything but the round trips (see run.py)."""
    out = {"farcall_file": farcall.__file__, "version": farcall.__version__}
    for name, address in TRANSPORTS.items():
        with Child(address) as child:
            attempt(out, f"python_calls_{name}", python_calls, child.adder)
            attempt(out, f"pipelined_{name}", pipelined, child.adder)
            if name == "default":
                attempt(out, "arrays_default", arrays, child.adder)
        if name == "zmq_tcp":
            # with 10k outstanding, replies went missing over ZeroMQ (see
            # bench/README.md); a fresh child and a smaller window as well
            with Child(address) as child:
                attempt(out, "pipelined_zmq_tcp_window1000", pipelined, child.adder, 1000)
    attempt(out, "spawn_to_first_call_default", spawn_to_first_call)
    return out


if __name__ == "__main__":
    import contextlib
    import json

    with contextlib.ExitStack() as stack:
        print(json.dumps(interleaved_round_trips(round_trip_targets(stack)), indent=2))
    print(json.dumps(run_all(), indent=2))
