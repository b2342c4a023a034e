"""What a server's process tree holds in memory, each page counted once, by process role.

Summing RSS over ``tritonserver`` and its stubs counts a shared page once per process that maps it, and
the Python backend's shared-memory pools (``/dev/shm``) are mapped by ``tritonserver`` and by their
stub: as the touched part of a pool grows, the summed RSS grows by about twice as much, which reads as a
leak that is not there. PSS (``/proc/<pid>/smaps_rollup``) splits each shared page among the processes
that map it, so the sum of PSS over the tree is the memory the tree holds; ``Pss_Shmem`` is its share in
shared memory, and the rest (heap, arenas, code) is what a leak would grow.

Linux only (``/proc``); a process that exits between the listing and the read is skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from magnet_triton.server.stubs import live_stubs

MIB = 2**20


@dataclass(frozen=True)
class TreeMemory:
    """One sample of a process tree, in MiB.

    Attributes:
        rss_mib: summed RSS (shared pages once per mapper: an overcount, kept for comparison).
        pss_mib: summed PSS: every page once.
        shmem_mib: the part of ``pss_mib`` in shared memory (the Python backend's pools).
        by_role: ``pss_mib`` per role: ``tritonserver``, each stub's model name (its instances summed),
            and ``other`` (the supervisor and anything else in the tree).
    """

    rss_mib: float
    pss_mib: float
    shmem_mib: float
    by_role: dict[str, float] = field(default_factory=dict)

    @property
    def private_mib(self) -> float:
        """PSS outside shared memory: heap, allocator arenas, code, what a leak grows."""
        return self.pss_mib - self.shmem_mib


def tree_pids(root: int) -> list[int]:
    """``root`` and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: the parent pid follows its ")".
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


def rollup(pid: int) -> dict[str, int] | None:
    """``/proc/<pid>/smaps_rollup`` as bytes per field (``Rss``, ``Pss``, ``Pss_Shmem``, ...); None if gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    fields: dict[str, int] = {}
    for line in text.splitlines()[1:]:  # the first line is the address range of the rollup
        name, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[name] = int(parts[0]) * 1024
    return fields


def tree_memory(root: int, server_pid: int | None = None) -> TreeMemory:
    """One sample of ``root``'s tree; ``server_pid`` (the ``tritonserver`` in it) names its stubs' roles."""
    roles = {s.pid: s.model for s in live_stubs(server_pid)} if server_pid is not None else {}
    if server_pid is not None:
        roles[server_pid] = "tritonserver"
    rss = pss = shmem = 0
    by_role: dict[str, float] = {}
    for pid in tree_pids(root):
        fields = rollup(pid)
        if fields is None:
            continue
        rss += fields.get("Rss", 0)
        pss += fields.get("Pss", 0)
        shmem += fields.get("Pss_Shmem", 0)
        role = roles.get(pid, "other")
        by_role[role] = by_role.get(role, 0.0) + fields.get("Pss", 0) / MIB
    return TreeMemory(rss / MIB, pss / MIB, shmem / MIB, dict(sorted(by_role.items())))
