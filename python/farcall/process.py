"""teleprox's ``start_process``: a child with a server, started the way
teleprox's signature says, on farcall's :class:`ProcessSpawner`.

    from farcall import start_process
    with start_process(name="camera", qt=True) as proc:
        widgets = proc.client._import("farcall.qt").QtWidgets

The object returned is the ProcessSpawner: ``client``, ``pid``, ``name``,
``qt``, ``stop()``, ``kill()``, ``wait()``, ``poll()``, a context manager;
a daemon's too (docs/spawning.md). The checks below turn combinations that
cannot work into errors before anything starts.
"""

from __future__ import annotations

import shlex
import sys
from typing import IO, Any, Dict, List, Optional, Union

from ._native import ProcessSpawner

__all__ = ["start_process"]

_Output = Union[int, IO[Any], None]


def _check(name: str, value: Any, types: tuple, what: str) -> None:
    if not isinstance(value, types):
        raise TypeError("%s must be %s; got %r" % (name, what, value))


def start_process(
    name: Optional[str] = None,
    address: Optional[Union[str, bytes]] = None,
    qt: bool = False,
    log_addr: Optional[Union[str, bytes]] = None,
    log_level: Union[int, str, None] = None,
    log_send_level: Union[int, str, None] = None,
    log_stdio: Optional[bool] = None,
    executable: Optional[str] = None,
    shell: bool = False,
    conda_env: Optional[str] = None,
    serializer: str = "msgpack",
    local_server: Any = None,
    daemon: bool = False,
    exit_on_parent_death: Optional[bool] = None,
    stdin: Any = None,
    stdout: _Output = None,
    stderr: _Output = None,
    start_timeout: float = 10.0,
) -> ProcessSpawner:
    """Starts a child Python process serving farcall and connects to it.

    teleprox's signature. ``address`` defaults to a native Unix socket (a
    ZeroMQ ``tcp://`` address speaks pyacq's wire protocol). With
    ``log_addr`` the child's records go to that log server, at
    ``log_level`` and above (sent from ``log_send_level``), and its stdout
    and stderr too unless ``log_stdio=False``. ``conda_env`` runs it with
    ``conda run -n ENV``; ``shell=True`` through ``/bin/sh``.
    ``local_server`` chooses who serves the objects sent to the child
    (``"lazy"``, ``"threaded"``, an RPCServer; see ``RPCClient``).
    ``daemon=True`` starts a process that outlives this one;
    ``exit_on_parent_death`` defaults to ``not daemon``. ``stdout`` and
    ``stderr`` take a file, a descriptor or ``subprocess.DEVNULL``.
    """
    _check("daemon", daemon, (bool,), "bool")
    _check("qt", qt, (bool,), "bool")
    _check("shell", shell, (bool,), "bool")
    _check("exit_on_parent_death", exit_on_parent_death, (bool, type(None)), "bool or None")
    _check("name", name, (str, type(None)), "str or None")
    _check("address", address, (str, bytes, type(None)), "str, bytes or None")
    _check("log_addr", log_addr, (str, bytes, type(None)), "str, bytes or None")
    _check("log_level", log_level, (int, str, type(None)), "int, str or None")
    _check("log_send_level", log_send_level, (int, str, type(None)), "int, str or None")
    _check("conda_env", conda_env, (str, type(None)), "str or None")
    if log_stdio not in (True, False, None):
        raise TypeError("log_stdio must be True, False or None; got %r" % (log_stdio,))
    if exit_on_parent_death is None:
        exit_on_parent_death = not daemon
    if daemon and exit_on_parent_death:
        raise ValueError("a daemon outlives its parent: exit_on_parent_death=True cannot apply")
    if stdin is not None:
        raise ValueError(
            "stdin: a child's stdin carries its configuration and lifeline (docs/spawning.md)"
        )
    if log_stdio and (stdout is not None or stderr is not None):
        raise ValueError("log_stdio forwards stdout and stderr: it cannot go with stdout/stderr")
    if daemon and log_stdio:
        raise ValueError("a daemon's stdio is /dev/null: log_stdio cannot apply")
    if daemon and (stdout is not None or stderr is not None):
        raise ValueError("a daemon's stdio is /dev/null: stdout/stderr cannot apply")
    if log_send_level is not None and log_addr is None and not daemon:
        from . import log

        if log.get_logger_address() is None:
            raise ValueError("log_send_level needs log_addr (or a log server in this process)")
    if serializer != "msgpack":
        raise ValueError(
            "start_process speaks msgpack (and farcall's own format on native links); "
            "for %r, open RPCClient(proc.address, serializer=%r) yourself" % (serializer, serializer)
        )

    python = executable if executable is not None else (sys.executable if conda_env is None else "python")
    command: Optional[List[str]] = None
    if conda_env is not None or shell:
        command = [python, "-m", "farcall.bootstrap"]
        if conda_env is not None:
            command = ["conda", "run", "--no-capture-output", "-n", conda_env] + command
        if shell:
            command = ["/bin/sh", "-c", "exec " + shlex.join(command)]
    extra: Dict[str, Any] = {}
    if log_stdio is None and (stdout is not None or stderr is not None):
        log_stdio = False  # the caller's files get them, as in teleprox
    if log_stdio is False:
        extra["log_stdio"] = False
    if log_send_level is not None:
        extra["log_send_level"] = log_send_level
    proc = ProcessSpawner(
        name=name,
        address=address,
        log_addr=log_addr,
        log_level=log_level,
        executable=python,
        qt=qt,
        start_timeout=start_timeout,
        daemon=daemon,
        exit_on_parent_death=exit_on_parent_death,
        command=command,
        stdout=stdout,
        stderr=stderr,
        extra=extra or None,
    )
    if local_server is not None:
        try:
            proc.client._set_local_server(local_server)
        except BaseException:
            proc.stop()
            raise
    return proc
