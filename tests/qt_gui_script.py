"""A GUI process for tests/test_qt.py: a QApplication in the main thread with
a QtRPCServer; requests from a client thread and from a child arrive while
the event loop runs. Prints one JSON line of findings; every wait is bounded
(a watchdog quits the loop)."""

import json
import sys
import threading
import time

from farcall import ProcessSpawner, RPCClient
from farcall.qt import API, QApplication, QtCore, QtRPCServer, QtWidgets, exec_app

address = sys.argv[1]
app = QApplication([])
server = QtRPCServer(address)
label = QtWidgets.QLabel("start")
label.show()
found = {"api": API, "errors": []}


class Gui:
    """What clients call: always in the GUI thread."""

    def __init__(self):
        self.threads = set()

    def set_text(self, text):
        self.threads.add(threading.current_thread() is threading.main_thread())
        label.setText(text)

    def text(self):
        return label.text()


gui = Gui()
server["gui"] = gui
ticks = [0]
ticker = QtCore.QTimer()
ticker.timeout.connect(lambda: ticks.__setitem__(0, ticks[0] + 1))
ticker.start(5)


def hammer():
    # A client in another thread: 300 sync calls and 200 async ones.
    try:
        client = RPCClient(server.address)
        remote = client["gui"]
        t0 = ticks[0]
        for i in range(300):
            remote.set_text("thread %d" % i)
        futures = [remote.set_text("async %d" % i, _sync="async") for i in range(200)]
        for f in futures:
            f.result(timeout=10)
        found["thread_text"] = remote.text()
        found["ticks_during_calls"] = ticks[0] - t0
        found["hammer_done"] = True
    except Exception as e:  # reported in the findings
        found["errors"].append("hammer: %r" % (e,))


def from_gui():
    # In the GUI thread, from the event loop: call a child that calls back.
    try:
        child = ProcessSpawner()
        helpers = child.client._import("qt_helpers")
        found["reentrant"] = helpers.call_back(gui, "from child")
        found["label_after_child"] = label.text()
        child.stop()
        thread = threading.Thread(target=hammer)
        thread.start()
        # The loop must keep running while the thread's requests arrive.
        deadline = time.monotonic() + 30

        def wait_for_thread():
            if thread.is_alive() and time.monotonic() < deadline:
                QtCore.QTimer.singleShot(10, wait_for_thread)
                return
            found["threads"] = sorted(gui.threads)
            # A client closes the server: quit_on_close ends exec().
            RPCClient(server.address).close_server()

        wait_for_thread()
    except Exception as e:
        found["errors"].append("from_gui: %r" % (e,))
        app.quit()


QtCore.QTimer.singleShot(0, from_gui)
QtCore.QTimer.singleShot(60000, app.quit)  # watchdog
t0 = time.monotonic()
exec_app(app)
found["loop_seconds"] = time.monotonic() - t0
found["running_after"] = server.running()
print(json.dumps(found))
