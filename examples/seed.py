"""The seed example of DESIGN.md: drive a dict that lives in a child process.

Run with `bash scripts/demo.sh` (it builds farcall first), or
`.venv/bin/python examples/seed.py` once set up.
"""

import os

from farcall import ProcessSpawner

proc = ProcessSpawner()
print(f"spawned a child: pid {proc.pid}, serving at {proc.address}")

remote_col = proc.client._import("collections")
remote_dict = remote_col.OrderedDict()
remote_dict["x"] = 1
assert "x" in remote_dict.keys()
assert remote_dict["x"] == 1

# An OrderedDict is not a plain dict, so it stays in the child: we hold a
# proxy, and every operation above ran over there.
print(f"remote_dict is {remote_dict!r}")
print(f"remote_dict['x'] == {remote_dict['x']}; keys: {list(remote_dict.keys())}")
remote_os = proc.client._import("os")
print(f"the dict lives in process {remote_os.getpid()}; this is process {os.getpid()}")
assert remote_os.getpid() == proc.pid != os.getpid()

print(f"child stopped, exit code {proc.stop()}")
