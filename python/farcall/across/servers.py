"""Serving across connections on a socket address (across's ``servers``).

Every connection proves it holds the key before anything is unpickled
(see docs/security.md); each one is served in this process, its requests
on farcall's pool (or in the thread waiting in their call chain)::

    from farcall.across import servers
    servers.run_tcp("127.0.0.1", 5000)      # until Ctrl-C

``farcall serve --across tcp+native://HOST:PORT`` does the same from the
command line.
"""

from __future__ import annotations

import threading
from typing import Any, List, Optional, Set

from .. import _native
from . import Connection

__all__ = ["Listener", "run_tcp", "run_unix"]


class Listener:
    """Accepts across connections on ``address`` (``unix://PATH``,
    ``tcp+native://HOST:PORT``; port ``*`` or 0 picks a free one)."""

    def __init__(self, address: str, *, key: Any = None, auth: bool = True) -> None:
        self._listener = _native.AcrossListener(address, key=key, auth=auth)
        self._lock = threading.Lock()
        self._connections: Set[Connection] = set()

    @property
    def address(self) -> str:
        """The address peers connect to."""
        return str(self._listener.address)

    def accept(self, timeout: Optional[float] = None) -> Optional[Connection]:
        """The next connection (None when ``timeout`` passes first)."""
        link = self._listener.accept(timeout)
        if link is None:
            return None
        conn = Connection(None, _link=link)
        with self._lock:
            self._connections = {c for c in self._connections if c.is_connected()}
            self._connections.add(conn)
        return conn

    def serve_forever(self) -> None:
        """Accepts and serves connections until closed (or Ctrl-C)."""
        try:
            while True:
                self.accept()
        except KeyboardInterrupt:
            pass
        except Exception:
            if not self._closed():
                raise

    def connections(self) -> List[Connection]:
        """The connections accepted and still up."""
        with self._lock:
            return [c for c in self._connections if c.is_connected()]

    def _closed(self) -> bool:
        return getattr(self, "_is_closed", False)

    def close(self) -> None:
        """Stops accepting; connections already made go on."""
        self._is_closed = True
        self._listener.close()

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def run_tcp(host: str, port: int, *, key: Any = None, auth: bool = True) -> None:
    """Serves across connections on ``host:port`` until Ctrl-C."""
    port_text = "*" if port == 0 else str(port)
    with Listener(f"tcp+native://{host}:{port_text}", key=key, auth=auth) as listener:
        listener.serve_forever()


def run_unix(path: str, *, key: Any = None, auth: bool = True) -> None:
    """Serves across connections on the Unix socket ``path`` until Ctrl-C."""
    with Listener(f"unix://{path}", key=key, auth=auth) as listener:
        listener.serve_forever()
