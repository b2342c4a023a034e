"""The refinement steps on the CUDA kernels: argument checks, grid sizes and launch sequences.

:class:`CudaSteps` implements ``ops.steps.RefinementSteps``. It knows nothing about pycuda: it launches
through a :class:`KernelBackend` (``pycuda_backend.PycudaBackend`` on a GPU; the tests' CPU emulator
also fits), which also owns the stream hand-off with PyTorch. Tensors are passed by ``data_ptr()``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

import torch

#: Every kernel entry point and its parameters as pycuda ``prepare`` format characters
#: (P pointer, i int32).
KERNEL_SIGNATURES: dict[str, str] = {
    "uncertainty_f32": "PPii",
    "uncertainty_f32_x4": "PPii",
    "error_score_f32": "PPPPii",
    "error_score_f32_x4": "PPPPii",
    "replace_points_f32": "PPPiii",
    "down_median_f32": "PiiPiii",
    "error_down_median_f32": "PPPiiiPiii",
    "upsample_nearest_f32": "PiiPii",
    "topk_histogram": "PiPii",
    "topk_count": "PiPi",
    "topk_compact": "PiPiP",
}

# Mirrors of topk.cu's #defines (tests check they agree).
TOPK_THREADS = 256
TOPK_TILE = 256 * 16
TOPK_PASSES = 3
TOPK_BINS = 2048
TOPK_HIST_UNROLL = 4
TOPK_WS_FIXED_WORDS = TOPK_PASSES * TOPK_BINS + 16
# Mirror of smooth.cu's SMOOTH_TILE.
SMOOTH_TILE = 16
#: Largest median window: (16 + 62)^2 keys = 24 KiB of shared memory, within the 48 KiB default.
MAX_MEDIAN_KERNEL = 63
ELEMENTWISE_THREADS = 256
#: The kernels index with int32 plus a grid-stride margin.
MAX_ELEMENTS = 2**31 - 2**26

Grid = tuple[int, int, int]


class KernelBackend(Protocol):
    """Runs the compiled entry points of :data:`KERNEL_SIGNATURES` in launch order."""

    #: Multiprocessors of the GPU (sizes grid-stride grids).
    sm_count: int

    def session(self) -> AbstractContextManager[object]:
        """Context for a group of launches: makes them run after the caller's queued PyTorch work and
        queued PyTorch work after them. Yields the stream handle object to pass to :meth:`launch`."""
        ...

    def launch(
        self,
        name: str,
        grid: Grid,
        block: Grid,
        args: Sequence[int | float],
        stream: object,
        shared_bytes: int = 0,
    ) -> None: ...


class CudaSteps:
    """``RefinementSteps`` on the CUDA kernels; results equal :class:`~magnet_triton.ops.steps.TorchSteps`.

    Inputs are float32 tensors on :attr:`device` (made contiguous when they are not); outputs are new
    tensors except :meth:`replace`, which writes ``probs`` in place. :meth:`topk` returns the selected
    indices in ascending index order (``TorchSteps`` orders them by value; the set is the same).
    """

    name = "cuda"

    def __init__(self, backend: KernelBackend, device: torch.device | str) -> None:
        self.backend = backend
        self.device = torch.device(device)

    # -- steps ---------------------------------------------------------------------------------------

    def uncertainty(self, probs: torch.Tensor) -> torch.Tensor:
        """1 x C x H x W float32 probabilities -> H x W float32 ``1 - (top1 - top2)``."""
        probs = self._float_map(probs, "probs", ndim=4)
        _, channels, height, width = probs.shape
        _require(
            probs.shape[0] == 1 and channels >= 2,
            f"probs must be 1 x C x H x W with C >= 2, got {tuple(probs.shape)}",
        )
        out = _empty((height, width), torch.float32, self.device)
        hw = height * width
        if hw:
            vec = _vectorisable(hw, probs, out)
            name = "uncertainty_f32_x4" if vec else "uncertainty_f32"
            with self.backend.session() as stream:
                self._launch_elementwise(name, hw // 4 if vec else hw, (probs, out, channels, hw), stream)
        return out

    def error_score(
        self, refined: torch.Tensor, uncert: torch.Tensor, zero_where: torch.Tensor | None
    ) -> torch.Tensor:
        """C x H x W refined, H x W uncertainty, optional H x W bool/uint8 mask -> H x W float32 score."""
        refined, uncert, mask = self._score_inputs(refined, uncert, zero_where)
        channels, height, width = refined.shape
        out = _empty((height, width), torch.float32, self.device)
        hw = height * width
        if hw:
            vec = _vectorisable(hw, refined, uncert, out) and (mask is None or mask.data_ptr() % 4 == 0)
            name = "error_score_f32_x4" if vec else "error_score_f32"
            args = (refined, uncert, mask, out, channels, hw)
            with self.backend.session() as stream:
                self._launch_elementwise(name, hw // 4 if vec else hw, args, stream)
        return out

    def smooth(self, score: torch.Tensor, small_hw: tuple[int, int], kernel: int) -> torch.Tensor:
        """H x W float32 -> nearest to ``small_hw`` -> ``kernel`` x ``kernel`` zero-padded median ->
        nearest back to H x W (float32)."""
        score = self._float_map(score, "score", ndim=2)
        height, width = score.shape
        small = self._small_map(small_hw, kernel, (height, width))
        with self.backend.session() as stream:
            self._launch_median("down_median_f32", (score, height, width), small, kernel, stream)
            return self._upsample(small, (height, width), stream)

    def smoothed_error_score(
        self,
        refined: torch.Tensor,
        uncert: torch.Tensor,
        zero_where: torch.Tensor | None,
        small_hw: tuple[int, int],
        kernel: int,
    ) -> torch.Tensor:
        """``smooth(error_score(refined, uncert, zero_where), small_hw, kernel)`` in two kernels.

        The score is computed only at the pixels the down-resize reads, so the full-size score map is
        never written; same result, bit for bit.
        """
        refined, uncert, mask = self._score_inputs(refined, uncert, zero_where)
        channels, height, width = refined.shape
        small = self._small_map(small_hw, kernel, (height, width))
        with self.backend.session() as stream:
            args = (refined, uncert, mask, channels, height, width)
            self._launch_median("error_down_median_f32", args, small, kernel, stream)
            return self._upsample(small, (height, width), stream)

    def topk(self, values: torch.Tensor, k: int) -> torch.Tensor:
        """Flat int64 indices of the ``k`` largest of ``values`` (any shape, float32), ties at the k-th
        value broken by lowest index, in ascending index order. ``k <= 0``: none; ``k >= N``: all."""
        flat = self._float_map(values, "values", ndim=None).reshape(-1)
        n = flat.numel()
        k = max(0, min(int(k), n))
        if k == 0:
            return _empty((0,), torch.int64, self.device)
        if k == n:
            return torch.arange(n, dtype=torch.int64, device=self.device)
        tiles = math.ceil(n / TOPK_TILE)
        workspace = torch.zeros(TOPK_WS_FIXED_WORDS + 4 * tiles, dtype=torch.int32, device=self.device)
        out = _empty((k,), torch.int64, self.device)
        per_block = TOPK_THREADS * TOPK_HIST_UNROLL
        hist_blocks = max(1, min(math.ceil(n / per_block), 4 * self.backend.sm_count))
        block = (TOPK_THREADS, 1, 1)
        with self.backend.session() as stream:
            for radix_pass in range(TOPK_PASSES):
                self._launch(
                    "topk_histogram", (hist_blocks, 1, 1), block, (flat, n, workspace, radix_pass, k), stream
                )
            self._launch("topk_count", (tiles, 1, 1), block, (flat, n, workspace, tiles), stream)
            self._launch("topk_compact", (tiles, 1, 1), block, (flat, n, workspace, tiles, out), stream)
        return out

    def replace(self, probs: torch.Tensor, refined: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Copy all C channels of ``refined`` (C x H x W) into ``probs`` (1 x C x H x W, contiguous,
        float32) at the flat ``indices`` (int64 or int32), in place; returns ``probs``. Indices outside
        [0, H*W) are skipped."""
        self._on_device(probs, "probs")
        _require(
            probs.dtype == torch.float32
            and probs.dim() == 4
            and probs.shape[0] == 1
            and probs.is_contiguous(),
            f"probs must be a contiguous 1 x C x H x W float32 tensor to update in place, got {tuple(probs.shape)}",
        )
        refined = self._float_map(refined, "refined", ndim=3)
        _require(
            tuple(refined.shape) == tuple(probs.shape[1:]),
            f"refined {tuple(refined.shape)} must match probs {tuple(probs.shape)}",
        )
        self._on_device(indices, "indices")
        _require(indices.dtype in (torch.int64, torch.int32), f"indices must be int64, got {indices.dtype}")
        indices = indices.reshape(-1).to(torch.int64).contiguous()
        _, channels, height, width = probs.shape
        count = indices.numel()
        _require(count < MAX_ELEMENTS, f"too many indices: {count}")
        if count:
            with self.backend.session() as stream:
                args = (probs, refined, indices, count, channels, height * width)
                self._launch_elementwise("replace_points_f32", count, args, stream)
        return probs

    # -- helpers -------------------------------------------------------------------------------------

    def _on_device(self, t: torch.Tensor, what: str) -> None:
        _require(isinstance(t, torch.Tensor), f"{what} must be a tensor, got {type(t).__name__}")
        _require(t.device == self.device, f"{what} is on {t.device}; these kernels run on {self.device}")

    def _float_map(self, t: torch.Tensor, what: str, ndim: int | None) -> torch.Tensor:
        self._on_device(t, what)
        _require(t.dtype == torch.float32, f"{what} must be float32, got {t.dtype}")
        _require(ndim is None or t.dim() == ndim, f"{what} must have {ndim} dims, got shape {tuple(t.shape)}")
        _require(t.numel() < MAX_ELEMENTS, f"{what} has {t.numel()} elements; the kernels index with int32")
        return t.contiguous()

    def _score_inputs(
        self, refined: torch.Tensor, uncert: torch.Tensor, zero_where: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        refined = self._float_map(refined, "refined", ndim=3)
        uncert = self._float_map(uncert, "uncert", ndim=2)
        _require(refined.shape[0] >= 2, f"refined must be C x H x W with C >= 2, got {tuple(refined.shape)}")
        _require(
            tuple(uncert.shape) == tuple(refined.shape[1:]),
            f"uncert {tuple(uncert.shape)} must be H x W of refined {tuple(refined.shape)}",
        )
        mask = None
        if zero_where is not None:
            self._on_device(zero_where, "zero_where")
            _require(
                zero_where.dtype in (torch.bool, torch.uint8)
                and tuple(zero_where.shape) == tuple(uncert.shape),
                f"zero_where must be an H x W bool or uint8 mask, got {zero_where.dtype} {tuple(zero_where.shape)}",
            )
            # bool is one byte per element, 0 or 1, so the kernels read it as uint8.
            mask = zero_where.contiguous()
        return refined, uncert, mask

    def _small_map(self, small_hw: tuple[int, int], kernel: int, full_hw: tuple[int, int]) -> torch.Tensor:
        sh, sw = (int(v) for v in small_hw)
        _require(
            kernel % 2 == 1 and 1 <= kernel <= MAX_MEDIAN_KERNEL,
            f"median kernel must be odd and in [1, {MAX_MEDIAN_KERNEL}], got {kernel}",
        )
        _require(sh > 0 and sw > 0 and 0 not in full_hw, f"cannot resize a {full_hw} map to {small_hw}")
        return _empty((sh, sw), torch.float32, self.device)

    def _launch_median(
        self, name: str, source_args: tuple, small: torch.Tensor, kernel: int, stream: object
    ) -> None:
        sh, sw = small.shape
        grid = (math.ceil(sw / SMOOTH_TILE), math.ceil(sh / SMOOTH_TILE), 1)
        span = SMOOTH_TILE + kernel - 1
        args = (*source_args, small, sh, sw, kernel)
        self._launch(name, grid, (SMOOTH_TILE, SMOOTH_TILE, 1), args, stream, shared_bytes=4 * span * span)

    def _upsample(self, small: torch.Tensor, out_hw: tuple[int, int], stream: object) -> torch.Tensor:
        height, width = out_hw
        out = _empty((height, width), torch.float32, self.device)
        if out.numel():
            sh, sw = small.shape
            grid = (math.ceil(width / ELEMENTWISE_THREADS), min(height, 65535), 1)
            self._launch(
                "upsample_nearest_f32",
                grid,
                (ELEMENTWISE_THREADS, 1, 1),
                (small, sh, sw, out, height, width),
                stream,
            )
        return out

    def _launch_elementwise(self, name: str, work: int, args: tuple, stream: object) -> None:
        # Grid-stride kernels: enough blocks to fill every SM several times over, no more.
        blocks = max(1, min(math.ceil(work / ELEMENTWISE_THREADS), 16 * self.backend.sm_count))
        self._launch(name, (blocks, 1, 1), (ELEMENTWISE_THREADS, 1, 1), args, stream)

    def _launch(
        self, name: str, grid: Grid, block: Grid, args: tuple, stream: object, shared_bytes: int = 0
    ) -> None:
        self.backend.launch(name, grid, block, [_arg(a) for a in args], stream, shared_bytes)


def _empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Every output tensor comes from here (tests replace it to poison outputs)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _arg(value: object) -> int | float:
    if value is None:
        return 0  # a null pointer: the optional mask
    if isinstance(value, torch.Tensor):
        return value.data_ptr()
    return value  # type: ignore[return-value]


def _vectorisable(hw: int, *tensors: torch.Tensor) -> bool:
    """float4 access needs whole float4s per plane and 16-byte aligned planes."""
    return hw % 4 == 0 and all(t.data_ptr() % 16 == 0 for t in tensors)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
