"""Choosing the malloc ``serve`` preloads into tritonserver and its stubs.

The preload itself is checked on a real server in ``test_server_launcher.py``.
"""

from __future__ import annotations

import ctypes.util
import os
import subprocess

import pytest

from magnet_triton.errors import MagnetError
from magnet_triton.server import allocator as allocator_mod
from magnet_triton.server.allocator import CHOICES, Allocator, choose_allocator


def test_system_preloads_nothing_and_keeps_what_the_caller_preloads():
    system = choose_allocator("system")
    assert system.library is None
    assert system.preload(None) is None
    assert system.preload("libmine.so") == "libmine.so"
    assert "glibc" in system.describe()


def test_a_preloaded_allocator_comes_before_what_the_caller_preloads():
    tcmalloc = Allocator("tcmalloc", "libtcmalloc_minimal.so.4")
    assert tcmalloc.preload(None) == "libtcmalloc_minimal.so.4"
    # The dynamic loader resolves malloc from the first object that defines it.
    assert tcmalloc.preload("libmine.so") == "libtcmalloc_minimal.so.4 libmine.so"
    assert "tcmalloc" in tcmalloc.describe() and "preloaded" in tcmalloc.describe()


def test_an_unknown_allocator_is_refused_with_the_choices():
    with pytest.raises(MagnetError, match="unknown allocator 'mimalloc'") as e:
        choose_allocator("mimalloc")
    assert all(choice in str(e.value) for choice in CHOICES)


def test_a_named_allocator_that_is_not_installed_says_which_package_installs_it(monkeypatch):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.raises(MagnetError, match="allocator jemalloc is not installed") as e:
        choose_allocator("jemalloc")
    assert "apt-get install libjemalloc2" in str(e.value)
    assert "--allocator system" in str(e.value)


@pytest.mark.parametrize("name", list(allocator_mod.PRELOADABLE))
def test_an_installed_allocator_is_found_by_the_loader_name(name):
    library = allocator_mod._find(name)
    if library is None:
        pytest.skip(f"{name} is not installed here (apt-get install {allocator_mod.PRELOADABLE[name][1]})")
    assert choose_allocator(name) == Allocator(name, library)
    # The loader resolves the bare file name through ld.so.cache: a process started with it preloaded
    # maps it (a name it cannot find is skipped with only a warning on stderr).
    env = {**os.environ, "LD_PRELOAD": Allocator(name, library).preload(None)}
    maps = subprocess.run(["cat", "/proc/self/maps"], env=env, capture_output=True, text=True, check=True)
    assert library in maps.stdout, maps.stderr
