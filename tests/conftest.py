"""Shared fixtures: spawned children and in-process servers.

Every wait in these fixtures is bounded, and every child is stopped by a
finalizer (``stop()`` asks politely, then kills).
"""

import os
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

import farcall  # noqa: E402
import farcall_test_helpers  # noqa: E402,F401
from farcall import ProcessSpawner  # noqa: E402
from farcall_testutil import ThreadServer, import_helpers, stop_quietly  # noqa: E402


@pytest.fixture(scope="module")
def child():
    """A spawned child shared by a test module."""
    proc = ProcessSpawner(name="shared-child")
    yield proc
    stop_quietly(proc)


@pytest.fixture(scope="module")
def child2():
    """A second spawned child (for third-process proxies)."""
    proc = ProcessSpawner(name="second-child")
    yield proc
    stop_quietly(proc)


@pytest.fixture
def fresh_child():
    """A child for tests that kill, stop or close it."""
    procs = []

    def make(**kwargs):
        proc = ProcessSpawner(**kwargs)
        procs.append(proc)
        return proc

    yield make
    for proc in procs:
        stop_quietly(proc)


@pytest.fixture(scope="module")
def helpers(child):
    """farcall_test_helpers, imported in ``child``, by proxy."""
    return import_helpers(child.client)


@pytest.fixture(scope="module")
def helpers2(child2):
    return import_helpers(child2.client)


@pytest.fixture(scope="module")
def thread_server():
    """A native (unix://) server running in a thread of this process."""
    ts = ThreadServer("unix://*")
    yield ts
    ts.close()


@pytest.fixture
def make_thread_server():
    """Makes servers in threads, closed at the end of the test."""
    servers = []

    def make(address="unix://*"):
        ts = ThreadServer(address)
        servers.append(ts)
        return ts

    yield make
    for ts in servers:
        try:
            ts.close()
        except AssertionError:
            pass


