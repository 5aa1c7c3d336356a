"""farcall.across next to the real across (PyPI) and farcall's own
ProcessSpawner, in one run:

    bench/run_python.sh across [--quick] [--no-save]

Each system drives a Python child over its pipes (across, farcall.across)
or its default transport (ProcessSpawner). Measured, interleaved with all
children up (see common.py): a sync ``conn.call(add, 1, 2)`` one call at a
time (``adder.add(1, 2)`` for the spawner), unpinned and pinned; the
median of the first few calls of a fresh connection; a 64 MiB float64
array as an argument and as a result. Raw figures go to
bench/results/across-<date>.json, the table to across-<date>.txt.
"""

import argparse
import contextlib
import datetime
import os
import platform
import subprocess
import sys
import time

import common
from common import CONFIG, interleaved_round_trips, median_seconds, placed, stats

FEW_CONNECTIONS = 5  # fresh connections for "the first calls" ...
FEW_CALLS = 10  # ... and the calls timed on each
BIG = 64 << 20


def across_child():
    """The real across, serving over a child's stdio."""
    import across

    proc = subprocess.Popen([sys.executable, "-m", "across", "--stdio", "--wait"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    return across.Connection.from_process(proc), proc.pid


def farcall_across_child():
    """farcall.across, serving over a child's stdio."""
    from farcall.across import Connection

    conn = Connection.from_command([sys.executable, "-m", "farcall.across"])
    return conn, conn._process.pid


class Spawner:
    """farcall's ProcessSpawner child hosting an Adder, shaped like a
    connection for this script."""

    def __init__(self):
        from farcall import ProcessSpawner

        self.proc = ProcessSpawner()
        self.adder = self.proc.client._import("bench_objects").Adder()

    def close(self):
        self.proc.stop()


def spawner_child():
    s = Spawner()
    return s, s.proc.pid


SYSTEMS = {
    "across": across_child,
    "farcall_across": farcall_across_child,
    "spawner": spawner_child,
}


def add_of(system, conn):
    """The call timed for ``system``: ``conn.call(add, 1, 2)``, or the
    spawner's ``adder.add(1, 2)``."""
    import bench_objects

    if system == "spawner":
        adder = conn.adder

        def call():
            return adder.add(1, 2)
    else:
        add = bench_objects.add

        def call():
            return conn.call(add, 1, 2)
    assert call() == 3
    return call


def first_calls(system):
    """Samples (ns) of the first FEW_CALLS calls of FEW_CONNECTIONS fresh
    connections (the first call, which imports, not counted)."""
    samples = []
    for _ in range(FEW_CONNECTIONS):
        conn, _pid = SYSTEMS[system]()
        try:
            call = add_of(system, conn)
            for _ in range(FEW_CALLS):
                t0 = time.perf_counter_ns()
                call()
                samples.append(time.perf_counter_ns() - t0)
        finally:
            conn.close()
    return samples


def arrays(system, conn):
    """GB/s for a 64 MiB float64 array as an argument and as a result
    (median of CONFIG's repetitions)."""
    import numpy

    import bench_objects

    reps = CONFIG["array_reps"][BIG]
    arr = numpy.random.default_rng(1).random(BIG // 8)
    expect = [BIG, float(arr[0] + arr[-1] + arr[len(arr) // 2])]
    if system == "spawner":
        take, prepare, give = conn.adder.take, conn.adder.prepare, conn.adder.give
    else:
        def take(a):
            return conn.call(bench_objects.take, a)

        def prepare(n):
            return conn.call(bench_objects.prepare, n)

        def give():
            return conn.call(bench_objects.give)
    assert take(arr) == expect
    to_child = median_seconds(lambda: take(arr), reps)
    prepare(BIG)
    got = give()
    assert isinstance(got, numpy.ndarray) and got.nbytes == BIG and got[-1] == BIG // 8 - 1
    del got
    from_child = median_seconds(give, reps)
    prepare(0)
    return {"to_child_gbps": BIG / to_child / 1e9, "from_child_gbps": BIG / from_child / 1e9}


def measure(quick):
    r = {}
    with contextlib.ExitStack() as stack:
        conns, targets = {}, []
        for system, start in SYSTEMS.items():
            conn, pid = start()
            stack.callback(conn.close)
            conns[system] = conn
            call = add_of(system, conn)
            call.server_pid = pid
            targets.append((system, call))
        for placement, key in ((None, "round_trips"), ("same", "round_trips_same_cpu"),
                               ("split", "round_trips_split_cpu")):
            print(f"round trips, placement: {placement or 'not pinned'}", flush=True)
            placed(targets, placement)
            r[key] = interleaved_round_trips(targets)
        placed(targets, None)
        print("64 MiB arrays ...", flush=True)
        r["arrays"] = {system: arrays(system, conn) for system, conn in conns.items()}
    print("first calls of fresh connections ...", flush=True)
    r["first_calls"] = {system: stats(first_calls(system)) for system in SYSTEMS}
    return r


def us(x):
    return "-" if x is None else f"{x:.1f} µs"


def report(r, out):
    names = {"across": "across 0.1.0 (PyPI), over pipes", "farcall_across": "farcall.across, over pipes",
             "spawner": "farcall ProcessSpawner (unix://)"}
    out("Sync round trip in µs: conn.call(add, 1, 2) (the spawner: adder.add(1, 2)); median, p99")
    out("of all samples; best = the lowest median of one interleaved pass; ratio = median / farcall.across's")
    w = [36, 10, 10, 10, 8]
    for key, title in (("round_trips", "not pinned"), ("round_trips_same_cpu", "both on one CPU"),
                       ("round_trips_split_cpu", "on two CPUs")):
        d = r[key]
        out(f"-- {title}")
        out("  ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i]) for i, c in
                      enumerate(["", "median", "p99", "best", "ratio"])))
        base = d["farcall_across"]["median_us"]
        for system, label in names.items():
            s = d[system]
            cells = [label, us(s["median_us"]), us(s["p99_us"]), us(s["best_pass_median_us"]),
                     f"{s['median_us'] / base:.2f}x"]
            out("  ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(cells)))
        spread = {system: (min(d[system]["pass_medians_us"]), max(d[system]["pass_medians_us"]))
                  for system in names}
        out("   pass medians (min-max): " + ", ".join(f"{system} {a:.1f}-{b:.1f}" for system, (a, b) in spread.items()))
    out(f"-- the first {FEW_CALLS} calls of {FEW_CONNECTIONS} fresh connections each (median, p99)")
    for system, label in names.items():
        s = r["first_calls"][system]
        out(f"{label.ljust(w[0])}  {us(s['median_us']).rjust(10)}  {us(s['p99_us']).rjust(10)}")
    out()
    out("64 MiB float64 array by value, GB/s (median)")
    for system, label in names.items():
        a = r["arrays"][system]
        out(f"{label.ljust(w[0])}  as argument {a['to_child_gbps']:6.2f}   as result {a['from_child_gbps']:6.2f}")
    out()
    goals = []
    for key, title in (("round_trips", "not pinned"), ("round_trips_same_cpu", "one CPU"),
                       ("round_trips_split_cpu", "two CPUs")):
        d = r[key]
        fa, ac, sp = (d[s]["median_us"] for s in ("farcall_across", "across", "spawner"))
        goals.append((f"round trip <= 0.1x across ({title})", f"{fa:.1f} / {ac:.1f} = {fa / ac:.3f}x", fa <= 0.1 * ac))
        goals.append((f"round trip <= 1.5x ProcessSpawner ({title})", f"{fa:.1f} / {sp:.1f} = {fa / sp:.2f}x",
                      fa <= 1.5 * sp))
    a = r["arrays"]["farcall_across"]
    goals.append(("64 MiB as argument >= 2 GB/s", f"{a['to_child_gbps']:.2f} GB/s", a["to_child_gbps"] >= 2))
    goals.append(("64 MiB as result >= 2 GB/s", f"{a['from_child_gbps']:.2f} GB/s", a["from_child_gbps"] >= 2))
    out("| goal | measured | status |")
    out("|---|---|---|")
    for g, m, ok in goals:
        out(f"| {g} | {m} | {'met' if ok else 'NOT met'} |")
    return goals


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke test)")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = parser.parse_args()
    if args.quick:
        CONFIG.update(warmup=200, rounds=2000, seconds=0.5, passes=2, array_reps={BIG: 3})
    else:
        CONFIG.update(array_reps={BIG: 15})

    import across
    import farcall
    import numpy

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    if os.path.abspath(farcall.__file__).startswith(os.path.join(root, "python")):
        sys.exit(f"farcall imported from the source tree ({farcall.__file__}); run bench/run_python.sh")
    started = datetime.datetime.now()
    r = {
        "date": started.isoformat(timespec="seconds"),
        "farcall_built_from": os.environ.get("FARCALL_BENCH_SOURCE", "unknown"),
        "across": getattr(across, "__version__", "?"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_start": os.getloadavg()},
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "config": {k: (v if not isinstance(v, dict) else {str(a): b for a, b in v.items()})
                   for k, v in CONFIG.items()},
    }
    r.update(measure(args.quick))
    r["machine"]["loadavg_end"] = os.getloadavg()
    out = common.Table()

    out()
    out(f"farcall.across vs across {r['across']}, {r['date']}, farcall built from {r['farcall_built_from']}, "
        f"{os.cpu_count()} cores, load {r['machine']['loadavg_start'][0]:.2f} -> {r['machine']['loadavg_end'][0]:.2f}"
        f"{' (QUICK)' if args.quick else ''}")
    out()
    goals = report(r, out)
    r["goals"] = [{"goal": g, "measured": m, "met": ok} for g, m, ok in goals]
    if not args.no_save:
        common.save_results(f"across-{started.strftime('%Y-%m-%dT%H%M%S')}{'-quick' if args.quick else ''}",
                            r, out.lines)


if __name__ == "__main__":
    main()
