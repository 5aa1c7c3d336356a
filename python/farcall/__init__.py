"""farcall: control other processes through object proxies.

The engine is written in Rust (``farcall._native``); this package re-exports
it with pyacq's names::

    from farcall import ProcessSpawner
    proc = ProcessSpawner()
    remote_col = proc.client._import('collections')
    remote_dict = remote_col.OrderedDict()
    remote_dict['x'] = 1
    assert remote_dict['x'] == 1
"""

import atexit as _atexit

from . import _native

# First registered, so it runs last at exit: from then on, threads coming
# back from farcall waits do not take the GIL again (see gil.rs).
_atexit.register(_native._exiting)

from ._native import (  # noqa: E402
    Future,
    ObjectProxy,
    ProcessSpawner,
    RPCClient,
    RPCServer,
    __version__,
)
from ._native import _stop_children  # noqa: E402
from .errors import DisconnectError, OperationError, ProtocolError, RemoteCallException

__all__ = [
    "__version__",
    "DisconnectError",
    "Future",
    "ObjectProxy",
    "OperationError",
    "ProcessSpawner",
    "ProtocolError",
    "RemoteCallException",
    "RPCClient",
    "RPCServer",
]

# Children still running when the interpreter exits are stopped politely
# (their lifeline would end them anyway, but without a chance to clean up).
_atexit.register(_stop_children)
