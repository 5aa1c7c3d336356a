"""The object every benchmark server hosts. Imports nothing heavy at module
level (numpy only when an array method is used), so that spawn-to-first-call
is not charged for numpy."""


class Adder:
    """``add(a, b)`` for round trips; array methods for the by-value tests."""

    def __init__(self):
        self.prepared = None

    def add(self, a, b):
        return a + b

    def take(self, arr):
        """Receives an array by value; returns its size and a checksum of a
        few elements, so the whole array must have arrived."""
        return [int(arr.nbytes), float(arr[0] + arr[-1] + arr[len(arr) // 2])]

    def prepare(self, nbytes):
        """Makes the float64 array that ``give`` returns."""
        import numpy

        self.prepared = numpy.arange(nbytes // 8, dtype=numpy.float64)
        return int(self.prepared.nbytes)

    def give(self):
        return self.prepared


def add(a, b):
    """The function ``conn.call(add, 1, 2)`` runs (the across benchmark)."""
    return a + b


def take(arr):
    """``Adder.take`` as a function: the size and a checksum of an array
    received by value."""
    return [int(arr.nbytes), float(arr[0] + arr[-1] + arr[len(arr) // 2])]


_PREPARED = {}


def prepare(nbytes):
    """Makes the float64 array ``give`` returns (not timed)."""
    import numpy

    _PREPARED["array"] = numpy.arange(nbytes // 8, dtype=numpy.float64)
    return nbytes


def give():
    """The array ``prepare`` made, by value."""
    return _PREPARED["array"]
