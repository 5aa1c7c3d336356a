"""Entry point of a spawned child: ``python -m farcall.bootstrap``.

Reads the configuration its ProcessSpawner sent on stdin, starts a server,
reports the address back and serves until closed. The child exits if its
parent dies. See docs/spawning.md.
"""

import sys

from farcall import _native
from farcall._native import RPCServer


def main():
    """Runs the child's server."""
    config = _native._child_config()
    log = _start_logging(config)
    qt = bool((config.get("extra") or {}).get("qt"))
    try:
        if qt:
            app, server = _qt_server(config)
        else:
            server = RPCServer(config["address"], auth=config["auth"])
    except BaseException:
        import traceback

        _native._report_error(traceback.format_exc())
        raise SystemExit(1)
    _native._report_ready(server.address)
    _native._watch_parent()
    try:
        if qt:
            from farcall.qt import exec_app

            exec_app(app)  # until the server closes (quit_on_close)
        else:
            server.run_forever()
    finally:
        _finish_logging(log)


def _qt_server(config):
    """A QApplication and a QtRPCServer on its event loop (qt=True)."""
    from farcall.qt import QApplication, QtRPCServer

    app = QApplication.instance() or QApplication([])
    app.setQuitOnLastWindowClosed(False)
    return app, QtRPCServer(config["address"], auth=config["auth"], quit_on_close=True)


# ---- logging (farcall.log; see docs/logging.md) ---------------------------


def _start_logging(config):
    """Takes the child's name and, when the parent gave a log server, sends
    this process's records, unhandled exceptions, stdout and stderr there
    (the engine does most of it). Returns the farcall.log module when
    forwarding (imported only then)."""
    extra = config.get("extra") or {}
    log_addr = extra.get("log_addr")
    if log_addr:
        # What Python holds for fds 1 and 2 goes out before the capture.
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    started = _native._log_start_child(
        config.get("name"), log_addr, extra.get("log_level"), extra.get("log_stdio", True)
    )
    if started is None:
        return None
    from farcall import log

    log._start_child_logging(log_addr, *started, extra.get("log_send_level"))
    return log


def _finish_logging(log):
    """Lets the last records and output lines leave before the child exits."""
    if log is not None:
        log._finish_child_logging()


if __name__ == "__main__":
    main()
