"""farcall: control other processes through object proxies.

The engine is written in Rust (``farcall._native``); this package is a thin
facade over it.
"""

from ._native import __version__

__all__ = ["__version__"]
