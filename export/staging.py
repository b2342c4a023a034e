"""Build an output folder beside itself, then rename it into place.

A folder with the final name is then always complete: an interrupted or failed build leaves only a
hidden ``.<name>.*.partial`` sibling (removed by the caller), never half an output.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from magnet_triton.errors import MagnetError


def make_staging_dir(out_dir: Path, manifest: str) -> Path:
    """A new hidden sibling of ``out_dir`` to build into; refuses an ``out_dir`` this code did not write.

    ``out_dir`` may be missing, empty, or an earlier output (it holds ``manifest``); anything else is
    someone's files, and replacing them later would lose them.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise MagnetError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / manifest).is_file():
        raise MagnetError(
            f"{out_dir} is not empty and holds no {manifest}: refusing to replace files this command did "
            "not write; choose a new or empty folder"
        )
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    except OSError as e:
        raise MagnetError(f"cannot write into {out_dir.parent}: {e.strerror or e}") from e
    # mkdtemp makes the folder private (0700); the result must be readable like any other output,
    # e.g. by a tritonserver running as another user.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    return tmp


def move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``; earlier artifacts there are moved aside first, then deleted."""
    old = None
    try:
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
    except OSError as e:
        if old is not None and not out_dir.exists():
            os.rename(old, out_dir)
        raise MagnetError(f"cannot move the output into {out_dir}: {e.strerror or e}") from e
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
