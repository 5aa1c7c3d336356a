"""OpenTelemetry over farcall's call hooks (tests/test_call_hooks.py): the
W3C trace context of the calling thread travels in each call's options and
the serving side opens its span as a child of it. Real opentelemetry-api and
-sdk, spans kept in memory."""

from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from farcall import RPCClient, RPCServer

_exporter = InMemorySpanExporter()
_installed = []


def _inject():
    carrier = {}
    propagate.inject(carrier)
    return {"otel": carrier} if carrier else None


def _serve_in_span(opts):
    parent = propagate.extract(opts.get("otel") or {})
    return tracer().start_as_current_span("serve", context=parent)


def tracer():
    return trace.get_tracer("farcall-tests")


def install():
    """A tracer provider of this process, and farcall's hooks both ways."""
    if not _installed:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)
        _installed.append(provider)
    RPCClient.set_call_opts_provider(_inject)
    RPCServer.set_call_context_hook(_serve_in_span)


def uninstall():
    RPCClient.set_call_opts_provider(None)
    RPCServer.set_call_context_hook(None)


def spans():
    """[name, trace id, span id, parent span id] of the finished spans."""
    out = []
    for s in _exporter.get_finished_spans():
        parent = None if s.parent is None else "%016x" % s.parent.span_id
        out.append([s.name, "%032x" % s.context.trace_id, "%016x" % s.context.span_id, parent])
    return out


def clear():
    _exporter.clear()


def work_then_call_back(callback):
    """A span of its own here, inside which it calls back."""
    with tracer().start_as_current_span("child-work"):
        return callback()
