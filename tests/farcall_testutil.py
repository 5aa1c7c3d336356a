"""Test utilities shared by the test modules (not fixtures)."""

import os
import socket
import threading

from farcall import RPCServer

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


class ThreadServer:
    """An RPCServer serving from a daemon thread."""

    def __init__(self, address="unix://*", **kwargs):
        self.server = RPCServer(address, **kwargs)
        self.address = self.server.address
        self.ready = threading.Event()
        self.ident = None
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "server thread did not start"

    def _run(self):
        self.ident = threading.get_ident()
        self.ready.set()
        try:
            self.server.run_forever()
        except BaseException as e:  # pragma: no cover - reported by close()
            self.error = e

    def __getitem__(self, name):
        return self.server[name]

    def __setitem__(self, name, obj):
        self.server[name] = obj

    def close(self, timeout=10):
        self.server.close()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "run_forever did not return after close()"


def stop_quietly(proc):
    """Stops a ProcessSpawner child, killing it if stop() fails."""
    try:
        # Also for a child that is already gone: stop() reaps it and removes
        # its socket file, which a killed child cannot do itself.
        proc.stop()
    except Exception:
        try:
            proc.kill()
            proc.wait(5)
        except Exception:
            pass


def import_helpers(client):
    """Imports farcall_test_helpers in the process behind ``client``."""
    sys_ = client._import("sys")
    if TESTS_DIR not in sys_.path:
        sys_.path.insert(0, TESTS_DIR)
    return client._import("farcall_test_helpers")


def run_in_thread(fn, *args, timeout=30, **kwargs):
    """Runs ``fn`` in a new thread and returns its result (or raises its
    exception); bounded by ``timeout``."""
    box = {}

    def target():
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"{fn!r} still running after {timeout} s")
    if "error" in box:
        raise box["error"]
    return box["result"]


def wait_until(predicate, timeout=10.0, interval=0.02):
    """Polls ``predicate`` until it is true or ``timeout`` passes; returns
    its last value."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def pid_gone(pid):
    """True if ``pid`` no longer runs (absent, or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


class SocketChannel:
    """A user's channel object: recv/send/cancel/close over a socket."""

    def __init__(self, sock):
        self.sock = sock

    def recv(self, size):
        try:
            return self.sock.recv(size)
        except OSError:
            return b""

    def send(self, data):
        return self.sock.send(data)

    def cancel(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self):
        self.sock.close()
