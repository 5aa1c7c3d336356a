"""The exceptions farcall raises.

``OperationError`` is a ``RuntimeError`` so that code written for pyacq,
which raised ``RuntimeError`` on disconnect, keeps working.
"""

from __future__ import annotations

import subprocess
from typing import Sequence, Union

__all__ = [
    "RemoteCallException",
    "OperationError",
    "DisconnectError",
    "ProtocolError",
    "ProcessTimeoutError",
]


class RemoteCallException(Exception):
    """The remote side raised an exception while running a call.

    ``type_str`` names the remote exception's type (``"ZeroDivisionError"``),
    ``tb_str`` is the remote traceback, shown in the message. The traceback
    may be given as one string (farcall's errors) or, as pyacq's server
    sends it, as a list of lines; ``tb_str`` is the joined string either
    way (``args`` keep what was given).
    """

    def __init__(self, type_str: str, tb_str: Union[str, Sequence[str]]) -> None:
        super().__init__(type_str, tb_str)
        self.type_str = type_str
        self.tb_str = tb_str if isinstance(tb_str, str) else "".join(tb_str)

    def __str__(self) -> str:
        return "Error occurred during remote call:\n" + self.tb_str.rstrip()


class OperationError(RuntimeError):
    """An operation on a connection or proxy failed."""


class DisconnectError(OperationError):
    """The peer is gone: closed, said goodbye, or its process died."""


class ProtocolError(OperationError):
    """The peer sent something that does not follow the protocol."""


class ProcessTimeoutError(subprocess.TimeoutExpired, TimeoutError):
    """Raised by ``ProcessSpawner.wait(timeout)`` when the child still runs.

    Both ``subprocess.TimeoutExpired`` (as ``Popen.wait`` raises, with
    ``cmd`` and ``timeout``) and the built-in ``TimeoutError``, so either
    ``except`` catches it.
    """

    def __init__(
        self,
        cmd: Union[str, Sequence[str]],
        timeout: float,
        output: Union[bytes, str, None] = None,
        stderr: Union[bytes, str, None] = None,
    ) -> None:
        subprocess.TimeoutExpired.__init__(self, cmd, timeout, output, stderr)
        # OSError leaves args to __init__, and TimeoutExpired sets none.
        self.args = (cmd, timeout)
