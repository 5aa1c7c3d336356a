"""Objects and functions the tests drive remotely.

The module is imported both in the test process (for in-process servers)
and in spawned children (the ``helpers`` fixture puts ``tests/`` on the
child's ``sys.path`` and imports it there).
"""

import functools
import os
import threading
import time


class Counter:
    """A plain object: travels by proxy."""

    def __init__(self, start=0):
        self.value = start

    def add(self, a, b):
        return a + b

    def incr(self, n=1):
        self.value += n
        return self.value

    def get(self):
        return self.value

    def sleep(self, seconds):
        time.sleep(seconds)
        return seconds

    def sleep_then_incr(self, seconds, n=1):
        time.sleep(seconds)
        self.value += n
        return self.value

    def fail(self, message="boom from remote"):
        raise ValueError(message)

    def kwargs(self, *args, **kwargs):
        return [list(args), kwargs]


@functools.total_ordering
class Number:
    """Arithmetic, reflected operators and comparisons."""

    def __init__(self, v):
        self.v = v

    def __add__(self, other):
        return self.v + other

    def __radd__(self, other):
        return other + self.v

    def __sub__(self, other):
        return self.v - other

    def __rsub__(self, other):
        return other - self.v

    def __mul__(self, other):
        return self.v * other

    def __rmul__(self, other):
        return other * self.v

    def __truediv__(self, other):
        return self.v / other

    def __rtruediv__(self, other):
        return other / self.v

    def __neg__(self):
        return -self.v

    def __eq__(self, other):
        return self.v == other

    def __lt__(self, other):
        return self.v < other

    def __hash__(self):
        return hash(self.v)


class Box:
    """An attribute holder with a nested object."""

    def __init__(self):
        self.x = 1
        self.inner = Counter(10)


def echo(x):
    return x


def type_name(x):
    return type(x).__name__


def type_names(*args, **kwargs):
    return [type(a).__name__ for a in args] + [type(kwargs[k]).__name__ for k in sorted(kwargs)]


def is_same(a, b):
    return a is b


def call(f, *args, **kwargs):
    """Calls ``f`` (typically a proxy to a third process) from here."""
    return f(*args, **kwargs)


def call_method(obj, name, *args, **kwargs):
    return getattr(obj, name)(*args, **kwargs)


def length(obj):
    return len(obj)


def make_tuple():
    return (1, (2, 3), [4, (5,)])


def getpid():
    return os.getpid()


def thread_ident():
    return threading.get_ident()


def describe_array(a):
    """What the receiving side sees of an array."""
    return {
        "type": type(a).__name__,
        "dtype": a.dtype.str,
        "shape": list(a.shape),
        "bytes": a.tobytes(order="C"),
        "writeable": bool(a.flags.writeable),
    }


def array_sum(a):
    return float(a.sum(dtype="float64"))


def make_array(spec):
    """Builds an array remotely from a description (dtype, shape, kind)."""
    import numpy as np

    return build_array(np, spec)


def build_array(np, spec):
    dtype, shape, layout = spec
    count = 1
    for n in shape:
        count *= n
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        extremes = [int(info.min), int(info.max), 0, 1, int(info.max) // 3, int(info.min) // 7]
        base = np.array((extremes * (count // len(extremes) + 1))[:count], dtype=dt)
    elif dt.kind == "f":
        base = (np.arange(count) * 1.25 - 3).astype(dt)
    elif dt.kind == "c":
        base = (np.arange(count) + 1j * np.arange(count)[::-1]).astype(dt)
    elif dt.kind == "b":
        base = (np.arange(count) % 3 == 0)
    elif dt.kind == "M":
        base = (np.datetime64("2024-01-02T03:04:05", "s") + np.arange(count)).astype(dt)
    elif dt.kind == "m":
        base = (np.arange(count) * 7).astype(dt)
    elif dt.kind == "U":
        base = np.array(["ab", "héllo", "", "xyz", "😀"] * (count // 5 + 1))[:count].astype(dt)
    elif dt.kind == "S":
        base = np.array([b"ab", b"\x00\xff", b"", b"xyz"] * (count // 4 + 1))[:count].astype(dt)
    else:
        raise ValueError(dtype)
    a = np.asarray(base, dtype=dt).reshape(shape)
    if layout == "F":
        a = np.asfortranarray(a)
    elif layout == "slice":
        big = np.concatenate([a, a], axis=-1) if a.ndim else a
        a = big[..., ::2] if a.ndim else big
    return a


def call_later(f, delay, *args):
    """Calls ``f(*args)`` from a thread of its own after ``delay`` seconds
    (outside any call chain); returns at once."""

    def run():
        time.sleep(delay)
        f(*args)

    threading.Thread(target=run, daemon=True).start()


class Bouncer:
    """A -> B -> A: calls ``other.bounce(me, other, n - 1)`` down to 0."""

    def bounce(self, other, me, n):
        if n == 0:
            return 0
        return other.bounce(me, other, n - 1) + 1


def register_fraction():
    """Adds fractions.Fraction to farcall.serializer's types in this process."""
    from fractions import Fraction

    from farcall.serializer import add_type

    add_type(Fraction, "fraction", lambda f: [f.numerator, f.denominator], lambda d: Fraction(*d))
    return True


def unregister_fraction():
    """Removes what register_fraction added."""
    from farcall.serializer import remove_type

    remove_type("fraction")
    return True


class Holder:
    """Keeps one object: ``get()`` returns it, ``set(v)`` replaces it."""

    def __init__(self, obj=None):
        self.obj = obj

    def get(self):
        return self.obj

    def set(self, obj):
        self.obj = obj


def unpickle_and_set(data, key, value):
    """Unpickles ``data`` here, sets ``obj[key] = value`` through it, and
    says what it unpickled as."""
    import pickle

    obj = pickle.loads(data)
    obj[key] = value
    return type(obj).__name__
