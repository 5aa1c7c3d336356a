"""Functions the child of tests/test_across_logging.py runs (it finds this
module through PYTHONPATH, as across_helpers): they capture the child's
records, forward them with farcall.log.AcrossHandler, and log."""

import logging
import threading

from farcall.across import get_connection
from farcall.log import AcrossHandler


class ListHandler(logging.Handler):
    """Keeps every record it handles."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []
        self._records_lock = threading.Lock()

    def emit(self, record):
        with self._records_lock:
            self.records.append(record)

    def summary(self):
        with self._records_lock:
            return [summarize(r) for r in self.records]


def summarize(record):
    """What the tests compare: level, message, traceback text, and whether
    exc_info survived (it must not: tracebacks do not travel)."""
    return (record.levelname, record.getMessage(), record.exc_text, record.exc_info is None)


_captures = {}
_threads = []


def logger_for(name):
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger


def capture(name):
    """Keeps the records of logger ``name`` in this process."""
    handler = ListHandler()
    logger_for(name).addHandler(handler)
    _captures[name] = handler


def captured(name):
    """The records of logger ``name`` kept so far, summarized."""
    return _captures[name].summary()


def forward_to_caller(name):
    """Attaches an AcrossHandler for the connection of this call to ``name``."""
    logger_for(name).addHandler(AcrossHandler(get_connection()))


def handler_without_connection():
    """AcrossHandler() here: in a call, it takes the call's connection."""
    return AcrossHandler().connection is get_connection()


def log_some(name):
    """Logs at three levels, one record with a traceback; returns after."""
    logger = logging.getLogger(name)
    logger.debug("debug %d", 1)
    logger.warning("warning %s", "two")
    try:
        1 / 0
    except ZeroDivisionError:
        logger.exception("failed %s", "three")
    return "done"


class Unpicklable:
    """An argument that pickle refuses (it holds a lock)."""

    def __init__(self):
        self.lock = threading.Lock()

    def __str__(self):
        return "<unpicklable>"


def log_unpicklable(name):
    logging.getLogger(name).info("value %s and %r", Unpicklable(), threading.Lock().locked())
    return "done"


def log_in_thread(name, count, prefix):
    """Logs ``count`` records from a new thread (not running a call, so its
    records go to the other side's pool); returns at once."""

    def run():
        logger = logging.getLogger(name)
        for i in range(count):
            logger.info("%s %d", prefix, i)

    thread = threading.Thread(target=run, name="log-in-thread")
    thread.start()
    _threads.append(thread)


def join_threads(timeout):
    """Waits (at most ``timeout`` s each) for the threads of log_in_thread;
    True if all ended."""
    for thread in _threads:
        thread.join(timeout)
    alive = any(t.is_alive() for t in _threads)
    _threads.clear()
    return not alive


def log(name, level, message):
    logging.getLogger(name).log(level, message)
    return "done"
