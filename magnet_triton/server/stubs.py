"""The Python-backend stub processes of a ``tritonserver``, read from ``/proc``.

Each instance of a Python-backend model runs in a stub process, a child of ``tritonserver`` whose
first argument is the model's ``<repository>/<model>/<version>/model.py``. When one dies (killed for
memory, say), Triton keeps reporting the model ready and answers every request it routes there with
"Stub process ... is not healthy"; only the parent can see it go, by its process vanishing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STUB_BINARY = "triton_python_backend_stub"


@dataclass(frozen=True)
class Stub:
    """One live stub process: ``model`` version ``version`` (the folder names in the repository)."""

    pid: int
    model: str
    version: str


def _parent_and_state(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return int(ppid), state


def _stub_of(pid: int) -> Stub | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if len(argv) < 2 or not argv[0].decode(errors="replace").endswith(STUB_BINARY):
        return None
    model_py = Path(argv[1].decode(errors="replace"))
    return Stub(pid=pid, model=model_py.parent.parent.name, version=model_py.parent.name)


def live_stubs(server_pid: int) -> list[Stub]:
    """The stubs of ``server_pid`` that are running (zombies, already dead, are left out), by pid.

    Empty where there is no ``/proc`` (not Linux) or the server has no Python-backend models.
    """
    stubs = []
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        parent = _parent_and_state(pid)
        if parent is None or parent[0] != server_pid or parent[1] in ("Z", "X"):
            continue
        stub = _stub_of(pid)
        if stub is not None:
            stubs.append(stub)
    return sorted(stubs, key=lambda s: s.pid)


def count_by_model(stubs: list[Stub]) -> dict[str, int]:
    """How many live stubs each model has."""
    counts: dict[str, int] = {}
    for stub in stubs:
        counts[stub.model] = counts.get(stub.model, 0) + 1
    return counts


def cpu_ticks(pid: int) -> int | None:
    """User plus system CPU time ``pid`` has used, in clock ticks; None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name: state is field 3, utime field 14 and stime field 15 of proc(5).
    return int(fields[11]) + int(fields[12])
