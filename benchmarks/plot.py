"""The concurrency-sweep plot: latency percentiles and throughput against concurrency, as a PNG.

matplotlib comes with the ``bench`` extra and is imported here only; without it the plot is skipped
with a warning, since the CSV holds the same numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)


def plot_sweep(rows: Sequence[Mapping[str, str]], png: Path, *, title: str) -> Path | None:
    """Two panels from perf_analyzer CSV rows: p50/p95/p99 latency (s) and throughput (images/s).

    Returns the PNG's path, or None when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on a server; must precede pyplot
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning(
            "matplotlib is not installed (pip install -e '.[bench]'): no plot, the CSV has the numbers"
        )
        return None
    ordered = sorted(rows, key=lambda r: int(r["Concurrency"]))
    concurrency = [int(r["Concurrency"]) for r in ordered]
    fig, (latency_ax, throughput_ax) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for column, style in (("p50 latency", "o-"), ("p95 latency", "s--"), ("p99 latency", "^:")):
        latency_ax.plot(
            concurrency, [float(r[column]) / 1e6 for r in ordered], style, label=column.split()[0]
        )
    latency_ax.set(xlabel="concurrency (requests in flight)", ylabel="latency (s)", title="latency")
    latency_ax.legend()
    throughput = [float(r["Inferences/Second"]) for r in ordered]
    throughput_ax.plot(concurrency, throughput, "o-", color="tab:green")
    throughput_ax.set(xlabel="concurrency (requests in flight)", ylabel="images / s", title="throughput")
    for ax in (latency_ax, throughput_ax):
        ax.set_xticks(concurrency)
        ax.set_ylim(bottom=0, top=ax.get_ylim()[1] * 1.15)  # headroom: a flat line must not sit on the frame
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
