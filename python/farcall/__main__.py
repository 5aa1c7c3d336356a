"""The ``farcall`` command (also ``python -m farcall``).

``farcall logs [ADDRESS]``
    Runs a log server and prints the records of every process that sends to
    it, sorted by time and coloured by source (see docs/logging.md).
``farcall serve ADDRESS [--import MODULE]...``
    Runs a server that hosts Python objects, for clients on other hosts or in
    other programs; each imported module is published under its name.
``farcall serve --across ADDRESS``
    Serves across connections (``Connection.from_tcp`` / ``from_unix``) on a
    native address, each after the key handshake.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional


def _logs(args: argparse.Namespace) -> int:
    from farcall.log import RPCLogHandler, LogServer

    logger = logging.getLogger("farcall.cli.logs")
    logger.propagate = False
    logger.setLevel(args.level)
    color = False if args.plain else (True if args.color else None)
    logger.addHandler(RPCLogHandler(sys.stdout, delay=args.delay, color=color))
    server = LogServer(logger, args.address)
    print("farcall log server at %s" % server.address, flush=True)
    server.start()
    try:
        while server.is_alive():
            server.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        for handler in logger.handlers:
            handler.flush()
    return 0


def _serve(args: argparse.Namespace) -> int:
    from farcall import RPCServer

    if args.name or args.log:
        from farcall import log

        if args.name:
            log.set_process_name(args.name)
        if args.log:
            logging.getLogger().setLevel(args.level)
            log.set_logger_address(args.log)
            log.log_exceptions()
    if args.across:
        return _serve_across(args)
    server = RPCServer(
        args.address,
        auth=not args.no_auth,
        allow_unauthenticated_public=args.allow_unauthenticated_public,
    )
    for name in args.imports:
        server[name] = importlib.import_module(name)
    print("farcall server at %s" % server.address, flush=True)
    if args.imports:
        print("published: %s" % ", ".join(args.imports), flush=True)
    try:
        server.run_forever()
    except KeyboardInterrupt:
        server.close()
    return 0


def _serve_across(args: argparse.Namespace) -> int:
    from farcall.across.servers import Listener

    if args.imports:
        for name in args.imports:
            importlib.import_module(name)
    listener = Listener(args.address, auth=not args.no_auth)
    print("farcall across server at %s" % listener.address, flush=True)
    try:
        listener.serve_forever()
    finally:
        listener.close()
    return 0


def _level(text: str) -> int:
    number = logging.getLevelName(text.upper())
    if isinstance(number, int):
        return number
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("unknown level %r" % text) from None


def parser() -> argparse.ArgumentParser:
    """The command line parser of ``farcall``."""
    p = argparse.ArgumentParser(prog="farcall", description="farcall: remote process control.")
    from . import __version__

    p.add_argument("--version", action="version", version=f"farcall {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    logs = sub.add_parser("logs", help="run a log server and print what every process logs")
    logs.add_argument(
        "address",
        nargs="?",
        default="tcp://127.0.0.1:*",
        help="ZeroMQ endpoint to bind (default tcp://127.0.0.1:*, a free port)",
    )
    logs.add_argument("--level", type=_level, default=logging.DEBUG, help="lowest level shown")
    logs.add_argument(
        "--delay", type=float, default=0.3, help="seconds records wait to be sorted by time"
    )
    colors = logs.add_mutually_exclusive_group()
    colors.add_argument("--plain", action="store_true", help="never colour")
    colors.add_argument("--color", action="store_true", help="colour even when not a terminal")
    logs.set_defaults(run=_logs)

    serve = sub.add_parser("serve", help="run a server hosting Python objects")
    serve.add_argument(
        "address", help="address to bind: unix:///path, tcp+native://host:port, tcp://host:port"
    )
    serve.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE and publish it under its name (repeatable)",
    )
    serve.add_argument("--name", help="this process's name in log records")
    serve.add_argument("--log", metavar="ADDRESS", help="send log records to this log server")
    serve.add_argument("--level", type=_level, default=logging.INFO, help="log level with --log")
    serve.add_argument(
        "--no-auth", action="store_true", help="accept unauthenticated clients (pyacq peers)"
    )
    serve.add_argument(
        "--allow-unauthenticated-public",
        action="store_true",
        help="with --no-auth, allow binding a non-loopback address",
    )
    serve.add_argument(
        "--across",
        action="store_true",
        help="serve across connections (farcall.across.Connection.from_tcp/from_unix) "
        "instead of RPC clients; a native address",
    )
    serve.set_defaults(run=_serve)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the ``farcall`` command line."""
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
