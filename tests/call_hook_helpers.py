"""Helpers for tests/test_call_hooks.py, imported in the process that serves:
a call context hook that records what it was given, and a log handler that
records the context current when each farcall record was made."""

import contextlib
import contextvars
import logging
import threading

from farcall import RPCClient, RPCServer

current = contextvars.ContextVar("current", default=None)
_seen = []
_logged = []


class _Capture(logging.Handler):
    def emit(self, record):
        _logged.append([record.getMessage(), current.get()])


@contextlib.contextmanager
def _context(opts):
    token = current.set(opts.get("trace"))
    _seen.append(["enter", dict(opts), threading.get_ident()])
    try:
        yield
    except BaseException as e:
        _seen.append(["error", type(e).__name__])
        raise
    finally:
        current.reset(token)
        _seen.append(["exit"])


def install_hook():
    """Runs every incoming call in ``_context`` (process-wide)."""
    logger = logging.getLogger("farcall")
    if not any(isinstance(h, _Capture) for h in logger.handlers):
        logger.addHandler(_Capture())
    RPCServer.set_call_context_hook(_context)


def _picky(opts):
    if opts.get("trace") == "explode":
        raise ValueError("the hook refused")
    return _context(opts)


def install_picky_hook():
    """A hook that raises for calls whose trace is "explode"."""
    RPCServer.set_call_context_hook(_picky)


def remove_hook():
    RPCServer.set_call_context_hook(None)


def current_trace():
    """The context the hook made current for this very call."""
    return current.get()


def serving_thread():
    return threading.get_ident()


def fail(message):
    raise ValueError(message)


def seen():
    """What the hook saw since the last call of ``seen`` (without the
    entering and leaving of those two calls themselves), and clears it."""
    out = list(_seen)
    _seen.clear()
    if out and out[0] == ["exit"]:
        out = out[1:]
    if out and out[-1][0] == "enter":
        out = out[:-1]
    return out


def logged():
    """(message, context) of the farcall records made so far."""
    return list(_logged)


def call_back(fn, *args):
    """Calls ``fn`` (a proxy to the caller) from here."""
    return fn(*args)


def provide_from_here(trace):
    """Makes this process's outgoing calls carry ``trace``."""
    RPCClient.set_call_opts_provider(lambda: {"trace": trace})
