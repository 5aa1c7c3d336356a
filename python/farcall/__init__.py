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
    ObjectProxy,
    ProcessSpawner,
    RPCClient,
    RPCServer,
    __version__,
)
from ._native import _exiting, _remove_socket_files, _stop_children
from ._future import Future
from .process import start_process
from .errors import (
    DisconnectError,
    OperationError,
    ProcessTimeoutError,
    ProtocolError,
    RemoteCallException,
)
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
    "ProcessTimeoutError",
    "ProtocolError",
    "Proxy",
    "RemoteCallException",
    "RPCClient",
    "RPCServer",
    "get_connection",
    "get_proxy_connection",
    "ref",
    "start_process",
]


#: Submodules that are attributes of the package without being imported by
#: ``import farcall`` (pyacq's package had them; a child's start stays fast).
_LAZY_SUBMODULES = ("log", "serializer", "qt")
#: Names imported from a submodule on first access: ``QtRPCServer`` loads a
#: Qt binding, which only a Qt program wants.
_LAZY_NAMES = {"QtRPCServer": "qt"}

import types as _types  # noqa: E402 (loaded by the interpreter already)


def __getattr__(name: str) -> object:
    """Imports ``farcall.log``, ``farcall.serializer`` or ``farcall.qt`` (and
    ``QtRPCServer`` from it) on first access.

    Importing a submodule binds it on the package, so this runs once per
    module; any other missing name raises AttributeError as usual.
    """
    if name in _LAZY_SUBMODULES or name in _LAZY_NAMES:
        import importlib

        module = importlib.import_module(f"{__name__}.{_LAZY_NAMES.get(name, name)}")
        return getattr(module, name) if name in _LAZY_NAMES else module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> "list[str]":
    """The package's names, including the submodules not imported yet."""
    return sorted(set(globals()) | set(_LAZY_SUBMODULES) | set(_LAZY_NAMES))


def _at_exit() -> None:
    """Stops the children still running, after parking the waiters they wake.

    Threads coming back from a farcall wait from now on park instead of
    taking the GIL again (see gil.rs): stopping a child wakes every thread
    waiting on it, and those must not run Python code while the interpreter
    finalizes. Children are stopped politely; their lifeline would end them
    anyway, but without a chance to clean up. Then the socket files of
    servers never closed (serving in daemon threads) are removed.
    """
    _exiting()
    _stop_children()
    _remove_socket_files()


_atexit.register(_at_exit)
