"""``farcall.Future``: the pending result of an async call.

It is a real ``concurrent.futures.Future`` (``isinstance``,
``concurrent.futures.wait``/``as_completed`` and ``asyncio.wrap_future``
work) whose methods are the native ones of ``farcall._native.Future``:
waiting releases the GIL, callbacks run in farcall's callback thread.

``concurrent.futures.wait`` and ``as_completed`` read the base class's
internal state (``_condition``, ``_state``, ``_waiters``) directly. That
state is made the first time something reads it and follows the native
future from then on, so a call nobody waits on that way pays nothing for
it.
"""

import concurrent.futures as _cf
import threading as _threading

from . import _native

#: concurrent.futures.Future's internal attributes, made on first read.
_INTERNAL = ("_condition", "_state", "_result", "_exception", "_waiters", "_done_callbacks")
_making_state = _threading.Lock()


def _base_state(future):
    """The instance dict, with concurrent.futures.Future's state in it
    (made, and bound to the native outcome, the first time)."""
    state = future.__dict__
    if "_condition" not in state:
        with _making_state:
            if "_condition" not in state:
                # What concurrent.futures.Future.__init__ sets, written to
                # the dict directly (its assignments would come back here).
                state["_state"] = _cf._base.PENDING
                state["_result"] = None
                state["_exception"] = None
                state["_waiters"] = []
                state["_done_callbacks"] = []
                state["_condition"] = _threading.Condition()
                _native.Future.add_done_callback(future, _copy_outcome)
    return state


def _internal(name):
    """A property for one of the base class's internal attributes: made on
    first read, then kept in the instance dict."""

    def get(self):
        return _base_state(self)[name]

    def set(self, value):
        _base_state(self)[name] = value

    return property(get, set, doc=f"concurrent.futures.Future's {name}, made on first use.")


class Future(_native.Future, _cf.Future):
    """The result of a call made with ``_sync="async"``: ``result()``,
    ``exception()``, ``done()``, ``cancel()``, ``add_done_callback()``, and
    ``await``."""

    __slots__ = ()
    __module__ = "farcall"


# Properties, not __getattr__: a class with __getattr__ loses CPython's
# fast method calls, which would slow every `future.result()`.
for _name in _INTERNAL:
    setattr(Future, _name, _internal(_name))
del _name


def _copy_outcome(future):
    """Copies a finished native future's outcome into its base state,
    waking concurrent.futures waiters."""
    if future.cancelled():
        _cf.Future.cancel(future)
        _cf.Future.set_running_or_notify_cancel(future)
        return
    exc = future.exception()
    if exc is None:
        _cf.Future.set_result(future, future.result())
    else:
        _cf.Future.set_exception(future, exc)


_native._set_future_class(Future)
