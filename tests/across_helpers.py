"""Functions both sides of the across tests import (the child finds this
module through PYTHONPATH): pickled by reference, run on either side."""

import os
import threading
import time

from farcall.across import Local, get_connection

BARRIER = threading.Barrier(4, timeout=10)


class Thing:
    """An object with public and private methods and the container ones."""

    def __init__(self):
        self.items = [1, 2, 3]

    def pub(self):
        return 42

    def _priv(self):
        return "private"

    def me(self):
        return self

    def __len__(self):
        return len(self.items)

    def __contains__(self, x):
        return x in self.items

    def __getitem__(self, i):
        return self.items[i]

    def __setitem__(self, i, v):
        self.items[i] = v

    def __delitem__(self, i):
        del self.items[i]

    def __call__(self, *args):
        return ("called", args)

    def __iter__(self):
        return iter(self.items)


def append_to(target, value):
    """Appends to ``target`` (a proxy of the caller's list)."""
    target.append(value)
    return len(target)


def make_local_thing():
    """Returns a Thing by proxy."""
    return Local(Thing())


def boom():
    try:
        1 / 0
    except ZeroDivisionError as e:
        raise ValueError("outer") from e


def unpicklable_result():
    return threading.Lock()


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def wait_at_barrier():
    BARRIER.wait()
    return threading.current_thread().name


def where():
    return (os.getpid(), threading.current_thread().name)


def bounce(n):
    """Calls the other side's ``bounce(n - 1)``: the chain of
    (pid, thread) it went through."""
    here = [where()]
    if n == 0:
        return here
    return here + get_connection().call(bounce, n - 1)


def is_same(a, b):
    return a is b


def identity(x):
    return x


def sum_array(a):
    return float(a.sum()), a.shape, a.flags.writeable


def make_array(n):
    import numpy

    return numpy.arange(n, dtype=numpy.float64)


def fill(a, value):
    """Fills ``a`` in place (a proxy's array: it changes on its side)."""
    a.fill(value)


def connection_is(conn_proxy_home):
    return get_connection() is not None
