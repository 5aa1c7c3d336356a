"""Entry point of a spawned child: ``python -m farcall.bootstrap``.

Reads the configuration its ProcessSpawner sent on stdin, starts a server,
reports the address back and serves until closed. The child exits if its
parent dies. See docs/spawning.md.
"""

from farcall import _native
from farcall._native import RPCServer


def main():
    """Runs the child's server."""
    config = _native._child_config()
    log = _start_logging(config)
    try:
        server = RPCServer(config["address"], auth=config["auth"])
    except BaseException:
        import traceback

        _native._report_error(traceback.format_exc())
        raise SystemExit(1)
    _native._report_ready(server.address)
    _native._watch_parent()
    try:
        server.run_forever()
    finally:
        _finish_logging(log)


# ---- logging (farcall.log; see docs/logging.md) ---------------------------


def _start_logging(config):
    """Takes the child's name and, when the parent gave a log server, sends
    this process's records, unhandled exceptions, stdout and stderr there.
    Returns the farcall.log module when forwarding (imported only then)."""
    extra = config.get("extra") or {}
    log_addr = extra.get("log_addr")
    if not log_addr:
        if config.get("name"):
            _native._log_set_process_name(config["name"])
        return None
    from farcall import log

    log._start_child_logging(config.get("name"), log_addr, extra.get("log_level"))
    return log


def _finish_logging(log):
    """Lets the last records and output lines leave before the child exits."""
    if log is not None:
        log._finish_child_logging()


if __name__ == "__main__":
    main()
