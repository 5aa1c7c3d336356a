"""Call hooks (teleprox 2.2.1): RPCClient.set_call_opts_provider adds options
to every outgoing call, RPCServer.set_call_context_hook runs every incoming
call inside the context manager it returns, also while a failed call is
logged. On every transport, from several threads, with real OpenTelemetry
(a trace that goes into a child and back), and against real teleprox peers
both ways."""

import subprocess
import sys
import threading

import pytest

import farcall_test_helpers  # noqa: F401  (puts tests/ on the path)
from farcall import ProcessSpawner, RemoteCallException, RPCClient, RPCServer
from farcall_testutil import ThreadServer, import_helpers, run_in_thread, stop_quietly

pytestmark = pytest.mark.timeout(120)

ADDRESSES = [None, "tcp+native://127.0.0.1:*", "tcp://127.0.0.1:*"]


@pytest.fixture(autouse=True)
def no_hooks_left():
    """The hooks are process-wide: none survives a test."""
    yield
    RPCClient.set_call_opts_provider(None)
    RPCServer.set_call_context_hook(None)


@pytest.fixture(params=ADDRESSES, ids=["unix", "tcp+native", "zmq"])
def hooked(request):
    """A child whose incoming calls run in call_hook_helpers' context."""
    kwargs = {} if request.param is None else {"address": request.param}
    proc = ProcessSpawner(**kwargs)
    import_helpers(proc.client)
    helpers = proc.client._import("call_hook_helpers")
    helpers.install_hook()
    helpers.seen()
    yield proc, helpers
    stop_quietly(proc)


def test_the_providers_options_reach_the_hook_around_each_call(hooked):
    proc, h = hooked
    local = threading.local()
    RPCClient.set_call_opts_provider(lambda: {"trace": getattr(local, "trace", None)})
    local.trace = "t-sync"
    assert h.current_trace() == "t-sync"
    local.trace = "t-async"
    assert h.current_trace(_sync="async").result(timeout=10) == "t-async"
    local.trace = "t-off"
    h.current_trace(_sync="off")
    local.trace = None
    seen = h.seen()
    enters = [s for s in seen if s[0] == "enter"]
    assert [e[1]["trace"] for e in enters[:3]] == ["t-sync", "t-async", "t-off"]
    # The context is entered and left around each call, in the serving thread.
    assert [s[0] for s in seen[:6]] == ["enter", "exit"] * 3
    serving = h.serving_thread()
    assert {e[2] for e in enters} == {serving}
    # Without a provider, the hook sees no options.
    RPCClient.set_call_opts_provider(None)
    h.seen()
    assert h.current_trace() is None
    assert h.seen() == [["enter", {}, serving], ["exit"]]


def test_each_thread_sends_its_own_context(hooked):
    proc, h = hooked
    local = threading.local()
    RPCClient.set_call_opts_provider(lambda: {"trace": getattr(local, "trace", None)})
    results, errors = {}, []

    def worker(n):
        try:
            local.trace = "thread-%d" % n
            results[n] = [h.current_trace() for _ in range(20)]
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert results == {n: ["thread-%d" % n] * 20 for n in range(4)}


def test_a_failed_call_is_logged_inside_the_context(hooked):
    proc, h = hooked
    RPCClient.set_call_opts_provider(lambda: {"trace": "t-fail"})
    with pytest.raises(RemoteCallException, match="boom"):
        h.fail("boom")
    seen = h.seen()
    assert [s[0] for s in seen[:3]] == ["enter", "error", "exit"]
    assert seen[1] == ["error", "RemoteCallException"]
    RPCClient.set_call_opts_provider(None)
    raised = [entry for entry in h.logged() if "raised" in entry[0] and "boom" in entry[0]]
    assert raised, h.logged()
    assert raised[0][1] == "t-fail"  # the record was made in the call's context


def test_a_provider_that_fails_fails_the_call_and_loses_nothing(hooked):
    proc, h = hooked
    RPCClient.set_call_opts_provider(lambda: 1 / 0)
    with pytest.raises(RuntimeError, match="ZeroDivisionError.*call opts provider"):
        h.current_trace()
    RPCClient.set_call_opts_provider(lambda: ["not", "a", "dict"])
    with pytest.raises(TypeError, match="dict or None"):
        h.current_trace()
    # The names call_obj uses itself are not the provider's.
    RPCClient.set_call_opts_provider(lambda: {"obj": 1, "args": 2, "trace": "kept"})
    assert h.current_trace() == "kept"
    RPCClient.set_call_opts_provider(None)
    assert h.current_trace() is None
    assert proc.client.ping() == "pong"


def test_a_hook_that_fails_fails_the_call_and_the_server_keeps_serving(hooked):
    proc, h = hooked
    h.install_picky_hook()
    RPCClient.set_call_opts_provider(lambda: {"trace": "explode"})
    with pytest.raises(RemoteCallException, match="the hook refused"):
        h.current_trace()
    RPCClient.set_call_opts_provider(lambda: {"trace": "fine"})
    assert h.current_trace() == "fine"


def calling_back(proc, fn):
    """Runs ``fn()``, which passes a local object to ``proc``: over ZeroMQ
    in a thread with a server of its own (pyacq's rule: a ZeroMQ peer calls
    back through one), over native links on the link itself."""
    if not proc.address.startswith("tcp://"):
        return fn()

    def with_server():
        server = RPCServer("tcp://127.0.0.1:*")
        server.run_lazy()
        try:
            return fn()
        finally:
            server.close()

    return run_in_thread(with_server, timeout=60)


def test_calls_back_carry_the_callees_context(hooked):
    # A -> B -> A: the child's own provider reaches this process's hook.
    proc, h = hooked
    import call_hook_helpers as local_helpers

    local_helpers.install_hook()
    h.provide_from_here("from-child")
    got = calling_back(proc, lambda: h.call_back(local_helpers.current_trace))
    assert got == "from-child"
    proc.client._import("farcall").RPCClient.set_call_opts_provider(None)


def test_opentelemetry_trace_goes_into_a_child_and_back(hooked):
    proc, _ = hooked
    import otel_helpers

    otel = proc.client._import("otel_helpers")
    otel.install()
    otel_helpers.install()
    otel_helpers.clear()
    otel.clear()
    try:
        calls_back = []

        def callback():
            calls_back.append(1)
            return "back"

        def traced():
            with otel_helpers.tracer().start_as_current_span("caller") as span:
                assert otel.work_then_call_back(callback) == "back"
                context = span.get_span_context()
                return "%032x" % context.trace_id, "%016x" % context.span_id

        trace_id, caller_id = calling_back(proc, traced)
        assert calls_back == [1]
        child = {s[0]: s for s in otel.spans()}
        here = {s[0]: s for s in otel_helpers.spans()}
        # In the child: the call's span is the caller's child, and its work
        # is inside it; back here, the callback's span is inside that work.
        assert child["serve"][1] == trace_id and child["serve"][3] == caller_id
        assert child["child-work"][1] == trace_id
        assert child["child-work"][3] == child["serve"][2]
        assert here["serve"][1] == trace_id
        assert here["serve"][3] == child["child-work"][2]
        assert here["caller"][1] == trace_id
    finally:
        otel.uninstall()
        otel_helpers.uninstall()


# ---- against real teleprox peers ----------------------------------------------------

TELEPROX_HOOKED_SERVER = """
import contextlib, sys
import teleprox
import teleprox.server

seen = []

@contextlib.contextmanager
def context(opts):
    seen.append({k: v for k, v in opts.items() if k not in ("obj", "args", "kwargs")})
    yield

teleprox.server.set_call_context_hook(context)


class Probe:
    def seen(self):
        return list(seen)


server = teleprox.RPCServer(run_thread=False)
server["probe"] = Probe()
print(server.address.decode(), flush=True)
server.run_forever()
"""


def test_a_farcall_providers_options_reach_a_teleprox_hook(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", TELEPROX_HOOKED_SERVER],
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "stderr.txt", "w"),
        text=True,
    )
    try:
        address = proc.stdout.readline().strip()
        assert address.startswith("tcp://"), (tmp_path / "stderr.txt").read_text()
        client = RPCClient(address, auth=False)
        probe = client.send("get_item", opts={"name": "probe"}, timeout=10)
        RPCClient.set_call_opts_provider(lambda: {"trace": "to-teleprox", "n": 3})
        seen = probe.seen()
        assert seen[-1] == {"trace": "to-teleprox", "n": 3}
        RPCClient.set_call_opts_provider(None)
        assert probe.seen()[-1] == {}
        client.close()
    finally:
        proc.kill()
        proc.wait(10)


def test_a_teleprox_providers_options_reach_a_farcall_hook():
    import teleprox
    import teleprox.client

    import call_hook_helpers as local_helpers

    ts = ThreadServer("tcp://127.0.0.1:*", auth=False)
    ts["helpers"] = local_helpers
    local_helpers.install_hook()
    local_helpers.seen()
    teleprox.client.set_call_opts_provider(lambda: {"trace": "from-teleprox"})
    try:
        teleprox.log.set_thread_name("hooks-test-client")
        c = teleprox.RPCClient(ts.address)
        helpers = c.send("get_item", opts={"name": "helpers"}, timeout=10)
        assert helpers.current_trace() == "from-teleprox"
        assert local_helpers.seen()[0][1] == {"trace": "from-teleprox"}
        c.close()
    finally:
        teleprox.client.set_call_opts_provider(None)
        ts.close()
