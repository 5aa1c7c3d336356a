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
    try:
        server = RPCServer(config["address"], auth=config["auth"])
    except BaseException:
        import traceback

        _native._report_error(traceback.format_exc())
        raise SystemExit(1)
    _native._report_ready(server.address)
    _native._watch_parent()
    server.run_forever()


if __name__ == "__main__":
    main()
