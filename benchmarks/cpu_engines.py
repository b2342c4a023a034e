"""The CPU engines side by side, in one run: the served ``magnet_pipeline`` with each engine and precision.

For each preset, one repository per variant (same seeded weights), served by the bundled tritonserver
one at a time, one image at concurrency 1:

- ``onnxruntime fp32, spinning``: onnxruntime as it was served before (its threads spin between runs);
  the baseline every ratio is taken against;
- ``onnxruntime fp32``: the tuned default (no spinning; threads the instance's share of the cores);
- ``openvino fp32``, ``openvino bf16`` (only where the CPU has AVX512-BF16 or AMX; otherwise the row says
  so), ``openvino int8`` (the backbone calibrated on patches of the measured image).

Each row: seconds per image, its speed-up over the baseline, the share of the time outside the networks
(server statistics), and class-map agreement with the baseline. One more row measures how sensitive the
seeded random weights are: the baseline repository on the image changed by at most one grey level per
pixel. Disagreement of that size is the weights', not the precision's.

Usage::

    python -m benchmarks.cpu_engines --out runs/cpu-engines [--presets cityscapes,deepglobe] [--requests 1]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import load_test_image, machine_record, markdown_table, record_lines, write_json
from magnet_triton.errors import MagnetError

log = logging.getLogger(__name__)

#: key -> (label, engine, precision, onnxruntime spinning); the first is the baseline.
VARIANTS: dict[str, tuple[str, str, str, bool]] = {
    "ort-spinning": ("onnxruntime fp32, spinning (before)", "onnxruntime", "fp32", True),
    "ort": ("onnxruntime fp32 (tuned)", "onnxruntime", "fp32", False),
    "ov-fp32": ("openvino fp32", "openvino", "fp32", False),
    "ov-bf16": ("openvino bf16", "openvino", "bf16", False),
    "ov-int8": ("openvino int8", "openvino", "int8", False),
}
IMAGES = {"cityscapes": "cityscapes", "deepglobe": "deepglobe"}
SEED = 0


@dataclass
class Row:
    preset: str
    variant: str
    seconds: float | None = None
    outside_networks: float | None = None
    agreement: float | None = None
    note: str = ""
    speedup: float | None = None

    def cells(self) -> list[Any]:
        return [
            self.preset,
            self.variant,
            self.seconds,
            None if self.speedup is None else f"{self.speedup:.2f}x",
            None if self.outside_networks is None else f"{self.outside_networks:.1%}",
            None if self.agreement is None else f"{self.agreement:.2%}",
            self.note,
        ]


def _perturbed(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` with each value moved by -1, 0 or +1 grey level (seeded), clipped to 0..255."""
    step = np.random.default_rng(SEED).integers(-1, 2, size=pixels.shape)
    return np.clip(pixels.astype(np.int16) + step, 0, 255).astype(np.uint8)


def _export(preset: str, engine: str, precision: str, spinning: bool, out: Path, image_file: Path) -> Path:
    from magnet_triton.export.build import export_repository
    from magnet_triton.export.repository import RepositoryOptions
    from magnet_triton.settings import get_preset

    options = RepositoryOptions(engine=engine, precision=precision, onnx_spinning=spinning)
    return export_repository(
        get_preset(preset),
        out,
        random_seed=SEED,
        options=options,
        replace=True,
        calibration_images=[image_file] if precision == "int8" else (),
    )


def measure_preset(preset: str, out: Path, requests: int, variants: Sequence[str]) -> list[Row]:
    from benchmarks.common import SHARED_IMAGES
    from benchmarks.triton_load import closed_loop
    from magnet_triton.openvino_engine import check_precision
    from magnet_triton.server import TritonServer
    from magnet_triton.settings import get_preset

    # The shared image where there is one, else the synthetic scene at the preset's finest scale.
    name = IMAGES[preset] if SHARED_IMAGES[IMAGES[preset]].is_file() else "synthetic"
    image = load_test_image(name, fallback_size=get_preset(preset).scales[-1])
    image_file = out / f"{preset}-image.png"
    image_file.parent.mkdir(parents=True, exist_ok=True)
    image_file.write_bytes(image.encoded)
    rows: list[Row] = []
    baseline: np.ndarray | None = None
    for key, (label, engine, precision, spinning) in VARIANTS.items():
        if key not in variants:
            continue
        row = Row(preset, label)
        rows.append(row)
        if engine == "openvino":
            try:
                check_precision(precision)
            except MagnetError as e:
                row.note = f"not run: {e}"
                print(f"{preset} / {label}: {row.note}", file=sys.stderr, flush=True)
                continue
        start = time.perf_counter()
        repository = _export(
            preset,
            engine,
            precision,
            spinning,
            out / "repositories" / f"{preset}-{engine}-{precision}-{int(spinning)}",
            image_file,
        )
        print(
            f"{preset} / {label}: exported in {time.perf_counter() - start:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        with TritonServer(repository, log_path=repository.parent / f"{repository.name}.log") as server:
            result = closed_loop(
                server.grpc_url, image.pixels, {}, concurrency=1, requests=requests, label=label
            )
            row.seconds = float(np.mean(result.latencies_s))
            row.outside_networks = result.outside_networks
            if baseline is None:
                baseline = result.segmentation
                row.agreement = 1.0
                noisy = closed_loop(
                    server.grpc_url, _perturbed(image.pixels), {}, concurrency=1, requests=1, label="noise"
                )
                rows.append(
                    Row(
                        preset,
                        f"{label}, image +-1 grey level",
                        agreement=float((noisy.segmentation == baseline).mean()),
                        note="the random weights' own sensitivity",
                    )
                )
            else:
                row.agreement = float((result.segmentation == baseline).mean())
        print(f"{preset} / {label}: {row.seconds:.1f} s per image", file=sys.stderr, flush=True)
    reference = next((r.seconds for r in rows if r.seconds is not None), None)
    for row in rows:
        if row.seconds is not None and reference:
            row.speedup = reference / row.seconds
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu_engines", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="repositories, logs and results")
    p.add_argument("--presets", default="cityscapes,deepglobe", help="comma-separated (default: both)")
    p.add_argument("--requests", type=int, default=1, help="images measured per variant (default 1)")
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, of {', '.join(VARIANTS)} (default: all; the baseline is ort-spinning)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    record = machine_record(["python", "-m", "benchmarks.cpu_engines", *(argv or sys.argv[1:])])
    variants = [v.strip() for v in args.variants.split(",")]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    rows: list[Row] = []
    for preset in [p.strip() for p in args.presets.split(",") if p.strip()]:
        if preset not in IMAGES:
            raise SystemExit(f"unknown preset {preset!r}; choose from {sorted(IMAGES)}")
        rows += measure_preset(preset, args.out, args.requests, variants)
    header = ["preset", "engine", "s / image", "vs before", "outside networks", "class maps = before", "note"]
    lines = [*record_lines(record), "", *markdown_table(header, [r.cells() for r in rows])]
    print("\n".join(lines))
    write_json(args.out / "cpu_engines.json", {"machine": record, "rows": [r.__dict__ for r in rows]})
    (args.out / "cpu_engines.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
