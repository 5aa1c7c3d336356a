"""Serializers: pyacq's ``msgpack`` and ``json`` formats and farcall's own.

Encoding and decoding run in the engine (Rust); these classes give them
pyacq's interface::

    from farcall.serializer import all_serializers
    data = all_serializers['msgpack']().dumps({'x': [1, 2]})

Types that travel by copy: None, bool, int, float, str, bytes, list, tuple,
dict, datetime.datetime, datetime.date, numpy arrays and scalars, and
ObjectProxy. Anything else travels by proxy in a call.

**Adding a type**: register it once in every process
that reads or writes it (in a module both import)::

    from fractions import Fraction
    from farcall.serializer import add_type

    add_type(Fraction, "fraction",
             encode=lambda f: [f.numerator, f.denominator],
             decode=lambda d: Fraction(*d))

``dumps`` then writes a ``Fraction`` as pyacq's tagged map
``{"___type_name___": "fraction", "data": [3, 4]}`` (``encode`` returns
any value the format carries) and ``loads`` turns that map back into a
``Fraction``. Instances of subclasses use their nearest registered base.
pyacq's own way works too: subclass a serializer and override
:meth:`Serializer.encode` (called for each object the format does not carry
natively; return a stand-in, or the object itself to leave it to the
engine) and :meth:`Serializer.decode` (called for each decoded dict,
innermost first), calling the base method for the rest.

The types of :func:`add_type` apply to the arguments and results of calls
too (the binding asks this module, once imported, about objects the wire
does not carry); the overridable methods apply to ``dumps``/``loads`` (and
``dumps_frames``/``loads_frames``) only.

**Adding a serializer**: subclass :class:`Serializer`, set ``type`` and
override ``dumps``/``loads``, and put the class in ``all_serializers``.
The RPC wire itself carries the engine's formats only (``msgpack``,
``json``, ``farcall``), which every farcall and pyacq peer understands.
"""

from typing import Any, Callable, Dict, List, Optional, Tuple, Type

from . import _native

__all__ = [
    "Serializer",
    "MsgpackSerializer",
    "JsonSerializer",
    "FarcallSerializer",
    "all_serializers",
    "encode_key",
    "add_type",
    "remove_type",
]

#: The key that names a tagged map's type (pyacq's ``encode_key``).
encode_key = "___type_name___"

# Tags the engine reads itself; an added type cannot take them.
_ENGINE_TAGS = frozenset({"ndarray", "datetime", "date", "proxy", "bytes", "none", "slice"})

# The nesting the engine refuses to send past (MAX_DEPTH in convert.rs).
_MAX_DEPTH = 256

# Exact types the walk leaves alone: the engine carries them as they are.
_PLAIN = frozenset({type(None), bool, int, float, str, bytes})

# Added types: by name, and by class.
_by_name: Dict[str, Tuple[type, Callable[[Any], Any]]] = {}
_by_class: Dict[type, Tuple[str, Callable[[Any], Any]]] = {}


def add_type(
    cls: type,
    name: str,
    encode: Callable[[Any], Any],
    decode: Callable[[Any], Any],
) -> None:
    """Makes ``dumps`` write instances of ``cls`` as the map
    ``{"___type_name___": name, "data": encode(obj)}`` and ``loads`` read
    that map back as ``decode(data)``.

    ``encode`` returns any value the format carries (it may contain other
    added types). Adding a name or class again replaces it; the engine's own
    tags (``ndarray``, ``datetime``, ``date``, ``proxy``, ``bytes``,
    ``none``, ``slice``) are refused with ValueError.
    """
    if not isinstance(cls, type):
        raise TypeError(f"add_type needs a class, not {cls!r}")
    if not isinstance(name, str) or not name:
        raise TypeError("a type's name is a non-empty str")
    if name in _ENGINE_TAGS:
        raise ValueError(f"{name!r} is a tag the engine reads itself")
    if cls in _PLAIN or cls in (list, tuple, dict):
        raise ValueError(f"{cls.__name__} already travels as itself")
    remove_type(name)
    old = _by_class.get(cls)
    if old is not None:
        _by_name.pop(old[0], None)
    _by_name[name] = (cls, decode)
    _by_class[cls] = (name, encode)


def remove_type(name: str) -> None:
    """Forgets the type added under ``name`` (nothing if there is none)."""
    entry = _by_name.pop(name, None)
    if entry is not None:
        _by_class.pop(entry[0], None)


def _wire_encoding(obj: Any) -> Optional[Tuple[str, Any]]:
    """``(name, encode(obj))`` for an object of an added type, else None:
    the binding asks for objects the wire does not carry, so that calls
    send added types as the tagged map too."""
    if not _by_class:
        return None
    for cls in type(obj).__mro__:
        entry = _by_class.get(cls)
        if entry is not None:
            name, encode = entry
            return name, encode(obj)
    return None


def _wire_decoder(name: str) -> Optional[Callable[[Any], Any]]:
    """The decode function of the type added as ``name``, else None."""
    entry = _by_name.get(name)
    return None if entry is None else entry[1]


class Serializer:
    """Base class: ``dumps(obj) -> bytes`` and ``loads(data) -> obj``.

    ``server`` and ``client`` are pyacq's constructor arguments, kept as
    attributes; the engine finds the thread's server itself when an object
    must travel by proxy.
    """

    #: The name on the wire (a request's ``ser_type`` frame).
    type: str = ""

    def __init__(self, server: Optional[Any] = None, client: Optional[Any] = None) -> None:
        self.server = server
        self.client = client

    def dumps(self, obj: Any) -> bytes:
        """Encodes ``obj``."""
        frames = _native.encode(self.type, self._before_dumps(obj))
        if len(frames) != 1:
            raise ValueError(f"the {self.type} format sends this value as several frames")
        return frames[0]

    def loads(self, data: bytes) -> Any:
        """Decodes ``data``."""
        return self._after_loads(_native.decode(self.type, data))

    def encode(self, obj: Any) -> Any:
        """A stand-in the format carries for ``obj``, or ``obj`` itself.

        Called by ``dumps`` for each object that is not None, bool, int,
        float, str, bytes or an exact list, tuple or dict (the stand-in is
        looked at again). Returning ``obj`` leaves it to the engine (arrays,
        datetimes, proxies). The default writes the types of
        :func:`add_type` as tagged maps.
        """
        found = _wire_encoding(obj)
        if found is None:
            return obj
        name, data = found
        return {encode_key: name, "data": data}

    def decode(self, dct: Dict[Any, Any]) -> Any:
        """The object a decoded dict stands for, or the dict itself.

        Called by ``loads`` for each dict, innermost first. The default
        reads the tagged maps of :func:`add_type`'s types.
        """
        name = dct.get(encode_key)
        if isinstance(name, str) and len(dct) == 2 and "data" in dct:
            decode = _wire_decoder(name)
            if decode is not None:
                return decode(dct["data"])
        return dct

    # ---- the walks (only when a hook has something to do) ----------------

    def _before_dumps(self, obj: Any) -> Any:
        if _by_class or type(self).encode is not Serializer.encode:
            return self._encode_tree(obj, 0)
        return obj

    def _after_loads(self, obj: Any) -> Any:
        if _by_name or type(self).decode is not Serializer.decode:
            return self._decode_tree(obj)
        return obj

    def _encode_tree(self, obj: Any, depth: int) -> Any:
        t = type(obj)
        if t in _PLAIN:
            return obj
        if depth > _MAX_DEPTH:
            raise ValueError(
                f"cannot send a value nested deeper than {_MAX_DEPTH} levels "
                "(or containing itself)"
            )
        if t is list:
            return [self._encode_tree(x, depth + 1) for x in obj]
        if t is tuple:
            return tuple(self._encode_tree(x, depth + 1) for x in obj)
        if t is dict:
            return {k: self._encode_tree(v, depth + 1) for k, v in obj.items()}
        new = self.encode(obj)
        if new is obj:
            return obj
        return self._encode_tree(new, depth + 1)

    def _decode_tree(self, obj: Any) -> Any:
        t = type(obj)
        if t is list:
            for i, x in enumerate(obj):
                obj[i] = self._decode_tree(x)
            return obj
        if t is tuple:
            return tuple(self._decode_tree(x) for x in obj)
        if t is dict:
            for k, v in obj.items():
                obj[k] = self._decode_tree(v)
            return self.decode(obj)
        return obj


class MsgpackSerializer(Serializer):
    """pyacq's msgpack format, byte for byte (tuples become lists)."""

    type = "msgpack"


class JsonSerializer(Serializer):
    """pyacq's json format, byte for byte (bytes and arrays in base64)."""

    type = "json"


class FarcallSerializer(Serializer):
    """farcall's own msgpack dialect: tuples kept, large buffers out of band."""

    type = "farcall"

    def dumps_frames(self, obj: Any) -> List[bytes]:
        """Encodes ``obj`` as a body followed by its out-of-band buffers."""
        return _native.encode(self.type, self._before_dumps(obj))

    def loads_frames(self, frames: List[bytes]) -> Any:
        """Decodes a body followed by its out-of-band buffers."""
        return self._after_loads(_native.decode(self.type, frames[0], list(frames[1:])))


#: Serializer classes by wire name.
all_serializers: Dict[str, Type[Serializer]] = {
    "msgpack": MsgpackSerializer,
    "json": JsonSerializer,
    "farcall": FarcallSerializer,
}
