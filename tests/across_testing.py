"""What the across tests share: the command of a child that serves
`python -m farcall.across`, its environment (tests/ on its path, so it
imports the helper modules), and the fixtures that open such children."""

import operator
import os
import sys

import pytest

from farcall.across import Connection, DisconnectError

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [TESTS_DIR, env.get("PYTHONPATH")] if p)
    return env


def serve_command():
    return [sys.executable, "-m", "farcall.across"]


@pytest.fixture(scope="module")
def conn():
    """One child for the whole module."""
    c = Connection.from_command(serve_command(), env=child_env())
    yield c
    c.close()


@pytest.fixture
def fresh():
    """Opens children of a test's own (``fresh()``), serving when it
    returns, closed afterwards."""
    made = []

    def make():
        c = Connection.from_command(serve_command(), env=child_env())
        made.append(c)
        assert c.call(operator.add, 1, 2) == 3
        return c

    yield make
    for c in made:
        try:
            c.close()
        except DisconnectError:
            pass
