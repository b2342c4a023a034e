"""The device kit: what travels to the lent GPU machine, and what runs there.

The GPU machine (one H200, Python 3.12 with a CUDA build of torch, no network, no tritonserver, pycuda
or tritonclient) receives at most 64 MiB per call and its time is scarce. So this machine assembles
everything beforehand (``prepare``), every step that a CPU can run is rehearsed here (``run --dry-run``,
tested in CI), and the GPU run is one call of ``run`` that writes one JSON and one log.

Sub-commands (``python -m benchmarks.device.kit COMMAND``; ``prepare.sh`` and ``run.sh`` call them):

- ``server``: the bundled ``tritonserver`` of ``nvidia-pytriton``, trimmed to what a GPU run needs (the
  binary, the Python backend, the Python 3.12 stub, the shared libraries those link), as ``server.tar.xz``
  (:mod:`benchmarks.device.packaging` holds what travels and its checks).
- ``cpu-results``: the class maps of the CPU path (in process, FP32, seeded random weights) on the images
  the GPU run segments, to compare its class maps with.
- ``manifest``: what the kit holds and its size, against ``packaging.MAX_KIT_BYTES``.
- ``run [--dry-run]``: the device run, or its rehearsal on a CPU machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.device.packaging import (
    KIT_DIR,
    MAX_KIT_BYTES,
    REPO_ROOT,
    build_server_archive,
    check_server_archive,
    check_wheels_resolve,
    kit_manifest,
)

#: Presets the GPU run serves, and the precisions of each.
PRESETS = ("cityscapes", "deepglobe")
PRECISIONS = ("fp32", "fp16")
SEED = 0


# ---------------------------------------------------------------------- images and CPU results
def device_images() -> dict[str, Any]:
    """Preset -> ``BenchImage`` (pixels, encoded file, name): the shared image of each preset, else a
    synthetic one of the preset's size (a clone without ``../shared``: the same scene on both machines)."""
    from benchmarks.common import load_test_image
    from magnet_triton.errors import MagnetError

    images = {}
    for preset, fallback in (("cityscapes", (2048, 1024)), ("deepglobe", (2448, 2448))):
        try:
            images[preset] = load_test_image(preset)
        except MagnetError:
            images[preset] = load_test_image("synthetic", fallback_size=fallback)
    return images


def cpu_results(out: Path, presets: Sequence[str] = PRESETS) -> dict[str, Any]:
    """The FP32 class map of each preset on its image, in process on the CPU, as ``<preset>.png``."""
    from magnet_triton.imageio import write_class_map
    from magnet_triton.local import load_networks
    from magnet_triton.pipeline import run_magnet
    from magnet_triton.settings import get_preset

    out.mkdir(parents=True, exist_ok=True)
    images = device_images()
    record = {}
    for preset in presets:
        name, pixels = images[preset].name, images[preset].pixels
        settings = get_preset(preset)
        start = time.perf_counter()
        result = run_magnet(pixels, settings, load_networks(settings, None, [], random_seed=SEED))
        write_class_map(out / f"{preset}.png", result.segmentation)
        record[preset] = {"image": name, "seconds": round(time.perf_counter() - start, 1), "seed": SEED}
        print(f"cpu result {preset}: {name}, {record[preset]['seconds']} s", flush=True)
    (out / "cpu_results.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of pixels where two H x W class maps are equal (0 when the shapes differ)."""
    return float((a == b).mean()) if a.shape == b.shape else 0.0


# ---------------------------------------------------------------------- the run
class Run:
    """One device run (or its rehearsal): steps that record into one JSON, each failure kept, not fatal."""

    def __init__(self, out: Path, dry_run: bool) -> None:
        self.out = out
        self.dry_run = dry_run
        self.results: dict[str, Any] = {"dry_run": dry_run, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        # Repositories and server logs are hundreds of MiB: outside ``out``, which travels back.
        self.scratch = Path(tempfile.mkdtemp(prefix="magnet-device-"))

    def step(self, name: str, fn: Any, *args: Any) -> Any:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            value = fn(*args)
            self.results[name] = {
                "ok": True,
                "seconds": round(time.perf_counter() - start, 1),
                "value": value,
            }
            return value
        except (Exception, SystemExit) as e:
            self.results[name] = {
                "ok": False,
                "seconds": round(time.perf_counter() - start, 1),
                "error": repr(e),
            }
            print(f"   FAILED: {e!r}", flush=True)
            return None
        finally:
            self.save()

    def save(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2, default=str) + "\n")

    @property
    def failed(self) -> list[str]:
        return [k for k, v in self.results.items() if isinstance(v, dict) and v.get("ok") is False]


def environment() -> dict[str, Any]:
    """What the machine is: Python, libpython, NumPy, torch and CUDA, the GPU and driver."""
    import sysconfig

    info: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine()}
    soname = sysconfig.get_config_var("INSTSONAME")
    libdir = sysconfig.get_config_var("LIBDIR")
    info["libpython"] = (
        str(Path(libdir) / soname) if libdir and soname and (Path(libdir) / soname).exists() else None
    )
    info["numpy"] = np.__version__
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    if shutil.which("nvidia-smi"):
        query = "name,driver_version,memory.total"
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True
        ).stdout.strip()
    return info


def export_repositories(root: Path) -> dict[str, str]:
    """The GPU repositories of the run: each preset with the torch engine, FP32 and FP16, random weights."""
    from magnet_triton.export.build import export_repository
    from magnet_triton.export.repository import RepositoryOptions, read_manifest
    from magnet_triton.settings import get_preset

    written = {}
    for preset in PRESETS:
        for precision in PRECISIONS:
            options = RepositoryOptions(target="gpu", engine="torch", precision=precision, max_batch=16)
            out = export_repository(
                get_preset(preset),
                root / f"{preset}-{precision}",
                random_seed=SEED,
                options=options,
                replace=True,
            )
            written[f"{preset}-{precision}"] = read_manifest(out)["provenance"].get("kernels", "")
    return written


def check_configs(root: Path) -> int:
    """Every config of the exported repositories parses as Triton's ModelConfig."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    count = 0
    for path in sorted(root.glob("*/*/config.pbtxt")):
        text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        count += 1
    return count


def compare_with_cpu(kit: Path, maps: dict[str, np.ndarray]) -> dict[str, float]:
    """Agreement of each preset's class map with the kit's CPU result."""
    from magnet_triton.imageio import read_class_map

    return {
        preset: agreement(read_class_map(kit / "cpu_results" / f"{preset}.png"), m)
        for preset, m in maps.items()
    }


def rehearse_comparison(kit: Path) -> dict[str, Any]:
    """The comparison on the CPU results themselves (1.0) and on a copy with 1 % of pixels changed."""
    from magnet_triton.imageio import read_class_map

    own = {p: read_class_map(kit / "cpu_results" / f"{p}.png") for p in PRESETS}
    flipped = {}
    for preset, m in own.items():
        changed = m.copy().reshape(-1)
        changed[::100] = (changed[::100].astype(np.int32) + 1) % 256
        flipped[preset] = changed.reshape(m.shape)
    same, perturbed = compare_with_cpu(kit, own), compare_with_cpu(kit, flipped)
    if not all(v == 1.0 for v in same.values()) or not all(0.985 < v < 0.995 for v in perturbed.values()):
        raise SystemExit(f"comparison broken: {same} {perturbed}")
    return {"self": same, "one_percent_changed": perturbed}


def serve_and_measure(kit: Path, root: Path, requests: int = 10) -> dict[str, Any]:
    """Serve each exported repository with the carried server and measure it over gRPC (GPU only);
    each class map is compared with the CPU result of its preset."""
    from benchmarks.device.measure import measure_repository

    images, measured = device_images(), {}
    for name in sorted(p.name for p in root.iterdir() if p.is_dir()):
        preset = name.split("-")[0]
        try:
            record = measure_repository(root / name, images[preset].encoded, requests=requests)
        except Exception as e:  # one repository failing must not hide the others' figures
            measured[name] = {"error": repr(e)}
            if "ipc" in str(e).lower():
                # GPU tensors cross between Triton's processes by CUDA IPC, which a sandbox may refuse;
                # the in-process step still proves the kernels and the networks then.
                measured[name]["cuda_ipc_refused"] = True
            continue
        segmentation = record.pop("segmentation")
        record["agreement_with_cpu"] = compare_with_cpu(kit, {preset: segmentation})[preset]
        measured[name] = record
        print(f"   {name}: {record}", flush=True)
    return measured


def in_process_timings() -> dict[str, Any]:
    """``run_magnet`` on the GPU in this process (no Triton): seconds per image, FP32."""
    import torch

    from magnet_triton.local import load_networks
    from magnet_triton.pipeline import run_magnet
    from magnet_triton.settings import get_preset

    images, out = device_images(), {}
    for preset in PRESETS:
        settings = get_preset(preset)
        networks = load_networks(settings, None, [], random_seed=SEED, device="cuda", max_batch=16)
        pixels = images[preset].pixels
        run_magnet(pixels, settings, networks, device="cuda")  # warm-up: cuDNN, kernels, allocator
        torch.cuda.synchronize()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            result = run_magnet(pixels, settings, networks, device="cuda")
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        out[preset] = {
            "p50_ms": round(1000 * float(np.median(times)), 1),
            "segmentation": result.segmentation,
        }
    return out


def eager_baseline(root: Path) -> dict[str, Any]:
    """The eager authors'-structure baseline against the in-process GPU pipeline, per preset, FP32."""
    from benchmarks.gpu_compare import run_gpu_compare
    from magnet_triton.settings import get_preset

    images = device_images()
    return {
        preset: run_gpu_compare(root / f"{preset}-fp32", get_preset(preset), images[preset].pixels, repeats=2)
        for preset in PRESETS
    }


def kernel_tests(marker: str) -> str:
    """The kernel tests of one marker: ``gpu`` (pycuda against the twins, there) or ``not gpu`` (the
    CPU emulator of the kernels against the twins, here)."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        marker,
        "tests/test_kernels.py",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path.cwd())
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode != 0:
        raise SystemExit(f"kernel tests failed: {summary}\n{done.stdout[-3000:]}")
    return summary


def run(out: Path, *, dry_run: bool, kit: Path = KIT_DIR) -> int:
    """The device run (``dry_run``: its rehearsal on a CPU machine). Exit 1 when a step failed."""
    session = Run(out, dry_run)
    session.step("environment", environment)
    session.step("kit", kit_manifest, kit)
    session.step("server_archive", check_server_archive, kit)
    session.step("wheels_resolve", check_wheels_resolve, kit, session.scratch / "site")
    repos = session.scratch / "repositories"
    session.step("export", export_repositories, repos)
    session.step("configs_parse", check_configs, repos)
    if dry_run:
        session.step("kernel_emulator", kernel_tests, "not gpu")
        session.step("comparison", rehearse_comparison, kit)
    else:
        session.step("serve", serve_and_measure, kit, repos)
        timings = session.step("in_process", in_process_timings)
        if timings:
            maps = {p: v.pop("segmentation") for p, v in timings.items()}
            session.step("in_process_agreement_with_cpu", compare_with_cpu, kit, maps)
        session.step("eager_baseline", eager_baseline, repos)
    session.results["failed"] = session.failed
    session.save()
    shutil.rmtree(session.scratch, ignore_errors=True)
    print(f"results: {out / 'results.json'}; failed steps: {session.failed or 'none'}")
    return 1 if session.failed else 0


# ---------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("server").add_argument("--out", type=Path, default=KIT_DIR / "server.tar.xz")
    commands.add_parser("cpu-results").add_argument("--out", type=Path, default=KIT_DIR / "cpu_results")
    manifest = commands.add_parser("manifest")
    manifest.add_argument("--kit", type=Path, default=KIT_DIR)
    run_parser = commands.add_parser("run")
    run_parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT", REPO_ROOT / "runs" / "device"))
    )
    run_parser.add_argument("--dry-run", action="store_true")
    run_parser.add_argument("--kit", type=Path, default=KIT_DIR)
    args = parser.parse_args(argv)
    if args.command == "server":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = build_server_archive(args.out)
        print(
            f"server archive: {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB, {len(record['files'])} files)"
        )
        return 0
    if args.command == "cpu-results":
        cpu_results(args.out)
        return 0
    if args.command == "manifest":
        record = kit_manifest(args.kit)
        (args.kit / "manifest.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"kit: {record['total_bytes'] / 2**20:.1f} MiB of at most {MAX_KIT_BYTES / 2**20:.0f} MiB")
        return 0 if record["fits"] else 1
    args.out.mkdir(parents=True, exist_ok=True)
    return run(args.out, dry_run=args.dry_run, kit=args.kit)


if __name__ == "__main__":
    sys.exit(main())
