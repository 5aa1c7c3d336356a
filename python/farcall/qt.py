"""Serving requests on a Qt event loop (pyacq's and teleprox's ``QtRPCServer``).

A :class:`QtRPCServer` runs every request in the thread that created it,
from that thread's Qt event loop: a ``QSocketNotifier`` on the server's
pollable descriptor (``RPCServer.fileno()``) wakes the loop when requests
arrive, so there is no polling timer, the GUI stays responsive between
requests, and a remote call may create and change widgets::

    from farcall.qt import QApplication, QtRPCServer
    app = QApplication([])
    server = QtRPCServer("tcp+native://127.0.0.1:*")
    server["app"] = app
    server.run_forever()        # returns at once; requests run in app.exec()
    app.exec()

``ProcessSpawner(qt=True)`` starts a child that runs a QApplication with a
QtRPCServer. The binding is the one already imported, else the one
``QT_API`` names (qtpy's variable: ``pyqt6``, ``pyside6``, ``pyqt5``,
``pyside2``), else the first of PyQt6, PySide6, PyQt5, PySide2 that
imports. See docs/qt.md.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from types import ModuleType
from typing import Any, Callable, List, Optional, Union

from ._native import RPCServer

__all__ = ["API", "QApplication", "QtCore", "QtRPCServer", "QtWidgets", "exec_app"]

_BINDINGS = ("PyQt6", "PySide6", "PyQt5", "PySide2")
_QT_API = {"pyqt6": "PyQt6", "pyside6": "PySide6", "pyqt5": "PyQt5", "pyside2": "PySide2"}


def _find_binding() -> str:
    """The name of the Qt binding to use (see the module's docstring)."""
    for name in _BINDINGS:
        if name + ".QtCore" in sys.modules:
            return name
    wanted = os.environ.get("QT_API", "").lower()
    if wanted:
        if wanted not in _QT_API:
            raise ImportError("QT_API=%r is not one of %s" % (wanted, ", ".join(_QT_API)))
        return _QT_API[wanted]
    for name in _BINDINGS:
        try:
            importlib.import_module(name + ".QtCore")
        except ImportError:
            continue
        return name
    raise ImportError(
        "farcall.qt needs a Qt binding: pip install PyQt6 (or PySide6, PyQt5, PySide2)"
    )


#: The Qt binding in use: ``"PyQt6"``, ``"PySide6"``, ``"PyQt5"`` or ``"PySide2"``.
API: str = _find_binding()
#: The binding's QtCore module.
QtCore: ModuleType = importlib.import_module(API + ".QtCore")
#: The binding's QtWidgets module.
QtWidgets: ModuleType = importlib.import_module(API + ".QtWidgets")
#: The binding's QApplication class.
QApplication: Any = QtWidgets.QApplication

# Qt 6 scopes its enums; Qt 5 bindings have them on the class too.
_READ = getattr(QtCore.QSocketNotifier, "Read", None)
if _READ is None:
    _READ = QtCore.QSocketNotifier.Type.Read


def exec_app(app: Any) -> int:
    """Runs ``app``'s event loop until it quits (``exec`` or ``exec_``)."""
    run = getattr(app, "exec", None) or app.exec_
    return int(run() or 0)


_log = logging.getLogger("farcall.server")


class QtRPCServer(RPCServer):
    """An :class:`RPCServer` whose requests run on the Qt event loop of the
    thread that creates it (a QApplication must exist by then).

    :meth:`run_forever` returns at once, as pyacq's does: requests run
    whenever that thread's event loop runs (``app.exec()``, a modal dialog,
    ``processEvents``). A sync call made from that thread serves incoming
    requests while it waits, so the GUI may call a child that calls back.
    With ``quit_on_close`` (the default) closing the server, locally or by
    a client's ``close_server()``, quits the application. Other arguments
    are :class:`RPCServer`'s.
    """

    def __new__(
        cls,
        address: Optional[Union[str, bytes]] = None,
        quit_on_close: bool = True,
        **kwargs: Any,
    ) -> "QtRPCServer":
        return super().__new__(cls, address, **kwargs)  # type: ignore[return-value]

    def __init__(
        self,
        address: Optional[Union[str, bytes]] = None,
        quit_on_close: bool = True,
        **kwargs: Any,
    ) -> None:
        app = QtCore.QCoreApplication.instance()
        if app is None:
            self.close()
            raise RuntimeError("create the QApplication before a QtRPCServer")
        self.quit_on_close = quit_on_close
        self._app = app
        self._timers: List[Any] = []
        # Requests run in this thread: registered like run_lazy, and woken
        # by the descriptor, not a timer.
        self.run_lazy()
        self._notifier = QtCore.QSocketNotifier(self.fileno(), _READ)
        self._notifier.activated.connect(self._serve)

    def run_forever(self) -> None:
        """Returns at once: requests run on this thread's Qt event loop."""

    def _serve(self, *_: Any) -> None:
        try:
            self.serve_ready()
        except Exception:
            _log.exception("QtRPCServer at %s failed to serve", self.address)
        if not self.running():
            self._stopped()

    def _stopped(self) -> None:
        self._notifier.setEnabled(False)
        for timer in self._timers:
            timer.stop()
        if self.quit_on_close:
            self._app.quit()

    def close(self) -> None:
        """Closes the server (every client is told) and, with
        ``quit_on_close``, quits the application."""
        super().close()
        if getattr(self, "_notifier", None) is not None:
            self._stopped()

    def start_timer(self, callback: Callable[[], Any], interval: float) -> None:
        """Calls ``callback()`` every ``interval`` seconds on the event loop
        (a QTimer); an exception is logged and the timer keeps running."""

        def tick() -> None:
            try:
                callback()
            except Exception:
                _log.exception(
                    "timer callback %r failed; the timer keeps running", callback
                )

        timer = QtCore.QTimer()
        timer.timeout.connect(tick)
        timer.start(max(1, int(interval * 1000)))
        self._timers.append(timer)

    def __repr__(self) -> str:
        return "<QtRPCServer at %s>" % self.address
