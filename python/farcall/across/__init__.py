"""across's symmetric connections, on farcall's engine.

A :class:`Connection` joins this process and another over one byte
channel (a child's pipes, this process's stdio, a channel object); either
side calls functions on the other and gets results, or proxies, back::

    import sys, operator
    from farcall.across import Connection

    with Connection.from_command([sys.executable, "-m", "farcall.across"]) as conn:
        assert conn.call(operator.add, 1, 2) == 3

Functions, arguments and results are pickled (protocol 5, large buffers
such as numpy arrays out of band, never copied into the pickle). Pickle
runs code: a connection is only for a peer you trust (see
docs/security.md). See docs/across.md.
"""

from __future__ import annotations

import subprocess
import sys
import time
import weakref
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from .. import _native
from ..errors import DisconnectError, OperationError, ProtocolError
from . import _wire

__all__ = [
    "Connection",
    "DisconnectError",
    "Local",
    "OperationError",
    "ProtocolError",
    "Proxy",
    "get_connection",
    "get_proxy_connection",
    "ref",
]


class NoConnectionError(ValueError, RuntimeError):
    """The thread runs no remote call, so it has no connection."""


# Connections by link id, for the requests that come over each link.
# (A dict of weak references rather than a WeakValueDictionary: looked up
# on every request served, and a plain dict lookup is several times faster.)
_CONNECTIONS: "Dict[int, weakref.ref[Connection]]" = {}


def _register(conn: "Connection") -> None:
    link_id = conn._link.id
    _CONNECTIONS[link_id] = weakref.ref(conn, lambda _: _CONNECTIONS.pop(link_id, None))


def _connection_of(link_id: int) -> "Connection":
    deadline = None
    while True:
        ref = _CONNECTIONS.get(link_id)
        conn = None if ref is None else ref()
        if conn is not None:
            return conn
        # A request can come as soon as the link is open, before this
        # side's Connection has registered it: that takes microseconds.
        if deadline is None:
            deadline = time.monotonic() + 1.0
        elif time.monotonic() >= deadline:
            raise DisconnectError("the connection of this request is gone")
        time.sleep(0.001)


def get_connection() -> "Connection":
    """The connection of the remote call this thread is running."""
    calls = _wire.CONTEXT.call
    if calls:
        return calls[-1]
    pickling = _wire.connection_pickling()
    if pickling is not None:
        return pickling
    raise NoConnectionError("Current thread is not associated with any connection")


def get_proxy_connection(proxy: "Proxy") -> "Connection":
    """The connection ``proxy`` calls through."""
    if not isinstance(proxy, Proxy):
        raise TypeError(f"Not a proxy: {proxy!r}")
    return proxy._conn


class Local:
    """Passes (or returns) ``obj`` by proxy instead of by copy."""

    __slots__ = ("_obj",)

    def __init__(self, obj: Any) -> None:
        if isinstance(obj, (Local, Proxy)):
            raise TypeError("Local() takes an object of this process, not a proxy or a Local")
        self._obj = obj

    def __reduce__(self) -> Any:
        return _wire.export(self._obj, _wire.methods_of(self._obj))

    def __repr__(self) -> str:
        return f"Local({self._obj!r})"


#: across 0.2's name for :class:`Local`.
ref = Local


class Proxy:
    """An object of the other side: its public methods, ``__call__`` and
    the container methods are forwarded; results come back by value."""

    _classes: Dict[frozenset, type] = {}

    def __init__(self, conn: "Connection", target: Any) -> None:
        self.__conn = conn
        self.__target = target

    @property
    def _conn(self) -> "Connection":
        """The connection this proxy calls through."""
        return self.__conn

    @classmethod
    def _make(cls, conn: "Connection", target: Any, methods: Sequence[str]) -> "Proxy":
        key = frozenset(methods)
        proxy_class = cls._classes.get(key)
        if proxy_class is None:
            body = {name: _forwarder(name) for name in sorted(key)}
            proxy_class = type("Proxy", (Proxy,), body)
            proxy_class.__module__ = __name__
            cls._classes[key] = proxy_class
        return proxy_class(conn, target)

    def __reduce__(self) -> Any:
        pickling = _wire.connection_pickling()
        if pickling is not self.__conn:
            raise RuntimeError(
                "a farcall.across proxy can only be sent over its own connection"
            )
        return _wire.export(self.__target, ())

    def __deepcopy__(self, memo: dict) -> Any:
        return self.__conn.call(_wire.identity, self)

    def __repr__(self) -> str:
        return f"<farcall.across.Proxy to {self.__target.type_str}>"


def _forwarder(name: str) -> Callable[..., Any]:
    def method(self: Proxy, /, *args: Any, **kwargs: Any) -> Any:
        conn = self._conn
        result = conn._request("method", (self, name, args, kwargs))
        return self if result is _wire.SELF else result

    method.__name__ = method.__qualname__ = name
    return method


class Connection:
    """A symmetric connection to another process over one byte channel."""

    def __init__(
        self, channel: Any, *, key: Any = None, auth: bool = True, _link: Any = None
    ) -> None:
        """Connects over ``channel``: any object with ``recv(size)`` (bytes;
        ``b''`` at the end of the stream or after ``cancel()``),
        ``send(data)`` (the count sent), ``cancel()`` and ``close()``. The
        peer opens its side the same way.

        Pickle runs code, so both sides first prove they hold the key:
        ``key`` (32 bytes or 64 hex digits), else the per-user key file
        (docs/security.md); a wrong key raises PermissionError on both
        sides. ``auth=False`` skips that, for a channel that only your
        peer can reach (a socket pair, pipes of your own); both sides must
        say so."""
        if _link is None:
            _link = _native.AcrossLink.over_channel(channel, key, auth)
        self._link = _link
        self._state = "running"  # then "closed" or "cancelled"
        self._process: Optional[subprocess.Popen] = None
        # Functions and classes this side calls, by the pickle of their
        # name, and those the other side called, by that pickle (see
        # _wire.Names).
        self._names = _wire.Names()
        self._named: Dict[bytes, Any] = {}
        _register(self)

    # ---- opening ------------------------------------------------------

    @classmethod
    def from_command(cls, args: Sequence[str], **popen_kwargs: Any) -> "Connection":
        """Starts ``args`` with its stdin and stdout joined to this process
        and connects to it (the child serves over its stdio, as ``python
        -m farcall.across``). The child's stdin and stdout are one end of
        a socket pair rather than two pipes: large buffers cross about
        twice as fast (pipes serialize their reader and writer)."""
        if isinstance(args, (str, bytes)):
            raise TypeError("args must be a list of strings, not a string")
        import socket

        ours, theirs = socket.socketpair()
        try:
            child_end = theirs.fileno()
            proc = subprocess.Popen(list(args), stdin=child_end, stdout=child_end, **popen_kwargs)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        try:
            link = _native.AcrossLink.over_pipes(ours.fileno(), ours.fileno())
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            ours.close()
        conn = cls(None, _link=link)
        conn._process = proc
        return conn

    @classmethod
    def from_process(cls, proc: subprocess.Popen) -> "Connection":
        """Connects to a running child through its stdin and stdout pipes."""
        if proc.stdin is None or proc.stdout is None:
            raise ValueError("the process needs stdin and stdout pipes")
        link = _native.AcrossLink.over_pipes(proc.stdout.fileno(), proc.stdin.fileno())
        # The link has its own copies: ours would keep the pipes open.
        proc.stdin.close()
        proc.stdout.close()
        conn = cls(None, _link=link)
        conn._process = proc
        return conn

    @classmethod
    def from_pipes(cls, in_file: Any, out_file: Any) -> "Connection":
        """Connects over two binary file objects (read from ``in_file``,
        write to ``out_file``); both are closed."""
        link = _native.AcrossLink.over_pipes(in_file.fileno(), out_file.fileno())
        in_file.close()
        out_file.close()
        return cls(None, _link=link)

    @classmethod
    def from_stdio(cls) -> "Connection":
        """Serves the process that started this one over stdin and stdout.
        From then on, what is written to stdout goes to stderr: a stray
        ``print`` cannot corrupt the channel."""
        import os

        sys.stdout.flush()
        link = _native.AcrossLink.over_pipes(0, 1)
        os.dup2(2, 1)
        return cls(None, _link=link)

    @classmethod
    def from_tcp(cls, host: str, port: int, *, key: Any = None, auth: bool = True) -> "Connection":
        """Connects to an across listener on ``host:port`` (see
        :mod:`farcall.across.servers`), proving the key first: ``key``, or
        the per-user key file (docs/security.md)."""
        return cls(None, _link=_native.AcrossLink.connect(f"tcp+native://{host}:{port}", key, auth))

    @classmethod
    def from_unix(cls, path: str, *, key: Any = None, auth: bool = True) -> "Connection":
        """Connects to an across listener on the Unix socket ``path``."""
        return cls(None, _link=_native.AcrossLink.connect(f"unix://{path}", key, auth))

    @classmethod
    def from_socket(cls, sock: Any, *, key: Any = None, auth: bool = True) -> "Connection":
        """Connects over a socket already connected to an across listener
        (the link takes a copy; ``sock`` is closed)."""
        try:
            name = "socket to %s" % (sock.getpeername(),)
        except OSError:
            name = "socket"
        link = _native.AcrossLink.over_socket(sock.fileno(), name, key, auth)
        sock.close()
        return cls(None, _link=link)

    # ---- calling ------------------------------------------------------

    def _request(self, op: str, request: Any) -> Any:
        if self._state != "running":
            raise DisconnectError(self._state_message())
        payload = _wire.dumps(self, request)
        try:
            ok, body = self._link.request(op, payload)
        except DisconnectError:
            if self._state == "closed":
                # across 0.1.0 fails the calls a close() cuts short with
                # this text (__init__.py:553, 593-594: the connection is
                # still stopping, not cancelled); a call after close()
                # gets "Connection is closed".
                raise DisconnectError("Connection was remotely closed") from None
            raise DisconnectError(self._state_message()) from None
        # A plain result (see _wire.PLAIN) comes as itself.
        result = _wire.loads(self, body) if type(body) is tuple else body
        if ok:
            return result
        raise _wire.unpack_exception(result)

    def _call(self, op: str, func: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        # A function or class goes by its pickled name when it has one
        # (see _wire.Names), under the op that says so.
        name = self._names[func] if type(func) in _wire.BY_NAME else None
        if name is None:
            return self._request(op, (func, args, kwargs))
        return self._request(_wire.BY_NAME_OPS[op], (name, args, kwargs))

    def call(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``func(*args, **kwargs)`` on the other side; the result by copy."""
        return self._call("call", func, args, kwargs)

    def create(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Proxy:
        """``func(*args, **kwargs)`` on the other side; the result by proxy."""
        return self._call("call_ref", func, args, kwargs)

    #: across 0.2's name for :meth:`create`.
    call_ref = create

    def replicate(self, obj: Any) -> Proxy:
        """Copies ``obj`` to the other side; a proxy to the copy."""
        return self._request("call_ref", (_wire.identity, (obj,), {}))

    def execute(self, source: str, /, **variables: Any) -> Any:
        """Runs ``source`` on the other side with ``variables`` as its
        globals; the value of its last expression, if it ends with one."""
        return self._request("call", (_wire.execute, (source, variables), {}))

    # ---- state --------------------------------------------------------

    def _state_message(self) -> str:
        if self._state == "closed":
            return "Connection is closed"
        if self._state == "cancelled":
            return "Connection was cancelled"
        if self._link.peer_closed():
            return "Connection was remotely closed"
        # across 0.1.0: "Connection was aborted due to {error}" (__init__.py:596).
        return f"Connection was aborted due to {self._link.error()}"

    def is_connected(self) -> bool:
        """True until the connection is closed, cancelled or lost."""
        return self._state == "running" and self._link.error() is None

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits until the other side closes (``timeout`` in seconds; None:
        no limit); True when it has."""
        return self._link.wait(timeout)

    def cancel(self) -> None:
        """Ends the connection at once, without a goodbye: pending calls on
        both sides fail; a child is killed."""
        if self._state == "running":
            self._state = "cancelled"
            self._link.close("Connection was cancelled", notify=False)
            self._stop_process(kill=True)

    def close(self) -> None:
        """Says goodbye and closes the connection (pending calls fail). If
        it had been lost (the peer vanished, the channel failed), raises
        why (the channel's own error, as across 0.1.0 re-raises it:
        __init__.py:509-519), once, as DisconnectError."""
        if self._state == "closed":
            return
        lost: Optional[DisconnectError] = None
        if self._state == "running" and self._link.error() is not None:
            if not self._link.peer_closed():
                lost = DisconnectError(self._link.error())
        self._state = "closed"
        self._link.close("Connection is closed")
        self._stop_process(kill=False)
        if lost is not None:
            raise lost

    def _stop_process(self, kill: bool) -> None:
        proc = self._process
        if proc is None:
            return
        if kill:
            proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> "Connection":
        if self._state == "closed":
            raise ValueError("Connection is closed")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<farcall.across.Connection {self._state}>"


_wire.install(Proxy, Local, _connection_of)


def serve_stdio() -> None:
    """Serves one connection over this process's stdin and stdout until
    the other side closes it (``python -m farcall.across``)."""
    try:
        conn = Connection.from_stdio()
    except DisconnectError:
        return  # the parent went away before the connection was up
    conn.wait()
