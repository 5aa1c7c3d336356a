"""A LogSender under a flood: 100k records, caller-side time per record,
memory, drops (the figure of docs/logging.md).

Three runs of ``logger.info("flood record %d ...", i)`` 100k times:
a NullHandler (the cost of Python's logging alone), a LogSender to a live
log server in another process, and a LogSender to a server that is gone.

    .venv/bin/python examples/log_flood.py
"""

import logging
import statistics
import time
from array import array

from farcall import ProcessSpawner
from farcall import _native
from farcall.log import LogSender

N = 100_000


def status(field):
    """A /proc/self/status field in MiB (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def flood(handler, times):
    """Logs N records through ``handler``, writing per-call times (seconds)
    into the preallocated ``times`` (so measuring allocates nothing)."""
    logger = logging.getLogger("flood.%d" % id(handler))
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    clock = time.perf_counter
    info = logger.info
    for i in range(N):
        t = clock()
        info("flood record %d with a little text", i)
        times[i] = clock() - t
    logger.removeHandler(handler)
    return times


def report(name, times, rss_before, extra=""):
    times = sorted(times)
    print(
        "%-28s mean %5.2f us  median %5.2f us  p99 %6.2f us  max %7.1f us  "
        "RSS %+5.1f MiB (peak %5.1f MiB)%s"
        % (
            name,
            statistics.fmean(times) * 1e6,
            times[len(times) // 2] * 1e6,
            times[int(len(times) * 0.99)] * 1e6,
            times[-1] * 1e6,
            status("VmRSS") - rss_before,
            status("VmHWM"),
            extra,
        )
    )


def main():
    # A log server in another process that only counts (its logger is at
    # WARNING, so INFO records are received, counted and skipped).
    sink_proc = ProcessSpawner(name="sink")
    sink = sink_proc.client._import("farcall.log").LogServer("flood-sink")
    sink.start()
    live = sink.address._get_value()
    gone = _native._LogReceiver()
    gone_address = gone.address
    gone.close()

    print("%d records per run; queue capacity 10000 records" % N)
    times = array("d", bytes(8 * N))
    rss = status("VmRSS")
    report("NullHandler (no sending)", flood(logging.NullHandler(), times), rss)

    rss = status("VmRSS")
    sender = LogSender(live)
    flood(sender, times)
    sender.flush(10.0)
    deadline = time.monotonic() + 10
    while sink.received._get_value() < sender.sent and time.monotonic() < deadline:
        time.sleep(0.05)
    report(
        "LogSender, live server",
        times,
        rss,
        "  sent %d dropped %d received %d" % (sender.sent, sender.dropped, sink.received._get_value()),
    )
    sender.close()

    rss = status("VmRSS")
    sender = LogSender(gone_address)
    flood(sender, times)
    report(
        "LogSender, server gone",
        times,
        rss,
        "  sent %d dropped %d queued %d" % (sender.sent, sender.dropped, sender._native.queued),
    )
    t = time.perf_counter()
    sender.close(0.5)
    print("closing the sender whose server is gone took %.2f s" % (time.perf_counter() - t))
    sink_proc.stop()


if __name__ == "__main__":
    main()
