"""The Python package builds, imports, and reports the engine's version."""

import re

import farcall
from farcall import _native


def test_version_comes_from_the_native_module():
    assert farcall.__version__ == _native.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", farcall.__version__)
