"""Three processes, one log (docs/logging.md).

The main process runs a log server and prints what arrives, sorted by time
and coloured by process. Two spawned children, "camera" and "analysis", log
records, print, write to their file descriptors directly, and one of them
has a thread die of an exception: all of it shows up in the main process,
tagged with the child's name.

    .venv/bin/python examples/logging_demo.py
"""

import logging
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# ---- what the children run (this module, imported in each child) ----------


def acquire(n_frames):
    """The camera: records, print() and a warning."""
    log = logging.getLogger("camera.driver")
    log.info("acquiring %d frames", n_frames)
    for i in range(n_frames):
        time.sleep(0.02)
        print("frame %d: exposure 10 ms" % i)
        if i == 1:
            log.warning("sensor temperature %.1f C", 41.5)
    log.info("acquisition done")
    return n_frames


def analyse(frames):
    """The analysis: a record, a raw write to fd 2 (as native code would do),
    and a worker thread that dies of an exception."""
    log = logging.getLogger("analysis")
    log.info("mean intensity over %d frames: %.1f", frames, 117.3)
    os.write(2, b"libdetector: calibration table not found, using defaults\n")

    def fit():
        raise ZeroDivisionError("division by zero in the fit")

    worker = threading.Thread(target=fit, name="fit-worker")
    worker.start()
    worker.join()


# ---- the main process -----------------------------------------------------------


def main():
    from farcall import ProcessSpawner
    from farcall.log import RPCLogHandler, set_process_name, start_log_server

    set_process_name("main")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(RPCLogHandler())  # coloured on a terminal, plain otherwise
    server = start_log_server(root)
    log = logging.getLogger("demo")
    log.info("log server at %s", server.address)

    camera = ProcessSpawner(name="camera", log_addr=server.address)
    analysis = ProcessSpawner(name="analysis", log_addr=server.address)
    for child in (camera, analysis):
        child.client._import("sys").path.insert(0, HERE)
    cam = camera.client._import("logging_demo")
    ana = analysis.client._import("logging_demo")

    frames = cam.acquire(3)
    ana.analyse(frames)
    log.info("stopping the children")
    camera.stop()
    analysis.stop()
    time.sleep(0.5)  # let the last records arrive; the handler prints them sorted
    server.close()


if __name__ == "__main__":
    sys.exit(main())
