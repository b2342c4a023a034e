"""The memory allocator ``tritonserver`` and its Python-backend stubs run with.

Triton's model-management guide suggests tcmalloc or jemalloc where a server's memory grows while it
loads and unloads models (glibc's malloc may keep what it freed), and to try both. An allocator given
through ``LD_PRELOAD`` is inherited by every stub the server starts. Measured here in the soak
(``benchmarks/soak.py``, ``benchmarks/RESULTS.md``), neither stopped ``tritonserver``'s growth under load
and tcmalloc raised the footprint, so glibc's stays the default; the choice is for measuring and for
operators whose workload differs.
"""

from __future__ import annotations

import ctypes.util
from dataclasses import dataclass

from magnet_triton.errors import MagnetError

#: The allocators ``serve --allocator`` can preload, each with the ``ctypes.util.find_library`` names that
#: provide it and the Debian/Ubuntu package that installs it.
PRELOADABLE = {
    "tcmalloc": (("tcmalloc_minimal", "tcmalloc"), "libtcmalloc-minimal4"),
    "jemalloc": (("jemalloc",), "libjemalloc2"),
}
SYSTEM = "system"
CHOICES = (SYSTEM, *PRELOADABLE)


@dataclass(frozen=True)
class Allocator:
    """An allocator to run the server with.

    Attributes:
        name: ``tcmalloc``, ``jemalloc`` or ``system`` (glibc's malloc, nothing preloaded).
        library: the shared object to preload (a file name the dynamic loader finds), or None.
    """

    name: str
    library: str | None = None

    def preload(self, existing: str | None) -> str | None:
        """``LD_PRELOAD`` with this allocator first, before what the caller already preloads."""
        parts = [p for p in (self.library, existing) if p]
        return " ".join(parts) or None

    def describe(self) -> str:
        """One line for the log: which allocator, and from which library."""
        if self.library is None:
            return "glibc malloc (nothing preloaded)"
        return f"{self.name} ({self.library}, preloaded)"


def _find(name: str) -> str | None:
    """The library file name of allocator ``name`` if the dynamic loader can find it, else None."""
    candidates, _ = PRELOADABLE[name]
    for candidate in candidates:
        found = ctypes.util.find_library(candidate)
        if found:
            return found
    return None


def choose_allocator(choice: str) -> Allocator:
    """The allocator for ``serve --allocator CHOICE``.

    ``system`` is glibc's malloc, nothing preloaded. A named allocator that is not installed is an
    error, not a quiet fallback to glibc's.

    Raises:
        MagnetError: ``choice`` is unknown, or names an allocator that is not installed (the message
            names the package that installs it).
    """
    if choice == SYSTEM:
        return Allocator(SYSTEM)
    if choice not in PRELOADABLE:
        raise MagnetError(f"unknown allocator {choice!r}; choose one of {', '.join(CHOICES)}")
    library = _find(choice)
    if library is None:
        package = PRELOADABLE[choice][1]
        raise MagnetError(
            f"allocator {choice} is not installed (the dynamic loader finds no lib{choice}); "
            f"install it (Debian/Ubuntu: apt-get install {package}) or pass --allocator {SYSTEM}"
        )
    return Allocator(choice, library)
