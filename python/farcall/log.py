"""Log records of many processes in one place (pyacq's ``pyacq.core.rpc.log``).

Records travel on their own ZeroMQ channel, never as RPC calls: a
:class:`LogSender` (a ``logging.Handler``) queues them and a Rust thread sends
them, so logging never blocks; a :class:`LogServer` receives them from any
number of processes and hands them to a Python logger as real
``logging.LogRecord`` objects carrying ``host_name``, ``process_name`` and
``thread_name``::

    import logging
    from farcall import ProcessSpawner
    from farcall.log import RPCLogHandler, start_log_server

    logger = logging.getLogger()
    logger.setLevel(logging.INFO)
    logger.addHandler(RPCLogHandler())      # time-sorted, coloured by source
    start_log_server(logger)
    child = ProcessSpawner(name="camera")   # its records, prints and crashes arrive here

The record format (json, pyacq's field names) is in docs/protocol.md; the
guide is docs/logging.md. :class:`AcrossHandler` instead hands records to
the other side of a ``farcall.across`` connection, as across's does
(docs/across.md).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import sys
import threading
import time

from . import _native

# Annotations only (postponed by the __future__ import): a spawned child
# imports this module, and typing costs milliseconds to import.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType
    from typing import IO, Any, Dict, List, Optional, Tuple, Type, Union

__all__ = [
    "DEFAULT_ADDRESS",
    "AcrossHandler",
    "LogSender",
    "LogServer",
    "RPCLogHandler",
    "get_host_name",
    "get_logger_address",
    "get_process_name",
    "get_thread_name",
    "log_exceptions",
    "set_host_name",
    "set_logger_address",
    "set_process_name",
    "set_thread_name",
    "start_log_server",
]

#: Where a log server binds when given no address: loopback, a free port.
DEFAULT_ADDRESS = "tcp://127.0.0.1:*"

# ---- names ------------------------------------------------------------------


def set_host_name(name: str) -> None:
    """Sets the name of this host used in log records (default: the host name)."""
    _native._log_set_host_name(name)


def get_host_name() -> str:
    """Returns the name of this host used in log records."""
    return _native._log_get_host_name()


def set_process_name(name: str) -> None:
    """Sets the name of this process used in log records (default ``process-<pid>``)."""
    _native._log_set_process_name(name)


def get_process_name() -> str:
    """Returns the name of this process used in log records."""
    return _native._log_get_process_name()


def set_thread_name(name: str, tid: Optional[int] = None) -> None:
    """Sets the name of thread ``tid`` (default: this thread) used in log records."""
    _native._log_set_thread_name(name, threading.get_ident() if tid is None else tid)


def get_thread_name(tid: Optional[int] = None) -> str:
    """Returns the name of thread ``tid`` (default: this thread) used in log records.

    A name set with :func:`set_thread_name`, else the ``threading`` name of a
    live thread, else ``thread-<tid in hex>`` (as in pyacq).
    """
    if tid is None:
        tid = threading.get_ident()
    name = _native._log_get_thread_name(tid)
    if name is not None:
        return name
    for thread in threading.enumerate():
        if thread.ident == tid:
            return thread.name
    return "thread-%x" % tid


# ---- sending ----------------------------------------------------------------

_guard = threading.local()
_exc_formatter = logging.Formatter()


class LogSender(logging.Handler):
    """A logging handler that forwards records to a :class:`LogServer`.

    ``emit`` formats the message and queues the record; a Rust thread encodes
    and sends it. It never blocks: when ``capacity`` records are waiting (a
    slow or vanished server) new ones are dropped and counted in
    :attr:`dropped`. A record logged while the sender itself is at work (by a
    ``__str__`` that logs, say) is not sent again. ``logger`` (a logger or a
    name; ``''`` is the root) attaches the handler, as in pyacq.
    """

    def __init__(
        self,
        address: Optional[Union[str, bytes]] = None,
        logger: Optional[Union[str, logging.Logger]] = None,
        capacity: int = 10000,
    ) -> None:
        super().__init__()
        self._native: Optional[_native._LogSender] = None
        self._capacity = capacity
        # The sender set_logger_address keeps on the root logger.
        self._process_wide = False
        if address is not None:
            self.connect(address)
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        if logger is not None:
            logger.addHandler(self)

    def connect(self, address: Union[str, bytes]) -> None:
        """Sends to the log server at ``address`` from now on."""
        self._use(_native._LogSender(address, self._capacity))

    def _use(self, native: _native._LogSender) -> None:
        old, self._native = self._native, native
        if old is not None and old is not native:
            old.close(0.0)

    @property
    def address(self) -> Optional[str]:
        """The log server's address, or None before :meth:`connect`."""
        return None if self._native is None else self._native.address

    @property
    def sent(self) -> int:
        """Records handed to the transport so far."""
        return 0 if self._native is None else self._native.sent

    @property
    def dropped(self) -> int:
        """Records dropped so far because the queue was full or the sender closed."""
        return 0 if self._native is None else self._native.dropped

    def handle(self, record: logging.LogRecord) -> Any:
        """Filters and queues the record (no handler lock: the queue is thread-safe)."""
        return _handle_unlocked(self, record)

    def emit(self, record: logging.LogRecord) -> None:
        """Queues one record for sending; never blocks."""
        native = self._native
        if native is None or getattr(_guard, "active", False):
            return
        # A record our own process's server received from this very
        # address would loop forever.
        if getattr(record, "_farcall_received_by", None) == native.address:
            return
        _guard.active = True
        try:
            msg = record.getMessage()
            if record.exc_info and not record.exc_text:
                record.exc_text = _exc_formatter.formatException(record.exc_info)
            native.send(record, msg, record.exc_text)
        except Exception:
            self.handleError(record)
        finally:
            _guard.active = False

    def flush(self, timeout: float = 1.0) -> bool:  # type: ignore[override]
        """Waits at most ``timeout`` seconds until queued records are sent."""
        return True if self._native is None else self._native.flush(timeout)

    def close(self, timeout: float = 1.0) -> None:  # type: ignore[override]
        """Sends what is queued (for at most ``timeout`` seconds) and stops."""
        if self._native is not None and not self._native.closed:
            self._native.close(timeout)
        super().close()


# ---- receiving --------------------------------------------------------------


class LogServer(threading.Thread):
    """A thread that receives log records from any number of processes.

    Binds a ZeroMQ PULL socket at ``address`` (default: loopback, a free
    port; :attr:`address` says which) when created; :meth:`start` begins
    handing each record to ``logger`` as a ``logging.LogRecord`` (records
    below the logger's effective level are skipped). Senders are
    :class:`LogSender`, pyacq's LogSender, or Rust's ``farcall::log``.
    ``sort`` is accepted for pyacq's signature; sorting by time is
    :class:`RPCLogHandler`'s job.
    """

    def __init__(
        self,
        logger: Union[str, logging.Logger],
        address: Optional[Union[str, bytes]] = None,
        sort: bool = True,
    ) -> None:
        super().__init__(daemon=True, name="farcall-log-server")
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        self.logger = logger
        self._receiver = _native._LogReceiver(address)
        #: The address senders connect to.
        self.address: str = self._receiver.address
        #: Records received so far.
        self.received = 0
        self._closing = threading.Event()

    @property
    def rejected(self) -> int:
        """Messages that were not log records, dropped so far."""
        return self._receiver.rejected

    def run(self) -> None:
        """Receives records and hands them to the logger until closed."""
        make = logging.makeLogRecord
        receiver, logger, address = self._receiver, self.logger, self.address
        while not self._closing.is_set():
            for attrs in receiver.recv(0.1, 1000):
                self.received += 1
                record = make(attrs)
                if not logger.isEnabledFor(record.levelno):
                    continue
                record._farcall_received_by = address  # type: ignore[attr-defined]
                try:
                    logger.handle(record)
                except Exception:
                    pass  # handlers report their own errors; a filter's must not stop us
        receiver.close()

    def close(self, timeout: float = 1.0) -> None:
        """Stops receiving (waiting at most ``timeout`` seconds) and unbinds."""
        self._closing.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
        elif not self.is_alive():
            self._receiver.close()

    def __enter__(self) -> "LogServer":
        if not self.is_alive():
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handle_unlocked(handler: logging.Handler, record: logging.LogRecord) -> Any:
    """``Handler.handle`` without the handler's lock: filters, then emits
    (the record a filter returns, if it returns one)."""
    rv = handler.filter(record)
    if isinstance(rv, logging.LogRecord):
        record = rv
    if rv:
        handler.emit(record)
    return rv


# ---- over an across connection ----------------------------------------------

# Set in a thread while an AcrossHandler there sends a record, and while
# _handle hands a record that came across to its logger: records logged
# then (by the transport, or by the logger's own AcrossHandler on the
# receiving side) are not forwarded again.
_across_guard = threading.local()


class AcrossHandler(logging.Handler):
    """A logging handler that hands records to the logger of the same name
    on the other side of an across connection (``farcall.across``).

    ``conn`` defaults to the connection of the remote call this thread is
    running (``farcall.across.get_connection()``, which raises outside a
    call). The message and the traceback are formatted here (the
    formatter's ``formatException``, else the default one), so arguments
    and tracebacks need not be picklable; the other attributes travel as
    they are. Each record is sent by a synchronous call, so a record logged
    while serving a call arrives before that call's result. Once the
    connection is gone, records are dropped silently.

    Records do not go around in circles: a record logged while this
    thread forwards one, or while it hands a forwarded record to its
    logger, is not forwarded, so handlers on both sides on the same logger
    send each record across once. Works the same on either side of the
    connection, as across's ``across.logging.AcrossHandler``.
    """

    def __init__(self, conn: Any = None) -> None:
        super().__init__()
        if conn is None:
            from .across import get_connection

            conn = get_connection()
        self._conn = conn

    @property
    def connection(self) -> Any:
        """The connection records go to."""
        return self._conn

    def handle(self, record: logging.LogRecord) -> Any:
        """Filters and sends the record, without the handler's lock: a lock
        held during the call would deadlock two sides forwarding at once."""
        if getattr(_across_guard, "active", False):
            return False
        return _handle_unlocked(self, record)

    def emit(self, record: logging.LogRecord) -> None:
        """Sends the record and waits until the other side has handled it."""
        if getattr(_across_guard, "active", False):
            return
        from .errors import DisconnectError

        _across_guard.active = True
        try:
            if record.exc_info and not record.exc_text:
                formatter = self.formatter or _exc_formatter
                record.exc_text = formatter.formatException(record.exc_info)
            attrs = record.__dict__.copy()
            # Formatter.format leaves `message` and `asctime` behind.
            message = attrs.pop("message", None)
            if message is None:
                message = record.getMessage()
            attrs.pop("asctime", None)
            attrs["msg"] = message
            attrs["args"] = ()
            attrs["exc_info"] = None
            self._conn.call(_handle, attrs)
        except DisconnectError:
            pass
        except Exception:
            self.handleError(record)
        finally:
            _across_guard.active = False

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return "<%s %r (%s)>" % (type(self).__name__, self._conn, level)


def _handle(attrs: Dict[str, Any]) -> None:
    """Runs on the receiving side: the record to its logger, unforwarded."""
    record = logging.makeLogRecord(attrs)
    saved = getattr(_across_guard, "active", False)
    _across_guard.active = True
    try:
        logging.getLogger(record.name).handle(record)
    finally:
        _across_guard.active = saved


# ---- the process-wide server and sender -------------------------------------
# The engine keeps both (farcall::log): children spawned here learn of them
# from it, and the engine's own records go to the same sender.


def start_log_server(
    logger: Union[str, logging.Logger], address: Optional[Union[str, bytes]] = None
) -> LogServer:
    """Starts this process's log server, handing records to ``logger``.

    :func:`get_logger_address` then returns its address, and processes spawned
    afterwards send their records to it, at ``logger``'s effective level.
    Raises RuntimeError if one is running.
    """
    server = LogServer(logger, address)
    server._receiver.serve_process(server.logger)
    server.start()
    return server


def set_logger_address(address: Union[str, bytes]) -> LogSender:
    """Forwards this process's records to the log server at ``address``.

    Attaches a :class:`LogSender` to the root logger (one per process; a new
    address reconnects it); the engine's own records go there too.
    """
    native = _native._log_set_logger_address(address)
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, LogSender) and handler._process_wide:
            handler._use(native)
            return handler
    sender = LogSender(logger=root)
    sender._process_wide = True
    sender._use(native)
    return sender


def get_logger_address() -> Optional[str]:
    """The address of this process's log server, else of the server set with
    :func:`set_logger_address`, else None."""
    return _native._log_logger_address()


# ---- unhandled exceptions -----------------------------------------------------

_hooks: Dict[str, Any] = {}


def log_exceptions(
    logger: Optional[logging.Logger] = None,
    log_level: int = logging.ERROR,
    call_orig_hook: bool = False,
) -> None:
    """Makes unhandled exceptions, in the main thread and in other threads,
    log records of ``logger`` (default: the root logger) at ``log_level``.

    ``call_orig_hook`` also runs the hooks that were installed before (which
    print the traceback to stderr). Calling it again replaces the settings.
    """
    target = logger if logger is not None else logging.getLogger()

    def excepthook(
        exc_type: Type[BaseException],
        exc: BaseException,
        tb: Optional[TracebackType],
    ) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            _hooks["sys"](exc_type, exc, tb)
            return
        target.log(
            log_level,
            "Unhandled exception: %s",
            exc_type.__name__,
            exc_info=(exc_type, exc, tb),
        )
        if call_orig_hook:
            _hooks["sys"](exc_type, exc, tb)

    def thread_excepthook(args: Any) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        target.log(
            log_level,
            "Unhandled exception in thread %s: %s",
            name,
            args.exc_type.__name__,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )
        if call_orig_hook:
            _hooks["threading"](args)

    if "sys" not in _hooks:
        _hooks["sys"] = sys.excepthook
        _hooks["threading"] = threading.excepthook
    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook


# ---- the terminal handler ---------------------------------------------------

class RPCLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler for records from many processes.

    Holds each record ``delay`` seconds and writes them in order of creation
    time, so records of different processes interleave as they happened.
    Lines read ``12:00:01.250 [process:thread] LEVEL logger: message`` (the
    host too when it is not this one); the source is coloured per process and
    the rest per level. ``color=None`` colours only when the stream is a
    terminal (and ``NO_COLOR`` is unset). The formatter formats the part after
    the source (default ``%(levelname)s %(name)s: %(message)s``).
    """

    def __init__(
        self,
        stream: Optional[IO[str]] = None,
        delay: float = 0.3,
        color: Optional[bool] = None,
    ) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self.delay = delay
        self.color = color
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self._pending: List[Tuple[float, int, float, logging.LogRecord]] = []
        self._order = itertools.count()
        self._ready = threading.Condition(threading.Lock())
        self._style = _native._LineStyle()
        self._closed = False
        self._writer = threading.Thread(
            target=self._write_when_due, daemon=True, name="farcall-log-sorter"
        )
        self._writer.start()

    def _use_color(self) -> bool:
        if self.color is not None:
            return self.color
        if os.environ.get("NO_COLOR"):
            return False
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def emit(self, record: logging.LogRecord) -> None:
        """Queues the record; it is written ``delay`` seconds after it arrived."""
        if self.delay <= 0 or self._closed:
            self._write(record)
            return
        with self._ready:
            due = time.monotonic() + self.delay
            heapq.heappush(self._pending, (record.created, next(self._order), due, record))
            self._ready.notify()

    def _write(self, record: logging.LogRecord) -> None:
        # Not StreamHandler.emit: it calls self.flush(), which writes
        # everything held.
        try:
            text = self.format(record) + self.terminator
            with self.lock:  # type: ignore[union-attr]
                self.stream.write(text)
                self.stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _write_when_due(self) -> None:
        while True:
            with self._ready:
                due: List[logging.LogRecord] = []
                now = time.monotonic()
                while self._pending and self._pending[0][2] <= now:
                    due.append(heapq.heappop(self._pending)[3])
                if not due:
                    if self._closed:
                        return
                    wait = self._pending[0][2] - now if self._pending else None
                    self._ready.wait(wait)
                    continue
            for record in due:
                self._write(record)

    def flush(self) -> None:
        """Writes every record held now, in order, then flushes the stream."""
        with self._ready:
            pending = [heapq.heappop(self._pending)[3] for _ in range(len(self._pending))]
        for record in pending:
            self._write(record)
        super().flush()

    def close(self) -> None:
        """Writes what is held and stops the sorting thread."""
        self.flush()
        with self._ready:
            self._closed = True
            self._ready.notify()
        super().close()

    def source(self, record: logging.LogRecord) -> str:
        """``[host:process:thread]`` of a record (host only when not this one)."""
        return self._style.source(record)

    def format(self, record: logging.LogRecord) -> str:
        """The record as printed: time, source, then the formatter's text."""
        return self._style.line(record, super().format(record), self._use_color())


# ---- a spawned child --------------------------------------------------------

_crash_file: Optional[IO[str]] = None


def _start_child_logging(
    log_addr: str,
    levelno: int,
    saved_stderr: Optional[int],
    send_level: Union[int, str, None] = None,
) -> None:
    """The Python part of a spawned child's set-up (farcall.bootstrap calls
    it once the engine forwards the child's own records and fds 1 and 2 to
    ``log_addr`` at ``levelno``): Python's records, unhandled exceptions,
    line-buffered ``print()``, and fatal-crash dumps (faulthandler) on the
    original stderr, ``saved_stderr``. ``send_level`` (teleprox's
    ``log_send_level``) is the lowest level sent, default ``levelno``."""
    global _crash_file
    logging.getLogger().setLevel(levelno)
    sender = set_logger_address(log_addr)
    if send_level is not None:
        sender.setLevel(send_level.upper() if isinstance(send_level, str) else send_level)
    log_exceptions()
    # A pipe makes Python's stdout block-buffered; keep print() line by line.
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(line_buffering=True)
    if saved_stderr is not None:
        import faulthandler

        _crash_file = os.fdopen(saved_stderr, "w", closefd=False)
        faulthandler.enable(file=_crash_file)


def _flush_std_streams() -> None:
    """Writes what Python holds for fds 1 and 2."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


def _finish_child_logging(timeout: float = 1.0) -> None:
    """Sends what the child wrote and logged last (at most ``timeout`` seconds)."""
    _flush_std_streams()
    _native._log_shutdown(timeout)
