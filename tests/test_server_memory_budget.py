"""``serve --memory-limit-gb``: the ready server's measured footprint plus every pipeline instance's peak
at the pixel limit must fit the declared memory, or the server stops and says the limit that would fit.

The per-request model is held against the measurement it was fitted to (``benchmarks/memory.py``,
RESULTS.md), and the refusal against a real server on the tiny repository.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from magnet_triton.errors import MagnetError
from magnet_triton.server.memory_budget import (
    GB,
    REQUEST_FIXED_BYTES,
    MemoryPlan,
    largest_fitting_pixels,
    request_peak_bytes,
)
from tests.tiny_repository import build_tiny_repository, skip_without_tritonserver


def test_the_request_model_covers_what_the_memory_benchmark_measured():
    # RESULTS.md, "Memory per model and per request" (cityscapes-fast, 19 classes): the largest pipeline
    # stub peaked 1988 MiB at 8 MP and 900 MiB at 2 MP, over an idle 449 / 2 MiB per stub.
    idle_mib = 449 / 2
    for megapixels, peak_mib in ((8.0, 1988), (2.0, 900)):
        measured = (peak_mib - idle_mib) * 2**20
        modelled = request_peak_bytes(19, int(megapixels * 1e6))
        assert measured <= modelled <= 1.6 * measured + 0.5 * GB, (
            megapixels,
            measured / GB,
            modelled / GB,
        )


def test_the_suggested_pixel_limit_is_the_largest_that_fits():
    plan = MemoryPlan(footprint_bytes=2 * GB, pipeline_instances=2, max_image_pixels=16 << 20, num_classes=19)
    declared = 6 * GB
    with pytest.raises(
        MagnetError, match=r"over the declared 6\.0 GB; export with --max-image-pixels (\d+)"
    ) as e:
        plan.check(declared)
    suggested = int(re.search(r"--max-image-pixels (\d+)", str(e.value)).group(1))
    fits = MemoryPlan(2 * GB, 2, suggested, 19)
    fits.check(declared)
    with pytest.raises(MagnetError):
        MemoryPlan(2 * GB, 2, int(suggested * 1.01) + 1, 19).check(declared)
    assert largest_fitting_pixels(19, 0) == 0


def test_no_room_for_even_a_small_image_says_so():
    plan = MemoryPlan(footprint_bytes=8 * GB, pipeline_instances=2, max_image_pixels=1 << 20, num_classes=7)
    with pytest.raises(MagnetError, match="not even a small image fits beside the ready server"):
        plan.check(4 * GB)


def serve(repository, *flags: str) -> subprocess.CompletedProcess[str]:
    """Run ``magnet-triton serve`` until it reports serving (then stop it) or exits by itself."""
    argv = [sys.executable, "-m", "magnet_triton.cli", "serve", "--model-repository", str(repository)]
    argv += ["--grpc-port", "0", "--metrics-port", "0", "--no-supervise", *flags]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("serving"):
                proc.terminate()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(argv, proc.returncode, "".join(lines))


@pytest.mark.server
def test_serve_measures_the_ready_server_and_refuses_a_limit_it_cannot_keep(tmp_path):
    skip_without_tritonserver()
    # A limit of 16 MP, where the maps (not the fixed part) make most of a request's peak.
    repository = build_tiny_repository(tmp_path, max_image_pixels=4000 * 4000)
    ample = serve(repository, "--memory-limit-gb", "1000")
    line = next((x for x in ample.stdout.splitlines() if x.startswith("memory")), "")
    found = re.search(r"([\d.]+) GB ready \+ 2 pipeline instances x ([\d.]+) GB at the 16\.0 MP limit", line)
    assert found and "within the declared 1000 GB" in line, ample.stdout
    footprint = float(found.group(1))
    # Two stubs per pipeline and decode, a backbone, a refiner, the server: hundreds of MB, not GBs.
    assert 0.2 < footprint < 8, line

    # Room for the footprint and two requests' fixed parts, and 0.3 GB of maps each: the server starts,
    # measures, and stops with the largest pixel limit that would fit.
    tight = footprint + 2 * REQUEST_FIXED_BYTES / GB + 0.6
    refused = serve(repository, "--memory-limit-gb", f"{tight:.2f}")
    assert refused.returncode == 1, refused.stdout
    assert f"over the declared {tight:.1f} GB; export with --max-image-pixels" in refused.stdout
    suggested = int(re.search(r"--max-image-pixels (\d+)", refused.stdout).group(1))
    assert 0 < suggested < 4000 * 4000
    assert "serving" not in refused.stdout
