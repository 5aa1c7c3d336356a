"""Shared measuring helpers: one methodology for every system.

Round trips: every system's server is started first, then the systems are
timed in turn, ``PASSES`` times over (interleaved), each turn a short
warm-up and then single calls timed with ``time.perf_counter_ns`` (the
garbage collector off) for ROUNDS/PASSES samples or SECONDS/PASSES,
whichever comes first. Reported in µs: the median and p99 of all samples
pooled, and the best pass (the lowest median of one pass).

This machine has slow phases: for seconds at a time every wake-up is
several times slower (the raw Unix echo goes from ~11 µs to ~50 µs, with
no process of ours busy). Interleaving spreads them over every system
instead of charging them to whichever ran at that moment, and the best
pass is each system's figure outside such a phase; ratios use it.
"""

import gc
import os
import selectors
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# Defaults, scaled down by run.py --quick.
CONFIG = {
    "warmup": 2000,  # calls before timing
    "rounds": 20000,  # most samples per round-trip measurement
    "seconds": 2.0,  # ... or this long, whichever comes first
    "passes": 10,  # interleaved passes the samples are spread over
    "pipelined": 200000,  # async calls per pipelined measurement
    "pipeline_seconds": 3.0,  # ... or this long (slow peers)
    "window": 10000,  # outstanding async calls at most
    "array_reps": {1 << 20: 200, 64 << 20: 30},
    "spawns": 10,
}

READY_TIMEOUT = 20.0  # seconds for a server child to report its address
STOP_TIMEOUT = 5.0  # seconds for a child to exit before it is killed


class Table:
    """The printed table of a run: ``out(line)`` prints a line and keeps
    it; ``out.row(cells, widths)`` prints cells in columns."""

    def __init__(self):
        self.lines = []

    def __call__(self, line=""):
        self.lines.append(line)
        print(line)

    def row(self, cells, widths):
        self("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))))


def save_results(stem, r, lines):
    """Writes bench/results/<stem>.json (the raw figures ``r``) and .txt
    (the printed ``lines``)."""
    import json

    results = os.path.join(os.path.dirname(HERE), "results")
    os.makedirs(results, exist_ok=True)
    path = os.path.join(results, stem)
    with open(path + ".json", "w") as f:
        json.dump(r, f, indent=2)
    with open(path + ".txt", "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"\nwrote {path}.json and .txt")


def add_call(obj):
    """A function calling ``obj.add(1, 2)`` (checked once): the call every
    system is measured on."""

    def call():
        return obj.add(1, 2)

    assert call() == 3
    return call


def round_trips(fn, *args, rounds=None, seconds=None, warmup=None):
    """Times ``fn(*args)`` one call at a time; returns the samples in ns."""
    for _ in range(CONFIG["warmup"] if warmup is None else warmup):
        fn(*args)
    samples = []
    clock = time.perf_counter_ns
    deadline = clock() + int((seconds or CONFIG["seconds"]) * 1e9)
    rounds = rounds or CONFIG["rounds"]
    gc.collect()
    gc.disable()
    try:
        while len(samples) < rounds:
            t0 = clock()
            fn(*args)
            t1 = clock()
            samples.append(t1 - t0)
            if t1 > deadline:
                break
    finally:
        gc.enable()
    return samples


def interleaved_round_trips(targets):
    """Round trips of every ``(key, fn)`` in ``targets``, interleaved over
    CONFIG['passes'] passes; {key: stats + the median of each pass}. A
    target that fails is recorded as an error and left out of later passes."""
    passes = CONFIG["passes"]
    samples = {key: [] for key, _ in targets}
    per_pass = {key: [] for key, _ in targets}
    failed = {}
    for n in range(passes):
        for key, fn in targets:
            if key in failed:
                continue
            got = {}
            warmup = CONFIG["warmup"] if n == 0 else CONFIG["warmup"] // 10
            attempt(got, key, round_trips, fn, rounds=CONFIG["rounds"] // passes,
                    seconds=CONFIG["seconds"] / passes, warmup=warmup)
            if isinstance(got[key], dict):
                failed[key] = got[key]
                continue
            samples[key] += got[key]
            per_pass[key].append(stats(got[key])["median_us"])
    return {key: failed.get(key) or dict(stats(samples[key]), best_pass_median_us=min(per_pass[key]),
                                         pass_medians_us=per_pass[key])
            for key, _ in targets}


def pin(pid, cpus):
    """Sets the CPU affinity of every thread of process ``pid``."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except (ProcessLookupError, FileNotFoundError):
            pass  # a thread that just ended


def placed(targets, placement):
    """Pins this process and each target's server (``fn.server_pid``) for
    a placement: None (the scheduler's choice), "same" (both on CPU 0) or
    "split" (this process on CPU 0, the server on CPU 1)."""
    every = set(range(os.cpu_count()))
    mine, theirs = {None: (every, every), "same": ({0}, {0}), "split": ({0}, {1})}[placement]
    pin(os.getpid(), mine)
    for _, fn in targets:
        pin(fn.server_pid, theirs)


def stats(samples_ns):
    """Median and p99 in µs, and the sample count."""
    s = sorted(samples_ns)
    return {
        "median_us": s[len(s) // 2] / 1e3,
        "p99_us": s[min(len(s) - 1, int(len(s) * 0.99))] / 1e3,
        "samples": len(s),
    }


def median_seconds(fn, reps):
    """Runs ``fn()`` ``reps`` times after one warm-up; median seconds."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e9


def calls_per_second(batch):
    """Runs ``batch()`` (which makes some calls, checks their results and
    returns how many) until CONFIG['pipelined'] calls or
    CONFIG['pipeline_seconds'] have passed; the rate and the count."""
    done = 0
    t0 = time.perf_counter()
    deadline = t0 + CONFIG["pipeline_seconds"]
    while done < CONFIG["pipelined"]:
        done += batch()
        if time.perf_counter() > deadline:
            break
    return {"calls_per_s": done / (time.perf_counter() - t0), "calls": done}


def spawn_server(script, *args, env=None):
    """Starts ``python script *args`` as a server child; returns the child
    and the first line it prints (its address), waiting at most
    READY_TIMEOUT seconds."""
    child = subprocess.Popen(
        [sys.executable, os.path.join(HERE, script), *map(str, args)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd=HERE,
        env=env,
    )
    try:
        return child, read_line(child, READY_TIMEOUT)
    except BaseException:
        stop_child(child)
        raise


def read_line(child, timeout):
    """The child's next stdout line, or RuntimeError after ``timeout``."""
    sel = selectors.DefaultSelector()
    sel.register(child.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise RuntimeError(f"{child.args} said nothing in {timeout} s")
    finally:
        sel.close()
    line = child.stdout.readline().decode().strip()
    if not line:
        raise RuntimeError(f"{child.args} exited with {child.wait(STOP_TIMEOUT)}")
    return line


def stop_child(child):
    """Ends a server child: closes its stdin/stdout, terminates, then kills."""
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(STOP_TIMEOUT)
    if child.stdout:
        child.stdout.close()


def serve_ready(address):
    """A server child tells its parent where it listens (one line)."""
    sys.stdout.write(f"{address}\n")
    sys.stdout.flush()


def exit_with_parent():
    """A server child ends when its parent goes away (stdin is not used,
    so watch the parent pid from a daemon thread)."""
    import threading

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def attempt(out, key, fn, *args, **kwargs):
    """``out[key] = fn(*args, **kwargs)``; a failure is recorded, not
    raised, so one broken measurement does not lose the rest of the run."""
    try:
        out[key] = fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - reported in the table and JSON
        import traceback

        traceback.print_exc()
        out[key] = {"error": f"{type(e).__name__}: {e}"}


def count_python_calls(fn, n=1000, package=None):
    """Python-level 'call' events (sys.setprofile) per ``fn()`` in this
    thread, ``fn`` itself not counted: all of them, and those in files
    under ``package``."""
    import collections

    every = collections.Counter()
    own = getattr(fn, "__code__", None)

    def profile(frame, event, arg):
        if event == "call" and frame.f_code is not own:
            code = frame.f_code
            every[(code.co_filename, code.co_name)] += 1

    for _ in range(10):
        fn()
    sys.setprofile(profile)
    try:
        for _ in range(n):
            fn()
    finally:
        sys.setprofile(None)
    out = {"all_per_call": sum(every.values()) / n}
    if package:
        out["package_per_call"] = sum(c for (f, _), c in every.items() if f.startswith(package)) / n
    out["functions"] = {f"{os.path.basename(f)}:{name}": c / n for (f, name), c in every.most_common(8)}
    return out
