"""Markdown for the benchmark results, and the two CPU targets checked against them.

Targets (the issue's claim, "speed at equal accuracy"):

1. the Triton CPU target spends at most :data:`MAX_OUTSIDE_NETWORKS` of its end-to-end time outside
   the networks' execution (orchestration, BLS, copies, uncertainty steps), at concurrency 1;
2. it is not slower than the eager baseline on the same image, weights and preset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.common import markdown_table, record_lines
from benchmarks.side_by_side import EAGER, TRITON
from magnet_triton import io_spec

MAX_OUTSIDE_NETWORKS = 0.10


def _rows(results: dict[str, Any], system: str, mode: str | None = None) -> list[dict[str, Any]]:
    mode = mode or results["mode"]
    return [r for r in results["rows"] if r["system"] == system and r["mode"] == mode]


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """The two CPU targets with their numbers: fractions, speed-ups, and met or not."""
    eager = _rows(results, EAGER)
    triton = _rows(results, TRITON)
    single = [r for r in triton if r["concurrency"] == 1]
    out: dict[str, Any] = {}
    if single and single[0]["outside_networks"] is not None:
        outside = single[0]["outside_networks"]
        out["outside_networks"] = outside
        out["outside_networks_met"] = outside <= MAX_OUTSIDE_NETWORKS
    if eager and single:
        out["speedup_c1_vs_eager"] = eager[0]["seconds_per_image"] / single[0]["seconds_per_image"]
        out["not_slower_met"] = out["speedup_c1_vs_eager"] >= 1.0
    if eager and triton:
        best = max(triton, key=lambda r: r["throughput_per_s"])
        out["best_throughput_concurrency"] = best["concurrency"]
        out["speedup_best_throughput_vs_eager"] = best["throughput_per_s"] / eager[0]["throughput_per_s"]
    return out


def _verdict(met: bool | None) -> str:
    return "—" if met is None else ("met" if met else "**missed**")


def target_lines(results: dict[str, Any]) -> list[str]:
    t = targets(results)
    lines = []
    if "outside_networks" in t:
        lines.append(
            f"- time outside the networks' execution, Triton at concurrency 1: {100 * t['outside_networks']:.1f}% "
            f"(target <= {100 * MAX_OUTSIDE_NETWORKS:.0f}%): {_verdict(t['outside_networks_met'])}"
        )
    if "speedup_c1_vs_eager" in t:
        lines.append(
            f"- eager time / Triton time at concurrency 1: {t['speedup_c1_vs_eager']:.2f}x "
            f"(target >= 1.00x, not slower): {_verdict(t['not_slower_met'])}"
        )
    if "speedup_best_throughput_vs_eager" in t:
        lines.append(
            f"- best Triton throughput (concurrency {t['best_throughput_concurrency']}) / eager throughput: "
            f"{t['speedup_best_throughput_vs_eager']:.2f}x"
        )
    return lines


def _stage_table(results: dict[str, Any]) -> list[str]:
    """Where the time goes: seconds per image and share of each stage, per system at concurrency 1.

    In-process systems time their own stages. For Triton the server's statistics give each model's
    execution time; the pipeline's execution includes its waits on the networks (BLS), which are taken
    out, and what the client saw beyond the pipeline's execution is gRPC, the ensemble and queues.
    """
    header = ["system", "stage", "s per image", "share"]
    rows = []
    for r in results["rows"]:
        if r["concurrency"] != 1 or r["mode"] != results["mode"] or not r["stages_s"]:
            continue
        stages = dict(r["stages_s"])
        if r["system"] == TRITON:
            total = r["seconds_per_image"] * r["requests"]  # at concurrency 1: the sum of the latencies
            networks = sum(s for name, s in stages.items() if io_spec.is_network_model(name))
            pipeline = stages.pop("magnet_pipeline", 0.0)
            stages["magnet_pipeline outside BLS calls"] = max(pipeline - networks, 0.0)
            stages["client, gRPC, queues"] = max(total - pipeline, 0.0)
        else:
            total = sum(stages.values())
        for stage, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
            rows.append([r["system"], stage, seconds / r["requests"], f"{100 * seconds / total:.1f}%"])
    return markdown_table(header, rows)


def _replay_table(results: dict[str, Any]) -> list[str]:
    """The pipeline's own steps, replayed with recorded network outputs, per torch thread count."""
    replay = results.get("replay") or {}
    if not replay:
        return []
    columns = list(replay)
    stages = sorted(
        {s for v in replay.values() for s in v["stages_s"]},
        key=lambda s: -replay[columns[0]]["stages_s"].get(s, 0),
    )
    rows = [[stage, *(replay[c]["stages_s"].get(stage, 0.0) for c in columns)] for stage in stages]
    rows.append(["total", *(replay[c]["total_s"] for c in columns)])
    lines = [
        "The pipeline's own steps (run_magnet replayed with the recorded network outputs, seconds per image; "
        "`magnet_pipeline` runs them on every CPU unless its `torch_threads` parameter is set):",
        "",
        *markdown_table(["stage", *(f"torch, {c}" for c in columns)], rows),
    ]
    single = [r for r in _rows(results, TRITON) if r["concurrency"] == 1]
    if single and columns:
        share = replay[columns[-1]]["total_s"] / single[0]["seconds_per_image"]
        lines += [
            "",
            f"Replayed steps at {columns[-1]} / Triton time per image at concurrency 1: {100 * share:.1f}%",
        ]
    return lines


def side_by_side_markdown(results: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """The side-by-side table, agreement, floor, targets and profile as Markdown lines."""
    image = results["image"]
    lines = [
        f"### Side by side: preset `{results['preset']}` on {image['name']} ({image['width']}x{image['height']})",
        "",
        *record_lines(record),
        f"- served repository preset: `{results['served_preset']}`, request overrides: {results['overrides'] or 'none'}",
        "",
    ]
    eager = _rows(results, EAGER)
    eager_s = eager[0]["seconds_per_image"] if eager else None
    header = [
        "system",
        "mode",
        "conc.",
        "requests",
        "p50 (s)",
        "p95 (s)",
        "img/s",
        "s/image",
        "x floor",
        "eager / this",
        "outside networks",
    ]
    rows = []
    for r in results["rows"]:
        floor = results["floors"].get(r["mode"], {}).get("seconds")
        same_mode = r["mode"] == results["mode"]
        rows.append(
            [
                r["system"],
                r["mode"],
                r["concurrency"],
                r["requests"],
                r["latency_p50_s"],
                r["latency_p95_s"],
                r["throughput_per_s"],
                r["seconds_per_image"],
                r["seconds_per_image"] / floor if floor else None,
                eager_s / r["seconds_per_image"] if eager_s and same_mode else None,
                f"{100 * r['outside_networks']:.1f}%" if r["outside_networks"] is not None else None,
            ]
        )
    for mode, floor in results["floors"].items():
        rows.append(
            [
                "floor: FLOPs / backbone FLOP rate",
                mode,
                None,
                None,
                None,
                None,
                1 / floor["seconds"],
                floor["seconds"],
                1.0,
                None,
                "0%",
            ]
        )
    lines += markdown_table(header, rows)
    lines += ["", "Class-map agreement (fraction of pixels equal):", ""]
    lines += [f"- {name}: {100 * value:.4f}%" for name, value in results["agreement"].items()]
    lines += ["", "Floor:", ""] + [f"- {line}" for line in results["floor_lines"]]
    lines += ["", "Targets:", "", *target_lines(results)]
    lines += ["", "Where the time goes (concurrency 1, seconds per image):", "", *_stage_table(results)]
    lines += ["", *_replay_table(results)]
    gpu = results.get("gpu")
    lines += ["", "GPU:", ""]
    if isinstance(gpu, dict):
        lines += [
            f"- {gpu['device']}: eager FP32 {gpu['eager_fp32_s']:.3f} s, pipeline ({gpu['pipeline_precision']}, "
            f"steps {gpu['steps']}) {gpu['pipeline_s']:.3f} s: {gpu['speedup_vs_eager']:.2f}x; "
            f"agreement with eager {100 * gpu['pipeline_vs_eager_agreement']:.4f}%"
        ]
    else:
        lines.append(f"- {gpu}")
    return lines


def perf_markdown(summary: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """perf_analyzer runs as Markdown: one table per run, then the composing-model breakdown."""
    lines = ["### perf_analyzer", "", *record_lines(record), ""]
    if summary.get("skipped"):
        return [*lines, f"- skipped: {summary['skipped']}"]
    for run in summary["runs"]:
        lines += [f"**{run['name']}**: `{run['command']}`", ""]
        header = ["conc.", "infer/s", "p50 (s)", "p95 (s)", "p99 (s)", "avg (s)", "server compute infer (s)"]
        rows = [
            [
                int(r["Concurrency"]),
                float(r["Inferences/Second"]),
                float(r["p50 latency"]) / 1e6,
                float(r["p95 latency"]) / 1e6,
                float(r["p99 latency"]) / 1e6,
                float(r["Avg latency"]) / 1e6,
                float(r["Server Compute Infer"]) / 1e6,
            ]
            for r in run["rows"]
        ]
        lines += [*markdown_table(header, rows), ""]
        if run.get("composing"):
            lines += [*_composing_table(run["composing"]), ""]
        if run.get("plot"):
            lines += [f"Plot: `{run['plot']}`", ""]
    return lines


def _composing_table(composing: dict[str, Sequence[dict[str, str]]]) -> list[str]:
    header = ["composing model", "conc.", "requests/s", "queue (ms)", "compute infer (ms)"]
    rows = []
    for model, model_rows in composing.items():
        for r in sorted(model_rows, key=lambda r: int(r["Concurrency"])):
            rows.append(
                [
                    model,
                    int(r["Concurrency"]),
                    float(r["Inferences/Second"]),
                    float(r["Server Queue"]) / 1e3,
                    float(r["Server Compute Infer"]) / 1e3,
                ]
            )
    return markdown_table(header, rows)
