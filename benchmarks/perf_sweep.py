"""perf_analyzer against the served MagNet: real encoded images, raw arrays, and a concurrency sweep.

Three runs, each one perf_analyzer invocation per concurrency (merged into one CSV per run):

- ``ensemble_bytes``: model ``magnet`` with the image file (PNG/JPEG) as the BYTES input ``IMAGE_BYTES``;
- ``pipeline_raw``: model ``magnet_pipeline`` with the decoded H x W x 3 uint8 array (``--shape``);
- ``pipeline_sweep``: ``magnet_pipeline`` over several concurrencies with ``--bls-composing-models``,
  so the backbone and every refiner model get their own server-side breakdown.

One image takes seconds to minutes on a small CPU, so every run is bounded: ``count_windows`` with a
few requests per window and at most 3 windows (perf_analyzer needs 3 to call a result stable; the
stability percentage is set wide so 3 always suffice). The numbers are bounded measurements, not
stabilised ones: the request counts are in the report.
"""

from __future__ import annotations

import base64
import csv
import json
import logging
import os
import shlex
import shutil
import struct
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, BenchImage
from magnet_triton import io_spec
from magnet_triton.errors import MagnetError

log = logging.getLogger(__name__)

INSTALLED = REPO_ROOT / "benchmarks" / ".tools" / "perf_analyzer" / "bin" / "perf_analyzer"
#: Columns every perf_analyzer CSV of these runs has (the verbose CSV adds more).
CSV_COLUMNS = (
    "Concurrency",
    "Inferences/Second",
    "Server Queue",
    "Server Compute Infer",
    "p50 latency",
    "p95 latency",
    "p99 latency",
    "Avg latency",
)
_OVERRIDE_JSON = {
    "mode": "MODE",
    "n_points": "N_POINTS",
    "n_patches": "N_PATCHES",
    "patch_order": "PATCH_ORDER",
}


def find_perf_analyzer() -> Path | None:
    """``$MAGNET_PERF_ANALYZER``, the copy ``install_perf_analyzer.sh`` installs, or one on PATH."""
    candidates = [os.environ.get("MAGNET_PERF_ANALYZER"), str(INSTALLED), shutil.which("perf_analyzer")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            # This build has no --help (exit 99); --version exits 0 when its libraries load.
            probe = subprocess.run([candidate, "--version"], capture_output=True, check=False)
            if probe.returncode == 0:
                return Path(candidate)
    return None


# ---------------------------------------------------------------------- input data
def _override_entries(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Optional inputs as perf_analyzer JSON: BYTES take strings, numbers take numbers."""
    return {_OVERRIDE_JSON[k]: {"content": [v], "shape": [1]} for k, v in overrides.items()}


def write_input_data(image: BenchImage, out_dir: Path, overrides: Mapping[str, Any]) -> dict[str, Path]:
    """The two ``--input-data`` files: encoded bytes for ``magnet``, the raw array for ``magnet_pipeline``.

    A BYTES element in perf_analyzer's base64 form is a 4-byte little-endian length, then the bytes.
    The paths are absolute: perf_analyzer runs in another working directory.
    """
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    element = struct.pack("<I", len(image.encoded)) + image.encoded
    extra = _override_entries(overrides)
    ensemble = {io_spec.IMAGE_BYTES: {"content": {"b64": base64.b64encode(element).decode()}, "shape": [1]}}
    raw = {
        io_spec.IMAGE: {
            "content": {"b64": base64.b64encode(image.pixels.tobytes()).decode()},
            "shape": list(image.pixels.shape),
        }
    }
    files = {"ensemble_bytes": out_dir / "input_bytes.json", "pipeline_raw": out_dir / "input_raw.json"}
    files["ensemble_bytes"].write_text(json.dumps({"data": [{**ensemble, **extra}]}))
    files["pipeline_raw"].write_text(json.dumps({"data": [{**raw, **extra}]}))
    return files


# ---------------------------------------------------------------------- runs
@dataclass(frozen=True)
class PerfRun:
    """One perf_analyzer measurement: a model, its input data and the concurrencies to visit."""

    name: str
    model: str
    input_data: Path
    concurrencies: Sequence[int]
    shape: str | None = None
    composing: Sequence[str] = ()


def standard_runs(
    inputs: Mapping[str, Path], image: BenchImage, n_refiners: int, sweep: Sequence[int]
) -> list[PerfRun]:
    """The three runs of the issue for an image and a repository with ``n_refiners`` refiner models."""
    height, width = image.pixels.shape[:2]
    # Versions are named one by one: with a bare model name perf_analyzer reads one version's statistics
    # and warns that several are loaded.
    composing = io_spec.DEFAULT_NAMES.networks(n_refiners)
    shape = f"{io_spec.IMAGE}:{height},{width},3"
    return [
        PerfRun("ensemble_bytes", io_spec.ENSEMBLE_MODEL, inputs["ensemble_bytes"], [1]),
        PerfRun("pipeline_raw", io_spec.PIPELINE_MODEL, inputs["pipeline_raw"], [1], shape=shape),
        PerfRun("pipeline_sweep", io_spec.PIPELINE_MODEL, inputs["pipeline_raw"], sweep, shape, composing),
    ]


def command(
    perf_analyzer: Path,
    run: PerfRun,
    url: str,
    concurrency: int,
    csv_name: str,
    *,
    request_count: int,
    metrics_url: str | None,
) -> list[str]:
    """The perf_analyzer command line for one concurrency of ``run``."""
    cmd = [
        str(perf_analyzer),
        "-m", run.model,
        "-u", url,
        "-i", "grpc",
        "--input-data", str(run.input_data),
        "--concurrency-range", str(concurrency),
        "--measurement-mode", "count_windows",
        "--measurement-request-count", str(request_count),
        "--max-trials", "3",
        "--stability-percentage", "999",
        "-f", csv_name,
        "--verbose-csv",
    ]  # fmt: skip
    if run.shape:
        cmd += ["--shape", run.shape]
    if run.composing:
        cmd += ["--bls-composing-models", ",".join(run.composing)]
    if metrics_url:
        # Works against this server; the GPU columns stay empty on a machine without a GPU.
        cmd += ["--collect-metrics", "--metrics-url", metrics_url]
    return cmd


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _write_csv(path: Path, rows: Sequence[Mapping[str, str]]) -> None:
    if not rows:
        return
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def run_one(
    perf_analyzer: Path,
    run: PerfRun,
    url: str,
    out_dir: Path,
    *,
    request_count: int,
    metrics_url: str | None = None,
    timeout_s: float = 3600.0,
) -> dict[str, Any]:
    """Run ``run`` at each of its concurrencies; merge the CSVs into ``<name>.csv`` (+ composing models).

    perf_analyzer writes a composing model's CSV as ``<model>_v<version>.<csv name>`` in its working
    directory, so it runs inside ``out_dir``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    composing: dict[str, list[dict[str, str]]] = {}
    commands = []
    for concurrency in run.concurrencies:
        csv_name = f"{run.name}_c{concurrency}.csv"
        count = max(request_count, concurrency)
        cmd = command(
            perf_analyzer, run, url, concurrency, csv_name, request_count=count, metrics_url=metrics_url
        )
        commands.append(shlex.join(cmd))
        log.info("perf_analyzer %s, concurrency %d", run.name, concurrency)
        log_path = out_dir / f"{run.name}_c{concurrency}.log"
        with log_path.open("w") as log_file:
            done = subprocess.run(
                cmd, cwd=out_dir, stdout=log_file, stderr=subprocess.STDOUT, timeout=timeout_s
            )
        output = log_path.read_text(errors="replace")
        if done.returncode != 0 or not (out_dir / csv_name).is_file():
            tail = "\n".join(output.splitlines()[-15:])
            raise MagnetError(
                f"perf_analyzer failed (status {done.returncode}) for {run.name}; log {log_path}:\n{tail}"
            )
        rows += read_csv(out_dir / csv_name)
        for part in sorted(out_dir.glob(f"*.{csv_name}")):
            model = part.name[: -len(csv_name) - 1]
            composing.setdefault(model, []).extend(read_csv(part))
    rows.sort(key=lambda r: int(r["Concurrency"]))
    merged = out_dir / f"{run.name}.csv"
    _write_csv(merged, rows)
    for model, model_rows in composing.items():
        _write_csv(out_dir / f"{run.name}.{model}.csv", model_rows)
    return {
        "name": run.name,
        "model": run.model,
        "csv": str(merged),
        "command": commands[0]
        if len(commands) == 1
        else f"{commands[0]}  (and --concurrency-range "
        + ", ".join(str(c) for c in run.concurrencies[1:])
        + ")",
        "request_count": request_count,
        "rows": rows,
        "composing": composing,
    }


def run_all_perf(
    perf_analyzer: Path,
    url: str,
    image: BenchImage,
    out_dir: Path,
    *,
    overrides: Mapping[str, Any],
    n_refiners: int,
    sweep: Sequence[int] = (1, 2, 4),
    request_count: int = 1,
    metrics_url: str | None = None,
    plot: bool = True,
) -> dict[str, Any]:
    """The three standard runs; a PNG of the sweep when matplotlib is installed."""
    from benchmarks.plot import plot_sweep

    inputs = write_input_data(image, out_dir, overrides)
    results = []
    for run in standard_runs(inputs, image, n_refiners, sweep):
        result = run_one(
            perf_analyzer, run, url, out_dir, request_count=request_count, metrics_url=metrics_url
        )
        if plot and run.name == "pipeline_sweep":
            png = plot_sweep(
                result["rows"], out_dir / "pipeline_sweep.png", title=f"magnet_pipeline, {image.name}"
            )
            result["plot"] = str(png) if png else None
        results.append(result)
    return {"runs": results, "image": image.name, "overrides": dict(overrides)}
