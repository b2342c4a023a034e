"""Memory of a served repository: the idle footprint per model, and the peak per request by image size.

The repository is served alone with the bundled server; then:

- **idle**: the resident memory (RSS) of ``tritonserver`` and of every model's stubs once the server is
  ready (after warm-up);
- **per request**: synthetic street scenes of growing size through the ``magnet`` ensemble, one at a
  time; after each, the high-water mark (``VmHWM``) of the largest pipeline stub, the RSS of every
  model's stubs, and the request's latency.

The pipeline's peak grows with the image (its full-resolution maps, ``C x H x W`` float32 several times
over); the networks' with their batches, which the preset fixes, and onnxruntime keeps its arena at its
high-water mark.

    python -m benchmarks.memory --repository REPO --out runs/memory [--sizes-mp 0.5,2,8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine_record, markdown_table, png_bytes, record_lines, write_json
from magnet_triton import io_spec


def _status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def per_model(server: Any, field: str) -> dict[str, float]:
    """MiB of ``field`` per model: VmRSS summed over its stubs, VmHWM of its largest stub."""
    out: dict[str, float] = {}
    for stub in server.live_stubs():
        mib = _status_mib(stub.pid, field)
        previous = out.get(stub.model, 0.0)
        out[stub.model] = max(previous, mib) if field == "VmHWM" else previous + mib
    return dict(sorted(out.items()))


def measure(repository: Path, out: Path, sizes_mp: list[float]) -> dict[str, Any]:
    import tritonclient.grpc as grpc

    from magnet_triton.sample import street_scene
    from magnet_triton.server import TritonServer

    result: dict[str, Any] = {"requests": []}
    with TritonServer(repository, log_path=out / "tritonserver.log") as server:
        result["server_rss_mib"] = _status_mib(server.pid, "VmRSS")
        result["idle_rss_mib"] = per_model(server, "VmRSS")
        with grpc.InferenceServerClient(server.grpc_url) as client:
            for mp in sizes_mp:
                height = int((mp * 1e6 / 2) ** 0.5)
                image = street_scene(2 * height, height)
                data = grpc.InferInput(io_spec.IMAGE_BYTES, [1], "BYTES")
                data.set_data_from_numpy(np.array([png_bytes(image)], dtype=np.object_))
                started = time.perf_counter()
                client.infer(io_spec.ENSEMBLE_MODEL, [data], client_timeout=1800)
                result["requests"].append(
                    {
                        "megapixels": image.shape[0] * image.shape[1] / 1e6,
                        "latency_s": time.perf_counter() - started,
                        "pipeline_peak_mib": per_model(server, "VmHWM").get(io_spec.PIPELINE_MODEL, 0.0),
                        "rss_mib": per_model(server, "VmRSS"),
                    }
                )
    return result


def report(record: dict[str, Any], result: dict[str, Any]) -> str:
    models = list(result["idle_rss_mib"])
    idle = result["idle_rss_mib"]
    lines = [*record_lines(record), "", "Idle resident memory (MiB; a model's stubs summed):", ""]
    lines += markdown_table(
        ["tritonserver", *models, "total"],
        [
            [
                f"{result['server_rss_mib']:.0f}",
                *(f"{idle[m]:.0f}" for m in models),
                f"{result['server_rss_mib'] + sum(idle.values()):.0f}",
            ]
        ],
    )
    lines += ["", "After each request (one at a time, growing images):", ""]
    lines += markdown_table(
        ["image MP", "latency s", "largest pipeline stub, peak MiB", *(f"{m} MiB" for m in models)],
        [
            [
                f"{q['megapixels']:.2f}",
                f"{q['latency_s']:.1f}",
                f"{q['pipeline_peak_mib']:.0f}",
                *(f"{q['rss_mib'].get(m, 0):.0f}" for m in models),
            ]
            for q in result["requests"]
        ],
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, required=True, help="an exported repository")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes-mp", default="0.5,2,8", help="image sizes in megapixels (%(default)s)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    record = machine_record()
    result = measure(args.repository, args.out, [float(x) for x in args.sizes_mp.split(",")])
    write_json(args.out / "memory.json", {"machine": record, **result})
    text = report(record, result)
    (args.out / "memory.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
