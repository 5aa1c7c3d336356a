"""The Python package builds, imports, and reports the engine's version."""

import re
import textwrap

import farcall
from farcall import _native


def test_version_comes_from_the_native_module():
    assert farcall.__version__ == _native.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", farcall.__version__)


def test_log_and_serializer_are_lazy_attributes():
    """pyacq's package had ``farcall.log`` and ``farcall.serializer`` after a
    bare ``import``; farcall imports them on first access, so a child's
    start does not pay for them (issue 11, item 12)."""
    import subprocess
    import sys

    code = textwrap.dedent(
        """
        import sys
        import farcall
        assert "farcall.log" not in sys.modules, "farcall.log imported eagerly"
        assert "farcall.serializer" not in sys.modules, "farcall.serializer imported eagerly"
        assert {"log", "serializer"} <= set(dir(farcall))
        assert farcall.log is sys.modules["farcall.log"]
        assert callable(farcall.log.get_logger_address)
        assert "msgpack" in farcall.serializer.all_serializers
        try:
            farcall.no_such_name
        except AttributeError as e:
            assert "no_such_name" in str(e)
        else:
            raise AssertionError("no AttributeError")
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
