"""The exceptions farcall raises.

``OperationError`` is a ``RuntimeError`` so that code written for pyacq,
which raised ``RuntimeError`` on disconnect, keeps working.
"""

from __future__ import annotations

__all__ = [
    "RemoteCallException",
    "OperationError",
    "DisconnectError",
    "ProtocolError",
]


class RemoteCallException(Exception):
    """The remote side raised an exception while running a call.

    ``type_str`` names the remote exception's type (``"ZeroDivisionError"``),
    ``tb_str`` is the remote traceback, shown in the message.
    """

    def __init__(self, type_str: str, tb_str: str) -> None:
        super().__init__(type_str, tb_str)
        self.type_str = type_str
        self.tb_str = tb_str

    def __str__(self) -> str:
        return "Error occurred during remote call:\n" + self.tb_str.rstrip()


class OperationError(RuntimeError):
    """An operation on a connection or proxy failed."""


class DisconnectError(OperationError):
    """The peer is gone: closed, said goodbye, or its process died."""


class ProtocolError(OperationError):
    """The peer sent something that does not follow the protocol."""
