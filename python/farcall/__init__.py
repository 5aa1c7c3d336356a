"""farcall: control other processes through object proxies.

The engine is written in Rust (``farcall._native``); this package re-exports
it with pyacq's names::

    from farcall import ProcessSpawner
    proc = ProcessSpawner()
    remote_col = proc.client._import('collections')
    remote_dict = remote_col.OrderedDict()
    remote_dict['x'] = 1
    assert remote_dict['x'] == 1

and across's names (``Connection``, ``Proxy``, ``Local``/``ref``,
``get_connection``), from :mod:`farcall.across`.
"""

import atexit as _atexit

from ._native import (
    Future,
    ObjectProxy,
    ProcessSpawner,
    RPCClient,
    RPCServer,
    __version__,
)
from ._native import _exiting, _stop_children
from .errors import DisconnectError, OperationError, ProtocolError, RemoteCallException
from .across import Connection, Local, Proxy, get_connection, get_proxy_connection, ref

__all__ = [
    "__version__",
    "Connection",
    "DisconnectError",
    "Future",
    "Local",
    "ObjectProxy",
    "OperationError",
    "ProcessSpawner",
    "ProtocolError",
    "Proxy",
    "RemoteCallException",
    "RPCClient",
    "RPCServer",
    "get_connection",
    "get_proxy_connection",
    "ref",
]


def _at_exit() -> None:
    """Stops the children still running, after parking the waiters they wake.

    Threads coming back from a farcall wait from now on park instead of
    taking the GIL again (see gil.rs): stopping a child wakes every thread
    waiting on it, and those must not run Python code while the interpreter
    finalizes. Children are stopped politely; their lifeline would end them
    anyway, but without a chance to clean up.
    """
    _exiting()
    _stop_children()


_atexit.register(_at_exit)
