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
_INTERNAL = frozenset(
    ("_condition", "_state", "_result", "_exception", "_waiters", "_done_callbacks")
)
_making_state = _threading.Lock()


class Future(_native.Future, _cf.Future):
    """The result of a call made with ``_sync="async"``: ``result()``,
    ``exception()``, ``done()``, ``cancel()``, ``add_done_callback()``, and
    ``await``."""

    __slots__ = ()
    __module__ = "farcall"

    def __getattr__(self, name):
        """Makes concurrent.futures.Future's state when first read."""
        if name not in _INTERNAL:
            raise AttributeError(
                f"'{type(self).__name__}' object has no attribute '{name}'"
            )
        with _making_state:
            if "_condition" not in self.__dict__:
                _cf.Future.__init__(self)
                _native.Future.add_done_callback(self, _copy_outcome)
        return self.__dict__[name]


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
