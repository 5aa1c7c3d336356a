"""Serializers: pyacq's ``msgpack`` and ``json`` formats and farcall's own.

Encoding and decoding run in the engine (Rust); these classes give them
pyacq's interface::

    from farcall.serializer import all_serializers
    data = all_serializers['msgpack']().dumps({'x': [1, 2]})

Types that travel by copy: None, bool, int, float, str, bytes, list, tuple,
dict, datetime.datetime, datetime.date, numpy arrays and scalars, and
ObjectProxy. Anything else travels by proxy. To add a type, give the object
a conversion to a carried type before sending (a ``__reduce__``-free
``to_wire()`` method, a dict, a numpy array), or publish it and send the
proxy. To add a serializer, subclass :class:`Serializer` and put the class
in ``all_serializers``; the RPC wire itself carries the engine's formats
only (``msgpack``, ``json``, ``farcall``), which every farcall and pyacq
peer understands.
"""

from typing import Any, Dict, List, Type

from . import _native

__all__ = [
    "Serializer",
    "MsgpackSerializer",
    "JsonSerializer",
    "FarcallSerializer",
    "all_serializers",
]


class Serializer:
    """Base class: ``dumps(obj) -> bytes`` and ``loads(data) -> obj``."""

    #: The name on the wire (a request's ``ser_type`` frame).
    type: str = ""

    def dumps(self, obj: Any) -> bytes:
        """Encodes ``obj``."""
        frames = _native.encode(self.type, obj)
        if len(frames) != 1:
            raise ValueError(f"the {self.type} format sends this value as several frames")
        return frames[0]

    def loads(self, data: bytes) -> Any:
        """Decodes ``data``."""
        return _native.decode(self.type, data)


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
        return _native.encode(self.type, obj)

    def loads_frames(self, frames: List[bytes]) -> Any:
        """Decodes a body followed by its out-of-band buffers."""
        return _native.decode(self.type, frames[0], list(frames[1:]))


#: Serializer classes by wire name.
all_serializers: Dict[str, Type[Serializer]] = {
    "msgpack": MsgpackSerializer,
    "json": JsonSerializer,
    "farcall": FarcallSerializer,
}
