"""A LogSender under a flood: 100k records, caller-side time per record,
memory, drops (the figure of docs/logging.md).

Runs of ``logger.info("flood record %d ...", i)`` 100k times: a
NullHandler (the cost of Python's logging alone), a LogSender to a live log
server in another process, and twice a LogSender to a server that is gone
(the second run shows that memory does not grow with the flood).

    .venv/bin/python examples/log_flood.py
"""

import logging
import resource
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
    before = resource.getrusage(resource.RUSAGE_THREAD)
    for i in range(N):
        t = clock()
        info("flood record %d with a little text", i)
        times[i] = clock() - t
    after = resource.getrusage(resource.RUSAGE_THREAD)
    logger.removeHandler(handler)
    # Voluntary switches: the thread waited for something (a lock, the
    # network). Involuntary ones: the scheduler gave its core to another.
    return after.ru_nvcsw - before.ru_nvcsw, after.ru_nivcsw - before.ru_nivcsw


def report(name, times, rss_before, switches, extra=""):
    times = sorted(times)
    print(
        "%-30s median %5.2f us  p99 %6.2f us  mean %5.2f us  max %7.1f us  >1 ms: %3d  "
        "waits %d (preempted %d)  RSS %+5.1f MiB%s"
        % (
            name,
            times[len(times) // 2] * 1e6,
            times[int(len(times) * 0.99)] * 1e6,
            statistics.fmean(times) * 1e6,
            times[-1] * 1e6,
            sum(1 for t in times if t > 1e-3),
            switches[0],
            switches[1],
            status("VmRSS") - rss_before,
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
    switches = flood(logging.NullHandler(), times)
    report("NullHandler (no sending)", times, rss, switches)

    rss = status("VmRSS")
    sender = LogSender(live)
    switches = flood(sender, times)
    sender.flush(10.0)
    deadline = time.monotonic() + 10
    while sink.received._get_value() < sender.sent and time.monotonic() < deadline:
        time.sleep(0.05)
    report(
        "LogSender, live server",
        times,
        rss,
        switches,
        "  sent %d dropped %d received %d" % (sender.sent, sender.dropped, sink.received._get_value()),
    )
    sender.close()

    sender = LogSender(gone_address)
    for run in (1, 2):
        rss = status("VmRSS")
        switches = flood(sender, times)
        report(
            "LogSender, server gone (%d)" % run,
            times,
            rss,
            switches,
            "  sent %d dropped %d queued %d"
            % (sender.sent, sender.dropped, sender._native.queued),
        )
    t = time.perf_counter()
    sender.close(0.5)
    print("closing the sender whose server is gone took %.2f s" % (time.perf_counter() - t))
    sink_proc.stop()


if __name__ == "__main__":
    main()
