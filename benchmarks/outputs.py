"""The class map alone against all three outputs, measured in the same run on one server.

A client that asks only for ``SEGMENTATION`` (``outputs=()`` in the library, the CLI's default) spares the
pipeline its full-resolution coarse upsample and confidence pass, and the wire two more H x W maps. This
benchmark sends the same encoded image to the ``magnet`` ensemble in alternating pairs (one request of
each kind, the order swapped every round so that drift on a noisy machine falls on both), and prints the
median latency of each and the median ratio of the back-to-back pairs, for the client's latency and for the
pipeline's own execution time from Triton's statistics (what the server saved, apart from the transfer). Example::

    python -m benchmarks.outputs --out runs/outputs-DATE                 # exports cityscapes-fast
    python -m benchmarks.outputs --repository runs/repo --image deepglobe --rounds 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import load_test_image, machine_record, record_lines
from benchmarks.triton_load import execution_seconds
from magnet_triton import io_spec
from magnet_triton.errors import MagnetError
from magnet_triton.server import TritonServer

#: label -> the ``outputs=`` argument of :meth:`MagnetClient.segment` (beside the class map, always sent).
KINDS: dict[str, tuple[str, ...]] = {"segmentation only": (), "all three": ("coarse", "confidence")}


@dataclass
class KindResult:
    """The requests of one kind: client latencies and the pipeline's execution seconds, per request."""

    label: str
    latencies_s: list[float] = field(default_factory=list)
    pipeline_s: list[float] = field(default_factory=list)
    outputs_returned: list[int] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.latencies_s)

    @property
    def median_pipeline_s(self) -> float:
        return statistics.median(self.pipeline_s)


def export_random_weights(preset: str, repository: Path) -> Path:
    """``preset`` exported with seeded random weights (the speed does not depend on the weights), once."""
    from magnet_triton.export.build import export_repository
    from magnet_triton.export.repository import read_manifest
    from magnet_triton.settings import get_preset

    if (repository / "magnet_repository.json").is_file() and read_manifest(repository)["settings"][
        "name"
    ] == preset:
        return repository
    return export_repository(get_preset(preset), repository, random_seed=0, replace=True)


def _maps_returned(answer: Any) -> int:
    """How many of the three maps came back (the class map is always one)."""
    return sum(m is not None for m in (answer.segmentation, answer.coarse_segmentation, answer.confidence))


def _pipeline_executions(client: Any, pipeline: str) -> tuple[int, float]:
    """(executions, seconds executing) of the pipeline model so far, from Triton's statistics."""
    stats = client.get_inference_statistics(pipeline, as_json=True)["model_stats"]
    count = sum(int(m.get("execution_count", 0)) for m in stats)
    return count, execution_seconds(client).get(pipeline, 0.0)


def _pipeline_seconds_after(client: Any, pipeline: str, executions: int, timeout_s: float = 30.0) -> float:
    """The pipeline's seconds executing once its statistics count ``executions``.

    Triton records a model's statistics after its response has gone out, so a read right after the
    client has the answer may not include that request yet: poll the count, not a guessed delay.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        count, seconds = _pipeline_executions(client, pipeline)
        if count >= executions:
            return seconds
        if time.monotonic() > deadline:
            raise MagnetError(
                f"{pipeline}'s statistics did not count execution {executions} within {timeout_s} s"
            )
        time.sleep(0.01)


def measure(server: TritonServer, image: bytes, rounds: int) -> dict[str, KindResult]:
    """``rounds`` alternating pairs after one warm-up request of each kind."""
    from magnet_triton.client import MagnetClient

    results = {label: KindResult(label) for label in KINDS}
    stats_client = server.new_client()
    pipeline = io_spec.DEFAULT_NAMES.pipeline
    # Every request is counted: each read waits for the count of requests sent so far.
    executions, _ = _pipeline_executions(stats_client, pipeline)
    with MagnetClient(server.grpc_url, timeout_s=900) as client:
        for outputs in KINDS.values():  # warm-up: first-request allocations are not the steady state
            client.segment(image, outputs=outputs)
            executions += 1
        for r in range(rounds):
            order = list(KINDS) if r % 2 == 0 else list(reversed(KINDS))
            for label in order:
                before = _pipeline_seconds_after(stats_client, pipeline, executions)
                answer = client.segment(image, outputs=KINDS[label])
                executions += 1
                after = _pipeline_seconds_after(stats_client, pipeline, executions)
                results[label].latencies_s.append(answer.latency_s)
                results[label].pipeline_s.append(after - before)
                results[label].outputs_returned.append(_maps_returned(answer))
    stats_client.close()
    return results


def report(results: dict[str, KindResult], record: dict[str, Any], image_name: str) -> list[str]:
    """Markdown lines: the record, a table of both kinds and the ratio."""
    only, every = results["segmentation only"], results["all three"]
    lines = [*record_lines(record), f"- image: {image_name}", ""]
    lines += [
        "| outputs | requests | maps returned | median latency s | median pipeline execution s |",
        "|---|---|---|---|---|",
    ]
    for r in (only, every):
        returned = "/".join(str(n) for n in sorted(set(r.outputs_returned)))
        lines.append(
            f"| {r.label} | {len(r.latencies_s)} | {returned} | {r.median_s:.2f} | {r.median_pipeline_s:.2f} |"
        )
    # Request i of one kind and request i of the other ran back to back: their ratio cancels the load
    # that other work on the machine puts on both, which the medians of each kind alone do not.
    pair_latency = statistics.median(a / b for a, b in zip(only.latencies_s, every.latencies_s))
    pair_pipeline = statistics.median(a / b for a, b in zip(only.pipeline_s, every.pipeline_s))
    lines += [
        "",
        f"segmentation only / all three, median of the {len(only.latencies_s)} back-to-back pairs: "
        f"{pair_latency:.3f}x the latency, {pair_pipeline:.3f}x the pipeline's execution time "
        f"(medians of each kind: {every.median_s - only.median_s:+.2f} s saved)",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, help="an exported repository (default: export --preset)")
    parser.add_argument("--preset", default="cityscapes-fast")
    parser.add_argument(
        "--image", help="path, cityscapes, deepglobe or synthetic (default: cityscapes if shared)"
    )
    parser.add_argument("--rounds", type=int, default=6, help="pairs of requests measured")
    parser.add_argument("--out", type=Path, required=True, help="folder for the server log and results")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    record = machine_record()
    repository = args.repository or export_random_weights(args.preset, args.out / "repository")
    image = load_test_image(args.image)
    with TritonServer(repository, log_path=args.out / "server.log", startup_timeout_s=600) as server:
        results = measure(server, image.encoded, args.rounds)
    lines = report(results, record, image.name)
    print("\n".join(lines))
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    (args.out / "results.json").write_text(
        json.dumps({"record": record, "results": [asdict(r) for r in results.values()]}, indent=2)
    )
    # The claim under test: the class map alone comes back alone, and no slower.
    only_one = all(n == 1 for n in results["segmentation only"].outputs_returned)
    all_three = all(n == 3 for n in results["all three"].outputs_returned)
    return 0 if only_one and all_three else 1


if __name__ == "__main__":
    raise SystemExit(main())
