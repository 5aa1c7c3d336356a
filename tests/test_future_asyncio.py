"""Future: the concurrent.futures-style API, and awaiting from asyncio."""

import asyncio
import threading
import time

import pytest

import farcall
from farcall import Future, RemoteCallException


def test_done_result_exception(child, helpers):
    c = helpers.Counter()
    f = c.sleep(0.3, _sync="async")
    assert isinstance(f, Future)
    assert f.done() is False
    assert f.running() is True
    assert f.result(timeout=10) == 0.3
    assert f.done() is True
    assert f.running() is False
    assert f.exception() is None
    assert f.result() == 0.3  # again, from the stored outcome
    assert "finished" in repr(f)


def test_exception_of_a_failed_call(child, helpers):
    c = helpers.Counter()
    f = c.fail("async failure", _sync="async")
    e = f.exception(timeout=10)
    assert isinstance(e, RemoteCallException)
    assert e.type_str == "ValueError"
    assert "async failure" in str(e)
    with pytest.raises(RemoteCallException):
        f.result(timeout=10)
    assert f.done()


def test_add_done_callback(child, helpers):
    c = helpers.Counter()
    f = c.sleep(0.2, _sync="async")
    called = []
    event = threading.Event()

    def cb(fut):
        called.append(fut)
        event.set()

    f.add_done_callback(cb)
    assert event.wait(10), "callback never ran"
    assert len(called) == 1
    assert called[0] is f
    assert called[0].result() == 0.2
    # Added after completion: runs at once, in this thread.
    late = []
    f.add_done_callback(lambda fut: late.append(threading.get_ident()))
    assert late == [threading.get_ident()]


def test_add_done_callback_without_anyone_waiting(child, helpers):
    """The callback runs although nobody calls result()."""
    c = helpers.Counter()
    event = threading.Event()
    f = c.add(1, 2, _sync="async")
    f.add_done_callback(lambda fut: event.set())
    assert event.wait(10)
    assert f.result(timeout=1) == 3


def test_cancel_of_a_pending_call(child, helpers):
    """A pending call is cancelled (CancelledError, as concurrent.futures);
    a finished one is not, and the link keeps serving."""
    import concurrent.futures

    c = helpers.Counter()
    f = c.sleep(0.2, _sync="async")
    assert f.cancel() is True
    assert f.cancelled() is True and f.done() is True
    with pytest.raises(concurrent.futures.CancelledError):
        f.result(timeout=1)
    with pytest.raises(concurrent.futures.CancelledError):
        f.exception(timeout=1)
    done = c.add(1, 2, _sync="async")
    assert done.result(timeout=10) == 3
    assert done.cancel() is False and done.cancelled() is False


def test_result_timeout_leaves_the_future_usable(child, helpers):
    c = helpers.Counter()
    f = c.sleep(1.0, _sync="async")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        f.result(timeout=0.1)
    assert time.monotonic() - t0 < 0.9
    assert f.done() is False
    with pytest.raises(TimeoutError):
        f.exception(timeout=0.05)
    assert f.result(timeout=10) == 1.0
    assert f.done()


def test_many_futures_in_flight(child, helpers):
    c = helpers.Counter()
    futures = [c.add(i, i, _sync="async") for i in range(500)]
    assert [f.result(timeout=30) for f in futures] == [2 * i for i in range(500)]


def test_result_from_another_thread(child, helpers):
    c = helpers.Counter()
    f = c.sleep(0.3, _sync="async")
    out = {}

    def waiter():
        out["r"] = f.result(timeout=10)

    t = threading.Thread(target=waiter)
    t.start()
    assert f.result(timeout=10) == 0.3
    t.join(10)
    assert out["r"] == 0.3


def test_await_from_asyncio(child, helpers):
    c = helpers.Counter()

    async def main():
        one = await c.add(1, 2, _sync="async")
        many = await asyncio.gather(*(c.add(i, 10, _sync="async") for i in range(20)))
        return one, many

    one, many = asyncio.run(main())
    assert one == 3
    assert many == [i + 10 for i in range(20)]


def test_await_runs_calls_concurrently(child, helpers):
    """Three 0.4 s remote sleeps in three children run at once: gathered
    they take much less than 1.2 s."""
    procs = [farcall.ProcessSpawner() for _ in range(3)]
    try:
        sleeps = [p.client._import("time").sleep for p in procs]

        async def main():
            t0 = time.monotonic()
            await asyncio.gather(*(s(0.4, _sync="async") for s in sleeps))
            return time.monotonic() - t0

        elapsed = asyncio.run(main())
        assert elapsed < 1.1, elapsed
    finally:
        for p in procs:
            p.stop()


def test_await_a_failing_call(child, helpers):
    c = helpers.Counter()

    async def main():
        with pytest.raises(RemoteCallException) as info:
            await c.fail("awaited", _sync="async")
        return info.value

    e = asyncio.run(main())
    assert e.type_str == "ValueError"


def test_asyncio_example(child, helpers):
    """The documented way to use proxies from asyncio: make the calls async
    (per call with _sync="async", or for a proxy with _set_proxy_options)
    and await the futures; the event loop keeps running meanwhile."""
    col = child.client._import("collections")

    async def main():
        d = col.OrderedDict()
        d._set_proxy_options(sync="async")
        await d.update({"x": 1})  # a Future, since the proxy is async
        keys = list(await d.copy(_return_type="value"))
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.ensure_future(ticker())
        slept = await child.client._import("time").sleep(0.3, _sync="async")
        t.cancel()
        return list(keys), slept, ticks

    keys, slept, ticks = asyncio.run(main())
    assert keys == ["x"]
    assert slept is None
    assert ticks >= 5, "the event loop was blocked during the remote call"


def test_done_turns_true_by_polling_alone(child):
    # Nobody waits on the future: done() itself must read the reply.
    remote_time = child.client._import("time")
    future = remote_time.sleep(0.05, _sync="async")
    deadline = time.monotonic() + 10
    while not future.done():
        assert time.monotonic() < deadline, "done() never became true"
        time.sleep(0.005)
    assert future.result(0) is None
