"""What an across request carries, and how the serving side runs it.

A payload is ``(pickle, buffers, refs)``: the pickle (protocol 5), its
out-of-band buffers (numpy arrays and other ``PickleBuffer`` data, sent as
frames of their own and received in place), and the objects it refers to
by proxy (``Local`` objects of the sender, proxies going home). Inside the
pickle such an object is a reference to its slot in ``refs``. The engine
(``farcall._native.AcrossLink``) moves payloads; this module pickles them
and, on the serving side, runs what they ask.
"""

from __future__ import annotations

import os
import pickle
import socket
import sys
import threading
import traceback
import types
from typing import Any, Callable, List, Optional, Sequence, Tuple

from .. import _native
from ..errors import OperationError

# Methods a proxy forwards besides the public ones (across's list).
SAFE_DUNDERS = frozenset(
    (
        "__call__",
        "__contains__",
        "__delitem__",
        "__getitem__",
        "__iter__",
        "__len__",
        "__next__",
        "__setitem__",
    )
)

Payload = Tuple[Any, List[Any], List[Tuple[Any, Tuple[str, ...]]]]


class _Context(threading.local):
    """What the thread is pickling for, or unpickling from."""

    def __init__(self) -> None:
        self.out: Optional[Tuple[Any, list]] = None  # (connection, refs)
        self.incoming: Optional[Sequence[Any]] = None
        self.call: List[Any] = []  # connections of the calls being run


CONTEXT = _Context()


class _Facade:
    """The names of ``farcall.across`` this module needs (that module is
    built over this one and hands them over when imported, see
    :func:`install`): looked up here instead of imported on every call."""

    proxy: Any = None
    local: Any = None
    connection_of: Any = None


_FACADE = _Facade()


def install(proxy: Any, local: Any, connection_of: Callable[[int], Any]) -> None:
    """Called by ``farcall.across``: its Proxy and Local classes, and how
    to find the connection of a link."""
    _FACADE.proxy = proxy
    _FACADE.local = local
    _FACADE.connection_of = connection_of


def methods_of(obj: Any) -> Tuple[str, ...]:
    """The methods a proxy to ``obj`` forwards."""
    cls = type(obj)
    names = []
    for name in dir(cls):
        if name.startswith("_") and name not in SAFE_DUNDERS:
            continue
        try:
            attr = getattr(cls, name)
        except AttributeError:
            continue
        if callable(attr):
            names.append(name)
    return tuple(names)


def export(obj: Any, methods: Tuple[str, ...]) -> Any:
    """Pickles as a reference to ``obj`` in the payload being built."""
    out = CONTEXT.out
    if out is None:
        raise RuntimeError("only a farcall.across connection can pickle this object")
    refs = out[1]
    refs.append((obj, methods))
    return (_ref_at, (len(refs) - 1,))


def connection_pickling() -> Any:
    """The connection the thread pickles for, if any."""
    out = CONTEXT.out
    return None if out is None else out[0]


def _ref_at(index: int) -> Any:
    incoming = CONTEXT.incoming
    if incoming is None:
        raise pickle.UnpicklingError("a farcall.across reference outside a connection")
    return incoming[index]


def dumps(conn: Any, obj: Any) -> Payload:
    """``obj`` as a payload for ``conn``."""
    buffers: List[Any] = []
    refs: list = []
    context = CONTEXT
    saved = context.out
    context.out = (conn, refs)
    try:
        data = pickle.dumps(obj, 5, buffer_callback=buffers.append)
    except Exception as e:
        raise OperationError(f"Pickling failed due to {_describe(e)}") from e
    finally:
        context.out = saved
    return data, buffers, refs


def loads(conn: Any, payload: Payload) -> Any:
    """The object a payload from ``conn`` carries."""
    data, buffers, refs = payload
    if refs:
        make = _FACADE.proxy._make
        incoming: Any = [
            make(conn, target, methods) if isinstance(target, _native.AcrossRef) else target
            for target, methods in refs
        ]
    else:
        incoming = ()
    context = CONTEXT
    saved = context.incoming
    context.incoming = incoming
    try:
        return pickle.loads(data, buffers=buffers) if buffers else pickle.loads(data)
    except Exception as e:
        raise OperationError(f"Unpickling failed due to {_describe(e)}") from e
    finally:
        context.incoming = saved


def _describe(e: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(e), e)).strip()


# ---- the serving side ------------------------------------------------------


# Results of these exact types travel as themselves, not pickled (the
# engine carries them as values; an int only within 64 bits): the same
# object arrives, and the commonest round trips save a pickle and an
# unpickle.
PLAIN = frozenset((type(None), bool, int, float, str))
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


# What travels by name alone: a function, a builtin or a class is pickled
# as "module, qualified name" and imported there on every unpickling,
# which is half the cost of pickling and unpickling a call. A connection
# pickles the name once (`Names`) and sends it as bytes; the other side
# unpickles each name once and keeps what it found (`Connection._named`).
BY_NAME = frozenset((types.FunctionType, types.BuiltinFunctionType, type))
_NAMES_KEPT = 1024  # per connection, each way
# The requests that name their function, by the request they stand for.
BY_NAME_OPS = {"call": "call_named", "call_ref": "call_ref_named"}
_NAMED = {named: op for op, named in BY_NAME_OPS.items()}


class Names(dict):  # type: ignore[type-arg]
    """The pickles of the names of the functions and classes a connection
    calls: ``names[func]`` is the pickle, or None for one that does not
    pickle by name (a lambda, a local function: sent as before)."""

    def __missing__(self, func: Any) -> Optional[bytes]:
        try:
            name: Optional[bytes] = pickle.dumps(func, 5)
        except Exception:
            name = None
        if len(self) >= _NAMES_KEPT:
            self.clear()
        self[func] = name
        return name


def named(conn: Any, name: bytes) -> Any:
    """The function or class whose pickled name is ``name``, as the other
    side of ``conn`` sent it (unpickled once per connection)."""
    known = conn._named
    func = known.get(name)
    if func is None:
        try:
            func = pickle.loads(name)
        except Exception as e:
            raise OperationError(f"Unpickling failed due to {_describe(e)}") from e
        if len(known) >= _NAMES_KEPT:
            known.clear()
        known[name] = func
    return func


class _Self:
    """Marks a method result that is the proxied object itself."""

    def __reduce__(self) -> str:
        return "SELF"


SELF = _Self()


def identity(obj: Any) -> Any:
    """Returns its argument (replicate, deepcopy)."""
    return obj


def execute(source: str, variables: dict) -> Any:
    """Runs ``source`` with ``variables`` as its globals; the value of its
    last expression, if it ends with one."""
    import ast

    tree = ast.parse(source, "<execute>", "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        tail = tree.body.pop()
        assert isinstance(tail, ast.Expr)
        last = ast.Expression(tail.value)
    scope = dict(variables)
    exec(compile(tree, "<execute>", "exec"), scope)
    if last is not None:
        return eval(compile(last, "<execute>", "eval"), scope)
    return None


def serve(link_id: int, op: str, payload: Payload) -> Tuple[bool, Any]:
    """Runs request ``op`` that came over link ``link_id``: ``(True, result)``
    or ``(False, packed exception)``, as payloads (a plain result as
    itself). Every outcome goes back, as across does."""
    conn = _FACADE.connection_of(link_id)
    calls = CONTEXT.call
    calls.append(conn)
    try:
        try:
            request = loads(conn, payload)
            if op in _NAMED:
                name, args, kwargs = request
                request = (named(conn, name), args, kwargs)
                op = _NAMED[op]
        except BaseException as e:
            return False, _dump_error(conn, e)
        try:
            if op == "call":
                func, args, kwargs = request
                result = func(*args, **kwargs)
            elif op == "call_ref":
                func, args, kwargs = request
                result = func(*args, **kwargs)
                if not isinstance(result, _FACADE.local):
                    result = _FACADE.local(result)
            elif op == "method":
                target, name, args, kwargs = request
                result = getattr(target, name)(*args, **kwargs)
                if result is target:
                    result = SELF
                elif name == "__iter__" and not isinstance(result, _FACADE.local):
                    result = _FACADE.local(result)
            else:
                return False, _dump_error(conn, OperationError(f"unknown across request {op!r}"))
        except OperationError as error:
            # As across 0.1.0 (__init__.py:752-758): the caller must not
            # mistake it for a failure of its own connection.
            try:
                raise RuntimeError(
                    "Cannot raise {} between processes".format(error.__class__.__name__)
                ) from error
            except RuntimeError as wrapped:
                return False, _dump_error(conn, wrapped)
        except BaseException as e:
            return False, _dump_error(conn, e)
        if type(result) in PLAIN and (type(result) is not int or _I64_MIN <= result <= _I64_MAX):
            return True, result  # as itself, not pickled (see PLAIN)
        try:
            return True, dumps(conn, result)
        except OperationError as e:
            return False, _dump_error(conn, e)
    finally:
        calls.pop()


def _dump_error(conn: Any, e: BaseException) -> Payload:
    packed = pack_exception(e)
    try:
        return dumps(conn, packed)
    except OperationError as failure:
        try:
            return dumps(conn, pack_exception(failure))
        except OperationError:
            return dumps(conn, ("text", _describe(e)))


# ---- exceptions across processes -------------------------------------------

_HOST = socket.gethostname()


def pack_exception(e: BaseException, seen: Optional[dict] = None) -> Any:
    """An exception as a picklable tree: the exception (its traceback,
    cause and context removed), where it was raised, then its cause and
    context packed the same way."""
    seen = {} if seen is None else seen
    if id(e) in seen:
        return ("seen", seen[id(e)])
    seen[id(e)] = len(seen)
    frames = [(f.filename, f.lineno, f.name) for f in traceback.extract_tb(e.__traceback__)]
    cause = e.__cause__
    context = e.__context__
    bare = _bare(e)
    return (
        "exception",
        bare,
        (_HOST, os.getpid(), frames),
        e.__suppress_context__,
        None if cause is None else pack_exception(cause, seen),
        None if context is None else pack_exception(context, seen),
    )


def _bare(e: BaseException) -> BaseException:
    """A copy of ``e`` without traceback, cause or context (pickled
    separately), or ``e`` when it cannot be copied."""
    try:
        bare = pickle.loads(pickle.dumps(e, protocol=5))
    except Exception:
        return e
    bare.__traceback__ = None
    bare.__cause__ = None
    bare.__context__ = None
    return bare


def unpack_exception(packed: Any, built: Optional[list] = None) -> BaseException:
    """The exception ``pack_exception`` packed, with its cause, context and
    the remote frames as its traceback."""
    built = [] if built is None else built
    kind = packed[0]
    if kind == "text":
        return OperationError(packed[1])
    if kind == "seen":
        return built[packed[1]]
    _, exc, (host, pid, frames), suppress, cause, context = packed
    built.append(exc)
    if cause is not None:
        exc.__cause__ = unpack_exception(cause, built)
    if context is not None:
        exc.__context__ = unpack_exception(context, built)
    exc.__suppress_context__ = suppress
    tb = remote_traceback(exc, host, pid, frames)
    if tb is not None:
        exc.__traceback__ = tb
    return exc


def remote_traceback(
    exc: BaseException, host: str, pid: int, frames: List[Tuple[str, int, str]]
) -> Optional[types.TracebackType]:
    """A traceback whose frames are the remote ones: each runs a line of
    code compiled under the remote file name, line and function name, so
    ``traceback`` shows them (with their source, when the file is here),
    under a first frame that names the remote process."""
    # across 0.1.0's marker (__init__.py:938-994): a frame of
    # "<traceback loader>" whose name goes on with the remote host and pid.
    marker = (
        "<traceback loader>",
        1,
        f'<module>\n  [Below lines obtained from host "{host}", process {pid}]',
    )

    def raiser(e: BaseException) -> None:
        raise e

    step: Callable[[BaseException], None] = raiser
    for filename, lineno, name in reversed([marker] + list(frames)):
        try:
            code = compile("\n" * (max(lineno, 1) - 1) + "_next(_exc)", filename, "exec")
            code = code.replace(co_name=name, co_qualname=name)
        except (SyntaxError, ValueError, TypeError):
            continue
        step = _frame_runner(code, step)
    try:
        step(exc)
    except BaseException as e:  # noqa: B036 - it is the exception being built
        # Only the remote frames: ours (this function, the runners, the
        # raiser) are unlinked.
        kept = []
        tb = e.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename != __file__:
                kept.append(tb)
            tb = tb.tb_next
        for outer, inner in zip(kept, kept[1:] + [None]):
            outer.tb_next = inner
        return kept[0] if kept else None
    return None


def _frame_runner(code: types.CodeType, inner: Callable) -> Callable[[BaseException], None]:
    def run(e: BaseException) -> None:
        exec(code, {"_next": inner, "_exc": e, "__builtins__": {}})

    return run
