"""benchmarks/proc_memory.py on a real process tree: a shared-memory page mapped by two processes counts
twice in summed RSS and once in summed PSS, and its part shows as shared memory, not private."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks.proc_memory import tree_memory, tree_pids

pytestmark = pytest.mark.skipif(not Path("/proc/self/smaps_rollup").is_file(), reason="needs Linux /proc")

SHARED_MIB = 64

# A parent and its forked child both touch every page of one /dev/shm mapping, then wait for stdin.
TREE = textwrap.dedent(
    f"""
    import mmap, os
    size = {SHARED_MIB} * 2**20
    fd = os.open("/dev/shm/proc-memory-test-%d" % os.getpid(), os.O_CREAT | os.O_RDWR, 0o600)
    os.unlink("/dev/shm/proc-memory-test-%d" % os.getpid())
    os.ftruncate(fd, size)
    shared = mmap.mmap(fd, size)
    shared.write(b"x" * size)
    child = os.fork()
    if child == 0:
        total = sum(shared[i] for i in range(0, size, mmap.PAGESIZE))  # touch every page
    print("ready", flush=True)
    os.read(0, 1)  # unbuffered: each process takes one byte of its own
    """
)


@pytest.fixture
def tree():
    process = subprocess.Popen(
        [sys.executable, "-c", TREE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    # Both processes print "ready" once their pages are touched.
    assert process.stdout is not None
    assert [process.stdout.readline().strip() for _ in range(2)] == ["ready", "ready"]
    yield process
    process.communicate("xx", timeout=30)


def test_the_tree_is_the_parent_and_its_forked_child(tree):
    assert len(tree_pids(tree.pid)) == 2
    assert tree_pids(tree.pid)[0] == tree.pid


def test_a_page_shared_by_two_processes_counts_twice_in_rss_and_once_in_pss(tree):
    sample = tree_memory(tree.pid)
    # Each interpreter adds some MiB of its own; the shared mapping dominates both sums.
    assert sample.rss_mib >= 2 * SHARED_MIB
    assert sample.shmem_mib == pytest.approx(SHARED_MIB, abs=1)
    assert sample.pss_mib < sample.rss_mib - SHARED_MIB * 0.9
    assert sample.private_mib == pytest.approx(sample.pss_mib - SHARED_MIB, abs=1)
    assert sample.by_role == {"other": pytest.approx(sample.pss_mib)}
