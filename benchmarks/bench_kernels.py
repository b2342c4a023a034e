"""Time the refinement-step kernels against the same steps in PyTorch, on one GPU.

    python benchmarks/bench_kernels.py [--reps 200] [--warmup 20] [--bandwidth-tbs 3.35] [--case cityscapes]

For each preset's last scale (Cityscapes 2048x1024 C=19 k=32768; DeepGlobe 2448x2448 C=7 k=0.75 N) it
times every step and the whole step (uncertainty, error score, smooth, top-k, replace) with CUDA events
around each repetition (median of ``--reps`` after ``--warmup``), and prints the bytes a single pass must
move, the floor that gives at ``--bandwidth-tbs`` (H100 SXM HBM3: 3.35 TB/s), and the ratios. Targets:
top-k at least 5x faster than ``torch.topk`` (Cityscapes, k = 32768); uncertainty within 3x its floor.
Without a GPU (or without pycuda for the kernel side) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from magnet_triton.kernels.launcher import CudaSteps


@dataclass(frozen=True)
class Case:
    name: str
    hw: tuple[int, int]
    channels: int
    small_hw: tuple[int, int]
    kernel: int
    k_fraction: float | None  # None: k = k_points
    k_points: int = 0

    @property
    def n(self) -> int:
        return self.hw[0] * self.hw[1]

    @property
    def k(self) -> int:
        return int(self.n * self.k_fraction) if self.k_fraction is not None else self.k_points


CASES = {
    "cityscapes": Case("cityscapes 2048x1024 C=19", (1024, 2048), 19, (128, 256), 5, None, 32768),
    "deepglobe": Case("deepglobe 2448x2448 C=7", (2448, 2448), 7, (508, 508), 11, 0.75),
}


def one_pass_bytes(case: Case) -> dict[str, int]:
    """Bytes each step must move at least once (float32 maps, int64 indices), no mask."""
    n, c, k = case.n, case.channels, case.k
    (sh, sw), width = case.small_hw, case.hw[1]
    # A nearest gather reads whole 32-byte sectors: per sampled row, one per sampled column, but no more
    # than the row's W / 8 sectors (at 2448 -> 508 neighbouring samples share sectors).
    sampled = sh * min(sw, math.ceil(width / 8)) * 32
    return {
        "uncertainty": (c + 1) * 4 * n,  # read C planes, write U
        "error_score": (c + 2) * 4 * n,  # read C planes and U, write E
        "smooth": sampled + 4 * n,  # gather the small map, write the full map
        "smoothed_error_score (fused)": (c + 1) * sampled + 4 * n,  # gather C planes + U, write the full map
        "topk": 4 * n + 8 * k,  # read the map once, write k indices
        "replace": 8 * k + 2 * 4 * c * k,  # read indices, read refined and write probs at k pixels
    }


def time_ms(fn: Callable[[], object], reps: int, warmup: int) -> float:
    """Median GPU time of ``fn`` in milliseconds, CUDA events around each repetition."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for start, end in zip(starts, ends):
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def bench_case(case: Case, kernels: CudaSteps | None, reps: int, warmup: int, bandwidth: float) -> None:
    import torch

    from magnet_triton.ops.steps import TorchSteps

    twins = TorchSteps()
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(1, case.channels, *case.hw, generator=gen).cuda().softmax(1)
    refined = torch.rand(case.channels, *case.hw, generator=gen).cuda().softmax(0)
    uncert = twins.uncertainty(probs)
    score = twins.error_score(refined, uncert, None)
    smoothed = twins.smooth(score, case.small_hw, case.kernel)
    indices = twins.topk(smoothed, case.k)
    k = case.k

    def whole(steps: Any, fused: bool) -> Callable[[], object]:
        def run() -> object:
            u = steps.uncertainty(probs)
            if fused:
                s = steps.smoothed_error_score(refined, u, None, case.small_hw, case.kernel)
            else:
                s = steps.smooth(steps.error_score(refined, u, None), case.small_hw, case.kernel)
            return steps.replace(probs, refined, steps.topk(s, k))

        return run

    floors = one_pass_bytes(case)
    small, size = case.small_hw, case.kernel
    ours = kernels if kernels is not None else twins  # only to build the closures; not timed without kernels
    flat = smoothed.reshape(-1)
    rows = [  # (step, PyTorch, kernels, one-pass bytes)
        (
            "uncertainty",
            lambda: twins.uncertainty(probs),
            lambda: ours.uncertainty(probs),
            floors["uncertainty"],
        ),
        (
            "error_score",
            lambda: twins.error_score(refined, uncert, None),
            lambda: ours.error_score(refined, uncert, None),
            floors["error_score"],
        ),
        (
            "smooth",
            lambda: twins.smooth(score, small, size),
            lambda: ours.smooth(score, small, size),
            floors["smooth"],
        ),
        (
            "smoothed_error_score (fused)",
            lambda: twins.smooth(twins.error_score(refined, uncert, None), small, size),
            lambda: ours.smoothed_error_score(refined, uncert, None, small, size),
            floors["smoothed_error_score (fused)"],
        ),
        (
            "topk vs stable-sort twin",
            lambda: twins.topk(smoothed, k),
            lambda: ours.topk(smoothed, k),
            floors["topk"],
        ),
        ("topk vs torch.topk", lambda: torch.topk(flat, k), lambda: ours.topk(smoothed, k), floors["topk"]),
        (
            "topk vs torch.topk sorted=False",
            lambda: torch.topk(flat, k, sorted=False),
            lambda: ours.topk(smoothed, k),
            floors["topk"],
        ),
        (
            "replace",
            lambda: twins.replace(probs, refined, indices),
            lambda: ours.replace(probs, refined, indices),
            floors["replace"],
        ),
        (
            "whole step",
            whole(twins, False),
            whole(ours, False),
            sum(floors[s] for s in ("uncertainty", "error_score", "smooth", "topk", "replace")),
        ),
        (
            "whole step, fused score",
            whole(twins, False),
            whole(ours, True),
            sum(floors[s] for s in ("uncertainty", "smoothed_error_score (fused)", "topk", "replace")),
        ),
    ]

    print(f"\n{case.name}: N = {case.n}, k = {k}, median {case.kernel}x{case.kernel} at {case.small_hw}")
    print(
        f"{'step':34} {'MB':>8} {'floor us':>9} {'torch us':>10} {'kernel us':>10} {'torch/kern':>10} {'kern/floor':>10}"
    )
    results = {}
    for name, torch_fn, kernel_fn, nbytes in rows:
        floor_us = nbytes / bandwidth * 1e6 if nbytes else float("nan")
        t_torch = time_ms(torch_fn, reps, warmup) * 1e3
        t_kernel = time_ms(kernel_fn, reps, warmup) * 1e3 if kernels is not None else float("nan")
        results[name] = (t_torch, t_kernel, floor_us)
        print(
            f"{name:34} {nbytes / 1e6:8.1f} {floor_us:9.1f} {t_torch:10.1f} {t_kernel:10.1f} "
            f"{t_torch / t_kernel:10.2f} {t_kernel / floor_us:10.2f}"
        )
    if kernels is not None:
        t_torch, t_kernel, _ = results["topk vs torch.topk"]
        print(
            f"target topk >= 5x torch.topk: {t_torch / t_kernel:.1f}x -> {'met' if t_torch >= 5 * t_kernel else 'NOT met'}"
        )
        _, t_kernel, floor_us = results["uncertainty"]
        print(
            f"target uncertainty <= 3x floor: {t_kernel / floor_us:.2f}x -> {'met' if t_kernel <= 3 * floor_us else 'NOT met'}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--bandwidth-tbs", type=float, default=3.35, help="DRAM bandwidth for the floors (TB/s)"
    )
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--kernel-dir", default=None, help="compiled kernels (default: the usual search)")
    args = parser.parse_args(argv)

    try:
        import torch
    except ImportError:
        print("no torch: not measured")
        return 0
    if not torch.cuda.is_available():
        print("no GPU: not measured")
        return 0
    kernels = None
    try:
        from magnet_triton.kernels import cuda_steps

        kernels = cuda_steps("cuda", kernel_dir=args.kernel_dir)
    except Exception as e:  # pycuda or kernels missing: still time the PyTorch side
        print(f"kernels unavailable ({e}): timing PyTorch only")
    print(f"GPU: {torch.cuda.get_device_name()}, floors at {args.bandwidth_tbs} TB/s")
    for name in CASES if args.case == "all" else [args.case]:
        bench_case(CASES[name], kernels, args.reps, args.warmup, args.bandwidth_tbs * 1e12)
    return 0


if __name__ == "__main__":
    sys.exit(main())
