"""Runs the Python benchmark suite in one go and prints the table.

    bench/run_python.sh [--quick] [--only floors,farcall,peers] [--no-save]

Order: round trips of every system, interleaved with all servers up (see
common.py), then the other measurements of the floors, farcall and the
peers.
Raw figures go to bench/results/python-<date>.json, the printed table to
python-<date>.txt next to it.
"""

import argparse
import contextlib
import datetime
import os
import platform
import subprocess
import sys
import traceback

# Heavy imports (farcall, numpy, zmq) happen inside main(): the
# multiprocessing 'spawn' start method re-imports this module in its
# children, and should pay for no more than it needs.


def get(d, *path):
    """d[path...], or None when missing or recorded as an error."""
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    if isinstance(d, dict) and "error" in d:
        return None
    return d


def error(d, *path):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return "not measured"
        d = d[key]
        if isinstance(d, dict) and "error" in d:
            return d["error"]
    return None


def us(x):
    return "-" if x is None else f"{x:.1f} µs"


def ratio(a, b):
    return "-" if a is None or b is None else f"{a / b:.2f}x"


def rate(x):
    return "-" if x is None else f"{x / 1e3:.0f}k/s"


def gbps(x):
    return "-" if x is None else f"{x:.2f}"


def ms(x):
    return "-" if x is None else f"{x * 1e3:.1f} ms"


def num(x):
    return "-" if x is None else f"{x:g}"


def status(ok):
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def check(value, limit, le=True):
    if value is None or limit is None:
        return None
    return value <= limit if le else value >= limit


def report(r, out):
    fl, fc, pe = r.get("floors", {}), r.get("farcall", {}), r.get("peers", {})
    w = [44, 10, 10, 10, 16, 7]

    rows = [
        ("floor: raw Python Unix-socket echo", "unix_echo", None),
        ("floor: raw Python TCP echo", "tcp_echo", None),
        ("floor: raw pyzmq DEALER/ROUTER echo", "pyzmq_echo", None),
        ("farcall, default transport (unix)", "farcall_default", "unix_echo"),
        ("farcall, tcp+native://", "farcall_tcp+native", "tcp_echo"),
        ("farcall, ZeroMQ tcp://", "farcall_zmq_tcp", "pyzmq_echo"),
        ("multiprocessing.managers (Unix socket)", "managers", "unix_echo"),
        ("rpyc (TCP)", "rpyc", "tcp_echo"),
        ("rpyc (TCP), method looked up once", "rpyc_method_cached", "tcp_echo"),
        ("Pyro5 (TCP, msgpack)", "pyro5", "tcp_echo"),
    ]
    same, split = r.get("round_trips_same_cpu", {}), r.get("round_trips_split_cpu", {})
    free = r.get("round_trips", {})
    out("Round trip of obj.add(1, 2), Python client -> Python child, in µs (64-byte echoes for")
    out("the floors); ratio = median / the floor's median (Unix echo for Unix sockets, TCP echo")
    out("for TCP, pyzmq echo for ZeroMQ). Client and server pinned to the same CPU, and to")
    out("different CPUs:")
    w = [44, 9, 9, 6, 9, 9, 6]
    out.row(["", "same CPU", "p99", "ratio", "2 CPUs", "p99", "ratio"], w)
    for label, key, floor in rows:
        cells = [label]
        for d in (same, split):
            cells += [us(get(d, key, "median_us")), us(get(d, key, "p99_us")),
                      ratio(get(d, key, "median_us"), get(d, floor, "median_us")) if floor else ""]
        out.row(cells, w)
        for d in (same, split, free):
            err = error(d, key)
            if err and err != "not measured":
                out(f"    ! {err}")
                break
    for key, err in r.get("round_trip_setup_errors", {}).items():
        out(f"    ! could not start {key}: {err}")
    out()
    out("The same, not pinned (the scheduler's choice, which moves between the two): median and")
    out("p99 of all samples, and the best pass (lowest median of one of the interleaved passes)")
    w = [44, 9, 9, 9, 6]
    out.row(["", "median", "p99", "best pass", "ratio"], w)
    for label, key, floor in rows:
        best = get(free, key, "best_pass_median_us")
        out.row([label, us(get(free, key, "median_us")), us(get(free, key, "p99_us")), us(best),
                 ratio(best, get(free, floor, "best_pass_median_us")) if floor else ""], w)

    out()
    out("Pipelined calls per second")
    w2 = [44, 10]
    out.row(["", "calls/s"], w2)
    for label, v in [
        ("farcall, default transport (async futures)", get(fc, "pipelined_default", "calls_per_s")),
        ("farcall, tcp+native:// (async futures)", get(fc, "pipelined_tcp+native", "calls_per_s")),
        ("farcall, ZeroMQ tcp:// (async futures)", get(fc, "pipelined_zmq_tcp", "calls_per_s")),
        ("farcall, ZeroMQ tcp://, 1000 outstanding", get(fc, "pipelined_zmq_tcp_window1000", "calls_per_s")),
        ("rpyc async_ (TCP)", get(pe, "rpyc", "pipelined", "calls_per_s")),
        ("Pyro5 BatchProxy, 256-call batches, msgpack", get(pe, "pyro5", "pipelined", "calls_per_s")),
        ("Pyro5 BatchProxy, 256-call batches, serpent", get(pe, "pyro5", "pipelined_serpent", "calls_per_s")),
    ]:
        out.row([label, rate(v)], w2)
    out(f"(farcall: batches of {r.get('config', {}).get('window')} async calls, then all results; "
        f"rpyc the same; Pyro5: one request per 256-call batch)")
    for key in ("pipelined_default", "pipelined_tcp+native", "pipelined_zmq_tcp", "pipelined_zmq_tcp_window1000"):
        err = error(fc, key)
        if err and err != "not measured":
            out(f"    ! {key}: {err}")

    out()
    out("float64 arrays by value, GB/s (median)")
    w3 = [44, 10, 10, 10, 10]
    out.row(["", "1M ->child", "1M <-child", "64M ->child", "64M <-child"], w3)

    def arr(label, d):
        cells = [label]
        for size in (str(1 << 20), str(64 << 20)):
            cells += [gbps(get(d, size, "to_child_gbps")), gbps(get(d, size, "from_child_gbps"))]
        out.row(cells, w3)

    arr("floor: raw Unix-socket stream", fl.get("unix_stream"))
    arr("farcall, default transport", fc.get("arrays_default"))
    arr("multiprocessing.managers (pickle)", get(pe, "managers", "arrays"))
    for name, err in [("floor", error(fl, "unix_stream")), ("farcall", error(fc, "arrays_default")),
                      ("managers", error(pe, "managers", "arrays"))]:
        if err and err != "not measured":
            out(f"    ! {name}: {err}")
    out(f"(numpy copy of 64 MiB in one process: {gbps(get(fl, 'numpy_memcpy_64MiB', 'into_existing_gbps'))} GB/s "
        f"into an existing array, {gbps(get(fl, 'numpy_memcpy_64MiB', 'into_fresh_gbps'))} GB/s into a fresh one)")

    out()
    out("Spawn to first call (median)")
    out.row(["", "median"], w2)
    for label, v in [
        ("floor: python -c pass", fl.get("python_c_pass_s")),
        ("farcall ProcessSpawner, default transport", get(fc, "spawn_to_first_call_default", "median_s")),
        ("multiprocessing.managers, fork", get(pe, "managers", "spawn_to_first_call_fork_s")),
        ("multiprocessing.managers, spawn", get(pe, "managers", "spawn_to_first_call_spawn_s")),
        ("rpyc (server script + connect)", get(pe, "rpyc", "spawn_to_first_call_s")),
        ("Pyro5 (server script + proxy)", get(pe, "pyro5", "spawn_to_first_call_s")),
    ]:
        out.row([label, ms(v)], w2)
    numpy_loaded = get(fc, "spawn_to_first_call_default", "child_has_numpy")
    out(f"(a fresh farcall child has numpy loaded: {numpy_loaded})")

    out()
    out("Python-level function calls per sync call on the client (sys.setprofile 'call')")
    w4 = [44, 10, 10]
    out.row(["", "all", "farcall"], w4)
    for label, d in [
        ("farcall, default transport", fc.get("python_calls_default")),
        ("farcall, tcp+native://", fc.get("python_calls_tcp+native")),
        ("farcall, ZeroMQ tcp://", fc.get("python_calls_zmq_tcp")),
        ("multiprocessing.managers", get(pe, "managers", "python_calls")),
        ("rpyc", get(pe, "rpyc", "python_calls")),
        ("Pyro5", get(pe, "pyro5", "python_calls")),
    ]:
        out.row([label, num(get(d, "all_per_call")), num(get(d, "farcall_per_call"))], w4)
    out()

    # ---- goals
    rt_goals = []
    for name, d in (("same CPU", same), ("2 CPUs", split)):
        rt_def, floor, mgr = (get(d, k, "median_us") for k in ("farcall_default", "unix_echo", "managers"))
        rt_goals += [
            (f"default round trip <= 2x raw Unix echo ({name})",
             f"{us(rt_def)} vs {us(floor)} = {ratio(rt_def, floor)}",
             check(rt_def, 2 * floor if floor else None)),
            (f"default round trip faster than multiprocessing.managers ({name})",
             f"{us(rt_def)} vs {us(mgr)} = {ratio(rt_def, mgr)}",
             None if mgr is None or rt_def is None else rt_def < mgr),
        ]
    pipe = get(fc, "pipelined_default", "calls_per_s")
    a = fc.get("arrays_default") or {}
    big = str(64 << 20)
    to_c, from_c = get(a, big, "to_child_gbps"), get(a, big, "from_child_gbps")
    spawn = get(fc, "spawn_to_first_call_default", "median_s")
    calls = get(fc, "python_calls_default", "farcall_per_call")
    goals = rt_goals + [
        (">= 300k pipelined calls/s (default)", rate(pipe), check(pipe, 300e3, le=False)),
        ("64 MiB parent->child >= 3 GB/s", f"{gbps(to_c)} GB/s", check(to_c, 3.0, le=False)),
        ("64 MiB child->parent >= 3 GB/s", f"{gbps(from_c)} GB/s", check(from_c, 3.0, le=False)),
        ("spawn to first call <= 60 ms", ms(spawn), check(spawn, 0.060)),
        ("<= 1 Python call of ours per sync call", f"{calls}", check(calls, 1.0)),
    ]
    out()
    out("| goal | measured | status |")
    out("|---|---|---|")
    for g, m, ok in goals:
        out(f"| {g} | {m} | {status(ok)} |")
    return goals


def git_commit(root):
    try:
        return subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke test)")
    parser.add_argument("--only", default="floors,farcall,peers")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = parser.parse_args()

    import common

    if args.quick:
        common.CONFIG.update(warmup=200, rounds=2000, seconds=0.5, passes=2, pipelined=20000, pipeline_seconds=1.0,
                             window=5000, spawns=3, array_reps={1 << 20: 20, 64 << 20: 3})

    import farcall
    import numpy

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    if os.path.abspath(farcall.__file__).startswith(os.path.join(root, "python")):
        sys.exit(f"farcall imported from the source tree ({farcall.__file__}); run bench/run_python.sh")

    started = datetime.datetime.now()
    r = {
        "date": started.isoformat(timespec="seconds"),
        "commit": git_commit(root),
        "farcall_built_from": os.environ.get("FARCALL_BENCH_SOURCE", "unknown"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_start": os.getloadavg()},
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "farcall": farcall.__file__,
        "config": {k: (v if not isinstance(v, dict) else {str(a): b for a, b in v.items()})
                   for k, v in common.CONFIG.items()},
    }
    print(f"farcall {farcall.__version__} from {farcall.__file__}; load average {os.getloadavg()}",
          flush=True)
    only = args.only.split(",")
    import floors
    import farcall_bench
    import peers

    modules = [(name, m) for name, m in [("floors", floors), ("farcall", farcall_bench), ("peers", peers)]
               if name in only]
    print("measuring round trips (all servers up, interleaved) ...", flush=True)
    r["round_trip_setup_errors"] = {}
    with contextlib.ExitStack() as stack:
        targets = []
        for name, module in modules:
            try:
                targets += module.round_trip_targets(stack)
            except Exception as e:  # noqa: BLE001 - reported in the table
                traceback.print_exc()
                r["round_trip_setup_errors"][name] = f"{type(e).__name__}: {e}"
        for placement, key in ((None, "round_trips"), ("same", "round_trips_same_cpu"),
                               ("split", "round_trips_split_cpu")):
            print(f"  placement: {placement or 'not pinned'}", flush=True)
            common.placed(targets, placement)
            r[key] = common.interleaved_round_trips(targets)
        common.placed(targets, None)
    for name, module in modules:
        print(f"measuring {name} ...", flush=True)
        r[name] = module.run_all()
    r["machine"]["loadavg_end"] = os.getloadavg()
    r["seconds"] = (datetime.datetime.now() - started).total_seconds()

    out = common.Table()
    out()
    out(f"farcall Python benchmark, {r['date']}, farcall built from {r['farcall_built_from']}, {os.cpu_count()} cores, "
        f"load average {r['machine']['loadavg_start'][0]:.2f} at start, "
        f"{r['machine']['loadavg_end'][0]:.2f} at end{' (QUICK)' if args.quick else ''}")
    out()
    goals = report(r, out)
    r["goals"] = [{"goal": g, "measured": m, "met": ok} for g, m, ok in goals]

    if not args.no_save:
        common.save_results(f"python-{started.date().isoformat()}{'-quick' if args.quick else ''}", r, out.lines)


if __name__ == "__main__":
    main()
