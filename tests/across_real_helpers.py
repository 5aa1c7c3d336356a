"""Functions the children of tests/test_across_real.py run, the same for
the real across and for farcall.across (found through PYTHONPATH)."""

import importlib
import os
import signal


def boom():
    try:
        1 / 0
    except ZeroDivisionError as e:
        raise ValueError("outer") from e


def raise_operation_error(library):
    """Raises the OperationError of ``library`` ("across" or "farcall.across")."""
    raise importlib.import_module(library).OperationError("op failed here")


def kill_myself():
    os.kill(os.getpid(), signal.SIGKILL)
