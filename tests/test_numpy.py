"""numpy arrays and scalars by value, object arrays by proxy, large arrays."""

import resource

import numpy as np
import pytest

from farcall import ObjectProxy, RPCServer
from farcall_test_helpers import build_array
from farcall_testutil import import_helpers, run_in_thread

DTYPES = [
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
    "bool",
    "datetime64[ns]",
    "timedelta64[s]",
    "<U5",
    "S3",
    ">f8",
    ">i4",
]

SPECS = (
    [(dt, (), "C") for dt in DTYPES]
    + [(dt, (0,), "C") for dt in DTYPES]
    + [(dt, (0, 3), "C") for dt in ("float64", "<U5", "datetime64[ns]")]
    + [(dt, (7,), "C") for dt in DTYPES]
    + [(dt, (2, 3, 4), "C") for dt in DTYPES]
    + [(dt, (2, 3, 4), "F") for dt in DTYPES]
    + [(dt, (3, 5), "slice") for dt in DTYPES]
)


def spec_id(spec):
    dtype, shape, layout = spec
    return f"{dtype}-{'x'.join(map(str, shape)) or '0d'}-{layout}"


def local_array(spec):
    return build_array(np, spec)


def assert_same_array(got, expected):
    got_arr = np.asarray(got)
    assert got_arr.dtype == expected.dtype, (got_arr.dtype, expected.dtype)
    assert got_arr.dtype.str == expected.dtype.str
    assert got_arr.shape == expected.shape
    assert got_arr.tobytes() == expected.tobytes()
    assert np.array_equal(got_arr, expected)


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_array_to_the_child(child, helpers, spec):
    a = local_array(spec)
    if spec[2] == "F" and a.ndim > 1:
        assert not a.flags.c_contiguous
    if spec[2] == "slice":
        assert not a.flags.c_contiguous
    seen = helpers.describe_array(a)
    assert seen["dtype"] == a.dtype.str
    assert list(seen["shape"]) == list(a.shape)
    assert seen["bytes"] == a.tobytes(order="C")
    if a.ndim:
        assert seen["type"] == "ndarray"
        assert seen["writeable"] is True


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_array_from_the_child(child, helpers, spec):
    got = helpers.make_array(list(spec))
    expected = local_array(spec)
    assert_same_array(got, expected)
    if expected.ndim:
        assert isinstance(got, np.ndarray)
        assert got.flags.writeable
        if got.size:
            flat = got.reshape(-1)
            flat[0] = flat[-1]  # writable in place
            assert flat[0] == expected.reshape(-1)[-1]


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_array_round_trip(child, helpers, spec):
    a = local_array(spec)
    assert_same_array(helpers.echo(a), a)


@pytest.mark.parametrize("dtype", ["float64", "int32", "<U5", "datetime64[ns]", ">f8"])
def test_zero_d_array_stays_an_array(child, helpers, dtype):
    a = local_array((dtype, (), "C"))
    assert isinstance(a, np.ndarray) and a.ndim == 0
    back = helpers.echo(a)
    assert isinstance(back, np.ndarray), type(back)
    assert back.ndim == 0
    assert back.dtype == a.dtype
    assert helpers.type_name(a) == "ndarray"


SCALARS = [
    np.int8(-3),
    np.int16(-300),
    np.int32(-70000),
    np.int64(-(2**40)),
    np.uint8(250),
    np.uint16(65000),
    np.uint32(4000000000),
    np.uint64(2**64 - 1),
    np.float16(1.5),
    np.float32(2.25),
    np.float64(-3.125),
    np.complex64(1 + 2j),
    np.complex128(-1.5 + 0.25j),
    np.bool_(True),
    np.datetime64("2024-01-02T03:04:05.123456789", "ns"),
    np.timedelta64(5, "s"),
    np.str_("abc"),
    np.bytes_(b"xy"),
]


@pytest.mark.parametrize("scalar", SCALARS, ids=lambda s: type(s).__name__ + "-" + str(s))
def test_numpy_scalars_keep_their_type(child, helpers, scalar):
    back = helpers.echo(scalar)
    assert type(back) is type(scalar)
    assert back == scalar
    assert np.asarray(back).dtype == np.asarray(scalar).dtype
    assert helpers.type_name(scalar) == type(scalar).__name__


def test_numpy_scalars_made_remotely(child):
    nprem = child.client._import("numpy")
    f = nprem.float32(1.5)
    assert type(f) is np.float32 and f == 1.5
    i = nprem.uint16(7)
    assert type(i) is np.uint16 and i == 7
    b = nprem.bool_(False)
    assert type(b) is np.bool_ and not b


def test_arrays_inside_containers(child, helpers):
    a = np.arange(5, dtype="int16")
    b = np.ones((2, 2), dtype="complex64")
    out = helpers.echo([a, {"k": b}, (a, 1)])
    assert isinstance(out, list)
    assert_same_array(out[0], a)
    assert_same_array(out[1]["k"], b)
    assert isinstance(out[2], tuple)
    assert_same_array(out[2][0], a)


def test_object_arrays_go_by_proxy(child):
    nprem = child.client._import("numpy")
    p = nprem.array([1, "a", None], dtype="O")
    assert isinstance(p, ObjectProxy)
    assert p._type_str == "<class 'numpy.ndarray'>"
    assert len(p) == 3
    assert p[1] == "a"
    assert p[2] is None


def test_local_object_array_argument_goes_by_proxy(child):
    def body():
        srv = RPCServer("unix://*")
        srv.run_lazy()
        try:
            h = import_helpers(child.client)
            arr = np.array([1, "x", {"k": 2}], dtype=object)
            assert h.type_name(arr) == "ObjectProxy"
            assert h.length(arr) == 3  # the child calls back into this thread
            return True
        finally:
            srv.close()

    assert run_in_thread(body, timeout=60)


MIB64 = 64 * 1024 * 1024


def test_64_mib_array_both_ways(child, helpers):
    a = np.arange(MIB64 // 8, dtype=np.float64)
    a[::4097] = -1.0
    assert a.nbytes == MIB64
    assert helpers.array_sum(a) == float(a.sum())
    back = helpers.echo(a)
    assert isinstance(back, np.ndarray)
    assert back.dtype == a.dtype and back.shape == a.shape
    assert np.array_equal(back, a)
    assert back.flags.writeable
    back[0] = 42.0
    assert a[0] == -1.0  # a copy, not our memory
    nprem = child.client._import("numpy")
    made = nprem.arange(MIB64 // 8, dtype="float64")
    assert made.nbytes == MIB64
    assert np.array_equal(made, np.arange(MIB64 // 8, dtype=np.float64))


def test_large_array_non_contiguous(child, helpers):
    base = np.arange(4 * 1024 * 1024, dtype=np.int32).reshape(2048, 2048)
    view = base[::2, 1::3]
    assert not view.flags.c_contiguous
    assert_same_array(helpers.echo(view), np.ascontiguousarray(view))
    f = np.asfortranarray(base)
    assert_same_array(helpers.echo(f), base)


def test_large_bytes_both_ways(child, helpers):
    data = bytes(range(256)) * 8192  # 2 MiB
    back = helpers.echo(data)
    assert type(back) is bytes
    assert back == data


def test_large_array_over_zmq(fresh_child):
    proc = fresh_child(address="tcp://127.0.0.1:*")
    h = import_helpers(proc.client)
    a = np.random.default_rng(1).standard_normal(1024 * 1024)  # 8 MiB
    back = h.echo(a)
    assert np.array_equal(back, a)
    assert h.array_sum(a) == pytest.approx(float(a.sum()))


def test_received_memory_is_reused_only_once_free(child, helpers):
    # Large arrays are received into memory that earlier arrays gave back
    # (the engine's pool): an array still alive keeps its memory, a reused
    # buffer holds exactly the new array, and reusing it faults in no page.
    # 40 MiB of float64: above what glibc's malloc keeps for reuse itself
    # (32 MiB), so only the pool can save the page faults.
    n = 40 * 1024 * 1024 // 8
    first = helpers.echo(np.full(n, 1.0))
    second = helpers.echo(np.full(n, 2.0))
    assert first.__array_interface__["data"][0] != second.__array_interface__["data"][0]
    assert (first == 1.0).all() and (second == 2.0).all()
    first[0] = -1.0  # each is writable and its own
    assert second[0] == 2.0

    arg = np.arange(n, dtype=np.float64)
    del second  # its memory goes back to the pool
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    third = helpers.echo(arg)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    # Fresh memory for 40 MiB costs hundreds of faults here, even with
    # huge pages; reused memory none.
    assert faults < 10, f"{faults} page faults: the freed memory was not reused"
    assert np.array_equal(third, arg)
    assert first[0] == -1.0 and (first[1:] == 1.0).all()
