"""farcall.log.AcrossHandler: records go to the logger of the same name on
the other side of an across connection, in both directions, once each,
before the result of the call that logged them. A real child serves
`python -m farcall.across`; every wait is bounded."""

import logging
import os
import sys
import threading
import time

import pytest

import across_log_helpers as h
from farcall import across
from farcall.across import Connection, DisconnectError
from farcall.log import AcrossHandler
from across_testing import child_env, conn, fresh, serve_command  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def local_logger(request):
    """A logger of this process named after the test, keeping its records
    (in ``.keep``); its handlers are removed afterwards."""
    name = "across-log." + request.node.name
    logger = h.logger_for(name)
    keep = h.ListHandler()
    logger.addHandler(keep)
    logger.keep = keep
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)


def run_bounded(func, timeout=10.0):
    """Runs ``func`` in a thread; fails if it is still running after ``timeout``
    s; returns what it returned or raises what it raised."""
    out = {}

    def target():
        try:
            out["value"] = func()
        except BaseException as e:  # handed to the test
            out["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "still running after %.1f s" % timeout
    if "error" in out:
        raise out["error"]
    return out.get("value")


def test_child_records_arrive_before_the_call_returns(conn, local_logger):
    name = local_logger.name
    conn.call(h.capture, name)
    conn.call(h.forward_to_caller, name)
    assert conn.call(h.log_some, name) == "done"
    # No waiting: the records came before the result.
    got = local_logger.keep.summary()
    assert [g[:2] for g in got] == [
        ("DEBUG", "debug 1"),
        ("WARNING", "warning two"),
        ("ERROR", "failed three"),
    ]
    exc_text = got[2][2]
    assert exc_text.startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError: division by zero" in exc_text
    assert got[0][2] is None and got[1][2] is None
    assert all(g[3] for g in got)  # exc_info does not travel
    # The child handled them too (its own records keep exc_info), once each.
    assert [g[:3] for g in conn.call(h.captured, name)] == [g[:3] for g in got]
    records = local_logger.keep.records
    assert all(r.process != os.getpid() for r in records)  # the child's attributes
    assert all(r.name == name for r in records)


def test_parent_records_go_to_the_childs_logger(conn, local_logger):
    name = local_logger.name
    conn.call(h.capture, name)
    handler = AcrossHandler(conn)
    assert handler.connection is conn
    local_logger.addHandler(handler)
    local_logger.info("hello %s", "child")
    try:
        raise KeyError("k")
    except KeyError:
        local_logger.error("with traceback", exc_info=True)
    got = conn.call(h.captured, name)
    assert [g[:2] for g in got] == [("INFO", "hello child"), ("ERROR", "with traceback")]
    assert "KeyError: 'k'" in got[1][2]
    assert all(g[3] for g in got)  # exc_info does not travel
    assert [g[:3] for g in got] == [g[:3] for g in local_logger.keep.summary()]
    # The handler's level and filters apply on this side.
    handler.setLevel(logging.WARNING)
    local_logger.info("not sent")
    local_logger.warning("sent")
    assert [g[1] for g in conn.call(h.captured, name)][2:] == ["sent"]


def test_handlers_on_both_sides_send_each_record_across_once(conn, local_logger):
    name = local_logger.name
    conn.call(h.capture, name)
    conn.call(h.forward_to_caller, name)
    local_logger.addHandler(AcrossHandler(conn))
    local_logger.info("from parent")
    assert conn.call(h.log, name, logging.WARNING, "from child") == "done"
    local_logger.error("parent again")
    expected = ["from parent", "from child", "parent again"]
    assert [g[1] for g in local_logger.keep.summary()] == expected
    assert [g[1] for g in conn.call(h.captured, name)] == expected


def test_both_sides_forwarding_at_once_neither_loops_nor_deadlocks(conn, local_logger):
    name = local_logger.name
    conn.call(h.capture, name)
    conn.call(h.forward_to_caller, name)
    local_logger.addHandler(AcrossHandler(conn))
    count = 200
    # A child thread logs (its records come to this side's pool) while
    # two threads here log to the same logger.
    conn.call(h.log_in_thread, name, count, "child")

    def parent_logs(prefix):
        for i in range(count // 2):
            local_logger.info("%s %d", prefix, i)

    workers = [threading.Thread(target=parent_logs, args=("parent%d" % k,)) for k in (0, 1)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(20)
        assert not w.is_alive()
    assert conn.call(h.join_threads, 20)
    expected = sorted(
        ["child %d" % i for i in range(count)]
        + ["parent%d %d" % (k, i) for k in (0, 1) for i in range(count // 2)]
    )
    assert sorted(g[1] for g in local_logger.keep.summary()) == expected
    assert sorted(g[1] for g in conn.call(h.captured, name)) == expected


def test_a_record_logged_while_forwarding_is_not_forwarded(conn, local_logger):
    name = local_logger.name
    conn.call(h.capture, name)
    # First, so that they format the record before other handlers (such
    # as pytest's) do; a second one sends the record again.
    local_logger.handlers[:0] = [AcrossHandler(conn), AcrossHandler(conn)]

    class LogsWhenFormatted:
        """Logs a record the first time it is formatted: in the first
        AcrossHandler, while it sends."""

        logged = False

        def __str__(self):
            if not LogsWhenFormatted.logged:
                LogsWhenFormatted.logged = True
                local_logger.info("inner")
            return "outer-value"

    local_logger.info("outer %s", LogsWhenFormatted())
    assert LogsWhenFormatted.logged
    # Each handler sent the outer record; the inner one, logged while a
    # handler was sending, stayed here.
    assert [g[1] for g in conn.call(h.captured, name)] == ["outer outer-value"] * 2
    assert [g[1] for g in local_logger.keep.summary()] == ["inner", "outer outer-value"]


def test_unpicklable_arguments_are_formatted_locally(conn, local_logger):
    name = local_logger.name
    conn.call(h.capture, name)
    conn.call(h.forward_to_caller, name)
    assert conn.call(h.log_unpicklable, name) == "done"
    assert [g[1] for g in local_logger.keep.summary()] == ["value <unpicklable> and False"]

    local_logger.addHandler(AcrossHandler(conn))
    local_logger.warning("lock %s", threading.Lock())
    got = conn.call(h.captured, name)
    assert got[-1][0] == "WARNING"
    assert got[-1][1].startswith("lock <unlocked _thread.lock object")


def test_a_failed_send_goes_to_handle_error(conn, local_logger):
    handler = AcrossHandler(conn)
    errors = []
    handler.handleError = errors.append
    local_logger.addHandler(handler)
    # An unpicklable attribute (not an argument) fails that record only.
    local_logger.info("x", extra={"lock": threading.Lock()})
    assert len(errors) == 1 and errors[0].getMessage() == "x"
    conn.call(h.capture, local_logger.name)
    local_logger.info("y")
    assert [g[1] for g in conn.call(h.captured, local_logger.name)] == ["y"]


def test_logging_after_the_child_is_killed_neither_raises_nor_hangs(fresh, local_logger):
    c = fresh()
    name = local_logger.name
    c.call(h.capture, name)
    handler = AcrossHandler(c)
    errors = []
    handler.handleError = errors.append
    local_logger.addHandler(handler)
    local_logger.info("before")
    assert [g[1] for g in c.call(h.captured, name)] == ["before"]

    c._process.kill()
    c._process.wait(10)
    start = time.monotonic()
    run_bounded(lambda: local_logger.warning("right after the kill"))
    assert c.wait(10)
    run_bounded(lambda: [local_logger.error("after %d", i) for i in range(5)])
    assert time.monotonic() - start < 10
    assert errors == []
    assert [g[1] for g in local_logger.keep.summary()] == ["before", "right after the kill"] + [
        "after %d" % i for i in range(5)
    ]
    with pytest.raises(DisconnectError):
        c.call(h.captured, name)


def test_logging_after_close_is_dropped(fresh, local_logger):
    c = fresh()
    handler = AcrossHandler(c)
    errors = []
    handler.handleError = errors.append
    local_logger.addHandler(handler)
    c.close()
    run_bounded(lambda: local_logger.warning("closed"))
    assert errors == []


def test_without_a_connection_it_raises_as_get_connection():
    with pytest.raises(Exception) as expected:
        across.get_connection()
    with pytest.raises(type(expected.value)) as got:
        AcrossHandler()
    assert str(got.value) == str(expected.value)
    assert isinstance(got.value, ValueError) and isinstance(got.value, RuntimeError)


def test_in_a_call_the_default_is_the_calls_connection(conn):
    assert conn.call(h.handler_without_connection) is True
