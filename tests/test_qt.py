"""QtRPCServer and ProcessSpawner(qt=True) with real Qt bindings, headless
(QT_QPA_PLATFORM=offscreen): requests run in the GUI thread from the event
loop, which keeps running while they arrive; a GUI thread calls a child that
calls back; closing the server quits the application."""

import json
import os
import subprocess
import sys
import time

import pytest

from farcall import ProcessSpawner
from farcall_testutil import TESTS_DIR, import_helpers, stop_quietly

BINDINGS = ["pyqt5", "pyqt6", "pyside6"]
ADDRESSES = ["unix://*", "tcp+native://127.0.0.1:*", "tcp://127.0.0.1:*"]


def qt_env(binding):
    env = dict(os.environ, QT_API=binding, QT_QPA_PLATFORM="offscreen")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [TESTS_DIR, env.get("PYTHONPATH")]))
    return env


@pytest.fixture(params=BINDINGS)
def binding(request, monkeypatch):
    """A Qt binding, the one children pick (QT_API)."""
    for name, value in qt_env(request.param).items():
        monkeypatch.setenv(name, value)
    return request.param


@pytest.mark.parametrize("address", ADDRESSES)
def test_gui_process_serves_threads_and_children_on_its_event_loop(binding, address):
    script = os.path.join(TESTS_DIR, "qt_gui_script.py")
    out = subprocess.run(
        [sys.executable, script, address],
        capture_output=True,
        text=True,
        timeout=120,
        env=qt_env(binding),
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["errors"] == [], (found, out.stderr)
    assert found["api"].lower() == binding
    # The child's call back into the GUI ran there (A -> B -> A).
    assert found["reentrant"] == "from child"
    assert found["label_after_child"] == "from child"
    # 500 calls from another thread, every one in the GUI thread.
    assert found["hammer_done"] is True
    assert found["thread_text"] == "async 199"
    assert found["threads"] == [True]
    # The loop ran its timer while the requests arrived (5 ms ticks).
    assert found["ticks_during_calls"] >= 5, found
    # close_server() from a client quit the application.
    assert found["running_after"] is False
    assert found["loop_seconds"] < 50


@pytest.mark.parametrize("address", [None, "tcp://127.0.0.1:*"])
def test_spawned_qt_child_runs_calls_in_the_gui_thread(binding, address):
    kwargs = {} if address is None else {"address": address}
    proc = ProcessSpawner(qt=True, **kwargs)
    try:
        helpers = import_helpers(proc.client)
        qt_helpers = proc.client._import("qt_helpers")
        assert qt_helpers.binding().lower() == binding
        assert qt_helpers.in_gui_thread() is True
        label = qt_helpers.make_label("hello")
        assert label.text() == "hello"
        label.setText("changed")
        assert label.text() == "changed"
        assert label.isVisible() is True
        # Events are processed between requests, and while they arrive.
        qt_helpers.start_ticker(5)
        time.sleep(0.3)
        idle = qt_helpers.ticks()
        assert idle >= 5, idle
        futures = [label.setText("n%d" % i, _sync="async") for i in range(200)]
        for f in futures:
            f.result(timeout=10)
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            label.text()
        assert qt_helpers.ticks() > idle
        assert label.text() == "n199"
        del helpers
    finally:
        stop_quietly(proc)
    # Closing the server quit the application: the child exits by itself.
    assert proc.wait(10) == 0


def test_qt_server_needs_an_application(binding):
    code = (
        "from farcall.qt import QtRPCServer\n"
        "try:\n"
        "    QtRPCServer('unix://*')\n"
        "except RuntimeError as e:\n"
        "    print('refused:', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=qt_env(binding)
    )
    assert out.returncode == 0, out.stderr
    assert "create the QApplication before a QtRPCServer" in out.stdout


def test_qt_timer_callback_runs_on_the_loop_and_failures_are_logged(binding):
    code = (
        "import logging, threading\n"
        "from farcall.qt import QApplication, QtCore, QtRPCServer, exec_app\n"
        "logging.basicConfig(level=logging.ERROR)\n"
        "app = QApplication([])\n"
        "server = QtRPCServer('unix://*')\n"
        "calls = []\n"
        "def cb():\n"
        "    calls.append(threading.current_thread() is threading.main_thread())\n"
        "    if len(calls) == 2:\n"
        "        raise ValueError('tick failed')\n"
        "    if len(calls) == 4:\n"
        "        server.close()\n"
        "server.start_timer(cb, 0.01)\n"
        "QtCore.QTimer.singleShot(20000, app.quit)\n"
        "exec_app(app)\n"
        "print(calls, server.running())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=qt_env(binding)
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[True, True, True, True] False"
    assert "timer callback" in out.stderr and "ValueError: tick failed" in out.stderr


def test_the_package_loads_qt_only_when_asked(binding):
    code = (
        "import sys, farcall\n"
        "assert not any(m.startswith(('PyQt', 'PySide')) for m in sys.modules)\n"
        "assert 'QtRPCServer' in dir(farcall)\n"
        "from farcall import QtRPCServer\n"
        "import farcall.qt\n"
        "assert QtRPCServer is farcall.qt.QtRPCServer\n"
        "assert issubclass(QtRPCServer, farcall.RPCServer)\n"
        "print(farcall.qt.API)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=qt_env(binding)
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().lower() == binding


def test_a_bad_qt_api_is_a_clear_import_error():
    env = dict(qt_env("pyqt5"), QT_API="tk")
    out = subprocess.run(
        [sys.executable, "-c", "import farcall.qt"], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 1
    assert "QT_API='tk' is not one of" in out.stderr
