"""Compile the CUDA kernels with nvcc, and find compiled kernels that fit a GPU.

The serving container has no nvcc, so the export step calls :func:`compile_kernels` and ships its
output: one fatbin per source (SASS for every requested architecture plus PTX of the newest one, which
the driver JIT-compiles on a newer GPU) and ``manifest.json`` recording the nvcc version, the
architectures and the sha256 of every source. At load, :func:`find_kernel_build` accepts a build only
when its sources are today's and its code runs on the GPU; where nvcc exists, :func:`ensure_kernels`
compiles one for the GPU into a cache directory instead.

Nothing here imports torch or pycuda.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from magnet_triton.errors import MagnetError

log = logging.getLogger(__name__)

#: The kernel sources, each compiled to its own module (fatbin).
KERNEL_SOURCES = ("refine.cu", "smooth.cu", "topk.cu")
#: Ampere (A100, A10/RTX 30), Ada (L4/L40, RTX 40), Hopper (H100/H200).
DEFAULT_ARCHS = ("sm_80", "sm_86", "sm_89", "sm_90")
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
#: -fmad=false: no multiply-add contraction, so every value equals the PyTorch twin's bit for bit (the
#: kernels are memory-bound; FMA buys nothing here). No --use_fast_math: the nearest-resize ratio needs
#: IEEE division.
NVCC_FLAGS = ("-O3", "-std=c++17", "-fmad=false")
ENV_KERNEL_DIR = "MAGNET_TRITON_KERNEL_DIR"
ENV_NVCC = "MAGNET_TRITON_NVCC"


class KernelsUnavailableError(RuntimeError):
    """No usable compiled kernels for this GPU (the PyTorch steps still work)."""


def source_dir() -> Path:
    """The folder holding the ``.cu`` sources (shipped as package data)."""
    return Path(__file__).resolve().parent


def source_hashes() -> dict[str, str]:
    """sha256 (hex) of each kernel source, by file name."""
    return {name: hashlib.sha256((source_dir() / name).read_bytes()).hexdigest() for name in KERNEL_SOURCES}


def sources_sha256() -> str:
    """One sha256 over every source, in :data:`KERNEL_SOURCES` order: the identity of a kernel build."""
    digest = hashlib.sha256()
    for name, value in source_hashes().items():
        digest.update(f"{name}:{value}\n".encode())
    return digest.hexdigest()


def nvcc_version(nvcc: str = "nvcc") -> str:
    """``"13.0.88"`` from ``nvcc --version`` (raises :class:`MagnetError` when nvcc does not run)."""
    text = _run([nvcc, "--version"]).stdout
    match = re.search(r"release [\d.]+, V([\d.]+)", text)
    return match.group(1) if match else text.strip().splitlines()[-1]


def supported_archs(nvcc: str = "nvcc") -> list[str]:
    """The ``sm_XY`` targets this nvcc can generate code for (``nvcc --list-gpu-code``)."""
    return [a for a in _run([nvcc, "--list-gpu-code"]).stdout.split() if a.startswith("sm_")]


def nvcc_command(source: Path, output: Path, archs: Sequence[str], *, nvcc: str = "nvcc") -> list[str]:
    """The nvcc command line that builds ``source`` into a fatbin at ``output``."""
    command = [nvcc, "--fatbin", *NVCC_FLAGS]
    for arch in archs:
        number = _arch_number(arch)
        command += ["-gencode", f"arch=compute_{number},code=sm_{number}"]
    newest = max(_arch_number(a) for a in archs)
    command += ["-gencode", f"arch=compute_{newest},code=compute_{newest}"]  # PTX for newer GPUs
    return [*command, "-o", str(output), str(source)]


def compile_kernels(
    out_dir: str | os.PathLike[str], archs: Sequence[str] = DEFAULT_ARCHS, nvcc: str = "nvcc"
) -> Path:
    """Compile every kernel source into ``out_dir`` and write its manifest; returns the manifest path.

    ``out_dir`` gets ``<source>.fatbin`` per source and ``manifest.json``. Architectures are ``sm_XY``
    names; nvcc 13 dropped everything below ``sm_75``, and an architecture this nvcc cannot target is a
    :class:`MagnetError` naming the ones it can.
    """
    archs = list(dict.fromkeys(archs))
    if not archs:
        raise MagnetError("compile_kernels needs at least one architecture, e.g. sm_90")
    available = supported_archs(nvcc)
    missing = [a for a in archs if a not in available]
    if missing:
        raise MagnetError(
            f"nvcc {nvcc_version(nvcc)} cannot build for {', '.join(missing)}; it supports {', '.join(available)}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    modules = {}
    for name in KERNEL_SOURCES:
        target = out / (Path(name).stem + ".fatbin")
        result = _run(nvcc_command(source_dir() / name, target, archs, nvcc=nvcc))
        if result.stderr.strip():
            log.warning("nvcc %s: %s", name, result.stderr.strip())
        modules[name] = {"file": target.name, "sha256": hashlib.sha256(target.read_bytes()).hexdigest()}
    manifest = {
        "format": MANIFEST_FORMAT,
        "nvcc_version": nvcc_version(nvcc),
        "archs": archs,
        "ptx": f"compute_{max(_arch_number(a) for a in archs)}",
        "flags": list(NVCC_FLAGS),
        "sources": source_hashes(),
        "sources_sha256": sources_sha256(),
        "modules": modules,
    }
    path = out / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def runs_on(manifest: dict, capability: tuple[int, int]) -> bool:
    """Whether a build's code runs on a GPU of compute ``capability`` (major, minor).

    SASS for sm_Mm runs on sm_Mn with n >= m (same major); PTX for compute_XY is JIT-compiled for any
    GPU of capability XY or newer.
    """
    major, minor = capability
    for arch in manifest.get("archs", []):
        number = _arch_number(arch)
        if number // 10 == major and number % 10 <= minor:
            return True
    ptx = manifest.get("ptx")
    return ptx is not None and _arch_number(ptx) <= major * 10 + minor


def find_kernel_build(capability: tuple[int, int], directories: Sequence[Path]) -> Path | None:
    """The first directory whose manifest matches today's sources and runs on ``capability``."""
    current = sources_sha256()
    for directory in directories:
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            continue
        manifest = json.loads(path.read_text())
        if manifest.get("sources_sha256") != current:
            log.warning("ignoring kernels in %s: built from other sources than this package's", directory)
        elif not runs_on(manifest, capability):
            log.info("kernels in %s do not run on sm_%d%d", directory, *capability)
        else:
            return Path(directory)
    return None


def default_search_dirs() -> list[Path]:
    """Where built kernels are looked for: ``$MAGNET_TRITON_KERNEL_DIR``, ``compiled/`` beside the
    sources, then the per-source-version cache directory."""
    dirs = [Path(os.environ[ENV_KERNEL_DIR])] if os.environ.get(ENV_KERNEL_DIR) else []
    return [*dirs, source_dir() / "compiled", cache_dir()]


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/magnet_triton/kernels/<first 16 hex of the sources' sha256>``."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "magnet_triton" / "kernels" / sources_sha256()[:16]


def ensure_kernels(capability: tuple[int, int], kernel_dir: str | os.PathLike[str] | None = None) -> Path:
    """A directory of compiled kernels that run on ``capability``; compiles into the cache if needed.

    Looks in ``kernel_dir`` (when given), then :func:`default_search_dirs`. Compiling needs nvcc
    (``$MAGNET_TRITON_NVCC`` or on ``PATH``); without it this raises :class:`KernelsUnavailableError`.
    """
    dirs = ([Path(kernel_dir)] if kernel_dir is not None else []) + default_search_dirs()
    found = find_kernel_build(capability, dirs)
    if found is not None:
        return found
    arch = f"sm_{capability[0]}{capability[1]}"
    nvcc = os.environ.get(ENV_NVCC) or shutil.which("nvcc")
    if nvcc is None:
        raise KernelsUnavailableError(
            f"no compiled MagNet kernels for {arch} in {', '.join(map(str, dirs))}, and no nvcc to build them: "
            "run magnet_triton.kernels.compile_kernels(...) at export time and point "
            f"${ENV_KERNEL_DIR} at its output"
        )
    log.info("compiling the MagNet kernels for %s with %s into %s", arch, nvcc, cache_dir())
    try:
        compile_kernels(cache_dir(), archs=(arch,), nvcc=nvcc)
    except MagnetError as e:
        raise KernelsUnavailableError(str(e)) from e
    return cache_dir()


def read_modules(directory: Path) -> dict[str, bytes]:
    """The compiled module images of a kernel build directory, by source name."""
    manifest = json.loads((Path(directory) / MANIFEST_NAME).read_text())
    return {
        name: (Path(directory) / entry["file"]).read_bytes() for name, entry in manifest["modules"].items()
    }


def _arch_number(arch: str) -> int:
    match = re.fullmatch(r"(?:sm|compute)_(\d+)", arch)
    if match is None:
        raise MagnetError(f"not a CUDA architecture name: {arch!r} (expected e.g. sm_90)")
    return int(match.group(1))


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as e:
        raise MagnetError(f"cannot run {command[0]}: {e}; install the CUDA toolkit or pass nvcc=...") from e
    if result.returncode != 0:
        raise MagnetError(f"{' '.join(command)} failed:\n{result.stderr.strip()}")
    return result
