"""Functions the children of test_across_messages.py import (through
PYTHONPATH): they close or fail the child's side of a connection."""

import os
import threading
import time

from farcall.across import DisconnectError, OperationError, get_connection


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def close_soon(delay, exit_code=None):
    """Closes this side's connection from a thread after ``delay``
    seconds, then exits with ``exit_code`` if one is given."""
    conn = get_connection()

    def run():
        time.sleep(delay)
        conn.close()
        if exit_code is not None:
            os._exit(exit_code)

    threading.Thread(target=run).start()
    return "closing"


def boom():
    try:
        1 / 0
    except ZeroDivisionError as e:
        raise ValueError("outer") from e


def raise_operation_error():
    raise OperationError("op failed here")


def raise_disconnect_error():
    raise DisconnectError("not this connection")


def gen(n):
    yield from range(n)
