"""Everything in one run, on one server: the side-by-side table(s) and the perf_analyzer runs.

    python -m benchmarks.run_all --repository REPO --out DIR [--preset P] [--extra-preset P2] [--quick]

``benchmarks/run_all.sh`` is the documented front end: it installs perf_analyzer, exports a repository
with random weights and calls this. Writes ``summary.md`` and ``results.json`` (plus the CSVs, logs and
the plot) under ``--out``, and prints the summary.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import (
    load_test_image,
    machine_record,
    record_lines,
    request_overrides,
    served_settings,
    write_json,
)
from benchmarks.side_by_side import Plan
from magnet_triton.errors import MagnetError
from magnet_triton.settings import PRESETS, get_preset

log = logging.getLogger(__name__)


def plans(quick: bool) -> tuple[Plan, Plan, dict[str, Any]]:
    """The main side-by-side plan, the plan of an extra preset, and the perf_analyzer settings."""
    if quick:
        main = Plan(concurrencies=(1, 2), requests=1, modes=("downsample",), floor_batch=2, floor_repeats=1)
        perf = {"sweep": (1, 2), "request_count": 1}
    else:
        main = Plan(concurrencies=(1, 2, 4), requests=2, modes=("downsample", "patching"), exact_ties=True)
        perf = {"sweep": (1, 2, 4), "request_count": 1}
    extra = Plan(concurrencies=(1,), requests=1, modes=(), floor_batch=main.floor_batch)
    return main, extra, perf


def run(args: argparse.Namespace, record: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.perf_sweep import find_perf_analyzer, run_all_perf
    from benchmarks.side_by_side import measure_rates, run_side_by_side
    from magnet_triton.server import TritonServer

    repository = args.repository.resolve()
    served = served_settings(repository)
    settings = get_preset(args.preset) if args.preset else served
    image = load_test_image(args.image)
    main_plan, extra_plan, perf = plans(args.quick)
    results: dict[str, Any] = {"record": record, "image": image.name, "side_by_side": []}

    perf_analyzer = None if args.no_perf_analyzer else (args.perf_analyzer or find_perf_analyzer())
    with TritonServer(repository, log_path=args.out / "server.log") as server:
        flops_and_rates = measure_rates(repository, settings, main_plan)
        results["side_by_side"].append(
            run_side_by_side(
                repository, server.grpc_url, settings, image, main_plan, flops_and_rates=flops_and_rates
            )
        )
        for name in args.extra_preset:
            extra = get_preset(name)
            results["side_by_side"].append(
                run_side_by_side(
                    repository, server.grpc_url, extra, image, extra_plan, flops_and_rates=flops_and_rates
                )
            )
        if perf_analyzer is None:
            reason = "--no-perf-analyzer" if args.no_perf_analyzer else "perf_analyzer is not installed"
            results["perf_analyzer"] = {"skipped": f"{reason} (bash benchmarks/install_perf_analyzer.sh)"}
        else:
            results["perf_analyzer"] = run_all_perf(
                Path(perf_analyzer),
                server.grpc_url,
                image,
                args.out / "perf_analyzer",
                overrides=request_overrides(served, settings),
                n_refiners=settings.n_refiners,
                sweep=perf["sweep"],
                request_count=perf["request_count"],
                metrics_url=server.metrics_url,
            )
    return results


def summary_markdown(results: dict[str, Any]) -> list[str]:
    from benchmarks.report import perf_markdown, side_by_side_markdown

    record = results["record"]
    lines = ["## MagNet Triton benchmarks", "", *record_lines(record)]
    lines += [f"- load average (1 min) at the end: {record.get('load_average_1min_end', 'unknown')}", ""]
    for section in results["side_by_side"]:
        lines += [*side_by_side_markdown(section, record), ""]
    lines += perf_markdown(results["perf_analyzer"], record)
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run_all",
        description="Serve a repository once and run the side-by-side table and the perf_analyzer sweep on it.",
    )
    parser.add_argument("--repository", required=True, type=Path, help="exported model repository")
    parser.add_argument("--out", required=True, type=Path, help="folder for every output")
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), help="preset to measure (default: the served one)"
    )
    parser.add_argument(
        "--extra-preset",
        action="append",
        default=[],
        choices=sorted(PRESETS),
        help="also measure this preset side by side at concurrency 1 (request overrides; repeatable)",
    )
    parser.add_argument(
        "--image", help="path, 'cityscapes', 'deepglobe' or 'synthetic' (default: shared Cityscapes)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer levels and requests, for a smoke run")
    parser.add_argument(
        "--perf-analyzer", type=Path, help="perf_analyzer binary (default: the installed one)"
    )
    parser.add_argument("--no-perf-analyzer", action="store_true", help="skip the perf_analyzer runs")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s"
    )
    record = machine_record(["python", "-m", "benchmarks.run_all", *(sys.argv[1:] if argv is None else argv)])
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        results = run(args, record)
    except MagnetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    results["record"]["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    write_json(args.out / "results.json", results)
    text = "\n".join(summary_markdown(results)) + "\n"
    (args.out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
