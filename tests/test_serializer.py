"""farcall.serializer: pyacq's msgpack and json formats byte for byte, and
tuples kept between farcall peers."""

import datetime
import json

import msgpack
import pytest

from farcall import RPCClient
from farcall.serializer import (
    FarcallSerializer,
    JsonSerializer,
    MsgpackSerializer,
    Serializer,
    all_serializers,
)
from farcall_test_helpers import Counter
from farcall_testutil import run_in_thread

PLAIN = [
    None,
    True,
    False,
    0,
    1,
    127,
    128,
    255,
    256,
    65535,
    65536,
    2**32,
    2**63 - 1,
    2**64 - 1,
    -1,
    -32,
    -33,
    -128,
    -129,
    -(2**31),
    -(2**63),
    0.0,
    1.5,
    -2.25,
    1e300,
    "",
    "abc",
    "x" * 31,
    "x" * 32,
    "x" * 300,
    "x" * 70000,
    "héllo 😀",
    [],
    [1, "a", None],
    list(range(20)),
    {},
    {"a": 1, "b": [1, 2], "c": {"d": None}},
    {str(i): i for i in range(20)},
]

BINARY = [b"", b"\x00\xff", b"x" * 300, b"y" * 70000]


def test_all_serializers():
    assert all_serializers["msgpack"] is MsgpackSerializer
    assert all_serializers["json"] is JsonSerializer
    assert all_serializers["farcall"] is FarcallSerializer
    for name, cls in all_serializers.items():
        assert issubclass(cls, Serializer)
        assert cls.type == name
        assert cls().type == name


@pytest.mark.parametrize("obj", PLAIN + BINARY, ids=repr)
def test_msgpack_matches_msgpack_python(obj):
    s = MsgpackSerializer()
    data = s.dumps(obj)
    assert isinstance(data, bytes)
    assert data == msgpack.packb(obj, use_bin_type=True)
    assert s.loads(data) == obj
    assert msgpack.unpackb(data, raw=False) == obj


@pytest.mark.parametrize("obj", PLAIN, ids=repr)
def test_json_matches_json_dumps(obj):
    s = JsonSerializer()
    data = s.dumps(obj)
    assert data == json.dumps(obj).encode()
    assert s.loads(data) == obj
    assert json.loads(data) == obj


@pytest.mark.parametrize("obj", PLAIN + BINARY, ids=repr)
def test_farcall_format_round_trips(obj):
    s = FarcallSerializer()
    assert s.loads_frames(s.dumps_frames(obj)) == obj
    if isinstance(obj, bytes) and len(obj) >= 65536:
        # Large buffers go out of band: several frames.
        assert len(s.dumps_frames(obj)) > 1
    else:
        assert s.loads(s.dumps(obj)) == obj


def test_msgpack_decodes_what_msgpack_python_writes():
    obj = {"k": [1, 2.5, "s", b"b", None, True]}
    assert MsgpackSerializer().loads(msgpack.packb(obj, use_bin_type=True)) == obj
    # float32 and other widths are accepted on input
    assert MsgpackSerializer().loads(msgpack.packb(1.5, use_single_float=True)) == 1.5


def test_json_bytes_tagged_map():
    data = JsonSerializer().dumps(b"\x00\x01")
    assert json.loads(data) == {"___type_name___": "bytes", "data": "AAE="}
    assert JsonSerializer().loads(data) == b"\x00\x01"


def test_datetime_and_date_tagged_maps():
    dt = datetime.datetime(2024, 1, 2, 3, 4, 5, 6)
    d = datetime.date(2024, 1, 2)
    m = msgpack.unpackb(MsgpackSerializer().dumps([dt, d]), raw=False)
    assert m == [
        {"___type_name___": "datetime", "data": "2024-01-02T03:04:05.000006"},
        {"___type_name___": "date", "data": "2024-01-02"},
    ]
    for s in (MsgpackSerializer(), JsonSerializer(), FarcallSerializer()):
        assert s.loads(s.dumps([dt, d])) == [dt, d]


def test_ndarray_tagged_map():
    np = pytest.importorskip("numpy")
    a = np.arange(6, dtype="<i2").reshape(2, 3)
    m = msgpack.unpackb(MsgpackSerializer().dumps(a), raw=False)
    assert m == {
        "___type_name___": "ndarray",
        "data": a.tobytes(),
        "dtype": "int16",
        "shape": [2, 3],
    }
    assert list(m)[0] == "___type_name___"
    back = MsgpackSerializer().loads(MsgpackSerializer().dumps(a))
    assert back.dtype == a.dtype and (back == a).all()


def test_tuples_become_lists_in_pyacq_formats():
    for s in (MsgpackSerializer(), JsonSerializer()):
        assert s.loads(s.dumps((1, (2, 3)))) == [1, [2, 3]]
        assert s.dumps((1, 2)) == s.dumps([1, 2])
    assert FarcallSerializer().loads(FarcallSerializer().dumps((1, (2, 3)))) == (1, (2, 3))


def test_json_refuses_non_string_keys_like_python():
    with pytest.raises(Exception):
        JsonSerializer().dumps({(1, 2): 3})
    with pytest.raises(TypeError):
        json.dumps({(1, 2): 3})
    assert JsonSerializer().dumps({1: 2}) == json.dumps({1: 2}).encode()


def test_loads_refuses_garbage():
    msgpack_bad = [b"", b"\xc1", b"\x92\x01", b"\x01\x02", b"\xdd\xff\xff\xff\xff"]
    json_bad = [b"", b"{", b"[1,", b"\xff", b"1 2", b'"\\ud800"']
    cases = [
        (MsgpackSerializer(), msgpack_bad),
        (FarcallSerializer(), msgpack_bad),
        (JsonSerializer(), json_bad),
    ]
    for s, bad_inputs in cases:
        for bad in bad_inputs:
            with pytest.raises((TypeError, ValueError)):
                s.loads(bad)


def test_tuples_stay_tuples_between_farcall_peers(child, helpers):
    assert child.client.serializer.type == "farcall"
    assert helpers.make_tuple() == (1, (2, 3), [4, (5,)])
    assert type(helpers.make_tuple()) is tuple
    assert helpers.type_name((1, 2)) == "tuple"
    assert helpers.echo((1, [2, (3,)])) == (1, [2, (3,)])
    assert type(helpers.echo({"k": (1,)})["k"]) is tuple


def test_tuples_become_lists_with_a_pyacq_serializer(make_thread_server):
    ts = make_thread_server()
    ts["make_tuple"] = lambda: (1, (2, 3))
    ts["type_name"] = lambda x: type(x).__name__
    ts["counter"] = Counter()
    for name in ("msgpack", "json"):

        def body():
            c = RPCClient(ts.address, serializer=name)
            assert c.serializer.type == name
            return c["make_tuple"](), c["type_name"]((1, 2)), c["counter"].add(1, 2)

        assert run_in_thread(body) == ([1, [2, 3]], "list", 3)


# ---- pyacq's constructor, and adding a type (issue 11, item 16) -----------------------


@pytest.mark.parametrize("cls", [Serializer, MsgpackSerializer, JsonSerializer, FarcallSerializer])
def test_serializers_take_pyacq_constructor_arguments(cls):
    marker = object()
    s = cls(client=marker)
    assert s.client is marker and s.server is None
    s = cls(None, marker)
    assert s.server is None and s.client is marker
    s = cls(server=marker, client=None)
    assert s.server is marker
    assert cls().client is None


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return type(other) is type(self) and (self.x, self.y) == (other.x, other.y)


class Point3(Point):
    pass


@pytest.fixture
def point_type():
    from farcall.serializer import add_type, remove_type

    add_type(Point, "point", encode=lambda p: [p.x, p.y], decode=lambda d: Point(*d))
    yield
    remove_type("point")


@pytest.mark.parametrize("name", ["msgpack", "json", "farcall"])
def test_an_added_type_round_trips(point_type, name):
    s = all_serializers[name]()
    value = {"p": Point(1, 2), "in": [Point(3.5, "a"), {"deep": Point(None, [4])}]}
    assert s.loads(s.dumps(value)) == value
    assert s.loads(s.dumps(Point(5, 6))) == Point(5, 6)
    # a subclass is written as its registered base
    assert s.loads(s.dumps(Point3(7, 8))) == Point(7, 8)
    # a stand-in may hold added types itself
    assert s.loads(s.dumps(Point(Point(1, 1), 2))) == Point(Point(1, 1), 2)
    if name == "farcall":
        frames = s.dumps_frames((Point(1, 2),))
        assert s.loads_frames(frames) == (Point(1, 2),)


def test_an_added_type_is_pyacq_tagged_map(point_type):
    tagged = {"___type_name___": "point", "data": [1, 2]}
    assert msgpack.unpackb(MsgpackSerializer().dumps(Point(1, 2))) == tagged
    assert json.loads(JsonSerializer().dumps(Point(1, 2))) == tagged
    # what a pyacq peer writes is read back as the type
    assert MsgpackSerializer().loads(msgpack.packb([tagged])) == [Point(1, 2)]
    assert JsonSerializer().loads(json.dumps(tagged).encode()) == Point(1, 2)


def test_without_the_type_its_map_stays_a_map():
    from farcall.serializer import add_type, remove_type

    add_type(Point, "point", encode=lambda p: [p.x, p.y], decode=lambda d: Point(*d))
    data = MsgpackSerializer().dumps(Point(1, 2))
    remove_type("point")
    assert MsgpackSerializer().loads(data) == {"___type_name___": "point", "data": [1, 2]}


def test_add_type_refuses_the_engines_tags_and_carried_types():
    from farcall.serializer import add_type

    for tag in ("ndarray", "datetime", "date", "proxy", "bytes", "none", "slice"):
        with pytest.raises(ValueError):
            add_type(Point, tag, encode=list, decode=list)
    with pytest.raises(ValueError):
        add_type(dict, "mydict", encode=list, decode=dict)
    with pytest.raises(TypeError):
        add_type(Point(1, 2), "point", encode=list, decode=list)


def test_pyacq_style_encode_and_decode_overrides():
    """pyacq's way: a subclass overrides encode/decode, calling the base."""

    class PointSerializer(MsgpackSerializer):
        def encode(self, obj):
            if isinstance(obj, Point):
                return {"___type_name___": "pt", "x": obj.x, "y": obj.y}
            return super().encode(obj)

        def decode(self, dct):
            if dct.get("___type_name___") == "pt":
                return Point(dct["x"], dct["y"])
            return super().decode(dct)

    s = PointSerializer(client=None)
    value = [Point(1, 2), {"k": (Point(3, 4),)}, datetime.date(2024, 1, 2), b"\x00"]
    assert s.loads(s.dumps(value)) == [Point(1, 2), {"k": [Point(3, 4)]}] + value[2:]
    # the plain serializer does not know the tag
    assert MsgpackSerializer().loads(s.dumps(Point(1, 2))) == {
        "___type_name___": "pt",
        "x": 1,
        "y": 2,
    }


def test_hooks_keep_the_engines_nesting_limit(point_type):
    a = []
    a.append(a)
    a.append(a)
    with pytest.raises(ValueError, match="nested deeper"):
        MsgpackSerializer().dumps([Point(1, 2), a])
