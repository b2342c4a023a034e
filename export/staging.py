"""Build an output folder beside itself, then rename it into place.

A folder with the final name is then always complete: an interrupted or failed build leaves only a
hidden ``.<name>.*.partial`` sibling (removed by the caller), never half an output.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from magnet_triton.errors import MagnetError


@dataclass(frozen=True)
class Staging:
    """The folders of one staged build.

    Attributes:
        output: build the result here; it becomes ``out_dir`` when the build succeeds.
        scratch: intermediate files, deleted with the staging folder whatever happens.
    """

    output: Path
    scratch: Path


@contextmanager
def staged_output(out_dir: Path, manifest: str, *, replace: bool = True) -> Iterator[Staging]:
    """Build into a hidden sibling of ``out_dir`` and rename the result into place on success.

    On any exception (Ctrl-C included) the sibling is deleted and ``out_dir`` is left as it was.
    ``replace``: whether an earlier output (a folder holding ``manifest``) may be replaced; see
    :func:`make_staging_dir`.
    """
    out_dir = Path(out_dir).absolute()
    root = make_staging_dir(out_dir, manifest, replace=replace)
    try:
        staging = Staging(output=root / "output", scratch=root / "scratch")
        staging.output.mkdir()
        staging.scratch.mkdir()
        yield staging
        move_into_place(staging.output, out_dir)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def make_staging_dir(out_dir: Path, manifest: str, *, replace: bool = True) -> Path:
    """A new hidden sibling of ``out_dir`` to build into; refuses an ``out_dir`` this code did not write.

    ``out_dir`` may be missing, empty, or (when ``replace``) an earlier output (it holds ``manifest``);
    anything else is someone's files, and replacing them later would lose them.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise MagnetError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not replace:
            raise MagnetError(f"{out_dir} already exists and is not an empty folder; choose a new folder")
        if not (out_dir / manifest).is_file():
            raise MagnetError(
                f"{out_dir} is not empty and holds no {manifest}: refusing to replace files this command "
                "did not write; choose a new or empty folder"
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
