"""Find a runnable ``tritonserver`` and make the one bundled in ``nvidia-pytriton`` work outside its container.

A ``tritonserver`` on ``PATH`` (the NGC container ``nvcr.io/nvidia/tritonserver:<yy.mm>-py3``, the GPU
target) is used as it is. Otherwise the binary bundled in the ``nvidia-pytriton`` wheel (Triton 2.51,
Python backend only, the CPU target) is made runnable: its Python backend is copied into a cached
backend directory together with the ``triton_python_backend_stub`` built for this interpreter's Python
version, and the wheel's ``nvidia_pytriton.libs`` goes on ``LD_LIBRARY_PATH`` (the copies lose the
wheel's relative RPATH).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import logging
import os
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from magnet_triton.errors import MagnetError

log = logging.getLogger(__name__)

_INSTALL_HINT = (
    "no tritonserver found: for the CPU target run `pip install nvidia-pytriton` (or "
    "`pip install 'magnet-triton[cpu]'`) in this environment; for the GPU target run inside the NGC "
    "container nvcr.io/nvidia/tritonserver:<yy.mm>-py3, which has tritonserver on PATH"
)


@dataclass(frozen=True)
class ServerInstall:
    """A runnable ``tritonserver``.

    Attributes:
        binary: the ``tritonserver`` executable.
        backend_dir: what to pass as ``--backend-directory``; None keeps the binary's default.
        cache_dir: what to pass as ``--cache-directory``; None keeps the binary's default.
        library_paths: directories to put first on ``LD_LIBRARY_PATH``.
        bundled: True for the binary from the ``nvidia-pytriton`` wheel.
    """

    binary: Path
    backend_dir: Path | None
    cache_dir: Path | None
    library_paths: tuple[Path, ...]
    bundled: bool


#: Points at a ``pytriton/tritonserver`` folder laid out as the wheel installs it, with its
#: ``nvidia_pytriton.libs`` two levels up (the device kit unpacks one): used instead of the wheel.
ROOT_VARIABLE = "MAGNET_TRITONSERVER_ROOT"


def _bundled_triton_root() -> Path | None:
    """``pytriton/tritonserver`` inside the installed ``nvidia-pytriton`` wheel (or at
    ``$MAGNET_TRITONSERVER_ROOT``), or None."""
    if os.environ.get(ROOT_VARIABLE):
        root = Path(os.environ[ROOT_VARIABLE])
        if not (root / "bin" / "tritonserver").is_file():
            raise MagnetError(f"{ROOT_VARIABLE}={root} holds no bin/tritonserver")
        return root
    # find_spec locates the package without importing it (pytriton's import is slow and heavy).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    return root if (root / "bin" / "tritonserver").is_file() else None


def _default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "magnet_triton"


def _libpython_dir() -> Path | None:
    """The directory of this interpreter's ``libpython3.X.so``, when it has one.

    The stub links ``libpython3.X.so.1.0`` dynamically; preferring the one that belongs to the running
    interpreter keeps the stub's C library and standard library (found through the venv) the same
    build, instead of whatever the system's loader finds first.
    """
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if libdir and soname and (Path(libdir) / soname).is_file():
        return Path(libdir)
    return None


def _check_libpython_loadable() -> None:
    """Fail now, not at the first model load, when the stub's ``libpython3.X.so.1.0`` cannot be found.

    Without it every stub exits at once ("error while loading shared libraries") and Triton waits for
    models that never load: a server that is never ready, with the cause only in its log. Debian and
    Ubuntu ship the library apart from the interpreter; a static build (pyenv or source without
    ``--enable-shared``) has none.

    Raises:
        MagnetError: neither this interpreter's LIBDIR nor the system's loader has it.
    """
    if _libpython_dir() is not None:
        return
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    soname = f"libpython{version}.so.1.0"
    try:
        ctypes.CDLL(soname)
    except OSError:
        raise MagnetError(
            f"the bundled tritonserver's Python-backend stub needs {soname}, which neither this Python "
            f"({sys.executable}, LIBDIR {sysconfig.get_config_var('LIBDIR')}) nor the system's loader has, so "
            f"no model could start: install it (Debian/Ubuntu: apt-get install libpython{version}; a pyenv or "
            "source build: configure with --enable-shared)"
        ) from None


def _assemble_backend_dir(triton_root: Path, cache_root: Path) -> Path:
    """Copy the bundled Python backend and this Python's stub into ``cache_root/backends-<hash>``.

    Idempotent and safe against concurrent callers: the directory is built under a temporary name and
    renamed into place, and one that is already complete is reused.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = triton_root / "python_backend_stubs" / version / "triton_python_backend_stub"
    backend_src = triton_root / "backends" / "python"
    if not stub.is_file():
        available = sorted(p.name for p in (triton_root / "python_backend_stubs").glob("*"))
        raise MagnetError(
            f"the bundled tritonserver has no Python backend stub for Python {version} "
            f"(it has {', '.join(available) or 'none'}); use one of those Python versions"
        )
    sources = [stub, *sorted(p for p in backend_src.iterdir() if p.is_file())]
    key = hashlib.sha256()
    for path in sources:
        st = path.stat()
        key.update(f"{path}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    target = cache_root / f"backends-{key.hexdigest()[:16]}"
    marker = target / ".complete"
    if marker.is_file():
        return target

    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".backends-", dir=cache_root))
    try:
        (staging / "python").mkdir()
        for path in sources:
            shutil.copy2(path, staging / "python" / path.name)
        (staging / ".complete").write_text(f"{triton_root}\n")
        try:
            os.rename(staging, target)
        except OSError:
            if not marker.is_file():  # not a concurrent winner: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.debug("assembled Python backend directory %s", target)
    return target


def find_tritonserver(*, cache_root: Path | None = None) -> ServerInstall:
    """Find a runnable ``tritonserver``: the one on ``PATH``, else the one in ``nvidia-pytriton``.

    Args:
        cache_root: where the bundled binary's backend directory is assembled; default
            ``$XDG_CACHE_HOME/magnet_triton`` (``~/.cache/magnet_triton``).

    Raises:
        MagnetError: neither exists (the message says how to get one), or the wheel has no stub for
            this Python version.
    """
    on_path = shutil.which("tritonserver")
    if on_path:
        binary = Path(on_path).resolve()
        prefix = binary.parent.parent  # /opt/tritonserver in the NGC container
        backends, caches = prefix / "backends", prefix / "caches"
        return ServerInstall(
            binary=binary,
            backend_dir=backends if backends.is_dir() else None,
            cache_dir=caches if caches.is_dir() else None,
            library_paths=(),
            bundled=False,
        )
    root = _bundled_triton_root()
    if root is None:
        raise MagnetError(_INSTALL_HINT)
    _check_libpython_loadable()
    library_paths = [root.parent.parent / "nvidia_pytriton.libs"]
    if (libpython := _libpython_dir()) is not None:
        library_paths.append(libpython)
    return ServerInstall(
        binary=root / "bin" / "tritonserver",
        backend_dir=_assemble_backend_dir(root, cache_root or _default_cache_root()),
        cache_dir=root / "caches",
        library_paths=tuple(p for p in library_paths if p.is_dir()),
        bundled=True,
    )
