"""Helpers imported in a process that runs a QtRPCServer (tests/test_qt.py)."""

import threading

from farcall.qt import QtCore, QtWidgets

_state = {"ticks": 0, "timers": []}


def in_gui_thread():
    """True when called in the thread that runs the Qt event loop."""
    app = QtWidgets.QApplication.instance()
    return threading.current_thread() is threading.main_thread() and (
        app is not None and QtCore.QThread.currentThread() is app.thread()
    )


def make_label(text):
    """A shown QLabel (stays remote: a QWidget travels by proxy)."""
    assert in_gui_thread()
    label = QtWidgets.QLabel(text)
    label.show()
    _state.setdefault("widgets", []).append(label)
    return label


def start_ticker(interval_ms=5):
    """Counts the ticks of a QTimer: they only come while the loop runs."""
    timer = QtCore.QTimer()
    timer.timeout.connect(_tick)
    timer.start(interval_ms)
    _state["timers"].append(timer)


def _tick():
    _state["ticks"] += 1


def ticks():
    """Ticks counted so far."""
    return _state["ticks"]


def call_back(gui, text):
    """Calls back into the process that called us (A -> B -> A)."""
    gui.set_text(text)
    return gui.text()


def binding():
    """The Qt binding farcall.qt chose here."""
    from farcall import qt

    return qt.API
