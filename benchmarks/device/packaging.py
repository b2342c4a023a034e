"""What travels to the GPU machine: the trimmed server, the wheels it lacks, and the kit's manifest.

``prepare.sh`` builds these; :mod:`benchmarks.device.kit` checks them (``run --dry-run``) and uses them.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
KIT_DIR = REPO_ROOT / "benchmarks" / "device" / "kit"
#: What travels besides the working tree: the issue's budget, under the device tool's 64 MiB.
MAX_KIT_BYTES = 40 * 2**20
#: The Python of the GPU machine; the server archive carries this version's stub.
DEVICE_PYTHON = "3.12"
#: What the GPU machine lacks, as requirements for its Python 3.12; prepare.sh downloads them with their
#: dependencies (so the versions fit together), then drops what the machine has of its own.
DEVICE_REQUIREMENTS = ("tritonclient[grpc]==2.73.0", "pytools", "platformdirs", "mako")
#: On the machine already (the device tool's KINDS.md lists its image's packages): its versions stay,
#: since its torch, JAX and OpenCV were installed against them, and they would not fit the budget.
MACHINE_OWN = (
    "numpy", "grpcio", "ml_dtypes", "pillow", "protobuf", "pytest", "pluggy", "iniconfig", "pygments",
    "packaging", "urllib3", "markupsafe", "typing_extensions",
)  # fmt: skip
PYCUDA = "pycuda"


# ---------------------------------------------------------------------- the server archive
def _needed(path: Path) -> list[str]:
    """The DT_NEEDED sonames of an ELF file (``readelf -d``)."""
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return [line.split("[", 1)[1].split("]", 1)[0] for line in out.splitlines() if "(NEEDED)" in line]


def library_closure(binaries: Iterable[Path], libs_dir: Path) -> list[Path]:
    """The libraries of ``libs_dir`` that ``binaries`` need, directly or through each other."""
    available = {p.name: p for p in libs_dir.iterdir() if p.is_file()}
    todo, found = list(binaries), {}
    while todo:
        for soname in _needed(todo.pop()):
            if soname in available and soname not in found:
                found[soname] = available[soname]
                todo.append(available[soname])
    return sorted(found.values())


def server_files(triton_root: Path, python: str = DEVICE_PYTHON) -> dict[str, Path]:
    """Archive name -> file of the trimmed server, laid out as ``nvidia-pytriton`` installs it.

    ``triton_root`` is ``pytriton/tritonserver``; its ``nvidia_pytriton.libs`` sits two levels up. The
    layout is kept so that :func:`magnet_triton.server.install.find_tritonserver` finds it through
    ``MAGNET_TRITONSERVER_ROOT`` exactly as it finds the installed wheel.
    """
    libs = triton_root.parent.parent / "nvidia_pytriton.libs"
    stub = triton_root / "python_backend_stubs" / python / "triton_python_backend_stub"
    backend = triton_root / "backends" / "python"
    binaries = [triton_root / "bin" / "tritonserver", backend / "libtriton_python.so", stub]
    missing = [str(p) for p in binaries if not p.is_file()]
    if missing:
        raise SystemExit(f"the installed nvidia-pytriton lacks {missing}")
    files = {
        "pytriton/tritonserver/bin/tritonserver": binaries[0],
        "pytriton/tritonserver/backends/python/libtriton_python.so": binaries[1],
        "pytriton/tritonserver/backends/python/triton_python_backend_utils.py": backend
        / "triton_python_backend_utils.py",
        f"pytriton/tritonserver/python_backend_stubs/{python}/triton_python_backend_stub": stub,
    }
    files.update({f"nvidia_pytriton.libs/{p.name}": p for p in library_closure(binaries, libs)})
    return files


def build_server_archive(out: Path) -> dict[str, Any]:
    """Write the trimmed server as ``out`` (tar.xz); returns what went in."""
    from magnet_triton.server.install import _bundled_triton_root

    root = _bundled_triton_root()
    if root is None:
        raise SystemExit("nvidia-pytriton is not installed here: pip install 'magnet-triton[cpu]'")
    files = server_files(root)
    with tarfile.open(out, "w:xz", preset=6) as tar:
        for name, path in sorted(files.items()):
            tar.add(path, arcname=f"server/{name}")
    return {"files": sorted(files), "bytes_in": sum(p.stat().st_size for p in files.values())}


# ---------------------------------------------------------------------- the kit's files
def kit_manifest(kit: Path) -> dict[str, Any]:
    """Every file of the kit with its size, the total, and whether it fits :data:`MAX_KIT_BYTES`."""
    files = {p.relative_to(kit).as_posix(): p.stat().st_size for p in sorted(kit.rglob("*")) if p.is_file()}
    total = sum(files.values())
    return {"files": files, "total_bytes": total, "max_bytes": MAX_KIT_BYTES, "fits": total <= MAX_KIT_BYTES}


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def check_wheels_resolve(kit: Path, scratch: Path) -> list[str]:
    """Every wheel of the kit installs on the GPU machine's Python 3.12, offline; pycuda's source and
    this package's wheel are there, and nothing the machine has of its own is replaced."""
    wheels = sorted((kit / "wheels").glob("*.whl"))
    _pip(
        "install", "--dry-run", "--quiet", "--no-index", "--no-deps", "--target", str(scratch),
        "--only-binary=:all:", "--python-version", DEVICE_PYTHON, "--implementation", "cp",
        "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
        *map(str, wheels),
    )  # fmt: skip
    names = [w.name.split("-")[0].lower() for w in wheels]
    if not list((kit / "wheels").glob(f"{PYCUDA}-*.tar.gz")):
        raise SystemExit(f"the kit has no {PYCUDA} source distribution")
    for required in ("magnet_triton", "tritonclient", "python_rapidjson", "pytools"):
        if required not in names:
            raise SystemExit(f"the kit has no {required} wheel")
    replaced = sorted(set(names) & set(MACHINE_OWN))
    if replaced:
        raise SystemExit(f"the kit would replace the machine's own {replaced}")
    return [w.name for w in wheels]


def check_server_archive(kit: Path) -> dict[str, Any]:
    """The archive holds the server, the Python backend and the 3.12 stub; the stub's libpython need."""
    with tarfile.open(kit / "server.tar.xz") as tar:
        names = set(tar.getnames())
    stub = f"server/pytriton/tritonserver/python_backend_stubs/{DEVICE_PYTHON}/triton_python_backend_stub"
    for required in ("server/pytriton/tritonserver/bin/tritonserver", stub):
        if required not in names:
            raise SystemExit(f"server.tar.xz lacks {required}")
    return {"members": len(names), "stub_needs": f"libpython{DEVICE_PYTHON}.so.1.0"}
