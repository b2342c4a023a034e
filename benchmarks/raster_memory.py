"""Peak client memory of a tiled raster run: bounded by the windows in flight, not by the raster.

Synthetic RGB GeoTIFFs (a blocky scene repeated, tiled and DEFLATE-compressed, written block row by block
row) of each size are segmented by ``magnet-client segment`` in a process of its own; its peak resident
memory (its ``VmHWM``, the client process alone: the server is another process) is the figure. A
served repository's pixel limit sets the window (16 MiB pixels: 4096 x 4096 windows); the default
repository is the tests' tiny preset with random weights, whose networks are quick, since what is
measured is the client.

    python -m benchmarks.raster_memory --out runs/raster-memory [--sizes 5000,20000] [--repository REPO]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine_record, markdown_table, record_lines, write_json

#: Rows written at once while making the synthetic raster (its memory stays small too).
_STRIP_ROWS = 512


def write_synthetic_raster(path: Path, side: int, *, seed: int = 0) -> None:
    """A side x side RGB uint8 GeoTIFF (UTM 31N, 0.5 m pixels), tiled 512 x 512, DEFLATE."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    tile = np.kron(rng.integers(0, 256, size=(3, 32, 32), dtype=np.uint8), np.ones((1, 16, 16), np.uint8))
    profile = {
        "driver": "GTiff",
        "height": side,
        "width": side,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32631",
        "transform": from_origin(440_000.0, 5_300_000.0, 0.5, 0.5),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    reps = -(-side // tile.shape[2])
    with rasterio.open(path, "w", **profile) as ds:
        for strip_index, row in enumerate(range(0, side, _STRIP_ROWS)):
            rows = min(_STRIP_ROWS, side - row)
            # Each strip shifted sideways, so that windows do not all see the same pixels.
            strip = np.tile(np.roll(tile, 37 * strip_index, axis=2), (1, 1, reps))
            ds.write(np.ascontiguousarray(strip[:, :rows, :side]), window=Window(0, row, side, rows))


#: Runs ``magnet-client`` and prints its peak resident memory last. The peak is the process's own
#: ``VmHWM`` read before it exits: ``ru_maxrss`` (``wait4``, ``getrusage``) would also count the pages the
#: process shared with this one between fork and exec (torch, imported for the export, is ~1 GB).
_CLIENT = """
import sys
from magnet_triton.client.cli import main
code = main(sys.argv[1:])
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print("peak_kib", hwm, file=sys.stderr)
sys.exit(code)
"""


def run_client(url: str, raster: Path, out: Path, concurrency: int) -> dict[str, Any]:
    """``magnet-client segment`` on ``raster`` in a child process; its peak RSS and wall time."""
    arguments = [
        "segment",
        str(raster),
        "--out",
        str(out),
        "--url",
        url,
        "--concurrency",
        str(concurrency),
        "--timeout-s",
        "1200",
        "-q",
    ]
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-c", _CLIENT, *arguments], capture_output=True, text=True, check=False
    )
    wall_s = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"magnet-client exited {child.returncode}: {child.stderr}")
    peak_kib = int(child.stderr.strip().splitlines()[-1].split()[1])
    return {"peak_rss_mib": peak_kib / 1024, "wall_s": wall_s, "command": ["magnet-client", *arguments]}


def measure(repository: Path, out: Path, sides: list[int], concurrency: int) -> dict[str, Any]:
    from magnet_triton.client import MagnetClient
    from magnet_triton.client.raster_run import raster_outputs
    from magnet_triton.raster.tiling import plan_windows
    from magnet_triton.server import TritonServer

    runs = []
    with TritonServer(repository, log_path=out / "tritonserver.log") as server:
        with MagnetClient(server.grpc_url) as client:
            limits = client.served_limits()
        for side in sides:
            raster = out / f"synthetic_{side}.tif"
            started = time.perf_counter()
            write_synthetic_raster(raster, side)
            made_s = time.perf_counter() - started
            plan = plan_windows(
                side, side, max_pixels=limits.max_image_pixels, overlap=limits.default_overlap
            )
            run = run_client(server.grpc_url, raster, out / f"maps_{side}", concurrency)
            files = raster_outputs(raster, out / f"maps_{side}", (), geotiff=True)
            runs.append(
                {
                    "side": side,
                    "raster_mib": raster.stat().st_size / 2**20,
                    "uncompressed_rgb_mib": side * side * 3 / 2**20,
                    "write_raster_s": made_s,
                    "windows": len(plan.windows),
                    "window": list(plan.window_size),
                    "overlap": plan.overlap,
                    "outputs_mib": {k: p.stat().st_size / 2**20 for k, p in files.items()},
                    **run,
                }
            )
            print(json.dumps(runs[-1]), flush=True)
            raster.unlink()
    return {"max_image_pixels": limits.max_image_pixels, "concurrency": concurrency, "runs": runs}


def _tiny_repository(root: Path, max_image_pixels: int) -> Path:
    from tests.tiny_repository import build_tiny_repository

    return build_tiny_repository(root, max_image_pixels=max_image_pixels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repository", type=Path, default=None, help="default: the tests' tiny preset")
    parser.add_argument("--sizes", default="5000,20000", help="raster sides in pixels (%(default)s)")
    parser.add_argument(
        "--max-image-pixels", type=int, default=16 * 1024 * 1024, help="tiny repository's limit"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="windows in flight (%(default)s)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    record = machine_record()
    repository = args.repository or _tiny_repository(args.out, args.max_image_pixels)
    result = measure(repository, args.out, [int(s) for s in args.sizes.split(",")], args.concurrency)
    result["record"] = record
    write_json(args.out / "raster_memory.json", result)
    rows = [
        [
            f"{r['side']}x{r['side']}",
            f"{r['uncompressed_rgb_mib']:.0f}",
            f"{r['windows']} x {r['window'][0]}x{r['window'][1]}",
            f"{r['peak_rss_mib']:.0f}",
            f"{r['wall_s']:.0f}",
        ]
        for r in result["runs"]
    ]
    lines = [
        *record_lines(record),
        "",
        *markdown_table(["raster", "RGB MiB", "windows", "client peak RSS MiB", "wall s"], rows),
    ]
    (args.out / "raster_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
